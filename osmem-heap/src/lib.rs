//! # osmem-heap — a page heap and scavenger on osmem
//!
//! The part of a language runtime that sits between its object allocator and the operating
//! system, as a library: the Go runtime's page allocator (`pageAlloc`, mpagealloc.go) and
//! scavenger (mgcscavenge.go), rebuilt in Rust on [osmem]'s public API. A runtime (or an
//! allocator) asks it for runs of contiguous pages and gives them back; the heap hands out
//! the lowest-addressed run that fits, found through a tree of free-run summaries rather than
//! a scan, merges what is freed, and returns free memory to the operating system
//! ("scavenges" it) to meet a goal — a memory limit, or what the program has in use plus a
//! margin — so the process's RSS comes down after a burst instead of staying at its peak.
//!
//! Releases go through osmem: in batches by default (one `process_madvise` per ≤ 1024 runs,
//! osmem falling back to one `madvise` per run where the kernel or a sandbox refuses it), or
//! one `madvise` per candidate in [`Mode::GoFaithful`]. Every allocation knows exactly
//! whether its pages may hold old data ([`Run::needzero`]), from what the kernel really did.
//!
//! ```
//! use osmem_heap::{Heap, HeapConfig};
//!
//! // At start: address space for the whole heap (nothing committed), the container's
//! // limit if it has one, and the background scavenger at 1% of all CPUs.
//! let heap = Heap::create(HeapConfig::new(64 << 30))?;
//! heap.set_memory_limit_from_cgroup();
//! let scavenger = heap.start_scavenger(0.01).expect("a thread");
//!
//! // A span for the object allocator: zero it only if it may hold old data.
//! let span = heap.alloc(8)?;
//! if span.needzero {
//!     unsafe { (span.addr as *mut u8).write_bytes(0, 8 * heap.page_size()) };
//! }
//!
//! // The collector sweeps it free and reports the end of its cycle with its next heap goal.
//! heap.free(span.addr, span.pages)?;
//! heap.cycle(128 << 20);
//!
//! // Go's `debug.FreeOSMemory()`: everything free goes back now.
//! heap.release_all();
//! println!("{:?}", heap.stats());
//!
//! scavenger.stop();
//! // SAFETY: the scavenger is stopped and nothing uses the heap any more.
//! unsafe { Heap::destroy(heap) };
//! # Ok::<(), osmem_heap::HeapError>(())
//! ```
//!
//! ## If you are writing…
//!
//! | you are writing | start here |
//! |---|---|
//! | a garbage-collected runtime's page heap | [`Heap::create`], [`Heap::alloc`] / [`Heap::free`] for spans, [`Run::needzero`] to skip zeroing, [`Heap::cycle`] at each GC end, [`Heap::start_scavenger`] |
//! | a global allocator | [`Heap::create`] into a static: creating a heap, allocating, freeing and releasing never touch the Rust heap, so a `GlobalAlloc` can be built on it (see [below](#a-global-allocator)) |
//! | a runtime under a container memory limit | [`Heap::set_memory_limit_from_cgroup`] (or [`Heap::set_memory_limit`]), [`HeapStats::mapped_ready_bytes`] against [`HeapStats::memory_limit_bytes`], [`HeapStats::sync_released_bytes`] |
//! | a comparison with Go | [`Mode::GoFaithful`], [`GoPacer`], and the names [below](#gos-names) |
//!
//! ## Pages, chunks and runs
//!
//! A **page** is the OS page ([`Heap::page_size`]; Go uses 8 KiB pages, two OS pages, which
//! makes every release decision coarser than the kernel's). A **run** is contiguous pages,
//! the unit of [`Heap::alloc`], [`Heap::free`] and of every release ([`Run`]). A **chunk** is
//! 512 pages (Go's `pallocChunkPages`): 2 MiB with 4 KiB pages, one transparent huge page,
//! so "never split a free huge page" is a rule about one chunk's bitmap. The heap's address
//! space is one osmem reservation of [`HeapConfig::max_bytes`], rounded up to whole chunks
//! and aligned to a chunk; it grows into it from the bottom, at least 4 chunks at a time.
//!
//! ## The state of a page
//!
//! | page | meaning | osmem state | the kernel holds | the next allocation of it |
//! |---|---|---|---|---|
//! | in use | allocated and not freed | Ready | what the program touched | — |
//! | free | freed, not released yet | Ready | what was touched, old data included | `needzero` |
//! | released | given back to the OS, or never used since the heap grew into it | Prepared | nothing | reads zero |
//!
//! "Held" memory (Go's `mappedReady`, [`HeapStats::mapped_ready_bytes`]) is in use plus free:
//! what the process may have resident for the heap. A release turns free pages into released
//! ones (osmem's `unused` with `MADV_DONTNEED`: they read zero afterwards); an allocation that
//! takes released pages makes them Ready again (osmem's `used`: no system call unless
//! osmem's knobs ask for one). While the kernel releases a run, the heap marks it in use so
//! that nothing allocates it meanwhile; [`Heap::free`] of such pages is refused as a double
//! free.
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
//! ## What it costs
//!
//! - **Metadata**: per chunk, three 64-byte bitmaps (in use, released, being released), its
//!   use counts and a 12-byte summary of its free pages: 220 bytes per chunk (2 MiB with
//!   4 KiB pages), about 0.01% of the memory described, in a mapping of its own (never the Rust heap). Above the
//!   chunks, a tree of summaries with 64 children per node (Go's radix tree of `pallocSum`):
//!   five levels cover a TiB. The metadata's address space is reserved with the heap, but its
//!   pages become resident only for chunks the heap has grown into: reserving a TiB costs no
//!   memory until it is used.
//! - **Allocation and free**: one descent of the summary tree (at most 64 summaries per
//!   level), then the run's bits and its path of summaries updated; no scan over the heap.
//!   Allocating released pages adds osmem's `used` (normally no system call), made with the
//!   lock dropped; growing the heap maps new chunks with one `mprotect`.
//! - **Releases**: the candidates are collected under the lock, highest address first (the
//!   search starts at the highest chunk that may hold one, so a release does not rescan
//!   what earlier ones emptied), then the lock is dropped for the system calls: one
//!   `process_madvise` per ≤ 1024 runs by default. Every such call ends in one TLB flush
//!   for all its runs, where a `madvise` per run costs one flush — and, with other threads
//!   of the process running, an interrupt to every CPU they run on — per run.
//! - **Locking**: one spin lock per heap guards the bookkeeping, held for the bookkeeping
//!   only and never across a system call except the `mprotect` that grows the heap (as Go's
//!   heap lock is held around `sysMap` in `mheap.grow`), so a fork never sees half-grown
//!   chunks.
//!
//! ## Threads, fork and signals
//!
//! One spin lock guards the bookkeeping; system calls run with it released, on pages the
//! heap has hidden meanwhile (as Go drops the heap lock around `sysUnused`). A child made by
//! `fork()` at any instant, from any thread, finds every heap consistent and usable: every
//! heap's lock is held across `fork` (`pthread_atfork`, as glibc does for malloc) once no
//! other thread has an osmem call on that heap's memory in flight, so no run is left hidden
//! in the child (osmem's own handlers do the same for its reservations). Runs that a thread
//! of the parent was allocating or freeing at that instant stay in use in the child: their
//! owner does not exist there. At most 64 heaps exist at once.
//!
//! A fork from a signal handler that interrupted this heap on the forking thread does not
//! deadlock: the handlers skip what that thread holds (its call finishes in both processes
//! when the handler returns). The heap's functions are not async-signal-safe, but they never
//! wait for the thread they interrupted: called from a signal handler on a thread inside this
//! heap's bookkeeping, [`Heap::alloc`] and [`Heap::free`] return [`HeapError::Busy`], the
//! releases release nothing, and the others do nothing (or return zeros). Children made
//! without fork handlers (`_Fork`, `vfork`, `clone`) must not use the heap.
//!
//! ## Safety
//!
//! The heap hands out addresses, not references: reading and writing a run is the caller's
//! `unsafe` code, and everything else is safe. [`Heap::free`] checks what it is given — a
//! run not entirely in use (a double free, a run never allocated, a run the scavenger is
//! releasing) is refused with a [`HeapError`] and changes nothing — but cannot know whether
//! the program still uses the memory: after `free`, the pages may be released (their
//! contents become zeros) or handed to the next [`Heap::alloc`] at any time, so nothing may
//! read or write them any more. The pages stay mapped until the heap is destroyed, so a stray
//! access reads zeros or someone else's data rather than faulting (unless osmem's
//! `harddecommit` knob makes released pages inaccessible).
//!
//! [`Heap::destroy`] is `unsafe` because [`Heap::create`] returns a `&'static Heap` that
//! lives inside the heap's own metadata mapping: `destroy` unmaps that mapping and every
//! page of the heap, and no safe API can invalidate a `'static` reference. The caller
//! promises that nothing uses the heap or any memory allocated from it afterwards — stop the
//! [`Scavenger`] first.
//!
//! ## Knobs
//!
//! - [`HeapConfig`]: the address space to reserve ([`HeapConfig::new`]), where to place it
//!   ([`HeapConfig::hint`]) and how to release ([`HeapConfig::mode`], see [`Mode`]).
//! - The memory limit: [`Heap::set_memory_limit`] (0: none), or the limit of the process's
//!   cgroup ([`Heap::set_memory_limit_from_cgroup`]; [`cgroup_memory_limit`] reads it: cgroup
//!   v2 `memory.max` / `memory.high`, or v1 `memory.limit_in_bytes`, the smallest along the
//!   hierarchy). A cgroup limits the whole process, so a runtime with much memory outside
//!   this heap sets a lower limit itself.
//! - The retain goal: the heap goals the runtime reports with [`Heap::cycle`].
//! - The scavenger's share of the CPUs ([`Heap::start_scavenger`]), or none at all: the
//!   runtime calls [`Heap::scavenge`] with a byte budget when it likes.
//! - osmem's process-wide knobs (the `OSMEM` environment variable, [`osmem::configure`])
//!   apply to the heap's memory, except the release advice: the heap always releases with
//!   `MADV_DONTNEED`, since `needzero` and RSS must be exact. `harddecommit=1` makes released
//!   pages inaccessible until allocated again; `thp=never`, set before [`Heap::create`],
//!   keeps transparent huge pages off the heap (worth it under a tight memory limit where
//!   THP is `always`: the kernel would back a first touch with a whole 2 MiB page).
//!
//! ## A global allocator
//!
//! Nothing in [`Heap::create`], [`Heap::alloc`], [`Heap::free`] or the releases allocates,
//! so a `GlobalAlloc` can sit on the heap (here every allocation rounded up to whole pages;
//! a real allocator carves small objects out of spans):
//!
//! ```
//! use osmem_heap::{Heap, HeapConfig};
//! use std::alloc::{GlobalAlloc, Layout};
//! use std::sync::OnceLock;
//!
//! struct PageAlloc(OnceLock<&'static Heap>);
//!
//! impl PageAlloc {
//!     fn heap(&self) -> &'static Heap {
//!         self.0.get_or_init(|| Heap::create(HeapConfig::new(1 << 30)).expect("a heap"))
//!     }
//!     fn pages(&self, l: Layout) -> usize {
//!         l.size().max(1).div_ceil(self.heap().page_size())
//!     }
//! }
//!
//! // SAFETY: runs are page-aligned and exclusive until freed; larger alignments are refused.
//! unsafe impl GlobalAlloc for PageAlloc {
//!     unsafe fn alloc(&self, l: Layout) -> *mut u8 {
//!         if l.align() > self.heap().page_size() {
//!             return std::ptr::null_mut();
//!         }
//!         match self.heap().alloc(self.pages(l)) {
//!             Ok(run) => run.addr as *mut u8,
//!             Err(_) => std::ptr::null_mut(),
//!         }
//!     }
//!     unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
//!         self.heap().free(p as usize, self.pages(l)).expect("a run we handed out");
//!     }
//! }
//!
//! // With `#[global_allocator] static A: PageAlloc = PageAlloc(OnceLock::new());` the whole
//! // program would allocate here; called directly for the example:
//! let a = PageAlloc(OnceLock::new());
//! let l = Layout::from_size_align(10_000, 8).unwrap();
//! let p = unsafe { a.alloc(l) };
//! assert!(!p.is_null());
//! unsafe { a.dealloc(p, l) };
//! ```
//!
//! ## Go's names
//!
//! | Go runtime | here |
//! |---|---|
//! | `pageAlloc` (`alloc`, `free`, `find`) | [`Heap`] ([`Heap::alloc`], [`Heap::free`]) |
//! | `pallocChunkPages`, `pallocBits`, `pallocSum` | a chunk of 512 pages, its bitmaps, its summary |
//! | `sysMap`, `sysUsed`, `sysUnused` | osmem's [`map`](osmem::Reservation::map), [`used`](osmem::Reservation::used), [`unused`](osmem::Reservation::unused) |
//! | `mappedReady` | [`HeapStats::mapped_ready_bytes`] |
//! | the background scavenger (`bgscavenge`), `scavengePercent` | [`Heap::start_scavenger`] |
//! | the scavenger's PI controller | [`GoPacer`] |
//! | `gcPaceScavenger`, `retainExtraPercent` | [`Heap::cycle`], the retain goal |
//! | `memoryLimitGoal` (`reduceExtraPercent`) | 95% of [`Heap::memory_limit`] |
//! | the scavenge assist in `allocSpan` | the synchronous release for the limit ([`HeapStats::sync_released_bytes`]) |
//! | `scavChunkHiOccFrac` | the density gate (see [`Mode`]) |
//! | `debug.FreeOSMemory` | [`Heap::release_all`] |
//! | `GOMEMLIMIT`, `SetMemoryLimit` | [`Heap::set_memory_limit`] |
//!
//! ## Features
//!
//! `std` (default): the background scavenger thread ([`Heap::start_scavenger`]),
//! `std::error::Error` for [`HeapError`] and its conversion to `std::io::Error`. Without it
//! the crate is `no_std` and drives release through [`Heap::scavenge`] / [`Heap::release`].
//!
//! ## Platforms
//!
//! Linux only, as osmem: the heap is made of osmem reservations, and its releases, its fork
//! handling and the cgroup limit are Linux's. The page size is the OS's (a chunk is always
//! 512 pages). Building for another OS fails at once with a message saying so.
//!
//! MSRV: Rust 1.77, as osmem.

#![no_std]
#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "osmem-heap supports Linux only: it is built on osmem, which manages memory with Linux's \
     mmap, madvise and process_madvise"
);

#[cfg(feature = "std")]
extern crate std;

mod bits;
mod cgroup;
mod heap;
mod lock;
mod pace;
#[cfg(feature = "std")]
mod scavenger;
mod wake;

pub use cgroup::{cgroup_memory_limit, CgroupLimit, CgroupSource};
pub use heap::{Heap, HeapConfig, Released, Run};
pub use pace::{BudgetPacer, GoPacer, BUDGET_WINDOW_NS};
#[cfg(feature = "std")]
pub use scavenger::Scavenger;

/// How free memory goes back to the OS. Chosen when the heap is made
/// ([`HeapConfig::mode`]).
///
/// Both skip dense chunks (≥ 96.875% of a chunk's pages in use, Go's `scavChunkHiOccFrac`)
/// when the scavenger works toward its goal ([`Heap::scavenge`], the background thread): a
/// dense chunk is likely to be allocated from again soon, and its few free pages are not
/// worth a system call. An explicit [`Heap::release`] / [`Heap::release_all`] and the
/// synchronous release for the memory limit are forced and take dense chunks too.
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
    /// cycles being [`Heap::cycle`] calls); paced by Go's controller ([`GoPacer`]). Kept as
    /// the baseline to measure the default against, and for runtimes that want Go's exact
    /// behaviour.
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
#[must_use = "a snapshot has no other effect"]
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
/// New variants may be added: match with a `_` arm.
///
/// ```
/// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
/// assert_eq!(h.alloc(0), Err(osmem_heap::HeapError::ZeroPages));
/// assert!(matches!(h.free(1, 1), Err(osmem_heap::HeapError::Unaligned { .. })));
/// # unsafe { osmem_heap::Heap::destroy(h) };
/// # Ok::<(), osmem_heap::HeapError>(())
/// ```
///
/// # As `std::io::Error`
///
/// With the `std` feature, `?` converts a `HeapError` into a [`std::io::Error`] that carries
/// the `HeapError` itself (its message names the operation; [`get_ref`](std::io::Error::get_ref)
/// and `downcast_ref` give it back, with the errno of a failed system call), of a fitting
/// kind: the standard library's kind for a failed system call's errno, `InvalidInput` for a
/// bad argument, `OutOfMemory` for a full heap, `Unsupported` for what the kernel lacks,
/// `Other` otherwise.
///
/// ```
/// use std::io::ErrorKind;
/// use osmem_heap::{Heap, HeapConfig, HeapError};
///
/// fn grow(h: &Heap, pages: usize) -> std::io::Result<usize> {
///     Ok(h.alloc(pages)?.addr) // `?` converts
/// }
///
/// let h = Heap::create(HeapConfig::new(8 << 20))?;
/// let e = grow(h, 0).unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::InvalidInput);
/// let inner = e.get_ref().and_then(|i| i.downcast_ref::<HeapError>());
/// assert_eq!(inner, Some(&HeapError::ZeroPages));
/// let all = h.range().len() / h.page_size();
/// grow(h, all)?; // the whole heap: one more page does not fit
/// assert_eq!(grow(h, 1).unwrap_err().kind(), ErrorKind::OutOfMemory);
/// # unsafe { Heap::destroy(h) };
/// # Ok::<(), std::io::Error>(())
/// ```
#[must_use = "an error that is dropped is lost"]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Called from a signal handler that interrupted this heap's bookkeeping on the same
    /// thread: the heap's lock is held by the code the handler interrupted, which cannot go on
    /// until the handler returns. Nothing changed.
    Busy,
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
            HeapError::Os(e) => write!(f, "{e}"),
            HeapError::TooManyHeaps => write!(f, "64 heaps already live in this process"),
            HeapError::Busy => write!(
                f,
                "the heap was re-entered from a signal handler on a thread inside it; nothing changed"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HeapError {}

/// See [`HeapError`'s documentation](HeapError#as-stdioerror): the `io::Error` carries the
/// `HeapError`.
///
/// ```
/// let e = std::io::Error::from(osmem_heap::HeapError::TooManyHeaps);
/// assert_eq!(e.kind(), std::io::ErrorKind::Other);
/// ```
#[cfg(feature = "std")]
impl From<HeapError> for std::io::Error {
    fn from(e: HeapError) -> std::io::Error {
        use std::io::ErrorKind;
        let kind = match e {
            HeapError::Os(os) => match os.errno() {
                Some(errno) => std::io::Error::from_raw_os_error(errno).kind(),
                None => match os {
                    osmem::Error::Unsupported { .. } => ErrorKind::Unsupported,
                    osmem::Error::Unaligned { .. }
                    | osmem::Error::Alignment { .. }
                    | osmem::Error::ZeroLength { .. }
                    | osmem::Error::Overflow { .. }
                    | osmem::Error::OutOfRange { .. } => ErrorKind::InvalidInput,
                    _ => ErrorKind::Other,
                },
            },
            HeapError::ZeroPages
            | HeapError::TooLarge { .. }
            | HeapError::Unaligned { .. }
            | HeapError::NotInHeap { .. }
            | HeapError::NotAllocated { .. } => ErrorKind::InvalidInput,
            HeapError::OutOfMemory { .. } => ErrorKind::OutOfMemory,
            HeapError::TooManyHeaps => ErrorKind::Other,
            HeapError::Busy => ErrorKind::WouldBlock,
        };
        std::io::Error::new(kind, e)
    }
}

/// The package README's code, compiled and run as a doc test so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
