//! One round of the A/B measurements `scripts/ab.sh` runs against two builds of osmem (this
//! tree and an earlier commit), alternately: osmem's own cost on its common paths, and how
//! long a `fork()` takes beside transitions in flight. It uses only API both builds have.
//!
//! `cargo run --release -p osmem-bench --example ab` prints one line per figure:
//! `name value unit`. Compare the figures of two builds run on the same machine in the same
//! session (`scripts/ab.sh`), never absolute values across sessions.

use osmem::{Batch, BatchKind, FaultStrategy, Reservation, UnusedAdvice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn ps() -> usize {
    osmem::page_size()
}

/// The best of `rounds` timings of `f`, per op (`f` returns the ops it did).
fn best(rounds: usize, mut f: impl FnMut() -> (Duration, usize)) -> f64 {
    (0..rounds)
        .map(|_| {
            let (d, n) = f();
            d.as_nanos() as f64 / n as f64
        })
        .fold(f64::MAX, f64::min)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    osmem::probe();
    // `used` of a page that is Ready already: osmem's bookkeeping alone, no system call.
    let r = Reservation::alloc(64 * ps()).unwrap();
    let used_ready = best(7, || {
        let n = 1_000_000;
        let t = Instant::now();
        for i in 0..n {
            r.used((i % 64) * ps(), ps()).unwrap();
        }
        (t.elapsed(), n)
    });
    println!("used_ready_4k {used_ready:.2} ns");
    let state = best(7, || {
        let n = 1_000_000;
        let mut acc = 0usize;
        let t = Instant::now();
        for i in 0..n {
            acc += r.state((i % 64) * ps()).unwrap() as usize;
        }
        std::hint::black_box(acc);
        (t.elapsed(), n)
    });
    println!("state {state:.2} ns");
    // `used` of a Prepared page of a fragmented map: a claim and a settle, no system call.
    let claim_settle = best(5, || {
        let pages = 1 << 15;
        let q = Reservation::reserve(pages * ps()).unwrap();
        q.map(0, pages * ps()).unwrap();
        let t = Instant::now();
        for i in (0..pages).step_by(2) {
            q.used(i * ps(), ps()).unwrap();
        }
        (t.elapsed(), pages / 2)
    });
    println!("used_prepared_fragmented_4k {claim_settle:.2} ns");
    // Release and reuse, through the system call paths: on pages never touched (the system
    // call finds nothing to drop: osmem's share is largest), and on pages written before
    // each release (the usual case).
    for (name, pages, touch) in [
        ("unused_used_untouched_4k", 1, false),
        ("unused_used_untouched_64k", 16, false),
        ("write_unused_used_4k", 1, true),
        ("write_unused_used_64k", 16, true),
    ] {
        let a = Reservation::alloc(64 * pages * ps()).unwrap();
        let v = best(5, || {
            let n = 4000;
            let t = Instant::now();
            for i in 0..n {
                let o = (i % 64) * pages * ps();
                if touch {
                    for p in 0..pages {
                        // SAFETY: a Ready page of ours.
                        unsafe { a.as_ptr().add(o + p * ps()).write_volatile(1) };
                    }
                }
                // SAFETY: nothing references the range.
                let _ = unsafe { a.unused_with(o, pages * ps(), UnusedAdvice::DontNeed) }.unwrap();
                a.used(o, pages * ps()).unwrap();
            }
            (t.elapsed(), n)
        });
        println!("{name} {v:.1} ns");
    }
    let g = Reservation::alloc(64 * 16 * ps()).unwrap();
    let fault_map = best(5, || {
        let n = 4000;
        let t = Instant::now();
        for i in 0..n {
            let o = (i % 64) * 16 * ps();
            // SAFETY: nothing references the range.
            let _ = unsafe { g.fault_with(o, 16 * ps(), FaultStrategy::Guard) }.unwrap();
            g.map(o, 16 * ps()).unwrap();
            g.used(o, 16 * ps()).unwrap();
        }
        (t.elapsed(), n)
    });
    println!("fault_map_used_64k {fault_map:.1} ns");
    // A batch of 1024 scattered pages: push every range and flush.
    let b = Reservation::alloc(2048 * ps()).unwrap();
    let batch = best(9, || {
        // SAFETY: our own pages, refilled below.
        unsafe { b.as_ptr().write_bytes(1, 2048 * ps()) };
        let t = Instant::now();
        let mut q: Batch = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
        for i in 0..1024 {
            // SAFETY: nothing references the pages.
            unsafe { q.push(&b, 2 * i * ps(), ps()) }.unwrap();
        }
        // SAFETY: as above.
        let rep = unsafe { q.flush() };
        let d = t.elapsed();
        assert_eq!(rep.ranges, 1024);
        for i in 0..1024 {
            b.used(2 * i * ps(), ps()).unwrap();
        }
        (d, 1)
    });
    println!("batch_1024x4k {:.1} us", batch / 1000.0);
    // fork() beside two threads releasing and reusing 16 MiB ranges (each release ~1 ms):
    // how long the fork takes, and the longest transition the threads saw.
    let big = 16 << 20;
    let regions: Vec<Reservation> = (0..2).map(|_| Reservation::alloc(big).unwrap()).collect();
    let stop = AtomicBool::new(false);
    let longest = AtomicU64::new(0);
    let mut forks = Vec::new();
    std::thread::scope(|s| {
        for r in &regions {
            let (stop, longest) = (&stop, &longest);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: our own pages, rewritten below.
                    unsafe { r.as_ptr().write_bytes(1, big) };
                    let t = Instant::now();
                    // SAFETY: nothing references the range.
                    let _ = unsafe { r.unused_with(0, big, UnusedAdvice::DontNeed) }.unwrap();
                    longest.fetch_max(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    r.used(0, big).unwrap();
                }
            });
        }
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..100 {
            let t = Instant::now();
            // SAFETY: the child exits at once.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: ends the child.
                unsafe { libc::_exit(0) };
            }
            forks.push(t.elapsed().as_secs_f64() * 1e3);
            let mut st = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let max = forks.iter().cloned().fold(0.0, f64::max);
    println!("fork_median {:.3} ms", median(&mut forks));
    println!("fork_max {max:.3} ms");
    println!(
        "transition_max {:.3} ms",
        longest.load(Ordering::Relaxed) as f64 / 1e6
    );
}
