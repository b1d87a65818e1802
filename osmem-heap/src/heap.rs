//! The page heap: address space from one osmem reservation, pages handed out in runs lowest
//! address first through a tree of free-run summaries, freed by run, and released to the OS
//! (scavenged) by run. Go's `pageAlloc` (mpagealloc.go, mpallocbits.go) with osmem below it.
//!
//! States, in osmem's terms: a page that is free and released ("scavenged"), or never used
//! since the heap grew, is osmem-Prepared (no memory behind it); every other page is Ready. An
//! allocation that takes scavenged pages makes them Ready (`used`); a release makes free
//! pages Prepared (`unused`, DONTNEED: they read zero afterwards). So an allocation knows
//! exactly which of its pages may hold old data (`needzero`).
//!
//! Locking: one spin lock for the bookkeeping. `used` and the releases run with it released,
//! on pages the heap has marked in use meanwhile so that nothing else touches them (Go's
//! `scavengeOne` does the same around `sysUnused`); growing maps new chunks under it, as Go's
//! `mheap.grow` does.

use crate::bits::{self, ChunkBits, Sum, CHUNK_PAGES, WORDS};
use crate::lock::Lock;
use crate::{HeapError, HeapStats, Mode};
use core::cell::UnsafeCell;
use core::mem::{size_of, ManuallyDrop};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use osmem::{Batch, BatchKind, Reservation, State, UnusedAdvice};

/// Summary levels: chunks, then groups of 64, 64², …: 5 levels cover 2^30 chunks.
const MAX_LEVELS: usize = 6;
const FAN: usize = 64;
/// Chunks added at least when the heap grows (8 MiB with 4 KiB pages).
const GROW_CHUNKS: usize = 4;
/// Runs released per `process_madvise` by `release` and the scavenger: the kernel's limit
/// (IOV_MAX). Measured: with another thread of the process running, every call costs a TLB
/// shootdown IPI (tens of µs on a VM), so 64 runs per call released 8 KiB runs at 0.67× the
/// rate of the raw 1024-run calls. Its stack cost: ~34 KiB (the runs and osmem's `Batch`).
const BATCH: usize = 1024;
/// The same inside `alloc` (synchronous release for the memory limit): an allocator may run
/// on a small stack, so ~2.5 KiB there.
const SYNC_BATCH: usize = 64;
/// Go's `scavengeQuantum`: the Go-faithful scavenger releases at most this much per step
/// (before growing a candidate to a whole huge page).
const SCAVENGE_QUANTUM: usize = 64 << 10;

/// How a heap is made. See [`Heap::create`].
///
/// ```
/// let c = osmem_heap::HeapConfig::new(1 << 30);
/// assert_eq!(c.max_bytes, 1 << 30);
/// ```
#[derive(Copy, Clone, Debug)]
#[non_exhaustive]
pub struct HeapConfig {
    /// Address space reserved for the heap's pages (rounded up to whole chunks). Nothing is
    /// committed until pages are allocated.
    pub max_bytes: usize,
    /// Where to place it (a hint, as Go's arena hints; 0: anywhere).
    pub hint: usize,
    /// How free memory goes back to the OS.
    pub mode: Mode,
}

impl HeapConfig {
    /// A heap of at most `max_bytes`, anywhere, releasing in batches.
    ///
    /// ```
    /// let c = osmem_heap::HeapConfig::new(64 << 20).hint(0x7e00_0000_0000);
    /// assert_eq!(c.hint, 0x7e00_0000_0000);
    /// ```
    pub const fn new(max_bytes: usize) -> HeapConfig {
        HeapConfig {
            max_bytes,
            hint: 0,
            mode: Mode::Batched,
        }
    }

    /// Place the heap at `addr` if the kernel can (a hint).
    ///
    /// ```
    /// let c = osmem_heap::HeapConfig::new(8 << 20).hint(0x7f00_0000_0000);
    /// assert_eq!(c.hint, 0x7f00_0000_0000);
    /// ```
    pub const fn hint(mut self, addr: usize) -> HeapConfig {
        self.hint = addr;
        self
    }

    /// Release free memory this way.
    ///
    /// ```
    /// let c = osmem_heap::HeapConfig::new(64 << 20).mode(osmem_heap::Mode::GoFaithful);
    /// assert_eq!(c.mode, osmem_heap::Mode::GoFaithful);
    /// ```
    pub const fn mode(mut self, mode: Mode) -> HeapConfig {
        self.mode = mode;
        self
    }
}

/// An allocated run of pages.
///
/// ```
/// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
/// let r = h.alloc(2)?;
/// assert_eq!((r.pages, r.needzero, r.scavenged), (2, false, 2)); // fresh: released, reads zero
/// # unsafe { osmem_heap::Heap::destroy(h) };
/// # Ok::<(), osmem_heap::HeapError>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Run {
    /// The first byte.
    pub addr: usize,
    /// Pages in the run.
    pub pages: usize,
    /// Whether any page may hold old data (it was freed and not released since): the
    /// caller must zero before handing it out as zeroed memory. Exact: pages released or
    /// never used read zero.
    pub needzero: bool,
    /// Pages of the run that had been released (and are now backed again on first touch).
    pub scavenged: usize,
}

/// What a release returned.
///
/// ```
/// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
/// let r = h.alloc(8)?;
/// unsafe { (r.addr as *mut u8).write_bytes(1, 8 * h.page_size()) };
/// h.free(r.addr, 8)?;
/// let rel = h.release_all();
/// assert_eq!((rel.bytes, rel.runs, rel.failed), (8 * h.page_size(), 1, 0));
/// # unsafe { osmem_heap::Heap::destroy(h) };
/// # Ok::<(), osmem_heap::HeapError>(())
/// ```
#[must_use = "what was released (and what could not be) is only said here"]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Released {
    /// Bytes the kernel released.
    pub bytes: usize,
    /// Runs released.
    pub runs: usize,
    /// System calls it took (`process_madvise` batches, or one `madvise` per run).
    pub calls: usize,
    /// Runs whose release failed (they stay free and unreleased).
    pub failed: usize,
}

/// A page heap. Made by [`Heap::create`]; it lives in memory osmem maps for it (never the
/// Rust heap) and stays at one address until [`Heap::destroy`].
///
/// ```
/// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
/// let r = h.alloc(1)?;
/// assert!(h.range().contains(&r.addr));
/// # unsafe { osmem_heap::Heap::destroy(h) };
/// # Ok::<(), osmem_heap::HeapError>(())
/// ```
#[repr(C)]
pub struct Heap {
    lock: Lock,
    arena: Reservation,
    meta: ManuallyDrop<Reservation>,
    ps: usize,
    shift: u32,
    max_chunks: usize,
    mode: Mode,
    inner: UnsafeCell<Inner>,
    /// The scavenger's wake word (see `wake.rs`): bumped by what it should see at once.
    pub(crate) wake: AtomicU32,
    /// 0 while the scavenger is awake (or there is none); while it sleeps, the goal in bytes
    /// that is worth waking it for (`usize::MAX`: only a cycle, a limit change or a stop).
    pub(crate) wake_at: AtomicUsize,
}

// SAFETY: `inner` is only touched with `lock` held; the reservations are Sync.
unsafe impl Sync for Heap {}
unsafe impl Send for Heap {}

struct Inner {
    /// Chunks usable (mapped, bitmaps and summaries set).
    grown: usize,
    bits: *mut ChunkBits,
    levels: [*mut Sum; MAX_LEVELS],
    level_len: [usize; MAX_LEVELS],
    nlevels: usize,
    in_use: usize,
    released: usize,
    released_total: u64,
    release_calls: u64,
    release_runs: u64,
    /// The memory limit in pages (0: none).
    limit: usize,
    /// Go's retain goal in pages from the last `cycle` (0: none yet: in-use × 1.1).
    retain_goal: usize,
    /// `in_use` and the heap goal at the last `cycle`.
    last_in_use: usize,
    last_heap_goal: usize,
    /// Bytes released synchronously (on allocation, to stay under the limit), and the time
    /// it took.
    sync_released: u64,
    sync_work_ns: u64,
    /// GC cycles reported (`cycle`): the density gate's generation.
    gen: u32,
    /// No chunk at or above this one has free, unreleased pages (Go's scavenger search
    /// address): a release starts here instead of at the top, so releasing a fragmented GiB
    /// run by run is not quadratic in the chunks. Raised by every free.
    scav_top: usize,
    /// The background scavenger's work.
    bg_released: u64,
    bg_work_ns: u64,
}

/// Go's `retainExtraPercent`: keep 10% over the in-use size.
const RETAIN_EXTRA_PERCENT: usize = 10;
/// Go's `reduceExtraPercent`: the memory-limit goal is 95% of the limit.
const REDUCE_EXTRA_PERCENT: usize = 5;

impl Heap {
    /// Reserve a heap: its address space (`max_bytes`, nothing committed) and its metadata
    /// (220 bytes per chunk of 512 pages — three 64-byte bitmaps, use counts and a summary —
    /// plus the summary tree above: about 0.01% of `max_bytes` with 4 KiB pages, resident
    /// only for chunks the heap has grown into).
    /// Returns a `'static` reference: the heap lives in its own metadata mapping, so an
    /// allocator can keep it in a static without any Rust heap.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// let r = h.alloc(4)?;
    /// assert!(!r.needzero); // fresh pages read zero
    /// h.free(r.addr, r.pages)?;
    /// unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn create(config: HeapConfig) -> Result<&'static Heap, HeapError> {
        let ps = osmem::page_size();
        let chunk = ps * CHUNK_PAGES;
        if config.max_bytes == 0 {
            return Err(HeapError::ZeroPages);
        }
        let max_chunks = config.max_bytes.div_ceil(chunk);
        let max_bytes = max_chunks
            .checked_mul(chunk)
            .filter(|&b| b <= isize::MAX as usize && max_chunks <= u32::MAX as usize / CHUNK_PAGES)
            .ok_or(HeapError::TooLarge {
                bytes: config.max_bytes,
            })?;
        // Metadata layout: the Heap, the chunk bitmaps, then each summary level.
        let mut level_len = [0usize; MAX_LEVELS];
        let mut nlevels = 0;
        let mut n = max_chunks;
        loop {
            level_len[nlevels] = n;
            nlevels += 1;
            if n == 1 {
                break;
            }
            n = n.div_ceil(FAN);
        }
        let head = size_of::<Heap>().next_multiple_of(64);
        let bits_off = head;
        let mut off = bits_off + max_chunks * size_of::<ChunkBits>();
        let mut level_off = [0usize; MAX_LEVELS];
        for k in 0..nlevels {
            level_off[k] = off;
            off += level_len[k] * size_of::<Sum>();
        }
        let meta_len = off.next_multiple_of(ps);
        let arena = if config.hint != 0 {
            Reservation::reserve_aligned_at(config.hint, max_bytes, chunk)
        } else {
            Reservation::reserve_aligned(max_bytes, chunk)
        }
        .map_err(HeapError::Os)?;
        // Zero-filled and lazily backed: only the pages of grown chunks become resident.
        let meta = Reservation::alloc(meta_len).map_err(HeapError::Os)?;
        let base = meta.as_ptr() as usize;
        let mut levels = [core::ptr::null_mut(); MAX_LEVELS];
        for k in 0..nlevels {
            levels[k] = (base + level_off[k]) as *mut Sum;
        }
        let inner = Inner {
            grown: 0,
            bits: (base + bits_off) as *mut ChunkBits,
            levels,
            level_len,
            nlevels,
            in_use: 0,
            released: 0,
            released_total: 0,
            limit: 0,
            retain_goal: 0,
            last_in_use: 0,
            last_heap_goal: 0,
            sync_released: 0,
            sync_work_ns: 0,
            gen: 0,
            scav_top: 0,
            bg_released: 0,
            bg_work_ns: 0,
            release_calls: 0,
            release_runs: 0,
        };
        let heap = base as *mut Heap;
        // SAFETY: the mapping starts with room for a Heap (64-byte aligned, zero-filled) and
        // is ours alone; the Heap keeps the mapping alive until `destroy`.
        let heap: &'static Heap = unsafe {
            heap.write(Heap {
                lock: Lock::new(),
                arena,
                meta: ManuallyDrop::new(meta),
                ps,
                shift: ps.trailing_zeros(),
                max_chunks,
                mode: config.mode,
                inner: UnsafeCell::new(inner),
                wake: AtomicU32::new(0),
                wake_at: AtomicUsize::new(0),
            });
            &*heap
        };
        if !crate::lock::register(&heap.lock) {
            // SAFETY: nobody else has seen the heap.
            unsafe { Heap::destroy_unregistered(heap) };
            return Err(HeapError::TooManyHeaps);
        }
        Ok(heap)
    }

    /// Unmap the heap: its pages and its metadata, in which the `Heap` itself lives.
    ///
    /// # Safety
    /// Nothing may use the heap or any memory allocated from it any more: every `&Heap`
    /// obtained from `create` is dangling afterwards, so a background scavenger must be
    /// stopped first. (Another thread may fork meanwhile: the heap leaves the fork handlers'
    /// list first, and `destroy` waits for a fork in progress before it unmaps anything.)
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
    /// unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub unsafe fn destroy(heap: &'static Heap) {
        crate::lock::unregister(&heap.lock);
        Self::destroy_unregistered(heap);
    }

    unsafe fn destroy_unregistered(heap: &'static Heap) {
        let p = heap as *const Heap as *mut Heap;
        // Move both reservations out of the mapping before unmapping it.
        let arena = core::ptr::read(&(*p).arena);
        let meta = ManuallyDrop::into_inner(core::ptr::read(&(*p).meta));
        drop(arena);
        drop(meta);
    }

    /// The heap's address range.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
    /// assert!(h.range().len() >= 8 << 20);
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn range(&self) -> core::ops::Range<usize> {
        let b = self.arena.as_ptr() as usize;
        b..b + self.arena.len()
    }

    /// The heap's page size (the OS page).
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
    /// assert_eq!(h.page_size(), osmem::page_size());
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn page_size(&self) -> usize {
        self.ps
    }

    /// How this heap releases memory.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
    /// assert_eq!(h.mode(), osmem_heap::Mode::Batched); // the default
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// GC cycles reported so far (see [`cycle`](Self::cycle)).
    #[allow(dead_code)] // without the std feature nothing calls it
    pub(crate) fn generation(&self) -> u32 {
        if self.lock.held_by_me() {
            return 0;
        }
        self.locked(|i| i.gen)
    }

    /// Account background work (the scavenger thread).
    #[allow(dead_code)] // without the std feature nothing calls it
    pub(crate) fn note_background(&self, bytes: usize, ns: u64) {
        if self.lock.held_by_me() {
            return;
        }
        self.locked(|i| {
            i.bg_released += bytes as u64;
            i.bg_work_ns += ns;
        });
    }

    #[allow(clippy::mut_from_ref)] // only with the lock held (see `locked`)
    fn inner(&self) -> &mut Inner {
        // SAFETY: callers hold the lock.
        unsafe { &mut *self.inner.get() }
    }

    fn locked<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        self.lock.lock();
        let r = f(self.inner());
        self.lock.unlock();
        r
    }

    /// Allocate `pages` contiguous pages, the lowest-addressed run that fits (growing the heap
    /// if none does). The run's pages are Ready; `needzero` says whether any may hold old
    /// data.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// let a = h.alloc(3)?;
    /// let b = h.alloc(1)?;
    /// assert_eq!(b.addr, a.addr + 3 * h.page_size()); // lowest address first
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn alloc(&self, pages: usize) -> Result<Run, HeapError> {
        if self.lock.held_by_me() {
            return Err(HeapError::Busy);
        }
        if pages == 0 {
            return Err(HeapError::ZeroPages);
        }
        if pages > self.max_chunks * CHUNK_PAGES {
            return Err(HeapError::TooLarge {
                bytes: pages.saturating_mul(self.ps),
            });
        }
        // Find and claim (alloc bits set; scavenged bits left as they are, so a failure can
        // give the run back exactly as it was).
        let (p, scav) = self.claim(pages)?;
        let len = pages << self.shift;
        if scav > 0 {
            // Released pages come back: Prepared → Ready (Ready pages of the run are left
            // alone). `claim` left the lock released "for a syscall".
            let used = self.arena.used(p << self.shift, len);
            self.lock.lock();
            self.lock.syscall_done();
            if let Err(e) = used {
                self.unclaim(self.inner(), p, pages, scav);
                self.lock.unlock();
                return Err(HeapError::Os(e));
            }
            self.lock.unlock();
        }
        self.locked(|i| {
            for (c, a, b) in split(p, pages) {
                // SAFETY: a grown chunk's bitmaps, under the lock.
                bits::clear(unsafe { &mut (*i.bits.add(c)).scav }, a, b);
            }
        });
        // Synchronous scavenging (Go's allocSpan): if the heap now holds more than its memory
        // limit, release the excess at once, before returning.
        if scav > 0 {
            let over = self.locked(|i| {
                let ready = i.grown * CHUNK_PAGES - i.released;
                if i.limit > 0 && ready > i.limit {
                    ready - i.limit
                } else {
                    0
                }
            });
            if over > 0 {
                // Forced, as Go's allocSpan scavenges for the limit: dense chunks too.
                let t0 = now_ns();
                let r = self.release_inner::<SYNC_BATCH>(over << self.shift, true);
                let ns = now_ns().saturating_sub(t0);
                self.locked(|i| {
                    i.sync_released += r.bytes as u64;
                    i.sync_work_ns += ns;
                });
            }
        }
        Ok(Run {
            addr: self.arena.as_ptr() as usize + (p << self.shift),
            pages,
            needzero: scav < pages,
            scavenged: scav,
        })
    }

    /// Set (or clear, with 0) the memory limit: the heap keeps the memory it holds (in use
    /// plus free-unreleased, Go's `mappedReady`) at most `bytes`, releasing synchronously on
    /// allocation past it, and the scavenger aims at 95% of it (Go's memory-limit goal).
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// h.set_memory_limit(8 << 20);
    /// assert_eq!(h.memory_limit(), 8 << 20);
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn set_memory_limit(&self, bytes: usize) {
        if self.lock.held_by_me() {
            return;
        }
        let pages = bytes >> self.shift;
        self.locked(|i| i.limit = pages);
        self.changed();
    }

    /// Take the memory limit from the process's cgroup (v2 `memory.max` / `memory.high`, or
    /// v1 `memory.limit_in_bytes`, the smallest along the hierarchy): containers are where
    /// runtimes live. The cgroup's limit covers the whole process, so a runtime with much
    /// memory outside this heap should set a lower one itself. Returns what was found;
    /// without a limit, nothing changes.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// if let Some(l) = h.set_memory_limit_from_cgroup() {
    ///     assert_eq!(h.memory_limit(), l.bytes / h.page_size() * h.page_size());
    /// }
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn set_memory_limit_from_cgroup(&self) -> Option<crate::CgroupLimit> {
        let l = crate::cgroup_memory_limit()?;
        self.set_memory_limit(l.bytes);
        Some(l)
    }

    /// The memory limit (0: none).
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
    /// assert_eq!(h.memory_limit(), 0);
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn memory_limit(&self) -> usize {
        if self.lock.held_by_me() {
            return 0;
        }
        self.locked(|i| i.limit << self.shift)
    }

    /// A GC cycle ended with heap goal `heap_goal` (bytes): recompute the retain goal as Go's
    /// `gcPaceScavenger` does — the in-use size now, scaled by this goal over the last one,
    /// plus 10%. Without cycles the retain goal is in-use × 1.1, where in-use is the pages
    /// allocated and not freed.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// h.cycle(32 << 20);
    /// h.cycle(16 << 20); // the heap goal halves: retain half the in-use size (+10%)
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn cycle(&self, heap_goal: usize) {
        if self.lock.held_by_me() {
            return;
        }
        let ps = self.ps;
        self.locked(|i| {
            if i.last_heap_goal > 0 {
                let goal =
                    (i.in_use as u128 * heap_goal as u128 / i.last_heap_goal as u128) as usize;
                let goal = goal + goal / 100 * RETAIN_EXTRA_PERCENT;
                i.retain_goal = goal.max(1);
            }
            i.last_in_use = i.in_use;
            i.last_heap_goal = heap_goal.max(ps);
            // A new generation for the density gate (chunks roll their history lazily, on
            // their next allocation or free, as Go's scavChunkData does).
            i.gen = i.gen.wrapping_add(1);
        });
        self.changed();
    }

    /// Bytes the scavenger should release now to meet the tighter of the two goals: the
    /// memory-limit goal (held memory ≤ 95% of the limit) and the retain goal (held memory ≤
    /// the retain goal: see [`cycle`](Self::cycle)), at most the free pages not yet released
    /// (in-use pages are never released). 0 when both are met.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// let r = h.alloc(100)?;
    /// unsafe { (r.addr as *mut u8).write_bytes(1, 100 * h.page_size()) };
    /// h.free(r.addr, 100)?;
    /// assert_eq!(h.scavenge_goal(), 100 * h.page_size()); // nothing in use: keep nothing
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn scavenge_goal(&self) -> usize {
        if self.lock.held_by_me() {
            return 0;
        }
        self.locked(|i| self.goal_of(i))
    }

    /// [`scavenge_goal`](Self::scavenge_goal), in a locked section.
    fn goal_of(&self, i: &Inner) -> usize {
        let ready = i.grown * CHUNK_PAGES - i.released;
        let retain = if i.retain_goal > 0 {
            i.retain_goal
        } else {
            i.in_use + i.in_use / 100 * RETAIN_EXTRA_PERCENT
        };
        let by_retain = ready.saturating_sub(retain);
        let by_limit = if i.limit > 0 {
            ready.saturating_sub(i.limit - i.limit / 100 * REDUCE_EXTRA_PERCENT)
        } else {
            0
        };
        let free_unreleased = (i.grown * CHUNK_PAGES).saturating_sub(i.in_use + i.released);
        by_retain.max(by_limit).min(free_unreleased) << self.shift
    }

    /// Wake a sleeping scavenger now (a cycle, a limit change, a free worth its while, a
    /// stop).
    pub(crate) fn wake_scavenger(&self) {
        self.wake.fetch_add(1, Ordering::SeqCst);
        crate::wake::futex_wake(&self.wake);
    }

    /// After a change that may give a sleeping scavenger work: wake it if it sleeps.
    fn changed(&self) {
        if self.wake_at.load(Ordering::SeqCst) != 0 {
            self.wake_scavenger();
        }
    }

    /// Release toward the goal: at most `max_bytes`, and no more than
    /// [`scavenge_goal`](Self::scavenge_goal) asks. For runtimes that drive the scavenger
    /// themselves (a budget per call).
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// let r = h.alloc(64)?;
    /// unsafe { (r.addr as *mut u8).write_bytes(1, 64 * h.page_size()) };
    /// h.free(r.addr, 64)?;
    /// let done = h.scavenge(16 * h.page_size());
    /// assert_eq!(done.bytes, 16 * h.page_size());
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn scavenge(&self, max_bytes: usize) -> Released {
        let want = self.scavenge_goal().min(max_bytes);
        if want == 0 {
            return Released::default();
        }
        self.release_inner::<BATCH>(want, false)
    }

    /// Find a fit (growing the heap if none) and mark it in use; returns the first page and
    /// how many of the run's pages had been released.
    fn claim(&self, pages: usize) -> Result<(usize, usize), HeapError> {
        self.lock.lock();
        let p = loop {
            let i = self.inner();
            if let Some(p) = self.find(i, pages) {
                break p;
            }
            let from = i.grown;
            // The free run at the top of the grown heap joins the new chunks: grow just
            // enough for the request to fit there (at least GROW_CHUNKS), and refuse without
            // growing when even the whole heap could not hold it (a refusal changes nothing).
            let tail = Self::free_tail(i);
            let room = tail + (self.max_chunks - from) * CHUNK_PAGES;
            let add = pages
                .saturating_sub(tail)
                .div_ceil(CHUNK_PAGES)
                .max(GROW_CHUNKS)
                .min(self.max_chunks - from);
            if pages > room || add == 0 {
                self.lock.unlock();
                return Err(HeapError::OutOfMemory {
                    pages,
                    max_bytes: self.arena.len(),
                });
            }
            // Map under the lock, as Go's `mheap.grow` calls `sysMap` with the heap lock held:
            // growth is rare (8 MiB at a time) and one mprotect, and a fork can then never
            // leave a child with chunks half-grown.
            let chunk = CHUNK_PAGES << self.shift;
            let mapped = self.arena.map(from * chunk, add * chunk);
            let i = self.inner();
            if let Err(e) = mapped {
                self.lock.unlock();
                return Err(HeapError::Os(e));
            }
            for c in from..from + add {
                // SAFETY: metadata of a chunk below max_chunks, not yet in use.
                unsafe {
                    let b = &mut *i.bits.add(c);
                    b.alloc = [0; WORDS];
                    b.scav = [u64::MAX; WORDS];
                    b.hide = [0; WORDS];
                    b.in_use = 0;
                    b.last_in_use = 0;
                    b.gen = i.gen;
                }
            }
            i.grown = from + add;
            i.released += add * CHUNK_PAGES;
            self.resummarize(i, from * CHUNK_PAGES, (from + add) * CHUNK_PAGES);
        };
        let i = self.inner();
        let mut scav = 0;
        for (c, a, b) in split(p, pages) {
            // SAFETY: chunks of a fit are grown.
            let cb = unsafe { &mut *i.bits.add(c) };
            debug_assert_eq!(bits::count(&cb.alloc, a, b), 0);
            bits::set(&mut cb.alloc, a, b);
            cb.note_use(b - a, true, i.gen);
            scav += bits::count(&cb.scav, a, b);
        }
        // The run's released pages count as in use, not released, from now on (a run being
        // made Ready must never be counted twice: `scavenge_goal` relies on
        // in_use + released <= mapped).
        i.in_use += pages;
        i.released -= scav;
        self.resummarize(i, p, p + pages);
        if scav > 0 {
            // The caller makes the released pages Ready (`used`) before anything else.
            self.lock.unlock_for_syscall();
        } else {
            self.lock.unlock();
        }
        Ok((p, scav))
    }

    /// Under the lock: free pages at the top of the grown heap (the run ending at its end).
    fn free_tail(i: &Inner) -> usize {
        let mut tail = 0;
        let mut c = i.grown;
        while c > 0 {
            c -= 1;
            let s = Self::sum(i, 0, c);
            tail += s.end as usize;
            if s.end as usize != CHUNK_PAGES {
                break;
            }
        }
        tail
    }

    /// Under the lock: give a claimed run back unchanged (`scav` of its pages still released).
    fn unclaim(&self, i: &mut Inner, p: usize, pages: usize, scav: usize) {
        for (c, a, b) in split(p, pages) {
            // SAFETY: a grown chunk.
            let cb = unsafe { &mut *i.bits.add(c) };
            bits::clear(&mut cb.alloc, a, b);
            cb.note_use(b - a, false, i.gen);
        }
        i.in_use -= pages;
        i.released += scav;
        Self::candidates_at(i, p, pages);
        self.resummarize(i, p, p + pages);
    }

    /// Free the run of `pages` pages at `addr` (as `alloc` returned it, or any part of one).
    /// Refuses, changing nothing, a run not entirely in use (a double free) or not in the
    /// heap.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// let r = h.alloc(2)?;
    /// h.free(r.addr, 2)?;
    /// assert!(matches!(h.free(r.addr, 2), Err(osmem_heap::HeapError::NotAllocated { .. })));
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn free(&self, addr: usize, pages: usize) -> Result<(), HeapError> {
        if self.lock.held_by_me() {
            return Err(HeapError::Busy);
        }
        let p = self.page_of(addr, pages)?;
        self.locked(|i| {
            if p + pages > i.grown * CHUNK_PAGES
                || !split(p, pages)
                    // SAFETY: grown chunks.
                    .all(|(c, a, b)| {
                        // SAFETY: grown chunks.
                        let cb = unsafe { &*i.bits.add(c) };
                        // Allocated, and not a free run hidden while the kernel releases it.
                        bits::all_set(&cb.alloc, a, b) && bits::count(&cb.hide, a, b) == 0
                    })
            {
                return Err(HeapError::NotAllocated { addr, pages });
            }
            for (c, a, b) in split(p, pages) {
                // SAFETY: grown chunks.
                let cb = unsafe { &mut *i.bits.add(c) };
                bits::clear(&mut cb.alloc, a, b);
                cb.note_use(b - a, false, i.gen);
            }
            i.in_use -= pages;
            Self::candidates_at(i, p, pages);
            self.resummarize(i, p, p + pages);
            // A sleeping scavenger is woken only when this free gives it work it acts on
            // (one load while it is awake). SeqCst with its announcement: see `wake.rs`.
            let at = self.wake_at.load(Ordering::SeqCst);
            Ok(at != 0 && self.goal_of(i) >= at)
        })
        .map(|wake| {
            if wake {
                self.wake_scavenger();
            }
        })
    }

    /// The page index of `addr` for a run of `pages`, or the typed refusal.
    fn page_of(&self, addr: usize, pages: usize) -> Result<usize, HeapError> {
        if pages == 0 {
            return Err(HeapError::ZeroPages);
        }
        let r = self.range();
        if addr & (self.ps - 1) != 0 {
            return Err(HeapError::Unaligned { addr });
        }
        let end = pages
            .checked_mul(self.ps)
            .and_then(|l| addr.checked_add(l))
            .ok_or(HeapError::TooLarge {
                bytes: pages.saturating_mul(self.ps),
            })?;
        if addr < r.start || end > r.end {
            return Err(HeapError::NotInHeap { addr, pages });
        }
        Ok((addr - r.start) >> self.shift)
    }

    /// Release free, unreleased pages to the OS, highest addresses first (as Go's scavenger),
    /// until `max_bytes` are released or none is left. A chunk (one huge page) entirely free
    /// and unreleased goes out whole, so the release may exceed `max_bytes` by less than a
    /// chunk: never splitting a free huge page lets the kernel back it with one again. Each run is marked in use while the
    /// kernel releases it, so allocation goes on meanwhile. Returns what the kernel released.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// let r = h.alloc(16)?;
    /// unsafe { (r.addr as *mut u8).write_bytes(1, 16 * h.page_size()) };
    /// h.free(r.addr, 16)?;
    /// let rel = h.release(usize::MAX);
    /// assert_eq!(rel.bytes, 16 * h.page_size());
    /// assert!(h.alloc(16)?.needzero == false); // released pages read zero
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn release(&self, max_bytes: usize) -> Released {
        self.release_inner::<BATCH>(max_bytes, true)
    }

    /// `force`: release from dense chunks too (an explicit request, or the memory limit);
    /// otherwise the density gate applies (see [`Mode`]).
    fn release_inner<const N: usize>(&self, max_bytes: usize, force: bool) -> Released {
        if self.lock.held_by_me() {
            return Released::default();
        }
        let mut out = Released::default();
        let mut budget = max_bytes >> self.shift;
        let mut runs = [(0usize, 0usize); N];
        while budget > 0 {
            // Collect up to BATCH candidates, highest first, and hide them; the lock is then
            // released for the release calls (counted as in flight for fork).
            self.lock.lock();
            let n = match self.mode {
                Mode::Batched => self.collect(self.inner(), &mut runs, &mut budget, force),
                Mode::GoFaithful => self.collect_go(self.inner(), &mut runs, &mut budget, force),
            };
            if n == 0 {
                self.lock.unlock();
                break;
            }
            self.lock.unlock_for_syscall();
            // Release with the lock dropped.
            let mut ok = [false; N];
            match self.mode {
                Mode::Batched => {
                    let mut b: Batch<'_, N> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
                    // Lowest address first: runs are collected highest first, and the kernel
                    // walks an ascending iovec faster (measured: a descending one cost raw
                    // process_madvise 6% more with another thread running).
                    for &(p, len) in runs[..n].iter().rev() {
                        // SAFETY: the run is free and marked in use: nothing references it.
                        let _ = unsafe { b.push(&self.arena, p << self.shift, len << self.shift) };
                    }
                    // SAFETY: as above.
                    let rep = unsafe { b.flush() };
                    // The process_madvise calls osmem made, and one per run it released on its
                    // own (a kernel or sandbox without process_madvise: one madvise each).
                    out.calls += rep.batch_calls + rep.per_range;
                    if rep.ranges == n && rep.failed == 0 && rep.not_released == 0 {
                        // osmem settled every run as released (the usual outcome).
                        ok[..n].fill(true);
                    } else {
                        for (k, &(p, _)) in runs[..n].iter().enumerate() {
                            // What the release really did, per run: osmem's state after
                            // the flush.
                            ok[k] = self.arena.state(p << self.shift) == Some(State::Prepared);
                        }
                    }
                }
                Mode::GoFaithful => {
                    for (k, &(p, len)) in runs[..n].iter().enumerate() {
                        // SAFETY: as above.
                        ok[k] = unsafe {
                            self.arena.unused_with(
                                p << self.shift,
                                len << self.shift,
                                UnusedAdvice::DontNeed,
                            )
                        }
                        .is_ok();
                        out.calls += 1;
                    }
                }
            }
            self.locked(|i| {
                self.lock.syscall_done();
                let (mut bytes, mut done) = (0usize, 0usize);
                let (mut lo, mut hi) = (usize::MAX, 0);
                for (k, &(p, len)) in runs[..n].iter().enumerate() {
                    for (c, a, b) in split(p, len) {
                        // SAFETY: grown chunks.
                        let cb = unsafe { &mut *i.bits.add(c) };
                        bits::clear(&mut cb.alloc, a, b);
                        bits::clear(&mut cb.hide, a, b);
                        if ok[k] {
                            bits::set(&mut cb.scav, a, b);
                        }
                    }
                    if ok[k] {
                        i.released += len;
                        bytes += len << self.shift;
                        done += 1;
                    } else {
                        out.failed += 1;
                        Self::candidates_at(i, p, len);
                    }
                    lo = lo.min(p);
                    hi = hi.max(p + len);
                }
                // One pass over the summaries for the whole batch, not one per run (per run
                // it cost ~40% of releasing 8 KiB runs).
                self.resummarize(i, lo, hi);
                out.bytes += bytes;
                out.runs += done;
                i.released_total += bytes as u64;
                i.release_runs += done as u64;
            });
            if out.failed > 0 && ok[..n].iter().all(|&x| !x) {
                break; // nothing can be released now: do not spin
            }
        }
        self.locked(|i| i.release_calls += out.calls as u64);
        out
    }

    /// Under the lock: up to `runs.len()` runs of free, unreleased pages, highest first, at most
    /// `budget` pages in all, each marked in use (hidden) until its release is settled.
    fn collect(
        &self,
        i: &mut Inner,
        runs: &mut [(usize, usize)],
        budget: &mut usize,
        force: bool,
    ) -> usize {
        let mut n = 0;
        let mut c = i.scav_top.min(i.grown);
        // Whether every chunk from `c` up is known to hold no candidate.
        let mut clear_above = true;
        while c > 0 && n < runs.len() && *budget > 0 {
            c -= 1;
            // SAFETY: a grown chunk.
            let cb = unsafe { &mut *i.bits.add(c) };
            // The density gate, on the present only: a chunk ≥ 96.875% in use now is likely
            // to be allocated from again soon and its few free pages are not worth a call.
            if !force && cb.in_use >= bits::HI_OCC_PAGES {
                clear_above = false;
                continue;
            }
            if (0..WORDS).all(|w| cb.alloc[w] | cb.scav[w] == 0) {
                // All free and unreleased: one huge page, released whole even past the budget
                // (Go's rule: a free huge page is never split, so the kernel can back it with
                // one huge page again).
                cb.alloc = [u64::MAX; WORDS];
                cb.hide = [u64::MAX; WORDS];
                push_run(runs, &mut n, c * CHUNK_PAGES, CHUNK_PAGES);
                *budget = budget.saturating_sub(CHUNK_PAGES);
                if clear_above {
                    i.scav_top = c;
                }
                continue;
            }
            Self::take_from(cb, c, runs, &mut n, budget);
            if clear_above && (0..WORDS).all(|w| cb.alloc[w] | cb.scav[w] == u64::MAX) {
                i.scav_top = c;
            } else {
                clear_above = false;
            }
        }
        if n > 0 {
            // Runs are highest first: one pass over the summaries covering all of them.
            self.resummarize(i, runs[n - 1].0, runs[0].0 + runs[0].1);
        }
        n
    }

    /// Take candidate runs from chunk `c`, highest first, into `runs` (merging with the run
    /// just above), marking them in use.
    fn take_from(
        cb: &mut ChunkBits,
        c: usize,
        runs: &mut [(usize, usize)],
        n: &mut usize,
        budget: &mut usize,
    ) {
        let mut w = WORDS;
        while w > 0 && *n < runs.len() && *budget > 0 {
            w -= 1;
            // Free (alloc 0) and unreleased (scav 0): candidates; take runs from the top of
            // the word down.
            let mut cand = !(cb.alloc[w] | cb.scav[w]);
            while cand != 0 && *n < runs.len() && *budget > 0 {
                // The highest candidate page, and the run of candidates ending there: it
                // starts just above the highest non-candidate below it.
                let top = 63 - cand.leading_zeros() as usize;
                let below = !cand & ((1u64 << top) - 1);
                let start = if below == 0 {
                    0
                } else {
                    64 - below.leading_zeros() as usize
                };
                let len = (top + 1 - start).min(*budget);
                let a = top + 1 - len;
                let m = (u64::MAX >> (64 - len)) << a;
                cand &= !m;
                cb.alloc[w] |= m;
                cb.hide[w] |= m;
                push_run(runs, n, c * CHUNK_PAGES + w * 64 + a, len);
                *budget -= len;
            }
        }
    }

    /// Under the lock: pages `[p, p + pages)` may be candidates again (freed, or a release
    /// failed): the scavenger's search must start at or above them.
    fn candidates_at(i: &mut Inner, p: usize, pages: usize) {
        let top = (p + pages - 1) / CHUNK_PAGES + 1;
        if i.scav_top < top {
            i.scav_top = top;
        }
    }

    /// Under the lock: Go's `findScavengeCandidate` for the highest chunk with free,
    /// unreleased pages: the run ending at its highest such page, at most one scavenge quantum
    /// (64 KiB) of it from the top, grown down to the chunk's (huge page's) start when the
    /// whole huge page below the candidate is free and unreleased — so a free huge page goes
    /// out whole instead of split. One candidate (one `madvise`) per call, as Go's
    /// `scavengeOne`; it may exceed the budget by that growth, as Go's does.
    fn collect_go(
        &self,
        i: &mut Inner,
        runs: &mut [(usize, usize)],
        budget: &mut usize,
        force: bool,
    ) -> usize {
        let quantum = (SCAVENGE_QUANTUM >> self.shift).max(1);
        let mut c = i.scav_top.min(i.grown);
        let mut clear_above = true;
        while c > 0 {
            c -= 1;
            // SAFETY: a grown chunk.
            let cb = unsafe { &mut *i.bits.add(c) };
            // Go's density gate: skip a chunk dense in this GC cycle or the last.
            if !force && cb.dense_go(i.gen) {
                clear_above = false;
                continue;
            }
            let cand = |w: usize| !(cb.alloc[w] | cb.scav[w]);
            let Some(wi) = (0..WORDS).rev().find(|&w| cand(w) != 0) else {
                if clear_above {
                    i.scav_top = c;
                }
                continue;
            };
            // `end`: one past the highest candidate page; `run`: the candidates ending there.
            let x = cand(wi);
            let top = 63 - x.leading_zeros() as usize;
            let end = wi * 64 + top + 1;
            let mut run = 0;
            let mut p = end;
            while p > 0 {
                let q = p - 1;
                if cand(q / 64) >> (q % 64) & 1 == 0 {
                    break;
                }
                run += 1;
                p = q;
            }
            let size = run.min(quantum).min(*budget).max(1);
            let mut start = end - size;
            // The chunk is one huge page: [0, CHUNK_PAGES).
            let above = start.next_multiple_of(CHUNK_PAGES);
            if above <= end && end - run == 0 {
                // The candidate crosses (or starts on) the huge page's boundary and the free
                // run reaches the huge page's start: take all of it.
                start = 0;
            }
            let len = end - start;
            bits::set(&mut cb.alloc, start, end);
            bits::set(&mut cb.hide, start, end);
            let p = c * CHUNK_PAGES + start;
            runs[0] = (p, len);
            *budget = budget.saturating_sub(len);
            self.resummarize(i, p, p + len);
            return 1;
        }
        0
    }

    /// Release every free page (Go's `debug.FreeOSMemory`, without the GC).
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// let r = h.alloc(8)?;
    /// unsafe { (r.addr as *mut u8).write_bytes(1, 8 * h.page_size()) };
    /// h.free(r.addr, 8)?;
    /// h.release_all();
    /// assert_eq!(h.stats().free_bytes, h.stats().released_bytes);
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn release_all(&self) -> Released {
        self.release(usize::MAX)
    }

    /// The heap's figures now.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// let _r = h.alloc(4)?;
    /// assert_eq!(h.stats().in_use_bytes, 4 * h.page_size());
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn stats(&self) -> HeapStats {
        if self.lock.held_by_me() {
            return HeapStats::default();
        }
        self.locked(|i| {
            let total = i.grown * CHUNK_PAGES;
            let free = total - i.in_use;
            HeapStats {
                mapped_bytes: total << self.shift,
                in_use_bytes: i.in_use << self.shift,
                free_bytes: free << self.shift,
                released_bytes: i.released << self.shift,
                mapped_ready_bytes: (total - i.released) << self.shift,
                released_total_bytes: i.released_total,
                release_calls: i.release_calls,
                release_runs: i.release_runs,
                sync_released_bytes: i.sync_released,
                sync_work_ns: i.sync_work_ns,
                memory_limit_bytes: i.limit << self.shift,
                background_released_bytes: i.bg_released,
                background_work_ns: i.bg_work_ns,
            }
        })
    }

    // ----- the summary tree -----

    fn sum(i: &Inner, level: usize, k: usize) -> Sum {
        // SAFETY: k < level_len[level]; the arrays live in our metadata mapping.
        unsafe { *i.levels[level].add(k) }
    }

    /// Pages one node of `level` covers.
    fn node_pages(level: usize) -> usize {
        CHUNK_PAGES << (6 * level)
    }

    /// Recompute the summaries of every node covering pages `[p0, p1)`.
    fn resummarize(&self, i: &mut Inner, p0: usize, p1: usize) {
        let (mut lo, mut hi) = (p0 / CHUNK_PAGES, (p1 - 1) / CHUNK_PAGES);
        for c in lo..=hi {
            let s = if c < i.grown {
                // SAFETY: a grown chunk.
                bits::summarize(unsafe { &(*i.bits.add(c)).alloc })
            } else {
                Sum::default()
            };
            // SAFETY: c < max_chunks.
            unsafe { *i.levels[0].add(c) = s };
        }
        for level in 1..i.nlevels {
            lo /= FAN;
            hi /= FAN;
            let size = Self::node_pages(level - 1) as u32;
            for k in lo..=hi {
                let first = k * FAN;
                let last = (first + FAN).min(i.level_len[level - 1]);
                // SAFETY: children of node k exist at the level below.
                let kids = unsafe {
                    core::slice::from_raw_parts(i.levels[level - 1].add(first), last - first)
                };
                let s = Sum::combine(kids, size);
                // SAFETY: k < level_len[level].
                unsafe { *i.levels[level].add(k) = s };
            }
        }
    }

    /// The lowest page starting `n` free pages, if any (Go's `pageAlloc.find`).
    fn find(&self, i: &Inner, n: usize) -> Option<usize> {
        let top = i.nlevels - 1;
        let n32 = u32::try_from(n).ok()?;
        if Self::sum(i, top, 0).max < n32 {
            return None;
        }
        self.descend(i, top, 0, n32)
    }

    fn descend(&self, i: &Inner, level: usize, node: usize, n: u32) -> Option<usize> {
        if level == 0 {
            // SAFETY: a chunk with a free run of n pages is grown.
            let b = unsafe { &*i.bits.add(node) };
            return bits::find(&b.alloc, n as usize).map(|p| node * CHUNK_PAGES + p);
        }
        let size = Self::node_pages(level - 1);
        let first = node * FAN;
        let last = (first + FAN).min(i.level_len[level - 1]);
        let mut run = 0u32;
        for c in first..last {
            let s = Self::sum(i, level - 1, c);
            if run + s.start >= n {
                return Some(c * size - run as usize);
            }
            if s.max >= n {
                return self.descend(i, level - 1, c, n);
            }
            run = if s.start as usize == size {
                run + size as u32
            } else {
                s.end
            };
        }
        None
    }
}

/// Add the run `[p, p + len)` to `runs[..n]`, collected highest first: merged into the last
/// one when it ends where that one starts.
fn push_run(runs: &mut [(usize, usize)], n: &mut usize, p: usize, len: usize) {
    if *n > 0 && runs[*n - 1].0 == p + len {
        runs[*n - 1] = (p, runs[*n - 1].1 + len);
    } else {
        runs[*n] = (p, len);
        *n += 1;
    }
}

/// The pieces of pages `[p, p + n)` per chunk: (chunk, first page in it, end page in it).
fn split(p: usize, n: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let end = p + n;
    (p / CHUNK_PAGES..end.div_ceil(CHUNK_PAGES)).map(move |c| {
        let base = c * CHUNK_PAGES;
        (c, p.max(base) - base, end.min(base + CHUNK_PAGES) - base)
    })
}

/// CLOCK_MONOTONIC in ns (no std: the heap's own timing).
fn now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
