//! A second thread of the process, spinning, so that every TLB flush becomes an IPI.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// While alive, a thread of this process spins on another core (a busy loop on an
/// [`AtomicBool`] with [`spin_loop`]).
///
/// Why it matters (DESIGN.md §2): the kernel must shoot down stale TLB entries on every CPU
/// currently running the process's address space. Alone, that is a local flush; with a
/// sibling thread running on the other core, every `madvise(DONTNEED)` / `mprotect` that
/// drops or changes PTEs sends an inter-processor interrupt and waits for it. Purging 1024
/// ranges one call at a time then costs 17× more, which is what batching saves. The thread
/// never sleeps, so its CPU never drops the address space into lazy-TLB mode.
///
/// The thread is not pinned: on a 2-core machine the scheduler runs it on the core the
/// measuring thread is not on. [`start`](Self::start) returns once the thread is spinning;
/// dropping the guard (or [`stop`](Self::stop)) ends the loop and joins the thread.
///
/// ```
/// let s = osmem_bench::Sibling::start();
/// // ... measure: every TLB flush now interrupts the spinning core ...
/// assert!(s.stop() > 0, "the thread spun");
/// ```
#[derive(Debug)]
pub struct Sibling {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl Sibling {
    /// Spawn the spinning thread and wait until it runs.
    ///
    /// # Panics
    /// If the thread cannot be spawned.
    pub fn start() -> Sibling {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let handle = {
            let (stop, started) = (Arc::clone(&stop), Arc::clone(&started));
            std::thread::Builder::new()
                .name("osmem-bench-sibling".into())
                .spawn(move || {
                    started.store(true, Ordering::Release);
                    let mut spins = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        spin_loop();
                        spins += 1;
                    }
                    spins
                })
                .expect("spawn the sibling thread")
        };
        while !started.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        Sibling {
            stop,
            handle: Some(handle),
        }
    }

    /// [`start`](Self::start) if `on`, else nothing: `let _s = Sibling::maybe(sibling);`.
    ///
    /// ```
    /// assert!(osmem_bench::Sibling::maybe(false).is_none());
    /// ```
    pub fn maybe(on: bool) -> Option<Sibling> {
        on.then(Sibling::start)
    }

    /// Stop and join the thread; returns how many times it went round its loop.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => h.join().unwrap_or(0),
            None => 0,
        }
    }
}

impl Drop for Sibling {
    fn drop(&mut self) {
        self.halt();
    }
}
