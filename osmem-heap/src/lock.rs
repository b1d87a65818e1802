//! The heap lock: a spin lock that yields the CPU after a short spin (no futex, no std, no
//! allocation, so it works inside a `GlobalAlloc`). The heap holds it for bookkeeping only;
//! system calls run with it released, as Go drops the heap lock around `sysUnused`.

use core::sync::atomic::{AtomicBool, Ordering};

pub(crate) struct Lock(AtomicBool);

impl Lock {
    pub(crate) const fn new() -> Lock {
        Lock(AtomicBool::new(false))
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
