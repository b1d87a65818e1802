//! The owning handle and the state machine.
//!
//! | from \ op | map | used | unused | fault | drop |
//! |---|---|---|---|---|---|
//! | Reserved | → Prepared | error | error | error | → None |
//! | Prepared | error | → Ready | error | error | → None |
//! | Ready | error | → Ready (no-op) | → Prepared | → Faulted | → None |
//! | Faulted | → Prepared | error | error | error | → None |
//!
//! Every page's state lives in the reservation's page-state map (`table.rs`), whose cost
//! follows the shape of use: nothing for a region in one state or with one run in another,
//! about one 128-byte node per isolated mixed area otherwise. The map is what makes three
//! promises cheap and exact:
//! - a transition from the wrong state is refused *before* any syscall;
//! - accounting moves exactly the bytes that changed state, even for mixed ranges;
//! - a faulted range is made usable again with the inverse of *whatever* faulted it (guard
//!   markers, PROT_NONE, remap, or released-only), even if the strategy changed meanwhile.
//!
//! A transition claims its pages in the map (under the map's lock, before any syscall),
//! issues its syscalls without the lock, then settles: one update of the map for the whole
//! range on success; on a partial failure one update for the part that changed and one to let
//! go of the rest. The nodes the settling may need were reserved by the claim, so the kernel's
//! change is always recorded.

use crate::advise;
use crate::arena::{self, NoMemory};
use crate::config::{self, Config, FaultStrategy, UnusedAdvice};
use crate::error::{Error, Op, Syscall};
use crate::fault::{self, FaultHow, Faulted};
use crate::fork;
use crate::huge;
use crate::id::ReservationId;
use crate::lock::Held;
use crate::names;
use crate::probe;
use crate::registry::{self, NoSlot, Slot};
use crate::residency::{self, PageRun, QueryError, Residency, ResidencyMethod};
use crate::state::State;
use crate::stats::{self, Counter};
use crate::sys::linux::{self as sys, Errno};
use crate::table::{Deferred, Guard, Job, Upd, BUSY};
use crate::thread;
use crate::unused::{self, Unused, UnusedHow};
use crate::verify;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::sync::atomic::{AtomicU8, Ordering};

// Per-page codes in the page-state map (4 bits with `BUSY`). 0 must be RESERVED.
const RESERVED: u8 = 0;
const PREPARED: u8 = 1;
/// Prepared and PROT_NONE (harddecommit).
const PREPARED_NONE: u8 = 2;
const READY: u8 = 3;
/// `READY`, for the batch's word claims.
pub(crate) const READY_CODE: u8 = READY;
/// `RESERVED`, for a batched range whose failed release left it Reserved.
pub(crate) const RESERVED_CODE: u8 = RESERVED;
/// Faulted with guard markers (protection RW).
const FAULT_GUARD: u8 = 4;
/// Faulted with PROT_NONE (by mprotect or by a PROT_NONE remap). (A fault that could only
/// release the range, `FaultHow::ReleasedOnly`, leaves it `PREPARED`: that is what the kernel
/// has, accessible and zero-filled.)
const FAULT_NONE: u8 = 5;
/// Prepared after `MADV_FREE`: the kernel may still hold the old pages and drop any of them
/// later, until each is written. `used` writes every page of it, so Ready is stable.
const PREPARED_FREE: u8 = 6;
/// PREPARED_FREE and PROT_NONE (harddecommit).
const PREPARED_NONE_FREE: u8 = 7;

/// Batched ranges of one region being settled in one section (a batch's job): the bytes that
/// left Ready are accounted once, when it is dropped.
pub(crate) struct Settle<'a, 'g> {
    r: &'a Reservation,
    g: &'a mut Guard<'g>,
    /// Bytes moved out of Ready, by new state.
    to: [u64; 4],
    /// The leaf the last range was in; ranges in one leaf are set there, and the tree is
    /// folded once per leaf (at `refold`'s page) instead of once per range.
    leaf: Option<(usize, &'static crate::arena::Node)>,
    refold: Option<usize>,
}

impl Settle<'_, '_> {
    /// A claimed Ready range `[addr, addr+len)` now has `code` (from `code_after_*`).
    pub(crate) fn set(&mut self, addr: usize, len: usize, code: u8) {
        self.apply(addr, len, Upd::Set(code));
        self.to[state_of(code) as usize] += len as u64;
    }

    /// A claimed range whose release failed: let go, unchanged.
    pub(crate) fn unclaim(&mut self, addr: usize, len: usize) {
        self.apply(addr, len, Upd::Unhold);
    }

    fn apply(&mut self, addr: usize, len: usize, f: Upd) {
        let (first, n) = self.r.pages_of(addr, len);
        // Leaving a leaf: fold it (and what above it may fold) before going on.
        if self
            .leaf
            .is_some_and(|(l, _)| l != first / crate::table::LEAF)
        {
            self.fold_pending();
            self.leaf = None;
        }
        if self.g.update_in_leaf(first, first + n, f, &mut self.leaf) {
            self.refold = Some(first);
        } else {
            self.fold_pending();
            self.leaf = None;
            self.g.update(first, first + n, f);
        }
    }

    fn fold_pending(&mut self) {
        if let Some(p) = self.refold.take() {
            self.g.refold(p);
        }
    }
}

impl Settle<'_, '_> {
    /// Set claimed Ready pages of one 16-page word, `[first, first+16)` masked by `m`
    /// (`bytes` of them), to `code` with one store: `false` if the tree has no leaf there
    /// (the caller sets them range by range).
    #[inline]
    pub(crate) fn set_word(&mut self, first: usize, m: u64, bytes: u64, code: u8) -> bool {
        let leaf = first / crate::table::LEAF;
        if self.leaf.is_some_and(|(l, _)| l != leaf) {
            self.fold_pending();
            self.leaf = None;
        }
        let Some((node, k)) = self.g.word(first) else {
            return false;
        };
        Guard::set_word(node, k, m, code);
        self.leaf = Some((leaf, node));
        // The fold starts from a page just settled: `first` may be another claim's page of
        // the word, which `refold` would let go of.
        self.refold = Some((first & !15) + m.trailing_zeros() as usize / 4);
        self.to[state_of(code) as usize] += bytes;
        true
    }
}

impl Drop for Settle<'_, '_> {
    fn drop(&mut self) {
        self.fold_pending();
        for (s, &b) in self.to.iter().enumerate() {
            if b > 0 {
                self.r.move_bytes(State::Ready, STATES[s], b);
            }
        }
    }
}

impl Reservation {
    /// Settle batched ranges of this reservation in the section `g` (a batch's job), then
    /// forget the claim of thread `me`.
    pub(crate) fn settle_in<'g>(
        &self,
        g: &mut Guard<'g>,
        me: usize,
        f: impl FnOnce(&mut Settle<'_, 'g>),
    ) {
        {
            let mut s = Settle {
                r: self,
                g,
                to: [0; 4],
                leaf: None,
                refold: None,
            };
            f(&mut s);
        }
        g.disown(me);
    }
}

/// The code of a Ready range released by `unused` (PROT_NONE if harddecommit protected it;
/// lazily, with `MADV_FREE`, if `how` says so).
pub(crate) fn code_after_unused(how: UnusedHow, protected: bool) -> u8 {
    match (how == UnusedHow::Free, protected) {
        (false, false) => PREPARED,
        (false, true) => PREPARED_NONE,
        (true, false) => PREPARED_FREE,
        (true, true) => PREPARED_NONE_FREE,
    }
}

/// Whether a Prepared code is `PROT_NONE` (harddecommit protected it).
pub(crate) fn code_protected(code: u8) -> bool {
    matches!(code & !BUSY, PREPARED_NONE | PREPARED_NONE_FREE)
}

/// The code of a Ready range faulted by `how`.
pub(crate) fn code_after_fault(how: FaultHow) -> u8 {
    match how {
        FaultHow::Guard => FAULT_GUARD,
        // Released, not trapping: what the kernel has is Prepared, not Faulted.
        FaultHow::ReleasedOnly => PREPARED,
        _ => FAULT_NONE,
    }
}

/// What a claim found: the code of the claimed range if it was one run, and the thread that
/// holds it (whose claim the settle forgets).
#[derive(Copy, Clone)]
pub(crate) struct Claim {
    single: Option<u8>,
    me: usize,
}

/// Every state, in `State` index order.
const STATES: [State; 4] = [
    State::Reserved,
    State::Prepared,
    State::Ready,
    State::Faulted,
];

pub(crate) fn state_of(code: u8) -> State {
    match code & !BUSY {
        RESERVED => State::Reserved,
        PREPARED | PREPARED_NONE | PREPARED_FREE | PREPARED_NONE_FREE => State::Prepared,
        READY => State::Ready,
        _ => State::Faulted,
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
// The handle is small and is what its owner moves; everything other threads, the fork
// handlers and signal handlers must reach lives in the reservation's slot (registry.rs), whose
// first cache line is the lock, the sequence counter, the root entry and the claim owners.
pub struct Reservation {
    base: usize,
    len: usize,
    slot: &'static Slot,
    index: u32,
    gen: u32,
    page_shift: u32,
    /// Pages of `PROT_NONE` slack the mapping has before `base` and after the end (an aligned
    /// `reserve` keeps them rather than trimming: see `reserve`), unmapped with it.
    slack: (u32, u32),
}

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
    /// (None → Reserved). The OS picks the address. A reservation of 1 GiB or more starts on a
    /// 1 GiB boundary (with 4 KiB pages; the span of one page-table page of PMD entries), so
    /// it shares no page-table page with a neighbour and releasing its untouched parts walks
    /// no page tables (measured: `unused` of an untouched 1 GiB range 0.57 µs beside a touched
    /// neighbour, 0.20 µs on its own). Still one `mmap`: it maps up to 1 GiB more address
    /// space, `PROT_NONE` with nothing behind it, and keeps it until it is dropped (one
    /// `munmap` for all).
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 30)?; // 1 GiB of address space, no memory
    /// assert_eq!(r.len(), 1 << 30);
    /// assert_eq!(r.state(0), Some(osmem::State::Reserved));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn reserve(len: usize) -> Result<Self, Error> {
        let ps = page_size_checked();
        let align = advise::placement_align(len);
        if align == ps {
            return Self::reserve_aligned_at(0, len, ps);
        }
        // 1 GiB or more: on a 1 GiB boundary, so it shares no page-table page with a
        // neighbour (see `advise::pmd_table_span`). The slack is kept, not trimmed: still one
        // mmap here and one munmap at drop (a pool's reserve + drop costs what a raw one
        // does), for at most 1 GiB of address space with nothing behind it.
        let op = Op::Reserve;
        check_len(op, len, ps)?;
        let (base, head, tail) = advise::map_aligned(0, len, align, true, false)
            .map_err(|e| aligned_error(op, e, align, len))?;
        let slack = ((head / ps) as u32, (tail / ps) as u32);
        let r = Self::adopt(op, base, len, RESERVED, true, slack)?;
        stats::bump(Counter::ReserveOps);
        Ok(r)
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
        Self::reserve_aligned_at(0, len, align)
    }

    /// Like [`reserve`](Self::reserve), preferably at `hint` (page-aligned), as Go's
    /// `sysReserve(v, n)` does for its arena hints: the kernel places the region there if
    /// `[hint, hint+len)` is free and anywhere else otherwise. [`as_ptr`](Self::as_ptr) says
    /// where it went; nothing mapped at `hint` is ever touched. For "exactly there or not at
    /// all", see [`reserve_fixed`](Self::reserve_fixed).
    ///
    /// ```
    /// let probe = osmem::Reservation::reserve(1 << 20)?;
    /// let hint = probe.as_ptr() as usize;
    /// drop(probe); // now free
    /// let r = osmem::Reservation::reserve_at(hint, 1 << 20)?;
    /// println!("asked for {hint:#x}, got {:p}", r.as_ptr());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn reserve_at(hint: usize, len: usize) -> Result<Self, Error> {
        Self::reserve_aligned_at(hint, len, page_size_checked())
    }

    /// [`reserve_aligned`](Self::reserve_aligned) with a preferred address: the over-sized
    /// reservation is asked for at `hint` (Go's sysReserveAligned passes its hint on the same
    /// way). With an `align`-aligned, free `hint`, the region starts exactly there.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve_aligned_at(0, 4 << 20, 2 << 20)?;
    /// assert_eq!(r.as_ptr() as usize % (2 << 20), 0);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn reserve_aligned_at(hint: usize, len: usize, align: usize) -> Result<Self, Error> {
        let op = Op::Reserve;
        let ps = page_size_checked();
        check_len(op, len, ps)?;
        if !align.is_power_of_two() || align < ps {
            return Err(Error::Alignment {
                op,
                align,
                page: ps,
            });
        }
        check_addr(op, hint, len, ps)?;
        let (base, _, _) = advise::map_aligned(hint, len, align, true, true)
            .map_err(|e| aligned_error(op, e, align, len))?;
        let r = Self::adopt(op, base, len, RESERVED, true, (0, 0))?;
        stats::bump(Counter::ReserveOps);
        Ok(r)
    }

    /// Reserve exactly `[addr, addr+len)` (page-aligned), or fail and leave whatever is mapped
    /// there untouched: `MAP_FIXED_NOREPLACE` (Linux ≥ 4.17). Older kernels ignore that flag
    /// and take the address as a hint; the result is then compared with `addr` and unmapped
    /// if the kernel put it elsewhere. osmem never maps `MAP_FIXED` over memory it does not
    /// own. A taken range gives `Error::Os { call: Mmap, errno: EEXIST, changed: false }`.
    ///
    /// ```
    /// let probe = osmem::Reservation::reserve(1 << 20)?;
    /// let addr = probe.as_ptr() as usize;
    /// // Taken: refused, and the region there is left alone.
    /// let e = osmem::Reservation::reserve_fixed(addr, 1 << 20).unwrap_err();
    /// assert_eq!(e.errno(), Some(libc::EEXIST));
    /// drop(probe);
    /// let r = osmem::Reservation::reserve_fixed(addr, 1 << 20)?; // free now: exactly there
    /// assert_eq!(r.as_ptr() as usize, addr);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn reserve_fixed(addr: usize, len: usize) -> Result<Self, Error> {
        let op = Op::Reserve;
        let ps = page_size_checked();
        check_len(op, len, ps)?;
        check_addr(op, addr, len, ps)?;
        let base = advise::retry(|| sys::mmap_noreplace(addr, len))
            .map_err(|e| os(op, Syscall::Mmap, e, false))?;
        let r = Self::adopt(op, base, len, RESERVED, true, (0, 0))?;
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
        let r = Self::adopt(op, base, len, READY, false, (0, 0))?;
        r.name_once();
        stats::bump(Counter::AllocOps);
        Ok(r)
    }

    /// Take ownership of `[base, base+len)` (just mapped) with every page in `code`: give it
    /// a slot in the registry. If no slot can be had, the mapping is unmapped again and the
    /// error says nothing changed.
    fn adopt(
        op: Op,
        base: usize,
        len: usize,
        code: u8,
        noreserve: bool,
        slack: (u32, u32),
    ) -> Result<Self, Error> {
        let ps = probe::page_size();
        // Metadata memory exists before the process can reach the VMA limit (see arena.rs).
        arena::ensure();
        let r = registry::register(base, len, |s| {
            // SAFETY: a slot just taken from the free list: no reservation owns it, no thread
            // holds its lock.
            unsafe { s.table.init(len / ps, code) };
            for (k, b) in s.table.bytes.iter().enumerate() {
                let v = if k == state_of(code) as usize {
                    len as u64
                } else {
                    0
                };
                b.store(v, Ordering::Relaxed);
            }
            s.knobs.clear();
            s.named.store(false, Ordering::Relaxed);
            s.noreserve.store(noreserve, Ordering::Relaxed);
            s.fork_taken.store(false, Ordering::Relaxed);
            s.anon.store(false, Ordering::Relaxed);
        });
        let (index, gen) = match r {
            Ok(r) => r,
            Err(e) => {
                let (from, n) = mapping(base, len, slack, ps);
                // SAFETY: the mapping just made, not handed out.
                let _ = advise::retry(|| unsafe { sys::munmap(from, n) });
                return Err(match e {
                    NoSlot::Busy => Error::Busy { op, offset: 0 },
                    NoSlot::Os(call, errno) => os(op, call, errno, false),
                });
            }
        };
        let r = Reservation {
            base,
            len,
            slot: registry::slot(index),
            index,
            gen,
            page_shift: ps.trailing_zeros(),
            slack,
        };
        stats::created(state_of(code) as usize, len as u64);
        // (A new reservation has no knobs of its own yet: the process-wide thp knob.)
        if config::knobs().thp_never() {
            let _ = advise::advise(base, len, sys::MADV_NOHUGEPAGE);
        }
        Ok(r)
    }

    /// Give this reservation knobs of its own: every key `cfg` sets (see [`Config::sets`])
    /// applies to this reservation instead of the process-wide knob, so two libraries in one
    /// process can each have their policy; the keys it does not set keep following the
    /// process-wide knobs (`OSMEM`, [`configure`](crate::configure)). `checked` on in the
    /// process stays on here (a debugging switch). `thp=never` applies `MADV_NOHUGEPAGE` to
    /// the region now (turning it off later leaves that hint in place).
    ///
    /// ```
    /// use osmem::{Config, FaultStrategy, Reservation, UnusedAdvice};
    /// let heap = Reservation::reserve(1 << 20)?
    ///     .with_config(Config::new().unused(UnusedAdvice::Free).fault(FaultStrategy::Protect));
    /// assert_eq!(heap.config().unused_advice(), UnusedAdvice::Free);
    /// assert_eq!(heap.selected().fault, FaultStrategy::Protect);
    /// // Keys it does not set follow the process:
    /// assert_eq!(heap.config().is_prefault(), osmem::config().is_prefault());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn with_config(self, cfg: Config) -> Self {
        self.set_config(cfg);
        self
    }

    /// Replace this reservation's own knobs (see [`with_config`](Self::with_config)); an
    /// operation already running finishes under the knobs it started with.
    ///
    /// ```
    /// let r = osmem::Reservation::alloc(1 << 16)?;
    /// r.set_config(osmem::Config::new().harddecommit(true));
    /// assert!(r.config().is_harddecommit());
    /// r.set_config(osmem::Config::new()); // sets nothing: back to the process-wide knobs
    /// assert_eq!(r.config().is_harddecommit(), osmem::config().is_harddecommit());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn set_config(&self, cfg: Config) {
        let was_never = self.slot.knobs.resolve().thp_never();
        self.slot.knobs.store(&cfg);
        if self.slot.knobs.resolve().thp_never() && !was_never {
            let _ = advise::advise(self.base, self.len, sys::MADV_NOHUGEPAGE);
        }
    }

    /// The knobs in force for this reservation: its own where it sets them, the process-wide
    /// ones elsewhere.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// assert_eq!(r.config().fault_strategy(), osmem::config().fault_strategy());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn config(&self) -> Config {
        self.slot.knobs.resolve().config()
    }

    /// The strategies operations on this reservation would use now: [`crate::selected`] for
    /// this reservation's knobs.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// assert_eq!(r.selected(), osmem::selected());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn selected(&self) -> crate::Selected {
        crate::Selected::of(&self.config())
    }

    /// How remaps inside this region must map (its flags, its `thp` knob).
    #[inline]
    pub(crate) fn remap_how(&self) -> advise::Remap {
        self.remap_with(self.slot.knobs.resolve())
    }

    #[inline]
    fn remap_with(&self, k: config::Knobs) -> advise::Remap {
        advise::Remap {
            noreserve: self.slot.noreserve.load(Ordering::Relaxed),
            thp_never: k.thp_never(),
        }
    }

    /// Name the region `[anon:osmem]` once (best effort, like Go).
    #[inline]
    fn name_once(&self) {
        if !self.slot.named.load(Ordering::Relaxed)
            && !self.slot.named.swap(true, Ordering::Relaxed)
        {
            names::name(self.base, self.len, b"osmem\0");
        }
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

    /// What the kernel really holds for `[offset, offset + len)`: runs of pages by
    /// [`Residence`](crate::Residence) (present, the zero page, swapped, guard-marked, nothing), asked of the
    /// kernel with the fastest method that works here ([`residency_method`](crate::residency_method):
    /// the PAGEMAP_SCAN ioctl, else reading `/proc/self/pagemap`, else `mincore`), never from
    /// osmem's own bookkeeping. `out` receives maximal runs in address order covering
    /// `[offset, end)` without a gap; when it fills up first, `end` says where to continue.
    /// The result says which method answered and what it tells apart ([`Tells`](crate::Tells)).
    /// Nothing is allocated and nothing changes; a page released with `MADV_FREE` reads
    /// present until the kernel reclaims it.
    ///
    /// Errors: the range checks of every operation (`ZeroLength` also for an empty `out`),
    /// `Os` if the method's system call fails for another reason than "not here".
    ///
    /// ```
    /// use osmem::{PageRun, Residence, Reservation};
    /// let ps = osmem::page_size();
    /// let r = Reservation::alloc(8 * ps)?;
    /// unsafe { r.as_ptr().write_bytes(1, 2 * ps) }; // pages 0-1 written
    /// let mut runs = [PageRun::EMPTY; 8];
    /// let q = r.residency(0, 8 * ps, &mut runs)?;
    /// assert_eq!(q.end, 8 * ps);
    /// assert_eq!(runs[0], PageRun::new(0, 2 * ps, Residence::Present));
    /// assert_eq!(runs[1].residence, Residence::None);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn residency(
        &self,
        offset: usize,
        len: usize,
        out: &mut [PageRun],
    ) -> Result<Residency, Error> {
        self.residency_in(offset, len, out, None)
    }

    /// [`residency`](Self::residency) with one method and no fallback (to compare methods,
    /// or to insist on one): `Error::Unsupported` if it does not work here.
    ///
    /// ```
    /// use osmem::{PageRun, Reservation, ResidencyMethod};
    /// let r = Reservation::alloc(4096)?;
    /// let mut runs = [PageRun::EMPTY; 4];
    /// let q = r.residency_with(ResidencyMethod::Mincore, 0, 4096, &mut runs)?;
    /// assert_eq!(q.method, ResidencyMethod::Mincore);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn residency_with(
        &self,
        method: ResidencyMethod,
        offset: usize,
        len: usize,
        out: &mut [PageRun],
    ) -> Result<Residency, Error> {
        self.residency_in(offset, len, out, Some(method))
    }

    fn residency_in(
        &self,
        offset: usize,
        len: usize,
        out: &mut [PageRun],
        forced: Option<ResidencyMethod>,
    ) -> Result<Residency, Error> {
        let op = Op::Residency;
        let (first, n) = self.range(op, offset, len)?;
        if out.is_empty() {
            return Err(Error::ZeroLength { op });
        }
        let (lo, hi) = (self.addr(first), self.addr(first + n));
        match residency::query(self.base, lo, hi, out, forced) {
            Ok((runs, end, method, tells)) => Ok(Residency {
                runs,
                end: end - self.base,
                method,
                tells,
            }),
            Err(QueryError::Unsupported) => Err(Error::Unsupported { op }),
            Err(QueryError::Os(call, errno)) => Err(os(op, call, errno, false)),
        }
    }

    /// Bytes of `[offset, offset + len)` the kernel holds as memory of this process: present
    /// pages, not swapped out, not the shared zero page (where the method tells it apart:
    /// `mincore` does not). Asked of the kernel as [`residency`](Self::residency) does.
    ///
    /// ```
    /// let ps = osmem::page_size();
    /// let r = osmem::Reservation::alloc(4 * ps)?;
    /// unsafe { r.as_ptr().write_bytes(1, ps) };
    /// assert_eq!(r.resident_bytes(0, 4 * ps)?, ps);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn resident_bytes(&self, offset: usize, len: usize) -> Result<usize, Error> {
        let op = Op::Residency;
        let (first, n) = self.range(op, offset, len)?;
        residency::resident_bytes_at(self.addr(first), n << self.page_shift).map_err(|e| match e {
            QueryError::Unsupported => Error::Unsupported { op },
            QueryError::Os(call, errno) => os(op, call, errno, false),
        })
    }

    /// The state of the page containing `offset`, or `None` if `offset` is outside the region.
    ///
    /// Async-signal-safe and lock-free: it never waits. A page another transition is changing
    /// reads as its state before that transition until the transition settles; a read that
    /// interrupts a transition on its own thread (a signal handler) answers the state before
    /// or after it, never another (see the crate docs, "Threads, fork and signals").
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(8192)?;
    /// assert_eq!(r.state(4096), Some(osmem::State::Reserved));
    /// assert_eq!(r.state(8192), None);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn state(&self, offset: usize) -> Option<State> {
        if offset >= self.len {
            return None;
        }
        Some(state_of(self.slot.table.code(offset >> self.page_shift)))
    }

    /// Bytes of this region in `state`.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(8192)?;
    /// assert_eq!(r.bytes_in(osmem::State::Reserved), 8192);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn bytes_in(&self, state: State) -> u64 {
        self.slot.table.bytes[state as usize].load(Ordering::Relaxed)
    }

    /// Make a Reserved or Faulted range usable: Reserved/Faulted → Prepared (Go's sysMap;
    /// `used` then makes it Ready). The range reads as zeros.
    ///
    /// Reserved and PROT_NONE-faulted pages get `mprotect(RW)` rather than the
    /// `mmap(RW, MAP_FIXED)` Go's sysMap uses: changing the protection holds the kernel's
    /// mmap_lock for writing for less time than replacing the mapping does (the reason the Go
    /// runtime itself moved sysFault from an `mmap(PROT_NONE, MAP_FIXED)` remap to
    /// `mprotect`). Guard-faulted pages get `MADV_GUARD_REMOVE`. If that fails,
    /// `mmap(RW, MAP_FIXED)` inside the region is tried (counted in
    /// [`Stats::fallback_map_remap`](crate::Stats::fallback_map_remap)).
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
        let held = self.claim_pages(op, first, n, |c| {
            matches!(c, RESERVED | FAULT_GUARD | FAULT_NONE)
        })?;
        self.name_once();
        // Per run, the inverse of what left it there. `moved[s]`: bytes done, by old state.
        let mut moved = [0u64; 4];
        let r = self.each_run(first, n, held, |page, count, code| {
            let (addr, bytes) = (self.addr(page), count << self.page_shift);
            let r = match code {
                FAULT_GUARD => advise::advise(addr, bytes, sys::MADV_GUARD_REMOVE)
                    .or_else(|_| self.remap_rw(addr, bytes)),
                _ => advise::retry(|| unsafe { sys::mprotect(addr, bytes, sys::PROT_RW) })
                    .or_else(|_| self.remap_rw(addr, bytes)),
            };
            let done = moved.iter().any(|&b| b > 0);
            r.map_err(|e| os(op, Syscall::Mmap, e, done))?;
            moved[state_of(code) as usize] += bytes as u64;
            Ok(())
        });
        self.settle(
            first,
            n,
            r.as_ref().err().map(|e| e.0),
            PREPARED,
            &moved,
            held,
        );
        r.map_err(|e| e.1)?;
        stats::bump(Counter::MapOps);
        Ok(())
    }

    /// `mmap(RW, MAP_FIXED)` over a range with no live data (Reserved, Faulted or Prepared).
    fn remap_rw(&self, addr: usize, len: usize) -> Result<(), Errno> {
        stats::bump(Counter::FallbackMapRemap);
        // SAFETY: inside our region; the range holds no data anyone may still want.
        advise::remap_fixed(addr, len, sys::PROT_RW, self.remap_how())
    }

    /// Prepared → Ready (Go's sysUsed). The range may mix Prepared and Ready pages, as Go's
    /// sysUsed allows: Ready pages are left as they are; Reserved or Faulted pages are refused.
    ///
    /// For the kernel it is a no-op unless harddecommit left the range PROT_NONE (then
    /// `mprotect(RW)`), prefault is on (`MADV_POPULATE_WRITE`, else one write per page), or
    /// pages were released with `MADV_FREE`: each of those is written once (without changing
    /// its byte), which ends the kernel's lazy free. Without that write the kernel could
    /// still drop a page later and a read would see it turn to zeros after `used` returned;
    /// with it, Ready means what it says. It costs about a write fault per page the kernel
    /// already reclaimed and a store per page it did not (measured: 0.07 µs per page while
    /// the pages are in cache, 0.23 µs per page for 64 MiB; a cycle of `unused` with
    /// `MADV_FREE`, `used` and a write to every page still costs 0.18–0.69 of the same cycle
    /// with `MADV_DONTNEED`, whose writes take a page fault each).
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// r.map(0, 1 << 16)?;
    /// r.used(0, 4096)?;
    /// r.used(0, 1 << 16)?; // Ready and Prepared pages together: the Ready page is left alone
    /// assert_eq!(r.state(0), Some(osmem::State::Ready));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn used(&self, offset: usize, len: usize) -> Result<(), Error> {
        let op = Op::Used;
        let (first, n) = self.range(op, offset, len)?;
        // Every page Ready already, none held: nothing to do, and nothing to claim. One read
        // of the map without its lock; with no page held, what it saw is a state the range
        // had at one instant (table.rs), and that is where this call takes effect.
        if self.slot.table.all_at_root(first, first + n, READY) {
            stats::bump(Counter::UsedOps);
            return Ok(());
        }
        let held = self.claim_pages(op, first, n, |c| {
            matches!(
                c,
                PREPARED | PREPARED_NONE | PREPARED_FREE | PREPARED_NONE_FREE | READY
            )
        })?;
        let ps = 1 << self.page_shift;
        let prefault_on = self.slot.knobs.resolve().prefault();
        // Each Prepared run: RW if PROT_NONE, then written (MADV_FREE) or prefaulted, while
        // the pages are still held, so nobody else can be using them yet.
        let mut moved = [0u64; 4];
        let r = self.each_run(first, n, held, |page, count, code| {
            if code == READY {
                return Ok(());
            }
            let (addr, bytes) = (self.addr(page), count << self.page_shift);
            let mut fresh = false;
            if matches!(code, PREPARED_NONE | PREPARED_NONE_FREE)
                && advise::retry(|| unsafe { sys::mprotect(addr, bytes, sys::PROT_RW) }).is_err()
            {
                let done = moved[State::Prepared as usize] > 0;
                self.remap_rw(addr, bytes)
                    .map_err(|e| os(op, Syscall::Mmap, e, done))?;
                fresh = true; // new zero pages: nothing lazily freed is left
            }
            if matches!(code, PREPARED_FREE | PREPARED_NONE_FREE) && !fresh {
                end_lazy_free(addr, bytes, ps);
            } else if prefault_on {
                prefault(addr, bytes, ps);
            }
            moved[State::Prepared as usize] += bytes as u64;
            Ok(())
        });
        if let Err((stop, e)) = r {
            // The Prepared runs before `stop` are RW and written now: plain Prepared; Ready
            // runs stay Ready; the rest is unchanged.
            let prepared = moved[State::Prepared as usize];
            self.settle_runs(
                first,
                n,
                stop,
                |c| {
                    if c == READY {
                        Upd::Unhold
                    } else {
                        Upd::Set(PREPARED)
                    }
                },
                held,
            );
            // What changed state: nothing (the runs before `stop` stay Prepared).
            let _ = prepared;
            return Err(e);
        }
        self.settle_from(
            first,
            n,
            READY,
            State::Prepared,
            moved[State::Prepared as usize],
            held,
        );
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
        let k = self.slot.knobs.resolve();
        self.unused_in(offset, len, k.unused_advice(), k)
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
        self.unused_in(offset, len, advice, self.slot.knobs.resolve())
    }

    /// `unused_with` under knobs `k`, resolved once for the whole call.
    #[inline(always)] // see unused::release
    fn unused_in(
        &self,
        offset: usize,
        len: usize,
        advice: UnusedAdvice,
        k: config::Knobs,
    ) -> Result<Unused, Error> {
        let op = Op::Unused;
        let (first, n) = self.range(op, offset, len)?;
        let c = self.claim_pages(op, first, n, |c| c == READY)?;
        let addr = self.addr(first);
        if k.harddecommit() {
            self.before_split(addr);
        }
        let (how, released) = unused::release(addr, len, offset, advice, self.remap_with(k))
            .inspect_err(|e| self.release_failed(first, n, e, c))?;
        let protected = k.harddecommit() && self.protect_released(addr, len);
        let u = self.finish_unused(first, n, how, released, protected, c);
        if k.checked() {
            self.verify_unused(first, n, &u)?;
        }
        Ok(u)
    }

    /// A release failed: the range is let go of unchanged, or, if the error says it changed
    /// (the remap link left a hole, taken back as `PROT_NONE`: see `unused::remap_failed`),
    /// settled Reserved, which is what it is now.
    #[cold]
    fn release_failed(&self, first: usize, n: usize, e: &Error, c: Claim) {
        if e.changed() {
            self.settle_ready(first, n, RESERVED, c);
        } else {
            self.unclaim(first, n, c);
        }
    }

    /// Checked mode's question after an unused (asked where checked mode is on): a range said
    /// to be zero-filled must have no resident page left.
    pub(crate) fn verify_unused(&self, first: usize, n: usize, u: &Unused) -> Result<(), Error> {
        let (addr, len) = (self.addr(first), n << self.page_shift);
        if u.zeroed && u.released && !verify::released(addr, len) {
            return Err(Error::Unverified {
                op: Op::Unused,
                offset: addr - self.base,
                len,
            });
        }
        Ok(())
    }

    /// Checked mode's question after a fault (asked where checked mode is on): a trapping
    /// range must refuse access, and any faulted range must have no resident page left.
    pub(crate) fn verify_fault(&self, first: usize, n: usize, f: &Faulted) -> Result<(), Error> {
        let (addr, len) = (self.addr(first), n << self.page_shift);
        if !verify::released(addr, len) || (f.traps() && !verify::traps(addr, len)) {
            return Err(Error::Unverified {
                op: Op::Fault,
                offset: addr - self.base,
                len,
            });
        }
        Ok(())
    }

    /// The common tail of every unused (direct or batched): harddecommit, map, accounting.
    pub(crate) fn finish_unused(
        &self,
        first: usize,
        n: usize,
        how: UnusedHow,
        released: bool,
        protected: bool,
        c: Claim,
    ) -> Unused {
        self.settle_ready(first, n, code_after_unused(how, protected), c);
        stats::bump(Counter::UnusedOps);
        Unused {
            how,
            zeroed: how != UnusedHow::Free,
            protected,
            released,
        }
    }

    /// log2 of the page size.
    #[inline]
    pub(crate) fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// The offset in this region of address `addr` (for errors of batched ranges).
    pub(crate) fn offset_of(&self, addr: usize) -> usize {
        addr - self.base
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
        let k = self.slot.knobs.resolve();
        self.fault_in(offset, len, k.fault_strategy(), k)
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
        self.fault_in(offset, len, strategy, self.slot.knobs.resolve())
    }

    /// `fault_with` under knobs `k`, resolved once for the whole call.
    #[inline(always)] // see unused::release
    unsafe fn fault_in(
        &self,
        offset: usize,
        len: usize,
        strategy: FaultStrategy,
        k: config::Knobs,
    ) -> Result<Faulted, Error> {
        let op = Op::Fault;
        let (first, n) = self.range(op, offset, len)?;
        let c = self.claim_pages(op, first, n, |c| c == READY)?;
        if matches!(
            fault::resolve(strategy),
            FaultStrategy::Protect | FaultStrategy::Go
        ) {
            self.before_split(self.addr(first));
        }
        let how = fault::fault(self.addr(first), len, strategy, self.remap_with(k))
            .inspect_err(|_| self.unclaim(first, n, c))?;
        let f = self.finish_fault(first, n, how, c);
        if k.checked() {
            self.verify_fault(first, n, &f)?;
        }
        Ok(f)
    }

    /// Before the first step that may split this reservation's VMA (the `PROT_NONE` of a
    /// fault or of harddecommit), write one byte of `addr`'s page — Ready, claimed, about to
    /// be released — once per reservation, without changing it ([`touch_write`], so a
    /// release that then fails has lost nothing). The write gives
    /// the VMA its `anon_vma` while it is still whole, so every piece a split makes shares
    /// it. Otherwise each piece gets its own at its first write, and pieces with different
    /// ones never merge again: mapping everything back would leave the region in many VMAs
    /// (measured: 3000 faulted pages of a Ready region, a page written beside every other
    /// one, all mapped back: 1500 VMAs where there was 1).
    pub(crate) fn before_split(&self, addr: usize) {
        if !self.slot.anon.load(Ordering::Relaxed) {
            self.slot.anon.store(true, Ordering::Relaxed);
            // SAFETY: a Ready page this call holds: read-write and ours.
            unsafe { touch_write(addr) };
        }
    }

    /// The common tail of every fault (direct or batched): map and accounting.
    pub(crate) fn finish_fault(&self, first: usize, n: usize, how: FaultHow, c: Claim) -> Faulted {
        self.settle_ready(first, n, code_after_fault(how), c);
        stats::bump(Counter::FaultOps);
        Faulted { how }
    }

    /// Validate a range for a batch (the checks every transition makes before looking at
    /// states). Returns its address.
    #[inline(always)]
    pub(crate) fn check_range(&self, op: Op, offset: usize, len: usize) -> Result<usize, Error> {
        let (first, _) = self.range(op, offset, len)?;
        Ok(self.addr(first))
    }

    pub(crate) fn verify_unused_at(
        &self,
        addr: usize,
        len: usize,
        u: &Unused,
    ) -> Result<(), Error> {
        let (first, n) = self.pages_of(addr, len);
        self.verify_unused(first, n, u)
    }

    pub(crate) fn verify_fault_at(
        &self,
        addr: usize,
        len: usize,
        f: &Faulted,
    ) -> Result<(), Error> {
        let (first, n) = self.pages_of(addr, len);
        self.verify_fault(first, n, f)
    }

    /// The knobs in force for this reservation now (batches resolve them once per flush).
    #[inline]
    pub(crate) fn knobs_now(&self) -> config::Knobs {
        self.slot.knobs.resolve()
    }

    /// harddecommit's step: make a just-released range PROT_NONE; whether that worked (a
    /// refusal, e.g. at the VMA limit, leaves it RW and released: counted).
    pub(crate) fn protect_released(&self, addr: usize, len: usize) -> bool {
        // SAFETY: the range is osmem's own and was just released.
        let protected =
            advise::retry(|| unsafe { sys::mprotect(addr, len, sys::PROT_NONE) }).is_ok();
        if !protected {
            stats::bump(Counter::FallbackHarddecommitOpen);
        }
        protected
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
        if self.slot.knobs.resolve().thp_never() {
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
    /// Every page must be Ready: the kernel makes the whole range resident (it would bring
    /// back pages released with `unused`, which the accounting says it no longer holds, and
    /// refuses a range with a guard marker with EINVAL). Anything else is refused with
    /// [`Error::WrongState`] (or [`Error::Busy`] while another transition holds a page)
    /// before any system call, and the range is claimed for the call like every transition's,
    /// so an `unused` of the same pages waits for it or is refused. The states do not change.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve_aligned(4 << 20, 2 << 20)?;
    /// r.map(0, 4 << 20)?;
    /// r.used(0, 2 << 20)?;
    /// unsafe { core::ptr::write_bytes(r.as_ptr(), 1, 2 << 20) };
    /// let _ = r.collapse(0, 2 << 20); // may fail where THP is off
    /// // Half of it Prepared: refused, nothing asked of the kernel.
    /// assert!(matches!(
    ///     r.collapse(1 << 20, 2 << 20),
    ///     Err(osmem::Error::WrongState { found: osmem::State::Prepared, .. })
    /// ));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn collapse(&self, offset: usize, len: usize) -> Result<(), Error> {
        let op = Op::Collapse;
        let (first, n) = self.range(op, offset, len)?;
        let held = self.claim_pages(op, first, n, |c| c == READY)?;
        let r = if self.slot.knobs.resolve().thp_never() {
            huge::skipped();
            Ok(())
        } else if !probe::probe().advice.collapse || !advise::usable(advise::D_COLLAPSE) {
            Err(Error::Unsupported { op })
        } else {
            huge::hint(op, self.addr(first), len, huge::COLLAPSE)
        };
        // Nothing changed state: let go of the pages as they were.
        self.unclaim(first, n, held);
        r
    }

    // ----- the page-state map -----

    #[inline]
    fn addr(&self, page: usize) -> usize {
        self.base + (page << self.page_shift)
    }

    /// Validate a range: the checks every transition shares, in a fixed order, before any
    /// syscall. Returns (first page, page count).
    #[inline(always)] // see unused::release
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

    /// What a claim that could not take the map's lock turns into: wait for a fork to end and
    /// try again (`Ok`), or `Busy` at once (this thread holds the lock: a signal handler
    /// re-entered osmem; or the lock is orphaned in a child made by `_Fork`).
    #[cold]
    fn refused(&self, op: Op, page: usize, h: Held) -> Result<(), Error> {
        let busy = Error::Busy {
            op,
            offset: page << self.page_shift,
        };
        match h {
            Held::Fork => fork::wait_end().map_err(|_| busy),
            Held::Reentered | Held::Orphaned => {
                stats::bump(Counter::Reentered);
                Err(busy)
            }
        }
    }

    /// Claim every page of the range for one transition: each page must pass `ok` and not be
    /// held already; they are then held (`BUSY`) until the transition settles them, and the
    /// map records this thread's claim (for the fork handlers). Check and hold happen in one
    /// section, so two transitions can never both start on a page — a safe call can never act
    /// on memory another transition just made Ready. On refusal nothing has changed.
    ///
    /// A claim never starts while a fork is in progress: it waits for the fork to end, unless
    /// the fork waits for this very thread (a signal handler on a thread inside osmem), which
    /// gets `Busy` at once.
    #[inline(always)] // see unused::release
    fn claim_pages(
        &self,
        op: Op,
        first: usize,
        n: usize,
        ok: impl Fn(u8) -> bool,
    ) -> Result<Claim, Error> {
        let me = thread::me();
        loop {
            let mut g = match self.slot.table.lock() {
                Ok(g) => g,
                Err(h) => {
                    self.refused(op, first, h)?;
                    continue;
                }
            };
            if fork::owner() != 0 {
                drop(g);
                self.refused(op, first, Held::Fork)?;
                continue;
            }
            if !g.own(me) {
                // Four other threads hold claims here: wait for one to settle.
                drop(g);
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
                continue;
            }
            return match self.claim_locked(&mut g, op, first, n, &ok) {
                Ok(single) => {
                    g.end();
                    Ok(Claim { single, me })
                }
                Err(Some(e)) => {
                    g.disown(me);
                    Err(e)
                }
                Err(None) => {
                    // The metadata arena is held across a fork: step back and wait.
                    g.disown(me);
                    drop(g);
                    self.refused(op, first, Held::Fork)?;
                    continue;
                }
            };
        }
    }

    /// The claim itself, in a section: the code of the range if it is one run. `Err(None)`:
    /// nodes were needed and the arena is held across a fork (nothing changed).
    #[inline(always)]
    fn claim_locked(
        &self,
        g: &mut Guard<'_>,
        op: Op,
        first: usize,
        n: usize,
        ok: &impl Fn(u8) -> bool,
    ) -> Result<Option<u8>, Option<Error>> {
        let found = match g.claim_root(first, first + n, ok) {
            Some(Ok(code)) => return Ok(Some(code)),
            Some(Err(e)) => Err(e),
            None => match g.claim_in_leaf(first, first + n, ok) {
                Some(r) => r.map(|(runs, code)| (runs, code, true)),
                None => g.check(first, first + n, ok).map(|(r, c)| (r, c, false)),
            },
        };
        let (runs, code) = match found {
            Ok((runs, code, true)) => return Ok((runs == 1).then_some(code)),
            Ok((runs, code, false)) => (runs, code),
            Err((page, c)) => return Err(Some(self.refusal(op, page, c))),
        };
        match g.claim(first, first + n, runs) {
            Ok(()) => Ok((runs == 1).then_some(code)),
            Err(NoMemory::Os(call, errno)) => Err(Some(os(op, call, errno, false))),
            Err(NoMemory::Busy) => Err(Some(Error::Busy {
                op,
                offset: first << self.page_shift,
            })),
            Err(NoMemory::Fork) => Err(None),
        }
    }

    /// The error for a page a claim cannot take: held by another transition, or in a state
    /// the transition does not start from.
    fn refusal(&self, op: Op, page: usize, c: u8) -> Error {
        let offset = page << self.page_shift;
        if c & BUSY != 0 {
            Error::Busy { op, offset }
        } else {
            Error::WrongState {
                op,
                offset,
                found: state_of(c),
            }
        }
    }

    /// Let go of claimed pages without changing their codes (the transition failed before
    /// changing anything).
    pub(crate) fn unclaim(&self, first: usize, n: usize, c: Claim) {
        self.settle(first, n, Some(first), 0, &[0; 4], c);
    }

    /// Call `f(first_page, pages, code)` for each maximal run of equal codes of a claimed
    /// range (codes without `BUSY`), in order. If `f` fails, returns the page where it
    /// stopped and its error.
    fn each_run(
        &self,
        first: usize,
        n: usize,
        c: Claim,
        mut f: impl FnMut(usize, usize, u8) -> Result<(), Error>,
    ) -> Result<(), (usize, Error)> {
        if let Some(code) = c.single {
            return f(first, n, code).map_err(|e| (first, e));
        }
        let end = first + n;
        let mut p = first;
        while p < end {
            // The pages are held by us: their codes cannot change (read without the lock).
            let (code, next) = self.slot.table.run(p, end);
            f(p, next - p, code & !BUSY).map_err(|e| (p, e))?;
            p = next;
        }
        Ok(())
    }

    /// Settle a claimed range: on success (`stop` = None) every page gets `to`; on a failure
    /// at page `stop`, the pages before it get `to` and the rest are let go unchanged.
    /// `moved` holds the bytes done, by old state, for the accounting.
    fn settle(
        &self,
        first: usize,
        n: usize,
        stop: Option<usize>,
        to: u8,
        moved: &[u64; 4],
        c: Claim,
    ) {
        let end = first + n;
        let done = stop.unwrap_or(end);
        self.slot.table.settle_with(|g: &mut Guard<'_>| {
            if done < end || !g.settle_root(first, end, to) {
                if done > first {
                    g.update(first, done, Upd::Set(to));
                }
                if done < end {
                    g.update(done, end, Upd::Unhold);
                }
            }
            for (s, &b) in moved.iter().enumerate() {
                if b > 0 {
                    self.move_bytes(STATES[s], state_of(to), b);
                }
            }
            g.disown(c.me);
        });
    }

    /// Settle a claimed range whose transition stopped at page `stop`: the pages before it
    /// run by run with `f` of each run's code (an update per run: never a node, see
    /// table.rs), the rest let go unchanged.
    fn settle_runs(&self, first: usize, n: usize, stop: usize, f: impl Fn(u8) -> Upd, c: Claim) {
        let end = first + n;
        self.slot.table.settle_with(|g: &mut Guard<'_>| {
            let mut p = first;
            while p < stop {
                let (code, next) = g.run(p, stop);
                g.update(p, next, f(code & !BUSY));
                p = next;
            }
            if stop < end {
                g.update(stop, end, Upd::Unhold);
            }
            g.disown(c.me);
        });
    }

    /// Settle a claimed Ready range (unused, fault): every page gets `to`.
    #[inline(always)] // see unused::release
    fn settle_ready(&self, first: usize, n: usize, to: u8, c: Claim) {
        self.settle_from(first, n, to, State::Ready, (n as u64) << self.page_shift, c);
    }

    /// Settle a whole claimed range to `to` when the bytes that change state all come from
    /// one state `from` (unused and fault from Ready, used from Prepared): the common case,
    /// kept short and inlined (see the note on unused::release).
    #[inline(always)]
    fn settle_from(&self, first: usize, n: usize, to: u8, from: State, bytes: u64, c: Claim) {
        self.slot.table.settle_with(SettleFrom {
            r: self,
            first,
            n,
            to,
            from,
            bytes,
            me: c.me,
        });
    }

    /// Settle many batched ranges of this reservation in one section (the batch's `job`),
    /// or hand them to the lock holder across a fork: then returns the record to wait for
    /// (after settling the batch's other reservations).
    pub(crate) fn settle_batch<'a, J: Job>(
        &self,
        job: &'a mut J,
        rec: &'a mut MaybeUninit<Deferred>,
    ) -> Option<&'a Deferred> {
        self.slot.table.settle_or_defer(job, rec)
    }

    /// Wait for a settle handed to the lock holder (see `settle_batch`).
    pub(crate) fn wait_settled(&self, rec: &Deferred) {
        self.slot.table.wait_deferred(rec)
    }

    /// Begin claiming a batch's ranges of this reservation: one section for all of them.
    /// `Err(true)`: a fork is in progress (claim them after it); `Err(false)`: the lock cannot
    /// be had at all (this thread holds it; orphaned): refuse them with `Busy`.
    pub(crate) fn begin_claims(&self, me: usize) -> Result<Claims<'_>, bool> {
        loop {
            let g = match self.slot.table.lock() {
                Ok(g) => g,
                Err(Held::Fork) => return Err(true),
                Err(_) => return Err(false),
            };
            if fork::owner() != 0 {
                return Err(true);
            }
            if g.own(me) {
                return Ok(Claims {
                    r: self,
                    g,
                    me,
                    any: false,
                });
            }
            drop(g);
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }

    /// Move `bytes` from state `a` to `b` in this region's and the global counters. Called
    /// with the map's lock held, so the region's counters need no read-modify-write.
    pub(crate) fn move_bytes(&self, a: State, b: State, bytes: u64) {
        if a == b {
            return;
        }
        let (x, y) = (
            &self.slot.table.bytes[a as usize],
            &self.slot.table.bytes[b as usize],
        );
        x.store(x.load(Ordering::Relaxed) - bytes, Ordering::Relaxed);
        y.store(y.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
        stats::moved(a as usize, b as usize, bytes);
    }

    /// The page of `addr` and the pages of `len` bytes (batches keep addresses).
    #[inline]
    pub(crate) fn pages_of(&self, addr: usize, len: usize) -> (usize, usize) {
        (
            (addr - self.base) >> self.page_shift,
            len >> self.page_shift,
        )
    }

    /// This reservation's id: names it from anywhere, a signal handler included, until it is
    /// dropped (see [`ReservationId`]).
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(1 << 16)?;
    /// let id = r.id();
    /// assert_eq!(osmem::lookup(r.as_ptr() as usize).unwrap().id, id);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn id(&self) -> ReservationId {
        ReservationId::new(self.index, self.gen)
    }

    /// A view of the live reservation in registry slot `index` (generation `gen`), for calls
    /// through its id: never dropped (its owner unmaps it).
    pub(crate) fn view(index: u32, gen: u32, slot: &'static Slot) -> ManuallyDrop<Reservation> {
        let (base, len) = registry::span(index);
        ManuallyDrop::new(Reservation {
            base,
            len,
            slot,
            index,
            gen,
            page_shift: probe::page_size().trailing_zeros(),
            slack: (0, 0),
        })
    }
}

/// The common settle (see `Reservation::settle_from`), as a type rather than a closure so
/// that it is inlined into the transition (a closure body stays a call of its own here).
struct SettleFrom<'a> {
    r: &'a Reservation,
    first: usize,
    n: usize,
    to: u8,
    from: State,
    bytes: u64,
    me: usize,
}

impl Job for SettleFrom<'_> {
    #[inline(always)]
    fn run(&mut self, g: &mut Guard<'_>) {
        let (first, n, to) = (self.first, self.n, self.to);
        if !g.settle_root(first, first + n, to) {
            g.update(first, first + n, Upd::Set(to));
        }
        if self.bytes > 0 {
            self.r.move_bytes(self.from, state_of(to), self.bytes);
        }
        g.disown(self.me);
    }
}

/// A batch's claims on one reservation, in one section (see `Reservation::begin_claims`).
pub(crate) struct Claims<'r> {
    r: &'r Reservation,
    g: Guard<'r>,
    me: usize,
    /// At least one range claimed: the claim owner stays recorded until the batch settles.
    any: bool,
}

impl Claims<'_> {
    /// Claim the Ready range `[addr, addr+len)`. `Err(Some(e))`: refused, nothing changed;
    /// `Err(None)`: nodes were needed and the metadata arena is held across a fork (claim it
    /// after the fork).
    #[inline]
    pub(crate) fn claim(&mut self, op: Op, addr: usize, len: usize) -> Result<(), Option<Error>> {
        let (first, n) = self.r.pages_of(addr, len);
        self.r
            .claim_locked(&mut self.g, op, first, n, &|c| c == READY)
            .map(|_| self.any = true)
    }
}

impl Reservation {
    /// (start address, log2 page size, the index of the 16-page word holding the last page):
    /// what a batch's word operations compute pages with.
    #[inline(always)]
    pub(crate) fn geometry(&self) -> (usize, u32, usize) {
        (
            self.base,
            self.page_shift,
            ((self.len >> self.page_shift) - 1) >> 4,
        )
    }
}

impl Claims<'_> {
    /// The leaf node and word index of the 16-page word holding page `p` (the batch's word
    /// claims), making the leaf if the map has none there and every page of nibble mask `m`
    /// of that word is Ready (`None`: one is not, or no metadata memory; nothing changed).
    #[inline]
    pub(crate) fn leaf_word(
        &mut self,
        p: usize,
        m: u64,
    ) -> Option<(&'static crate::arena::Node, usize)> {
        self.g.leaf_word(p, m, READY).ok().flatten()
    }

    /// Words were claimed through [`leaf_word`](Self::leaf_word): the batch settles this
    /// reservation.
    #[inline(always)]
    pub(crate) fn claimed_some(&mut self) {
        self.any = true;
    }
}

impl Drop for Claims<'_> {
    fn drop(&mut self) {
        if !self.any {
            self.g.disown(self.me);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // No call through an id is in progress, and none can start; then lookups stop
        // finding it, before the address range is unmapped and can be reused.
        registry::begin_drop(self.index);
        registry::unpublish(self.index);
        let (from, n) = mapping(self.base, self.len, self.slack, 1 << self.page_shift);
        // SAFETY: we own the mapping and `&mut self` proves no transition is running.
        if advise::retry(|| unsafe { sys::munmap(from, n) }).is_err() {
            // Unmapping refused (a sandbox policy: munmap has no other failure on a range we
            // own). The address space stays taken, but the memory must not: drop the pages
            // and make the range inaccessible. Counted in munmap_errors.
            if advise::advise(self.base, self.len, sys::MADV_DONTNEED).is_err() {
                let _ = unsafe { sys::mmap_anon(self.base, self.len, sys::PROT_NONE, true, true) };
            }
            let _ = unsafe { sys::mprotect(self.base, self.len, sys::PROT_NONE) };
        }
        self.slot.table.release_all();
        for s in STATES {
            let b = self.slot.table.bytes[s as usize].load(Ordering::Relaxed);
            if b > 0 {
                stats::dropped(s as usize, b);
            }
        }
        registry::release(self.index);
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

/// End the kernel's lazy free of `[addr, addr+len)` (released with `MADV_FREE`): write every
/// page once, without changing its byte. A written page is dirty again, so reclaim keeps it
/// (a page the kernel already reclaimed is faulted in, zero-filled, by the write).
fn end_lazy_free(addr: usize, len: usize, ps: usize) {
    let mut a = addr;
    while a < addr + len {
        // SAFETY: the range is RW and held by the caller's transition.
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

/// The whole mapping of a reservation of `[base, base+len)` with `slack` pages before and
/// after it: (start, length).
fn mapping(base: usize, len: usize, slack: (u32, u32), ps: usize) -> (usize, usize) {
    let (head, tail) = (slack.0 as usize * ps, slack.1 as usize * ps);
    (base - head, head + len + tail)
}

/// The error of an aligned reservation's mapping.
fn aligned_error(op: Op, e: advise::MapAligned, align: usize, len: usize) -> Error {
    match e {
        advise::MapAligned::Overflow => Error::Overflow {
            op,
            offset: align,
            len,
        },
        advise::MapAligned::Os(e) => os(op, Syscall::Mmap, e, false),
    }
}

/// An address given for a reservation: page-aligned, and the range must not wrap around.
fn check_addr(op: Op, addr: usize, len: usize, ps: usize) -> Result<(), Error> {
    if addr & (ps - 1) != 0 {
        return Err(Error::Unaligned {
            op,
            offset: addr,
            len,
        });
    }
    addr.checked_add(len).map(|_| ()).ok_or(Error::Overflow {
        op,
        offset: addr,
        len,
    })
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
