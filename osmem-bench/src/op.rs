//! One operation through osmem versus the raw libc calls osmem makes for it.

use crate::raw::{self, MADV_DONTNEED, MADV_FREE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE};
use crate::raw::{MADV_POPULATE_WRITE, PROT_NONE, PROT_RW};
use crate::DEFAULT_BUDGET;
use osmem::{FaultHow, FaultStrategy, Reservation, UnusedAdvice, UnusedHow};
use std::time::{Duration, Instant};

/// An operation whose cost is measured, through osmem and raw.
///
/// | op | osmem | raw libc sequence (what osmem issues) | raw restore |
/// |---|---|---|---|
/// | `FaultGuard` | `fault_with(Guard)` | `madvise(MADV_GUARD_INSTALL)` | `madvise(MADV_GUARD_REMOVE)` |
/// | `FaultProtect` | `fault_with(Protect)` | `madvise(DONTNEED)`, `mprotect(PROT_NONE)` | `mprotect(RW)` |
/// | `FaultGo` | `fault_with(Go)` | `mprotect(PROT_NONE)`, `madvise(DONTNEED)` | `mprotect(RW)` |
/// | `FaultRemap` | `fault_with(Remap)` | `mmap(PROT_NONE, MAP_FIXED…MAP_NORESERVE)` | `mprotect(RW)` |
/// | `UnusedFree` | `unused_with(Free)` | `madvise(MADV_FREE)` | — |
/// | `UnusedDontNeed` | `unused_with(DontNeed)` | `madvise(MADV_DONTNEED)` | — |
/// | `UnusedRemap` | `unused_with(Remap)` | `mmap(RW, MAP_FIXED…MAP_NORESERVE)` | — |
///
/// osmem's restore is `map` + `used` after a fault and `used` after unused; it issues the same
/// syscalls as the raw restore.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Ready → Faulted with guard markers.
    FaultGuard,
    /// Ready → Faulted with DONTNEED then `mprotect(PROT_NONE)`.
    FaultProtect,
    /// Ready → Faulted with Go's order: `mprotect(PROT_NONE)` then DONTNEED.
    FaultGo,
    /// Ready → Faulted with `mmap(PROT_NONE, MAP_FIXED)`.
    FaultRemap,
    /// Ready → Prepared with `MADV_FREE`.
    UnusedFree,
    /// Ready → Prepared with `MADV_DONTNEED`.
    UnusedDontNeed,
    /// Ready → Prepared with `mmap(RW, MAP_FIXED)`.
    UnusedRemap,
}

impl Op {
    /// Every operation, faults first.
    pub const ALL: [Op; 7] = [
        Op::FaultGuard,
        Op::FaultProtect,
        Op::FaultGo,
        Op::FaultRemap,
        Op::UnusedFree,
        Op::UnusedDontNeed,
        Op::UnusedRemap,
    ];

    /// `fault/guard`, `unused/dontneed`, …: the prefix of benchmark group names (the second
    /// part is the value of the `fault` / `unused` knob).
    ///
    /// ```
    /// assert_eq!(osmem_bench::Op::FaultProtect.name(), "fault/protect");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Op::FaultGuard => "fault/guard",
            Op::FaultProtect => "fault/protect",
            Op::FaultGo => "fault/go",
            Op::FaultRemap => "fault/remap",
            Op::UnusedFree => "unused/free",
            Op::UnusedDontNeed => "unused/dontneed",
            Op::UnusedRemap => "unused/remap",
        }
    }

    /// The raw call sequence, for tables.
    ///
    /// ```
    /// assert_eq!(osmem_bench::Op::FaultGo.raw_calls(), "mprotect(NONE) + madvise(DONTNEED)");
    /// ```
    pub fn raw_calls(self) -> &'static str {
        match self {
            Op::FaultGuard => "madvise(GUARD_INSTALL)",
            Op::FaultProtect => "madvise(DONTNEED) + mprotect(NONE)",
            Op::FaultGo => "mprotect(NONE) + madvise(DONTNEED)",
            Op::FaultRemap => "mmap(NONE, MAP_FIXED)",
            Op::UnusedFree => "madvise(FREE)",
            Op::UnusedDontNeed => "madvise(DONTNEED)",
            Op::UnusedRemap => "mmap(RW, MAP_FIXED)",
        }
    }

    /// The fault strategy, for fault operations.
    ///
    /// ```
    /// use osmem_bench::Op;
    /// assert_eq!(Op::FaultGo.fault_strategy(), Some(osmem::FaultStrategy::Go));
    /// assert_eq!(Op::UnusedFree.fault_strategy(), None);
    /// ```
    pub fn fault_strategy(self) -> Option<FaultStrategy> {
        match self {
            Op::FaultGuard => Some(FaultStrategy::Guard),
            Op::FaultProtect => Some(FaultStrategy::Protect),
            Op::FaultGo => Some(FaultStrategy::Go),
            Op::FaultRemap => Some(FaultStrategy::Remap),
            _ => None,
        }
    }

    /// The unused advice, for unused operations.
    ///
    /// ```
    /// use osmem_bench::Op;
    /// assert_eq!(Op::UnusedRemap.unused_advice(), Some(osmem::UnusedAdvice::Remap));
    /// assert_eq!(Op::FaultGuard.unused_advice(), None);
    /// ```
    pub fn unused_advice(self) -> Option<UnusedAdvice> {
        match self {
            Op::UnusedFree => Some(UnusedAdvice::Free),
            Op::UnusedDontNeed => Some(UnusedAdvice::DontNeed),
            Op::UnusedRemap => Some(UnusedAdvice::Remap),
            _ => None,
        }
    }

    /// Whether the running kernel can do this operation's raw sequence (guard markers need
    /// Linux ≥ 6.13). Measuring an unsupported op panics; callers skip it instead.
    ///
    /// ```
    /// assert!(osmem_bench::Op::FaultProtect.is_supported());
    /// ```
    pub fn is_supported(self) -> bool {
        let a = osmem::probe().advice;
        match self {
            Op::FaultGuard => a.guard_install,
            Op::UnusedFree => a.free,
            _ => true,
        }
    }
}

/// Which implementation of an [`Op`] runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// Through osmem's [`Reservation`] API (range checks, page-state tree, accounting, chain).
    Osmem,
    /// The libc calls osmem makes for the op, issued directly.
    Raw,
}

impl Flavour {
    /// Both, osmem first.
    pub const ALL: [Flavour; 2] = [Flavour::Osmem, Flavour::Raw];

    /// `osmem` or `raw`: the function names of benchmark groups.
    ///
    /// ```
    /// assert_eq!(osmem_bench::Flavour::Raw.name(), "raw");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Osmem => "osmem",
            Flavour::Raw => "raw",
        }
    }
}

/// RW padding on each side of the measured range (2 MiB, untouched, no memory).
///
/// The measured range sits in the middle of a larger RW mapping, as a heap span sits inside an
/// arena: strategies that change protection or remap then split the VMA in three and the
/// restore merges it back, a cost a runtime pays. (A range that was a whole VMA would
/// make mprotect/remap look cheaper than they are in a runtime.)
pub const PAD: usize = 2 << 20;

/// One range of `size` bytes, and the three steps of a timed iteration:
/// [`prepare`](Self::prepare) (populate; not timed), [`apply`](Self::apply) (the one timed
/// operation), [`restore`](Self::restore) (back to Ready; not timed).
///
/// **Both flavours use the same range** of one osmem [`Reservation`] (reserved 2 MiB-aligned
/// with [`PAD`] on each side, then `map` + `used`). Why the same range rather than an osmem
/// region for osmem and a plain `mmap(PROT_NONE)` + `mprotect(RW)` region for raw: the kernel
/// work of an op depends on the range's VMA neighbours, page-table layout (which PMD and PUD
/// it falls in) and the physical pages the populate step gets; on one range those are the
/// same for both flavours, so alternating iterations differ only in the code issuing the
/// syscalls. The raw flavour leaves osmem's page states alone (it says Ready throughout): it is
/// exact because every raw iteration restores the kernel state to what the table says —
/// Ready, RW, no guard markers — before the next iteration.
///
/// ```no_run
/// use osmem_bench::{Flavour, Op, OpBench};
/// let mut b = OpBench::new(64 << 10)?;
/// let t = b.once(Op::FaultGuard, Flavour::Osmem);
/// assert!(t.as_nanos() > 0);
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Debug)]
pub struct OpBench {
    region: Reservation,
    size: usize,
    applied: Option<(Op, Flavour)>,
}

impl OpBench {
    /// A Ready range of `size` bytes (a positive multiple of the page size) inside a fresh
    /// osmem region.
    ///
    /// # Errors
    /// osmem's, if the region cannot be reserved or mapped (or `size` is zero or unaligned).
    pub fn new(size: usize) -> Result<OpBench, osmem::Error> {
        if size == 0 {
            return Err(osmem::Error::ZeroLength {
                op: osmem::Op::Reserve,
            });
        }
        let len = size.checked_add(2 * PAD).ok_or(osmem::Error::Overflow {
            op: osmem::Op::Reserve,
            offset: 0,
            len: size,
        })?;
        let region = Reservation::reserve_aligned(len, PAD)?;
        region.map(0, len)?;
        region.used(0, len)?;
        Ok(OpBench {
            region,
            size,
            applied: None,
        })
    }

    /// The start of the measured range.
    pub fn addr(&self) -> usize {
        self.region.as_ptr() as usize + PAD
    }

    /// The measured range's length.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The whole osmem region (the range plus [`PAD`] on each side), for inspection.
    pub fn region(&self) -> &Reservation {
        &self.region
    }

    /// Make the range populated and Ready: `MADV_DONTNEED` (drops whatever a previous
    /// `MADV_FREE` left lazily freed, so every iteration starts from freshly written pages),
    /// then `MADV_POPULATE_WRITE`. Not timed.
    ///
    /// # Panics
    /// If an operation is applied and not restored, or a syscall fails.
    pub fn prepare(&mut self) {
        assert!(self.applied.is_none(), "prepare() before restore()");
        let (a, n) = (self.addr(), self.size);
        // SAFETY: the range is ours, Ready, and nothing references its contents.
        unsafe {
            raw::madvise(a, n, MADV_DONTNEED);
            raw::madvise(a, n, MADV_POPULATE_WRITE);
        }
    }

    /// Run `op` once in `flavour` on the (prepared) range and return the time of that call
    /// alone. The range is then Faulted or Prepared until [`restore`](Self::restore).
    ///
    /// # Panics
    /// If an operation is already applied, if `op` is not supported here, if a raw syscall
    /// fails, if osmem fails, or if osmem took a different link of its chain than the raw
    /// sequence models (say, a guard fault that fell back to mprotect): the comparison would
    /// then be meaningless. Also if `OSMEM=harddecommit=1` is in force, which adds an
    /// `mprotect` to osmem's unused that the raw sequence does not have.
    pub fn apply(&mut self, op: Op, flavour: Flavour) -> Duration {
        assert!(self.applied.is_none(), "apply() twice without restore()");
        assert!(op.is_supported(), "{} is not supported here", op.name());
        let (a, n) = (self.addr(), self.size);
        let t = match flavour {
            Flavour::Osmem => self.osmem(op),
            Flavour::Raw => {
                // SAFETY (every call): the range is ours and nothing references its contents.
                let start = Instant::now();
                unsafe {
                    match op {
                        Op::FaultGuard => raw::madvise(a, n, MADV_GUARD_INSTALL),
                        Op::FaultProtect => {
                            raw::madvise(a, n, MADV_DONTNEED);
                            raw::mprotect(a, n, PROT_NONE);
                        }
                        Op::FaultGo => {
                            raw::mprotect(a, n, PROT_NONE);
                            raw::madvise(a, n, MADV_DONTNEED);
                        }
                        Op::FaultRemap => raw::mmap_fixed(a, n, PROT_NONE),
                        Op::UnusedFree => raw::madvise(a, n, MADV_FREE),
                        Op::UnusedDontNeed => raw::madvise(a, n, MADV_DONTNEED),
                        Op::UnusedRemap => raw::mmap_fixed(a, n, PROT_RW),
                    }
                }
                start.elapsed()
            }
        };
        self.applied = Some((op, flavour));
        t
    }

    fn osmem(&self, op: Op) -> Duration {
        let r = &self.region;
        if let Some(s) = op.fault_strategy() {
            let start = Instant::now();
            // SAFETY: nothing references the range (see `prepare`).
            let f = unsafe { r.fault_with(PAD, self.size, s) };
            let t = start.elapsed();
            let expect = match s {
                FaultStrategy::Guard => FaultHow::Guard,
                FaultStrategy::Go => FaultHow::Go,
                FaultStrategy::Remap => FaultHow::Remap,
                _ => FaultHow::Protect,
            };
            match f {
                Ok(f) if f.how == expect => t,
                other => panic!("osmem {}: expected {expect:?}, got {other:?}", op.name()),
            }
        } else {
            let advice = op.unused_advice().expect("unused op");
            let start = Instant::now();
            // SAFETY: as above.
            let u = unsafe { r.unused_with(PAD, self.size, advice) };
            let t = start.elapsed();
            let expect = match advice {
                UnusedAdvice::Free => UnusedHow::Free,
                UnusedAdvice::DontNeed => UnusedHow::DontNeed,
                UnusedAdvice::Remap => UnusedHow::Remap,
                other => unreachable!("no unused op uses {other:?}"),
            };
            match u {
                Ok(u) if u.how == expect && !u.protected => t,
                other => panic!(
                    "osmem {}: expected {expect:?} without harddecommit, got {other:?}",
                    op.name()
                ),
            }
        }
    }

    /// Undo the applied operation and return the time that took (it is not part of the
    /// operation's figure): osmem's `map` + `used` (fault) or `used` (unused) for the osmem
    /// flavour; `mprotect(RW)` or `MADV_GUARD_REMOVE` for raw faults, nothing for raw unused
    /// (the range stayed RW).
    ///
    /// # Panics
    /// If nothing is applied, or undoing fails.
    pub fn restore(&mut self) -> Duration {
        let (op, flavour) = self.applied.take().expect("restore() without apply()");
        let (a, n) = (self.addr(), self.size);
        let start = Instant::now();
        match flavour {
            Flavour::Osmem => {
                if op.fault_strategy().is_some() {
                    self.region.map(PAD, n).expect("osmem map");
                }
                self.region.used(PAD, n).expect("osmem used");
            }
            // SAFETY: the range is ours and holds nothing (it was just faulted).
            Flavour::Raw => unsafe {
                match op {
                    Op::FaultGuard => raw::madvise(a, n, MADV_GUARD_REMOVE),
                    Op::FaultProtect | Op::FaultGo | Op::FaultRemap => raw::mprotect(a, n, PROT_RW),
                    Op::UnusedFree | Op::UnusedDontNeed | Op::UnusedRemap => {}
                }
            },
        }
        start.elapsed()
    }

    /// One timed iteration: [`prepare`](Self::prepare), [`apply`](Self::apply) (timed),
    /// [`restore`](Self::restore). Returns the time of the operation alone.
    ///
    /// # Panics
    /// As for the three steps.
    pub fn once(&mut self, op: Op, flavour: Flavour) -> Duration {
        self.prepare();
        let t = self.apply(op, flavour);
        self.restore();
        t
    }
}

/// The result of [`paired`]: medians of interleaved osmem and raw iterations on one range.
#[derive(Copy, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Paired {
    /// The operation.
    pub op: Op,
    /// The range size in bytes.
    pub size: usize,
    /// Whether a [`Sibling`](crate::Sibling) was spinning.
    pub sibling: bool,
    /// Pairs measured (fewer than asked if the time budget ran out).
    pub pairs: usize,
    /// Median time of the osmem call, ns.
    pub osmem_ns: f64,
    /// Median time of the raw call sequence, ns.
    pub raw_ns: f64,
    /// `osmem_ns / raw_ns`: the overhead ratio (target ≤ 1.03).
    pub ratio: f64,
    /// The median over pairs of (osmem time / raw time) of adjacent iterations: the same
    /// question, less sensitive to slow drift of the machine during the run.
    pub pair_ratio: f64,
    /// The median over pairs of (osmem time − raw time), ns: what osmem adds to the call.
    pub added_ns: f64,
}

/// Measure `op` on a `size`-byte range, `iters` times through osmem and `iters` times raw,
/// alternating on the same range (see [`OpBench`]; the order within a pair alternates too:
/// osmem first, then raw first, …), with a [`Sibling`](crate::Sibling) spinning if `sibling`. One untimed
/// warm-up pair goes first. Built on [`interleaved`](crate::interleaved). Stops early, after
/// at least [`MIN_ITERS`](crate::MIN_ITERS) pairs, if [`DEFAULT_BUDGET`] runs out.
///
/// # Panics
/// If the region cannot be created or an iteration fails (see [`OpBench::apply`]); check
/// [`Op::is_supported`] first.
///
/// ```no_run
/// let p = osmem_bench::paired(osmem_bench::Op::UnusedDontNeed, 64 << 10, 1000, false);
/// println!("osmem/raw = {:.3}", p.ratio);
/// ```
pub fn paired(op: Op, size: usize, iters: usize, sibling: bool) -> Paired {
    paired_within(op, size, iters, sibling, DEFAULT_BUDGET)
}

/// [`paired`] with an explicit wall-clock budget.
///
/// # Panics
/// As for [`paired`].
pub fn paired_within(op: Op, size: usize, iters: usize, sibling: bool, budget: Duration) -> Paired {
    let run = crate::costs::interleaved(
        &[(op, Flavour::Osmem), (op, Flavour::Raw)],
        size,
        iters,
        sibling,
        budget,
    );
    let (osmem_ns, raw_ns) = (run.median_ns(0), run.median_ns(1));
    Paired {
        op,
        size,
        sibling,
        pairs: run.rounds,
        osmem_ns,
        raw_ns,
        ratio: osmem_ns / raw_ns,
        pair_ratio: run.ratio(0, 1).median,
        added_ns: {
            let mut d: Vec<f64> = (0..run.rounds)
                .map(|k| run.op_ns[0][k] as f64 - run.op_ns[1][k] as f64)
                .collect();
            crate::median_f64(&mut d)
        },
    }
}
