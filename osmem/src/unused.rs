//! The unused chain (Ready → Prepared): Go's sysUnused, with its fall back on mmap when
//! madvise is missing, done right.
//!
//! Links, in order: `MADV_FREE` (only when asked for) → `MADV_DONTNEED` (→ `MADV_DONTNEED_LOCKED`
//! for an mlocked range) → `mmap(RW, MAP_FIXED)` over the range. Each madvise link follows the
//! errno rules in `advise.rs`; the remap is the last link, and unlike Go its result is
//! checked: if it fails, the call returns an error saying nothing was released instead of
//! pretending.
//!
//! Locked memory: the kernel refuses FREE and DONTNEED on an mlocked range (EINVAL).
//! `MADV_DONTNEED_LOCKED` releases it and keeps the lock; where the kernel lacks it (before
//! 5.18) nothing can release locked memory and keep the lock, so the call fails with
//! `Error::Locked` and changes nothing rather than remapping (which under
//! `mlockall(MCL_FUTURE)` would lock and fault in fresh pages, releasing nothing). When the
//! remap runs anyway (asked for, or madvise missing) in a process where locked memory has been
//! seen (or madvise is missing), one `mincore` of its first page tells whether the kernel
//! faulted the new pages in: then the result says `released: false`. (A process that locks
//! everything only after osmem's first use and forces the remap link is the one case not
//! asked; checked mode asks always.)
//!
//! Why the remap is safe as a last resort: the range is inside a mapping osmem owns, so
//! MAP_FIXED replaces only osmem's own pages; Go relies on the same argument (it must never
//! munmap heap memory, so remapping is the only way to drop pages without madvise).

use crate::advise::{self, DontNeed, Remap};
use crate::config::UnusedAdvice;
use crate::error::{Error, Op, Syscall};
use crate::stats::{self, Counter};
use crate::sys::linux as sys;

/// Which link of the unused chain released the range ([`Unused::how`]).
///
/// ```
/// use osmem::{Reservation, UnusedAdvice, UnusedHow};
/// let r = Reservation::alloc(4096)?;
/// // SAFETY: nothing refers to the range.
/// let u = unsafe { r.unused_with(0, 4096, UnusedAdvice::Remap)? };
/// assert_eq!(u.how, UnusedHow::Remap);
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnusedHow {
    /// `MADV_FREE`: released lazily; RSS drops only under memory pressure.
    Free,
    /// `MADV_DONTNEED`: released now.
    DontNeed,
    /// `MADV_DONTNEED_LOCKED`: released now; a locked range stays locked (its pages come back
    /// locked when touched). Used for a range the kernel refused `MADV_DONTNEED` for (it is
    /// mlocked), and from then on for every `DontNeed` release of the process, locked or not
    /// (the same call on unlocked memory: a locked range then costs one call, not three).
    DontNeedLocked,
    /// `mmap(RW, MAP_FIXED)`: replaced by fresh zero pages.
    Remap,
}

/// What `unused` did, returned per call (Go's `needZeroAfterSysUnused`, but per call rather
/// than a process-wide guess).
///
/// ```
/// let r = osmem::Reservation::alloc(1 << 16)?;
/// let u = unsafe { r.unused(0, 1 << 16)? };
/// if u.zeroed {
///     // the next `used` hands out zero-filled memory: no need to clear it
/// }
/// # Ok::<(), osmem::Error>(())
/// ```
///
/// Every result and report type of osmem is `#[must_use]`: a release that did not do what
/// the caller assumed (not zeroed, not released) cannot be dropped unseen.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// let r = osmem::Reservation::alloc(1 << 16).unwrap();
/// unsafe { r.unused(0, 1 << 16) }.unwrap(); // error: unused `Unused` that must be used
/// ```
#[must_use = "what the kernel was asked and holds now: a release that was not what the caller assumed must be seen"]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unused {
    /// The link that released the range.
    pub how: UnusedHow,
    /// The range is known to read as zeros once Ready again (false after MADV_FREE, whose
    /// pages keep their data until the kernel actually reclaims them).
    pub zeroed: bool,
    /// harddecommit made the range PROT_NONE (false if the knob is off or the protection
    /// could not be applied, e.g. at the VMA limit; the memory is released either way).
    pub protected: bool,
    /// The kernel dropped the pages (with `Free`: may drop them at any time). `false` only
    /// when the remap link ran on memory the kernel locks and faults in again (a process
    /// under `mlockall(MCL_FUTURE)`): the range reads zero but is still resident. Counted in
    /// `unused_not_released`.
    pub released: bool,
}

/// Release `[addr, addr+len)` (at `offset` in its region, for errors), which is Ready and
/// owned by osmem. Returns the link and whether the kernel really dropped the pages.
// Inlined into its callers, like every function on an operation's path that carries this
// note: each call frame there costs about 6 ns on the machines this was measured on (a chain
// of nested calls around one system call, and the same chain without it: osmem-bench's
// `call_depth` example), which is as much as osmem's own work on a small range. Fewer frames
// was the largest single saving in osmem's cost per call.
#[inline(always)]
pub(crate) fn release(
    addr: usize,
    len: usize,
    offset: usize,
    start: UnusedAdvice,
    remap: Remap,
) -> Result<(UnusedHow, bool), Error> {
    if start == UnusedAdvice::Free {
        if advise::advise(addr, len, sys::MADV_FREE).is_ok() {
            return Ok((UnusedHow::Free, true));
        }
        stats::bump(Counter::FallbackUnusedFree);
    }
    if start != UnusedAdvice::Remap {
        match advise::dontneed(addr, len) {
            DontNeed::Released => return Ok((UnusedHow::DontNeed, true)),
            DontNeed::ReleasedLocked => return Ok((UnusedHow::DontNeedLocked, true)),
            DontNeed::Locked => {
                return Err(Error::Locked {
                    op: Op::Unused,
                    offset,
                    len,
                })
            }
            DontNeed::Failed => stats::bump(Counter::FallbackUnusedRemap),
        }
    }
    // SAFETY: the range is inside osmem's own mapping and the caller gave up its contents.
    match advise::remap_fixed(addr, len, sys::PROT_RW, remap) {
        Ok(_) => {
            // Fresh pages are faulted in by mmap only if the kernel locks them (mlockall with
            // MCL_FUTURE): then the memory is still held, and the result must say so. Asked
            // where locked memory has been seen, or where the remap is the only release.
            let ask = advise::locked_seen() || !advise::usable(advise::D_DONTNEED);
            let released = !ask || {
                let ps = crate::probe::page_size();
                sys::resident_pages(addr, ps, ps).map_or(true, |n| n == 0)
            };
            if !released {
                stats::bump(Counter::UnusedNotReleased);
            }
            Ok((UnusedHow::Remap, released))
        }
        Err(errno) => Err(Error::Os {
            op: Op::Unused,
            call: Syscall::Mmap,
            errno,
            // `changed`: the range is Reserved now (see `remap_failed`); the caller settles it
            // there. No data the caller still wanted is involved either way: the range was
            // being discarded.
            changed: remap_failed(addr, len) != Left::Intact,
        }),
    }
}

/// What a failed `MAP_FIXED` remap left of the range.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Left {
    /// The old mapping, as it was (still Ready, contents intact).
    Intact,
    /// A hole, taken back as a `PROT_NONE` mapping: the range is Reserved.
    Reserved,
    /// A hole osmem could not take back: nothing is mapped there.
    Hole,
}

/// A `MAP_FIXED` mmap first gathers the old mapping for unmapping; if it fails before clearing
/// its page tables (the address-space and overcommit checks), the kernel puts the old
/// mapping back as it was; if it fails after (allocating the new VMA or the tree's nodes), it
/// cannot, and leaves a hole the size of the call (`vms_abort_munmap_vmas` in mm/vma.c, Linux
/// ≥ 6.12; older kernels left a hole for any failure past the unmap). mincore tells which: it
/// fails with ENOMEM on an unmapped page. A hole is taken back at once with a `PROT_NONE`
/// `MAP_FIXED_NOREPLACE` mapping, which replaces nothing of anyone else's: the range is then
/// Reserved, as a reservation's unused address space is. If even that fails, another mapping
/// got there first or memory is short; the hole is counted (`remap_holes_left`) and the range
/// reads Reserved all the same (osmem has no state for address space it does not hold; a
/// later `map` remaps it with `MAP_FIXED`).
#[cold]
#[inline(never)]
fn remap_failed(addr: usize, len: usize) -> Left {
    let ps = crate::probe::page_size();
    let mapped = |a: usize| {
        let mut v = [0u8; 1];
        sys::mincore(a, ps, &mut v, ps).is_ok()
    };
    if mapped(addr) && mapped(addr + len - ps) {
        return Left::Intact;
    }
    stats::bump(Counter::RemapHoles);
    match sys::mmap_noreplace(addr, len) {
        Ok(_) => Left::Reserved,
        Err(_) => {
            stats::bump(Counter::RemapHolesLeft);
            Left::Hole
        }
    }
}

/// The link `unused` would start with now, given the knob and the downgrades so far.
pub(crate) fn first_link(start: UnusedAdvice) -> UnusedHow {
    match start {
        UnusedAdvice::Free if advise::usable(advise::D_FREE) => UnusedHow::Free,
        UnusedAdvice::Free | UnusedAdvice::DontNeed if advise::usable(advise::D_DONTNEED) => {
            UnusedHow::DontNeed
        }
        _ => UnusedHow::Remap,
    }
}
