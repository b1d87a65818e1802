//! Model-based property tests: random sequences of operations on random
//! page ranges of one region, compared AFTER EVERY STEP with a model and with the kernel's own
//! view.
//!
//! Each proptest case is a `PAGES`-page region made by `reserve_aligned` (one case in four by
//! `alloc`) and a sequence of 1..60 [`Step`]s: map, used, unused / unused_with every advice,
//! fault / fault_with every strategy, writes, huge-page hints, a [`Batch`] of unused or fault
//! over several ranges (flushed, or dropped), and knob changes (unused advice, fault strategy,
//! harddecommit, prefault, thp). Ranges start at every page and are 1..16 pages long, so runs
//! of every state begin and end at every alignment inside one leaf of osmem's page-state tree
//! (the tree's deeper shapes, folding and node budget are checked against a plain array by the
//! unit tests in `osmem/src/table.rs`, at up to 2^28 pages). A few ranges are deliberately bad (zero length,
//! unaligned, past the end, overflowing). `Next` steps pick, at run time, a transition the
//! first page's state allows (on the run of pages it is allowed on), so walks get deep instead
//! of being refused most of the time.
//!
//! After every step, against the model:
//! - the result: `Ok` with the exact `Unused` / `Faulted` / `BatchReport`, or the exact typed
//!   error (`WrongState` with the first offending page's offset and state, range errors in
//!   osmem's documented order); a refused step must change nothing (every check below runs
//!   against the unchanged model); a batch's push changes nothing, and its flush claims the
//!   queued ranges in order, refusing one that overlaps a range claimed before it (`Busy`)
//!   or that is not Ready (`WrongState`), with nothing changed for it;
//! - osmem's view: `Reservation::state` of every page and `bytes_in` of every state;
//! - the GLOBAL `osmem::stats()` delta of the step, every field exactly (bytes per state, op
//!   counters, every syscall and advice counter; fallbacks, errors, downgrades must stay 0);
//! - the kernel's view, in process: `/proc/self/maps` protection of every page (`rw-p` vs
//!   `---p`) and guard markers from `/proc/self/pagemap` bit 58 (PM_GUARD_REGION, Linux ≥
//!   6.14): a page traps iff it is PROT_NONE or guarded; residency from pagemap bit 63 (a page
//!   the model says was released — DONTNEED, remap, fault, map — must not be present, a Ready
//!   page that was read must be, after MADV_FREE either); the contents of every Ready page
//!   (data survives until released, a released page reads zero when Ready again, after
//!   MADV_FREE the old data or zeros).
//!
//! At the end of each case a forked grandchild touches a trapping page (guard → SEGV_MAPERR,
//! PROT_NONE → SEGV_ACCERR) and an accessible one, and dropping the region must unmap it and
//! return every byte counter.
//!
//! Every case runs in a forked child (`osmem_testkit::in_child`): only the forking thread
//! exists there, so global stats deltas are exact, and knob changes (`osmem::configure`) stay in
//! the child. The child does not allocate (fixed arrays; messages are formatted with
//! `core::fmt` into a shared page). A failure reports the failing step and check; proptest then
//! shrinks the sequence, and the failure message lists the minimal sequence with every `Next`
//! resolved to the concrete operation it ran.
//!
//! Case count: the environment variable `OSMEM_PROPTEST_CASES` (default 256 for `model_walk`),
//! e.g. `OSMEM_PROPTEST_CASES=10000 cargo test -p osmem --test model` (about 4 minutes on 2
//! cores). `long_walk` is one deterministic 3000-step walk; together they replace the former
//! `table_model.rs`. `thp_never_survives_remap` checks `thp=never` survives the remap links.
//!
//! Needs Linux ≥ 6.14 (guard markers, their pagemap bit, process_madvise of the own process),
//! MADV_FREE and MADV_POPULATE_WRITE; the tests assert that the probe found them.

// Page-indexed loops over the model's parallel per-page arrays read better than zipped iterators.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{
    bytes_name, expected_how_fault as how_fault, expected_how_unused as how_unused, linux_6_14,
    read_marks, write_marks, BatchOutcome, Data, Expect, PageKind as K, ADVICES, PM_GUARD_BIT,
    PM_PRESENT_BIT, STATES, STRATEGIES,
};
use core::fmt::Write as _;
use osmem::{
    Batch, BatchKind, Config, Error, FaultHow, FaultStrategy, Op as OsOp, Reservation, Thp,
    UnusedAdvice, UnusedHow,
};
use osmem_testkit::{self as tk, ChildExit};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as PtConfig, TestCaseError, TestError, TestRunner};

/// Pages of the reservation: odd, so no run lines up with a power of two by accident.
const PAGES: usize = 47;
/// Longest range a step asks for.
const MAX_RUN: usize = 16;
/// Capacity of the batches: a batch step of up to `MAX_BATCH` ranges overflows it, so `push`
/// flushes automatically in the middle.
const BATCH_CAP: usize = 4;
const MAX_BATCH: usize = 6;
const DEFAULT_CASES: u32 = 256;
const MAX_STEPS: usize = 60;
const LONG_WALK: usize = 3000;

// ----- steps -----

/// How a case's region is made: `reserve_aligned` (all Reserved, MAP_NORESERVE) or `alloc`
/// (all Ready, committed: remaps inside it use the same flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Reserve,
    Alloc,
}

/// How a batch step ends: `flush()` (its report is checked) or dropping the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Flush,
    Drop,
}

/// A range of the reservation, in pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum R {
    /// Pages `.0 .. .0 + .1` (OutOfRange when that passes the end).
    P(usize, usize),
    /// Zero length at page `.0`.
    Zero(usize),
    /// Pages `.0 .. .0 + .1`, offset moved 8 bytes off the page boundary.
    Unaligned(usize, usize),
    /// A page-aligned offset whose end overflows `usize`.
    Overflow,
}

impl R {
    fn bytes(self, ps: usize) -> (usize, usize) {
        match self {
            R::P(at, n) => (at * ps, n * ps),
            R::Zero(at) => (at * ps, 0),
            R::Unaligned(at, n) => (at * ps + 8, n * ps),
            R::Overflow => (usize::MAX & !(ps - 1), 2 * ps),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Knobs {
    unused: UnusedAdvice,
    fault: FaultStrategy,
    harddecommit: bool,
    prefault: bool,
    thp: Thp,
}

impl Knobs {
    const DEFAULT: Knobs = Knobs {
        unused: UnusedAdvice::DontNeed,
        fault: FaultStrategy::Auto,
        harddecommit: false,
        prefault: false,
        thp: Thp::Default,
    };

    fn config(self) -> Config {
        Config::new()
            .unused(self.unused)
            .fault(self.fault)
            .harddecommit(self.harddecommit)
            .prefault(self.prefault)
            .thp(self.thp)
    }
}

/// One operation of a walk. `Option` advice/strategy `None` means the knob's
/// (`Reservation::unused` / `Reservation::fault`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Map(R),
    Used(R),
    Unused(R, Option<UnusedAdvice>),
    Fault(R, Option<FaultStrategy>),
    /// Write the byte to the first and last byte of every Ready page of pages `.0 .. .0+.1`.
    Write(usize, usize, u8),
    Huge(R),
    NoHuge(R),
    /// Push the ranges into a `Batch` (capacity `BATCH_CAP`), read the state of the last
    /// queued page (pushing changed nothing), then flush or drop the batch.
    BatchUnused(UnusedAdvice, Vec<R>, End),
    BatchFault(FaultStrategy, Vec<R>, End),
    Knobs(Knobs),
    /// Resolved at run time to the transition page `at`'s state allows, on the run of at most
    /// `n` pages from `at` it is allowed on; `pick` chooses among the alternatives.
    Next {
        at: usize,
        n: usize,
        pick: u8,
    },
    /// Resolved to a batch (fault if `fault`, else unused; `pick` chooses the advice or
    /// strategy, and its top bit whether the batch is dropped instead of flushed) of Ready runs: for each `(at, n)`, the run of at most `n` Ready pages that
    /// starts at the first Ready page at or after `at`. Runs may repeat: the second push of
    /// the same pages must be refused.
    NextBatch {
        fault: bool,
        pick: u8,
        ranges: Vec<(usize, usize)>,
    },
}

fn advice_s() -> impl Strategy<Value = UnusedAdvice> {
    prop::sample::select(&ADVICES[..])
}

fn strategy_s() -> impl Strategy<Value = FaultStrategy> {
    prop::sample::select(&STRATEGIES[..])
}

fn range_s() -> impl Strategy<Value = R> {
    prop_oneof![
        40 => (0..PAGES, 1..=MAX_RUN).prop_map(|(a, n)| R::P(a, n)),
        1 => (0..PAGES).prop_map(R::Zero),
        1 => (0..PAGES, 1..=MAX_RUN).prop_map(|(a, n)| R::Unaligned(a, n)),
        1 => Just(R::Overflow),
    ]
}

fn end_s() -> impl Strategy<Value = End> {
    prop_oneof![3 => Just(End::Flush), 1 => Just(End::Drop)]
}

fn knobs_s() -> impl Strategy<Value = Knobs> {
    (
        advice_s(),
        strategy_s(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(Thp::Default), Just(Thp::Never)],
    )
        .prop_map(|(unused, fault, harddecommit, prefault, thp)| Knobs {
            unused,
            fault,
            harddecommit,
            prefault,
            thp,
        })
}

fn step_s() -> impl Strategy<Value = Step> {
    let opt_adv = prop_oneof![3 => advice_s().prop_map(Some), 1 => Just(None)];
    let opt_strat = prop_oneof![3 => strategy_s().prop_map(Some), 1 => Just(None)];
    prop_oneof![
        3 => range_s().prop_map(Step::Map),
        3 => range_s().prop_map(Step::Used),
        3 => (range_s(), opt_adv).prop_map(|(r, a)| Step::Unused(r, a)),
        3 => (range_s(), opt_strat).prop_map(|(r, s)| Step::Fault(r, s)),
        3 => (0..PAGES, 1..=MAX_RUN, 1..=255u8).prop_map(|(a, n, v)| Step::Write(a, n, v)),
        1 => range_s().prop_map(Step::Huge),
        1 => range_s().prop_map(Step::NoHuge),
        1 => (advice_s(), prop::collection::vec(range_s(), 1..=MAX_BATCH), end_s())
            .prop_map(|(a, v, e)| Step::BatchUnused(a, v, e)),
        1 => (strategy_s(), prop::collection::vec(range_s(), 1..=MAX_BATCH), end_s())
            .prop_map(|(s, v, e)| Step::BatchFault(s, v, e)),
        1 => knobs_s().prop_map(Step::Knobs),
        14 => (0..PAGES, 1..=MAX_RUN, any::<u8>()).prop_map(|(at, n, pick)| Step::Next {
            at,
            n,
            pick
        }),
        4 => (
            any::<bool>(),
            any::<u8>(),
            prop::collection::vec((0..PAGES, 1..=MAX_RUN), 1..=MAX_BATCH)
        )
            .prop_map(|(fault, pick, ranges)| Step::NextBatch {
                fault,
                pick,
                ranges
            }),
    ]
}

// ----- the model (page kinds `K` and contents `Data`: `common`) -----

/// Whether pagemap must report the page present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pres {
    Absent,
    Present,
    Maybe,
}

/// What the kernel offers, as the model needs it (from `osmem::probe()`, in the parent).
#[derive(Clone, Copy, Debug)]
struct Env {
    ps: usize,
    /// Batches open a pidfd per flush (no PIDFD_SELF sentinel).
    pidfd_open: bool,
    /// Residency is exact: no small-folio THP that could fill a released page when a
    /// neighbour is written.
    presence: bool,
    /// Regions are named (one prctl) at their first `map`.
    names: bool,
}

/// An expected (or observed) result of a step. (Lives on the stack of one step; its size does
/// not matter.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Unit(Result<(), Error>),
    /// (how, zeroed, protected)
    Unused(Result<(UnusedHow, bool, bool), Error>),
    Fault(Result<FaultHow, Error>),
    Batch(BatchWant),
}

type BatchWant = BatchOutcome<MAX_BATCH>;

#[derive(Clone, Copy)]
struct Model {
    env: Env,
    k: [K; PAGES],
    data: [Data; PAGES],
    pres: [Pres; PAGES],
    knobs: Knobs,
    /// Successful transitions so far (progress of the walk).
    moved: usize,
    /// Whether the region has its name (at `alloc`, else at the first `map`).
    named: bool,
}

fn map_ok(k: K) -> bool {
    matches!(k, K::Reserved | K::FaultGuard | K::FaultNone)
}

fn used_ok(k: K) -> bool {
    k.used_ok()
}

/// The pages a `Next` step turns Ready with `used` (Ready ones take unused or fault).
fn prepared(k: K) -> bool {
    k.state() == osmem::State::Prepared
}

fn ready(k: K) -> bool {
    k == K::Ready
}

impl Model {
    fn new(env: Env, start: Start) -> Model {
        Model {
            env,
            k: [match start {
                Start::Reserve => K::Reserved,
                Start::Alloc => K::Ready,
            }; PAGES],
            data: [Data::Zero; PAGES],
            pres: [Pres::Absent; PAGES],
            knobs: Knobs::DEFAULT,
            moved: 0,
            named: start == Start::Alloc,
        }
    }

    /// osmem's range validation, in its documented order.
    fn range(&self, op: OsOp, r: R) -> Result<(usize, usize), Error> {
        let ps = self.env.ps;
        let (offset, len) = r.bytes(ps);
        match r {
            R::Zero(_) => Err(Error::ZeroLength { op }),
            R::Unaligned(..) => Err(Error::Unaligned { op, offset, len }),
            R::Overflow => Err(Error::Overflow { op, offset, len }),
            R::P(at, n) if at + n > PAGES => Err(Error::OutOfRange {
                op,
                offset,
                len,
                size: PAGES * ps,
            }),
            R::P(at, n) => Ok((at, n)),
        }
    }

    /// The first page (in order) that `ok` refuses is the one the error names. Queued
    /// (`pend`) pages are Ready but held by the batch: `Busy`.
    fn check(
        &self,
        op: OsOp,
        (first, n): (usize, usize),
        pend: &[bool; PAGES],
        ok: fn(K) -> bool,
    ) -> Result<(usize, usize), Error> {
        for p in first..first + n {
            let offset = p * self.env.ps;
            if pend[p] {
                return Err(Error::Busy { op, offset });
            }
            if !ok(self.k[p]) {
                return Err(Error::WrongState {
                    op,
                    offset,
                    found: self.k[p].state(),
                });
            }
        }
        Ok((first, n))
    }

    fn validate(&self, op: OsOp, r: R, ok: fn(K) -> bool) -> Result<(usize, usize), Error> {
        self.range(op, r)
            .and_then(|fnn| self.check(op, fnn, &[false; PAGES], ok))
    }

    /// Maximal runs of equal `K` in `[first, first+n)`: osmem issues one syscall per run.
    fn runs(&self, first: usize, n: usize, mut f: impl FnMut(K)) {
        let mut p = first;
        while p < first + n {
            let k = self.k[p];
            while p < first + n && self.k[p] == k {
                p += 1;
            }
            f(k);
        }
    }

    fn set(&mut self, first: usize, n: usize, to: K, d: &mut Expect) {
        for p in first..first + n {
            d.mv(self.k[p].state(), to.state(), self.env.ps);
            self.k[p] = to;
        }
    }

    /// The length of the run from `at` (at most `n` pages, inside the region) that `ok` takes.
    fn run_from(&self, at: usize, n: usize, ok: fn(K) -> bool) -> usize {
        (at..(at + n).min(PAGES))
            .take_while(|&p| ok(self.k[p]))
            .count()
    }

    /// `Next` → the concrete step it stands for, given the current states.
    fn resolve_next(&self, at: usize, n: usize, pick: u8) -> Step {
        let at = at % PAGES;
        match self.k[at] {
            k if map_ok(k) => Step::Map(R::P(at, self.run_from(at, n, map_ok))),
            k if prepared(k) => Step::Used(R::P(at, self.run_from(at, n, used_ok))),
            _ => {
                let r = R::P(at, self.run_from(at, n, ready));
                match pick % 12 {
                    p @ 0..=2 => Step::Unused(r, Some(ADVICES[p as usize])),
                    3 => Step::Unused(r, None),
                    p @ 4..=8 => Step::Fault(r, Some(STRATEGIES[p as usize - 4])),
                    9 => Step::Fault(r, None),
                    _ => Step::Write(at, n, pick | 1),
                }
            }
        }
    }

    /// `Next*` → the concrete step it stands for, allocation-free (the child runs this):
    /// `NextBatch` ranges go to `buf`.
    fn resolve_into<'a>(&self, step: &'a Step, buf: &'a mut [R; MAX_BATCH]) -> Concrete<'a> {
        match *step {
            Step::Next { at, n, pick } => Concrete::Own(self.resolve_next(at, n, pick)),
            Step::NextBatch {
                fault,
                pick,
                ref ranges,
            } => {
                let n = ranges.len().min(MAX_BATCH);
                for (slot, &(at, len)) in buf.iter_mut().zip(ranges.iter()) {
                    *slot = match (0..PAGES)
                        .map(|i| (at + i) % PAGES)
                        .find(|&p| ready(self.k[p]))
                    {
                        Some(p) => R::P(p, self.run_from(p, len, ready)),
                        None => R::P(at, len.min(PAGES - at)),
                    };
                }
                let kind = if fault {
                    BatchKind::Fault(STRATEGIES[pick as usize % 5])
                } else {
                    BatchKind::Unused(ADVICES[pick as usize % 3])
                };
                let end = if pick & 0x80 != 0 {
                    End::Drop
                } else {
                    End::Flush
                };
                Concrete::Batch(kind, &buf[..n], end)
            }
            Step::BatchUnused(a, ref rs, e) => Concrete::Batch(BatchKind::Unused(a), rs, e),
            Step::BatchFault(s, ref rs, e) => Concrete::Batch(BatchKind::Fault(s), rs, e),
            ref s => Concrete::Borrowed(s),
        }
    }

    /// Released pages: read zero, not resident.
    fn released(&mut self, first: usize, n: usize) {
        for p in first..first + n {
            self.data[p] = Data::Zero;
            self.pres[p] = Pres::Absent;
        }
    }

    /// The common tail of unused (direct or batched), after the release itself.
    fn settle_unused(&mut self, first: usize, n: usize, how: UnusedHow, d: &mut Expect) -> bool {
        let hd = self.knobs.harddecommit;
        if hd {
            d.add("mprotect_calls", 1);
        }
        if how == UnusedHow::Free {
            for p in first..first + n {
                if let Data::Val(v) = self.data[p] {
                    self.data[p] = Data::FreeOr(v);
                }
                if self.pres[p] == Pres::Present {
                    self.pres[p] = Pres::Maybe;
                }
            }
        } else {
            self.released(first, n);
        }
        self.set(first, n, K::after_unused(how, hd), d);
        d.add("unused_ops", 1);
        self.moved += 1;
        hd
    }

    fn settle_fault(&mut self, first: usize, n: usize, how: FaultHow, d: &mut Expect) {
        self.released(first, n);
        let to = if how == FaultHow::Guard {
            K::FaultGuard
        } else {
            K::FaultNone
        };
        self.set(first, n, to, d);
        d.add("fault_ops", 1);
        self.moved += 1;
    }

    /// Whether a MAP_FIXED remap link is followed by MADV_NOHUGEPAGE (`Expect::remapped`).
    fn thp_never(&self) -> bool {
        self.knobs.thp == Thp::Never
    }

    /// Predict a concrete step: its result and counter deltas; apply it to the model if it
    /// succeeds (a refused step leaves the model unchanged).
    fn predict(&mut self, step: &Concrete<'_>, d: &mut Expect) -> Want {
        match *step {
            Concrete::Borrowed(s) => self.predict_simple(s, d),
            Concrete::Own(ref s) => self.predict_simple(s, d),
            Concrete::Batch(kind, rs, end) => self.predict_batch(kind, rs, end, d),
        }
    }

    fn predict_simple(&mut self, step: &Step, d: &mut Expect) -> Want {
        match *step {
            Step::Map(r) => Want::Unit(self.validate(OsOp::Map, r, map_ok).map(|(f, n)| {
                if !self.named {
                    self.named = true;
                    if self.env.names {
                        d.add("prctl_calls", 1);
                    }
                }
                self.runs(f, n, |k| d.map_run_calls(k == K::FaultGuard));
                self.released(f, n);
                self.set(f, n, K::Prepared, d);
                d.add("map_ops", 1);
                self.moved += 1;
            })),
            Step::Used(r) => Want::Unit(self.validate(OsOp::Used, r, used_ok).map(|(f, n)| {
                d.used_calls(&self.k[f..f + n], self.knobs.prefault);
                for p in f..f + n {
                    // Prefaulted, or written to end MADV_FREE's lazy release.
                    let lazy = matches!(self.k[p], K::PreparedFree | K::PreparedNoneFree);
                    if self.k[p] != K::Ready && (self.knobs.prefault || lazy) {
                        self.pres[p] = Pres::Present;
                    }
                }
                self.set(f, n, K::Ready, d);
                d.add("used_ops", 1);
                self.moved += 1;
            })),
            Step::Unused(r, a) => {
                let a = a.unwrap_or(self.knobs.unused);
                Want::Unused(self.validate(OsOp::Unused, r, ready).map(|(f, n)| {
                    let how = how_unused(a);
                    d.unused_calls(how, self.thp_never());
                    let prot = self.settle_unused(f, n, how, d);
                    (how, how != UnusedHow::Free, prot)
                }))
            }
            Step::Fault(r, s) => {
                let how = how_fault(s.unwrap_or(self.knobs.fault));
                Want::Fault(self.validate(OsOp::Fault, r, ready).map(|(f, n)| {
                    d.fault_calls(how, self.thp_never());
                    self.settle_fault(f, n, how, d);
                    how
                }))
            }
            Step::Write(at, n, v) => {
                for p in at..(at + n).min(PAGES) {
                    if self.k[p] == K::Ready {
                        self.data[p] = Data::Val(v);
                        self.pres[p] = Pres::Present;
                    }
                }
                Want::Unit(Ok(()))
            }
            Step::Huge(r) => Want::Unit(self.range(OsOp::HugePage, r).map(|_| {
                // No 2 MiB-aligned huge page fits in the region (and thp=never skips too).
                d.add("huge_hints_skipped", 1);
            })),
            Step::NoHuge(r) => Want::Unit(self.range(OsOp::NoHugePage, r).map(|_| {
                d.add("madvise_calls", 1);
                d.add("madv_nohugepage", 1);
            })),
            Step::Knobs(k) => {
                self.knobs = k;
                Want::Unit(Ok(()))
            }
            // Batches and Next* never get here (see `predict` / `resolve_into`).
            _ => Want::Unit(Ok(())),
        }
    }

    fn predict_batch(&mut self, kind: BatchKind, rs: &[R], end: End, d: &mut Expect) -> Want {
        let op = match kind {
            BatchKind::Unused(_) => OsOp::Unused,
            BatchKind::Fault(_) => OsOp::Fault,
            other => unreachable!("a batch kind the model does not know: {other:?}"),
        };
        let mut w = BatchWant::default();
        let mut queued = [(0usize, 0usize); BATCH_CAP];
        let mut q = 0;
        let mut last = None;
        for (i, &r) in rs.iter().enumerate().take(MAX_BATCH) {
            // `push` checks the range only (no state), and flushes a full batch before it
            // queues the new one.
            match self.range(op, r) {
                Ok((f, n)) => {
                    if q == BATCH_CAP {
                        self.flush(op, kind, &queued[..q], &mut w, d);
                        q = 0;
                    }
                    queued[q] = (f, n);
                    q += 1;
                    last = Some(f);
                }
                Err(e) => w.pushes[i] = Some(e),
            }
        }
        if let Some(p) = last {
            // Pushing changed nothing (an earlier flush may have settled it).
            w.queued_state = Some(self.k[p].state());
        }
        self.flush(op, kind, &queued[..q], &mut w, d);
        if end == End::Drop {
            // No report to compare (the batch flushes on drop).
            w = BatchWant {
                pushes: w.pushes,
                queued_state: w.queued_state,
                ..BatchWant::default()
            };
        }
        Want::Batch(w)
    }

    fn flush(
        &mut self,
        op: OsOp,
        kind: BatchKind,
        queued: &[(usize, usize)],
        w: &mut BatchWant,
        d: &mut Expect,
    ) {
        if queued.is_empty() {
            return;
        }
        d.add("batch_flushes", 1);
        d.add("batch_ranges", queued.len() as i64);
        // The claims, in push order: a range overlapping one claimed before it is refused
        // as held (`Busy`), one not Ready with `WrongState`; nothing changes for either.
        let mut pend = [false; PAGES];
        let mut claimed = [(0usize, 0usize); BATCH_CAP];
        let mut nc = 0;
        for &(f, n) in queued {
            match self.check(op, (f, n), &pend, ready) {
                Ok(_) => {
                    pend[f..f + n].iter_mut().for_each(|x| *x = true);
                    claimed[nc] = (f, n);
                    nc += 1;
                }
                Err(e) => {
                    w.refused += 1;
                    w.error.get_or_insert(e);
                }
            }
        }
        let claimed = &claimed[..nc];
        if claimed.is_empty() {
            return;
        }
        let nq = nc as i64;
        // One process_madvise per submitted advice (≤ 1024 ranges); the sentinel needs no fd.
        let submit = |calls: i64, d: &mut Expect| {
            d.add("process_madvise_calls", calls);
            if self.env.pidfd_open {
                d.add("pidfd_open_calls", 1);
            }
        };
        match kind {
            BatchKind::Unused(a) => {
                match a {
                    UnusedAdvice::Remap => d.remapped(nq, self.thp_never()),
                    _ => submit(1, d),
                }
                for &(f, n) in claimed {
                    self.settle_unused(f, n, how_unused(a), d);
                    w.not_zeroed += usize::from(a == UnusedAdvice::Free);
                }
            }
            BatchKind::Fault(s) => {
                let how = how_fault(s);
                match how {
                    // A batched DONTNEED, then batched guard markers on the emptied ranges.
                    FaultHow::Guard => submit(2, d),
                    // A batched DONTNEED, then mprotect(PROT_NONE) range by range.
                    FaultHow::Protect => {
                        submit(1, d);
                        d.add("mprotect_calls", nq);
                    }
                    // Not batched: the per-range chain.
                    _ => {
                        for _ in claimed {
                            d.fault_calls(how, self.thp_never());
                        }
                    }
                }
                for &(f, n) in claimed {
                    self.settle_fault(f, n, how, d);
                }
            }
            other => unreachable!("a batch kind the model does not know: {other:?}"),
        }
        for &(_, n) in claimed {
            w.ranges += 1;
            w.bytes += n * self.env.ps;
        }
    }
}

/// A step with `Next*` resolved, borrowing where it can (the child must not allocate).
enum Concrete<'a> {
    Borrowed(&'a Step),
    Own(Step),
    Batch(BatchKind, &'a [R], End),
}

impl core::fmt::Debug for Concrete<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Concrete::Borrowed(s) => s.fmt(f),
            Concrete::Own(s) => s.fmt(f),
            Concrete::Batch(BatchKind::Unused(a), rs, e) => {
                write!(f, "BatchUnused({a:?}, {rs:?}, {e:?})")
            }
            Concrete::Batch(BatchKind::Fault(s), rs, e) => {
                write!(f, "BatchFault({s:?}, {rs:?}, {e:?})")
            }
            Concrete::Batch(kind, rs, e) => write!(f, "Batch({kind:?}, {rs:?}, {e:?})"),
        }
    }
}

// ----- running a step for real -----

/// # Safety
/// `k` must be the model's states before the step: only pages it says are Ready are written.
unsafe fn exec(r: &Reservation, step: &Concrete<'_>, k: &[K; PAGES], ps: usize) -> Want {
    let s = match step {
        Concrete::Borrowed(s) => *s,
        Concrete::Own(s) => s,
        Concrete::Batch(kind, rs, end) => return exec_batch(r, *kind, rs, *end, ps),
    };
    match *s {
        Step::Map(rg) => {
            let (o, l) = rg.bytes(ps);
            Want::Unit(r.map(o, l))
        }
        Step::Used(rg) => {
            let (o, l) = rg.bytes(ps);
            Want::Unit(r.used(o, l))
        }
        Step::Unused(rg, a) => {
            let (o, l) = rg.bytes(ps);
            let u = match a {
                Some(a) => r.unused_with(o, l, a),
                None => r.unused(o, l),
            };
            Want::Unused(u.map(|u| (u.how, u.zeroed, u.protected)))
        }
        Step::Fault(rg, st) => {
            let (o, l) = rg.bytes(ps);
            let f = match st {
                Some(st) => r.fault_with(o, l, st),
                None => r.fault(o, l),
            };
            Want::Fault(f.map(|f| f.how))
        }
        Step::Write(at, n, v) => {
            for p in at..(at + n).min(PAGES) {
                if k[p] == K::Ready {
                    write_marks(r.as_ptr() as usize + p * ps, ps, v);
                }
            }
            Want::Unit(Ok(()))
        }
        Step::Huge(rg) => {
            let (o, l) = rg.bytes(ps);
            Want::Unit(r.hugepage(o, l))
        }
        Step::NoHuge(rg) => {
            let (o, l) = rg.bytes(ps);
            Want::Unit(r.nohugepage(o, l))
        }
        Step::Knobs(kn) => {
            osmem::configure(kn.config());
            Want::Unit(Ok(()))
        }
        _ => Want::Unit(Ok(())),
    }
}

unsafe fn exec_batch(r: &Reservation, kind: BatchKind, rs: &[R], end: End, ps: usize) -> Want {
    let mut w = BatchWant::default();
    let mut b: Batch<'_, BATCH_CAP> = Batch::new(kind);
    let mut last = None;
    for (i, rg) in rs.iter().enumerate().take(MAX_BATCH) {
        let (o, l) = rg.bytes(ps);
        w.pushes[i] = b.push(r, o, l).err();
        if w.pushes[i].is_none() {
            last = Some(o);
        }
    }
    if let Some(o) = last {
        w.queued_state = r.state(o);
    }
    if end == End::Drop {
        drop(b);
        return Want::Batch(w);
    }
    w.reported(&b.flush());
    Want::Batch(w)
}

// ----- the child: a whole case, allocation-free -----

/// A MAP_SHARED page the child writes its verdict into. Layout: `[0]` message length,
/// `[1]` step the child is at (`u64::MAX` before the first), `[2]` successful transitions;
/// the message from byte `HDR` on.
struct Shared {
    ptr: *mut u8,
}

const SHARED_LEN: usize = 64 << 10;
const HDR: usize = 64;

impl Shared {
    fn new() -> Shared {
        // SAFETY: a fresh anonymous shared mapping.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                SHARED_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap of the shared page");
        Shared { ptr: p.cast() }
    }

    fn word(&self, i: usize) -> &core::sync::atomic::AtomicU64 {
        // SAFETY: the mapping is page-aligned and larger than the header.
        unsafe { &*(self.ptr.add(i * 8) as *const core::sync::atomic::AtomicU64) }
    }

    fn reset(&self) {
        self.word(0).store(0, core::sync::atomic::Ordering::Relaxed);
        self.word(1)
            .store(u64::MAX, core::sync::atomic::Ordering::Relaxed);
        self.word(2).store(0, core::sync::atomic::Ordering::Relaxed);
    }

    fn message(&self) -> String {
        let n = (self.word(0).load(core::sync::atomic::Ordering::Relaxed) as usize)
            .min(SHARED_LEN - HDR);
        // SAFETY: the child wrote `n` bytes after the header.
        let b = unsafe { core::slice::from_raw_parts(self.ptr.add(HDR), n) };
        String::from_utf8_lossy(b).into_owned()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr.cast(), SHARED_LEN) };
    }
}

impl core::fmt::Write for &Shared {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let len = self.word(0).load(core::sync::atomic::Ordering::Relaxed) as usize;
        let n = s.len().min(SHARED_LEN - HDR - len);
        // SAFETY: stays inside the mapping.
        unsafe { core::ptr::copy_nonoverlapping(s.as_ptr(), self.ptr.add(HDR + len), n) };
        self.word(0)
            .store((len + n) as u64, core::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// In the child: if `$c` is false, write the message and fail the case.
macro_rules! ensure {
    ($out:expr, $c:expr, $($arg:tt)*) => {
        if !$c {
            let mut o = $out;
            let _ = write!(o, $($arg)*);
            return Err(());
        }
    };
}

/// Compare a stats delta with the expectation, every field.
fn check_delta(
    out: &Shared,
    what: &str,
    before: &osmem::Stats,
    after: &osmem::Stats,
    d: &Expect,
) -> Result<(), ()> {
    if let Some((name, got, want)) = d.mismatches(before, after).next() {
        ensure!(
            out,
            false,
            "{what}: stats.{name} moved by {got}, model says {want}"
        );
    }
    ensure!(
        out,
        d.names_ok(),
        "{what}: test bug: unknown counter name or too many names"
    );
    Ok(())
}

/// osmem's view and the kernel's view of every page against the model; then read every
/// Ready page's contents (resolving MADV_FREE'd pages to what they turned out to hold).
fn check_all(
    out: &Shared,
    r: &Reservation,
    m: &mut Model,
    pagemap: i32,
    i: usize,
) -> Result<(), ()> {
    let ps = m.env.ps;
    let base = r.as_ptr() as usize;
    for p in 0..PAGES {
        let got = r.state(p * ps);
        ensure!(
            out,
            got == Some(m.k[p].state()),
            "after step {i}: page {p}: osmem says {got:?}, model {:?}",
            m.k[p]
        );
    }
    for s in STATES {
        let want = (m.k.iter().filter(|k| k.state() == s).count() * ps) as u64;
        let got = r.bytes_in(s);
        ensure!(
            out,
            got == want,
            "after step {i}: bytes_in({s:?}) = {got}, model {want}"
        );
    }
    // /proc/self/maps: the protection of every page, one read of maps per VMA in the region.
    let mut p = 0;
    while p < PAGES {
        let addr = base + p * ps;
        let vma = tk::vma_at(addr);
        ensure!(
            out,
            vma.is_some(),
            "after step {i}: page {p} is not mapped at all"
        );
        let vma = vma.unwrap_or(tk::Vma {
            start: addr,
            end: addr + ps,
            perms: *b"????",
        });
        while p < PAGES && base + p * ps < vma.end {
            let want = m.k[p].perms();
            ensure!(
                out,
                &vma.perms == want,
                "after step {i}: page {p} ({:?}): maps says {}, want {}",
                m.k[p],
                vma.perms_str(),
                core::str::from_utf8(want).unwrap_or("")
            );
            p += 1;
        }
    }
    // /proc/self/pagemap: bit 58 guard marker, bit 63 present.
    let mut ents = [0u64; PAGES];
    // SAFETY: reading into a live buffer of exactly that size.
    let n = unsafe {
        libc::pread(
            pagemap,
            ents.as_mut_ptr().cast(),
            PAGES * 8,
            ((base / ps) * 8) as libc::off_t,
        )
    };
    ensure!(
        out,
        n == (PAGES * 8) as isize,
        "pread(/proc/self/pagemap) = {n}"
    );
    for p in 0..PAGES {
        let guard = ents[p] >> PM_GUARD_BIT & 1 == 1;
        let present = ents[p] >> PM_PRESENT_BIT & 1 == 1;
        ensure!(
            out,
            guard == (m.k[p] == K::FaultGuard),
            "after step {i}: page {p} ({:?}): pagemap guard bit {guard}",
            m.k[p]
        );
        let want = match m.pres[p] {
            Pres::Present => Some(true),
            Pres::Absent => Some(false),
            Pres::Maybe => None,
        };
        ensure!(
            out,
            !m.env.presence || want.map_or(true, |w| w == present),
            "after step {i}: page {p} ({:?}, {:?}): pagemap present bit {present}, model {:?}",
            m.k[p],
            m.data[p],
            m.pres[p]
        );
    }
    // Contents of Ready pages (the maps check above proved they are RW and unguarded).
    for p in 0..PAGES {
        if m.k[p] != K::Ready {
            continue;
        }
        let a = base + p * ps;
        // SAFETY: the page is Ready: mapped RW, no guard (checked above).
        let ((first, last), mid) = unsafe { read_marks(a, ps) };
        let ok = m.data[p].admits((first, last));
        ensure!(
            out,
            ok && mid,
            "after step {i}: page {p}: reads {first}..{last} (middle zero: {mid}), model {:?}",
            m.data[p]
        );
        if let Data::FreeOr(v) = m.data[p] {
            // `used` wrote the page, which ended the lazy release: whatever it holds now
            // (the old data, or zeros if the kernel had already reclaimed it) is for good.
            m.data[p] = if first == 0 { Data::Zero } else { Data::Val(v) };
        }
        m.pres[p] = Pres::Present;
    }
    Ok(())
}

fn child_case(
    steps: &[Step],
    start: Start,
    probe_page: usize,
    env: Env,
    out: &Shared,
) -> Result<(), ()> {
    use core::sync::atomic::Ordering::Relaxed;
    let ps = env.ps;
    osmem::configure(Knobs::DEFAULT.config());
    let s0 = osmem::stats();
    let r = match start {
        Start::Reserve => Reservation::reserve_aligned(PAGES * ps, 2 << 20),
        Start::Alloc => Reservation::alloc(PAGES * ps),
    };
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            ensure!(out, false, "{start:?}: {e:?}");
            return Err(());
        }
    };
    let s1 = osmem::stats();
    let (ops, bytes) = match start {
        Start::Reserve => (
            s1.reserve_ops - s0.reserve_ops,
            s1.reserved_bytes - s0.reserved_bytes,
        ),
        Start::Alloc => (s1.alloc_ops - s0.alloc_ops, s1.ready_bytes - s0.ready_bytes),
    };
    ensure!(
        out,
        ops == 1 && bytes == (PAGES * ps) as u64,
        "{start:?}: stats did not count it"
    );
    // SAFETY: plain open of a procfs file.
    let pagemap = unsafe { libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY) };
    ensure!(out, pagemap >= 0, "open(/proc/self/pagemap) failed");
    let mut m = Model::new(env, start);
    check_all(out, &r, &mut m, pagemap, 0)?;
    let mut buf = [R::Zero(0); MAX_BATCH];
    for (i, step) in steps.iter().enumerate() {
        out.word(1).store(i as u64, Relaxed);
        let c = m.resolve_into(step, &mut buf);
        let k_before = m.k;
        let mut d = Expect::NONE;
        let want = m.predict(&c, &mut d);
        let before = osmem::stats();
        // SAFETY: nothing references the region's memory; writes go to model-Ready pages.
        let got = unsafe { exec(&r, &c, &k_before, ps) };
        let after = osmem::stats();
        ensure!(
            out,
            got == want,
            "step {i}: {c:?}:\n  osmem:  {got:?}\n  model:  {want:?}"
        );
        check_delta(out, "step", &before, &after, &d).map_err(|()| {
            let mut o = out;
            let _ = write!(o, " (step {i}: {c:?})");
        })?;
        check_all(out, &r, &mut m, pagemap, i)?;
        out.word(2).store(m.moved as u64, Relaxed);
    }
    out.word(1).store(steps.len() as u64, Relaxed);
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(pagemap) };
    // The kernel's last word: an access from a forked grandchild, on the case's probe page and
    // on the first page of each trapping kind.
    let base = r.as_ptr() as usize;
    let mut pages = [probe_page % PAGES, usize::MAX, usize::MAX];
    pages[1] =
        m.k.iter()
            .position(|&k| k == K::FaultGuard)
            .unwrap_or(usize::MAX);
    pages[2] =
        m.k.iter()
            .position(|&k| k.prot_none())
            .unwrap_or(usize::MAX);
    for p in pages {
        if p == usize::MAX {
            continue;
        }
        let got = tk::touch_in_child(base + p * ps, true);
        let want = m.k[p].touch();
        ensure!(
            out,
            got == want,
            "end: touching page {p} ({:?}) gave {got:?}, want {want:?}",
            m.k[p]
        );
    }
    // Dropping returns every byte of every state and unmaps the region.
    let before = osmem::stats();
    drop(r);
    let after = osmem::stats();
    let mut d = Expect::NONE;
    for s in STATES {
        let n = m.k.iter().filter(|k| k.state() == s).count();
        d.add(bytes_name(s), -((n * ps) as i64));
    }
    d.add("free_ops", 1);
    d.add("munmap_calls", 1);
    check_delta(out, "drop", &before, &after, &d)?;
    let left = tk::vmas_in(base, base + PAGES * ps);
    ensure!(
        out,
        left == 0,
        "drop: {left} mappings left in the region's range"
    );
    Ok(())
}

// ----- the parent -----

fn env() -> Env {
    // Also warms up the first reservation's one-time work here, not in a child's first step.
    let e = linux_6_14();
    Env {
        ps: e.ps,
        pidfd_open: e.pidfd_open,
        presence: small_folios_off(),
        names: e.names,
    }
}

/// Whether a write fault can only ever allocate one base page in our region: with an
/// mTHP size below 2 MiB in use, writing a page could also fill its released neighbours,
/// so residency would not be exact (the region never gets MADV_HUGEPAGE).
fn small_folios_off() -> bool {
    let top =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let top_always = top.contains("[always]");
    if top_always {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/transparent_hugepage") else {
        return true;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(kb) = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        if kb >= 2048 {
            continue;
        }
        let v = std::fs::read_to_string(e.path().join("enabled")).unwrap_or_default();
        if v.contains("[always]") {
            return false;
        }
    }
    true
}

fn cases() -> u32 {
    std::env::var("OSMEM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// The steps as they ran, `Next*` resolved (the model alone decides how, so the parent can
/// replay it), up to and including `upto`.
fn listing(steps: &[Step], start: Start, env: Env, upto: usize) -> String {
    let mut m = Model::new(env, start);
    let mut s = String::new();
    let from = upto.saturating_sub(40);
    if from > 0 {
        s += &format!("  ... {from} earlier steps\n");
    }
    let mut buf = [R::Zero(0); MAX_BATCH];
    for (i, step) in steps.iter().enumerate().take(upto + 1) {
        let c = m.resolve_into(step, &mut buf);
        if i >= from {
            let c_str = format!("{c:?}");
            match step {
                Step::Next { .. } | Step::NextBatch { .. } => {
                    s += &format!("  #{i}: {c_str}   (from {step:?})\n")
                }
                _ => s += &format!("  #{i}: {c_str}\n"),
            }
        }
        let mut d = Expect::NONE;
        m.predict(&c, &mut d);
    }
    s
}

/// Run one case in a forked child; `Err` carries the readable failure.
fn run_case(
    steps: &[Step],
    start: Start,
    probe_page: usize,
    env: Env,
    out: &Shared,
) -> Result<usize, String> {
    out.reset();
    let exit = tk::in_child(|| match child_case(steps, start, probe_page, env, out) {
        Ok(()) => 0,
        Err(()) => 1,
    });
    let at = out.word(1).load(core::sync::atomic::Ordering::Relaxed);
    let moved = out.word(2).load(core::sync::atomic::Ordering::Relaxed) as usize;
    if exit == ChildExit::Code(0) {
        return Ok(moved);
    }
    let upto = if at == u64::MAX {
        0
    } else {
        (at as usize).min(steps.len().saturating_sub(1))
    };
    Err(format!(
        "child {exit:?} at step {}: {}\nsteps (Next resolved):\n{}",
        if at == u64::MAX {
            "-".to_string()
        } else {
            at.to_string()
        },
        out.message(),
        if steps.is_empty() {
            String::new()
        } else {
            listing(steps, start, env, upto)
        }
    ))
}

#[test]
fn model_walk() {
    let env = env();
    let out = Shared::new();
    let mut runner = TestRunner::new(PtConfig {
        cases: cases(),
        failure_persistence: None,
        ..PtConfig::default()
    });
    let strat = (
        prop::collection::vec(step_s(), 1..=MAX_STEPS),
        prop_oneof![3 => Just(Start::Reserve), 1 => Just(Start::Alloc)],
        0..PAGES,
    );
    let result = runner.run(&strat, |(steps, start, probe_page)| {
        run_case(&steps, start, probe_page, env, &out)
            .map(|_| ())
            .map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (steps, start, probe_page))) => {
            let input: Vec<String> = steps.iter().map(|s| format!("  {s:?}")).collect();
            panic!(
                "{why}\nminimal failing input ({start:?}, probe_page {probe_page}), one step \
                 per line:\n{}",
                input.join("\n")
            )
        }
        Err(e) => panic!("{e}"),
    }
}

/// One long deterministic walk (the former `table_model.rs`: 10 000 steps of a plain LCG walk
/// with no kernel checks): states that only long walks reach, and progress must be made.
#[test]
fn long_walk() {
    let env = env();
    let out = Shared::new();
    let mut runner = TestRunner::deterministic();
    let steps = prop::collection::vec(step_s(), LONG_WALK)
        .new_tree(&mut runner)
        .unwrap()
        .current();
    let moved = run_case(&steps, Start::Reserve, 7, env, &out).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("long_walk: {moved} successful transitions in {LONG_WALK} steps");
    // The walk must have exercised the transitions, not only refusals.
    assert!(
        moved * 3 > LONG_WALK,
        "only {moved} successful transitions in {LONG_WALK} steps"
    );
}

/// `thp=never` promises reservations without transparent huge pages (`MADV_NOHUGEPAGE` at
/// reserve, like Go's `disablethp`). The remap links — `unused` with `UnusedAdvice::Remap` (or
/// as the last link of the chain), `fault` with `FaultStrategy::Remap` (or its last link), and
/// the `mmap(RW, MAP_FIXED)` fallback of `map`/`used` — replace the VMA and so drop
/// VM_NOHUGEPAGE (smaps VmFlags `nh`): on a THP=always system those pages can become huge
/// pages. Go re-applies the hint after its `mmap(MAP_FIXED)` in `sysMapOS` for this reason.
/// `thp=never` must hold whatever link a range went through: osmem re-applies
/// MADV_NOHUGEPAGE after every MAP_FIXED remap (a fresh VMA has no hints).
#[test]
fn thp_never_survives_remap() {
    let _ = env();
    let (exit, rep) = tk::in_child_report(|rep| {
        osmem::configure(Config::new().thp(Thp::Never));
        let ps = osmem::page_size();
        let Ok(r) = Reservation::reserve(8 * ps) else {
            return 2;
        };
        let nh = |page: usize| {
            tk::smaps_at(r.as_ptr() as usize + page * ps).is_some_and(|e| e.vm_flags.contains("nh"))
        };
        let mut bad = 0;
        // SAFETY: the region is ours and nothing references it.
        unsafe {
            let _ = r.map(0, 8 * ps).and_then(|()| r.used(0, 8 * ps));
            rep.push(u64::from(nh(2)));
            if r.unused_with(2 * ps, ps, UnusedAdvice::Remap).is_err() || !nh(2) {
                bad |= 1;
            }
            if r.fault_with(5 * ps, ps, FaultStrategy::Remap).is_err() || !nh(5) {
                bad |= 2;
            }
        }
        bad
    });
    assert_eq!(rep.get(0), Some(1), "thp=never: no nh right after reserve");
    assert_eq!(
        exit,
        ChildExit::Code(0),
        "VM_NOHUGEPAGE lost (bit 1: after unused(Remap), bit 2: after fault(Remap))"
    );
}
