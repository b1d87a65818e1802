//! The batch chain: release or fault many ranges with one `process_madvise` per ≤ 1024 ranges.
//!
//! Why: every madvise(DONTNEED) ends in its own TLB shootdown, and with a second thread of
//! the process running every shootdown is an IPI. Purging 1024 scattered 4 KiB ranges costs
//! 1.0 ms alone and 17.2 ms with a sibling thread as 1024 madvise calls, 0.15 / 0.21 ms as one
//! process_madvise (DESIGN.md §2: 6.7× and 80×), because the kernel gathers the whole vector
//! under one mmu_gather and flushes once.
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
//! Faults are batched as DESIGN.md §2 measured best: one batched DONTNEED empties every range
//! (one flush), then guard markers go on the emptied ranges (no PTEs left, so no flush), also
//! batched. Without guards, the emptied ranges get `mprotect(PROT_NONE)` one by one (cheap:
//! nothing to flush). `Go` and `Remap` are not batched: they exist for comparison.

use crate::advise::{self, D_PM, D_PM_DONTNEED, D_PM_FREE, D_PM_GUARD, D_PM_SELF};
use crate::config::{FaultStrategy, UnusedAdvice};
use crate::error::{Error, Op};
use crate::fault::{self, FaultHow};
use crate::probe::{self, ProcessMadvise};
use crate::region::Reservation;
use crate::stats::{self, Counter};
use crate::sys::linux::{self as sys, Errno};
use crate::unused::{self, UnusedHow};
use core::marker::PhantomData;
use core::mem::MaybeUninit;

/// `UIO_MAXIOV`: the most iovecs one process_madvise takes.
pub const MAX_IOV: usize = 1024;

/// What a batch does to its ranges.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
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

/// A queued range's reservation, with a flag in the pointer's low bit (a `Reservation` is
/// 8-byte aligned): whether the batched call released the range. With the iovec that is 24
/// bytes per range.
#[derive(Copy, Clone)]
struct Entry<'r> {
    tagged: usize,
    _r: PhantomData<&'r Reservation>,
}

const DONE: usize = 1;

impl<'r> Entry<'r> {
    fn new(r: &'r Reservation) -> Self {
        Entry {
            tagged: r as *const Reservation as usize,
            _r: PhantomData,
        }
    }

    fn region(&self) -> &'r Reservation {
        // SAFETY: made from a `&'r Reservation` in `new`; the flag is masked off.
        unsafe { &*((self.tagged & !DONE) as *const Reservation) }
    }

    fn done(&self) -> bool {
        self.tagged & DONE != 0
    }

    fn set_done(&mut self, done: bool) {
        self.tagged = (self.tagged & !DONE) | if done { DONE } else { 0 };
    }
}

/// The totals of one or more flushes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchReport {
    /// Ranges settled (released or faulted).
    pub ranges: usize,
    /// Bytes settled.
    pub bytes: usize,
    /// Ranges that went through the per-range chain instead of process_madvise.
    pub per_range: usize,
    /// Unused: ranges not known to be zero-filled (released with MADV_FREE).
    pub not_zeroed: usize,
    /// Fault: ranges released but not trapping (see [`FaultHow::ReleasedOnly`]).
    pub not_trapping: usize,
    /// Ranges whose release failed; they are Ready again, unchanged. See `error`.
    pub failed: usize,
    /// Checked mode: ranges settled whose effect the kernel does not show. See `error`.
    pub unverified: usize,
    /// The first error, if any range failed or was unverified.
    pub error: Option<Error>,
}

/// Collects ranges of one or several [`Reservation`]s and releases (or faults) them together,
/// with one `process_madvise` per ≤ 1024 ranges. Storage is inline, 24 bytes per range plus
/// about 100 bytes: 24.7 KiB at the default `N` = 1024 (one full `process_madvise`), 1.6 KiB
/// for `Batch<'_, 64>` on a small stack. Nothing is allocated, and [`new`](Self::new) does
/// not even clear the storage. When it fills, [`push`](Self::push) flushes. Dropping a batch
/// flushes what is queued.
///
/// Queued pages count as Ready, but no other transition may start from them until the
/// batch settles them.
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
    /// `iov[..len]` and `ent[..len]` are initialised.
    iov: [MaybeUninit<Iov>; N],
    ent: [MaybeUninit<Entry<'r>>; N],
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
            // SAFETY: an array of MaybeUninit needs no initialisation.
            iov: unsafe { MaybeUninit::uninit().assume_init() },
            ent: unsafe { MaybeUninit::uninit().assume_init() },
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
        let addr = region.claim(op, offset, len)?;
        self.iov[self.len] = MaybeUninit::new(Iov { base: addr, len });
        self.ent[self.len] = MaybeUninit::new(Entry::new(region));
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
    }

    /// The queued ranges and their entries.
    fn queued(&mut self) -> (&mut [Iov], &mut [Entry<'r>]) {
        let n = self.len;
        // SAFETY: the first `len` elements of both arrays were written by `push`, and
        // MaybeUninit<T> has T's layout.
        unsafe {
            (
                &mut *(&mut self.iov[..n] as *mut [MaybeUninit<Iov>] as *mut [Iov]),
                &mut *(&mut self.ent[..n] as *mut [MaybeUninit<Entry<'r>>] as *mut [Entry<'r>]),
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
        let (iov, ent) = self.queued();
        if let Some(madv) = madv {
            submit(iov, ent, madv, pidfd);
        }
        for (v, e) in iov.iter().zip(ent.iter()) {
            let r = e.region();
            let how = if e.done() {
                Ok(if madv == Some(sys::MADV_FREE) {
                    UnusedHow::Free
                } else {
                    UnusedHow::DontNeed
                })
            } else {
                if madv.is_some() {
                    report.per_range += 1;
                    stats::bump(Counter::FallbackBatchRange);
                }
                unused::release(v.base, v.len, advice, r.is_noreserve())
            };
            match how {
                Ok(how) => {
                    let u = r.settle_unused(v.base, v.len, how);
                    report.not_zeroed += usize::from(!u.zeroed);
                    report.settled(v.len);
                    if let Err(err) = r.verify_unused_at(v.base, v.len, &u) {
                        report.unverified(err);
                    }
                }
                Err(err) => report.failed(v, e, err),
            }
        }
        self.report = report;
    }

    fn flush_fault(&mut self, strategy: FaultStrategy, pidfd: &mut Pidfd) {
        let strategy = fault::resolve(strategy);
        let batched = matches!(strategy, FaultStrategy::Guard | FaultStrategy::Protect);
        let mut report = core::mem::take(&mut self.report);
        let (iov, ent) = self.queued();
        if batched {
            // Phase 1: empty every range with one batched DONTNEED (one TLB flush).
            submit(iov, ent, sys::MADV_DONTNEED, pidfd);
        }
        // Phase 2 works on the emptied ranges only: move them to the front, keeping each
        // iovec with its entry.
        let mut emptied = 0;
        for i in 0..iov.len() {
            if ent[i].done() {
                iov.swap(i, emptied);
                ent.swap(i, emptied);
                emptied += 1;
            }
        }
        if strategy == FaultStrategy::Guard && emptied > 0 {
            for e in &mut ent[..emptied] {
                e.set_done(false);
            }
            submit(
                &iov[..emptied],
                &mut ent[..emptied],
                sys::MADV_GUARD_INSTALL,
                pidfd,
            );
        }
        for (i, (v, e)) in iov.iter().zip(ent.iter()).enumerate() {
            let r = e.region();
            let (addr, len) = (v.base, v.len);
            let how = if i < emptied && strategy == FaultStrategy::Guard && e.done() {
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
                fault::fault(addr, len, strategy, r.is_noreserve())
            };
            match how {
                Ok(how) => {
                    let f = r.settle_fault(addr, len, how);
                    report.not_trapping += usize::from(!f.traps());
                    report.settled(len);
                    if let Err(err) = r.verify_fault_at(addr, len, &f) {
                        report.unverified(err);
                    }
                }
                Err(err) => report.failed(v, e, err),
            }
        }
        self.report = report;
    }
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

    fn failed(&mut self, v: &Iov, e: &Entry<'_>, err: Error) {
        e.region().unclaim_at(v.base, v.len);
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
fn submit(iov: &[Iov], ent: &mut [Entry<'_>], advice: i32, pidfd: &mut Pidfd) {
    let n = iov.len();
    let mut i = 0;
    let mut retries = advise::TRANSIENT_RETRIES;
    while i < n {
        if !advise::clear(pm_bit(advice)) {
            return;
        }
        let Some(fd) = pidfd.get() else { return };
        let chunk = (n - i).min(MAX_IOV);
        let total: usize = iov[i..i + chunk].iter().map(|v| v.len).sum();
        // SAFETY: Iov has iovec's layout; every range was claimed from a live Reservation
        // and given up by the caller of `push`.
        let r = unsafe {
            sys::process_madvise(fd, iov[i..].as_ptr() as *const libc::iovec, chunk, advice)
        };
        match r {
            Ok(bytes) => {
                // The kernel stops at the first failing iovec: those before it are done.
                let mut acc = 0;
                let mut k = i;
                while k < i + chunk && acc + iov[k].len <= bytes {
                    acc += iov[k].len;
                    ent[k].set_done(true);
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
                return;
            }
            Err(Errno::EBADF) if pidfd.opened => {
                advise::downgrade(D_PM);
                return;
            }
            Err(Errno::EBADF) => pidfd.sentinel_refused(),
            Err(Errno::EINVAL) => {
                // The first range failed: bad range, or an advice process_madvise does not
                // take here. madvise on that range tells which.
                if advise::advise(iov[i].base, iov[i].len, advice).is_ok() {
                    advise::downgrade(pm_bit(advice));
                    ent[i].set_done(true);
                }
                i += 1;
            }
            Err(_) => i += 1,
        }
    }
}
