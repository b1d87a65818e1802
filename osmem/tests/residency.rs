//! Residency queries against independent evidence.
//!
//! A known layout is built with plain writes and reads and with osmem's own transitions:
//! pages written (present), read-touched (the shared zero page), released with DONTNEED
//! (nothing), released with FREE (still present until reclaimed), guard-marked, untouched.
//! The test kit's own readers (`mincore`, its own `/proc/self/pagemap` reader) confirm the
//! layout first; then every method osmem has here must report exactly those runs in the
//! categories it tells apart, the methods must agree on what they share, small output buffers
//! must continue where they stopped, `resident_bytes` must equal smaps' Rss, and a forked
//! child must see its own memory, not its parent's.
//!
//! The fallback rows (a refused ioctl, pread, open or mincore, a transient EAGAIN, and a
//! `/proc/self/pagemap` replaced by `/dev/null` in a private mount namespace) run in forked
//! children with the probe done in the parent, so they meet the refusal at query time; each
//! asks twice and checks the answer, the method that gave it, the downgrade (counted once),
//! that the second query does not ask the refused primitive again, and that the injection hit.
//! They append rows to the failure matrix of TESTING.md. One re-executed process meets the
//! mount-namespace restriction at its first use of osmem: the probe must pick mincore.

mod common;

use osmem::{
    Error, FaultStrategy, Op, PageRun, Reservation, Residence, ResidencyMethod, Stats, Syscall,
    Tells, UnusedAdvice,
};
use osmem_testkit::{self as tk, Inject, Report};

const N: usize = 16;

/// What the layout put in each page.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Truth {
    Written,
    ZeroPage,
    Nothing,
    Guard,
}

/// Pages 0-3 written, 4-5 read-touched, 6-7 written then DONTNEED, 8-9 written then FREE,
/// 10-11 guard markers (where the kernel has them; else released like 6-7), 12-15 untouched.
fn layout() -> (Reservation, [Truth; N]) {
    let ps = osmem::page_size();
    let r = Reservation::alloc(N * ps).unwrap();
    let p = r.as_ptr();
    let guards = osmem::probe().advice.guard_install;
    // SAFETY (writes and reads below): inside the Ready region.
    unsafe {
        for i in [0, 1, 2, 3, 6, 7, 8, 9, 10, 11] {
            p.add(i * ps).write_volatile(0x5A);
        }
        for i in [4, 5] {
            p.add(i * ps).read_volatile();
        }
        let _ = r
            .unused_with(6 * ps, 2 * ps, UnusedAdvice::DontNeed)
            .unwrap();
        let _ = r.unused_with(8 * ps, 2 * ps, UnusedAdvice::Free).unwrap();
        let s = if guards {
            FaultStrategy::Guard
        } else {
            FaultStrategy::Protect
        };
        let _ = r.fault_with(10 * ps, 2 * ps, s).unwrap();
    }
    let mut t = [Truth::Nothing; N];
    for (i, t) in t.iter_mut().enumerate() {
        *t = match i {
            0..=3 | 8 | 9 => Truth::Written,
            4 | 5 => Truth::ZeroPage,
            10 | 11 if guards => Truth::Guard,
            _ => Truth::Nothing,
        };
    }
    (r, t)
}

/// What method `m`, telling `tells`, must report for a page holding `t`.
fn expected(m: ResidencyMethod, tells: Tells, t: Truth) -> Residence {
    match t {
        Truth::Written => Residence::Present,
        Truth::ZeroPage if tells.zero_page => Residence::ZeroPage,
        Truth::ZeroPage => Residence::Present,
        Truth::Nothing => Residence::None,
        Truth::Guard if tells.guard => Residence::Guard,
        // pagemap before 6.15 and PAGEMAP_SCAN before 6.16 read a guard marker as swapped;
        // mincore as not resident.
        Truth::Guard if m == ResidencyMethod::Mincore => Residence::None,
        Truth::Guard => Residence::Swapped,
    }
}

/// The runs, one entry per page; `None` if they are not maximal, contiguous runs covering
/// `[0, end)` from offset `start`.
fn per_page(runs: &[PageRun], start: usize, end: usize, ps: usize) -> Option<[Residence; N]> {
    let mut out = [Residence::None; N];
    let mut at = start;
    for (k, r) in runs.iter().enumerate() {
        if r.offset != at || r.len == 0 || r.len % ps != 0 {
            return None;
        }
        if k > 0 && runs[k - 1].residence == r.residence {
            return None; // not maximal
        }
        out[r.offset / ps..(r.offset + r.len) / ps].fill(r.residence);
        at += r.len;
    }
    (at == end).then_some(out)
}

/// Every method that works here.
fn methods() -> Vec<ResidencyMethod> {
    let p = osmem::probe().residency;
    ResidencyMethod::ALL
        .into_iter()
        .filter(|&m| p.works(m))
        .collect()
}

#[test]
fn the_layout_is_what_the_kernel_shows() {
    // The evidence, read with the test kit's own tools before osmem is asked anything.
    let (r, truth) = layout();
    let ps = osmem::page_size();
    let base = r.as_ptr() as usize;
    let mut e = [0u64; N];
    assert!(tk::pagemap_entries(base, &mut e), "pagemap readable here");
    let zero_pfns: Vec<u64> = (0..N)
        .filter(|&i| truth[i] == Truth::ZeroPage)
        .map(|i| e[i] & ((1 << 55) - 1))
        .collect();
    for (i, &t) in truth.iter().enumerate() {
        let present = e[i] >> 63 & 1 == 1;
        let mincore = tk::resident_pages(base + i * ps, ps) == 1;
        match t {
            Truth::Written | Truth::ZeroPage => assert!(present && mincore, "page {i}: {t:?}"),
            Truth::Nothing => assert!(!present && !mincore && e[i] >> 62 & 1 == 0, "page {i}"),
            Truth::Guard => assert!(!present && !mincore && e[i] >> 62 & 1 == 1, "page {i}"),
        }
    }
    // Both read-touched pages map the same frame (the zero page) where frames are visible.
    assert_eq!(zero_pfns[0], zero_pfns[1]);
}

#[test]
fn every_method_reports_exactly_the_known_runs_and_they_agree() {
    let (r, truth) = layout();
    let ps = osmem::page_size();
    let mut seen = Vec::new();
    for m in methods() {
        let mut out = [PageRun::EMPTY; N];
        let q = r.residency_with(m, 0, N * ps, &mut out).unwrap();
        assert_eq!((q.method, q.end), (m, N * ps), "{m:?}");
        let got = per_page(&out[..q.runs], 0, N * ps, ps)
            .unwrap_or_else(|| panic!("{m:?}: not maximal contiguous runs: {:?}", &out[..q.runs]));
        let want: Vec<Residence> = truth.iter().map(|&t| expected(m, q.tells, t)).collect();
        assert_eq!(got.to_vec(), want, "{m:?} (tells {:?})", q.tells);
        // The subset every method shares: memory mapped (present or the zero page) or not.
        seen.push(got.map(|r| matches!(r, Residence::Present | Residence::ZeroPage)));
    }
    assert!(!seen.is_empty());
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "methods disagree: {seen:?}"
    );
    // The automatic choice is the first method that works.
    let mut out = [PageRun::EMPTY; N];
    let q = r.residency(0, N * ps, &mut out).unwrap();
    assert_eq!(Some(q.method), osmem::residency_method());
    assert_eq!(q.method, methods()[0]);
}

#[test]
fn small_buffers_continue_where_they_stopped() {
    let (r, _) = layout();
    let ps = osmem::page_size();
    for m in methods() {
        let mut all = [PageRun::EMPTY; N];
        let q = r.residency_with(m, ps, (N - 1) * ps, &mut all).unwrap();
        let whole = per_page(&all[..q.runs], ps, N * ps, ps).unwrap();
        for cap in 1..=3 {
            let mut buf = [PageRun::EMPTY; 3];
            let mut at = ps;
            let mut got = [Residence::None; N];
            let mut calls = 0;
            while at < N * ps {
                let q = r
                    .residency_with(m, at, N * ps - at, &mut buf[..cap])
                    .unwrap();
                assert!(
                    q.runs >= 1 && q.runs <= cap && q.end > at,
                    "{m:?} cap {cap}"
                );
                let part = per_page(&buf[..q.runs], at, q.end, ps).unwrap();
                got[at / ps..q.end / ps].copy_from_slice(&part[at / ps..q.end / ps]);
                at = q.end;
                calls += 1;
            }
            assert_eq!(got[1..], whole[1..], "{m:?} cap {cap}");
            assert!(calls >= q.runs.div_ceil(cap), "{m:?} cap {cap}");
        }
    }
}

#[test]
fn bad_input_is_refused_before_asking_the_kernel() {
    let ps = osmem::page_size();
    let r = Reservation::alloc(4 * ps).unwrap();
    let mut out = [PageRun::EMPTY; 4];
    let op = Op::Residency;
    assert_eq!(r.residency(0, 0, &mut out), Err(Error::ZeroLength { op }));
    assert_eq!(r.residency(0, ps, &mut []), Err(Error::ZeroLength { op }));
    assert!(matches!(
        r.residency(1, ps, &mut out),
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        r.residency(0, 8 * ps, &mut out),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        r.resident_bytes(ps, usize::MAX & !(ps - 1)),
        Err(Error::Overflow { .. })
    ));
    // No query was made: counted in a forked child, where no other test thread can ask.
    let (exit, rep) = tk::in_child_report(|rep: &mut Report| {
        let before = osmem::stats().residency_queries;
        let _ = r.residency(0, 0, &mut out);
        let _ = r.residency(0, ps, &mut []);
        let _ = r.residency(1, ps, &mut out);
        let _ = r.residency(0, 8 * ps, &mut out);
        let _ = r.resident_bytes(ps, usize::MAX & !(ps - 1));
        rep.push(osmem::stats().residency_queries - before);
        0
    });
    assert!(exit.is_success());
    assert_eq!(rep.as_slice(), &[0], "no query was made");
}

#[test]
fn resident_bytes_equal_smaps_rss() {
    let ps = osmem::page_size();
    // A region of its own VMA (guard pages around it keep neighbours from merging).
    let r = Reservation::alloc(64 * ps).unwrap();
    let p = r.as_ptr();
    // SAFETY: inside the Ready region.
    unsafe {
        for i in (0..64).step_by(3) {
            p.add(i * ps).write_volatile(1);
        }
        p.add(ps).read_volatile(); // the zero page: not Rss
    }
    let base = p as usize;
    let smaps = tk::smaps_at(base).expect("the region's VMA");
    assert!(smaps.vma.start <= base && smaps.vma.end >= base + 64 * ps);
    let written = 64usize.div_ceil(3) * ps;
    let tells_zero = osmem::probe()
        .residency
        .tells(osmem::residency_method().unwrap())
        .zero_page;
    let got = r.resident_bytes(0, 64 * ps).unwrap();
    assert_eq!(got, written + if tells_zero { 0 } else { ps });
    if smaps.vma.start == base && smaps.vma.end == base + 64 * ps && tells_zero {
        assert_eq!(got as u64, smaps.rss_kb * 1024, "smaps Rss of the region");
    }
}

/// Child: write page 0 (the parent never did) and ask: a query that used the parent's
/// pagemap descriptor would report the parent's page 0 (nothing).
#[test]
fn a_forked_child_reads_its_own_memory() {
    let ps = osmem::page_size();
    let r = Reservation::alloc(4 * ps).unwrap();
    let mut out = [PageRun::EMPTY; 4];
    // The parent asks first, so a descriptor is open and cached when it forks.
    let q = r.residency(0, 4 * ps, &mut out).unwrap();
    assert_eq!((q.runs, out[0].residence), (1, Residence::None));
    let (exit, rep) = tk::in_child_report(|rep: &mut Report| {
        // SAFETY: inside the child's copy of the Ready region.
        unsafe { r.as_ptr().write_volatile(1) };
        let mut out = [PageRun::EMPTY; 4];
        let Ok(q) = r.residency(0, 4 * ps, &mut out) else {
            return 2;
        };
        rep.push(q.runs as u64);
        rep.push((out[0].residence == Residence::Present) as u64);
        rep.push(out[0].len as u64);
        0
    });
    assert!(exit.is_success(), "{exit:?}");
    assert_eq!(
        rep.as_slice(),
        &[2, 1, ps as u64],
        "the child's own page 0 is present"
    );
    let q = r.residency(0, 4 * ps, &mut out).unwrap();
    assert_eq!(
        (q.runs, out[0].residence),
        (1, Residence::None),
        "the parent's is not"
    );
}

// ---------------------------------------------------------------------------------------
// Fallbacks, in forked children (the probe ran in the parent: the refusal is met at query
// time). Each appends a row to the failure matrix of TESTING.md.

/// The low 32 bits of the PAGEMAP_SCAN request (what seccomp compares).
const PAGEMAP_SCAN: u32 = 0xC060_6610;

/// What a row expects.
#[derive(Copy, Clone, Debug)]
enum Want {
    /// Answered by this method; these downgrades taken once (scan, pagemap).
    Answer(ResidencyMethod, u64, u64),
    /// `Error::Os { op: Residency, call, errno }`.
    Error(Syscall, i32),
    /// The same method after one transient retry.
    Retried(ResidencyMethod),
}

struct Row {
    name: &'static str,
    call: &'static str,
    injected: &'static str,
    rules: &'static [Inject],
    /// Replace /proc/self/pagemap with /dev/null in a private mount namespace first.
    dev_null_pagemap: bool,
    /// EAGAIN once on the PAGEMAP_SCAN ioctl (the trap injector), instead of `rules`.
    eagain_once_scan: bool,
    want: Want,
}

fn counts(s: &Stats) -> [u64; 8] {
    [
        s.downgrade_pagemap_scan,
        s.downgrade_pagemap,
        s.pagemap_scan_calls,
        s.pagemap_reads,
        s.mincore_calls,
        s.pagemap_scan_errors + s.pagemap_read_errors + s.pagemap_open_errors + s.mincore_errors,
        s.transient_retries,
        s.pagemap_opens,
    ]
}

fn method_code(m: ResidencyMethod) -> u64 {
    ResidencyMethod::ALL.iter().position(|&x| x == m).unwrap() as u64 + 1
}

/// In the child: build the layout, ask twice, report what happened.
fn child_queries(rep: &mut Report) -> i32 {
    let (r, truth) = layout();
    let ps = osmem::page_size();
    let a = osmem::stats();
    let mut out = [PageRun::EMPTY; N];
    let first = r.residency(0, N * ps, &mut out);
    let b = osmem::stats();
    let ok_runs = match &first {
        Ok(q) => per_page(&out[..q.runs], 0, N * ps, ps)
            .is_some_and(|got| (0..N).all(|i| got[i] == expected(q.method, q.tells, truth[i]))),
        Err(_) => false,
    };
    let second = r.residency(0, N * ps, &mut out);
    let c = osmem::stats();
    match first {
        Ok(q) => {
            rep.push(0);
            rep.push(method_code(q.method));
        }
        Err(Error::Os {
            op,
            call,
            errno,
            changed,
        }) => {
            rep.push(1);
            rep.push(
                (op == Op::Residency && !changed) as u64 * 1_000_000
                    + common::call_code(call) * 1000
                    + errno.0 as u64,
            );
        }
        Err(_) => {
            rep.push(2);
            rep.push(0);
        }
    }
    rep.push(ok_runs as u64);
    rep.push(second.map_or(0, |q| method_code(q.method)));
    let (ca, cb, cc) = (counts(&a), counts(&b), counts(&c));
    for k in 0..8 {
        rep.push(cb[k] - ca[k]);
    }
    for k in 0..8 {
        rep.push(cc[k] - cb[k]);
    }
    0
}

/// Bind-mount /dev/null over this process's pagemap in a private mount namespace.
fn hide_pagemap() -> bool {
    // SAFETY: plain syscalls on paths and flags; the namespace is this process's own.
    unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                core::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                core::ptr::null(),
            ) == 0
            && libc::mount(
                c"/dev/null".as_ptr(),
                c"/proc/self/pagemap".as_ptr(),
                core::ptr::null(),
                libc::MS_BIND,
                core::ptr::null(),
            ) == 0
    }
}

fn run_row(row: &Row) {
    osmem::probe();
    let p = osmem::probe().residency;
    // Rows that need a method this kernel lacks say so and pass vacuously only for that.
    let needs = match row.want {
        Want::Answer(m, ..) | Want::Retried(m) => Some(m),
        Want::Error(..) => None,
    };
    let have_scan = p.pagemap_scan;
    if !have_scan || needs.is_some_and(|m| m == ResidencyMethod::Pagemap && !p.pagemap) {
        eprintln!(
            "{}: this kernel lacks a method the row needs; skipped",
            row.name
        );
        return;
    }
    let body = |rep: &mut Report| {
        if row.dev_null_pagemap && !hide_pagemap() {
            return 3;
        }
        child_queries(rep)
    };
    let (exit, buf) = if row.eagain_once_scan {
        let f = tk::build_trap_filter(&[tk::Trap::new(libc::SYS_ioctl).when(1, PAGEMAP_SCAN)]);
        tk::in_child_trapped(&f, body)
    } else if row.rules.is_empty() {
        tk::in_child_report(body)
    } else {
        tk::in_child_filtered(&tk::build_filter(row.rules), body)
    };
    let v = buf.as_slice();
    let mut bad = Vec::new();
    if !exit.is_success() || v.len() < 20 {
        bad.push(format!("child: {exit:?} {v:?}"));
    } else {
        let (first, second) = (&v[4..12], &v[12..20]);
        let [dg_scan, dg_pm, scans, reads, mincores, errors, retries, _] =
            <[u64; 8]>::try_from(first).unwrap();
        let total = |k: usize| first[k] + second[k];
        match row.want {
            Want::Answer(m, want_scan, want_pm) => {
                if (v[0], v[1], v[2], v[3]) != (0, method_code(m), 1, method_code(m)) {
                    bad.push(format!("answer {:?}: got {:?}", m, &v[..4]));
                }
                if (total(0), total(1)) != (want_scan, want_pm) {
                    bad.push(format!(
                        "downgrades (scan, pagemap) over two queries: {:?}",
                        (total(0), total(1))
                    ));
                }
                if errors == 0 {
                    bad.push("the injection did not hit".into());
                }
                // The second query asks nothing refused again.
                if want_scan == 1 && second[2] != 0 || want_pm == 1 && second[3] != 0 {
                    bad.push(format!("second query asked again: {second:?}"));
                }
            }
            Want::Error(call, errno) => {
                let code = 1_000_000 + common::call_code(call) * 1000 + errno as u64;
                if (v[0], v[1]) != (1, code) {
                    bad.push(format!("error: got {:?}", &v[..2]));
                }
            }
            Want::Retried(m) => {
                if (v[0], v[1], v[2]) != (0, method_code(m), 1) || retries != 1 {
                    bad.push(format!("retried: got {:?}, retries {retries}", &v[..3]));
                }
                if dg_scan + dg_pm != 0 {
                    bad.push("a transient error downgraded".into());
                }
            }
        }
        let _ = (scans, reads, mincores);
    }
    let expected = match row.want {
        Want::Answer(m, s, p) => format!(
            "answered by {}; downgrades scan +{s}, pagemap +{p} (once); the next query skips what was refused",
            m.name()
        ),
        Want::Error(call, errno) => {
            format!("typed error Os {{ Residency, {call:?}, errno {errno}, changed: false }}")
        }
        Want::Retried(m) => format!("retried: answered by {}, transient_retries +1, no downgrade", m.name()),
    };
    tk::append_testing_row(
        "matrix.tsv",
        &[
            &format!(
                "R{} {}",
                ROWS.iter().position(|r| r.name == row.name).unwrap() + 1,
                row.name
            ),
            row.call,
            row.injected,
            "residency (two queries)",
            &expected,
            if bad.is_empty() { "pass" } else { "fail" },
        ],
    );
    assert!(bad.is_empty(), "{}: {bad:?}", row.name);
}

const fn scan_refused(errno: i32) -> Inject {
    Inject::SyscallArg {
        nr: libc::SYS_ioctl,
        arg: 1,
        value: PAGEMAP_SCAN,
        errno,
    }
}

const SCAN: ResidencyMethod = ResidencyMethod::PagemapScan;
const PAGEMAP: ResidencyMethod = ResidencyMethod::Pagemap;
const MINCORE: ResidencyMethod = ResidencyMethod::Mincore;

static ROWS: &[Row] = &[
    Row {
        name: "pagemap_scan_enotty",
        call: "ioctl(PAGEMAP_SCAN)",
        injected: "ENOTTY",
        rules: &[scan_refused(libc::ENOTTY)],
        dev_null_pagemap: false,
        eagain_once_scan: false,
        want: Want::Answer(PAGEMAP, 1, 0),
    },
    Row {
        name: "pagemap_scan_einval",
        call: "ioctl(PAGEMAP_SCAN)",
        injected: "EINVAL",
        rules: &[scan_refused(libc::EINVAL)],
        dev_null_pagemap: false,
        eagain_once_scan: false,
        want: Want::Answer(PAGEMAP, 1, 0),
    },
    Row {
        name: "pagemap_scan_eperm",
        call: "ioctl(PAGEMAP_SCAN)",
        injected: "EPERM",
        rules: &[scan_refused(libc::EPERM)],
        dev_null_pagemap: false,
        eagain_once_scan: false,
        want: Want::Answer(PAGEMAP, 1, 0),
    },
    Row {
        name: "pagemap_scan_enosys",
        call: "ioctl(PAGEMAP_SCAN)",
        injected: "ENOSYS",
        rules: &[scan_refused(libc::ENOSYS)],
        dev_null_pagemap: false,
        eagain_once_scan: false,
        want: Want::Answer(PAGEMAP, 1, 0),
    },
    Row {
        name: "pagemap_scan_eagain_once",
        call: "ioctl(PAGEMAP_SCAN)",
        injected: "EAGAIN-once",
        rules: &[],
        dev_null_pagemap: false,
        eagain_once_scan: true,
        want: Want::Retried(SCAN),
    },
    Row {
        name: "pagemap_read_einval",
        call: "pread(/proc/self/pagemap)",
        injected: "EINVAL (scan refused too)",
        rules: &[
            scan_refused(libc::ENOTTY),
            Inject::Syscall {
                nr: libc::SYS_pread64,
                errno: libc::EINVAL,
            },
        ],
        dev_null_pagemap: false,
        eagain_once_scan: false,
        want: Want::Answer(MINCORE, 1, 1),
    },
    Row {
        name: "pagemap_read_eperm",
        call: "pread(/proc/self/pagemap)",
        injected: "EPERM (scan refused too)",
        rules: &[
            scan_refused(libc::ENOTTY),
            Inject::Syscall {
                nr: libc::SYS_pread64,
                errno: libc::EPERM,
            },
        ],
        dev_null_pagemap: false,
        eagain_once_scan: false,
        want: Want::Answer(MINCORE, 1, 1),
    },
    Row {
        name: "pagemap_open_eacces",
        call: "open(/proc/self/pagemap)",
        injected: "EACCES",
        rules: &[Inject::Syscall {
            nr: libc::SYS_openat,
            errno: libc::EACCES,
        }],
        dev_null_pagemap: false,
        eagain_once_scan: false,
        want: Want::Answer(MINCORE, 1, 1),
    },
    Row {
        name: "pagemap_open_enoent",
        call: "open(/proc/self/pagemap)",
        injected: "ENOENT",
        rules: &[Inject::Syscall {
            nr: libc::SYS_openat,
            errno: libc::ENOENT,
        }],
        dev_null_pagemap: false,
        eagain_once_scan: false,
        want: Want::Answer(MINCORE, 1, 1),
    },
    Row {
        name: "pagemap_is_dev_null",
        call: "/proc/self/pagemap bind-mounted to /dev/null",
        injected: "ENOTTY, then EOF",
        rules: &[],
        dev_null_pagemap: true,
        eagain_once_scan: false,
        want: Want::Answer(MINCORE, 1, 1),
    },
    Row {
        name: "mincore_eperm",
        call: "mincore",
        injected: "EPERM (open refused too)",
        rules: &[
            Inject::Syscall {
                nr: libc::SYS_openat,
                errno: libc::EACCES,
            },
            Inject::Syscall {
                nr: libc::SYS_mincore,
                errno: libc::EPERM,
            },
        ],
        dev_null_pagemap: false,
        eagain_once_scan: false,
        want: Want::Error(Syscall::Mincore, libc::EPERM),
    },
];

macro_rules! row_tests {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run_row(ROWS.iter().find(|r| r.name == $name).expect("a row"));
            }
        )*
    };
}

row_tests! {
    r01_pagemap_scan_enotty => "pagemap_scan_enotty",
    r02_pagemap_scan_einval => "pagemap_scan_einval",
    r03_pagemap_scan_eperm => "pagemap_scan_eperm",
    r04_pagemap_scan_enosys => "pagemap_scan_enosys",
    r05_pagemap_scan_eagain_once => "pagemap_scan_eagain_once",
    r06_pagemap_read_einval => "pagemap_read_einval",
    r07_pagemap_read_eperm => "pagemap_read_eperm",
    r08_pagemap_open_eacces => "pagemap_open_eacces",
    r09_pagemap_open_enoent => "pagemap_open_enoent",
    r10_pagemap_is_dev_null => "pagemap_is_dev_null",
    r11_mincore_eperm => "mincore_eperm",
}

#[test]
fn every_row_has_a_test() {
    assert_eq!(ROWS.len(), 11);
}

/// The probe itself under a /dev/null pagemap (a re-executed process whose first use of
/// osmem happens there): mincore is what works.
#[test]
fn the_probe_picks_mincore_when_pagemap_is_unusable() {
    common::play_role_if("residency-no-pagemap", &[], || {
        if !hide_pagemap() {
            return "hidden=0".to_string();
        }
        let p = osmem::probe().residency;
        format!(
            "hidden=1 scan={} pagemap={} mincore={} method={}",
            p.pagemap_scan as u8,
            p.pagemap as u8,
            p.mincore as u8,
            osmem::residency_method().map_or("none", |m| m.name())
        )
    });
    let kv = common::spawn_role(
        "the_probe_picks_mincore_when_pagemap_is_unusable",
        "residency-no-pagemap",
    );
    if kv["hidden"] == "0" {
        eprintln!("no private mount namespace here (not root?): nothing to test");
        return;
    }
    assert_eq!(
        (
            &*kv["scan"],
            &*kv["pagemap"],
            &*kv["mincore"],
            &*kv["method"]
        ),
        ("0", "0", "1", "mincore")
    );
}
