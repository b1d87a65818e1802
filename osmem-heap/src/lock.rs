//! The heap lock: a spin lock that yields the CPU after a short spin (no futex, no std, no
//! allocation, so it works inside a `GlobalAlloc`). The heap holds it for bookkeeping only;
//! system calls run with it released, as Go drops the heap lock around `sysUnused`.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The lock, and how many osmem calls on the heap's memory are in flight with it released
/// (see [`Lock::unlock_for_syscall`]).
pub(crate) struct Lock(AtomicBool, AtomicUsize);

impl Lock {
    pub(crate) const fn new() -> Lock {
        Lock(AtomicBool::new(false), AtomicUsize::new(0))
    }

    /// Unlock to make an osmem call on the heap's memory; [`syscall_done`](Self::syscall_done)
    /// when it returns (before locking again). A fork waits for every such call to finish:
    /// osmem's own per-reservation locks and page holds must not be inherited mid-call.
    #[inline]
    pub(crate) fn unlock_for_syscall(&self) {
        self.1.fetch_add(1, Ordering::AcqRel);
        self.unlock();
    }

    #[inline]
    pub(crate) fn syscall_done(&self) {
        self.1.fetch_sub(1, Ordering::AcqRel);
    }

    #[inline]
    pub(crate) fn lock(&self) {
        if self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        self.lock_slow();
    }

    #[cold]
    fn lock_slow(&self) {
        let mut spins = 0u32;
        loop {
            if !self.0.load(Ordering::Relaxed)
                && self
                    .0
                    .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
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
        self.0.store(false, Ordering::Release);
    }

    /// Whether it is held (for the fork handler's assertions and tests).
    #[allow(dead_code)]
    pub(crate) fn is_locked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

// ----- fork: every heap's lock is held across `fork`, as glibc does for malloc -----
//
// A child forked while another thread held a heap lock would otherwise inherit it held by a
// thread that does not exist there, and its first allocation would spin for ever. The
// `pthread_atfork` handlers take every registered heap's lock before the fork (so no heap is
// mid-update), wait until no osmem call made with it released is still running (a child
// forked in the middle of one would inherit osmem's reservation lock held, or pages held by
// the call, and osmem would answer Busy there for ever: measured), and release them in both
// processes after it.

use core::sync::atomic::AtomicPtr;

/// Heaps whose locks are held across fork. More live heaps than this: `create` refuses.
pub(crate) const MAX_HEAPS: usize = 64;

// A const item, not an inline `const { }` repeat (that needs Rust 1.79; the MSRV is 1.77).
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: AtomicPtr<Lock> = AtomicPtr::new(core::ptr::null_mut());
static HEAPS: [AtomicPtr<Lock>; MAX_HEAPS] = [EMPTY; MAX_HEAPS];
static HANDLERS: AtomicBool = AtomicBool::new(false);

extern "C" fn before_fork() {
    for slot in &HEAPS {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a registered lock lives until it is unregistered (destroy), which does
            // not run concurrently with fork by destroy's contract.
            let l = unsafe { &*p };
            l.lock();
            while l.1.load(Ordering::Acquire) != 0 {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
}

extern "C" fn after_fork() {
    for slot in HEAPS.iter().rev() {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: as above; we took it in before_fork.
            unsafe { (*p).unlock() };
        }
    }
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

/// Forget a heap's lock (it is being destroyed).
pub(crate) fn unregister(lock: &Lock) {
    let p = lock as *const Lock as *mut Lock;
    for slot in &HEAPS {
        let _ = slot.compare_exchange(
            p,
            core::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }
}
