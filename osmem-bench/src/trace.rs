//! One heap trace for two runtimes: the seeded schedule of allocations and frees that
//! `osmem-bench/gotrace/` (a Go program, standard library only) runs on the real Go runtime, run here on
//! osmem-heap. Both sides draw from the same generator (splitmix64) and hash the same events
//! (FNV-1a), so a run can prove it replayed exactly the Go run's sequence.
//!
//! The schedule (before scaling): grow to 1 GiB live in 2 s, hold 1 s, shrink to 128 MiB in
//! 0.5 s, hold 8 s, grow to 512 MiB in 1 s, hold 1 s, shrink to 64 MiB in 0.5 s, hold 8 s;
//! buffers of 64 KiB–1 MiB with every 4 KiB page written once; 64 MiB/s of churn (frees
//! and re-allocations of as much); ticks of 10 ms, each tick's events decided by the tick
//! alone (never by how late it runs); a sample every 50 ms.

use osmem_heap::{Heap, HeapConfig, Mode};
use std::time::{Duration, Instant};

/// Ticks are 10 ms at every scale (`time_div` shortens the phases).
pub const TICK_MS: u64 = 10;
const PAGE: u64 = 4096;

/// splitmix64, as `gotrace` has it.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 bits.
    ///
    /// ```
    /// let mut a = osmem_bench::SplitMix(1);
    /// let mut b = osmem_bench::SplitMix(1);
    /// assert_eq!(a.next_u64(), b.next_u64());
    /// ```
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// FNV-1a over 64-bit values, byte by byte, as `gotrace` has it.
#[derive(Clone, Debug)]
pub struct EventHash(pub u64);

impl EventHash {
    /// The empty hash.
    pub const NEW: EventHash = EventHash(0xcbf2_9ce4_8422_2325);

    /// Hash one value.
    ///
    /// ```
    /// let mut h = osmem_bench::EventHash::NEW;
    /// h.add(1);
    /// assert_ne!(h.0, osmem_bench::EventHash::NEW.0);
    /// ```
    pub fn add(&mut self, v: u64) {
        for i in 0..8 {
            self.0 ^= (v >> (8 * i)) & 0xff;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// One phase: its duration (ms) and the live size at its end; `shrink` phases end with a GC
/// on the Go side.
#[derive(Copy, Clone, Debug)]
pub struct Phase {
    /// Duration, ms.
    pub ms: u64,
    /// Live bytes at its end.
    pub target: u64,
    /// A shrink (the Go side collects at its end).
    pub shrink: bool,
}

/// The schedule, sizes divided by `size_div` and durations by `time_div`.
///
/// ```
/// let s = osmem_bench::trace_schedule(1, 1);
/// assert_eq!(s.iter().map(|p| p.ms).sum::<u64>(), 22_000);
/// ```
pub fn trace_schedule(size_div: u64, time_div: u64) -> Vec<Phase> {
    // (duration ms, live bytes at the end, a shrink).
    const PHASES: [(u64, u64, bool); 8] = [
        (2000, 1 << 30, false),
        (1000, 1 << 30, false),
        (500, 128 << 20, true),
        (8000, 128 << 20, false),
        (1000, 512 << 20, false),
        (1000, 512 << 20, false),
        (500, 64 << 20, true),
        (8000, 64 << 20, false),
    ];
    PHASES
        .iter()
        .map(|&(ms, target, shrink)| Phase {
            ms: ms / time_div,
            target: target / size_div,
            shrink,
        })
        .collect()
}

/// What one tick does: buffers allocated (sizes) and freed (indices into the live list, at
/// the moment of the free, with swap-remove), in order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// Allocate a buffer of this many bytes (a multiple of 4 KiB) and write every page.
    Alloc(u64),
    /// Free the live buffer at this index (the last one takes its place).
    Free(usize),
}

/// The trace's events, tick by tick, generated without running anything: what both runtimes
/// replay. Also returns the event hash (which `gotrace` prints too) and the ticks that end a
/// shrink.
///
/// ```
/// let (ticks, hash, shrink_ends) = osmem_bench::trace_events(4, 4);
/// assert_eq!(ticks.len(), 549); // 125 ms phases are 12 ticks
/// assert_eq!(shrink_ends.len(), 2);
/// assert_ne!(hash, 0);
/// ```
pub fn trace_events(size_div: u64, time_div: u64) -> (Vec<Vec<TraceEvent>>, u64, Vec<usize>) {
    let mut r = SplitMix(0x05ec_c0de);
    let mut h = EventHash::NEW;
    let mut live: Vec<u64> = Vec::new();
    let mut live_bytes = 0u64;
    let churn_per_tick = (64u64 << 20) / size_div * TICK_MS / 1000;
    let mut ticks = Vec::new();
    let mut shrink_ends = Vec::new();
    let mut from = 0u64;
    for p in trace_schedule(size_div, time_div) {
        let n = p.ms / TICK_MS;
        for i in 1..=n {
            let target = if p.target >= from {
                from + (p.target - from) * i / n
            } else {
                from - (from - p.target) * i / n
            };
            let mut ev = Vec::new();
            let free = |r: &mut SplitMix,
                        h: &mut EventHash,
                        live: &mut Vec<u64>,
                        live_bytes: &mut u64,
                        ev: &mut Vec<_>| {
                let k = (r.next_u64() % live.len() as u64) as usize;
                *live_bytes -= live.swap_remove(k);
                h.add(2);
                h.add(k as u64);
                ev.push(TraceEvent::Free(k));
            };
            // Churn (about 640 KiB freed and allocated again), then the schedule's target,
            // in exactly gotrace's order.
            let mut churned = 0u64;
            while churned < churn_per_tick && live.len() > 1 {
                let before = live_bytes;
                free(&mut r, &mut h, &mut live, &mut live_bytes, &mut ev);
                churned += before - live_bytes;
            }
            while live_bytes < target || churned > 0 {
                let before = live_bytes;
                let size = (64u64 << 10) + (r.next_u64() % 241) * PAGE;
                let size = (size / size_div).div_ceil(PAGE) * PAGE;
                live.push(size);
                live_bytes += size;
                h.add(1);
                h.add(size);
                ev.push(TraceEvent::Alloc(size));
                churned = churned.saturating_sub(live_bytes - before);
            }
            while live_bytes > target && !live.is_empty() {
                free(&mut r, &mut h, &mut live, &mut live_bytes, &mut ev);
            }
            ticks.push(ev);
            if p.shrink && i == n {
                shrink_ends.push(ticks.len());
            }
        }
        from = p.target;
    }
    (ticks, h.0, shrink_ends)
}

/// One sample of a trace run (every 5 ticks).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TraceSample {
    /// Seconds since the start.
    pub t: f64,
    /// Live bytes (the trace's buffers).
    pub live: u64,
    /// The process's resident memory (/proc/self/statm).
    pub rss: u64,
    /// Minor faults so far.
    pub minflt: u64,
    /// Process CPU seconds so far.
    pub cpu: f64,
    /// The heap's released and free bytes.
    pub released: u64,
    /// See `released`.
    pub free: u64,
    /// Pages the mutator thread has written so far.
    pub mutator_pages: u64,
}

/// A trace run on osmem-heap.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TraceRun {
    /// `default` or `go-faithful`.
    pub mode: &'static str,
    /// The event hash (equal to gotrace's for the same scaling).
    pub hash: String,
    /// Samples every 50 ms.
    pub samples: Vec<TraceSample>,
    /// The mutator's rate alone, before the trace starts (pages per second).
    pub mutator_alone_pages_per_s: f64,
    /// The background scavenger's work, seconds, and bytes.
    pub scavenger_s: f64,
    /// See `scavenger_s`.
    pub scavenged_bytes: u64,
    /// Release calls made.
    pub release_calls: u64,
    /// When the trace started and ended (CLOCK_MONOTONIC seconds, [`crate::monotonic_s`]):
    /// the window in which the kernel's count of madvise-family calls is taken.
    pub window: (f64, f64),
}

fn statm_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |p| p * osmem::page_size() as u64)
}

/// The process's minor faults and CPU seconds so far (getrusage).
pub(crate) fn usage() -> (u64, f64) {
    // SAFETY: getrusage fills the struct.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let cpu = (u.ru_utime.tv_sec + u.ru_stime.tv_sec) as f64
        + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) as f64 / 1e6;
    (u.ru_minflt as u64, cpu)
}

/// Replay the trace on a fresh osmem-heap in `mode`, with the background scavenger at 1%
/// of all CPUs and a mutator thread; `gc_ends` (tick, heap goal), from a Go run, are fed to
/// [`Heap::cycle`] at their ticks.
///
/// With `gc_ends`, the replay also frees as a garbage-collected runtime does: a buffer the
/// trace drops is returned to the heap at the next GC end (after `cycle`, as Go's sweep
/// follows its mark termination), not at once. Go's scavenger sees a heap shaped that way —
/// holes opened in bulk at each GC, "in use" counting unswept garbage at the cycle — and its
/// call count and sizes depend on it: replayed with immediate frees, churn reopened and
/// refilled small holes between cycles and the Go-faithful heap made twice Go's calls at
/// half its bytes per call.
///
/// ```no_run
/// let r = osmem_bench::trace_run(osmem_heap::Mode::Batched, 4, 4, &[]);
/// assert!(!r.samples.is_empty());
/// ```
pub fn trace_run(mode: Mode, size_div: u64, time_div: u64, gc_ends: &[(usize, u64)]) -> TraceRun {
    let ps = osmem::page_size();
    let (ticks, hash, _) = trace_events(size_div, time_div);
    // Room for the live peak (1 GiB) and, with GC-timed frees, the garbage beside it.
    let heap = Heap::create(HeapConfig::new((4usize << 30) / size_div as usize).mode(mode))
        .expect("a heap");
    let gc_frees = !gc_ends.is_empty();
    let mut garbage: Vec<(usize, usize)> = Vec::new();
    let scav = heap.start_scavenger(0.01).expect("a scavenger thread");
    let mutator = crate::heap::Mutator::start();
    let mut live: Vec<(usize, usize)> = Vec::new();
    let mut live_bytes = 0u64;
    let mut samples = Vec::new();
    // The mutator alone first (300 ms, after 50 ms to start), as gotrace does.
    std::thread::sleep(Duration::from_millis(50));
    let (m0, a0) = (mutator.count(), Instant::now());
    std::thread::sleep(Duration::from_millis(300));
    let alone = (mutator.count() - m0) as f64 / a0.elapsed().as_secs_f64();
    let start = Instant::now();
    let window_start = crate::monotonic_s();
    // Ticks are 10 ms at every scale (`time_div` shortens the phases, not the ticks), as in
    // gotrace.
    let tick_len = Duration::from_millis(TICK_MS);
    let mut gc = gc_ends.iter().peekable();
    for (k, ev) in ticks.iter().enumerate() {
        for e in ev {
            match *e {
                TraceEvent::Alloc(size) => {
                    let pages = size as usize / ps;
                    let r = heap.alloc(pages).expect("room in the heap");
                    // One byte per page, as gotrace writes its buffers (no madvise of our
                    // own: the madvise-family calls counted are the heap's).
                    for p in 0..pages {
                        // SAFETY: the run is ours; a volatile write the optimiser must keep.
                        unsafe { ((r.addr + p * ps) as *mut u8).write_volatile(1) };
                    }
                    live.push((r.addr, pages));
                    live_bytes += size;
                }
                TraceEvent::Free(i) => {
                    let (a, n) = live.swap_remove(i);
                    if gc_frees {
                        garbage.push((a, n));
                    } else {
                        heap.free(a, n).expect("our run");
                    }
                    live_bytes -= (n * ps) as u64;
                }
            }
        }
        let tick = k + 1;
        while let Some(&&(t, goal)) = gc.peek() {
            if t > tick {
                break;
            }
            heap.cycle(goal as usize);
            // The sweep: what became garbage before this GC end goes back to the heap.
            for (a, n) in garbage.drain(..) {
                heap.free(a, n).expect("our run");
            }
            gc.next();
        }
        let due = start + tick_len * tick as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        if tick % 5 == 0 {
            let st = heap.stats();
            let (minflt, cpu) = usage();
            samples.push(TraceSample {
                t: start.elapsed().as_secs_f64(),
                live: live_bytes,
                rss: statm_rss(),
                minflt,
                cpu,
                released: st.released_bytes as u64,
                free: st.free_bytes as u64,
                mutator_pages: mutator.count(),
            });
        }
    }
    let window = (window_start, crate::monotonic_s());
    scav.stop();
    drop(mutator); // stops and joins the thread
    let st = heap.stats();
    // SAFETY: the scavenger and the trace are done with the heap.
    unsafe { Heap::destroy(heap) };
    TraceRun {
        mode: crate::mode_name(mode),
        hash: format!("{hash:016x}"),
        samples,
        mutator_alone_pages_per_s: alone,
        scavenger_s: st.background_work_ns as f64 / 1e9,
        scavenged_bytes: st.background_released_bytes,
        release_calls: st.release_calls,
        window,
    }
}

// ----- the real Go runtime, and the figures of a run -----

/// The Go program, embedded so the report can run it from anywhere.
const GOTRACE_MAIN: &str = include_str!("../gotrace/main.go");
const GOTRACE_MOD: &str = include_str!("../gotrace/go.mod");

/// A run of gotrace on the real Go runtime.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GoRun {
    /// `runtime.Version()`.
    pub runtime: String,
    /// The event hash gotrace printed.
    pub hash: String,
    /// Samples every 50 ms.
    pub samples: Vec<TraceSample>,
    /// The mutator's rate alone, before the trace starts (pages per second).
    pub mutator_alone_pages_per_s: f64,
    /// GC ends: (tick, heap goal), to feed the Go-faithful heap's `cycle`.
    pub gc_ends: Vec<(usize, u64)>,
    /// The runtime's own scavenger CPU (runtime/metrics `/cpu/classes/scavenge/total`),
    /// seconds.
    pub scavenger_s: f64,
    /// What the kernel saw of its madvise-family calls between the trace's start and end
    /// (`None` without perf).
    pub madvise: Option<crate::MadviseTrace>,
}

/// Find a Go toolchain: `$OSMEM_GO`, `.tools/go/bin/go` (what `scripts/go.sh` installs,
/// from the current directory), or `go` on the PATH.
pub fn find_go() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let candidates = [
        std::env::var_os("OSMEM_GO").map(PathBuf::from),
        Some(PathBuf::from(".tools/go/bin/go")),
        Some(PathBuf::from("go")),
    ];
    let found = candidates.into_iter().flatten().find(|g| {
        std::process::Command::new(g)
            .arg("version")
            .env("GOTOOLCHAIN", "local")
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    // An absolute path: the program is built in a temporary directory.
    Some(std::fs::canonicalize(&found).unwrap_or(found))
}

/// Run gotrace with `go` at this scaling (`free_os_memory`: `debug.FreeOSMemory()` at the end
/// of each shrink instead of `runtime.GC()`, Go's best path).
pub fn go_trace(
    go: &std::path::Path,
    size_div: u64,
    time_div: u64,
    free_os_memory: bool,
) -> Result<GoRun, String> {
    let dir = std::env::temp_dir().join(format!("osmem-gotrace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("main.go"), GOTRACE_MAIN).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("go.mod"), GOTRACE_MOD).map_err(|e| e.to_string())?;
    let env = [
        ("GOTOOLCHAIN", "local"),
        ("GOPROXY", "off"),
        ("GOFLAGS", "-mod=mod"),
    ];
    // Build first, so the compiler is not part of the measured process's life.
    let build = std::process::Command::new(go)
        .args(["build", "-o", "gotrace", "."])
        .current_dir(&dir)
        .envs(env)
        .output()
        .map_err(|e| format!("go build: {e}"))?;
    if !build.status.success() {
        return Err(format!(
            "go build: {}",
            String::from_utf8_lossy(&build.stderr)
        ));
    }
    let mut cmd = std::process::Command::new(dir.join("gotrace"));
    cmd.args([
        "-size-div",
        &size_div.to_string(),
        "-time-div",
        &time_div.to_string(),
    ]);
    if free_os_memory {
        cmd.arg("-free-os-memory");
    }
    let (out, madvise) = crate::traced(cmd).map_err(|e| format!("gotrace: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!("gotrace: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("gotrace output: {e}"))?;
    let num = |x: &serde_json::Value, k: &str| x.get(k).and_then(|v| v.as_f64()).unwrap_or(0.0);
    let samples = v["samples"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| TraceSample {
                    t: num(s, "t"),
                    live: num(s, "live") as u64,
                    rss: num(s, "rss") as u64,
                    minflt: num(s, "minflt") as u64,
                    cpu: num(s, "cpu"),
                    released: num(s, "released") as u64,
                    free: num(s, "free") as u64,
                    mutator_pages: num(s, "mutator_pages") as u64,
                })
                .collect()
        })
        .unwrap_or_default();
    let gc_ends = v["gc_ends"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| (num(g, "tick") as usize, num(g, "heap_goal") as u64))
                .collect()
        })
        .unwrap_or_default();
    Ok(GoRun {
        runtime: v["runtime"].as_str().unwrap_or("?").to_owned(),
        hash: v["hash"].as_str().unwrap_or("?").to_owned(),
        samples,
        mutator_alone_pages_per_s: num(&v, "mutator_alone_pages_per_s"),
        gc_ends,
        scavenger_s: num(&v, "scavenge_total_cpu_s"),
        // The calls of the trace itself, as on the osmem-heap side.
        madvise: madvise.map(|m| match v["window"].as_array().map(|w| w.as_slice()) {
            Some([a, b]) => m.within(a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(f64::MAX)),
            _ => m,
        }),
    })
}

/// The figures of one run's samples.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TraceFigures {
    /// ∫ max(RSS − live, 0) dt, GiB·s: memory held beyond what the program uses.
    pub area_gib_s: f64,
    /// Per shrink: seconds from its start until RSS came down by 90% of the live drop
    /// (`None`: not by the end of the hold that follows).
    pub time_to_90: Vec<Option<f64>>,
    /// Per shrink: RSS ÷ live at the end of the hold that follows.
    pub settled_over_live: Vec<f64>,
    /// Minor faults over the run.
    pub minor_faults: u64,
    /// The mutator's pages per second over the run.
    pub mutator_pages_per_s: f64,
    /// That over its rate alone in the same process before the trace: the share it kept.
    pub mutator_kept: f64,
    /// Process CPU over the run, seconds.
    pub cpu_s: f64,
}

/// Compute a run's figures from its samples, the schedule at the same scaling and the
/// mutator's rate alone in that process.
pub fn trace_figures(
    samples: &[TraceSample],
    schedule: &[Phase],
    mutator_alone_pages_per_s: f64,
) -> TraceFigures {
    let gib = (1u64 << 30) as f64;
    let mut area = 0.0;
    for w in samples.windows(2) {
        let dt = w[1].t - w[0].t;
        area += (w[1].rss.saturating_sub(w[1].live)) as f64 / gib * dt;
    }
    // Shrink windows in seconds: (start, end of the following hold, live before, after).
    let mut t = 0.0;
    let mut from = 0u64;
    let mut shrinks = Vec::new();
    for (k, p) in schedule.iter().enumerate() {
        let end = t + p.ms as f64 / 1e3;
        if p.shrink {
            let hold = schedule.get(k + 1).map_or(0.0, |h| h.ms as f64 / 1e3);
            shrinks.push((t, end + hold, from, p.target));
        }
        t = end;
        from = p.target;
    }
    let rss_at = |t0: f64| {
        samples
            .iter()
            .rev()
            .find(|s| s.t <= t0)
            .or(samples.first())
            .map_or(0, |s| s.rss)
    };
    let mut time_to_90 = Vec::new();
    let mut settled = Vec::new();
    for &(start, until, before, after) in &shrinks {
        let r0 = rss_at(start);
        let threshold = r0.saturating_sub((before - after) * 9 / 10);
        time_to_90.push(
            samples
                .iter()
                .find(|s| s.t >= start && s.t <= until && s.rss <= threshold)
                // A sample shows the state at the end of its tick: it is taken on waking at
                // the tick's due time, a few hundred µs late at most. Judged at that tick, so
                // that the jitter of the wake-up does not move a time across a boundary.
                .map(|s| {
                    ((s.t - start) * 1000.0 / TICK_MS as f64).round() * TICK_MS as f64 / 1000.0
                }),
        );
        let s_end = rss_at(until);
        settled.push(s_end as f64 / after.max(1) as f64);
    }
    let (first, last) = (samples.first(), samples.last());
    let rate = match (first, last) {
        (Some(a), Some(b)) if b.t > a.t => (b.mutator_pages - a.mutator_pages) as f64 / (b.t - a.t),
        _ => 0.0,
    };
    TraceFigures {
        area_gib_s: area,
        time_to_90,
        settled_over_live: settled,
        minor_faults: match (first, last) {
            (Some(a), Some(b)) => b.minflt - a.minflt,
            _ => 0,
        },
        mutator_pages_per_s: rate,
        mutator_kept: rate / mutator_alone_pages_per_s.max(1.0),
        cpu_s: match (first, last) {
            (Some(a), Some(b)) => b.cpu - a.cpu,
            _ => 0.0,
        },
    }
}
