//! Go's scavenger cases, written anew as scenarios on one chunk (512 pages: one huge page):
//! the Go-faithful mode releases one candidate per call — the run ending at the highest free,
//! unreleased page, at most one 64 KiB quantum of it — grown to the whole huge page only
//! when the whole huge page is free and unreleased. Which pages went back is read from the
//! kernel (mincore), not from the heap.

// One-range slices are what these scenarios free (the lint guards against `[a..b]` meant as
// a list of numbers).
#![allow(clippy::single_range_in_vec_init)]

use osmem_heap::{Heap, HeapConfig, Mode};
use osmem_testkit::resident_pages;

const CHUNK: usize = 512;

/// A one-chunk heap, every page written; the pages in `free` freed (still resident); then one
/// Go-faithful step of one quantum. Returns (pages released per the kernel, bytes reported,
/// calls).
fn one_step(free: &[std::ops::Range<usize>]) -> (Vec<usize>, usize, usize) {
    let ps = osmem::page_size();
    let heap = Heap::create(HeapConfig::new(CHUNK * ps).mode(Mode::GoFaithful)).unwrap();
    let r = heap.alloc(CHUNK).unwrap();
    // SAFETY: the whole chunk is ours.
    unsafe { (r.addr as *mut u8).write_bytes(1, CHUNK * ps) };
    for f in free {
        heap.free(r.addr + f.start * ps, f.len()).unwrap();
    }
    let quantum = (64 << 10) / ps;
    let rel = heap.release(quantum * ps);
    let gone: Vec<usize> = (0..CHUNK)
        .filter(|&p| resident_pages(r.addr + p * ps, ps) == 0)
        .collect();
    // SAFETY: done.
    unsafe { Heap::destroy(heap) };
    (gone, rel.bytes / ps, rel.calls)
}

fn range(a: usize, b: usize) -> Vec<usize> {
    (a..b).collect()
}

#[test]
fn a_whole_free_huge_page_goes_out_whole_in_one_call() {
    let (gone, pages, calls) = one_step(&[0..CHUNK]);
    assert_eq!((gone, pages, calls), (range(0, CHUNK), CHUNK, 1));
}

#[test]
fn free_at_the_top_releases_one_quantum_from_the_top() {
    let (gone, pages, calls) = one_step(&[300..CHUNK]);
    let q = (64 << 10) / osmem::page_size();
    assert_eq!((gone, pages, calls), (range(CHUNK - q, CHUNK), q, 1));
}

#[test]
fn free_in_the_middle_releases_the_top_of_that_run() {
    let (gone, pages, _) = one_step(&[100..300]);
    let q = (64 << 10) / osmem::page_size();
    assert_eq!((gone, pages), (range(300 - q, 300), q));
}

#[test]
fn free_at_the_bottom_is_not_grown_to_the_huge_page() {
    let (gone, pages, _) = one_step(&[0..200]);
    let q = (64 << 10) / osmem::page_size();
    assert_eq!((gone, pages), (range(200 - q, 200), q));
}

#[test]
fn all_but_the_top_page_free_is_not_grown_either() {
    // The candidate ends below the huge page's end: Go does not grow it.
    let (gone, pages, _) = one_step(&[0..CHUNK - 1]);
    let q = (64 << 10) / osmem::page_size();
    assert_eq!((gone, pages), (range(CHUNK - 1 - q, CHUNK - 1), q));
}

#[test]
fn short_runs_are_released_highest_first_until_the_quantum_is_spent() {
    // 3 pages, then the next candidate (3 more): one madvise each, as Go's scavenge loop.
    let (gone, pages, calls) = one_step(&[40..43, 500..503]);
    let mut want = range(40, 43);
    want.extend(500..503);
    assert_eq!((gone, pages, calls), (want, 6, 2));
}

/// The default (batched) mode keeps the same rule: a wholly free, unreleased chunk goes out
/// whole even when the budget asks for less; with one page of it in use, exactly the budget
/// from the top.
#[test]
fn the_default_mode_never_splits_a_free_huge_page_either() {
    let ps = osmem::page_size();
    let q = (64 << 10) / ps;
    for keep_one in [false, true] {
        let heap = Heap::create(HeapConfig::new(CHUNK * ps)).unwrap();
        let r = heap.alloc(CHUNK).unwrap();
        // SAFETY: the whole chunk is ours.
        unsafe { (r.addr as *mut u8).write_bytes(1, CHUNK * ps) };
        let from = usize::from(keep_one);
        heap.free(r.addr + from * ps, CHUNK - from).unwrap();
        let rel = heap.release(q * ps);
        let gone: Vec<usize> = (0..CHUNK)
            .filter(|&p| resident_pages(r.addr + p * ps, ps) == 0)
            .collect();
        let want = if keep_one {
            range(CHUNK - q, CHUNK)
        } else {
            range(0, CHUNK)
        };
        assert_eq!(rel.bytes, want.len() * ps, "keep_one {keep_one}: {rel:?}");
        assert_eq!(gone, want, "keep_one {keep_one}");
        // SAFETY: done.
        unsafe { Heap::destroy(heap) };
    }
}
