//! The batch chain: release or fault many ranges with one `process_madvise` per ≤ 1024 ranges.
//!
//! Why: every madvise(DONTNEED) ends in its own TLB shootdown, and with a second thread of
//! the process running every shootdown is an IPI. Purging 1024 scattered 4 KiB ranges costs
//! 1.0 ms alone and 17.2 ms with a sibling thread as 1024 madvise calls, 0.15 / 0.21 ms as one
//! process_madvise (6.7× and 80×, measured with osmem-bench on Linux 6.18), because the kernel
//! gathers the whole vector under one mmu_gather and flushes once.
//!
//! Fallback rules (next to the code that applies them, in `submit`):
//! - The kernel stops at the first iovec that fails and returns the bytes advised before it
//!   (or -1 with errno when it is the first): the ranges before it are done, the failing one
//!   goes through the per-range chain, and the call resumes after it.
//! - `ENOSYS`, `EPERM`/`EACCES`, `ESRCH`: process_madvise is unusable here → sticky downgrade,
//!   every later range goes through the per-range chain (the madvise loop).
//! - `EBADF`/`EINVAL` with the `PIDFD_SELF` sentinel on its first use: a kernel before 6.15
//!   → sticky downgrade of the sentinel; batches open a pidfd of the own process instead.
//! - `EINVAL` at the first iovec: the advice may be one process_madvise does not take on
//!   this kernel (before 6.13 it took only COLD/PAGEOUT/WILLNEED/COLLAPSE) or the range may be
//!   bad. madvise on that range decides: if madvise takes it, process_madvise does not take
//!   the advice → sticky downgrade for that advice.
//! - `EAGAIN`/`EINTR`: retried a bounded number of times.
//!
//! Faults are batched the way that measured best: one batched DONTNEED empties every range
//! (one flush), then guard markers go on the emptied ranges (no PTEs left, so no flush), also
//! batched. Without guards, the emptied ranges get `mprotect(PROT_NONE)` one by one (cheap:
//! nothing to flush). `Go` and `Remap` are not batched: they exist for comparison.

use crate::advise::{self, D_PM, D_PM_DONTNEED, D_PM_FREE, D_PM_GUARD, D_PM_SELF};
use crate::config::{self, FaultStrategy, UnusedAdvice};
use crate::error::{Error, Op};
use crate::fault::{self, FaultHow};
use crate::probe::{self, ProcessMadvise};
use crate::region::{self, Reservation};
use crate::stats::{self, Counter};
use crate::sys::linux::{self as sys, Errno};
use crate::unused::{self, UnusedHow};
use core::mem::MaybeUninit;

/// `UIO_MAXIOV`: the most iovecs one process_madvise takes, and the default capacity of a
/// [`Batch`].
///
/// ```
/// use osmem::{Batch, BatchKind, UnusedAdvice};
/// let b: Batch = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed)); // room for MAX_IOV
/// assert_eq!(osmem::MAX_IOV, 1024);
/// # drop(b);
/// ```
pub const MAX_IOV: usize = 1024;

/// What a batch does to its ranges.
///
/// ```
/// use osmem::{BatchKind, FaultStrategy, UnusedAdvice};
/// let purge = BatchKind::Unused(UnusedAdvice::Free); // an allocator's purge
/// let guards = BatchKind::Fault(FaultStrategy::Auto); // guard pages
/// assert_ne!(purge, guards);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchKind {
    /// Ready → Prepared, starting the unused chain with this advice.
    Unused(UnusedAdvice),
    /// Ready → Faulted with this strategy.
    Fault(FaultStrategy),
}

/// The same layout as `struct iovec`, but `Send`: a batch may be built on one thread and
/// flushed on another.
#[derive(Copy, Clone)]
#[repr(C)]
struct Iov {
    base: usize,
    len: usize,
}

/// Distinct reservations whose ranges one batch holds at a time; a range of another one
/// flushes the batch first.
const REGIONS: usize = 8;

/// `Iov::base` bit: the batched call released the range (addresses are page-aligned).
const DONE: usize = 1;

/// The totals of one or more flushes ([`Batch::flush`]).
///
/// ```
/// use osmem::{Batch, BatchKind, Reservation, UnusedAdvice};
/// let ps = osmem::page_size();
/// let r = Reservation::alloc(4 * ps)?;
/// let mut b: Batch<'_, 4> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
/// // SAFETY: nothing refers to these pages.
/// unsafe {
///     b.push(&r, 0, ps)?;
///     b.push(&r, 2 * ps, ps)?;
/// }
/// let rep = unsafe { b.flush() };
/// assert_eq!((rep.ranges, rep.bytes, rep.failed), (2, 2 * ps, 0));
/// assert!(rep.error.is_none());
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchReport {
    /// Ranges settled (released or faulted).
    pub ranges: usize,
    /// Bytes settled.
    pub bytes: usize,
    /// Ranges that went through the per-range chain instead of process_madvise.
    pub per_range: usize,
    /// `process_madvise` calls made (including refused ones), so a caller can count its
    /// system calls: these plus at least one per `per_range` range.
    pub batch_calls: usize,
    /// Unused: ranges not known to be zero-filled (released with MADV_FREE).
    pub not_zeroed: usize,
    /// Unused: ranges the kernel still holds (see [`Unused::released`](crate::Unused)).
    pub not_released: usize,
    /// Fault: ranges released but not trapping (see [`FaultHow::ReleasedOnly`]).
    pub not_trapping: usize,
    /// Ranges whose release failed; they are Ready again, unchanged. See `error`.
    pub failed: usize,
    /// Checked mode: ranges settled whose effect the kernel does not show. See `error`.
    pub unverified: usize,
    /// The first error, if any range failed or was unverified.
    pub error: Option<Error>,
}

/// Collects ranges of one or several [`Reservation`]s (up to 8 at a time) and releases (or
/// faults) them together, with one `process_madvise` per ≤ 1024 ranges. Storage is inline,
/// 17 bytes per range plus about 160: 17.2 KiB at the default `N` = 1024 (one full
/// `process_madvise`), 1.2 KiB for `Batch<'_, 64>` on a small stack. Nothing is allocated,
/// and [`new`](Self::new) does not even clear the storage. When it fills, or a range of a
/// ninth reservation comes, [`push`](Self::push) flushes first. Dropping a batch flushes what
/// is queued.
///
/// Queued pages count as Ready, but no other transition may start from them until the
/// batch settles them.
///
/// Knobs: the batch's [`BatchKind`] (advice or fault strategy) applies to every range, as
/// [`Reservation::unused_with`] / [`Reservation::fault_with`] do; everything else a
/// reservation's own knobs decide (harddecommit, checked, thp after a remap) is each range's
/// own reservation's, so one batch may span reservations with different settings.
///
/// ```
/// use osmem::{Batch, BatchKind, Reservation, UnusedAdvice};
/// let ps = osmem::page_size();
/// let r = Reservation::alloc(64 * ps)?;
/// let mut b: Batch = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
/// for i in (0..64).step_by(2) {
///     unsafe { b.push(&r, i * ps, ps)? };
/// }
/// let rep = unsafe { b.flush() };
/// assert_eq!(rep.ranges, 32);
/// assert_eq!(r.state(0), Some(osmem::State::Prepared));
/// assert_eq!(r.state(ps), Some(osmem::State::Ready));
/// # Ok::<(), osmem::Error>(())
/// ```
pub struct Batch<'r, const N: usize = MAX_IOV> {
    kind: BatchKind,
    len: usize,
    report: BatchReport,
    /// The reservations of the queued ranges, `regions[..nregions]`.
    regions: [Option<&'r Reservation>; REGIONS],
    nregions: usize,
    /// `iov[..len]` is initialised; so is `idx[..len]` once `nregions > 1` (until then every
    /// range is the first reservation's, and the array is not touched).
    iov: [MaybeUninit<Iov>; N],
    idx: [MaybeUninit<u8>; N],
}

/// The reservation of each queued range.
struct Regions<'a, 'r> {
    regions: &'a [Option<&'r Reservation>],
    /// One index per range when there are several reservations.
    idx: Option<&'a mut [u8]>,
}

impl<'r> Regions<'_, 'r> {
    #[inline]
    fn index(&self, i: usize) -> usize {
        self.idx.as_ref().map_or(0, |idx| idx[i] as usize)
    }

    #[inline]
    fn get(&self, i: usize) -> &'r Reservation {
        self.regions[self.index(i)].expect("a queued range's reservation")
    }

    /// Each reservation's knobs, resolved once for the flush.
    fn knobs(&self) -> [Option<config::Knobs>; REGIONS] {
        let mut k = [None; REGIONS];
        for (slot, r) in k.iter_mut().zip(self.regions) {
            *slot = r.map(|r| r.knobs_now());
        }
        k
    }

    fn swap(&mut self, i: usize, j: usize) {
        if let Some(idx) = self.idx.as_mut() {
            idx.swap(i, j);
        }
    }
}

impl<'r, const N: usize> Batch<'r, N> {
    /// A batch must hold at least one range (checked at compile time).
    const NONEMPTY: () = assert!(N > 0, "Batch capacity must be at least 1");

    /// An empty batch.
    ///
    /// ```
    /// let b: osmem::Batch = osmem::Batch::new(osmem::BatchKind::Fault(osmem::FaultStrategy::Auto));
    /// assert!(b.is_empty());
    /// ```
    pub fn new(kind: BatchKind) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::NONEMPTY;
        Batch {
            kind,
            len: 0,
            report: BatchReport::default(),
            regions: [None; REGIONS],
            nregions: 0,
            // SAFETY: an array of MaybeUninit needs no initialisation.
            iov: unsafe { MaybeUninit::uninit().assume_init() },
            idx: unsafe { MaybeUninit::uninit().assume_init() },
        }
    }

    /// Ranges queued and not yet flushed.
    ///
    /// ```
    /// let b: osmem::Batch<'_, 16> = osmem::Batch::new(osmem::BatchKind::Unused(osmem::UnusedAdvice::DontNeed));
    /// assert_eq!(b.len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    ///
    /// ```
    /// let b: osmem::Batch<'_, 16> = osmem::Batch::new(osmem::BatchKind::Unused(osmem::UnusedAdvice::Free));
    /// assert!(b.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queue `[offset, offset+len)` of `region`, which must be Ready (validated now, with
    /// the same typed errors as the direct transitions; nothing is queued on error). Flushes
    /// first if the batch is full.
    ///
    /// # Safety
    /// As for [`Reservation::unused`] / [`Reservation::fault`]: from this call on, the range's
    /// contents may be discarded at any time and (for faults) it may start to trap; nothing
    /// may reference or access it until it is made Ready again.
    ///
    /// ```
    /// let ps = osmem::page_size();
    /// let r = osmem::Reservation::reserve(4 * ps)?;
    /// let mut b: osmem::Batch<'_, 8> = osmem::Batch::new(osmem::BatchKind::Unused(osmem::UnusedAdvice::DontNeed));
    /// // Reserved, not Ready: refused, nothing queued.
    /// assert!(matches!(unsafe { b.push(&r, 0, ps) }, Err(osmem::Error::WrongState { .. })));
    /// assert!(b.is_empty());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub unsafe fn push(
        &mut self,
        region: &'r Reservation,
        offset: usize,
        len: usize,
    ) -> Result<(), Error> {
        let op = match self.kind {
            BatchKind::Unused(_) => Op::Unused,
            BatchKind::Fault(_) => Op::Fault,
        };
        if self.len == N {
            self.flush_inner();
        }
        let k = match self.regions[..self.nregions]
            .iter()
            .position(|r| r.is_some_and(|r| core::ptr::eq(r, region)))
        {
            Some(k) => k,
            None => {
                if self.nregions == REGIONS {
                    self.flush_inner();
                }
                if self.nregions == 1 {
                    // A second reservation: from now on each range records whose it is.
                    for slot in &mut self.idx[..self.len] {
                        *slot = MaybeUninit::new(0);
                    }
                }
                self.regions[self.nregions] = Some(region);
                self.nregions += 1;
                self.nregions - 1
            }
        };
        let addr = region.claim(op, offset, len)?;
        self.iov[self.len] = MaybeUninit::new(Iov { base: addr, len });
        if self.nregions > 1 {
            self.idx[self.len] = MaybeUninit::new(k as u8);
        }
        self.len += 1;
        Ok(())
    }

    /// Release (or fault) everything queued and return the totals since the last `flush`
    /// (including automatic flushes by `push`).
    ///
    /// # Safety
    /// The contract of [`push`](Self::push) applies to every queued range.
    ///
    /// ```
    /// let ps = osmem::page_size();
    /// let r = osmem::Reservation::alloc(8 * ps)?;
    /// let mut b: osmem::Batch<'_, 8> = osmem::Batch::new(osmem::BatchKind::Fault(osmem::FaultStrategy::Auto));
    /// unsafe { b.push(&r, 0, 4 * ps)? };
    /// let rep = unsafe { b.flush() };
    /// assert_eq!((rep.ranges, rep.failed), (1, 0));
    /// assert_eq!(r.state(0), Some(osmem::State::Faulted));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub unsafe fn flush(&mut self) -> BatchReport {
        self.flush_inner();
        core::mem::take(&mut self.report)
    }

    fn flush_inner(&mut self) {
        if self.len == 0 {
            return;
        }
        stats::bump(Counter::BatchFlushes);
        let mut pidfd = Pidfd::new();
        match self.kind {
            BatchKind::Unused(advice) => self.flush_unused(advice, &mut pidfd),
            BatchKind::Fault(strategy) => self.flush_fault(strategy, &mut pidfd),
        }
        pidfd.close();
        stats::add(Counter::BatchRanges, self.len as u64);
        self.len = 0;
        self.regions = [None; REGIONS];
        self.nregions = 0;
    }

    /// The queued ranges and their reservations.
    fn queued(&mut self) -> (&mut [Iov], Regions<'_, 'r>) {
        let n = self.len;
        // SAFETY: the first `len` iovecs were written by `push`, and so were the first `len`
        // indices once there are several reservations; MaybeUninit<T> has T's layout.
        unsafe {
            let iov = &mut *(&mut self.iov[..n] as *mut [MaybeUninit<Iov>] as *mut [Iov]);
            let idx = (self.nregions > 1)
                .then(|| &mut *(&mut self.idx[..n] as *mut [MaybeUninit<u8>] as *mut [u8]));
            (
                iov,
                Regions {
                    regions: &self.regions,
                    idx,
                },
            )
        }
    }

    fn flush_unused(&mut self, advice: UnusedAdvice, pidfd: &mut Pidfd) {
        let madv = match advice {
            UnusedAdvice::Free => Some(sys::MADV_FREE),
            UnusedAdvice::DontNeed => Some(sys::MADV_DONTNEED),
            UnusedAdvice::Remap => None,
        };
        let mut report = core::mem::take(&mut self.report);
        let before = report.ranges;
        let (iov, regs) = self.queued();
        let knobs = regs.knobs();
        let k = |i: usize| knobs[regs.index(i)].expect("a queued range's knobs");
        let done = match madv {
            Some(madv) => submit(iov, madv, pidfd, &mut report.batch_calls),
            None => 0,
        };
        let batched_how = if madv == Some(sys::MADV_FREE) {
            UnusedHow::Free
        } else {
            UnusedHow::DontNeed
        };
        // The usual outcome: every range released by the batched calls, and no reservation
        // asking for harddecommit or checks: one code for all, settled in one pass.
        let plain =
            |k: &Option<config::Knobs>| k.map_or(true, |k| !k.harddecommit() && !k.checked());
        if done == iov.len() && knobs.iter().all(plain) {
            let code = region::code_after_unused(batched_how, false);
            for v in iov.iter() {
                report.settled(v.len);
            }
            if batched_how == UnusedHow::Free {
                report.not_zeroed += iov.len();
            }
            settle_all_to(iov, &regs, code);
            stats::add(Counter::UnusedOps, (report.ranges - before) as u64);
            self.report = report;
            return;
        }
        mark_done(iov, done);
        // Per range, without any lock: the per-range chain where the batch did not release
        // it, harddecommit, and the outcome, kept in the iovec's low bits for the settling.
        for (i, v) in iov.iter_mut().enumerate() {
            let how = if v.base & DONE != 0 {
                v.base &= !DONE;
                Ok((batched_how, true))
            } else {
                if madv.is_some() {
                    report.per_range += 1;
                    stats::bump(Counter::FallbackBatchRange);
                }
                let r = regs.get(i);
                unused::release(v.base, v.len, r.offset_of(v.base), advice, r.remap_how())
            };
            match how {
                Ok((how, released)) => {
                    let protected =
                        k(i).harddecommit() && regs.get(i).protect_released(v.base, v.len);
                    report.settled(v.len);
                    report.not_released += usize::from(!released);
                    v.len |= region::code_after_unused(how, protected) as usize;
                    if how == UnusedHow::Free {
                        report.not_zeroed += 1;
                        v.len |= OPEN;
                    }
                }
                Err(err) => report.failed(v, err),
            }
        }
        settle_all(iov, &regs);
        stats::add(Counter::UnusedOps, (report.ranges - before) as u64);
        {
            let checked = |(i, v): &(usize, &Iov)| v.len & FAILED == 0 && k(*i).checked();
            for (i, v) in iov.iter().enumerate().filter(checked) {
                // Only "zero-filled" has something to check (MADV_FREE keeps pages resident).
                let u = unused::Unused {
                    how: UnusedHow::DontNeed,
                    zeroed: v.len & OPEN == 0,
                    protected: false,
                    released: true,
                };
                if let Err(err) = regs.get(i).verify_unused_at(v.base, v.len & !TAGS, &u) {
                    report.unverified(err);
                }
            }
        }
        self.report = report;
    }

    fn flush_fault(&mut self, strategy: FaultStrategy, pidfd: &mut Pidfd) {
        let strategy = fault::resolve(strategy);
        let batched = matches!(strategy, FaultStrategy::Guard | FaultStrategy::Protect);
        let mut report = core::mem::take(&mut self.report);
        let before = report.ranges;
        let (iov, mut regs) = self.queued();
        let knobs = regs.knobs();
        let mut emptied = 0;
        let mut guarded_all = false;
        if batched {
            // Phase 1: empty every range with one batched DONTNEED (one TLB flush).
            let done = submit(iov, sys::MADV_DONTNEED, pidfd, &mut report.batch_calls);
            if done == iov.len() {
                // All emptied, in place: phase 2 takes them all.
                emptied = done;
            } else {
                mark_done(iov, done);
                // Phase 2 works on the emptied ranges only: move them to the front, keeping
                // each iovec with its reservation, and clear their marks for the next call.
                for i in 0..iov.len() {
                    if iov[i].base & DONE != 0 {
                        iov[i].base &= !DONE;
                        iov.swap(i, emptied);
                        regs.swap(i, emptied);
                        emptied += 1;
                    }
                }
            }
        }
        if strategy == FaultStrategy::Guard && emptied > 0 {
            let guarded = submit(
                &mut iov[..emptied],
                sys::MADV_GUARD_INSTALL,
                pidfd,
                &mut report.batch_calls,
            );
            guarded_all = guarded == iov.len();
            if !guarded_all {
                mark_done(iov, guarded);
            }
        }
        // The usual outcome: every range emptied and guarded, no checks asked: one code for
        // all, settled in one pass.
        if guarded_all && knobs.iter().all(|k| k.map_or(true, |k| !k.checked())) {
            for v in iov.iter() {
                report.settled(v.len);
            }
            settle_all_to(iov, &regs, region::code_after_fault(FaultHow::Guard));
            stats::add(Counter::FaultOps, (report.ranges - before) as u64);
            self.report = report;
            return;
        }
        if guarded_all {
            mark_done(iov, iov.len());
        }
        for (i, v) in iov.iter_mut().enumerate() {
            let guarded = v.base & DONE != 0;
            v.base &= !DONE;
            let (addr, len) = (v.base, v.len);
            let how = if i < emptied && strategy == FaultStrategy::Guard && guarded {
                Ok(FaultHow::Guard)
            } else if i < emptied {
                if strategy == FaultStrategy::Guard {
                    stats::bump(Counter::FallbackFaultGuard);
                }
                // Emptied but not guarded: protect it (nothing left to flush, so cheap), or
                // report it released-only if the protection fails (VMA limit).
                // SAFETY: queued ranges are owned and dead (the `push` contract).
                match advise::retry(|| unsafe { sys::mprotect(addr, len, sys::PROT_NONE) }) {
                    Ok(()) => Ok(FaultHow::Protect),
                    Err(_) => Ok(fault::unprotectable(addr, len)),
                }
            } else {
                if batched {
                    report.per_range += 1;
                    stats::bump(Counter::FallbackBatchRange);
                }
                fault::fault(addr, len, strategy, regs.get(i).remap_how())
            };
            match how {
                Ok(how) => {
                    report.settled(len);
                    v.len |= region::code_after_fault(how) as usize;
                    if how == FaultHow::ReleasedOnly {
                        report.not_trapping += 1;
                        v.len |= OPEN;
                    }
                }
                Err(err) => report.failed(v, err),
            }
        }
        settle_all(iov, &regs);
        stats::add(Counter::FaultOps, (report.ranges - before) as u64);
        {
            let k = |i: usize| knobs[regs.index(i)].expect("a queued range's knobs");
            let checked = |(i, v): &(usize, &Iov)| v.len & FAILED == 0 && k(*i).checked();
            for (i, v) in iov.iter().enumerate().filter(checked) {
                let how = if v.len & OPEN != 0 {
                    FaultHow::ReleasedOnly
                } else {
                    FaultHow::Guard // any trapping fault: the check is the same
                };
                let f = crate::fault::Faulted { how };
                if let Err(err) = regs.get(i).verify_fault_at(v.base, v.len & !TAGS, &f) {
                    report.unverified(err);
                }
            }
        }
        self.report = report;
    }
}

// Outcome tags kept in a queued iovec's length (page-aligned, so its low bits are free) once
// the system calls are done: the range's new code (bits 0-3), or that its release failed;
// and, for checked mode, that it is not zero-filled (MADV_FREE) or does not trap.
const CODE: usize = 0xF;
const FAILED: usize = 1 << 4;
const OPEN: usize = 1 << 5;
const TAGS: usize = CODE | FAILED | OPEN;

/// Settle every queued range with `f`, under one lock per run of ranges of the same
/// reservation.
#[inline(always)]
fn settle_each(
    iov: &[Iov],
    regs: &Regions<'_, '_>,
    mut f: impl FnMut(&mut region::Settle<'_>, &Iov),
) {
    let mut i = 0;
    while i < iov.len() {
        let r = regs.get(i);
        let mut s = r.begin_settle();
        while i < iov.len() && core::ptr::eq(regs.get(i), r) {
            f(&mut s, &iov[i]);
            i += 1;
        }
    }
}

/// Settle every queued range to `code` (all released the same way, no tags): one pass.
fn settle_all_to(iov: &[Iov], regs: &Regions<'_, '_>, code: u8) {
    settle_each(iov, regs, |s, v| s.set(v.base, v.len, code));
}

/// Settle every queued range by its tags: its new code, or (if its release failed) let go.
fn settle_all(iov: &[Iov], regs: &Regions<'_, '_>) {
    settle_each(iov, regs, |s, v| {
        let len = v.len & !TAGS;
        if v.len & FAILED != 0 {
            s.unclaim(v.base, len);
        } else {
            s.set(v.base, len, (v.len & CODE) as u8);
        }
    });
}

impl BatchReport {
    fn settled(&mut self, len: usize) {
        self.ranges += 1;
        self.bytes += len;
    }

    /// Checked mode: the range was settled but the kernel does not show it.
    fn unverified(&mut self, err: Error) {
        self.unverified += 1;
        self.error.get_or_insert(err);
    }

    /// The range's release failed: it is let go of, unchanged, when the batch settles.
    fn failed(&mut self, v: &mut Iov, err: Error) {
        v.len |= FAILED;
        self.failed += 1;
        self.error.get_or_insert(err);
    }
}

impl<const N: usize> Drop for Batch<'_, N> {
    fn drop(&mut self) {
        // The `push` contract already gave these ranges up; leaving them Pending would make
        // them unusable for ever.
        self.flush_inner();
    }
}

impl<const N: usize> core::fmt::Debug for Batch<'_, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Batch")
            .field("kind", &self.kind)
            .field("len", &self.len)
            .finish()
    }
}

/// The pidfd a flush uses: the `PIDFD_SELF` sentinel where the kernel has it, else a
/// `pidfd_open(getpid())` opened on first need and closed at the end of the flush. Not
/// cached across flushes: after `fork` a cached descriptor would name the *parent*, and
/// process_madvise would then discard the parent's memory.
struct Pidfd {
    fd: Option<i32>,
    opened: bool,
}

impl Pidfd {
    fn new() -> Self {
        Pidfd {
            fd: None,
            opened: false,
        }
    }

    fn get(&mut self) -> Option<i32> {
        if self.fd.is_some() {
            return self.fd;
        }
        if !advise::clear(D_PM) {
            return None;
        }
        match probe::probe().process_madvise {
            ProcessMadvise::PidfdSelf if advise::clear(D_PM_SELF) => {
                self.fd = Some(sys::PIDFD_SELF_THREAD_GROUP)
            }
            ProcessMadvise::Unsupported => {}
            _ => {
                match advise::retry(sys::pidfd_open_self) {
                    Ok(fd) => {
                        self.fd = Some(fd);
                        self.opened = true;
                    }
                    // No pidfds here, or refused by policy: no batch will get one.
                    Err(Errno::ENOSYS | Errno::EPERM | Errno::EACCES) => advise::downgrade(D_PM),
                    Err(_) => {}
                }
            }
        }
        self.fd
    }

    /// The sentinel was refused: switch to an opened pidfd for the rest of the process.
    fn sentinel_refused(&mut self) {
        advise::downgrade(D_PM_SELF);
        self.fd = None;
    }

    fn close(self) {
        if let (Some(fd), true) = (self.fd, self.opened) {
            sys::close(fd);
        }
    }
}

fn pm_bit(advice: i32) -> u32 {
    match advice {
        sys::MADV_FREE => D_PM_FREE,
        sys::MADV_DONTNEED => D_PM_DONTNEED,
        _ => D_PM_GUARD,
    }
}

/// Apply `advice` to every range with process_madvise, ≤ 1024 per call, marking `done` the
/// ranges the kernel applied it to. Ranges left not done go through the per-range chain in
/// the caller.
fn submit(iov: &mut [Iov], advice: i32, pidfd: &mut Pidfd, calls: &mut usize) -> usize {
    let n = iov.len();
    let mut i = 0;
    // Ranges `[0, prefix)` are done without a mark: the usual outcome (every chunk released
    // in full) then costs no pass over the iovecs after the system call.
    let mut prefix = 0;
    let mut retries = advise::TRANSIENT_RETRIES;
    while i < n {
        if !advise::clear(pm_bit(advice)) {
            return prefix;
        }
        let Some(fd) = pidfd.get() else {
            return prefix;
        };
        let chunk = (n - i).min(MAX_IOV);
        let total: usize = iov[i..i + chunk].iter().map(|v| v.len).sum();
        // SAFETY: Iov has iovec's layout; every range was claimed from a live Reservation
        // and given up by the caller of `push`.
        let r = unsafe {
            sys::process_madvise(fd, iov[i..].as_ptr() as *const libc::iovec, chunk, advice)
        };
        *calls += 1;
        match r {
            Ok(bytes) if bytes == total && prefix == i => {
                i += chunk;
                prefix = i;
            }
            Ok(bytes) => {
                // The kernel stops at the first failing iovec: those before it are done.
                let mut acc = 0;
                let mut k = i;
                while k < i + chunk && acc + iov[k].len <= bytes {
                    acc += iov[k].len;
                    iov[k].base |= DONE;
                    k += 1;
                }
                // Skip the failing range (k): the caller's per-range chain takes it.
                i = if bytes == total { i + chunk } else { k + 1 };
            }
            Err(Errno::EAGAIN | Errno::EINTR) if retries > 0 => {
                retries -= 1;
                stats::bump(Counter::TransientRetries);
            }
            Err(Errno::ENOSYS | Errno::EPERM | Errno::EACCES | Errno::ESRCH) => {
                advise::downgrade(D_PM);
                return prefix;
            }
            Err(Errno::EBADF) if pidfd.opened => {
                advise::downgrade(D_PM);
                return prefix;
            }
            Err(Errno::EBADF) => pidfd.sentinel_refused(),
            Err(Errno::EINVAL) => {
                // The first range failed: bad range, or an advice process_madvise does not
                // take here. madvise on that range tells which.
                if advise::advise(iov[i].base, iov[i].len, advice).is_ok() {
                    advise::downgrade(pm_bit(advice));
                    iov[i].base |= DONE;
                }
                i += 1;
            }
            Err(_) => i += 1,
        }
    }
    prefix
}

/// Mark the first `prefix` ranges done (what `submit` left unmarked), for the per-range
/// passes of a flush that was not released in full.
fn mark_done(iov: &mut [Iov], prefix: usize) {
    for v in &mut iov[..prefix] {
        v.base |= DONE;
    }
}
