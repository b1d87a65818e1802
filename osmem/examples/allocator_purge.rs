//! A memory allocator's purge on osmem, checked against the kernel.
//!
//! Allocators (jemalloc, mimalloc, a runtime's own) carve page runs out of large extents and
//! keep freed runs "dirty" for a while in case they are reused; later a purge (jemalloc's
//! decay, mimalloc's reset) gives them back to the kernel. Purging run by run costs one
//! `madvise` per run, and each of those ends in its own TLB flush — an interrupt to every
//! other CPU running a thread of the process. Here the freed runs are collected in an osmem
//! `Batch` and released together: one `process_madvise` for up to 1024 runs where the kernel
//! takes `MADV_DONTNEED` through it (Linux 6.13 and later), else osmem falls back to one
//! `madvise` per run and says so in the report.
//!
//! Checked against the kernel, never against osmem's bookkeeping: residency queries
//! (`Reservation::resident_bytes` / `residency`, which ask the kernel through the
//! `PAGEMAP_SCAN` ioctl, `/proc/self/pagemap` or `mincore`) before and after the purge, run by
//! run, and every live run's contents. Any failed check panics, so the example exits
//! non-zero.
//!
//! Run it with `cargo run --release -p osmem --example allocator_purge`.

use osmem::{Batch, BatchKind, PageRun, Reservation, Residence, UnusedAdvice};
use std::time::Instant;

/// Address space the allocator reserves for its extents.
const RESERVE: usize = 1 << 30;
/// Runs carved out of the extent, every other one freed: 1024 freed runs, one full
/// `process_madvise`.
const RUNS: usize = 2048;

fn main() -> Result<(), osmem::Error> {
    let ps = osmem::page_size();
    let space = Reservation::reserve(RESERVE)?;

    // Runs of 1 to 8 pages, back to back, in one extent mapped and used at once.
    let runs: Vec<(usize, usize)> = {
        let mut off = 0;
        (0..RUNS)
            .map(|i| {
                let len = (1 + (i * 7 + i / 3) % 8) * ps;
                off += len;
                (off - len, len)
            })
            .collect()
    };
    let extent = runs.iter().map(|r| r.1).sum::<usize>();
    space.map(0, extent)?;
    space.used(0, extent)?;
    for (i, &(off, len)) in runs.iter().enumerate() {
        // SAFETY: Ready memory of ours; the allocator hands each run to its user, who fills it.
        unsafe { space.as_ptr().add(off).write_bytes(tag(i), len) };
    }
    let resident = space.resident_bytes(0, extent)?;
    println!(
        "{RUNS} runs of 1-8 pages in a {} KiB extent: kernel reports {} KiB resident",
        extent >> 10,
        resident >> 10
    );
    assert_eq!(resident, extent, "every run was written");

    // The program frees every other run; the allocator keeps them dirty until its purge,
    // which collects them in one batch.
    let freed: Vec<usize> = (1..RUNS).step_by(2).collect();
    let freed_bytes: usize = freed.iter().map(|&i| runs[i].1).sum();
    let mut batch: Batch = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
    for &i in &freed {
        let (off, len) = runs[i];
        // SAFETY: the run was freed: nothing references it any more.
        unsafe { batch.push(&space, off, len)? };
    }
    let calls_before = osmem::stats();
    let t = Instant::now();
    // SAFETY: as for each push.
    let report = unsafe { batch.flush() };
    let took = t.elapsed();
    let calls = osmem::stats();
    println!(
        "purge: {} runs, {} KiB, in {:?}: {} process_madvise call(s), {} run(s) one at a time \
         ({} madvise calls)",
        report.ranges,
        report.bytes >> 10,
        took,
        report.batch_calls,
        report.per_range,
        calls.madvise_calls - calls_before.madvise_calls
    );
    println!("  {report:?}");
    assert_eq!((report.ranges, report.bytes), (freed.len(), freed_bytes));
    assert_eq!((report.failed, report.not_released), (0, 0), "{report:?}");
    if report.per_range == 0 {
        assert_eq!(report.batch_calls, 1, "1024 runs fit one process_madvise");
    } else {
        println!(
            "  (this kernel does not take MADV_DONTNEED through process_madvise: {:?})",
            osmem::probe().process_madvise
        );
    }

    // The kernel's view, run by run: freed runs hold nothing, live runs are all there and
    // keep their contents.
    for (i, &(off, len)) in runs.iter().enumerate() {
        let resident = space.resident_bytes(off, len)?;
        if i % 2 == 1 {
            assert_eq!(resident, 0, "freed run {i} is still resident");
        } else {
            assert_eq!(resident, len, "live run {i} lost memory");
            // SAFETY: a live run, Ready.
            let bytes = unsafe { std::slice::from_raw_parts(space.as_ptr().add(off), len) };
            assert!(bytes.iter().all(|&b| b == tag(i)), "live run {i} changed");
        }
    }
    // And as the kernel lists it: alternating present and empty runs of pages.
    let mut pages = vec![PageRun::EMPTY; RUNS + 1];
    let q = space.residency(0, extent, &mut pages)?;
    let pages = &pages[..q.runs];
    assert_eq!(q.end, extent);
    assert_eq!(pages.len(), RUNS, "one kernel run per allocator run");
    for (i, (p, &(off, len))) in pages.iter().zip(&runs).enumerate() {
        let want = if i % 2 == 1 {
            Residence::None
        } else {
            Residence::Present
        };
        assert_eq!((p.offset, p.len, p.residence), (off, len, want), "run {i}");
    }
    let after = space.resident_bytes(0, extent)?;
    println!(
        "after the purge the kernel ({}) reports {} KiB resident: {} runs present, {} empty",
        q.method.name(),
        after >> 10,
        pages
            .iter()
            .filter(|p| p.residence == Residence::Present)
            .count(),
        pages
            .iter()
            .filter(|p| p.residence == Residence::None)
            .count()
    );
    assert_eq!(after, extent - freed_bytes);

    // Reuse: a purged run is made Ready again and reads zero (no need to clear it).
    let (off, len) = runs[1];
    space.used(off, len)?;
    // SAFETY: Ready again, ours.
    let bytes = unsafe { std::slice::from_raw_parts(space.as_ptr().add(off), len) };
    assert!(bytes.iter().all(|&b| b == 0), "a purged run reads zero");
    println!("a purged run reused: reads zero");
    println!("ok");
    Ok(())
}

/// The byte run `i`'s user fills it with.
fn tag(i: usize) -> u8 {
    (i % 251) as u8 + 1
}
