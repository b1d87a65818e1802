//! Runs the built `osmem` binary and checks what it prints and how it exits.

use serde_json::Value;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};

mod common;
use common::{assert_no_panic, assert_success, osmem, text};

fn run(c: &mut Command) -> Output {
    c.output().expect("run osmem")
}

fn json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "exit {:?}, stderr:\n{}",
        o.status,
        text(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("stdout is not JSON ({e}):\n{}", text(&o.stdout));
    })
}

/// (major, minor) of a release such as "6.18.44-fc-v769".
fn version(release: &str) -> (u32, u32) {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|s| s.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
fn probe_prints_the_table() {
    let o = run(osmem().arg("probe"));
    assert_success(&o);
    let out = text(&o.stdout);
    for needle in [
        "Kernel",
        osmem::probe().release(),
        "page size",
        "THP mode",
        "PMD size",
        "vm.max_map_count",
        "vm.overcommit_memory",
        "MADV_FREE",
        "MADV_DONTNEED",
        "MADV_HUGEPAGE",
        "MADV_NOHUGEPAGE",
        "MADV_COLLAPSE",
        "MADV_POPULATE_WRITE",
        "MADV_GUARD_INSTALL",
        "process_madvise(self)",
        "PR_SET_VMA_ANON_NAME",
        "Selected strategies",
        "harddecommit",
        "prefault",
        "Knobs in force",
        "OSMEM is not set",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    assert!(!out.contains("warning"), "warnings without OSMEM:\n{out}");
    assert_eq!(text(&o.stderr), "");
}

#[test]
fn probe_json_has_the_keys_and_agrees_with_the_library() {
    let v = json(&run(osmem().args(["probe", "--json"])));
    let p = osmem::probe();

    let k = &v["kernel"];
    assert_eq!(k["release"], p.release());
    assert_eq!(k["page_size"], p.page_size as u64);
    assert_eq!(k["pmd_size"], p.pmd_size as u64);
    assert_eq!(k["max_map_count"], p.max_map_count);
    for key in ["thp", "overcommit"] {
        assert!(k[key].is_string(), "kernel.{key}: {}", k[key]);
    }

    let a = &v["advice"];
    for (key, want) in [
        ("free", p.advice.free),
        ("dontneed", p.advice.dontneed),
        ("hugepage", p.advice.hugepage),
        ("nohugepage", p.advice.nohugepage),
        ("collapse", p.advice.collapse),
        ("populate_write", p.advice.populate_write),
        ("guard_install", p.advice.guard_install),
    ] {
        assert_eq!(a[key], want, "advice.{key}");
    }

    let pm = &v["process_madvise"];
    let via = match p.process_madvise {
        osmem::ProcessMadvise::Unsupported => Value::Null,
        osmem::ProcessMadvise::PidfdSelf => "pidfd_self".into(),
        osmem::ProcessMadvise::PidfdOpen => "pidfd_open".into(),
        _ => "other".into(),
    };
    assert_eq!(pm["via"], via);
    assert_eq!(pm["supported"], !via.is_null());
    assert_eq!(v["anon_name"], p.anon_name);
    let rs = &v["residency"];
    let want = osmem::residency_method().map_or(Value::Null, |m| m.name().into());
    assert_eq!(rs["method"], want, "residency.method");
    for (key, want) in [
        ("pagemap_scan", p.residency.pagemap_scan),
        ("scan_guard", p.residency.scan_guard),
        ("pagemap", p.residency.pagemap),
        ("pagemap_guard", p.residency.pagemap_guard),
        ("pagemap_pfn", p.residency.pagemap_pfn),
        ("mincore", p.residency.mincore),
    ] {
        assert_eq!(rs[key], want, "residency.{key}");
    }

    for key in ["unused", "fault", "thp"] {
        assert!(v["selected"][key].is_string(), "selected.{key}");
        assert!(
            v["selected_reasons"][key].is_string(),
            "selected_reasons.{key}"
        );
        assert!(v["knobs"][key].is_string(), "knobs.{key}");
    }
    for key in ["harddecommit", "prefault"] {
        assert!(v["selected"][key].is_boolean(), "selected.{key}");
        assert!(
            v["selected_reasons"][key].is_string(),
            "selected_reasons.{key}"
        );
        assert!(v["knobs"][key].is_boolean(), "knobs.{key}");
    }
    assert_ne!(v["selected"]["fault"], "auto");
    // Defaults, with OSMEM unset.
    assert_eq!(v["knobs"]["unused"], "dontneed");
    assert_eq!(v["knobs"]["fault"], "auto");
    assert_eq!(v["osmem_env"], Value::Null);
    assert_eq!(v["osmem_env_problems"], serde_json::json!([]));
    assert_eq!(v["osmem_env_problems_dropped"], 0);
}

/// The acceptance: on Linux >= 6.15 (this machine runs 6.18) guard markers and
/// process_madvise on the own process are both reported supported.
#[test]
fn new_kernels_report_guard_markers_and_process_madvise() {
    let v = json(&run(osmem().args(["probe", "--json"])));
    let release = v["kernel"]["release"].as_str().expect("release");
    if version(release) < (6, 15) {
        eprintln!("kernel {release} < 6.15: nothing to check");
        return;
    }
    assert_eq!(v["advice"]["guard_install"], true, "kernel {release}");
    assert_eq!(v["process_madvise"]["supported"], true, "kernel {release}");
    assert_eq!(v["selected"]["fault"], "guard", "kernel {release}");

    let out = text(&run(osmem().arg("probe")).stdout);
    let line = |name: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
            .to_owned()
    };
    assert!(line("MADV_GUARD_INSTALL").ends_with(" supported"));
    assert!(line("process_madvise(self)").contains(" supported (via "));
}

#[test]
fn osmem_env_problems_are_reported_not_taken() {
    let env = "bogus=1,unused=sometimes";

    let o = run(osmem().arg("probe").env("OSMEM", env));
    assert_success(&o);
    let out = text(&o.stdout);
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{out}");
    assert!(warnings[0].contains("\"bogus=1\"") && warnings[0].contains("unknown key"));
    assert!(warnings[1].contains("\"unused=sometimes\"") && warnings[1].contains("bad value"));
    assert!(
        warnings[1].contains("dontneed, free, remap"),
        "{}",
        warnings[1]
    );
    assert!(
        out.contains("unused=dontneed"),
        "the default must stay:\n{out}"
    );

    let o = run(osmem().args(["probe", "--json"]).env("OSMEM", env));
    let v = json(&o);
    let problems = v["osmem_env_problems"].as_array().expect("array");
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0]["kind"], "unknown_key");
    assert_eq!(problems[0]["item"], "bogus=1");
    assert_eq!(problems[1]["kind"], "bad_value");
    assert_eq!(problems[1]["item"], "unused=sometimes");
    assert_eq!(v["osmem_env"], env);
    assert_eq!(v["knobs"]["unused"], "dontneed");
    // With --json the warnings also reach stderr, for a person piping the JSON elsewhere.
    let err = text(&o.stderr);
    assert!(
        err.contains("bogus=1") && err.contains("unused=sometimes"),
        "{err}"
    );
}

#[test]
fn osmem_env_good_values_are_in_force() {
    let o = run(osmem()
        .args(["probe", "--json"])
        .env("OSMEM", "fault=go,thp=never,prefault=1"));
    let v = json(&o);
    assert_eq!(v["knobs"]["fault"], "go");
    assert_eq!(v["selected"]["fault"], "go");
    assert_eq!(v["knobs"]["thp"], "never");
    assert_eq!(v["knobs"]["prefault"], true);
    assert_eq!(v["osmem_env_problems"], serde_json::json!([]));
    assert_eq!(text(&o.stderr), "");
}

#[test]
fn bad_command_lines_fail_cleanly() {
    for args in [&["frobnicate"][..], &["probe", "--bogus"], &[]] {
        let o = run(osmem().args(args));
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = text(&o.stderr);
        assert!(err.contains("Usage:"), "{args:?}: {err}");
        assert_no_panic(&o);
    }
}

/// stdout is a pipe whose reader is already gone: every write fails with EPIPE. The program
/// must stop quietly with exit code 0.
#[test]
fn closed_stdout_pipe_is_a_quiet_exit() {
    for args in [&["probe"][..], &["probe", "--json"]] {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds; O_CLOEXEC keeps the read end out of children that
        // other tests spawn meanwhile (it would keep the pipe open).
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are fresh and owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read);
        let o = osmem()
            .args(args)
            .stdout(Stdio::from(write))
            .stderr(Stdio::piped())
            .output()
            .expect("run osmem");
        assert_no_panic(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert_eq!(text(&o.stderr), "", "{args:?}");
    }
}

/// The shell form of the same: `osmem probe --json | head -c1`.
#[test]
fn piping_into_head_does_not_panic() {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' probe --json | head -c1",
            env!("CARGO_BIN_EXE_osmem")
        ))
        .env_remove("OSMEM")
        .output()
        .expect("run sh");
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), "{");
    assert_no_panic(&o);
}

/// Any other write error is reported, with a non-zero exit.
#[test]
fn full_disk_is_an_error_message() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("no /dev/full: nothing to check");
        return;
    };
    let o = osmem()
        .arg("probe")
        .stdout(full)
        .output()
        .expect("run osmem");
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("osmem: cannot write output"), "{err}");
    assert_no_panic(&o);
}
