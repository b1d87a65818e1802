//! Test support for osmem: check the KERNEL's own view of memory, not the
//! library's bookkeeping.
//!
//! - [`vma_at`], [`vmas_in`], [`maps_line_count`]: `/proc/self/maps`.
//! - [`smaps_at`], [`smaps_sum`]: `/proc/self/smaps` (Rss, LazyFree,
//!   AnonHugePages, VmFlags, ...).
//! - [`resident_pages`] (`mincore`), [`is_zero`], [`page_size`],
//!   [`drain_lru_batches`].
//! - [`in_child`], [`in_child_report`], [`touch_in_child`]: run code or probe
//!   an address in a forked child.
//! - [`build_filter`], [`apply_filter_in_child`], [`in_child_filtered`]:
//!   make chosen syscalls fail with seccomp in a child.
//!
//! # Allocation-free by design
//!
//! Many checks run in a forked child of a multi-threaded test process. After
//! `fork()` only the forking thread exists in the child, and any lock another
//! thread held (allocator, stdio, test-output capture) stays held forever, so
//! an allocation or a `println!` there can deadlock. Therefore every function
//! in this crate that a child may call is allocation-free: files are read with
//! raw `open`/`read` into fixed stack buffers, numbers are formatted by hand
//! ([`fmt_u64`], [`fmt_hex`]) and diagnostics go straight to fd 2
//! ([`eprint_bytes`], [`eprint_maps`]). Only [`build_filter`] allocates; it
//! is meant for the parent. Closures passed to the `in_child*` helpers must
//! follow the same rule.

#![deny(missing_docs)]
#[cfg(not(target_os = "linux"))]
compile_error!("osmem-testkit supports Linux only: it reads /proc/self/smaps and maps, calls mincore and installs seccomp filters.");

mod child;
mod diag;
mod mem;
mod procfs;
mod profile;
mod raw;
mod rng;
mod seccomp;
mod trap; // x86_64 only (SIGSYS handler edits ucontext registers)

pub use child::{
    in_child, in_child_report, rerun_self, touch_in_child, ChildExit, Report, ReportBuf, Touch,
    BUS_ADRALN, BUS_ADRERR, BUS_OBJERR, CHILD_PANIC_EXIT, CHILD_TIMEOUT_SECS, FILTER_FAILED_EXIT,
    REPORT_CAP, SEGV_ACCERR, SEGV_MAPERR, SEGV_PKUERR,
};
pub use mem::{
    drain_lru_batches, is_zero, map_rw, page_size, page_tag, page_tag_intact, pagemap_entries,
    pagemap_scan_answers, resident_pages, tag_page, untag_page,
};
pub use procfs::{
    eprint_maps, maps_line_count, smaps_at, smaps_sum, vma_at, vmas_in, vmas_within, SmapsEntry,
    SmapsSum, VmFlags, Vma,
};
pub use profile::{
    append_testing_row, emit, enter_profile, profile_filter, profile_rules, run_under_profile,
    ProfileRun, SuiteResult, PROFILES, PROFILE_ENV, PROFILE_TIMEOUT, RESULT_MARK,
};
pub use raw::{eprint_bytes, eprint_hex, eprint_u64, errno, fmt_hex, fmt_u64, write_all};
pub use rng::Rng;
pub use seccomp::{apply_filter_in_child, build_filter, in_child_filtered, Inject};
#[cfg(target_arch = "x86_64")]
pub use trap::{
    apply_trap_filter_in_child, build_trap_filter, in_child_trapped, trap_counts, Trap, TrapCounts,
    TrapFilter, MAX_TRAPS, TRAP_MAGIC,
};

/// The seccompiler crate, re-exported so users need no direct dependency.
pub use seccompiler;
/// A compiled seccomp program, as returned by [`build_filter`].
pub use seccompiler::BpfProgram;
