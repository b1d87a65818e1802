//! Model-based property test of the page heap: random alloc / free / release / release_all
//! sequences (with bad frees among them) against a model of every page, and against the
//! kernel after every step:
//! - an allocation is the lowest-addressed fit the model finds (growing as the heap grows);
//! - `needzero` is true exactly when a page of the run may hold old data, and a run that
//!   says false reads zero;
//! - pages in use keep their contents, whatever is released around them;
//! - released free pages are not resident (mincore, the test kit's reader);
//! - a refused free changes nothing; the stats equal the model's counts.

use osmem_heap::{Heap, HeapConfig, HeapError, Mode};
use osmem_testkit::resident_pages;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};

const CHUNK: usize = 512;
const MAX_CHUNKS: usize = 8;
const GROW: usize = 4;

#[derive(Copy, Clone, Debug, PartialEq)]
enum Page {
    /// Free; `zero`: reads zero (never used, or released); `released`: not resident.
    Free {
        zero: bool,
        released: bool,
        byte: u8,
    },
    /// In use by allocation `id`, written with `byte`.
    Used { id: usize, byte: u8 },
}

struct Model {
    pages: Vec<Page>,
    grown: usize,
    runs: Vec<(usize, usize, usize, u8)>, // (id, first page, pages, byte)
    next_id: usize,
}

fn unreleased(p: &Page) -> bool {
    matches!(
        p,
        Page::Free {
            released: false,
            ..
        }
    )
}

const RELEASED: Page = Page::Free {
    zero: true,
    released: true,
    byte: 0,
};

impl Model {
    /// Batched mode: the highest free unreleased pages, `budget` of them.
    fn release_highest(&mut self, budget: usize) -> usize {
        let mut done = 0;
        for c in (0..self.grown).rev() {
            if done >= budget {
                break;
            }
            let chunk = c * CHUNK..(c + 1) * CHUNK;
            // A chunk all free and unreleased (one huge page) goes out whole, even past the
            // budget: never split a free huge page.
            if self.pages[chunk.clone()].iter().all(unreleased) {
                for p in chunk {
                    self.pages[p] = RELEASED;
                }
                done += CHUNK;
                continue;
            }
            for p in chunk.rev() {
                if done == budget {
                    break;
                }
                if unreleased(&self.pages[p]) {
                    self.pages[p] = RELEASED;
                    done += 1;
                }
            }
        }
        done
    }

    /// Go-faithful mode, Go's `findScavengeCandidate` per step: the run ending at the highest
    /// free unreleased page of the highest such chunk, at most 16 pages (64 KiB) of it, grown
    /// to the whole chunk (one huge page) when the run covers all of it.
    fn release_go(&mut self, budget: usize) -> usize {
        let quantum = (64 << 10) / osmem::page_size();
        let (mut left, mut done) = (budget, 0);
        while left > 0 {
            let Some(p) = (0..self.grown * CHUNK)
                .rev()
                .find(|&p| unreleased(&self.pages[p]))
            else {
                break;
            };
            let (c, end) = (p / CHUNK, p % CHUNK + 1);
            let run = (0..end)
                .rev()
                .take_while(|&q| unreleased(&self.pages[c * CHUNK + q]))
                .count();
            let size = run.min(quantum).min(left).max(1);
            let start = if end == CHUNK && run == CHUNK {
                0
            } else {
                end - size
            };
            for q in start..end {
                self.pages[c * CHUNK + q] = RELEASED;
            }
            left = left.saturating_sub(end - start);
            done += end - start;
        }
        done
    }

    fn fit(&self, n: usize) -> Option<usize> {
        let total = self.grown * CHUNK;
        let mut run = 0;
        for p in 0..total {
            if matches!(self.pages[p], Page::Free { .. }) {
                run += 1;
                if run == n {
                    return Some(p + 1 - n);
                }
            } else {
                run = 0;
            }
        }
        None
    }

    fn alloc(&mut self, n: usize) -> Option<usize> {
        loop {
            if let Some(p) = self.fit(n) {
                return Some(p);
            }
            let add = n.div_ceil(CHUNK).max(GROW).min(MAX_CHUNKS - self.grown);
            if add == 0 {
                return None;
            }
            self.grown += add;
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Alloc(usize),
    /// Free the k-th live run (mod the count), whole or its first `part` pages.
    Free(usize, Option<usize>),
    /// Free something not allocated (a double free of page k, or outside the heap).
    BadFree(usize),
    Release(usize),
    ReleaseAll,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => prop_oneof![1..8usize, 1..600usize, 500..1100usize].prop_map(Step::Alloc),
        6 => (any::<usize>(), proptest::option::of(1..4usize)).prop_map(|(k, p)| Step::Free(k, p)),
        1 => any::<usize>().prop_map(Step::BadFree),
        2 => (1..300usize).prop_map(Step::Release),
        1 => Just(Step::ReleaseAll),
    ]
}

fn run_case(mode: Mode, steps: &[Step]) -> Result<(), TestCaseError> {
    let ps = osmem::page_size();
    let heap = Heap::create(HeapConfig::new(MAX_CHUNKS * CHUNK * ps).mode(mode)).unwrap();
    let base = heap.range().start;
    let mut m = Model {
        pages: vec![
            Page::Free {
                zero: true,
                released: true,
                byte: 0
            };
            MAX_CHUNKS * CHUNK
        ],
        grown: 0,
        runs: Vec::new(),
        next_id: 0,
    };
    let result = (|| -> Result<(), TestCaseError> {
        let mut released_sum = 0u64;
        for (k, s) in steps.iter().enumerate() {
            match *s {
                Step::Alloc(n) => {
                    let want = m.alloc(n);
                    match (heap.alloc(n), want) {
                        (Ok(r), Some(p)) => {
                            prop_assert_eq!(r.addr, base + p * ps, "step {}: lowest fit", k);
                            let old = &m.pages[p..p + n];
                            let may_hold = old
                                .iter()
                                .any(|x| !matches!(x, Page::Free { zero: true, .. }));
                            prop_assert_eq!(r.needzero, may_hold, "step {}: needzero", k);
                            for (i, x) in old.iter().enumerate() {
                                // SAFETY: the run is ours.
                                let got = unsafe { *((r.addr + i * ps) as *const u8) };
                                let want = match *x {
                                    Page::Free { zero: true, .. } => 0,
                                    Page::Free { byte, .. } => byte,
                                    Page::Used { .. } => unreachable!(),
                                };
                                prop_assert_eq!(got, want, "step {}: page {} of the run", k, i);
                            }
                            let byte = (k % 250 + 1) as u8;
                            // SAFETY: the run is ours.
                            unsafe { (r.addr as *mut u8).write_bytes(byte, n * ps) };
                            let id = m.next_id;
                            m.next_id += 1;
                            for q in &mut m.pages[p..p + n] {
                                *q = Page::Used { id, byte };
                            }
                            m.runs.push((id, p, n, byte));
                        }
                        (Err(HeapError::OutOfMemory { .. }), None) => {}
                        (got, want) => {
                            prop_assert!(
                                false,
                                "step {}: alloc({}) = {:?}, model {:?}",
                                k,
                                n,
                                got,
                                want
                            )
                        }
                    }
                }
                Step::Free(i, part) => {
                    if m.runs.is_empty() {
                        continue;
                    }
                    let idx = i % m.runs.len();
                    let (id, p, n, byte) = m.runs[idx];
                    let take = part.map_or(n, |x| x.min(n));
                    heap.free(base + p * ps, take).unwrap();
                    for q in &mut m.pages[p..p + take] {
                        *q = Page::Free {
                            zero: false,
                            released: false,
                            byte,
                        };
                    }
                    if take == n {
                        m.runs.swap_remove(idx);
                    } else {
                        m.runs[idx] = (id, p + take, n - take, byte);
                    }
                }
                Step::BadFree(i) => {
                    let before = heap.stats();
                    let total = MAX_CHUNKS * CHUNK;
                    let p = i % total;
                    let e = heap.free(base + p * ps, 1);
                    match m.pages[p] {
                        Page::Used { .. } => {
                            // Not a bad free after all: undo it with an alloc-free pair below.
                            prop_assert!(e.is_ok());
                            // Re-allocate exactly that page is not possible in general: model it.
                            let byte = match m.pages[p] {
                                Page::Used { byte, .. } => byte,
                                _ => unreachable!(),
                            };
                            m.pages[p] = Page::Free {
                                zero: false,
                                released: false,
                                byte,
                            };
                            // Split the owning run.
                            if let Some(idx) = m.runs.iter().position(|r| p >= r.1 && p < r.1 + r.2)
                            {
                                let (id, rp, rn, b) = m.runs.swap_remove(idx);
                                if p > rp {
                                    m.runs.push((id, rp, p - rp, b));
                                }
                                if p + 1 < rp + rn {
                                    m.runs.push((m.next_id, p + 1, rp + rn - p - 1, b));
                                    m.next_id += 1;
                                }
                            }
                        }
                        Page::Free { .. } => {
                            prop_assert!(
                                matches!(e, Err(HeapError::NotAllocated { .. })),
                                "step {}: free of a free page: {:?}",
                                k,
                                e
                            );
                            prop_assert_eq!(
                                heap.stats(),
                                before,
                                "step {}: a refusal changes nothing",
                                k
                            );
                        }
                    }
                    let outside = heap.free(base + total * ps, 1);
                    prop_assert!(
                        matches!(outside, Err(HeapError::NotInHeap { .. })),
                        "outside"
                    );
                    let unaligned = heap.free(base + 1, 1);
                    prop_assert!(
                        matches!(unaligned, Err(HeapError::Unaligned { .. })),
                        "unaligned"
                    );
                    prop_assert!(
                        matches!(heap.free(base, 0), Err(HeapError::ZeroPages)),
                        "zero"
                    );
                }
                Step::Release(budget) => {
                    let rel = heap.release(budget * ps);
                    let want = match mode {
                        Mode::GoFaithful => m.release_go(budget),
                        _ => m.release_highest(budget),
                    };
                    prop_assert_eq!(rel.bytes, want * ps, "step {}: released", k);
                    released_sum += rel.bytes as u64;
                }
                Step::ReleaseAll => {
                    released_sum += heap.release_all().bytes as u64;
                    for p in 0..m.grown * CHUNK {
                        if let Page::Free { .. } = m.pages[p] {
                            m.pages[p] = Page::Free {
                                zero: true,
                                released: true,
                                byte: 0,
                            };
                        }
                    }
                }
            }
            // After every step: stats, and the kernel's view.
            let st = heap.stats();
            let used = m
                .pages
                .iter()
                .filter(|p| matches!(p, Page::Used { .. }))
                .count();
            let released = m.pages[..m.grown * CHUNK]
                .iter()
                .filter(|p| matches!(p, Page::Free { released: true, .. }))
                .count();
            prop_assert_eq!(st.mapped_bytes, m.grown * CHUNK * ps, "step {}", k);
            prop_assert_eq!(st.in_use_bytes, used * ps, "step {}", k);
            prop_assert_eq!(st.released_bytes, released * ps, "step {}", k);
            // The running total is the sum of what each release returned (it once re-added
            // its own running total after every batch).
            prop_assert_eq!(st.released_total_bytes, released_sum, "step {}", k);
            for (p, page) in m.pages[..m.grown * CHUNK].iter().enumerate() {
                let addr = base + p * ps;
                match *page {
                    Page::Free { released: true, .. } => {
                        prop_assert_eq!(
                            resident_pages(addr, ps),
                            0,
                            "step {}: page {} released",
                            k,
                            p
                        );
                    }
                    Page::Used { byte, .. } => {
                        // SAFETY: in use by the test.
                        let got = unsafe { *(addr as *const u8) };
                        prop_assert_eq!(got, byte, "step {}: page {} kept its contents", k, p);
                    }
                    Page::Free { .. } => {}
                }
            }
        }
        Ok(())
    })();
    // SAFETY: nothing uses the heap after this.
    unsafe { Heap::destroy(heap) };
    result
}

fn cases() -> u32 {
    std::env::var("OSMEM_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

#[test]
fn random_sequences_match_the_model_and_the_kernel() {
    for mode in [Mode::Batched, Mode::GoFaithful] {
        let mut runner = TestRunner::new(PtConfig {
            cases: cases(),
            failure_persistence: None,
            ..PtConfig::default()
        });
        runner
            .run(&proptest::collection::vec(step(), 1..40), |steps| {
                run_case(mode, &steps)
            })
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
}
