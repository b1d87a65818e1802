//! Accounting: bytes per state and counters per primitive, advice, fallback and downgrade.
//!
//! Every figure is a relaxed atomic in one static array. Relaxed is enough: each counter is
//! exact on its own (atomic read-modify-write never loses an update), and a snapshot is
//! documented as not being a single instant across counters. Byte counts move between states
//! with one add and one subtract per transition, so with operations on disjoint ranges the
//! totals are exact once those operations have returned.

use core::sync::atomic::{AtomicU64, Ordering};

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
            Stats { $( $field: COUNTERS.0[Counter::$variant as usize].load(Ordering::Relaxed), )* }
        }
    };
}

counters! {
    /// Bytes of live regions that are Reserved (never mapped, or unmapped back by nothing).
    reserved_bytes => ReservedBytes,
    /// Bytes that are Prepared: usable after `used`, no physical backing expected.
    prepared_bytes => PreparedBytes,
    /// Bytes that are Ready: safe to read and write.
    ready_bytes => ReadyBytes,
    /// Bytes that were Ready and have been faulted (Go's Reserved-after-sysFault).
    faulted_bytes => FaultedBytes,

    // The counters every unused/fault/map/used touches come first, so a call dirties one or
    // two cache lines of counters rather than four (measured: the cold counter lines were
    // most of osmem's 50-70 ns over a raw 4 KiB madvise).
    /// `unused` calls that succeeded (Ready → Prepared).
    unused_ops => UnusedOps,
    /// `fault` calls that succeeded (Ready → Faulted).
    fault_ops => FaultOps,
    /// `madvise` syscalls issued (any advice, including zero-length probes).
    madvise_calls => MadviseCalls,
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
    /// `map` calls that succeeded (Reserved → Prepared).
    map_ops => MapOps,
    /// `used` calls that succeeded (Prepared → Ready).
    used_ops => UsedOps,
    /// `madvise(MADV_GUARD_REMOVE)` calls.
    madv_guard_remove => MadvGuardRemove,
    /// `madvise` syscalls that failed.
    madvise_errors => MadviseErrors,

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
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

/// Cache-line aligned, so the hot counters above share lines only with each other.
#[repr(C, align(64))]
struct Lines([AtomicU64; N]);
static COUNTERS: Lines = Lines([ZERO; N]);

#[inline]
pub(crate) fn bump(c: Counter) {
    add(c, 1);
}

#[inline]
pub(crate) fn add(c: Counter, n: u64) {
    COUNTERS.0[c as usize].fetch_add(n, Ordering::Relaxed);
}

#[inline]
pub(crate) fn sub(c: Counter, n: u64) {
    COUNTERS.0[c as usize].fetch_sub(n, Ordering::Relaxed);
}
