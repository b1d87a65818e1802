//! Many scattered ranges: one osmem `Batch` versus a loop of per-range calls.

use crate::raw::{self, Iov, SelfPidfd};
use crate::raw::{MADV_DONTNEED, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE, MADV_POPULATE_WRITE};
use crate::{median, over_budget, Estimate, Sibling, DEFAULT_BUDGET};
use osmem::{Batch, BatchKind, FaultHow, FaultStrategy, Reservation, UnusedAdvice, UnusedHow};
use std::time::{Duration, Instant};

/// The configurations the batch targets are stated for: (ranges, range size).
pub const BATCH_CONFIGS: [(usize, usize); 2] = [(1024, 4 << 10), (256, 64 << 10)];

/// What the ranges go through.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BatchOp {
    /// Ready → Prepared with `MADV_DONTNEED`: `BatchKind::Unused(DontNeed)` versus
    /// `unused_with(DontNeed)` per range.
    UnusedDontNeed,
    /// Ready → Faulted with guard markers: `BatchKind::Fault(Guard)` (one batched DONTNEED,
    /// then batched guards) versus `fault_with(Guard)` per range.
    FaultGuard,
}

impl BatchOp {
    /// Both.
    pub const ALL: [BatchOp; 2] = [BatchOp::UnusedDontNeed, BatchOp::FaultGuard];

    /// `unused/dontneed` or `fault/guard`.
    ///
    /// ```
    /// assert_eq!(osmem_bench::BatchOp::FaultGuard.name(), "fault/guard");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            BatchOp::UnusedDontNeed => "unused/dontneed",
            BatchOp::FaultGuard => "fault/guard",
        }
    }

    /// Whether the running kernel supports it (guard markers need Linux ≥ 6.13).
    ///
    /// ```
    /// assert!(osmem_bench::BatchOp::UnusedDontNeed.is_supported());
    /// ```
    pub fn is_supported(self) -> bool {
        match self {
            BatchOp::UnusedDontNeed => true,
            BatchOp::FaultGuard => osmem::probe().advice.guard_install,
        }
    }

    fn kind(self) -> BatchKind {
        match self {
            BatchOp::UnusedDontNeed => BatchKind::Unused(UnusedAdvice::DontNeed),
            BatchOp::FaultGuard => BatchKind::Fault(FaultStrategy::Guard),
        }
    }
}

/// How the ranges are submitted.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// One [`osmem::Batch`]: `new`, `push` every range, `flush`.
    Batch,
    /// One osmem call per range.
    Loop,
    /// What osmem's batch issues, directly: one `process_madvise` per ≤ 1024 ranges
    /// (`MADV_DONTNEED`; for guard faults a batched `MADV_DONTNEED` then a batched
    /// `MADV_GUARD_INSTALL`). The kernel's own batch-vs-loop ratio, for comparison.
    RawBatch,
    /// What osmem's loop issues, directly: one `madvise` per range.
    RawLoop,
}

impl Method {
    /// All four, osmem first.
    pub const ALL: [Method; 4] = [
        Method::Batch,
        Method::Loop,
        Method::RawBatch,
        Method::RawLoop,
    ];

    /// `batch`, `loop`, `raw-batch`, `raw-loop`: the function names of benchmark groups.
    ///
    /// ```
    /// assert_eq!(osmem_bench::Method::Loop.name(), "loop");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Method::Batch => "batch",
            Method::Loop => "loop",
            Method::RawBatch => "raw-batch",
            Method::RawLoop => "raw-loop",
        }
    }
}

/// `ranges` scattered ranges of `range_size` bytes — every other `range_size` chunk of one
/// osmem region of `2 × ranges × range_size` bytes, so no two are adjacent and the chunks in
/// between stay populated (live neighbours, as in a heap) — and the three steps of a timed
/// iteration: [`prepare`](Self::prepare), [`apply`](Self::apply), [`restore`](Self::restore).
///
/// ```no_run
/// use osmem_bench::{BatchBench, BatchOp, Method};
/// let mut b = BatchBench::new(BatchOp::UnusedDontNeed, 1024, 4096)?;
/// let batch = b.once(Method::Batch);
/// let looped = b.once(Method::Loop);
/// println!("speedup {:.1}", looped.as_secs_f64() / batch.as_secs_f64());
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Debug)]
pub struct BatchBench {
    op: BatchOp,
    region: Reservation,
    ranges: usize,
    range_size: usize,
    applied: Option<Method>,
    /// Filled inside the timed part of [`Method::RawBatch`], as osmem fills its own in `push`;
    /// allocated here so the timed part does not allocate.
    iov: Vec<Iov>,
}

impl BatchBench {
    /// A Ready region holding `ranges` ranges of `range_size` bytes (a positive multiple of
    /// the page size), reserved 2 MiB-aligned.
    ///
    /// # Errors
    /// osmem's, if the region cannot be made (or the sizes are zero or unaligned).
    pub fn new(op: BatchOp, ranges: usize, range_size: usize) -> Result<BatchBench, osmem::Error> {
        let len = ranges
            .checked_mul(range_size)
            .and_then(|n| n.checked_mul(2))
            .ok_or(osmem::Error::Overflow {
                op: osmem::Op::Reserve,
                offset: ranges,
                len: range_size,
            })?;
        let region = Reservation::reserve_aligned(len, 2 << 20)?;
        region.map(0, len)?;
        region.used(0, len)?;
        Ok(BatchBench {
            op,
            region,
            ranges,
            range_size,
            applied: None,
            iov: Vec::with_capacity(ranges),
        })
    }

    /// The offset of range `i` in [`region`](Self::region).
    pub fn offset(&self, i: usize) -> usize {
        2 * i * self.range_size
    }

    /// The whole region (ranges and the chunks between them).
    pub fn region(&self) -> &Reservation {
        &self.region
    }

    /// Populate the whole region (`MADV_DONTNEED` then `MADV_POPULATE_WRITE`; not timed).
    ///
    /// # Panics
    /// If applied and not restored, or a syscall fails.
    pub fn prepare(&mut self) {
        assert!(self.applied.is_none(), "prepare() before restore()");
        let (a, n) = (self.region.as_ptr() as usize, self.region.len());
        // SAFETY: the region is ours, Ready, and nothing references its contents.
        unsafe {
            raw::madvise(a, n, MADV_DONTNEED);
            raw::madvise(a, n, MADV_POPULATE_WRITE);
        }
    }

    /// Release (or fault) every range with `method` and return the time that took: for
    /// [`Method::Batch`] that includes `Batch::new` and every `push`, as a caller pays them.
    ///
    /// # Panics
    /// If already applied, if the op is unsupported, if osmem fails, or if osmem took another
    /// path than the one measured (a range that fell back to the per-range chain in a batch,
    /// or a guard fault that fell back to mprotect).
    pub fn apply(&mut self, method: Method) -> Duration {
        assert!(self.applied.is_none(), "apply() twice without restore()");
        assert!(self.op.is_supported(), "{} not supported", self.op.name());
        let (r, size) = (&self.region, self.range_size);
        let t = match method {
            Method::Batch => {
                let start = Instant::now();
                let mut b: Batch<'_> = Batch::new(self.op.kind());
                for i in 0..self.ranges {
                    // SAFETY: nothing references the ranges.
                    if let Err(e) = unsafe { b.push(r, 2 * i * size, size) } {
                        panic!("push range {i}: {e}");
                    }
                }
                // SAFETY: as above.
                let rep = unsafe { b.flush() };
                let t = start.elapsed();
                assert!(
                    rep.ranges == self.ranges
                        && rep.failed == 0
                        && rep.per_range == 0
                        && rep.not_trapping == 0,
                    "batch took another path: {rep:?}"
                );
                t
            }
            Method::Loop => {
                let start = Instant::now();
                for i in 0..self.ranges {
                    let off = 2 * i * size;
                    // SAFETY: nothing references the ranges.
                    let ok = unsafe {
                        match self.op {
                            BatchOp::UnusedDontNeed => r
                                .unused_with(off, size, UnusedAdvice::DontNeed)
                                .is_ok_and(|u| u.how == UnusedHow::DontNeed),
                            BatchOp::FaultGuard => r
                                .fault_with(off, size, FaultStrategy::Guard)
                                .is_ok_and(|f| f.how == FaultHow::Guard),
                        }
                    };
                    if !ok {
                        panic!("{} of range {i} failed or fell back", self.op.name());
                    }
                }
                start.elapsed()
            }
            Method::RawBatch => {
                let base = r.as_ptr() as usize;
                let start = Instant::now();
                let fd = SelfPidfd::get();
                self.iov.clear();
                for i in 0..self.ranges {
                    self.iov.push(Iov {
                        base: base + 2 * i * size,
                        len: size,
                    });
                }
                // SAFETY: the ranges are ours and nothing references them.
                unsafe {
                    raw::process_madvise(&fd, &self.iov, MADV_DONTNEED);
                    if self.op == BatchOp::FaultGuard {
                        raw::process_madvise(&fd, &self.iov, MADV_GUARD_INSTALL);
                    }
                }
                drop(fd);
                start.elapsed()
            }
            Method::RawLoop => {
                let base = r.as_ptr() as usize;
                let advice = match self.op {
                    BatchOp::UnusedDontNeed => MADV_DONTNEED,
                    BatchOp::FaultGuard => MADV_GUARD_INSTALL,
                };
                let start = Instant::now();
                for i in 0..self.ranges {
                    // SAFETY: as above.
                    unsafe { raw::madvise(base + 2 * i * size, size, advice) };
                }
                start.elapsed()
            }
        };
        self.applied = Some(method);
        t
    }

    /// Make every range Ready again (not timed): osmem's `used` (unused) or `map` + `used`
    /// (fault) per range; after the raw methods, nothing (unused: osmem's table still says
    /// Ready, and the ranges are RW) or `MADV_GUARD_REMOVE` per range (fault).
    ///
    /// # Panics
    /// If nothing is applied, or undoing fails.
    pub fn restore(&mut self) {
        let method = self.applied.take().expect("restore() without apply()");
        let raw = matches!(method, Method::RawBatch | Method::RawLoop);
        let base = self.region.as_ptr() as usize;
        for i in 0..self.ranges {
            let off = self.offset(i);
            match (raw, self.op) {
                (false, BatchOp::FaultGuard) => {
                    self.region.map(off, self.range_size).expect("osmem map");
                    self.region.used(off, self.range_size).expect("osmem used");
                }
                (false, BatchOp::UnusedDontNeed) => {
                    self.region.used(off, self.range_size).expect("osmem used")
                }
                // SAFETY: the range is ours and was just faulted.
                (true, BatchOp::FaultGuard) => unsafe {
                    raw::madvise(base + off, self.range_size, MADV_GUARD_REMOVE)
                },
                (true, BatchOp::UnusedDontNeed) => {}
            }
        }
    }

    /// One timed iteration: prepare, apply (timed), restore.
    ///
    /// # Panics
    /// As for the three steps.
    pub fn once(&mut self, method: Method) -> Duration {
        self.prepare();
        let t = self.apply(method);
        self.restore();
        t
    }
}

/// The result of [`batch_vs_loop`].
#[derive(Copy, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BatchVsLoop {
    /// What the ranges went through.
    pub op: BatchOp,
    /// Number of ranges.
    pub ranges: usize,
    /// Size of each range in bytes.
    pub range_size: usize,
    /// Whether a [`Sibling`] was spinning.
    pub sibling: bool,
    /// Iterations of each method (fewer than asked if the time budget ran out).
    pub iters: usize,
    /// Median time of one batch (new + push all + flush), ns.
    pub batch_ns: f64,
    /// Median time of the per-range loop, ns.
    pub loop_ns: f64,
    /// `loop_ns / batch_ns`: how many times faster the batch is.
    pub speedup: f64,
    /// Median time of the raw batch ([`Method::RawBatch`]), ns.
    pub raw_batch_ns: f64,
    /// Median time of the raw loop ([`Method::RawLoop`]), ns.
    pub raw_loop_ns: f64,
    /// `raw_loop_ns / raw_batch_ns`: the kernel's own speedup on this machine, the ceiling
    /// for osmem's.
    pub raw_speedup: f64,
    /// The loop's time over the batch's, iteration by iteration (both from the same
    /// iteration), as an [`Estimate`]: `lo > 1` means the run shows the batch faster.
    pub pair_speedup: Estimate,
}

/// Release `ranges` scattered ranges of `range_size` bytes with `MADV_DONTNEED`: one osmem
/// batch versus a loop of `unused_with(DontNeed)`, alternating (batch, loop, raw batch,
/// raw loop, batch, …; see [`Method`]) for `iters` iterations each, with a [`Sibling`] spinning if `sibling`. Targets at 1024 × 4 KiB:
/// speedup ≥ 5 alone, ≥ 50 with the sibling.
///
/// # Panics
/// As for [`BatchBench::apply`].
///
/// ```no_run
/// let b = osmem_bench::batch_vs_loop(1024, 4096, 100, true);
/// println!("batch is {:.0}× faster", b.speedup);
/// ```
pub fn batch_vs_loop(ranges: usize, range_size: usize, iters: usize, sibling: bool) -> BatchVsLoop {
    batch_vs_loop_op(BatchOp::UnusedDontNeed, ranges, range_size, iters, sibling)
}

/// [`batch_vs_loop`] for any [`BatchOp`].
///
/// # Panics
/// As for [`BatchBench::apply`].
pub fn batch_vs_loop_op(
    op: BatchOp,
    ranges: usize,
    range_size: usize,
    iters: usize,
    sibling: bool,
) -> BatchVsLoop {
    batch_vs_loop_within(op, ranges, range_size, iters, sibling, DEFAULT_BUDGET)
}

/// [`batch_vs_loop_op`] with an explicit wall-clock budget.
///
/// # Panics
/// As for [`BatchBench::apply`].
pub fn batch_vs_loop_within(
    op: BatchOp,
    ranges: usize,
    range_size: usize,
    iters: usize,
    sibling: bool,
    budget: Duration,
) -> BatchVsLoop {
    let mut bench = BatchBench::new(op, ranges, range_size)
        .unwrap_or_else(|e| panic!("{ranges} x {range_size} region: {e}"));
    let _sibling = Sibling::maybe(sibling);
    for m in Method::ALL {
        bench.once(m);
    }
    let mut samples: [Vec<u64>; 4] = std::array::from_fn(|_| Vec::with_capacity(iters));
    let start = Instant::now();
    for _ in 0..iters {
        for (k, m) in Method::ALL.into_iter().enumerate() {
            samples[k].push(bench.once(m).as_nanos() as u64);
        }
        if over_budget(start, budget, samples[0].len()) {
            break;
        }
    }
    let iters = samples[0].len();
    let mut pair: Vec<f64> = samples[1]
        .iter()
        .zip(&samples[0])
        .map(|(&l, &b)| l as f64 / b.max(1) as f64)
        .collect();
    let pair_speedup = Estimate::of(&mut pair);
    let [b, l, rb, rl] = samples.each_mut().map(|s| median(s));
    BatchVsLoop {
        op,
        ranges,
        range_size,
        sibling,
        iters,
        batch_ns: b,
        loop_ns: l,
        speedup: l / b,
        raw_batch_ns: rb,
        raw_loop_ns: rl,
        raw_speedup: rl / rb,
        pair_speedup,
    }
}

/// Iterations for a batch-vs-loop measurement: each costs populating a region of
/// `2 × ranges × range_size` bytes (~2 ms for 8 MiB), so bigger regions get fewer.
///
/// ```
/// assert_eq!(osmem_bench::default_batch_iters(1024, 4096), 200);
/// assert_eq!(osmem_bench::default_batch_iters(256, 65536), 60);
/// ```
pub fn default_batch_iters(ranges: usize, range_size: usize) -> usize {
    match 2 * ranges * range_size {
        b if b <= 8 << 20 => 200,
        b if b <= 32 << 20 => 60,
        _ => 20,
    }
}
