//! The owning handle and the state machine.
//!
//! | from \ op | map | used | unused | fault | drop |
//! |---|---|---|---|---|---|
//! | Reserved | → Prepared | error | error | error | → None |
//! | Prepared | error | → Ready | error | error | → None |
//! | Ready | error | error | → Prepared | → Faulted | → None |
//! | Faulted | → Prepared | error | error | error | → None |
//!
//! Every page's state lives in a side table of one byte per page, in memory osmem maps for
//! itself (MAP_NORESERVE, so only the parts in use cost anything: 1/4096 of the region). The
//! table is what makes three promises cheap and exact:
//! - a transition from the wrong state is refused *before* any syscall;
//! - accounting moves exactly the bytes that changed state, even for mixed ranges;
//! - a faulted range is made usable again with the inverse of *whatever* faulted it (guard
//!   markers, PROT_NONE, remap, or released-only), even if the strategy changed meanwhile.
//!
//! The table is `MADV_DONTDUMP`: that flag keeps its VMA from ever merging with a region's RW
//! pages next to it, which would make the region's `/proc/self/smaps` lines include it.

use crate::advise;
use crate::config::{self, FaultStrategy, UnusedAdvice};
use crate::error::{Error, Op, Syscall};
use crate::fault::{self, FaultHow, Faulted};
use crate::huge;
use crate::names;
use crate::probe;
use crate::stats::{self, Counter};
use crate::sys::linux::{self as sys, Errno};
use crate::unused::{self, Unused, UnusedHow};
use crate::verify;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// The state of a page (DESIGN.md §1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Owned; any access faults; no footprint.
    Reserved,
    /// Meant to have no physical backing; cheap to make Ready; contents undefined.
    Prepared,
    /// Safe to read and write.
    Ready,
    /// Was Ready, then `fault` dropped its pages and (normally) made it trap. Go calls this
    /// Reserved; osmem keeps it apart because undoing it depends on how it was faulted.
    Faulted,
}

// Per-page codes in the side table. 0 must be RESERVED: an untouched table page reads as zero.
const RESERVED: u8 = 0;
const PREPARED: u8 = 1;
/// Prepared and PROT_NONE (harddecommit).
const PREPARED_NONE: u8 = 2;
const READY: u8 = 3;
/// Faulted with guard markers (protection RW).
const FAULT_GUARD: u8 = 4;
/// Faulted with PROT_NONE (by mprotect or by a PROT_NONE remap).
const FAULT_NONE: u8 = 5;
/// Released but not trapping (protection RW): the VMA limit stopped the protecting step.
const FAULT_OPEN: u8 = 6;
/// Flag on a page's code while a transition holds it (claimed atomically, before any
/// syscall): a second transition of the same page, on another thread or queued in a batch,
/// is refused with `Error::Busy` instead of racing with the first.
const BUSY: u8 = 0x80;

fn state_of(code: u8) -> State {
    match code & !BUSY {
        RESERVED => State::Reserved,
        PREPARED | PREPARED_NONE => State::Prepared,
        READY => State::Ready,
        _ => State::Faulted,
    }
}

fn byte_counter(s: State) -> Counter {
    match s {
        State::Reserved => Counter::ReservedBytes,
        State::Prepared => Counter::PreparedBytes,
        State::Ready => Counter::ReadyBytes,
        State::Faulted => Counter::FaultedBytes,
    }
}

/// An owned region of address space: the handle of Go's sysReserve/sysAlloc. Dropping it
/// unmaps the whole region (sysFree / sysUnreserve).
///
/// Transitions take `(offset, len)` relative to [`as_ptr`](Self::as_ptr); both must be
/// page-aligned, `len > 0`, and the range inside the region. They take `&self`, so threads may
/// transition **disjoint** ranges concurrently (the handle is `Sync`). Each transition claims
/// its pages atomically before any syscall, so overlapping concurrent transitions never both
/// act on a page: one that meets a page the other holds gets [`Error::Busy`] and changes
/// nothing (both can fail, if the holder then meets a page in the wrong state).
///
/// `map`, `used` and the huge-page hints never destroy data and are safe. `unused` and `fault`
/// discard the range's contents (and `fault` makes it trap), so they are `unsafe`: the caller
/// promises that nothing still reads or writes the range through a reference.
///
/// ```
/// use osmem::Reservation;
/// let ps = osmem::page_size();
/// let r = Reservation::reserve(64 * ps)?;           // None → Reserved
/// r.map(0, 16 * ps)?;                                // Reserved → Prepared
/// r.used(0, 16 * ps)?;                               // Prepared → Ready
/// unsafe { r.as_ptr().write(7) };
/// let u = unsafe { r.unused(0, 16 * ps)? };          // Ready → Prepared
/// assert!(u.zeroed);
/// r.used(0, 16 * ps)?;
/// assert_eq!(unsafe { r.as_ptr().read() }, 0);
/// let f = unsafe { r.fault(0, 16 * ps)? };           // Ready → Faulted (traps)
/// assert!(f.traps());
/// r.map(0, 16 * ps)?;                                // usable again, zero-filled
/// drop(r);                                           // → None
/// # Ok::<(), osmem::Error>(())
/// ```
pub struct Reservation {
    base: usize,
    len: usize,
    page_shift: u32,
    table: usize,
    table_len: usize,
    /// Whether the region was mapped MAP_NORESERVE; remaps inside it use the same flags so
    /// the kernel can merge them back into one VMA.
    noreserve: bool,
    /// This region's share of the global byte counters, by `State` index, so drop can
    /// subtract it in O(1) instead of scanning the table.
    bytes: [AtomicU64; 4],
}

// SAFETY: the handle owns its mapping; all mutation goes through syscalls on disjoint ranges
// and atomics (table bytes, counters).
unsafe impl Send for Reservation {}
unsafe impl Sync for Reservation {}

impl core::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reservation")
            .field("base", &(self.base as *const u8))
            .field("len", &self.len)
            .finish()
    }
}

fn os(op: Op, call: Syscall, errno: Errno, changed: bool) -> Error {
    Error::Os {
        op,
        call,
        errno,
        changed,
    }
}

impl Reservation {
    /// Reserve `len` bytes of address space: `PROT_NONE`, `MAP_NORESERVE`, no footprint
    /// (None → Reserved). The OS picks the address.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 30)?; // 1 GiB of address space, no memory
    /// assert_eq!(r.len(), 1 << 30);
    /// assert_eq!(r.state(0), Some(osmem::State::Reserved));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn reserve(len: usize) -> Result<Self, Error> {
        Self::reserve_aligned(len, page_size_checked())
    }

    /// Like [`reserve`](Self::reserve), with the start aligned to `align` (a power of two, at
    /// least the page size): over-reserve, then trim head and tail (Go's sysReserveAligned).
    ///
    /// ```
    /// let r = osmem::Reservation::reserve_aligned(4 << 20, 2 << 20)?;
    /// assert_eq!(r.as_ptr() as usize % (2 << 20), 0);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn reserve_aligned(len: usize, align: usize) -> Result<Self, Error> {
        let op = Op::Reserve;
        let ps = page_size_checked();
        check_len(op, len, ps)?;
        if !align.is_power_of_two() || align < ps {
            return Err(Error::Unaligned {
                op,
                offset: align,
                len,
            });
        }
        let extra = align - ps;
        let total = len.checked_add(extra).ok_or(Error::Overflow {
            op,
            offset: align,
            len,
        })?;
        // SAFETY: a fresh mapping; nothing else can be at the address the kernel picks.
        let raw =
            advise::retry(|| unsafe { sys::mmap_anon(0, total, sys::PROT_NONE, false, true) })
                .map_err(|e| os(op, Syscall::Mmap, e, false))?;
        let base = (raw + extra) & !(align - 1);
        // SAFETY: head and tail are parts of the mapping just created, not handed out. A
        // trim refused for good (a sandbox) leaves PROT_NONE address space with no memory.
        unsafe {
            if base > raw {
                let _ = advise::retry(|| sys::munmap(raw, base - raw));
            }
            let tail = raw + total - (base + len);
            if tail > 0 {
                let _ = advise::retry(|| sys::munmap(base + len, tail));
            }
        }
        let r = Self::adopt(op, base, len, RESERVED, true)?;
        stats::bump(Counter::ReserveOps);
        Ok(r)
    }

    /// Allocate `len` bytes of zeroed, read-write memory (None → Ready; Go's sysAlloc).
    ///
    /// ```
    /// let r = osmem::Reservation::alloc(1 << 16)?;
    /// unsafe { r.as_ptr().add(100).write(1) };
    /// assert_eq!(r.state(0), Some(osmem::State::Ready));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn alloc(len: usize) -> Result<Self, Error> {
        let op = Op::Alloc;
        check_len(op, len, page_size_checked())?;
        // SAFETY: a fresh mapping.
        let base = advise::retry(|| unsafe { sys::mmap_anon(0, len, sys::PROT_RW, false, false) })
            .map_err(|e| os(op, Syscall::Mmap, e, false))?;
        let r = Self::adopt(op, base, len, READY, false)?;
        stats::bump(Counter::AllocOps);
        Ok(r)
    }

    /// Take ownership of `[base, base+len)` (just mapped) and give it a state table.
    fn adopt(op: Op, base: usize, len: usize, code: u8, noreserve: bool) -> Result<Self, Error> {
        let ps = probe::page_size();
        let pages = len / ps;
        // Whole words, and whole pages for mmap.
        let table_len = round_up(pages.max(1), ps);
        // SAFETY: a fresh mapping for the table.
        let table = match advise::retry(|| unsafe {
            sys::mmap_anon(0, table_len, sys::PROT_RW, false, true)
        }) {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: the region was mapped by our caller and not handed out.
                let _ = advise::retry(|| unsafe { sys::munmap(base, len) });
                return Err(os(op, Syscall::Mmap, e, false));
            }
        };
        // Best effort: without it the table may merge with a neighbour (see the module doc).
        // SAFETY: the table is ours.
        let _ = advise::retry(|| unsafe { sys::madvise(table, table_len, sys::MADV_DONTDUMP) });
        names::name(base, len, b"osmem\0");
        names::name(table, table_len, b"osmem state\0");
        let r = Reservation {
            base,
            len,
            page_shift: ps.trailing_zeros(),
            table,
            table_len,
            noreserve,
            bytes: [
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
                AtomicU64::new(0),
            ],
        };
        if code != RESERVED {
            // SAFETY: the table is ours, `pages` long, and not yet shared.
            unsafe { core::ptr::write_bytes(table as *mut u8, code, pages) };
        }
        r.account(state_of(code), len as u64, true);
        if config::thp_never() {
            let _ = advise::advise(base, len, sys::MADV_NOHUGEPAGE);
        }
        Ok(r)
    }

    /// The start of the region.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(4096)?;
    /// assert!(!r.as_ptr().is_null());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.base as *mut u8
    }

    /// The region's length in bytes.
    ///
    /// ```
    /// assert_eq!(osmem::Reservation::reserve(8192)?.len(), 8192);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    #[allow(clippy::len_without_is_empty)] // a region is never empty
    pub fn len(&self) -> usize {
        self.len
    }

    /// The state of the page containing `offset`, or `None` if `offset` is outside the region.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(8192)?;
    /// assert_eq!(r.state(4096), Some(osmem::State::Reserved));
    /// assert_eq!(r.state(8192), None);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn state(&self, offset: usize) -> Option<State> {
        (offset < self.len).then(|| state_of(self.code(offset >> self.page_shift)))
    }

    /// Bytes of this region in `state`.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(8192)?;
    /// assert_eq!(r.bytes_in(osmem::State::Reserved), 8192);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn bytes_in(&self, state: State) -> u64 {
        self.bytes[state as usize].load(Ordering::Relaxed)
    }

    /// Make a Reserved or Faulted range usable: Reserved/Faulted → Prepared (Go's sysMap;
    /// `used` then makes it Ready). The range reads as zeros.
    ///
    /// Reserved and PROT_NONE-faulted pages get `mprotect(RW)` (seed 1: mprotect holds
    /// mmap_lock for less time than Go's old `mmap(MAP_FIXED)`); guard-faulted pages get
    /// `MADV_GUARD_REMOVE`. If mprotect fails, `mmap(RW, MAP_FIXED)` inside the region is
    /// tried (counted in `fallback_map_remap`).
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// r.map(0, 1 << 16)?;
    /// assert_eq!(r.state(0), Some(osmem::State::Prepared));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn map(&self, offset: usize, len: usize) -> Result<(), Error> {
        let op = Op::Map;
        let (first, n) = self.range(op, offset, len)?;
        self.claim_pages(op, first, n, |c| {
            matches!(c, RESERVED | FAULT_GUARD | FAULT_NONE | FAULT_OPEN)
        })?;
        let mut done = false;
        self.settle_runs(first, n, |page, count, code| {
            let (addr, bytes) = (self.addr(page), count << self.page_shift);
            let r = match code {
                FAULT_OPEN => Ok(()),
                FAULT_GUARD => advise::advise(addr, bytes, sys::MADV_GUARD_REMOVE)
                    .or_else(|_| self.remap_rw(addr, bytes)),
                _ => advise::retry(|| unsafe { sys::mprotect(addr, bytes, sys::PROT_RW) })
                    .or_else(|_| self.remap_rw(addr, bytes)),
            };
            if let Err(e) = r {
                return Err(os(op, Syscall::Mmap, e, done));
            }
            self.set(page, count, code, PREPARED);
            done = true;
            Ok(())
        })?;
        stats::bump(Counter::MapOps);
        Ok(())
    }

    /// `mmap(RW, MAP_FIXED)` over a range with no live data (Reserved, Faulted or Prepared).
    fn remap_rw(&self, addr: usize, len: usize) -> Result<(), Errno> {
        stats::bump(Counter::FallbackMapRemap);
        // SAFETY: inside our region; the range holds no data anyone may still want.
        advise::remap_fixed(addr, len, sys::PROT_RW, self.noreserve)
    }

    /// Prepared → Ready (Go's sysUsed). A no-op for the kernel unless harddecommit left the
    /// range PROT_NONE (then `mprotect(RW)`) or prefault is on (`MADV_POPULATE_WRITE`, else
    /// one write per page).
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// r.map(0, 1 << 16)?;
    /// r.used(0, 1 << 16)?;
    /// assert_eq!(r.state(0), Some(osmem::State::Ready));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn used(&self, offset: usize, len: usize) -> Result<(), Error> {
        let op = Op::Used;
        let (first, n) = self.range(op, offset, len)?;
        self.claim_pages(op, first, n, |c| matches!(c, PREPARED | PREPARED_NONE))?;
        let mut done = false;
        // Make every PROT_NONE run RW, still holding the pages (Prepared, RW, claimed).
        let r = self.settle_runs(first, n, |page, count, code| {
            let (addr, bytes) = (self.addr(page), count << self.page_shift);
            if code == PREPARED_NONE
                && advise::retry(|| unsafe { sys::mprotect(addr, bytes, sys::PROT_RW) }).is_err()
            {
                self.remap_rw(addr, bytes)
                    .map_err(|e| os(op, Syscall::Mmap, e, done))?;
            }
            self.set(page, count, code, PREPARED | BUSY);
            done = true;
            Ok(())
        });
        if let Err(e) = r {
            self.release_pages(first, n);
            return Err(e);
        }
        // Prefault while the pages are still held: nobody else can be using them yet.
        if config::prefault_on() {
            prefault(self.addr(first), n << self.page_shift, 1 << self.page_shift);
        }
        self.set(first, n, PREPARED, READY);
        stats::bump(Counter::UsedOps);
        Ok(())
    }

    /// Ready → Prepared (Go's sysUnused), with the configured advice.
    /// See [`unused_with`](Self::unused_with).
    ///
    /// # Safety
    /// The range's contents are discarded (or, with MADV_FREE, may be discarded at any later
    /// time): no reference into it may be live, and no other thread may access it until it
    /// is made Ready again.
    ///
    /// ```
    /// let r = osmem::Reservation::alloc(1 << 16)?;
    /// let u = unsafe { r.unused(0, 1 << 16)? };
    /// assert_eq!(r.state(0), Some(osmem::State::Prepared));
    /// # let _ = u;
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub unsafe fn unused(&self, offset: usize, len: usize) -> Result<Unused, Error> {
        self.unused_with(offset, len, config::unused_advice())
    }

    /// Ready → Prepared, starting the chain with `advice`: MADV_FREE → MADV_DONTNEED →
    /// `mmap(RW, MAP_FIXED)`. With harddecommit the range is then made PROT_NONE.
    ///
    /// # Safety
    /// As for [`unused`](Self::unused).
    ///
    /// ```
    /// use osmem::{Reservation, UnusedAdvice};
    /// let r = Reservation::alloc(1 << 16)?;
    /// let u = unsafe { r.unused_with(0, 1 << 16, UnusedAdvice::Free)? };
    /// assert!(!u.zeroed || u.how != osmem::UnusedHow::Free);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub unsafe fn unused_with(
        &self,
        offset: usize,
        len: usize,
        advice: UnusedAdvice,
    ) -> Result<Unused, Error> {
        let op = Op::Unused;
        let (first, n) = self.range(op, offset, len)?;
        self.claim_pages(op, first, n, |c| c == READY)?;
        let addr = self.addr(first);
        let how = unused::release(addr, len, advice, self.noreserve)
            .inspect_err(|_| self.release_pages(first, n))?;
        let u = self.finish_unused(first, n, READY, how);
        self.verify_unused(first, n, &u)?;
        Ok(u)
    }

    /// Checked mode's question after an unused: a range said to be zero-filled must have no
    /// resident page left.
    pub(crate) fn verify_unused(&self, first: usize, n: usize, u: &Unused) -> Result<(), Error> {
        let (addr, len) = (self.addr(first), n << self.page_shift);
        if config::checked_on() && u.zeroed && !verify::released(addr, len) {
            return Err(Error::Unverified {
                op: Op::Unused,
                offset: addr - self.base,
                len,
            });
        }
        Ok(())
    }

    /// Checked mode's question after a fault: a trapping range must refuse access, and any
    /// faulted range must have no resident page left.
    pub(crate) fn verify_fault(&self, first: usize, n: usize, f: &Faulted) -> Result<(), Error> {
        let (addr, len) = (self.addr(first), n << self.page_shift);
        if config::checked_on()
            && (!verify::released(addr, len) || (f.traps() && !verify::traps(addr, len)))
        {
            return Err(Error::Unverified {
                op: Op::Fault,
                offset: addr - self.base,
                len,
            });
        }
        Ok(())
    }

    /// The common tail of every unused (direct or batched): harddecommit, table, accounting.
    pub(crate) fn finish_unused(&self, first: usize, n: usize, from: u8, how: UnusedHow) -> Unused {
        let (addr, len) = (self.addr(first), n << self.page_shift);
        let mut protected = false;
        if config::harddecommit_on() {
            // SAFETY: the range is ours and was just released.
            protected =
                advise::retry(|| unsafe { sys::mprotect(addr, len, sys::PROT_NONE) }).is_ok();
            if !protected {
                stats::bump(Counter::FallbackHarddecommitOpen);
            }
        }
        let to = if protected { PREPARED_NONE } else { PREPARED };
        self.set(first, n, from, to);
        stats::bump(Counter::UnusedOps);
        Unused {
            how,
            zeroed: how != UnusedHow::Free,
            protected,
        }
    }

    /// Ready → Faulted (Go's sysFault) with the configured strategy: drop the pages and make
    /// any access trap. [`map`](Self::map) makes the range usable again.
    ///
    /// # Safety
    /// The range's contents are discarded and any later access raises SIGSEGV: no reference
    /// into it may be live, and no thread may access it until it is mapped again.
    ///
    /// ```
    /// let r = osmem::Reservation::alloc(1 << 16)?;
    /// let f = unsafe { r.fault(4096, 4096)? };
    /// assert_eq!(r.state(4096), Some(osmem::State::Faulted));
    /// assert!(f.traps());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub unsafe fn fault(&self, offset: usize, len: usize) -> Result<Faulted, Error> {
        self.fault_with(offset, len, config::fault_strategy())
    }

    /// Ready → Faulted with a given strategy (see [`FaultStrategy`]).
    ///
    /// # Safety
    /// As for [`fault`](Self::fault).
    ///
    /// ```
    /// use osmem::{FaultHow, FaultStrategy, Reservation};
    /// let r = Reservation::alloc(1 << 16)?;
    /// let f = unsafe { r.fault_with(0, 1 << 16, FaultStrategy::Remap)? };
    /// assert_eq!(f.how, FaultHow::Remap);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub unsafe fn fault_with(
        &self,
        offset: usize,
        len: usize,
        strategy: FaultStrategy,
    ) -> Result<Faulted, Error> {
        let op = Op::Fault;
        let (first, n) = self.range(op, offset, len)?;
        self.claim_pages(op, first, n, |c| c == READY)?;
        let how = fault::fault(self.addr(first), len, strategy, self.noreserve)
            .inspect_err(|_| self.release_pages(first, n))?;
        let f = self.finish_fault(first, n, READY, how);
        self.verify_fault(first, n, &f)?;
        Ok(f)
    }

    /// The common tail of every fault (direct or batched): table and accounting.
    pub(crate) fn finish_fault(&self, first: usize, n: usize, from: u8, how: FaultHow) -> Faulted {
        let code = match how {
            FaultHow::Guard => FAULT_GUARD,
            FaultHow::ReleasedOnly => FAULT_OPEN,
            _ => FAULT_NONE,
        };
        self.set(first, n, from, code);
        stats::bump(Counter::FaultOps);
        Faulted { how }
    }

    /// Validate a range for a batched unused/fault and hold its pages (Ready, claimed), so a
    /// second queueing or a direct transition of the same pages is refused until the batch
    /// settles it. Returns (address, first page, pages).
    pub(crate) fn claim(
        &self,
        op: Op,
        offset: usize,
        len: usize,
    ) -> Result<(usize, usize, usize), Error> {
        let (first, n) = self.range(op, offset, len)?;
        self.claim_pages(op, first, n, |c| c == READY)?;
        Ok((self.addr(first), first, n))
    }

    /// Let go of a claimed range (its release failed; nothing changed).
    pub(crate) fn unclaim(&self, first: usize, n: usize) {
        self.release_pages(first, n);
    }

    pub(crate) fn settle_unused(&self, first: usize, n: usize, how: UnusedHow) -> Unused {
        self.finish_unused(first, n, READY, how)
    }

    pub(crate) fn settle_fault(&self, first: usize, n: usize, how: FaultHow) -> Faulted {
        self.finish_fault(first, n, READY, how)
    }

    pub(crate) fn is_noreserve(&self) -> bool {
        self.noreserve
    }

    /// Ask for transparent huge pages on the PMD-aligned interior of the range
    /// (Go's sysHugePage). A range without a whole aligned huge page inside, or the knob
    /// `thp=never`, makes this a counted no-op; a kernel without THP (or a sandbox refusing
    /// the advice) gives [`Error::Unsupported`] without a syscall.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve_aligned(4 << 20, 2 << 20)?;
    /// r.hugepage(0, 4 << 20)?;
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn hugepage(&self, offset: usize, len: usize) -> Result<(), Error> {
        let op = Op::HugePage;
        let (first, _) = self.range(op, offset, len)?;
        if config::thp_never() {
            huge::skipped();
            return Ok(());
        }
        if !advise::usable(advise::D_HUGEPAGE) {
            return Err(Error::Unsupported { op });
        }
        match huge::interior(self.addr(first), len, probe::probe().pmd_size) {
            Some((a, l)) => huge::hint(op, a, l, huge::HUGEPAGE),
            None => {
                huge::skipped();
                Ok(())
            }
        }
    }

    /// Ask the kernel not to use transparent huge pages for the range (Go's sysNoHugePage).
    /// Like every VMA hint, it does not survive a MAP_FIXED remap (the last link of the
    /// unused and fault chains); for a process-wide "no THP", use the `thp=never` knob, which
    /// osmem re-applies after every remap.
    /// A kernel without THP (or a sandbox refusing the advice) gives [`Error::Unsupported`]
    /// without a syscall.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 20)?;
    /// r.nohugepage(0, 1 << 20)?;
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn nohugepage(&self, offset: usize, len: usize) -> Result<(), Error> {
        let op = Op::NoHugePage;
        let (first, _) = self.range(op, offset, len)?;
        if !advise::usable(advise::D_NOHUGEPAGE) {
            return Err(Error::Unsupported { op });
        }
        huge::hint(op, self.addr(first), len, huge::NOHUGEPAGE)
    }

    /// Collapse the range into huge pages now (`MADV_COLLAPSE`, Go's sysHugePageCollapse).
    /// Synchronous and best used on a touched, 2 MiB-aligned Ready range; EAGAIN is retried a
    /// bounded number of times. Kernels without it give [`Error::Unsupported`].
    ///
    /// ```
    /// let r = osmem::Reservation::reserve_aligned(2 << 20, 2 << 20)?;
    /// r.map(0, 2 << 20)?;
    /// r.used(0, 2 << 20)?;
    /// unsafe { core::ptr::write_bytes(r.as_ptr(), 1, 2 << 20) };
    /// let _ = r.collapse(0, 2 << 20); // may fail where THP is off
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn collapse(&self, offset: usize, len: usize) -> Result<(), Error> {
        let op = Op::Collapse;
        let (first, _) = self.range(op, offset, len)?;
        if config::thp_never() {
            huge::skipped();
            return Ok(());
        }
        if !probe::probe().advice.collapse || !advise::usable(advise::D_COLLAPSE) {
            return Err(Error::Unsupported { op });
        }
        huge::hint(op, self.addr(first), len, huge::COLLAPSE)
    }

    // ----- the state table -----

    #[inline]
    fn addr(&self, page: usize) -> usize {
        self.base + (page << self.page_shift)
    }

    /// The table word holding the codes of pages `8*w .. 8*w+8` (page `p` is byte `p % 8`,
    /// counted from the least significant). The table is accessed only through whole-word
    /// atomics: Rust forbids racing atomic accesses of different sizes to the same bytes, and
    /// word-sized scans make the per-transition table walk 8× cheaper (64 MiB = 16384 pages
    /// is on the path of every large unused/fault).
    #[inline]
    fn word(&self, w: usize) -> &AtomicU64 {
        debug_assert!(w * 8 < self.table_len);
        // SAFETY: the table is page-aligned, a whole number of words long, and lives as long
        // as self; it is only ever accessed through AtomicU64.
        unsafe { &*((self.table + w * 8) as *const AtomicU64) }
    }

    #[inline]
    fn code(&self, page: usize) -> u8 {
        (self.word(page / 8).load(Ordering::Relaxed) >> ((page % 8) * 8)) as u8
    }

    /// The first page at or after `start` (and before `end`) whose code is not `code`.
    fn run_end(&self, start: usize, end: usize, code: u8) -> usize {
        let splat = u64::from_ne_bytes([code; 8]);
        let mut i = start;
        while i < end {
            if i % 8 == 0 && i + 8 <= end && self.word(i / 8).load(Ordering::Relaxed) == splat {
                i += 8;
            } else if self.code(i) == code {
                i += 1;
            } else {
                break;
            }
        }
        i
    }

    /// Validate a range: the checks every transition shares, in a fixed order, before any
    /// syscall. Returns (first page, page count).
    fn range(&self, op: Op, offset: usize, len: usize) -> Result<(usize, usize), Error> {
        if len == 0 {
            return Err(Error::ZeroLength { op });
        }
        let mask = (1usize << self.page_shift) - 1;
        if (offset | len) & mask != 0 {
            return Err(Error::Unaligned { op, offset, len });
        }
        let end = offset
            .checked_add(len)
            .ok_or(Error::Overflow { op, offset, len })?;
        if end > self.len {
            return Err(Error::OutOfRange {
                op,
                offset,
                len,
                size: self.len,
            });
        }
        Ok((offset >> self.page_shift, len >> self.page_shift))
    }

    /// Claim every page of the range for one transition, atomically per table word: each
    /// page must pass `ok` and not be held already; it is then marked BUSY until `set`
    /// writes its new code (or `release_pages` lets it go). Check and claim are one CAS, so
    /// two threads can never both start a transition of the same page — a safe call can
    /// never act on memory another transition just made Ready. On refusal, the words
    /// claimed so far are let go and nothing has changed.
    fn claim_pages(
        &self,
        op: Op,
        first: usize,
        n: usize,
        ok: impl Fn(u8) -> bool,
    ) -> Result<(), Error> {
        let end = first + n;
        let mut i = first;
        while i < end {
            let (w, lo) = (i / 8, i % 8);
            let hi = (end - w * 8).min(8);
            let mask = byte_mask(lo, hi);
            let word = self.word(w);
            let mut cur = word.load(Ordering::Acquire);
            loop {
                let bad = (lo..hi).find(|&b| {
                    let c = (cur >> (8 * b)) as u8;
                    c & BUSY != 0 || !ok(c)
                });
                if let Some(b) = bad {
                    self.release_pages(first, i - first);
                    let page = w * 8 + b;
                    let c = (cur >> (8 * b)) as u8;
                    let offset = page << self.page_shift;
                    return Err(if c & BUSY != 0 {
                        Error::Busy { op, offset }
                    } else {
                        Error::WrongState {
                            op,
                            offset,
                            found: state_of(c),
                        }
                    });
                }
                let held = cur | (u64::from_ne_bytes([BUSY; 8]) & mask);
                match word.compare_exchange_weak(cur, held, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
            i = w * 8 + hi;
        }
        Ok(())
    }

    /// Let go of claimed pages without changing their codes.
    fn release_pages(&self, first: usize, n: usize) {
        let end = first + n;
        let mut i = first;
        while i < end {
            let (w, lo) = (i / 8, i % 8);
            let hi = (end - w * 8).min(8);
            let busy = u64::from_ne_bytes([BUSY; 8]) & byte_mask(lo, hi);
            self.word(w).fetch_and(!busy, Ordering::Release);
            i = w * 8 + hi;
        }
    }

    /// `runs` over claimed pages, settling each run with `f` (which calls `set`); if `f`
    /// fails, the pages of that run and the runs after it are let go unchanged.
    fn settle_runs(
        &self,
        first: usize,
        n: usize,
        mut f: impl FnMut(usize, usize, u8) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut settled = first;
        let r = self.runs(first, n, |page, count, code| {
            f(page, count, code)?;
            settled = page + count;
            Ok(())
        });
        if r.is_err() {
            self.release_pages(settled, first + n - settled);
        }
        r
    }

    /// Call `f(first_page, pages, code)` for each maximal run of equal codes.
    fn runs(
        &self,
        first: usize,
        n: usize,
        mut f: impl FnMut(usize, usize, u8) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let end = first + n;
        let mut start = first;
        while start < end {
            let code = self.code(start);
            let next = self.run_end(start + 1, end, code);
            f(start, next - start, code & !BUSY)?;
            start = next;
        }
        Ok(())
    }

    /// Move `pages` pages from `from` to `to`: table codes and accounting.
    fn set(&self, first: usize, pages: usize, from: u8, to: u8) {
        let end = first + pages;
        let mut i = first;
        while i < end {
            let w = self.word(i / 8);
            if i % 8 == 0 && i + 8 <= end {
                w.store(u64::from_ne_bytes([to; 8]), Ordering::Release);
                i += 8;
                continue;
            }
            // A partial word: other bytes may belong to a range another thread is
            // transitioning, so replace only ours, atomically.
            let (lo, hi) = (i % 8, (end - (i - i % 8)).min(8));
            let mask = byte_mask(lo, hi);
            let bits = u64::from_ne_bytes([to; 8]) & mask;
            let _ = w.fetch_update(Ordering::Release, Ordering::Relaxed, |old| {
                Some((old & !mask) | bits)
            });
            i += hi - lo;
        }
        let (a, b) = (state_of(from), state_of(to));
        if a != b {
            let bytes = (pages as u64) << self.page_shift;
            self.account(a, bytes, false);
            self.account(b, bytes, true);
        }
    }

    fn account(&self, s: State, bytes: u64, add: bool) {
        if add {
            self.bytes[s as usize].fetch_add(bytes, Ordering::Relaxed);
            stats::add(byte_counter(s), bytes);
        } else {
            self.bytes[s as usize].fetch_sub(bytes, Ordering::Relaxed);
            stats::sub(byte_counter(s), bytes);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // SAFETY: we own both mappings and `&mut self` proves no transition is running.
        for (addr, len) in [(self.base, self.len), (self.table, self.table_len)] {
            if advise::retry(|| unsafe { sys::munmap(addr, len) }).is_err() {
                // Unmapping refused (a sandbox policy: munmap has no other failure on a range
                // we own). The address space stays taken, but the memory must not: drop the
                // pages and make the range inaccessible. Counted in munmap_errors.
                if advise::advise(addr, len, sys::MADV_DONTNEED).is_err() {
                    let _ = unsafe { sys::mmap_anon(addr, len, sys::PROT_NONE, true, true) };
                }
                let _ = unsafe { sys::mprotect(addr, len, sys::PROT_NONE) };
            }
        }
        for s in [
            State::Reserved,
            State::Prepared,
            State::Ready,
            State::Faulted,
        ] {
            stats::sub(
                byte_counter(s),
                self.bytes[s as usize].load(Ordering::Relaxed),
            );
        }
        stats::bump(Counter::FreeOps);
    }
}

/// Fault in a Ready range ahead of use: MADV_POPULATE_WRITE (one syscall, no per-page trap),
/// else one write per page (see [`touch_write`]).
fn prefault(addr: usize, len: usize, ps: usize) {
    if advise::advise(addr, len, sys::MADV_POPULATE_WRITE).is_ok() {
        return;
    }
    let mut a = addr;
    while a < addr + len {
        // SAFETY: the range is Ready (RW) and held by the caller's transition.
        unsafe { touch_write(a) };
        a += ps;
    }
}

/// Write the byte at `addr` without changing it, in one step the optimiser must keep.
///
/// Why a compare-exchange: `fetch_or(0)` and `fetch_add(0)` are idempotent read-modify-writes
/// that LLVM may (and rustc 1.95 in release does) turn into a plain load or a fence, so the
/// page is never written and never populated for writing. A `lock cmpxchg` always writes the
/// cache line when it succeeds. A load followed by a separate store could copy a stale byte
/// into a page the kernel reclaimed in between (MADV_FREE): the exchange only succeeds if the
/// byte is still what was read, and otherwise retries with the new value.
///
/// # Safety
/// `addr` must be inside a readable and writable mapping the caller owns.
#[inline]
pub(crate) unsafe fn touch_write(addr: usize) {
    // SAFETY: the caller's contract; AtomicU8 has the layout of u8.
    let b = unsafe { &*(addr as *const AtomicU8) };
    let mut v = b.load(Ordering::Relaxed);
    while let Err(now) = b.compare_exchange(v, v, Ordering::Relaxed, Ordering::Relaxed) {
        v = now;
    }
}

fn page_size_checked() -> usize {
    probe::page_size()
}

/// The bits of bytes `lo..hi` of a table word (`hi - lo` between 1 and 8).
fn byte_mask(lo: usize, hi: usize) -> u64 {
    (u64::MAX >> (64 - 8 * (hi - lo))) << (8 * lo)
}

fn check_len(op: Op, len: usize, ps: usize) -> Result<(), Error> {
    if len == 0 {
        return Err(Error::ZeroLength { op });
    }
    if len & (ps - 1) != 0 {
        return Err(Error::Unaligned { op, offset: 0, len });
    }
    Ok(())
}

fn round_up(n: usize, to: usize) -> usize {
    // n is a page count, at most usize::MAX / 4096: no overflow.
    (n + to - 1) & !(to - 1)
}
