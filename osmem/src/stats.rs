//! Accounting: bytes per state and counters per primitive, advice, fallback and downgrade.
//!
//! Every figure is a relaxed atomic in one static array. Relaxed is enough: each counter is
//! exact on its own (atomic read-modify-write never loses an update), and a snapshot is
//! documented as not being a single instant across counters. Byte counts move between states
//! with one add and one subtract per transition, so with operations on disjoint ranges the
//! totals are exact once those operations have returned.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $field:ident => $variant:ident, )*) => {
        #[derive(Copy, Clone, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub(crate) enum Counter { $($variant,)* }

        const N: usize = [$(Counter::$variant,)*].len();

        /// A snapshot of osmem's accounting, from [`stats()`].
        ///
        /// Byte figures are the bytes of live regions in each state; the rest are counts since
        /// process start. Each field is exact; the snapshot is not atomic across fields while
        /// other threads are operating.
        ///
        /// ```
        /// let before = osmem::stats();
        /// let r = osmem::Reservation::reserve(1 << 20)?;
        /// let after = osmem::stats();
        /// assert!(after.reserved_bytes >= before.reserved_bytes);
        /// drop(r);
        /// # Ok::<(), osmem::Error>(())
        /// ```
        #[must_use = "a snapshot has no other effect"]
        #[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats { $( $(#[$doc])* pub $field: u64, )* }

        impl Stats {
            /// Every field as a `(name, value)` pair, in declaration order (for tables and JSON).
            ///
            /// ```
            /// let s = osmem::stats();
            /// assert!(s.fields().any(|(name, _)| name == "ready_bytes"));
            /// ```
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($field), self.$field),)*].into_iter()
            }
        }

        /// The current accounting snapshot.
        ///
        /// ```
        /// let s = osmem::stats();
        /// assert_eq!(s.ready_bytes % 1, 0);
        /// ```
        pub fn stats() -> Stats {
            let mut s = Stats {
                $( $field: COUNTERS.c[Counter::$variant as usize].load(Ordering::Relaxed), )*
            };
            derive(&mut s);
            s
        }
    };
}

counters! {
    // The counters every unused/fault/map/used touches come first, so a call dirties one
    // cache line of them (measured with perf annotate: after the system call, the locked adds
    // on cold counter lines were most of osmem's time over a raw 4 KiB madvise). Each call
    // adds to one counter per fact: its op, its advice, its bytes' flow (see `Flows`).
    /// `unused` calls that succeeded (Ready → Prepared).
    unused_ops => UnusedOps,
    /// `fault` calls that succeeded (Ready → Faulted).
    fault_ops => FaultOps,
    /// `map` calls that succeeded (Reserved → Prepared).
    map_ops => MapOps,
    /// `used` calls that succeeded (Prepared → Ready).
    used_ops => UsedOps,
    /// `madvise(MADV_DONTNEED)` calls.
    madv_dontneed => MadvDontneed,
    /// `madvise(MADV_FREE)` calls.
    madv_free => MadvFree,
    /// `madvise(MADV_GUARD_INSTALL)` calls.
    madv_guard_install => MadvGuardInstall,
    /// `mprotect` syscalls issued.
    mprotect_calls => MprotectCalls,

    /// `mmap` syscalls issued.
    mmap_calls => MmapCalls,
    /// `madvise(MADV_GUARD_REMOVE)` calls.
    madv_guard_remove => MadvGuardRemove,
    /// `madvise` syscalls issued (any advice, including zero-length probes): the sum of the
    /// per-advice counts and of the calls with other advice.
    madvise_calls => MadviseCalls,
    /// `madvise` syscalls that failed.
    madvise_errors => MadviseErrors,
    /// Bytes of live regions that are Reserved (never mapped, or unmapped back by nothing).
    reserved_bytes => ReservedBytes,
    /// Bytes that are Prepared: usable after `used`, no physical backing expected.
    prepared_bytes => PreparedBytes,
    /// Bytes that are Ready: safe to read and write.
    ready_bytes => ReadyBytes,
    /// Bytes that were Ready and have been faulted (Go's Reserved-after-sysFault).
    faulted_bytes => FaultedBytes,

    /// `alloc` calls that succeeded (None → Ready).
    alloc_ops => AllocOps,
    /// `reserve` / `reserve_aligned` calls that succeeded (None → Reserved).
    reserve_ops => ReserveOps,
    /// Regions unmapped by dropping their handle (→ None).
    free_ops => FreeOps,

    /// `mmap` syscalls that failed.
    mmap_errors => MmapErrors,
    /// `munmap` syscalls issued.
    munmap_calls => MunmapCalls,
    /// `munmap` syscalls that failed.
    munmap_errors => MunmapErrors,
    /// `mprotect` syscalls that failed.
    mprotect_errors => MprotectErrors,
    /// `process_madvise` syscalls issued.
    process_madvise_calls => ProcessMadviseCalls,
    /// `process_madvise` syscalls that failed outright (returned -1).
    process_madvise_errors => ProcessMadviseErrors,
    /// `pidfd_open` syscalls issued.
    pidfd_open_calls => PidfdOpenCalls,
    /// `pidfd_open` syscalls that failed.
    pidfd_open_errors => PidfdOpenErrors,
    /// `prctl` syscalls issued.
    prctl_calls => PrctlCalls,
    /// `prctl` syscalls that failed.
    prctl_errors => PrctlErrors,

    /// `madvise(MADV_HUGEPAGE)` calls.
    madv_hugepage => MadvHugepage,
    /// `madvise(MADV_NOHUGEPAGE)` calls.
    madv_nohugepage => MadvNohugepage,
    /// `madvise(MADV_COLLAPSE)` calls.
    madv_collapse => MadvCollapse,
    /// `madvise(MADV_POPULATE_WRITE)` calls.
    madv_populate_write => MadvPopulateWrite,
    /// `madvise(MADV_DONTNEED_LOCKED)` calls.
    madv_dontneed_locked => MadvDontneedLocked,

    /// unused: MADV_FREE failed for this call and the chain went on to MADV_DONTNEED.
    fallback_unused_free => FallbackUnusedFree,
    /// unused: MADV_DONTNEED failed (or was downgraded) and the range was remapped.
    fallback_unused_remap => FallbackUnusedRemap,
    /// unused with harddecommit: the range could not be made PROT_NONE (left RW, still released).
    fallback_harddecommit_open => FallbackHarddecommitOpen,
    /// fault: the chain changed between guard markers and protection: guard markers failed
    /// for this call and the chain went on to DONTNEED + mprotect, or the protecting step
    /// failed (VMA limit) and guard markers, which need no VMA, made the range trap instead.
    fallback_fault_guard => FallbackFaultGuard,
    /// fault: the releasing step (MADV_DONTNEED) failed; the chain went on to
    /// mmap(PROT_NONE, MAP_FIXED), which releases and protects in one call.
    fallback_fault_remap => FallbackFaultRemap,
    /// fault: the range was released but could not be made to trap (VMA limit or policy).
    fallback_fault_open => FallbackFaultOpen,
    /// map: mprotect(RW) failed and the range was made RW with mmap(MAP_FIXED) instead.
    fallback_map_remap => FallbackMapRemap,
    /// unused or fault: the kernel refused `MADV_DONTNEED` because the range is mlocked, and
    /// the release went on to `MADV_DONTNEED_LOCKED` (which keeps the lock).
    fallback_locked => FallbackLocked,
    /// unused: the remap link left the range resident (the new pages were locked and faulted
    /// in again, under `mlockall(MCL_FUTURE)`): reported as not released.
    unused_not_released => UnusedNotReleased,
    /// unused: the remap link failed after the kernel had cleared the old mapping, leaving a
    /// hole in the region; osmem took the address space back (`PROT_NONE`), and the range is
    /// Reserved.
    remap_holes => RemapHoles,
    /// Of those, holes osmem could not take back (another mapping took the address, or no
    /// memory): the range reads Reserved but nothing is mapped there.
    remap_holes_left => RemapHolesLeft,
    /// Transient errors (EAGAIN, EINTR) retried.
    transient_retries => TransientRetries,
    /// Zero-length madvise probes issued to tell "advice unknown" from "bad argument".
    einval_probes => EinvalProbes,
    /// Batches flushed ([`Batch::flush`](crate::Batch::flush), explicit or on drop/full).
    batch_flushes => BatchFlushes,
    /// Ranges released or faulted through batches.
    batch_ranges => BatchRanges,
    /// Batched ranges that the batch could not cover with process_madvise (syscall missing,
    /// refused, or this range failed inside it) and that went through the per-range chain.
    fallback_batch_range => FallbackBatchRange,
    /// Huge-page hints skipped because the knob `thp=never` is set or the range had no
    /// aligned huge page inside.
    huge_hints_skipped => HugeHintsSkipped,

    /// Bytes of osmem's metadata arena held by reservations for their page-state maps (an
    /// upper bound of the metadata's resident memory; 0 while every reservation is in one
    /// state, or one run inside another).
    metadata_bytes => MetadataBytes,
    /// Address space reserved for osmem's metadata arena (`PROT_NONE` until used, so no
    /// memory): one mapping for the life of the process, made with the first reservation.
    metadata_reserved_bytes => MetadataReservedBytes,
    /// `MADV_DONTNEED` calls that gave metadata pages back to the kernel after reservations
    /// returned them (more than 8 free metadata pages are never kept). Counted in
    /// `madvise_calls` and `madv_dontneed` too.
    metadata_releases => MetadataReleases,
    /// `mprotect` calls that grew the metadata arena (in 256 KiB steps). Counted in
    /// `mprotect_calls` too.
    metadata_grows => MetadataGrows,

    /// Sticky downgrades: madvise as a whole (ENOSYS) — counted once per process.
    downgrade_madvise => DowngradeMadvise,
    /// Sticky downgrades: MADV_FREE known not to work.
    downgrade_free => DowngradeFree,
    /// Sticky downgrades: MADV_DONTNEED known not to work.
    downgrade_dontneed => DowngradeDontneed,
    /// Sticky downgrades: guard markers known not to work.
    downgrade_guard => DowngradeGuard,
    /// Sticky downgrades: MADV_COLLAPSE known not to work.
    downgrade_collapse => DowngradeCollapse,
    /// Sticky downgrades: process_madvise on the own process known not to work at all
    /// (ENOSYS, EPERM/EACCES, ESRCH), or not for one advice (EINVAL where madvise works).
    downgrade_process_madvise => DowngradeProcessMadvise,
    /// Sticky downgrades: the `PIDFD_SELF` sentinel refused (EBADF/EINVAL on kernels before
    /// 6.15); batches open a pidfd instead.
    downgrade_pidfd_self => DowngradePidfdSelf,
    /// Sticky downgrades: mapping names (PR_SET_VMA_ANON_NAME) turned off (kernels built
    /// without CONFIG_ANON_VMA_NAME answer EINVAL).
    downgrade_anon_name => DowngradeAnonName,
    /// Sticky downgrades: MADV_POPULATE_WRITE, MADV_HUGEPAGE or MADV_NOHUGEPAGE known not to
    /// work (each counted once).
    downgrade_hints => DowngradeHints,
    /// Sticky downgrades: MADV_DONTNEED_LOCKED known not to work (Linux < 5.18): mlocked
    /// ranges cannot be released (`Error::Locked`).
    downgrade_dontneed_locked => DowngradeDontneedLocked,
    /// Sticky downgrades: the PAGEMAP_SCAN ioctl known not to work (Linux < 6.7, a sandbox,
    /// or `/proc/self/pagemap` unusable): residency queries read pagemap or use mincore.
    downgrade_pagemap_scan => DowngradePagemapScan,
    /// Sticky downgrades: reading `/proc/self/pagemap` known not to work: residency queries
    /// use mincore.
    downgrade_pagemap => DowngradePagemap,

    /// `fork` calls osmem's fork handlers ran for (each held every reservation's map across
    /// the fork; see the crate docs, "Threads, fork and signals").
    forks => Forks,
    /// Of `forks`, those made from a signal handler that interrupted osmem on the forking
    /// thread: what that thread held was left to it, in both processes.
    forks_reentrant => ForksReentrant,
    /// Nanoseconds the fork handlers spent waiting for other threads' transitions in flight
    /// to settle (the part of a `fork()` osmem adds; a fork waits no longer than the longest
    /// transition in flight).
    fork_wait_ns => ForkWaitNs,
    /// Transitions that waited for a fork in progress before claiming their pages.
    fork_waits => ForkWaits,
    /// Settles handed to the thread holding a map's lock across a fork (it runs them when its
    /// signal handler returns, in both processes).
    settles_handed_over => SettlesHandedOver,
    /// Calls refused with `Busy` at once because waiting could never end: re-entered from a
    /// signal handler on a thread inside the same map's bookkeeping, or meeting a fork that
    /// waits for this thread.
    reentered => Reentered,

    /// Residency queries answered (`Reservation::residency` and friends, checked mode's).
    residency_queries => ResidencyQueries,
    /// `open` calls of `/proc/self/pagemap` (once per process, and again after `fork`).
    pagemap_opens => PagemapOpens,
    /// `open` calls of `/proc/self/pagemap` that failed.
    pagemap_open_errors => PagemapOpenErrors,
    /// PAGEMAP_SCAN ioctl calls.
    pagemap_scan_calls => PagemapScanCalls,
    /// PAGEMAP_SCAN ioctl calls that failed.
    pagemap_scan_errors => PagemapScanErrors,
    /// `pread` calls of `/proc/self/pagemap`.
    pagemap_reads => PagemapReads,
    /// `pread` calls of `/proc/self/pagemap` that failed.
    pagemap_read_errors => PagemapReadErrors,
    /// `mincore` calls (residency queries, checked mode, the probe).
    mincore_calls => MincoreCalls,
    /// `mincore` calls that failed.
    mincore_errors => MincoreErrors,
}

// Const items, not inline `const { }` blocks in the array repeats (those need Rust 1.79; the
// MSRV is 1.77).
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO32: AtomicU32 = AtomicU32::new(0);

/// Bytes by state, kept as flows so that a transition costs one atomic add (not a subtract
/// from one state and an add to another): bytes created in each state (a new region), dropped
/// from each (a region unmapped), and moved from state `a` to `b`. The per-state figures of
/// `Stats` are derived from them in `stats()`. The four flows of unused, used, fault and map
/// share the first cache line with those ops' counters (see `Lines`).
const HOT_FLOWS: [(usize, usize); 4] = [(2, 1), (1, 2), (2, 3), (3, 1)];

/// `madvise` calls with an advice that has no counter of its own (zero-length probes, the
/// checked mode's MADV_POPULATE_READ, the arena's hints): part of `madvise_calls`.
static MADVISE_OTHER: AtomicU64 = ZERO;

/// `bytes` moved from state `a` to state `b` (indices in `State` order).
#[inline]
pub(crate) fn moved(a: usize, b: usize, bytes: u64) {
    let slot = match HOT_FLOWS.iter().position(|&f| f == (a, b)) {
        Some(i) => &COUNTERS.hot[i],
        None => &COUNTERS.moved[4 * a + b],
    };
    slot.fetch_add(bytes, Ordering::Relaxed);
}

/// A new region of `bytes` in state `s`.
pub(crate) fn created(s: usize, bytes: u64) {
    COUNTERS.created[s].fetch_add(bytes, Ordering::Relaxed);
}

/// A region's `bytes` in state `s` are gone (the region was unmapped).
pub(crate) fn dropped(s: usize, bytes: u64) {
    COUNTERS.dropped[s].fetch_add(bytes, Ordering::Relaxed);
}

/// A `madvise` call with an advice that has no counter of its own.
pub(crate) fn madvise_other() {
    MADVISE_OTHER.fetch_add(1, Ordering::Relaxed);
}

/// The figures `stats()` derives: bytes per state from the flows, and every `madvise` call.
fn derive(s: &mut Stats) {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let flow = |a: usize, b: usize| {
        l(&COUNTERS.moved[4 * a + b])
            + HOT_FLOWS
                .iter()
                .position(|&f| f == (a, b))
                .map_or(0, |i| l(&COUNTERS.hot[i]))
    };
    let mut bytes = [0u64; 4];
    for (st, b) in bytes.iter_mut().enumerate() {
        let mut v = l(&COUNTERS.created[st]).wrapping_sub(l(&COUNTERS.dropped[st]));
        for other in 0..4 {
            v = v
                .wrapping_add(flow(other, st))
                .wrapping_sub(flow(st, other));
        }
        *b = v;
    }
    [
        s.reserved_bytes,
        s.prepared_bytes,
        s.ready_bytes,
        s.faulted_bytes,
    ] = bytes;
    s.madvise_calls = l(&MADVISE_OTHER)
        + s.madv_dontneed
        + s.madv_free
        + s.madv_guard_install
        + s.madv_guard_remove
        + s.madv_hugepage
        + s.madv_nohugepage
        + s.madv_collapse
        + s.madv_populate_write
        + s.madv_dontneed_locked;
}

/// Process-wide words every operation reads, kept in the counters' first cache line (see
/// `Lines`): the knobs (config.rs), the sticky downgrades and flags (advise.rs) and the cached
/// pid (lock.rs).
#[derive(Copy, Clone)]
pub(crate) enum Word {
    Knobs,
    Downgraded,
    Pid,
    Flags,
}

/// One of the process-wide hot words.
#[inline(always)]
pub(crate) fn word(w: Word) -> &'static AtomicU32 {
    &COUNTERS.words[w as usize]
}

/// Every counter, and the process-wide words every operation reads, in one static (one
/// address to load, wherever the code is linked), aligned to a pair of cache lines (CPUs
/// fetch the pair together): the first line holds the hot words, the four hot flows and the
/// unused / fault op counters, the second the map / used op counters and the counters of the
/// system calls those operations make. An operation's reads and accounting touch only these
/// two lines of osmem's globals: measured, each line still cold after a system call costs
/// about as much as all of osmem's own work on a small range.
#[repr(C, align(128))]
struct Lines {
    words: [AtomicU32; 4],
    hot: [AtomicU64; 4],
    c: [AtomicU64; N],
    moved: [AtomicU64; 16],
    created: [AtomicU64; 4],
    dropped: [AtomicU64; 4],
}
static COUNTERS: Lines = Lines {
    words: [ZERO32; 4],
    hot: [ZERO; 4],
    c: [ZERO; N],
    moved: [ZERO; 16],
    created: [ZERO; 4],
    dropped: [ZERO; 4],
};

#[inline]
pub(crate) fn bump(c: Counter) {
    add(c, 1);
}

#[inline]
pub(crate) fn add(c: Counter, n: u64) {
    COUNTERS.c[c as usize].fetch_add(n, Ordering::Relaxed);
}

#[inline]
pub(crate) fn sub(c: Counter, n: u64) {
    COUNTERS.c[c as usize].fetch_sub(n, Ordering::Relaxed);
}
