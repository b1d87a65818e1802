//! Reservations at chosen addresses (Go's sysReserve hint): `reserve_at` (a hint the kernel may
//! not follow), `reserve_aligned_at`, and `reserve_fixed` (exactly there, or a typed error with
//! whatever is mapped there untouched), checked in `/proc/self/maps` and by reading the
//! occupant's memory. Kernels before 4.17 ignore `MAP_FIXED_NOREPLACE` and treat the address
//! as a hint: a SIGSYS trap re-issues osmem's mmap without the flag to emulate one (in a
//! forked child, where address-space checks are not disturbed by other test threads).

mod common;

use common::{child_ok, ck, warm};
use osmem::{Error, Op, Reservation, State};
use osmem_testkit::{self as tk, build_trap_filter, in_child_trapped, Report, Trap};

/// A free, page-aligned range of `len` bytes (reserved, then given back).
fn free_range(len: usize) -> usize {
    let r = Reservation::reserve(len).unwrap();
    r.as_ptr() as usize
}

/// A plain mapping osmem does not own, filled with `byte`: the occupant.
fn occupant(len: usize, byte: u8) -> usize {
    let p = osmem_testkit::map_rw(len).expect("a plain mapping");
    // SAFETY: just mapped RW.
    unsafe { core::ptr::write_bytes(p as *mut u8, byte, len) };
    p
}

fn holds(addr: usize, len: usize, byte: u8) -> bool {
    // SAFETY: the caller's mapping, readable.
    (0..len).all(|i| unsafe { core::ptr::read_volatile((addr + i) as *const u8) } == byte)
}

#[test]
fn reserve_at_a_free_hint_is_placed_there() {
    warm();
    let ps = osmem::page_size();
    child_ok(
        "reserve_at free",
        tk::in_child_report(|rep: &mut Report| {
            let len = 64 * ps;
            let hint = free_range(len);
            let r = match Reservation::reserve_at(hint, len) {
                Ok(r) => r,
                Err(_) => return 1,
            };
            ck!(rep, r.as_ptr() as usize == hint);
            ck!(rep, r.state(0) == Some(State::Reserved));
            ck!(
                rep,
                tk::vma_at(hint).is_some_and(|v| v.perms_str() == "---p")
            );
            0
        }),
    );
}

#[test]
fn reserve_at_a_taken_hint_goes_elsewhere_and_leaves_the_occupant() {
    let ps = osmem::page_size();
    let len = 16 * ps;
    let occ = occupant(len, 0x3a);
    let r = Reservation::reserve_at(occ, len).unwrap();
    assert_ne!(
        r.as_ptr() as usize,
        occ,
        "the kernel cannot place it on the occupant"
    );
    assert!(holds(occ, len, 0x3a), "the occupant's memory is untouched");
    // Still one RW mapping over all of it (other test threads' mappings may have merged
    // with it, so only containment is checked).
    let v = tk::vma_at(occ).unwrap();
    assert!(
        v.start <= occ && v.end >= occ + len && v.perms_str() == "rw-p",
        "{v:?}"
    );
    drop(r);
    // SAFETY: ours.
    unsafe { libc::munmap(occ as *mut _, len) };
}

#[test]
fn reserve_aligned_at_an_aligned_free_hint_starts_there() {
    warm();
    child_ok(
        "reserve_aligned_at",
        tk::in_child_report(|rep: &mut Report| {
            let align = 2 << 20;
            // A free, 2 MiB-aligned address: the start of an aligned reservation given back.
            let hint = {
                let r = match Reservation::reserve_aligned(8 << 20, align) {
                    Ok(r) => r,
                    Err(_) => return 1,
                };
                r.as_ptr() as usize
            };
            let r = match Reservation::reserve_aligned_at(hint, 4 << 20, align) {
                Ok(r) => r,
                Err(_) => return 1,
            };
            ck!(rep, r.as_ptr() as usize % align == 0);
            ck!(rep, r.as_ptr() as usize == hint);
            0
        }),
    );
}

#[test]
fn reserve_fixed_is_exactly_there_or_a_typed_error() {
    let ps = osmem::page_size();
    let len = 16 * ps;
    let occ = occupant(len, 0x4b);
    // Taken (even partly): EEXIST, nothing changed, the occupant intact.
    for (addr, l) in [(occ, len), (occ + 8 * ps, len), (occ - 4 * ps, 8 * ps)] {
        let e = Reservation::reserve_fixed(addr, l).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Os {
                    op: Op::Reserve,
                    changed: false,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(e.errno(), Some(libc::EEXIST), "{e:?}");
    }
    assert!(holds(occ, len, 0x4b));
    assert_eq!(tk::vma_at(occ).unwrap().perms_str(), "rw-p");
    // SAFETY: ours.
    unsafe { libc::munmap(occ as *mut _, len) };
    // Free now: exactly there.
    let r = Reservation::reserve_fixed(occ, len).unwrap();
    assert_eq!(r.as_ptr() as usize, occ);
    assert_eq!(tk::vma_at(occ).unwrap().perms_str(), "---p");
    drop(r);
}

#[test]
fn reserve_fixed_bad_input_changes_nothing() {
    let ps = osmem::page_size();
    let hint = free_range(4 * ps);
    let cases = [
        (
            Reservation::reserve_fixed(hint + 1, ps).unwrap_err(),
            Error::Unaligned {
                op: Op::Reserve,
                offset: hint + 1,
                len: ps,
            },
        ),
        (
            Reservation::reserve_fixed(hint, 0).unwrap_err(),
            Error::ZeroLength { op: Op::Reserve },
        ),
        (
            Reservation::reserve_fixed(usize::MAX & !(ps - 1), 2 * ps).unwrap_err(),
            Error::Overflow {
                op: Op::Reserve,
                offset: usize::MAX & !(ps - 1),
                len: 2 * ps,
            },
        ),
        (
            Reservation::reserve_at(hint + 8, ps).unwrap_err(),
            Error::Unaligned {
                op: Op::Reserve,
                offset: hint + 8,
                len: ps,
            },
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
}

/// A kernel before 4.17 does not know MAP_FIXED_NOREPLACE and places the mapping elsewhere
/// when the address is taken: osmem compares, unmaps the stray mapping and says EEXIST; no
/// mapping is left behind. When the address is free, the hint is followed: exactly there.
#[test]
fn reserve_fixed_on_a_kernel_without_noreplace() {
    let ps = osmem::page_size();
    let len = 16 * ps;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u32
        | libc::MAP_FIXED_NOREPLACE as u32;
    let old_kernel = build_trap_filter(&[Trap::new(libc::SYS_mmap)
        .when(3, flags)
        .fail_first(0)
        .clear_bits(3, libc::MAP_FIXED_NOREPLACE as u64)]);
    warm();
    let occ = occupant(len, 0x5c);
    let (exit, rep) = in_child_trapped(&old_kernel, |out| {
        let lines = tk::maps_line_count();
        let e = Reservation::reserve_fixed(occ, len);
        out.push(u64::from(
            e.is_err_and(|e| e.errno() == Some(libc::EEXIST) && !e.changed()),
        ));
        out.push(u64::from(holds(occ, len, 0x5c)));
        out.push(u64::from(tk::maps_line_count() == lines)); // the stray mapping is gone
                                                             // SAFETY: the occupant is ours (inherited).
        unsafe { libc::munmap(occ as *mut _, len) };
        let r = Reservation::reserve_fixed(occ, len);
        out.push(u64::from(
            r.as_ref().is_ok_and(|r| r.as_ptr() as usize == occ),
        ));
        out.push(u64::from(tk::trap_counts(0).passed));
        0
    });
    assert!(exit.is_success(), "{exit:?}");
    // Both calls went through the trap (the flag really was taken away).
    assert_eq!(rep.as_slice(), &[1, 1, 1, 1, 2]);
    // SAFETY: ours (still mapped in the parent).
    unsafe { libc::munmap(occ as *mut _, len) };
}

/// Reservations of 1 GiB or more, and osmem's metadata arena, start on a 1 GiB boundary and
/// are mapped there (`/proc/self/maps`), so none shares a page-table page with a neighbour;
/// smaller ones are placed wherever the kernel puts them.
#[test]
fn large_reservations_start_on_a_page_table_page_boundary() {
    const G: usize = 1 << 30;
    let span = osmem::page_size().pow(3) / 64;
    assert_eq!(span, if osmem::page_size() == 4096 { G } else { span });
    for len in [G, 3 * G + 5 * osmem::page_size()] {
        let r = Reservation::reserve(len).unwrap();
        let base = r.as_ptr() as usize;
        assert_eq!(base % span, 0, "{len:#x} at {base:#x}");
        // The kernel holds the whole range there (its VMA may have merged with a neighbour
        // reserved the same way by another test).
        let v = tk::vma_at(base).expect("a mapping");
        assert!(v.start <= base && v.end >= base + len, "{v:?}");
    }
    let m = osmem::metadata_range().expect("the arena");
    if m.end - m.start >= span {
        assert_eq!(m.start % span, 0, "the arena: {m:?}");
        assert!(tk::vma_at(m.start).is_some(), "the arena mapping");
    }
}

/// An aligned `reserve` keeps its slack (one mmap, no trim) and gives all of it back at drop
/// (one munmap): in a forked child (one thread: nothing else maps meanwhile), the mapping
/// covers the reservation, and after the drop the maps are as they were before it.
#[test]
fn an_aligned_reserve_gives_back_its_slack() {
    const G: usize = 1 << 30;
    // osmem's first use (probe, metadata arena, registry) before the child measures.
    drop(Reservation::reserve(G).unwrap());
    let (exit, rep) = tk::in_child_report(|out| {
        let before = tk::maps_line_count();
        let s0 = osmem::stats();
        let r = Reservation::reserve(G).unwrap();
        let base = r.as_ptr() as usize;
        let s1 = osmem::stats();
        let v = tk::vma_at(base).unwrap();
        out.push((base % G == 0) as u64);
        // (Its VMA may have merged with a neighbour reserved the same way by another test's
        // thread before the fork: only the range is checked, and the maps as a whole.)
        out.push((v.start <= base && v.end >= base + G) as u64);
        out.push(s1.mmap_calls - s0.mmap_calls);
        out.push(s1.munmap_calls - s0.munmap_calls);
        drop(r);
        let s2 = osmem::stats();
        out.push(s2.munmap_calls - s1.munmap_calls);
        // Nothing of it is left: not the range, not the slack (the maps are as before).
        out.push(tk::vma_at(base).is_none() as u64);
        out.push((tk::maps_line_count() == before) as u64);
        0
    });
    assert!(exit.is_success(), "{exit:?}");
    assert_eq!(rep.as_slice(), &[1, 1, 1, 0, 1, 1, 1]);
}
