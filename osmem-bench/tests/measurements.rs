//! The measurements added for `osmem bench` / `osmem report` measure what they say: checked
//! against the kernel's own view where there is one. No timing is asserted.

use osmem_bench::{
    contention, footprint, interleaved, tiers, vma_growth, Estimate, Flavour, Op, Worker,
};
use osmem_testkit::{resident_pages, vmas_in};
use std::time::Duration;

#[test]
fn interleaved_times_every_entry_every_round() {
    let ops = [
        (Op::FaultProtect, Flavour::Osmem),
        (Op::UnusedDontNeed, Flavour::Osmem),
        (Op::UnusedDontNeed, Flavour::Raw),
    ];
    let run = interleaved(
        &ops,
        16 * osmem::page_size(),
        5,
        false,
        Duration::from_secs(30),
    );
    assert_eq!(run.rounds, 5);
    for i in 0..ops.len() {
        assert_eq!(run.op_ns[i].len(), 5);
        assert!(run.op_ns[i].iter().all(|&t| t > 0), "entry {i} timed");
        assert_eq!(run.undo_ns[i].len(), 5);
        // A ratio of an entry with itself is exactly 1 in every round.
        let e = run.ratio(i, i);
        assert_eq!((e.lo, e.median, e.hi), (1.0, 1.0, 1.0));
    }
}

#[test]
fn vma_growth_counts_what_maps_shows() {
    let (region, chunk) = (8 << 20, 64 << 10);
    for op in [
        Op::FaultGuard,
        Op::FaultProtect,
        Op::FaultGo,
        Op::FaultRemap,
    ] {
        if !op.is_supported() {
            continue;
        }
        let g = vma_growth(op, region, chunk);
        // Every other chunk, starting with the second: 64 holes. Each splits its VMA in
        // three (+2), except the last, which ends where the mapping ends (+1).
        assert_eq!(g.faults, region / chunk / 2, "{}", op.name());
        let want = if op == Op::FaultGuard {
            0
        } else {
            2 * g.faults - 1
        };
        assert_eq!(g.added(), want, "{}", op.name());
    }
}

/// The same count, read independently: testkit's own maps parser on a region faulted the
/// way vma_growth faults it.
#[test]
fn protect_holes_split_twice_in_the_kernels_view() {
    let (region, chunk) = (4 << 20, 64 << 10);
    let r = osmem::Reservation::reserve_aligned(region, 2 << 20).unwrap();
    r.map(0, region).unwrap();
    r.used(0, region).unwrap();
    let (a, b) = (r.as_ptr() as usize, r.as_ptr() as usize + region);
    let before = vmas_in(a, b);
    for off in (chunk..region).step_by(2 * chunk) {
        // SAFETY: nothing references the region.
        let _ = unsafe { r.fault_with(off, chunk, osmem::FaultStrategy::Protect) }.unwrap();
    }
    assert_eq!(vmas_in(a, b) - before, 2 * (region / chunk / 2) - 1);
    let g = vma_growth(Op::FaultProtect, region, chunk);
    assert_eq!(g.added(), vmas_in(a, b) - before);
}

#[test]
fn footprint_sees_free_keep_rss_and_the_rest_drop_it() {
    let size = 16 * osmem::page_size();
    for op in Op::ALL {
        if !op.is_supported() {
            continue;
        }
        let f = footprint(op, size);
        assert_eq!(f.pages, 16);
        assert_eq!(f.resident_before, 16, "{}: populated first", op.name());
        if op == Op::UnusedFree {
            // MADV_FREE only marks the pages lazily freed: mincore still sees them.
            assert_eq!(f.resident_after, 16);
            assert!(!f.rss_honest());
        } else {
            assert_eq!(f.resident_after, 0, "{}", op.name());
        }
        let splits = matches!(op, Op::FaultProtect | Op::FaultGo | Op::FaultRemap);
        assert_eq!(f.vmas_added, if splits { 2 } else { 0 }, "{}", op.name());
    }
    // Cross-check the residency reading itself on a range we populate by hand.
    let r = osmem::Reservation::alloc(size).unwrap();
    unsafe { r.as_ptr().write_bytes(1, size) };
    assert_eq!(resident_pages(r.as_ptr() as usize, size), 16);
}

#[test]
fn contention_fills_every_round_and_the_control_is_its_own_reference() {
    for w in Worker::ALL {
        let c = contention(
            w,
            &[Op::FaultProtect, Op::UnusedFree],
            64 << 10,
            2,
            Duration::from_millis(5),
        );
        assert_eq!(c.rounds, 2);
        for i in 0..2 {
            assert_eq!(c.relative[i].len(), 2);
            assert!(c.relative[i].iter().all(|r| r.is_finite() && *r > 0.0));
            assert!(c.mutator_kept[i].iter().all(|r| r.is_finite() && *r > 0.0));
            assert!(c.worker_ops_per_s(i) > 0.0, "{}: the worker ran", w.name());
            assert!(
                c.mutator_ops_per_s(i) > 0.0,
                "{}: the mutator ran",
                w.name()
            );
        }
        // C M C M C per round: n + 1 control windows.
        assert_eq!(c.control_rate.len(), 2 * 3);
        assert_eq!(c.control_mutator_kept.len(), 2);
    }
}

#[test]
fn tiers_of_measured_ratios() {
    // Ratios straight from Estimate: a clear 2× difference ranks, 3% does not.
    let e = |v: f64| Estimate::of(&mut [v * 0.99, v, v * 1.01]);
    let r = [[1.0, 0.5, 0.485], [2.0, 1.0, 0.97], [2.06, 1.03, 1.0]];
    let t = tiers(&[0, 1, 2], |a, b| {
        e(r[a][b]).versus_one(osmem_bench::COST_GAP) == std::cmp::Ordering::Equal
    });
    assert_eq!(t, vec![vec![0], vec![1, 2]]);
}
