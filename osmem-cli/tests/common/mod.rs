//! What the CLI test files share: running the built binary and reading what it printed.
#![allow(dead_code)] // each test binary uses a subset

use std::process::{Command, Output, Stdio};

/// The built `osmem`, with no OSMEM from the caller's environment (each test decides what
/// OSMEM holds) and no stdin.
pub fn osmem() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osmem"));
    c.env_remove("OSMEM").stdin(Stdio::null());
    c
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Bad input must give a message, never a panic trace.
pub fn assert_no_panic(o: &Output) {
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "stderr shows a panic:\n{err}");
    assert!(
        !err.contains("RUST_BACKTRACE"),
        "stderr shows a panic:\n{err}"
    );
}

/// The command exited 0; otherwise the failure shows its status and stderr.
pub fn assert_success(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        text(&o.stderr)
    );
}
