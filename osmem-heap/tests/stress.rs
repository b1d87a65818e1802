//! Concurrency stress with exact figures at the end, checked against the kernel (mincore)
//! and against the pages' contents, not only the heap's own bookkeeping.
//!
//! - [`stress_batched`] / [`stress_go_faithful`]: 4 worker threads × 3000 random operations
//!   (deterministic seeds, xorshift) of alloc (1..=64 pages, 1 in 20 up to 600 to cross
//!   chunks), a per-run pattern (thread, sequence number, page address) written to every
//!   page, verification before every free (whole runs and halves), while one thread calls
//!   `release(random budget)` / `release_all` and samples the stats (monotone totals,
//!   consistent snapshots), another reports GC cycles with a shrinking heap goal
//!   (`cycle`), and the background scavenger runs at 50% of the CPUs. A run handed out with
//!   `needzero == false` must read zero, whatever the releases did meanwhile. At the end:
//!   the scavenger made progress, every surviving run holds its pattern, and the figures are
//!   exact: in use == the live runs, mapped == in use + free, and after `release_all`
//!   resident pages == in-use pages and released == free.
//! - [`bad_frees_from_several_threads_are_refused_and_change_nothing`]: double frees,
//!   overlapping, foreign, unaligned, zero-page and overflowing requests from 4 threads at
//!   once each get their typed `HeapError`, and the stats, residency and contents are
//!   identical afterwards.
//! - Two regression tests for bugs these found: a double free racing a release was
//!   accepted (runs hidden for release looked allocated), and an out-of-memory refusal grew
//!   the heap to its whole size.
//!
//! Every threaded test calls `alarm(120)` first: a deadlock kills the test binary with
//! SIGALRM instead of hanging CI.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use osmem_heap::{Heap, HeapConfig, HeapError, HeapStats, Mode};
use osmem_testkit::resident_pages;
use osmem_testkit::Rng;

const WORKERS: usize = 4;
const OPS: usize = 3000;
/// Address space of the stress heaps (nothing is committed until used).
const HEAP_BYTES: usize = 512 << 20;
/// A worker keeps at most this many pages live (16 MiB with 4 KiB pages).
const LIVE_CAP: usize = 4096;
const CHUNK_PAGES: usize = 512;

fn watchdog() {
    // SAFETY: alarm has no preconditions. SIGALRM's default action ends the process: a
    // deadlock fails the run instead of hanging it.
    unsafe { libc::alarm(120) };
}

// ---------------------------------------------------------------------------------------
// Page contents: a header word at both ends of every page (the run's tag and the page's
// address, so a page that moved or that another run wrote is caught) and a fill byte in
// between (so a page zeroed by a release under a live run is caught).

/// Pages filled with each byte value, to compare against with one memcmp.
fn templates() -> &'static [Vec<u8>] {
    static T: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    T.get_or_init(|| (0..=255u8).map(|b| vec![b; osmem::page_size()]).collect())
}

fn fill_byte(tag: u64) -> u8 {
    ((tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8) | 1
}

fn header(tag: u64, page: usize) -> u64 {
    tag.rotate_left(20) ^ (page as u64).wrapping_mul(0xFF51_AFD7_ED55_8CCD) | 1
}

/// A live run: first byte, pages, and the tag its pages were written with.
#[derive(Copy, Clone, Debug)]
struct Live {
    addr: usize,
    pages: usize,
    tag: u64,
}

/// Write the run's pattern.
///
/// # Safety
/// The pages are the caller's.
unsafe fn write_run(l: &Live, ps: usize) {
    let b = fill_byte(l.tag);
    for k in 0..l.pages {
        let p = l.addr + k * ps;
        std::ptr::write_bytes(p as *mut u8, b, ps);
        let h = header(l.tag, p);
        (p as *mut u64).write(h);
        ((p + ps - 8) as *mut u64).write(h);
    }
}

/// Whether the run holds its pattern; the first bad page and what it holds, if not.
///
/// # Safety
/// The pages are mapped and readable.
unsafe fn check_run(l: &Live, ps: usize) -> Result<(), String> {
    let t = &templates()[fill_byte(l.tag) as usize];
    for k in 0..l.pages {
        let p = l.addr + k * ps;
        let h = header(l.tag, p);
        let (h0, h1) = (
            (p as *const u64).read(),
            ((p + ps - 8) as *const u64).read(),
        );
        let mid = std::slice::from_raw_parts((p + 8) as *const u8, ps - 16);
        if h0 != h || h1 != h || mid != &t[8..ps - 8] {
            return Err(format!(
                "run {l:x?}: page {k} at {p:#x} lost its pattern (headers {h0:#x} {h1:#x}, want {h:#x}; first byte {:#x}, want {:#x})",
                mid[0],
                t[0]
            ));
        }
    }
    Ok(())
}

/// Whether `pages` pages at `addr` read zero.
///
/// # Safety
/// The pages are mapped and readable.
unsafe fn reads_zero(addr: usize, pages: usize, ps: usize) -> bool {
    let z = &templates()[0];
    (0..pages).all(|k| std::slice::from_raw_parts((addr + k * ps) as *const u8, ps) == z.as_slice())
}

fn resident(heap: &Heap) -> usize {
    let r = heap.range();
    resident_pages(r.start, r.len())
}

/// Counts a thread as finished when dropped, also when it panics (so the threads that run
/// until the workers are done always stop).
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sets a flag when dropped (however the scope is left).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What every stats snapshot must satisfy, whatever runs concurrently (the snapshot is
/// taken under the heap lock).
fn check_snapshot(st: &HeapStats, ps: usize, max: usize) {
    assert_eq!(st.mapped_bytes, st.in_use_bytes + st.free_bytes, "{st:?}");
    // Released pages are free pages (a run being made Ready again is counted in use only).
    assert!(st.released_bytes <= st.free_bytes, "{st:?}");
    assert_eq!(
        st.mapped_ready_bytes,
        st.mapped_bytes - st.released_bytes,
        "{st:?}"
    );
    assert!(st.mapped_bytes <= max, "{st:?}");
    for b in [st.mapped_bytes, st.in_use_bytes, st.released_bytes] {
        assert_eq!(b % ps, 0, "{st:?}");
    }
}

/// The counters that only grow never shrink between two snapshots.
fn check_monotone(a: &HeapStats, b: &HeapStats) {
    assert!(
        b.released_total_bytes >= a.released_total_bytes,
        "{a:?} -> {b:?}"
    );
    assert!(b.release_calls >= a.release_calls, "{a:?} -> {b:?}");
    assert!(b.release_runs >= a.release_runs, "{a:?} -> {b:?}");
    assert!(
        b.background_released_bytes >= a.background_released_bytes,
        "{a:?} -> {b:?}"
    );
    assert!(
        b.background_work_ns >= a.background_work_ns,
        "{a:?} -> {b:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The stress test.

/// One worker: random allocs (written), frees (verified first), verifications.
fn worker(heap: &Heap, t: usize, ps: usize) -> Vec<Live> {
    let mut rng = Rng::new(0x5EED_0000 + t as u64);
    let range = heap.range();
    let mut live: Vec<Live> = Vec::new();
    let mut live_pages = 0;
    for seq in 0..OPS {
        let roll = rng.below(100);
        if live.is_empty() || (roll < 50 && live_pages < LIVE_CAP) {
            let n = if rng.below(20) == 0 {
                1 + rng.below(600)
            } else {
                1 + rng.below(64)
            };
            let r = heap
                .alloc(n)
                .unwrap_or_else(|e| panic!("thread {t} op {seq}: alloc({n}): {e}"));
            assert_eq!(r.pages, n);
            assert!(
                r.addr % ps == 0 && r.addr >= range.start && r.addr + n * ps <= range.end,
                "{r:?}"
            );
            // needzero is exact: false only when every page was released or never used.
            assert!(r.scavenged <= n, "{r:?}");
            assert_eq!(r.needzero, r.scavenged < n, "{r:?}");
            if !r.needzero {
                // SAFETY: our run.
                assert!(
                    unsafe { reads_zero(r.addr, n, ps) },
                    "thread {t} op {seq}: {r:?} says it reads zero and does not"
                );
            }
            let l = Live {
                addr: r.addr,
                pages: n,
                tag: ((t as u64 + 1) << 32) | seq as u64,
            };
            // SAFETY: our run.
            unsafe { write_run(&l, ps) };
            live.push(l);
            live_pages += n;
        } else if roll < 92 {
            let l = live.swap_remove(rng.below(live.len()));
            // SAFETY: our run.
            if let Err(e) = unsafe { check_run(&l, ps) } {
                panic!("thread {t} op {seq}: before free: {e}");
            }
            if l.pages >= 2 && rng.below(4) == 0 {
                // A run freed in two parts: the second half must survive the first free.
                let h = l.pages / 2;
                heap.free(l.addr, h).unwrap();
                let rest = Live {
                    addr: l.addr + h * ps,
                    pages: l.pages - h,
                    tag: l.tag,
                };
                // SAFETY: still ours.
                if let Err(e) = unsafe { check_run(&rest, ps) } {
                    panic!("thread {t} op {seq}: after freeing the first half: {e}");
                }
                heap.free(rest.addr, rest.pages).unwrap();
            } else {
                heap.free(l.addr, l.pages).unwrap();
            }
            live_pages -= l.pages;
        } else {
            let l = live[rng.below(live.len())];
            // SAFETY: our run.
            if let Err(e) = unsafe { check_run(&l, ps) } {
                panic!("thread {t} op {seq}: {e}");
            }
        }
    }
    live
}

fn stress(mode: Mode) {
    watchdog();
    let ps = osmem::page_size();
    let chunk = CHUNK_PAGES * ps;
    let heap = Heap::create(HeapConfig::new(HEAP_BYTES).mode(mode)).unwrap();
    let max = heap.range().len();
    let finished = AtomicUsize::new(0);
    let scav = heap.start_scavenger(0.5).expect("scavenger thread");
    let start = heap.stats();
    let (mut live, last_sample, releases): (Vec<Live>, HeapStats, usize) =
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|t| {
                    let finished = &finished;
                    s.spawn(move || {
                        let _f = Finished(finished);
                        worker(heap, t, ps)
                    })
                })
                .collect();
            // The releaser: random budgets and release_all, stats sampled after each.
            let releaser = s.spawn(|| {
                let mut rng = Rng::new(0xBEEF);
                let mut last = heap.stats();
                let mut n = 0;
                while finished.load(Ordering::SeqCst) < WORKERS {
                    let (budget, r) = if rng.below(8) == 0 {
                        (usize::MAX, heap.release_all())
                    } else {
                        let b = (1 + rng.below(1024)) * ps;
                        (b, heap.release(b))
                    };
                    assert_eq!(r.failed, 0, "{r:?}");
                    assert_eq!(r.bytes % ps, 0, "{r:?}");
                    // At most the budget, plus less than a chunk: a free huge page goes out
                    // whole (both modes never split one).
                    let bound = budget.saturating_add(chunk);
                    assert!(r.bytes <= bound, "release({budget}): {r:?}");
                    let st = heap.stats();
                    check_snapshot(&st, ps, max);
                    check_monotone(&last, &st);
                    // Others may release meanwhile too, never less than this release.
                    assert!(
                        st.released_total_bytes >= last.released_total_bytes + r.bytes as u64,
                        "{last:?} -> {st:?} after {r:?}"
                    );
                    last = st;
                    n += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                (last, n)
            });
            // GC cycles with a shrinking heap goal (the retain goal follows it down, so the
            // scavenger keeps finding work); back up when it gets small.
            s.spawn(|| {
                let mut goal = 256usize << 20;
                while finished.load(Ordering::SeqCst) < WORKERS {
                    heap.cycle(goal);
                    goal = goal / 4 * 3;
                    if goal < 1 << 20 {
                        goal = 256 << 20;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            let live = workers
                .into_iter()
                .flat_map(|w| w.join().expect("worker"))
                .collect();
            let (last, n) = releaser.join().expect("releaser");
            (live, last, n)
        });
    assert!(releases > 0, "the releaser ran");
    // Exact even with the scavenger still running: runs it hides while releasing them are
    // free pages, never in use.
    let storm_live: usize = live.iter().map(|l| l.pages).sum();
    assert_eq!(
        heap.stats().in_use_bytes,
        storm_live * ps,
        "after the storm"
    );
    eprintln!(
        "{mode:?}: {releases} releases by the releaser; after the storm: {:?}",
        heap.stats()
    );

    // The scavenger still works after the storm: free half the survivors (verified), make
    // the retain goal small, and wait for it to release something (a liveness check with a
    // generous bound, not a timing assertion: the alarm is the backstop). Not "the goal is
    // > 0" first: the running scavenger may meet it before this thread looks.
    let bg0 = heap.stats().background_released_bytes;
    let mut keep = Vec::new();
    for (k, l) in live.drain(..).enumerate() {
        // SAFETY: our run.
        unsafe { check_run(&l, ps) }.unwrap_or_else(|e| panic!("after the storm: {e}"));
        if k % 2 == 0 {
            heap.free(l.addr, l.pages).unwrap();
        } else {
            keep.push(l);
        }
    }
    let mut live = keep;
    heap.cycle(256 << 20);
    heap.cycle(32 << 20);
    let t0 = Instant::now();
    while heap.stats().background_released_bytes == bg0 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        heap.stats().background_released_bytes > bg0,
        "the background scavenger released nothing toward a goal of {} bytes: {:?}",
        heap.scavenge_goal(),
        heap.stats()
    );
    scav.stop();

    // Exact figures.
    for l in &live {
        // SAFETY: our run.
        unsafe { check_run(l, ps) }.unwrap_or_else(|e| panic!("at the end: {e}"));
    }
    let live_pages: usize = live.iter().map(|l| l.pages).sum();
    let st = heap.stats();
    check_snapshot(&st, ps, max);
    check_monotone(&start, &st);
    check_monotone(&last_sample, &st);
    assert_eq!(st.in_use_bytes, live_pages * ps, "{st:?}");
    assert_eq!(st.mapped_bytes, st.in_use_bytes + st.free_bytes, "{st:?}");
    let res0 = resident(heap);
    let r = heap.release_all();
    assert_eq!(r.failed, 0, "{r:?}");
    let st2 = heap.stats();
    check_monotone(&st, &st2);
    assert_eq!(st2.released_bytes, st2.free_bytes, "{st2:?}");
    assert_eq!(st2.in_use_bytes, live_pages * ps, "{st2:?}");
    assert_eq!(
        st2.released_bytes.checked_sub(st.released_bytes),
        Some(r.bytes),
        "{st:?} -> {st2:?}: {r:?}"
    );
    let res = resident(heap);
    assert_eq!(
        res0.checked_sub(res),
        Some(r.bytes / ps),
        "resident {res0} -> {res} pages vs {r:?}"
    );
    assert_eq!(
        res, live_pages,
        "resident pages in the heap vs in-use pages ({st2:?})"
    );
    for l in &live {
        assert_eq!(resident_pages(l.addr, l.pages * ps), l.pages, "{l:x?}");
        // SAFETY: our run.
        unsafe { check_run(l, ps) }.unwrap_or_else(|e| panic!("after release_all: {e}"));
    }
    // Everything back: nothing in use, nothing resident.
    for l in live.drain(..) {
        heap.free(l.addr, l.pages).unwrap();
    }
    let _ = heap.release_all();
    let st3 = heap.stats();
    assert_eq!(st3.in_use_bytes, 0, "{st3:?}");
    assert_eq!(st3.released_bytes, st3.mapped_bytes, "{st3:?}");
    check_monotone(&st2, &st3);
    assert_eq!(resident(heap), 0);
    // SAFETY: every thread is done, the scavenger stopped.
    unsafe { Heap::destroy(heap) };
}

#[test]
fn stress_batched() {
    stress(Mode::Batched);
}

#[test]
fn stress_go_faithful() {
    stress(Mode::GoFaithful);
}

// ---------------------------------------------------------------------------------------
// Bad requests, concurrently.

#[test]
fn bad_frees_from_several_threads_are_refused_and_change_nothing() {
    watchdog();
    let ps = osmem::page_size();
    for mode in [Mode::Batched, Mode::GoFaithful] {
        // A small heap, grown to its whole size first, so that an out-of-memory refusal
        // cannot grow it (see `an_out_of_memory_refusal_changes_nothing`).
        let heap = Heap::create(HeapConfig::new(16 << 20).mode(mode)).unwrap();
        let range = heap.range();
        let (start, end, len) = (range.start, range.end, range.len());
        let total = len / ps;
        let all = heap.alloc(total).unwrap();
        heap.free(all.addr, all.pages).unwrap();
        // Live runs with free runs between them: holes released and holes not.
        let mut live = Vec::new();
        let mut holes = Vec::new();
        for k in 0..64usize {
            let n = 1 + (k * 37) % 50;
            let a = heap.alloc(n).unwrap();
            let b = heap.alloc(1 + k % 7).unwrap();
            let l = Live {
                addr: a.addr,
                pages: n,
                tag: 0xBAD0_0000 + k as u64,
            };
            // SAFETY: our run.
            unsafe { write_run(&l, ps) };
            // SAFETY: our run (written so its pages are resident before it is freed).
            unsafe { std::ptr::write_bytes(b.addr as *mut u8, 0x77, b.pages * ps) };
            live.push(l);
            holes.push((b.addr, b.pages));
        }
        // Half the holes freed and released, the other half freed only (after every
        // allocation: each live run is followed by its hole).
        for &(h, n) in &holes[..32] {
            heap.free(h, n).unwrap();
        }
        let _ = heap.release_all();
        for &(h, n) in &holes[32..] {
            heap.free(h, n).unwrap();
        }
        let before = heap.stats();
        let res_before = resident(heap);
        assert!(before.in_use_bytes > 0 && before.released_bytes < before.free_bytes);
        let stack_var = 0u64;
        let foreign = (&stack_var as *const u64 as usize) & !(ps - 1);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (live, holes) = (&live, &holes);
                s.spawn(move || {
                    let mut rng = Rng::new(0xDEAD + t);
                    for i in 0..4000 {
                        let l = live[rng.below(live.len())];
                        let (h, hn) = holes[rng.below(holes.len())];
                        // (request, the refusal it must get)
                        let (what, got, want) = match rng.below(14) {
                            0 => (
                                "double free",
                                heap.free(h, hn),
                                HeapError::NotAllocated { addr: h, pages: hn },
                            ),
                            1 => (
                                "double free, one page",
                                heap.free(h, 1),
                                HeapError::NotAllocated { addr: h, pages: 1 },
                            ),
                            // A live run and the free page after it (every live run is
                            // followed by a hole).
                            2 => (
                                "live run + 1",
                                heap.free(l.addr, l.pages + 1),
                                HeapError::NotAllocated {
                                    addr: l.addr,
                                    pages: l.pages + 1,
                                },
                            ),
                            // A hole and the live run after it.
                            3 => (
                                "hole + live",
                                heap.free(h, hn + 1),
                                HeapError::NotAllocated {
                                    addr: h,
                                    pages: hn + 1,
                                },
                            ),
                            4 => (
                                "foreign",
                                heap.free(foreign, 1),
                                HeapError::NotInHeap {
                                    addr: foreign,
                                    pages: 1,
                                },
                            ),
                            5 => (
                                "below the heap",
                                heap.free(start - ps, 1),
                                HeapError::NotInHeap {
                                    addr: start - ps,
                                    pages: 1,
                                },
                            ),
                            6 => (
                                "across the end",
                                heap.free(end - ps, 2),
                                HeapError::NotInHeap {
                                    addr: end - ps,
                                    pages: 2,
                                },
                            ),
                            7 => (
                                "unaligned",
                                heap.free(l.addr + 8, 1),
                                HeapError::Unaligned { addr: l.addr + 8 },
                            ),
                            8 => ("free 0 pages", heap.free(l.addr, 0), HeapError::ZeroPages),
                            9 => (
                                "alloc 0 pages",
                                heap.alloc(0).map(|_| ()),
                                HeapError::ZeroPages,
                            ),
                            10 => (
                                "alloc usize::MAX",
                                heap.alloc(usize::MAX).map(|_| ()),
                                HeapError::TooLarge { bytes: usize::MAX },
                            ),
                            11 => (
                                "alloc more than the heap",
                                heap.alloc(total + 1).map(|_| ()),
                                HeapError::TooLarge {
                                    bytes: (total + 1) * ps,
                                },
                            ),
                            12 => (
                                "free usize::MAX pages",
                                heap.free(l.addr, usize::MAX),
                                HeapError::TooLarge { bytes: usize::MAX },
                            ),
                            // Fits the heap's size, not its free space: out of memory, and
                            // the heap is already grown to its whole size.
                            _ => (
                                "alloc the whole heap",
                                heap.alloc(total).map(|_| ()),
                                HeapError::OutOfMemory {
                                    pages: total,
                                    max_bytes: len,
                                },
                            ),
                        };
                        assert_eq!(got, Err(want), "thread {t} request {i}: {what}");
                    }
                });
            }
        });
        // Nothing changed: the figures, the kernel's view, the contents.
        assert_eq!(heap.stats(), before, "{mode:?}");
        assert_eq!(resident(heap), res_before, "{mode:?}");
        for l in &live {
            // SAFETY: our run.
            unsafe { check_run(l, ps) }.unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        }
        // The live runs are still wholly allocated (no refused request freed part of one):
        // each frees exactly once.
        for l in &live {
            heap.free(l.addr, l.pages).unwrap();
            assert!(matches!(
                heap.free(l.addr, l.pages),
                Err(HeapError::NotAllocated { .. })
            ));
        }
        assert_eq!(heap.stats().in_use_bytes, 0, "{mode:?}");
        // SAFETY: the threads are done.
        unsafe { Heap::destroy(heap) };
    }
}

// ---------------------------------------------------------------------------------------
// Regressions: bugs these tests found (both fixed; they failed before).

/// A release hides the runs it is releasing by marking them allocated while the kernel
/// works (the heap lock is dropped for the syscalls). Before the heap kept a separate
/// "hidden" bitmap, `free` could not tell those pages from pages in use: a double free of a free run that a concurrent release (`release`,
/// `release_all`, `scavenge`, the background scavenger) has hidden is accepted. `in_use`
/// then drops by pages that were not in use, the run becomes allocatable while the kernel
/// is still releasing it, and the release's settling clears the allocation bits of whatever
/// took it meanwhile. The expected behaviour: `NotAllocated`, nothing changed.
#[test]
fn a_double_free_racing_a_release_is_refused() {
    watchdog();
    let ps = osmem::page_size();
    for mode in [Mode::GoFaithful, Mode::Batched] {
        let heap = Heap::create(HeapConfig::new(256 << 20).mode(mode)).unwrap();
        // 8192 two-page runs, written, the first page of each freed: 8192 separate free runs
        // for the release to hide and release.
        let runs: Vec<usize> = (0..8192)
            .map(|_| {
                let r = heap.alloc(2).unwrap();
                // SAFETY: our run.
                unsafe { std::ptr::write_bytes(r.addr as *mut u8, 1, 2 * ps) };
                r.addr
            })
            .collect();
        for &a in &runs {
            heap.free(a, 1).unwrap();
        }
        let in_use = heap.stats().in_use_bytes;
        let done = AtomicBool::new(false);
        let accepted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _d = SetOnDrop(&done);
                let _ = heap.release_all();
            });
            s.spawn(|| {
                // Double free the freed pages, highest first (where the release starts),
                // until the release is over.
                let mut i = 0;
                while !done.load(Ordering::SeqCst) {
                    let a = runs[runs.len() - 1 - i % runs.len()];
                    i += 1;
                    match heap.free(a, 1) {
                        Ok(()) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(HeapError::NotAllocated { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        });
        let st = heap.stats();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            0,
            "{mode:?}: double frees accepted during a release; in use {in_use} -> {} ({st:?})",
            st.in_use_bytes
        );
        assert_eq!(st.in_use_bytes, in_use, "{mode:?}: {st:?}");
        // SAFETY: the threads are done.
        unsafe { Heap::destroy(heap) };
    }
}

/// `HeapError` says "Refusals change nothing"; an allocation the heap cannot satisfy once
/// grew the heap to its whole reserved size (mapping every chunk read-write, which
/// counts toward the commit charge) and then refuses with `OutOfMemory`: `mapped_bytes`,
/// `free_bytes` and `released_bytes` changed. Now it refuses before growing.
#[test]
fn an_out_of_memory_refusal_changes_nothing() {
    let ps = osmem::page_size();
    let heap = Heap::create(HeapConfig::new(64 << 20)).unwrap();
    let r = heap.alloc(1).unwrap();
    let before = heap.stats();
    let e = heap.alloc((64 << 20) / ps);
    assert!(
        matches!(e, Err(HeapError::OutOfMemory { .. })),
        "one page is in use: {e:?}"
    );
    assert_eq!(heap.stats(), before, "a refusal changed the heap");
    heap.free(r.addr, 1).unwrap();
    // SAFETY: done.
    unsafe { Heap::destroy(heap) };
}
