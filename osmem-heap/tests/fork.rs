//! Fork safety: a child forked while other threads allocate and free (so the heap lock is
//! often held at the instant of the fork) must be able to allocate at once. The heap's
//! locks are held across `fork` by `pthread_atfork` handlers, as glibc does for malloc.

use osmem_heap::{Heap, HeapConfig};
use osmem_testkit::{in_child_report, ChildExit, Report};
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn a_child_forked_while_the_heap_is_busy_allocates_at_once() {
    let heap = Heap::create(HeapConfig::new(256 << 20)).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..2 {
            let stop = &stop;
            s.spawn(move || {
                let mut k = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let n = 1 + (k * 7 + t) % 40;
                    let r = heap.alloc(n).unwrap();
                    heap.free(r.addr, r.pages).unwrap();
                    if k % 64 == 0 {
                        heap.release(1 << 20);
                    }
                    k += 1;
                }
            });
        }
        // Stop the workers however this thread leaves the scope (a failed assert included).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        for round in 0..50 {
            let (exit, rep) = in_child_report(|r: &mut Report| {
                // A deadlock would hang here: SIGALRM ends the child instead.
                // SAFETY: alarm has no preconditions.
                unsafe { libc::alarm(5) };
                let Ok(a) = heap.alloc(3) else { return 2 };
                // SAFETY: the child's own run.
                unsafe { (a.addr as *mut u8).write_bytes(7, 3 * heap.page_size()) };
                if heap.free(a.addr, a.pages).is_err() {
                    return 3;
                }
                r.push(1);
                0
            });
            assert_eq!(exit, ChildExit::Code(0), "round {round}: {rep:?}");
            assert_eq!(rep.as_slice(), &[1]);
        }
    });
    // SAFETY: the threads are done.
    unsafe { Heap::destroy(heap) };
}
