//! osmem's own metadata memory: one process-wide arena of 128-byte nodes, handed to
//! reservations a page ("chunk") at a time.
//!
//! (Not `MAP_NORESERVE`: the address space is `PROT_NONE`, which is never charged, and the
//! read-write steps are charged as they are made, so under `vm.overcommit_memory=2` metadata
//! is accounted like any memory osmem really writes.)
//!
//! Why one arena and not a mapping per reservation: a reservation whose pages are all in one
//! state (or one run inside another state) needs no nodes at all, so most reservations never
//! touch the arena, and `reserve` + drop stay exactly one `mmap` + one `munmap` (a wasm pool
//! makes thousands of them). The arena's address space is reserved once, `PROT_NONE`, and made
//! read-write in steps with `mprotect`, which extends the read-write part instead of adding a
//! mapping: the arena is 2 VMAs for the life of the process, so it keeps working when the
//! process is at `vm.max_map_count` (a mapping per reservation would fail exactly there), and
//! under `vm.overcommit_memory=2` only the read-write part is charged.
//!
//! It carries `MADV_NOHUGEPAGE`: nodes are touched sparsely, and a huge page would turn one
//! 128-byte node into 2 MiB of resident memory on hosts with THP `always`. With that flag and
//! its name (`[anon:osmem state]`) the kernel never merges it with a reservation's own VMA,
//! so a region's `/proc/self/smaps` lines show the region alone.
//!
//! Chunks that reservations give back (when their map becomes uniform again, and at drop) go
//! on a free list; at most [`RESIDENT_FREE_MAX`] of them stay resident for reuse (so a
//! workload that alternates between "uniform" and "one mixed area" pays no system call), and
//! every chunk beyond that is returned to the kernel with `MADV_DONTNEED` at once.
//!
//! The free lists and every reservation's list of chunks are linked through a side table of
//! one `u32` per chunk, kept in the arena itself (the first chunk of every group of
//! `page/4` chunks), so linking a released chunk never touches — and never re-populates — it.
//! Likewise the first node of every chunk holds the free-list links of the chunk's other
//! nodes: a freed node is never written, so a reader that still walks it (readers of the
//! page-state map take no lock, see table.rs) reads what it held when it was unlinked.
//!
//! Nothing in the arena is ever unmapped, and what has been made read-write stays read-write
//! ([`node_checked`]): a reader holding a stale node index reads memory that exists, and
//! finds out from the map's sequence counter that it must read again.

use crate::advise;
use crate::lock::{Held, SpinLock};
use crate::probe;
use crate::stats::{self, Counter};
use crate::sys::linux::{self as sys, Errno, Syscall};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A node: 16 words, each read and written atomically (readers take no lock).
pub(crate) type Node = [AtomicU64; 16];

/// Bytes per node: 16 words.
pub(crate) const NODE_BYTES: usize = 128;
/// No chunk / no node.
pub(crate) const NONE: u32 = u32::MAX;
/// Free chunks kept resident for reuse (8 × 4 KiB with 4 KiB pages).
pub(crate) const RESIDENT_FREE_MAX: u32 = 8;
/// Address space reserved for the arena, largest first: 16 GiB holds the nodes of the worst
/// possible map of 32 TiB of reservations; processes under a small `RLIMIT_AS` get less.
const RESERVE_TRIES: [usize; 5] = [16 << 30, 1 << 30, 64 << 20, 4 << 20, 1 << 20];
/// How much more becomes read-write when the arena grows.
const COMMIT_STEP: usize = 256 << 10;

struct State {
    base: usize,
    len: usize,
    /// Bytes made read-write from `base`.
    committed: usize,
    /// Chunks ever handed out (the next new one).
    bump: u32,
    resident: u32,
    resident_n: u32,
    released: u32,
}

struct Arena {
    lock: SpinLock,
    state: UnsafeCell<State>,
    /// `state.base` once created, readable without the lock (it never changes after).
    base: AtomicUsize,
    /// `state.committed`, readable without the lock: it only grows.
    committed: AtomicUsize,
}

/// Whether the arena has its name: given with the first chunk handed out, not at creation,
/// so creating it (with the first reservation) issues no `prctl`: a region's first `map` is
/// where naming is first tried, as the knobs' docs say.
static NAMED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

// SAFETY: `state` is only accessed with `lock` held.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena {
    lock: SpinLock::new(),
    state: UnsafeCell::new(State {
        base: 0,
        len: 0,
        committed: 0,
        bump: 0,
        resident: NONE,
        resident_n: 0,
        released: NONE,
    }),
    base: AtomicUsize::new(0),
    committed: AtomicUsize::new(0),
};

/// Why metadata memory could not be had: the call and its errno, or `Busy` when the arena's
/// lock cannot be waited for (held by the calling thread, which a signal handler interrupted;
/// left held by a thread of the parent in a child made by `_Fork`), or `Fork` when it is held
/// across a `fork` in progress (the caller steps back and waits for the fork to end).
#[derive(Copy, Clone, Debug)]
pub(crate) enum NoMemory {
    Os(Syscall, Errno),
    Busy,
    Fork,
}

impl From<Held> for NoMemory {
    fn from(h: Held) -> NoMemory {
        match h {
            Held::Fork => NoMemory::Fork,
            _ => NoMemory::Busy,
        }
    }
}

#[inline]
fn chunk_bytes() -> usize {
    probe::page_size()
}

/// Nodes per chunk (32 with 4 KiB pages).
#[inline]
pub(crate) fn chunk_nodes() -> u32 {
    (chunk_bytes() / NODE_BYTES) as u32
}

/// Chunks per link group: the group's first chunk holds one `u32` link per chunk of it.
#[inline]
fn group() -> u32 {
    (chunk_bytes() / 4) as u32
}

/// The node with this index (chunk `i / chunk_nodes()`), which must belong to a chunk the
/// caller owns (handed out by [`grab`]); writers under their map's lock.
#[inline]
pub(crate) fn node(index: u32) -> &'static Node {
    debug_assert!(node_checked(index).is_some());
    // SAFETY: a node of a chunk handed out lies in the read-write part of the arena, which is
    // never unmapped nor made inaccessible again.
    unsafe { &*((ARENA.base.load(Ordering::Relaxed) + index as usize * NODE_BYTES) as *const Node) }
}

/// The node with this index if it lies in the arena's read-write part, for readers that take
/// no lock and may hold a stale index: whatever they read there is memory that exists.
#[inline]
pub(crate) fn node_checked(index: u32) -> Option<&'static Node> {
    let end = (index as usize + 1) * NODE_BYTES;
    if index == NONE || end > ARENA.committed.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: inside the read-write part (checked above), which only grows.
    Some(unsafe { &*((ARENA.base.load(Ordering::Relaxed) + end - NODE_BYTES) as *const Node) })
}

/// The free-list link of node `index`, kept in the first node of its chunk (which is never
/// handed out as a node), so that freeing a node never writes to it.
#[inline]
pub(crate) fn node_link(index: u32) -> &'static AtomicU32 {
    let per = chunk_nodes();
    debug_assert!(index % per != 0, "the first node of a chunk holds links");
    let first = index - index % per;
    // SAFETY: the first node of a chunk the caller owns: read-write, 128 bytes, room for one
    // u32 per node of the chunk.
    unsafe {
        &*((node(first) as *const Node as usize + (index % per) as usize * 4) as *const AtomicU32)
    }
}

/// The link slot of chunk `c`.
///
/// # Safety
/// `c` must have been handed out by the arena (so its group's link chunk is read-write), and
/// the caller must own `c` (or hold the arena lock for free chunks).
#[inline]
pub(crate) unsafe fn link(c: u32) -> *mut u32 {
    let g = group();
    let table = ARENA.base.load(Ordering::Relaxed) + (c - c % g) as usize * chunk_bytes();
    (table + (c % g) as usize * 4) as *mut u32
}

/// The address of chunk `c` (handed out by [`grab`]).
#[inline]
pub(crate) fn chunk_addr(c: u32) -> usize {
    ARENA.base.load(Ordering::Relaxed) + c as usize * chunk_bytes()
}

/// Bytes per chunk (the page size).
#[inline]
pub(crate) fn chunk_size() -> usize {
    chunk_bytes()
}

/// The arena's address range, once made.
pub(crate) fn range() -> Option<(usize, usize)> {
    let base = ARENA.base.load(Ordering::Acquire);
    if base == 0 {
        return None;
    }
    // SAFETY: `len` is written once, before `base` is published (Release/Acquire above).
    Some((base, unsafe { (*ARENA.state.get()).len }))
}

/// `fork` is about to copy the process: hold the arena's lock so no other thread is in the
/// middle of changing it (the child would inherit it held, and never get a node). `false`: not
/// taken, because the forking thread itself holds it (a signal handler interrupted it inside
/// the arena; it lets go when the handler returns, in both processes) or it is orphaned.
pub(crate) fn hold_for_fork() -> bool {
    ARENA.lock.lock().is_ok()
}

/// After `fork`, in parent and child: let go of the lock `hold_for_fork` took.
pub(crate) fn release_after_fork(taken: bool, me: usize) {
    if taken {
        ARENA.lock.unlock();
    } else {
        ARENA.lock.adopt_in_child(me);
    }
}

/// The thread holding the arena's lock (0: none).
pub(crate) fn lock_owner() -> usize {
    ARENA.lock.owner()
}

/// Create the arena (once per process; later calls are one load). Called when the first
/// reservation is made, so the arena exists before a process can reach the VMA limit.
pub(crate) fn ensure() {
    if ARENA.base.load(Ordering::Acquire) != 0 {
        return;
    }
    if ARENA.lock.lock().is_err() {
        return;
    }
    // SAFETY: lock held.
    let _ = unsafe { create(&mut *ARENA.state.get()) };
    ARENA.lock.unlock();
}

/// Reserve the address space, make the first step read-write, set hints and name.
fn create(s: &mut State) -> Result<(), NoMemory> {
    if s.base != 0 {
        return Ok(());
    }
    let mut last = Errno::ENOMEM;
    for len in RESERVE_TRIES {
        // On a page-table-page boundary where it is that large: its touched nodes (at its
        // start) then share no page-table page with a region placed beside it, whose releases
        // would otherwise walk that page (see `advise::pmd_table_span`).
        match advise::map_aligned(0, len, advise::placement_align(len), false, true) {
            Ok((base, _, _)) => {
                let first = COMMIT_STEP.min(len);
                // SAFETY: the start of the mapping just made.
                if let Err(e) = advise::retry(|| unsafe {
                    stats::bump(Counter::MetadataGrows);
                    sys::mprotect(base, first, sys::PROT_RW)
                }) {
                    let _ = unsafe { sys::munmap(base, len) };
                    return Err(NoMemory::Os(Syscall::Mprotect, e));
                }
                // Best effort, never a downgrade of the advice for users' hints: both keep
                // the arena from merging with a region's VMA, and without NOHUGEPAGE a
                // THP=always host could back sparse nodes with huge pages.
                // SAFETY: our own mapping.
                let _ = advise::retry(|| unsafe { sys::madvise(base, len, sys::MADV_NOHUGEPAGE) });
                stats::add(Counter::MetadataReservedBytes, len as u64);
                s.base = base;
                s.len = len;
                s.committed = first;
                ARENA.base.store(base, Ordering::Release);
                ARENA.committed.store(first, Ordering::Release);
                return Ok(());
            }
            Err(advise::MapAligned::Os(e)) => last = e,
            Err(advise::MapAligned::Overflow) => {}
        }
    }
    Err(NoMemory::Os(Syscall::Mmap, last))
}

/// Hand out one chunk (its link set to `NONE`). Resident free chunks first, then released
/// ones, then new address space (growing the read-write part if needed).
pub(crate) fn grab() -> Result<u32, NoMemory> {
    ARENA.lock.lock()?;
    // SAFETY: lock held.
    let r = unsafe { grab_locked(&mut *ARENA.state.get()) };
    ARENA.lock.unlock();
    if r.is_ok() {
        stats::add(Counter::MetadataBytes, chunk_bytes() as u64);
        if !NAMED.load(Ordering::Relaxed) && !NAMED.swap(true, Ordering::Relaxed) {
            // SAFETY: reading the fields set once at creation.
            let (base, len) = unsafe { ((*ARENA.state.get()).base, (*ARENA.state.get()).len) };
            crate::names::name(base, len, b"osmem state\0");
        }
    }
    r
}

unsafe fn grab_locked(s: &mut State) -> Result<u32, NoMemory> {
    create(s)?;
    let c = if s.resident != NONE {
        let c = s.resident;
        s.resident = *link(c);
        s.resident_n -= 1;
        c
    } else if s.released != NONE {
        let c = s.released;
        s.released = *link(c);
        c
    } else {
        let g = group();
        let mut c = s.bump;
        if c % g == 0 {
            c += 1; // the group's link chunk
        }
        let end = (c as usize + 1) * chunk_bytes();
        if end > s.len {
            return Err(NoMemory::Os(Syscall::Mprotect, Errno::ENOMEM));
        }
        if end > s.committed {
            let grow = (end - s.committed)
                .max(COMMIT_STEP)
                .min(s.len - s.committed);
            // Extends the read-write part: the kernel moves the boundary between the two
            // VMAs, so this adds no mapping even at vm.max_map_count.
            advise::retry(|| {
                stats::bump(Counter::MetadataGrows);
                sys::mprotect(s.base + s.committed, grow, sys::PROT_RW)
            })
            .map_err(|e| NoMemory::Os(Syscall::Mprotect, e))?;
            s.committed += grow;
            ARENA.committed.store(s.committed, Ordering::Release);
        }
        s.bump = c + 1;
        c
    };
    *link(c) = NONE;
    Ok(c)
}

/// Take back a list of chunks (linked through their links, ending in `NONE`). Keeps at most
/// [`RESIDENT_FREE_MAX`] free chunks resident and releases the rest to the kernel now, one
/// `MADV_DONTNEED` per run of adjacent chunks (a reservation's chunks are mostly adjacent).
/// `Err`: the arena's lock cannot be waited for (see [`NoMemory`]); the chunks are still the
/// caller's.
pub(crate) fn give_back(mut head: u32) -> Result<(), Held> {
    if head == NONE {
        return Ok(());
    }
    ARENA.lock.lock()?;
    let bytes = chunk_bytes();
    let mut n = 0u64;
    // The run of adjacent chunks waiting to be released: [lo, hi).
    let (mut lo, mut hi) = (0u32, 0u32);
    // SAFETY: lock held; the caller gave the chunks up.
    unsafe {
        let s = &mut *ARENA.state.get();
        let release = |s: &State, lo: u32, hi: u32| {
            if lo < hi {
                let _ = sys::madvise(
                    s.base + lo as usize * bytes,
                    (hi - lo) as usize * bytes,
                    sys::MADV_DONTNEED,
                );
                stats::bump(Counter::MetadataReleases);
            }
        };
        while head != NONE {
            let c = head;
            head = *link(c);
            n += 1;
            if s.resident_n < RESIDENT_FREE_MAX {
                *link(c) = s.resident;
                s.resident = c;
                s.resident_n += 1;
                continue;
            }
            *link(c) = s.released;
            s.released = c;
            if c == hi {
                hi += 1;
            } else if c + 1 == lo {
                lo = c;
            } else {
                release(s, lo, hi);
                (lo, hi) = (c, c + 1);
            }
        }
        release(s, lo, hi);
    }
    ARENA.lock.unlock();
    stats::sub(Counter::MetadataBytes, n * bytes as u64);
    Ok(())
}
