//! Checks that need the process to themselves. This file holds ONE test on purpose: each
//! integration-test file is its own process, so nothing else calls osmem or starts a sibling
//! thread while it runs, and osmem's global counters move by exactly what this test does.

use osmem_bench::{batch_vs_loop, paired, Op, Sibling};

fn sibling_threads() -> usize {
    // The kernel truncates thread names to 15 bytes.
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.trim_end() == "osmem-bench-sib")
        .count()
}

#[test]
fn each_flavour_goes_through_exactly_the_calls_it_claims() {
    // The sibling exists (as a thread of this process) while the guard lives, and is joined
    // when it is dropped.
    assert_eq!(sibling_threads(), 0);
    let s = Sibling::start();
    assert_eq!(sibling_threads(), 1);
    assert!(s.stop() > 0, "the sibling spun");
    assert_eq!(sibling_threads(), 0);

    // osmem probes the kernel (with madvise calls of its own) on first use: get that done
    // before counting.
    let _ = osmem::probe();
    let _ = osmem::config();

    // paired: 1 warm-up + 3 measured osmem iterations, each one osmem unused; the raw
    // iterations call libc directly and must not show up in osmem's counters at all.
    let before = osmem::stats();
    paired(Op::UnusedDontNeed, 64 << 10, 3, false);
    let after = osmem::stats();
    assert_eq!(after.unused_ops - before.unused_ops, 4);
    assert_eq!(after.madv_dontneed - before.madv_dontneed, 4);
    assert_eq!(after.process_madvise_calls, before.process_madvise_calls);

    // batch_vs_loop: 1 warm-up + 3 iterations of each method over 16 ranges. osmem's batch is
    // one process_madvise per flush (16 ranges ≤ 1024) and no madvise; osmem's loop is one
    // madvise(DONTNEED) per range. The raw methods bypass osmem.
    let before = osmem::stats();
    let r = batch_vs_loop(16, osmem::page_size(), 3, false);
    let after = osmem::stats();
    assert_eq!(r.iters, 3);
    assert_eq!(after.batch_flushes - before.batch_flushes, 4);
    assert_eq!(
        after.process_madvise_calls - before.process_madvise_calls,
        4
    );
    assert_eq!(after.madv_dontneed - before.madv_dontneed, 4 * 16);
    assert_eq!(after.unused_ops - before.unused_ops, 2 * 4 * 16);
    // Nothing fell back to the per-range chain.
    assert_eq!(after.fallback_batch_range, before.fallback_batch_range);
}
