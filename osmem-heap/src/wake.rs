//! How the scavenger sleeps and what wakes it: a futex word in the heap.
//!
//! An idle scavenger used to look at its goal every 10 ms (100 wakeups a second with nothing
//! to do). Now it sleeps on the heap's wake word for up to a second, having said what is worth
//! waking it for (`Heap::wake_at`): a free that takes the goal to a size it would act on, a
//! GC cycle, a limit change, or a stop. Those bump the word and wake it at once — from any
//! thread, inside an allocator too: one atomic load on the free path while the scavenger is
//! awake, one `futex` call when it sleeps and the free is worth it. No allocation.

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

/// Wake every thread sleeping on `word` (after the caller changed it).
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE on a live, aligned u32; it reads nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// Sleep while `word` holds `expected`, for at most `timeout` (or until a wake or a signal).
#[cfg_attr(not(feature = "std"), allow(dead_code))] // the scavenger thread needs std
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    if word.load(Ordering::SeqCst) != expected {
        return;
    }
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: FUTEX_WAIT on a live, aligned u32 with a valid relative timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32,
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
        );
    }
}
