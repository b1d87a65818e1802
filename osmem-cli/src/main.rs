//! The `osmem` command.
//!
//! - `osmem probe` prints what the running kernel offers and which strategies osmem selected.
//! - `osmem bench` measures every strategy osmem knows on this kernel (osmem-bench's one
//!   implementation of each measurement) and prints Markdown tables, or JSON.
//! - `osmem report [DIR]` does both, checks osmem's selection against the run's own numbers,
//!   and writes `report.md`, `report.json` and `chart.svg` into DIR.
//!
//! Output goes through a locked stdout with `writeln!`; a closed pipe (`osmem probe | head -1`)
//! ends the program quietly with exit code 0, any other write error with a message and code 1.
//! A failure inside a measurement ends with a one-line message and code 1, never a panic trace.

mod chart;
mod markdown;
mod report;
mod suite;
mod verdict;

use clap::{Args, Parser, Subcommand};
use osmem::{
    FaultStrategy, Overcommit, Probe, ProblemKind, ProcessMadvise, Selected, Thp, ThpMode,
    UnusedAdvice, UnusedHow, BOOL_VALUES, FAULT_VALUES, THP_VALUES, UNUSED_VALUES,
};
use serde::Serialize;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use suite::Level;

#[derive(Parser)]
#[command(
    name = "osmem",
    version,
    about = "The OS memory layer for language runtimes on Linux: probe the kernel, measure \
             every strategy on it, and report which one osmem selects and why",
    after_help = "Knobs are read from OSMEM=key=value,... (see `osmem probe` for those in force)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the kernel's memory capabilities, the strategies osmem selected and the knobs in
    /// force (with any problems in the OSMEM variable).
    Probe(ProbeArgs),
    /// Measure every strategy on this kernel: cost per operation (4 KiB to 64 MiB, alone and
    /// with a spinning sibling thread), mmap_lock contention, VMA growth, batch vs loop.
    /// Markdown tables on stdout (or --json); progress on stderr.
    Bench(BenchArgs),
    /// Probe + bench + the strategies osmem selects, each checked against this run's numbers:
    /// writes report.md, report.json and chart.svg into DIR.
    Report(ReportArgs),
}

#[derive(Args)]
struct ProbeArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LevelArgs {
    /// A shorter run (under a minute; fewer rounds, so more results are ties).
    #[arg(long)]
    quick: bool,
    /// Each measurement minimally (seconds): for tests of the command itself.
    #[arg(long, hide = true, conflicts_with = "quick")]
    smoke: bool,
}

impl LevelArgs {
    fn level(&self) -> Level {
        match (self.smoke, self.quick) {
            (true, _) => Level::Smoke,
            (_, true) => Level::Quick,
            _ => Level::Full,
        }
    }
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    level: LevelArgs,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ReportArgs {
    /// The directory to write report.md, report.json and chart.svg into (created if missing).
    #[arg(default_value = "report")]
    dir: PathBuf,
    #[command(flatten)]
    level: LevelArgs,
}

/// Why the command failed.
enum Failure {
    /// Writing stdout failed (a closed pipe is not a failure: see `main`).
    Output(io::Error),
    /// Anything else, with the message to print.
    Other(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Output(e)
    }
}

fn main() -> ExitCode {
    // The heap trace's osmem-heap runs happen in a fresh process of this binary, as the Go
    // program's do (RSS is the whole process's): see `suite::trace_child`.
    if let Some(spec) = std::env::var_os(suite::TRACE_CHILD_ENV) {
        return suite::trace_child(&spec.to_string_lossy());
    }
    let cli = Cli::parse();
    // A measurement that fails panics inside osmem-bench (a syscall refused, a fallback where
    // none was expected). Say what failed in one line, without a trace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown error".to_owned());
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(io::stderr().lock(), "osmem: measurement failed: {msg}{at}");
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match cli.command {
        Command::Probe(args) => probe(&args).map_err(Failure::from),
        Command::Bench(args) => bench(&args),
        Command::Report(args) => report::run(&args.dir, args.level.level()),
    }));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        // The reader went away (`osmem probe | head -1`): nothing left to say to anyone.
        Ok(Err(Failure::Output(e))) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Ok(Err(Failure::Output(e))) => {
            let _ = writeln!(io::stderr().lock(), "osmem: cannot write output: {e}");
            ExitCode::FAILURE
        }
        Ok(Err(Failure::Other(msg))) => {
            let _ = writeln!(io::stderr().lock(), "osmem: {msg}");
            ExitCode::FAILURE
        }
        // The hook has said what failed.
        Err(_) => ExitCode::FAILURE,
    }
}

fn bench(args: &BenchArgs) -> Result<(), Failure> {
    let level = args.level.level();
    let results = suite::run(level, io::stderr().is_terminal());
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &results).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        writeln!(out, "# osmem bench")?;
        writeln!(out)?;
        write_run_line(&mut out, &results)?;
        writeln!(out)?;
        markdown::write_bench(&mut out, &results, "##")?;
    }
    out.flush()?;
    Ok(())
}

/// One line: kernel, CPUs, level, load, time.
fn write_run_line(out: &mut impl Write, r: &suite::BenchResults) -> io::Result<()> {
    writeln!(
        out,
        "Kernel {}, {} CPUs, level `{}`, {:.0} s{}.",
        r.kernel,
        r.cpus,
        r.level.name(),
        r.seconds,
        r.load_average
            .map(|l| format!(
                ", load average at start {:.2} {:.2} {:.2}",
                l[0], l[1], l[2]
            ))
            .unwrap_or_default()
    )
}

// ---------------------------------------------------------------------------------------------
// The report: everything `probe` says, gathered once, printed as a table or as JSON.

#[derive(Serialize)]
struct ProbeReport {
    kernel: Kernel,
    advice: Advice,
    process_madvise: ProcessMadviseReport,
    anon_name: bool,
    residency: ResidencyReport,
    selected: SelectedReport,
    selected_reasons: Reasons,
    knobs: Knobs,
    /// The raw `OSMEM` variable, `null` when unset.
    osmem_env: Option<String>,
    osmem_env_problems: Vec<EnvProblem>,
    /// Problems beyond those osmem keeps (it keeps 8).
    osmem_env_problems_dropped: usize,
}

/// How residency queries ask the kernel here: the method in use and what each one can do.
#[derive(Serialize)]
struct ResidencyReport {
    /// The method queries use now (`pagemap-scan`, `pagemap`, `mincore`), `null` if none.
    method: Option<&'static str>,
    pagemap_scan: bool,
    scan_guard: bool,
    pagemap: bool,
    pagemap_guard: bool,
    pagemap_pfn: bool,
    mincore: bool,
}

#[derive(Serialize)]
struct Kernel {
    release: String,
    page_size: usize,
    thp: &'static str,
    pmd_size: usize,
    max_map_count: u64,
    overcommit: &'static str,
    /// The number in `/proc/sys/vm/overcommit_memory`, for the table.
    #[serde(skip)]
    overcommit_value: &'static str,
}

#[derive(Serialize)]
struct Advice {
    free: bool,
    dontneed: bool,
    dontneed_locked: bool,
    hugepage: bool,
    nohugepage: bool,
    collapse: bool,
    populate_write: bool,
    guard_install: bool,
}

#[derive(Serialize)]
struct ProcessMadviseReport {
    supported: bool,
    /// `"pidfd_self"`, `"pidfd_open"`, or `null` when unsupported.
    via: Option<&'static str>,
}

#[derive(Serialize)]
struct SelectedReport {
    unused: &'static str,
    fault: &'static str,
    harddecommit: bool,
    prefault: bool,
    thp: &'static str,
}

#[derive(Serialize)]
struct Reasons {
    unused: String,
    fault: String,
    harddecommit: String,
    prefault: String,
    thp: String,
}

#[derive(Serialize)]
struct Knobs {
    unused: &'static str,
    fault: &'static str,
    harddecommit: bool,
    thp: &'static str,
    prefault: bool,
    checked: bool,
}

#[derive(Serialize)]
struct EnvProblem {
    kind: &'static str,
    item: String,
    /// What would have been accepted: the known keys, or the values of the item's key.
    hint: String,
}

fn gather() -> ProbeReport {
    let p = osmem::probe();
    let cfg = osmem::config();
    let sel = osmem::selected();
    let env = osmem::env_report();
    ProbeReport {
        kernel: Kernel {
            release: p.release().to_owned(),
            page_size: p.page_size,
            thp: thp_mode_name(p.thp),
            pmd_size: p.pmd_size,
            max_map_count: p.max_map_count,
            overcommit: overcommit_name(p.overcommit),
            overcommit_value: overcommit_number(p.overcommit),
        },
        advice: Advice {
            free: p.advice.free,
            dontneed: p.advice.dontneed,
            dontneed_locked: p.advice.dontneed_locked,
            hugepage: p.advice.hugepage,
            nohugepage: p.advice.nohugepage,
            collapse: p.advice.collapse,
            populate_write: p.advice.populate_write,
            guard_install: p.advice.guard_install,
        },
        process_madvise: ProcessMadviseReport {
            supported: p.process_madvise != ProcessMadvise::Unsupported,
            via: match p.process_madvise {
                ProcessMadvise::Unsupported => None,
                ProcessMadvise::PidfdSelf => Some("pidfd_self"),
                ProcessMadvise::PidfdOpen => Some("pidfd_open"),
                _ => Some("other"),
            },
        },
        anon_name: p.anon_name,
        residency: ResidencyReport {
            method: osmem::residency_method().map(|m| m.name()),
            pagemap_scan: p.residency.pagemap_scan,
            scan_guard: p.residency.scan_guard,
            pagemap: p.residency.pagemap,
            pagemap_guard: p.residency.pagemap_guard,
            pagemap_pfn: p.residency.pagemap_pfn,
            mincore: p.residency.mincore,
        },
        selected: SelectedReport {
            unused: unused_how_name(sel.unused),
            fault: name_in(FAULT_VALUES, sel.fault),
            harddecommit: sel.harddecommit,
            prefault: sel.prefault,
            thp: name_in(THP_VALUES, sel.thp),
        },
        selected_reasons: reasons(p, &cfg, &sel),
        knobs: Knobs {
            unused: name_in(UNUSED_VALUES, cfg.unused_advice()),
            fault: name_in(FAULT_VALUES, cfg.fault_strategy()),
            harddecommit: cfg.is_harddecommit(),
            thp: name_in(THP_VALUES, cfg.thp_policy()),
            prefault: cfg.is_prefault(),
            checked: cfg.is_checked(),
        },
        osmem_env: std::env::var_os("OSMEM").map(|v| v.to_string_lossy().into_owned()),
        osmem_env_problems: env
            .problems()
            .iter()
            .map(|pr| EnvProblem {
                kind: problem_kind_name(pr.kind()),
                item: pr.item().to_owned(),
                hint: problem_hint(pr.kind(), pr.item()),
            })
            .collect(),
        osmem_env_problems_dropped: env.dropped(),
    }
}

/// The spelling of a knob value, from the library's own table (the one `OSMEM` is parsed with).
fn name_in<T: PartialEq + Copy>(table: &[(&'static str, T)], v: T) -> &'static str {
    table
        .iter()
        .find(|&&(_, x)| x == v)
        .map_or("?", |&(name, _)| name)
}

/// The knobs `OSMEM` accepts and their values, from the library's tables.
fn knob_values(key: &str) -> Option<Vec<&'static str>> {
    fn names<T>(t: &[(&'static str, T)]) -> Vec<&'static str> {
        t.iter().map(|&(n, _)| n).collect()
    }
    match key {
        "unused" => Some(names(UNUSED_VALUES)),
        "fault" => Some(names(FAULT_VALUES)),
        "harddecommit" | "prefault" | "checked" => Some(names(BOOL_VALUES)),
        "thp" => Some(names(THP_VALUES)),
        _ => None,
    }
}

fn problem_hint(kind: ProblemKind, item: &str) -> String {
    let keys = format!("known keys: {}", osmem::KEYS.join(", "));
    match kind {
        ProblemKind::UnknownKey => keys,
        ProblemKind::Malformed => format!("expected key=value; {keys}"),
        ProblemKind::BadValue => {
            let key = item.split('=').next().unwrap_or("").trim();
            match knob_values(key) {
                Some(v) => format!("{key} accepts: {}", v.join(", ")),
                None => keys,
            }
        }
        ProblemKind::RepeatedKey => {
            let key = item.split('=').next().unwrap_or("").trim();
            format!("{key} is given more than once; the last value holds")
        }
        _ => keys,
    }
}

fn problem_kind_name(k: ProblemKind) -> &'static str {
    match k {
        ProblemKind::UnknownKey => "unknown_key",
        ProblemKind::BadValue => "bad_value",
        ProblemKind::Malformed => "malformed",
        ProblemKind::RepeatedKey => "repeated_key",
        _ => "other",
    }
}

fn thp_mode_name(t: ThpMode) -> &'static str {
    match t {
        ThpMode::Always => "always",
        ThpMode::Madvise => "madvise",
        ThpMode::Never => "never",
        ThpMode::Unavailable => "unavailable",
        _ => "other",
    }
}

fn overcommit_name(o: Overcommit) -> &'static str {
    match o {
        Overcommit::Heuristic => "heuristic",
        Overcommit::Always => "always",
        Overcommit::Never => "never",
        Overcommit::Unknown => "unknown",
        _ => "other",
    }
}

fn overcommit_number(o: Overcommit) -> &'static str {
    match o {
        Overcommit::Heuristic => "0",
        Overcommit::Always => "1",
        Overcommit::Never => "2",
        Overcommit::Unknown => "?",
        _ => "?",
    }
}

fn unused_how_name(u: UnusedHow) -> &'static str {
    match u {
        UnusedHow::Free => "free",
        UnusedHow::DontNeed => "dontneed",
        UnusedHow::DontNeedLocked => "dontneed-locked",
        UnusedHow::Remap => "remap",
        _ => "other",
    }
}

/// One line per selected strategy: why it is the one in force.
fn reasons(p: &Probe, cfg: &osmem::Config, sel: &Selected) -> Reasons {
    let unused = match (sel.unused, cfg.unused_advice()) {
        (UnusedHow::Free, _) if !p.advice.free => {
            "unused=free asked, but MADV_FREE failed the probe: each call will fall back to \
             MADV_DONTNEED"
                .to_owned()
        }
        (UnusedHow::Free, _) => "unused=free asked: MADV_FREE, cheapest, but RSS does not drop \
                                 and old contents may survive until reclaim"
            .to_owned(),
        (UnusedHow::DontNeed, UnusedAdvice::Free) => {
            "unused=free asked, but MADV_FREE was downgraded: MADV_DONTNEED instead".to_owned()
        }
        (UnusedHow::DontNeed, _) if !p.advice.dontneed => {
            "MADV_DONTNEED failed the probe: each call will fall back to mmap(RW, MAP_FIXED)"
                .to_owned()
        }
        (UnusedHow::DontNeed | UnusedHow::DontNeedLocked, _) => {
            "MADV_DONTNEED (default, like Go >= 1.16): RSS drops at once and the range reads \
             zero (mlocked ranges: MADV_DONTNEED_LOCKED, which keeps the lock)"
                .to_owned()
        }
        (UnusedHow::Remap, UnusedAdvice::Remap) => {
            "unused=remap asked: mmap(RW, MAP_FIXED) replaces the range (no madvise)".to_owned()
        }
        (UnusedHow::Remap, _) => "madvise was downgraded: mmap(RW, MAP_FIXED) replaces the \
                                  range (last link)"
            .to_owned(),
        (other, _) => format!("{other:?}"),
    };

    let guard = p.advice.guard_install;
    let fault = match (sel.fault, cfg.fault_strategy()) {
        (FaultStrategy::Guard, FaultStrategy::Auto) => {
            "guard markers available (Linux >= 6.13): no VMA split, no mmap_lock(W)".to_owned()
        }
        (FaultStrategy::Guard, _) if !guard => "fault=guard asked, but guard markers failed the \
                                                probe: each call falls back to DONTNEED + \
                                                mprotect(NONE)"
            .to_owned(),
        (FaultStrategy::Guard, _) => {
            "fault=guard asked: guard markers, no VMA split, no mmap_lock(W)".to_owned()
        }
        (FaultStrategy::Protect, FaultStrategy::Auto) if guard => {
            "guard markers were downgraded: MADV_DONTNEED then mprotect(NONE), one TLB shootdown"
                .to_owned()
        }
        (FaultStrategy::Protect, FaultStrategy::Auto) => {
            "no guard markers here (need Linux >= 6.13): MADV_DONTNEED then mprotect(NONE), one \
             TLB shootdown"
                .to_owned()
        }
        (FaultStrategy::Protect, _) => {
            "fault=protect asked: MADV_DONTNEED then mprotect(NONE), one TLB shootdown".to_owned()
        }
        (FaultStrategy::Go, _) => "fault=go asked: Go's order, mprotect(NONE) then \
                                   MADV_DONTNEED, two TLB shootdowns (for comparison)"
            .to_owned(),
        (FaultStrategy::Remap, FaultStrategy::Auto) => "MADV_DONTNEED unavailable here (no \
                                                        madvise, or refused): mmap(PROT_NONE, \
                                                        MAP_FIXED), the whole zap under \
                                                        mmap_lock(W)"
            .to_owned(),
        (FaultStrategy::Remap, _) => "fault=remap asked: mmap(PROT_NONE, MAP_FIXED), the whole \
                                      zap under mmap_lock(W), returns the commit charge"
            .to_owned(),
        (FaultStrategy::Auto, _) => "unresolved (library bug: selected() returned auto)".to_owned(),
        (other, _) => format!("{other:?}"),
    };

    let harddecommit = if sel.harddecommit {
        "harddecommit=1: unused also makes ranges PROT_NONE, used makes them RW again".to_owned()
    } else {
        "default: unused ranges stay RW and read zero after used".to_owned()
    };

    let prefault = match (sel.prefault, p.advice.populate_write) {
        (false, _) => "default: pages fault in on first touch".to_owned(),
        (true, true) => "prefault=1: used populates the range with MADV_POPULATE_WRITE".to_owned(),
        (true, false) => {
            "prefault=1, MADV_POPULATE_WRITE unavailable: used touches each page".to_owned()
        }
    };

    let thp = match sel.thp {
        Thp::Default => format!(
            "default: huge-page hints go to the kernel (THP mode {})",
            thp_mode_name(p.thp)
        ),
        Thp::Never => "thp=never (Go's disablethp): hints are counted no-ops, new reservations \
                       get MADV_NOHUGEPAGE"
            .to_owned(),
        other => format!("{other:?}"),
    };

    Reasons {
        unused,
        fault,
        harddecommit,
        prefault,
        thp,
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

fn probe(args: &ProbeArgs) -> io::Result<()> {
    let report = gather();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::from)?;
        writeln!(out)?;
        out.flush()?;
        // The problems are in the JSON; say them on stderr too, so a person piping the JSON
        // into a tool still sees them.
        let mut err = io::stderr().lock();
        for line in warnings(&report) {
            let _ = writeln!(err, "{line}");
        }
        Ok(())
    } else {
        write_table(&mut out, &report)?;
        out.flush()
    }
}

fn warnings(r: &ProbeReport) -> Vec<String> {
    let mut v: Vec<String> = r
        .osmem_env_problems
        .iter()
        .map(|p| {
            format!(
                "warning: OSMEM item {:?} ignored: {} ({})",
                p.item,
                p.kind.replace('_', " "),
                p.hint
            )
        })
        .collect();
    if r.osmem_env_problems_dropped > 0 {
        v.push(format!(
            "warning: OSMEM has {} more bad item(s), not kept",
            r.osmem_env_problems_dropped
        ));
    }
    v
}

fn yes(b: bool) -> &'static str {
    if b {
        "supported"
    } else {
        "unsupported"
    }
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn size(bytes: usize) -> String {
    const MIB: usize = 1 << 20;
    const KIB: usize = 1 << 10;
    if bytes == 0 {
        "unknown".to_owned()
    } else if bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes % KIB == 0 {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} B")
    }
}

fn write_table(out: &mut impl Write, r: &ProbeReport) -> io::Result<()> {
    let k = &r.kernel;
    writeln!(out, "Kernel")?;
    writeln!(out, "  release               {}", k.release)?;
    writeln!(out, "  page size             {}", size(k.page_size))?;
    writeln!(out, "  THP mode              {}", k.thp)?;
    writeln!(out, "  PMD size              {}", size(k.pmd_size))?;
    let max_map = if k.max_map_count == 0 {
        "unknown".to_owned()
    } else {
        k.max_map_count.to_string()
    };
    writeln!(out, "  vm.max_map_count      {max_map}")?;
    writeln!(
        out,
        "  vm.overcommit_memory  {} ({})",
        k.overcommit_value, k.overcommit
    )?;

    let a = &r.advice;
    writeln!(out)?;
    writeln!(out, "Capabilities (probed on a scratch page)")?;
    for (name, ok) in [
        ("MADV_FREE", a.free),
        ("MADV_DONTNEED", a.dontneed),
        ("MADV_DONTNEED_LOCKED", a.dontneed_locked),
        ("MADV_HUGEPAGE", a.hugepage),
        ("MADV_NOHUGEPAGE", a.nohugepage),
        ("MADV_COLLAPSE", a.collapse),
        ("MADV_POPULATE_WRITE", a.populate_write),
        ("MADV_GUARD_INSTALL", a.guard_install),
    ] {
        writeln!(out, "  {name:<22}{}", yes(ok))?;
    }
    let pm = match r.process_madvise.via {
        Some("pidfd_self") => "supported (via PIDFD_SELF)",
        Some(_) => "supported (via pidfd_open)",
        None => "unsupported",
    };
    writeln!(out, "  {:<22}{pm}", "process_madvise(self)")?;
    writeln!(out, "  {:<22}{}", "PR_SET_VMA_ANON_NAME", yes(r.anon_name))?;
    let rs = &r.residency;
    let yn = |b: bool| if b { "yes" } else { "no" };
    let scan = match (rs.pagemap_scan, rs.scan_guard) {
        (false, _) => "unsupported".to_owned(),
        (true, true) => "supported (with guard markers)".to_owned(),
        (true, false) => "supported (guard markers read as swapped)".to_owned(),
    };
    writeln!(out, "  {:<22}{scan}", "PAGEMAP_SCAN ioctl")?;
    let pagemap = if rs.pagemap {
        format!(
            "supported (guard bit: {}, frame numbers: {})",
            yn(rs.pagemap_guard),
            yn(rs.pagemap_pfn)
        )
    } else {
        "unsupported".to_owned()
    };
    writeln!(out, "  {:<22}{pagemap}", "/proc/self/pagemap")?;
    writeln!(out, "  {:<22}{}", "mincore", yes(rs.mincore))?;
    writeln!(
        out,
        "  {:<22}{}",
        "residency queries use",
        rs.method.unwrap_or("nothing (no method works)")
    )?;

    let s = &r.selected;
    let why = &r.selected_reasons;
    writeln!(out)?;
    writeln!(out, "Selected strategies")?;
    for (name, value, reason) in [
        ("unused", s.unused, &why.unused),
        ("fault", s.fault, &why.fault),
        ("harddecommit", on(s.harddecommit), &why.harddecommit),
        ("prefault", on(s.prefault), &why.prefault),
        ("thp", s.thp, &why.thp),
    ] {
        writeln!(out, "  {name:<13} {value:<9} {reason}")?;
    }

    let kn = &r.knobs;
    writeln!(out)?;
    writeln!(out, "Knobs in force")?;
    writeln!(
        out,
        "  unused={} fault={} harddecommit={} thp={} prefault={} checked={}",
        kn.unused, kn.fault, kn.harddecommit as u8, kn.thp, kn.prefault as u8, kn.checked as u8
    )?;
    match &r.osmem_env {
        Some(v) => writeln!(out, "  OSMEM={v:?}")?,
        None => writeln!(out, "  OSMEM is not set (built-in defaults)")?,
    }
    let warn = warnings(r);
    if !warn.is_empty() {
        writeln!(out)?;
        for line in warn {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
