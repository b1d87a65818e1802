//! How long osmem makes a `fork()` wait: beside threads that release large ranges (each
//! transition a millisecond or more), fork 100 times and compare the time osmem's fork
//! handlers waited for transitions in flight (`Stats::fork_wait_ns`, per fork) with the
//! longest transition the threads made. The handlers wait until every transition another
//! thread has in flight settles, and new ones wait for the fork: so no fork should wait
//! longer than the longest transition.
//!
//! `cargo run --release -p osmem-bench --example fork_wait [-- MiB THREADS]` (default 16 MiB,
//! 2 threads).

use osmem::{Reservation, UnusedAdvice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("MiB THREADS"))
        .collect();
    let size = args.first().copied().unwrap_or(16) << 20;
    let threads = args.get(1).copied().unwrap_or(2);
    osmem::probe();
    let regions: Vec<Reservation> = (0..threads)
        .map(|_| Reservation::alloc(size).unwrap())
        .collect();
    let stop = AtomicBool::new(false);
    let longest = AtomicU64::new(0);
    let transitions = AtomicU64::new(0);
    let (mut waits, mut forks) = (Vec::new(), Vec::new());
    std::thread::scope(|s| {
        for r in &regions {
            let (stop, longest, transitions) = (&stop, &longest, &transitions);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: our own pages.
                    unsafe { r.as_ptr().write_bytes(1, size) };
                    let t = Instant::now();
                    // SAFETY: nothing references the range.
                    let _ = unsafe { r.unused_with(0, size, UnusedAdvice::DontNeed) }.unwrap();
                    longest.fetch_max(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    transitions.fetch_add(1, Ordering::Relaxed);
                    r.used(0, size).unwrap();
                }
            });
        }
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..100 {
            let before = osmem::stats().fork_wait_ns;
            let t = Instant::now();
            // SAFETY: the child exits at once.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: ends the child.
                unsafe { libc::_exit(0) };
            }
            forks.push(t.elapsed().as_secs_f64() * 1e3);
            waits.push((osmem::stats().fork_wait_ns - before) as f64 / 1e6);
            let mut st = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(pid, &mut st, 0) };
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let sorted = |v: &mut Vec<f64>| v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    sorted(&mut waits);
    sorted(&mut forks);
    let longest = longest.load(Ordering::Relaxed) as f64 / 1e6;
    println!(
        "{threads} threads releasing {} MiB each ({} transitions); 100 forks",
        size >> 20,
        transitions.load(Ordering::Relaxed)
    );
    println!(
        "osmem's wait per fork: median {:.3} ms, max {:.3} ms",
        waits[50], waits[99]
    );
    println!(
        "fork() in all:         median {:.3} ms, max {:.3} ms",
        forks[50], forks[99]
    );
    println!("longest transition:    {longest:.3} ms");
    println!(
        "longest wait / longest transition: {:.2} ({})",
        waits[99] / longest,
        if waits[99] <= longest {
            "no fork waited longer than the longest transition"
        } else {
            "a fork waited longer than the longest transition"
        }
    );
}
