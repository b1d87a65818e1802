//! Which thread is running: its thread pointer, read from a register.
//!
//! osmem's locks and claims record the thread that holds them, so that a signal handler that
//! re-enters osmem on the thread it interrupted is told "busy" at once instead of waiting for
//! itself, and so that the `fork` handlers can tell the forking thread's own work in flight
//! from other threads'. `gettid()` is a system call (about 100 ns here); the thread pointer is
//! a register the C library sets once per thread, the same value `pthread_self()` returns, and
//! it stays the same for the forking thread in a child made by `fork`.

/// The calling thread's identity (never 0). Async-signal-safe: a register read.
#[inline(always)]
pub(crate) fn me() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: on x86-64 Linux the first word of the thread control block at %fs:0 holds
        // its own address (the TLS ABI requires it of every C library); reading it has no side
        // effect.
        unsafe {
            core::arch::asm!(
                "mov {}, qword ptr fs:[0]",
                out(reg) tp,
                options(nostack, readonly, preserves_flags, pure)
            )
        };
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: usize;
        // SAFETY: reading the EL0 thread pointer register has no side effect.
        unsafe {
            core::arch::asm!(
                "mrs {}, tpidr_el0",
                out(reg) tp,
                options(nomem, nostack, preserves_flags, pure)
            )
        };
        tp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // SAFETY: pthread_self has no preconditions.
        unsafe { libc::pthread_self() as usize }
    }
}

#[cfg(test)]
mod tests {
    use super::me;

    #[test]
    fn is_pthread_self_and_differs_between_threads() {
        // SAFETY: pthread_self has no preconditions.
        assert_eq!(me(), unsafe { libc::pthread_self() } as usize);
        assert_ne!(me(), 0);
        let here = me();
        let there = std::thread::spawn(me).join().unwrap();
        assert_ne!(here, there);
        assert_eq!(me(), here);
    }
}
