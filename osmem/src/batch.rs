//! The batch chain: release or fault many ranges with one `process_madvise` per ≤ 1024 ranges.
//!
//! Why: every madvise(DONTNEED) ends in its own TLB shootdown, and with a second thread of
//! the process running every shootdown is an IPI. Purging 1024 scattered 4 KiB ranges costs
//! 1.0 ms alone and 17.2 ms with a sibling thread as 1024 madvise calls, 0.15 / 0.21 ms as one
//! process_madvise (6.7× and 80×, measured with osmem-bench on Linux 6.18), because the kernel
//! gathers the whole vector under one mmu_gather and flushes once.
//!
//! **Claims at flush.** `push` validates a range and queues it; it claims nothing, so a batch
//! that is leaked (`mem::forget`) leaves no page held. The flush claims each reservation's
//! ranges in one section of its map (a range another transition holds, or that is not Ready,
//! or that overlaps a range queued before it in the same batch, is refused and left as it
//! was), issues the system calls for the claimed ones, and settles each reservation's ranges
//! in one more section. Claiming at push cost 12–15 ns per range (a lock per range); in bulk
//! it is a few word operations per range.
//!
//! A fork in progress: ranges of a reservation whose map is held across the fork are claimed
//! after it, in a second round; the first round's claims are settled before the flush waits,
//! because the fork waits for them.
//!
//! Fallback rules (next to the code that applies them, in `submit`):
//! - The kernel stops at the first iovec that fails and returns the bytes advised before it
//!   (or -1 with errno when it is the first): the ranges before it are done; the call resumes
//!   at the failing one, whose errno the next call then tells.
//! - `EINVAL` at the first iovec: the advice may be one process_madvise does not take on
//!   this kernel (before 6.13 it took only COLD/PAGEOUT/WILLNEED/COLLAPSE), or the range is
//!   mlocked (DONTNEED and FREE refuse `VM_LOCKED`). madvise on that range decides: if it
//!   takes the advice, process_madvise does not → sticky downgrade for that advice (the range
//!   is done); if it refuses too, the range is locked: a DONTNEED call goes on with
//!   `MADV_DONTNEED_LOCKED` for the rest (the same as DONTNEED on unlocked memory), a FREE call
//!   releases that range alone with `MADV_DONTNEED_LOCKED` and goes on with FREE. Locked
//!   memory is remembered: later DONTNEED batches start with `MADV_DONTNEED_LOCKED`. So a
//!   batch over locked memory makes at most three calls more than over unlocked memory, never
//!   more than the per-range loop. (Unless process_madvise takes `MADV_DONTNEED` but refuses
//!   `MADV_DONTNEED_LOCKED` — no kernel does, a seccomp filter can: that advice is then
//!   downgraded, later batches start with DONTNEED again, and each one over locked memory
//!   makes three calls more than the loop: the refused process_madvise, the madvise that
//!   finds the range locked and the zero-length call that tells a refused range from an
//!   unknown advice.)
//! - `ENOSYS`, `EPERM`/`EACCES`, `ESRCH`: process_madvise is unusable here → sticky downgrade,
//!   every later range goes through the per-range chain (the madvise loop).
//! - `EBADF`/`EINVAL` with the `PIDFD_SELF` sentinel on its first use: a kernel before 6.15
//!   → sticky downgrade of the sentinel; batches open a pidfd of the own process instead.
//! - `EAGAIN`/`EINTR`: retried a bounded number of times.
//!
//! Faults are batched the way that measured best: one batched DONTNEED empties every range
//! (one flush), then guard markers go on the emptied ranges (no PTEs left, so no flush), also
//! batched. Without guards — or for mlocked ranges, which the kernel refuses guard markers
//! on — the emptied ranges get `mprotect(PROT_NONE)` one by one (cheap: nothing to flush),
//! and the report says which ranges took that link. `Go` and `Remap` are not batched: they
//! exist for comparison.

use crate::advise::{self, D_DONTNEED_LOCKED, D_PM, D_PM_DONTNEED, D_PM_DONTNEED_LOCKED};
use crate::advise::{D_PM_FREE, D_PM_GUARD, D_PM_SELF};
use crate::arena::Node;
use crate::config::{self, FaultStrategy, UnusedAdvice};
use crate::error::{Error, Op, Syscall};
use crate::fault::{self, FaultHow, Faulted};
use crate::probe::{self, ProcessMadvise};
use crate::region::{self, Reservation};
use crate::state::State;
use crate::stats::{self, Counter};
use crate::sys::linux::{self as sys, Errno};
use crate::table::{Deferred, Guard, Job, LEAF};
use crate::unused::{self, Unused, UnusedHow};
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

// Tags in a queued range's address (page-aligned: its low 12 bits are free).
/// The batched call applied its advice.
const DONE: usize = 1;
/// ... and that advice was MADV_DONTNEED_LOCKED.
const LOCKED: usize = 2;
/// Checked mode: settled, but the kernel does not show it (the note has the error).
const UNVERIFIED: usize = 4;
/// Its release failed and left it Reserved (the error says `changed`): settled there.
const HOLE: usize = 8;
const BASE_TAGS: usize = DONE | LOCKED | UNVERIFIED | HOLE;

// Tags in a queued range's length, once its outcome is known.
/// The range's new code.
const CODE: usize = 0xF;
/// Its release failed: Ready again, unchanged (the note has the error).
const FAILED: usize = 1 << 4;
/// Not zero-filled (MADV_FREE) / does not trap.
const OPEN: usize = 1 << 5;
/// Not claimed: another transition holds a page, a page is not Ready (the note says which).
const REFUSED: usize = 1 << 6;
/// Not claimed yet: queued (set by `push`), or waiting for a fork to end.
const PENDING: usize = 1 << 7;
/// The link that ran: an `UnusedHow` / `FaultHow` index.
const HOW_SHIFT: usize = 8;
const HOW: usize = 0x7 << HOW_SHIFT;
/// Unused: the kernel still holds the pages.
const KEPT: usize = 1 << 11;
const TAGS: usize = 0xFFF;

const UNUSED_HOWS: [UnusedHow; 4] = [
    UnusedHow::Free,
    UnusedHow::DontNeed,
    UnusedHow::DontNeedLocked,
    UnusedHow::Remap,
];
const FAULT_HOWS: [FaultHow; 5] = [
    FaultHow::Guard,
    FaultHow::Protect,
    FaultHow::Go,
    FaultHow::Remap,
    FaultHow::ReleasedOnly,
];

fn unused_how_tag(h: UnusedHow) -> usize {
    UNUSED_HOWS.iter().position(|&x| x == h).unwrap_or(1) << HOW_SHIFT
}

fn fault_how_tag(h: FaultHow) -> usize {
    FAULT_HOWS.iter().position(|&x| x == h).unwrap_or(1) << HOW_SHIFT
}

/// The totals of one or more flushes ([`Batch::flush`]). Every range pushed is counted once
/// in `ranges` (acted on), `refused` or `failed`.
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
/// assert_eq!((rep.ranges, rep.bytes, rep.failed, rep.refused), (2, 2 * ps, 0, 0));
/// assert!(rep.error.is_none());
/// # Ok::<(), osmem::Error>(())
/// ```
#[must_use = "ranges refused or failed are only said here"]
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
    /// Fault: ranges released but not trapping, left Prepared (see
    /// [`FaultHow::ReleasedOnly`]).
    pub not_trapping: usize,
    /// Fault: ranges that took another link than the batch's strategy asked for (guard
    /// markers are refused on mlocked memory, so those ranges were made `PROT_NONE`); each
    /// range's [`FaultHow`] is in [`Batch::flush_with`]'s report.
    pub other_link: usize,
    /// Ranges not acted on because a page of theirs was held by another transition (or by an
    /// earlier range of the same flush that overlaps them) or not Ready: nothing changed for
    /// them. See `error`.
    pub refused: usize,
    /// Ranges whose release failed; they are Ready again, unchanged, unless the range's error
    /// says it changed (the last link's remap left a hole, taken back: the range is Reserved
    /// now). See `error`.
    pub failed: usize,
    /// Checked mode: ranges settled whose effect the kernel does not show. See `error`.
    pub unverified: usize,
    /// The first error, if any range was refused, failed or was unverified.
    pub error: Option<Error>,
}

/// What a flush did to one range ([`BatchRange::result`]).
#[must_use = "what was done to the range"]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchDone {
    /// Released (a [`BatchKind::Unused`] batch), as [`Reservation::unused`] says it.
    Unused(Unused),
    /// Faulted (a [`BatchKind::Fault`] batch), as [`Reservation::fault`] says it.
    Faulted(Faulted),
}

/// One range of a flush and what became of it, given to [`Batch::flush_with`]'s callback.
#[derive(Copy, Clone, Debug)]
#[non_exhaustive]
pub struct BatchRange<'r> {
    /// The reservation it was pushed with.
    pub region: &'r Reservation,
    /// Its offset in that reservation.
    pub offset: usize,
    /// Its length.
    pub len: usize,
    /// What was done, or why nothing was: `Busy` or `WrongState` for a range refused before
    /// any system call (unchanged), the error of the per-range chain for one whose release
    /// failed (unchanged), `Unverified` in checked mode.
    pub result: Result<BatchDone, Error>,
}

/// Collects ranges of one or several [`Reservation`]s (up to 8 at a time) and releases (or
/// faults) them together, with one `process_madvise` per ≤ 1024 ranges. Storage is inline,
/// 25 bytes per range plus about 200: 25.2 KiB at the default `N` = 1024 (one full
/// `process_madvise`), 1.8 KiB for `Batch<'_, 64>` on a small stack. Nothing is allocated,
/// and [`new`](Self::new) does not even clear the storage. When it fills, or a range of a
/// ninth reservation comes, [`push`](Self::push) flushes first.
///
/// `push` claims nothing: the flush claims every range (checks that it is Ready and holds
/// it), issues the system calls and settles. A range that another transition holds at that
/// moment, or that is not Ready, is refused and left unchanged ([`BatchReport::refused`]); so
/// is a range that overlaps one pushed before it in the same batch (the first one is acted
/// on; an exact duplicate is an overlap too). A batch that is never flushed — dropped after a
/// panic, or leaked with `mem::forget` — holds nothing.
///
/// What happened to each range: [`flush_with`](Self::flush_with) reports every range to a
/// callback, without allocating. [`flush`](Self::flush) returns the totals only (and the
/// first error). Dropping a batch flushes what is queued and discards the report
/// ([`finish`](Self::finish) flushes and returns it); ranges
/// flushed by `push` because the batch was full are counted in the totals of the next
/// `flush`, not reported one by one.
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
    /// The address of `regions[0]` while it is the only one, else 0: `push`'s one compare
    /// for the usual batch (an address, not a pointer, so the batch stays `Send`).
    sole: usize,
    /// `iov[..len]` is initialised; so is `idx[..len]` once `nregions > 1` (until then every
    /// range is the first reservation's, and the array is not touched).
    iov: [MaybeUninit<Iov>; N],
    idx: [MaybeUninit<u8>; N],
    /// For a range refused, failed or unverified: its error, packed (see `pack`). Until then,
    /// from the front, the groups of the claims (see `group_span`).
    note: [MaybeUninit<u64>; N],
    /// A later round of one flush (a fork kept ranges from being claimed): the ranges still
    /// to claim are the ones tagged `PENDING`. In the first round, untagged, they all are.
    retry: bool,
    /// How many groups the notes hold (`None`: the claims stopped recording them, or ranges
    /// moved).
    groups: Option<usize>,
    /// Bytes of the ranges this round claimed: summed in the claims' pass, which reads every
    /// length anyway, so the usual flush needs no pass over the iovecs after its system
    /// call (measured: ~0.3 µs of 1024 ranges).
    claimed_bytes: usize,
}

// Groups. Small disjoint ranges of one reservation pushed one after the other into the same
// 16-page word of its map form a group, claimed and settled with one load and one store (the
// usual batch: an allocator's scattered free pages). Groups are found while claiming, in the
// one pass over the ranges that has to read them anyway (`push` only writes the iovec:
// grouping there cost ~3 ns a range more), and recorded in two notes each from the front of
// the note array: its span and word (`group_span`) and its nibble mask. A group has two
// ranges or more, so they fit. They are few, and they are all the settle reads: 2 KiB for
// 1024 ranges, not the iovecs (measured: each cache line the flush touches costs, as the
// system call leaves the caches cold). The first refusal stops the recording: from then on
// the notes hold the refused ranges' errors, and groups matter only when every range is
// claimed.
/// Bits of a group's first range in its first note: groups are recorded only in batches of
/// fewer ranges (the default holds 1024).
const GROUP_I_BITS: u32 = 20;
/// ... and of the word index after them (and after 5 bits of range count, ≤ 16): groups
/// are recorded only in reservations of fewer words (2^43 pages).
const GROUP_W_BITS: u32 = 64 - GROUP_I_BITS - 5;

/// The first note of a group: its first range `i`, its end `j` (≤ i + 16) and its word `w`.
#[inline(always)]
fn group_span(i: usize, j: usize, w: usize) -> u64 {
    i as u64 | ((j - i) as u64) << GROUP_I_BITS | (w as u64) << (GROUP_I_BITS + 5)
}

/// `group_span`'s `(i, j, w)`.
#[inline(always)]
fn group_unspan(n: u64) -> (usize, usize, usize) {
    let i = (n & ((1 << GROUP_I_BITS) - 1)) as usize;
    let j = i + ((n >> GROUP_I_BITS) & 31) as usize;
    (i, j, (n >> (GROUP_I_BITS + 5)) as usize)
}

/// The word index and nibble mask of the range `[addr, addr+len)` if it lies inside one
/// 16-page word of the map that does not hold the region's last page (whose pages past the
/// end follow it in the map), for a reservation of `geometry` (`Reservation::geometry`).
#[inline(always)]
fn one_word(
    addr: usize,
    len: usize,
    (rb, sh, last_w): (usize, u32, usize),
) -> Option<(usize, u64)> {
    let (p, e) = ((addr - rb) >> sh, (addr - rb + len) >> sh);
    let w = p >> 4;
    let w0 = w << 4;
    (e - w0 <= 16 && w < last_w).then(|| (w, crate::table::nibble_mask(p - w0, e - w0)))
}

/// The queued ranges' reservations and notes.
struct Regions<'a, 'r> {
    regions: &'a [Option<&'r Reservation>],
    /// One index per range when there are several reservations.
    idx: Option<&'a mut [u8]>,
    note: &'a mut [MaybeUninit<u64>],
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
        self.note.swap(i, j);
    }

    /// The note of range `i` (set with `note_set` before it is read).
    fn note(&self, i: usize) -> u64 {
        // SAFETY: read only for ranges whose tags say a note was written.
        unsafe { self.note[i].assume_init() }
    }

    fn note_set(&mut self, i: usize, v: u64) {
        self.note[i] = MaybeUninit::new(v);
    }
}

// ----- an error of one range, in one word -----
//
// bits 0-2: kind (1 Busy, 2 WrongState, 3 Os, 4 Locked, 5 Unverified)
// Busy, WrongState: bits 3-4 the state found; bits 32-63 the page of the range it is about.
// Os: bit 3 changed; bits 8-11 the call; bits 12-19 its advice; bits 32-63 the errno.

fn pack(e: &Error, range_offset: usize, shift: u32) -> u64 {
    let page = |o: usize| ((o.saturating_sub(range_offset) >> shift) as u64 & 0xFFFF_FFFF) << 32;
    match *e {
        Error::Busy { offset, .. } => 1 | page(offset),
        Error::WrongState { offset, found, .. } => 2 | (found as u64) << 3 | page(offset),
        Error::Os {
            call,
            errno,
            changed,
            ..
        } => {
            let (c, a) = match call {
                Syscall::Mmap => (0, 0),
                Syscall::Munmap => (1, 0),
                Syscall::Mprotect => (2, 0),
                Syscall::Madvise(a) => (3, a),
                Syscall::ProcessMadvise(a) => (4, a),
                Syscall::PidfdOpen => (5, 0),
                Syscall::Prctl => (6, 0),
                Syscall::OpenPagemap => (7, 0),
                Syscall::PagemapScan => (8, 0),
                Syscall::PagemapRead => (9, 0),
                Syscall::Mincore => (10, 0),
            };
            3 | (changed as u64) << 3
                | (c as u64) << 8
                | ((a as u64) & 0xFF) << 12
                | (errno.0 as u32 as u64) << 32
        }
        Error::Locked { .. } => 4,
        _ => 5,
    }
}

fn unpack(n: u64, op: Op, range_offset: usize, len: usize, shift: u32) -> Error {
    let offset = range_offset + (((n >> 32) as usize) << shift);
    let state = |s: u64| match s & 3 {
        0 => State::Reserved,
        1 => State::Prepared,
        2 => State::Ready,
        _ => State::Faulted,
    };
    match n & 7 {
        1 => Error::Busy { op, offset },
        2 => Error::WrongState {
            op,
            offset,
            found: state(n >> 3),
        },
        3 => {
            let a = ((n >> 12) & 0xFF) as i32;
            let call = match (n >> 8) & 0xF {
                0 => Syscall::Mmap,
                1 => Syscall::Munmap,
                2 => Syscall::Mprotect,
                3 => Syscall::Madvise(a),
                4 => Syscall::ProcessMadvise(a),
                5 => Syscall::PidfdOpen,
                6 => Syscall::Prctl,
                7 => Syscall::OpenPagemap,
                8 => Syscall::PagemapScan,
                9 => Syscall::PagemapRead,
                _ => Syscall::Mincore,
            };
            Error::Os {
                op,
                call,
                errno: Errno((n >> 32) as u32 as i32),
                changed: n & 8 != 0,
            }
        }
        4 => Error::Locked {
            op,
            offset: range_offset,
            len,
        },
        _ => Error::Unverified {
            op,
            offset: range_offset,
            len,
        },
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
            sole: 0,
            // SAFETY: an array of MaybeUninit needs no initialisation.
            iov: unsafe { MaybeUninit::uninit().assume_init() },
            idx: unsafe { MaybeUninit::uninit().assume_init() },
            note: unsafe { MaybeUninit::uninit().assume_init() },
            retry: false,
            groups: None,
            claimed_bytes: 0,
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

    fn op(&self) -> Op {
        match self.kind {
            BatchKind::Unused(_) => Op::Unused,
            BatchKind::Fault(_) => Op::Fault,
        }
    }

    /// Queue `[offset, offset+len)` of `region`. The range is checked now (alignment, length,
    /// inside the region: the same typed errors as the direct transitions; nothing is queued
    /// on error); its pages' states are checked when the batch is flushed, which claims them
    /// (see [`Batch`]). Flushes first if the batch is full.
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
    /// // Outside the region: refused, nothing queued.
    /// assert!(matches!(unsafe { b.push(&r, 4 * ps, ps) }, Err(osmem::Error::OutOfRange { .. })));
    /// assert!(b.is_empty());
    /// // Reserved, not Ready: queued, and refused by the flush, which changes nothing.
    /// unsafe { b.push(&r, 0, ps)? };
    /// let rep = unsafe { b.flush() };
    /// assert_eq!((rep.ranges, rep.refused), (0, 1));
    /// assert!(matches!(rep.error, Some(osmem::Error::WrongState { .. })));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    #[inline]
    pub unsafe fn push(
        &mut self,
        region: &'r Reservation,
        offset: usize,
        len: usize,
    ) -> Result<(), Error> {
        let addr = region.check_range(self.op(), offset, len)?;
        if self.len == N {
            self.flush_inner(None::<&mut fn(BatchRange<'r>)>);
        }
        // The usual batch: every range of one reservation, one compare and the iovec.
        if self.sole == region as *const Reservation as usize {
            let i = self.len;
            self.iov[i] = MaybeUninit::new(Iov { base: addr, len });
            self.len = i + 1;
        } else {
            self.push_other(region, addr, len);
        }
        Ok(())
    }

    /// `push` of a range whose reservation is not the batch's only one (yet).
    #[inline(never)]
    fn push_other(&mut self, region: &'r Reservation, addr: usize, len: usize) {
        let k = self.region_index(region);
        let i = self.len;
        self.iov[i] = MaybeUninit::new(Iov { base: addr, len });
        if self.nregions > 1 {
            self.idx[i] = MaybeUninit::new(k as u8);
        }
        self.len += 1;
    }

    /// The index of `region` among the batch's reservations, adding it (and flushing first if
    /// there are eight already).
    fn region_index(&mut self, region: &'r Reservation) -> usize {
        if let Some(k) = self.regions[..self.nregions]
            .iter()
            .position(|r| r.is_some_and(|r| core::ptr::eq(r, region)))
        {
            return k;
        }
        if self.nregions == REGIONS {
            self.flush_inner(None::<&mut fn(BatchRange<'r>)>);
        }
        if self.nregions == 1 {
            // A second reservation: from now on each range records whose it is.
            for slot in &mut self.idx[..self.len] {
                *slot = MaybeUninit::new(0);
            }
        }
        self.regions[self.nregions] = Some(region);
        self.nregions += 1;
        self.sole = if self.nregions == 1 {
            region as *const Reservation as usize
        } else {
            0
        };
        self.nregions - 1
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
        self.flush_inner(None::<&mut fn(BatchRange<'r>)>);
        core::mem::take(&mut self.report)
    }

    /// Flush what is queued and return the totals since the last `flush`, consuming the
    /// batch: what dropping it does, without discarding the report (ranges refused or failed
    /// are said only there).
    ///
    /// Safe, as dropping is: every queued range was given up by [`push`](Self::push)'s
    /// contract.
    ///
    /// ```
    /// use osmem::{Batch, BatchKind, Reservation, UnusedAdvice};
    /// let ps = osmem::page_size();
    /// let r = Reservation::alloc(4 * ps)?;
    /// let mut b: Batch<'_, 4> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
    /// unsafe {
    ///     b.push(&r, 0, ps)?;
    ///     b.push(&r, 0, ps)?; // the same range again: refused
    /// }
    /// let rep = b.finish();
    /// assert_eq!((rep.ranges, rep.refused), (1, 1));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn finish(mut self) -> BatchReport {
        self.flush_inner(None::<&mut fn(BatchRange<'r>)>);
        core::mem::take(&mut self.report)
    }

    /// [`flush`](Self::flush), calling `each` with every range this flush acted on or
    /// refused, once each, after the flush has settled them all (so `each` sees the states
    /// the ranges are in now and may call osmem). Nothing is allocated. Ranges of one
    /// reservation come in the order they were pushed unless some were refused.
    ///
    /// # Safety
    /// The contract of [`push`](Self::push) applies to every queued range.
    ///
    /// ```
    /// use osmem::{Batch, BatchDone, BatchKind, Reservation, UnusedAdvice, UnusedHow};
    /// let ps = osmem::page_size();
    /// let r = Reservation::alloc(8 * ps)?;
    /// let mut b: Batch<'_, 8> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
    /// unsafe {
    ///     b.push(&r, 0, 2 * ps)?;
    ///     b.push(&r, ps, ps)?; // overlaps the first: refused, untouched
    /// }
    /// let mut seen = [(0, None); 2];
    /// let mut n = 0;
    /// let rep = unsafe {
    ///     b.flush_with(|range| {
    ///         seen[n] = (range.offset, range.result.ok());
    ///         n += 1;
    ///     })
    /// };
    /// assert_eq!((rep.ranges, rep.refused, n), (1, 1, 2));
    /// assert!(seen.iter().any(|&(o, d)| o == 0
    ///     && matches!(d, Some(BatchDone::Unused(u)) if u.how == UnusedHow::DontNeed)));
    /// assert!(seen.iter().any(|&(o, d)| o == ps && d.is_none()));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub unsafe fn flush_with(&mut self, mut each: impl FnMut(BatchRange<'r>)) -> BatchReport {
        self.flush_inner(Some(&mut each));
        core::mem::take(&mut self.report)
    }

    fn flush_inner<F: FnMut(BatchRange<'r>)>(&mut self, mut each: Option<&mut F>) {
        if self.len == 0 {
            return;
        }
        stats::bump(Counter::BatchFlushes);
        stats::add(Counter::BatchRanges, self.len as u64);
        let me = crate::thread::me();
        loop {
            let all = self.claim_all(me);
            let nc = if all { self.len } else { self.claimed_first() };
            let mut uniform = None;
            if nc > 0 {
                let mut pidfd = Pidfd::new();
                uniform = match self.kind {
                    BatchKind::Unused(advice) => self.flush_unused(advice, nc, &mut pidfd),
                    BatchKind::Fault(strategy) => self.flush_fault(strategy, nc, &mut pidfd),
                };
                pidfd.close();
                self.settle(nc, uniform, me, all);
                self.verify(nc, uniform);
            }
            if let Some(f) = each.as_mut() {
                self.report_each(nc, uniform, f);
            }
            // What is left: ranges a fork in progress kept from being claimed. This round's
            // claims are all settled, so this thread may wait for the fork now, unless the
            // fork waits for it (a signal handler on a thread inside osmem).
            if all || self.keep_pending() == 0 {
                break;
            }
            if crate::fork::wait_end().is_err() {
                self.refuse_pending_busy();
                if let Some(f) = each.as_mut() {
                    self.report_each(0, None, f);
                }
                break;
            }
        }
        self.len = 0;
        self.regions = [None; REGIONS];
        self.nregions = 0;
        self.sole = 0;
        self.retry = false;
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
                    note: &mut self.note[..n],
                },
            )
        }
    }

    /// Claim every pending range: one section per reservation. Ranges of a reservation whose
    /// map is held across a fork in progress stay pending. Returns whether every range was
    /// claimed (none refused, none pending: the usual case, nothing to reorder).
    fn claim_all(&mut self, me: usize) -> bool {
        let op = self.op();
        let nregions = self.nregions;
        let retry = self.retry;
        let mut report = core::mem::take(&mut self.report);
        let refused_before = report.refused;
        let mut pending = false;
        let mut groups = (self.len < 1 << GROUP_I_BITS).then_some(0);
        let mut bytes = 0;
        let (iov, mut regs) = self.queued();
        for k in 0..nregions {
            let r = regs.regions[k].expect("a reservation of the batch");
            let mine = |regs: &Regions<'_, 'r>, i: usize, v: &Iov| {
                (!retry || v.len & PENDING != 0) && regs.index(i) == k
            };
            if nregions > 1 && !iov.iter().enumerate().any(|(i, v)| mine(&regs, i, v)) {
                continue;
            }
            let claims = match r.begin_claims(me) {
                Ok(c) => Some(c),
                Err(true) => {
                    // Held across a fork in progress: all of its ranges wait for the next round.
                    mark_pending(iov, 0, |i, v| mine(&regs, i, v));
                    pending = true;
                    continue;
                }
                Err(false) => None,
            };
            let mut ctx = ClaimCtx {
                r,
                op,
                claims,
                retry,
                report: &mut report,
                groups: &mut groups,
                bytes: &mut bytes,
            };
            // The usual batch (one reservation, first round) gets a loop of its own.
            pending |= if nregions == 1 && !retry {
                ctx.claim(iov, &mut regs, |_, _, _| true)
            } else {
                ctx.claim(iov, &mut regs, mine)
            };
        }
        let all = report.refused == refused_before && !pending;
        self.report = report;
        self.groups = groups;
        self.claimed_bytes = bytes;
        all
    }

    /// Move the claimed ranges to the front (keeping their order), and return how many.
    fn claimed_first(&mut self) -> usize {
        let (iov, mut regs) = self.queued();
        let mut nc = 0;
        for i in 0..iov.len() {
            if iov[i].len & (REFUSED | PENDING) == 0 {
                if i != nc {
                    // Rotate [nc, i] right by one: the refused ones between keep their order.
                    for j in (nc..i).rev() {
                        iov.swap(j, j + 1);
                        regs.swap(j, j + 1);
                    }
                }
                nc += 1;
            }
        }
        nc
    }

    /// Drop every range but the pending ones, which move to the front; their number.
    fn keep_pending(&mut self) -> usize {
        self.retry = true;
        let (iov, mut regs) = self.queued();
        let mut n = 0;
        for i in 0..iov.len() {
            if iov[i].len & PENDING != 0 {
                iov.swap(i, n);
                regs.swap(i, n);
                n += 1;
            }
        }
        self.len = n;
        n
    }

    /// This thread cannot wait for the fork in progress (it is inside osmem): refuse the
    /// ranges still pending with `Busy`.
    fn refuse_pending_busy(&mut self) {
        let op = self.op();
        let mut report = core::mem::take(&mut self.report);
        let (iov, mut regs) = self.queued();
        for (i, v) in iov.iter_mut().enumerate() {
            let r = regs.get(i);
            let e = Error::Busy {
                op,
                offset: r.offset_of(v.base),
            };
            regs.note_set(i, pack(&e, r.offset_of(v.base), r.page_shift()));
            v.len = (v.len & !TAGS) | REFUSED;
            report.refused += 1;
            report.error.get_or_insert(e);
        }
        self.report = report;
    }

    /// The system calls of an unused flush on the claimed ranges `[0, nc)`, and each range's
    /// outcome in its tags. `Some((code, how))`: every range came out the same (released by
    /// the batched calls, no harddecommit, no checks), and no tag was written.
    fn flush_unused(
        &mut self,
        advice: UnusedAdvice,
        nc: usize,
        pidfd: &mut Pidfd,
    ) -> Option<(u8, usize)> {
        let madv = match advice {
            UnusedAdvice::Free => Some(sys::MADV_FREE),
            UnusedAdvice::DontNeed => Some(dontneed_advice()),
            UnusedAdvice::Remap => None,
        };
        let mut report = core::mem::take(&mut self.report);
        let before = report.ranges;
        let (iov, mut regs) = self.queued();
        let iov = &mut iov[..nc];
        let knobs = regs.knobs();
        // Harddecommit protects after releasing.
        before_split(iov, &regs, |k| knobs[k].is_some_and(|k| k.harddecommit()));
        let done = match madv {
            Some(madv) => submit(iov, madv, pidfd, &mut report.batch_calls),
            None => 0,
        };
        let batched_how = match madv {
            Some(sys::MADV_FREE) => UnusedHow::Free,
            Some(sys::MADV_DONTNEED_LOCKED) => UnusedHow::DontNeedLocked,
            _ => UnusedHow::DontNeed,
        };
        // The usual outcome: every range released by the batched calls, and no reservation
        // asking for harddecommit or checks: one code for all, settled in one pass.
        let plain =
            |k: &Option<config::Knobs>| k.map_or(true, |k| !k.harddecommit() && !k.checked());
        if done == nc && knobs.iter().all(plain) {
            report.settled_all(nc, self.claimed_bytes);
            if batched_how == UnusedHow::Free {
                report.not_zeroed += nc;
            }
            stats::add(Counter::UnusedOps, nc as u64);
            self.report = report;
            return Some((
                region::code_after_unused(batched_how, false),
                unused_how_tag(batched_how),
            ));
        }
        mark_done(iov, done);
        // Per range, without any lock: the per-range chain where the batch did not release
        // it, harddecommit, and the outcome, kept in the range's tags for the settling.
        for (i, v) in iov.iter_mut().enumerate() {
            let r = regs.get(i);
            let how = if v.base & DONE != 0 {
                let how = if v.base & LOCKED != 0 {
                    UnusedHow::DontNeedLocked
                } else {
                    batched_how
                };
                v.base &= !(DONE | LOCKED);
                Ok((how, true))
            } else {
                if madv.is_some() {
                    report.per_range += 1;
                    stats::bump(Counter::FallbackBatchRange);
                }
                unused::release(v.base, v.len, r.offset_of(v.base), advice, r.remap_how())
            };
            match how {
                Ok((how, released)) => {
                    let k = knobs[regs.index(i)].expect("a queued range's knobs");
                    let protected = k.harddecommit() && r.protect_released(v.base, v.len);
                    report.settled(v.len);
                    report.not_released += usize::from(!released);
                    v.len |= region::code_after_unused(how, protected) as usize
                        | unused_how_tag(how)
                        | if released { 0 } else { KEPT };
                    if how == UnusedHow::Free {
                        report.not_zeroed += 1;
                        v.len |= OPEN;
                    }
                }
                Err(err) => {
                    let hole = err.changed();
                    report.failed(v, i, &mut regs, r, err);
                    // (After `failed`, which reads the untagged address.)
                    if hole {
                        v.base |= HOLE;
                    }
                }
            }
        }
        stats::add(Counter::UnusedOps, (report.ranges - before) as u64);
        self.report = report;
        None
    }

    /// The system calls of a fault flush on the claimed ranges `[0, nc)` (see
    /// `flush_unused`).
    fn flush_fault(
        &mut self,
        strategy: FaultStrategy,
        nc: usize,
        pidfd: &mut Pidfd,
    ) -> Option<(u8, usize)> {
        let strategy = fault::resolve(strategy);
        let batched = matches!(strategy, FaultStrategy::Guard | FaultStrategy::Protect);
        let mut report = core::mem::take(&mut self.report);
        let before = report.ranges;
        let (iov, mut regs) = self.queued();
        let iov = &mut iov[..nc];
        let knobs = regs.knobs();
        if matches!(strategy, FaultStrategy::Protect | FaultStrategy::Go) {
            before_split(iov, &regs, |_| true);
        }
        let mut emptied = 0;
        let mut guarded_all = false;
        if batched {
            // Phase 1: empty every range with one batched DONTNEED (one TLB flush).
            let done = submit(iov, dontneed_advice(), pidfd, &mut report.batch_calls);
            if done == iov.len() {
                // All emptied, in place: phase 2 takes them all.
                emptied = done;
            } else {
                mark_done(iov, done);
                // Phase 2 works on the emptied ranges only: move them to the front, keeping
                // each range with its reservation, and clear their marks for the next call.
                for i in 0..iov.len() {
                    if iov[i].base & DONE != 0 {
                        iov[i].base &= !(DONE | LOCKED);
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
            report.settled_all(nc, self.claimed_bytes);
            stats::add(Counter::FaultOps, nc as u64);
            self.report = report;
            return Some((
                region::code_after_fault(FaultHow::Guard),
                fault_how_tag(FaultHow::Guard),
            ));
        }
        if guarded_all {
            mark_done(iov, iov.len());
        }
        let expected = match strategy {
            FaultStrategy::Guard => FaultHow::Guard,
            FaultStrategy::Go => FaultHow::Go,
            FaultStrategy::Remap => FaultHow::Remap,
            _ => FaultHow::Protect,
        };
        for (i, v) in iov.iter_mut().enumerate() {
            let guarded = v.base & DONE != 0;
            v.base &= !(DONE | LOCKED);
            let (addr, len) = (v.base, v.len);
            let r = regs.get(i);
            let how = if i < emptied && strategy == FaultStrategy::Guard && guarded {
                Ok(FaultHow::Guard)
            } else if i < emptied {
                if strategy == FaultStrategy::Guard {
                    // Emptied but refused guard markers (mlocked): another link.
                    stats::bump(Counter::FallbackFaultGuard);
                }
                // Emptied but not guarded: protect it (nothing left to flush, so cheap), or
                // report it released-only if the protection fails (VMA limit).
                // SAFETY: claimed ranges are owned and dead (the `push` contract).
                match advise::retry(|| unsafe { sys::mprotect(addr, len, sys::PROT_NONE) }) {
                    Ok(()) => Ok(FaultHow::Protect),
                    Err(_) => Ok(fault::unprotectable(addr, len)),
                }
            } else {
                if batched {
                    report.per_range += 1;
                    stats::bump(Counter::FallbackBatchRange);
                }
                fault::fault(addr, len, strategy, r.remap_how())
            };
            match how {
                Ok(how) => {
                    report.settled(len);
                    report.other_link += usize::from(how != expected);
                    v.len |= region::code_after_fault(how) as usize | fault_how_tag(how);
                    if how == FaultHow::ReleasedOnly {
                        report.not_trapping += 1;
                        v.len |= OPEN;
                    }
                }
                Err(err) => report.failed(v, i, &mut regs, r, err),
            }
        }
        stats::add(Counter::FaultOps, (report.ranges - before) as u64);
        self.report = report;
        None
    }

    /// Settle the claimed ranges `[0, nc)`: one section per reservation, each range to the
    /// code in its tags (or `uniform`'s), a failed one let go unchanged. A reservation whose
    /// map is held across a fork by the forking thread gets its settle handed over; the flush
    /// waits for those after settling every other reservation (the fork waits for them).
    fn settle(&mut self, nc: usize, uniform: Option<(u8, usize)>, me: usize, all: bool) {
        let nregions = self.nregions;
        // The groups hold if every range was claimed in place (none refused or pending).
        let groups = if all { self.groups } else { None };
        let (iov, regs) = self.queued();
        let iov = &iov[..nc];
        let idx = regs.idx.as_deref();
        let mut rs: [Option<&'r Reservation>; REGIONS] = [None; REGIONS];
        for (k, slot) in rs.iter_mut().enumerate().take(nregions) {
            let mine = |i: usize| idx.map_or(0, |x| x[i] as usize) == k;
            if (0..nc).any(mine) {
                *slot = regs.regions[k];
            }
        }
        let mut jobs = [(); REGIONS].map(|_| None::<SettleJob<'_, 'r>>);
        let mut recs = [(); REGIONS].map(|_| MaybeUninit::<Deferred>::uninit());
        let mut waits: [Option<&Deferred>; REGIONS] = [None; REGIONS];
        for (k, ((job, rec), w)) in jobs
            .iter_mut()
            .zip(recs.iter_mut())
            .zip(waits.iter_mut())
            .enumerate()
        {
            let Some(r) = rs[k] else { continue };
            let j = job.insert(SettleJob {
                r,
                k,
                iov,
                idx,
                // SAFETY: the claims wrote the first `2 * ng` notes.
                groups: groups.map(|ng| unsafe {
                    &*(&regs.note[..2 * ng] as *const [MaybeUninit<u64>] as *const [u64])
                }),
                code: uniform.map(|u| u.0),
                me,
            });
            *w = r.settle_batch(j, rec);
        }
        for (r, w) in rs.iter().zip(waits.iter()) {
            if let (Some(r), Some(d)) = (r, w) {
                r.wait_settled(d);
            }
        }
    }

    /// Checked mode: ask the kernel whether each settled range shows its effect.
    fn verify(&mut self, nc: usize, uniform: Option<(u8, usize)>) {
        if uniform.is_some() {
            return; // no reservation of the flush is checked
        }
        let op = self.op();
        let mut report = core::mem::take(&mut self.report);
        let (iov, mut regs) = self.queued();
        let knobs = regs.knobs();
        for (i, v) in iov[..nc].iter_mut().enumerate() {
            let k = knobs[regs.index(i)].expect("a queued range's knobs");
            if v.len & FAILED != 0 || !k.checked() {
                continue;
            }
            let r = regs.get(i);
            let len = v.len & !TAGS;
            let r2 = match op {
                Op::Unused => {
                    // Only "zero-filled" has something to check (MADV_FREE keeps pages
                    // resident).
                    let u = Unused {
                        how: UnusedHow::DontNeed,
                        zeroed: v.len & OPEN == 0,
                        protected: false,
                        released: v.len & KEPT == 0,
                    };
                    r.verify_unused_at(v.base, len, &u)
                }
                _ => {
                    let how = if v.len & OPEN != 0 {
                        FaultHow::ReleasedOnly
                    } else {
                        FaultHow::Guard // any trapping fault: the check is the same
                    };
                    r.verify_fault_at(v.base, len, &Faulted { how })
                }
            };
            if let Err(err) = r2 {
                regs.note_set(i, pack(&err, r.offset_of(v.base), r.page_shift()));
                v.base |= UNVERIFIED;
                report.unverified += 1;
                report.error.get_or_insert(err);
            }
        }
        self.report = report;
    }

    /// Give `f` every range of this round that is not pending: the claimed ones `[0, nc)`
    /// with their outcome, the refused ones with their error.
    fn report_each<F: FnMut(BatchRange<'r>)>(
        &mut self,
        nc: usize,
        uniform: Option<(u8, usize)>,
        f: &mut F,
    ) {
        let (op, kind) = (self.op(), self.kind);
        let (iov, regs) = self.queued();
        for (i, v) in iov.iter().enumerate() {
            if v.len & PENDING != 0 || (i >= nc && v.len & REFUSED == 0) {
                continue;
            }
            let r = regs.get(i);
            let (base, len) = (v.base & !BASE_TAGS, v.len & !TAGS);
            let offset = r.offset_of(base);
            let result = if v.len & (REFUSED | FAILED) != 0 || v.base & UNVERIFIED != 0 {
                Err(unpack(regs.note(i), op, offset, len, r.page_shift()))
            } else {
                let (code, how) = uniform.unwrap_or(((v.len & CODE) as u8, v.len & HOW));
                let h = how >> HOW_SHIFT;
                Ok(match kind {
                    BatchKind::Unused(_) => {
                        let how = UNUSED_HOWS[h.min(3)];
                        BatchDone::Unused(Unused {
                            how,
                            zeroed: how != UnusedHow::Free,
                            protected: region::code_protected(code),
                            released: v.len & KEPT == 0,
                        })
                    }
                    BatchKind::Fault(_) => BatchDone::Faulted(Faulted {
                        how: FAULT_HOWS[h.min(4)],
                    }),
                })
            };
            f(BatchRange {
                region: r,
                offset,
                len,
                result,
            });
        }
    }
}

/// One reservation's settle of a flush: a [`Job`] run in one section of its map (or by the
/// holder of its lock across a fork).
struct SettleJob<'a, 'r> {
    r: &'r Reservation,
    /// Its index in the batch.
    k: usize,
    iov: &'a [Iov],
    idx: Option<&'a [u8]>,
    /// The groups of the claims (see `group_span`), when they still hold.
    groups: Option<&'a [u64]>,
    /// One code for every range (the flush's uniform outcome).
    code: Option<u8>,
    me: usize,
}

impl Job for SettleJob<'_, '_> {
    fn run(&mut self, g: &mut Guard<'_>) {
        let (iov, idx, k, code, r) = (self.iov, self.idx, self.k, self.code, self.r);
        let mine = |i: usize| idx.map_or(true, |x| x[i] as usize == k);
        let groups = self.groups.unwrap_or(&[]);
        let geometry = r.geometry();
        let sh = geometry.1;
        r.settle_in(g, self.me, |s| {
            let n = iov.len();
            // The next group of this reservation (they come in order of their first range).
            let mut gi = 0;
            let mut next = || {
                while gi < groups.len() {
                    let (span, m) = (groups[gi], groups[gi + 1]);
                    gi += 2;
                    let (a, b, w) = group_unspan(span);
                    if mine(a) {
                        return (a, b, w, m);
                    }
                }
                (n, n, 0, 0)
            };
            let mut grp = next();
            let mut i = 0;
            while i < n {
                if let (Some(c), true) = (code, i == grp.0) {
                    // One code for all (the usual flush): a group's pages with one store, as
                    // they were claimed (from its notes alone: its ranges are not read).
                    let (j, w, m) = (grp.1, grp.2, grp.3);
                    let bytes = (m.count_ones() as u64 / 4) << sh;
                    if !s.set_word(w << 4, m, bytes, c) {
                        for u in &iov[i..j] {
                            s.set(u.base & !BASE_TAGS, u.len & !TAGS, c);
                        }
                    }
                    i = j;
                    grp = next();
                    continue;
                }
                if !mine(i) {
                    i += 1;
                    continue;
                }
                let v = &iov[i];
                let (base, len) = (v.base & !BASE_TAGS, v.len & !TAGS);
                if let Some(c) = code {
                    // A range inside one word (not the last page's) with one store, as it
                    // may have been claimed (`false`: no leaf there, the general way).
                    let m = one_word(base, len, geometry);
                    if !m.is_some_and(|(w, m)| s.set_word(w << 4, m, len as u64, c)) {
                        s.set(base, len, c);
                    }
                } else if v.len & FAILED != 0 && v.base & HOLE != 0 {
                    s.set(base, len, region::RESERVED_CODE);
                } else if v.len & FAILED != 0 {
                    s.unclaim(base, len);
                } else {
                    s.set(base, len, (v.len & CODE) as u8);
                }
                i += 1;
            }
        });
    }
}

impl BatchReport {
    fn settled(&mut self, len: usize) {
        self.ranges += 1;
        self.bytes += len;
    }

    /// Every range claimed this round settled: `n` ranges of `bytes` in all.
    fn settled_all(&mut self, n: usize, bytes: usize) {
        self.ranges += n;
        self.bytes += bytes;
    }

    /// The range's release failed: it is let go of, unchanged, when the batch settles.
    fn failed(
        &mut self,
        v: &mut Iov,
        i: usize,
        regs: &mut Regions<'_, '_>,
        r: &Reservation,
        err: Error,
    ) {
        regs.note_set(i, pack(&err, r.offset_of(v.base), r.page_shift()));
        v.len |= FAILED;
        self.failed += 1;
        self.error.get_or_insert(err);
    }
}

impl<const N: usize> Drop for Batch<'_, N> {
    fn drop(&mut self) {
        // The `push` contract already gave these ranges up: release them. (Nothing is held
        // until the flush claims, so a batch that is leaked instead holds nothing.)
        self.flush_inner(None::<&mut fn(BatchRange<'_>)>);
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
        sys::MADV_DONTNEED_LOCKED => D_PM_DONTNEED_LOCKED,
        _ => D_PM_GUARD,
    }
}

/// The advice a DONTNEED batch starts with: `MADV_DONTNEED`, or `MADV_DONTNEED_LOCKED` once
/// locked memory has been seen in this process (the same on unlocked memory, and accepted on
/// locked memory: see the module doc).
fn dontneed_advice() -> i32 {
    if advise::locked_seen()
        && advise::usable(D_DONTNEED_LOCKED)
        && advise::clear(D_PM_DONTNEED_LOCKED)
    {
        sys::MADV_DONTNEED_LOCKED
    } else {
        sys::MADV_DONTNEED
    }
}

/// One reservation's claims in [`Batch::claim_all`].
struct ClaimCtx<'a, 'r> {
    r: &'r Reservation,
    op: Op,
    /// `None`: the map's lock cannot be had at all (this thread holds it: a signal handler).
    claims: Option<region::Claims<'r>>,
    retry: bool,
    report: &'a mut BatchReport,
    /// Groups recorded so far (see `group_span`); `None` once a range was refused.
    groups: &'a mut Option<usize>,
    /// Bytes of the ranges claimed so far.
    bytes: &'a mut usize,
}

impl<'r> ClaimCtx<'_, 'r> {
    /// Claim the ranges `mine` says are this reservation's, in groups where they share a
    /// word. Returns whether some must wait for the next round (a fork holds the arena).
    #[inline(always)]
    fn claim(
        &mut self,
        iov: &mut [Iov],
        regs: &mut Regions<'_, 'r>,
        mine: impl Fn(&Regions<'_, 'r>, usize, &Iov) -> bool,
    ) -> bool {
        let (r, op, retry) = (self.r, self.op, self.retry);
        let (rb, sh, last_w) = r.geometry();
        let word_len = 16usize << sh;
        if last_w >> GROUP_W_BITS != 0 {
            *self.groups = None;
        }
        let word = |v: &Iov| one_word(v.base, v.len & !TAGS, (rb, sh, last_w));
        let n = iov.len();
        // The leaf of the last group claimed: the next groups in it need no walk. (Valid
        // until a range is claimed the general way, which may split or fold nodes.)
        let mut leaf: Option<(usize, &'static Node)> = None;
        let mut i = 0;
        while i < n {
            if !mine(regs, i, &iov[i]) {
                i += 1;
                continue;
            }
            // A group: the disjoint ranges after this one in its word.
            if let (Some(c), Some((w, mut m))) = (self.claims.as_mut(), word(&iov[i])) {
                // The ranges after it inside the word, by their offset from its start (one
                // subtraction and two compares tell, no division into words).
                let wbase = rb + (w << (sh + 4));
                let mut j = i + 1;
                let mut bytes = iov[i].len & !TAGS;
                while j < n && mine(regs, j, &iov[j]) {
                    let u = &iov[j];
                    let off = u.base.wrapping_sub(wbase);
                    let end = off.wrapping_add(u.len & !TAGS);
                    if off >= word_len || end > word_len {
                        break;
                    }
                    let m2 = crate::table::nibble_mask(off >> sh, end >> sh);
                    if m & m2 != 0 {
                        break;
                    }
                    m |= m2;
                    bytes += u.len & !TAGS;
                    j += 1;
                }
                // A range alone in its word is claimed there too when the leaf is there
                // already or the next range needs it (measured: 256 × 64 KiB ranges, each one
                // word, cost ~80 ns each the general way, in leaves made anyway); not recorded
                // as a group (its two notes would not fit), so it settles on its own.
                let lone = j == i + 1
                    && (leaf.is_some_and(|(l, _)| l == (w << 4) / LEAF)
                        || (j < n
                            && mine(regs, j, &iov[j])
                            && ((iov[j].base - rb) >> sh) / LEAF == (w << 4) / LEAF));
                if (j > i + 1 || lone) && claim_group(c, &mut leaf, w << 4, m) {
                    *self.bytes += bytes;
                    if let (Some(ng), false) = (self.groups.as_mut(), lone) {
                        regs.note_set(2 * *ng, group_span(i, j, w));
                        regs.note_set(2 * *ng + 1, m);
                        *ng += 1;
                    }
                    if retry {
                        for v in &mut iov[i..j] {
                            v.len &= !TAGS;
                        }
                    }
                    i = j;
                    continue;
                }
                // A page not Ready or held (or a range alone in a leaf): one by one.
            }
            let v = &mut iov[i];
            let len = v.len & !TAGS;
            leaf = None;
            let refused = match self.claims.as_mut() {
                None => Error::Busy {
                    op,
                    offset: r.offset_of(v.base),
                },
                Some(c) => match c.claim(op, v.base, len) {
                    Ok(()) => {
                        v.len = len;
                        *self.bytes += len;
                        i += 1;
                        continue;
                    }
                    Err(Some(e)) => e,
                    // The arena is held across a fork: the rest after it wait.
                    Err(None) => {
                        mark_pending(iov, i, |i, v| mine(regs, i, v));
                        return true;
                    }
                },
            };
            *self.groups = None;
            regs.note_set(i, pack(&refused, r.offset_of(v.base), r.page_shift()));
            v.len = len | REFUSED;
            self.report.refused += 1;
            self.report.error.get_or_insert(refused);
            i += 1;
        }
        false
    }
}

/// Claim the pages of nibble mask `m` of the word starting at page `w0` (a group of ranges)
/// with one load and one store, making the leaf there if the map has none yet.
/// `leaf` caches the leaf of the last group (its index and node).
#[inline(always)]
fn claim_group(
    c: &mut region::Claims<'_>,
    leaf: &mut Option<(usize, &'static Node)>,
    w0: usize,
    m: u64,
) -> bool {
    let node = match *leaf {
        Some((l, node)) if l == w0 / LEAF => node,
        _ => match c.leaf_word(w0, m) {
            Some((node, _)) => {
                *leaf = Some((w0 / LEAF, node));
                node
            }
            None => return false,
        },
    };
    if Guard::claim_word(node, (w0 % LEAF) / 16, m, region::READY_CODE) {
        c.claimed_some();
        true
    } else {
        false
    }
}

/// [`Reservation::before_split`] for each reservation of the flush whose VMA `splits(k)` says
/// may be split: once, at its first range (it acts once per reservation anyway; this spares
/// the usual batch a call per range).
fn before_split(iov: &[Iov], regs: &Regions<'_, '_>, splits: impl Fn(usize) -> bool) {
    let live = regs.regions.iter().filter(|r| r.is_some()).count();
    let mut seen = 0u32;
    for (i, v) in iov.iter().enumerate() {
        let k = regs.index(i);
        if seen & 1 << k == 0 {
            seen |= 1 << k;
            if splits(k) {
                regs.get(i).before_split(v.base & !BASE_TAGS);
            }
            if seen.count_ones() as usize == live {
                break;
            }
        }
    }
}

/// Tag `PENDING` the ranges from `from` on that `mine` says are the reservation's.
#[cold]
fn mark_pending(iov: &mut [Iov], from: usize, mine: impl Fn(usize, &Iov) -> bool) {
    for (i, v) in iov.iter_mut().enumerate().skip(from) {
        if mine(i, v) {
            v.len |= PENDING;
        }
    }
}

/// Apply `advice` to every range with process_madvise, ≤ 1024 per call, following the rules
/// in the module doc. Returns `p`: ranges `[0, p)` are done under `advice`, unmarked; later
/// ranges done are marked `DONE` (and `LOCKED` when done with `MADV_DONTNEED_LOCKED`). Ranges
/// left unmarked after `p` go through the per-range chain in the caller.
fn submit(iov: &mut [Iov], advice: i32, pidfd: &mut Pidfd, calls: &mut usize) -> usize {
    let n = iov.len();
    let mut i = 0;
    // Ranges `[0, prefix)` are done without a mark: the usual outcome (every chunk released
    // in full) then costs no pass over the iovecs after the system call.
    let mut prefix = 0;
    let mut retries = advise::TRANSIENT_RETRIES;
    let mut adv = advice;
    // The range a call stopped at: the next call starts there and tells why; if it stops
    // there again, the range goes to the per-range chain.
    let mut stopped_at = usize::MAX;
    while i < n {
        if !advise::clear(pm_bit(adv)) {
            return prefix;
        }
        let Some(fd) = pidfd.get() else {
            return prefix;
        };
        let mark = if adv == sys::MADV_DONTNEED_LOCKED {
            DONE | LOCKED
        } else {
            DONE
        };
        let chunk = (n - i).min(MAX_IOV);
        let total: usize = iov[i..i + chunk].iter().map(|v| v.len).sum();
        // SAFETY: Iov has iovec's layout; every range was claimed from a live Reservation
        // and given up by the caller of `push`.
        let r = unsafe {
            sys::process_madvise(fd, iov[i..].as_ptr() as *const libc::iovec, chunk, adv)
        };
        *calls += 1;
        match r {
            Ok(bytes) if bytes == total && prefix == i && adv == advice => {
                i += chunk;
                prefix = i;
            }
            Ok(bytes) => {
                // The kernel stops at the first failing iovec: those before it are done.
                let mut acc = 0;
                let mut k = i;
                while k < i + chunk && acc + iov[k].len <= bytes {
                    acc += iov[k].len;
                    iov[k].base |= mark;
                    k += 1;
                }
                i = if bytes == total {
                    i + chunk
                } else if stopped_at == k {
                    k + 1
                } else {
                    stopped_at = k;
                    k
                };
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
                // The first range failed: an advice process_madvise does not take here, or
                // a range the advice refuses (mlocked). madvise on that range tells which.
                let v = iov[i];
                match advise::advise(v.base, v.len, adv) {
                    Ok(()) => {
                        advise::downgrade(pm_bit(adv));
                        iov[i].base |= mark;
                        i += 1;
                    }
                    Err(Errno::EINVAL)
                        if matches!(adv, sys::MADV_DONTNEED | sys::MADV_FREE)
                            && advise::usable(D_DONTNEED_LOCKED) =>
                    {
                        // mlocked: remembered, and released with MADV_DONTNEED_LOCKED.
                        advise::saw_locked();
                        stats::bump(Counter::FallbackLocked);
                        if adv == sys::MADV_DONTNEED {
                            // The same on unlocked memory: the rest of the call with it.
                            adv = sys::MADV_DONTNEED_LOCKED;
                        } else {
                            // FREE goes on for the others; this one alone.
                            if advise::advise(v.base, v.len, sys::MADV_DONTNEED_LOCKED).is_ok() {
                                iov[i].base |= DONE | LOCKED;
                            }
                            i += 1;
                        }
                    }
                    Err(_) => i += 1,
                }
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
