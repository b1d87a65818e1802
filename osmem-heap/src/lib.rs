//! # osmem-heap — a page heap and scavenger on osmem
//!
//! What the Go runtime builds directly on `sysUnused` (mpagealloc.go, mpallocbits.go,
//! mgcscavenge.go), as a reusable part: pages allocated in contiguous runs, lowest address
//! first, found through a tree of free-run summaries rather than a scan; freed by run and
//! merged; and free memory returned to the operating system ("scavenged") by run, so a
//! runtime's RSS comes down after a burst instead of staying at its peak.
//!
//! Built on osmem's public API only: the heap's address space is one osmem reservation,
//! released pages go back through osmem's chains (in batches by default: one
//! `process_madvise` per ≤ 1024 runs, osmem falling back to `madvise` where the kernel or a
//! sandbox refuses it; or one `madvise` per candidate in [`Mode::GoFaithful`]), and every
//! allocation knows exactly whether its pages may hold old data ([`Run::needzero`]), from
//! what the release really did.
//!
//! ## Pages and chunks
//!
//! Pages are the OS page (Go uses 8 KiB pages: two OS pages, which makes every release
//! decision coarser than the kernel's). A chunk is 512 pages — 2 MiB with 4 KiB pages, one
//! transparent huge page — so "never split a free huge page" is a rule about one chunk's
//! bitmap, and each chunk's metadata (two 64-byte bitmaps, a use count and a 12-byte
//! summary) is ~0.007% of the memory it describes. Metadata (and the [`Heap`] itself) lives
//! in memory osmem maps for the heap, never on the Rust heap, and only the chunks the heap
//! has grown into are ever touched: reserving a TiB costs nothing until it is used. An
//! allocator can use all of this from inside its `GlobalAlloc`.
//!
//! ## Goals and pacing
//!
//! "In use" is the pages allocated and not yet freed; "held" (Go's `mappedReady`) is in use
//! plus free pages not yet released. The scavenger releases free pages, highest addresses
//! first, until held memory meets the tighter of two goals, as Go's does:
//!
//! - the **memory limit** ([`Heap::set_memory_limit`], or from the cgroup with
//!   [`Heap::set_memory_limit_from_cgroup`]): held ≤ 95% of it; an allocation that would
//!   take held memory over the limit releases the excess synchronously before it returns;
//! - the **retain goal**: Go's `in-use × heapGoal / lastHeapGoal + 10%`, recomputed when the
//!   runtime reports a GC end with [`Heap::cycle`]; without cycles, in-use × 1.1.
//!
//! The background thread ([`Heap::start_scavenger`], `std` feature) uses 1% of all CPUs by
//! default, counted as Go counts it. The default [`BudgetPacer`] lets that budget accrue
//! over a 10 s window and spends it at once when memory is to be released (the same average
//! as Go's, without Go's seconds-long ramp-up). The default thread works in episodes: one
//! starts when the excess over the goal reaches a quarter of the memory held (or any excess
//! of 2 MiB or more has lasted 5 s) and releases the excess it started with, in a few
//! `process_madvise` calls; under steady churn the heap therefore sits up to a quarter above
//! its goal instead of releasing memory the churn allocates again at once. Go-faithful mode
//! uses Go's [`GoPacer`] and, as Go, parks after a step that released nothing until the
//! next [`Heap::cycle`].
//! Runtimes that schedule their own work call [`Heap::scavenge`] with a byte budget.
//! [`Heap::release_all`] is Go's `debug.FreeOSMemory` without the GC.
//!
//! ## Threads and fork
//!
//! One spin lock guards the bookkeeping; system calls run with it released, on pages the
//! heap has hidden meanwhile (as Go drops the heap lock around `sysUnused`). A child forked
//! while another thread allocates does not deadlock: every heap's lock is held across
//! `fork` (`pthread_atfork`, as glibc does for malloc), and a fork waits for release calls in
//! flight. At most 64 heaps exist at once.
//!
//! ## Features
//!
//! `std` (default): the background scavenger thread and `std::error::Error` for
//! [`HeapError`]. Without it the crate is `no_std` and drives release through
//! [`Heap::scavenge`] / [`Heap::release`].
//!
//! MSRV: Rust 1.77, as osmem.

#![no_std]
#![cfg(target_os = "linux")]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

mod bits;
mod cgroup;
mod heap;
mod lock;
mod pace;
#[cfg(feature = "std")]
mod scavenger;

pub use cgroup::{cgroup_memory_limit, CgroupLimit, CgroupSource};
pub use heap::{Heap, HeapConfig, Released, Run};
pub use pace::{BudgetPacer, GoPacer, BUDGET_WINDOW_NS};
#[cfg(feature = "std")]
pub use scavenger::Scavenger;

/// How free memory goes back to the OS.
///
/// Both skip dense chunks (≥ 96.875% of a chunk's pages in use, Go's `scavChunkHiOccFrac`)
/// when the scavenger works toward its goal ([`Heap::scavenge`], the background thread); an
/// explicit [`Heap::release`] / [`Heap::release_all`] and the synchronous release for the
/// memory limit are forced and take dense chunks too.
///
/// ```
/// let h = osmem_heap::Heap::create(
///     osmem_heap::HeapConfig::new(64 << 20).mode(osmem_heap::Mode::GoFaithful),
/// )?;
/// assert_eq!(h.mode(), osmem_heap::Mode::GoFaithful);
/// # unsafe { osmem_heap::Heap::destroy(h) };
/// # Ok::<(), osmem_heap::HeapError>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// The default. Releases the highest free runs, up to 1024 per call (64 in the
    /// synchronous release inside an allocation), through osmem's `Batch`: one
    /// `process_madvise` (osmem falls back to one `madvise` per run where the kernel lacks
    /// it). A chunk entirely free and unreleased (one huge page) goes out whole,
    /// as in Go. Density gate on the present: a chunk dense now is skipped.
    Batched,
    /// Go's scavenger: one candidate per step (a 64 KiB quantum from the top of the highest
    /// free run, grown to the whole huge page when all of it is free and unreleased), one
    /// `madvise` each; the density gate with Go's history (dense in this GC cycle or the last,
    /// cycles being [`Heap::cycle`] calls); paced by Go's controller. The in-run baseline
    /// for every claim that the default does better.
    GoFaithful,
}

/// The heap's figures (Go's `/memory/classes/heap/*` metrics).
///
/// ```
/// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
/// let s = h.stats();
/// assert_eq!(s.mapped_bytes, s.in_use_bytes + s.free_bytes);
/// # unsafe { osmem_heap::Heap::destroy(h) };
/// # Ok::<(), osmem_heap::HeapError>(())
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeapStats {
    /// Address space the heap has grown into (mapped chunks).
    pub mapped_bytes: usize,
    /// Pages handed out and not freed.
    pub in_use_bytes: usize,
    /// Pages free (released or not).
    pub free_bytes: usize,
    /// Free pages released to the OS (or never used since the heap grew): no memory behind.
    pub released_bytes: usize,
    /// Memory the heap may hold: mapped minus released (Go's `mappedReady`).
    pub mapped_ready_bytes: usize,
    /// Bytes released since the heap was made.
    pub released_total_bytes: u64,
    /// System calls the releases took.
    pub release_calls: u64,
    /// Runs released.
    pub release_runs: u64,
    /// Of `released_total_bytes`, released synchronously on allocation (the memory limit).
    pub sync_released_bytes: u64,
    /// Wall time allocations spent releasing synchronously, ns (Go's scavenge assist).
    pub sync_work_ns: u64,
    /// The memory limit (0: none).
    pub memory_limit_bytes: usize,
    /// Bytes the background scavenger released.
    pub background_released_bytes: u64,
    /// Wall time the background scavenger spent releasing, ns.
    pub background_work_ns: u64,
}

/// Everything that can go wrong. Refusals change nothing.
///
/// ```
/// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
/// assert_eq!(h.alloc(0), Err(osmem_heap::HeapError::ZeroPages));
/// assert!(matches!(h.free(1, 1), Err(osmem_heap::HeapError::Unaligned { .. })));
/// # unsafe { osmem_heap::Heap::destroy(h) };
/// # Ok::<(), osmem_heap::HeapError>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// Zero pages asked for (or a zero-sized heap).
    ZeroPages,
    /// More pages than the heap (or the address space) can hold.
    TooLarge {
        /// The bytes asked for.
        bytes: usize,
    },
    /// The heap is full: no run of `pages` free pages, and no room to grow.
    OutOfMemory {
        /// Pages asked for.
        pages: usize,
        /// The heap's reserved size.
        max_bytes: usize,
    },
    /// An address not on a page boundary.
    Unaligned {
        /// The address.
        addr: usize,
    },
    /// A run not inside the heap.
    NotInHeap {
        /// First byte.
        addr: usize,
        /// Pages.
        pages: usize,
    },
    /// A run not entirely in use (a double free, or never allocated): nothing was freed.
    NotAllocated {
        /// First byte.
        addr: usize,
        /// Pages.
        pages: usize,
    },
    /// osmem could not do what the heap needed (map, use).
    Os(osmem::Error),
    /// Already 64 heaps live in this process (each one's lock is held across `fork`, from a
    /// fixed table: no allocation).
    TooManyHeaps,
}

impl core::fmt::Display for HeapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HeapError::ZeroPages => write!(f, "zero pages"),
            HeapError::TooLarge { bytes } => {
                write!(f, "{bytes} bytes is more than the heap can hold")
            }
            HeapError::OutOfMemory { pages, max_bytes } => {
                write!(
                    f,
                    "no run of {pages} free pages in a heap of {max_bytes} bytes"
                )
            }
            HeapError::Unaligned { addr } => write!(f, "{addr:#x} is not page-aligned"),
            HeapError::NotInHeap { addr, pages } => {
                write!(f, "{pages} pages at {addr:#x} are not inside the heap")
            }
            HeapError::NotAllocated { addr, pages } => {
                write!(
                    f,
                    "{pages} pages at {addr:#x} are not all in use (double free?)"
                )
            }
            HeapError::Os(e) => write!(f, "osmem: {e}"),
            HeapError::TooManyHeaps => write!(f, "64 heaps already live in this process"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HeapError {}
