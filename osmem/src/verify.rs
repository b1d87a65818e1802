//! Checked mode: ask the kernel whether a transition did what its syscalls reported.
//!
//! Two questions, each one cheap syscall, neither of which changes a correct range:
//! - released? A residency query (residency.rs: the PAGEMAP_SCAN ioctl, pagemap, or mincore,
//!   whichever works here) finds no page of memory present. (Only asked where the result says
//!   the range is zero-filled: MADV_FREE leaves pages resident by design.)
//! - trapping? `MADV_POPULATE_READ` on the first and the last page fails: the kernel answers
//!   EFAULT on a guard marker and EINVAL on PROT_NONE, without delivering a signal. Only asked
//!   where the kernel has MADV_POPULATE_* (Linux ≥ 5.14); elsewhere the answer is "yes".
//!
//! Where the question itself cannot be asked (every residency method refused by a sandbox),
//! the answer is "verified": checked mode reports what it saw, never a guess.

use crate::probe;
use crate::sys::linux as sys;

pub(crate) fn released(addr: usize, len: usize) -> bool {
    crate::residency::resident_bytes_at(addr, len).map_or(true, |n| n == 0)
}

pub(crate) fn traps(addr: usize, len: usize) -> bool {
    if !probe::probe().advice.populate_write {
        return true;
    }
    let ps = probe::page_size();
    // SAFETY: POPULATE_READ on a range we own only faults pages in for reading: on a correct
    // (trapping) range it fails and changes nothing.
    let denied = |a: usize| unsafe { sys::madvise(a, ps, sys::MADV_POPULATE_READ) }.is_err();
    denied(addr) && denied(addr + len - ps)
}
