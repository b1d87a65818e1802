//! What keeping Ready's promise after `MADV_FREE` costs.
//!
//! A range released with `MADV_FREE` keeps its pages until the kernel needs them; a page the
//! kernel has not seen written since may still be dropped later. `used` therefore writes one
//! byte of each such page (an atomic compare-exchange that leaves the byte as it is), which
//! ends the lazy free. This measures that write against what the program would pay otherwise:
//! the cycle "release, `used`, write every page again" with `MADV_FREE` (pages kept, one
//! atomic per page in `used`, no fault on the rewrite) and with `MADV_DONTNEED` (nothing in
//! `used`, one page fault per page on the rewrite), alternating on the same range.

use crate::median;
use osmem::{Reservation, UnusedAdvice};
use std::time::Instant;

/// One size's figures, medians in ns.
#[derive(Clone, Copy, Debug)]
pub struct LazyFree {
    /// Bytes per range.
    pub size: usize,
    /// Cycles measured per advice.
    pub iters: usize,
    /// `unused_with(Free)` alone.
    pub free_ns: f64,
    /// `used` after it: one write per page.
    pub used_after_free_ns: f64,
    /// Release + `used` + a write to every page, with `MADV_FREE`.
    pub cycle_free_ns: f64,
    /// `unused_with(DontNeed)` alone.
    pub dontneed_ns: f64,
    /// `used` after it (no system call, no write).
    pub used_after_dontneed_ns: f64,
    /// Release + `used` + a write to every page, with `MADV_DONTNEED` (a fault per page).
    pub cycle_dontneed_ns: f64,
}

/// Measure `iters` cycles of each advice on one `size`-byte range (page multiple).
///
/// ```
/// let r = osmem_bench::free_then_used(64 << 10, 20);
/// assert!(r.used_after_free_ns > 0.0 && r.cycle_dontneed_ns > 0.0);
/// ```
pub fn free_then_used(size: usize, iters: usize) -> LazyFree {
    let ps = osmem::page_size();
    let r = Reservation::alloc(size).expect("a measurement region");
    let base = r.as_ptr();
    let write_all = |v: u8| {
        for off in (0..size).step_by(ps) {
            // SAFETY: inside the Ready region we own.
            unsafe { base.add(off).write_volatile(v) };
        }
    };
    let mut s: [Vec<u64>; 6] = Default::default();
    write_all(1);
    for i in 0..iters {
        for (k, advice) in [UnusedAdvice::Free, UnusedAdvice::DontNeed]
            .into_iter()
            .enumerate()
        {
            let t0 = Instant::now();
            // SAFETY: nothing references the range while it is released.
            let _ = unsafe { r.unused_with(0, size, advice) }.expect("unused");
            let t1 = Instant::now();
            r.used(0, size).expect("used");
            let t2 = Instant::now();
            write_all(i as u8);
            let t3 = Instant::now();
            s[3 * k].push((t1 - t0).as_nanos() as u64);
            s[3 * k + 1].push((t2 - t1).as_nanos() as u64);
            s[3 * k + 2].push((t3 - t0).as_nanos() as u64);
        }
    }
    let [a, b, c, d, e, f] = s.each_mut().map(|v| median(v));
    LazyFree {
        size,
        iters,
        free_ns: a,
        used_after_free_ns: b,
        cycle_free_ns: c,
        dontneed_ns: d,
        used_after_dontneed_ns: e,
        cycle_dontneed_ns: f,
    }
}
