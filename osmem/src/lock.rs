//! A small spin lock that knows about `fork`.
//!
//! osmem's metadata (a reservation's page-state map, the metadata arena) is changed only
//! under one of these locks, and never across a system call: a holder runs a few dozen
//! instructions, so spinning is cheaper than parking, and nothing here needs std or
//! allocates (the lock must work inside a `GlobalAlloc`).
//!
//! The lock word holds the pid of the process whose thread holds it. Threads of one process
//! share the pid, so a contended lock normally shows our own pid and we wait. A child forked
//! while another thread of its parent held the lock sees the *parent's* pid: that holder does
//! not exist in the child and will never let go, and the data it was changing may be half
//! changed. The child gets an error instead of spinning for ever (callers turn it into
//! `Error::Busy`). The pid is cached in a static that a `pthread_atfork` child handler
//! refreshes, so the fast path costs one relaxed load and one compare-exchange.
//!
//! The one process-wide lock (the metadata arena's) is taken around `fork` by the same
//! handlers, as glibc does for malloc: a child never inherits it held, so a reservation made
//! in a forked child always gets its metadata.

use core::sync::atomic::{AtomicI32, Ordering};

/// The cached pid: one of the hot words kept beside the counters (stats.rs), as an `i32`.
#[inline(always)]
fn pid_word() -> &'static core::sync::atomic::AtomicU32 {
    crate::stats::word(crate::stats::Word::Pid)
}

extern "C" fn refresh_pid() {
    // SAFETY: getpid has no preconditions (and is async-signal-safe).
    pid_word().store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
}

extern "C" fn before_fork() {
    crate::arena::hold_for_fork();
}

extern "C" fn after_fork_parent() {
    crate::arena::release_after_fork();
}

extern "C" fn after_fork_child() {
    refresh_pid();
    crate::arena::release_after_fork();
}

/// Cache the pid and keep it right across `fork` (called once, when the probe is published).
pub(crate) fn init() {
    refresh_pid();
    // SAFETY: registers handlers that only touch osmem's own statics; no memory is passed.
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_parent),
            Some(after_fork_child),
        )
    };
}

#[inline]
pub(crate) fn pid() -> i32 {
    match pid_word().load(Ordering::Relaxed) as i32 {
        // Before the probe ran (never on an operation path): ask the kernel.
        0 => unsafe { libc::getpid() },
        p => p,
    }
}

/// The lock's holder is gone: this process was forked while another thread held it.
#[derive(Debug)]
pub(crate) struct Orphaned;

pub(crate) struct SpinLock(AtomicI32);

impl SpinLock {
    pub(crate) const fn new() -> Self {
        SpinLock(AtomicI32::new(0))
    }

    #[inline]
    pub(crate) fn lock(&self) -> Result<(), Orphaned> {
        let me = pid();
        if self
            .0
            .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(());
        }
        self.lock_slow(me)
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(&self, me: i32) -> Result<(), Orphaned> {
        let mut spins = 0u32;
        loop {
            match self.0.load(Ordering::Relaxed) {
                0 => {
                    if self
                        .0
                        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Ok(());
                    }
                }
                holder if holder != me => return Err(Orphaned),
                _ if spins < 128 => {
                    spins += 1;
                    core::hint::spin_loop();
                }
                // The holder was preempted (2 CPUs, busy machine): let it run.
                // SAFETY: sched_yield has no preconditions.
                _ => unsafe {
                    libc::sched_yield();
                },
            }
        }
    }

    #[inline]
    pub(crate) fn unlock(&self) {
        self.0.store(0, Ordering::Release);
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
        // What a child forked mid-hold sees: the parent's pid in the word.
        // SAFETY: getppid has no preconditions.
        l.0.store(unsafe { libc::getppid() }, Ordering::Relaxed);
        assert!(l.lock().is_err());
    }
}
