//! Concurrency stress of `Batch`: `THREADS` threads own interleaved pages of
//! ONE reservation (page `p` belongs to thread `p % THREADS`, so every leaf of osmem's
//! page-state tree is shared by all threads) and, round after round, each releases or faults all
//! of its `PER_THREAD` pages as single-page ranges through one default `Batch` (capacity
//! 1024: a full batch flushes from `push`, so each round is two flushes and process_madvise
//! calls of up to 1024 iovecs run on all threads at once), then makes them Ready again page by
//! page and rewrites them. Every unused advice and fault strategy gets a round.
//!
//! Checked: each batch report exactly; every own page's state after each phase; its contents
//! (the thread's data survives until released, then reads zero, or — after MADV_FREE — old
//! data or zero); and at the end, threads joined: every page's state and contents, `bytes_in`,
//! the kernel's view (`/proc/self/maps` all `rw-p`, no guard marker left in pagemap), and the
//! GLOBAL `osmem::stats()` deltas, every field, equal to the sums the threads expected.
//!
//! This file holds exactly ONE `#[test]` on purpose: the global counters are shared by all
//! tests of a process, so nothing else in this process may use osmem while it runs.

mod common;

use common::{
    assert_deltas, linux_6_14, read_marks, write_marks, Data, Expect, ModelEnv as Env, PM_GUARD_BIT,
};
use osmem::{Batch, BatchKind, FaultStrategy, Reservation, State, UnusedAdvice};
use osmem_testkit as tk;

const THREADS: usize = 4;
const PER_THREAD: usize = 1536;
const KINDS: [BatchKind; 8] = [
    BatchKind::Unused(UnusedAdvice::DontNeed),
    BatchKind::Fault(FaultStrategy::Guard),
    BatchKind::Unused(UnusedAdvice::Free),
    BatchKind::Fault(FaultStrategy::Protect),
    BatchKind::Unused(UnusedAdvice::Remap),
    BatchKind::Fault(FaultStrategy::Auto),
    BatchKind::Fault(FaultStrategy::Go),
    BatchKind::Fault(FaultStrategy::Remap),
];

/// Page `p` must hold `want` (bytes 0 and ps-1; zeros elsewhere). `Data::FreeOr`: MADV_FREE'd
/// data the kernel may or may not have reclaimed.
fn check_page(r: &Reservation, p: usize, ps: usize, want: Data, what: &str) {
    // SAFETY: the caller's model says the page is Ready.
    let ((first, last), mid) = unsafe { read_marks(r.as_ptr() as usize + p * ps, ps) };
    assert!(
        want.admits((first, last)) && mid,
        "{what}: page {p} reads {first}..{last} (middle zero: {mid}), want {want:?}"
    );
}

fn worker(t: usize, r: &Reservation, env: Env) -> Expect {
    let ps = env.ps;
    let own: Vec<usize> = (0..PER_THREAD).map(|i| i * THREADS + t).collect();
    let mut e = Expect::NONE;
    let opens = i64::from(env.pidfd_open);
    let n = PER_THREAD as i64;
    // 1024 + the rest: two flushes per round.
    let flushes = PER_THREAD.div_ceil(osmem::MAX_IOV) as i64;
    let mut data = 0u8;
    for (round, &kind) in KINDS.iter().enumerate() {
        let what = format!("thread {t} round {round} ({kind:?})");
        // Release or fault every own page as its own range.
        let mut b: Batch<'_> = Batch::new(kind);
        for &p in &own {
            // SAFETY: this thread's pages, nothing references them.
            unsafe { b.push(r, p * ps, ps) }
                .unwrap_or_else(|err| panic!("{what}: push {p}: {err}"));
        }
        // SAFETY: as above.
        let rep = unsafe { b.flush() };
        let free = kind == BatchKind::Unused(UnusedAdvice::Free);
        assert_eq!(
            (
                rep.ranges,
                rep.bytes,
                rep.failed,
                rep.per_range,
                rep.not_trapping,
                rep.not_zeroed
            ),
            (
                PER_THREAD,
                PER_THREAD * ps,
                0,
                0,
                0,
                if free { PER_THREAD } else { 0 }
            ),
            "{what}: {rep:?}"
        );
        e.add("batch_flushes", flushes);
        e.add("batch_ranges", n);
        let faulted = matches!(kind, BatchKind::Fault(_));
        match kind {
            BatchKind::Unused(UnusedAdvice::Remap) => e.add("mmap_calls", n),
            BatchKind::Unused(_) => {
                e.add("process_madvise_calls", flushes);
                e.add("pidfd_open_calls", opens * flushes);
            }
            // A batched DONTNEED, then batched guard markers.
            BatchKind::Fault(FaultStrategy::Guard | FaultStrategy::Auto) => {
                e.add("process_madvise_calls", 2 * flushes);
                e.add("pidfd_open_calls", opens * flushes);
            }
            BatchKind::Fault(FaultStrategy::Protect) => {
                e.add("process_madvise_calls", flushes);
                e.add("pidfd_open_calls", opens * flushes);
                e.add("mprotect_calls", n);
            }
            BatchKind::Fault(FaultStrategy::Go) => {
                e.add("mprotect_calls", n);
                e.add("madvise_calls", n);
                e.add("madv_dontneed", n);
            }
            BatchKind::Fault(_) => e.add("mmap_calls", n),
            other => unreachable!("a batch kind this test does not know: {other:?}"),
        }
        if faulted {
            e.add("fault_ops", n);
        } else {
            e.add("unused_ops", n);
            if env.harddecommit {
                e.add("mprotect_calls", n);
            }
        }
        let want = if faulted {
            State::Faulted
        } else {
            State::Prepared
        };
        for &p in &own {
            assert_eq!(r.state(p * ps), Some(want), "{what}: page {p}");
        }
        // Ready again, page by page: the released data is gone (or, after FREE, maybe not).
        for &p in &own {
            if faulted {
                r.map(p * ps, ps).unwrap();
                e.add("map_ops", 1);
                if matches!(
                    kind,
                    BatchKind::Fault(FaultStrategy::Guard | FaultStrategy::Auto)
                ) {
                    e.add("madvise_calls", 1);
                    e.add("madv_guard_remove", 1);
                } else {
                    e.add("mprotect_calls", 1);
                }
            }
            r.used(p * ps, ps).unwrap();
            e.add("used_ops", 1);
            if env.harddecommit && !faulted {
                e.add("mprotect_calls", 1);
            }
            if env.prefault {
                e.add("madvise_calls", 1);
                e.add("madv_populate_write", 1);
            }
            // Released: zero, except that MADV_FREE'd data may survive.
            if free {
                check_page(r, p, ps, Data::FreeOr(data), &what);
            } else {
                check_page(r, p, ps, Data::Zero, &what);
            }
        }
        // New data, tagged with the thread and round.
        data = (((round as u8) << 3) | (t as u8 + 1)).max(1);
        for &p in &own {
            // SAFETY: the page is Ready and this thread's.
            unsafe { write_marks(r.as_ptr() as usize + p * ps, ps, data) };
        }
        for &p in &own {
            assert_eq!(r.state(p * ps), Some(State::Ready), "{what}: page {p}");
            check_page(r, p, ps, Data::Val(data), &what);
        }
    }
    e
}

#[test]
fn batches_on_interleaved_pages_of_one_reservation() {
    // Also the one-time work (e.g. the anon-name downgrade) before the baseline.
    let env = linux_6_14();
    let ps = env.ps;
    let pages = THREADS * PER_THREAD;
    let r = Reservation::reserve_aligned(pages * ps, 2 << 20).unwrap();
    // Start with everything Ready and zero (one VMA: the threads' first batch splits nothing).
    r.map(0, pages * ps).unwrap();
    r.used(0, pages * ps).unwrap();
    let before = osmem::stats();
    let start = std::sync::Barrier::new(THREADS);
    let expects: Vec<Expect> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (r, start) = (&r, &start);
                sc.spawn(move || {
                    start.wait();
                    worker(t, r, env)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let after = osmem::stats();
    let mut exp = Expect::NONE;
    for e in &expects {
        exp.merge(e);
    }
    assert_deltas("after the threads", &before, &after, &exp);
    assert_eq!(r.bytes_in(State::Ready), (pages * ps) as u64);
    let last = KINDS.len() as u8 - 1;
    for p in 0..pages {
        assert_eq!(r.state(p * ps), Some(State::Ready), "page {p}");
        let data = ((last << 3) | ((p % THREADS) as u8 + 1)).max(1);
        check_page(&r, p, ps, Data::Val(data), "end");
    }
    // The kernel's view: all RW, no guard marker left behind.
    let base = r.as_ptr() as usize;
    let mut a = base;
    while a < base + pages * ps {
        let v = tk::vma_at(a).expect("region mapped");
        assert_eq!(v.perms_str(), "rw-p", "{v:?}");
        a = v.end;
    }
    use std::os::unix::fs::FileExt;
    let mut pm = vec![0u8; pages * 8];
    std::fs::File::open("/proc/self/pagemap")
        .unwrap()
        .read_exact_at(&mut pm, ((base / ps) * 8) as u64)
        .unwrap();
    for (p, e) in pm.chunks_exact(8).enumerate() {
        let v = u64::from_ne_bytes(e.try_into().unwrap());
        assert_eq!(v >> PM_GUARD_BIT & 1, 0, "page {p}: guard marker left");
    }
}
