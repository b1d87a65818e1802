//! Locked memory: a process under `mlockall(MCL_CURRENT | MCL_FUTURE)` (a latency-sensitive
//! service, a sandbox that must not page) releases memory as any other, and osmem never says
//! memory was released when the kernel still holds it.
//!
//! The kernel refuses `MADV_FREE`, `MADV_DONTNEED`, guard markers and `process_madvise` on
//! locked memory (EINVAL); `MADV_DONTNEED_LOCKED` (Linux ≥ 5.18) releases it and keeps the
//! lock. Each test runs in a re-executed copy of this binary (a role, see `common`): `mlockall`
//! in the test process would lock and fault in every region the other tests reserve.
//! Checked against the kernel: `mincore`, `/proc/self/smaps` (`VmFlags` `lo`, `Locked`), and a
//! forked grandchild touching faulted pages.

mod common;

use common::{play_role_if, spawn_role};
use osmem::{Batch, BatchKind, Config, Reservation, UnusedAdvice, UnusedHow};
use osmem_testkit::{self as tk, Inject, Touch, SEGV_ACCERR};

const PAGES: usize = 64;

fn lock_all() -> i32 {
    // SAFETY: mlockall has no memory-safety preconditions.
    unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) }
}

/// Whether the VMA at `addr` is locked (`lo` in smaps VmFlags) and its `Locked:` kB.
fn locked(addr: usize) -> (bool, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let (mut lo, mut kb) = (false, 0);
    for line in text.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((s, e)) = range.split_once('-') {
                if let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16))
                {
                    inside = s <= addr && addr < e;
                    continue;
                }
            }
        }
        if !inside {
            continue;
        }
        if let Some(v) = line.strip_prefix("Locked:") {
            kb = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        }
        if let Some(v) = line.strip_prefix("VmFlags:") {
            lo = v.split_whitespace().any(|f| f == "lo");
        }
    }
    (lo, kb)
}

/// The probe run under `mlockall(MCL_FUTURE)` must not take locking for missing advice: its
/// scratch page would be born locked and refuse every release advice.
#[test]
fn probe_is_not_fooled_by_mlockall() {
    play_role_if("probe_locked", &[], || {
        let rc = lock_all();
        let p = osmem::probe();
        let sel = osmem::selected();
        format!(
            "mlockall={rc} free={} dontneed={} dontneed_locked={} guard={} pm={:?} unused={:?} \
             fault={:?}",
            p.advice.free,
            p.advice.dontneed,
            p.advice.dontneed_locked,
            p.advice.guard_install,
            p.process_madvise,
            sel.unused,
            sel.fault
        )
    });
    let kv = spawn_role("probe_is_not_fooled_by_mlockall", "probe_locked");
    assert_eq!(kv["mlockall"], "0", "{kv:?}");
    let p = osmem::probe();
    assert_eq!(kv["free"], p.advice.free.to_string(), "{kv:?}");
    assert_eq!(kv["dontneed"], "true", "{kv:?}");
    assert_eq!(kv["dontneed_locked"], "true", "{kv:?}");
    assert_eq!(kv["guard"], p.advice.guard_install.to_string(), "{kv:?}");
    assert_eq!(kv["pm"], format!("{:?}", p.process_madvise), "{kv:?}");
    assert_eq!(kv["unused"], "DontNeed", "{kv:?}");
}

/// Under `mlockall`: `unused` releases with MADV_DONTNEED_LOCKED and keeps the lock; a fault
/// releases and traps (guard markers refuse locked memory: DONTNEED_LOCKED + PROT_NONE); a
/// batch releases every range in one process_madvise with MADV_DONTNEED_LOCKED (locked memory
/// was seen by then); harddecommit releases and protects. Each released range has no resident page and its VMA is still locked.
#[test]
fn releases_under_mlockall_keep_the_lock() {
    play_role_if("locked_ops", &[], || {
        let rc = lock_all();
        let ps = osmem::page_size();
        let r = Reservation::reserve(PAGES * ps).unwrap();
        r.map(0, 48 * ps).unwrap();
        r.used(0, 48 * ps).unwrap();
        let base = r.as_ptr() as usize;
        unsafe { core::ptr::write_bytes(r.as_ptr(), 0x5a, 48 * ps) };
        let resident_before = tk::resident_pages(base, 48 * ps);
        let (lo_before, _) = locked(base);
        // map alone (never used, never touched): under MCL_FUTURE the kernel locks, and so
        // faults in, what becomes accessible, so these Prepared pages are resident.
        r.map(48 * ps, 16 * ps).unwrap();
        let map_res = tk::resident_pages(base + 48 * ps, 16 * ps);
        let map_state = r.state(48 * ps);

        // unused: DONTNEED refused (locked) → DONTNEED_LOCKED.
        let u = unsafe { r.unused(0, 8 * ps) }.unwrap();
        let unused_res = tk::resident_pages(base, 8 * ps);
        let (unused_lo, _) = locked(base);
        r.used(0, 8 * ps).unwrap();
        let reads_zero = unsafe { tk::is_zero(base, 8 * ps) };

        // fault: guard refused, DONTNEED_LOCKED, PROT_NONE.
        let f = unsafe { r.fault(8 * ps, 8 * ps) }.unwrap();
        let fault_res = tk::resident_pages(base + 8 * ps, 8 * ps);
        let touch = tk::touch_in_child(base + 8 * ps, false);
        let (fault_lo, _) = locked(base + 8 * ps);

        // batch: locked memory seen: one process_madvise with MADV_DONTNEED_LOCKED.
        let mut b: Batch<'_, 8> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
        for i in 0..4 {
            unsafe { b.push(&r, (16 + 2 * i) * ps, ps).unwrap() };
        }
        let rep = unsafe { b.flush() };
        let batch_res: usize = (0..4)
            .map(|i| tk::resident_pages(base + (16 + 2 * i) * ps, ps))
            .sum();
        let between: usize = (0..4)
            .map(|i| tk::resident_pages(base + (17 + 2 * i) * ps, ps))
            .sum();

        // harddecommit: released and PROT_NONE, still locked.
        osmem::configure(Config::new().harddecommit(true));
        let h = unsafe { r.unused(32 * ps, 8 * ps) }.unwrap();
        let hd_res = tk::resident_pages(base + 32 * ps, 8 * ps);
        let (hd_lo, _) = locked(base + 32 * ps);
        let s = osmem::stats();
        format!(
            "mlockall={rc} resident_before={resident_before} lo_before={lo_before} \
             map_res={map_res} map_state={map_state:?} \
             unused_how={:?} released={} unused_res={unused_res} unused_lo={unused_lo} \
             reads_zero={reads_zero} fault_how={:?} fault_res={fault_res} touch={touch:?} \
             fault_lo={fault_lo} batch_ranges={} batch_per_range={} batch_calls={} batch_failed={} \
             batch_res={batch_res} between={between} hd_how={:?} hd_protected={} \
             hd_res={hd_res} hd_lo={hd_lo} fallback_locked={} downgrade_dontneed={} \
             downgrade_madvise={} downgrade_free={}",
            u.how,
            u.released,
            f.how,
            rep.ranges,
            rep.per_range,
            rep.batch_calls,
            rep.failed,
            h.how,
            h.protected,
            s.fallback_locked,
            s.downgrade_dontneed,
            s.downgrade_madvise,
            s.downgrade_free,
        )
        .replace("Segv { si_code: ", "Segv/")
        .replace(" }", "")
    });
    let kv = spawn_role("releases_under_mlockall_keep_the_lock", "locked_ops");
    let want = [
        ("mlockall", "0".to_string()),
        // MCL_FUTURE: the map made the pages resident and locked.
        ("resident_before", "48".to_string()),
        ("lo_before", "true".to_string()),
        ("map_res", "16".to_string()),
        ("map_state", "Some(Prepared)".to_string()),
        ("unused_how", "DontNeedLocked".to_string()),
        ("released", "true".to_string()),
        ("unused_res", "0".to_string()),
        ("unused_lo", "true".to_string()),
        ("reads_zero", "true".to_string()),
        ("fault_how", "Protect".to_string()),
        ("fault_res", "0".to_string()),
        ("touch", format!("Segv/{SEGV_ACCERR}")),
        ("fault_lo", "true".to_string()),
        ("batch_ranges", "4".to_string()),
        ("batch_per_range", "0".to_string()),
        ("batch_calls", "1".to_string()),
        ("batch_failed", "0".to_string()),
        ("batch_res", "0".to_string()),
        ("between", "4".to_string()),
        ("hd_how", "DontNeedLocked".to_string()),
        ("hd_protected", "true".to_string()),
        ("hd_res", "0".to_string()),
        ("hd_lo", "true".to_string()),
        // Locking is per call, never a downgrade.
        ("downgrade_dontneed", "0".to_string()),
        ("downgrade_madvise", "0".to_string()),
        ("downgrade_free", "0".to_string()),
    ];
    for (k, v) in want {
        assert_eq!(kv[k], v, "{k}: {kv:?}");
    }
    // At most once, for the first refusal (none if locked memory was known before the first
    // release): from then on releases start with MADV_DONTNEED_LOCKED, one call, nothing
    // refused.
    assert!(kv["fallback_locked"].parse::<u64>().unwrap() <= 1, "{kv:?}");
    let _ = Touch::Ok;
}

/// A batch over locked memory in a process where no release has met locked memory yet: the
/// first call is refused at its first range (EINVAL), madvise confirms the range is locked,
/// and one call with MADV_DONTNEED_LOCKED releases all eight ranges: at most 3 process_madvise
/// calls and no range per range, fewer system calls than the per-range loop over eight other
/// ranges (2 each: DONTNEED refused, DONTNEED_LOCKED). The next batch takes one call. Every
/// range released (mincore) and still locked.
#[test]
fn a_batch_over_locked_memory_is_not_slower_than_the_loop() {
    play_role_if("locked_batch", &[], || {
        let rc = lock_all();
        let ps = osmem::page_size();
        let r = Reservation::reserve(PAGES * ps).unwrap();
        r.map(0, 64 * ps).unwrap();
        r.used(0, 64 * ps).unwrap();
        let base = r.as_ptr() as usize;
        unsafe { core::ptr::write_bytes(r.as_ptr(), 0x5a, 64 * ps) };
        let calls = |s: &osmem::Stats| s.process_madvise_calls + s.madvise_calls;
        let run = |first: usize| {
            let mut b: Batch<'_, 8> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
            for i in 0..8 {
                unsafe { b.push(&r, (first + 2 * i) * ps, ps).unwrap() };
            }
            let a = osmem::stats();
            let rep = unsafe { b.flush() };
            let b = osmem::stats();
            let res: usize = (0..8)
                .map(|i| tk::resident_pages(base + (first + 2 * i) * ps, ps))
                .sum();
            (
                rep,
                b.process_madvise_calls - a.process_madvise_calls,
                calls(&b) - calls(&a),
                res,
            )
        };
        let (rep1, pm1, all1, res1) = run(0);
        let (rep2, pm2, all2, res2) = run(16);
        let a = osmem::stats();
        for i in 0..8 {
            let _ = unsafe { r.unused((32 + 2 * i) * ps, ps) }.unwrap();
        }
        let loop_calls = calls(&osmem::stats()) - calls(&a);
        let (lo, _) = locked(base);
        format!(
            "mlockall={rc} ranges1={} per_range1={} pm1={pm1} all1={all1} res1={res1} \
             ranges2={} per_range2={} pm2={pm2} all2={all2} res2={res2} loop={loop_calls} lo={lo}",
            rep1.ranges, rep1.per_range, rep2.ranges, rep2.per_range
        )
    });
    let kv = spawn_role(
        "a_batch_over_locked_memory_is_not_slower_than_the_loop",
        "locked_batch",
    );
    let n = |k: &str| kv[k].parse::<u64>().unwrap();
    assert_eq!(kv["mlockall"], "0", "{kv:?}");
    assert_eq!(
        (n("ranges1"), n("per_range1"), n("res1")),
        (8, 0, 0),
        "{kv:?}"
    );
    assert!(n("pm1") <= 3, "{kv:?}");
    assert!(n("all1") <= n("loop"), "{kv:?}");
    assert_eq!(
        (n("ranges2"), n("per_range2"), n("pm2"), n("res2")),
        (8, 0, 1, 0),
        "{kv:?}"
    );
    assert!(n("all2") < n("loop"), "{kv:?}");
    assert_eq!(kv["lo"], "true", "{kv:?}");
}

/// The remap link under `mlockall(MCL_FUTURE)` (asked for explicitly here; it is also the last
/// link where madvise is missing): the kernel locks the fresh pages and faults them in again,
/// so nothing is released, and the result says so. Before 5.18 (no MADV_DONTNEED_LOCKED,
/// emulated by a filter), the default chain refuses with `Error::Locked` instead.
#[test]
fn remap_under_mlockall_is_not_reported_released() {
    play_role_if(
        "locked_remap",
        &[Inject::Madvise {
            advice: 24, // MADV_DONTNEED_LOCKED
            errno: libc::EINVAL,
        }],
        || {
            let rc = lock_all();
            let ps = osmem::page_size();
            let r = Reservation::alloc(16 * ps).unwrap();
            unsafe { core::ptr::write_bytes(r.as_ptr(), 0x11, 16 * ps) };
            let u = unsafe { r.unused_with(0, 8 * ps, UnusedAdvice::Remap) }.unwrap();
            let res = tk::resident_pages(r.as_ptr() as usize, 8 * ps);
            let e = unsafe { r.unused(8 * ps, 8 * ps) };
            let intact = (8 * ps..16 * ps).all(|i| unsafe { *r.as_ptr().add(i) } == 0x11);
            let s = osmem::stats();
            format!(
                "mlockall={rc} how={:?} zeroed={} released={} resident={res} \
                 not_released={} default={} intact={intact} state={:?}",
                u.how,
                u.zeroed,
                u.released,
                s.unused_not_released,
                match e {
                    Err(osmem::Error::Locked { .. }) => "Locked",
                    Err(_) => "other-error",
                    Ok(_) => "ok",
                },
                r.state(8 * ps).unwrap(),
            )
        },
    );
    let kv = spawn_role(
        "remap_under_mlockall_is_not_reported_released",
        "locked_remap",
    );
    assert_eq!(kv["mlockall"], "0", "{kv:?}");
    assert_eq!(kv["how"], format!("{:?}", UnusedHow::Remap), "{kv:?}");
    assert_eq!(kv["zeroed"], "true", "{kv:?}");
    assert_eq!(
        kv["resident"], "8",
        "the kernel faulted the fresh pages in: {kv:?}"
    );
    assert_eq!(kv["released"], "false", "{kv:?}");
    assert_eq!(kv["not_released"], "1", "{kv:?}");
    assert_eq!(kv["default"], "Locked", "{kv:?}");
    assert_eq!(kv["intact"], "true", "{kv:?}");
    assert_eq!(kv["state"], "Ready", "{kv:?}");
}
