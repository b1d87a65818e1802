//! osmem's byte accounting (per region and global) and its operation / syscall counters,
//! after known sequences of operations.
//!
//! Per-region figures (`Reservation::bytes_in`) belong to one handle, so they are exact in the
//! test process. Global figures (`osmem::stats()`) are shared by every test thread of this
//! binary, so their exact deltas are checked in forked children, where only the forking
//! thread exists. Children do not allocate: a failed check reports its line (and, for value
//! checks, the values) through the pipe and exits non-zero.
//!
//! The accounting is osmem's bookkeeping; every sequence here is also checked against the
//! kernel (residency, perms, traps) so the numbers are tied to what actually happened.

mod common;

use common::{
    check_cycle_final, child_ok, ck, cycle_slots, ok, warm, CycleHooks, CYCLE_SLOT as SLOT,
    CYCLE_SLOTS as SLOTS, STATES,
};
use osmem::{Config, FaultStrategy, Faulted, Reservation, State, Stats, UnusedAdvice};
use osmem_testkit::{self as tk, Report, Touch, SEGV_MAPERR};

/// In a child: `$got == $want` (u64s), or report line, got, want and exit 1.
macro_rules! ck_eq {
    ($rep:expr, $got:expr, $want:expr) => {{
        let (g, w): (u64, u64) = ($got, $want);
        if g != w {
            $rep.push(line!() as u64);
            $rep.push(g);
            $rep.push(w);
            return 1;
        }
    }};
}

/// Per-region bytes by state: [Reserved, Prepared, Ready, Faulted].
fn region(r: &Reservation) -> [u64; 4] {
    STATES.map(|s| r.bytes_in(s))
}

/// Global bytes by state.
fn global(s: &Stats) -> [u64; 4] {
    [
        s.reserved_bytes,
        s.prepared_bytes,
        s.ready_bytes,
        s.faulted_bytes,
    ]
}

/// Pages → bytes, per state.
fn pages(p: [u64; 4]) -> [u64; 4] {
    let ps = osmem::page_size() as u64;
    p.map(|n| n * ps)
}

/// `after - before` of a counter given by name (allocation-free).
fn delta(before: &Stats, after: &Stats, name: &str) -> u64 {
    let get = |s: &Stats| s.fields().find(|&(n, _)| n == name).map_or(0, |(_, v)| v);
    get(after).wrapping_sub(get(before))
}

/// Every counter that is not a byte figure moved by exactly what `want` says (unlisted: 0).
/// Returns the index of the first counter that did not, with its delta.
fn counters_moved(before: &Stats, after: &Stats, want: &[(&str, u64)]) -> Option<(u64, u64)> {
    for (i, ((name, b), (_, a))) in before.fields().zip(after.fields()).enumerate() {
        // `fork*`: touch_in_child forks a grandchild between steps, and osmem's fork handlers
        // count every fork (and the time they waited).
        if name.ends_with("_bytes") || name.starts_with("fork") {
            continue;
        }
        let expect = want
            .iter()
            .find(|&&(n, _)| n == name)
            .map_or(0, |&(_, v)| v);
        if a.wrapping_sub(b) != expect {
            return Some((i as u64, a.wrapping_sub(b)));
        }
    }
    None
}

#[test]
fn region_bytes_follow_a_sequence() {
    warm();
    let ps = osmem::page_size();
    let r = Reservation::reserve(64 * ps).unwrap();
    let base = r.as_ptr() as usize;
    assert_eq!(region(&r), pages([64, 0, 0, 0]));
    r.map(0, 32 * ps).unwrap();
    assert_eq!(region(&r), pages([32, 32, 0, 0]));
    r.used(0, 16 * ps).unwrap();
    assert_eq!(region(&r), pages([32, 16, 16, 0]));
    unsafe { core::ptr::write_bytes(r.as_ptr(), 9, 16 * ps) };
    assert_eq!(tk::resident_pages(base, 16 * ps), 16);
    let _ = unsafe { r.unused_with(8 * ps, 8 * ps, UnusedAdvice::DontNeed) }.unwrap();
    assert_eq!(region(&r), pages([32, 24, 8, 0]));
    assert_eq!(
        tk::resident_pages(base, 16 * ps),
        8,
        "kernel: 8 pages released"
    );
    let _ = unsafe { r.fault(0, 4 * ps) }.unwrap();
    assert_eq!(region(&r), pages([32, 24, 4, 4]));
    assert_eq!(tk::resident_pages(base, 4 * ps), 0);
    assert!(matches!(tk::touch_in_child(base, true), Touch::Segv { .. }));
    // map over Faulted + Ready is refused as a whole (Ready is not a map source): nothing moves.
    assert!(r.map(0, 8 * ps).is_err());
    assert_eq!(region(&r), pages([32, 24, 4, 4]));
    // map over Faulted, then over Reserved pages after the Prepared ones.
    r.map(0, 4 * ps).unwrap();
    assert_eq!(region(&r), pages([32, 28, 4, 0]));
    r.map(32 * ps, 32 * ps).unwrap();
    assert_eq!(region(&r), pages([0, 60, 4, 0]));
    // used over Prepared and Ready pages (Go's sysUsed): the Ready pages 4..8 stay as they
    // are, only the Prepared bytes move.
    r.used(0, 64 * ps).unwrap();
    assert_eq!(region(&r), pages([0, 0, 64, 0]));
    assert_eq!(tk::touch_in_child(base, true), Touch::Ok);
    let _ = unsafe { r.fault_with(0, 64 * ps, FaultStrategy::Protect) }.unwrap();
    assert_eq!(region(&r), pages([0, 0, 0, 64]));
    assert_eq!(tk::vma_at(base).unwrap().perms_str(), "---p");
    assert_eq!(region(&r).iter().sum::<u64>(), 64 * ps as u64);

    let a = Reservation::alloc(8 * ps).unwrap();
    assert_eq!(region(&a), pages([0, 0, 8, 0]));
    let _ = unsafe { a.unused_with(0, 4 * ps, UnusedAdvice::Free) }.unwrap();
    let _ = unsafe { a.fault_with(4 * ps, 4 * ps, FaultStrategy::Remap) }.unwrap();
    assert_eq!(region(&a), pages([0, 4, 0, 4]));
}

#[test]
fn global_bytes_deltas_are_exact() {
    warm();
    child_ok(
        "global bytes",
        tk::in_child_report(|rep: &mut Report| {
            let ps = osmem::page_size() as u64;
            let b0 = global(&osmem::stats());
            // Each step: the global delta equals the region's own figures (one region alive)
            // and the expected page counts.
            macro_rules! step {
                ($r:expr, $want:expr) => {{
                    let g = global(&osmem::stats());
                    let want: [u64; 4] = $want;
                    for i in 0..4 {
                        ck_eq!(rep, g[i].wrapping_sub(b0[i]), want[i] * ps);
                        ck_eq!(rep, $r.bytes_in(STATES[i]), want[i] * ps);
                    }
                }};
            }
            let p = ps as usize;
            let r = ok!(rep, Reservation::reserve(64 * p));
            step!(r, [64, 0, 0, 0]);
            ok!(rep, r.map(0, 40 * p));
            step!(r, [24, 40, 0, 0]);
            ok!(rep, r.used(8 * p, 24 * p));
            step!(r, [24, 16, 24, 0]);
            let _ = unsafe { ok!(rep, r.unused(8 * p, 8 * p)) };
            step!(r, [24, 24, 16, 0]);
            let _ = unsafe { ok!(rep, r.fault(16 * p, 4 * p)) };
            let _ = unsafe { ok!(rep, r.fault_with(20 * p, 4 * p, FaultStrategy::Protect)) };
            step!(r, [24, 24, 8, 8]);
            // One map over Faulted (two mechanisms) + Reserved pages.
            ok!(rep, r.map(16 * p, 8 * p));
            ok!(rep, r.map(40 * p, 24 * p));
            step!(r, [0, 56, 8, 0]);
            // Prepared and Ready pages together (Go's sysUsed): only the 56 Prepared pages
            // move; the 8 Ready ones (24..32) stay as they are.
            ok!(rep, r.used(0, 64 * p));
            step!(r, [0, 0, 64, 0]);
            let a = ok!(rep, Reservation::alloc(8 * p));
            let g = global(&osmem::stats());
            ck_eq!(rep, g[2].wrapping_sub(b0[2]), (64 + 8) * ps);
            drop(a);
            step!(r, [0, 0, 64, 0]);
            drop(r);
            // Back to the baseline, every state.
            let g = global(&osmem::stats());
            for i in 0..4 {
                ck_eq!(rep, g[i], b0[i]);
            }
            0
        }),
    );
}

#[test]
fn op_and_syscall_counters_are_exact() {
    warm();
    child_ok(
        "counters",
        tk::in_child_report(|rep: &mut Report| {
            // Default knobs whatever OSMEM says. One-time work (the probe, the first naming
            // attempt, which turns naming off for good on this kernel) happens before the
            // first baseline, so every later figure is the op's own.
            osmem::configure(Config::new());
            let _ = osmem::probe();
            let p = osmem::page_size();
            let w = ok!(rep, Reservation::reserve(p));
            ok!(rep, w.map(0, p));
            drop(w);
            let mut s = osmem::stats();
            // Run `$e`, then require exactly the listed counter deltas (all others 0).
            macro_rules! step {
                ($e:expr, $want:expr) => {{
                    let v = $e;
                    let now = osmem::stats();
                    if let Some((i, d)) = counters_moved(&s, &now, $want) {
                        rep.push(line!() as u64);
                        rep.push(i);
                        rep.push(d);
                        return 1;
                    }
                    s = now;
                    v
                }};
            }
            // reserve (page-aligned: no trimming): one mmap, exactly as a raw reservation.
            let r = ok!(
                rep,
                step!(
                    Reservation::reserve(32 * p),
                    &[("reserve_ops", 1), ("mmap_calls", 1)]
                )
            );
            let base = r.as_ptr() as usize;
            step!(
                ok!(rep, r.map(0, 16 * p)),
                &[("map_ops", 1), ("mprotect_calls", 1)]
            );
            step!(ok!(rep, r.used(0, 16 * p)), &[("used_ops", 1)]);
            unsafe { core::ptr::write_bytes(r.as_ptr(), 3, 16 * p) };
            // One default unused: exactly one MADV_DONTNEED.
            let u = step!(
                unsafe { ok!(rep, r.unused(0, 4 * p)) },
                &[
                    ("unused_ops", 1),
                    ("madvise_calls", 1),
                    ("madv_dontneed", 1)
                ]
            );
            ck!(rep, u.zeroed);
            ck!(rep, tk::resident_pages(base, 4 * p) == 0);
            let _ = step!(
                unsafe { ok!(rep, r.unused_with(4 * p, 2 * p, UnusedAdvice::Free)) },
                &[("unused_ops", 1), ("madvise_calls", 1), ("madv_free", 1)]
            );
            let _ = step!(
                unsafe { ok!(rep, r.unused_with(6 * p, 2 * p, UnusedAdvice::Remap)) },
                &[("unused_ops", 1), ("mmap_calls", 1)]
            );
            // Auto fault = guard markers on this kernel.
            let _ = step!(
                unsafe { ok!(rep, r.fault(8 * p, 2 * p)) },
                &[
                    ("fault_ops", 1),
                    ("madvise_calls", 1),
                    ("madv_guard_install", 1)
                ]
            );
            ck!(
                rep,
                tk::touch_in_child(base + 8 * p, false)
                    == Touch::Segv {
                        si_code: SEGV_MAPERR
                    }
            );
            let _ = step!(
                unsafe { ok!(rep, r.fault_with(10 * p, 2 * p, FaultStrategy::Protect)) },
                &[
                    ("fault_ops", 1),
                    ("madvise_calls", 1),
                    ("madv_dontneed", 1),
                    ("mprotect_calls", 1)
                ]
            );
            let _ = step!(
                unsafe { ok!(rep, r.fault_with(12 * p, 2 * p, FaultStrategy::Go)) },
                &[
                    ("fault_ops", 1),
                    ("madvise_calls", 1),
                    ("madv_dontneed", 1),
                    ("mprotect_calls", 1)
                ]
            );
            let _ = step!(
                unsafe { ok!(rep, r.fault_with(14 * p, 2 * p, FaultStrategy::Remap)) },
                &[("fault_ops", 1), ("mmap_calls", 1)]
            );
            // One map over guard [8,10) + PROT_NONE [10,16) runs: one GUARD_REMOVE, one
            // mprotect for the three PROT_NONE-faulted ranges (one run of equal codes in the map).
            step!(
                ok!(rep, r.map(8 * p, 8 * p)),
                &[
                    ("map_ops", 1),
                    ("madvise_calls", 1),
                    ("madv_guard_remove", 1),
                    ("mprotect_calls", 1)
                ]
            );
            ck!(rep, tk::touch_in_child(base + 8 * p, true) == Touch::Ok);
            ck!(rep, tk::touch_in_child(base + 15 * p, true) == Touch::Ok);
            // Hints: a no-op hugepage is counted as skipped; nohugepage is one madvise.
            step!(
                ok!(rep, r.hugepage(0, 32 * p)),
                &[("huge_hints_skipped", 1)]
            );
            step!(
                ok!(rep, r.nohugepage(0, 16 * p)),
                &[("madvise_calls", 1), ("madv_nohugepage", 1)]
            );
            // Refused transitions move nothing.
            step!(ck!(rep, r.used(16 * p, p).is_err()), &[]);
            step!(ck!(rep, unsafe { r.fault(8 * p, p) }.is_err()), &[]);
            let a = ok!(
                rep,
                step!(
                    Reservation::alloc(4 * p),
                    &[("alloc_ops", 1), ("mmap_calls", 1)]
                )
            );
            step!(drop(a), &[("free_ops", 1), ("munmap_calls", 1)]);
            step!(drop(r), &[("free_ops", 1), ("munmap_calls", 1)]);
            ck!(rep, osmem::stats() == s); // and nothing since
            0
        }),
    );
}

#[test]
fn prefault_and_harddecommit_counters() {
    warm();
    child_ok(
        "knob counters",
        tk::in_child_report(|rep: &mut Report| {
            osmem::configure(Config::new().prefault(true).harddecommit(true));
            let _ = osmem::probe();
            let p = osmem::page_size();
            drop(ok!(rep, Reservation::reserve(p)));
            let r = ok!(rep, Reservation::reserve(16 * p));
            ok!(rep, r.map(0, 8 * p));
            let s0 = osmem::stats();
            ok!(rep, r.used(0, 8 * p));
            let s1 = osmem::stats();
            ck!(
                rep,
                counters_moved(
                    &s0,
                    &s1,
                    &[
                        ("used_ops", 1),
                        ("madvise_calls", 1),
                        ("madv_populate_write", 1)
                    ]
                )
                .is_none()
            );
            let base = r.as_ptr() as usize;
            ck!(rep, tk::resident_pages(base, 8 * p) == 8);
            let u = unsafe { ok!(rep, r.unused(0, 8 * p)) };
            let s2 = osmem::stats();
            ck!(rep, u.protected);
            ck!(
                rep,
                counters_moved(
                    &s1,
                    &s2,
                    &[
                        ("unused_ops", 1),
                        ("madvise_calls", 1),
                        ("madv_dontneed", 1),
                        ("mprotect_calls", 1)
                    ]
                )
                .is_none()
            );
            ck!(
                rep,
                delta(&s1, &s2, "ready_bytes") == (8 * p as u64).wrapping_neg()
            );
            ck!(rep, delta(&s1, &s2, "prepared_bytes") == 8 * p as u64);
            ck!(rep, r.bytes_in(State::Prepared) == 8 * p as u64);
            0
        }),
    );
}

/// Every fault of the workload must make its range trap.
struct Traps;

impl CycleHooks for Traps {
    fn faulted(&mut self, _s: usize, _i: usize, _strat: FaultStrategy, f: &Faulted) {
        assert!(f.traps());
    }
}

/// Two threads on disjoint halves of one reservation, thousands of cycles each. Per-region
/// figures are exact whatever the rest of the process does; the kernel's view of every slot
/// is checked at the end. (The exact *global* deltas of the same workload are checked in
/// `accounting_threads.rs`, a binary with no other osmem user.)
#[test]
fn two_threads_disjoint_halves() {
    warm();
    const CYCLES: usize = 2000; // per thread
    let ps = osmem::page_size();
    let r = Reservation::reserve(2 * SLOTS * SLOT * ps).unwrap();
    let base = r.as_ptr() as usize;
    std::thread::scope(|sc| {
        let h = sc.spawn(|| cycle_slots(&r, 1, CYCLES, &mut Traps));
        cycle_slots(&r, 0, CYCLES, &mut Traps);
        h.join().unwrap();
    });

    let slot_bytes = (SLOT * ps) as u64;
    let n = (2 * SLOTS / 3) as u64; // SLOTS is a multiple of 3
    assert_eq!(
        region(&r),
        [0, n * slot_bytes, n * slot_bytes, n * slot_bytes]
    );
    // The kernel agrees with the table, slot by slot.
    check_cycle_final(&r, 1);
    // Every PROT_NONE fault was undone by its map and merged back: one RW VMA covers the
    // region (guards do not split VMAs).
    let v = tk::vma_at(base).unwrap();
    assert_eq!(v.perms_str(), "rw-p");
    assert!(v.start <= base && v.end >= base + r.len(), "{v:?}");
}
