//! The fault chain (Ready → Faulted): drop the pages and make any access trap.
//!
//! Strategies (measured with osmem-bench on Linux 6.18):
//! - `Guard`: `MADV_GUARD_INSTALL`. No VMA split, never takes mmap_lock for writing, and
//!   66k guards cost 0 VMAs, so it cannot run into `vm.max_map_count`. EINVAL on mlocked
//!   ranges, so a per-call failure falls to `Protect`.
//! - `Protect`: `MADV_DONTNEED` then `mprotect(PROT_NONE)`. One TLB shootdown (the zap);
//!   the protection change then has no PTEs to rewrite, so the write-lock hold is tiny.
//! - `Go`: what Go's sysFault does since it stopped remapping: `mprotect(PROT_NONE)` then
//!   `MADV_DONTNEED`: two shootdowns, and 427 µs under mmap_lock(W) at 64 MiB. Kept
//!   selectable for comparison.
//! - `Remap`: `mmap(PROT_NONE, MAP_FIXED)`, what Go's sysFault did before that; the whole
//!   zap under the write lock, but it also returns the commit charge.
//!
//! Fallback rules: when the protecting step fails (ENOMEM at the VMA limit, or policy), the
//! memory is still released with DONTNEED, guard markers (which need no VMA) are tried, and
//! only if they too are missing does the result say the range does *not* trap.
//! When releasing fails, the range is remapped PROT_NONE. Go ignores every error here; osmem
//! never loses the release and always says what it got.

use crate::advise::{self, Remap};
use crate::config::FaultStrategy;
use crate::error::{Error, Op, Syscall};
use crate::probe;
use crate::stats::{self, Counter};
use crate::sys::linux::{self as sys, Errno};

/// How `fault` left the range: the link of the fault chain that ran ([`Faulted::how`]).
///
/// ```
/// use osmem::{FaultHow, Reservation};
/// let r = Reservation::alloc(4096)?;
/// // SAFETY: nothing refers to the range.
/// let f = unsafe { r.fault(0, 4096)? };
/// match f.how {
///     FaultHow::Guard => println!("guard markers: no VMA split"),
///     FaultHow::ReleasedOnly => println!("released, but it does not trap"),
///     other => println!("PROT_NONE ({other:?})"),
/// }
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultHow {
    /// Guard markers: access raises SIGSEGV with `SEGV_MAPERR`.
    Guard,
    /// DONTNEED then PROT_NONE: access raises SIGSEGV with `SEGV_ACCERR`.
    Protect,
    /// PROT_NONE then DONTNEED (Go's order): `SEGV_ACCERR`.
    Go,
    /// Replaced by a PROT_NONE mapping: `SEGV_ACCERR`.
    Remap,
    /// Released (reads zero) but **not** trapping: the protecting step failed, typically
    /// because the process is at `vm.max_map_count`. Counted in `fallback_fault_open`. The
    /// pages are then [`State::Prepared`](crate::State::Prepared), which is what the kernel
    /// has (released, accessible, reading zero), not `Faulted`: [`used`](crate::Reservation::used)
    /// makes them Ready again, and `map` refuses them as it refuses any Prepared page.
    ReleasedOnly,
}

/// What `fault` did.
///
/// ```
/// let r = osmem::Reservation::alloc(1 << 16)?;
/// let f = unsafe { r.fault(0, 4096)? };
/// assert!(f.traps());
/// # Ok::<(), osmem::Error>(())
/// ```
#[must_use = "a fault that does not trap (`ReleasedOnly`) must be seen"]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Faulted {
    /// The link that faulted the range.
    pub how: FaultHow,
}

impl Faulted {
    /// Whether an access to the range now traps.
    ///
    /// ```
    /// let r = osmem::Reservation::alloc(4096)?;
    /// let f = unsafe { r.fault_with(0, 4096, osmem::FaultStrategy::Go)? };
    /// assert!(f.traps());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn traps(&self) -> bool {
        self.how != FaultHow::ReleasedOnly
    }
}

/// `Auto` resolved against the probe and the downgrades so far. What the probe found missing
/// is a downgrade from the start (probe.rs), and the probe has run once any reservation
/// exists, so on an operation path the downgrade word alone answers.
#[inline]
pub(crate) fn resolve(s: FaultStrategy) -> FaultStrategy {
    match s {
        FaultStrategy::Auto if advise::usable(advise::D_GUARD) => FaultStrategy::Guard,
        // Without DONTNEED the Protect chain can only end on the remap: name that link.
        FaultStrategy::Auto if !advise::usable(advise::D_DONTNEED) => FaultStrategy::Remap,
        FaultStrategy::Auto => FaultStrategy::Protect,
        s => s,
    }
}

/// The strategy whose link a fault with `s` will really end on now, given the probe and the
/// sticky downgrades: what `selected()` names. A forced `Guard` without guard markers runs
/// the `Protect` link; `Guard`, `Protect` and `Go` without `MADV_DONTNEED` end on the remap.
/// (The chains themselves still start from the configured strategy, so every fall from it
/// is counted per call.)
pub(crate) fn effective(s: FaultStrategy) -> FaultStrategy {
    // Called without any reservation (`selected()`): make sure the probe has run.
    let guards = probe::probe().advice.guard_install && advise::usable(advise::D_GUARD);
    match resolve(s) {
        FaultStrategy::Guard if guards => FaultStrategy::Guard,
        FaultStrategy::Remap => FaultStrategy::Remap,
        _ if !advise::usable(advise::D_DONTNEED) => FaultStrategy::Remap,
        FaultStrategy::Guard => FaultStrategy::Protect,
        s => s,
    }
}

/// Fault `[addr, addr+len)`, which is Ready and owned by osmem.
#[inline(always)] // see unused::release
pub(crate) fn fault(
    addr: usize,
    len: usize,
    s: FaultStrategy,
    remap_how: Remap,
) -> Result<FaultHow, Error> {
    // An mlocked range is released with MADV_DONTNEED_LOCKED (see advise::dontneed).
    let dontneed = || {
        matches!(
            advise::dontneed(addr, len),
            advise::DontNeed::Released | advise::DontNeed::ReleasedLocked
        )
    };
    // SAFETY (all blocks below): the range is inside osmem's own mapping, Ready, and the
    // caller of `Reservation::fault` promised nothing references it any more.
    let protect = || advise::retry(|| unsafe { sys::mprotect(addr, len, sys::PROT_NONE) });
    match resolve(s) {
        FaultStrategy::Guard => {
            if advise::advise(addr, len, sys::MADV_GUARD_INSTALL).is_ok() {
                return Ok(FaultHow::Guard);
            }
            stats::bump(Counter::FallbackFaultGuard);
            protect_after_release(addr, len, dontneed(), protect, remap_how)
        }
        FaultStrategy::Protect | FaultStrategy::Auto => {
            protect_after_release(addr, len, dontneed(), protect, remap_how)
        }
        FaultStrategy::Go => {
            let protected = protect().is_ok();
            match (protected, dontneed()) {
                (true, true) => Ok(FaultHow::Go),
                (false, true) => Ok(unprotectable(addr, len)),
                (_, false) => remap(addr, len, remap_how, protected),
            }
        }
        FaultStrategy::Remap => remap(addr, len, remap_how, false),
    }
}

#[inline(always)] // see unused::release
fn protect_after_release(
    addr: usize,
    len: usize,
    released: bool,
    protect: impl Fn() -> Result<(), Errno>,
    remap_how: Remap,
) -> Result<FaultHow, Error> {
    if !released {
        stats::bump(Counter::FallbackFaultRemap);
        return remap(addr, len, remap_how, false);
    }
    match protect() {
        Ok(()) => Ok(FaultHow::Protect),
        Err(_) => Ok(unprotectable(addr, len)),
    }
}

/// The range is released but the protecting step failed — almost always ENOMEM at
/// `vm.max_map_count`, since protecting part of a VMA splits it. Guard markers need no VMA, so
/// they still make the range trap where the kernel has them; otherwise the release stands and
/// the caller is told the range does not trap. The release is never lost.
pub(crate) fn unprotectable(addr: usize, len: usize) -> FaultHow {
    if advise::usable(advise::D_GUARD) && advise::advise(addr, len, sys::MADV_GUARD_INSTALL).is_ok()
    {
        stats::bump(Counter::FallbackFaultGuard);
        return FaultHow::Guard;
    }
    stats::bump(Counter::FallbackFaultOpen);
    FaultHow::ReleasedOnly
}

/// Last links: replace the range with PROT_NONE; if even that fails (VMA limit), release it
/// with DONTNEED and make it trap with guard markers if possible, else report that it does
/// not trap.
#[inline(always)] // see unused::release
fn remap(addr: usize, len: usize, remap_how: Remap, protected: bool) -> Result<FaultHow, Error> {
    let r = advise::remap_fixed(addr, len, sys::PROT_NONE, remap_how);
    let errno = match r {
        Ok(_) => return Ok(FaultHow::Remap),
        Err(e) => e,
    };
    if matches!(
        advise::dontneed(addr, len),
        advise::DontNeed::Released | advise::DontNeed::ReleasedLocked
    ) {
        // Released; a protection applied by an earlier link (Go's order) still stands.
        return Ok(if protected {
            FaultHow::Go
        } else {
            unprotectable(addr, len)
        });
    }
    // Nothing released. Undo a protection an earlier link applied so the range is exactly
    // as it was (Ready), and say whether that worked.
    // SAFETY: see `fault`.
    let changed = protected && unsafe { sys::mprotect(addr, len, sys::PROT_RW) }.is_err();
    Err(Error::Os {
        op: Op::Fault,
        call: Syscall::Mmap,
        errno,
        changed,
    })
}
