//! `osmem bench` and `osmem report`, run as the built binary: what they write, and how they
//! fail on bad input. The measurements run at the hidden `--smoke` level (each one minimally,
//! a few seconds in all); CI runs the real `--quick` report. No timing is asserted.

use serde_json::Value;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

mod common;
use common::{assert_success, osmem, text};

/// No panic trace, and no measurement reported as failed.
fn assert_no_panic(o: &Output) {
    common::assert_no_panic(o);
    let err = text(&o.stderr);
    assert!(
        !err.contains("measurement failed"),
        "a measurement failed:\n{err}"
    );
}

/// A fresh, empty directory of its own for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("osmem-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Well-formed XML, checked by hand (no XML crate in the workspace): every tag closes in
/// order, attribute values are quoted, and text holds no bare `<` or `&` that is not an
/// entity. Enough to catch a truncated or mis-escaped SVG.
fn check_xml(s: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = s.trim_start();
    if let Some(r) = rest.strip_prefix("<?xml") {
        rest = &r[r.find("?>").ok_or("unterminated <?xml")? + 2..];
    }
    let mut roots = 0;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->").ok_or("unterminated comment")? + 3..];
        } else if rest.starts_with('<') {
            // A tag: find its end outside quotes.
            let mut quote = None;
            let mut end = None;
            for (i, c) in rest.char_indices().skip(1) {
                match (quote, c) {
                    (None, '"' | '\'') => quote = Some(c),
                    (Some(q), c) if c == q => quote = None,
                    (None, '<') => return Err(format!("'<' inside a tag near {:?}", &rest[..i])),
                    (None, '>') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or("unterminated tag")?;
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("</{name}> closes nothing"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else {
                let name: String = tag
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '/')
                    .collect();
                if name.is_empty() {
                    return Err(format!("empty tag name in <{tag}>"));
                }
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let body = &rest[..end];
            for (i, _) in body.match_indices('&') {
                let ent = &body[i..];
                let semi = ent.find(';').ok_or("bare '&' in text")?;
                if semi > 10 {
                    return Err(format!("bare '&' in text: {:?}", &ent[..12.min(ent.len())]));
                }
            }
            if stack.is_empty() && !body.trim().is_empty() {
                return Err("text outside the root element".to_owned());
            }
            rest = &rest[end..];
        }
    }
    match (stack.pop(), roots) {
        (Some(open), _) => Err(format!("<{open}> never closed")),
        (None, 1) => Ok(()),
        (None, n) => Err(format!("{n} root elements")),
    }
}

#[test]
fn the_xml_checker_rejects_what_it_should() {
    assert!(check_xml(
        "<?xml version=\"1.0\"?><svg a=\"x>y\"><g><text>a &amp; b</text></g><rect/></svg>"
    )
    .is_ok());
    assert!(check_xml("<svg><g></svg>").is_err());
    assert!(check_xml("<svg><text>a & b</text></svg>").is_err());
    assert!(check_xml("<svg><text>a").is_err());
    assert!(check_xml("<svg></svg><svg></svg>").is_err());
}

/// The three files of a report directory, checked for what a reader needs.
fn check_report_dir(dir: &Path) -> Value {
    for f in ["report.md", "report.json", "chart.svg"] {
        let m = std::fs::metadata(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(m.len() > 0, "{f} is empty");
    }
    let json: Value = serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap())
        .expect("report.json parses");
    let svg = std::fs::read_to_string(dir.join("chart.svg")).unwrap();
    check_xml(&svg).unwrap_or_else(|e| panic!("chart.svg is not well-formed XML: {e}"));
    assert!(
        svg.contains("<svg") && svg.contains("<text"),
        "no chart text"
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();

    // The selection the report checks is osmem's own, as `probe` reports it in the same file,
    // and report.md names it.
    let v = &json["verdicts"];
    let sel = &json["probe"]["selected"];
    assert_eq!(v["fault"]["selected"], sel["fault"]);
    assert_eq!(v["unused"]["selected"], sel["unused"]);
    for topic in ["fault", "unused", "batch"] {
        let t = &v[topic];
        let name = t["selected"].as_str().expect("selected");
        assert!(
            md.contains(&format!("**{topic} = {name}**")),
            "report.md does not name {topic} = {name}"
        );
        // "agrees" means exactly: the selection meets every criterion.
        let favoured: Vec<&str> = t["favoured"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(t["agrees"], favoured.contains(&name), "{topic}: {t}");
        let cand = t["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{topic}: {name} is not among the candidates"));
        let all = cand["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["passed"] == true);
        assert_eq!(cand["passes_all"], all, "{topic}: {cand}");
        assert_eq!(t["agrees"], all, "{topic}");
        if t["agrees"] == false {
            assert!(
                md.contains(&format!("osmem selects {name}")),
                "a disagreement must be said plainly in report.md"
            );
        }
    }
    for id in ["F1", "F2", "F3", "F4", "U1", "U2", "U3", "U4", "B1", "B2"] {
        assert!(
            md.contains(&format!("**{id}**")),
            "criterion {id} not defined"
        );
    }
    let b = &json["bench"];
    assert_eq!(
        b["costs"].as_array().unwrap().len(),
        16,
        "4 sizes × 2 modes × 2 groups"
    );
    assert_eq!(
        b["contention"].as_array().unwrap().len(),
        2,
        "two worker kinds"
    );
    assert!(!b["rankings"].as_array().unwrap().is_empty());
    // Every batch row carries the raw process_madvise beside osmem's batch.
    for row in b["batch"].as_array().unwrap() {
        assert!(row["raw_batch_us"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["batch_over_raw"].as_f64().unwrap() > 0.0, "{row}");
    }
    // The metadata-at-scale case, as the kernel and osmem's counters showed it: a uniform
    // TiB and a 16 GiB alloc hold no metadata, and a pool reservation + drop is exactly one
    // mmap + one munmap.
    let s = &b["scale"];
    assert_eq!(s["tib_metadata_bytes"], 0, "{s}");
    assert_eq!(s["alloc_metadata_bytes"], 0, "{s}");
    assert_eq!(s["pool_osmem_syscalls"].as_f64(), Some(2.0), "{s}");
    assert!(s["scattered_bytes_per_page"].as_f64().unwrap() > 0.0, "{s}");
    assert!(
        md.contains("osmem's own costs at scale"),
        "report.md shows it"
    );
    // Residency queries: every method that works here, in every case, with the same runs
    // as the raw method (the bench asserts it), and the scan's effect on writers.
    let rows = b["residency"].as_array().unwrap();
    let p = osmem::probe().residency;
    let methods = [p.pagemap_scan, p.pagemap, p.mincore]
        .iter()
        .filter(|&&x| x)
        .count();
    assert_eq!(rows.len(), 4 * methods, "4 cases × the methods that work");
    for row in rows {
        assert!(row["runs"].as_u64().unwrap() >= 1, "{row}");
        assert!(row["osmem_over_raw"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["over_fastest"].as_f64().unwrap() >= 1.0, "{row}");
    }
    let rc = &b["residency_contention"];
    assert_eq!(rc["worker"], "residency-scan", "{rc}");
    assert!(md.contains("Residency queries"), "report.md shows them");
    json
}

#[test]
fn report_writes_the_three_files_into_the_default_directory() {
    let cwd = scratch("default-dir");
    let o = osmem()
        .args(["report", "--smoke"])
        .current_dir(&cwd)
        .output()
        .expect("run osmem");
    assert_no_panic(&o);
    assert_success(&o);
    let out = text(&o.stdout);
    assert!(out.contains("written to report"), "{out}");
    let json = check_report_dir(&cwd.join("report"));

    // The kernel's own view backs the VMA measurement: guard markers add no VMA, protection
    // changes split (the bench asserts osmem took the link it names for every fault).
    if osmem::probe().advice.guard_install {
        let rows = json["bench"]["vma_growth"].as_array().unwrap();
        let added = |s: &str| {
            rows.iter().find(|r| r["strategy"] == s).unwrap()["vmas_added"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(added("guard"), 0);
        assert!(
            added("protect") >= 2 * 511,
            "every interior hole splits twice"
        );
        assert_eq!(
            json["verdicts"]["fault"]["candidates"][0]["checks"][0]["passed"],
            true
        );
    }
    let _ = std::fs::remove_dir_all(&cwd);
}

/// A knob that forces a strategy the numbers do not favour: the report must say so, not
/// hide it. With guard markers available, fault=go adds VMAs where guard adds none (F1).
#[test]
fn a_forced_strategy_is_reported_as_disagreeing() {
    if !osmem::probe().advice.guard_install {
        eprintln!("no guard markers: fault=go is not clearly worse on F1 here");
        return;
    }
    let dir = scratch("forced");
    let o = osmem()
        .args(["report", "--smoke"])
        .arg(&dir)
        .env("OSMEM", "fault=go")
        .output()
        .expect("run osmem");
    assert_no_panic(&o);
    assert_success(&o);
    let json = check_report_dir(&dir);
    let f = &json["verdicts"]["fault"];
    assert_eq!(f["selected"], "go");
    assert_eq!(f["agrees"], false, "{f}");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("osmem selects go"), "{md}");
    assert!(md.contains("the fault knob asks for go"), "{md}");
    assert!(text(&o.stdout).contains("fault   osmem selects go"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_prints_markdown_tables() {
    let o = osmem()
        .args(["bench", "--smoke"])
        .output()
        .expect("run osmem");
    assert_no_panic(&o);
    assert_success(&o);
    let out = text(&o.stdout);
    for needle in [
        "# osmem bench",
        "Cost per operation",
        "| fault | 4KiB | alone |",
        "| unused | 64MiB | sibling |",
        "Contention",
        "Worker `populate`",
        "Worker `maps-reader`",
        "VMA growth",
        "Batch",
        "## Rankings",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    // stderr is not a terminal here: no progress bar.
    assert_eq!(text(&o.stderr), "");
}

#[test]
fn bench_json_parses_and_a_closed_pipe_is_a_quiet_exit() {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds; O_CLOEXEC keeps the read end out of other children.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh and owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let o = osmem()
        .args(["bench", "--smoke", "--json"])
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .expect("run osmem");
    assert_no_panic(&o);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "");
}

#[test]
fn bad_command_lines_fail_cleanly() {
    for args in [
        &["bench", "--bogus"][..],
        &["bench", "extra"],
        &["bench", "--quick", "--smoke"],
        &["report", "--bogus"],
        &["report", "a", "b"],
        &["report", "--json"],
        &["benchmark"],
    ] {
        let o = osmem().args(args).output().expect("run osmem");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("Usage:"), "{args:?}");
        assert_no_panic(&o);
    }
}

#[test]
fn an_unwritable_report_directory_is_a_clear_error_before_measuring() {
    let file = scratch("not-a-dir").join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    for dir in [Path::new("/proc/osmem-report"), file.as_path()] {
        let o = osmem().arg("report").arg(dir).output().expect("run osmem");
        assert_no_panic(&o);
        assert_eq!(o.status.code(), Some(1), "{dir:?}");
        let err = text(&o.stderr);
        assert!(
            err.starts_with("osmem: cannot ") && err.contains(&dir.display().to_string()),
            "{dir:?}: {err}"
        );
        // The full run was asked for; failing before it started means nothing was measured.
        assert_eq!(text(&o.stdout), "", "{dir:?}");
    }
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}
