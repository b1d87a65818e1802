//! # osmem — the OS memory layer for runtimes, GCs, allocators and sandboxes on Linux
//!
//! osmem is the memory system of the Go runtime (its `mem.go` and `mem_linux.go`: sysReserve,
//! sysMap, sysUsed, sysUnused, sysFault, sysFree, sysHugePage…) as a Rust library, for anything
//! that manages its own address space: a language runtime or garbage collector, a memory
//! allocator, a WebAssembly-style sandbox. You reserve address space once, then move page
//! ranges of it between states — usable, given back to the kernel, trapping — with one call
//! each. For every move osmem uses the cheapest primitive the running kernel offers, falls back
//! errno by errno when a primitive is missing or refused (and tells you which one ran), keeps
//! exact per-state byte accounting, and counts every system call, fallback and downgrade in
//! [`stats()`].
//!
//! Nothing on any operation path allocates from the heap or needs std, so an allocator can
//! call osmem from inside its own `GlobalAlloc`. The crate is `#![no_std]`.
//!
//! ```
//! use osmem::{Reservation, State};
//!
//! let ps = osmem::page_size();
//! let r = Reservation::reserve(1024 * ps)?; // address space only: no memory, access traps
//! r.map(0, 8 * ps)?;                         // Reserved → Prepared
//! r.used(0, 8 * ps)?;                        // Prepared → Ready: read and write it
//! unsafe { r.as_ptr().write_bytes(0xAB, 8 * ps) };
//! // SAFETY: nothing refers to these pages any more.
//! let u = unsafe { r.unused(0, 8 * ps)? };   // Ready → Prepared: the kernel takes the pages
//! assert_eq!(r.state(0), Some(State::Prepared));
//! assert!(osmem::stats().prepared_bytes >= 8 * ps as u64);
//! r.used(0, 8 * ps)?;                        // Ready again
//! if u.zeroed {
//!     assert_eq!(unsafe { r.as_ptr().read() }, 0); // no need to clear it
//! }
//! drop(r);                                   // munmap
//! # Ok::<(), osmem::Error>(())
//! ```
//!
//! ## The state machine
//!
//! Every page of a [`Reservation`] is in one [`State`]:
//!
//! - **Reserved**: address space owned by the reservation, `PROT_NONE`, no memory; any access
//!   traps.
//! - **Prepared**: meant to have no physical memory behind it, and cheap to make Ready; its
//!   contents are undefined until then.
//! - **Ready**: safe to read and write.
//! - **Faulted**: was Ready; [`fault`](Reservation::fault) dropped its pages and made any
//!   access trap. (Go calls this Reserved again; osmem keeps it apart because making it usable
//!   again depends on how it was faulted.)
//!
//! Outside any reservation memory is in the state **None**. The transitions, the Go function
//! each one corresponds to, and the system calls osmem makes for it (the first one that works
//! here, in order; `→` is a fallback to the next):
//!
//! | transition | call | Go | on Linux |
//! |---|---|---|---|
//! | None → Ready | [`Reservation::alloc`] | sysAlloc | `mmap(RW)` |
//! | None → Reserved | [`Reservation::reserve`], [`Reservation::reserve_aligned`], [`Reservation::reserve_at`], [`Reservation::reserve_fixed`] | sysReserve, sysReserveAligned | `mmap(PROT_NONE, MAP_NORESERVE)` (fixed: `MAP_FIXED_NOREPLACE`) |
//! | Reserved/Faulted → Prepared | [`Reservation::map`] | sysMap | `mprotect(RW)` (guard-faulted pages: `MADV_GUARD_REMOVE`) → `mmap(RW, MAP_FIXED)` |
//! | Prepared → Ready | [`Reservation::used`] | sysUsed | nothing (harddecommit: `mprotect(RW)`; prefault: `MADV_POPULATE_WRITE`; after `MADV_FREE`: one write per page) |
//! | Ready → Prepared | [`Reservation::unused`] | sysUnused | `MADV_FREE` (if asked for) → `MADV_DONTNEED` (mlocked: `MADV_DONTNEED_LOCKED`) → `mmap(RW, MAP_FIXED)` |
//! | Ready → Faulted | [`Reservation::fault`] | sysFault | guard markers → `MADV_DONTNEED` + `mprotect(NONE)` → `mmap(NONE, MAP_FIXED)` |
//! | any → None | drop the [`Reservation`] | sysFree | `munmap` |
//!
//! Transitions take `(offset, len)` within the reservation, page-aligned. A page in a state a
//! transition does not start from is refused with [`Error::WrongState`] *before* any system
//! call, and every input error ([`Error`] says which) leaves everything as it was; when a
//! system call fails, [`Error::changed`] says whether anything in the range changed. `used` also
//! accepts Ready pages in its range (left as they are), as Go's sysUsed does. What a
//! release or a fault really did is returned: [`Unused`] (which link ran, whether the range is
//! known to read zero, whether the kernel dropped the pages) and [`Faulted`] (which link ran,
//! whether the range traps).
//!
//! What the kernel really holds for a range (present, the zero page, swapped, guard-marked,
//! nothing) is one call away: [`Reservation::residency`] and [`Reservation::resident_bytes`],
//! asked of the kernel (the `PAGEMAP_SCAN` ioctl, pagemap reads or `mincore`, whichever is
//! fastest here), never of osmem's bookkeeping.
//!
//! ## If you are writing X, start here
//!
//! | if you are writing… | start with |
//! |---|---|
//! | a garbage-collected heap | [`Reservation::reserve_aligned`] for the heap's address space; [`map`](Reservation::map) + [`used`](Reservation::used) as it grows; [`unused`](Reservation::unused) to give free pages back (and [`Unused::zeroed`] to skip clearing them when they are reused); [`hugepage`](Reservation::hugepage) / [`collapse`](Reservation::collapse); [`stats()`]. The `osmem-heap` crate is a page heap and background scavenger built this way. |
//! | a memory allocator's purge | [`Reservation::alloc`] (or `reserve` + `map` + `used`); a [`Batch`] of [`BatchKind::Unused`] to purge many scattered runs with one `process_madvise`; [`UnusedAdvice`] `Free` or `DontNeed`, process-wide ([`configure`]) or per arena ([`Reservation::with_config`]). Nothing allocates, so this works inside a `GlobalAlloc`. |
//! | a wasm-style linear memory or a sandbox with guard regions | [`Reservation::reserve`] for the whole span (memory and guard region: it costs no memory); [`map`](Reservation::map) + [`used`](Reservation::used) to grow; [`fault`](Reservation::fault) to shrink or to make a guard region, with guard markers where the kernel has them (no VMA split, so thousands of guards never meet `vm.max_map_count`; [`Faulted::traps`] says whether it traps); [`Reservation::reserve_fixed`] for a fixed layout. In a pool, `reserve` + drop is one `mmap` and one `munmap`, and a reservation whose pages are in one state, or in one run inside another (memory in use, then the guard region), needs no metadata. |
//! | tests that check what the kernel holds | [`Reservation::residency`] and [`Reservation::resident_bytes`] (the kernel's answer, not osmem's); checked mode ([`Config::checked`], or the `checked` cargo feature); [`stats()`] to count system calls and fallbacks; [`probe()`] for what this kernel can do. The `osmem-testkit` crate reads `/proc/self/smaps` and `maps`, probes addresses from a forked child and injects failures with seccomp. |
//!
//! ## Safety
//!
//! The operations that discard memory are `unsafe`: [`Reservation::unused`] and
//! [`Reservation::fault`] (with their `_with` forms), and [`Batch::push`] / [`Batch::flush`],
//! which queue and run them. After `unused` the range's contents are gone (it reads zero, or after
//! `MADV_FREE` its pages may turn to zero at any later moment); after `fault` any access raises
//! `SIGSEGV`. A reference into such a range that is still in use would see memory change under
//! it, or fault, so the caller promises that nothing refers to the range and no thread accesses
//! it until it is made Ready again.
//!
//! Everything else is safe, and no safe call can cause undefined behaviour: `map`, `used` and
//! the huge-page hints never destroy data that is still reachable (`map` only starts from
//! Reserved or Faulted pages, whose contents are already gone; `used` leaves Ready pages as they
//! are), and every transition checks the state of every page before any system call. Reading
//! or writing the memory itself goes through the raw pointer [`Reservation::as_ptr`], which is
//! `unsafe` as raw pointers are; dropping a reservation unmaps it, so such pointers must not
//! outlive it.
//!
//! A [`Reservation`] is `Send` and `Sync`, and its transitions take `&self`: threads may
//! transition **disjoint** ranges at the same time. Each transition claims its pages before any
//! system call, so two that overlap never both act on a page: one that finds a page held by
//! the other gets [`Error::Busy`] and changes nothing.
//!
//! ## Threads, fork and signals
//!
//! A runtime forks at any instant, from any thread, and takes signals whose handlers look its
//! memory up. What osmem guarantees:
//!
//! **Threads.** A transition *claims* its pages (marks them held, in a few dozen instructions
//! under the reservation's spin lock), makes its system calls with no lock held, then
//! *settles* them (records their new state, again briefly under the lock). Transitions of
//! disjoint ranges run in parallel, their system calls included; a transition meeting a page
//! another one holds gets [`Error::Busy`] at once. Nothing on these paths allocates, and
//! nothing waits except for another thread's few-dozen-instruction section of the same
//! reservation's lock.
//!
//! **fork.** osmem registers `pthread_atfork` handlers (as glibc does for malloc). Before the
//! fork they stop new claims, wait for every transition another thread has in flight to
//! settle, and hold every reservation's lock and osmem's metadata locks across the fork: a
//! child made by `fork()` at any instant, from any thread, finds every reservation consistent
//! — each transition in flight either done or not begun, no page held, no lock held by a
//! thread it does not have — and the parent goes on unaffected. A fork waits no longer than
//! the longest transition in flight (and a transition that starts meanwhile waits for the fork).
//! Two threads that fork at once fork one after the other.
//!
//! **fork from a signal handler** that interrupted osmem on the same thread: the handlers
//! wait only for *other* threads. What the interrupted call holds stays held across the fork;
//! in the child (and in the parent) the interrupted call finishes when the handler returns, on
//! that process's own memory. Until then, in the child, its pages read as their state before
//! it and refuse other transitions with `Busy`, and if it was interrupted inside a
//! reservation's lock section, transitions on that reservation answer `Busy` and another
//! thread's transition that must settle there hands its settle to it (it runs them when it
//! lets go of the lock, in both processes). A handler that forks must return for this to
//! happen (one that leaves by `longjmp` leaves those pages held).
//!
//! **Children made without the handlers.** `vfork` and `posix_spawn` children share the
//! parent's memory until they exec: they must not call osmem. A child made by `_Fork` or a raw
//! `clone` (no handlers) may inherit a transition another thread had in flight: its pages
//! read as their state before it and answer `Busy` for ever; a lock another thread held at
//! that instant is recognised as orphaned (its holder's process is not the child), and calls
//! on that reservation answer `Busy` instead of waiting. Nothing hangs; reads always answer.
//! Use `fork()` if the child must use osmem's reservations fully.
//!
//! **Signal handlers.** Two kinds of calls are async-signal-safe:
//! - *Reads that never wait*: [`Reservation::state`], [`lookup`] (the reservation containing
//!   an address, its range and that page's state, process-wide: a `SIGSEGV` handler needs no
//!   registry of its own), [`ReservationId::state`] and [`ReservationId::span`],
//!   [`Reservation::bytes_in`], [`stats()`], [`current_thread`]. Readers take no lock: they
//!   walk the page-state map and check a sequence counter. A read that interrupts a transition
//!   on its own thread answers each page's state before that transition or after it, never
//!   another, and at once.
//! - *Transitions callable from a handler*: `map`, `used`, `unused` and `fault` of a
//!   [`Reservation`] or of a [`ReservationId`] (which [`lookup`] gives: a handler that knows
//!   only a faulting address acts through it). They may wait for another thread's brief
//!   section, never for the thread they interrupted: re-entered on a thread that is inside
//!   the same reservation's lock section they return [`Error::Busy`] at once, as they do for
//!   pages the interrupted call holds. While a fork is in progress on another thread, a
//!   transition from a handler whose thread is inside osmem answers `Busy` rather than wait for
//!   the fork (which waits for it).
//!
//! Not async-signal-safe: making and dropping reservations ([`Reservation::reserve`] and
//! friends, drop), [`Batch`] (it may wait for a fork to end), [`configure`], the residency
//! queries (they may open `/proc/self/pagemap`), and the `std`-only conveniences. A reservation
//! being dropped waits for calls through its [`ReservationId`] on other threads to end; one on
//! its own thread (a handler) finds it gone ([`Error::Gone`]).
//!
//! ## Locked memory (`mlock`, `mlockall`)
//!
//! The kernel refuses `MADV_FREE`, `MADV_DONTNEED`, guard markers and `process_madvise` on
//! mlocked pages. osmem releases them with `MADV_DONTNEED_LOCKED` (Linux ≥ 5.18), which keeps
//! the lock ([`UnusedHow::DontNeedLocked`]); a fault there takes the `PROT_NONE` link; a
//! [`Batch`] over locked memory releases it in the batched call. Under
//! `mlockall(MCL_FUTURE)` the kernel locks, and so faults in, whatever becomes accessible:
//! [`Reservation::map`] then makes its range **resident** although it is Prepared (osmem's
//! byte counts say Prepared; the process's RSS includes it), and a remap (the last link of
//! `unused` and `fault`) faults its new pages in again, so `unused` reports such a range as
//! not released. Plan the address space you map accordingly under `MCL_FUTURE`.
//!
//! ## Cost model
//!
//! **Per reservation.** A slot in osmem's registry (about 300 bytes: the page-state map's
//! root, its lock, byte counts, knobs, and its entry in the directory [`lookup`] searches):
//! static memory for the first 64 reservations, metadata-arena chunks beyond. No mapping of
//! its own and no system call.
//!
//! **Metadata.** osmem keeps each page's state, so that it can refuse wrong transitions, move
//! exactly the bytes that change state in the accounting, and undo each fault with the inverse
//! of whatever made it. The states live in a radix tree of one-word entries in which a uniform
//! subtree, or one with a single run in another state, is a single entry: it costs nothing for
//! memory whose state is uniform however large the reservation (1 TiB reserved and used: no
//! metadata), grows with the number of state changes between neighbouring pages (about 50 bytes
//! per isolated faulted page), and shrinks back when states become uniform again (to nothing:
//! a reservation whose pages are uniform again gives all of its nodes back). The nodes
//! live in one process-wide arena ([`metadata_range`]); [`Stats::metadata_bytes`] counts what
//! reservations hold of it.
//!
//! **System calls.** In the common case each operation is one system call, the one in the
//! table above: `reserve` is one `mmap` (`reserve_aligned` also trims with up to two
//! `munmap`), `map` one `mprotect` (or one `MADV_GUARD_REMOVE`) per run of pages that were
//! reserved or faulted the same way, `used` nothing, `unused` one `madvise` (plus one `mprotect` with harddecommit), `fault`
//! one `madvise` with guard markers and two calls (`MADV_DONTNEED`, then `mprotect`) without,
//! and drop one `munmap`. Once per process, at first use, osmem probes the kernel (a few dozen
//! system calls, [`probe()`]) and reserves its metadata arena; the first `map` (or `alloc`) of
//! a reservation also names it `[anon:osmem]` with one `prctl`. [`Stats`] counts every call by
//! kind.
//!
//! **Batching.** Every `MADV_DONTNEED` ends in a TLB shootdown, and while another thread of the
//! process is running, each shootdown is an inter-processor interrupt. A [`Batch`] queues up to
//! 1024 ranges (of up to 8 reservations) and releases or faults them with one
//! `process_madvise`, which the kernel runs under one flush. Purging 1024 scattered 4 KiB
//! ranges, measured on a 2-vCPU VM with Linux 6.18: 1.0 ms as 1024 `madvise` calls and 0.15 ms
//! as one `process_madvise` (6.7×); with a second thread of the process running, 17.2 ms against
//! 0.21 ms (80×). Where `process_madvise` is missing or refused, a batch falls back to one
//! `madvise` per range, with the same results.
//!
//! ## Knobs
//!
//! The process-wide policy is a [`Config`]: which advice `unused` starts with
//! ([`UnusedAdvice`]), how `fault` makes ranges trap ([`FaultStrategy`]), Go's `harddecommit`,
//! the huge-page policy ([`Thp`]), prefaulting in `used`, and checked mode. Build one with its
//! builder methods and install it with [`configure`]; [`config`] returns the one in force,
//! [`selected`] what it resolves to on this kernel. A reservation can have its own
//! ([`Reservation::with_config`]): the keys its `Config` sets override the process-wide ones.
//!
//! Like Go's `GODEBUG`, the `OSMEM` environment variable sets the knobs without a rebuild:
//! `OSMEM=unused=free,harddecommit=1,thp=never`. It is the only variable osmem reads, and it
//! is read once, from the environment the process started with: with glibc before `main`
//! (by a constructor, when the process has one thread; a library loaded with `dlopen` reads
//! it when it is loaded), elsewhere from `/proc/self/environ` at first use. osmem never calls
//! `getenv` later, so its first use — on any thread, inside an allocator — cannot race with
//! `std::env::set_var` on another; and setting `OSMEM` after the start changes nothing (use
//! [`configure`]). The keys are [`KEYS`] (`unused`, `fault`, `harddecommit`, `thp`,
//! `prefault`, `checked`) and their values [`UNUSED_VALUES`], [`FAULT_VALUES`],
//! [`THP_VALUES`] and [`BOOL_VALUES`]. Unknown keys and values, and keys given twice (the
//! last value holds), are never taken silently: they are listed by [`env_report`]. An
//! explicit [`configure`] wins over the variable.
//!
//! ## Cargo features
//!
//! - `std` (default): `impl std::error::Error for Error` and
//!   `impl From<Error> for std::io::Error`. Every operation is the same without it; the crate
//!   itself is `#![no_std]` either way.
//! - `checked`: checked mode on by default (the `checked` knob). After every transition osmem
//!   asks the kernel whether it did what its system calls reported — a released range has no
//!   page left, a faulted range refuses access — and returns [`Error::Unverified`] if not. One
//!   or two extra system calls per transition: for tests and bring-up on a new kernel or
//!   sandbox, not for production builds.
//!
//! ## Platform support
//!
//! Linux only; on any other target the crate does not compile. osmem needs nothing beyond
//! `mmap`, `mprotect` and `munmap`: at first use it probes what the running kernel offers
//! (each `madvise` advice by using it on a private page osmem maps for the purpose, because a
//! seccomp sandbox can refuse an advice the kernel knows) and falls back where something is
//! missing. In parentheses, the first Linux release that has it:
//!
//! | kernel feature | used for | without it |
//! |---|---|---|
//! | `MADV_DONTNEED` (missing where madvise is compiled out or refused) | `unused`, `fault` | `mmap(MAP_FIXED)` over the range: fresh zero pages for `unused`, a `PROT_NONE` mapping for `fault` |
//! | `MADV_FREE` (4.5) | `unused` with [`UnusedAdvice::Free`] | `MADV_DONTNEED` |
//! | `MAP_FIXED_NOREPLACE` (4.17) | [`Reservation::reserve_fixed`] | the address is taken as a hint, and a reservation placed elsewhere is unmapped and refused |
//! | `process_madvise` of the own process, with `pidfd_open` (5.10) | [`Batch`] | one `madvise` per range |
//! | `process_madvise` with `MADV_DONTNEED`, `MADV_FREE` and guard markers (6.13) | [`Batch`] | one `madvise` per range, for that advice |
//! | the `PIDFD_SELF` sentinel (6.15) | [`Batch`] without a file descriptor | a `pidfd_open` descriptor per flush |
//! | `MADV_POPULATE_WRITE` (5.14) | the `prefault` knob; checked mode's "does it trap?" | one write per page; checked mode does not ask whether faulted ranges trap |
//! | mapping names, `PR_SET_VMA_ANON_NAME` (5.17) | `[anon:osmem]` in `/proc/self/maps` | unnamed mappings |
//! | `MADV_DONTNEED_LOCKED` (5.18) | `unused` and `fault` of mlocked memory | `unused` of an mlocked range fails with [`Error::Locked`] and changes nothing; `fault` remaps it |
//! | transparent huge pages; `MADV_COLLAPSE` (6.1) | [`Reservation::hugepage`], [`nohugepage`](Reservation::nohugepage), [`collapse`](Reservation::collapse) | [`Error::Unsupported`] |
//! | guard markers, `MADV_GUARD_INSTALL` (6.13) | `fault` (the default strategy where they work) | `MADV_DONTNEED` + `mprotect(PROT_NONE)` |
//! | the `PAGEMAP_SCAN` ioctl (6.7) | [`Reservation::residency`] | reading `/proc/self/pagemap`, then `mincore` ([`Tells`] says what each one tells apart) |
//!
//! A primitive that fails later is judged by its errno: `ENOSYS`, `EPERM` and `EACCES` turn it
//! off for the rest of the process (a "downgrade", counted once in [`Stats`]), `EINVAL` does so
//! only if a zero-length call shows the kernel does not know the advice (otherwise only this call
//! falls to the next link), and `EAGAIN` / `EINTR` are retried a few times. [`probe()`] shows
//! what was found; [`selected`] what osmem will use.
//!
//! MSRV: Rust 1.77 (C-string literals); checked by clippy's `incompatible_msrv` lint.

#![no_std]
#![deny(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "osmem supports Linux only: it is built on Linux system calls (madvise, process_madvise, \
     guard markers, /proc/self/pagemap) that other systems do not have"
);

// The unit tests use std (vectors, threads) whatever the features.
#[cfg(any(feature = "std", test))]
extern crate std;

mod advise;
mod arena;
mod batch;
mod config;
mod error;
mod fault;
mod fork;
mod huge;
mod id;
mod lock;
mod names;
mod once;
mod probe;
mod region;
mod registry;
mod residency;
mod state;
mod stats;
mod sys;
mod table;
mod thread;
mod unused;
mod verify;

pub use batch::{Batch, BatchDone, BatchKind, BatchRange, BatchReport, MAX_IOV};
pub use config::{
    config, configure, env_report, Config, EnvReport, FaultStrategy, Problem, ProblemKind, Thp,
    UnusedAdvice, BOOL_VALUES, FAULT_VALUES, KEYS, THP_VALUES, UNUSED_VALUES,
};
pub use error::{advice_name, Errno, Error, Op, Syscall};
pub use fault::{FaultHow, Faulted};
pub use id::{lookup, Lookup, ReservationId};
pub use probe::{page_size, probe, Advices, Overcommit, Probe, ProcessMadvise, ThpMode};
pub use region::Reservation;
pub use residency::{
    residency_method, PageRun, Residence, Residency, ResidencyMethod, ResidencyProbe, Tells,
};
pub use state::State;
pub use stats::{stats, Stats};
pub use unused::{Unused, UnusedHow};

/// The calling thread's identity as osmem records it for the holders of its locks and claims:
/// its thread pointer, the value `pthread_self()` returns, read from a register. It stays the
/// same for the forking thread in a child made by `fork`. Async-signal-safe; for code around
/// osmem that must tell the thread a signal handler interrupted from other threads (the page
/// heap's lock does).
///
/// ```
/// let here = osmem::current_thread();
/// let there = std::thread::spawn(osmem::current_thread).join().unwrap();
/// assert_ne!(here, there);
/// assert_eq!(here, osmem::current_thread());
/// ```
#[inline(always)]
pub fn current_thread() -> usize {
    thread::me()
}

/// Where osmem keeps its own metadata (the page-state maps of reservations that are not in
/// one state): the address range of its one process-wide arena, once made (with the first
/// reservation). It is `PROT_NONE` except for the part in use, carries `MADV_NOHUGEPAGE`, and
/// is named `[anon:osmem state]` where the kernel has mapping names. For tools that account
/// memory by mapping (`/proc/self/smaps`): that range's resident memory is osmem's overhead.
/// [`Stats::metadata_bytes`] counts what reservations hold of it.
///
/// ```
/// let _r = osmem::Reservation::reserve(1 << 20)?;
/// let m = osmem::metadata_range().expect("made with the first reservation");
/// assert!(m.end > m.start);
/// # Ok::<(), osmem::Error>(())
/// ```
pub fn metadata_range() -> Option<core::ops::Range<usize>> {
    arena::range().map(|(base, len)| base..base + len)
}

/// The strategies osmem would use right now: the knobs resolved against the probe and the
/// sticky downgrades taken so far.
///
/// ```
/// let s = osmem::selected();
/// println!("unused starts with {:?}, fault uses {:?}", s.unused, s.fault);
/// ```
#[must_use = "a query has no other effect"]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Selected {
    /// The first link `unused` tries.
    pub unused: UnusedHow,
    /// The fault strategy whose link faults end on (never `Auto`): a forced strategy the
    /// kernel cannot do is named by the link that will really run (`fault=guard` without
    /// guard markers: `Protect`; without `MADV_DONTNEED`: `Remap`).
    pub fault: FaultStrategy,
    /// Whether `unused` also makes ranges PROT_NONE.
    pub harddecommit: bool,
    /// Whether `used` prefaults.
    pub prefault: bool,
    /// The huge-page policy.
    pub thp: Thp,
}

/// The strategies operations use now on a reservation without knobs of its own: the
/// process-wide knobs resolved against this kernel (see [`Selected`];
/// [`Reservation::selected`] for a reservation that has its own).
///
/// ```
/// assert_ne!(osmem::selected().fault, osmem::FaultStrategy::Auto);
/// ```
pub fn selected() -> Selected {
    Selected::of(&config())
}

impl Selected {
    /// What `c`'s knobs resolve to on this kernel now.
    pub(crate) fn of(c: &Config) -> Selected {
        Selected {
            unused: unused::first_link(c.unused_advice()),
            fault: fault::effective(c.fault_strategy()),
            harddecommit: c.is_harddecommit(),
            prefault: c.is_prefault(),
            thp: c.thp_policy(),
        }
    }
}

/// The package README's code, compiled and run as a doc test so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
