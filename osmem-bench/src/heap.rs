//! The page heap (osmem-heap) measured: how cheaply it returns memory, how soon it meets its
//! goal, what that does to a mutator, and how fast it finds runs — each against its in-run
//! baseline (the Go-faithful mode, the raw kernel calls, a naive first-fit bitmap).
//!
//! - [`heap_release`]: 1 GiB of free memory scattered as runs of one size between in-use runs
//!   of the same size, released at once (`release_all`) by the default (batched) mode and by
//!   the Go-faithful mode (one `madvise` per run); the same layout in a plain mapping
//!   released by one raw `process_madvise` per 1024 runs and by a raw `madvise` loop. Bytes
//!   per CPU-second of the releasing thread (`CLOCK_THREAD_CPUTIME_ID`). The default's gain
//!   over Go-faithful is put next to the kernel's own batch-over-loop gain.
//! - [`heap_goal`]: the live heap shrinks from 1 GiB to 128 MiB with the background
//!   scavenger running at 1% of all CPUs; the time until the heap holds no more than its
//!   retain goal (in-use × 1.1), what a mutator thread writing its own 32 MiB keeps of its
//!   rate meanwhile, and the minor faults of re-allocating 64 MiB freed 200 ms earlier (the
//!   refaults eager release costs).
//! - [`heap_alloc`]: alloc/free of runs of 1–512 pages on a 64 GiB heap half free in
//!   scattered runs, one and two threads, against a first-fit scan of a flat bitmap (the
//!   same lowest-address policy, so single-threaded both hand out the same addresses:
//!   checked).

use crate::raw::{self, Iov, SelfPidfd, MADV_DONTNEED, MADV_POPULATE_WRITE};
use crate::Sibling;
use crate::{median_f64, Rng};
use osmem_heap::{Heap, HeapConfig, Mode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The sizes of a heap run.
#[derive(Copy, Clone, Debug)]
pub struct HeapPlan {
    /// Free bytes released in [`heap_release`] (as many in use between them).
    pub release_bytes: usize,
    /// Rounds of [`heap_release`] per cell.
    pub release_rounds: usize,
    /// Live bytes before the shrink in [`heap_goal`] (shrinks to an eighth).
    pub goal_live: usize,
    /// How long [`heap_goal`] waits for the goal.
    pub goal_timeout: Duration,
    /// The heap of [`heap_alloc`], bytes.
    pub alloc_heap: usize,
    /// Operations timed per allocator in [`heap_alloc`] (the naive one stops earlier if it
    /// spends [`HeapPlan::alloc_budget`]).
    pub alloc_ops: usize,
    /// Time cap per allocator in [`heap_alloc`].
    pub alloc_budget: Duration,
}

impl HeapPlan {
    /// 1 GiB released (three rounds; a round of the 8 KiB loops with a sibling thread takes
    /// ~3 s of kernel time), 1 GiB → 128 MiB, a 64 GiB heap.
    pub const FULL: HeapPlan = HeapPlan {
        release_bytes: 1 << 30,
        release_rounds: 3,
        goal_live: 1 << 30,
        goal_timeout: Duration::from_secs(6),
        alloc_heap: 64 << 30,
        alloc_ops: 200_000,
        alloc_budget: Duration::from_secs(2),
    };
    /// The same at a quarter of the sizes, one round, shorter waits.
    pub const QUICK: HeapPlan = HeapPlan {
        release_bytes: 256 << 20,
        release_rounds: 1,
        goal_live: 256 << 20,
        goal_timeout: Duration::from_secs(3),
        alloc_heap: 16 << 30,
        alloc_ops: 50_000,
        alloc_budget: Duration::from_millis(500),
    };
}

// ----- small tools -----

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The process's minor faults so far.
fn minor_faults() -> u64 {
    crate::trace::usage().0
}

/// Write one byte in every page of `[addr, addr + len)` through the kernel (populate), so the
/// pages are resident without the optimiser's say.
fn populate(addr: usize, len: usize) {
    // SAFETY: callers pass memory they own, mapped read-write.
    unsafe { raw::madvise(addr, len, MADV_POPULATE_WRITE) };
}

// ----- release efficiency -----

/// One cell of [`heap_release`]: runs of `run_bytes`, alone or with a sibling thread.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HeapRelease {
    /// Size of each free (and each in-use) run.
    pub run_bytes: usize,
    /// Free bytes released per round.
    pub free_bytes: usize,
    /// With a [`Sibling`] thread spinning (every TLB flush an IPI).
    pub sibling: bool,
    /// Rounds measured.
    pub rounds: usize,
    /// GiB released per CPU-second, medians: the default mode, Go-faithful, raw batch, raw loop.
    pub default_gib_per_cpu_s: f64,
    /// See `default_gib_per_cpu_s`.
    pub go_gib_per_cpu_s: f64,
    /// See `default_gib_per_cpu_s`.
    pub raw_batch_gib_per_cpu_s: f64,
    /// See `default_gib_per_cpu_s`.
    pub raw_loop_gib_per_cpu_s: f64,
    /// System calls each heap mode made for one round.
    pub default_calls: usize,
    /// See `default_calls`.
    pub go_calls: usize,
    /// Median over rounds of default / Go-faithful (bytes per CPU-second).
    pub default_over_go: f64,
    /// Median over rounds of raw batch / raw loop: the kernel's own gain from batching.
    pub kernel_batch_over_loop: f64,
    /// The default's gain over Go-faithful as a share of the kernel's batch-over-loop gain
    /// (target ≥ 0.9): (default ÷ raw batch) × (raw loop ÷ Go-faithful), each a median over
    /// rounds of the ratio of two runs made back to back.
    pub share_of_kernel_gain: f64,
    /// After every heap release the kernel held exactly the in-use pages (mincore).
    pub kernel_agrees: bool,
}

/// A heap of `2 × free` bytes, every other `run`-byte piece free and resident between
/// resident in-use pieces; made once per cell and brought back to that layout before every
/// round (re-allocating the released pieces — lowest address first, so exactly those — and
/// populating them), which costs half of making it anew.
struct Scattered {
    heap: &'static Heap,
    base: usize,
    free: usize,
    run: usize,
}

impl Scattered {
    fn new(mode: Mode, free: usize, run: usize) -> Scattered {
        let ps = osmem::page_size();
        let heap = Heap::create(HeapConfig::new(2 * free).mode(mode)).expect("a heap");
        let all = heap.alloc(2 * free / ps).expect("the whole heap");
        let s = Scattered {
            heap,
            base: all.addr,
            free,
            run,
        };
        s.populate_and_free();
        s
    }

    fn pieces(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.free / self.run).map(|i| self.base + 2 * self.run * i)
    }

    fn populate_and_free(&self) {
        populate(self.base, 2 * self.free);
        for a in self.pieces() {
            self.heap
                .free(a, self.run / osmem::page_size())
                .expect("a piece of our run");
        }
    }

    /// After a release: every piece allocated again, then the layout as new.
    fn reset(&self) {
        let ps = osmem::page_size();
        for a in self.pieces() {
            let r = self.heap.alloc(self.run / ps).expect("room");
            assert_eq!(r.addr, a, "the lowest free run is the next released piece");
            assert!(!r.needzero, "released pieces read zero");
        }
        self.populate_and_free();
    }
}

impl Drop for Scattered {
    fn drop(&mut self) {
        // SAFETY: nothing uses the heap any more.
        unsafe { Heap::destroy(self.heap) };
    }
}

/// Release `free` bytes scattered as `run`-byte runs; per-round medians of each flavour.
fn release_cell(free: usize, run: usize, sibling: bool, rounds: usize) -> HeapRelease {
    let ps = osmem::page_size();
    let heaps = [
        Scattered::new(Mode::Batched, free, run),
        Scattered::new(Mode::GoFaithful, free, run),
    ];
    let region = osmem::Reservation::alloc(2 * free).expect("a region");
    let base = region.as_ptr() as usize;
    let iov: Vec<Iov> = (0..free / run)
        .map(|i| Iov {
            base: base + 2 * run * i,
            len: run,
        })
        .collect();
    let fd = SelfPidfd::get();
    let sib = Sibling::maybe(sibling);
    // GiB per CPU-s: default, go, batch, loop.
    let mut per: [Vec<f64>; 4] = Default::default();
    let (mut ratio_heap, mut ratio_kernel) = (Vec::new(), Vec::new());
    let (mut default_over_batch, mut loop_over_go) = (Vec::new(), Vec::new());
    let mut calls = [0usize; 2];
    let mut agrees = true;
    let gib = free as f64 / (1u64 << 30) as f64;
    for round in 0..rounds {
        let mut cpu = [0f64; 4];
        // Each heap mode next to its raw counterpart (default with the raw batch, Go-faithful
        // with the raw loop), the two of a pair in alternating order from round to round:
        // with a sibling thread the IPI cost drifts over seconds, and only neighbours in time
        // see the same machine.
        let order = if round % 2 == 0 {
            [0, 2, 1, 3]
        } else {
            [2, 0, 3, 1]
        };
        for f in order {
            if f < 2 {
                let s = &heaps[f];
                if round > 0 {
                    s.reset();
                }
                let t0 = thread_cpu_ns();
                let rel = s.heap.release_all();
                cpu[f] = (thread_cpu_ns() - t0) as f64;
                calls[f] = rel.calls;
                let r = s.heap.range();
                agrees &= rel.bytes == free
                    && raw::resident_pages(r.start, r.len()) == free / ps
                    && s.pieces()
                        .step_by(97)
                        .all(|a| raw::resident_pages(a, run) == 0);
            } else {
                populate(base, 2 * free);
                let t0 = thread_cpu_ns();
                // SAFETY: our own mapping's pages.
                unsafe {
                    if f == 2 {
                        raw::process_madvise(&fd, &iov, MADV_DONTNEED);
                    } else {
                        for v in &iov {
                            raw::madvise(v.base, v.len, MADV_DONTNEED);
                        }
                    }
                }
                cpu[f] = (thread_cpu_ns() - t0) as f64;
            }
        }
        for f in 0..4 {
            per[f].push(gib / (cpu[f] / 1e9));
        }
        ratio_heap.push(cpu[1] / cpu[0]);
        ratio_kernel.push(cpu[3] / cpu[2]);
        default_over_batch.push(cpu[2] / cpu[0]);
        // Speeds are bytes ÷ CPU time: raw loop ÷ Go-faithful = Go's CPU ÷ the loop's.
        loop_over_go.push(cpu[1] / cpu[3]);
    }
    drop(sib);
    drop(heaps);
    drop(region);
    let default_over_go = median_f64(&mut ratio_heap);
    let kernel = median_f64(&mut ratio_kernel);
    let [mut d, mut g, mut b, mut l] = per;
    HeapRelease {
        run_bytes: run,
        free_bytes: free,
        sibling,
        rounds,
        default_gib_per_cpu_s: median_f64(&mut d),
        go_gib_per_cpu_s: median_f64(&mut g),
        raw_batch_gib_per_cpu_s: median_f64(&mut b),
        raw_loop_gib_per_cpu_s: median_f64(&mut l),
        default_calls: calls[0],
        go_calls: calls[1],
        default_over_go,
        kernel_batch_over_loop: kernel,
        // (default ÷ Go) ÷ (batch ÷ loop) = (default ÷ batch) × (loop ÷ Go), each factor a
        // median of ratios of neighbours in time.
        share_of_kernel_gain: median_f64(&mut default_over_batch) * median_f64(&mut loop_over_go),
        kernel_agrees: agrees,
    }
}

/// Release efficiency at 8 KiB and 64 KiB runs, alone and with a sibling thread.
///
/// ```no_run
/// for c in osmem_bench::heap_release(osmem_bench::HeapPlan::QUICK) {
///     assert!(c.kernel_agrees);
/// }
/// ```
pub fn heap_release(plan: HeapPlan) -> Vec<HeapRelease> {
    let mut out = Vec::new();
    for run in [8 << 10, 64 << 10] {
        for sibling in [false, true] {
            out.push(release_cell(
                plan.release_bytes,
                run,
                sibling,
                plan.release_rounds,
            ));
        }
    }
    out
}

// ----- time to goal, interference, refaults -----

/// One mode's run of [`heap_goal`].
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HeapGoal {
    /// `default` or `go-faithful`.
    pub mode: &'static str,
    /// Live bytes before and after the shrink.
    pub live_before: usize,
    /// See `live_before`.
    pub live_after: usize,
    /// Seconds from the shrink until the heap held no more than its retain goal; `None` if
    /// not within `timeout_s`.
    pub time_to_goal_s: Option<f64>,
    /// How long the run waited.
    pub timeout_s: f64,
    /// The background scavenger's work time until then, ms, and as a share of all CPUs over
    /// that time.
    pub scavenger_ms: f64,
    /// See `scavenger_ms`.
    pub scavenger_cpu_share: f64,
    /// Bytes released and the system calls it took.
    pub released_bytes: u64,
    /// See `released_bytes`.
    pub release_calls: u64,
    /// Resident pages of the heap (mincore) at the goal, over the live pages.
    pub resident_over_live: f64,
    /// The mutator's rate while the scavenger worked (from the shrink to the goal, at least
    /// 50 ms), over its rate in the 300 ms before the shrink.
    pub mutator_kept: f64,
    /// The spread (max − min) of the mutator's rate over six 50 ms slices before the shrink,
    /// relative to its rate: how far apart two `mutator_kept` figures may be by noise alone.
    pub mutator_noise: f64,
    /// Minor faults while re-allocating and writing 64 MiB (a sixteenth at the quick level)
    /// freed 200 ms earlier.
    pub refaults: u64,
    /// Pages in that re-allocation.
    pub refault_pages: usize,
}

/// A thread writing one byte per page over its own 32 MiB, counting pages.
pub(crate) struct Mutator {
    pages: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Mutator {
    const BYTES: usize = 32 << 20;

    pub(crate) fn start() -> Mutator {
        let pages = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (pages.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let ps = osmem::page_size();
            let mem = osmem::Reservation::alloc(Mutator::BYTES).expect("mutator memory");
            let base = mem.as_ptr() as usize;
            populate(base, Mutator::BYTES);
            let n = Mutator::BYTES / ps;
            let mut k = 0usize;
            while !s.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    // SAFETY: our own mapping; a volatile write the optimiser must keep.
                    unsafe { ((base + (k % n) * ps) as *mut u8).write_volatile(k as u8) };
                    k += 1;
                }
                p.fetch_add(64, Ordering::Relaxed);
            }
        });
        Mutator {
            pages,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.pages.load(Ordering::Relaxed)
    }
}

impl Drop for Mutator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn goal_run(mode: Mode, plan: HeapPlan) -> HeapGoal {
    let ps = osmem::page_size();
    let live = plan.goal_live;
    let heap = Heap::create(HeapConfig::new(2 * live).mode(mode)).expect("a heap");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Buffers of 64 KiB–1 MiB, every page written.
    let mut runs = Vec::new();
    let mut total = 0;
    while total < live {
        let pages = ((64 << 10) + rng.below((1 << 20) - (64 << 10) + 1)) / ps;
        let pages = pages.min((live - total) / ps).max(1);
        let r = heap.alloc(pages).expect("room");
        populate(r.addr, pages * ps);
        runs.push(r);
        total += pages * ps;
    }
    let mutator = Mutator::start();
    let scav = heap.start_scavenger(0.01).expect("a scavenger thread");
    // Baseline: the mutator's rate before the shrink, over 300 ms, and how much it moves
    // between 50 ms slices of that (the noise a comparison of two rates must allow).
    std::thread::sleep(Duration::from_millis(50));
    let (c0, t0) = (mutator.count(), Instant::now());
    let mut slices = Vec::new();
    for _ in 0..6 {
        let (c, t) = (mutator.count(), Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        slices.push((mutator.count() - c) as f64 / t.elapsed().as_secs_f64());
    }
    let base_rate = (mutator.count() - c0) as f64 / t0.elapsed().as_secs_f64();
    let lo = slices.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = slices.iter().copied().fold(0.0, f64::max);
    let noise = (hi - lo) / base_rate;
    let before = heap.stats();
    // The shrink: free runs chosen at random until an eighth is live (a GC sweep).
    let target = live / 8;
    while heap.stats().in_use_bytes > target {
        let k = rng.below(runs.len());
        let r = runs.swap_remove(k);
        heap.free(r.addr, r.pages).expect("our run");
    }
    let live_after = heap.stats().in_use_bytes;
    let (c1, t1) = (mutator.count(), Instant::now());
    let mut reached = None;
    while t1.elapsed() < plan.goal_timeout {
        if heap.scavenge_goal() == 0 {
            reached = Some(t1.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The mutator's window: the scavenger's work, at least 50 ms.
    let window = reached.unwrap_or(plan.goal_timeout);
    if window < Duration::from_millis(50) {
        std::thread::sleep(Duration::from_millis(50) - window);
    }
    let kept = (mutator.count() - c1) as f64 / t1.elapsed().as_secs_f64() / base_rate;
    let at_goal = heap.stats();
    let r = heap.range();
    let resident = raw::resident_pages(r.start, r.len());
    // Refaults: free a sixteenth of the original live size, wait 200 ms, take it back.
    let again = live / 16;
    let mut freed = 0;
    while freed < again && !runs.is_empty() {
        let r = runs.pop().expect("a run");
        heap.free(r.addr, r.pages).expect("our run");
        freed += r.pages * ps;
    }
    std::thread::sleep(Duration::from_millis(200));
    let f0 = minor_faults();
    let mut got = 0;
    while got < freed {
        let pages = ((freed - got) / ps).min((1 << 20) / ps);
        let r = heap.alloc(pages).expect("room");
        populate(r.addr, pages * ps);
        got += pages * ps;
        runs.push(r);
    }
    let refaults = minor_faults() - f0;
    scav.stop();
    drop(mutator);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let worked = (at_goal.background_work_ns - before.background_work_ns) as f64;
    let span = window.as_secs_f64().max(1e-3);
    // SAFETY: the scavenger and every user of the heap are done.
    unsafe { Heap::destroy(heap) };
    HeapGoal {
        mode: mode_name(mode),
        live_before: before.in_use_bytes,
        live_after,
        time_to_goal_s: reached.map(|d| d.as_secs_f64()),
        timeout_s: plan.goal_timeout.as_secs_f64(),
        scavenger_ms: worked / 1e6,
        scavenger_cpu_share: worked / 1e9 / (span * cpus),
        released_bytes: at_goal.released_total_bytes - before.released_total_bytes,
        release_calls: at_goal.release_calls - before.release_calls,
        resident_over_live: (resident * ps) as f64 / live_after as f64,
        mutator_kept: kept,
        mutator_noise: noise,
        refaults,
        refault_pages: got / ps,
    }
}

/// `default` / `go-faithful`.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::GoFaithful => "go-faithful",
        _ => "default",
    }
}

/// Time to goal, the mutator's rate and refaults, for the default mode then the Go-faithful
/// mode, both scavenging in the background at 1% of all CPUs.
///
/// ```no_run
/// let g = osmem_bench::heap_goal(osmem_bench::HeapPlan::QUICK);
/// assert_eq!(g.len(), 2);
/// ```
pub fn heap_goal(plan: HeapPlan) -> Vec<HeapGoal> {
    [Mode::Batched, Mode::GoFaithful]
        .into_iter()
        .map(|m| goal_run(m, plan))
        .collect()
}

// ----- page allocator vs first-fit bitmap -----

/// One thread count of [`heap_alloc`].
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HeapAlloc {
    /// Threads allocating and freeing at once.
    pub threads: usize,
    /// The heap's size.
    pub heap_bytes: usize,
    /// Share of the heap free when timing started.
    pub free_share: f64,
    /// Operations timed (per thread) and the mean time of one, each allocator.
    pub heap_ops: usize,
    /// See `heap_ops`.
    pub heap_ns_per_op: f64,
    /// See `heap_ops`.
    pub naive_ops: usize,
    /// See `heap_ops`.
    pub naive_ns_per_op: f64,
    /// naive / heap, per operation (target ≥ 10).
    pub speedup: f64,
    /// Single thread: both handed out the same addresses for the ops both did.
    pub same_addresses: Option<bool>,
}

/// A flat bitmap of pages, first fit by scanning from the start (skipping full words).
struct Naive {
    words: Vec<u64>,
}

impl Naive {
    fn new(pages: usize) -> Naive {
        Naive {
            words: vec![0; pages.div_ceil(64)],
        }
    }
    fn set(&mut self, p: usize, n: usize, on: bool) {
        for q in p..p + n {
            if on {
                self.words[q / 64] |= 1 << (q % 64);
            } else {
                self.words[q / 64] &= !(1 << (q % 64));
            }
        }
    }
    fn alloc(&mut self, n: usize) -> Option<usize> {
        let mut run = 0;
        let mut start = 0;
        for (w, &word) in self.words.iter().enumerate() {
            if word == u64::MAX {
                run = 0;
                continue;
            }
            for b in 0..64 {
                if word >> b & 1 == 0 {
                    if run == 0 {
                        start = w * 64 + b;
                    }
                    run += 1;
                    if run == n {
                        self.set(start, n, true);
                        return Some(start);
                    }
                } else {
                    run = 0;
                }
            }
        }
        None
    }
}

/// One operation of the timed sequence: alloc `n` pages, or free the live run at index `k`
/// (modulo the live count).
#[derive(Copy, Clone)]
enum HeapOp {
    Alloc(usize),
    Free(usize),
}

fn op_sequence(seed: u64, n: usize) -> Vec<HeapOp> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            if rng.below(2) == 0 {
                HeapOp::Alloc(1 + rng.below(512))
            } else {
                HeapOp::Free(rng.below(usize::MAX >> 1))
            }
        })
        .collect()
}

/// Fill both allocators identically: runs of 1–512 pages bump-allocated over the whole
/// heap, then every run freed with probability ½. Returns each thread's share of the live
/// runs (page, pages).
fn fill(heap: &Heap, naive: &mut Naive, pages: usize, threads: usize) -> Vec<Vec<(usize, usize)>> {
    let ps = osmem::page_size();
    let base = heap.range().start;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut live = vec![Vec::new(); threads];
    let mut runs = Vec::new();
    let mut p = 0;
    loop {
        let n = 1 + rng.below(512);
        if p + n > pages {
            break;
        }
        let r = heap.alloc(n).expect("room while filling");
        assert_eq!(r.addr, base + p * ps, "an empty heap fills bottom up");
        naive.set(p, n, true);
        runs.push((p, n));
        p += n;
    }
    // Then free half of them at random (freeing while filling would let the heap refill the
    // holes, and the two allocators would start apart).
    let mut t = 0;
    for (p, n) in runs {
        if rng.below(2) == 0 {
            heap.free(base + p * ps, n).expect("our run");
            naive.set(p, n, false);
        } else {
            live[t % threads].push((p, n));
            t += 1;
        }
    }
    live
}

/// Run `ops` on one allocator (`alloc`/`free` closures over page numbers) within `budget`;
/// returns ops done, ns, and the addresses the allocs got.
fn drive(
    ops: &[HeapOp],
    live: &mut Vec<(usize, usize)>,
    budget: Duration,
    mut alloc: impl FnMut(usize) -> Option<usize>,
    mut free: impl FnMut(usize, usize),
) -> (usize, u64, Vec<usize>) {
    let mut got = Vec::new();
    let t0 = Instant::now();
    let mut done = 0;
    for op in ops {
        match *op {
            HeapOp::Alloc(n) => match alloc(n) {
                Some(p) => {
                    live.push((p, n));
                    got.push(p);
                }
                None => got.push(usize::MAX),
            },
            HeapOp::Free(k) if !live.is_empty() => {
                let (p, n) = live.swap_remove(k % live.len());
                free(p, n);
            }
            HeapOp::Free(_) => {}
        }
        done += 1;
        if done % 256 == 0 && t0.elapsed() >= budget {
            break;
        }
    }
    (done, t0.elapsed().as_nanos() as u64, got)
}

fn alloc_cell(plan: HeapPlan, threads: usize) -> HeapAlloc {
    let ps = osmem::page_size();
    let pages = plan.alloc_heap / ps;
    let heap = Heap::create(HeapConfig::new(plan.alloc_heap)).expect("a heap");
    let base = heap.range().start;
    let mut naive = Naive::new(pages);
    let lives = fill(heap, &mut naive, pages, threads);
    let free_share = 1.0 - heap.stats().in_use_bytes as f64 / plan.alloc_heap as f64;
    let seqs: Vec<Vec<HeapOp>> = (0..threads)
        .map(|t| op_sequence(0xfeed + t as u64, plan.alloc_ops))
        .collect();
    let naive = Mutex::new(naive);
    // The heap: every thread its own live runs and op sequence, on one heap.
    let budget = Duration::from_secs(3600); // the heap does every op
    let heap_res: Vec<(usize, u64, Vec<usize>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let mut live = lives[t].clone();
                let seq = &seqs[t];
                s.spawn(move || {
                    drive(
                        seq,
                        &mut live,
                        budget,
                        |n| heap.alloc(n).ok().map(|r| (r.addr - base) / ps),
                        |p, n| heap.free(base + p * ps, n).expect("our run"),
                    )
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("a thread"))
            .collect()
    });
    // SAFETY: every thread is done with the heap.
    unsafe { Heap::destroy(heap) };
    let naive_res: Vec<(usize, u64, Vec<usize>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let mut live = lives[t].clone();
                let seq = &seqs[t];
                let naive = &naive;
                s.spawn(move || {
                    drive(
                        seq,
                        &mut live,
                        plan.alloc_budget,
                        |n| naive.lock().expect("not poisoned").alloc(n),
                        |p, n| naive.lock().expect("not poisoned").set(p, n, false),
                    )
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("a thread"))
            .collect()
    });
    let per_op = |r: &[(usize, u64, Vec<usize>)]| {
        // Wall time of the slowest thread over the ops each did: the time one op takes with
        // `threads` threads at it.
        let ops: usize = r.iter().map(|x| x.0).sum();
        let ns = r.iter().map(|x| x.1).max().unwrap_or(0);
        (
            ops / threads,
            ns as f64 * threads as f64 / ops.max(1) as f64,
        )
    };
    let (heap_ops, heap_ns) = per_op(&heap_res);
    let (naive_ops, naive_ns) = per_op(&naive_res);
    let same = (threads == 1).then(|| {
        let n = naive_res[0].2.len();
        heap_res[0].2[..n] == naive_res[0].2[..]
    });
    HeapAlloc {
        threads,
        heap_bytes: plan.alloc_heap,
        free_share,
        heap_ops,
        heap_ns_per_op: heap_ns,
        naive_ops,
        naive_ns_per_op: naive_ns,
        speedup: naive_ns / heap_ns,
        same_addresses: same,
    }
}

/// The page allocator against a first-fit bitmap scan, one and two threads.
///
/// ```no_run
/// for c in osmem_bench::heap_alloc(osmem_bench::HeapPlan::QUICK) {
///     assert!(c.speedup > 0.0);
/// }
/// ```
pub fn heap_alloc(plan: HeapPlan) -> Vec<HeapAlloc> {
    [1, 2].into_iter().map(|t| alloc_cell(plan, t)).collect()
}
