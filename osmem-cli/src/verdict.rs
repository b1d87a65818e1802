//! The strategies osmem selects, checked against the run's own numbers.
//!
//! For each decision (fault strategy, unused advice, batching) every candidate is checked
//! against explicit criteria; the candidates that meet all of them are what "the numbers
//! favour". The verdict says whether osmem's actual selection (`osmem::selected()`) is among
//! them, and if it is not, says so plainly, with osmem's reason for its choice.

use crate::suite::{BenchResults, CostCell, Est, FAULT_OPS, UNUSED_OPS};
use osmem::{FaultStrategy, ProcessMadvise, UnusedAdvice};
use osmem_bench::{Estimate, COST_GAP};
use serde::Serialize;
use std::cmp::Ordering;

/// A candidate passes the cost criterion in a cell when its median time is at most this
/// factor times the reference's (or the run cannot tell them apart).
pub const COST_SLACK: f64 = 1.25;

#[derive(Serialize)]
pub struct Verdicts {
    pub fault: Verdict,
    pub unused: Verdict,
    pub batch: Verdict,
    /// The criteria, as defined (id, text).
    pub criteria: Vec<Criterion>,
}

#[derive(Serialize, Clone)]
pub struct Criterion {
    pub id: &'static str,
    pub topic: &'static str,
    pub text: String,
}

#[derive(Serialize)]
pub struct Verdict {
    pub topic: &'static str,
    /// What osmem uses now.
    pub selected: String,
    /// osmem's own reason (knob, kernel capability).
    pub selected_because: String,
    /// Candidates meeting every criterion, best first.
    pub favoured: Vec<String>,
    /// Whether `selected` meets every criterion.
    pub agrees: bool,
    /// One paragraph: why, from this run's numbers.
    pub summary: String,
    pub candidates: Vec<Candidate>,
}

#[derive(Serialize)]
pub struct Candidate {
    pub name: String,
    pub passes_all: bool,
    pub checks: Vec<Check>,
}

#[derive(Serialize)]
pub struct Check {
    pub id: &'static str,
    pub passed: bool,
    pub detail: String,
}

pub fn criteria() -> Vec<Criterion> {
    let slack = format!("{COST_SLACK:.2}");
    let gap = format!("{:.0}%", COST_GAP * 100.0);
    vec![
        Criterion {
            id: "F1",
            topic: "fault",
            text: "VMAs: faulting every other 64 KiB chunk of a 64 MiB mapping adds the fewest \
                   VMAs of all strategies (each VMA counts against vm.max_map_count; at the \
                   limit mprotect and munmap fail with ENOMEM)."
                .to_owned(),
        },
        Criterion {
            id: "F2",
            topic: "fault",
            text: "Readers: for every worker kind, the worker's throughput beside this strategy \
                   (relative to the control) is in the top tier of the fault strategies."
                .to_owned(),
        },
        Criterion {
            id: "F3",
            topic: "fault",
            text: "Writer: for every worker kind, the mutator's own rate beside the worker \
                   (relative to its rate alone) is in the top tier of the fault strategies."
                .to_owned(),
        },
        Criterion {
            id: "F4",
            topic: "fault",
            text: format!(
                "Cost: at every size, alone and with a sibling, the fault costs at most \
                 {slack}× the cheapest strategy's (median of the per-round ratios), or the run \
                 cannot tell the two apart."
            ),
        },
        Criterion {
            id: "U1",
            topic: "unused",
            text: "RSS-honest: right after the call no page of the range is resident \
                   (mincore), so RSS and every monitor see the memory returned."
                .to_owned(),
        },
        Criterion {
            id: "U2",
            topic: "unused",
            text: "Readers: for every worker kind, the worker's throughput beside this advice \
                   is in the top tier of the unused advices (the control, DONTNEED, is 100% by \
                   definition)."
                .to_owned(),
        },
        Criterion {
            id: "U3",
            topic: "unused",
            text: "Writer: for every worker kind, the mutator's own rate beside the worker \
                   (relative to its rate alone) is in the top tier of the unused advices."
                .to_owned(),
        },
        Criterion {
            id: "U4",
            topic: "unused",
            text: format!(
                "Cost: at every size, alone and with a sibling, it costs at most {slack}× the \
                 cheapest advice that meets U1, or the run cannot tell the two apart."
            ),
        },
        Criterion {
            id: "B1",
            topic: "batch",
            text: "process_madvise works on the own process here (probe).".to_owned(),
        },
        Criterion {
            id: "B2",
            topic: "batch",
            text: format!(
                "In every configuration measured, one osmem Batch is faster than the loop of \
                 per-range calls: the loop/batch ratio's interval lies above 1 and its median \
                 is at least {gap} above 1."
            ),
        },
    ]
}

fn find(v: &[String], s: &str) -> bool {
    v.iter().any(|x| x == s)
}

fn pct(e: &Est) -> String {
    format!("{:.0}%", 100.0 * e.median)
}

fn mode(c: &CostCell) -> String {
    format!(
        "{} {}",
        c.size_label,
        if c.sibling { "sibling" } else { "alone" }
    )
}

/// The ratio a/b in a cost cell, from its pair list (stored once per unordered pair).
fn pair(c: &CostCell, a: &str, b: &str) -> Option<Estimate> {
    if a == b {
        return Some(Estimate::exact(1.0));
    }
    c.pairs.iter().find_map(|p| {
        if p.a == a && p.b == b {
            Some(p.ratio.estimate())
        } else if p.a == b && p.b == a {
            let e = p.ratio.estimate();
            Some(Estimate {
                median: 1.0 / e.median,
                lo: 1.0 / e.hi,
                hi: 1.0 / e.lo,
                n: e.n,
            })
        } else {
            None
        }
    })
}

/// The cheapest of `among` in a cell, judged from the side-by-side ratios (as the rankings
/// are): the smallest sum of ln(ratio to each other candidate).
fn cheapest<'a>(c: &CostCell, among: &[&'a str]) -> Option<&'a str> {
    let score = |s: &str| -> f64 {
        among
            .iter()
            .filter_map(|&o| pair(c, s, o))
            .map(|e| e.median.ln())
            .sum()
    };
    among
        .iter()
        .copied()
        .filter(|s| c.entries.iter().any(|e| e.strategy == *s))
        .min_by(|a, b| score(a).total_cmp(&score(b)))
}

/// The cost criterion for `s` against the cheapest of `among`: (passed, worst ratio, where).
fn cost_check(r: &BenchResults, group: &str, s: &str, among: &[&str]) -> (bool, f64, String) {
    let mut ok = true;
    let mut worst = (1.0f64, String::new());
    let mut fails = Vec::new();
    for c in r.costs.iter().filter(|c| c.group == group) {
        let Some(best) = cheapest(c, among) else {
            continue;
        };
        let Some(e) = pair(c, s, best) else { continue };
        let pass = e.median <= COST_SLACK || e.versus_one(COST_GAP) == Ordering::Equal;
        if e.median > worst.0 {
            worst = (e.median, mode(c));
        }
        if !pass {
            ok = false;
            fails.push(format!("{:.2}× {best} at {}", e.median, mode(c)));
        }
    }
    let detail = if ok {
        if worst.1.is_empty() {
            "the cheapest everywhere".to_owned()
        } else {
            format!("at most {:.2}× the cheapest (at {})", worst.0, worst.1)
        }
    } else {
        format!("over {COST_SLACK:.2}×: {}", fails.join(", "))
    };
    (ok, worst.0, detail)
}

/// Whether `s` is in the top tier of every contention ranking picked by `tiers`.
fn contention_check(
    r: &BenchResults,
    group: &str,
    s: &str,
    tiers: impl Fn(&crate::suite::ContentionResult) -> &Vec<Vec<&'static str>>,
    value: impl Fn(&crate::suite::ContentionEntry) -> &Est,
) -> (bool, String) {
    let mut ok = true;
    let mut parts = Vec::new();
    for c in &r.contention {
        let t = tiers(c);
        let top = t.first().is_some_and(|t| t.contains(&s));
        ok &= top;
        let mine = c
            .entries
            .iter()
            .find(|e| e.strategy == s && e.group == group);
        let best: Vec<String> = t
            .first()
            .map(|t| t.iter().map(|x| x.to_string()).collect())
            .unwrap_or_default();
        parts.push(format!(
            "{}: {}{}",
            c.worker,
            mine.map_or("?".to_owned(), |e| pct(value(e))),
            if top {
                " (top tier)".to_owned()
            } else {
                format!(" (top tier: {})", best.join(" ≈ "))
            }
        ));
    }
    (ok, parts.join("; "))
}

fn finish(
    topic: &'static str,
    selected: String,
    selected_because: String,
    mut candidates: Vec<(Candidate, f64)>,
    why_selected: String,
) -> Verdict {
    // Best first among those that pass: by the worst cost ratio, then by name order.
    let mut favoured: Vec<(String, f64)> = candidates
        .iter()
        .filter(|(c, _)| c.passes_all)
        .map(|(c, w)| (c.name.clone(), *w))
        .collect();
    favoured.sort_by(|a, b| a.1.total_cmp(&b.1));
    let favoured: Vec<String> = favoured.into_iter().map(|(n, _)| n).collect();
    let agrees = find(&favoured, &selected);
    let summary = if agrees {
        why_selected
    } else {
        let failed: Vec<String> = candidates
            .iter()
            .find(|(c, _)| c.name == selected)
            .map(|(c, _)| {
                c.checks
                    .iter()
                    .filter(|k| !k.passed)
                    .map(|k| format!("{} ({})", k.id, k.detail))
                    .collect()
            })
            .unwrap_or_default();
        let numbers = if favoured.is_empty() {
            "no candidate meets every criterion on this machine".to_owned()
        } else {
            format!("the numbers favour {}", favoured.join(" or "))
        };
        let fails = if failed.is_empty() {
            String::new()
        } else {
            format!(" (it fails {})", failed.join("; "))
        };
        format!("{numbers}; osmem selects {selected}{fails} because {selected_because}")
    };
    Verdict {
        topic,
        selected,
        selected_because,
        favoured,
        agrees,
        summary,
        candidates: candidates.drain(..).map(|(c, _)| c).collect(),
    }
}

/// Why osmem chose the fault strategy it did: the knob, or its fixed rule and the kernel.
fn fault_because(sel: FaultStrategy, knob: FaultStrategy, guard: bool) -> String {
    let name = |s| crate::name_in(osmem::FAULT_VALUES, s);
    match knob {
        FaultStrategy::Auto if sel == FaultStrategy::Guard => {
            "its rule (fault=auto) takes guard markers wherever the kernel has them".to_owned()
        }
        FaultStrategy::Auto if !guard => "this kernel has no guard markers (Linux >= 6.13), and \
                                          its rule (fault=auto) falls back to DONTNEED then \
                                          mprotect(NONE)"
            .to_owned(),
        FaultStrategy::Auto => format!(
            "guard markers were downgraded at run time, so its rule (fault=auto) resolves to {}",
            name(sel)
        ),
        k => format!("the fault knob asks for {} (OSMEM or configure())", name(k)),
    }
}

pub fn fault(r: &BenchResults, sel: FaultStrategy, knob: FaultStrategy) -> Verdict {
    let guard = osmem::probe().advice.guard_install;
    let selected = crate::name_in(osmem::FAULT_VALUES, sel).to_owned();
    let measured: Vec<&str> = FAULT_OPS
        .iter()
        .filter(|o| o.is_supported())
        .map(|&o| crate::suite::strategy(o))
        .collect();
    let min_vmas = r.vma_growth.iter().map(|v| v.vmas_added).min().unwrap_or(0);
    let vmas_of = |s: &str| r.vma_growth.iter().find(|v| v.strategy == s);
    let others_vmas: Vec<String> = r
        .vma_growth
        .iter()
        .map(|v| format!("{} {}", v.strategy, v.vmas_added))
        .collect();
    let mut cands = Vec::new();
    for &s in &measured {
        let v = vmas_of(s);
        let f1 = v.is_some_and(|v| v.vmas_added == min_vmas);
        let (f2, d2) = contention_check(r, "fault", s, |c| &c.fault_tiers, |e| &e.relative);
        let (f3, d3) = contention_check(
            r,
            "fault",
            s,
            |c| &c.mutator_fault_tiers,
            |e| &e.mutator_kept,
        );
        let (f4, worst, d4) = cost_check(r, "fault", s, &measured);
        let checks = vec![
            Check {
                id: "F1",
                passed: f1,
                detail: format!(
                    "{} VMAs added for {} faults (all: {})",
                    v.map_or(0, |v| v.vmas_added),
                    v.map_or(0, |v| v.faults),
                    others_vmas.join(", ")
                ),
            },
            Check {
                id: "F2",
                passed: f2,
                detail: format!("readers keep {d2}"),
            },
            Check {
                id: "F3",
                passed: f3,
                detail: format!("the mutator keeps {d3}"),
            },
            Check {
                id: "F4",
                passed: f4,
                detail: d4,
            },
        ];
        cands.push((candidate(s, checks), worst));
    }
    let why = why_selected(&cands, &selected);
    finish(
        "fault",
        selected,
        fault_because(sel, knob, guard),
        cands,
        why,
    )
}

pub fn unused(r: &BenchResults, sel: osmem::UnusedHow, knob: UnusedAdvice) -> Verdict {
    let selected = match sel {
        osmem::UnusedHow::Free => "free",
        osmem::UnusedHow::DontNeed | osmem::UnusedHow::DontNeedLocked => "dontneed",
        osmem::UnusedHow::Remap => "remap",
        _ => "other",
    }
    .to_owned();
    let because = match knob {
        UnusedAdvice::DontNeed if sel == osmem::UnusedHow::DontNeed => {
            "it is the default (unused=dontneed, like Go >= 1.16)".to_owned()
        }
        k if crate::name_in(osmem::UNUSED_VALUES, k) == selected => {
            format!("the unused knob asks for {selected} (OSMEM or configure())")
        }
        k => format!(
            "the unused knob asks for {} but that advice was downgraded here",
            crate::name_in(osmem::UNUSED_VALUES, k)
        ),
    };
    let measured: Vec<&str> = UNUSED_OPS
        .iter()
        .filter(|o| o.is_supported())
        .map(|&o| crate::suite::strategy(o))
        .collect();
    let honest: Vec<&str> = measured
        .iter()
        .copied()
        .filter(|s| {
            r.footprint
                .iter()
                .any(|f| f.strategy == *s && f.op.starts_with("unused/") && f.rss_honest)
        })
        .collect();
    let mut cands = Vec::new();
    for &s in &measured {
        let fp = r
            .footprint
            .iter()
            .find(|f| f.strategy == s && f.op.starts_with("unused/"));
        let u1 = honest.contains(&s);
        let (u2, d2) = contention_check(r, "unused", s, |c| &c.unused_tiers, |e| &e.relative);
        let (u3w, d3w) = contention_check(
            r,
            "unused",
            s,
            |c| &c.mutator_unused_tiers,
            |e| &e.mutator_kept,
        );
        let (u3, worst, d3) = if honest.is_empty() {
            (false, f64::INFINITY, "no advice meets U1".to_owned())
        } else {
            cost_check(r, "unused", s, &honest)
        };
        // Against the cheapest of all (free, usually): what RSS-honesty costs.
        let (_, vs_all, _) = cost_check(r, "unused", s, &measured);
        let checks = vec![
            Check {
                id: "U1",
                passed: u1,
                detail: fp.map_or("not measured".to_owned(), |f| {
                    format!(
                        "{} of {} pages resident right after",
                        f.resident_after, f.pages
                    )
                }),
            },
            Check {
                id: "U2",
                passed: u2,
                detail: format!("readers keep {d2}"),
            },
            Check {
                id: "U3",
                passed: u3w,
                detail: format!("the mutator keeps {d3w}"),
            },
            Check {
                id: "U4",
                passed: u3,
                detail: format!(
                    "{d3} among RSS-honest advices; at most {vs_all:.2}× the cheapest of all"
                ),
            },
        ];
        cands.push((candidate(s, checks), worst));
    }
    let why = why_selected(&cands, &selected);
    finish("unused", selected, because, cands, why)
}

pub fn batch(r: &BenchResults) -> Verdict {
    let pm = osmem::probe().process_madvise;
    let (selected, because) = match pm {
        ProcessMadvise::PidfdSelf => (
            "process_madvise",
            "osmem's Batch issues one process_madvise (PIDFD_SELF) per <= 1024 ranges \
             wherever the kernel has it",
        ),
        ProcessMadvise::PidfdOpen => (
            "process_madvise",
            "osmem's Batch issues one process_madvise (pidfd_open fd) per <= 1024 ranges \
             wherever the kernel has it",
        ),
        ProcessMadvise::Unsupported => (
            "loop",
            "process_madvise is not usable here, so osmem's Batch falls back to one call per \
             range",
        ),
        _ => (
            "process_madvise",
            "osmem's Batch issues one process_madvise per <= 1024 ranges wherever the kernel \
             has it",
        ),
    };
    let b1 = pm != ProcessMadvise::Unsupported;
    let mut fails = Vec::new();
    let mut loop_wins = Vec::new();
    let mut parts = Vec::new();
    for b in &r.batch {
        let e = b.speedup.estimate();
        let label = format!(
            "{} {}×{} {}",
            b.op,
            b.ranges,
            b.range_size_label,
            if b.sibling { "sibling" } else { "alone" }
        );
        match e.versus_one(COST_GAP) {
            Ordering::Greater => {}
            Ordering::Less => loop_wins.push(label.clone()),
            Ordering::Equal => fails.push(label.clone()),
        }
        parts.push(format!("{label} {:.1}×", e.median));
    }
    let b2 = fails.is_empty() && loop_wins.is_empty() && !r.batch.is_empty();
    let d2 = if r.batch.is_empty() {
        "not measured".to_owned()
    } else if b2 {
        format!("loop/batch: {}", parts.join(", "))
    } else {
        format!(
            "not faster in: {}; loop/batch: {}",
            fails
                .iter()
                .chain(&loop_wins)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            parts.join(", ")
        )
    };
    let batch_checks = vec![
        Check {
            id: "B1",
            passed: b1,
            detail: format!("process_madvise: {pm:?}"),
        },
        Check {
            id: "B2",
            passed: b2,
            detail: d2,
        },
    ];
    let batch_ok = batch_checks.iter().all(|c| c.passed);
    let cands = vec![
        (
            Candidate {
                name: "process_madvise".to_owned(),
                passes_all: batch_ok,
                checks: batch_checks,
            },
            1.0,
        ),
        (
            Candidate {
                name: "loop".to_owned(),
                // The loop is what the numbers favour only where batching is impossible or
                // measured slower.
                passes_all: !b1 || !loop_wins.is_empty(),
                checks: vec![Check {
                    id: "B2",
                    passed: !b1 || !loop_wins.is_empty(),
                    detail: if loop_wins.is_empty() {
                        "never measured faster than the batch".to_owned()
                    } else {
                        format!("faster than the batch in: {}", loop_wins.join(", "))
                    },
                }],
            },
            1.0,
        ),
    ];
    let why = format!(
        "meets every criterion: B1 process_madvise works here ({pm:?}); B2 loop/batch speedup \
         {}",
        parts.join(", ")
    );
    finish("batch", selected.to_owned(), because.to_owned(), cands, why)
}

pub fn all(r: &BenchResults) -> Verdicts {
    let sel = osmem::selected();
    let cfg = osmem::config();
    Verdicts {
        fault: fault(r, sel.fault, cfg.fault_strategy()),
        unused: unused(r, sel.unused, cfg.unused_advice()),
        batch: batch(r),
        criteria: criteria(),
    }
}

/// A candidate strategy with its checked criteria.
fn candidate(name: &str, checks: Vec<Check>) -> Candidate {
    Candidate {
        name: name.to_owned(),
        passes_all: checks.iter().all(|c| c.passed),
        checks,
    }
}

/// The sentence listing the criteria the selected candidate meets (empty if it is not among
/// the candidates).
fn why_selected<T>(cands: &[(Candidate, T)], selected: &str) -> String {
    cands
        .iter()
        .find(|(c, _)| c.name == selected)
        .map(|(c, _)| {
            format!(
                "meets every criterion: {}",
                c.checks
                    .iter()
                    .map(|k| format!("{} {}", k.id, k.detail))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
        .unwrap_or_default()
}
