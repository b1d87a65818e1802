//! The measured operations really happen: checked against the kernel's view (mincore, smaps,
//! maps, a forked child touching the range), not against osmem's bookkeeping. No timing is
//! asserted anywhere: performance goals live in the benchmarks.

use osmem_bench::{
    batch_vs_loop, batch_vs_loop_op, paired, paired_within, BatchBench, BatchOp, Flavour, Method,
    Op, OpBench, MIN_ITERS, PAD,
};
use osmem_testkit::{
    resident_pages, smaps_at, touch_in_child, vmas_in, Touch, SEGV_ACCERR, SEGV_MAPERR,
};
use std::time::Duration;

fn ps() -> usize {
    osmem::page_size()
}

/// How a touch of a range left by `op` must end.
fn expected_touch(op: Op) -> Touch {
    match op {
        // Guard markers answer with "no mapping here"; PROT_NONE with "access denied".
        Op::FaultGuard => Touch::Segv {
            si_code: SEGV_MAPERR,
        },
        Op::FaultProtect | Op::FaultGo | Op::FaultRemap => Touch::Segv {
            si_code: SEGV_ACCERR,
        },
        Op::UnusedFree | Op::UnusedDontNeed | Op::UnusedRemap => Touch::Ok,
    }
}

/// VMAs the op adds while applied.
fn expected_new_vmas(op: Op) -> usize {
    match op {
        Op::FaultProtect | Op::FaultGo | Op::FaultRemap => 2,
        Op::FaultGuard | Op::UnusedFree | Op::UnusedDontNeed | Op::UnusedRemap => 0,
    }
}

#[test]
fn every_op_in_both_flavours_does_its_work_and_restores_the_range() {
    let size = 16 * ps();
    let pages = size / ps();
    for op in Op::ALL {
        if !op.is_supported() {
            eprintln!("skipped {}: not supported by this kernel", op.name());
            continue;
        }
        for flavour in Flavour::ALL {
            let what = format!("{} {}", op.name(), flavour.name());
            let mut b = OpBench::new(size).unwrap();
            let start = b.region().as_ptr() as usize;
            let end = start + b.region().len();
            let vmas_before = vmas_in(start, end);

            b.prepare();
            // The populate step makes every page of the range resident: the op has real
            // pages to drop, as in a heap.
            assert_eq!(resident_pages(b.addr(), size), pages, "{what}: populated");

            let t = b.apply(op, flavour);
            assert!(t > Duration::ZERO, "{what}: timed");
            // The range sits inside a larger mapping (PAD on each side), as a span in a heap
            // arena: protection changes split that mapping in three, guard markers and
            // madvise do not, and a RW remap merges straight back into its neighbours.
            assert_eq!(
                vmas_in(start, end) - vmas_before,
                expected_new_vmas(op),
                "{what}: VMAs while applied"
            );
            // A touch in a child shows whether the kernel now traps the range, and how.
            assert_eq!(
                touch_in_child(b.addr(), false),
                expected_touch(op),
                "{what}: access"
            );
            match op {
                // MADV_FREE keeps RSS; the kernel marks the pages lazily freed instead.
                Op::UnusedFree => {
                    let s = smaps_at(b.addr()).unwrap();
                    assert!(
                        s.lazy_free_kb * 1024 >= size as u64,
                        "{what}: LazyFree {} kB",
                        s.lazy_free_kb
                    );
                }
                // Every other op drops the pages at once.
                _ => assert_eq!(resident_pages(b.addr(), size), 0, "{what}: dropped"),
            }

            b.restore();
            // Usable again, and the VMA pieces merged back: iterations do not accumulate
            // VMAs (or they would measure a different mapping each time).
            assert_eq!(
                touch_in_child(b.addr(), true),
                Touch::Ok,
                "{what}: restored"
            );
            assert_eq!(vmas_in(start, end), vmas_before, "{what}: VMAs merged back");
            assert_eq!(
                b.region().state(PAD),
                Some(osmem::State::Ready),
                "{what}: osmem's table"
            );
            // And the next iteration can run.
            b.once(op, flavour);
        }
    }
}

#[test]
fn paired_gives_positive_medians_and_finite_ratios() {
    for op in Op::ALL.into_iter().filter(|o| o.is_supported()) {
        for size in [4 << 10, 64 << 10] {
            let p = paired(op, size, 5, false);
            assert_eq!(p.pairs, 5);
            assert!(p.osmem_ns > 0.0 && p.raw_ns > 0.0, "{p:?}");
            assert!(p.ratio.is_finite() && p.ratio > 0.0, "{p:?}");
            assert!(p.pair_ratio.is_finite() && p.pair_ratio > 0.0, "{p:?}");
            assert_eq!((p.op, p.size, p.sibling), (op, size, false));
        }
    }
    let p = paired(Op::UnusedDontNeed, 64 << 10, 5, true);
    assert!(p.sibling && p.ratio.is_finite() && p.ratio > 0.0, "{p:?}");
}

#[test]
fn paired_stops_at_its_time_budget() {
    // A million pairs would take seconds; the budget ends it after MIN_ITERS or more.
    let p = paired_within(
        Op::UnusedDontNeed,
        4 << 10,
        1_000_000,
        false,
        Duration::from_millis(20),
    );
    assert!(p.pairs >= MIN_ITERS && p.pairs < 1_000_000, "{p:?}");
}

#[test]
fn every_batch_method_releases_exactly_the_ranges() {
    let (ranges, size) = (32, ps());
    for op in BatchOp::ALL {
        if !op.is_supported() {
            continue;
        }
        for method in Method::ALL {
            let what = format!("{} {}", op.name(), method.name());
            let mut b = BatchBench::new(op, ranges, size).unwrap();
            let base = b.region().as_ptr() as usize;
            b.prepare();
            assert_eq!(resident_pages(base, b.region().len()), 2 * ranges, "{what}");
            b.apply(method);
            for i in 0..ranges {
                let (range, gap) = (base + b.offset(i), base + b.offset(i) + size);
                assert_eq!(resident_pages(range, size), 0, "{what}: range {i} dropped");
                // The chunk between two ranges is live data: it must be untouched.
                assert_eq!(resident_pages(gap, size), 1, "{what}: gap {i} kept");
            }
            if op == BatchOp::FaultGuard {
                let t = touch_in_child(base + b.offset(ranges - 1), false);
                assert_eq!(
                    t,
                    Touch::Segv {
                        si_code: SEGV_MAPERR
                    },
                    "{what}: guarded"
                );
            }
            b.restore();
            assert_eq!(
                touch_in_child(base + b.offset(ranges - 1), true),
                Touch::Ok,
                "{what}: restored"
            );
            assert_eq!(b.region().state(0), Some(osmem::State::Ready), "{what}");
        }
    }
}

#[test]
fn batch_vs_loop_gives_positive_medians_and_finite_speedups() {
    for sibling in [false, true] {
        let r = batch_vs_loop(64, ps(), 3, sibling);
        assert_eq!(
            (r.iters, r.sibling, r.op),
            (3, sibling, BatchOp::UnusedDontNeed)
        );
        for v in [r.batch_ns, r.loop_ns, r.raw_batch_ns, r.raw_loop_ns] {
            assert!(v > 0.0, "{r:?}");
        }
        assert!(r.speedup.is_finite() && r.raw_speedup.is_finite(), "{r:?}");
    }
    if BatchOp::FaultGuard.is_supported() {
        let r = batch_vs_loop_op(BatchOp::FaultGuard, 16, 16 * ps(), 3, false);
        assert!(r.speedup.is_finite() && r.speedup > 0.0, "{r:?}");
    }
}

#[test]
fn bad_sizes_are_errors_not_panics() {
    assert!(OpBench::new(0).is_err());
    assert!(OpBench::new(ps() + 1).is_err());
    assert!(BatchBench::new(BatchOp::UnusedDontNeed, 4, 100).is_err());
    assert!(BatchBench::new(BatchOp::UnusedDontNeed, usize::MAX, ps()).is_err());
}
