//! Huge-page hints: Go's sysHugePage / sysNoHugePage / sysHugePageCollapse.
//!
//! `MADV_HUGEPAGE` is applied only to the PMD-aligned interior of the range, as Go does: the
//! flag is per VMA, so hinting a partial huge page at either end would only split VMAs for
//! pages that can never be huge. `MADV_COLLAPSE` is synchronous and can fail with EAGAIN when
//! it races with other faults or cannot get a huge page right now; it is retried a bounded
//! number of times (see `advise::retry`), never downgraded for that.

use crate::advise;
use crate::error::{Error, Op, Syscall};
use crate::stats::{self, Counter};
use crate::sys::linux as sys;

/// The PMD-aligned interior of `[addr, addr+len)`, if it holds at least one huge page.
pub(crate) fn interior(addr: usize, len: usize, pmd: usize) -> Option<(usize, usize)> {
    if pmd == 0 {
        return None;
    }
    let beg = addr.checked_add(pmd - 1)? & !(pmd - 1);
    let end = (addr + len) & !(pmd - 1);
    (end > beg).then(|| (beg, end - beg))
}

pub(crate) fn hint(op: Op, addr: usize, len: usize, advice: i32) -> Result<(), Error> {
    advise::advise(addr, len, advice).map_err(|errno| Error::Os {
        op,
        call: Syscall::Madvise(advice),
        errno,
        changed: false,
    })
}

pub(crate) fn skipped() {
    stats::bump(Counter::HugeHintsSkipped);
}

pub(crate) const HUGEPAGE: i32 = sys::MADV_HUGEPAGE;
pub(crate) const NOHUGEPAGE: i32 = sys::MADV_NOHUGEPAGE;
pub(crate) const COLLAPSE: i32 = sys::MADV_COLLAPSE;
