//! Concurrency stress: `THREADS` threads on disjoint ranges of ONE
//! reservation, `OPS` random operations each (map / used / unused and unused_with every advice
//! / fault and fault_with every strategy / batches of unused or fault over several ranges /
//! writes / huge-page hints, state-directed or random, so refusals are exercised too), each
//! thread checking its own small model as it goes:
//! - every result exactly (Ok with the exact `Unused` / `Faulted` / batch report, or the exact
//!   typed error, e.g. `WrongState` naming the first offending page);
//! - after every operation, `Reservation::state` of the pages it owns in the slot it touched,
//!   and the contents of its Ready pages there: its data survives until it releases them, a
//!   released page reads zero when Ready again (after MADV_FREE: old data or zero);
//! - every 50 operations the kernel's view of all its pages: `/proc/self/maps` protection and
//!   the guard-marker bit of `/proc/self/pagemap`.
//!
//! The threads' pages interleave: slot `j` (sizes 1, 2, 3, 5, 7, 11, 13 pages, repeating)
//! belongs to thread `j % THREADS`, so slot boundaries fall at every position of osmem's 8-page
//! state-table words and neighbouring threads update the same table word concurrently.
//!
//! At the end (threads joined): every page's state, the region's `bytes_in` per state, and the
//! GLOBAL `osmem::stats()` deltas — every field, bytes and op counters, every syscall and advice
//! counter, fallbacks and errors — must equal exactly the sums of what the threads' models
//! expected; then the kernel's view of every page, one forked touch of a guard page, a
//! PROT_NONE page and a Ready page, and drop must return every byte.
//!
//! The operations are a function of a seed: `OSMEM_STRESS_SEED=n` varies them (the default is
//! fixed); a failure message names the thread and operation index.
//!
//! This file holds exactly ONE `#[test]` on purpose: `cargo test` runs a file's tests as threads
//! of one process and the global counters are shared, so nothing else in this process may use
//! osmem while it runs (nextest runs each test in its own process anyway). The workers cannot
//! run in a forked child: after `fork` in a multi-threaded process the child must not allocate,
//! and spawning threads allocates.

// Page-indexed loops over the per-page arrays read better than zipped iterators.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{
    assert_deltas, bytes_name, expected_how_fault as how_fault, expected_how_unused as how_unused,
    linux_6_14, read_marks, write_marks, BatchOutcome, Data, Expect, ModelEnv as Env,
    PageKind as K, ADVICES, PM_GUARD_BIT, STATES, STRATEGIES,
};
use osmem::{
    Batch, BatchKind, Error, FaultHow, FaultStrategy, Op as OsOp, Reservation, UnusedAdvice,
    UnusedHow,
};
use osmem_testkit as tk;

const THREADS: usize = 4;
const SIZES: [usize; 7] = [1, 2, 3, 5, 7, 11, 13];
const SLOTS: usize = SIZES.len() * THREADS;
const OPS: usize = 8000;
const BATCH_CAP: usize = 4;
const MAX_BATCH: usize = 6;

/// (first page, pages) of slot `j`.
fn slot(j: usize) -> (usize, usize) {
    let start: usize = (0..j).map(|i| SIZES[i % SIZES.len()]).sum();
    (start, SIZES[j % SIZES.len()])
}

fn pages() -> usize {
    (0..SLOTS).map(|j| slot(j).1).sum()
}

struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tr {
    Map,
    Used,
    Unused(Option<UnusedAdvice>),
    Fault(Option<FaultStrategy>),
}

/// A result, expected or observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Res {
    Unit(Result<(), Error>),
    /// (how, zeroed, protected)
    Unused(Result<(UnusedHow, bool, bool), Error>),
    Fault(Result<FaultHow, Error>),
}

type Rep = BatchOutcome<MAX_BATCH>;

fn allowed(tr: Tr, k: K) -> bool {
    match tr {
        Tr::Map => matches!(k, K::Reserved | K::FaultGuard | K::FaultNone),
        Tr::Used => k.used_ok(),
        Tr::Unused(_) | Tr::Fault(_) => k == K::Ready,
    }
}

struct Worker<'r> {
    t: usize,
    r: &'r Reservation,
    env: Env,
    /// This thread's slots.
    slots: Vec<(usize, usize)>,
    k: Vec<K>,
    data: Vec<Data>,
    rng: Lcg,
    exp: Expect,
    writes: u8,
    /// Successful transitions (progress).
    moved: usize,
    pagemap: std::fs::File,
}

impl<'r> Worker<'r> {
    fn new(t: usize, r: &'r Reservation, env: Env, seed: u64) -> Self {
        let n = pages();
        Worker {
            t,
            r,
            env,
            slots: (0..SLOTS).filter(|j| j % THREADS == t).map(slot).collect(),
            k: vec![K::Reserved; n],
            data: vec![Data::Zero; n],
            rng: Lcg(seed.wrapping_add(t as u64 * 7919)),
            exp: Expect::NONE,
            writes: 0,
            moved: 0,
            pagemap: std::fs::File::open("/proc/self/pagemap").unwrap(),
        }
    }

    fn ps(&self) -> usize {
        self.env.ps
    }

    fn set(&mut self, f: usize, n: usize, to: K) {
        for p in f..f + n {
            self.exp.mv(self.k[p].state(), to.state(), self.env.ps);
            self.k[p] = to;
        }
    }

    /// The first page that `ok` refuses (`WrongState`) or that is queued (`Busy`) is the one the
    /// error names.
    fn check(
        &self,
        op: OsOp,
        f: usize,
        n: usize,
        pend: &[bool],
        ok: impl Fn(K) -> bool,
    ) -> Result<(), Error> {
        match (f..f + n).find(|&p| pend[p] || !ok(self.k[p])) {
            None => Ok(()),
            Some(p) if pend[p] => Err(Error::Busy {
                op,
                offset: p * self.ps(),
            }),
            Some(p) => Err(Error::WrongState {
                op,
                offset: p * self.ps(),
                found: self.k[p].state(),
            }),
        }
    }

    fn runs(&self, f: usize, n: usize) -> Vec<K> {
        let mut v = Vec::new();
        for p in f..f + n {
            if p == f || self.k[p] != self.k[p - 1] {
                v.push(self.k[p]);
            }
        }
        v
    }

    fn released(&mut self, f: usize, n: usize) {
        self.data[f..f + n].iter_mut().for_each(|d| *d = Data::Zero);
    }

    fn settle_unused(&mut self, f: usize, n: usize, how: UnusedHow) {
        if self.env.harddecommit {
            self.exp.add("mprotect_calls", 1);
        }
        if how == UnusedHow::Free {
            for d in &mut self.data[f..f + n] {
                if let Data::Val(v) = *d {
                    *d = Data::FreeOr(v);
                }
            }
        } else {
            self.released(f, n);
        }
        self.set(f, n, K::after_unused(how, self.env.harddecommit));
        self.exp.add("unused_ops", 1);
        self.moved += 1;
    }

    fn settle_fault(&mut self, f: usize, n: usize, how: FaultHow) {
        self.released(f, n);
        let to = if how == FaultHow::Guard {
            K::FaultGuard
        } else {
            K::FaultNone
        };
        self.set(f, n, to);
        self.exp.add("fault_ops", 1);
        self.moved += 1;
    }

    /// Predict a transition of pages `[f, f+n)` (all this thread's) and apply it to the model.
    fn predict(&mut self, tr: Tr, f: usize, n: usize) -> Res {
        let none = vec![false; self.k.len()];
        let op = match tr {
            Tr::Map => OsOp::Map,
            Tr::Used => OsOp::Used,
            Tr::Unused(_) => OsOp::Unused,
            Tr::Fault(_) => OsOp::Fault,
        };
        let checked = self.check(op, f, n, &none, |k| allowed(tr, k));
        match tr {
            Tr::Map => Res::Unit(checked.map(|()| {
                for k in self.runs(f, n) {
                    self.exp.map_run_calls(k == K::FaultGuard);
                }
                self.released(f, n);
                self.set(f, n, K::Prepared);
                self.exp.add("map_ops", 1);
                self.moved += 1;
            })),
            Tr::Used => Res::Unit(checked.map(|()| {
                self.exp.used_calls(&self.k[f..f + n], self.env.prefault);
                self.set(f, n, K::Ready);
                self.exp.add("used_ops", 1);
                self.moved += 1;
            })),
            Tr::Unused(a) => Res::Unused(checked.map(|()| {
                let how = how_unused(a.unwrap_or(self.env.unused));
                self.exp.unused_calls(how, false);
                self.settle_unused(f, n, how);
                (how, how != UnusedHow::Free, self.env.harddecommit)
            })),
            Tr::Fault(s) => Res::Fault(checked.map(|()| {
                let how = how_fault(s.unwrap_or(self.env.fault));
                self.exp.fault_calls(how, false);
                self.settle_fault(f, n, how);
                how
            })),
        }
    }

    fn transition(&mut self, i: usize, tr: Tr, f: usize, n: usize) {
        let want = self.predict(tr, f, n);
        let (o, l) = (f * self.ps(), n * self.ps());
        let r = self.r;
        // SAFETY: the pages are this thread's own and nothing references them.
        let got = unsafe {
            match tr {
                Tr::Map => Res::Unit(r.map(o, l)),
                Tr::Used => Res::Unit(r.used(o, l)),
                Tr::Unused(a) => Res::Unused(
                    match a {
                        Some(a) => r.unused_with(o, l, a),
                        None => r.unused(o, l),
                    }
                    .map(|u| (u.how, u.zeroed, u.protected)),
                ),
                Tr::Fault(s) => Res::Fault(
                    match s {
                        Some(s) => r.fault_with(o, l, s),
                        None => r.fault(o, l),
                    }
                    .map(|f| f.how),
                ),
            }
        };
        assert_eq!(
            got, want,
            "thread {} op {i}: {tr:?} on pages {f}+{n}",
            self.t
        );
    }

    /// A Ready run in slot `s`: from its first Ready page, at most `n` pages.
    fn ready_run(&self, s: usize, n: usize) -> Option<(usize, usize)> {
        let (start, len) = self.slots[s];
        let p = (start..start + len).find(|&p| self.k[p] == K::Ready)?;
        let run = (p..start + len)
            .take(n)
            .take_while(|&q| self.k[q] == K::Ready)
            .count();
        Some((p, run))
    }

    fn flush_model(&mut self, kind: BatchKind, queued: &[(usize, usize)], rep: &mut Rep) {
        if queued.is_empty() {
            return;
        }
        self.exp.add("batch_flushes", 1);
        self.exp.add("batch_ranges", queued.len() as i64);
        // The flush claims in push order: a range overlapping one claimed before it is
        // refused as held, one not Ready with WrongState; nothing changes for either.
        let op = match kind {
            BatchKind::Unused(_) => OsOp::Unused,
            _ => OsOp::Fault,
        };
        let mut pend = vec![false; self.k.len()];
        let mut q = Vec::new();
        for &(f, n) in queued {
            match self.check(op, f, n, &pend, |k| k == K::Ready) {
                Ok(()) => {
                    pend[f..f + n].iter_mut().for_each(|x| *x = true);
                    q.push((f, n));
                }
                Err(e) => {
                    rep.refused += 1;
                    rep.error.get_or_insert(e);
                }
            }
        }
        if q.is_empty() {
            return;
        }
        let q = &q[..];
        let nq = q.len() as i64;
        let opens = i64::from(self.env.pidfd_open);
        match kind {
            BatchKind::Unused(a) => {
                if a == UnusedAdvice::Remap {
                    self.exp.add("mmap_calls", nq);
                } else {
                    self.exp.add("process_madvise_calls", 1);
                    self.exp.add("pidfd_open_calls", opens);
                }
                for &(f, n) in q {
                    self.settle_unused(f, n, how_unused(a));
                    rep.not_zeroed += usize::from(a == UnusedAdvice::Free);
                }
            }
            BatchKind::Fault(s) => {
                let how = how_fault(s);
                match how {
                    FaultHow::Guard => {
                        self.exp.add("process_madvise_calls", 2);
                        self.exp.add("pidfd_open_calls", opens);
                    }
                    FaultHow::Protect => {
                        self.exp.add("process_madvise_calls", 1);
                        self.exp.add("pidfd_open_calls", opens);
                        self.exp.add("mprotect_calls", nq);
                    }
                    _ => q.iter().for_each(|_| self.exp.fault_calls(how, false)),
                }
                for &(f, n) in q {
                    self.settle_fault(f, n, how);
                }
            }
            other => unreachable!("a batch kind this test does not know: {other:?}"),
        }
        for &(_, n) in q {
            rep.ranges += 1;
            rep.bytes += n * self.env.ps;
        }
    }

    /// A batch of up to `MAX_BATCH` ranges of this thread's own Ready runs (or random own
    /// ranges, refused), through a `Batch` of capacity `BATCH_CAP` (so it flushes on its own).
    fn batch(&mut self, i: usize) {
        let kind = if self.rng.below(2) == 0 {
            BatchKind::Unused(ADVICES[self.rng.below(3)])
        } else {
            BatchKind::Fault(STRATEGIES[self.rng.below(5)])
        };
        let count = 1 + self.rng.below(MAX_BATCH);
        let mut ranges = Vec::new();
        for _ in 0..count {
            let s = self.rng.below(self.slots.len());
            let n = 1 + self.rng.below(8);
            let rg = match self.ready_run(s, n) {
                Some(rg) if self.rng.below(8) != 0 => rg,
                _ => {
                    let (start, len) = self.slots[s];
                    let at = start + self.rng.below(len);
                    (at, 1 + self.rng.below(start + len - at))
                }
            };
            ranges.push(rg);
        }
        // The model.
        // Pushing checks ranges only (these are all inside the region).
        let mut want = Rep::default();
        let mut q = Vec::new();
        for &(f, n) in ranges.iter() {
            if q.len() == BATCH_CAP {
                self.flush_model(kind, &q, &mut want);
                q.clear();
            }
            q.push((f, n));
        }
        self.flush_model(kind, &q, &mut want);
        // For real.
        let ps = self.ps();
        let mut got = Rep::default();
        let mut b: Batch<'_, BATCH_CAP> = Batch::new(kind);
        for (j, &(f, n)) in ranges.iter().enumerate() {
            // SAFETY: this thread's own pages; nothing references them.
            got.pushes[j] = unsafe { b.push(self.r, f * ps, n * ps) }.err();
        }
        // SAFETY: as above.
        got.reported(&unsafe { b.flush() });
        assert_eq!(
            got, want,
            "thread {} op {i}: batch {kind:?} of {ranges:?}",
            self.t
        );
    }

    fn write(&mut self, f: usize, n: usize) {
        self.writes = self.writes.wrapping_add(1);
        // Nonzero and tagged with the thread, so another thread's data would be noticed.
        let v = ((self.writes << 3) | (self.t as u8 + 1)).max(1);
        for p in f..f + n {
            if self.k[p] == K::Ready {
                let a = self.r.as_ptr() as usize + p * self.ps();
                // SAFETY: a Ready page of this thread.
                unsafe { write_marks(a, self.ps(), v) };
                self.data[p] = Data::Val(v);
            }
        }
    }

    /// osmem's state of the slot's pages, and the contents of its Ready pages.
    fn check_slot(&mut self, i: usize, s: usize) {
        let (start, len) = self.slots[s];
        for p in start..start + len {
            assert_eq!(
                self.r.state(p * self.ps()),
                Some(self.k[p].state()),
                "thread {} op {i}: page {p}",
                self.t
            );
            if self.k[p] == K::Ready {
                self.check_data(p, &format!("thread {} op {i}", self.t));
            }
        }
    }

    fn check_data(&mut self, p: usize, what: &str) {
        let ps = self.ps();
        let a = self.r.as_ptr() as usize + p * ps;
        // SAFETY: the model says the page is Ready (mapped RW, unguarded).
        let ((first, last), mid) = unsafe { read_marks(a, ps) };
        let ok = self.data[p].admits((first, last));
        assert!(
            ok && mid,
            "{what}: page {p} reads {first}..{last} (middle zero: {mid}), model {:?}",
            self.data[p]
        );
        if matches!(self.data[p], Data::FreeOr(_)) && first == 0 {
            self.data[p] = Data::Zero;
        }
    }

    /// The kernel's view of this thread's pages: protection and guard markers.
    fn check_kernel(&self, i: usize) {
        for &(start, len) in &self.slots {
            kernel_view(
                self.r,
                &self.k,
                &self.pagemap,
                start,
                len,
                &format!("thread {} op {i}", self.t),
            );
        }
    }

    fn run(mut self) -> Self {
        for i in 0..OPS {
            let s = self.rng.below(self.slots.len());
            let (start, len) = self.slots[s];
            let at = start + self.rng.below(len);
            let n = 1 + self.rng.below(start + len - at);
            match self.rng.below(100) {
                // State-directed: the transition the first page allows, on its run.
                0..=59 => {
                    let k = self.k[at];
                    let tr = match k {
                        K::Reserved | K::FaultGuard | K::FaultNone => Tr::Map,
                        K::Prepared | K::PreparedNone | K::PreparedFree | K::PreparedNoneFree => {
                            Tr::Used
                        }
                        K::Ready => match self.rng.below(10) {
                            j @ 0..=2 => Tr::Unused(Some(ADVICES[j])),
                            3 => Tr::Unused(None),
                            j @ 4..=8 => Tr::Fault(Some(STRATEGIES[j - 4])),
                            _ => Tr::Fault(None),
                        },
                    };
                    let run = (at..at + n).take_while(|&p| allowed(tr, self.k[p])).count();
                    self.transition(i, tr, at, run);
                }
                // Random: often refused, and the error must name the first offending page.
                60..=71 => {
                    let tr = match self.rng.below(4) {
                        0 => Tr::Map,
                        1 => Tr::Used,
                        2 => Tr::Unused(Some(ADVICES[self.rng.below(3)])),
                        _ => Tr::Fault(Some(STRATEGIES[self.rng.below(5)])),
                    };
                    self.transition(i, tr, at, n);
                }
                72..=83 => self.batch(i),
                84..=93 => self.write(at, n),
                94..=96 => {
                    assert_eq!(self.r.nohugepage(at * self.ps(), n * self.ps()), Ok(()));
                    self.exp.add("madvise_calls", 1);
                    self.exp.add("madv_nohugepage", 1);
                }
                _ => {
                    // No 2 MiB-aligned huge page fits in the region: a counted no-op.
                    assert_eq!(self.r.hugepage(at * self.ps(), n * self.ps()), Ok(()));
                    self.exp.add("huge_hints_skipped", 1);
                }
            }
            self.check_slot(i, s);
            if i % 50 == 0 {
                self.check_kernel(i);
            }
        }
        self
    }
}

/// `/proc/self/maps` protection and the pagemap guard bit (58) of pages `[start, start+len)`.
fn kernel_view(
    r: &Reservation,
    k: &[K],
    pagemap: &std::fs::File,
    start: usize,
    len: usize,
    what: &str,
) {
    use std::os::unix::fs::FileExt;
    let ps = osmem::page_size();
    let base = r.as_ptr() as usize;
    let mut p = start;
    while p < start + len {
        let vma = tk::vma_at(base + p * ps).unwrap_or_else(|| panic!("{what}: page {p} unmapped"));
        while p < start + len && base + p * ps < vma.end {
            assert_eq!(
                &vma.perms,
                k[p].perms(),
                "{what}: page {p} ({:?}) protection",
                k[p]
            );
            p += 1;
        }
    }
    let mut buf = vec![0u8; len * 8];
    pagemap
        .read_exact_at(&mut buf, ((base / ps + start) * 8) as u64)
        .unwrap();
    for (i, e) in buf.chunks_exact(8).enumerate() {
        let v = u64::from_ne_bytes(e.try_into().unwrap());
        let p = start + i;
        assert_eq!(
            v >> PM_GUARD_BIT & 1 == 1,
            k[p] == K::FaultGuard,
            "{what}: page {p} ({:?}) guard marker",
            k[p]
        );
    }
}

#[test]
fn threads_on_disjoint_ranges_of_one_reservation() {
    // Also the one-time work (e.g. the anon-name downgrade) before the baseline.
    let env = linux_6_14();
    // The operations are a function of the seed (the interleaving is not);
    // OSMEM_STRESS_SEED=n replays or varies them.
    let seed = std::env::var("OSMEM_STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0000u64);
    eprintln!("stress: seed {seed} (OSMEM_STRESS_SEED)");
    let n = pages();
    let r = Reservation::reserve_aligned(n * env.ps, 2 << 20).unwrap();
    let before = osmem::stats();
    // All threads start together, so their operations really overlap.
    let start = std::sync::Barrier::new(THREADS);
    let workers: Vec<Worker<'_>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let w = Worker::new(t, &r, env, seed);
                let start = &start;
                sc.spawn(move || {
                    start.wait();
                    w.run()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = osmem::stats();

    // Merge the threads' models.
    let mut k = vec![K::Reserved; n];
    let mut exp = Expect::NONE;
    let mut moved = 0;
    for w in &workers {
        for &(start, len) in &w.slots {
            k[start..start + len].copy_from_slice(&w.k[start..start + len]);
        }
        exp.merge(&w.exp);
        moved += w.moved;
    }
    eprintln!(
        "stress: {moved} successful transitions in {} operations",
        THREADS * OPS
    );
    assert!(
        moved * 3 > THREADS * OPS,
        "only {moved} successful transitions"
    );
    assert_deltas("after the threads", &before, &after, &exp);
    for s in STATES {
        let want = (k.iter().filter(|k| k.state() == s).count() * env.ps) as u64;
        assert_eq!(r.bytes_in(s), want, "bytes_in({s:?})");
    }
    for p in 0..n {
        assert_eq!(r.state(p * env.ps), Some(k[p].state()), "page {p}");
    }
    // The kernel's view of every page, single-threaded now, and each thread's data.
    let pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
    kernel_view(&r, &k, &pagemap, 0, n, "end");
    let mut workers = workers;
    for w in &mut workers {
        for s in 0..w.slots.len() {
            w.check_slot(OPS, s);
        }
    }
    // One access of each kind from a forked child.
    let base = r.as_ptr() as usize;
    for probe in [
        k.iter().position(|&k| k == K::FaultGuard),
        k.iter().position(|&k| k.prot_none()),
        k.iter().position(|&k| k == K::Ready),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(
            tk::touch_in_child(base + probe * env.ps, true),
            k[probe].touch(),
            "touching page {probe} ({:?})",
            k[probe]
        );
    }
    // Dropping returns every byte.
    drop(workers);
    let before = osmem::stats();
    drop(r);
    let after = osmem::stats();
    let mut exp = Expect::NONE;
    for s in STATES {
        let pages = k.iter().filter(|k| k.state() == s).count();
        exp.add(bytes_name(s), -((pages * env.ps) as i64));
    }
    exp.add("free_ops", 1);
    exp.add("munmap_calls", 1);
    assert_deltas("drop", &before, &after, &exp);
}
