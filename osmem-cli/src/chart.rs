//! chart.svg: the run at a glance (plotters, SVG backend; no font files needed: the backend
//! writes `<text>` elements and sizes labels with plotters' built-in estimate).
//!
//! Eleven panels: fault and unused cost relative to the cheapest strategy at each size and
//! mode; reader and writer throughput kept under contention (the writer side also beside a
//! large residency scan); VMAs added; batch speedup; residency queries by method, against the
//! fastest method and against the raw method; the page heap's gain from batching beside the
//! kernel's, and its time to goal per mode; RSS over time of one heap trace on osmem-heap and
//! the Go runtime.

use crate::suite::{BenchResults, Est};
use crate::verdict::Verdicts;
use plotters::prelude::*;

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x75, 0x70, 0xb3),
    RGBColor(0xe7, 0x29, 0x8a),
];

/// One panel of grouped bars: `groups` along x (labels), `series` per group (name, values
/// with optional interval), y from 0 to `y_max`, a reference line at `reference` if any.
struct Bars<'a> {
    title: String,
    y_desc: &'a str,
    groups: Vec<String>,
    series: Vec<(String, Vec<Option<Est>>)>,
    y_max: f64,
    reference: Option<f64>,
    /// Write each bar's value above it, with this format.
    value_fmt: Option<fn(f64) -> String>,
}

/// Slot width in axis units: a bar spans 8 of 10, its interval line sits at 5.
const U: i32 = 10;

fn draw_bars(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    b: &Bars,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| format!("chart: {e:?}");
    let s = b.series.len().max(1) as i32;
    let k = s + 1; // slots per group, one left empty as a gap
    let n = b.groups.len().max(1) as i32;
    let mut chart = ChartBuilder::on(area)
        .caption(&b.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(52)
        .build_cartesian_2d(0..n * k * U, 0f64..b.y_max)
        .map_err(err)?;
    let groups = b.groups.clone();
    let center = s * U / 2;
    let percent = b.y_desc.contains('%');
    chart
        .configure_mesh()
        .set_tick_mark_size(LabelAreaPosition::Bottom, 0)
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels((n * k * U + 1) as usize)
        .x_label_formatter(&|x| {
            if x % (k * U) == center {
                groups
                    .get((x / (k * U)) as usize)
                    .cloned()
                    .unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| {
            if percent || *y >= 100.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        })
        .x_label_style(("sans-serif", 12))
        .y_desc(b.y_desc)
        .y_label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    if let Some(r) = b.reference {
        chart
            .draw_series(LineSeries::new(
                [(0, r), (n * k * U, r)],
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(err)?;
    }
    for (si, (name, values)) in b.series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let left = |g: usize| (g as i32 * k + si as i32) * U;
        let bars = values.iter().enumerate().filter_map(|(g, v)| {
            let v = (*v)?;
            let top = v.median.min(b.y_max);
            Some(Rectangle::new(
                [(left(g) + 1, 0.0), (left(g) + U - 1, top)],
                color.filled(),
            ))
        });
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        for (g, v) in values.iter().enumerate() {
            let Some(v) = v else { continue };
            let x = left(g) + U / 2;
            // The ~95% interval, as a thin vertical line through the bar's middle.
            if v.n > 1 && (v.hi > v.median || v.lo < v.median) {
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        [(x, v.lo.min(b.y_max)), (x, v.hi.min(b.y_max))],
                        BLACK.stroke_width(1),
                    )))
                    .map_err(err)?;
            }
            if let Some(f) = b.value_fmt {
                let y = v.median.min(b.y_max * 0.95) + b.y_max * 0.035;
                chart
                    .draw_series(std::iter::once(Text::new(
                        f(v.median),
                        (left(g), y),
                        ("sans-serif", 11),
                    )))
                    .map_err(err)?;
            }
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 12))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Room above the tallest bar for the legend (top left) and the value labels.
fn nice_max(v: f64, floor: f64) -> f64 {
    let v = v.max(floor) * 1.5;
    (v * 4.0).ceil() / 4.0
}

fn cost_panel(r: &BenchResults, group: &str) -> Bars<'static> {
    let cells: Vec<_> = r.costs.iter().filter(|c| c.group == group).collect();
    let groups = cells
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.size_label,
                if c.sibling { "sib" } else { "alone" }
            )
        })
        .collect();
    let names: Vec<&str> = cells
        .first()
        .map(|c| c.entries.iter().map(|e| e.strategy).collect())
        .unwrap_or_default();
    let series: Vec<(String, Vec<Option<Est>>)> = names
        .iter()
        .map(|&s| {
            (
                s.to_owned(),
                cells
                    .iter()
                    .map(|c| {
                        c.entries
                            .iter()
                            .find(|e| e.strategy == s)
                            .map(|e| e.vs_cheapest)
                    })
                    .collect(),
            )
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().map(|e| e.median))
        .fold(1.0, f64::max);
    Bars {
        title: format!(
            "{group}: time per call / the cheapest {group} strategy's (lower is better)"
        ),
        y_desc: "× cheapest (same round)",
        groups,
        series,
        y_max: nice_max(max.min(6.0), 1.0),
        reference: Some(1.0),
        value_fmt: None,
    }
}

fn contention_panel(r: &BenchResults, writer: bool) -> Bars<'static> {
    let ops: Vec<&str> = r
        .contention
        .first()
        .map(|c| {
            c.entries
                .iter()
                .filter(|e| !writer || e.group == "fault")
                .map(|e| e.op)
                .collect()
        })
        .unwrap_or_default();
    let groups = ops
        .iter()
        .map(|o| {
            if *o == osmem_bench::CONTROL.name() {
                "dontneed (control)".to_owned()
            } else {
                o.to_string()
            }
        })
        .collect();
    // The writer side also beside osmem's own residency scans.
    let extra = if writer {
        r.residency_contention.as_ref()
    } else {
        None
    };
    let series: Vec<(String, Vec<Option<Est>>)> = r
        .contention
        .iter()
        .chain(extra)
        .map(|c| {
            (
                format!("{} worker", c.worker),
                ops.iter()
                    .map(|o| {
                        c.entries.iter().find(|e| e.op == *o).map(|e| {
                            let v = if writer { e.mutator_kept } else { e.relative };
                            Est {
                                median: 100.0 * v.median,
                                lo: 100.0 * v.lo,
                                hi: 100.0 * v.hi,
                                n: v.n,
                            }
                        })
                    })
                    .collect(),
            )
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().map(|e| e.median))
        .fold(100.0, f64::max);
    Bars {
        title: if writer {
            "writer side: the mutator's rate beside the worker, % of its rate alone".to_owned()
        } else {
            "readers: worker throughput beside each mutator, % of beside the control".to_owned()
        },
        y_desc: "% kept (higher is better)",
        groups,
        series,
        y_max: nice_max(max.min(200.0), 100.0),
        reference: Some(100.0),
        value_fmt: Some(|v| format!("{v:.0}")),
    }
}

fn vma_panel(r: &BenchResults) -> Bars<'static> {
    let v = &r.vma_growth;
    let faults = v.first().map_or(0, |v| v.faults);
    Bars {
        title: format!("VMAs added by {faults} faults (every other 64 KiB of 64 MiB)"),
        y_desc: "VMAs added (lower is better)",
        groups: v.iter().map(|v| v.strategy.to_owned()).collect(),
        series: vec![(
            "VMAs added".to_owned(),
            v.iter()
                .map(|v| {
                    Some(Est {
                        median: v.vmas_added as f64,
                        lo: v.vmas_added as f64,
                        hi: v.vmas_added as f64,
                        n: 1,
                    })
                })
                .collect(),
        )],
        y_max: nice_max(
            v.iter().map(|v| v.vmas_added as f64).fold(10.0, f64::max),
            10.0,
        ),
        reference: None,
        value_fmt: Some(|v| format!("{v:.0}")),
    }
}

fn batch_panel(r: &BenchResults) -> Bars<'static> {
    let mut configs: Vec<(usize, String, bool)> = Vec::new();
    for b in &r.batch {
        let c = (b.ranges, b.range_size_label.clone(), b.sibling);
        if !configs.contains(&c) {
            configs.push(c);
        }
    }
    let mut ops: Vec<&str> = Vec::new();
    for b in &r.batch {
        if !ops.contains(&b.op) {
            ops.push(b.op);
        }
    }
    let series = ops
        .iter()
        .map(|&op| {
            (
                op.to_owned(),
                configs
                    .iter()
                    .map(|(n, l, sib)| {
                        r.batch
                            .iter()
                            .find(|b| {
                                b.op == op
                                    && b.ranges == *n
                                    && b.range_size_label == *l
                                    && b.sibling == *sib
                            })
                            .map(|b| b.speedup)
                    })
                    .collect(),
            )
        })
        .collect();
    let max = r.batch.iter().map(|b| b.speedup.median).fold(1.0, f64::max);
    Bars {
        title: "batch: loop of per-range calls / one process_madvise batch (higher is better)"
            .to_owned(),
        y_desc: "× faster than the loop",
        groups: configs
            .iter()
            .map(|(n, l, sib)| format!("{n} × {l} {}", if *sib { "sibling" } else { "alone" }))
            .collect(),
        series,
        y_max: nice_max(max.min(100.0), 2.0),
        reference: Some(1.0),
        value_fmt: Some(|v| format!("{v:.1}×")),
    }
}

/// Residency queries per case, one bar per method: its time over the fastest method's in the
/// same round (`raw` false), or osmem's time over the raw method's (`raw` true).
fn residency_panel(r: &BenchResults, raw: bool) -> Bars<'static> {
    let mut cases: Vec<&str> = Vec::new();
    let mut methods: Vec<&str> = Vec::new();
    for c in &r.residency {
        if !cases.contains(&c.case.as_str()) {
            cases.push(&c.case);
        }
        if !methods.contains(&c.method) {
            methods.push(c.method);
        }
    }
    let series: Vec<(String, Vec<Option<Est>>)> = methods
        .iter()
        .map(|&m| {
            let v = cases
                .iter()
                .map(|&case| {
                    r.residency
                        .iter()
                        .find(|c| c.case == case && c.method == m)
                        .map(|c| {
                            let x = if raw {
                                c.osmem_over_raw
                            } else {
                                c.over_fastest
                            };
                            Est {
                                median: x,
                                lo: x,
                                hi: x,
                                n: c.rounds,
                            }
                        })
                })
                .collect();
            (m.to_owned(), v)
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().map(|e| e.median))
        .fold(1.0, f64::max);
    Bars {
        title: if raw {
            "residency query: osmem / the raw method (same calls), per method".to_owned()
        } else {
            "residency query: time / the fastest method's, per case (lower is better)".to_owned()
        },
        y_desc: if raw { "× raw" } else { "× the fastest" },
        groups: cases
            .iter()
            .map(|c| {
                c.replace(" resident", "")
                    .replace(" scattered pages", " pages")
            })
            .collect(),
        series,
        y_max: if raw {
            nice_max(max.min(2.0), 1.2)
        } else {
            nice_max(max.min(50.0), 2.0)
        },
        reference: Some(1.0),
        value_fmt: Some(|v| format!("{v:.2}")),
    }
}

fn point(x: f64) -> Option<Est> {
    x.is_finite().then_some(Est {
        median: x,
        lo: x,
        hi: x,
        n: 1,
    })
}

/// The page heap's release gain over its Go-faithful mode beside the kernel's own gain from
/// batching, per layout.
fn heap_release_panel(r: &BenchResults) -> Bars<'static> {
    let groups = r
        .heap_release
        .iter()
        .map(|c| {
            format!(
                "{} KiB runs{}",
                c.run_bytes >> 10,
                if c.sibling { ", sibling" } else { "" }
            )
        })
        .collect();
    let series = vec![
        (
            "osmem-heap default ÷ Go-faithful".to_owned(),
            r.heap_release
                .iter()
                .map(|c| point(c.default_over_go))
                .collect(),
        ),
        (
            "raw process_madvise ÷ madvise loop".to_owned(),
            r.heap_release
                .iter()
                .map(|c| point(c.kernel_batch_over_loop))
                .collect(),
        ),
    ];
    let max = r
        .heap_release
        .iter()
        .map(|c| c.default_over_go.max(c.kernel_batch_over_loop))
        .filter(|x| x.is_finite())
        .fold(1.0, f64::max);
    Bars {
        title: "page heap: bytes released per CPU-second, gain from batching".to_owned(),
        y_desc: "× (higher is better)",
        groups,
        series,
        y_max: nice_max(max.min(100.0), 2.0),
        reference: Some(1.0),
        value_fmt: Some(|v| format!("{v:.1}×")),
    }
}

/// The page heap's time to its retain goal after a shrink, per mode (a run that timed out
/// is drawn at its timeout).
fn heap_goal_panel(r: &BenchResults) -> Bars<'static> {
    let series = r
        .heap_goal
        .iter()
        .map(|g| {
            (
                g.mode.to_owned(),
                vec![point(g.time_to_goal_s.unwrap_or(g.timeout_s))],
            )
        })
        .collect();
    let max = r
        .heap_goal
        .iter()
        .map(|g| g.time_to_goal_s.unwrap_or(g.timeout_s))
        .fold(0.1, f64::max);
    let live = r.heap_goal.first().map_or(String::new(), |g| {
        format!("{} → {} MiB live", g.live_before >> 20, g.live_after >> 20)
    });
    Bars {
        title: "page heap: seconds to the retain goal after a shrink (lower is better)".to_owned(),
        y_desc: "s",
        groups: vec![live],
        series,
        y_max: nice_max(max, 0.1),
        reference: None,
        value_fmt: Some(|v| format!("{v:.2} s")),
    }
}

/// RSS over time for each runtime of the heap trace, with the live size.
fn draw_trace(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    t: &crate::suite::TraceResult,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| format!("chart: {e:?}");
    let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
    let t_max = t
        .runs
        .iter()
        .flat_map(|r| r.samples.last().map(|s| s.t))
        .fold(1.0, f64::max);
    let y_max = t
        .runs
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| mib(s.rss)))
        .fold(64.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "heap trace: RSS over time (sizes ÷ {}, phases ÷ {}); dashed: live",
                t.size_div, t.time_div
            ),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("s")
        .y_desc("MiB")
        .light_line_style(WHITE)
        .draw()
        .map_err(err)?;
    for (i, r) in t.runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                r.samples.iter().map(|s| (s.t, mib(s.rss))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(r.runtime.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2)));
    }
    if let Some(r) = t.runs.first() {
        chart
            .draw_series(DashedLineSeries::new(
                r.samples.iter().map(|s| (s.t, mib(s.live))),
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK.mix(0.3))
        .background_style(WHITE.mix(0.8))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Render the chart as an SVG document.
pub fn svg(r: &BenchResults, v: &Verdicts) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (1500, 2800)).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<_>| format!("chart: {e:?}");
        root.fill(&WHITE).map_err(err)?;
        let verdict = |x: &crate::verdict::Verdict| {
            format!(
                "{} = {} ({})",
                x.topic,
                x.selected,
                if x.agrees {
                    "the numbers agree"
                } else {
                    "the numbers DISAGREE: see report.md"
                }
            )
        };
        let title = format!(
            "osmem report — kernel {}, {} CPUs, {} run, {:.0} s",
            r.kernel,
            r.cpus,
            r.level.name(),
            r.seconds
        );
        let sub = format!(
            "osmem selects {}; {}; {}",
            verdict(&v.fault),
            verdict(&v.unused),
            verdict(&v.batch)
        );
        let (top, root) = root.split_vertically(62);
        top.draw(&Text::new(title, (12, 8), ("sans-serif", 22)))
            .map_err(err)?;
        top.draw(&Text::new(sub, (12, 36), ("sans-serif", 16)))
            .map_err(err)?;
        let panels = root.split_evenly((6, 2));
        let specs = [
            cost_panel(r, "fault"),
            cost_panel(r, "unused"),
            contention_panel(r, false),
            contention_panel(r, true),
            vma_panel(r),
            batch_panel(r),
            residency_panel(r, false),
            residency_panel(r, true),
            heap_release_panel(r),
            heap_goal_panel(r),
        ];
        for (area, spec) in panels.iter().zip(&specs) {
            draw_bars(area, spec)?;
        }
        if let (Some(t), Some(area)) = (&r.trace, panels.get(specs.len())) {
            draw_trace(area, t)?;
        }
        root.present().map_err(err)?;
    }
    Ok(buf)
}
