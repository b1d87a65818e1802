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
                        let _ = heap.release(1 << 20);
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

// ---------------------------------------------------------------------------------------
// The stress: forks at any instant from the threads that use the heap.

/// Runs a thread holds at once.
const RUNS: usize = 24;
const THREADS: usize = 4;
const MAGIC: u64 = 0x5ca1_ab1e_0000_0000;

fn forks_wanted() -> usize {
    if cfg!(debug_assertions) {
        2_000
    } else {
        10_000
    }
}

/// A thread's runs, where its children can read them: `(addr, pages)`, `addr` 0 when free.
struct Runs {
    addr: [std::sync::atomic::AtomicUsize; RUNS],
    pages: [std::sync::atomic::AtomicUsize; RUNS],
}

fn tag(addr: usize) -> u64 {
    osmem_testkit::page_tag(addr, MAGIC)
}

/// Every page of a run carries its tag, and in its last word a flag saying the tag is there
/// (one page is copied by the fork at one instant: both or neither).
fn fill(addr: usize, pages: usize, ps: usize) {
    for p in 0..pages {
        // SAFETY: a page of the calling thread's own run.
        unsafe { osmem_testkit::tag_page(addr + p * ps, MAGIC) };
    }
}

fn unflag(addr: usize, pages: usize, ps: usize) {
    for p in 0..pages {
        // SAFETY: as above.
        unsafe { osmem_testkit::untag_page(addr + p * ps) };
    }
}

/// The child: every run a thread held is intact and Ready (osmem's lookup and the kernel's
/// residency); then every run is freed and the heap serves and releases again, under an
/// alarm (a deadlock would end the child with SIGALRM).
fn child_checks(heap: &Heap, runs: &[Runs]) -> i32 {
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(20) };
    let ps = heap.page_size();
    for t in runs {
        for k in 0..RUNS {
            let addr = t.addr[k].load(Ordering::Acquire);
            let pages = t.pages[k].load(Ordering::Acquire);
            if addr == 0 {
                continue;
            }
            for p in 0..pages {
                let a = addr + p * ps;
                match osmem::lookup(a) {
                    Some(l) if l.state == osmem::State::Ready => {}
                    _ => return 10,
                }
                // SAFETY: a page of a run in use (Ready, checked above).
                let (v, flag) = unsafe {
                    (
                        (a as *const u64).read_volatile(),
                        ((a + ps - 8) as *const u64).read_volatile(),
                    )
                };
                if flag == 1 && (v != tag(a) || osmem_testkit::resident_pages(a, ps) != 1) {
                    return 11;
                }
            }
        }
    }
    for t in runs {
        for k in 0..RUNS {
            let addr = t.addr[k].load(Ordering::Acquire);
            if addr != 0 && heap.free(addr, t.pages[k].load(Ordering::Acquire)).is_err() {
                return 12;
            }
        }
    }
    // (Runs that other threads of the parent were allocating or freeing at the instant of
    // the fork stay in use: their owners do not exist here.)
    let st = heap.stats();
    if st.mapped_bytes != st.in_use_bytes + st.free_bytes {
        return 13;
    }
    let Ok(a) = heap.alloc(64) else { return 14 };
    fill(a.addr, 64, ps);
    if heap.free(a.addr, 64).is_err() {
        return 15;
    }
    // Every free page released: nothing is left hidden by a release in flight at the fork.
    let r = heap.release_all();
    let st = heap.stats();
    if r.failed != 0 || st.released_bytes != st.free_bytes {
        return 16;
    }
    0
}

#[test]
fn children_forked_at_any_instant_find_every_run_intact_and_the_heap_usable() {
    let heap = Heap::create(HeapConfig::new(512 << 20)).unwrap();
    heap.set_memory_limit(24 << 20); // synchronous releases inside allocations too
    let scavenger = heap.start_scavenger(0.5).unwrap();
    let ps = heap.page_size();
    let runs: Vec<Runs> = (0..THREADS)
        .map(|_| Runs {
            addr: std::array::from_fn(|_| std::sync::atomic::AtomicUsize::new(0)),
            pages: std::array::from_fn(|_| std::sync::atomic::AtomicUsize::new(0)),
        })
        .collect();
    let forks = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (runs, forks, failed, stop) = (&runs, &forks, &failed, &stop);
            s.spawn(move || {
                let mut rng = osmem_testkit::Rng::new(77 + t as u64);
                let mine = &runs[t];
                while !stop.load(Ordering::Relaxed) {
                    match rng.below(8) {
                        0 => {
                            if forks.fetch_add(1, Ordering::Relaxed) >= forks_wanted() {
                                stop.store(true, Ordering::Relaxed);
                                break;
                            }
                            // SAFETY: the child runs the checks and `_exit`s.
                            let pid = unsafe { libc::fork() };
                            if pid == 0 {
                                let code = child_checks(heap, runs);
                                // SAFETY: ends the child.
                                unsafe { libc::_exit(code) };
                            }
                            let mut status = 0;
                            // SAFETY: our own child.
                            unsafe { libc::waitpid(pid, &mut status, 0) };
                            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                                eprintln!("thread {t}: child status {status:#x}");
                                failed.fetch_add(1, Ordering::Relaxed);
                                stop.store(true, Ordering::Relaxed);
                            }
                        }
                        1 => {
                            let _ = heap.release(1 << 20);
                        }
                        _ => {
                            let k = rng.below(RUNS);
                            let addr = mine.addr[k].load(Ordering::Relaxed);
                            if addr == 0 {
                                let pages = 1 + rng.below(16);
                                let r = heap.alloc(pages).unwrap();
                                fill(r.addr, pages, ps);
                                mine.pages[k].store(pages, Ordering::Release);
                                mine.addr[k].store(r.addr, Ordering::Release);
                            } else {
                                let pages = mine.pages[k].load(Ordering::Relaxed);
                                mine.addr[k].store(0, Ordering::Release);
                                unflag(addr, pages, ps);
                                heap.free(addr, pages).unwrap();
                            }
                        }
                    }
                }
            });
        }
    });
    drop(scavenger);
    let n = forks.load(Ordering::Relaxed).min(forks_wanted());
    eprintln!(
        "{n} forks beside {THREADS} threads and the scavenger in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a child found the heap wrong"
    );
    assert!(n >= forks_wanted());
    // The parent: every run still intact.
    for t in &runs {
        for k in 0..RUNS {
            let addr = t.addr[k].load(Ordering::Relaxed);
            for p in 0..t.pages[k].load(Ordering::Relaxed) {
                if addr != 0 {
                    let a = addr + p * ps;
                    // SAFETY: a run in use.
                    assert_eq!(unsafe { (a as *const u64).read() }, tag(a));
                }
            }
        }
    }
    // SAFETY: the threads are done and the scavenger stopped.
    unsafe { Heap::destroy(heap) };
}
