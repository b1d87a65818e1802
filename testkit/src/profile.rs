//! Emulated kernels and sandboxes: named seccomp profiles, and a harness that
//! runs one test of the current test binary in a fresh process under one.
//!
//! A profile is a filter that makes the syscalls osmem issues answer the way
//! they answer on that kernel or in that sandbox: a syscall that did not exist
//! yet returns `ENOSYS` (that is what the syscall table's `sys_ni_syscall`
//! returns), an advice value `madvise` did not know yet returns `EINVAL`
//! (`madvise_behavior_valid()` rejects it before the length is looked at, so
//! also for a zero-length call), and so on. Every rule below names the kernel
//! release that changed the answer.
//!
//! # Why exec, not fork
//!
//! osmem probes the kernel once per process and caches the result (and the
//! sticky downgrades the probe implies). A forked child inherits that cache:
//! if the test process has already probed (any test in the binary may have),
//! a child forked under a profile would keep using the *native* probe and the
//! profile would only ever be seen as "a working syscall started failing",
//! never as "this kernel does not have it". To test what an application on
//! that kernel sees, the probe's first run must happen under the filter,
//! which needs a process that has not touched osmem yet: the test binary
//! itself, exec'd with `--exact <entry>`. [`run_under_profile`] does that; the
//! entry test calls [`enter_profile`] first thing, which installs the filter
//! on its thread before any osmem call. (A fresh process is also why the
//! entry may allocate and print freely: it is not a copy of a multi-threaded
//! process. A fork *it* makes must still be allocation-free in the child.)
//!
//! # Protocol
//!
//! The entry prints one line per suite, `OSMEM-PROFILE-RESULT\t<suite>\t<pass|fail>\t<detail>`
//! ([`emit`]), and the parent collects them ([`ProfileRun`]) together with the
//! exit status, so a crash (a suite that kills the process) shows up as the
//! suites that never reported.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use seccompiler::BpfProgram;

use crate::seccomp::{apply_filter_in_child, build_filter, Inject};

/// Environment variable naming the profile of the re-executed entry.
pub const PROFILE_ENV: &str = "OSMEM_PROFILE";

/// Marker that starts every result line of the entry's stdout.
pub const RESULT_MARK: &str = "OSMEM-PROFILE-RESULT";

/// The re-executed entry is killed after this long (it normally takes about
/// a second).
pub const PROFILE_TIMEOUT: Duration = Duration::from_secs(120);

/// Every profile, oldest kernel first, `native` last.
pub const PROFILES: &[&str] = &[
    "linux-3.18-no-advise",
    "linux-4.4",
    "linux-5.4",
    "linux-6.1",
    "linux-6.12",
    "linux-6.14",
    "eperm-sandbox",
    "native",
];

// The uapi values (include/uapi/asm-generic/mman-common.h), with the release
// that introduced each. Written out rather than taken from `libc`, whose
// versions differ in which of the newer ones they define.
const MADV_WILLNEED: i32 = 3; // 2.6 (process_madvise accepted it from 5.10)
const MADV_FREE: i32 = 8; // 4.5
const MADV_WIPEONFORK: i32 = 18; // 4.14
const MADV_KEEPONFORK: i32 = 19; // 4.14
const MADV_COLD: i32 = 20; // 5.4
const MADV_PAGEOUT: i32 = 21; // 5.4
const MADV_POPULATE_READ: i32 = 22; // 5.14
const MADV_POPULATE_WRITE: i32 = 23; // 5.14
const MADV_DONTNEED_LOCKED: i32 = 24; // 5.18
const MADV_COLLAPSE: i32 = 25; // 6.1
const MADV_HWPOISON: i32 = 100;
const MADV_SOFT_OFFLINE: i32 = 101;
const MADV_GUARD_INSTALL: i32 = 102; // 6.13
const MADV_GUARD_REMOVE: i32 = 103; // 6.13

/// `PIDFD_SELF_THREAD` / `PIDFD_SELF_THREAD_GROUP` (6.15), as the low 32 bits
/// the filter compares: -10000 and -10001.
const PIDFD_SELF_THREAD: u32 = -10000i32 as u32;
const PIDFD_SELF_THREAD_GROUP: u32 = -10001i32 as u32;

/// `PAGEMAP_SCAN` (6.7) = `_IOWR('f', 16, struct pm_scan_arg)`, as the low 32
/// bits of the ioctl request.
const PAGEMAP_SCAN: u32 = 0xC060_6610;

/// The `PAGEMAP_SCAN` ioctl before 6.7: `/proc/<pid>/pagemap` has no ioctl
/// handler, so `vfs_ioctl` answers ENOTTY.
fn no_pagemap_scan() -> Inject {
    Inject::SyscallArg {
        nr: libc::SYS_ioctl,
        arg: 1,
        value: PAGEMAP_SCAN,
        errno: libc::ENOTTY,
    }
}

/// `PR_SET_VMA` (5.17, for `PR_SET_VMA_ANON_NAME`).
const PR_SET_VMA: u32 = 0x5356_4d41;

fn madvise_einval(advices: &[i32]) -> impl Iterator<Item = Inject> + '_ {
    advices.iter().map(|&advice| Inject::Madvise {
        advice,
        errno: libc::EINVAL,
    })
}

fn syscall(nr: i64, errno: i32) -> Inject {
    Inject::Syscall { nr, errno }
}

/// `prctl(PR_SET_VMA, ...)` → EINVAL: before 5.17 the option is unknown and
/// `prctl` answers EINVAL (as does a kernel built without
/// CONFIG_ANON_VMA_NAME, like this machine's, so this changes nothing here
/// but keeps the profile faithful on kernels that have it).
fn no_pr_set_vma() -> Inject {
    Inject::SyscallArg {
        nr: libc::SYS_prctl,
        arg: 0,
        value: PR_SET_VMA,
        errno: libc::EINVAL,
    }
}

/// process_madvise before 6.15 (5.10 ..= 6.14): `pidfd` is checked first
/// (`pidfd_get_task` → `fdget`), and the PIDFD_SELF sentinels (6.15) are just
/// bad descriptors there → EBADF, whatever the advice.
fn pidfd_self_ebadf() -> Vec<Inject> {
    [PIDFD_SELF_THREAD_GROUP, PIDFD_SELF_THREAD]
        .into_iter()
        .map(|value| Inject::SyscallArg {
            nr: libc::SYS_process_madvise,
            arg: 0,
            value,
            errno: libc::EBADF,
        })
        .collect()
}

/// process_madvise as on 5.10 ..= 6.12 for the own process, for a caller with
/// CAP_SYS_NICE (the tests run as root; without it 5.12 ..= 6.12 answer EPERM
/// before looking at the advice, which `eperm-sandbox` covers): the sentinels
/// give EBADF ([`pidfd_self_ebadf`]); then `process_madvise_behavior_valid()`:
/// before 6.13 ("mm/madvise: unrestrict process_madvise() for current
/// process") only COLD, PAGEOUT, WILLNEED and (6.1) COLLAPSE pass; every other
/// advice → EINVAL. The filter can only compare for equality, so it lists the
/// other values.
fn process_madvise_pre_6_13() -> Vec<Inject> {
    let nr = libc::SYS_process_madvise;
    let mut v = pidfd_self_ebadf();
    let accepted = [MADV_WILLNEED, MADV_COLD, MADV_PAGEOUT, MADV_COLLAPSE];
    let others = (0..=MADV_COLLAPSE)
        .chain([
            MADV_HWPOISON,
            MADV_SOFT_OFFLINE,
            MADV_GUARD_INSTALL,
            MADV_GUARD_REMOVE,
        ])
        .filter(|a| !accepted.contains(a));
    v.extend(others.map(|advice| Inject::SyscallArg {
        nr,
        arg: 3,
        value: advice as u32,
        errno: libc::EINVAL,
    }));
    v
}

/// The rules of profile `name` (empty for `native`), or `None` for an unknown
/// name. When several rules match a call, the first decides.
pub fn profile_rules(name: &str) -> Option<Vec<Inject>> {
    let mut v = Vec::new();
    match name {
        // 3.18 made madvise (and fadvise) optional: CONFIG_ADVISE_SYSCALLS=n
        // (tinyconfig, some embedded builds) leaves sys_madvise to
        // sys_ni_syscall → ENOSYS for every advice. pidfd_open (5.3) and
        // process_madvise (5.10) do not exist yet → ENOSYS.
        "linux-3.18-no-advise" => {
            v.push(Inject::AnyMadvise {
                errno: libc::ENOSYS,
            });
            v.push(syscall(libc::SYS_process_madvise, libc::ENOSYS));
            v.push(syscall(libc::SYS_pidfd_open, libc::ENOSYS));
            v.push(no_pr_set_vma());
            v.push(no_pagemap_scan());
        }
        // 4.4 (LTS, Ubuntu 16.04): madvise knows DONTNEED, HUGEPAGE,
        // NOHUGEPAGE, DONTDUMP; every advice added later → EINVAL: FREE (4.5),
        // WIPEONFORK/KEEPONFORK (4.14), COLD/PAGEOUT (5.4), POPULATE_* (5.14),
        // DONTNEED_LOCKED (5.18), COLLAPSE (6.1), GUARD_* (6.13). No pidfd_open
        // (5.3) and no process_madvise (5.10) → ENOSYS.
        "linux-4.4" => {
            v.extend(madvise_einval(&[
                MADV_FREE,
                MADV_WIPEONFORK,
                MADV_KEEPONFORK,
                MADV_COLD,
                MADV_PAGEOUT,
                MADV_POPULATE_READ,
                MADV_POPULATE_WRITE,
                MADV_DONTNEED_LOCKED,
                MADV_COLLAPSE,
                MADV_GUARD_INSTALL,
                MADV_GUARD_REMOVE,
            ]));
            v.push(syscall(libc::SYS_process_madvise, libc::ENOSYS));
            v.push(syscall(libc::SYS_pidfd_open, libc::ENOSYS));
            v.push(no_pr_set_vma());
            v.push(no_pagemap_scan());
        }
        // 5.4 (LTS): FREE, COLD, PAGEOUT known; POPULATE_* (5.14),
        // DONTNEED_LOCKED (5.18), COLLAPSE (6.1), GUARD_* (6.13) → EINVAL.
        // pidfd_open exists (5.3); process_madvise does not (5.10) → ENOSYS.
        "linux-5.4" => {
            v.extend(madvise_einval(&[
                MADV_POPULATE_READ,
                MADV_POPULATE_WRITE,
                MADV_DONTNEED_LOCKED,
                MADV_COLLAPSE,
                MADV_GUARD_INSTALL,
                MADV_GUARD_REMOVE,
            ]));
            v.push(syscall(libc::SYS_process_madvise, libc::ENOSYS));
            v.push(no_pr_set_vma());
            v.push(no_pagemap_scan());
        }
        // 6.1 (LTS) and 6.12 (LTS, the last release before 6.13): the same
        // answers to everything osmem issues. Guard markers (6.13) → EINVAL;
        // process_madvise exists but takes neither the PIDFD_SELF sentinels
        // (6.15) nor DONTNEED/FREE/guards for the own process (6.13). COLLAPSE
        // (6.1), POPULATE_WRITE (5.14) and PR_SET_VMA (5.17) are there. The
        // PAGEMAP_SCAN ioctl (6.7) only on 6.12.
        "linux-6.1" | "linux-6.12" => {
            v.extend(madvise_einval(&[MADV_GUARD_INSTALL, MADV_GUARD_REMOVE]));
            v.extend(process_madvise_pre_6_13());
            if name == "linux-6.1" {
                v.push(no_pagemap_scan());
            }
        }
        // 6.13 and 6.14: guard markers, and process_madvise takes every advice for the own
        // process, but the PIDFD_SELF sentinels (6.15) are bad descriptors → EBADF. Not in
        // the list: it is the one kernel where batches must open a pidfd per flush.
        "linux-6.14" => {
            v.extend(pidfd_self_ebadf());
        }
        // A sandbox policy (seccomp with SCMP_ACT_ERRNO(EPERM), an LSM) that
        // refuses madvise and process_madvise whatever the arguments.
        "eperm-sandbox" => {
            v.push(Inject::AnyMadvise { errno: libc::EPERM });
            v.push(syscall(libc::SYS_process_madvise, libc::EPERM));
        }
        "native" => {}
        _ => return None,
    }
    Some(v)
}

/// The compiled filter of profile `name` (`None` for an unknown name; for
/// `native` a program that allows everything). Allocates.
pub fn profile_filter(name: &str) -> Option<BpfProgram> {
    profile_rules(name).map(|r| build_filter(&r))
}

/// In the re-executed entry: if [`PROFILE_ENV`] is set, install that profile's
/// filter on the calling thread (permanently; nothing for `native`) and return
/// the profile's name; if it is not set (a normal run that included ignored
/// tests), return `None` and the entry should do nothing.
///
/// Call it before anything calls osmem, so osmem's probe runs under the
/// filter. Threads spawned later inherit the filter; threads that already
/// exist (the test harness's) do not, so all osmem calls must be made from
/// this thread or its descendants. Panics on an unknown profile name.
pub fn enter_profile() -> Option<String> {
    let name = std::env::var(PROFILE_ENV).ok()?;
    let rules = profile_rules(&name).unwrap_or_else(|| panic!("unknown profile {name:?}"));
    if !rules.is_empty() {
        apply_filter_in_child(&build_filter(&rules));
    }
    Some(name)
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\t' || c == '\n' || c == '\r' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// In the entry: print one suite's result line and flush it at once, so the
/// results of earlier suites survive a later crash.
pub fn emit(suite: &str, result: &Result<(), String>, detail_if_pass: &str) {
    let (word, detail) = match result {
        Ok(()) => ("pass", detail_if_pass),
        Err(e) => ("fail", e.as_str()),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{RESULT_MARK}\t{}\t{word}\t{}",
        one_line(suite),
        one_line(detail)
    );
    let _ = out.flush();
}

/// One suite's outcome as the entry reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteResult {
    /// The suite's name.
    pub suite: String,
    /// Whether it passed.
    pub passed: bool,
    /// What it did (pass) or what went wrong (fail).
    pub detail: String,
}

/// The outcome of [`run_under_profile`].
#[derive(Debug)]
pub struct ProfileRun {
    /// The profile.
    pub profile: String,
    /// The entry test that ran.
    pub entry: String,
    /// How the process ended; `None` if it was killed after [`PROFILE_TIMEOUT`].
    pub status: Option<ExitStatus>,
    /// The result lines, in the order printed.
    pub results: Vec<SuiteResult>,
    /// Everything the process printed to stdout.
    pub stdout: String,
    /// Everything the process printed to stderr.
    pub stderr: String,
    /// Wall time of the process.
    pub elapsed: Duration,
}

impl ProfileRun {
    /// The result of `suite`, if the entry reported one.
    pub fn result(&self, suite: &str) -> Option<&SuiteResult> {
        self.results.iter().find(|r| r.suite == suite)
    }

    fn ended(&self) -> String {
        match self.status {
            Some(s) => format!("entry process ended with {s}"),
            None => format!("entry process killed after {PROFILE_TIMEOUT:?}"),
        }
    }

    /// One row per expected suite, `(suite, passed, detail)`: a suite the
    /// entry never reported is a failure naming how the process ended.
    pub fn rows(&self, suites: &[&str]) -> Vec<(String, bool, String)> {
        suites
            .iter()
            .map(|&s| match self.result(s) {
                Some(r) => (s.to_string(), r.passed, r.detail.clone()),
                None => (s.to_string(), false, format!("no result: {}", self.ended())),
            })
            .collect()
    }

    /// Every problem, one line each: failed or missing suites, unexpected
    /// result lines, and an entry that did not exit with status 0. Empty
    /// means every suite passed.
    pub fn problems(&self, suites: &[&str]) -> Vec<String> {
        let mut p: Vec<String> = self
            .rows(suites)
            .into_iter()
            .filter(|(_, ok, _)| !ok)
            .map(|(s, _, d)| format!("[{}] {s}: {d}", self.profile))
            .collect();
        for r in &self.results {
            if !suites.contains(&r.suite.as_str()) {
                p.push(format!("[{}] unexpected suite {:?}", self.profile, r.suite));
            }
        }
        // A failed suite makes the entry fail too (and a missing one already names how the
        // process ended): only an otherwise clean run needs this line.
        if p.is_empty() && !self.status.is_some_and(|s| s.success()) {
            p.push(format!("[{}] {}", self.profile, self.ended()));
        }
        p
    }

    /// A report for a failed assertion: the problems, then the process's
    /// output.
    pub fn explain(&self, suites: &[&str]) -> String {
        format!(
            "{} problem(s) under profile {} ({:?}):\n  {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.problems(suites).len(),
            self.profile,
            self.elapsed,
            self.problems(suites).join("\n  "),
            self.stdout,
            self.stderr
        )
    }

    /// If `OSMEM_TESTING_OUT` is set, append one row per expected suite to
    /// `$OSMEM_TESTING_OUT/profiles.tsv`: profile, suite, pass/fail, detail.
    pub fn append_testing_rows(&self, suites: &[&str]) {
        for (suite, ok, detail) in self.rows(suites) {
            let result = if ok { "pass" } else { "fail" };
            append_testing_row("profiles.tsv", &[&self.profile, &suite, result, &detail]);
        }
    }
}

/// If the environment variable `OSMEM_TESTING_OUT` names a directory, append
/// `cols` as one tab-separated line to the file `file` there (tabs and
/// newlines inside a column become spaces), with `O_APPEND` and a single
/// `write`, so rows written by tests running in parallel never interleave.
/// Without the variable nothing happens. Panics if the file cannot be written.
pub fn append_testing_row(file: &str, cols: &[&str]) {
    let Some(dir) = std::env::var_os("OSMEM_TESTING_OUT") else {
        return;
    };
    let mut line = cols
        .iter()
        .map(|c| one_line(c))
        .collect::<Vec<_>>()
        .join("\t");
    line.push('\n');
    let path = std::path::Path::new(&dir).join(file);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // One write() call: File::write issues exactly one syscall.
    let n = f
        .write(line.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(n, line.len(), "{}: short append", path.display());
}

fn parse_results(stdout: &str) -> Vec<SuiteResult> {
    stdout
        .lines()
        .filter_map(|l| {
            // Not necessarily at the start: libtest prints "test <name> ... " first.
            let at = l.find(RESULT_MARK)?;
            let rest = l[at + RESULT_MARK.len()..].strip_prefix('\t')?;
            let mut it = rest.splitn(3, '\t');
            let suite = it.next()?.to_string();
            let passed = match it.next()? {
                "pass" => true,
                "fail" => false,
                _ => return None,
            };
            let detail = it.next().unwrap_or("").to_string();
            Some(SuiteResult {
                suite,
                passed,
                detail,
            })
        })
        .collect()
}

fn read_all(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Run the test `entry` of the current test binary in a new process (exec,
/// not fork: see the module docs) with [`PROFILE_ENV`]`=profile`, and collect
/// its result lines. The entry is selected with
/// `--exact <entry> --include-ignored --nocapture --test-threads=1` (it should
/// be `#[ignore]`d so normal runs skip it). `OSMEM` is removed from the
/// environment so the entry starts from osmem's built-in defaults. The
/// process is killed after [`PROFILE_TIMEOUT`].
pub fn run_under_profile(profile: &str, entry: &str) -> ProfileRun {
    assert!(
        profile_rules(profile).is_some(),
        "unknown profile {profile:?}"
    );
    let exe = std::env::current_exe().expect("current_exe");
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            entry,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROFILE_ENV, profile)
        .env_remove("OSMEM")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the test binary");
    let out = read_all(child.stdout.take());
    let err = read_all(child.stderr.take());
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the entry") {
            break Some(s);
        }
        if start.elapsed() > PROFILE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    ProfileRun {
        profile: profile.to_string(),
        entry: entry.to_string(),
        status,
        results: parse_results(&stdout),
        stdout,
        stderr,
        elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_builds() {
        for p in PROFILES {
            let prog = profile_filter(p).expect("known profile");
            assert!(!prog.is_empty(), "{p}");
        }
        assert!(profile_rules("linux-2.6").is_none());
        assert!(profile_rules("native").unwrap().is_empty());
    }

    #[test]
    fn result_lines_round_trip() {
        let s = format!(
            "noise\ntest x ... {RESULT_MARK}\tmap\tpass\tall good\n{RESULT_MARK}\tfault\tfail\tGuard: x\ty\n"
        );
        let r = parse_results(&s);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].suite, "map");
        assert!(r[0].passed);
        assert!(!r[1].passed);
        assert_eq!(r[1].detail, "Guard: x\ty");
        assert_eq!(one_line("a\tb\nc"), "a b c");
    }
}
