//! Every ratio osmem-bench measures, as Markdown tables (what BENCHMARKS.md quotes).
//!
//! `cargo run --release -p osmem-bench --example ratios [-- [--quick] [--no-sibling] [--batch-only] [--lazy-only]]`
//!
//! `--quick`: a tenth of the iterations; `--no-sibling`: skip the per-op table with a spinning
//! sibling thread; `--batch-only`: only the batch-vs-loop table; `--lazy-only`: only the
//! table of `used` after `MADV_FREE`.
//!
//! Ratios, not absolute times, are what to compare: each ratio is measured side by side in
//! one run (osmem and raw iterations alternate on the same range; batch and loop alternate
//! on the same region).

use osmem_bench::{
    batch_vs_loop_op, default_batch_iters, default_iters, free_then_used, paired, quick_iters,
    size_label, BatchOp, Op, BATCH_CONFIGS, MIN_ITERS, SIZES,
};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sibling_too = !args.iter().any(|a| a == "--no-sibling");
    if let Some(bad) = args.iter().find(|a| {
        !matches!(
            a.as_str(),
            "--quick" | "--no-sibling" | "--batch-only" | "--lazy-only"
        )
    }) {
        eprintln!(
            "unknown argument {bad}; usage: ratios [--quick] [--no-sibling] [--batch-only] [--lazy-only]"
        );
        std::process::exit(2);
    }
    let iters = |size| {
        if quick {
            quick_iters(size)
        } else {
            default_iters(size)
        }
    };
    let t0 = Instant::now();

    let p = osmem::probe();
    println!("# osmem-bench ratios");
    println!();
    println!(
        "kernel {}, {} CPUs, THP {:?}, iterations: {}",
        p.release(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        p.thp,
        if quick { "quick" } else { "default" }
    );

    let batch_only = args.iter().any(|a| a == "--batch-only");
    let lazy_only = args.iter().any(|a| a == "--lazy-only");
    let modes: &[bool] = match (batch_only || lazy_only, sibling_too) {
        (true, _) => &[],
        (false, true) => &[false, true],
        (false, false) => &[false],
    };
    for &sibling in modes {
        println!();
        println!(
            "## osmem vs raw libc calls, {} (target: osmem/raw ≤ 1.03)",
            if sibling {
                "with a spinning sibling thread"
            } else {
                "alone"
            }
        );
        println!();
        println!("| op | raw calls | size | pairs | osmem µs | raw µs | osmem/raw | median of pair ratios | added ns (median of pair differences) |");
        println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
        for op in Op::ALL {
            if !op.is_supported() {
                println!(
                    "| {} | {} | — | unsupported on this kernel | | | | | |",
                    op.name(),
                    op.raw_calls()
                );
                continue;
            }
            for size in SIZES {
                let r = paired(op, size, iters(size), sibling);
                println!(
                    "| {} | {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.3} | {:.0} |",
                    op.name(),
                    op.raw_calls(),
                    size_label(size),
                    r.pairs,
                    r.osmem_ns / 1e3,
                    r.raw_ns / 1e3,
                    r.ratio,
                    r.pair_ratio,
                    r.added_ns
                );
            }
        }
    }

    if !lazy_only {
        println!();
        println!("## one osmem Batch vs a loop of per-range osmem calls (target at 1024 × 4KiB: ≥ 5× alone, ≥ 50× with sibling)");
        println!();
        println!("| op | ranges × size | sibling | iters | batch µs | loop µs | loop/batch | raw batch µs | raw loop µs | raw loop/batch | batch / raw batch |");
        println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for op in BatchOp::ALL {
            if !op.is_supported() {
                continue;
            }
            for (ranges, size) in BATCH_CONFIGS {
                for &sibling in &[false, true] {
                    let n = default_batch_iters(ranges, size);
                    let n = if quick { (n / 10).max(MIN_ITERS) } else { n };
                    let r = batch_vs_loop_op(op, ranges, size, n, sibling);
                    println!(
                        "| {} | {} × {} | {} | {} | {:.1} | {:.1} | {:.1}× | {:.1} | {:.1} | {:.1}× | {:.3} |",
                        op.name(),
                        ranges,
                        size_label(size),
                        if sibling { "sibling" } else { "alone" },
                        r.iters,
                        r.batch_ns / 1e3,
                        r.loop_ns / 1e3,
                        r.speedup,
                        r.raw_batch_ns / 1e3,
                        r.raw_loop_ns / 1e3,
                        r.raw_speedup,
                        r.batch_ns / r.raw_batch_ns
                    );
                }
            }
        }
    }
    if !batch_only {
        println!();
        println!("## used after unused(FREE): what keeping Ready stable costs");
        println!();
        println!("`used` writes each page released with MADV_FREE once (ending the lazy free). Cycle = release + used + a write to every page; with DONTNEED that write faults each page in again.");
        println!();
        println!("| size | cycles | FREE µs | used after FREE µs | cycle with FREE µs | DONTNEED µs | used after DONTNEED µs | cycle with DONTNEED µs | cycle FREE / DONTNEED |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for size in SIZES {
            let n = match size {
                s if s <= 64 << 10 => 500,
                s if s <= 2 << 20 => 100,
                _ => 10,
            };
            let n = if quick { (n / 10).max(3) } else { n };
            let r = free_then_used(size, n);
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                size_label(size),
                r.iters,
                r.free_ns / 1e3,
                r.used_after_free_ns / 1e3,
                r.cycle_free_ns / 1e3,
                r.dontneed_ns / 1e3,
                r.used_after_dontneed_ns / 1e3,
                r.cycle_dontneed_ns / 1e3,
                r.cycle_free_ns / r.cycle_dontneed_ns
            );
        }
    }
    eprintln!("ratios: done in {:.1} s", t0.elapsed().as_secs_f64());
}
