//! `cargo bench -p osmem-bench`: criterion front end over osmem-bench's measurements.
//!
//! Groups:
//! - `fault/<strategy>/<size>` and `unused/<advice>/<size>`, functions `osmem` and `raw`: one
//!   operation on a populated range, through osmem and as the raw libc calls osmem makes.
//! - `batch/<ranges>x<size>/<alone|sibling>`, functions `batch` and `loop`: releasing scattered
//!   ranges (MADV_DONTNEED) with one osmem `Batch` versus one osmem call per range;
//!   `batch-fault/…` the same for guard-marker faults.
//! - `holes/<strategy>`: faulting every other 64 KiB chunk of a populated 64 MiB mapping
//!   (512 faults), the VMA-growth measurement of `osmem report` ([`vma_growth`]), timed.
//!
//! The contention measurement (`osmem_bench::contention`) is not here: it reports throughput
//! ratios over fixed windows, not the time of an operation, so it has no criterion form;
//! `osmem bench` runs it.
//!
//! Every sample uses `iter_custom` and [`OpBench::once`] / [`BatchBench::once`], which time the
//! operation alone: populating before and restoring after are not in the figures. That setup
//! costs 2–12× the operation, so the measurement times below are small, and criterion's
//! "unable to complete N samples" notes about wall time are expected.
//!
//! criterion times osmem and raw one after the other, so its osmem/raw comparison is weaker
//! than the side-by-side ratio of `cargo run --release -p osmem-bench --example ratios`,
//! which is what BENCHMARKS.md quotes.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use osmem_bench::{
    size_label, vma_growth, BatchBench, BatchOp, Flavour, Method, Op, OpBench, Sibling,
    BATCH_CONFIGS, SIZES,
};
use std::time::Duration;

/// (sample size, warm-up, measurement time, flat sampling) per range size, chosen so the
/// whole run stays within a few minutes on a 2-core machine. Times are criterion's: of the
/// *reported* (operation-only) time, not wall time.
fn plan(size: usize) -> (usize, Duration, Duration, bool) {
    let ms = Duration::from_millis;
    match size {
        s if s <= 4 << 10 => (100, ms(300), ms(1000), false),
        s if s <= 64 << 10 => (50, ms(200), ms(500), false),
        s if s <= 2 << 20 => (30, ms(50), ms(500), true),
        // ~45 ms of wall time per iteration (populating 64 MiB), ~50 iterations.
        _ => (10, ms(10), ms(300), true),
    }
}

fn ops(c: &mut Criterion) {
    for op in Op::ALL {
        if !op.is_supported() {
            eprintln!("{}: not supported by this kernel, skipped", op.name());
            continue;
        }
        for size in SIZES {
            let (samples, warm, measure, flat) = plan(size);
            let mut g = c.benchmark_group(format!("{}/{}", op.name(), size_label(size)));
            g.sample_size(samples)
                .warm_up_time(warm)
                .measurement_time(measure);
            if flat {
                g.sampling_mode(SamplingMode::Flat);
            }
            for flavour in Flavour::ALL {
                let mut bench = OpBench::new(size).expect("benchmark region");
                g.bench_function(flavour.name(), |b| {
                    b.iter_custom(|n| (0..n).map(|_| bench.once(op, flavour)).sum())
                });
            }
            g.finish();
        }
    }
}

fn batches(c: &mut Criterion) {
    for op in BatchOp::ALL {
        if !op.is_supported() {
            eprintln!("batch {}: not supported by this kernel, skipped", op.name());
            continue;
        }
        let prefix = match op {
            BatchOp::UnusedDontNeed => "batch",
            BatchOp::FaultGuard => "batch-fault",
        };
        for (ranges, size) in BATCH_CONFIGS {
            for sibling in [false, true] {
                let name = format!(
                    "{prefix}/{ranges}x{}/{}",
                    size_label(size),
                    if sibling { "sibling" } else { "alone" }
                );
                let mut g = c.benchmark_group(name);
                g.sample_size(20)
                    .warm_up_time(Duration::from_millis(20))
                    .measurement_time(Duration::from_millis(400))
                    .sampling_mode(SamplingMode::Flat);
                let mut bench = BatchBench::new(op, ranges, size).expect("benchmark region");
                let _sibling = Sibling::maybe(sibling);
                for method in [Method::Batch, Method::Loop] {
                    g.bench_function(method.name(), |b| {
                        b.iter_custom(|n| (0..n).map(|_| bench.once(method)).sum())
                    });
                }
                g.finish();
            }
        }
    }
}

fn holes(c: &mut Criterion) {
    for op in [
        Op::FaultGuard,
        Op::FaultProtect,
        Op::FaultGo,
        Op::FaultRemap,
    ] {
        if !op.is_supported() {
            continue;
        }
        let mut g = c.benchmark_group(format!("holes/{}", op.name().trim_start_matches("fault/")));
        // Each iteration maps and populates 64 MiB (not timed): ~50 ms of wall time.
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(10))
            .measurement_time(Duration::from_millis(200))
            .sampling_mode(SamplingMode::Flat);
        g.bench_function("512x64KiB", |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| vma_growth(op, 64 << 20, 64 << 10).elapsed)
                    .sum()
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // Fewer bootstrap resamples than the default 100k: the analysis of 72 benchmarks would
    // otherwise take longer than measuring them.
    config = Criterion::default().nresamples(10_000).without_plots();
    targets = ops, batches, holes
}
criterion_main!(benches);
