//! A tiny allocation-free, `no_std` once-cell: `std::sync::OnceLock` is std-only, and the probe
//! and the knobs must be reachable from inside a `GlobalAlloc`.
//!
//! Racing first callers each compute the value and the first to finish publishes it; nobody
//! waits while another thread *computes*. That matters after `fork`: a child forked while
//! another thread was in the middle of probing must not spin for ever on a computation that
//! no longer exists in the child. The only wait left is the few stores between winning the
//! publish and marking it done.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const PUBLISHING: u8 = 1;
const DONE: u8 = 2;

pub(crate) struct Once<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once by the thread that wins EMPTY->PUBLISHING and only read
// after DONE is published with Release/Acquire.
unsafe impl<T: Sync + Send> Sync for Once<T> {}

impl<T> Once<T> {
    pub(crate) const fn new() -> Self {
        Once {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Returns the value, computing it with `f` on first use; `publish` runs once, in the
    /// thread whose value is kept, before any reader can see the value.
    pub(crate) fn get_or_init(&self, f: impl FnOnce() -> T, publish: impl FnOnce(&T)) -> &T {
        if self.state.load(Ordering::Acquire) != DONE {
            let v = f();
            if self
                .state
                .compare_exchange(EMPTY, PUBLISHING, Ordering::Acquire, Ordering::Acquire)
                .is_ok()
            {
                // SAFETY: only the winner of the CAS writes, before publishing DONE.
                let v = unsafe { (*self.value.get()).write(v) };
                publish(v);
                self.state.store(DONE, Ordering::Release);
            } else {
                while self.state.load(Ordering::Acquire) != DONE {
                    core::hint::spin_loop();
                }
            }
        }
        // SAFETY: DONE was observed with Acquire, so the write above is visible.
        unsafe { (*self.value.get()).assume_init_ref() }
    }
}
