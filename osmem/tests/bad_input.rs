//! Bad inputs: each returns its exact typed error, says nothing changed, issues no syscall,
//! and leaves the kernel's view of the region (VMAs, perms, Rss, residency, data, traps) and
//! osmem's own (page states, byte figures) exactly as they were.
//!
//! Table-driven: a case is one line in `CASES`.
//!
//! Where the checks run: every case runs twice, from a fresh region in the same layout.
//! - In the test process, for readable failure messages (the actual `Error` is printed) and
//!   the per-region checks, which are exact there.
//! - In a forked child, for the checks that need a quiet process: "no syscall" compares global
//!   counters (`osmem::stats()`), which other test threads move at any time in the test
//!   process but which only the forking thread can move in the child; and the full smaps view
//!   (including the Rss of edge VMAs a foreign mapping may share) is static there. The child
//!   was chosen over a file-level mutex because it stays exact whatever else the binary runs.
//!
//! Layout of the 16-page region (pages outside [2, 14) stay Reserved, so the region's inner
//! VMAs are exactly osmem's):
//!
//! | pages  | 0..2     | 2..6     | 6..10 | 10..12            | 12..14 | 14..16   |
//! |--------|----------|----------|-------|-------------------|--------|----------|
//! | state  | Reserved | Prepared | Ready | Faulted (Protect) | Ready  | Reserved |

use osmem::Error::{self, *};
use osmem::Op::*;
use osmem::State::*;
use osmem::{FaultStrategy, Reservation, State, Stats, UnusedAdvice};
use osmem_testkit::{self as tk, ChildExit, Report, Touch, SEGV_ACCERR};

const PAGES: usize = 16;
const HUGE: usize = 2 << 20;
/// The largest page-aligned value: `MAXP + page` overflows.
fn maxp(ps: usize) -> usize {
    usize::MAX & !(ps - 1)
}

type OpFn = fn(&Reservation, usize) -> Result<(), Error>;

struct Case {
    name: &'static str,
    op: OpFn,
    want: fn(usize) -> Error,
}

/// `case!(name, |r, ps| call, |ps| expected error)`; the call's Ok value is discarded.
macro_rules! case {
    ($name:literal, |$r:ident, $ps:ident| $op:expr, $want:expr) => {
        Case {
            name: $name,
            op: |$r: &Reservation, $ps: usize| -> Result<(), Error> {
                let _ = (&$r, $ps);
                #[allow(unused_unsafe)]
                let res = unsafe { $op };
                res.map(|_| ())
            },
            want: |$ps: usize| -> Error {
                let _ = $ps;
                $want
            },
        }
    };
}

const FREE: UnusedAdvice = UnusedAdvice::Free;

#[rustfmt::skip]
const CASES: &[Case] = &[
    // Range checks, in the order osmem applies them: zero length, alignment, overflow, bounds.
    case!("map: unaligned offset", |r, ps| r.map(1, ps), Unaligned { op: Map, offset: 1, len: ps }),
    case!("map: offset inside a page", |r, ps| r.map(2 * ps + 8, ps), Unaligned { op: Map, offset: 2 * ps + 8, len: ps }),
    case!("used: unaligned length", |r, ps| r.used(2 * ps, ps + 1), Unaligned { op: Used, offset: 2 * ps, len: ps + 1 }),
    case!("unused: unaligned length", |r, ps| r.unused(6 * ps, ps / 2), Unaligned { op: Unused, offset: 6 * ps, len: ps / 2 }),
    case!("unused: zero length", |r, ps| r.unused(6 * ps, 0), ZeroLength { op: Unused }),
    case!("map: zero length beats unaligned", |r, ps| r.map(1, 0), ZeroLength { op: Map }),
    case!("fault: offset + len overflows", |r, ps| r.fault(maxp(ps), ps), Overflow { op: Fault, offset: maxp(ps), len: ps }),
    case!("used: len overflows", |r, ps| r.used(ps, maxp(ps)), Overflow { op: Used, offset: ps, len: maxp(ps) }),
    case!("unused_with: offset at the end", |r, ps| r.unused_with(PAGES * ps, ps, FREE), OutOfRange { op: Unused, offset: PAGES * ps, len: ps, size: PAGES * ps }),
    case!("fault_with: straddles the end", |r, ps| r.fault_with(15 * ps, 2 * ps, FaultStrategy::Guard), OutOfRange { op: Fault, offset: 15 * ps, len: 2 * ps, size: PAGES * ps }),
    case!("map: far beyond the end", |r, ps| r.map(1 << 40, ps), OutOfRange { op: Map, offset: 1 << 40, len: ps, size: PAGES * ps }),
    case!("map: whole region plus one page", |r, ps| r.map(0, (PAGES + 1) * ps), OutOfRange { op: Map, offset: 0, len: (PAGES + 1) * ps, size: PAGES * ps }),
    case!("hugepage: unaligned length", |r, ps| r.hugepage(0, ps - 1), Unaligned { op: HugePage, offset: 0, len: ps - 1 }),
    case!("hugepage: straddles the end", |r, ps| r.hugepage(8 * ps, HUGE), OutOfRange { op: HugePage, offset: 8 * ps, len: HUGE, size: PAGES * ps }),
    case!("nohugepage: zero length", |r, ps| r.nohugepage(0, 0), ZeroLength { op: NoHugePage }),
    case!("nohugepage: offset at the end", |r, ps| r.nohugepage(PAGES * ps, ps), OutOfRange { op: NoHugePage, offset: PAGES * ps, len: ps, size: PAGES * ps }),
    case!("collapse: overflow", |r, ps| r.collapse(maxp(ps), ps), Overflow { op: Collapse, offset: maxp(ps), len: ps }),
    case!("collapse: unaligned offset", |r, ps| r.collapse(3, ps), Unaligned { op: Collapse, offset: 3, len: ps }),
    // Wrong states: the offset is that of the first offending page.
    case!("map on Ready", |r, ps| r.map(6 * ps, ps), WrongState { op: Map, offset: 6 * ps, found: Ready }),
    case!("map on Prepared", |r, ps| r.map(2 * ps, 4 * ps), WrongState { op: Map, offset: 2 * ps, found: Prepared }),
    case!("map: Reserved then Prepared", |r, ps| r.map(0, 4 * ps), WrongState { op: Map, offset: 2 * ps, found: Prepared }),
    case!("used on Reserved", |r, ps| r.used(0, ps), WrongState { op: Used, offset: 0, found: Reserved }),
    case!("used on Faulted", |r, ps| r.used(10 * ps, ps), WrongState { op: Used, offset: 10 * ps, found: Faulted }),
    // used takes Prepared and Ready pages together (Go's sysUsed), but not Faulted ones.
    case!("used: Prepared, Ready, then Faulted", |r, ps| r.used(2 * ps, 9 * ps), WrongState { op: Used, offset: 10 * ps, found: Faulted }),
    case!("unused on Reserved", |r, ps| r.unused(0, ps), WrongState { op: Unused, offset: 0, found: Reserved }),
    case!("unused on Prepared", |r, ps| r.unused(2 * ps, 4 * ps), WrongState { op: Unused, offset: 2 * ps, found: Prepared }),
    case!("unused on Faulted", |r, ps| r.unused(10 * ps, 2 * ps), WrongState { op: Unused, offset: 10 * ps, found: Faulted }),
    case!("unused: Ready then Reserved", |r, ps| r.unused(12 * ps, 4 * ps), WrongState { op: Unused, offset: 14 * ps, found: Reserved }),
    case!("unused: Ready then Faulted", |r, ps| r.unused(6 * ps, 6 * ps), WrongState { op: Unused, offset: 10 * ps, found: Faulted }),
    case!("unused_with(Free): Ready then Faulted", |r, ps| r.unused_with(6 * ps, 8 * ps, FREE), WrongState { op: Unused, offset: 10 * ps, found: Faulted }),
    case!("unused_with(Remap): Prepared then Ready", |r, ps| r.unused_with(4 * ps, 4 * ps, UnusedAdvice::Remap), WrongState { op: Unused, offset: 4 * ps, found: Prepared }),
    case!("fault on Reserved", |r, ps| r.fault(0, ps), WrongState { op: Fault, offset: 0, found: Reserved }),
    case!("fault on Prepared", |r, ps| r.fault(2 * ps, ps), WrongState { op: Fault, offset: 2 * ps, found: Prepared }),
    case!("fault on Faulted", |r, ps| r.fault(10 * ps, 2 * ps), WrongState { op: Fault, offset: 10 * ps, found: Faulted }),
    case!("fault_with(Go): Ready then Reserved", |r, ps| r.fault_with(12 * ps, 4 * ps, FaultStrategy::Go), WrongState { op: Fault, offset: 14 * ps, found: Reserved }),
    case!("fault_with(Remap): Ready then Faulted", |r, ps| r.fault_with(8 * ps, 4 * ps, FaultStrategy::Remap), WrongState { op: Fault, offset: 10 * ps, found: Faulted }),
    // Constructors: bad lengths and alignments (the region is a bystander here).
    case!("reserve: zero length", |r, ps| Reservation::reserve(0), ZeroLength { op: Reserve }),
    case!("reserve: unaligned length", |r, ps| Reservation::reserve(ps + 1), Unaligned { op: Reserve, offset: 0, len: ps + 1 }),
    case!("alloc: zero length", |r, ps| Reservation::alloc(0), ZeroLength { op: Alloc }),
    case!("alloc: unaligned length", |r, ps| Reservation::alloc(100), Unaligned { op: Alloc, offset: 0, len: 100 }),
    case!("reserve_aligned: zero length", |r, ps| Reservation::reserve_aligned(0, HUGE), ZeroLength { op: Reserve }),
    case!("reserve_aligned: unaligned length", |r, ps| Reservation::reserve_aligned(ps + 1, HUGE), Unaligned { op: Reserve, offset: 0, len: ps + 1 }),
    case!("reserve_aligned: align not a power of two", |r, ps| Reservation::reserve_aligned(ps, 3 * ps), Alignment { op: Reserve, align: 3 * ps, page: ps }),
    case!("reserve_aligned: align below the page size", |r, ps| Reservation::reserve_aligned(ps, ps / 2), Alignment { op: Reserve, align: ps / 2, page: ps }),
    case!("reserve_aligned: align zero", |r, ps| Reservation::reserve_aligned(ps, 0), Alignment { op: Reserve, align: 0, page: ps }),
    case!("reserve_aligned: len + align overflows", |r, ps| Reservation::reserve_aligned(maxp(ps), HUGE), Overflow { op: Reserve, offset: HUGE, len: maxp(ps) }),
];

// ----- the fixture and the kernel's view of it (allocation-free: also used in children) -----

const SEED: u8 = 0x6b;
const READY_PAGES: [usize; 6] = [6, 7, 8, 9, 12, 13];

fn pat(page: usize) -> u8 {
    (SEED ^ (page as u8).wrapping_mul(29)) | 1
}

fn fixture() -> Result<Reservation, Error> {
    let ps = osmem::page_size();
    let r = Reservation::reserve(PAGES * ps)?;
    r.map(2 * ps, 12 * ps)?;
    r.used(6 * ps, 8 * ps)?;
    for p in READY_PAGES {
        unsafe { core::ptr::write_bytes(r.as_ptr().add(p * ps), pat(p), ps) };
    }
    let _ = unsafe { r.fault_with(10 * ps, 2 * ps, FaultStrategy::Protect) }?;
    Ok(r)
}

const MAX_VMAS: usize = 16;

/// The VMAs over the region, clipped to it: bounds, perms, and Rss of the VMAs that lie
/// wholly inside the region (an edge VMA may be shared with a foreign mapping whose Rss is
/// not ours), plus per-page residency and page states.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct View {
    vmas: [(usize, usize, [u8; 4], u64); MAX_VMAS],
    n: usize,
    count: usize,
    resident: [bool; PAGES],
    states: [Option<State>; PAGES],
    bytes: [u64; 4],
}

fn view(r: &Reservation) -> View {
    let ps = osmem::page_size();
    let (base, end) = (r.as_ptr() as usize, r.as_ptr() as usize + r.len());
    let mut v = View {
        vmas: [(0, 0, [0; 4], 0); MAX_VMAS],
        n: 0,
        count: tk::vmas_in(base, end),
        resident: [false; PAGES],
        states: [None; PAGES],
        bytes: [Reserved, Prepared, Ready, Faulted].map(|s| r.bytes_in(s)),
    };
    let mut a = base;
    while a < end && v.n < MAX_VMAS {
        let Some(m) = tk::vma_at(a) else {
            v.vmas[v.n] = (a, a + ps, *b"hole", 0);
            v.n += 1;
            a += ps;
            continue;
        };
        let inside = m.start >= base && m.end <= end;
        let rss = if inside {
            tk::smaps_at(m.start).map_or(u64::MAX, |e| e.rss_kb)
        } else {
            0
        };
        v.vmas[v.n] = (m.start.max(base), m.end.min(end), m.perms, rss);
        v.n += 1;
        a = m.end;
    }
    for p in 0..PAGES {
        v.resident[p] = tk::resident_pages(base + p * ps, ps) == 1;
        v.states[p] = r.state(p * ps);
    }
    v
}

/// Data and traps survived: Ready pages hold their bytes, Faulted pages still trap.
fn intact(r: &Reservation) -> bool {
    let ps = osmem::page_size();
    let base = r.as_ptr() as usize;
    let data = READY_PAGES.iter().all(|&p| {
        (0..ps).all(
            |i| unsafe { core::ptr::read_volatile((base + p * ps + i) as *const u8) } == pat(p),
        )
    });
    let accerr = Touch::Segv {
        si_code: SEGV_ACCERR,
    };
    data && [10, 11]
        .iter()
        .all(|&p| tk::touch_in_child(base + p * ps, true) == accerr)
}

/// Sum of every syscall counter.
fn syscalls(s: &Stats) -> u64 {
    s.fields()
        .filter(|(n, _)| n.ends_with("_calls"))
        .map(|(_, v)| v)
        .sum()
}

/// Every figure that an input error must leave alone: byte counts, op counts, syscalls.
fn untouched(a: &Stats, b: &Stats) -> bool {
    syscalls(a) == syscalls(b)
        && a.fields().zip(b.fields()).all(|((n, x), (_, y))| {
            !(n.ends_with("_bytes") || n.ends_with("_ops") || n.ends_with("_calls")) || x == y
        })
}

// ----- the runner -----

/// Child exit codes (which check failed).
const C_SETUP: i32 = 10;
const C_RESULT: i32 = 11;
const C_STATS: i32 = 12;
const C_VIEW: i32 = 13;
const C_INTACT: i32 = 14;

fn run_in_child(c: &Case) -> ChildExit {
    let (exit, _) = tk::in_child_report(|_: &mut Report| {
        let ps = osmem::page_size();
        let Ok(r) = fixture() else { return C_SETUP };
        let before = view(&r);
        let s0 = osmem::stats();
        let got = (c.op)(&r, ps);
        let s1 = osmem::stats();
        if got != Err((c.want)(ps)) {
            return C_RESULT;
        }
        if !untouched(&s0, &s1) {
            return C_STATS;
        }
        if view(&r) != before {
            return C_VIEW;
        }
        if !intact(&r) {
            return C_INTACT;
        }
        0
    });
    exit
}

#[test]
fn bad_inputs_are_refused_without_side_effects() {
    // One-time initialisation (probe, knobs) happens here, before any fork, so no child is
    // forked half-way through it and none of it lands between a child's two snapshots.
    let _ = (osmem::probe(), osmem::config());
    let ps = osmem::page_size();
    assert!(CASES.len() >= 20);
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "case names must be unique");

    for c in CASES {
        // In the test process: the exact error, and everything per-region unchanged.
        let r = fixture().unwrap();
        let before = view(&r);
        let got = (c.op)(&r, ps);
        let want = (c.want)(ps);
        assert_eq!(got, Err(want), "{}", c.name);
        let e = got.unwrap_err();
        assert!(!e.changed(), "{}: changed() must be false", c.name);
        assert_eq!(e.errno(), None, "{}: an input error has no errno", c.name);
        let after = view(&r);
        // Rss of whole-inside VMAs and residency are exact per region; edge VMAs are clipped.
        assert_eq!(after, before, "{}: the region changed", c.name);
        assert!(
            intact(&r),
            "{}: data lost or a faulted page stopped trapping",
            c.name
        );
        drop(r);

        // In a quiet child: no syscall at all, nothing counted.
        let exit = run_in_child(c);
        assert_eq!(
            exit,
            ChildExit::Code(0),
            "{}: child check failed (11 result, 12 counters/syscalls, 13 maps/smaps, 14 data/traps)",
            c.name
        );
    }
}

/// The layout really is what the table's comments say (so a WrongState case cannot pass for
/// the wrong reason), checked against the kernel.
#[test]
fn fixture_layout_is_as_documented() {
    let ps = osmem::page_size();
    let r = fixture().unwrap();
    let base = r.as_ptr() as usize;
    let want = [
        (0, Reserved),
        (2, Prepared),
        (6, Ready),
        (10, Faulted),
        (12, Ready),
        (14, Reserved),
    ];
    for (p, s) in want {
        assert_eq!(r.state(p * ps), Some(s), "page {p}");
    }
    let perms = |p: usize| tk::vma_at(base + p * ps).unwrap().perms;
    assert_eq!(&perms(0), b"---p");
    assert_eq!(&perms(2), b"rw-p");
    assert_eq!(&perms(10), b"---p");
    assert_eq!(&perms(12), b"rw-p");
    assert_eq!(&perms(15), b"---p");
    assert_eq!(tk::resident_pages(base + 6 * ps, 4 * ps), 4);
    assert_eq!(tk::resident_pages(base + 10 * ps, 2 * ps), 0);
    assert!(intact(&r));
}
