//! The page heap's measurements alone: `cargo run --release -p osmem-bench --example heap
//! [-- --quick] [release|goal|alloc]…` prints each result (the same functions `osmem bench`
//! runs).

use osmem_bench::{heap_alloc, heap_goal, heap_release, HeapPlan};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = if args.iter().any(|a| a == "--quick") {
        HeapPlan::QUICK
    } else {
        HeapPlan::FULL
    };
    let want = |w: &str| {
        let named: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
        named.is_empty() || named.iter().any(|a| *a == w)
    };
    if want("release") {
        for c in heap_release(plan) {
            println!("{c:?}");
        }
    }
    if want("goal") {
        for g in heap_goal(plan) {
            println!("{g:?}");
        }
    }
    if want("alloc") {
        for a in heap_alloc(plan) {
            println!("{a:?}");
        }
    }
}
