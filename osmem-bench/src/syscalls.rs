//! One instrument for every runtime: the kernel's syscall tracepoints, read with `perf`
//! (Debian's `linux-perf`), which do not slow the traced process the way `strace` does
//! (measured on the Go runtime: strace halves its madvise calls and disturbs its pacing).
//! Counts madvise-family calls (`madvise`, `process_madvise`), the bytes each advised and the
//! time inside them, and the TLB shootdowns the process sent (the `tlb:tlb_flush`
//! tracepoint with reason "remote IPI send", recorded for that process only: a machine-wide
//! count such as `/proc/interrupts` counts whatever else runs too) over the process's life.

use std::process::{Command, Output};

/// What the kernel saw of one process's madvise-family calls.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MadviseTrace {
    /// `madvise` and `process_madvise` calls that release memory (MADV_DONTNEED, MADV_FREE,
    /// MADV_DONTNEED_LOCKED); everything below counts those only.
    pub calls: u64,
    /// Other madvise-family calls (hints such as MADV_NOHUGEPAGE over a whole reservation:
    /// they advise address space, not memory, and would swamp the bytes per call).
    pub other_calls: u64,
    /// Of those, `process_madvise`.
    pub process_madvise_calls: u64,
    /// Bytes advised (madvise's length; process_madvise's return value).
    pub bytes: u64,
    /// Time inside the calls, seconds (enter to exit, per thread).
    pub time_s: f64,
    /// TLB shootdowns the traced process sent: the kernel's `tlb:tlb_flush` tracepoint with
    /// reason "remote IPI send" (`TLB_REMOTE_SEND_IPI`), recorded for that process only
    /// (`perf record` of the command). Other processes' flushes, and the process's own
    /// local and context-switch flushes, do not count.
    pub tlb_shootdowns: u64,
    /// Each release call: (CLOCK_MONOTONIC seconds at entry, seconds inside, bytes, whether
    /// it was `process_madvise`), for [`within`](Self::within).
    #[cfg_attr(feature = "serde", serde(skip))]
    pub log: Vec<(f64, f64, u64, bool)>,
}

impl MadviseTrace {
    /// The release calls made between `from` and `to` (CLOCK_MONOTONIC seconds, as
    /// [`monotonic_s`] reads it): a trace's own calls, without the process's start-up (osmem
    /// probing which advices the kernel knows, on one page) and exit (the C library releasing
    /// thread stacks). The TLB count stays the process's whole life.
    ///
    /// ```
    /// let t = osmem_bench::parse_script(
    ///     "1 10.0: syscalls:sys_enter_madvise: start: 0x1000, len_in: 0x00001000, behavior: 0x00000004\n\
    ///      1 10.1: syscalls:sys_exit_madvise: 0x0\n\
    ///      1 20.0: syscalls:sys_enter_madvise: start: 0x1000, len_in: 0x00002000, behavior: 0x00000004\n\
    ///      1 20.1: syscalls:sys_exit_madvise: 0x0\n",
    /// );
    /// assert_eq!(t.calls, 2);
    /// let w = t.within(15.0, 25.0);
    /// assert_eq!((w.calls, w.bytes), (1, 0x2000));
    /// ```
    pub fn within(&self, from: f64, to: f64) -> MadviseTrace {
        let mut t = MadviseTrace {
            other_calls: self.other_calls,
            tlb_shootdowns: self.tlb_shootdowns,
            ..Default::default()
        };
        for &(at, dt, bytes, pm) in &self.log {
            if at >= from && at <= to {
                t.add(at, dt, bytes, pm);
            }
        }
        t
    }

    /// Count one release call: entered at `at`, `dt` seconds inside, `bytes` released,
    /// `pm` if it was `process_madvise`.
    fn add(&mut self, at: f64, dt: f64, bytes: u64, pm: bool) {
        self.calls += 1;
        self.time_s += dt;
        self.bytes += bytes;
        self.process_madvise_calls += pm as u64;
        self.log.push((at, dt, bytes, pm));
    }
}

/// CLOCK_MONOTONIC in seconds: the clock `perf` records the calls with here (`-k`), so a
/// traced program can say when its trace started and ended.
///
/// ```
/// assert!(osmem_bench::monotonic_s() > 0.0);
/// ```
pub fn monotonic_s() -> f64 {
    // SAFETY: clock_gettime fills the struct.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts
    };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

const EVENTS: &str = "syscalls:sys_enter_madvise,syscalls:sys_exit_madvise,\
syscalls:sys_enter_process_madvise,syscalls:sys_exit_process_madvise,tlb:tlb_flush";

/// Whether `perf` can read the syscall tracepoints here.
pub fn perf_works() -> bool {
    Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-e",
            "syscalls:sys_enter_madvise",
            "--",
            "true",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run `cmd` under `perf record` of the madvise-family tracepoints; its output, and what the
/// kernel saw (`None` where perf cannot trace).
pub fn traced(mut cmd: Command) -> std::io::Result<(Output, Option<MadviseTrace>)> {
    if !perf_works() {
        let out = cmd.output()?;
        return Ok((out, None));
    }
    let data = std::env::temp_dir().join(format!("osmem-perf-{}.data", std::process::id()));
    let mut perf = Command::new("perf");
    perf.arg("record")
        .arg("-q")
        // Timestamps in CLOCK_MONOTONIC, comparable with the traced program's own clock.
        .args(["-k", "CLOCK_MONOTONIC"])
        .arg("-o")
        .arg(&data)
        .arg("-e")
        .arg(EVENTS)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => perf.env(k, v),
            None => perf.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        perf.current_dir(d);
    }
    let out = perf.output()?;
    let script = Command::new("perf")
        .args(["script", "-F", "tid,time,event,trace", "-i"])
        .arg(&data)
        .output()?;
    let _ = std::fs::remove_file(&data);
    Ok((
        out,
        Some(parse_script(&String::from_utf8_lossy(&script.stdout))),
    ))
}

/// MADV_DONTNEED, MADV_FREE, MADV_DONTNEED_LOCKED.
fn releases(advice: u64) -> bool {
    matches!(advice, 4 | 8 | 24)
}

/// `perf script -F tid,time,event,trace` lines → the counts.
pub fn parse_script(text: &str) -> MadviseTrace {
    let mut t = MadviseTrace::default();
    // Per thread: the time of its pending enter, the madvise length it gave, and whether
    // its advice releases memory.
    let mut pending: std::collections::HashMap<u64, (f64, u64, bool)> = Default::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(tid), Some(time)) = (it.next(), it.next()) else {
            continue;
        };
        let (Ok(tid), Ok(time)) = (
            tid.parse::<u64>(),
            time.trim_end_matches(':').parse::<f64>(),
        ) else {
            continue;
        };
        let Some(event) = it.next() else { continue };
        let rest: Vec<&str> = it.collect();
        let hex = |key: &str| {
            rest.iter()
                .position(|w| *w == key)
                .and_then(|i| rest.get(i + 1))
                .and_then(|v| {
                    u64::from_str_radix(v.trim_end_matches(',').trim_start_matches("0x"), 16).ok()
                })
        };
        match event.trim_end_matches(':') {
            // `pages:N reason:remote IPI send (4)`: a shootdown this process sent.
            "tlb:tlb_flush" if rest.last() == Some(&"(4)") => t.tlb_shootdowns += 1,
            "syscalls:sys_enter_madvise" => {
                let release = hex("behavior:").is_some_and(releases);
                pending.insert(tid, (time, hex("len_in:").unwrap_or(0), release));
            }
            "syscalls:sys_enter_process_madvise" => {
                let release = hex("behavior:").is_some_and(releases);
                pending.insert(tid, (time, 0, release));
            }
            e @ ("syscalls:sys_exit_madvise" | "syscalls:sys_exit_process_madvise") => {
                let Some((t0, len, release)) = pending.remove(&tid) else {
                    continue;
                };
                if !release {
                    t.other_calls += 1;
                    continue;
                }
                let ret = rest
                    .first()
                    .and_then(|v| i64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                    .unwrap_or(-1);
                let pm = e.ends_with("process_madvise");
                let bytes = match (pm, ret) {
                    (true, r) if r > 0 => r as u64,
                    (false, 0) => len,
                    _ => 0,
                };
                t.add(t0, time - t0, bytes, pm);
            }
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn perf_script_lines_are_counted() {
        let text = "\
23283 18197.511904:         syscalls:sys_enter_madvise: start: 0x7f9c6e26d000, len_in: 0x00001000, behavior: 0x00000004
23283 18197.511917:          syscalls:sys_exit_madvise: 0x0
23283 18197.511918:         syscalls:sys_enter_madvise: start: 0x7f9c6e26d000, len_in: 0x40000000, behavior: 0x0000000f
23283 18197.511920:          syscalls:sys_exit_madvise: 0x0
23283 18197.511938: syscalls:sys_enter_process_madvise: pidfd: 0xffffd8ef, vec: 0x7fffa83f85b0, vlen: 0x00000002, behavior: 0x00000004, flags: 0x00000000
23283 18197.511948:  syscalls:sys_exit_process_madvise: 0x3000
23283 18197.511949:                      tlb:tlb_flush: pages:-1 reason:remote IPI send (4)
23283 18197.511950:                      tlb:tlb_flush: pages:-1 reason:local MM shootdown (3)
23284 18197.511951:                      tlb:tlb_flush: pages:-1 reason:remote shootdown (1)
23283 18197.511952:                      tlb:tlb_flush: pages:0 reason:flush on task switch (0)
";
        let t = super::parse_script(text);
        assert_eq!((t.calls, t.process_madvise_calls, t.bytes), (2, 1, 0x4000));
        assert_eq!(t.tlb_shootdowns, 1, "only the remote IPIs it sent");
        assert_eq!(t.other_calls, 1, "MADV_NOHUGEPAGE is not a release");
        assert!((t.time_s - 0.000023).abs() < 1e-9, "{}", t.time_s);
    }
}
