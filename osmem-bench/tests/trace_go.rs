//! The heap trace is the same sequence on both runtimes: the events osmem-bench generates
//! hash to what gotrace (the Go program, run on the real Go runtime) prints.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Go toolchain: $OSMEM_GO, the one `scripts/go.sh` installs, or `go` on the PATH. CI
/// installs it, so there its absence is a failure.
fn go() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("OSMEM_GO").map(PathBuf::from),
        Some(root().join(".tools/go/bin/go")),
        Some(PathBuf::from("go")),
    ];
    let found = candidates.into_iter().flatten().find(|g| {
        Command::new(g)
            .arg("version")
            .env("GOTOOLCHAIN", "local")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() && std::env::var_os("CI").is_some() {
        panic!("CI installs Go (scripts/go.sh): none found");
    }
    found
}

/// A value Go printed for this scaling (`go run . -size-div 4 -time-div 4` in osmem-bench/gotrace/,
/// Go 1.27.3): the Rust generator must keep producing it even where Go is absent.
#[test]
fn the_events_hash_to_what_the_go_program_printed() {
    let (ticks, hash, shrink_ends) = osmem_bench::trace_events(4, 4);
    assert_eq!(format!("{hash:016x}"), "11b4efa78d16b92b");
    assert_eq!(ticks.len(), 549);
    assert_eq!(shrink_ends, vec![87, 349]);
}

#[test]
fn the_go_program_replays_the_same_events() {
    let Some(go) = go() else {
        eprintln!("no Go toolchain (scripts/go.sh installs one): cross-check skipped");
        return;
    };
    let out = Command::new(&go)
        .args(["run", ".", "-size-div", "16", "-time-div", "16"])
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("gotrace"))
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("go run");
    assert!(
        out.status.success(),
        "gotrace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let go_hash = text
        .split("\"hash\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a hash in gotrace's output");
    let (_, hash, _) = osmem_bench::trace_events(16, 16);
    assert_eq!(
        go_hash,
        format!("{hash:016x}"),
        "the two runtimes replay one sequence"
    );
}
