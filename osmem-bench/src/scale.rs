//! osmem's own costs at runtime scale: what the page-state map costs in time and memory for
//! the shapes runtimes use (a TiB heap reservation made Ready in one go, a 16 GiB `alloc`, a
//! GiB released at once, pages faulted all over a TiB, a pool of thousands of 8 GiB slots),
//! each next to the raw system calls for the same work, measured in the same run.
//!
//! Memory is read from the kernel, not from osmem's bookkeeping: the resident memory of
//! osmem's metadata arena ([`osmem::metadata_range`]) summed from `/proc/self/smaps`, besides
//! [`osmem::Stats::metadata_bytes`] (the arena pages reservations hold).

use crate::raw::{self, MADV_DONTNEED, PROT_RW};
use crate::{median, median_f64, Rng};
use osmem::{Reservation, UnusedAdvice};
use std::time::{Duration, Instant};

const TIB: usize = 1 << 40;
const GIB: usize = 1 << 30;

/// How much of each measurement to do.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ScalePlan {
    /// Pages faulted in the scattered case (the target is stated for 100 000).
    pub scattered_pages: usize,
    /// Reservations in the pool case (the target is stated for 1 000).
    pub pool: usize,
    /// Rounds of the pool case (each: all reservations made, then all dropped).
    pub pool_rounds: usize,
    /// Iterations of the 1 GiB unused case.
    pub gib_iters: usize,
    /// Repetitions of the 1 TiB reserve + map + used case.
    pub tib_reps: usize,
}

impl ScalePlan {
    /// The sizes the targets are stated for.
    pub const FULL: ScalePlan = ScalePlan {
        scattered_pages: 100_000,
        pool: 1000,
        pool_rounds: 10,
        gib_iters: 400,
        tib_reps: 21,
    };
    /// A tenth of the work (the pool and TiB cases keep their sizes, fewer rounds).
    pub const QUICK: ScalePlan = ScalePlan {
        scattered_pages: 10_000,
        pool: 1000,
        pool_rounds: 3,
        gib_iters: 60,
        tib_reps: 5,
    };
}

/// What [`scale`] measured.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Scale {
    /// `reserve(1 TiB)` + `map` + `used` of all of it, osmem, median µs.
    pub tib_osmem_us: f64,
    /// The same with the raw calls (`mmap(PROT_NONE, MAP_NORESERVE)` + `mprotect(RW)`), µs.
    pub tib_raw_us: f64,
    /// Metadata the 1 TiB Ready region holds (`metadata_bytes`), bytes.
    pub tib_metadata_bytes: u64,
    /// Resident metadata (arena RSS in smaps) with the 1 TiB region Ready, bytes.
    pub tib_metadata_rss: u64,
    /// Metadata a 16 GiB `alloc` holds, bytes.
    pub alloc_metadata_bytes: u64,
    /// Resident metadata with the 16 GiB `alloc` live, bytes.
    pub alloc_metadata_rss: u64,
    /// `unused` of an untouched 1 GiB Ready range (inside a 4 GiB region), median µs.
    pub gib_unused_osmem_us: f64,
    /// Raw `madvise(MADV_DONTNEED)` of the same range, median µs.
    pub gib_unused_raw_us: f64,
    /// Median of the per-iteration osmem / raw ratios.
    pub gib_unused_ratio: f64,
    /// Pages faulted (guard markers, else the default strategy) at random in a Ready TiB.
    pub scattered_pages: usize,
    /// Metadata held with them faulted (`metadata_bytes` delta), bytes.
    pub scattered_metadata_bytes: u64,
    /// Resident metadata added with them faulted (arena RSS delta), bytes.
    pub scattered_metadata_rss: u64,
    /// Metadata per faulted page (the larger of the two figures above / pages), bytes.
    pub scattered_bytes_per_page: f64,
    /// Mean µs per fault (osmem), and per `map` + `used` back.
    pub scattered_fault_us: f64,
    /// Mean µs per `map` + `used` that makes a faulted page Ready again.
    pub scattered_back_us: f64,
    /// Metadata the region holds once every page is Ready again (`metadata_bytes`), bytes.
    pub uniform_metadata_bytes: u64,
    /// Resident metadata then (the whole arena's RSS), bytes.
    pub uniform_metadata_rss: u64,
    /// Reservations in the pool case.
    pub pool: usize,
    /// System calls per osmem `reserve(8 GiB)` + drop (from osmem's counters).
    pub pool_osmem_syscalls: f64,
    /// System calls per raw mmap + munmap (2 by construction).
    pub pool_raw_syscalls: f64,
    /// VMAs added with every reservation of the pool live, osmem.
    pub pool_osmem_vmas: usize,
    /// The same with raw mappings.
    pub pool_raw_vmas: usize,
    /// Median µs per reserve + drop, osmem and raw, and the median per-round ratio.
    pub pool_osmem_us: f64,
    /// Median µs per raw mmap + munmap.
    pub pool_raw_us: f64,
    /// Median of the per-round ratios osmem / raw.
    pub pool_ratio: f64,
    /// Wall time of the whole measurement.
    pub seconds: f64,
}

/// Resident bytes of osmem's metadata arena, from `/proc/self/smaps` (0 before it exists).
///
/// # Panics
/// If smaps cannot be read.
pub fn metadata_rss() -> u64 {
    let Some(m) = osmem::metadata_range() else {
        return 0;
    };
    let smaps = std::fs::read_to_string("/proc/self/smaps")
        .unwrap_or_else(|e| panic!("read /proc/self/smaps: {e}"));
    let mut inside = false;
    let mut kb = 0u64;
    for line in smaps.lines() {
        let head = line.split(' ').next().unwrap_or("");
        if let Some((a, b)) = head.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                inside = a >= m.start && b <= m.end;
                continue;
            }
        }
        if inside {
            if let Some(v) = line.strip_prefix("Rss:") {
                kb += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    kb * 1024
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn med(v: &mut [Duration]) -> f64 {
    let mut ns: Vec<u64> = v.iter().map(|d| d.as_nanos() as u64).collect();
    median(&mut ns) / 1e3
}

/// Measure every case of `plan` (a few seconds at [`ScalePlan::FULL`]).
///
/// # Panics
/// If osmem or a raw call fails (the machine cannot reserve a TiB of address space, say).
pub fn scale(plan: ScalePlan) -> Scale {
    let start = Instant::now();
    let ps = osmem::page_size();
    // The arena exists from the first reservation on; make it now so every delta below is
    // the case's own.
    drop(Reservation::reserve(ps).expect("reserve"));

    // --- 1 TiB: reserve + map + used, against mmap + mprotect.
    let (mut os, mut rw) = (Vec::new(), Vec::new());
    let (mut tib_meta, mut tib_rss) = (0, 0);
    for i in 0..plan.tib_reps {
        let m0 = osmem::stats().metadata_bytes;
        let t = Instant::now();
        let r = Reservation::reserve(TIB).expect("reserve 1 TiB");
        r.map(0, TIB).expect("map");
        r.used(0, TIB).expect("used");
        os.push(t.elapsed());
        if i == 0 {
            tib_meta = osmem::stats().metadata_bytes - m0;
            tib_rss = metadata_rss();
        }
        drop(r);
        let t = Instant::now();
        // SAFETY: a fresh mapping of our own, then made RW and unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                TIB,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "raw mmap of 1 TiB");
            raw::mprotect(p as usize, TIB, PROT_RW);
            rw.push(t.elapsed());
            libc::munmap(p, TIB);
        }
    }
    let (tib_osmem_us, tib_raw_us) = (med(&mut os), med(&mut rw));

    // --- alloc(16 GiB): Ready at once, without MAP_NORESERVE.
    let m0 = osmem::stats().metadata_bytes;
    let a = Reservation::alloc(16 * GIB).expect("alloc 16 GiB");
    let alloc_metadata_bytes = osmem::stats().metadata_bytes - m0;
    let alloc_metadata_rss = metadata_rss();
    drop(a);

    // --- unused of an untouched 1 GiB range in a 4 GiB Ready region, against madvise.
    let r = Reservation::reserve(4 * GIB).expect("reserve 4 GiB");
    r.map(0, 4 * GIB).expect("map");
    r.used(0, 4 * GIB).expect("used");
    let addr = r.as_ptr() as usize + GIB;
    let (mut o, mut w, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..plan.gib_iters {
        let one = |osmem_first: bool| {
            if osmem_first {
                let t = Instant::now();
                // SAFETY: nothing uses the region.
                let _ = unsafe { r.unused_with(GIB, GIB, UnusedAdvice::DontNeed) }.expect("unused");
                let d = t.elapsed();
                r.used(GIB, GIB).expect("used");
                d
            } else {
                let t = Instant::now();
                // SAFETY: as above.
                unsafe { raw::madvise(addr, GIB, MADV_DONTNEED) };
                t.elapsed()
            }
        };
        let first = i % 2 == 0;
        let a = one(first);
        let b = one(!first);
        let (dos, draw) = if first { (a, b) } else { (b, a) };
        ratios.push(dos.as_secs_f64() / draw.as_secs_f64().max(1e-9));
        o.push(dos);
        w.push(draw);
    }
    drop(r);
    let (gib_unused_osmem_us, gib_unused_raw_us) = (med(&mut o), med(&mut w));
    let gib_unused_ratio = median_f64(&mut ratios);

    // --- scattered: random single pages faulted in a Ready TiB, then made Ready again.
    let r = Reservation::reserve(TIB).expect("reserve 1 TiB");
    r.map(0, TIB).expect("map");
    r.used(0, TIB).expect("used");
    let pages = TIB / ps;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut picked: Vec<usize> = (0..plan.scattered_pages)
        .map(|_| rng.below(pages))
        .collect();
    picked.sort_unstable();
    picked.dedup();
    let (m0, rss0) = (osmem::stats().metadata_bytes, metadata_rss());
    let t = Instant::now();
    for &p in &picked {
        // SAFETY: nothing uses the region.
        let _ = unsafe { r.fault(p * ps, ps) }.expect("fault");
    }
    let scattered_fault_us = us(t.elapsed()) / picked.len() as f64;
    let scattered_metadata_bytes = osmem::stats().metadata_bytes.saturating_sub(m0);
    let scattered_metadata_rss = metadata_rss().saturating_sub(rss0);
    let t = Instant::now();
    for &p in &picked {
        r.map(p * ps, ps).expect("map back");
        r.used(p * ps, ps).expect("used back");
    }
    let scattered_back_us = us(t.elapsed()) / picked.len() as f64;
    let uniform_metadata_bytes = osmem::stats().metadata_bytes.saturating_sub(m0);
    let uniform_metadata_rss = metadata_rss();
    drop(r);
    let scattered_bytes_per_page =
        scattered_metadata_bytes.max(scattered_metadata_rss) as f64 / picked.len() as f64;

    // --- the pool: reserve(8 GiB) × pool, then drop all; against raw mmap/munmap.
    let slot = 8 * GIB;
    let count = |s: &osmem::Stats| {
        s.mmap_calls + s.munmap_calls + s.mprotect_calls + s.madvise_calls + s.prctl_calls
    };
    let lines = || std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count());
    let (mut po, mut pr, mut pool_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut calls, mut vmas_osmem, mut vmas_raw) = (0u64, 0, 0);
    let mut held: Vec<Reservation> = Vec::with_capacity(plan.pool);
    let mut raw_held: Vec<usize> = Vec::with_capacity(plan.pool);
    for round in 0..plan.pool_rounds {
        let osmem_round = |held: &mut Vec<Reservation>, vmas: &mut usize, calls: &mut u64| {
            let (l0, s0) = (lines(), osmem::stats());
            let t = Instant::now();
            for _ in 0..plan.pool {
                held.push(Reservation::reserve(slot).expect("reserve 8 GiB"));
            }
            let made = t.elapsed();
            *vmas = lines().saturating_sub(l0);
            let t = Instant::now();
            held.clear();
            let d = made + t.elapsed();
            *calls = count(&osmem::stats()) - count(&s0);
            d
        };
        let raw_round = |raw_held: &mut Vec<usize>, vmas: &mut usize| {
            let l0 = lines();
            let t = Instant::now();
            for _ in 0..plan.pool {
                // SAFETY: fresh mappings of our own, unmapped below.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        slot,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                        -1,
                        0,
                    )
                };
                assert_ne!(p, libc::MAP_FAILED, "raw mmap of 8 GiB");
                raw_held.push(p as usize);
            }
            let made = t.elapsed();
            *vmas = lines().saturating_sub(l0);
            let t = Instant::now();
            for p in raw_held.drain(..) {
                // SAFETY: mapped above.
                unsafe { libc::munmap(p as *mut libc::c_void, slot) };
            }
            made + t.elapsed()
        };
        let (a, b) = if round % 2 == 0 {
            let a = osmem_round(&mut held, &mut vmas_osmem, &mut calls);
            (a, raw_round(&mut raw_held, &mut vmas_raw))
        } else {
            let b = raw_round(&mut raw_held, &mut vmas_raw);
            (osmem_round(&mut held, &mut vmas_osmem, &mut calls), b)
        };
        pool_ratios.push(a.as_secs_f64() / b.as_secs_f64().max(1e-9));
        po.push(a / plan.pool as u32);
        pr.push(b / plan.pool as u32);
    }
    Scale {
        tib_osmem_us,
        tib_raw_us,
        tib_metadata_bytes: tib_meta,
        tib_metadata_rss: tib_rss,
        alloc_metadata_bytes,
        alloc_metadata_rss,
        gib_unused_osmem_us,
        gib_unused_raw_us,
        gib_unused_ratio,
        scattered_pages: picked.len(),
        scattered_metadata_bytes,
        scattered_metadata_rss,
        scattered_bytes_per_page,
        scattered_fault_us,
        scattered_back_us,
        uniform_metadata_bytes,
        uniform_metadata_rss,
        pool: plan.pool,
        pool_osmem_syscalls: calls as f64 / plan.pool as f64,
        pool_raw_syscalls: 2.0,
        pool_osmem_vmas: vmas_osmem,
        pool_raw_vmas: vmas_raw,
        pool_osmem_us: med(&mut po),
        pool_raw_us: med(&mut pr),
        pool_ratio: median_f64(&mut pool_ratios),
        seconds: start.elapsed().as_secs_f64(),
    }
}
