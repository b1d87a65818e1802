//! A small spin lock that knows its holder: the thread, the process, and the fork in progress.
//!
//! osmem's metadata (a reservation's page-state map, the metadata arena, the registry of
//! reservations) is changed only under one of these locks, and never across a system call
//! except where a comment says so: a holder runs a few dozen instructions, so spinning is
//! cheaper than parking, and nothing here needs std or allocates (the lock must work inside a
//! `GlobalAlloc`).
//!
//! The lock word holds the holder's thread pointer ([`crate::thread::me`]), so a waiter can
//! tell three holders it must not wait for, each of which would otherwise make it spin for
//! ever:
//! - **itself** ([`Held::Reentered`]): a signal handler that interrupted its own thread inside
//!   osmem and called osmem again. The interrupted holder cannot run until the handler
//!   returns.
//! - **the thread that is forking** ([`Held::Fork`]): the `fork` handlers (fork.rs) hold
//!   every lock across `fork`; a waiter steps back (a claim not yet made) or hands its work to
//!   the holder (a settle, see table.rs) instead of waiting for the fork, which may be waiting
//!   for it.
//! - **a thread of another process** ([`Held::Orphaned`]): a child made by `_Fork` or a raw
//!   `clone`, which run no fork handlers, inherits a lock another thread held at that instant;
//!   that thread does not exist in the child. Beside the owner the lock keeps the pid of the
//!   holder's process (the cached one, kept right by the fork handlers); a waiter that has
//!   spun long enough to yield compares it with `getpid()` now and then.

use crate::thread;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// The cached pid: one of the hot words kept beside the counters (stats.rs).
#[inline(always)]
fn pid_word() -> &'static AtomicU32 {
    crate::stats::word(crate::stats::Word::Pid)
}

/// This process was made without fork handlers (`_Fork`, `clone`): found out by a waiter
/// whose cached pid was not its own.
static HANDLERLESS: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Holders found orphaned in this process: threads of an ancestor process (they do not exist
/// here, and a thread made here never gets their thread pointer: their memory is still
/// mapped, and glibc still counts them as running). A lock one of them holds is orphaned at
/// once, without the waiting `orphaned` needs for a lock whose holder left no pid: measured
/// under load, that waiting (63 yields) took ~250 ms, for every call on the map, so a child
/// touching 128 pages of it took half a minute.
static ORPHAN_OWNERS: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
static ORPHAN_NEXT: AtomicUsize = AtomicUsize::new(0);

fn known_orphan(owner: usize) -> bool {
    ORPHAN_OWNERS
        .iter()
        .any(|o| o.load(Ordering::Relaxed) == owner)
}

fn remember_orphan(owner: usize) {
    if !known_orphan(owner) {
        let i = ORPHAN_NEXT.fetch_add(1, Ordering::Relaxed) % ORPHAN_OWNERS.len();
        ORPHAN_OWNERS[i].store(owner, Ordering::Relaxed);
    }
}

/// Cache the pid (at first use and in a child made by `fork`, which ran the handlers).
pub(crate) fn refresh_pid() {
    HANDLERLESS.store(false, Ordering::Relaxed);
    for o in &ORPHAN_OWNERS {
        o.store(0, Ordering::Relaxed);
    }
    // SAFETY: getpid has no preconditions (and is async-signal-safe).
    pid_word().store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
}

/// This process's pid, cached.
#[inline]
pub(crate) fn pid() -> i32 {
    match pid_word().load(Ordering::Relaxed) as i32 {
        // Before the probe ran (never on an operation path): ask the kernel.
        // SAFETY: getpid has no preconditions.
        0 => unsafe { libc::getpid() },
        p => p,
    }
}

/// Why a lock was not taken.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// The calling thread holds it (a signal handler re-entered osmem).
    Reentered,
    /// The thread that is forking holds it, across the `fork`.
    Fork,
    /// Its holder belongs to another process: this one was made by `_Fork` or `clone` while
    /// a thread of the parent held it.
    Orphaned,
}

/// Spins before the first `sched_yield`, and yields between two checks for an orphaned lock.
const SPINS: u32 = 128;
const YIELDS_PER_CHECK: u32 = 64;

pub(crate) struct SpinLock {
    owner: AtomicUsize,
    pid: AtomicU32,
}

impl SpinLock {
    pub(crate) const fn new() -> Self {
        SpinLock {
            owner: AtomicUsize::new(0),
            pid: AtomicU32::new(0),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> Result<(), Held> {
        let me = thread::me();
        if self
            .owner
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.pid.store(pid() as u32, Ordering::Relaxed);
            return Ok(());
        }
        self.lock_slow(me)
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(&self, me: usize) -> Result<(), Held> {
        let mut spins = 0u32;
        loop {
            let o = self.owner.load(Ordering::Relaxed);
            if o == 0 {
                if self
                    .owner
                    .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.pid.store(pid() as u32, Ordering::Relaxed);
                    return Ok(());
                }
                continue;
            }
            if o == me {
                return Err(Held::Reentered);
            }
            if o == crate::fork::owner() {
                // Held across a fork of this process, or, in a child made without fork
                // handlers while a thread of the parent forked, by that thread: orphaned.
                return Err(if crate::fork::foreign() {
                    Held::Orphaned
                } else {
                    Held::Fork
                });
            }
            if HANDLERLESS.load(Ordering::Relaxed) && known_orphan(o) {
                return Err(Held::Orphaned);
            }
            spins += 1;
            if spins < SPINS {
                core::hint::spin_loop();
                continue;
            }
            // The holder was preempted (2 CPUs, busy machine) or interrupted by a signal
            // handler: let it run.
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
            // At the first yield, then now and then: a holder that recorded another pid is
            // told at once; one that recorded none only after many yields (see `orphaned`).
            let yields = spins - SPINS;
            let check = yields % YIELDS_PER_CHECK;
            if (check == 0 || check == YIELDS_PER_CHECK - 1)
                && self.orphaned(yields >= YIELDS_PER_CHECK - 1)
            {
                remember_orphan(o);
                return Err(Held::Orphaned);
            }
        }
    }

    /// Whether the holder's process is not this one. A holder writes its pid just after
    /// taking the lock (0 before); in a child made without fork handlers, a 0 left by a
    /// holder of the parent caught between the two stays 0 for ever, so there a 0 counts as
    /// orphaned too — once `patient`: the waiter has yielded long enough for a holder of
    /// this process caught there to have run.
    #[cold]
    fn orphaned(&self, patient: bool) -> bool {
        let p = self.pid.load(Ordering::Relaxed);
        // SAFETY: getpid has no preconditions.
        let now = unsafe { libc::getpid() } as u32;
        if pid_word().load(Ordering::Relaxed) != now {
            // The cache is stale: this process was made without fork handlers (`_Fork`,
            // `clone`). Remember it, and refresh the cache so that the locks this process
            // takes from now on carry its own pid.
            HANDLERLESS.store(true, Ordering::Relaxed);
            pid_word().store(now, Ordering::Relaxed);
        }
        let orphan =
            (p != 0 && p != now) || (p == 0 && patient && HANDLERLESS.load(Ordering::Relaxed));
        orphan && self.owner.load(Ordering::Relaxed) != 0 && self.pid.load(Ordering::Relaxed) == p
    }

    #[inline]
    pub(crate) fn unlock(&self) {
        self.pid.store(0, Ordering::Relaxed);
        self.owner.store(0, Ordering::Release);
    }

    /// The holder's thread pointer, 0 when free.
    #[inline]
    pub(crate) fn owner(&self) -> usize {
        self.owner.load(Ordering::Relaxed)
    }

    /// After `fork`, in the child: a lock the forking thread holds (it was interrupted inside
    /// osmem) carries the parent's pid; give it the child's, so waiters do not take it for
    /// orphaned. The forking thread releases it when its signal handler returns.
    pub(crate) fn adopt_in_child(&self, me: usize) {
        if self.owner() == me {
            self.pid.store(pid() as u32, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_held_by_another_process_is_orphaned() {
        let l = SpinLock::new();
        assert!(l.lock().is_ok());
        l.unlock();
        // What a child made by _Fork sees: a holder that is not a thread of this process,
        // recorded with the parent's pid.
        l.owner.store(1, Ordering::Relaxed);
        // SAFETY: getppid has no preconditions.
        l.pid
            .store(unsafe { libc::getppid() } as u32, Ordering::Relaxed);
        assert_eq!(l.lock(), Err(Held::Orphaned));
    }

    #[test]
    fn the_holding_thread_is_told_at_once() {
        let l = SpinLock::new();
        assert!(l.lock().is_ok());
        assert_eq!(l.lock(), Err(Held::Reentered));
        l.unlock();
        assert!(l.lock().is_ok());
        l.unlock();
    }

    #[test]
    fn another_thread_waits_for_the_holder() {
        let l = std::sync::Arc::new(SpinLock::new());
        l.lock().unwrap();
        let l2 = l.clone();
        let t = std::thread::spawn(move || {
            l2.lock().unwrap();
            l2.unlock();
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        l.unlock();
        t.join().unwrap();
    }
}
