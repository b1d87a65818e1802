//! `unused` of a large untouched Ready range against a raw `madvise(DONTNEED)` of a raw
//! mapping of the same size (see `osmem_bench::untouched_unused`).
//!
//! `cargo run --release -p osmem-bench --example untouched [-- RUNS]`
//!
//! Prints, per run of 20 rounds over 1 GiB, both medians and the median of the per-round
//! ratios (osmem / raw).

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map_or(3, |a| a.parse().expect("RUNS: a number"));
    println!("| run | osmem unused (ns) | raw madvise (ns) | median ratio |");
    println!("|---|---|---|---|");
    for run in 1..=runs {
        let u = osmem_bench::untouched_unused(1 << 30, 20);
        println!(
            "| {run} | {:.0} | {:.0} | {:.2} |",
            u.osmem_ns, u.raw_ns, u.ratio
        );
    }
}
