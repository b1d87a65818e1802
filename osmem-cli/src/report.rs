//! `osmem report [DIR]`: probe + bench + verdicts, written as report.md, report.json and
//! chart.svg.

use crate::suite::{self, BenchResults, Level};
use crate::verdict::{self, Verdict, Verdicts};
use crate::{Failure, ProbeReport};
use serde::Serialize;
use std::io::{self, IsTerminal, Write};
use std::path::Path;

#[derive(Serialize)]
struct ReportJson<'a> {
    /// The format of this file.
    osmem_report: u32,
    probe: &'a ProbeReport,
    bench: &'a BenchResults,
    verdicts: &'a Verdicts,
}

fn cannot(what: &str, path: &Path, e: io::Error) -> Failure {
    Failure::Other(format!("cannot {what} {}: {e}", path.display()))
}

/// Create `dir` and make sure a file can be written in it, before spending minutes measuring.
fn prepare_dir(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir).map_err(|e| cannot("create the report directory", dir, e))?;
    let probe = dir.join(".osmem-report-write-test");
    std::fs::write(&probe, b"").map_err(|e| cannot("write into the report directory", dir, e))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Failure> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| cannot("write", &path, e))
}

pub fn run(dir: &Path, level: Level) -> Result<(), Failure> {
    prepare_dir(dir)?;
    let probe = crate::gather();
    let bench = suite::run(level, io::stderr().is_terminal());
    let verdicts = verdict::all(&bench);

    let json = serde_json::to_vec_pretty(&ReportJson {
        osmem_report: 1,
        probe: &probe,
        bench: &bench,
        verdicts: &verdicts,
    })
    .map_err(|e| Failure::Other(format!("cannot serialize the report: {e}")))?;
    let mut md = Vec::new();
    write_markdown(&mut md, &probe, &bench, &verdicts)
        .map_err(|e| Failure::Other(format!("cannot format report.md: {e}")))?;
    let svg = crate::chart::svg(&bench, &verdicts).map_err(Failure::Other)?;

    write_file(dir, "report.json", &json)?;
    write_file(dir, "report.md", &md)?;
    write_file(dir, "chart.svg", svg.as_bytes())?;

    let stdout = io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        "osmem report ({} run, {:.0} s) written to {}: report.md, report.json, chart.svg",
        level.name(),
        bench.seconds,
        dir.display()
    )?;
    for v in [&verdicts.fault, &verdicts.unused, &verdicts.batch] {
        writeln!(
            out,
            "  {:<7} osmem selects {:<16} {}",
            v.topic,
            v.selected,
            if v.agrees {
                "the numbers agree".to_owned()
            } else if v.favoured.is_empty() {
                "no candidate meets every criterion (see report.md)".to_owned()
            } else {
                format!(
                    "the numbers favour {} (see report.md)",
                    v.favoured.join(" or ")
                )
            }
        )?;
    }
    out.flush()?;
    Ok(())
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}

fn write_verdict_line(out: &mut impl Write, v: &Verdict) -> io::Result<()> {
    if v.agrees {
        writeln!(
            out,
            "- **{} = {}**, because {}. From this run: {}.",
            v.topic, v.selected, v.selected_because, v.summary
        )
    } else {
        writeln!(out, "- **{} = {}**: {}.", v.topic, v.selected, v.summary)
    }
}

fn write_candidates(out: &mut impl Write, v: &Verdict, ids: &[&str]) -> io::Result<()> {
    writeln!(out)?;
    write!(out, "| {} |", v.topic)?;
    for id in ids {
        write!(out, " {id} |")?;
    }
    writeln!(out, " all |")?;
    write!(out, "|---|")?;
    for _ in ids {
        write!(out, "---|")?;
    }
    writeln!(out, "---|")?;
    for c in &v.candidates {
        let mark = if c.name == v.selected {
            format!("{} (selected)", c.name)
        } else {
            c.name.clone()
        };
        write!(out, "| {mark} |")?;
        for id in ids {
            match c.checks.iter().find(|k| k.id == *id) {
                Some(k) => write!(out, " {}: {} |", yes(k.passed), k.detail)?,
                None => write!(out, " — |")?,
            }
        }
        writeln!(out, " {} |", yes(c.passes_all))?;
    }
    Ok(())
}

fn write_markdown(
    out: &mut impl Write,
    probe: &ProbeReport,
    r: &BenchResults,
    v: &Verdicts,
) -> io::Result<()> {
    writeln!(out, "# osmem report")?;
    writeln!(out)?;
    crate::write_run_line(out, r)?;
    writeln!(
        out,
        "Made by `osmem report{}`; every number below comes from this one run.",
        match r.level {
            Level::Full => "",
            Level::Quick => " --quick",
            Level::Smoke => " --smoke",
        }
    )?;
    writeln!(out)?;
    writeln!(out, "## Selected strategies, checked against this run")?;
    writeln!(out)?;
    writeln!(
        out,
        "| decision | osmem selects | the numbers favour | agree |"
    )?;
    writeln!(out, "|---|---|---|---|")?;
    for x in [&v.fault, &v.unused, &v.batch] {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            x.topic,
            x.selected,
            if x.favoured.is_empty() {
                "none meets every criterion".to_owned()
            } else {
                x.favoured.join(", ")
            },
            yes(x.agrees)
        )?;
    }
    writeln!(out)?;
    for x in [&v.fault, &v.unused, &v.batch] {
        write_verdict_line(out, x)?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "![cost, contention, VMAs and batching at a glance](chart.svg)"
    )?;
    writeln!(out)?;
    writeln!(out, "## How to read this report")?;
    writeln!(out)?;
    writeln!(
        out,
        "- Every comparison is a **ratio taken side by side in this run**: strategies \
         alternate round by round on the same range (costs), contention windows alternate \
         with control windows, batch and loop alternate. Absolute µs depend on the machine and \
         its load; the ratios and rankings are what carry over."
    )?;
    writeln!(
        out,
        "- `1.70 [1.69–1.73]` is the median of the per-round ratios and its ~95% interval. \
         Rankings use tiers, in order of the side-by-side ratios: `guard < protect ≈ go` means \
         guard is clearly cheaper than protect, and the run cannot separate go from protect, \
         the first of its tier (their ratio's interval contains 1, or they differ by less \
         than {:.0}%; for contention ratios the whole interval must clear {:.0}%). Every member \
         of a tier is within that of the tier's first, so \"top tier\" means \"cannot be told \
         from the best\".",
        100.0 * r.min_gap.cost,
        100.0 * r.min_gap.throughput
    )?;
    writeln!(
        out,
        "- Contention: `worker kept` is the throughput of a thread that takes mmap_lock for \
         reading, beside a mutator using the strategy, as a share of its throughput beside a \
         control mutator that never takes the lock for writing; `mutator kept` is the other \
         side of the lock: the mutator's own rate beside the worker, as a share of its rate \
         alone."
    )?;
    writeln!(
        out,
        "- The verdict table checks each candidate against the criteria below; \"the numbers \
         favour\" lists every candidate meeting all of them. When osmem's selection is not \
         among them, the verdict says so and gives osmem's reason."
    )?;
    writeln!(out)?;
    writeln!(out, "## Criteria")?;
    writeln!(out)?;
    for c in &v.criteria {
        writeln!(out, "- **{}** ({}): {}", c.id, c.topic, c.text)?;
    }
    write_candidates(out, &v.fault, &["F1", "F2", "F3", "F4"])?;
    write_candidates(out, &v.unused, &["U1", "U2", "U3", "U4"])?;
    write_candidates(out, &v.batch, &["B1", "B2"])?;
    writeln!(out)?;
    writeln!(out, "## Kernel (`osmem probe`)")?;
    writeln!(out)?;
    writeln!(out, "```text")?;
    crate::write_table(out, probe)?;
    writeln!(out, "```")?;
    writeln!(out)?;
    writeln!(out, "## Measurements")?;
    writeln!(out)?;
    crate::markdown::write_bench(out, r, "###")?;
    Ok(())
}
