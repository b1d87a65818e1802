//! The heap trace on osmem-heap: `cargo run --release -p osmem-bench --example trace --
//! [SIZE_DIV TIME_DIV] [go-faithful]` prints the event hash (compare with gotrace's) and the
//! samples.

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (sd, td) = (num(0, 1), num(1, 1));
    let (_, hash, _) = osmem_bench::trace_events(sd, td);
    println!("hash {hash:016x}");
    let mode = if a.iter().any(|s| s == "go-faithful") {
        osmem_heap::Mode::GoFaithful
    } else {
        osmem_heap::Mode::Batched
    };
    let r = osmem_bench::trace_run(mode, sd, td, &[]);
    for s in r.samples.iter().step_by(8) {
        println!(
            "t {:5.2} live {:4} MiB rss {:4} MiB released {:4} MiB",
            s.t,
            s.live >> 20,
            s.rss >> 20,
            s.released >> 20
        );
    }
    println!(
        "scavenger {:.3} s, {} release calls",
        r.scavenger_s, r.release_calls
    );
}
