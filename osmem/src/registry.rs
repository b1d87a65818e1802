//! The registry: every live reservation's state in a *slot* at an address that never moves,
//! and a directory of their address ranges that a signal handler can search.
//!
//! Why slots: a [`Reservation`](crate::Reservation) is a value its owner may move, but three
//! things need to reach its page-state map without it: the `fork` handlers (which must hold
//! every map across a fork, fork.rs), a signal handler that knows only a faulting address, and
//! a client whose OS functions are static and take bare addresses. So the map, the byte
//! counts and the knobs live in a slot of a process-wide pool, and the handle keeps a
//! reference to it. A slot is named from outside by its index and generation
//! ([`crate::ReservationId`]): the generation is odd while a reservation owns the slot and
//! moves on at every registration and unregistration, so a stale id is refused, never
//! mistaken for a new reservation.
//!
//! The first 64 slots are static (16 KiB of zeroed data, no system call: a process that can
//! map nothing more still gets its first reservations). Beyond them, slots come a chunk at a
//! time from osmem's metadata arena (arena.rs), which they never leave: no mapping and no
//! system call of their own (the arena grows in place by `mprotect`, as for nodes), so the
//! registry adds no VMA however many reservations there are. Each slot has a directory entry
//! (generation, base, length), kept apart from the slots so that a lookup reads 32 bytes per
//! live reservation, not a slot each. Nothing in the arena is ever unmapped, so a lookup
//! that races with a drop reads memory that exists and checks the generation after it.
//!
//! Registrations and frees take the pool's lock (never nested with another lock, so the fork
//! handlers can always take it); lookups take nothing. Memory: 288 bytes per reservation alive
//! at the peak, at most; metadata that grows with the number of reservations, never with
//! their size.

use crate::arena::{self, NoMemory};
use crate::lock::{Held, SpinLock};
use crate::sys::linux::Errno;
use crate::table::Table;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// One reservation's shared state (see the module doc).
#[repr(C, align(64))]
pub(crate) struct Slot {
    /// The page-state map: its first cache line is what a transition touches.
    pub(crate) table: Table,
    /// The reservation's own knobs (see `Reservation::with_config`).
    pub(crate) knobs: crate::config::Local,
    /// Whether the region has its `[anon:osmem]` name yet.
    pub(crate) named: AtomicBool,
    /// Whether the region was mapped `MAP_NORESERVE` (remaps inside it use the same flags).
    pub(crate) noreserve: AtomicBool,
    /// The fork handlers took this map's lock (and let go of it after the fork).
    pub(crate) fork_taken: AtomicBool,
    /// A page was written before the first step that may split the region's VMA (see
    /// `Reservation::before_split`).
    pub(crate) anon: AtomicBool,
    /// Calls through a `ReservationId` in progress, and `DYING` once the owner drops it.
    pins: AtomicU32,
    /// The free list's link, under the pool's lock.
    next_free: AtomicU32,
}

/// A directory entry: what a lookup reads of a slot.
#[repr(C)]
struct Dir {
    /// Odd while a reservation owns the slot.
    gen: AtomicU32,
    base: AtomicUsize,
    len: AtomicUsize,
}

const SLOT_BYTES: usize = core::mem::size_of::<Slot>();
const DIR_BYTES: usize = 32;
const _: () = assert!(SLOT_BYTES <= 256 && core::mem::size_of::<Dir>() <= DIR_BYTES);
/// Slots (and directory entries) in static memory, before the arena is needed.
const STATIC: u32 = 64;
// SAFETY: an all-zero `Slot` and `Dir` are valid (atomics and plain integers); the static
// slots are initialised by `init` like arena slots before their first use.
static SLOTS0: [Slot; STATIC as usize] = unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
static DIR0: [Dir; STATIC as usize] = unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
/// Arena chunks holding slots and directory entries beyond the static ones: enough for 2^20
/// reservations with 4 KiB chunks (more with bigger pages). Chunk 0 is never handed out (it
/// holds links), so 0 means none. Zero pages until used.
const SLOT_CHUNKS_MAX: usize = (1 << 20) * SLOT_BYTES / 4096;
const DIR_CHUNKS_MAX: usize = (1 << 20) * DIR_BYTES / 4096;
#[allow(clippy::declare_interior_mutable_const)] // a repeat operand, not a shared value
const NO_CHUNK: AtomicU32 = AtomicU32::new(0);
static SLOT_CHUNKS: [AtomicU32; SLOT_CHUNKS_MAX] = [NO_CHUNK; SLOT_CHUNKS_MAX];
static DIR_CHUNKS: [AtomicU32; DIR_CHUNKS_MAX] = [NO_CHUNK; DIR_CHUNKS_MAX];
/// Pins bit: the owner is dropping the reservation; no new pin.
const DYING: u32 = 1 << 31;
const NONE: u32 = u32::MAX;

struct Pool {
    lock: SpinLock,
    /// The free list's head, under the lock.
    free: UnsafeCell<u32>,
    /// Slot indices ever handed out: where a lookup stops.
    high: AtomicU32,
    /// The fork handlers took the pool's lock.
    fork_taken: AtomicBool,
}

// SAFETY: `free` only with `lock` held; the rest is atomic.
unsafe impl Sync for Pool {}

static POOL: Pool = Pool {
    lock: SpinLock::new(),
    free: UnsafeCell::new(NONE),
    high: AtomicU32::new(0),
    fork_taken: AtomicBool::new(false),
};

/// Where slot or directory entry `j` (past the static ones) lives: its chunk's address plus
/// its place in it.
#[inline]
fn in_chunks(chunks: &[AtomicU32], j: usize, bytes: usize) -> usize {
    let per = arena::chunk_size() / bytes;
    let c = chunks[j / per].load(Ordering::Relaxed);
    arena::chunk_addr(c) + (j % per) * bytes
}

/// Slot `i` (handed out once, so read-write for good).
#[inline]
pub(crate) fn slot(i: u32) -> &'static Slot {
    if i < STATIC {
        return &SLOTS0[i as usize];
    }
    let at = in_chunks(&SLOT_CHUNKS, (i - STATIC) as usize, SLOT_BYTES);
    // SAFETY: callers pass indices below `high`, whose chunk is the registry's for good,
    // read-write and never unmapped; it was zeroed before `high` passed it.
    unsafe { &*(at as *const Slot) }
}

#[inline]
fn dir(i: u32) -> &'static Dir {
    if i < STATIC {
        return &DIR0[i as usize];
    }
    let at = in_chunks(&DIR_CHUNKS, (i - STATIC) as usize, DIR_BYTES);
    // SAFETY: as for `slot`.
    unsafe { &*(at as *const Dir) }
}

/// Why a slot could not be had.
pub(crate) enum NoSlot {
    /// The pool's lock cannot be waited for (this thread holds it: a signal handler).
    Busy,
    /// The metadata arena could not grow, or every slot is taken (`ENOMEM`).
    Os(crate::error::Syscall, Errno),
}

/// Lock the pool, waiting for a fork in progress if this thread can.
fn lock() -> Result<(), NoSlot> {
    loop {
        match POOL.lock.lock() {
            Ok(()) => return Ok(()),
            Err(Held::Fork) if crate::fork::wait_end().is_ok() => {}
            Err(_) => return Err(NoSlot::Busy),
        }
    }
}

/// Take a slot for a reservation of `[base, base+len)`, make it ready with `init`, and
/// publish it (lookups find it from now on). Returns its index and generation.
pub(crate) fn register(
    base: usize,
    len: usize,
    init: impl FnOnce(&Slot),
) -> Result<(u32, u32), NoSlot> {
    let i = loop {
        lock()?;
        match take() {
            Ok(i) => break i,
            Err(NoMemory::Fork) => {
                // The arena is held across a fork: let go and wait for its end.
                POOL.lock.unlock();
                if crate::fork::wait_end().is_err() {
                    return Err(NoSlot::Busy);
                }
            }
            Err(NoMemory::Busy) => {
                POOL.lock.unlock();
                return Err(NoSlot::Busy);
            }
            Err(NoMemory::Os(call, errno)) => {
                POOL.lock.unlock();
                return Err(NoSlot::Os(call, errno));
            }
        }
    };
    let s = slot(i);
    s.pins.store(0, Ordering::Relaxed);
    init(s);
    let d = dir(i);
    d.base.store(base, Ordering::Relaxed);
    d.len.store(len, Ordering::Relaxed);
    // Even while free (0 at first), odd while owned.
    let gen = d.gen.load(Ordering::Relaxed).wrapping_add(1);
    debug_assert!(gen & 1 == 1);
    d.gen.store(gen, Ordering::Release);
    POOL.lock.unlock();
    Ok((i, gen))
}

/// A free slot index: from the free list, the static slots, or a new arena chunk (zeroed
/// before any lookup can reach it). Lock held.
fn take() -> Result<u32, NoMemory> {
    // SAFETY: lock held.
    let free = unsafe { &mut *POOL.free.get() };
    if *free != NONE {
        let i = *free;
        *free = slot(i).next_free.load(Ordering::Relaxed);
        return Ok(i);
    }
    let i = POOL.high.load(Ordering::Relaxed);
    if i >= STATIC {
        let j = (i - STATIC) as usize;
        for (chunks, bytes) in [(&SLOT_CHUNKS[..], SLOT_BYTES), (&DIR_CHUNKS[..], DIR_BYTES)] {
            let per = arena::chunk_size() / bytes;
            let b = j / per;
            if b >= chunks.len() {
                return Err(NoMemory::Os(crate::error::Syscall::Mprotect, Errno::ENOMEM));
            }
            if chunks[b].load(Ordering::Relaxed) == 0 {
                let c = arena::grab()?;
                // A chunk may come back from a map that used it: zero it, so that a lookup
                // sees a free directory entry (an even generation) and a slot no pins.
                // SAFETY: the chunk is ours, read-write, `chunk_size` bytes.
                unsafe {
                    core::ptr::write_bytes(arena::chunk_addr(c) as *mut u8, 0, arena::chunk_size())
                };
                chunks[b].store(c, Ordering::Release);
            }
        }
    }
    POOL.high.store(i + 1, Ordering::Release);
    Ok(i)
}

/// Stop new pins of slot `i` and wait for those in progress (the owner is dropping it). A
/// pin is a call through a `ReservationId` on another thread (brief); one on this thread (a
/// signal handler) sees `DYING` and is refused, so this never waits for itself.
pub(crate) fn begin_drop(i: u32) {
    let p = &slot(i).pins;
    p.fetch_or(DYING, Ordering::AcqRel);
    while p.load(Ordering::Acquire) & !DYING != 0 {
        // SAFETY: sched_yield has no preconditions.
        unsafe { libc::sched_yield() };
    }
}

/// Unpublish slot `i` (lookups stop finding it) before its memory is unmapped.
pub(crate) fn unpublish(i: u32) {
    let d = dir(i);
    let g = d.gen.load(Ordering::Relaxed);
    debug_assert!(g & 1 == 1);
    d.gen.store(g.wrapping_add(1), Ordering::Release);
}

/// Give slot `i` back for reuse (its map has given its nodes back). If the pool's lock
/// cannot be had (a signal handler dropping a reservation on a thread inside the registry),
/// the slot is leaked.
pub(crate) fn release(i: u32) {
    if lock().is_err() {
        return;
    }
    // SAFETY: lock held.
    let free = unsafe { &mut *POOL.free.get() };
    slot(i).next_free.store(*free, Ordering::Relaxed);
    *free = i;
    POOL.lock.unlock();
}

/// The live reservation containing `addr`: (index, generation, base, length). Takes no lock
/// and never waits: a slot being registered or unregistered at this instant counts as
/// absent.
pub(crate) fn find(addr: usize) -> Option<(u32, u32, usize, usize)> {
    let high = POOL.high.load(Ordering::Acquire);
    for i in 0..high {
        let d = dir(i);
        let g = d.gen.load(Ordering::Acquire);
        if g & 1 == 0 {
            continue;
        }
        let (b, l) = (
            d.base.load(Ordering::Relaxed),
            d.len.load(Ordering::Relaxed),
        );
        core::sync::atomic::fence(Ordering::Acquire);
        if d.gen.load(Ordering::Relaxed) == g && addr.wrapping_sub(b) < l {
            return Some((i, g, b, l));
        }
    }
    None
}

/// Whether slot `i` still has generation `gen` (the reservation an id names is alive).
#[inline]
pub(crate) fn alive(i: u32, gen: u32) -> bool {
    i < POOL.high.load(Ordering::Acquire) && dir(i).gen.load(Ordering::Acquire) == gen
}

/// (base, length) of a live slot, as published.
pub(crate) fn span(i: u32) -> (usize, usize) {
    let d = dir(i);
    (
        d.base.load(Ordering::Relaxed),
        d.len.load(Ordering::Relaxed),
    )
}

/// Pin slot `i` if it still has generation `gen`: it cannot be dropped until [`unpin`].
pub(crate) fn pin(i: u32, gen: u32) -> Option<&'static Slot> {
    if !alive(i, gen) {
        return None;
    }
    let s = slot(i);
    let mut p = s.pins.load(Ordering::Relaxed);
    loop {
        if p & DYING != 0 {
            return None;
        }
        match s
            .pins
            .compare_exchange_weak(p, p + 1, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(now) => p = now,
        }
    }
    // Pinned; was it still the same reservation when the pin landed?
    if !alive(i, gen) {
        unpin(s);
        return None;
    }
    Some(s)
}

/// Let go of a pin.
pub(crate) fn unpin(s: &Slot) {
    s.pins.fetch_sub(1, Ordering::Release);
}

/// Call `f` on every live slot (the fork handlers; a thread asking whether it is inside
/// osmem).
pub(crate) fn each_live(mut f: impl FnMut(&'static Slot) -> bool) -> bool {
    let high = POOL.high.load(Ordering::Acquire);
    for i in 0..high {
        if dir(i).gen.load(Ordering::Acquire) & 1 == 1 && f(slot(i)) {
            return true;
        }
    }
    false
}

/// Call `f` on every slot ever handed out, live or not (after a fork: a slot whose
/// reservation was dropped during the fork handlers may still have its map's lock held by
/// them).
pub(crate) fn each_slot(mut f: impl FnMut(&'static Slot)) {
    for i in 0..POOL.high.load(Ordering::Acquire) {
        f(slot(i));
    }
}

/// The thread holding the pool's lock (0: none).
pub(crate) fn lock_owner() -> usize {
    POOL.lock.owner()
}

/// `fork` is about to copy the process: hold the pool's lock (unless the forking thread
/// holds it already: a signal handler forked in the middle of a registration, which finishes
/// in both processes when the handler returns).
pub(crate) fn hold_for_fork() {
    POOL.fork_taken
        .store(POOL.lock.lock().is_ok(), Ordering::Relaxed);
}

/// After `fork`, in parent and child.
pub(crate) fn release_after_fork(me: usize) {
    if POOL.fork_taken.swap(false, Ordering::Relaxed) {
        POOL.lock.unlock();
    } else {
        POOL.lock.adopt_in_child(me);
    }
}
