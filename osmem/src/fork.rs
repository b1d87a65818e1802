//! `fork` at any instant: every transition in flight is either done or not begun in the
//! child, as glibc arranges for malloc with its `pthread_atfork` handlers.
//!
//! Before the fork (`prepare`, on the forking thread):
//! 1. publish the forking thread in [`owner`]: from now on a transition that has not claimed
//!    its pages yet steps back and waits for the fork to end ([`wait_end`]);
//! 2. hold the registry's lock, so no reservation comes or goes;
//! 3. for every live reservation, take its map's lock once no other thread's claim on it is
//!    in progress (a transition between its claim and its settle is let through to settle):
//!    the fork waits no longer than the longest transition in flight;
//! 4. hold the metadata arena's lock.
//!
//! After the fork, in both processes, everything taken is let go and [`owner`] cleared. The
//! child therefore finds every map consistent, no page held by a thread it does not have, and
//! no lock held by one. Two threads that fork at once fork one after the other (glibc runs
//! their handlers at the same time: it lets go of its own lock around each handler).
//!
//! **fork from a signal handler.** The forking thread may have been interrupted inside osmem:
//! between a claim and its settle, or inside a section of some lock. Waiting for that would
//! never end, so the handlers skip what the forking thread holds itself, and wait only for
//! other threads. A lock it holds stays held across the fork in both processes and is let go
//! when the handler returns and the interrupted call goes on; another thread that must settle
//! on that map meanwhile hands its settle over (table.rs) and the fork waits for that hand-over
//! instead. So in the child the interrupted transition is still in flight — its pages read as
//! their state before it and refuse other transitions with `Busy` — until the handler
//! returns; it then finishes, in the child as in the parent, on the child's own memory.
//!
//! **Children made without the handlers** (`_Fork`, `vfork`, raw `clone`, `posix_spawn`):
//! nothing is arranged. `vfork` and `posix_spawn` children share the parent's memory until
//! they exec and must not call osmem. A `_Fork` or `clone` child may find a transition of
//! another thread in flight: those pages read as their state before and refuse transitions
//! with `Busy` for ever; a lock held by another thread at that instant is recognised as
//! orphaned (its holder's pid is not the child's) and calls on that map answer `Busy`
//! instead of waiting. Reads never wait in any case.

use crate::{arena, registry, thread};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The forking thread while the fork handlers run, else 0.
static OWNER: AtomicUsize = AtomicUsize::new(0);
/// Forks nested in the forking thread (a signal handler that forked during the handlers).
static NESTED: AtomicUsize = AtomicUsize::new(0);
/// The process whose thread `OWNER` is: a child made without fork handlers (`_Fork`, a raw
/// `clone`) while that thread was forking inherits `OWNER` set, by a thread it does not have.
/// Set to this process's pid by `prepare` whenever no fork is in progress, before it takes
/// `OWNER` (and again once it holds it, for an owner of another process it took over), and
/// in every child made with the handlers: a thread that sees `OWNER` taken by
/// another thread of this process a moment before `prepare` stored it must not read the
/// previous value (0 at the process's first fork) and take that fork for another
/// process's. (It did: at the first forks of a test process, made at once by several
/// threads, one thread stole `OWNER` from another, and both their children found locks
/// orphaned — `Busy` on their own reservations.)
static OWNER_PID: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

/// Whether the fork in progress is another process's (this one was made without fork
/// handlers while a thread of its parent was forking): nobody here will end it.
#[cold]
pub(crate) fn foreign() -> bool {
    // SAFETY: getpid has no preconditions.
    OWNER.load(Ordering::Relaxed) != 0
        && OWNER_PID.load(Ordering::Relaxed) != unsafe { libc::getpid() }
}
/// The arena's lock was taken by `prepare`.
static ARENA_TAKEN: AtomicBool = AtomicBool::new(false);
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Bumped (and futex-woken) when a section ends while a fork is in progress: the fork
/// handlers sleep on it while they wait for transitions in flight, so that they run again as
/// soon as one settles instead of when the scheduler next gets round to a yielding thread
/// (on a busy machine that was later than the transition's end: measured with
/// osmem-bench's `fork_wait` example).
static WAKE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// A section of a map's lock ended while a fork is in progress: wake the fork handlers.
#[cold]
#[inline(never)]
pub(crate) fn section_ended() {
    WAKE.fetch_add(1, Ordering::Release);
    // SAFETY: FUTEX_WAKE on our own word; no memory is written by the kernel.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            WAKE.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

/// The fork handlers wait for a transition in flight to settle: sleep until a section ends
/// (or 1 ms passes, or `seen` is stale already).
pub(crate) fn wait_for_settle(seen: u32) {
    let t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000,
    };
    // SAFETY: FUTEX_WAIT on our own word with a valid timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            WAKE.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            seen,
            &t as *const libc::timespec,
        )
    };
}

/// The current wake count (read before checking for transitions in flight).
pub(crate) fn wake_count() -> u32 {
    WAKE.load(Ordering::Acquire)
}

/// The thread that is forking now (0: none).
#[inline(always)]
pub(crate) fn owner() -> usize {
    OWNER.load(Ordering::Relaxed)
}

/// Register the handlers (once, at first use).
pub(crate) fn init() {
    crate::lock::refresh_pid();
    if REGISTERED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: handlers that only touch osmem's own statics; no memory is passed.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

extern "C" fn prepare() {
    let me = thread::me();
    // No fork in progress: none of another process can appear any more (one is only ever
    // inherited, at this process's start), so this process's pid is the owner's from now on
    // (a child made without handlers starts with its parent's: see `OWNER_PID`).
    if OWNER.load(Ordering::SeqCst) == 0 {
        // SAFETY: getpid has no preconditions.
        OWNER_PID.store(unsafe { libc::getpid() }, Ordering::SeqCst);
    }
    // One fork at a time: glibc lets go of its own lock around each handler, so two threads
    // that fork at once run their handlers at the same time, and what one took the other
    // must not release. A fork from a signal handler that interrupted this thread's own
    // handlers takes nothing more (its parent's handlers hold it all, or will).
    loop {
        match OWNER.compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => break,
            Err(o) if o == me => {
                NESTED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // A fork of the parent's, in a child made without handlers: not ours to wait for.
            Err(o) if foreign() => {
                let _ = OWNER.compare_exchange(o, me, Ordering::SeqCst, Ordering::Relaxed);
            }
            // SAFETY: sched_yield has no preconditions.
            Err(_) => unsafe {
                libc::sched_yield();
            },
        }
    }
    // SAFETY: getpid has no preconditions.
    OWNER_PID.store(unsafe { libc::getpid() }, Ordering::Relaxed);
    crate::stats::bump(crate::stats::Counter::Forks);
    if inside(me) {
        crate::stats::bump(crate::stats::Counter::ForksReentrant);
    }
    let t0 = now_ns();
    registry::hold_for_fork();
    registry::each_live(|s| {
        let taken = s.table.hold_for_fork(me);
        s.fork_taken.store(taken, Ordering::Relaxed);
        false
    });
    ARENA_TAKEN.store(arena::hold_for_fork(), Ordering::Relaxed);
    crate::stats::add(
        crate::stats::Counter::ForkWaitNs,
        now_ns().saturating_sub(t0),
    );
}

/// CLOCK_MONOTONIC in ns (clock_gettime is async-signal-safe, and a vDSO call here).
fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

extern "C" fn parent() {
    after();
}

extern "C" fn child() {
    crate::lock::refresh_pid();
    // This process's own, before `after` lets `OWNER` go (see `OWNER_PID`).
    // SAFETY: getpid has no preconditions.
    OWNER_PID.store(unsafe { libc::getpid() }, Ordering::SeqCst);
    after();
}

fn after() {
    let me = thread::me();
    if NESTED.load(Ordering::Relaxed) > 0 && OWNER.load(Ordering::Relaxed) == me {
        NESTED.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    arena::release_after_fork(ARENA_TAKEN.swap(false, Ordering::Relaxed), me);
    // Every slot, not only the live ones: a reservation may have been dropped by another
    // thread while the handlers held its map (its owner does not need the registry's lock to
    // unpublish it), and what they took they must let go of.
    registry::each_slot(|s| {
        s.table
            .release_after_fork(s.fork_taken.swap(false, Ordering::Relaxed), me)
    });
    registry::release_after_fork(me);
    OWNER.store(0, Ordering::SeqCst);
}

/// Whether thread `me` is inside osmem: holds a lock or a claim (a signal handler runs on
/// it). A slow scan, asked only while a fork is in progress.
fn inside(me: usize) -> bool {
    arena::lock_owner() == me
        || registry::lock_owner() == me
        || registry::each_live(|s| s.table.held_by(me))
}

/// Wait until no fork is in progress, before claiming pages. `Err`: the calling thread must
/// not wait, because the fork waits for it (it is the forking thread, or a signal handler on
/// a thread inside osmem): the caller answers `Busy`.
#[cold]
pub(crate) fn wait_end() -> Result<(), ()> {
    let me = thread::me();
    let o = OWNER.load(Ordering::Acquire);
    if o == 0 {
        return Ok(());
    }
    if o == me || inside(me) {
        crate::stats::bump(crate::stats::Counter::Reentered);
        return Err(());
    }
    if foreign() {
        // Made without fork handlers while a thread of the parent forked: that fork never
        // ends here, and the maps it held are orphaned (their calls answer Busy). Forget it,
        // so that reservations made here work.
        let _ = OWNER.compare_exchange(o, 0, Ordering::SeqCst, Ordering::Relaxed);
        crate::stats::bump(crate::stats::Counter::Reentered);
        return Err(());
    }
    crate::stats::bump(crate::stats::Counter::ForkWaits);
    let mut spins = 0u32;
    while OWNER.load(Ordering::Acquire) != 0 {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
        spins += 1;
        if spins % 64 == 0 && foreign() {
            let _ = OWNER.compare_exchange(o, 0, Ordering::SeqCst, Ordering::Relaxed);
            return Err(());
        }
    }
    Ok(())
}
