//! # osmem — the OS memory layer for runtimes, GCs, allocators and sandboxes on Linux
//!
//! The system of the Go runtime's `mem.go` + `mem_linux.go` in Rust: regions of address space
//! move between **None**, **Reserved**, **Prepared**, **Ready** (and **Faulted**) through
//! reserve / map / used / unused / fault / free, with per-state accounting, knobs, and
//! strategy chains whose every fallback is errno-aware and counted.
//!
//! | transition | call | on Linux |
//! |---|---|---|
//! | None → Ready | [`Reservation::alloc`] | `mmap(RW)` |
//! | None → Reserved | [`Reservation::reserve`], [`Reservation::reserve_aligned`], [`Reservation::reserve_at`], [`Reservation::reserve_fixed`] | `mmap(PROT_NONE, MAP_NORESERVE)` (fixed: `MAP_FIXED_NOREPLACE`) |
//! | Reserved/Faulted → Prepared | [`Reservation::map`] | `mprotect(RW)` / `MADV_GUARD_REMOVE` |
//! | Prepared → Ready | [`Reservation::used`] | nothing (harddecommit: `mprotect(RW)`; prefault: `MADV_POPULATE_WRITE`; after `MADV_FREE`: one write per page) |
//! | Ready → Prepared | [`Reservation::unused`] | `MADV_FREE` → `MADV_DONTNEED` (mlocked: `_LOCKED`) → `mmap(RW, MAP_FIXED)` |
//! | Ready → Faulted | [`Reservation::fault`] | guard markers → DONTNEED + `mprotect(NONE)` → `mmap(NONE, MAP_FIXED)` |
//! | any → None | drop | `munmap` |
//!
//! What the kernel really holds for a range (present, the zero page, swapped, guard-marked,
//! nothing) is one call away: [`Reservation::residency`] and [`Reservation::resident_bytes`],
//! asked of the kernel (the `PAGEMAP_SCAN` ioctl, pagemap reads or `mincore`, whichever is
//! fastest here), never of osmem's bookkeeping.
//!
//! Nothing on any operation path allocates from the heap or needs std, so an allocator can
//! call osmem from inside its `GlobalAlloc`. The crate is `#![no_std]`; the `std` feature
//! (default) only adds `impl std::error::Error`.
//!
//! osmem's own metadata (each page's state) is a radix tree of one-word entries in which a
//! uniform subtree, or one with a single run in another state, is a single entry: it costs
//! nothing for memory whose state is uniform however large the reservation (1 TiB reserved
//! and used: no metadata), grows with the number of state changes between neighbouring pages
//! (about 50 bytes per isolated faulted page), and shrinks back when states become uniform.
//! See [`metadata_range`].
//!
//! ```
//! let ps = osmem::page_size();
//! let r = osmem::Reservation::reserve(1024 * ps)?;
//! r.map(0, 8 * ps)?;
//! r.used(0, 8 * ps)?;
//! unsafe { r.as_ptr().write_bytes(0xAB, 8 * ps) };
//! unsafe { r.unused(0, 8 * ps)? };
//! assert_eq!(osmem::stats().prepared_bytes >= 8 * ps as u64, true);
//! # Ok::<(), osmem::Error>(())
//! ```
//!
//! MSRV: Rust 1.77 (C-string literals); checked by clippy's `incompatible_msrv` lint.

#![no_std]
#![cfg(target_os = "linux")]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

mod advise;
mod arena;
mod batch;
mod config;
mod error;
mod fault;
mod huge;
mod lock;
mod names;
mod once;
mod probe;
mod region;
mod residency;
mod stats;
mod sys;
mod table;
mod unused;
mod verify;

pub use batch::{Batch, BatchKind, BatchReport, MAX_IOV};
pub use config::{
    config, configure, env_report, Config, EnvReport, FaultStrategy, Problem, ProblemKind, Thp,
    UnusedAdvice, BOOL_VALUES, FAULT_VALUES, KEYS, THP_VALUES, UNUSED_VALUES,
};
pub use error::{Errno, Error, Op, Syscall};
pub use fault::{FaultHow, Faulted};
pub use probe::{page_size, probe, Advices, Overcommit, Probe, ProcessMadvise, ThpMode};
pub use region::{Reservation, State};
pub use residency::{
    residency_method, PageRun, Residence, Residency, ResidencyMethod, ResidencyProbe, Tells,
};
pub use stats::{stats, Stats};
pub use unused::{Unused, UnusedHow};

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

/// See [`Selected`].
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
