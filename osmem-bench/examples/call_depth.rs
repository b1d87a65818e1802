//! What one call frame costs on this machine: `madvise(DONTNEED)` of a page called through
//! 1, 3, 5 and 9 nested non-inlined functions, alternating, and the same chains with the
//! system call left out. osmem inlines its whole operation path because of this figure
//! (BENCHMARKS.md).
//!
//! `cargo run --release -p osmem-bench --example call_depth`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static SKIP_SYSCALL: AtomicBool = AtomicBool::new(false);

#[inline(never)]
fn d0(p: *mut u8, ps: usize) -> i32 {
    if SKIP_SYSCALL.load(Ordering::Relaxed) {
        return black_box(0);
    }
    // SAFETY: a page of this program's own private mapping.
    unsafe { libc::madvise(p.cast(), ps, libc::MADV_DONTNEED) }
}

macro_rules! nest {
    ($name:ident, $inner:ident) => {
        #[inline(never)]
        fn $name(p: *mut u8, ps: usize) -> i32 {
            black_box($inner(p, ps))
        }
    };
}
nest!(d1, d0);
nest!(d2, d1);
nest!(d3, d2);
nest!(d4, d3);
nest!(d5, d4);
nest!(d6, d5);
nest!(d7, d6);
nest!(d8, d7);

type Chain = fn(*mut u8, usize) -> i32;

fn main() {
    let ps = osmem::page_size();
    // SAFETY: a fresh private anonymous mapping, unmapped at exit.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            1 << 20,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: inside the mapping.
    let p = unsafe { p.cast::<u8>().add(1 << 19) };
    let chains: [(usize, Chain); 4] = [(1, d0), (3, d2), (5, d4), (9, d8)];
    let n = 20_000;
    println!(
        "| frames | added over 1 frame, with madvise (ns) | added, without the system call (ns) |"
    );
    println!("|---:|---:|---:|");
    let mut rows = [[0i64; 2]; 4];
    for (col, skip) in [false, true].into_iter().enumerate() {
        SKIP_SYSCALL.store(skip, Ordering::Relaxed);
        // One round: every chain once, in turn; `n` rounds.
        let t: Vec<[i64; 4]> = (0..n)
            .map(|_| {
                chains.map(|(_, f)| {
                    // SAFETY: inside the mapping; refaults the page the last call released.
                    unsafe { p.write_volatile(1) };
                    let s = Instant::now();
                    f(p, ps);
                    s.elapsed().as_nanos() as i64
                })
            })
            .collect();
        for k in 1..chains.len() {
            let mut d: Vec<i64> = t.iter().map(|r| r[k] - r[0]).collect();
            d.sort_unstable();
            rows[k][col] = d[n / 2];
        }
    }
    for (k, (frames, _)) in chains.iter().enumerate().skip(1) {
        println!("| {frames} | {} | {} |", rows[k][0], rows[k][1]);
    }
}
