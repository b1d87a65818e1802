//! # osmem-bench — the one implementation of osmem's measurements
//!
//! `cargo bench -p osmem-bench` (criterion), `cargo run --release -p osmem-bench --example
//! ratios` and the CLI's `osmem bench` / `osmem report` all measure through this crate, so a
//! figure means the same thing wherever it is printed. The API is plain functions returning
//! numbers: nothing here prints, and no benchmark-harness type appears in it.
//!
//! What is measured:
//!
//! - [`paired`]: one [`Op`] (fault with each strategy, unused with each advice) done through
//!   osmem and as the raw libc call sequence osmem makes for it, alternating on the **same**
//!   range, so the ratio osmem/raw is taken side by side in one run. Target: ≤ 1.03.
//! - [`batch_vs_loop`]: releasing many scattered ranges with one osmem [`osmem::Batch`]
//!   (one `process_madvise` per ≤ 1024 ranges) versus a loop of per-range calls.
//!   Target at 1024 × 4 KiB: ≥ 5× alone, ≥ 50× with a [`Sibling`] thread spinning.
//! - [`interleaved`]: several operations (say, every fault strategy) on one range, round by
//!   round, so that the ratio of any two is taken side by side ([`paired`] is built on it).
//! - [`contention`]: the throughput a thread that takes `mmap_lock` for reading
//!   ([`Worker`]) keeps while another thread faults and unfaults a range with each strategy,
//!   relative to a [`CONTROL`] mutator that never takes the lock for writing.
//! - [`vma_growth`] and [`footprint`]: what an operation leaves in the kernel — VMAs added
//!   (`/proc/self/maps`), pages left resident (`mincore`).
//! - [`scale`]: osmem's own costs at runtime scale (its page-state map): a TiB made Ready in
//!   one call, a GiB released at once, pages faulted all over a TiB, a pool of a thousand
//!   8 GiB reservations, each next to the raw calls, and the metadata's resident memory read
//!   from smaps.
//!
//! - [`heap_release`], [`heap_goal`], [`heap_alloc`]: the page heap (osmem-heap) — bytes
//!   released per CPU-second against the Go-faithful mode and the kernel's own batch gain,
//!   time to the retain goal after a shrink with what a mutator keeps, and run search
//!   against a first-fit bitmap.
//!
//! [`Estimate`] and [`tiers`] turn per-round ratios into noise-aware rankings: a difference
//! ranks only if the run resolves it and it is larger than a minimum gap.
//!
//! Every timed iteration starts from a populated Ready range (`MADV_POPULATE_WRITE`, not
//! timed), times exactly one operation with [`std::time::Instant`], then restores the range
//! (not timed). [`OpBench`] and [`BatchBench`] expose those three steps for harnesses that do
//! their own sampling (criterion's `iter_custom`).
//!
//! Absolute times depend on the machine and its load; compare **ratios** measured in the same
//! run.
//!
//! ```no_run
//! use osmem_bench::{paired, default_iters, Op, SIZES};
//! for size in SIZES {
//!     let p = paired(Op::FaultGuard, size, default_iters(size), false);
//!     assert!(p.ratio.is_finite());
//! }
//! ```

#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("osmem-bench supports Linux only: it measures Linux system calls (madvise, process_madvise, mprotect, mmap).");

mod batch;
mod contention;
mod costs;
mod heap;
mod lazy;
mod op;
mod rank;
mod raw;
mod residency;
mod scale;
mod sibling;
mod syscalls;
mod trace;
mod untouched;
mod vma;

pub use batch::{
    batch_vs_loop, batch_vs_loop_op, batch_vs_loop_within, default_batch_iters, BatchBench,
    BatchOp, BatchVsLoop, Method, BATCH_CONFIGS,
};
pub use contention::{contention, Contention, Worker, CONTROL, MUTATOR_PERIOD};
pub use costs::{interleaved, Interleaved};
pub use heap::{
    heap_alloc, heap_goal, heap_release, mode_name, HeapAlloc, HeapGoal, HeapPlan, HeapRelease,
};
pub use lazy::{free_then_used, LazyFree};
pub use op::{paired, paired_within, Flavour, Op, OpBench, Paired, PAD};
pub use rank::{tiers, tiers_text, Estimate, COST_GAP, THROUGHPUT_GAP};
pub use residency::{residency_costs, ResidencyCost, ResidencyPlan};
pub use scale::{metadata_rss, scale, Scale, ScalePlan};
pub use sibling::Sibling;
pub use syscalls::{monotonic_s, parse_script, perf_works, traced, MadviseTrace};
pub use trace::{
    find_go, go_trace, trace_events, trace_figures, trace_run, trace_schedule, EventHash, GoRun,
    Phase, SplitMix, TraceEvent, TraceFigures, TraceRun, TraceSample, TICK_MS,
};
pub use untouched::{untouched_unused, Untouched};
pub use vma::{footprint, vma_growth, Footprint, VmaGrowth};

use std::time::Duration;

/// The range sizes every per-operation measurement is taken at: 4 KiB, 64 KiB, 2 MiB, 64 MiB.
pub const SIZES: [usize; 4] = [4 << 10, 64 << 10, 2 << 20, 64 << 20];

/// The wall-clock budget of one [`paired`] or [`batch_vs_loop`] measurement: it stops after
/// `iters` iterations or once this much time has passed, whichever comes first (but never
/// before [`MIN_ITERS`] iterations).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(20);

/// The fewest iterations a measurement takes, whatever its budget.
pub const MIN_ITERS: usize = 3;

/// Iterations (pairs, for [`paired`]) that give a stable median at `size` in reasonable time.
/// One iteration costs far more than the operation it times (populating 64 MiB takes 15–40 ms,
/// the fault itself 5–10 ms on a 2-vCPU VM), so big sizes get fewer. The 64 MiB figure is
/// the smallest that kept the median of pair ratios within a few percent between runs on a
/// noisy shared VM (24 pairs did not: runs disagreed by up to 25% on the ratio of medians).
///
/// ```
/// assert_eq!(osmem_bench::default_iters(4 << 10), 2000);
/// assert!(osmem_bench::default_iters(64 << 20) < osmem_bench::default_iters(2 << 20));
/// ```
pub fn default_iters(size: usize) -> usize {
    match size {
        s if s <= 4 << 10 => 2000,
        s if s <= 64 << 10 => 1000,
        s if s <= 2 << 20 => 200,
        _ => 60,
    }
}

/// [`default_iters`] scaled down tenfold (at least [`MIN_ITERS`]): for smoke runs and CI.
///
/// ```
/// assert_eq!(osmem_bench::quick_iters(4 << 10), 200);
/// assert_eq!(osmem_bench::quick_iters(64 << 20), 6);
/// ```
pub fn quick_iters(size: usize) -> usize {
    (default_iters(size) / 10).max(MIN_ITERS)
}

/// `4KiB`, `64KiB`, `2MiB`, `64MiB`, …: the size part of benchmark names.
///
/// ```
/// assert_eq!(osmem_bench::size_label(64 << 10), "64KiB");
/// assert_eq!(osmem_bench::size_label(2 << 20), "2MiB");
/// assert_eq!(osmem_bench::size_label(1000), "1000B");
/// ```
pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 30 && s % (1 << 30) == 0 => format!("{}GiB", s >> 30),
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

/// A deterministic generator (xorshift64*): scattered pages and operation sequences are the
/// same from run to run, and both sides of a comparison see the same ones.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The median of `samples` (nanoseconds); the mean of the two middle values for an even
/// count, NaN for none. Sorts in place.
pub(crate) fn median(samples: &mut [u64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2] as f64
    } else {
        (samples[n / 2 - 1] as f64 + samples[n / 2] as f64) / 2.0
    }
}

/// The median of floats (NaN-free input), for per-pair ratios.
pub(crate) fn median_f64(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable_by(f64::total_cmp);
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// Whether a measurement that started at `start` and has done `done` iterations should stop.
pub(crate) fn over_budget(start: std::time::Instant, budget: Duration, done: usize) -> bool {
    done >= MIN_ITERS && start.elapsed() >= budget
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3, 1, 2]), 2.0);
        assert_eq!(median(&mut [4, 1, 2, 3]), 2.5);
        assert!(median(&mut []).is_nan());
        assert_eq!(median_f64(&mut [1.5, 0.5, 1.0]), 1.0);
    }
}
