//! Stats against what the releases returned and what the kernel holds, on a release that
//! takes more than one batch (2048 scattered one-page runs: two `process_madvise` calls of
//! 1024 runs in the default mode, 2048 `madvise` calls in Go-faithful mode).

use osmem_heap::{Heap, HeapConfig, Mode};
use osmem_testkit::resident_pages;

fn scattered(mode: Mode) {
    let ps = osmem::page_size();
    let heap = Heap::create(HeapConfig::new(16 << 20).mode(mode)).unwrap();
    let r = heap.alloc(4096).unwrap();
    // SAFETY: our run.
    unsafe { (r.addr as *mut u8).write_bytes(3, 4096 * ps) };
    for k in (0..4096).step_by(2) {
        heap.free(r.addr + k * ps, 1).unwrap();
    }
    let before = heap.stats();
    let rel = heap.release_all();
    let st = heap.stats();
    assert_eq!(rel.bytes, 2048 * ps, "{mode:?}");
    assert_eq!(rel.runs, 2048, "{mode:?}");
    let calls = match mode {
        Mode::GoFaithful => 2048,
        _ => 2,
    };
    assert_eq!(rel.calls, calls, "{mode:?}: system calls");
    assert_eq!(
        st.released_total_bytes - before.released_total_bytes,
        rel.bytes as u64,
        "{mode:?}: the running total counts each batch once"
    );
    assert_eq!(st.release_runs - before.release_runs, 2048);
    assert_eq!(st.release_calls - before.release_calls, calls as u64);
    // The kernel holds exactly the in-use pages of the run.
    assert_eq!(
        resident_pages(r.addr, 4096 * ps),
        2048,
        "{mode:?}: kernel's view"
    );
    for k in (1..4096).step_by(2) {
        // SAFETY: in-use pages of our run.
        assert_eq!(unsafe { *((r.addr + k * ps) as *const u8) }, 3);
    }
    // SAFETY: done.
    unsafe { Heap::destroy(heap) };
}

#[test]
fn a_release_of_many_batches_is_counted_exactly_batched() {
    scattered(Mode::Batched);
}

#[test]
fn a_release_of_many_runs_is_counted_exactly_go_faithful() {
    scattered(Mode::GoFaithful);
}
