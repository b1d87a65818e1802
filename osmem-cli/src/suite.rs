//! `osmem bench`: every measurement of osmem-bench at one level, with a progress bar, turned
//! into plain serializable results with noise-aware rankings.

use indicatif::{ProgressBar, ProgressStyle};
use osmem_bench::{
    batch_vs_loop_within, contention, default_batch_iters, default_iters, footprint, interleaved,
    quick_iters, residency_costs, scale, size_label, tiers, tiers_text, vma_growth, BatchOp,
    Estimate, Flavour, Op, ResidencyPlan, ScalePlan, Worker, BATCH_CONFIGS, COST_GAP, MIN_ITERS,
    SIZES, THROUGHPUT_GAP,
};
use serde::Serialize;
use std::cmp::Ordering;
use std::time::{Duration, Instant};

/// How much to measure.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Each measurement minimally (tests): seconds.
    Smoke,
    /// A tenth of the full run: under a minute (the heap trace at a quarter of its sizes and phases).
    Quick,
    /// The full run: about 4 minutes on 2 cores (the heap trace alone is ~90 s: four runs of its 22 s schedule).
    Full,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Smoke => "smoke",
            Level::Quick => "quick",
            Level::Full => "full",
        }
    }

    fn cost_rounds(self, size: usize) -> usize {
        match self {
            Level::Smoke => MIN_ITERS,
            Level::Quick => quick_iters(size),
            // Each round runs all seven ops; 64 MiB rounds cost ~0.3 s (populating 64 MiB
            // seven times), so that size gets fewer than paired()'s default.
            Level::Full => default_iters(size).min(if size >= 64 << 20 { 40 } else { 2000 }),
        }
    }

    fn cost_budget(self) -> Duration {
        match self {
            Level::Smoke => Duration::from_millis(50),
            Level::Quick => Duration::from_millis(1500),
            Level::Full => Duration::from_secs(20),
        }
    }

    /// Rounds of contention windows. 11 in the full run: the ~95% interval of a median of 11
    /// drops the extreme round on each side (with 8 or fewer it is the whole range).
    fn contention_rounds(self) -> usize {
        match self {
            Level::Smoke => 2,
            Level::Quick => 3,
            Level::Full => 11,
        }
    }

    fn window(self) -> Duration {
        Duration::from_millis(match self {
            Level::Smoke => 5,
            Level::Quick => 30,
            Level::Full => 60,
        })
    }

    fn batch_iters(self, ranges: usize, size: usize) -> usize {
        let n = default_batch_iters(ranges, size);
        match self {
            Level::Smoke => MIN_ITERS,
            Level::Quick => (n / 10).max(MIN_ITERS),
            Level::Full => n,
        }
    }

    fn batch_budget(self) -> Duration {
        match self {
            Level::Smoke => Duration::from_millis(20),
            Level::Quick => Duration::from_millis(800),
            Level::Full => Duration::from_secs(6),
        }
    }
}

/// The fault strategies and unused advices compared, in the order of the `fault` / `unused`
/// knobs' values.
pub const FAULT_OPS: [Op; 4] = [
    Op::FaultGuard,
    Op::FaultProtect,
    Op::FaultGo,
    Op::FaultRemap,
];
pub const UNUSED_OPS: [Op; 3] = [Op::UnusedFree, Op::UnusedDontNeed, Op::UnusedRemap];

/// The mutator range size of the contention measurement (one span of a runtime's heap).
pub const CONTENTION_SIZE: usize = 64 << 10;
/// VMA growth: every other chunk of this mapping is faulted.
pub const VMA_REGION: usize = 64 << 20;
pub const VMA_CHUNK: usize = 64 << 10;
/// The range size of the footprint check.
pub const FOOTPRINT_SIZE: usize = 64 << 10;

/// The strategy's name: the value of its knob (`guard`, `protect`, `dontneed`, …).
pub fn strategy(op: Op) -> &'static str {
    op.name().split('/').nth(1).unwrap_or("?")
}

/// `fault` or `unused`.
pub fn group(op: Op) -> &'static str {
    op.name().split('/').next().unwrap_or("?")
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Est {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

impl From<Estimate> for Est {
    fn from(e: Estimate) -> Est {
        Est {
            median: e.median,
            lo: e.lo,
            hi: e.hi,
            n: e.n,
        }
    }
}

impl Est {
    pub fn estimate(self) -> Estimate {
        Estimate {
            median: self.median,
            lo: self.lo,
            hi: self.hi,
            n: self.n,
        }
    }
}

#[derive(Serialize)]
pub struct BenchResults {
    pub level: Level,
    pub kernel: String,
    pub cpus: usize,
    /// /proc/loadavg's three figures when the run started: how busy the machine was.
    pub load_average: Option<[f64; 3]>,
    pub seconds: f64,
    pub min_gap: Gaps,
    pub costs: Vec<CostCell>,
    pub contention: Vec<ContentionResult>,
    pub vma_growth: Vec<VmaRow>,
    pub footprint: Vec<FootprintRow>,
    pub batch: Vec<BatchRow>,
    /// osmem's own costs at runtime scale (its page-state map), next to the raw calls.
    pub scale: Option<ScaleResult>,
    /// Residency queries: each method through osmem next to the raw method, and the methods
    /// next to each other.
    pub residency: Vec<osmem_bench::ResidencyCost>,
    /// What a large residency scan does to the mutators (the `residency-scan` worker); not
    /// part of any selection check.
    pub residency_contention: Option<ContentionResult>,
    /// The page heap (osmem-heap): release efficiency per cell.
    pub heap_release: Vec<osmem_bench::HeapRelease>,
    /// The page heap: time to the retain goal after a shrink, per mode.
    pub heap_goal: Vec<osmem_bench::HeapGoal>,
    /// The page heap's run search against a first-fit bitmap, per thread count.
    pub heap_alloc: Vec<osmem_bench::HeapAlloc>,
    /// One heap trace on osmem-heap (default, Go-faithful) and the real Go runtime.
    pub trace: Option<TraceResult>,
    /// Every ranking of this run, by name: what repeated runs must agree on.
    pub rankings: Vec<Ranking>,
}

/// osmem's own costs at scale, as measured and serialized by osmem-bench.
pub type ScaleResult = osmem_bench::Scale;

#[derive(Serialize)]
pub struct Gaps {
    pub cost: f64,
    pub throughput: f64,
}

#[derive(Serialize, Clone)]
pub struct Ranking {
    pub name: String,
    pub tiers: String,
}

#[derive(Serialize)]
pub struct CostCell {
    /// `fault` or `unused`.
    pub group: &'static str,
    pub size: usize,
    pub size_label: String,
    pub sibling: bool,
    pub rounds: usize,
    pub entries: Vec<CostEntry>,
    /// Strategies in tiers, cheapest first; within a tier the differences are within noise.
    pub tiers: Vec<Vec<&'static str>>,
    pub ranking: String,
    /// Every pair's ratio (a's time over b's, round by round).
    pub pairs: Vec<PairRatio>,
}

#[derive(Serialize)]
pub struct PairRatio {
    pub a: &'static str,
    pub b: &'static str,
    pub ratio: Est,
}

#[derive(Serialize)]
pub struct CostEntry {
    pub strategy: &'static str,
    pub op: &'static str,
    /// Median time of the operation, µs.
    pub op_us: f64,
    /// Median time of undoing it (unfault: map + used; unused: used), µs.
    pub undo_us: f64,
    /// This strategy's time over the cheapest one's (by median), round by round.
    pub vs_cheapest: Est,
}

#[derive(Serialize)]
pub struct ContentionResult {
    pub worker: &'static str,
    pub unit: &'static str,
    pub window_ms: u64,
    pub rounds: usize,
    pub mutator_size: usize,
    /// The worker's throughput beside the control mutator (DONTNEED only), ops/s.
    pub control_ops_per_s: f64,
    pub entries: Vec<ContentionEntry>,
    pub fault_tiers: Vec<Vec<&'static str>>,
    pub fault_ranking: String,
    pub unused_tiers: Vec<Vec<&'static str>>,
    pub unused_ranking: String,
    /// The writer side: fault strategies by how much of their own rate they keep beside
    /// the worker.
    pub mutator_fault_tiers: Vec<Vec<&'static str>>,
    pub mutator_fault_ranking: String,
    /// The same for the unused advices (the control, DONTNEED, among them).
    pub mutator_unused_tiers: Vec<Vec<&'static str>>,
    pub mutator_unused_ranking: String,
}

#[derive(Serialize)]
pub struct ContentionEntry {
    pub op: &'static str,
    pub strategy: &'static str,
    pub group: &'static str,
    /// The worker's throughput beside this mutator over its throughput beside the control
    /// (1.0 = unhindered); the control itself is exactly 1.
    pub relative: Est,
    pub worker_ops_per_s: f64,
    /// The mutator's own rate, fault+unfault (or unused+used) cycles per second.
    pub mutator_ops_per_s: f64,
    /// The mutator's rate beside the worker over its rate alone (1.0 = unhindered).
    pub mutator_kept: Est,
    /// Per-round relative throughput (for comparisons between mutators).
    #[serde(skip)]
    pub per_round: Vec<f64>,
    /// Per-round mutator_kept.
    #[serde(skip)]
    pub mutator_per_round: Vec<f64>,
}

#[derive(Serialize)]
pub struct VmaRow {
    pub strategy: &'static str,
    pub op: &'static str,
    pub faults: usize,
    pub vmas_added: usize,
    pub per_fault: f64,
    pub elapsed_ms: f64,
    /// How many such faulted holes fit under vm.max_map_count (none when no VMA is added).
    pub holes_until_max_map_count: Option<u64>,
}

#[derive(Serialize)]
pub struct FootprintRow {
    pub op: &'static str,
    pub strategy: &'static str,
    pub pages: usize,
    pub resident_after: usize,
    pub vmas_added: usize,
    pub rss_honest: bool,
}

#[derive(Serialize)]
pub struct BatchRow {
    pub op: &'static str,
    pub ranges: usize,
    pub range_size: usize,
    pub range_size_label: String,
    pub sibling: bool,
    pub iters: usize,
    pub batch_us: f64,
    pub loop_us: f64,
    /// The raw `process_madvise` of the same ranges (what osmem's batch issues), median µs.
    pub raw_batch_us: f64,
    /// The raw `madvise` loop, median µs.
    pub raw_loop_us: f64,
    /// osmem's batch / the raw batch, medians: osmem's own cost on top (target ≤ 1.03).
    pub batch_over_raw: f64,
    /// loop / batch, iteration by iteration.
    pub speedup: Est,
    /// The raw calls' loop / batch (the kernel's own ceiling), medians.
    pub raw_speedup: f64,
}

/// One step of the plan and its weight (expected seconds at the full level, for the bar).
enum Step {
    Costs { size: usize, sibling: bool },
    Contention(Worker),
    Vma(Op),
    Footprint,
    Batch(BatchOp, usize, usize, bool),
    Scale,
    Residency,
    ResidencyContention,
    HeapRelease,
    HeapGoal,
    HeapAlloc,
    Trace,
}

impl Step {
    fn label(&self) -> String {
        match self {
            Step::Costs { size, sibling } => format!(
                "cost per op, {}{}",
                size_label(*size),
                if *sibling { ", sibling" } else { "" }
            ),
            Step::Contention(w) => format!("contention, {} worker", w.name()),
            Step::Vma(op) => format!("VMA growth, {}", op.name()),
            Step::Footprint => "residency after each op".to_owned(),
            Step::Batch(op, r, s, sib) => format!(
                "batch vs loop, {} {}x{}{}",
                op.name().split('/').nth(1).unwrap_or("?"),
                r,
                size_label(*s),
                if *sib { ", sibling" } else { "" }
            ),
            Step::Scale => "metadata at scale (1 TiB, pool, scattered)".to_owned(),
            Step::Residency => {
                "residency queries (1 GiB at 1/50/100%, 64 GiB scattered)".to_owned()
            }
            Step::ResidencyContention => "contention, residency-scan worker".to_owned(),
            Step::HeapRelease => "page heap: release efficiency".to_owned(),
            Step::HeapGoal => "page heap: time to goal".to_owned(),
            Step::HeapAlloc => "page heap: run search vs first fit".to_owned(),
            Step::Trace => "heap trace: osmem-heap and the Go runtime".to_owned(),
        }
    }

    fn weight(&self) -> u64 {
        match self {
            Step::Costs { size, .. } if *size >= 64 << 20 => 14,
            Step::Costs { size, .. } if *size >= 2 << 20 => 4,
            Step::Costs { .. } => 2,
            Step::Contention(_) => 18,
            Step::Vma(_) => 1,
            Step::Footprint => 1,
            Step::Batch(..) => 4,
            Step::Scale => 3,
            Step::Residency => 8,
            Step::ResidencyContention => 18,
            Step::HeapRelease => 12,
            Step::HeapGoal => 12,
            Step::HeapAlloc => 8,
            Step::Trace => 60,
        }
    }
}

fn plan() -> Vec<Step> {
    let mut v = Vec::new();
    for sibling in [false, true] {
        for size in SIZES {
            v.push(Step::Costs { size, sibling });
        }
    }
    for w in Worker::ALL {
        v.push(Step::Contention(w));
    }
    for op in FAULT_OPS {
        if op.is_supported() {
            v.push(Step::Vma(op));
        }
    }
    v.push(Step::Footprint);
    v.push(Step::Scale);
    v.push(Step::Residency);
    v.push(Step::ResidencyContention);
    v.push(Step::HeapRelease);
    v.push(Step::HeapGoal);
    v.push(Step::HeapAlloc);
    v.push(Step::Trace);
    for op in BatchOp::ALL {
        if !op.is_supported() {
            continue;
        }
        for (ranges, size) in BATCH_CONFIGS {
            for sibling in [false, true] {
                v.push(Step::Batch(op, ranges, size, sibling));
            }
        }
    }
    v
}

fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Run the whole plan at `level`, with a progress bar on stderr when `progress` (indicatif
/// draws it only when stderr is a terminal).
pub fn run(level: Level, progress: bool) -> BenchResults {
    let start = Instant::now();
    let load = load_average();
    let steps = plan();
    let total: u64 = steps.iter().map(Step::weight).sum();
    let bar = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:20}] {percent:>3}% {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut r = BenchResults {
        level,
        kernel: osmem::probe().release().to_owned(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average: load,
        seconds: 0.0,
        min_gap: Gaps {
            cost: COST_GAP,
            throughput: THROUGHPUT_GAP,
        },
        costs: Vec::new(),
        contention: Vec::new(),
        vma_growth: Vec::new(),
        footprint: Vec::new(),
        batch: Vec::new(),
        scale: None,
        residency: Vec::new(),
        residency_contention: None,
        heap_release: Vec::new(),
        heap_goal: Vec::new(),
        heap_alloc: Vec::new(),
        trace: None,
        rankings: Vec::new(),
    };
    for step in &steps {
        bar.set_message(step.label());
        match *step {
            Step::Costs { size, sibling } => costs(level, size, sibling, &mut r.costs),
            Step::Contention(w) => r.contention.push(contention_step(level, w)),
            Step::Vma(op) => r.vma_growth.push(vma_step(op)),
            Step::Footprint => r.footprint = footprint_step(),
            Step::Batch(op, ranges, size, sibling) => {
                r.batch.push(batch_step(level, op, ranges, size, sibling))
            }
            Step::Scale => {
                let plan = match level {
                    Level::Full => ScalePlan::FULL,
                    Level::Quick => ScalePlan::QUICK,
                    Level::Smoke => ScalePlan {
                        scattered_pages: 1000,
                        pool: 100,
                        pool_rounds: 1,
                        gib_iters: 4,
                        tib_reps: 1,
                    },
                };
                r.scale = Some(scale(plan));
            }
            Step::Residency => {
                let plan = match level {
                    Level::Full => ResidencyPlan::FULL,
                    Level::Quick => ResidencyPlan::QUICK,
                    Level::Smoke => ResidencyPlan {
                        dense: 16 << 20,
                        sparse: 1 << 30,
                        scattered: 1000,
                        rounds: 2,
                    },
                };
                r.residency = residency_costs(plan);
            }
            Step::ResidencyContention => {
                r.residency_contention = Some(contention_step(level, Worker::ResidencyScan))
            }
            Step::HeapRelease => r.heap_release = osmem_bench::heap_release(heap_plan(level)),
            Step::HeapGoal => r.heap_goal = osmem_bench::heap_goal(heap_plan(level)),
            Step::HeapAlloc => r.heap_alloc = osmem_bench::heap_alloc(heap_plan(level)),
            Step::Trace => r.trace = Some(trace_step(level)),
        }
        bar.inc(step.weight());
    }
    bar.finish_and_clear();
    r.rankings = rankings(&r);
    r.seconds = start.elapsed().as_secs_f64();
    r
}

/// The heap trace: its runs, and how Go was found (or how to get it).
#[derive(Serialize)]
pub struct TraceResult {
    /// Sizes and durations divided by these (1 and 1 in the full run).
    pub size_div: u64,
    pub time_div: u64,
    /// The event hash every run must replay.
    pub hash: String,
    /// The Go runtime used, or why there is none.
    pub go: Result<String, String>,
    pub runs: Vec<TraceRow>,
}

#[derive(Serialize)]
pub struct TraceRow {
    /// `osmem-heap default`, `osmem-heap go-faithful`, `Go 1.x`, `Go 1.x FreeOSMemory`.
    pub runtime: String,
    pub hash: String,
    pub figures: osmem_bench::TraceFigures,
    /// The scavenger's CPU: osmem-heap's background work, or Go's runtime/metrics.
    pub scavenger_s: f64,
    /// What the kernel saw of its madvise-family calls (`None` without perf).
    pub madvise: Option<osmem_bench::MadviseTrace>,
    pub samples: Vec<osmem_bench::TraceSample>,
}

fn trace_step(level: Level) -> TraceResult {
    let (sd, td) = match level {
        Level::Full => (1, 1),
        Level::Quick => (4, 4),
        Level::Smoke => (16, 16),
    };
    let schedule = osmem_bench::trace_schedule(sd, td);
    let (_, hash, _) = osmem_bench::trace_events(sd, td);
    let mut runs = Vec::new();
    let go = match osmem_bench::find_go() {
        None => Err(
            "no Go toolchain found: `bash scripts/go.sh` installs the pinned one (or set OSMEM_GO)"
                .to_owned(),
        ),
        Some(go) => osmem_bench::go_trace(&go, sd, td, false).map(|g| (go, g)),
    };
    let mut gc_ends = Vec::new();
    let go_row = |label: String, g: osmem_bench::GoRun| TraceRow {
        runtime: label,
        hash: g.hash.clone(),
        figures: osmem_bench::trace_figures(&g.samples, &schedule, g.mutator_alone_pages_per_s),
        scavenger_s: g.scavenger_s,
        madvise: g.madvise,
        samples: g.samples,
    };
    let go = match go {
        Ok((path, g)) => {
            let name = g.runtime.clone();
            gc_ends = g.gc_ends.clone();
            runs.push(go_row(format!("{name} (GC at each shrink)"), g));
            if let Ok(b) = osmem_bench::go_trace(&path, sd, td, true) {
                runs.push(go_row(format!("{name} (FreeOSMemory at each shrink)"), b));
            }
            Ok(name)
        }
        Err(e) => Err(e),
    };
    for (mode, ends) in [("default", &[][..]), ("go-faithful", &gc_ends[..])] {
        match trace_in_child(mode, sd, td, ends) {
            Ok(t) => runs.push(TraceRow {
                runtime: format!("osmem-heap {}", t.mode),
                hash: t.hash.clone(),
                figures: osmem_bench::trace_figures(
                    &t.samples,
                    &schedule,
                    t.mutator_alone_pages_per_s,
                ),
                scavenger_s: t.scavenger_s,
                madvise: t.madvise,
                samples: t.samples,
            }),
            Err(e) => eprintln!("heap trace, osmem-heap {mode}: {e}"),
        }
    }
    TraceResult {
        size_div: sd,
        time_div: td,
        hash: format!("{hash:016x}"),
        go,
        runs,
    }
}

/// The environment variable that makes this binary run one osmem-heap trace and print it.
pub const TRACE_CHILD_ENV: &str = "OSMEM_TRACE_CHILD";

/// In the child: `mode,size_div,time_div,tick:goal;tick:goal…` → the run as JSON on stdout.
pub fn trace_child(spec: &str) -> std::process::ExitCode {
    let mut it = spec.splitn(4, ',');
    let mode = match it.next() {
        Some("go-faithful") => osmem_heap::Mode::GoFaithful,
        _ => osmem_heap::Mode::Batched,
    };
    let mut num = || it.next().and_then(|x| x.parse::<u64>().ok()).unwrap_or(1);
    let (sd, td) = (num(), num());
    let ends: Vec<(usize, u64)> = it
        .next()
        .unwrap_or("")
        .split(';')
        .filter_map(|p| {
            let (a, b) = p.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    let run = osmem_bench::trace_run(mode, sd, td, &ends);
    match serde_json::to_writer(std::io::stdout(), &run) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// Run one osmem-heap trace in a fresh process of this binary.
fn trace_in_child(
    mode: &str,
    sd: u64,
    td: u64,
    ends: &[(usize, u64)],
) -> Result<TraceRunOwned, String> {
    let ends: Vec<String> = ends.iter().map(|(t, g)| format!("{t}:{g}")).collect();
    let spec = format!("{mode},{sd},{td},{}", ends.join(";"));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.env(TRACE_CHILD_ENV, spec);
    let (out, madvise) = osmem_bench::traced(cmd).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut run: TraceRunOwned = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    // The calls of the trace itself (not osmem's start-up probe of the advices, nor the C
    // library releasing thread stacks at exit), as on the Go side.
    run.madvise = madvise.map(|m| m.within(run.window.0, run.window.1));
    Ok(run)
}

/// A trace run read back from the child.
#[derive(serde::Deserialize)]
struct TraceRunOwned {
    mode: String,
    hash: String,
    samples: Vec<osmem_bench::TraceSample>,
    mutator_alone_pages_per_s: f64,
    scavenger_s: f64,
    window: (f64, f64),
    #[serde(skip)]
    madvise: Option<osmem_bench::MadviseTrace>,
}

/// The page heap's sizes at each level.
fn heap_plan(level: Level) -> osmem_bench::HeapPlan {
    match level {
        Level::Full => osmem_bench::HeapPlan::FULL,
        Level::Quick => osmem_bench::HeapPlan::QUICK,
        Level::Smoke => osmem_bench::HeapPlan {
            release_bytes: 16 << 20,
            release_rounds: 1,
            goal_live: 32 << 20,
            goal_timeout: Duration::from_millis(500),
            alloc_heap: 1 << 30,
            alloc_ops: 2000,
            alloc_budget: Duration::from_millis(100),
        },
    }
}

/// The ops measured in one interleaved cost run: every supported fault strategy and advice.
fn cost_ops() -> Vec<Op> {
    FAULT_OPS
        .into_iter()
        .chain(UNUSED_OPS)
        .filter(|op| op.is_supported())
        .collect()
}

fn costs(level: Level, size: usize, sibling: bool, out: &mut Vec<CostCell>) {
    let ops = cost_ops();
    let entries: Vec<(Op, Flavour)> = ops.iter().map(|&op| (op, Flavour::Osmem)).collect();
    let run = interleaved(
        &entries,
        size,
        level.cost_rounds(size),
        sibling,
        level.cost_budget(),
    );
    for g in ["fault", "unused"] {
        let idx: Vec<usize> = (0..ops.len()).filter(|&i| group(ops[i]) == g).collect();
        let order = by_pairs(&idx, |a, b| run.ratio(a, b).median);
        let cheapest = order[0];
        let t = canonical(tiers(&order, |a, b| {
            run.ratio(a, b).versus_one(COST_GAP) == Ordering::Equal
        }));
        let mut pairs = Vec::new();
        for (x, &a) in idx.iter().enumerate() {
            for &b in &idx[x + 1..] {
                pairs.push(PairRatio {
                    a: strategy(ops[a]),
                    b: strategy(ops[b]),
                    ratio: run.ratio(a, b).into(),
                });
            }
        }
        let names = |t: &[Vec<usize>]| -> Vec<Vec<&'static str>> {
            t.iter()
                .map(|tier| tier.iter().map(|&i| strategy(ops[i])).collect())
                .collect()
        };
        out.push(CostCell {
            group: g,
            size,
            size_label: size_label(size),
            sibling,
            rounds: run.rounds,
            entries: idx
                .iter()
                .map(|&i| CostEntry {
                    strategy: strategy(ops[i]),
                    op: ops[i].name(),
                    op_us: run.median_ns(i) / 1e3,
                    undo_us: run.undo_median_ns(i) / 1e3,
                    vs_cheapest: run.ratio(i, cheapest).into(),
                })
                .collect(),
            ranking: tiers_text(&t, |i| strategy(ops[i]).to_owned(), " < "),
            tiers: names(&t),
            pairs,
        });
    }
}

fn contention_step(level: Level, w: Worker) -> ContentionResult {
    let mutators: Vec<Op> = cost_ops()
        .into_iter()
        .filter(|&op| op != osmem_bench::CONTROL)
        .collect();
    let c = contention(
        w,
        &mutators,
        CONTENTION_SIZE,
        level.contention_rounds(),
        level.window(),
    );
    let mut entries: Vec<ContentionEntry> = mutators
        .iter()
        .enumerate()
        .map(|(i, &op)| ContentionEntry {
            op: op.name(),
            strategy: strategy(op),
            group: group(op),
            relative: c.relative(i).into(),
            worker_ops_per_s: c.worker_ops_per_s(i),
            mutator_ops_per_s: c.mutator_ops_per_s(i),
            mutator_kept: c.mutator_kept(i).into(),
            per_round: c.relative[i].clone(),
            mutator_per_round: c.mutator_kept[i].clone(),
        })
        .collect();
    // The control, as an entry of the unused group: relative throughput 1 by definition.
    let ctl = osmem_bench::CONTROL;
    let mut ctl_mut = c.control_mutator_rate.clone();
    entries.push(ContentionEntry {
        op: ctl.name(),
        strategy: strategy(ctl),
        group: group(ctl),
        relative: Estimate::exact(1.0).into(),
        worker_ops_per_s: c.control_ops_per_s(),
        mutator_ops_per_s: median(&mut ctl_mut),
        mutator_kept: c.control_mutator_kept().into(),
        per_round: vec![1.0; c.rounds],
        mutator_per_round: c.control_mutator_kept.clone(),
    });
    entries.sort_by_key(|e| {
        FAULT_OPS
            .iter()
            .chain(&UNUSED_OPS)
            .position(|o| o.name() == e.op)
    });
    let (fault_tiers, fault_ranking) = contention_tiers(&entries, "fault", |e| &e.per_round);
    let (unused_tiers, unused_ranking) = contention_tiers(&entries, "unused", |e| &e.per_round);
    let (mutator_fault_tiers, mutator_fault_ranking) =
        contention_tiers(&entries, "fault", |e| &e.mutator_per_round);
    let (mutator_unused_tiers, mutator_unused_ranking) =
        contention_tiers(&entries, "unused", |e| &e.mutator_per_round);
    ContentionResult {
        worker: w.name(),
        unit: w.unit(),
        window_ms: level.window().as_millis() as u64,
        rounds: c.rounds,
        mutator_size: CONTENTION_SIZE,
        control_ops_per_s: c.control_ops_per_s(),
        entries,
        fault_tiers,
        fault_ranking,
        unused_tiers,
        unused_ranking,
        mutator_fault_tiers,
        mutator_fault_ranking,
        mutator_unused_tiers,
        mutator_unused_ranking,
    }
}

fn median(v: &mut [f64]) -> f64 {
    Estimate::of(v).median
}

/// Ratio of two per-round series (same rounds).
pub fn between(a: &[f64], b: &[f64]) -> Estimate {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    Estimate::of(&mut r)
}

fn contention_tiers(
    e: &[ContentionEntry],
    g: &str,
    series: impl Fn(&ContentionEntry) -> &Vec<f64>,
) -> (Vec<Vec<&'static str>>, String) {
    let idx: Vec<usize> = (0..e.len()).filter(|&i| e[i].group == g).collect();
    // Best first: the highest throughput kept (the smallest ratio of the others to it).
    let order = by_pairs(&idx, |a, b| between(series(&e[b]), series(&e[a])).median);
    let t = canonical(tiers(&order, |a, b| {
        between(series(&e[a]), series(&e[b])).clears(THROUGHPUT_GAP) == Ordering::Equal
    }));
    let names = t
        .iter()
        .map(|tier| tier.iter().map(|&i| e[i].strategy).collect())
        .collect();
    (names, tiers_text(&t, |i| e[i].strategy.to_owned(), " > "))
}

/// Order items from the side-by-side ratios alone: by the sum over the others of
/// ln(ratio(i, j)) (the log of the geometric mean ratio), smallest first. `ratio(i, j)` is the
/// median per-round ratio of i to j (lower = better). Sorting each series by its own median
/// instead can contradict the paired ratios when the machine drifts during a run.
fn by_pairs(idx: &[usize], ratio: impl Fn(usize, usize) -> f64) -> Vec<usize> {
    let score = |i: usize| -> f64 {
        idx.iter()
            .filter(|&&j| j != i)
            .map(|&j| ratio(i, j).ln())
            .sum()
    };
    let mut order = idx.to_vec();
    order.sort_by(|&a, &b| score(a).total_cmp(&score(b)));
    order
}

/// Members of a tier in a fixed order (their index: the knobs' order), so that two runs with
/// the same tiers print the same text whatever the order of the medians inside a tier.
fn canonical(mut t: Vec<Vec<usize>>) -> Vec<Vec<usize>> {
    for tier in &mut t {
        tier.sort_unstable();
    }
    t
}

fn vma_step(op: Op) -> VmaRow {
    let g = vma_growth(op, VMA_REGION, VMA_CHUNK);
    let per_fault = g.added() as f64 / g.faults.max(1) as f64;
    let max = osmem::probe().max_map_count;
    VmaRow {
        strategy: strategy(op),
        op: op.name(),
        faults: g.faults,
        vmas_added: g.added(),
        per_fault,
        elapsed_ms: g.elapsed.as_secs_f64() * 1e3,
        holes_until_max_map_count: (g.added() > 0 && max > 0)
            .then(|| (max as f64 / per_fault) as u64),
    }
}

fn footprint_step() -> Vec<FootprintRow> {
    cost_ops()
        .into_iter()
        .map(|op| {
            let f = footprint(op, FOOTPRINT_SIZE);
            FootprintRow {
                op: op.name(),
                strategy: strategy(op),
                pages: f.pages,
                resident_after: f.resident_after,
                vmas_added: f.vmas_added,
                rss_honest: f.rss_honest(),
            }
        })
        .collect()
}

fn batch_step(level: Level, op: BatchOp, ranges: usize, size: usize, sibling: bool) -> BatchRow {
    let b = batch_vs_loop_within(
        op,
        ranges,
        size,
        level.batch_iters(ranges, size),
        sibling,
        level.batch_budget(),
    );
    BatchRow {
        op: op.name(),
        ranges,
        range_size: size,
        range_size_label: size_label(size),
        sibling,
        iters: b.iters,
        batch_us: b.batch_ns / 1e3,
        loop_us: b.loop_ns / 1e3,
        raw_batch_us: b.raw_batch_ns / 1e3,
        raw_loop_us: b.raw_loop_ns / 1e3,
        batch_over_raw: b.batch_ns / b.raw_batch_ns,
        speedup: b.pair_speedup.into(),
        raw_speedup: b.raw_speedup,
    }
}

/// Every ranking, named so that runs can be compared line by line.
fn rankings(r: &BenchResults) -> Vec<Ranking> {
    let mut v = Vec::new();
    for c in &r.costs {
        v.push(Ranking {
            name: format!(
                "cost {} {} {}",
                c.group,
                c.size_label,
                if c.sibling { "sibling" } else { "alone" }
            ),
            tiers: c.ranking.clone(),
        });
    }
    for c in &r.contention {
        for (g, t) in [("fault", &c.fault_ranking), ("unused", &c.unused_ranking)] {
            v.push(Ranking {
                name: format!("readers kept, {} worker, {g}", c.worker),
                tiers: t.clone(),
            });
        }
        for (g, t) in [
            ("fault", &c.mutator_fault_ranking),
            ("unused", &c.mutator_unused_ranking),
        ] {
            v.push(Ranking {
                name: format!("mutator kept beside the {} worker, {g}", c.worker),
                tiers: t.clone(),
            });
        }
    }
    if !r.vma_growth.is_empty() {
        let mut order: Vec<usize> = (0..r.vma_growth.len()).collect();
        order.sort_by_key(|&i| r.vma_growth[i].vmas_added);
        let t = tiers(&order, |a, b| {
            r.vma_growth[a].vmas_added == r.vma_growth[b].vmas_added
        });
        v.push(Ranking {
            name: "VMAs added".to_owned(),
            tiers: tiers_text(&t, |i| r.vma_growth[i].strategy.to_owned(), " < "),
        });
    }
    for b in &r.batch {
        let verdict = match b.speedup.estimate().versus_one(COST_GAP) {
            Ordering::Greater => "batch < loop",
            Ordering::Less => "loop < batch",
            Ordering::Equal => "batch ≈ loop",
        };
        v.push(Ranking {
            name: format!(
                "batch {} {}x{} {}",
                b.op,
                b.ranges,
                b.range_size_label,
                if b.sibling { "sibling" } else { "alone" }
            ),
            tiers: verdict.to_owned(),
        });
    }
    v
}
