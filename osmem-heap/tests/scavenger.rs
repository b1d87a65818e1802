//! The background scavenger against the kernel's view: after the live heap shrinks, resident
//! memory (mincore over the heap) comes down to the retain goal; the default (budget) pacer
//! gets there at once, Go's controller starts slow; stopping joins the thread. And the
//! pacers' arithmetic: the budget's cap, and Go's controller converging to its fraction.

use osmem_heap::{BudgetPacer, GoPacer, Heap, HeapConfig, Mode, BUDGET_WINDOW_NS};
use osmem_testkit::resident_pages;
use std::time::{Duration, Instant};

/// 64 MiB written, then all but 4 MiB freed. Returns the heap.
fn shrunk(mode: Mode) -> &'static Heap {
    let ps = osmem::page_size();
    let heap = Heap::create(HeapConfig::new(256 << 20).mode(mode)).unwrap();
    let runs: Vec<_> = (0..64).map(|_| heap.alloc(256).unwrap()).collect();
    for r in &runs {
        // SAFETY: our runs.
        unsafe { (r.addr as *mut u8).write_bytes(1, r.pages * ps) };
    }
    for r in &runs[4..] {
        heap.free(r.addr, r.pages).unwrap();
    }
    heap
}

fn resident(heap: &Heap) -> usize {
    let r = heap.range();
    resident_pages(r.start, r.len()) * osmem::page_size()
}

#[test]
fn the_default_scavenger_brings_memory_to_the_goal_at_once() {
    let heap = shrunk(Mode::Batched);
    assert_eq!(resident(heap), 64 << 20);
    let t = Instant::now();
    let s = heap.start_scavenger(0.01).unwrap();
    while heap.scavenge_goal() > 0 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let took = t.elapsed();
    s.stop();
    let res = resident(heap);
    assert!(res <= (4 << 20) + (4 << 20) / 10, "resident {res}");
    assert!(res >= 4 << 20, "live memory kept: {res}");
    // 60 MiB is well within the initial budget (200 ms on 2 CPUs): no waiting for pacing.
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let st = heap.stats();
    assert_eq!(st.background_released_bytes as usize, (64 << 20) - res);
    assert!(st.background_work_ns > 0);
    // SAFETY: the scavenger is stopped.
    unsafe { Heap::destroy(heap) };
}

#[test]
fn the_go_faithful_scavenger_releases_in_short_paced_bursts() {
    let heap = shrunk(Mode::GoFaithful);
    let s = heap.start_scavenger(0.01).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.stop();
    let released = (64 << 20) - resident(heap);
    let st = heap.stats();
    // One burst of ≥ 1 ms then a ~1 s sleep (the controller starts at its floor): some but
    // not all of the 60 MiB went back in the first 300 ms.
    assert!(released > 0, "{st:?}");
    assert_eq!(st.background_released_bytes as usize, released);
    assert!(
        heap.scavenge_goal() > 0,
        "Go's pacing is not done in 300 ms: {st:?}"
    );
    // SAFETY: the scavenger is stopped.
    unsafe { Heap::destroy(heap) };
}

#[test]
fn the_budget_is_capped_at_a_window_and_spent_at_once() {
    let mut p = BudgetPacer::new(0.01, 2);
    let cap = 0.02 * BUDGET_WINDOW_NS;
    assert_eq!(p.available_ns(), cap);
    p.accrue(1e12); // a long idle time accrues no more than the cap
    assert_eq!(p.available_ns(), cap);
    p.spend(cap);
    assert_eq!(p.available_ns(), 0.0);
    assert_eq!(p.wait_ns(1e6), 1e6 / 0.02);
    p.accrue(1e9);
    assert!((p.available_ns() - 0.02 * 1e9).abs() < 1.0);
}

#[test]
fn go_pacing_converges_to_its_fraction() {
    // Bursts of 1 ms on 2 CPUs: the controller must find the sleep that makes
    // worked / ((slept + worked) × 2) ≈ 1%, i.e. ~49 ms, starting from 1 s.
    let mut p = GoPacer::new(0.01);
    let mut slept = 0.0;
    for _ in 0..2000 {
        slept = p.sleep_ns(1e6);
        p.update(1e6, slept, 2);
    }
    let fraction = 1e6 / ((slept + 1e6) * 2.0);
    assert!(
        (fraction - 0.01).abs() < 0.002,
        "fraction {fraction}, sleep {slept}"
    );
}
