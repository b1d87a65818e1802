//! Releasing a large range nobody touched: osmem's `unused` against a raw `madvise` of a raw
//! mapping, as an independent harness would measure it.
//!
//! The kernel's cost here is walking page tables that hold nothing, so it depends on where
//! the mapping sits: one that shares a page-table page with a touched neighbour walks that
//! page's entries on every release. osmem places reservations of 1 GiB or more on a 1 GiB
//! boundary (and its metadata arena too), so this measures osmem's own bookkeeping, not the
//! layout.

use crate::median_f64;
use crate::raw::{self, MADV_DONTNEED};
use osmem::Reservation;
use std::time::Instant;

/// The result of [`untouched_unused`]: medians in ns.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Untouched {
    /// Bytes of each range.
    pub len: usize,
    /// Rounds measured.
    pub rounds: usize,
    /// osmem's `unused(0, len)` of a Ready, untouched reservation.
    pub osmem_ns: f64,
    /// A raw `madvise(DONTNEED)` of a raw `mmap(RW, MAP_NORESERVE)` mapping.
    pub raw_ns: f64,
    /// The median of the rounds' osmem/raw ratios.
    pub ratio: f64,
}

/// Reserve `len` bytes with osmem (map, used) and, beside it, a raw read-write `MAP_NORESERVE`
/// mapping; warm each once; then `rounds` rounds, alternating which goes first, each timing
/// osmem's `unused(0, len)` and a raw `madvise(DONTNEED)` of the raw mapping, then an untimed
/// `used(0, len)`.
///
/// # Panics
/// If a mapping or a call fails.
///
/// ```
/// let u = osmem_bench::untouched_unused(64 << 20, 5);
/// assert!(u.osmem_ns > 0.0 && u.raw_ns > 0.0);
/// ```
pub fn untouched_unused(len: usize, rounds: usize) -> Untouched {
    let r = Reservation::reserve(len).expect("reserve");
    r.map(0, len).expect("map");
    r.used(0, len).expect("used");
    // SAFETY: a fresh mapping of our own.
    let raw = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(raw, libc::MAP_FAILED, "raw mmap");
    let raw = raw as usize;
    let osmem = || {
        let t = Instant::now();
        // SAFETY: nothing references the range.
        let u = unsafe { r.unused(0, len) }.expect("unused");
        let ns = t.elapsed().as_nanos() as f64;
        assert!(u.released, "{u:?}");
        ns
    };
    let kernel = || {
        let t = Instant::now();
        // SAFETY: our own mapping, nothing in it.
        unsafe { raw::madvise(raw, len, MADV_DONTNEED) };
        t.elapsed().as_nanos() as f64
    };
    osmem();
    r.used(0, len).expect("used");
    kernel();
    let (mut o, mut k, mut ratio) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        let (a, b) = if round % 2 == 0 {
            let a = osmem();
            (a, kernel())
        } else {
            let b = kernel();
            (osmem(), b)
        };
        r.used(0, len).expect("used");
        o.push(a);
        k.push(b);
        ratio.push(a / b.max(1.0));
    }
    // SAFETY: our own mapping.
    unsafe { libc::munmap(raw as *mut libc::c_void, len) };
    Untouched {
        len,
        rounds,
        osmem_ns: median_f64(&mut o),
        raw_ns: median_f64(&mut k),
        ratio: median_f64(&mut ratio),
    }
}
