//! A tiny allocation-free, `no_std` once-cell: `std::sync::OnceLock` is std-only, and the probe
//! and the knobs must be reachable from inside a `GlobalAlloc`.
//!
//! Fork safety is the point of the design. Racing first callers each compute the value and
//! the first to finish publishes it, so nobody waits while another thread *computes*: a child
//! forked while another thread was probing does not spin for ever on a computation that does
//! not exist in the child. The publish itself is marked with the publisher's pid (threads of a
//! process share it); a waiter that sees a publish marked with another pid was forked in the
//! middle of it, and takes the publish over with its own value.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicI32, Ordering};

const EMPTY: i32 = 0;
const DONE: i32 = -1;

pub(crate) struct Once<T> {
    /// EMPTY, DONE, or the pid of the process whose thread is publishing.
    state: AtomicI32,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written only by the thread that owns the publish (state = its pid) and
// read only after DONE is published with Release/Acquire.
unsafe impl<T: Sync + Send> Sync for Once<T> {}

impl<T> Once<T> {
    pub(crate) const fn new() -> Self {
        Once {
            state: AtomicI32::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Returns the value, computing it with `f` on first use; `publish` runs once, in the
    /// thread whose value is kept, before any reader can see the value.
    pub(crate) fn get_or_init(&self, f: impl FnOnce() -> T, publish: impl FnOnce(&T)) -> &T {
        if self.state.load(Ordering::Acquire) != DONE {
            let v = f();
            // SAFETY: getpid has no preconditions.
            let me = unsafe { libc::getpid() };
            let mut seen = EMPTY;
            loop {
                match self
                    .state
                    .compare_exchange(seen, me, Ordering::Acquire, Ordering::Acquire)
                {
                    Ok(_) => {
                        // SAFETY: we own the publish; no reader looks before DONE.
                        let v = unsafe { (*self.value.get()).write(v) };
                        publish(v);
                        self.state.store(DONE, Ordering::Release);
                        break;
                    }
                    Err(DONE) => break,
                    // Another process's publish: we were forked in the middle of it.
                    Err(pid) if pid != me && pid != EMPTY => seen = pid,
                    Err(_) => core::hint::spin_loop(),
                }
            }
        }
        // SAFETY: DONE was observed with Acquire, so the write above is visible.
        unsafe { (*self.value.get()).assume_init_ref() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_once() {
        let o: Once<u32> = Once::new();
        let mut published = 0;
        assert_eq!(*o.get_or_init(|| 7, |_| published += 1), 7);
        assert_eq!(*o.get_or_init(|| 8, |_| published += 1), 7);
        assert_eq!(published, 1);
    }

    #[test]
    fn takes_over_a_publish_left_by_another_process() {
        // What a child sees when it was forked while a parent thread was publishing: the
        // state names a pid that is not its own, and nobody in this process will finish.
        let o: Once<u32> = Once::new();
        // SAFETY: getppid has no preconditions.
        o.state.store(unsafe { libc::getppid() }, Ordering::Relaxed);
        assert_eq!(*o.get_or_init(|| 9, |_| {}), 9);
        assert_eq!(o.state.load(Ordering::Relaxed), DONE);
    }
}
