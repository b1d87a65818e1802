//! The bench results as Markdown tables (stdout of `osmem bench`, and the body of report.md).

use crate::suite::{BenchResults, ContentionResult, Est, ScaleResult};
use std::io::{self, Write};

fn est(e: &Est) -> String {
    if e.n <= 1 || (e.lo == e.median && e.hi == e.median) {
        format!("{:.2}", e.median)
    } else {
        format!("{:.2} [{:.2}–{:.2}]", e.median, e.lo, e.hi)
    }
}

fn pct(e: &Est) -> String {
    if e.n <= 1 || (e.lo == e.median && e.hi == e.median) {
        format!("{:.0}%", 100.0 * e.median)
    } else {
        format!(
            "{:.0}% [{:.0}–{:.0}]",
            100.0 * e.median,
            100.0 * e.lo,
            100.0 * e.hi
        )
    }
}

fn us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Every table; headings start at `level` (`##` or `###`).
pub fn write_bench(out: &mut impl Write, r: &BenchResults, h: &str) -> io::Result<()> {
    writeln!(
        out,
        "{h} Cost per operation (µs, medians; ranking with ≈ for differences within noise)"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "All strategies of a row group run interleaved round by round on the same range \
         (inside 2 MiB of padding), so `× cheapest` is a side-by-side ratio: the median over \
         rounds of this strategy's time over the cheapest one's in the same round, with its \
         ~95% interval. `undo` is the time to make the range Ready again (unfault: map + used)."
    )?;
    for g in ["fault", "unused"] {
        writeln!(out)?;
        writeln!(
            out,
            "| {g} | size | mode | rounds | strategy | op µs | undo µs | × cheapest | ranking |"
        )?;
        writeln!(out, "|---|---|---|---:|---|---:|---:|---|---|")?;
        for c in r.costs.iter().filter(|c| c.group == g) {
            for (k, e) in c.entries.iter().enumerate() {
                let first = k == 0;
                writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    if first { g } else { "" },
                    if first { c.size_label.as_str() } else { "" },
                    if first {
                        if c.sibling {
                            "sibling"
                        } else {
                            "alone"
                        }
                    } else {
                        ""
                    },
                    if first {
                        c.rounds.to_string()
                    } else {
                        String::new()
                    },
                    e.strategy,
                    us(e.op_us),
                    us(e.undo_us),
                    est(&e.vs_cheapest),
                    if first { c.ranking.as_str() } else { "" },
                )?;
            }
        }
    }

    writeln!(out)?;
    writeln!(
        out,
        "{h} Contention: throughput kept by threads that take mmap_lock for reading"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "A mutator thread cycles a 64 KiB range (populate, op, undo) through osmem, at the \
         same pace for every strategy (one cycle per {} µs, so readers are compared on equal \
         work), while a worker thread runs; the worker's throughput is divided by its throughput in the \
         control windows just before and after (control mutator: DONTNEED + repopulate, \
         never mmap_lock(W)). Control and mutator windows alternate; one mutator and one \
         worker at a time (2 threads on 2 CPUs). 100% = unhindered. The other side of the \
         lock: `mutator kept` is the mutator's rate beside the worker over its rate alone in \
         the window right after (a strategy that needs mmap_lock(W) waits for readers).",
        osmem_bench::MUTATOR_PERIOD.as_micros()
    )?;
    for c in &r.contention {
        write_contention(out, c)?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "{h} VMA growth: faulting every other 64 KiB chunk of a 64 MiB mapping"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| strategy | faults | VMAs added | per fault | holes until vm.max_map_count | time ms |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    for v in &r.vma_growth {
        writeln!(
            out,
            "| {} | {} | {} | {:.1} | {} | {:.1} |",
            v.strategy,
            v.faults,
            v.vmas_added,
            v.per_fault,
            v.holes_until_max_map_count
                .map_or("no limit".to_owned(), |n| n.to_string()),
            v.elapsed_ms
        )?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "{h} What each operation leaves (64 KiB, populated, then the op; mincore and /proc/self/maps)"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| op | pages | resident after | VMAs added | RSS drops at once |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    for f in &r.footprint {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            f.op,
            f.pages,
            f.resident_after,
            f.vmas_added,
            if f.rss_honest { "yes" } else { "no" }
        )?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "{h} Batch (one process_madvise per ≤ 1024 ranges) vs a loop of per-range calls"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| op | ranges × size | mode | iters | batch µs | raw batch µs | batch / raw batch | loop µs | loop / batch | raw loop / batch |"
    )?;
    writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---|---:|")?;
    for b in &r.batch {
        writeln!(
            out,
            "| {} | {} × {} | {} | {} | {} | {} | {:.3} | {} | {}× | {:.1}× |",
            b.op,
            b.ranges,
            b.range_size_label,
            if b.sibling { "sibling" } else { "alone" },
            b.iters,
            us(b.batch_us),
            us(b.raw_batch_us),
            b.batch_over_raw,
            us(b.loop_us),
            est(&b.speedup),
            b.raw_speedup
        )?;
    }

    if let Some(s) = &r.scale {
        write_scale(out, s, h)?;
    }
    if !r.residency.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{h} Residency queries: each method through osmem vs the raw method, and vs the fastest"
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "Raw: the same system calls osmem makes for that method, building the same runs. \
             `× raw` and `× fastest` are medians of per-round ratios (all methods and both \
             flavours run in every round)."
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| case | method | runs | rounds | osmem µs | raw µs | × raw | × fastest |"
        )?;
        writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|")?;
        for c in &r.residency {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.3} | {:.2} |",
                c.case,
                c.method,
                c.runs,
                c.rounds,
                us(c.osmem_us),
                us(c.raw_us),
                c.osmem_over_raw,
                c.over_fastest
            )?;
        }
    }
    if let Some(c) = &r.residency_contention {
        writeln!(out)?;
        writeln!(
            out,
            "{h} What a large residency scan does to threads that take mmap_lock"
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "The same harness as the contention tables above, with a worker that asks osmem \
             which pages of a fully resident 1 GiB region the kernel holds (the method osmem \
             selects walks the page tables under mmap_lock for reading). `mutator kept` is \
             the writer side: a strategy that needs mmap_lock(W) waits for each walk. Not part \
             of the selection checks."
        )?;
        write_contention(out, c)?;
    }

    writeln!(out)?;
    writeln!(out, "{h} Rankings")?;
    writeln!(out)?;
    writeln!(
        out,
        "`a < b`: a is cheaper (or adds fewer VMAs); `a > b`: a keeps more throughput; \
         `a ≈ b`: the run does not separate the two neighbours (the ~95% interval of their \
         side-by-side ratio contains 1, or they differ by less than {:.0}% for costs; for \
         contention ratios the whole interval must clear {:.0}%).",
        100.0 * r.min_gap.cost,
        100.0 * r.min_gap.throughput
    )?;
    writeln!(out)?;
    writeln!(out, "| measurement | ranking |")?;
    writeln!(out, "|---|---|")?;
    for k in &r.rankings {
        writeln!(out, "| {} | {} |", k.name, k.tiers)?;
    }
    Ok(())
}

fn kib(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 10 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

/// The metadata-at-scale table: each case, osmem next to the raw calls of the same run.
fn write_scale(out: &mut impl Write, s: &ScaleResult, h: &str) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{h} osmem's own costs at scale (the page-state map), next to the raw calls"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Metadata: `held` = arena pages reservations hold (`stats().metadata_bytes`); \
         `resident` = the metadata arena's Rss in /proc/self/smaps."
    )?;
    writeln!(out)?;
    writeln!(out, "| case | osmem | raw calls | ratio | metadata |")?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    writeln!(
        out,
        "| reserve(1 TiB) + map + used | {} µs | {} µs (mmap + mprotect) | {:.2} | held {}, resident {} |",
        us(s.tib_osmem_us),
        us(s.tib_raw_us),
        s.tib_osmem_us / s.tib_raw_us,
        kib(s.tib_metadata_bytes),
        kib(s.tib_metadata_rss)
    )?;
    writeln!(
        out,
        "| alloc(16 GiB) | | | | held {}, resident {} |",
        kib(s.alloc_metadata_bytes),
        kib(s.alloc_metadata_rss)
    )?;
    writeln!(
        out,
        "| unused of an untouched 1 GiB range | {} µs | {} µs (madvise) | {:.2} | |",
        us(s.gib_unused_osmem_us),
        us(s.gib_unused_raw_us),
        s.gib_unused_ratio
    )?;
    writeln!(
        out,
        "| {} random pages of a Ready TiB faulted | {} µs / fault | | | held {}, resident +{}: {:.1} B per page |",
        s.scattered_pages,
        us(s.scattered_fault_us),
        kib(s.scattered_metadata_bytes),
        kib(s.scattered_metadata_rss),
        s.scattered_bytes_per_page
    )?;
    writeln!(
        out,
        "| … all mapped back (uniform again) | {} µs / map + used | | | held {}, resident {} (whole arena) |",
        us(s.scattered_back_us),
        kib(s.uniform_metadata_bytes),
        kib(s.uniform_metadata_rss)
    )?;
    writeln!(
        out,
        "| {} × reserve(8 GiB) + drop | {} µs, {:.1} syscalls, {} VMAs | {} µs, {:.0} syscalls, {} VMAs (mmap + munmap) | {:.2} | |",
        s.pool,
        us(s.pool_osmem_us),
        s.pool_osmem_syscalls,
        s.pool_osmem_vmas,
        us(s.pool_raw_us),
        s.pool_raw_syscalls,
        s.pool_raw_vmas,
        s.pool_ratio
    )?;
    Ok(())
}

/// One worker's contention table and rankings.
fn write_contention(out: &mut impl Write, c: &ContentionResult) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "Worker `{}` ({} per op; {} rounds of {} ms windows; {:.0} ops/s beside the control)",
        c.worker, c.unit, c.rounds, c.window_ms, c.control_ops_per_s
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| mutator | worker kept (of control) | worker ops/s | mutator cycles/s | mutator kept (of alone) |"
    )?;
    writeln!(out, "|---|---|---:|---:|---|")?;
    for e in &c.entries {
        writeln!(
            out,
            "| {}{} | {} | {:.0} | {:.0} | {} |",
            e.op,
            if e.op == osmem_bench::CONTROL.name() {
                " (control)"
            } else {
                ""
            },
            pct(&e.relative),
            e.worker_ops_per_s,
            e.mutator_ops_per_s,
            pct(&e.mutator_kept)
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Ranking (most kept first): the worker beside fault strategies {}; beside unused \
         advices {}. The mutator (writer side): fault {}; unused {}.",
        c.fault_ranking, c.unused_ranking, c.mutator_fault_ranking, c.mutator_unused_ranking
    )?;
    Ok(())
}
