//! Every state transition, checked against the kernel's own view: `/proc/self/maps` (perms,
//! VMA bounds and count), `/proc/self/smaps` (Rss, LazyFree, AnonHugePages, VmFlags),
//! `mincore` residency, and accesses from a forked child (SIGSEGV and its `si_code`).
//!
//! Layout used by most tests: a region of `PAGES` pages of which only `[LO, HI)` is ever made
//! usable. The pages outside stay Reserved (`---p`), so the usable range's RW VMA can never
//! merge with a mapping of another test thread: its smaps entry covers exactly our pages, and
//! VMA bounds and counts inside the region depend only on what osmem did.
//!
//! Everything that changes process-global state (`configure`) or needs a quiet address space
//! (checking that a freed range is gone) runs in a forked child. Children do not allocate:
//! they report the line of a failed check through the pipe and exit non-zero.

mod common;

use common::{child_ok, ck, ok, ps, warm};
use osmem::{Config, Error, FaultHow, FaultStrategy, Reservation, State, UnusedAdvice, UnusedHow};
use osmem_testkit::{self as tk, Report, Touch, SEGV_ACCERR, SEGV_MAPERR};

const PAGES: usize = 16;
const LO: usize = 2;
const HI: usize = 14;
const HUGE: usize = 2 << 20;

// In forked children: `ck!` / `ok!` (`common`) report the line of a failed check.

/// A test region and page-indexed helpers. Allocation-free (usable in children).
struct Fix {
    r: Reservation,
    ps: usize,
}

impl Fix {
    fn new() -> Result<Fix, Error> {
        let ps = ps();
        Ok(Fix {
            r: Reservation::reserve(PAGES * ps)?,
            ps,
        })
    }

    fn at(&self, page: usize) -> usize {
        self.r.as_ptr() as usize + page * self.ps
    }

    fn off(&self, page: usize) -> usize {
        page * self.ps
    }

    fn bytes(&self, lo: usize, hi: usize) -> usize {
        (hi - lo) * self.ps
    }

    fn end(&self) -> usize {
        self.at(PAGES)
    }

    /// Reserved → Ready for pages `[lo, hi)`.
    fn ready(&self, lo: usize, hi: usize) -> Result<(), Error> {
        self.r.map(self.off(lo), self.bytes(lo, hi))?;
        self.r.used(self.off(lo), self.bytes(lo, hi))
    }

    /// Fill every byte of each page of `[lo, hi)` with a value that depends on the page.
    fn fill(&self, lo: usize, hi: usize, seed: u8) {
        for p in lo..hi {
            // SAFETY: the caller made these pages Ready.
            unsafe { core::ptr::write_bytes(self.at(p) as *mut u8, pat(seed, p), self.ps) };
        }
    }

    /// Whether every byte of `[lo, hi)` still holds what `fill` wrote.
    fn holds(&self, lo: usize, hi: usize, seed: u8) -> bool {
        (lo..hi).all(|p| {
            let want = pat(seed, p);
            // SAFETY: the caller knows these pages are readable.
            (0..self.ps)
                .all(|i| unsafe { core::ptr::read_volatile((self.at(p) + i) as *const u8) == want })
        })
    }

    fn resident(&self, lo: usize, hi: usize) -> usize {
        tk::resident_pages(self.at(lo), self.bytes(lo, hi))
    }

    fn zero(&self, lo: usize, hi: usize) -> bool {
        // SAFETY: the caller knows these pages are readable.
        unsafe { tk::is_zero(self.at(lo), self.bytes(lo, hi)) }
    }

    /// The VMA at page `p` is exactly `[lo, hi)` with these perms.
    fn vma_is(&self, p: usize, lo: usize, hi: usize, perms: &[u8; 4]) -> bool {
        matches!(tk::vma_at(self.at(p)),
            Some(v) if v.start == self.at(lo) && v.end == self.at(hi) && &v.perms == perms)
    }

    fn vmas(&self) -> usize {
        tk::vmas_in(self.at(0), self.end())
    }
}

fn pat(seed: u8, page: usize) -> u8 {
    (seed ^ (page as u8).wrapping_mul(37)) | 1
}

fn rss_kb_at(addr: usize) -> u64 {
    tk::smaps_at(addr).expect("mapped").rss_kb
}

#[test]
fn reserve_is_prot_none_and_not_resident() {
    warm();
    let f = Fix::new().unwrap();
    let (base, end) = (f.at(0), f.end());
    // The region may share a VMA with an adjacent foreign PROT_NONE mapping, so require only
    // that one `---p` VMA covers all of it.
    let v = tk::vma_at(base).expect("reserved range is mapped");
    assert_eq!(v.perms_str(), "---p", "{v:?}");
    assert!(
        v.start <= base && v.end >= end,
        "{v:?} does not cover the region"
    );
    assert_eq!(tk::resident_pages(base, end - base), 0);
    assert_eq!(tk::smaps_sum(base, end).rss_kb, 0);
    for p in [0, PAGES / 2, PAGES - 1] {
        assert_eq!(f.r.state(f.off(p)), Some(State::Reserved));
    }
    // Any access traps with ACCERR: the pages exist, with no permission.
    assert_eq!(
        tk::touch_in_child(base, false),
        Touch::Segv {
            si_code: SEGV_ACCERR
        }
    );
}

#[test]
fn map_then_used_is_rw_and_holds_data() {
    warm();
    let f = Fix::new().unwrap();
    f.r.map(f.off(LO), f.bytes(LO, HI)).unwrap();
    // Exactly the mapped range became RW: the VMA is [LO, HI), the padding stays ---p.
    assert!(f.vma_is(LO, LO, HI, b"rw-p"), "{:?}", tk::vma_at(f.at(LO)));
    assert_eq!(tk::vma_at(f.at(0)).unwrap().perms_str(), "---p");
    assert_eq!(tk::vma_at(f.at(HI)).unwrap().perms_str(), "---p");
    assert_eq!(f.vmas(), 3);
    assert_eq!(f.resident(LO, HI), 0, "map must not populate");
    f.r.used(f.off(LO), f.bytes(LO, HI)).unwrap();
    assert_eq!(f.r.state(f.off(LO)), Some(State::Ready));
    assert!(f.zero(LO, HI), "fresh memory reads zero");
    f.fill(LO, HI, 0x3c);
    assert!(f.holds(LO, HI, 0x3c));
    assert_eq!(f.resident(LO, HI), HI - LO);
    // A child may write it too (the kernel lets the access through).
    assert_eq!(tk::touch_in_child(f.at(LO), true), Touch::Ok);
    assert_eq!(tk::touch_in_child(f.at(HI - 1), true), Touch::Ok);
}

#[test]
fn unused_default_is_dontneed_and_zeroes() {
    // Asserts the built-in default (`unused=dontneed`): run without OSMEM overriding it.
    let f = Fix::new().unwrap();
    f.ready(LO, HI).unwrap();
    f.fill(LO, HI, 0x51);
    assert_eq!(f.resident(LO, HI), HI - LO);
    assert_eq!(rss_kb_at(f.at(LO)), (f.bytes(LO, HI) / 1024) as u64);
    let u = unsafe { f.r.unused(f.off(LO), f.bytes(LO, HI)) }.unwrap();
    assert_eq!(
        (u.how, u.zeroed, u.protected),
        (UnusedHow::DontNeed, true, false)
    );
    // Released at once: nothing resident, smaps Rss of the (exact) VMA is 0.
    assert_eq!(f.resident(LO, HI), 0);
    assert!(f.vma_is(LO, LO, HI, b"rw-p"));
    assert_eq!(rss_kb_at(f.at(LO)), 0);
    f.r.used(f.off(LO), f.bytes(LO, HI)).unwrap();
    assert!(f.zero(LO, HI), "DONTNEED'd memory must read zero");
}

#[test]
fn unused_partial_releases_only_the_range() {
    let f = Fix::new().unwrap();
    f.ready(LO, HI).unwrap();
    f.fill(LO, HI, 0x77);
    let _ = unsafe {
        f.r.unused_with(f.off(5), f.bytes(5, 9), UnusedAdvice::DontNeed)
    }
    .unwrap();
    assert_eq!(f.resident(5, 9), 0);
    assert_eq!(f.resident(LO, 5) + f.resident(9, HI), (HI - LO) - 4);
    assert!(f.holds(LO, 5, 0x77) && f.holds(9, HI, 0x77));
    assert_eq!(
        rss_kb_at(f.at(LO)),
        (f.bytes(LO, HI) - f.bytes(5, 9)) as u64 / 1024
    );
}

#[test]
fn unused_free_is_lazy_until_pageout() {
    pin_here();
    let f = Fix::new().unwrap();
    f.ready(LO, HI).unwrap();
    f.fill(LO, HI, 0x2a);
    let full_kb = (f.bytes(LO, HI) / 1024) as u64;
    // smaps_at drains the per-CPU LRU batches, so the freshly faulted pages are on the LRU
    // (MADV_FREE and MADV_PAGEOUT only act on pages that are).
    let e = tk::smaps_at(f.at(LO)).unwrap();
    assert_eq!((e.rss_kb, e.lazy_free_kb), (full_kb, 0));

    let u = unsafe {
        f.r.unused_with(f.off(LO), f.bytes(LO, HI), UnusedAdvice::Free)
    }
    .unwrap();
    assert_eq!(
        (u.how, u.zeroed, u.protected),
        (UnusedHow::Free, false, false)
    );
    let e = tk::smaps_at(f.at(LO)).unwrap();
    assert_eq!(e.vma.start, f.at(LO));
    assert_eq!(e.vma.end, f.at(HI));
    assert_eq!(
        e.lazy_free_kb, full_kb,
        "MADV_FREE marks every page lazily free"
    );
    assert_eq!(e.rss_kb, full_kb, "MADV_FREE must not drop RSS at once");
    assert_eq!(f.resident(LO, HI), HI - LO);

    // MADV_PAGEOUT reclaims the lazily freed pages now (no swap needed: they are clean).
    // Reclaim may skip a page that is momentarily busy, so allow a few rounds.
    let mut rss = u64::MAX;
    for _ in 0..5 {
        let rc = unsafe { libc::madvise(f.at(LO) as *mut _, f.bytes(LO, HI), 21) };
        assert_eq!(rc, 0, "MADV_PAGEOUT: {}", std::io::Error::last_os_error());
        rss = rss_kb_at(f.at(LO));
        if rss == 0 {
            break;
        }
    }
    assert_eq!(rss, 0, "MADV_PAGEOUT did not reclaim the MADV_FREE'd pages");
    assert_eq!(f.resident(LO, HI), 0);
    f.r.used(f.off(LO), f.bytes(LO, HI)).unwrap();
    assert!(f.zero(LO, HI), "reclaimed lazily-freed pages read zero");
}

/// Keep the calling thread on the CPU it runs on: lazily freed pages wait in that CPU's LRU
/// batch, which only a drain on the same CPU (smaps, PAGEOUT) moves to where reclaim sees them.
fn pin_here() {
    // SAFETY: plain libc calls on the calling thread; the set is a local.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu >= 0 {
            let mut set: libc::cpu_set_t = core::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut set);
            libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

/// MADV_PAGEOUT (21) over `[lo, hi)` a few times (reclaim may skip a momentarily busy page),
/// after draining the per-CPU LRU batches (reading smaps does), where freshly lazily freed
/// pages wait before reclaim can see them. Allocation-free (children call it).
fn pageout(f: &Fix, lo: usize, hi: usize) {
    for _ in 0..5 {
        let _ = tk::smaps_at(f.at(lo));
        // SAFETY: our own pages; PAGEOUT changes no contents the kernel may not drop.
        unsafe { libc::madvise(f.at(lo) as *mut _, f.bytes(lo, hi), 21) };
    }
}

/// Ready keeps its promise after MADV_FREE: `used` writes each lazily freed page, so the
/// kernel can no longer drop it. A page read back with its old bytes after `used` still has
/// them after a forced reclaim (MADV_PAGEOUT, which on this machine without swap can only
/// drop clean, lazily freed pages). The control region shows the same reclaim really drops
/// lazily freed pages that `used` has not seen, so the first half could fail. In a forked
/// child: a `fork` by another test thread would share the pages, and reclaim skips shared
/// pages.
#[test]
fn ready_after_free_stays_what_it_reads() {
    warm();
    child_ok(
        "free then used",
        tk::in_child_report(|rep: &mut Report| {
            pin_here();
            let (f, c) = (ok!(rep, Fix::new()), ok!(rep, Fix::new()));
            for x in [&f, &c] {
                ok!(rep, x.ready(LO, HI));
                x.fill(LO, HI, 0x5b);
                let _ = tk::smaps_at(x.at(LO)); // drain the LRU batches (see above)
                let _ = ok!(rep, unsafe {
                    x.r.unused_with(x.off(LO), x.bytes(LO, HI), UnusedAdvice::Free)
                });
            }
            ok!(rep, f.r.used(f.off(LO), f.bytes(LO, HI)));
            ck!(rep, f.holds(LO, HI, 0x5b)); // nothing reclaimed yet: the old bytes
            pageout(&f, LO, HI);
            pageout(&c, LO, HI);
            // A Ready page read as its old bytes must not turn to zeros.
            ck!(rep, f.holds(LO, HI, 0x5b));
            ck!(rep, f.resident(LO, HI) == HI - LO);
            // Control: lazily freed pages `used` did not write are dropped by the reclaim.
            ck!(rep, c.resident(LO, HI) == 0);
            ok!(rep, c.r.used(c.off(LO), c.bytes(LO, HI)));
            ck!(rep, c.zero(LO, HI));
            0
        }),
    );
}

#[test]
fn ready_after_free_stays_with_harddecommit_and_in_batches() {
    warm();
    child_ok(
        "free then used, harddecommit and batch",
        tk::in_child_report(|rep: &mut Report| {
            osmem::configure(Config::new().harddecommit(true));
            pin_here();
            let f = ok!(rep, Fix::new());
            ok!(rep, f.ready(LO, HI));
            f.fill(LO, HI, 0x6c);
            let _ = tk::smaps_at(f.at(LO));
            // Direct, PROT_NONE after FREE: used makes it RW and writes each page.
            let u = ok!(rep, unsafe {
                f.r.unused_with(f.off(LO), f.bytes(LO, A), UnusedAdvice::Free)
            });
            ck!(rep, u.how == UnusedHow::Free && u.protected && !u.zeroed);
            // Batched FREE.
            let mut b: osmem::Batch<'_, 8> =
                osmem::Batch::new(osmem::BatchKind::Unused(UnusedAdvice::Free));
            ok!(rep, unsafe { b.push(&f.r, f.off(A), f.bytes(A, HI)) });
            let rb = unsafe { b.flush() };
            ck!(rep, rb.ranges == 1 && rb.not_zeroed == 1 && rb.failed == 0);
            ok!(rep, f.r.used(f.off(LO), f.bytes(LO, HI)));
            ck!(rep, f.holds(LO, HI, 0x6c));
            pageout(&f, LO, HI);
            ck!(rep, f.holds(LO, HI, 0x6c));
            ck!(rep, f.resident(LO, HI) == HI - LO);
            0
        }),
    );
}

#[test]
fn used_over_prepared_and_ready_leaves_ready_pages_alone() {
    let f = Fix::new().unwrap();
    f.ready(LO, HI).unwrap();
    f.fill(LO, HI, 0x71);
    // [A, B) Prepared (released), the rest Ready with data.
    let _ = unsafe { f.r.unused(f.off(A), f.bytes(A, B)) }.unwrap();
    let before = osmem::stats();
    f.r.used(f.off(LO), f.bytes(LO, HI)).unwrap();
    assert_eq!(f.r.state(f.off(LO)), Some(State::Ready));
    assert_eq!(f.r.state(f.off(A)), Some(State::Ready));
    // The Ready pages kept their data and residency; the Prepared ones read zero.
    assert!(f.holds(LO, A, 0x71) && f.holds(B, HI, 0x71));
    assert!(f.zero(A, B));
    assert_eq!(f.resident(LO, A) + f.resident(B, HI), (A - LO) + (HI - B));
    assert_eq!(
        f.r.bytes_in(State::Ready),
        f.bytes(LO, HI) as u64,
        "only the Prepared bytes moved"
    );
    let after = osmem::stats();
    assert!(after.used_ops > before.used_ops);
    // Reserved or Faulted pages are still refused, and nothing changes.
    assert!(matches!(
        f.r.used(f.off(0), f.bytes(0, HI)),
        Err(Error::WrongState {
            found: State::Reserved,
            ..
        })
    ));
    assert!(f.holds(LO, HI, 0x71) || f.zero(A, B));
}

#[test]
fn unused_remap_releases_and_zeroes() {
    warm();
    let f = Fix::new().unwrap();
    f.ready(LO, HI).unwrap();
    f.fill(LO, HI, 0x66);
    let u = unsafe {
        f.r.unused_with(f.off(LO), f.bytes(LO, HI), UnusedAdvice::Remap)
    }
    .unwrap();
    assert_eq!(
        (u.how, u.zeroed, u.protected),
        (UnusedHow::Remap, true, false)
    );
    assert_eq!(f.resident(LO, HI), 0);
    assert!(f.vma_is(LO, LO, HI, b"rw-p"), "{:?}", tk::vma_at(f.at(LO)));
    assert_eq!(rss_kb_at(f.at(LO)), 0);
    f.r.used(f.off(LO), f.bytes(LO, HI)).unwrap();
    assert!(f.zero(LO, HI));
    f.fill(LO, HI, 0x67);
    assert!(f.holds(LO, HI, 0x67));
}

/// Fault pages [A, B) in the middle of a Ready run [LO, HI) and check what the kernel says,
/// then `map` + `used` them back.
const A: usize = 6;
const B: usize = 10;

fn fault_roundtrip(s: FaultStrategy, how: FaultHow, si_code: i32) {
    let f = Fix::new().unwrap();
    f.ready(LO, HI).unwrap();
    f.fill(LO, HI, 0x19);
    let got = unsafe { f.r.fault_with(f.off(A), f.bytes(A, B), s) }.unwrap();
    assert_eq!(got.how, how, "{s:?}");
    assert!(got.traps());
    assert_eq!(f.r.state(f.off(A)), Some(State::Faulted));

    // The faulted pages are gone and trap, with the si_code of the mechanism.
    assert_eq!(f.resident(A, B), 0, "{s:?}: faulted pages still resident");
    for p in A..B {
        assert_eq!(
            tk::touch_in_child(f.at(p), true),
            Touch::Segv { si_code },
            "{s:?}: write to faulted page {p}"
        );
    }
    assert_eq!(
        tk::touch_in_child(f.at(A), false),
        Touch::Segv { si_code },
        "{s:?}: read"
    );
    // Guard markers need no VMA split; every other mechanism leaves a ---p VMA of exactly
    // the faulted pages.
    if how == FaultHow::Guard {
        assert!(f.vma_is(A, LO, HI, b"rw-p"), "{:?}", tk::vma_at(f.at(A)));
        assert_eq!(f.vmas(), 3);
    } else {
        assert!(
            f.vma_is(A, A, B, b"---p"),
            "{s:?}: {:?}",
            tk::vma_at(f.at(A))
        );
        assert_eq!(f.vmas(), 5);
    }
    // The neighbours on both sides are untouched: data, residency, writability.
    assert!(
        f.holds(LO, A, 0x19) && f.holds(B, HI, 0x19),
        "{s:?}: neighbour data lost"
    );
    assert_eq!(f.resident(LO, A) + f.resident(B, HI), (HI - LO) - (B - A));
    for p in [LO, A - 1, B, HI - 1] {
        assert_eq!(
            tk::touch_in_child(f.at(p), true),
            Touch::Ok,
            "{s:?}: neighbour {p}"
        );
    }

    // map + used: usable again, zero-filled, and (for the splitting mechanisms) merged back
    // into one RW VMA.
    f.r.map(f.off(A), f.bytes(A, B)).unwrap();
    assert!(
        f.vma_is(A, LO, HI, b"rw-p"),
        "{s:?} after map: {:?}",
        tk::vma_at(f.at(A))
    );
    assert_eq!(f.vmas(), 3, "{s:?}: VMAs not merged back after map");
    f.r.used(f.off(A), f.bytes(A, B)).unwrap();
    for p in A..B {
        assert_eq!(
            tk::touch_in_child(f.at(p), true),
            Touch::Ok,
            "{s:?}: page {p} after map"
        );
    }
    assert!(f.zero(A, B), "{s:?}: remapped range must read zero");
    f.fill(A, B, 0x42);
    assert!(f.holds(A, B, 0x42) && f.holds(LO, A, 0x19) && f.holds(B, HI, 0x19));
}

#[test]
fn fault_guard() {
    fault_roundtrip(FaultStrategy::Guard, FaultHow::Guard, SEGV_MAPERR);
}

#[test]
fn fault_protect() {
    fault_roundtrip(FaultStrategy::Protect, FaultHow::Protect, SEGV_ACCERR);
}

#[test]
fn fault_go_order() {
    fault_roundtrip(FaultStrategy::Go, FaultHow::Go, SEGV_ACCERR);
}

#[test]
fn fault_remap() {
    fault_roundtrip(FaultStrategy::Remap, FaultHow::Remap, SEGV_ACCERR);
}

#[test]
fn fault_auto_uses_guards_on_this_kernel() {
    // The machine is Linux 6.18: guard markers exist. Auto must pick them.
    assert!(
        osmem::probe().advice.guard_install,
        "probe missed MADV_GUARD_INSTALL"
    );
    fault_roundtrip(FaultStrategy::Auto, FaultHow::Guard, SEGV_MAPERR);
}

#[test]
fn map_undoes_a_mixed_run_of_fault_mechanisms() {
    warm();
    let f = Fix::new().unwrap();
    f.ready(LO, HI).unwrap();
    f.fill(LO, HI, 0x0d);
    // [6, 8) PROT_NONE, [8, 10) guard markers: one map must undo each by its own inverse.
    let p = unsafe {
        f.r.fault_with(f.off(6), f.bytes(6, 8), FaultStrategy::Protect)
    }
    .unwrap();
    let g = unsafe {
        f.r.fault_with(f.off(8), f.bytes(8, 10), FaultStrategy::Guard)
    }
    .unwrap();
    assert_eq!((p.how, g.how), (FaultHow::Protect, FaultHow::Guard));
    let segv = |code| Touch::Segv { si_code: code };
    assert_eq!(tk::touch_in_child(f.at(7), true), segv(SEGV_ACCERR));
    assert_eq!(tk::touch_in_child(f.at(8), true), segv(SEGV_MAPERR));
    assert!(f.vma_is(6, 6, 8, b"---p"));
    assert!(f.vma_is(8, 8, HI, b"rw-p"));

    f.r.map(f.off(6), f.bytes(6, 10)).unwrap();
    f.r.used(f.off(6), f.bytes(6, 10)).unwrap();
    assert!(f.vma_is(6, LO, HI, b"rw-p"), "{:?}", tk::vma_at(f.at(6)));
    assert_eq!(f.vmas(), 3);
    for p in 6..10 {
        // A guard left behind would give MAPERR, a PROT_NONE left behind ACCERR.
        assert_eq!(tk::touch_in_child(f.at(p), true), Touch::Ok, "page {p}");
    }
    assert!(f.zero(6, 10));
    f.fill(6, 10, 0x0e);
    assert!(f.holds(6, 10, 0x0e) && f.holds(LO, 6, 0x0d) && f.holds(10, HI, 0x0d));
}

#[test]
fn harddecommit_protects_unused_ranges() {
    warm();
    // configure is process-wide: only in a child.
    child_ok(
        "harddecommit",
        tk::in_child_report(|rep: &mut Report| {
            osmem::configure(Config::new().harddecommit(true));
            let f = ok!(rep, Fix::new());
            ok!(rep, f.ready(LO, HI));
            f.fill(LO, HI, 0x21);
            let u = ok!(rep, unsafe { f.r.unused(f.off(A), f.bytes(A, B)) });
            ck!(rep, u.protected && u.zeroed && u.how == UnusedHow::DontNeed);
            ck!(rep, f.r.state(f.off(A)) == Some(State::Prepared));
            ck!(rep, f.vma_is(A, A, B, b"---p"));
            ck!(rep, f.resident(A, B) == 0);
            let accerr = Touch::Segv {
                si_code: SEGV_ACCERR,
            };
            ck!(rep, tk::touch_in_child(f.at(A), false) == accerr);
            ck!(rep, f.holds(LO, A, 0x21) && f.holds(B, HI, 0x21));
            ok!(rep, f.r.used(f.off(A), f.bytes(A, B)));
            ck!(rep, f.vma_is(A, LO, HI, b"rw-p"));
            ck!(rep, f.vmas() == 3);
            ck!(rep, f.zero(A, B));
            ck!(rep, tk::touch_in_child(f.at(A), true) == Touch::Ok);
            f.fill(A, B, 0x22);
            ck!(rep, f.holds(A, B, 0x22));
            0
        }),
    );
}

#[test]
fn prefault_populates_on_used() {
    warm();
    child_ok(
        "prefault",
        tk::in_child_report(|rep: &mut Report| {
            osmem::configure(Config::new().prefault(true));
            let f = ok!(rep, Fix::new());
            ok!(rep, f.r.map(f.off(LO), f.bytes(LO, HI)));
            ck!(rep, f.resident(LO, HI) == 0);
            ok!(rep, f.r.used(f.off(LO), f.bytes(LO, HI)));
            // Resident before anything touched it: used populated every page.
            ck!(rep, f.resident(LO, HI) == HI - LO);
            ck!(rep, rss_kb_at(f.at(LO)) == (f.bytes(LO, HI) / 1024) as u64);
            ck!(rep, f.zero(LO, HI));
            0
        }),
    );
}

#[test]
fn drop_unmaps_the_region() {
    warm();
    // In the test process another thread's mmap may reuse the freed addresses at any moment,
    // so "no VMA at the old address" would be racy there. In a forked child only this thread
    // exists: nothing else can map between the drop and the look at /proc/self/maps, so an
    // empty range proves osmem unmapped all of it.
    child_ok(
        "drop",
        tk::in_child_report(|rep: &mut Report| {
            let f = ok!(rep, Fix::new());
            ok!(rep, f.ready(LO, HI));
            f.fill(LO, HI, 0x31);
            let _ = unsafe { ok!(rep, f.r.fault(f.off(A), f.bytes(A, B))) };
            let (base, end) = (f.at(0), f.end());
            ck!(rep, tk::vmas_in(base, end) >= 3);
            drop(f);
            ck!(rep, tk::vmas_in(base, end) == 0);
            ck!(
                rep,
                tk::vma_at(base).is_none() && tk::vma_at(end - 1).is_none()
            );
            ck!(rep, tk::resident_pages(base, end - base) == 0);
            let maperr = Touch::Segv {
                si_code: SEGV_MAPERR,
            };
            ck!(rep, tk::touch_in_child(base + LO * ps(), false) == maperr);
            0
        }),
    );
}

#[test]
fn alloc_is_rw_zeroed_writable() {
    warm();
    let ps = ps();
    let len = 8 * ps;
    let r = Reservation::alloc(len).unwrap();
    let base = r.as_ptr() as usize;
    // alloc maps RW without MAP_NORESERVE, so it may share a VMA with a neighbour: require
    // only that an rw-p VMA covers it.
    let v = tk::vma_at(base).unwrap();
    assert_eq!(v.perms_str(), "rw-p");
    assert!(v.start <= base && v.end >= base + len, "{v:?}");
    assert_eq!(r.state(0), Some(State::Ready));
    assert_eq!(r.state(len - ps), Some(State::Ready));
    assert!(unsafe { tk::is_zero(base, len) });
    unsafe { core::ptr::write_bytes(r.as_ptr(), 0xe7, len) };
    assert!((0..len).all(|i| unsafe { *r.as_ptr().add(i) } == 0xe7));
    assert_eq!(tk::resident_pages(base, len), 8);
    assert_eq!(tk::touch_in_child(base + len - 1, true), Touch::Ok);
}

#[test]
fn alloc_drop_unmaps() {
    warm();
    // See drop_unmaps_the_region for why this runs in a child.
    child_ok(
        "alloc drop",
        tk::in_child_report(|rep: &mut Report| {
            let ps = ps();
            let r = ok!(rep, Reservation::alloc(8 * ps));
            let base = r.as_ptr() as usize;
            unsafe { core::ptr::write_bytes(r.as_ptr(), 1, 8 * ps) };
            ck!(rep, tk::vmas_in(base, base + 8 * ps) >= 1);
            drop(r);
            ck!(rep, tk::vmas_in(base, base + 8 * ps) == 0);
            0
        }),
    );
}

fn thp_mode_never() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .map_or(true, |s| s.contains("[never]"))
}

#[test]
fn collapse_makes_huge_pages() {
    if thp_mode_never() {
        eprintln!("skipped: transparent huge pages are off (mode \"never\" or no THP)");
        return;
    }
    // [0, 2M) and [4M, 6M) stay Reserved: the 2 MiB-aligned middle block is its own VMA.
    let r = Reservation::reserve_aligned(3 * HUGE, HUGE).unwrap();
    let base = r.as_ptr() as usize;
    assert_eq!(base % HUGE, 0);
    r.map(HUGE, HUGE).unwrap();
    r.used(HUGE, HUGE).unwrap();
    unsafe { core::ptr::write_bytes(r.as_ptr().add(HUGE), 0x5f, HUGE) };
    // THP mode is "madvise" and the VMA has no `hg` yet: the faults above gave small pages.
    let e = tk::smaps_at(base + HUGE).unwrap();
    assert_eq!((e.vma.start, e.vma.end), (base + HUGE, base + 2 * HUGE));
    assert_eq!(e.anon_huge_kb, 0, "huge pages before any hint: {e:?}");

    r.hugepage(HUGE, HUGE).unwrap();
    let e = tk::smaps_at(base + HUGE).unwrap();
    assert!(e.vm_flags.contains("hg"), "{e:?}");
    assert_eq!(
        tk::vmas_in(base, base + 3 * HUGE),
        3,
        "hugepage split the aligned block"
    );

    // MADV_COLLAPSE can fail transiently (EAGAIN) when it cannot get a huge page right now;
    // osmem retries a few times itself, the test a few more.
    let mut last = Ok(());
    for _ in 0..10 {
        last = r.collapse(HUGE, HUGE);
        match last {
            Err(Error::Os { errno, .. }) if errno.0 == libc::EAGAIN => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            _ => break,
        }
    }
    last.unwrap();
    let e = tk::smaps_at(base + HUGE).unwrap();
    assert!(e.anon_huge_kb > 0, "no AnonHugePages after collapse: {e:?}");
    // Collapsing copies the data into the huge page.
    assert!((0..HUGE)
        .step_by(4096)
        .all(|i| unsafe { *r.as_ptr().add(HUGE + i) } == 0x5f));
}

#[test]
fn collapse_refuses_anything_but_ready_before_any_syscall() {
    // A 2 MiB block, first half Ready and written, second half released (Prepared), and a
    // page of the first half then faulted: collapse must refuse each mixture and leave the
    // kernel's view as it was (the released half not resident again).
    let ps = ps();
    let r = Reservation::reserve_aligned(HUGE, HUGE).unwrap();
    let base = r.as_ptr() as usize;
    r.map(0, HUGE).unwrap();
    r.used(0, HUGE).unwrap();
    unsafe { core::ptr::write_bytes(r.as_ptr(), 0x5f, HUGE) };
    let u = unsafe { r.unused_with(HUGE / 2, HUGE / 2, UnusedAdvice::DontNeed) }.unwrap();
    assert!(u.released, "{u:?}");
    assert_eq!(tk::resident_pages(base + HUGE / 2, HUGE / 2), 0);
    for _ in 0..3 {
        let e = r.collapse(0, HUGE);
        assert!(
            matches!(e, Err(Error::WrongState { op: osmem::Op::Collapse, offset, found: State::Prepared }) if offset == HUGE / 2),
            "{e:?}"
        );
    }
    // Nothing came back, nothing changed state.
    assert_eq!(tk::resident_pages(base + HUGE / 2, HUGE / 2), 0);
    assert_eq!(tk::resident_pages(base, HUGE / 2), HUGE / 2 / ps);
    assert_eq!(r.state(0), Some(State::Ready));
    assert_eq!(r.state(HUGE / 2), Some(State::Prepared));
    // A Faulted page: refused by state, not by the kernel's EINVAL.
    r.used(HUGE / 2, HUGE / 2).unwrap();
    let f = unsafe { r.fault(4 * ps, ps) }.unwrap();
    assert_ne!(f.how, FaultHow::ReleasedOnly);
    let e = r.collapse(0, HUGE);
    assert!(
        matches!(e, Err(Error::WrongState { offset, found: State::Faulted, .. }) if offset == 4 * ps),
        "{e:?}"
    );
    // And the pages collapse left claimed are free for the next transition.
    r.map(4 * ps, ps).unwrap();
    r.used(4 * ps, ps).unwrap();
    let u = unsafe { r.unused(0, HUGE) }.unwrap();
    assert!(u.released);
}

#[test]
fn hugepage_without_aligned_interior_is_a_noop() {
    let ps = ps();
    let r = Reservation::reserve_aligned(2 * HUGE, HUGE).unwrap();
    let base = r.as_ptr() as usize;
    let end = base + 2 * HUGE;
    let before = tk::vmas_in(base, end);
    // Neither range holds a whole 2 MiB-aligned block: MADV_HUGEPAGE on it would only split
    // VMAs (the flag is per VMA), so osmem must not issue it.
    r.hugepage(ps, HUGE).unwrap();
    r.hugepage(ps, 2 * HUGE - 2 * ps).unwrap();
    r.hugepage(HUGE - ps, 2 * ps).unwrap();
    assert_eq!(
        tk::vmas_in(base, end),
        before,
        "a no-op hugepage split the region"
    );
    assert!(!tk::smaps_at(base + ps).unwrap().vm_flags.contains("hg"));
    assert!(!tk::smaps_at(end - ps).unwrap().vm_flags.contains("hg"));

    // Contrast: a range that does hold an aligned block gets the flag on that block only.
    r.hugepage(0, HUGE + ps).unwrap();
    assert!(tk::smaps_at(base).unwrap().vm_flags.contains("hg"));
    assert!(!tk::smaps_at(base + HUGE).unwrap().vm_flags.contains("hg"));
    assert_eq!(tk::vmas_in(base, end), before + 1);
}

#[test]
fn nohugepage_sets_nh() {
    let f = Fix::new().unwrap();
    f.ready(LO, HI).unwrap();
    assert!(!tk::smaps_at(f.at(LO)).unwrap().vm_flags.contains("nh"));
    f.r.nohugepage(f.off(LO), f.bytes(LO, HI)).unwrap();
    let e = tk::smaps_at(f.at(LO)).unwrap();
    assert!(e.vm_flags.contains("nh"), "{e:?}");
    assert_eq!((e.vma.start, e.vma.end), (f.at(LO), f.at(HI)));
    // A hint, not a transition: the range is still Ready and writable.
    f.fill(LO, HI, 0x12);
    assert!(f.holds(LO, HI, 0x12));
}
