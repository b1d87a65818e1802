//! madvise under the errno rules below, shared by every chain that advises.
//!
//! Go downgrades the whole process for ever on *any* madvise error, even a transient EAGAIN
//! or an EINVAL that only meant "this range is mlocked". Here each errno means what the
//! kernel says it means:
//!
//! - `ENOSYS`: madvise itself may be absent (kernels built without `CONFIG_ADVISE_SYSCALLS`),
//!   or a filter (a sandbox that tightened, a seccomp filter installed at run time) refuses
//!   this one advice. A zero-length `MADV_NORMAL`, which every madvise knows and which changes
//!   nothing, tells which: only if it too answers ENOSYS is madvise gone (sticky downgrade of
//!   every advice); otherwise only this advice is downgraded. (Taking one refused hint for
//!   "no madvise" would turn every later release and fault into a `MAP_FIXED` remap.)
//! - `EPERM` / `EACCES`: policy (seccomp, an LSM) → sticky downgrade of this advice.
//! - `EINVAL`: either the advice is unknown or the argument is bad for this range → ask the
//!   kernel with a zero-length call; only "unknown" downgrades, otherwise this call alone falls
//!   to the next link.
//! - `EAGAIN` / `EINTR`: transient → retried a bounded number of times, never a downgrade.
//! - anything else: this call falls to the next link.
//!
//! A downgrade is a bit in one atomic word, set with `fetch_or` so it is counted exactly once
//! even when several threads hit the same failure at the same time.

use crate::stats::{self, Counter};
use crate::sys::linux::{self as sys, Errno};
use core::sync::atomic::{AtomicU32, Ordering};

/// Retries of a transient error before the call falls to the next link.
pub(crate) const TRANSIENT_RETRIES: usize = 4;

pub(crate) const D_MADVISE: u32 = 1 << 0;
pub(crate) const D_FREE: u32 = 1 << 1;
pub(crate) const D_DONTNEED: u32 = 1 << 2;
pub(crate) const D_GUARD: u32 = 1 << 3;
pub(crate) const D_COLLAPSE: u32 = 1 << 4;
/// process_madvise as a whole.
pub(crate) const D_PM: u32 = 1 << 5;
/// The PIDFD_SELF sentinel (fall back to pidfd_open).
pub(crate) const D_PM_SELF: u32 = 1 << 6;
/// process_madvise with one advice (it accepted only a few advice values before Linux 6.13).
pub(crate) const D_PM_FREE: u32 = 1 << 7;
pub(crate) const D_PM_DONTNEED: u32 = 1 << 8;
pub(crate) const D_PM_GUARD: u32 = 1 << 9;
/// Mapping names (PR_SET_VMA_ANON_NAME).
pub(crate) const D_ANON_NAME: u32 = 1 << 10;
pub(crate) const D_POPULATE: u32 = 1 << 11;
pub(crate) const D_HUGEPAGE: u32 = 1 << 12;
pub(crate) const D_NOHUGEPAGE: u32 = 1 << 13;
pub(crate) const D_DONTNEED_LOCKED: u32 = 1 << 14;
/// Residency queries: the PAGEMAP_SCAN ioctl, and reading `/proc/self/pagemap` (residency.rs).
pub(crate) const D_SCAN: u32 = 1 << 15;
pub(crate) const D_PAGEMAP: u32 = 1 << 16;
/// process_madvise with MADV_DONTNEED_LOCKED (a batch over mlocked memory).
pub(crate) const D_PM_DONTNEED_LOCKED: u32 = 1 << 17;

/// The sticky downgrades: one of the hot words kept beside the counters (stats.rs).
#[inline(always)]
fn downgraded() -> &'static AtomicU32 {
    stats::word(stats::Word::Downgraded)
}

/// `Word::Flags`: locked memory has been seen (see `saw_locked`).
const F_LOCKED_SEEN: u32 = 1;

/// Locked memory has been seen in this process: the kernel refused a release because a range
/// was mlocked, or the probe's scratch page was born locked (`mlockall(MCL_FUTURE)` before
/// osmem's first use). From then on DONTNEED releases (per range and batched) start with
/// `MADV_DONTNEED_LOCKED`, and the remap link checks whether the kernel faulted the fresh
/// pages back in (one `mincore`, ~1 µs here: too dear for every remap of a process that never
/// locks anything).
pub(crate) fn saw_locked() {
    stats::word(stats::Word::Flags).fetch_or(F_LOCKED_SEEN, Ordering::Relaxed);
}

pub(crate) fn locked_seen() -> bool {
    stats::word(stats::Word::Flags).load(Ordering::Relaxed) & F_LOCKED_SEEN != 0
}

fn bit_of(advice: i32) -> u32 {
    match advice {
        sys::MADV_FREE => D_FREE,
        sys::MADV_DONTNEED => D_DONTNEED,
        sys::MADV_GUARD_INSTALL | sys::MADV_GUARD_REMOVE => D_GUARD,
        sys::MADV_COLLAPSE => D_COLLAPSE,
        sys::MADV_POPULATE_WRITE => D_POPULATE,
        sys::MADV_HUGEPAGE => D_HUGEPAGE,
        sys::MADV_NOHUGEPAGE => D_NOHUGEPAGE,
        sys::MADV_DONTNEED_LOCKED => D_DONTNEED_LOCKED,
        _ => 0,
    }
}

/// Is this madvise primitive still believed to work?
#[inline]
pub(crate) fn usable(bit: u32) -> bool {
    downgraded().load(Ordering::Relaxed) & (bit | D_MADVISE) == 0
}

/// Is this downgrade bit clear? (For process_madvise bits, which do not depend on madvise.)
#[inline]
pub(crate) fn clear(bit: u32) -> bool {
    downgraded().load(Ordering::Relaxed) & bit == 0
}

/// Mark a primitive as not working, for the rest of the process; counted once.
pub(crate) fn downgrade(bit: u32) {
    let old = downgraded().fetch_or(bit, Ordering::Relaxed);
    if old & bit == 0 {
        stats::bump(match bit {
            D_MADVISE => Counter::DowngradeMadvise,
            D_FREE => Counter::DowngradeFree,
            D_DONTNEED => Counter::DowngradeDontneed,
            D_GUARD => Counter::DowngradeGuard,
            D_COLLAPSE => Counter::DowngradeCollapse,
            D_PM_SELF => Counter::DowngradePidfdSelf,
            D_ANON_NAME => Counter::DowngradeAnonName,
            D_POPULATE | D_HUGEPAGE | D_NOHUGEPAGE => Counter::DowngradeHints,
            D_DONTNEED_LOCKED => Counter::DowngradeDontneedLocked,
            D_SCAN => Counter::DowngradePagemapScan,
            D_PAGEMAP => Counter::DowngradePagemap,
            _ => Counter::DowngradeProcessMadvise,
        });
    }
}

/// Retry `f` while it fails transiently (EAGAIN/EINTR), a bounded number of times.
#[inline(always)] // see unused::release
pub(crate) fn retry<T>(mut f: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    let mut left = TRANSIENT_RETRIES;
    loop {
        match f() {
            Err(Errno::EAGAIN | Errno::EINTR) if left > 0 => {
                left -= 1;
                stats::bump(Counter::TransientRetries);
            }
            r => return r,
        }
    }
}

/// madvise with the rules above. `Err` means "this link failed for this call"; the caller
/// moves to its next link. A downgraded advice is not issued at all (`Err(ENOSYS)`).
#[inline(always)] // see unused::release
pub(crate) fn advise(addr: usize, len: usize, advice: i32) -> Result<(), Errno> {
    let bit = bit_of(advice);
    if !usable(bit) {
        return Err(Errno::ENOSYS);
    }
    // SAFETY: callers pass ranges inside a region osmem owns, in a state the transition
    // table allows this advice for.
    let r = retry(|| unsafe { sys::madvise(addr, len, advice) });
    if let Err(e) = r {
        on_error(e, bit, addr, advice);
    }
    r
}

/// The errno rules, out of line: the success path of every advice stays a few instructions.
#[cold]
#[inline(never)]
fn on_error(e: Errno, bit: u32, addr: usize, advice: i32) {
    match e {
        Errno::ENOSYS if sys::madvise_known(addr, sys::MADV_NORMAL) == Err(Errno::ENOSYS) => {
            downgrade(D_MADVISE)
        }
        Errno::ENOSYS if bit != 0 => downgrade(bit),
        Errno::EPERM | Errno::EACCES if bit != 0 => downgrade(bit),
        Errno::EINVAL if bit != 0 && !advice_known(addr, advice) => downgrade(bit),
        _ => {}
    }
}

/// What releasing a range with `MADV_DONTNEED` came to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum DontNeed {
    /// Released.
    Released,
    /// The range is mlocked: released with `MADV_DONTNEED_LOCKED`, still locked.
    ReleasedLocked,
    /// The range is mlocked and this kernel cannot release locked memory.
    Locked,
    /// `MADV_DONTNEED` failed (or is downgraded) for another reason: the caller's next link.
    Failed,
}

/// Release `[addr, addr+len)` now: `MADV_DONTNEED`, and where the kernel refuses it because
/// the range is mlocked, `MADV_DONTNEED_LOCKED` (Linux ≥ 5.18), which releases it and keeps
/// the lock. (On osmem's private anonymous memory a per-call EINVAL for an advice the kernel
/// knows means `VM_LOCKED`. The remap, the chains' last link, is no answer for locked memory:
/// under `mlockall(MCL_FUTURE)` the new pages are locked and faulted in again, and otherwise
/// the range silently loses its lock.)
#[inline(always)] // see unused::release
pub(crate) fn dontneed(addr: usize, len: usize) -> DontNeed {
    // Locked memory seen in this process: start with MADV_DONTNEED_LOCKED (the same as
    // DONTNEED on unlocked memory), so a locked range costs one call, not three (DONTNEED
    // refused, the zero-length call that tells a refused range from an unknown advice,
    // DONTNEED_LOCKED). A batch starts there too (batch.rs).
    if locked_seen()
        && usable(D_DONTNEED_LOCKED)
        && advise(addr, len, sys::MADV_DONTNEED_LOCKED).is_ok()
    {
        return DontNeed::ReleasedLocked;
    }
    match advise(addr, len, sys::MADV_DONTNEED) {
        Ok(()) => DontNeed::Released,
        // Still usable after the errno rules ran: the advice is known, this range refused it.
        Err(Errno::EINVAL) if usable(D_DONTNEED) => {
            saw_locked();
            stats::bump(Counter::FallbackLocked);
            match advise(addr, len, sys::MADV_DONTNEED_LOCKED) {
                Ok(()) => DontNeed::ReleasedLocked,
                Err(_) => DontNeed::Locked,
            }
        }
        Err(_) => DontNeed::Failed,
    }
}

/// How a `MAP_FIXED` remap inside a region must map: with the region's own `MAP_NORESERVE`
/// (so the kernel can merge it back into one VMA), and with `MADV_NOHUGEPAGE` again if the
/// region's `thp` knob says never (a fresh mapping loses the VMA's hints).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Remap {
    pub(crate) noreserve: bool,
    pub(crate) thp_never: bool,
}

/// A fresh `PROT_NONE` mapping of `len` bytes starting on a multiple of `align` (a power of
/// two, at least the page size), near `hint` if the kernel can: over-reserve by `align - page`,
/// then, with `trim`, unmap head and tail (Go's sysReserveAligned; a trim refused for good, in
/// a sandbox, leaves `PROT_NONE` address space with no memory behind it). Returns the aligned
/// start and the slack kept before and after it (zero with `trim`): without `trim` the
/// mapping is `[start - head, start + len + tail)`, one `mmap` and, when it goes, one `munmap`.
pub(crate) fn map_aligned(
    hint: usize,
    len: usize,
    align: usize,
    noreserve: bool,
    trim: bool,
) -> Result<(usize, usize, usize), MapAligned> {
    let ps = sys::page_size();
    let extra = align - ps;
    let total = len.checked_add(extra).ok_or(MapAligned::Overflow)?;
    // SAFETY: a fresh mapping (without MAP_FIXED the hint never replaces anything).
    let raw = retry(|| unsafe { sys::mmap_anon(hint, total, sys::PROT_NONE, false, noreserve) })
        .map_err(MapAligned::Os)?;
    let base = (raw + extra) & !(align - 1);
    let (head, tail) = (base - raw, raw + total - (base + len));
    if !trim {
        return Ok((base, head, tail));
    }
    // SAFETY: head and tail are parts of the mapping just created, not handed out.
    unsafe {
        if head > 0 {
            let _ = retry(|| sys::munmap(raw, head));
        }
        if tail > 0 {
            let _ = retry(|| sys::munmap(base + len, tail));
        }
    }
    Ok((base, 0, 0))
}

/// Why [`map_aligned`] failed.
#[derive(Copy, Clone, Debug)]
pub(crate) enum MapAligned {
    /// `len + align` overflows.
    Overflow,
    /// The mmap failed.
    Os(Errno),
}

/// Is `advice` known to the kernel? The tie-breaker of the EINVAL rule: EINVAL from a real
/// call may mean "unknown advice" or "bad argument for this range"; a zero-length call at the
/// same (aligned) address fails only in the first case.
fn advice_known(addr: usize, advice: i32) -> bool {
    sys::madvise_known(addr, advice).is_ok()
}

/// The span of memory one page-table page of PMD entries maps (`page³/64`: 1 GiB with 4 KiB
/// pages). A mapping that starts on such a boundary and is a multiple of it long shares no
/// page-table page with its neighbours: the kernel then finds its untouched parts empty at
/// the PUD level and walks nothing when releasing them. A mapping that shares one with a
/// touched neighbour makes every `MADV_DONTNEED` over it walk that table's 512 entries per
/// GiB, whether anything is there or not (measured: `madvise(DONTNEED)` of an untouched
/// 1 GiB range 134 ns on a mapping of its own, 455 ns on one beside osmem's touched metadata
/// arena).
pub(crate) fn pmd_table_span() -> usize {
    let ps = sys::page_size();
    ps.saturating_mul(ps / 8).saturating_mul(ps / 8)
}

/// Where a mapping of `len` bytes should start: on a [`pmd_table_span`] boundary if it is at
/// least that long (it then shares no page-table page with a neighbour), else anywhere (the
/// page size).
pub(crate) fn placement_align(len: usize) -> usize {
    let span = pmd_table_span();
    if len >= span {
        span
    } else {
        sys::page_size()
    }
}

/// `mmap(prot, MAP_FIXED)` over `[addr, addr+len)`, a range inside a mapping osmem owns whose
/// contents the caller gave up, retrying transient errors. `thp=never` is put back (Go
/// re-applies it after its MAP_FIXED in sysMapOS too), so the knob holds whatever link of a
/// chain a range went through.
#[inline(always)] // see unused::release
pub(crate) fn remap_fixed(addr: usize, len: usize, prot: i32, how: Remap) -> Result<(), Errno> {
    // SAFETY: the caller's contract above: osmem's own range, contents given up.
    retry(|| unsafe { sys::mmap_anon(addr, len, prot, true, how.noreserve) })?;
    if how.thp_never {
        let _ = advise(addr, len, sys::MADV_NOHUGEPAGE);
    }
    Ok(())
}
