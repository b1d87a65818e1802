//! The strategy chains under REAL failure: a seccomp filter (or the kernel itself, for
//! mlocked memory) makes chosen syscalls fail in a forked child, osmem runs its chain there,
//! and the child reports what the KERNEL then shows (mincore, smaps Rss/LazyFree, maps
//! permissions, SIGSEGV of a grandchild touching the range, zero reads) plus exact
//! `osmem::stats()` deltas (exact because only the forking thread exists in the child).
//! Every assertion runs in the parent. Sticky downgrades are process-global, so they only
//! ever happen in a child (or in a re-executed copy of this binary, for the probe).
//!
//! | # | test | injected failure | expected outcome |
//! |---|---|---|---|
//! | 1 | `seed2_free_einval_dontneed_enosys` | FREE→EINVAL, DONTNEED→ENOSYS | `unused` (Free) → `Remap`, zeroed, resident 0, VMA Rss 0, reads 0; downgrade_free = downgrade_dontneed = 1, downgrade_madvise 0 (EINVAL confirmed by a zero-length probe of the advice, ENOSYS by a zero-length `MADV_NORMAL` that works); 5 more calls: all `Remap`, released, downgrades still 1, 0 madvise calls, exactly 1 mmap each |
//! | 2 | `dontneed_eperm_is_sticky_for_dontneed_only` | DONTNEED→EPERM | default `unused` → `Remap`, downgrade_dontneed 1, downgrade_madvise 0; later `unused_with(Free)` still → `Free` (RSS kept, LazyFree = range); later default `unused` issues no madvise |
//! | 3 | `free_einval_from_seccomp_is_sticky` | FREE→EINVAL | seccomp matches the advice whatever the length, so the zero-length probe gets EINVAL too and says "unknown": downgrade_free 1, the call → `DontNeed` (released); the next `Free` call issues no FREE |
//! | 4 | `mlocked_unused_free_per_call_einval` | none: `mlock` (kernel's own EINVAL) | the kernel refuses FREE **and** DONTNEED on VM_LOCKED (EINVAL), the probes say both advices are known → no downgrade, per-call fallback to `Remap` (released; the remap drops VM_LOCKED); an unlocked range → `Free` again |
//! | 5 | `dontneed_eagain_retried_then_remap` | DONTNEED→EAGAIN | 1 + 4 retries (transient_retries +4), then `Remap`, released, no downgrade; the next call tries DONTNEED again |
//! | 6 | `dontneed_eintr_retried_then_remap` | DONTNEED→EINTR | same as 5 |
//! | 7 | `unused_all_links_fail_loses_nothing` | every madvise→ENOSYS, mmap→ENOMEM | `Error::Os { Unused, Mmap, ENOMEM, changed: false }`; data intact and resident, state Ready, byte accounting unchanged |
//! | 7b | `remap_hole_is_taken_back_and_reserved` | mmap(RW, MAP_FIXED) unmaps, then → ENOMEM (a trap: the kernel failing past clearing the old page tables) | `Error::Os { Unused, Mmap, ENOMEM, changed: true }`; the hole taken back `PROT_NONE` (`---p`, SEGV_ACCERR), state Reserved, bytes Ready → Reserved, remap_holes 1; map + used work |
//! | 7c | `remap_hole_that_cannot_be_taken_back_is_counted` | as 7b, and mmap(MAP_FIXED_NOREPLACE) → ENOMEM | same error; nothing mapped (SEGV_MAPERR), state Reserved, remap_holes_left 1; map (its remap) + used work |
//! | 7d | `remap_hole_in_a_batch_is_settled_reserved` | as 7b, through a batch's per-range chain | the range reported failed with that error, settled Reserved |
//! | 8 | `guard_install_einval_falls_to_protect` | GUARD_INSTALL→EINVAL | `fault(Guard)` → `Protect`, touch → SEGV_ACCERR, released, fallback_fault_guard 1, downgrade_guard 1; `selected().fault` = Protect; `map` makes it usable |
//! | 9 | `protect_at_vma_limit_released_only` | mprotect(PROT_NONE)→ENOMEM, GUARD_INSTALL→EINVAL (no VMA-free way to trap) | `fault(Protect)` → `ReleasedOnly`, `traps()` false, touch succeeds, released, reads 0, fallback_fault_open 1; state Prepared (as the kernel has it): `map` refused before any syscall, `used` works |
//! | 10 | `go_at_vma_limit_released_only` | mprotect(PROT_NONE)→ENOMEM, GUARD_INSTALL→EINVAL | `fault(Go)`: same as 9 |
//! | 11 | `remap_fault_mmap_enomem_released_only` | mmap→ENOMEM, GUARD_INSTALL→EINVAL | `fault(Remap)` → DONTNEED only → `ReleasedOnly`, released, state Prepared, `used` works |
//! | 12 | `protect_dontneed_enosys_falls_to_remap` | DONTNEED→ENOSYS | `fault(Protect)` → `Remap` (mmap PROT_NONE), SEGV_ACCERR, released, downgrade_dontneed 1 (a zero-length `MADV_NORMAL` works: only DONTNEED is refused), downgrade_madvise 0 |
//! | 13 | `map_mprotect_enomem_falls_to_mmap` | mprotect(RW)→ENOMEM | `map` → mmap(RW, MAP_FIXED), fallback_map_remap 1, VMA rw-p and usable |
//! | 14 | `map_all_links_fail_changes_nothing` | mprotect(RW)→ENOMEM, mmap→ENOMEM | `Error::Os { Map, Mmap, ENOMEM, changed: false }`, state Reserved, VMA ---p, still traps |
//! | 15 | `harddecommit_mprotect_eperm_still_released` | mprotect(PROT_NONE)→EPERM | harddecommit `unused` → released, `protected` false, fallback_harddecommit_open 1, Prepared, rw-p; `used` works |
//! | 16 | `collapse_eagain_bounded_no_downgrade` | COLLAPSE→EAGAIN | `Error::Os { Collapse, Madvise(25), EAGAIN }` after 5 calls, no downgrade_collapse; the next call tries again |
//! | 17 | `guard_remove_eperm_map_remaps` | GUARD_REMOVE→EPERM | `map` of a guard-faulted range → mmap(RW, MAP_FIXED) removes the guards, downgrade_guard 1, touch succeeds, reads 0 |
//! | 18 | `mlocked_fault_guard_per_call_fallback` | none: `mlock` | GUARD_INSTALL and DONTNEED EINVAL on VM_LOCKED, probes say known → no downgrade; → `Remap`, SEGV_ACCERR; an unlocked range still gets `Guard` (SEGV_MAPERR) |
//! | 19 | `probe_without_process_madvise` | process_madvise(440)→ENOSYS, pidfd_open(434)→ENOSYS | re-exec'd binary, filter first: `probe().process_madvise == Unsupported` |
//! | 20 | `probe_with_guard_install_refused` | GUARD_INSTALL→EINVAL | re-exec'd binary: `probe().advice.guard_install == false`, `selected().fault == Protect`, default `fault` → `Protect` without trying guards |
//! | 21 | `go_mlocked_mmap_enomem_restores_ready` | `mlock` + mmap→ENOMEM | `fault(Go)`: PROT_NONE applied, DONTNEED EINVAL (locked), remap refused → `Error::Os { Fault, Mmap, ENOMEM, changed: false }`, protection undone (rw-p), data intact and resident, state Ready |
//! | 22 | `used_all_links_fail_names_the_failed_call` | (after a harddecommit `unused`) mprotect(RW)→ENOMEM, mmap→ENOMEM | `Error::Os { Used, Mmap, ENOMEM, changed: false }`, still ---p and Prepared. |
//! | 23 | `probe_with_guard_remove_refused` | GUARD_REMOVE→EPERM (re-exec'd) | `probe().advice.guard_install == false`, `selected().fault == Protect`. (the probe tries guard markers last on its scratch page, so a guard it cannot remove is never touched) |
//!
//! Child protocol: the child puts `(name, value)` pairs into an [`Out`] (stack only, no
//! allocation: the child is a fork of a multi-threaded process); each pair travels as a
//! 16-bit hash of the name and a 16-bit value through the testkit `Report`, and the parent
//! compares them with [`Fields::expect`], which prints every mismatch at once.

mod common;

use common::{
    all_bytes, call_code, fault_code, op_code, perms_code, play_role_if, ps, slot_len, spawn_role,
    touch_code, unused_code, Slots, F_GUARD, F_PROTECT, F_RELEASED_ONLY, F_REMAP, MADV_COLLAPSE,
    MADV_DONTNEED, MADV_DONTNEED_LOCKED, MADV_FREE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE, P_NONE,
    P_RW, P_UNMAPPED, SLOT_PAGES, T_ACCERR, T_MAPERR, T_OK, U_DONTNEED, U_DONTNEED_LOCKED, U_FREE,
    U_REMAP,
};
use osmem::{
    Config, Error, FaultStrategy, Op, Reservation, State, Stats, Syscall, Unused, UnusedAdvice,
    UnusedHow,
};
use osmem_testkit::{
    apply_filter_in_child, build_filter, build_trap_filter, in_child_filtered, in_child_report,
    in_child_trapped, is_zero, resident_pages, smaps_at, ChildExit, Inject, Report, ReportBuf,
    Trap, REPORT_CAP,
};

// ---------------------------------------------------------------------------------------
// Child → parent protocol

/// FNV-1a folded to 16 bits: names are short literals, collisions are caught by the parent.
const fn name_hash(s: &str) -> u16 {
    let b = s.as_bytes();
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    ((h >> 16) ^ (h & 0xffff)) as u16
}

/// One report slot carries the pair count, each other slot two pairs.
const OUT_CAP: usize = (REPORT_CAP - 1) * 2;

/// Child side: named small numbers, on the stack.
struct Out {
    pairs: [(u16, u16); OUT_CAP],
    len: usize,
}

impl Out {
    fn new() -> Self {
        Out {
            pairs: [(0, 0); OUT_CAP],
            len: 0,
        }
    }

    /// Values saturate at 0xffff (every figure reported here is far below).
    fn put(&mut self, name: &str, v: u64) {
        if self.len < OUT_CAP {
            self.pairs[self.len] = (name_hash(name), v.min(0xffff) as u16);
        }
        self.len += 1;
    }

    fn flag(&mut self, name: &str, b: bool) {
        self.put(name, b as u64);
    }

    /// Exit code 3 if more pairs were put than fit.
    fn send(&self, r: &mut Report) -> i32 {
        let n = self.len.min(OUT_CAP);
        r.push(n as u64);
        for chunk in self.pairs[..n].chunks(2) {
            let mut v = 0u64;
            for (i, &(h, x)) in chunk.iter().enumerate() {
                v |= ((h as u64) << 16 | x as u64) << (32 * i);
            }
            r.push(v);
        }
        if self.len > OUT_CAP {
            3
        } else {
            0
        }
    }
}

/// Parent side: the decoded pairs.
struct Fields {
    test: &'static str,
    pairs: Vec<(u16, u64)>,
}

impl Fields {
    fn decode(test: &'static str, buf: &ReportBuf) -> Fields {
        let vals = buf.as_slice();
        let n = vals.first().copied().unwrap_or(0) as usize;
        let pairs: Vec<(u16, u64)> = vals
            .iter()
            .skip(1)
            .flat_map(|&v| [v & 0xffff_ffff, v >> 32])
            .take(n)
            .map(|half| ((half >> 16) as u16, half & 0xffff))
            .collect();
        assert_eq!(pairs.len(), n, "{test}: report truncated");
        let mut hs: Vec<u16> = pairs.iter().map(|p| p.0).collect();
        hs.sort_unstable();
        hs.dedup();
        assert_eq!(
            hs.len(),
            pairs.len(),
            "{test}: duplicate field name (or hash collision) in the child's report"
        );
        Fields { test, pairs }
    }

    fn get(&self, name: &str) -> Option<u64> {
        let h = name_hash(name);
        self.pairs.iter().find(|p| p.0 == h).map(|p| p.1)
    }

    /// Compare every `(name, expected)`; panic once, listing every mismatch.
    fn expect(&self, want: &[(&str, u64)]) {
        // Two asserted names with one hash would make one of them read the other's value.
        let mut hs: Vec<u16> = want.iter().map(|w| name_hash(w.0)).collect();
        hs.sort_unstable();
        hs.dedup();
        assert_eq!(
            hs.len(),
            want.len(),
            "{}: asserted names collide",
            self.test
        );
        let mut bad = String::new();
        for &(name, exp) in want {
            match self.get(name) {
                Some(got) if got == exp => {}
                Some(got) => bad += &format!("\n  {name}: got {got}, expected {exp}"),
                None => bad += &format!("\n  {name}: not reported (child stopped early?)"),
            }
        }
        assert!(
            bad.is_empty(),
            "{}: kernel/osmem view differs:{bad}",
            self.test
        );
    }
}

/// Run `body` in a forked child with `rules` injected (none: plain fork), under the default
/// knobs (so an `OSMEM` variable cannot change the outcome), and return its report.
fn run(test: &'static str, rules: &[Inject], body: impl FnOnce(&mut Out)) -> Fields {
    let child = move |rep: &mut Report| {
        osmem::configure(Config::new());
        let mut o = Out::new();
        body(&mut o);
        o.send(rep)
    };
    let (exit, buf) = if rules.is_empty() {
        in_child_report(child)
    } else {
        let prog = build_filter(rules); // allocates: parent only
        in_child_filtered(&prog, child)
    };
    finished(test, exit, &buf)
}

/// The child's report, once it has finished (exit 0).
fn finished(test: &'static str, exit: ChildExit, buf: &ReportBuf) -> Fields {
    assert_eq!(
        exit,
        ChildExit::Code(0),
        "{test}: child did not finish (report so far: {buf:?})"
    );
    Fields::decode(test, buf)
}

/// Like [`run`], but the filter is installed only after `setup` ran in the child, for
/// scenarios whose setup needs a syscall the filter refuses (e.g. `map`'s mprotect(RW)).
fn run_filter_after(
    test: &'static str,
    rules: &[Inject],
    setup: impl FnOnce(&mut Out),
    body: impl FnOnce(&mut Out),
) -> Fields {
    let prog = build_filter(rules); // allocates: parent only
    let (exit, buf) = in_child_report(|rep| {
        osmem::configure(Config::new());
        let mut o = Out::new();
        setup(&mut o);
        apply_filter_in_child(&prog);
        body(&mut o);
        o.send(rep)
    });
    finished(test, exit, &buf)
}

// ---------------------------------------------------------------------------------------
// Encodings of osmem's enums and the kernel's view (child side, allocation-free)

fn strategy(s: FaultStrategy) -> u64 {
    match s {
        FaultStrategy::Auto => 0,
        FaultStrategy::Guard => 1,
        FaultStrategy::Protect => 2,
        FaultStrategy::Go => 3,
        FaultStrategy::Remap => 4,
        other => unreachable!("a strategy these tests do not know: {other:?}"),
    }
}

fn state(s: Option<State>) -> u64 {
    match s {
        None => 0,
        Some(State::Reserved) => 1,
        Some(State::Prepared) => 2,
        Some(State::Ready) => 3,
        Some(State::Faulted) => 4,
    }
}
const S_RESERVED: u64 = 1;
const S_PREPARED: u64 = 2;
const S_READY: u64 = 3;
const S_FAULTED: u64 = 4;

/// `err_kind` 1 = Os (with op/call/errno/changed), 2 = WrongState, 3 = Unsupported, 4 = other.
fn put_err(o: &mut Out, e: Error) {
    match e {
        Error::Os {
            op,
            call,
            errno,
            changed,
        } => {
            o.put("err_kind", 1);
            o.put("err_op", op_code(op));
            o.put("err_call", call_code(call));
            o.put("err_errno", errno.0 as u64);
            o.flag("err_changed", changed);
        }
        Error::WrongState { .. } => o.put("err_kind", 2),
        Error::Unsupported { .. } => o.put("err_kind", 3),
        _ => o.put("err_kind", 4),
    }
}

/// The kernel's view of `[addr, addr+len)`, measured BEFORE anything reads the range (a read
/// maps the zero page, which mincore counts): resident pages (mincore), and the smaps entry
/// of its VMA. By the slot layout below an RW slot's VMA is exactly the slot (`_vma_exact`
/// checks it), so its Rss/LazyFree are the slot's and nobody else's. A PROT_NONE slot merges
/// with the Reserved gaps around it (same flags), so there `_vma_covers` is what holds; the
/// gaps were never touched, so the merged VMA's Rss is still the slot's.
fn view(o: &mut Out, tag: &str, addr: usize, len: usize) {
    let mut buf = [0u8; 32];
    o.put(
        cat(&mut buf, tag, "_resident"),
        resident_pages(addr, len) as u64,
    );
    let (rss, lazy, exact, covers) = match smaps_at(addr) {
        Some(e) => (
            e.rss_kb,
            e.lazy_free_kb,
            e.vma.start == addr && e.vma.end == addr + len,
            e.vma.start <= addr && e.vma.end >= addr + len,
        ),
        None => (0xffff, 0xffff, false, false),
    };
    o.put(cat(&mut buf, tag, "_rss_kb"), rss);
    o.put(cat(&mut buf, tag, "_lazy_kb"), lazy);
    o.flag(cat(&mut buf, tag, "_vma_exact"), exact);
    o.flag(cat(&mut buf, tag, "_vma_covers"), covers);
    o.put(cat(&mut buf, tag, "_perms"), perms_code(addr));
}

/// `view` plus "reads as zero" (only for RW ranges; reading last, see `view`).
fn view_zero(o: &mut Out, tag: &str, addr: usize, len: usize) {
    view(o, tag, addr, len);
    let mut buf = [0u8; 32];
    // SAFETY: callers pass a range that is mapped read-write.
    o.flag(cat(&mut buf, tag, "_zero"), unsafe { is_zero(addr, len) });
}

/// `tag + suffix` in a stack buffer: field names without allocating.
fn cat<'a>(buf: &'a mut [u8; 32], tag: &str, suffix: &str) -> &'a str {
    let (t, s) = (tag.as_bytes(), suffix.as_bytes());
    buf[..t.len()].copy_from_slice(t);
    buf[t.len()..t.len() + s.len()].copy_from_slice(s);
    core::str::from_utf8(&buf[..t.len() + s.len()]).unwrap_or("?")
}

impl Fields {
    /// The expectations of `view_zero` for a range whose memory the kernel has dropped.
    fn expect_released(&self, tag: &str) {
        let names = ["_resident", "_rss_kb", "_lazy_kb", "_vma_exact", "_zero"]
            .map(|x| format!("{tag}{x}"));
        let v: Vec<(&str, u64)> = names
            .iter()
            .map(String::as_str)
            .zip([0, 0, 0, 1, 1])
            .collect();
        self.expect(&v);
    }
}

/// `is_err`, and for an error what `put_err` reports.
fn put_result<T>(o: &mut Out, r: Result<T, Error>) {
    o.flag("is_err", r.is_err());
    if let Err(e) = r {
        put_err(o, e);
    }
}

/// What `put_result` reports for `Error::Os { op, call, errno, changed: false }`.
fn os_error(op: Op, call: Syscall, errno: i32) -> [(&'static str, u64); 6] {
    [
        ("is_err", 1),
        ("err_kind", 1),
        ("err_op", op_code(op)),
        ("err_call", call_code(call)),
        ("err_errno", errno as u64),
        ("err_changed", 0),
    ]
}

/// The errno of a raw call that returned `rc` (0 if it succeeded).
fn errno_of(rc: i32) -> u64 {
    if rc == 0 {
        0
    } else {
        osmem_testkit::errno() as u64
    }
}

/// `(stats before, f(), stats after)`.
fn measured<T>(f: impl FnOnce() -> T) -> (Stats, T, Stats) {
    let a = osmem::stats();
    let r = f();
    (a, r, osmem::stats())
}

/// Slots `0..n` made Ready with `byte` ("setup"), then a measured `unused` of slot 0 (`advice`
/// `None`: the default), its link reported as "how0" and the kernel's view as "s0_*".
fn unused_slot0(
    o: &mut Out,
    s: &Slots,
    n: usize,
    byte: u8,
    advice: Option<UnusedAdvice>,
) -> (Stats, Result<Unused, Error>, Stats) {
    o.flag("setup", (0..n).all(|i| s.ready(i, byte)));
    let (a, u, b) = measured(|| unsafe {
        match advice {
            None => s.r.unused(s.off(0), slot_len()),
            Some(adv) => s.r.unused_with(s.off(0), slot_len(), adv),
        }
    });
    o.put("how0", u.map_or(0, |u| unused_code(u.how)));
    view_zero(o, "s0", s.addr(0), slot_len());
    (a, u, b)
}

// ---------------------------------------------------------------------------------------
// Injections several scenarios share

const fn madv(advice: i32, errno: i32) -> Inject {
    Inject::Madvise { advice, errno }
}

/// `mprotect(.., prot)` fails with `errno`.
const fn mprotect_to(prot: i32, errno: i32) -> Inject {
    Inject::SyscallArg {
        nr: libc::SYS_mprotect,
        arg: 2,
        value: prot as u32,
        errno,
    }
}

const MMAP_ENOMEM: Inject = Inject::Syscall {
    nr: libc::SYS_mmap,
    errno: libc::ENOMEM,
};

const MPROTECT_RW_ENOMEM: Inject = mprotect_to(libc::PROT_READ | libc::PROT_WRITE, libc::ENOMEM);

/// Neither way back to RW works: mprotect(RW), nor the mmap(RW, MAP_FIXED) fallback.
const NO_WAY_TO_RW: [Inject; 2] = [MPROTECT_RW_ENOMEM, MMAP_ENOMEM];

// ---------------------------------------------------------------------------------------
// Slot layout

// `common::Slots`: made in the PARENT (`Slots::new`), so the child inherits the reservation
// even when its filter refuses mmap; the parent never touches the slots, so every page the
// child sees there is the child's own.

fn slot_kb() -> u64 {
    (slot_len() / 1024) as u64
}

macro_rules! delta {
    ($o:expr, $a:expr, $b:expr, $($field:ident),+) => {
        $( $o.put(concat!("d_", stringify!($field)), $b.$field.wrapping_sub($a.$field)); )+
    };
}

// ---------------------------------------------------------------------------------------
// 1. The advice fallbacks of Go's sysUnused under real failure: MADV_FREE refused (EINVAL),
//    then MADV_DONTNEED missing (ENOSYS), so the chain ends on the remap

#[test]
fn seed2_free_einval_dontneed_enosys() {
    let s = Slots::new(6);
    let f = run(
        "seed2",
        &[
            madv(MADV_FREE, libc::EINVAL),
            madv(MADV_DONTNEED, libc::ENOSYS),
        ],
        |o| {
            osmem::configure(Config::new().unused(UnusedAdvice::Free));
            o.flag("setup", (0..6).all(|i| s.ready(i, 0xA5)));
            view(o, "before", s.addr(0), slot_len());
            let (a, u, b) = measured(|| unsafe { s.r.unused(s.off(0), slot_len()) });
            match u {
                Ok(u) => {
                    o.put("how", unused_code(u.how));
                    o.flag("zeroed", u.zeroed);
                }
                Err(e) => put_err(o, e),
            }
            view_zero(o, "first", s.addr(0), slot_len());
            o.put("state", state(s.r.state(s.off(0))));
            delta!(
                o,
                a,
                b,
                downgrade_free,
                downgrade_madvise,
                downgrade_dontneed,
                einval_probes,
                madvise_calls,
                mmap_calls,
                fallback_unused_free,
                fallback_unused_remap,
                unused_ops
            );
            o.put("selected_unused", unused_code(osmem::selected().unused));

            // Five more calls on other slots: each must be released by the remap alone.
            let (mut remap_zeroed, mut gone, mut one_mmap, mut madv) = (0, 0, 0, 0);
            for i in 1..6 {
                let (x, u, y) = measured(|| unsafe { s.r.unused(s.off(i), slot_len()) });
                if matches!(u, Ok(u) if u.how == UnusedHow::Remap && u.zeroed) {
                    remap_zeroed += 1;
                }
                let addr = s.addr(i);
                let res = resident_pages(addr, slot_len());
                let e = smaps_at(addr);
                let exact =
                    e.is_some_and(|e| e.vma.start == addr && e.vma.end == addr + slot_len());
                let rss = e.map_or(u64::MAX, |e| e.rss_kb);
                // SAFETY: the slot is Prepared and RW.
                if res == 0 && rss == 0 && exact && unsafe { is_zero(addr, slot_len()) } {
                    gone += 1;
                }
                if y.mmap_calls - x.mmap_calls == 1 {
                    one_mmap += 1;
                }
                madv += y.madvise_calls - x.madvise_calls;
            }
            let c = osmem::stats();
            o.put("later_remap_zeroed", remap_zeroed);
            o.put("later_released", gone);
            o.put("later_one_mmap_each", one_mmap);
            o.put("later_madvise_calls", madv);
            o.put("total_downgrade_free", c.downgrade_free - a.downgrade_free);
            o.put(
                "total_downgrade_madvise",
                c.downgrade_madvise - a.downgrade_madvise,
            );
            o.put("total_einval_probes", c.einval_probes - a.einval_probes);
            o.put(
                "later_fallback_unused_free",
                c.fallback_unused_free - b.fallback_unused_free,
            );
        },
    );
    f.expect(&[
        ("setup", 1),
        // Proves the release below is a change: the slot was resident and all of its VMA.
        ("before_resident", SLOT_PAGES as u64),
        ("before_rss_kb", slot_kb()),
        ("before_vma_exact", 1),
        ("how", U_REMAP),
        ("zeroed", 1),
        ("state", S_PREPARED),
        // FREE: EINVAL, confirmed "unknown" by one zero-length probe → sticky.
        ("d_einval_probes", 2),
        ("d_downgrade_free", 1),
        // DONTNEED: ENOSYS, but a zero-length MADV_NORMAL works: madvise is there and only
        // this advice is refused → sticky for DONTNEED alone.
        ("d_downgrade_madvise", 0),
        ("d_downgrade_dontneed", 1),
        // FREE, its probe, DONTNEED, the NORMAL probe; then exactly one mmap: the remap.
        ("d_madvise_calls", 4),
        ("d_mmap_calls", 1),
        ("d_fallback_unused_free", 1),
        ("d_fallback_unused_remap", 1),
        ("d_unused_ops", 1),
        ("selected_unused", U_REMAP),
        ("later_remap_zeroed", 5),
        ("later_released", 5),
        ("later_one_mmap_each", 5),
        // No retry of the failed advice: not one madvise syscall after the downgrades.
        ("later_madvise_calls", 0),
        ("total_downgrade_free", 1),
        ("total_downgrade_madvise", 0),
        ("total_einval_probes", 2),
        // The chain still passes the (skipped) FREE link and counts it per call.
        ("later_fallback_unused_free", 5),
    ]);
    f.expect_released("first");
}

// ---------------------------------------------------------------------------------------
// 2. DONTNEED refused by policy: sticky for DONTNEED only

#[test]
fn dontneed_eperm_is_sticky_for_dontneed_only() {
    let s = Slots::new(3);
    let f = run("dontneed_eperm", &[madv(MADV_DONTNEED, libc::EPERM)], |o| {
        let (a, _, b) = unused_slot0(o, &s, 3, 0x11, None);
        delta!(
            o,
            a,
            b,
            downgrade_dontneed,
            downgrade_madvise,
            madvise_calls,
            mmap_calls
        );

        // FREE is a different advice: still used.
        let u = unsafe { s.r.unused_with(s.off(1), slot_len(), UnusedAdvice::Free) };
        let c = osmem::stats();
        o.put("how1", u.map_or(0, |u| unused_code(u.how)));
        o.flag("zeroed1", u.is_ok_and(|u| u.zeroed));
        view(o, "s1", s.addr(1), slot_len());
        o.put("free_madvise_calls", c.madvise_calls - b.madvise_calls);
        o.put("free_madv_free", c.madv_free - b.madv_free);

        // DONTNEED is not retried.
        let u = unsafe { s.r.unused(s.off(2), slot_len()) };
        let d = osmem::stats();
        o.put("how2", u.map_or(0, |u| unused_code(u.how)));
        o.put("later_madvise_calls", d.madvise_calls - c.madvise_calls);
        o.put("later_mmap_calls", d.mmap_calls - c.mmap_calls);
        o.put(
            "total_downgrade_dontneed",
            d.downgrade_dontneed - a.downgrade_dontneed,
        );
        o.put("selected_unused", unused_code(osmem::selected().unused));
    });
    f.expect(&[
        ("setup", 1),
        ("how0", U_REMAP),
        ("d_downgrade_dontneed", 1),
        ("d_downgrade_madvise", 0),
        ("d_madvise_calls", 1),
        ("d_mmap_calls", 1),
        ("how1", U_FREE),
        ("zeroed1", 0),
        // MADV_FREE keeps RSS (pages go only under memory pressure): every page still resident, all of it LazyFree.
        ("s1_resident", SLOT_PAGES as u64),
        ("s1_rss_kb", slot_kb()),
        ("s1_lazy_kb", slot_kb()),
        ("s1_vma_exact", 1),
        ("free_madvise_calls", 1),
        ("free_madv_free", 1),
        ("how2", U_REMAP),
        ("later_madvise_calls", 0),
        ("later_mmap_calls", 1),
        ("total_downgrade_dontneed", 1),
        ("selected_unused", U_REMAP),
    ]);
    f.expect_released("s0");
}

// ---------------------------------------------------------------------------------------
// 3. FREE → EINVAL from seccomp: the zero-length probe is filtered too → sticky

#[test]
fn free_einval_from_seccomp_is_sticky() {
    let s = Slots::new(2);
    let f = run(
        "free_einval_seccomp",
        &[madv(MADV_FREE, libc::EINVAL)],
        |o| {
            // What the probe sees: seccomp compares only the advice, so the zero-length call
            // gets EINVAL as well ("unknown advice"), unlike the kernel's own per-range EINVAL.
            let p = unsafe { libc::madvise(s.addr(0) as *mut _, 0, MADV_FREE) };
            o.put("raw_probe_errno", errno_of(p));
            let (a, u, b) = unused_slot0(o, &s, 2, 0x22, Some(UnusedAdvice::Free));
            o.flag("zeroed0", u.is_ok_and(|u| u.zeroed));
            delta!(
                o,
                a,
                b,
                einval_probes,
                downgrade_free,
                downgrade_dontneed,
                downgrade_madvise,
                fallback_unused_free,
                madvise_calls
            );

            let u = unsafe { s.r.unused_with(s.off(1), slot_len(), UnusedAdvice::Free) };
            let c = osmem::stats();
            o.put("how1", u.map_or(0, |u| unused_code(u.how)));
            o.put("later_madv_free", c.madv_free - b.madv_free);
            o.put("later_madvise_calls", c.madvise_calls - b.madvise_calls);
            osmem::configure(Config::new().unused(UnusedAdvice::Free));
            o.put("selected_unused", unused_code(osmem::selected().unused));
        },
    );
    f.expect(&[
        ("raw_probe_errno", libc::EINVAL as u64),
        ("setup", 1),
        ("how0", U_DONTNEED),
        ("zeroed0", 1),
        ("d_einval_probes", 1),
        ("d_downgrade_free", 1),
        ("d_downgrade_dontneed", 0),
        ("d_downgrade_madvise", 0),
        ("d_fallback_unused_free", 1),
        ("d_madvise_calls", 3),
        ("how1", U_DONTNEED),
        ("later_madv_free", 0),
        ("later_madvise_calls", 1),
        ("selected_unused", U_DONTNEED),
    ]);
    f.expect_released("s0");
}

// ---------------------------------------------------------------------------------------
// 4. The kernel's own per-range EINVAL (mlocked memory): per call, never sticky

#[test]
fn mlocked_unused_free_per_call_einval() {
    let s = Slots::new(3);
    let f = run("mlocked_unused", &[], |o| {
        o.flag("setup", (0..3).all(|i| s.ready(i, 0x33)));
        // What the kernel itself does on a locked range (slot 2, not used by osmem below).
        let a2 = s.addr(2) as *mut libc::c_void;
        o.put("lock2", unsafe { libc::mlock(a2, slot_len()) } as u64);
        o.put(
            "raw_free_errno",
            errno_of(unsafe { libc::madvise(a2, slot_len(), MADV_FREE) }),
        );
        o.put(
            "raw_dontneed_errno",
            errno_of(unsafe { libc::madvise(a2, slot_len(), MADV_DONTNEED) }),
        );
        o.put(
            "raw_free_probe_errno",
            errno_of(unsafe { libc::madvise(a2, 0, MADV_FREE) }),
        );
        o.put(
            "raw_dontneed_probe_errno",
            errno_of(unsafe { libc::madvise(a2, 0, MADV_DONTNEED) }),
        );
        o.put(
            "raw2_resident",
            resident_pages(s.addr(2), slot_len()) as u64,
        );
        unsafe { libc::munlock(a2, slot_len()) };

        let a0 = s.addr(0) as *mut libc::c_void;
        o.put("lock0", unsafe { libc::mlock(a0, slot_len()) } as u64);
        o.flag(
            "locked_before",
            smaps_at(s.addr(0)).is_some_and(|e| e.vm_flags.contains("lo")),
        );
        let (a, u, b) =
            measured(|| unsafe { s.r.unused_with(s.off(0), slot_len(), UnusedAdvice::Free) });
        o.put("how0", u.map_or(0, |u| unused_code(u.how)));
        o.flag("zeroed0", u.is_ok_and(|u| u.zeroed));
        o.flag(
            "locked_after",
            smaps_at(s.addr(0)).is_some_and(|e| e.vm_flags.contains("lo")),
        );
        view_zero(o, "s0", s.addr(0), slot_len());
        delta!(
            o,
            a,
            b,
            einval_probes,
            downgrade_free,
            downgrade_dontneed,
            downgrade_madvise,
            fallback_unused_free,
            fallback_unused_remap,
            fallback_locked,
            madv_dontneed_locked,
            madvise_calls,
            mmap_calls
        );
        unsafe { libc::munlock(a0, slot_len()) };

        // Unlocked memory: FREE works again, nothing was made sticky.
        let u = unsafe { s.r.unused_with(s.off(1), slot_len(), UnusedAdvice::Free) };
        o.put("how1", u.map_or(0, |u| unused_code(u.how)));
        o.put("selected_unused_free", {
            osmem::configure(Config::new().unused(UnusedAdvice::Free));
            unused_code(osmem::selected().unused)
        });
    });
    f.expect(&[
        ("setup", 1),
        ("lock2", 0),
        // Measured on Linux 6.18: both FREE and DONTNEED refuse VM_LOCKED ranges with EINVAL
        // (madvise_dontneed_free_valid_vma), while the zero-length probes succeed.
        ("raw_free_errno", libc::EINVAL as u64),
        ("raw_dontneed_errno", libc::EINVAL as u64),
        ("raw_free_probe_errno", 0),
        ("raw_dontneed_probe_errno", 0),
        ("raw2_resident", SLOT_PAGES as u64),
        ("lock0", 0),
        ("locked_before", 1),
        // Hence: FREE fails, probe "known" → this call only; DONTNEED fails, probe "known":
        // the range is locked → MADV_DONTNEED_LOCKED releases it and keeps the lock (no
        // remap, which would drop the lock or, under mlockall(MCL_FUTURE), fault it back in).
        ("how0", U_DONTNEED_LOCKED),
        ("zeroed0", 1),
        ("d_einval_probes", 2),
        ("d_downgrade_free", 0),
        ("d_downgrade_dontneed", 0),
        ("d_downgrade_madvise", 0),
        ("d_fallback_unused_free", 1),
        ("d_fallback_unused_remap", 0),
        ("d_fallback_locked", 1),
        ("d_madv_dontneed_locked", 1),
        ("d_madvise_calls", 5),
        ("d_mmap_calls", 0),
        ("locked_after", 1),
        ("how1", U_FREE),
        ("selected_unused_free", U_FREE),
    ]);
    f.expect_released("s0");
}

/// 4b. A kernel without MADV_DONTNEED_LOCKED (before 5.18; emulated: seccomp answers EINVAL for
/// advice 24 at every length): nothing can release a locked range and keep the lock, so
/// `unused` fails with `Error::Locked` and changes nothing, instead of remapping.
#[test]
fn mlocked_unused_without_dontneed_locked_changes_nothing() {
    let s = Slots::new(2);
    let f = run(
        "mlocked_no_dontneed_locked",
        &[madv(MADV_DONTNEED_LOCKED, libc::EINVAL)],
        |o| {
            o.flag("setup", (0..2).all(|i| s.ready(i, 0x3D)));
            let a0 = s.addr(0) as *mut libc::c_void;
            o.put("lock0", unsafe { libc::mlock(a0, slot_len()) } as u64);
            let (a, u, b) = measured(|| unsafe { s.r.unused(s.off(0), slot_len()) });
            o.flag(
                "locked_error",
                matches!(u, Err(Error::Locked { op: Op::Unused, offset, len })
                    if offset == s.off(0) && len == slot_len()),
            );
            o.flag("not_changed", u.is_err_and(|e| !e.changed()));
            o.flag("data_intact", all_bytes(s.addr(0), slot_len(), 0x3D));
            view(o, "s0", s.addr(0), slot_len());
            o.put("state", state(s.r.state(s.off(0))));
            o.flag("ready_bytes_same", a.ready_bytes == b.ready_bytes);
            o.flag(
                "locked_after",
                smaps_at(s.addr(0)).is_some_and(|e| e.vm_flags.contains("lo")),
            );
            delta!(o, a, b, downgrade_dontneed_locked, mmap_calls, unused_ops);
            unsafe { libc::munlock(a0, slot_len()) };
            // An unlocked range is released as usual.
            let u = unsafe { s.r.unused(s.off(1), slot_len()) };
            o.put("how1", u.map_or(0, |u| unused_code(u.how)));
        },
    );
    f.expect(&[
        ("setup", 1),
        ("lock0", 0),
        ("locked_error", 1),
        ("not_changed", 1),
        ("data_intact", 1),
        ("s0_resident", SLOT_PAGES as u64),
        ("s0_perms", P_RW),
        ("state", S_READY),
        ("ready_bytes_same", 1),
        ("locked_after", 1),
        // The advice is unknown here (the zero-length probe gets EINVAL too): sticky.
        ("d_downgrade_dontneed_locked", 1),
        ("d_mmap_calls", 0),
        ("d_unused_ops", 0),
        ("how1", U_DONTNEED),
    ]);
}

// ---------------------------------------------------------------------------------------
// 5, 6. Transient errors: bounded retries, remap, no downgrade

fn transient(test: &'static str, errno: i32) {
    let s = Slots::new(2);
    let f = run(test, &[madv(MADV_DONTNEED, errno)], |o| {
        let (a, _, b) = unused_slot0(o, &s, 2, 0x44, None);
        delta!(
            o,
            a,
            b,
            transient_retries,
            madv_dontneed,
            madvise_calls,
            mmap_calls,
            downgrade_dontneed,
            downgrade_madvise,
            fallback_unused_remap
        );
        let u = unsafe { s.r.unused(s.off(1), slot_len()) };
        let c = osmem::stats();
        o.put("how1", u.map_or(0, |u| unused_code(u.how)));
        view_zero(o, "s1", s.addr(1), slot_len());
        o.put("again_madv_dontneed", c.madv_dontneed - b.madv_dontneed);
        o.put(
            "again_transient_retries",
            c.transient_retries - b.transient_retries,
        );
        o.put("selected_unused", unused_code(osmem::selected().unused));
    });
    f.expect(&[
        ("setup", 1),
        ("how0", U_REMAP),
        // advise.rs TRANSIENT_RETRIES = 4: the first try plus 4 retries.
        ("d_transient_retries", 4),
        ("d_madv_dontneed", 5),
        ("d_madvise_calls", 5),
        ("d_mmap_calls", 1),
        ("d_downgrade_dontneed", 0),
        ("d_downgrade_madvise", 0),
        ("d_fallback_unused_remap", 1),
        ("how1", U_REMAP),
        // Not sticky: the next call tries DONTNEED again, just as boundedly.
        ("again_madv_dontneed", 5),
        ("again_transient_retries", 4),
        ("selected_unused", U_DONTNEED),
    ]);
    f.expect_released("s0");
    f.expect_released("s1");
}

#[test]
fn dontneed_eagain_retried_then_remap() {
    transient("dontneed_eagain", libc::EAGAIN);
}

#[test]
fn dontneed_eintr_retried_then_remap() {
    transient("dontneed_eintr", libc::EINTR);
}

// ---------------------------------------------------------------------------------------
// 7. Every link of unused fails: a typed error, and nothing lost

#[test]
fn unused_all_links_fail_loses_nothing() {
    let s = Slots::new(1);
    let f = run(
        "unused_all_fail",
        &[
            Inject::AnyMadvise {
                errno: libc::ENOSYS,
            },
            MMAP_ENOMEM,
        ],
        |o| {
            o.flag("setup", s.ready(0, 0x5A));
            let (a, u, b) = measured(|| unsafe { s.r.unused(s.off(0), slot_len()) });
            put_result(o, u);
            o.flag("data_intact", all_bytes(s.addr(0), slot_len(), 0x5A));
            view(o, "s0", s.addr(0), slot_len());
            o.put("state", state(s.r.state(s.off(0))));
            o.flag("ready_bytes_same", a.ready_bytes == b.ready_bytes);
            o.flag("prepared_bytes_same", a.prepared_bytes == b.prepared_bytes);
            o.put("region_ready_kb", s.r.bytes_in(State::Ready) / 1024);
            delta!(
                o,
                a,
                b,
                unused_ops,
                downgrade_madvise,
                madvise_calls,
                mmap_calls,
                mmap_errors
            );
            // Once more: madvise is known absent now, so only the remap is tried.
            let u = unsafe { s.r.unused(s.off(0), slot_len()) };
            let c = osmem::stats();
            o.flag(
                "again_same_error",
                u.is_err_and(|e| {
                    matches!(
                        e,
                        Error::Os {
                            op: Op::Unused,
                            call: Syscall::Mmap,
                            changed: false,
                            ..
                        }
                    ) && e.errno() == Some(libc::ENOMEM)
                }),
            );
            o.put("again_madvise_calls", c.madvise_calls - b.madvise_calls);
            o.flag("again_data_intact", all_bytes(s.addr(0), slot_len(), 0x5A));
        },
    );
    f.expect(&os_error(Op::Unused, Syscall::Mmap, libc::ENOMEM));
    f.expect(&[
        ("setup", 1),
        // The kernel still holds every page with its data, in the same RW VMA.
        ("data_intact", 1),
        ("s0_resident", SLOT_PAGES as u64),
        ("s0_rss_kb", slot_kb()),
        ("s0_vma_exact", 1),
        ("s0_perms", P_RW),
        ("state", S_READY),
        ("ready_bytes_same", 1),
        ("prepared_bytes_same", 1),
        ("region_ready_kb", slot_kb()),
        ("d_unused_ops", 0),
        ("d_downgrade_madvise", 1),
        // DONTNEED, then the zero-length MADV_NORMAL that confirms madvise itself is gone.
        ("d_madvise_calls", 2),
        ("d_mmap_calls", 1),
        ("d_mmap_errors", 1),
        ("again_same_error", 1),
        ("again_madvise_calls", 0),
        ("again_data_intact", 1),
    ]);
}

// ---------------------------------------------------------------------------------------
// 7b. The remap link fails after the kernel cleared the old mapping: a hole

/// `unused(Remap)` whose `mmap(RW, MAP_FIXED)` fails with ENOMEM after unmapping its range
/// (a trap: the handler unmaps, then fails the call, as the kernel does when it fails past
/// clearing the old page tables). With `retake`, osmem's `PROT_NONE` `MAP_FIXED_NOREPLACE`
/// that takes the hole back goes through; without, it fails too (ENOMEM) and the hole stays.
fn remap_hole(test: &'static str, retake: bool, batch: bool) -> Fields {
    let s = Slots::new(1);
    let fixed = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u32;
    let noreplace =
        (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE)
            as u32;
    // The remap carries MAP_NORESERVE if the region was reserved with it: trap both.
    let mut rules = vec![
        Trap::new(libc::SYS_mmap)
            .when(3, fixed)
            .errno(libc::ENOMEM)
            .unmap_on_fail(),
        Trap::new(libc::SYS_mmap)
            .when(3, fixed | libc::MAP_NORESERVE as u32)
            .errno(libc::ENOMEM)
            .unmap_on_fail(),
    ];
    if !retake {
        rules.push(
            Trap::new(libc::SYS_mmap)
                .when(3, noreplace)
                .errno(libc::ENOMEM),
        );
    }
    let filter = build_trap_filter(&rules); // allocates: parent only
    let (exit, buf) = in_child_trapped(&filter, |rep| {
        osmem::configure(Config::new());
        let mut o = Out::new();
        o.flag("setup", s.ready(0, 0x3c));
        let (a, u, b) = measured(|| {
            if batch {
                // The per-range chain of a batch (Remap: no batched call).
                let mut b: osmem::Batch<'_, 4> =
                    osmem::Batch::new(osmem::BatchKind::Unused(UnusedAdvice::Remap));
                unsafe { b.push(&s.r, s.off(0), slot_len()) }.unwrap();
                let rep = b.finish();
                match rep.error {
                    Some(e) if rep.failed == 1 && rep.ranges == 0 => Err(e),
                    _ => Ok(()),
                }
            } else {
                unsafe { s.r.unused_with(s.off(0), slot_len(), UnusedAdvice::Remap) }.map(|_| ())
            }
        });
        put_result(&mut o, u);
        o.put("state", state(s.r.state(s.off(0))));
        o.put("s0_perms", perms_code(s.addr(0)));
        o.put("touch", touch_code(s.addr(0), false));
        o.flag(
            "ready_down",
            b.ready_bytes + slot_len() as u64 == a.ready_bytes,
        );
        o.flag(
            "reserved_up",
            a.reserved_bytes + slot_len() as u64 == b.reserved_bytes,
        );
        delta!(o, a, b, remap_holes, remap_holes_left, unused_ops);
        // Usable again through map + used, data round-trips.
        let m = s.r.map(s.off(0), slot_len()).is_ok() && s.r.used(s.off(0), slot_len()).is_ok();
        o.flag("map_used", m);
        if m {
            unsafe { core::ptr::write_bytes(s.addr(0) as *mut u8, 0x3d, slot_len()) };
            o.flag("roundtrip", all_bytes(s.addr(0), slot_len(), 0x3d));
        }
        o.send(rep)
    });
    finished(test, exit, &buf)
}

/// What every remap-hole case shows: the error says the range changed, the range is
/// Reserved and accounted there, the hole is counted, and map + used bring it back.
fn expect_hole(f: &Fields, retaken: bool) {
    f.expect(&[
        ("setup", 1),
        ("is_err", 1),
        ("err_call", call_code(Syscall::Mmap)),
        ("err_errno", libc::ENOMEM as u64),
        // The state changed: the range is Reserved now.
        ("err_changed", 1),
        ("state", S_RESERVED),
        ("ready_down", 1),
        ("reserved_up", 1),
        ("d_remap_holes", 1),
        ("d_remap_holes_left", u64::from(!retaken)),
        // Without the hole taken back, map's mprotect(RW) fails on it and its MAP_FIXED
        // remap maps it (the trap has spent its one failure).
        ("map_used", 1),
        ("roundtrip", 1),
    ]);
    // Taken back, it is PROT_NONE (ACCERR); left, nothing is mapped there (MAPERR).
    f.expect(&if retaken {
        [("s0_perms", P_NONE), ("touch", T_ACCERR)]
    } else {
        [("s0_perms", P_UNMAPPED), ("touch", T_MAPERR)]
    });
}

#[test]
fn remap_hole_is_taken_back_and_reserved() {
    let f = remap_hole("remap_hole_retaken", true, false);
    expect_hole(&f, true);
    f.expect(&[("err_op", op_code(Op::Unused)), ("d_unused_ops", 0)]);
}

#[test]
fn remap_hole_in_a_batch_is_settled_reserved() {
    expect_hole(&remap_hole("remap_hole_batch", true, true), true);
}

#[test]
fn remap_hole_that_cannot_be_taken_back_is_counted() {
    expect_hole(&remap_hole("remap_hole_left", false, false), false);
}

// ---------------------------------------------------------------------------------------
// 8. Guard markers refused: the fault falls to DONTNEED + PROT_NONE

#[test]
fn guard_install_einval_falls_to_protect() {
    let s = Slots::new(2);
    assert!(
        osmem::probe().advice.guard_install,
        "this kernel has guard markers (6.13+)"
    );
    let f = run(
        "guard_einval",
        &[madv(MADV_GUARD_INSTALL, libc::EINVAL)],
        |o| {
            o.flag("setup", (0..2).all(|i| s.ready(i, 0x66)));
            let (a, r, b) =
                measured(|| unsafe { s.r.fault_with(s.off(0), slot_len(), FaultStrategy::Guard) });
            o.put("how0", r.map_or(0, |f| fault_code(f.how)));
            o.flag("traps0", r.is_ok_and(|f| f.traps()));
            view(o, "s0", s.addr(0), slot_len());
            o.put("touch0", touch_code(s.addr(0), false));
            o.put("state0", state(s.r.state(s.off(0))));
            delta!(
                o,
                a,
                b,
                fallback_fault_guard,
                downgrade_guard,
                einval_probes,
                fault_ops
            );
            o.put("selected_fault", strategy(osmem::selected().fault));
            // The default (Auto) now resolves to Protect and never tries guards again.
            let r = unsafe { s.r.fault(s.off(1), slot_len()) };
            let c = osmem::stats();
            o.put("how1", r.map_or(0, |f| fault_code(f.how)));
            o.put(
                "later_guard_install",
                c.madv_guard_install - b.madv_guard_install,
            );
            o.put("touch1", touch_code(s.addr(1), true));
            // map makes the PROT_NONE range usable and zero-filled.
            o.flag(
                "map",
                s.r.map(s.off(0), slot_len()).is_ok() && s.r.used(s.off(0), slot_len()).is_ok(),
            );
            o.put("perms_after_map", perms_code(s.addr(0)));
            o.flag("zero_after_map", unsafe { is_zero(s.addr(0), slot_len()) });
            o.put("touch_after_map", touch_code(s.addr(0), true));
        },
    );
    f.expect(&[
        ("setup", 1),
        ("how0", F_PROTECT),
        ("traps0", 1),
        ("s0_resident", 0),
        ("s0_rss_kb", 0),
        ("s0_vma_covers", 1),
        ("s0_perms", P_NONE),
        // PROT_NONE, not a guard marker (which would give SEGV_MAPERR).
        ("touch0", T_ACCERR),
        ("state0", S_FAULTED),
        ("d_fallback_fault_guard", 1),
        ("d_downgrade_guard", 1),
        ("d_einval_probes", 1),
        ("d_fault_ops", 1),
        ("selected_fault", strategy(FaultStrategy::Protect)),
        ("how1", F_PROTECT),
        ("later_guard_install", 0),
        ("touch1", T_ACCERR),
        ("map", 1),
        ("perms_after_map", P_RW),
        ("zero_after_map", 1),
        ("touch_after_map", T_OK),
    ]);
}

// ---------------------------------------------------------------------------------------
// 9, 10. At the VMA limit (mprotect PROT_NONE → ENOMEM): released, reported as not trapping

fn fault_at_vma_limit(test: &'static str, strat: FaultStrategy) {
    let s = Slots::new(1);
    let f = run(
        test,
        // Guard markers refused as well: with them, the chain would make the range trap
        // anyway (osmem/tests/vma.rs checks that at the real limit).
        &[
            mprotect_to(libc::PROT_NONE, libc::ENOMEM),
            madv(MADV_GUARD_INSTALL, libc::EINVAL),
        ],
        |o| {
            o.flag("setup", s.ready(0, 0x77));
            let (a, r, b) = measured(|| unsafe { s.r.fault_with(s.off(0), slot_len(), strat) });
            o.put("how", r.map_or(0, |f| fault_code(f.how)));
            o.flag("traps", r.is_ok_and(|f| f.traps()));
            o.put("state", state(s.r.state(s.off(0))));
            // Touch before view_zero's read: the grandchild's access must simply succeed.
            o.put("touch", touch_code(s.addr(0), false));
            view_zero(o, "s0", s.addr(0), slot_len());
            delta!(
                o,
                a,
                b,
                fallback_fault_open,
                mprotect_errors,
                madv_dontneed,
                fault_ops
            );
            // The range is Prepared (released, accessible), as the kernel has it: map refuses
            // it before any syscall, used makes it Ready, and real data round-trips.
            let refused = matches!(
                s.r.map(s.off(0), slot_len()),
                Err(Error::WrongState {
                    found: State::Prepared,
                    ..
                })
            );
            let u = s.r.used(s.off(0), slot_len()).is_ok();
            let c = osmem::stats();
            o.flag("map_refused", refused);
            o.flag("used", u);
            o.put("map_mprotect_calls", c.mprotect_calls - b.mprotect_calls);
            unsafe { core::ptr::write_bytes(s.addr(0) as *mut u8, 0x78, slot_len()) };
            o.flag("roundtrip", all_bytes(s.addr(0), slot_len(), 0x78));
        },
    );
    f.expect_released("s0");
    f.expect(&[
        ("setup", 1),
        ("how", F_RELEASED_ONLY),
        ("traps", 0),
        ("state", S_PREPARED),
        ("touch", T_OK),
        ("s0_perms", P_RW),
        ("d_fallback_fault_open", 1),
        ("d_mprotect_errors", 1),
        ("d_madv_dontneed", 1),
        ("d_fault_ops", 1),
        ("map_refused", 1),
        ("used", 1),
        ("map_mprotect_calls", 0),
        ("roundtrip", 1),
    ]);
}

#[test]
fn protect_at_vma_limit_released_only() {
    fault_at_vma_limit("protect_enomem", FaultStrategy::Protect);
}

#[test]
fn go_at_vma_limit_released_only() {
    fault_at_vma_limit("go_enomem", FaultStrategy::Go);
}

// ---------------------------------------------------------------------------------------
// 11. fault(Remap) while mmap is refused: DONTNEED only

#[test]
fn remap_fault_mmap_enomem_released_only() {
    let s = Slots::new(1);
    let f = run(
        "remap_fault_enomem",
        &[MMAP_ENOMEM, madv(MADV_GUARD_INSTALL, libc::EINVAL)],
        |o| {
            o.flag("setup", s.ready(0, 0x88));
            let (a, r, b) =
                measured(|| unsafe { s.r.fault_with(s.off(0), slot_len(), FaultStrategy::Remap) });
            o.put("how", r.map_or(0, |f| fault_code(f.how)));
            o.flag("traps", r.is_ok_and(|f| f.traps()));
            o.put("touch", touch_code(s.addr(0), true));
            view_zero(o, "s0", s.addr(0), slot_len());
            delta!(o, a, b, fallback_fault_open, mmap_errors, madv_dontneed);
            o.put("state", state(s.r.state(s.off(0))));
            o.flag("used", s.r.used(s.off(0), slot_len()).is_ok());
        },
    );
    f.expect_released("s0");
    f.expect(&[
        ("setup", 1),
        ("how", F_RELEASED_ONLY),
        ("traps", 0),
        ("touch", T_OK),
        ("s0_perms", P_RW),
        ("d_fallback_fault_open", 1),
        ("d_mmap_errors", 1),
        ("d_madv_dontneed", 1),
        ("state", S_PREPARED),
        ("used", 1),
    ]);
}

// ---------------------------------------------------------------------------------------
// 12. fault(Protect) while DONTNEED is absent: remap PROT_NONE

#[test]
fn protect_dontneed_enosys_falls_to_remap() {
    let s = Slots::new(1);
    let f = run(
        "protect_dontneed_enosys",
        &[madv(MADV_DONTNEED, libc::ENOSYS)],
        |o| {
            o.flag("setup", s.ready(0, 0x99));
            let (a, r, b) = measured(|| unsafe {
                s.r.fault_with(s.off(0), slot_len(), FaultStrategy::Protect)
            });
            o.put("how", r.map_or(0, |f| fault_code(f.how)));
            o.flag("traps", r.is_ok_and(|f| f.traps()));
            view(o, "s0", s.addr(0), slot_len());
            o.put("touch", touch_code(s.addr(0), false));
            delta!(
                o,
                a,
                b,
                fallback_fault_remap,
                downgrade_madvise,
                downgrade_dontneed,
                mmap_calls,
                mprotect_calls
            );
            let m = s.r.map(s.off(0), slot_len()).is_ok() && s.r.used(s.off(0), slot_len()).is_ok();
            o.flag("map_used", m);
            o.flag(
                "zero_after_map",
                m && unsafe { is_zero(s.addr(0), slot_len()) },
            );
            o.put("touch_after_map", touch_code(s.addr(0), true));
        },
    );
    f.expect(&[
        ("setup", 1),
        ("how", F_REMAP),
        ("traps", 1),
        ("s0_resident", 0),
        ("s0_rss_kb", 0),
        ("s0_vma_covers", 1),
        ("s0_perms", P_NONE),
        ("touch", T_ACCERR),
        ("d_fallback_fault_remap", 1),
        ("d_downgrade_madvise", 0),
        ("d_downgrade_dontneed", 1),
        ("d_mmap_calls", 1),
        // Released by the remap alone: the mprotect link is never reached.
        ("d_mprotect_calls", 0),
        ("map_used", 1),
        ("zero_after_map", 1),
        ("touch_after_map", T_OK),
    ]);
}

// ---------------------------------------------------------------------------------------
// 13, 14. map under mprotect(RW) failure

#[test]
fn map_mprotect_enomem_falls_to_mmap() {
    let s = Slots::new(1);
    let f = run("map_mprotect_enomem", &[MPROTECT_RW_ENOMEM], |o| {
        o.put("perms_before", perms_code(s.addr(0)));
        let (a, m, b) = measured(|| s.r.map(s.off(0), slot_len()));
        o.flag("map_ok", m.is_ok());
        o.put("state", state(s.r.state(s.off(0))));
        delta!(
            o,
            a,
            b,
            fallback_map_remap,
            mprotect_errors,
            mmap_calls,
            map_ops
        );
        o.flag("used_ok", s.r.used(s.off(0), slot_len()).is_ok());
        unsafe { core::ptr::write_bytes(s.addr(0) as *mut u8, 0xAB, slot_len()) };
        view(o, "s0", s.addr(0), slot_len());
        o.flag("roundtrip", all_bytes(s.addr(0), slot_len(), 0xAB));
    });
    f.expect(&[
        ("perms_before", P_NONE),
        ("map_ok", 1),
        ("state", S_PREPARED),
        ("d_fallback_map_remap", 1),
        ("d_mprotect_errors", 1),
        ("d_mmap_calls", 1),
        ("d_map_ops", 1),
        ("used_ok", 1),
        ("s0_perms", P_RW),
        ("s0_vma_exact", 1),
        ("s0_resident", SLOT_PAGES as u64),
        ("s0_rss_kb", slot_kb()),
        ("roundtrip", 1),
    ]);
}

#[test]
fn map_all_links_fail_changes_nothing() {
    let s = Slots::new(1);
    let f = run("map_all_fail", &NO_WAY_TO_RW, |o| {
        let (a, m, b) = measured(|| s.r.map(s.off(0), slot_len()));
        put_result(o, m);
        o.put("state", state(s.r.state(s.off(0))));
        o.put("perms", perms_code(s.addr(0)));
        o.put("touch", touch_code(s.addr(0), false));
        o.flag("reserved_same", a.reserved_bytes == b.reserved_bytes);
        o.flag("prepared_same", a.prepared_bytes == b.prepared_bytes);
        delta!(o, a, b, map_ops);
    });
    f.expect(&os_error(Op::Map, Syscall::Mmap, libc::ENOMEM));
    f.expect(&[
        ("state", S_RESERVED),
        ("perms", P_NONE),
        ("touch", T_ACCERR),
        ("reserved_same", 1),
        ("prepared_same", 1),
        ("d_map_ops", 0),
    ]);
}

// ---------------------------------------------------------------------------------------
// 15. harddecommit when PROT_NONE is refused: released anyway, reported unprotected

#[test]
fn harddecommit_mprotect_eperm_still_released() {
    let s = Slots::new(1);
    let f = run(
        "harddecommit_eperm",
        &[mprotect_to(libc::PROT_NONE, libc::EPERM)],
        |o| {
            osmem::configure(Config::new().harddecommit(true));
            o.flag("setup", s.ready(0, 0xCD));
            let (a, u, b) = measured(|| unsafe { s.r.unused(s.off(0), slot_len()) });
            o.put("how", u.map_or(0, |u| unused_code(u.how)));
            o.flag("protected", u.is_ok_and(|u| u.protected));
            o.flag("zeroed", u.is_ok_and(|u| u.zeroed));
            o.put("state", state(s.r.state(s.off(0))));
            view_zero(o, "s0", s.addr(0), slot_len());
            delta!(
                o,
                a,
                b,
                fallback_harddecommit_open,
                mprotect_errors,
                unused_ops
            );
            let used = s.r.used(s.off(0), slot_len()).is_ok();
            let c = osmem::stats();
            o.flag("used_ok", used);
            // Left RW, so used has nothing to undo.
            o.put("used_mprotect_calls", c.mprotect_calls - b.mprotect_calls);
            o.put("touch_after_used", touch_code(s.addr(0), true));
        },
    );
    f.expect_released("s0");
    f.expect(&[
        ("setup", 1),
        ("how", U_DONTNEED),
        ("protected", 0),
        ("zeroed", 1),
        ("state", S_PREPARED),
        ("s0_perms", P_RW),
        ("d_fallback_harddecommit_open", 1),
        ("d_mprotect_errors", 1),
        ("d_unused_ops", 1),
        ("used_ok", 1),
        ("used_mprotect_calls", 0),
        ("touch_after_used", T_OK),
    ]);
}

// ---------------------------------------------------------------------------------------
// 16. MADV_COLLAPSE busy every time: bounded retries, typed error, no downgrade

#[test]
fn collapse_eagain_bounded_no_downgrade() {
    let _ = osmem::probe();
    assert!(
        osmem::probe().advice.collapse,
        "this kernel has MADV_COLLAPSE (6.1+)"
    );
    let huge = 2 << 20;
    // [reserved 2 MiB | mapped 2 MiB, aligned | reserved 2 MiB]
    let r = Reservation::reserve_aligned(3 * huge, huge).unwrap();
    let f = run(
        "collapse_eagain",
        &[madv(MADV_COLLAPSE, libc::EAGAIN)],
        |o| {
            let addr = r.as_ptr() as usize + huge;
            let ok = r.map(huge, huge).is_ok() && r.used(huge, huge).is_ok();
            unsafe { core::ptr::write_bytes(addr as *mut u8, 0x5C, huge) };
            o.flag("setup", ok);
            let (a, c, b) = measured(|| r.collapse(huge, huge));
            put_result(o, c);
            delta!(
                o,
                a,
                b,
                transient_retries,
                madv_collapse,
                downgrade_collapse,
                downgrade_madvise
            );
            let c = r.collapse(huge, huge);
            let d = osmem::stats();
            o.flag(
                "again_eagain",
                c.is_err_and(|e| e.errno() == Some(libc::EAGAIN)),
            );
            o.put("again_madv_collapse", d.madv_collapse - b.madv_collapse);
            o.put("state", state(r.state(huge)));
            o.flag("data_intact", all_bytes(addr, huge, 0x5C));
            o.put("resident", resident_pages(addr, huge) as u64);
        },
    );
    f.expect(&os_error(
        Op::Collapse,
        Syscall::Madvise(MADV_COLLAPSE),
        libc::EAGAIN,
    ));
    f.expect(&[
        ("setup", 1),
        ("d_transient_retries", 4),
        ("d_madv_collapse", 5),
        ("d_downgrade_collapse", 0),
        ("d_downgrade_madvise", 0),
        ("again_eagain", 1),
        ("again_madv_collapse", 5),
        ("state", S_READY),
        ("data_intact", 1),
        ("resident", (huge / ps()) as u64),
    ]);
}

// ---------------------------------------------------------------------------------------
// 17. Guard markers cannot be removed: map replaces them with a fresh mapping

#[test]
fn guard_remove_eperm_map_remaps() {
    let s = Slots::new(1);
    assert!(
        osmem::probe().advice.guard_install,
        "this kernel has guard markers (6.13+)"
    );
    let f = run(
        "guard_remove_eperm",
        &[madv(MADV_GUARD_REMOVE, libc::EPERM)],
        |o| {
            o.flag("setup", s.ready(0, 0xEE));
            let r = unsafe { s.r.fault_with(s.off(0), slot_len(), FaultStrategy::Guard) };
            o.put("how", r.map_or(0, |f| fault_code(f.how)));
            o.put("touch_faulted", touch_code(s.addr(0), false));
            let (a, m, b) = measured(|| s.r.map(s.off(0), slot_len()));
            o.flag("map_ok", m.is_ok());
            delta!(
                o,
                a,
                b,
                fallback_map_remap,
                downgrade_guard,
                madv_guard_remove,
                mmap_calls
            );
            o.put("touch_mapped", touch_code(s.addr(0), false));
            o.put("state", state(s.r.state(s.off(0))));
            view_zero(o, "s0", s.addr(0), slot_len());
            o.flag("used_ok", s.r.used(s.off(0), slot_len()).is_ok());
            o.put("touch_used", touch_code(s.addr(0), true));
            o.put("selected_fault", strategy(osmem::selected().fault));
        },
    );
    f.expect_released("s0");
    f.expect(&[
        ("setup", 1),
        ("how", F_GUARD),
        // Guard markers: SEGV_MAPERR without a VMA change.
        ("touch_faulted", T_MAPERR),
        ("map_ok", 1),
        ("d_fallback_map_remap", 1),
        ("d_downgrade_guard", 1),
        ("d_madv_guard_remove", 1),
        ("d_mmap_calls", 1),
        // mmap(MAP_FIXED) over the range removed the markers.
        ("touch_mapped", T_OK),
        ("state", S_PREPARED),
        ("s0_perms", P_RW),
        ("used_ok", 1),
        ("touch_used", T_OK),
        ("selected_fault", strategy(FaultStrategy::Protect)),
    ]);
}

// ---------------------------------------------------------------------------------------
// 18. fault(Guard) on mlocked memory: the kernel's own EINVAL, per call

#[test]
fn mlocked_fault_guard_per_call_fallback() {
    let s = Slots::new(2);
    assert!(
        osmem::probe().advice.guard_install,
        "this kernel has guard markers (6.13+)"
    );
    let f = run("mlocked_fault_guard", &[], |o| {
        o.flag("setup", (0..2).all(|i| s.ready(i, 0x3C)));
        o.put(
            "lock",
            unsafe { libc::mlock(s.addr(0) as *const _, slot_len()) } as u64,
        );
        let (a, r, b) =
            measured(|| unsafe { s.r.fault_with(s.off(0), slot_len(), FaultStrategy::Guard) });
        o.put("how0", r.map_or(0, |f| fault_code(f.how)));
        view(o, "s0", s.addr(0), slot_len());
        o.put("touch0", touch_code(s.addr(0), false));
        delta!(
            o,
            a,
            b,
            fallback_fault_guard,
            fallback_fault_remap,
            fallback_locked,
            einval_probes,
            downgrade_guard,
            downgrade_dontneed,
            downgrade_madvise
        );
        o.flag(
            "locked_after",
            smaps_at(s.addr(0)).is_some_and(|e| e.vm_flags.contains("lo")),
        );
        // Not sticky: an unlocked range still gets guard markers.
        let r = unsafe { s.r.fault_with(s.off(1), slot_len(), FaultStrategy::Guard) };
        o.put("how1", r.map_or(0, |f| fault_code(f.how)));
        o.put("touch1", touch_code(s.addr(1), false));
        o.put("resident1", resident_pages(s.addr(1), slot_len()) as u64);
        o.put("selected_fault", strategy(osmem::selected().fault));
        o.flag("map0", s.r.map(s.off(0), slot_len()).is_ok());
        o.put("touch0_mapped", touch_code(s.addr(0), true));
    });
    f.expect(&[
        ("setup", 1),
        ("lock", 0),
        // GUARD_INSTALL: EINVAL on VM_LOCKED; DONTNEED too (see test 4); both probes say the
        // advice is known, so each falls through for this call only: MADV_DONTNEED_LOCKED
        // releases, mprotect(PROT_NONE) makes it trap, and the lock stays.
        ("how0", F_PROTECT),
        ("s0_resident", 0),
        ("s0_rss_kb", 0),
        ("s0_vma_covers", 1),
        ("s0_perms", P_NONE),
        ("touch0", T_ACCERR),
        ("d_fallback_fault_guard", 1),
        ("d_fallback_fault_remap", 0),
        ("d_fallback_locked", 1),
        ("locked_after", 1),
        ("d_einval_probes", 2),
        ("d_downgrade_guard", 0),
        ("d_downgrade_dontneed", 0),
        ("d_downgrade_madvise", 0),
        ("how1", F_GUARD),
        ("touch1", T_MAPERR),
        ("resident1", 0),
        ("selected_fault", strategy(FaultStrategy::Guard)),
        ("map0", 1),
        ("touch0_mapped", T_OK),
    ]);
}

// ---------------------------------------------------------------------------------------
// 21. Nothing can release the range: the fault says so and undoes its protection

#[test]
fn go_mlocked_mmap_enomem_restores_ready() {
    let s = Slots::new(1);
    // Before Linux 5.18 (no MADV_DONTNEED_LOCKED, emulated), nothing releases a locked range.
    let no_locked = madv(MADV_DONTNEED_LOCKED, libc::EINVAL);
    let f = run("go_mlocked_all_fail", &[MMAP_ENOMEM, no_locked], |o| {
        o.flag("setup", s.ready(0, 0x4D));
        o.put(
            "lock",
            unsafe { libc::mlock(s.addr(0) as *const _, slot_len()) } as u64,
        );
        let (a, r, b) =
            measured(|| unsafe { s.r.fault_with(s.off(0), slot_len(), FaultStrategy::Go) });
        put_result(o, r);
        o.put("state", state(s.r.state(s.off(0))));
        view(o, "s0", s.addr(0), slot_len());
        o.put("touch", touch_code(s.addr(0), true));
        o.flag("data_intact", all_bytes(s.addr(0), slot_len(), 0x4D));
        delta!(
            o,
            a,
            b,
            fault_ops,
            mprotect_calls,
            madv_dontneed,
            einval_probes,
            mmap_errors
        );
        o.flag("ready_same", a.ready_bytes == b.ready_bytes);
        unsafe { libc::munlock(s.addr(0) as *const _, slot_len()) };
    });
    // PROT_NONE applied; DONTNEED refused on VM_LOCKED (twice: in the Go order and as the
    // remap's fallback) and MADV_DONTNEED_LOCKED unknown (once: then sticky), the PROT_NONE
    // remap refused: nothing released → typed error, and the protection undone, so
    // "changed: false" is true of the kernel's view.
    f.expect(&os_error(Op::Fault, Syscall::Mmap, libc::ENOMEM));
    f.expect(&[
        ("setup", 1),
        ("lock", 0),
        ("state", S_READY),
        ("s0_perms", P_RW),
        ("s0_resident", SLOT_PAGES as u64),
        ("s0_rss_kb", slot_kb()),
        ("touch", T_OK),
        ("data_intact", 1),
        ("d_fault_ops", 0),
        // NONE, then RW to undo it.
        ("d_mprotect_calls", 2),
        ("d_madv_dontneed", 4),
        ("d_einval_probes", 3),
        ("d_mmap_errors", 1),
        ("ready_same", 1),
    ]);
}

// ---------------------------------------------------------------------------------------
// 22. harddecommit'd range, both ways back to RW refused: the error must name the call
// that failed last (error.rs: "The syscall that failed last"), as `map` does.

#[test]
fn used_all_links_fail_names_the_failed_call() {
    let s = Slots::new(1);
    let f = run_filter_after(
        "used_all_fail",
        &NO_WAY_TO_RW,
        |o| {
            osmem::configure(Config::new().harddecommit(true));
            o.flag("setup", s.ready(0, 0x1F));
            let u = unsafe { s.r.unused(s.off(0), slot_len()) };
            o.flag("protected", u.is_ok_and(|u| u.protected));
        },
        |o| {
            let (a, r, b) = measured(|| s.r.used(s.off(0), slot_len()));
            put_result(o, r);
            o.put("state", state(s.r.state(s.off(0))));
            o.put("perms", perms_code(s.addr(0)));
            o.put("touch", touch_code(s.addr(0), false));
            delta!(
                o,
                a,
                b,
                mprotect_errors,
                mmap_errors,
                fallback_map_remap,
                used_ops
            );
        },
    );
    // mprotect(RW) failed, then the mmap(RW, MAP_FIXED) fallback failed: last is mmap.
    f.expect(&os_error(Op::Used, Syscall::Mmap, libc::ENOMEM));
    f.expect(&[
        ("setup", 1),
        ("protected", 1),
        // Nothing changed in the kernel: still PROT_NONE, still Prepared.
        ("state", S_PREPARED),
        ("perms", P_NONE),
        ("touch", T_ACCERR),
        ("d_mprotect_errors", 1),
        ("d_mmap_errors", 1),
        ("d_fallback_map_remap", 1),
        ("d_used_ops", 0),
    ]);
}

// ---------------------------------------------------------------------------------------
// 19, 20. The probe under a filter. A forked child inherits the parent's cached probe, so
// the probe's first run must happen in a fresh process: this binary re-executed with only
// the test in question selected and an environment variable naming its role; the role
// installs the filter first thing (on the one thread that will probe), then probes, prints
// one result line and exits. Allocating there is fine: it is not a fork.

#[test]
fn probe_without_process_madvise() {
    play_role_if(
        "probe_pm",
        &[
            Inject::Syscall {
                nr: libc::SYS_process_madvise,
                errno: libc::ENOSYS,
            },
            Inject::Syscall {
                nr: libc::SYS_pidfd_open,
                errno: libc::ENOSYS,
            },
        ],
        || {
            let before = osmem::stats();
            let p = osmem::probe();
            let after = osmem::stats();
            format!(
                "pm={:?} pm_calls={} pidfd_calls={} pidfd_errors={} dontneed={}",
                p.process_madvise,
                after.process_madvise_calls - before.process_madvise_calls,
                after.pidfd_open_calls - before.pidfd_open_calls,
                after.pidfd_open_errors - before.pidfd_open_errors,
                p.advice.dontneed,
            )
        },
    );
    // Without the filter this kernel offers process_madvise: the filter is what changes it.
    assert_ne!(
        osmem::probe().process_madvise,
        osmem::ProcessMadvise::Unsupported
    );
    let kv = spawn_role("probe_without_process_madvise", "probe_pm");
    assert_eq!(kv["pm"], "Unsupported", "{kv:?}");
    // The probe tried the PIDFD_SELF sentinel, then pidfd_open, and took "no" from both.
    assert_eq!(kv["pm_calls"], "1", "{kv:?}");
    assert_eq!(kv["pidfd_calls"], "1", "{kv:?}");
    assert_eq!(kv["pidfd_errors"], "1", "{kv:?}");
    // The rest of the probe is unaffected.
    assert_eq!(kv["dontneed"], "true", "{kv:?}");
}

#[test]
fn probe_with_guard_install_refused() {
    play_role_if(
        "probe_guard",
        &[Inject::Madvise {
            advice: MADV_GUARD_INSTALL,
            errno: libc::EINVAL,
        }],
        || {
            let p = osmem::probe();
            let sel = osmem::selected();
            let r = Reservation::alloc(4 * osmem::page_size()).unwrap();
            let before = osmem::stats();
            let f = unsafe { r.fault(0, 4 * osmem::page_size()) }.unwrap();
            let after = osmem::stats();
            // Forcing guard markers (`OSMEM=fault=guard`) on this kernel: `selected()` names
            // the link that really runs, and the fault agrees.
            osmem::configure(osmem::Config::new().fault(FaultStrategy::Guard));
            let forced = osmem::selected().fault;
            let r2 = Reservation::alloc(osmem::page_size()).unwrap();
            let g = unsafe { r2.fault(0, osmem::page_size()) };
            let g = g.map_or_else(|e| format!("{:?}", e.op()), |g| format!("{:?}", g.how));
            format!(
                "guard_install={} fault={:?} how={:?} guard_calls={} free={} pm={:?} \
                 forced={forced:?} forced_how={g}",
                p.advice.guard_install,
                sel.fault,
                f.how,
                after.madv_guard_install - before.madv_guard_install,
                p.advice.free,
                p.process_madvise,
            )
        },
    );
    assert!(
        osmem::probe().advice.guard_install,
        "this kernel has guard markers (6.13+)"
    );
    let kv = spawn_role("probe_with_guard_install_refused", "probe_guard");
    assert_eq!(kv["guard_install"], "false", "{kv:?}");
    assert_eq!(kv["fault"], "Protect", "{kv:?}");
    // The default fault then uses DONTNEED + PROT_NONE and never tries a guard marker.
    assert_eq!(kv["how"], "Protect", "{kv:?}");
    assert_eq!(kv["guard_calls"], "0", "{kv:?}");
    assert_eq!(kv["free"], "true", "{kv:?}");
    assert_ne!(kv["pm"], "Unsupported", "{kv:?}");
    assert_eq!(kv["forced"], "Protect", "{kv:?}");
    assert_eq!(kv["forced_how"], "Protect", "{kv:?}");
}

#[test]
fn probe_with_guard_remove_refused() {
    play_role_if(
        "probe_guard_remove",
        &[Inject::Madvise {
            advice: MADV_GUARD_REMOVE,
            errno: libc::EPERM,
        }],
        || {
            let p = osmem::probe();
            format!(
                "guard_install={} fault={:?} pm={:?}",
                p.advice.guard_install,
                osmem::selected().fault,
                p.process_madvise
            )
        },
    );
    let kv = spawn_role("probe_with_guard_remove_refused", "probe_guard_remove");
    assert_eq!(kv["guard_install"], "false", "{kv:?}");
    assert_eq!(kv["fault"], "Protect", "{kv:?}");
}
