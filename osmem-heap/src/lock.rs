//! The heap lock: a spin lock that yields the CPU after a short spin (no futex, no std, no
//! allocation, so it works inside a `GlobalAlloc`). The heap holds it for bookkeeping only;
//! system calls run with it released, as Go drops the heap lock around `sysUnused`.
//!
//! It records its holder's thread ([`osmem::current_thread`]), so that a heap function
//! called from a signal handler that interrupted the same heap on its own thread is refused
//! at once instead of waiting for itself (see [`Lock::held_by_me`]), and so that the fork
//! handlers below can skip what the forking thread itself holds.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Threads whose osmem calls on the heap's memory are tracked at once (a further one waits
/// for a slot, briefly: the calls in flight end without the lock).
const INFLIGHT: usize = 16;

/// The lock, and which threads have an osmem call on the heap's memory in flight with it
/// released (see [`Lock::unlock_for_syscall`]).
pub(crate) struct Lock {
    owner: AtomicUsize,
    inflight: [AtomicUsize; INFLIGHT],
    /// The fork handlers took it (and let go of it after the fork).
    fork_taken: AtomicBool,
}

#[inline(always)]
fn me() -> usize {
    osmem::current_thread()
}

impl Lock {
    #[allow(clippy::declare_interior_mutable_const)] // a repeat operand, not a shared value
    const FREE: AtomicUsize = AtomicUsize::new(0);

    pub(crate) const fn new() -> Lock {
        Lock {
            owner: AtomicUsize::new(0),
            inflight: [Self::FREE; INFLIGHT],
            fork_taken: AtomicBool::new(false),
        }
    }

    /// Whether the calling thread holds it: a heap function called again from a signal
    /// handler that interrupted this heap's bookkeeping on the same thread. Callers refuse
    /// (the holder cannot run until the handler returns).
    #[inline]
    pub(crate) fn held_by_me(&self) -> bool {
        self.owner.load(Ordering::Relaxed) == me()
    }

    /// Unlock to make an osmem call on the heap's memory; once it returns, lock again and
    /// then [`syscall_done`](Self::syscall_done) (the bookkeeping that records the call's
    /// result belongs to it). A fork waits until no other thread's call is in flight: osmem's
    /// own claims and the heap's hidden runs must not be inherited mid-call.
    #[inline]
    pub(crate) fn unlock_for_syscall(&self) {
        let me = me();
        loop {
            if self.inflight.iter().any(|w| {
                w.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            }) {
                break;
            }
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
        self.unlock();
    }

    /// The osmem call made with the lock released is recorded (lock held again).
    #[inline]
    pub(crate) fn syscall_done(&self) {
        let me = me();
        if let Some(w) = self
            .inflight
            .iter()
            .find(|w| w.load(Ordering::Relaxed) == me)
        {
            w.store(0, Ordering::Release);
        }
    }

    #[inline]
    pub(crate) fn lock(&self) {
        let me = me();
        debug_assert_ne!(
            self.owner.load(Ordering::Relaxed),
            me,
            "heap lock re-entered"
        );
        if self
            .owner
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        self.lock_slow(me);
    }

    #[cold]
    fn lock_slow(&self, me: usize) {
        let mut spins = 0u32;
        loop {
            if self.owner.load(Ordering::Relaxed) == 0
                && self
                    .owner
                    .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            if spins < 64 {
                spins += 1;
                core::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }

    #[inline]
    pub(crate) fn unlock(&self) {
        self.owner.store(0, Ordering::Release);
    }

    /// Whether it is held (for the fork handler's assertions and tests).
    #[allow(dead_code)]
    pub(crate) fn is_locked(&self) -> bool {
        self.owner.load(Ordering::Relaxed) != 0
    }

    /// Whether a thread other than `me` has an osmem call in flight.
    fn others_in_flight(&self, me: usize) -> bool {
        self.inflight.iter().any(|w| {
            let v = w.load(Ordering::Acquire);
            v != 0 && v != me
        })
    }
}

// ----- fork: every heap's lock is held across `fork`, as glibc does for malloc -----
//
// A child forked while another thread held a heap lock would otherwise inherit it held by a
// thread that does not exist there, and its first allocation would spin for ever. The
// `pthread_atfork` handlers take every registered heap's lock before the fork, once no other
// thread has an osmem call on that heap's memory in flight (a child forked in the middle of
// one would inherit runs hidden for ever, and osmem's claims: measured), and release them in
// both processes after it. The lock is let go between tries, so a call in flight can record
// its result.
//
// A fork from a signal handler that interrupted this heap on the forking thread: the lock it
// holds (or its call in flight) is its own, and waiting for it would never end. The handlers
// skip it; in both processes the interrupted call finishes when the handler returns.
// (osmem's own fork handlers, registered before these, run after them and do the same for
// osmem's maps.)

use core::sync::atomic::AtomicPtr;

/// Heaps whose locks are held across fork. More live heaps than this: `create` refuses.
pub(crate) const MAX_HEAPS: usize = 64;

// A const item, not an inline `const { }` repeat (that needs Rust 1.79; the MSRV is 1.77).
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: AtomicPtr<Lock> = AtomicPtr::new(core::ptr::null_mut());
static HEAPS: [AtomicPtr<Lock>; MAX_HEAPS] = [EMPTY; MAX_HEAPS];
static HANDLERS: AtomicBool = AtomicBool::new(false);
/// The thread whose fork the handlers are running for (one fork at a time: glibc runs two
/// threads' handlers at the same time, and what one took the other must not release), and
/// forks nested in it (from a signal handler during the handlers: they take nothing more).
static FORKER: AtomicUsize = AtomicUsize::new(0);
static NESTED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn before_fork() {
    let me = me();
    loop {
        match FORKER.compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => break,
            Err(o) if o == me => {
                NESTED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // SAFETY: sched_yield has no preconditions.
            Err(_) => unsafe {
                libc::sched_yield();
            },
        }
    }
    for slot in &HEAPS {
        let p = slot.load(Ordering::Acquire);
        if p.is_null() {
            continue;
        }
        // SAFETY: a registered lock lives until it is unregistered (destroy), which does
        // not run concurrently with fork by destroy's contract.
        let l = unsafe { &*p };
        let taken = loop {
            if l.owner.load(Ordering::Relaxed) == me {
                // Interrupted inside this heap: only other threads' calls are waited for.
                while l.others_in_flight(me) {
                    // SAFETY: sched_yield has no preconditions.
                    unsafe { libc::sched_yield() };
                }
                break false;
            }
            l.lock();
            if !l.others_in_flight(me) {
                break true;
            }
            l.unlock();
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        };
        l.fork_taken.store(taken, Ordering::Relaxed);
    }
}

extern "C" fn after_fork() {
    if NESTED.load(Ordering::Relaxed) > 0 && FORKER.load(Ordering::Relaxed) == me() {
        NESTED.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    for slot in HEAPS.iter().rev() {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: as above; we took it in before_fork.
            let l = unsafe { &*p };
            if l.fork_taken.swap(false, Ordering::Relaxed) {
                l.unlock();
            }
        }
    }
    FORKER.store(0, Ordering::SeqCst);
}

/// Register a heap's lock for fork handling; `false` if every slot is taken.
pub(crate) fn register(lock: &'static Lock) -> bool {
    if !HANDLERS.swap(true, Ordering::AcqRel) {
        // SAFETY: registers handlers that only touch the locks registered here.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    }
    let p = lock as *const Lock as *mut Lock;
    HEAPS.iter().any(|slot| {
        slot.compare_exchange(
            core::ptr::null_mut(),
            p,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    })
}

/// Forget a heap's lock (it is being destroyed), and wait for a fork whose handlers may
/// still hold it: the heap may be unmapped once this returns. (A fork that starts after the
/// slot is cleared never sees it.)
pub(crate) fn unregister(lock: &Lock) {
    let p = lock as *const Lock as *mut Lock;
    for slot in &HEAPS {
        let _ = slot.compare_exchange(
            p,
            core::ptr::null_mut(),
            Ordering::SeqCst,
            Ordering::Acquire,
        );
    }
    let me = me();
    loop {
        let f = FORKER.load(Ordering::SeqCst);
        if f == 0 || f == me {
            return;
        }
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}
