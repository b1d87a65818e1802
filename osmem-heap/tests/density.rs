//! The density gate (Go's `scavChunkHiOccFrac`): the scavenger leaves alone a chunk with
//! ≥ 96.875% of its pages in use — the Go-faithful mode if it was dense in this GC cycle or
//! the last one, the default if it is dense now — while forced releases (`release_all`) take
//! its free pages too. What went back is read from the kernel (mincore).

use osmem_heap::{Heap, HeapConfig, Mode};
use osmem_testkit::resident_pages;

const CHUNK: usize = 512;

struct Two {
    heap: &'static Heap,
    /// The first byte of chunk 0 and chunk 1 (each allocated whole, then partly freed).
    c0: usize,
    c1: usize,
    ps: usize,
}

impl Two {
    /// Two chunks, every page written; chunk 0 has pages 100..110 free (502 in use: dense),
    /// chunk 1 has 100..200 free (412: sparse). A memory limit gives the scavenger a goal
    /// larger than all the free pages.
    fn new(mode: Mode) -> Two {
        let ps = osmem::page_size();
        let heap = Heap::create(HeapConfig::new(4 * CHUNK * ps).mode(mode)).unwrap();
        let a = heap.alloc(CHUNK).unwrap();
        let b = heap.alloc(CHUNK).unwrap();
        assert_eq!(
            b.addr,
            a.addr + CHUNK * ps,
            "two whole chunks, lowest first"
        );
        for r in [a, b] {
            // SAFETY: our runs.
            unsafe { (r.addr as *mut u8).write_bytes(7, CHUNK * ps) };
        }
        heap.free(a.addr + 100 * ps, 10).unwrap();
        heap.free(b.addr + 100 * ps, 100).unwrap();
        heap.set_memory_limit(CHUNK * ps);
        Two {
            heap,
            c0: a.addr,
            c1: b.addr,
            ps,
        }
    }

    /// Resident pages among chunk `base`'s pages [a, b).
    fn resident(&self, base: usize, a: usize, b: usize) -> usize {
        resident_pages(base + a * self.ps, (b - a) * self.ps)
    }

    /// The scavenger toward its goal until it stops making progress.
    fn scavenge(&self) -> usize {
        let mut total = 0;
        loop {
            let r = self.heap.scavenge(usize::MAX);
            if r.bytes == 0 {
                return total;
            }
            total += r.bytes;
        }
    }
}

impl Drop for Two {
    fn drop(&mut self) {
        // SAFETY: the test is done with the heap.
        unsafe { Heap::destroy(self.heap) };
    }
}

fn the_scavenger_skips_a_dense_chunk_and_a_forced_release_does_not(mode: Mode) {
    let t = Two::new(mode);
    assert!(
        t.heap.scavenge_goal() >= 110 * t.ps,
        "a goal covering every free page"
    );
    let done = t.scavenge();
    assert_eq!(
        done,
        100 * t.ps,
        "{mode:?}: only the sparse chunk's free pages"
    );
    assert_eq!(
        t.resident(t.c1, 100, 200),
        0,
        "{mode:?}: sparse chunk's free pages gone"
    );
    assert_eq!(
        t.resident(t.c0, 100, 110),
        10,
        "{mode:?}: dense chunk's free pages kept"
    );
    let forced = t.heap.release_all();
    assert_eq!(forced.bytes, 10 * t.ps, "{mode:?}: release_all is forced");
    assert_eq!(t.resident(t.c0, 100, 110), 0);
    // In-use pages were never touched.
    assert_eq!(t.resident(t.c0, 0, 100) + t.resident(t.c0, 110, CHUNK), 502);
    assert_eq!(t.resident(t.c1, 0, 100) + t.resident(t.c1, 200, CHUNK), 412);
}

#[test]
fn batched_skips_a_dense_chunk_unless_forced() {
    the_scavenger_skips_a_dense_chunk_and_a_forced_release_does_not(Mode::Batched);
}

#[test]
fn go_faithful_skips_a_dense_chunk_unless_forced() {
    the_scavenger_skips_a_dense_chunk_and_a_forced_release_does_not(Mode::GoFaithful);
}

#[test]
fn go_faithful_remembers_the_last_cycle_and_the_default_looks_at_the_present() {
    for mode in [Mode::GoFaithful, Mode::Batched] {
        let t = Two::new(mode);
        t.scavenge();
        // A GC cycle ends; then chunk 0 empties to 402 in use: sparse now, dense last cycle.
        t.heap.cycle(64 << 20);
        t.heap.free(t.c0 + 200 * t.ps, 100).unwrap();
        t.scavenge();
        let kept = t.resident(t.c0, 100, 110) + t.resident(t.c0, 200, 300);
        match mode {
            // Go: dense in the last cycle → still skipped.
            Mode::GoFaithful => assert_eq!(kept, 110, "Go keeps the chunk for one more cycle"),
            // The present: 402 of 512 in use → released.
            _ => assert_eq!(kept, 0, "the default releases it now"),
        }
        // Another cycle: the chunk's history rolls over (not touched since: judged by the
        // present) and Go's mode releases it too.
        t.heap.cycle(64 << 20);
        t.scavenge();
        let kept = t.resident(t.c0, 100, 110) + t.resident(t.c0, 200, 300);
        assert_eq!(kept, 0, "{mode:?}: released once two cycles saw it sparse");
    }
}
