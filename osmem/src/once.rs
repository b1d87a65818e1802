//! A tiny allocation-free, `no_std` once-cell: `std::sync::OnceLock` is std-only, and the probe
//! and the knobs must be reachable from inside a `GlobalAlloc`.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

pub(crate) struct Once<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once by the thread that wins EMPTY->RUNNING and only read after
// DONE is published with Release/Acquire.
unsafe impl<T: Sync + Send> Sync for Once<T> {}

impl<T> Once<T> {
    pub(crate) const fn new() -> Self {
        Once {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Returns the value, computing it with `f` on first use. Concurrent first callers spin
    /// while the winner runs `f` (a few syscalls): no futex needed, nothing allocated.
    pub(crate) fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        if self.state.load(Ordering::Acquire) != DONE {
            if self
                .state
                .compare_exchange(EMPTY, RUNNING, Ordering::Acquire, Ordering::Acquire)
                .is_ok()
            {
                // SAFETY: only the winner of the CAS writes, before publishing DONE.
                unsafe { (*self.value.get()).write(f()) };
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
