//! `OSMEM` is read from the environment the process started with, before `main`, and never
//! with `getenv` at first use (which may run on any thread while another calls `setenv`:
//! undefined behaviour in libc). Checked in a child process of this test binary started with
//! `OSMEM` set, in which `getenv` is interposed (this executable's own definition wins over
//! libc's for every caller linked into it, osmem included) to count the calls that ask for
//! `OSMEM`: there must be none, the knobs must be the variable's, a repeated key must be
//! reported, and a `set_var` after the start must change nothing.

use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};

static OSMEM_GETENV: AtomicUsize = AtomicUsize::new(0);

extern "C" {
    static environ: *const *const c_char;
}

/// `getenv`, counting the calls for `OSMEM`. (No allocation, no lock: a scan of `environ`,
/// as libc's does; this process never changes its environment concurrently.)
///
/// # Safety
/// As libc's: `name` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn getenv(name: *const c_char) -> *mut c_char {
    let n = CStr::from_ptr(name).to_bytes();
    if n == b"OSMEM" {
        OSMEM_GETENV.fetch_add(1, Ordering::Relaxed);
    }
    let mut p = environ;
    if p.is_null() {
        return core::ptr::null_mut();
    }
    while !(*p).is_null() {
        let e = CStr::from_ptr(*p).to_bytes();
        if e.len() > n.len() && e.starts_with(n) && e[n.len()] == b'=' {
            return (*p).add(n.len() + 1) as *mut c_char;
        }
        p = p.add(1);
    }
    core::ptr::null_mut()
}

const ROLE: &str = "OSMEM_ENV_TEST_ROLE";

#[test]
fn osmem_is_read_at_start_and_never_through_getenv() {
    if std::env::var_os(ROLE).is_some() {
        // The child. Nothing of osmem has run yet but its constructor.
        let before = OSMEM_GETENV.load(Ordering::Relaxed);
        // SAFETY: this process has one thread here (the harness runs with --test-threads=1).
        unsafe { std::env::set_var("OSMEM", "unused=remap") };
        let r = osmem::Reservation::alloc(1 << 16).unwrap();
        let u = unsafe { r.unused(0, 1 << 16) }.unwrap();
        let c = osmem::config();
        let problems: Vec<String> = osmem::env_report()
            .problems()
            .iter()
            .map(|p| format!("{:?}:{}", p.kind(), p.item()))
            .collect();
        println!(
            "RESULT getenv_before={before} getenv_after={} unused={:?} fault={:?} how={:?} problems={}",
            OSMEM_GETENV.load(Ordering::Relaxed),
            c.unused_advice(),
            c.fault_strategy(),
            u.how,
            problems.join(";")
        );
        return;
    }
    let kv = osmem_testkit::rerun_self(
        "osmem_is_read_at_start_and_never_through_getenv",
        &[(ROLE, "1"), ("OSMEM", "unused=free,fault=protect,fault=go")],
        &[],
    );
    let line = format!("{kv:?}");
    assert_eq!(kv["getenv_before"], "0", "{line}");
    assert_eq!(kv["getenv_after"], "0", "getenv(OSMEM) was called: {line}");
    // The variable as the process started with it; the later set_var changed nothing.
    assert_eq!(kv["unused"], "Free", "{line}");
    assert_eq!(kv["how"], "Free", "{line}");
    // A repeated key: the last value holds, and it is reported.
    assert_eq!(kv["fault"], "Go", "{line}");
    assert_eq!(kv["problems"], "RepeatedKey:fault=go", "{line}");
}
