//! VMAs: guard-marker faults add none, PROT_NONE faults split and merge back, and at
//! `vm.max_map_count` fault and unused still release the memory and say what they got.
//! Everything runs in forked children: `/proc/self/maps` line counts are process-wide, and a
//! child has no other thread mapping anything meanwhile.

mod common;

use common::STRATEGIES;
use osmem::{Config, FaultHow, FaultStrategy, Reservation, State, UnusedAdvice};
use osmem_testkit::{
    in_child_report, maps_line_count, resident_pages, touch_in_child, vmas_in, Touch,
};

const FAULTS: usize = 10_000;

/// In a child: fault every other page of a 20 000-page region with `s`, then map them all
/// back. Reports (lines added by the faults, lines left after unfaulting, faults that trap).
fn alternating(s: FaultStrategy) -> (i64, i64, u64) {
    let (exit, rep) = in_child_report(|out| {
        let ps = osmem::page_size();
        let r = Reservation::alloc(2 * FAULTS * ps).unwrap();
        unsafe { r.as_ptr().write_bytes(1, 2 * FAULTS * ps) };
        let base = maps_line_count() as i64;
        let mut trapping = 0;
        for i in 0..FAULTS {
            let f = unsafe { r.fault_with(2 * i * ps + ps, ps, s).unwrap() };
            trapping += u64::from(f.traps());
        }
        out.push_i64(maps_line_count() as i64 - base);
        for i in 0..FAULTS {
            r.map(2 * i * ps + ps, ps).unwrap();
        }
        out.push_i64(maps_line_count() as i64 - base);
        out.push(trapping);
        0
    });
    assert!(exit.is_success(), "{exit:?}");
    (rep.get_i64(0).unwrap(), rep.get_i64(1).unwrap(), rep[2])
}

#[test]
fn ten_thousand_guard_faults_add_no_vma() {
    if !osmem::probe().advice.guard_install {
        eprintln!("skipped: this kernel has no guard markers");
        return;
    }
    let (added, left, trapping) = alternating(FaultStrategy::Guard);
    assert_eq!(added, 0, "guard markers must not split the VMA");
    assert_eq!(left, 0);
    assert_eq!(trapping, FAULTS as u64);
}

#[test]
fn ten_thousand_protect_faults_split_and_unfault_merges_back() {
    let (added, left, trapping) = alternating(FaultStrategy::Protect);
    // Each PROT_NONE hole is a VMA plus the RW piece after it, except the last hole, which
    // ends the mapping.
    assert_eq!(added, 2 * FAULTS as i64 - 1, "each hole splits the mapping");
    assert_eq!(left, 0, "mprotect(RW) must merge every piece back");
    assert_eq!(trapping, FAULTS as u64);
}

// Values a child reports from the VMA-limit scenario, in order.
const HOW: [FaultHow; 5] = [
    FaultHow::Guard,
    FaultHow::Protect,
    FaultHow::Go,
    FaultHow::Remap,
    FaultHow::ReleasedOnly,
];
fn how_code(h: FaultHow) -> u64 {
    HOW.iter().position(|&x| x == h).unwrap() as u64
}

/// In a child (under `prog` if given): create a region, push the process to
/// vm.max_map_count, then fault a middle range with each strategy and unused one with
/// harddecommit. Reports, in order: limit reached, (how, resident pages) per strategy,
/// (protected, resident) for unused, fallback_fault_open, fallback_fault_guard,
/// fallback_harddecommit_open deltas, and whether a faulted range is usable again.
fn at_the_limit(prog: &[osmem_testkit::seccompiler::sock_filter]) -> Vec<u64> {
    let ps = osmem::page_size();
    let body = |out: &mut osmem_testkit::Report| {
        // osmem's regions (and their tables) exist before the limit is reached.
        let r = Reservation::alloc(64 * ps).unwrap();
        unsafe { r.as_ptr().write_bytes(9, 64 * ps) };
        osmem::configure(Config::new().harddecommit(true));
        // Push the process to vm.max_map_count: PROT_NONE holes in a big untouched mapping
        // until mprotect answers ENOMEM.
        let max = osmem::probe().max_map_count as usize;
        let holes = max / 2 + 16;
        let big = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                2 * holes * ps,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        } as usize;
        let mut hit = false;
        for i in 0..holes {
            if unsafe { libc::mprotect((big + (2 * i + 1) * ps) as *mut _, ps, libc::PROT_NONE) }
                != 0
            {
                hit = osmem_testkit::errno() == libc::ENOMEM;
                break;
            }
        }
        out.push(u64::from(hit));
        let s0 = osmem::stats();
        // Fault a middle range with each strategy; each would need a split except guards.
        // Every strategy but Auto (which is one of them). Each range's state says what the
        // kernel does: Faulted if it traps, Prepared if it was only released.
        let mut states_true = true;
        for (i, s) in STRATEGIES.into_iter().skip(1).enumerate() {
            let off = (4 + 8 * i) * ps;
            match unsafe { r.fault_with(off, 2 * ps, s) } {
                Ok(f) => {
                    let want = if f.traps() {
                        State::Faulted
                    } else {
                        State::Prepared
                    };
                    states_true &= r.state(off) == Some(want) && r.state(off + ps) == Some(want);
                    out.push(how_code(f.how));
                    out.push(resident_pages(r.as_ptr() as usize + off, 2 * ps) as u64);
                }
                Err(_) => {
                    out.push(99);
                    out.push(99);
                }
            }
        }
        // unused with harddecommit: the PROT_NONE step needs a split; released anyway.
        let off = 40 * ps;
        let u = unsafe { r.unused_with(off, 2 * ps, UnusedAdvice::DontNeed) };
        out.push(u.map(|u| u64::from(u.protected)).unwrap_or(99));
        out.push(resident_pages(r.as_ptr() as usize + off, 2 * ps) as u64);
        let s1 = osmem::stats();
        out.push(s1.fallback_fault_open - s0.fallback_fault_open);
        out.push(s1.fallback_fault_guard - s0.fallback_fault_guard);
        out.push(s1.fallback_harddecommit_open - s0.fallback_harddecommit_open);
        // A faulted range comes back with map + used, zero-filled, whatever faulted it; one
        // that was only released (Prepared) with used alone, map refusing it unchanged.
        let back = if r.state(12 * ps) == Some(State::Prepared) {
            matches!(
                r.map(12 * ps, 2 * ps),
                Err(osmem::Error::WrongState {
                    found: State::Prepared,
                    ..
                })
            ) && r.used(12 * ps, 2 * ps).is_ok()
        } else {
            r.map(12 * ps, 2 * ps).is_ok() && r.used(12 * ps, 2 * ps).is_ok()
        };
        let ok = back
            && r.state(12 * ps) == Some(State::Ready)
            && unsafe { *r.as_ptr().add(12 * ps) } == 0;
        out.push(u64::from(ok));
        out.push(u64::from(states_true));
        0
    };
    let (exit, rep) = if prog.is_empty() {
        in_child_report(body)
    } else {
        osmem_testkit::in_child_filtered(prog, body)
    };
    assert!(exit.is_success(), "{exit:?}");
    assert_eq!(rep[0], 1, "the child must reach the VMA limit (ENOMEM)");
    rep.as_slice().to_vec()
}

#[test]
fn at_max_map_count_faults_fall_to_guard_markers() {
    if !osmem::probe().advice.guard_install {
        eprintln!("skipped: this kernel has no guard markers");
        return;
    }
    let v = at_the_limit(&[]);
    // Guard markers need no VMA: every strategy ends in a real, trapping fault, released.
    for (k, name) in [(1, "guard"), (3, "protect"), (5, "go"), (7, "remap")] {
        assert_eq!(
            (v[k], v[k + 1]),
            (how_code(FaultHow::Guard), 0),
            "{name} at the limit"
        );
    }
    assert_eq!((v[9], v[10]), (0, 0), "unused released but not protected");
    assert_eq!(
        (v[11], v[12]),
        (0, 3),
        "three faults switched to guards, none left open"
    );
    assert_eq!(v[13], 1, "one unprotected harddecommit counted");
    assert_eq!(v[14], 1, "faulted range usable again");
    assert_eq!(v[15], 1, "each range's state says whether it traps");
}

#[test]
fn at_max_map_count_without_guards_faults_are_released_only() {
    // Guard markers refused too (a kernel before 6.13 at the VMA limit): the release still
    // happens and each fault says it does not trap.
    let prog = osmem_testkit::build_filter(&[osmem_testkit::Inject::Madvise {
        advice: 102, // MADV_GUARD_INSTALL
        errno: libc::EINVAL,
    }]);
    let v = at_the_limit(&prog);
    let released_only = how_code(FaultHow::ReleasedOnly);
    for (k, name) in [(1, "guard"), (3, "protect"), (5, "go"), (7, "remap")] {
        assert_eq!((v[k], v[k + 1]), (released_only, 0), "{name} at the limit");
    }
    assert_eq!((v[9], v[10]), (0, 0), "unused released but not protected");
    assert_eq!(v[11], 4, "four released-only faults counted");
    assert_eq!(v[13], 1, "one unprotected harddecommit counted");
    assert_eq!(v[14], 1, "released-only range usable again");
    assert_eq!(
        v[15], 1,
        "released-only ranges read Prepared, trapping ones Faulted"
    );
}

#[test]
fn guard_fault_traps_with_maperr_and_protect_with_accerr() {
    let ps = osmem::page_size();
    let r = Reservation::alloc(8 * ps).unwrap();
    let base = r.as_ptr() as usize;
    let f = unsafe { r.fault_with(ps, ps, FaultStrategy::Protect) }.unwrap();
    assert_eq!(f.how, osmem::FaultHow::Protect);
    assert_eq!(
        touch_in_child(base + ps, true),
        Touch::Segv {
            si_code: osmem_testkit::SEGV_ACCERR
        }
    );
    if osmem::probe().advice.guard_install {
        let f = unsafe { r.fault_with(4 * ps, ps, FaultStrategy::Guard) }.unwrap();
        assert_eq!(f.how, osmem::FaultHow::Guard);
        assert_eq!(
            touch_in_child(base + 4 * ps, false),
            Touch::Segv {
                si_code: osmem_testkit::SEGV_MAPERR
            }
        );
    }
}

#[test]
fn prefault_makes_used_ranges_resident() {
    let (exit, rep) = in_child_report(|out| {
        let ps = osmem::page_size();
        osmem::configure(Config::new().prefault(true));
        let r = Reservation::reserve(32 * ps).unwrap();
        r.map(0, 32 * ps).unwrap();
        out.push(resident_pages(r.as_ptr() as usize, 32 * ps) as u64);
        r.used(0, 32 * ps).unwrap();
        out.push(resident_pages(r.as_ptr() as usize, 32 * ps) as u64);
        0
    });
    assert!(exit.is_success(), "{exit:?}");
    assert_eq!(rep.as_slice(), &[0, 32]);
}

/// Faults that split a region's VMA (`PROT_NONE`), pages written beside them meanwhile (each
/// piece's first write), then everything mapped back: the region is one VMA again, as before
/// the faults. (Pieces that got their own `anon_vma` at their first write could never merge
/// again; osmem gives the VMA one before its first split.) The same with harddecommit.
#[test]
fn mapping_back_after_split_faults_and_writes_leaves_one_vma() {
    let ps = osmem::page_size();
    for harddecommit in [false, true] {
        let pages = 2048;
        let r = Reservation::alloc(pages * ps).unwrap();
        let base = r.as_ptr() as usize;
        if harddecommit {
            r.set_config(Config::new().harddecommit(true));
        }
        assert_eq!(vmas_in(base, base + pages * ps), 1);
        let faulted: Vec<usize> = (0..200).map(|i| 3 + i * 10).collect();
        for &p in &faulted {
            if harddecommit {
                let u = unsafe { r.unused(p * ps, ps) }.unwrap();
                assert!(u.protected, "{u:?}");
            } else {
                let f = unsafe { r.fault_with(p * ps, ps, FaultStrategy::Protect) }.unwrap();
                assert_eq!(f.how, osmem::FaultHow::Protect);
            }
        }
        assert_eq!(vmas_in(base, base + pages * ps), 2 * faulted.len() + 1);
        // The program writes to its memory between the pieces.
        for &p in &faulted {
            unsafe { ((base + (p + 2) * ps) as *mut u8).write_volatile(7) };
        }
        for &p in &faulted {
            if !harddecommit {
                r.map(p * ps, ps).unwrap();
            }
            r.used(p * ps, ps).unwrap();
        }
        assert_eq!(
            vmas_in(base, base + pages * ps),
            1,
            "harddecommit {harddecommit}: the region did not merge back"
        );
    }
}
