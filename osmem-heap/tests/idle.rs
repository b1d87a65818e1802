//! The scavenger's manners when there is nothing to do: at most one wakeup a second, counted
//! by the kernel (the scavenger thread's `voluntary_ctxt_switches` in
//! `/proc/self/task/<tid>/status`); and work wakes it at once (a free past what it acts on in
//! the default mode, a GC cycle in the Go-faithful mode). Each case runs in a child process
//! of this test binary, so its scavenger is the only one there.

use osmem_heap::{Heap, HeapConfig, Mode};
use std::time::{Duration, Instant};

const ROLE: &str = "OSMEM_HEAP_IDLE_ROLE";

/// The voluntary context switches of the thread named `osmem-scavenger`.
fn scavenger_switches() -> u64 {
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == "osmem-scavenger" {
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no scavenger thread");
}

fn child(mode: Mode) -> String {
    let h = Heap::create(HeapConfig::new(256 << 20).mode(mode)).unwrap();
    if mode == Mode::GoFaithful {
        h.cycle(64 << 20); // a GC has run: the Go-faithful scavenger parks until the next
    }
    let s = h.start_scavenger(0.01).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let v0 = scavenger_switches();
    std::thread::sleep(Duration::from_secs(2));
    let idle = scavenger_switches() - v0;
    // Work: 32 MiB freed with nothing else in use (and, Go-faithful, a cycle).
    let pages = (32 << 20) / h.page_size();
    let r = h.alloc(pages).unwrap();
    unsafe { (r.addr as *mut u8).write_bytes(1, pages * h.page_size()) };
    let before = h.stats().background_released_bytes;
    let t = Instant::now();
    h.free(r.addr, pages).unwrap();
    if mode == Mode::GoFaithful {
        h.cycle(1 << 20);
    }
    while h.stats().background_released_bytes == before && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_micros(200));
    }
    let woke_ms = t.elapsed().as_secs_f64() * 1e3;
    s.stop();
    unsafe { Heap::destroy(h) };
    format!("idle_wakeups={idle} woke_ms={woke_ms:.1}")
}

fn run(test: &str, mode: &str) -> (u64, f64) {
    let kv = osmem_testkit::rerun_self(test, &[(ROLE, mode)], &[]);
    eprintln!("{mode}: {kv:?}");
    (
        kv["idle_wakeups"].parse().unwrap(),
        kv["woke_ms"].parse().unwrap(),
    )
}

fn check(test: &str, mode: Mode, name: &str) {
    if let Ok(m) = std::env::var(ROLE) {
        if m == name {
            println!("RESULT {}", child(mode));
        }
        return;
    }
    let (idle, woke_ms) = run(test, name);
    // 2 s idle: at most one wakeup a second (and one for the measurement's edges).
    assert!(
        idle <= 3,
        "{name}: {idle} wakeups in 2 s with nothing to do"
    );
    // Woken by the work itself, not by the one-second timeout (generous for a loaded CI
    // machine: a timeout would take up to 1000 ms).
    assert!(woke_ms < 500.0, "{name}: work seen after {woke_ms} ms");
}

#[test]
fn an_idle_default_scavenger_sleeps_and_a_free_wakes_it() {
    check(
        "an_idle_default_scavenger_sleeps_and_a_free_wakes_it",
        Mode::Batched,
        "batched",
    );
}

#[test]
fn an_idle_go_faithful_scavenger_sleeps_and_a_cycle_wakes_it() {
    check(
        "an_idle_go_faithful_scavenger_sleeps_and_a_cycle_wakes_it",
        Mode::GoFaithful,
        "go",
    );
}
