//! Per-reservation knobs: a reservation's own `Config` overrides exactly the keys it sets;
//! everything else follows the process-wide knobs, `checked` on in the process stays on
//! everywhere, and a batch spanning reservations applies each range's own reservation's
//! knobs. Checked against the kernel (smaps RSS / LazyFree / VmFlags, maps permissions) in
//! forked children, since `configure` is process-wide.

mod common;

use common::{child_ok, ck, ok, warm};
use osmem::{Batch, BatchKind, Config, FaultStrategy, Reservation, Thp, UnusedAdvice, UnusedHow};
use osmem_testkit::{self as tk, Report};

const PAGES: usize = 16;

/// A Ready reservation of PAGES pages, written, with knobs `cfg` (Reserved fences around it
/// keep its VMA its own).
fn ready(cfg: Config) -> Result<Reservation, osmem::Error> {
    let ps = osmem::page_size();
    let r = Reservation::reserve((PAGES + 2) * ps)?.with_config(cfg);
    r.map(ps, PAGES * ps)?;
    r.used(ps, PAGES * ps)?;
    // SAFETY: just made Ready.
    unsafe { core::ptr::write_bytes(r.as_ptr().add(ps), 0x42, PAGES * ps) };
    Ok(r)
}

fn at(r: &Reservation) -> usize {
    r.as_ptr() as usize + osmem::page_size()
}

#[test]
fn a_reservation_overrides_exactly_the_keys_it_sets() {
    warm();
    child_ok(
        "own keys",
        tk::in_child_report(|rep: &mut Report| {
            let ps = osmem::page_size();
            osmem::configure(Config::new().unused(UnusedAdvice::DontNeed));
            let lazy = ok!(rep, ready(Config::new().unused(UnusedAdvice::Free)));
            let plain = ok!(rep, ready(Config::new()));
            ck!(rep, lazy.config().unused_advice() == UnusedAdvice::Free);
            ck!(
                rep,
                plain.config().unused_advice() == UnusedAdvice::DontNeed
            );
            let _ = tk::smaps_at(at(&lazy)); // LRU drain, so MADV_FREE sees the pages
            let u = ok!(rep, unsafe { lazy.unused(ps, PAGES * ps) });
            ck!(rep, u.how == UnusedHow::Free);
            let e = tk::smaps_at(at(&lazy));
            ck!(rep, e.is_some_and(|e| e.lazy_free_kb > 0 && e.rss_kb > 0));
            let u = ok!(rep, unsafe { plain.unused(ps, PAGES * ps) });
            ck!(rep, u.how == UnusedHow::DontNeed);
            ck!(rep, tk::resident_pages(at(&plain), PAGES * ps) == 0);
            // The process changes its knob: the key `lazy` sets stays its own, `plain` follows.
            osmem::configure(Config::new().unused(UnusedAdvice::Remap));
            ck!(rep, lazy.config().unused_advice() == UnusedAdvice::Free);
            ck!(rep, plain.config().unused_advice() == UnusedAdvice::Remap);
            ck!(rep, plain.selected() == osmem::selected());
            // Keys `lazy` does not set follow the process too.
            osmem::configure(Config::new().prefault(true));
            ck!(rep, lazy.config().is_prefault());
            0
        }),
    );
}

#[test]
fn harddecommit_fault_and_thp_per_reservation() {
    warm();
    child_ok(
        "harddecommit, fault, thp",
        tk::in_child_report(|rep: &mut Report| {
            let ps = osmem::page_size();
            osmem::configure(Config::new());
            let hd = ok!(rep, ready(Config::new().harddecommit(true)));
            let plain = ok!(rep, ready(Config::new()));
            let u = ok!(rep, unsafe { hd.unused(ps, PAGES * ps) });
            ck!(rep, u.protected);
            ck!(
                rep,
                tk::vma_at(at(&hd)).is_some_and(|v| v.perms_str() == "---p")
            );
            let u = ok!(rep, unsafe { plain.unused(ps, PAGES * ps) });
            ck!(rep, !u.protected);
            ck!(
                rep,
                tk::vma_at(at(&plain)).is_some_and(|v| v.perms_str() == "rw-p")
            );
            // A forced fault strategy for one reservation: selected() and the fault agree.
            let p = ok!(rep, ready(Config::new().fault(FaultStrategy::Protect)));
            ck!(rep, p.selected().fault == FaultStrategy::Protect);
            let f = ok!(rep, unsafe { p.fault(ps, ps) });
            ck!(rep, f.how == osmem::FaultHow::Protect);
            // thp=never for one reservation: its VMA carries nh, hugepage is a no-op there.
            let never = ok!(rep, ready(Config::new().thp(Thp::Never)));
            ck!(
                rep,
                tk::smaps_at(at(&never)).is_some_and(|e| e.vm_flags.contains("nh"))
            );
            ck!(
                rep,
                !tk::smaps_at(at(&plain)).is_some_and(|e| e.vm_flags.contains("nh"))
            );
            let s0 = osmem::stats();
            ok!(rep, never.hugepage(0, (PAGES + 2) * ps));
            ck!(
                rep,
                osmem::stats().huge_hints_skipped == s0.huge_hints_skipped + 1
            );
            0
        }),
    );
}

#[test]
fn checked_on_in_the_process_stays_on_everywhere() {
    warm();
    child_ok(
        "checked",
        tk::in_child_report(|rep: &mut Report| {
            osmem::configure(Config::new().checked(true));
            let r = ok!(rep, ready(Config::new().checked(false)));
            ck!(rep, r.config().is_checked());
            osmem::configure(Config::new());
            let only = ok!(rep, ready(Config::new().checked(true)));
            ck!(rep, only.config().is_checked());
            ck!(rep, !osmem::config().is_checked());
            0
        }),
    );
}

#[test]
fn a_batch_applies_each_ranges_own_reservation_knobs() {
    warm();
    child_ok(
        "batch across knobs",
        tk::in_child_report(|rep: &mut Report| {
            let ps = osmem::page_size();
            osmem::configure(Config::new());
            let hd = ok!(rep, ready(Config::new().harddecommit(true)));
            let plain = ok!(rep, ready(Config::new()));
            let mut b: Batch<'_, 8> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
            ok!(rep, unsafe { b.push(&hd, ps, PAGES * ps) });
            ok!(rep, unsafe { b.push(&plain, ps, PAGES * ps) });
            let rb = unsafe { b.flush() };
            ck!(rep, rb.ranges == 2 && rb.failed == 0);
            ck!(
                rep,
                tk::vma_at(at(&hd)).is_some_and(|v| v.perms_str() == "---p")
            );
            ck!(
                rep,
                tk::vma_at(at(&plain)).is_some_and(|v| v.perms_str() == "rw-p")
            );
            ck!(rep, tk::resident_pages(at(&hd), PAGES * ps) == 0);
            ck!(rep, tk::resident_pages(at(&plain), PAGES * ps) == 0);
            0
        }),
    );
}
