//! The page-state map: the state code of every page of a reservation, at a cost that follows
//! the *shape* of use, not the size of the region.
//!
//! Shape: a radix tree over page numbers whose entries are one word each and say either
//! - **uniform**: every page of the entry's span has one code;
//! - **one exception**: every page has code `bg` except one run `[off, off+len)` with code
//!   `ec` (for spans up to 2^28 pages, 1 TiB with 4 KiB pages);
//! - **child**: a node of osmem's metadata arena describes the span in more detail: 16 entries
//!   each covering a sixteenth, or, for a span of 256 pages, 256 four-bit page codes.
//!
//! The root entry lives in the reservation's slot. The tree is kept canonical: a child node
//! exists only while its span cannot be said in one entry, and a node that becomes uniform
//! (or one run inside another state) is folded back into its parent's entry and returned at
//! once. So:
//! - a region in one state, or with one run in another state (a reserved heap with a mapped
//!   prefix, a pool slot with its used part) costs no node at all, whatever its size;
//!   `reserve` + `map` + `used` of 1 TiB is three word updates;
//! - an operation on a range touches the entries along the two edges of the range: O(depth)
//!   words, depth ≤ 7 for 1 TiB;
//! - scattered use costs about one node per isolated mixed area (measured: under 64 bytes
//!   per isolated page: 49 bytes for 100 000 random pages of a TiB), and gives it back when
//!   the area is uniform again.
//!
//! Why this shape (the alternatives were measured too): a flat table of a byte per page
//! costs 256 MiB for 1 TiB and a write per page for every large transition; a run-length map
//! in a B-tree is compact but makes every small operation a tree search and every scattered
//! batch a sequence of inserts; direct-indexed radix levels with wide nodes cost one wide node
//! per isolated page. Small nodes plus the one-exception entry keep both extremes cheap.
//!
//! ## Writers
//!
//! Every change holds the map's spin lock (a *section*), never across a system call. Pages
//! held by a transition in progress carry the `BUSY` bit in their code: a transition *claims*
//! its pages in one section before its system calls and *settles* them in another after. A
//! section is one or the other: a claim only adds `BUSY` to pages that had none, a settle only
//! changes pages that have it. The map also records which threads hold claims (`owners`), so
//! that the `fork` handlers can wait for other threads' transitions and not for the forking
//! thread's own (fork.rs).
//!
//! Memory for nodes is only ever needed when a transition claims its pages, before any system
//! call, where running out can still be reported with nothing changed. Settling after the
//! system call never needs a node, so the kernel's change is always recorded. Two rules make
//! that true: a one-word entry holds at most one held run, and it is exactly one claim's part
//! of the entry (a claim that would break this splits the entry instead); and a node with held
//! pages is never folded back into one word. Settling then only changes one held run per
//! one-word entry as a whole, which one word can always still say.
//!
//! ## Readers take no lock
//!
//! `state()`, the process-wide address lookup and the other reads must work from a signal
//! handler that interrupted a section on its own thread, which can never finish while the
//! handler runs. So readers never wait: they walk the tree with atomic loads and check a
//! sequence counter the writer moves at the start and at the end of each section. A read
//! that saw the same count before and after is good, even if that count is odd (a section in
//! progress, possibly the one its own thread was interrupted in), because a section keeps the
//! tree readable at every store:
//! - every word is stored whole (pages in a leaf word change together or not at all);
//! - a new node is filled before the entry that points to it is stored;
//! - a node is freed only after the entry pointing to it is replaced, and a freed node is
//!   neither written (free-list links live beside the nodes, arena.rs) nor reused before the
//!   section ends; chunks go back to the arena only after the count has moved again.
//!
//! So a reader sees each page with its code before or after the section, never another, and
//! it reads again only if a whole section boundary passed during its walk of a few dozen
//! nanoseconds. Combined with the section rule above, a read of a range that finds no page
//! held sees a state the range really had at one instant.
//!
//! ## Settles the lock holder finishes
//!
//! A thread that forks from a signal handler may have interrupted its own thread inside a
//! section: that section finishes (in parent and child) only when the handler returns, after
//! the fork. Another thread whose transition on the same map must settle meanwhile cannot
//! wait for the lock (the fork handlers wait for its transition): it hands its settle to the
//! lock holder instead (`settle_or_defer`), as a record on its own stack that the holder runs
//! when it lets go of the lock, and waits for that. The record is on its stack in the child
//! too (fork copies it), so the child settles it as well.

use crate::arena::{self, NoMemory, Node, NONE};
use crate::lock::{Held, SpinLock};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Pages of a leaf node: 16 words of 16 four-bit codes.
pub(crate) const LEAF: usize = 256;
/// Entries per interior node.
const FAN: usize = 16;
/// Spans up to this many pages can hold an exception (28-bit offset and length).
const EXC_MAX: usize = 1 << 28;
/// The code bit that marks a page held by a transition in progress.
pub(crate) const BUSY: u8 = 8;
const SPLAT: u64 = 0x1111_1111_1111_1111;
/// Threads whose claims one map records at a time (a fifth waits for one of them to settle).
const OWNERS: usize = 4;
/// The low bits of an owner word: that thread's claims in progress on this map (thread
/// pointers are aligned to at least 8 bytes).
const OWN_COUNT: usize = 7;

/// A node word, read by any thread.
#[inline(always)]
fn ld(w: &AtomicU64) -> u64 {
    w.load(Ordering::Acquire)
}

/// A node word, stored whole by the section's writer (see the module doc).
#[inline(always)]
fn st(w: &AtomicU64, v: u64) {
    w.store(v, Ordering::Release)
}

/// Writers own their nodes: every index in their tree is a node they hold.
#[inline(always)]
fn own_node(n: u32) -> Option<&'static Node> {
    Some(arena::node(n))
}

/// What an update does to each page's code.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Upd {
    Set(u8),
    Hold,
    Unhold,
}

impl Upd {
    #[inline]
    fn apply(self, c: u8) -> u8 {
        match self {
            Upd::Set(t) => t,
            Upd::Hold => c | BUSY,
            Upd::Unhold => c & !BUSY,
        }
    }
}

// ----- entry encoding: bg (4 bits) | ec (4) | off (28) | len (28) -----
//   len > 0:             exception: bg except [off, off+len) = ec
//   len = 0, ec = 0:     uniform bg
//   len = 0, ec = 0xF:   child node, index = off | bg << 28

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum E {
    Uni(u8),
    Exc {
        bg: u8,
        off: usize,
        len: usize,
        ec: u8,
    },
    Child(u32),
}

#[inline]
fn uni(c: u8) -> u64 {
    c as u64
}

#[inline]
fn exc(bg: u8, off: usize, len: usize, ec: u8) -> u64 {
    debug_assert!(len > 0 && off + len <= EXC_MAX && off < EXC_MAX && bg != ec);
    bg as u64 | (ec as u64) << 4 | (off as u64) << 8 | (len as u64) << 36
}

#[inline]
fn child(i: u32) -> u64 {
    (i >> 28) as u64 | 0xF << 4 | ((i & 0x0FFF_FFFF) as u64) << 8
}

/// Whether `e` is a child entry (one test, for paths that only want to know that).
#[inline]
fn is_child(e: u64) -> bool {
    e & 0xF0 == 0xF0 && e >> 36 == 0
}

#[inline]
fn decode(e: u64) -> E {
    let len = (e >> 36) as usize;
    let bg = (e & 0xF) as u8;
    let ec = ((e >> 4) & 0xF) as u8;
    let off = ((e >> 8) & 0x0FFF_FFFF) as usize;
    if len > 0 {
        E::Exc { bg, off, len, ec }
    } else if ec == 0 {
        E::Uni(bg)
    } else {
        E::Child((bg as u32) << 28 | off as u32)
    }
}

/// Up to 6 runs of a span, in order: run `k` starts at `at[k]` and has `code[k]`. (An
/// update of a one-word entry makes at most 5; a fold stops past 3.)
#[derive(Copy, Clone)]
struct Runs {
    n: usize,
    at: [usize; 6],
    code: [u8; 6],
}

impl Runs {
    const EMPTY: Runs = Runs {
        n: 0,
        at: [0; 6],
        code: [0; 6],
    };

    #[inline]
    fn push(&mut self, start: usize, code: u8) {
        if self.n > 0 && self.code[self.n - 1] == code {
            return;
        }
        if self.n > 0 && self.at[self.n - 1] == start {
            // An empty run before: replace it (and merge with the one before that).
            self.n -= 1;
            if self.n > 0 && self.code[self.n - 1] == code {
                return;
            }
        }
        self.at[self.n] = start;
        self.code[self.n] = code;
        self.n += 1;
    }

    /// The runs of a uniform or exception entry of span `s`.
    fn of(e: E, s: usize) -> Runs {
        let mut r = Runs::EMPTY;
        match e {
            E::Uni(c) => r.push(0, c),
            E::Exc { bg, off, len, ec } => {
                r.push(0, bg);
                r.push(off, ec);
                if off + len < s {
                    r.push(off + len, bg);
                }
            }
            E::Child(_) => unreachable!(),
        }
        r
    }

    /// The end of run `k` in a span of `s` pages.
    #[inline]
    fn end(&self, k: usize, s: usize) -> usize {
        if k + 1 < self.n {
            self.at[k + 1]
        } else {
            s
        }
    }

    /// These runs with `f` applied to `[lo, hi)`.
    fn apply(&self, s: usize, lo: usize, hi: usize, f: Upd) -> Runs {
        let mut out = Runs::EMPTY;
        for k in 0..self.n {
            let (a, c) = (self.at[k], self.code[k]);
            let b = self.end(k, s);
            // Up to three pieces: [a, lo), [lo, hi), [hi, b) clipped to [a, b).
            let (m1, m2) = (lo.clamp(a, b), hi.clamp(a, b));
            if a < m1 {
                out.push(a, c);
            }
            if m1 < m2 {
                out.push(m1, f.apply(c));
            }
            if m2 < b {
                out.push(m2, c);
            }
        }
        out
    }

    /// One entry for a span of `s` pages, if these runs fit in one.
    fn encode(&self, s: usize) -> Option<u64> {
        match self.n {
            1 => Some(uni(self.code[0])),
            2 if s <= EXC_MAX => {
                let p = self.at[1];
                Some(exc(self.code[0], p, s - p, self.code[1]))
            }
            3 if s <= EXC_MAX && self.code[0] == self.code[2] => {
                let (p, q) = (self.at[1], self.at[2]);
                Some(exc(self.code[0], p, q - p, self.code[1]))
            }
            _ => None,
        }
    }

    /// Whether exactly one run is held (`BUSY`) and it is `[lo, hi)`: the one-word entries'
    /// rule for held pages (see the module doc).
    fn held_exactly(&self, s: usize, lo: usize, hi: usize) -> bool {
        let mut held = (0..self.n).filter(|&k| self.code[k] & BUSY != 0);
        match (held.next(), held.next()) {
            (Some(k), None) => self.at[k] == lo && self.end(k, s) == hi,
            _ => false,
        }
    }

    /// Whether any run is held.
    fn any_held(&self) -> bool {
        (0..self.n).any(|k| self.code[k] & BUSY != 0)
    }
}

/// What only the section's writer touches.
#[repr(C)]
pub(crate) struct Inner {
    /// Pages covered by the root entry: LEAF · 16^(depth-1) ≥ pages.
    span: usize,
    pages: usize,
    /// Node levels below the root entry (an update needs at most 2 nodes per level).
    depth: u32,
    /// Owned chunks, linked through the arena's links.
    chunks: u32,
    /// Free nodes, linked through their side links (`arena::node_link`).
    free: u32,
    /// Never-used nodes of the newest chunk: [bump, bump_end).
    bump: u32,
    bump_end: u32,
    /// Free list length + never-used nodes.
    spare: u32,
    live: u32,
    /// Nodes freed in this section: free only once it ends (see the module doc).
    pending: u32,
    pending_tail: u32,
    pending_n: u32,
    /// A hold is in progress: the only time a node may be allocated.
    holding: bool,
    /// The last leaf `leaf_for` found: (leaf number + 1, node); 0 when none. Valid until the
    /// tree's shape changes (a node made or freed clears it), so runs of small operations in
    /// one leaf (a batch's claims) skip the walk from the root.
    finger: (usize, u32),
}

impl Inner {
    fn new(pages: usize) -> Inner {
        let mut span = LEAF;
        let mut depth = 1;
        while span < pages {
            span *= FAN;
            depth += 1;
        }
        Inner {
            span,
            pages,
            depth,
            chunks: NONE,
            free: NONE,
            bump: 0,
            bump_end: 0,
            spare: 0,
            live: 0,
            pending: NONE,
            pending_tail: NONE,
            pending_n: 0,
            holding: false,
            finger: (0, 0),
        }
    }
}

/// A reservation's page-state map, with its lock, and the region's bytes per state (written
/// only with the lock held, read without it). Laid out so that what a transition touches —
/// the lock, the sequence counter, the root entry and the claim owners — is one cache line.
#[repr(C)]
pub(crate) struct Table {
    lock: SpinLock,
    /// Odd while a section is in progress (see the module doc).
    seq: AtomicU32,
    root: AtomicU64,
    /// Threads with claims in progress: thread pointer | count (see `OWN_COUNT`).
    owners: [AtomicUsize; OWNERS],
    /// Settles handed to the lock holder (see `settle_or_defer`).
    deferred: AtomicPtr<Deferred>,
    /// Bytes in each state, by `State` index.
    pub(crate) bytes: [AtomicU64; 4],
    /// `Inner::span`, for readers.
    span: AtomicUsize,
    inner: UnsafeCell<Inner>,
}

// SAFETY: `inner` is only accessed with `lock` held (through a `Guard`); everything else is
// atomic.
unsafe impl Sync for Table {}
unsafe impl Send for Table {}

/// A settle handed to the lock holder: runs `call(ctx, guard)` when the holder lets go, then
/// sets `done`. Lives on the stack of the thread that made it, which waits for `done`.
pub(crate) struct Deferred {
    next: *mut Deferred,
    ctx: *mut (),
    call: unsafe fn(*mut (), &mut Guard<'_>),
    done: AtomicBool,
}

/// A settle: what to do to the map in one section.
pub(crate) trait Job {
    fn run(&mut self, g: &mut Guard<'_>);
}

impl<F: FnMut(&mut Guard<'_>)> Job for F {
    #[inline(always)]
    fn run(&mut self, g: &mut Guard<'_>) {
        self(g)
    }
}

unsafe fn call_deferred<J: Job>(ctx: *mut (), g: &mut Guard<'_>) {
    // SAFETY: `ctx` is the `J` the record was made with, alive until `done` is set.
    unsafe { (*(ctx as *mut J)).run(g) }
}

/// The map, locked: one section. Dropping it ends the section.
pub(crate) struct Guard<'t> {
    t: &'t Table,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Guard<'_> {
    /// End the section (what dropping the guard does), inlined into the caller: a call frame
    /// costs about as much as a small transition's whole bookkeeping (see the note on
    /// unused::release), and the compiler's drop glue stays a call. The rare work is out of
    /// line.
    #[inline(always)]
    pub(crate) fn end(self) {
        let mut g = core::mem::ManuallyDrop::new(self);
        g.finish();
    }

    #[inline(always)]
    fn finish(&mut self) {
        if !self.t.deferred.load(Ordering::Relaxed).is_null() {
            self.drain_deferred();
        }
        if self.pending != NONE {
            self.free_pending();
        }
        let s = self.t.seq.load(Ordering::Relaxed);
        self.t.seq.store(s.wrapping_add(1), Ordering::Release);
        // No node left: give every chunk back. After the count moved, so a reader still
        // walking a node of this section reads again (and the tree has no node for a new one
        // to walk).
        if self.live == 0 && self.chunks != NONE {
            self.trim();
        }
        self.t.lock.unlock();
        if crate::fork::owner() != 0 {
            crate::fork::section_ended();
        }
    }
}

impl core::ops::Deref for Guard<'_> {
    type Target = Inner;
    #[inline]
    fn deref(&self) -> &Inner {
        // SAFETY: the lock is held for the guard's lifetime.
        unsafe { &*self.t.inner.get() }
    }
}

impl core::ops::DerefMut for Guard<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Inner {
        self.inner()
    }
}

impl Table {
    /// A map of `pages` pages, all with `code` (the unit tests' own maps; reservations' maps
    /// live in registry slots, see `init`).
    #[cfg(test)]
    pub(crate) fn new(pages: usize, code: u8) -> Table {
        let inner = Inner::new(pages);
        Table {
            lock: SpinLock::new(),
            seq: AtomicU32::new(0),
            root: AtomicU64::new(uni(code)),
            owners: Default::default(),
            deferred: AtomicPtr::new(core::ptr::null_mut()),
            bytes: Default::default(),
            span: AtomicUsize::new(inner.span),
            inner: UnsafeCell::new(inner),
        }
    }

    /// Make this (unused) map a map of `pages` pages, all with `code`, in place: a slot is
    /// reused for a new reservation. Readers holding a stale reference may still read it;
    /// they check the slot's generation afterwards.
    ///
    /// # Safety
    /// No thread holds the lock or uses `inner` (the slot is free: no reservation owns it).
    pub(crate) unsafe fn init(&self, pages: usize, code: u8) {
        let inner = Inner::new(pages);
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s | 1, Ordering::Release);
        self.span.store(inner.span, Ordering::Relaxed);
        self.root.store(uni(code), Ordering::Release);
        // SAFETY: the caller's promise: nobody else touches `inner`.
        unsafe { *self.inner.get() = inner };
        for o in &self.owners {
            o.store(0, Ordering::Relaxed);
        }
        self.deferred
            .store(core::ptr::null_mut(), Ordering::Relaxed);
        self.seq.store((s | 1).wrapping_add(1), Ordering::Release);
    }

    /// Begin a section.
    #[inline(always)]
    pub(crate) fn lock(&self) -> Result<Guard<'_>, Held> {
        self.lock.lock()?;
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // The odd count is visible before any store of the section (module doc).
        core::sync::atomic::fence(Ordering::Release);
        Ok(Guard { t: self })
    }

    // ----- readers: no lock, never a wait -----

    /// Run `f` on a consistent view of the tree (root entry, span), reading again while a
    /// section boundary passes during it. `f` returns `None` to read again: it met a node
    /// index outside the arena (a stale word), or two of its reads of one word disagreed (a
    /// section of another thread in progress changed it in between; never one of this
    /// thread's, which cannot run while this thread reads).
    #[inline]
    fn read<T>(&self, f: impl Fn(u64, usize) -> Option<T>) -> T {
        loop {
            let s0 = self.seq.load(Ordering::Acquire);
            let r = f(
                self.root.load(Ordering::Acquire),
                self.span.load(Ordering::Relaxed),
            );
            core::sync::atomic::fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s0 {
                if let Some(r) = r {
                    return r;
                }
            }
            core::hint::spin_loop();
        }
    }

    /// The code of page `p` (without waiting; see the module doc).
    #[inline]
    pub(crate) fn code(&self, p: usize) -> u8 {
        self.read(|root, span| code_at(root, span, p, arena::node_checked))
    }

    /// The code of page `p` and the end of its run, at most `end` (`p < end`), read as one.
    pub(crate) fn run(&self, p: usize, end: usize) -> (u8, usize) {
        self.read(|root, span| {
            let c = code_at(root, span, p, arena::node_checked)?;
            let e = scan(root, span, p, end, c, arena::node_checked)?;
            (e > p).then_some((c, e))
        })
    }

    /// Whether the root entry is one word (uniform, or one run inside another state) and
    /// every page of `[lo, hi)` has `code` there: one read of the root, no walk. `false` also
    /// when the root has a node (the caller takes its general path).
    #[inline(always)]
    pub(crate) fn all_at_root(&self, lo: usize, hi: usize, code: u8) -> bool {
        self.read(|root, span| {
            if is_child(root) {
                return Some(false);
            }
            Some(
                code_at(root, span, lo, own_node)? == code
                    && scan(root, span, lo, hi, code, own_node)? == hi,
            )
        })
    }

    /// Whether every page of `[lo, hi)` has `code` (not held), read as one.
    #[inline]
    #[cfg(test)]
    pub(crate) fn all(&self, lo: usize, hi: usize, code: u8) -> bool {
        self.read(|root, span| {
            if code_at(root, span, lo, arena::node_checked)? != code {
                return Some(false);
            }
            Some(scan(root, span, lo, hi, code, arena::node_checked)? == hi)
        })
    }

    // ----- settles the lock holder may finish -----

    /// Settle with `f` in a section; if the lock is held across a `fork` by the forking
    /// thread, hand `f` to it instead (`rec` is the record, on the caller's stack): returns
    /// the record to wait for with [`wait_deferred`](Self::wait_deferred). `f` and `rec` must
    /// stay where they are until then.
    #[inline(always)]
    pub(crate) fn settle_or_defer<'a, J: Job>(
        &self,
        f: &'a mut J,
        rec: &'a mut MaybeUninit<Deferred>,
    ) -> Option<&'a Deferred> {
        match self.lock() {
            Ok(mut g) => {
                f.run(&mut g);
                g.end();
                None
            }
            Err(h) => self.defer(h, f, rec),
        }
    }

    /// The lock was refused to a settle: hand it over to a forking holder (see
    /// `settle_or_defer`).
    #[cold]
    #[inline(never)]
    fn defer<'a, J: Job>(
        &self,
        h: Held,
        f: &'a mut J,
        rec: &'a mut MaybeUninit<Deferred>,
    ) -> Option<&'a Deferred> {
        match h {
            Held::Fork => {
                crate::stats::bump(crate::stats::Counter::SettlesHandedOver);
                let r = rec.write(Deferred {
                    next: core::ptr::null_mut(),
                    ctx: f as *mut J as *mut (),
                    call: call_deferred::<J>,
                    done: AtomicBool::new(false),
                });
                let mut head = self.deferred.load(Ordering::Relaxed);
                loop {
                    r.next = head;
                    match self.deferred.compare_exchange_weak(
                        head,
                        r as *mut Deferred,
                        Ordering::Release,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => break,
                        Err(h) => head = h,
                    }
                }
                Some(r)
            }
            // The calling thread holds the lock (impossible: its claim would have been
            // refused), or a thread of the parent held it when this process was made by
            // `_Fork`: nobody can settle; the pages stay held (documented for `_Fork`).
            Held::Reentered | Held::Orphaned => None,
        }
    }

    /// Wait until the lock holder has run a deferred settle: try to take the lock (the
    /// holder may have let go before the record was queued) and yield.
    pub(crate) fn wait_deferred(&self, rec: &Deferred) {
        while !rec.done.load(Ordering::Acquire) {
            match self.lock() {
                Ok(g) => drop(g), // runs the queued records, ours among them
                Err(_) => {
                    // SAFETY: sched_yield has no preconditions.
                    unsafe { libc::sched_yield() };
                }
            }
        }
    }

    /// Settle with `f` (see [`settle_or_defer`](Self::settle_or_defer)), waiting if handed
    /// over.
    #[inline(always)]
    pub(crate) fn settle_with<J: Job>(&self, mut f: J) {
        let mut rec = MaybeUninit::uninit();
        if let Some(r) = self.settle_or_defer(&mut f, &mut rec) {
            self.wait_deferred(r);
        }
    }

    // ----- fork (fork.rs) -----

    /// Claims in progress by threads other than `me`.
    fn claims_by_others(&self, me: usize) -> usize {
        self.owners
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .filter(|&v| v & !OWN_COUNT != me)
            .map(|v| v & OWN_COUNT)
            .sum()
    }

    /// Settles handed over and not yet run.
    fn deferred_count(&self) -> usize {
        let mut n = 0;
        let mut p = self.deferred.load(Ordering::Acquire);
        while !p.is_null() {
            n += 1;
            // SAFETY: queued records stay alive until run, and only the lock holder runs
            // them: the forking thread, which is here.
            p = unsafe { (*p).next };
        }
        n
    }

    /// Whether `me` holds the lock or a claim here (a thread inside a transition).
    pub(crate) fn held_by(&self, me: usize) -> bool {
        self.lock.owner() == me
            || self.owners.iter().any(|o| {
                let v = o.load(Ordering::Relaxed);
                v & !OWN_COUNT == me && v & OWN_COUNT != 0
            })
    }

    /// `fork` is about to copy the process: hold the lock with no other thread's claim in
    /// progress, so the child finds every transition on this map either done or not begun.
    /// Returns whether the lock was taken. When the forking thread `me` holds it already (a
    /// signal handler forked while it was inside a section here), waits instead until every
    /// other thread's claim here is settled or handed over to it: it finishes the section and
    /// runs them, in both processes, when the handler returns.
    pub(crate) fn hold_for_fork(&self, me: usize) -> bool {
        loop {
            let seen = crate::fork::wake_count();
            if self.lock.owner() == me {
                while self.claims_by_others(me) > self.deferred_count() {
                    crate::fork::wait_for_settle(crate::fork::wake_count());
                }
                return false;
            }
            match self.lock.lock() {
                Ok(()) => {
                    if self.claims_by_others(me) == 0 {
                        return true;
                    }
                    // A transition between its claim and its settle: let it settle (new
                    // claims wait for the fork, fork.rs), and sleep until a section ends.
                    self.lock.unlock();
                    crate::fork::wait_for_settle(seen);
                }
                Err(Held::Reentered) => {}
                // Left by a thread of the parent of a `_Fork` child: nothing can be done.
                Err(_) => return false,
            }
        }
    }

    /// After `fork`, in parent and child: let go of what `hold_for_fork` took.
    pub(crate) fn release_after_fork(&self, taken: bool, me: usize) {
        if taken {
            self.lock.unlock();
        } else {
            self.lock.adopt_in_child(me);
        }
    }

    /// Give every node back: the reservation is being dropped (no transition can start on it
    /// any more; a reader may still be walking it, hence a section, so the count moves before
    /// the chunks go). If the arena's lock cannot be waited for (this thread holds it, in a
    /// signal handler; or it is orphaned in a `_Fork` child), the chunks are leaked.
    pub(crate) fn release_all(&self) {
        let chunks = loop {
            match self.lock() {
                Ok(g) => {
                    st(&g.t.root, uni(0));
                    let i = g.inner();
                    let chunks = i.chunks;
                    *i = Inner::new(i.pages);
                    break chunks;
                }
                Err(Held::Fork) if crate::fork::wait_end().is_ok() => {}
                Err(_) => return,
            }
        };
        loop {
            match arena::give_back(chunks) {
                Err(Held::Fork) if crate::fork::wait_end().is_ok() => {}
                _ => return,
            }
        }
    }

    /// Nodes in use.
    #[cfg(test)]
    fn live(&self) -> u32 {
        self.lock().unwrap().live
    }
}

impl Guard<'_> {
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    fn inner(&self) -> &mut Inner {
        // SAFETY: the lock is held for the guard's lifetime, and the guard is the only way to
        // `inner`; callers never hold two of these references at once.
        unsafe { &mut *self.t.inner.get() }
    }

    #[inline(always)]
    fn root(&self) -> u64 {
        ld(&self.t.root)
    }

    // ----- claim owners -----

    /// Record a claim by thread `me`; `false` if the map already records `OWNERS` other
    /// threads (the caller waits for one of them to settle).
    #[inline]
    pub(crate) fn own(&self, me: usize) -> bool {
        debug_assert!(me & OWN_COUNT == 0);
        let o = &self.t.owners;
        for w in o {
            let v = w.load(Ordering::Relaxed);
            if v & !OWN_COUNT == me {
                if v & OWN_COUNT == OWN_COUNT {
                    return false;
                }
                w.store(v + 1, Ordering::Relaxed);
                return true;
            }
        }
        for w in o {
            if w.load(Ordering::Relaxed) == 0 {
                w.store(me | 1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Forget one claim of thread `me` (settled).
    #[inline]
    pub(crate) fn disown(&self, me: usize) {
        for w in &self.t.owners {
            let v = w.load(Ordering::Relaxed);
            if v & !OWN_COUNT == me {
                w.store(
                    if v & OWN_COUNT == 1 { 0 } else { v - 1 },
                    Ordering::Relaxed,
                );
                return;
            }
        }
        debug_assert!(false, "a settle without its claim");
    }

    /// Nodes freed in this section become free for the next one.
    #[cold]
    #[inline(never)]
    fn free_pending(&mut self) {
        let i = self.inner();
        arena::node_link(i.pending_tail).store(i.free, Ordering::Relaxed);
        i.free = i.pending;
        i.spare += i.pending_n;
        (i.pending, i.pending_tail, i.pending_n) = (NONE, NONE, 0);
    }

    /// Run the settles handed over to this section's holder.
    #[cold]
    #[inline(never)]
    fn drain_deferred(&mut self) {
        loop {
            let mut p = self
                .t
                .deferred
                .swap(core::ptr::null_mut(), Ordering::Acquire);
            if p.is_null() {
                return;
            }
            while !p.is_null() {
                // SAFETY: a queued record is alive until `done` is set; read `next` first.
                unsafe {
                    let next = (*p).next;
                    ((*p).call)((*p).ctx, self);
                    (*p).done.store(true, Ordering::Release);
                    p = next;
                }
            }
        }
    }

    // ----- the tree, for the section's writer -----

    /// The code of page `p`.
    #[inline]
    pub(crate) fn get(&self, p: usize) -> u8 {
        code_at(self.root(), self.span, p, own_node).unwrap_or(0)
    }

    /// The code of page `p` and the end of its run, at most `end` (`p < end`).
    pub(crate) fn run(&self, p: usize, end: usize) -> (u8, usize) {
        let c = self.get(p);
        (
            c,
            scan(self.root(), self.span, p, end, c, own_node).unwrap_or(end),
        )
    }

    /// Check `[lo, hi)`: every page must pass `ok` and not be held. Returns the number of
    /// runs and the code of the first, or the first offending page and its code.
    pub(crate) fn check(
        &self,
        lo: usize,
        hi: usize,
        ok: impl Fn(u8) -> bool,
    ) -> Result<(usize, u8), (usize, u8)> {
        let mut p = lo;
        let mut runs = 0;
        let mut first = 0;
        while p < hi {
            let (c, e) = self.run(p, hi);
            if c & BUSY != 0 || !ok(c) {
                return Err((p, c));
            }
            if runs == 0 {
                first = c;
            }
            runs += 1;
            p = e;
        }
        Ok((runs, first))
    }

    /// Check and hold `[lo, hi)` in one step when the root entry can say the result in one
    /// word: a region in one state, or a range that is exactly the root's one exception (an
    /// `unused` then `used` of the same span). Also answers a refusal when the whole range is
    /// in one code of a one-word root. `None`: take the general path (`claim_in_leaf`,
    /// `check` + `claim`). Small transitions on big regions mostly end here, so this is the
    /// whole map's cost on them: a handful of instructions on the line the lock is on.
    #[inline]
    pub(crate) fn claim_root(
        &mut self,
        lo: usize,
        hi: usize,
        ok: impl Fn(u8) -> bool,
    ) -> Option<Result<u8, (usize, u8)>> {
        let root = self.root();
        if is_child(root) {
            return None;
        }
        let refuse = |c: u8| c & BUSY != 0 || !ok(c);
        let (s, hi) = (self.span, self.extend(hi));
        let t = self.t;
        match decode(root) {
            E::Uni(c) if refuse(c) => Some(Err((lo, c))),
            E::Uni(c) if lo == 0 && hi == s => {
                st(&t.root, uni(c | BUSY));
                Some(Ok(c))
            }
            E::Uni(c) if s <= EXC_MAX => {
                st(&t.root, exc(c, lo, hi - lo, c | BUSY));
                Some(Ok(c))
            }
            E::Exc { bg, off, len, ec } => {
                let end = off + len;
                if lo >= off && hi <= end && refuse(ec) {
                    Some(Err((lo, ec)))
                } else if (hi <= off || lo >= end) && refuse(bg) {
                    Some(Err((lo, bg)))
                } else if lo == off && hi == end && bg & BUSY == 0 {
                    // `ec` passed above, so it is not held either.
                    st(&t.root, exc(bg, off, len, ec | BUSY));
                    Some(Ok(ec))
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Check and hold `[lo, hi)` in one walk when it lies inside one leaf (the common case of
    /// scattered small ranges, e.g. a batch's ranges): `None` if it does not, else what
    /// [`check`](Self::check) would say, the pages held on success.
    #[inline]
    pub(crate) fn claim_in_leaf(
        &mut self,
        lo: usize,
        hi: usize,
        ok: impl Fn(u8) -> bool,
    ) -> Option<Result<(usize, u8), (usize, u8)>> {
        let leaf = self.leaf_for(lo, hi)?;
        let (a, b) = (lo % LEAF, (hi - 1) % LEAF + 1);
        // A range inside one 16-page word, all in one code (a batch's small ranges): one
        // compare of the word instead of a look at each page.
        let w = a / 16;
        if w == (b - 1) / 16 {
            let m = nibble_mask(a % 16, b - w * 16);
            let word = ld(&leaf[w]);
            let c = ((word >> ((a % 16) * 4)) & 0xF) as u8;
            if word & m == (SPLAT * c as u64) & m {
                if c & BUSY != 0 || !ok(c) {
                    return Some(Err((lo, c)));
                }
                st(&leaf[w], word | ((SPLAT * BUSY as u64) & m));
                return Some(Ok((1, c)));
            }
        }
        let mut runs = 0;
        let (mut first, mut prev) = (0, 0xFF);
        for q in a..b {
            let c = nibble(leaf, q);
            if c & BUSY != 0 || !ok(c) {
                return Some(Err((lo - a + q, c)));
            }
            if c != prev {
                if runs == 0 {
                    first = c;
                }
                runs += 1;
                prev = c;
            }
        }
        leaf_update(leaf, a, b, Upd::Hold);
        Some(Ok((runs, first)))
    }

    /// Hold `[lo, hi)` (set `BUSY`), after [`check`](Self::check) passed with `runs` runs.
    /// Fails, changing nothing, only if metadata memory for the nodes the hold may need
    /// cannot be had.
    pub(crate) fn claim(&mut self, lo: usize, hi: usize, runs: usize) -> Result<(), NoMemory> {
        // The common case, a range in a region without nodes that becomes the root's one
        // held run: one word, no node, nothing to make sure of.
        if runs == 1 {
            if let Some(e) = self.root_hold(lo, self.extend(hi)) {
                st(&self.t.root, e);
                return Ok(());
            }
        }
        // A range inside one leaf: set the bits there (adding held pages never folds).
        if let Some(leaf) = self.leaf_for(lo, hi) {
            leaf_update(leaf, lo % LEAF, (hi - 1) % LEAF + 1, Upd::Hold);
            return Ok(());
        }
        // A hold splits one-word entries down to leaves at most along each of its edges and
        // each boundary between its runs: one node per level for each.
        self.ensure(self.depth * (runs as u32 + 1))?;
        self.holding = true;
        self.update(lo, hi, Upd::Hold);
        self.holding = false;
        Ok(())
    }

    /// The root entry once one run `[lo, hi)` is held, if the root can say it by the rule
    /// for held pages (see the module doc).
    #[inline]
    fn root_hold(&self, lo: usize, hi: usize) -> Option<u64> {
        let s = self.span;
        match decode(self.root()) {
            // The checked range is free, so a uniform root is not held.
            E::Uni(c) if lo == 0 && hi == s => Some(uni(c | BUSY)),
            E::Uni(c) if s <= EXC_MAX => Some(exc(c, lo, hi - lo, c | BUSY)),
            // Holding exactly the exception, outside which nothing is held.
            E::Exc { bg, off, len, ec } if lo == off && hi == off + len && bg & BUSY == 0 => {
                Some(exc(bg, off, len, ec | BUSY))
            }
            E::Child(_) => None,
            flat => {
                let r = Runs::of(flat, s).apply(s, lo, hi, Upd::Hold);
                if r.held_exactly(s, lo, hi) {
                    r.encode(s)
                } else {
                    None
                }
            }
        }
    }

    /// Settle `[lo, hi)` to `to` when the root holds exactly that run in one word (what
    /// [`claim_root`](Self::claim_root) made): `false` if it does not, nothing done. No node
    /// is involved, so there is nothing to trim either.
    #[inline]
    pub(crate) fn settle_root(&mut self, lo: usize, hi: usize, to: u8) -> bool {
        match whole_run(self.root(), self.span, lo, self.extend(hi), Upd::Set(to)) {
            Some(e) => {
                st(&self.t.root, e);
                true
            }
            None => false,
        }
    }

    /// Pages past the last one share its fate, so a whole-region update leaves the root
    /// uniform: an update that reaches the last page extends to the end of the root's span.
    #[inline]
    fn extend(&self, hi: usize) -> usize {
        if hi == self.pages {
            self.span
        } else {
            hi
        }
    }

    /// Apply `f` to `[lo, hi)`. Only a hold (through [`claim`](Self::claim)) may need nodes;
    /// setting or letting go of held pages never does.
    pub(crate) fn update(&mut self, lo: usize, hi: usize, f: Upd) {
        let hi = self.extend(hi);
        let t = self.t;
        // Settling a run the root holds: one word. (A hold takes `claim`'s path, which
        // keeps the rule for held pages.)
        if f != Upd::Hold {
            if let Some(e) = whole_run(self.root(), self.span, lo, hi, f) {
                st(&t.root, e);
                return;
            }
            // Settling a range inside one leaf: while other pages of the leaf are held, it
            // cannot fold, so the leaf's words are all there is to change. (The last settle
            // in a leaf takes the general path below, which folds.)
            if let Some(leaf) = self.leaf_for(lo, hi) {
                leaf_update(leaf, lo % LEAF, (hi - 1) % LEAF + 1, f);
                // No fold while pages of the leaf are held; and a leaf of more than three
                // runs cannot fold into one entry, so nothing above it can change either
                // (the common case in a fragmented region: a few word operations instead of
                // a walk from the root).
                if !leaf_may_fold(leaf, lo % LEAF) {
                    return;
                }
            }
        }
        let span = self.span;
        self.upd(&t.root, span, lo, hi, f);
    }

    /// Apply `f` (not a hold) to `[lo, hi)` if it lies in one leaf, without folding (many
    /// settles in a row: see [`refold`](Self::refold)); `cache` remembers the last leaf, so
    /// ranges in the same leaf skip the walk. `false`: not a one-leaf range, nothing done.
    #[inline]
    pub(crate) fn update_in_leaf(
        &mut self,
        lo: usize,
        hi: usize,
        f: Upd,
        cache: &mut Option<(usize, &'static Node)>,
    ) -> bool {
        debug_assert!(f != Upd::Hold);
        let leaf = match *cache {
            Some((l, node)) if l == lo / LEAF && (hi - 1) / LEAF == l && hi != self.pages => node,
            _ => match self.leaf_for(lo, hi) {
                Some(node) => {
                    *cache = Some((lo / LEAF, node));
                    node
                }
                None => return false,
            },
        };
        leaf_update(leaf, lo % LEAF, (hi - 1) % LEAF + 1, f);
        true
    }

    /// The leaf node holding page `p`'s word of 16 pages, if the tree has a leaf there (not
    /// for the word that starts at the last page: see `extend`), with its index in the leaf.
    /// For a batch's word operations ([`claim_word`](Self::claim_word),
    /// [`set_word`](Self::set_word)): many small ranges in one word, one load and one store.
    #[inline]
    pub(crate) fn word(&mut self, p: usize) -> Option<(&'static Node, usize)> {
        let w = p & !15;
        let leaf = self.leaf_for(w, w + 1)?;
        Some((leaf, (w % LEAF) / 16))
    }

    /// [`word`](Self::word), making the leaf if the tree has none there yet: the entries
    /// above it are split down to a leaf saying the same, if every page of nibble mask `m` of
    /// the word at page `p` (16-aligned, not the last page's word) has `code` (the caller then
    /// holds them with [`claim_word`](Self::claim_word)). `Ok(None)`: some page has another
    /// code; nothing changed.
    ///
    /// A batch's first group in a leaf comes here: claiming its first range through
    /// [`claim`](Self::claim) would leave one held run in a one-word entry and split only at
    /// the next group (measured: two general claims per leaf, ~550 cycles each, a third of
    /// the claims of 1024 ranges).
    pub(crate) fn leaf_word(
        &mut self,
        p: usize,
        m: u64,
        code: u8,
    ) -> Result<Option<(&'static Node, usize)>, NoMemory> {
        if let Some(w) = self.word(p) {
            return Ok(Some(w));
        }
        let w = p & !15;
        // The first one-word entry on the way down, and the word's offset under it.
        let (mut e, mut s, mut q) = (&self.t.root, self.span, w);
        while let E::Child(n) = decode(ld(e)) {
            let cs = s / FAN;
            e = &arena::node(n)[q >> cs.trailing_zeros()];
            s = cs;
            q &= cs - 1;
        }
        let flat = ld(e);
        for x in 0..16 {
            if (m >> (4 * x)) & 0xF != 0 && code_at(flat, s, q + x, |_| None) != Some(code) {
                return Ok(None);
            }
        }
        self.ensure(self.depth)?;
        self.holding = true;
        loop {
            let d = decode(ld(e));
            let n = match d {
                E::Child(n) => n,
                flat => {
                    self.split(e, s, &Runs::of(flat, s));
                    continue;
                }
            };
            if s == LEAF {
                self.holding = false;
                return Ok(Some((arena::node(n), (w % LEAF) / 16)));
            }
            let cs = s / FAN;
            e = &arena::node(n)[q >> cs.trailing_zeros()];
            s = cs;
            q &= cs - 1;
        }
    }

    /// Hold the pages of nibble mask `m` of `node[k]` if every one of them has `code` (and so
    /// none is held): `false` changes nothing.
    #[inline(always)]
    pub(crate) fn claim_word(node: &Node, k: usize, m: u64, code: u8) -> bool {
        let v = ld(&node[k]);
        if v & m != (SPLAT * code as u64) & m {
            return false;
        }
        st(&node[k], v | ((SPLAT * BUSY as u64) & m));
        true
    }

    /// Set the (held) pages of nibble mask `m` of `node[k]` to `code`: a settle of many small
    /// ranges at once (never a node: see the module doc).
    #[inline(always)]
    pub(crate) fn set_word(node: &Node, k: usize, m: u64, code: u8) {
        let v = ld(&node[k]);
        st(&node[k], (v & !m) | ((SPLAT * code as u64) & m));
    }

    /// Fold the tree along the path of page `p` (after [`update_in_leaf`]s): `p` must be a
    /// page no claim holds.
    pub(crate) fn refold(&mut self, p: usize) {
        self.update(p, p + 1, Upd::Unhold);
    }

    /// The leaf holding pages `[lo, hi)`, if they are all in one and the tree has one there.
    #[inline]
    fn leaf_for(&mut self, lo: usize, hi: usize) -> Option<&'static Node> {
        // (Not at the last page: the pages past it follow it, see `extend`.)
        if lo / LEAF != (hi - 1) / LEAF || hi == self.pages {
            return None;
        }
        if self.finger.0 == lo / LEAF + 1 {
            // The finger is cleared whenever a node is made or freed.
            return Some(arena::node(self.finger.1));
        }
        let (mut e, mut s, mut p) = (self.root(), self.span, lo);
        loop {
            let E::Child(n) = decode(e) else { return None };
            let node = arena::node(n);
            if s == LEAF {
                self.finger = (lo / LEAF + 1, n);
                return Some(node);
            }
            let cs = s / FAN;
            e = ld(&node[p >> cs.trailing_zeros()]);
            s = cs;
            p &= cs - 1;
        }
    }

    /// Make sure `n` nodes can be allocated without failing.
    fn ensure(&mut self, n: u32) -> Result<(), NoMemory> {
        while self.spare < n {
            let c = arena::grab()?;
            // SAFETY: the chunk is ours now.
            unsafe { *arena::link(c) = self.chunks };
            self.chunks = c;
            // Left-over never-used nodes of the previous chunk go on the free list.
            while self.bump < self.bump_end {
                let n = self.bump;
                self.bump += 1;
                self.spare -= 1;
                self.free_node(n);
            }
            let per = arena::chunk_nodes();
            // The chunk's first node holds its nodes' links.
            self.bump = c * per + 1;
            self.bump_end = (c + 1) * per;
            self.spare += per - 1;
        }
        Ok(())
    }

    fn alloc(&mut self) -> u32 {
        self.finger = (0, 0);
        debug_assert!(self.holding, "a node allocated outside a hold");
        debug_assert!(
            self.spare > 0,
            "a node allocated beyond what the claim made sure of"
        );
        if self.spare == 0 && self.ensure(1).is_err() {
            // Unreachable by the rules in the module doc (the tests assert them); if they
            // were broken, losing track of the kernel's state would be worse than stopping.
            panic!("osmem: no metadata memory to record a transition");
        }
        self.spare -= 1;
        self.live += 1;
        if self.free != NONE {
            let n = self.free;
            self.free = arena::node_link(n).load(Ordering::Relaxed);
            n
        } else {
            let n = self.bump;
            self.bump += 1;
            n
        }
    }

    fn free_node(&mut self, n: u32) {
        arena::node_link(n).store(self.free, Ordering::Relaxed);
        self.free = n;
        self.spare += 1;
    }

    /// A node no entry points to any more: free once this section ends.
    fn release(&mut self, n: u32) {
        self.finger = (0, 0);
        self.live -= 1;
        arena::node_link(n).store(self.pending, Ordering::Relaxed);
        if self.pending == NONE {
            self.pending_tail = n;
        }
        self.pending = n;
        self.pending_n += 1;
    }

    /// When no node is in use, give every chunk back to the arena: a map whose states are
    /// uniform again holds no metadata (a pool of slots that were mixed once used to keep a
    /// chunk each for ever). The arena keeps a few free chunks resident, so a map that turns
    /// mixed again soon takes one back without a system call.
    #[inline(always)]
    fn trim(&mut self) {
        if self.live != 0 || self.chunks == NONE {
            return;
        }
        self.trim_all();
    }

    #[cold]
    #[inline(never)]
    fn trim_all(&mut self) {
        if arena::give_back(self.chunks).is_err() {
            // The arena is held across a fork (or by this thread, in a signal handler): keep
            // them until a later section.
            return;
        }
        self.chunks = NONE;
        self.free = NONE;
        self.bump = 0;
        self.bump_end = 0;
        self.spare = 0;
    }

    /// The recursive update of entry `e` (span `s`) over `[lo, hi)` (relative, non-empty).
    fn upd(&mut self, e: &AtomicU64, s: usize, lo: usize, hi: usize, f: Upd) {
        match decode(ld(e)) {
            E::Child(n) => {
                if lo == 0 && hi == s {
                    if let Upd::Set(c) = f {
                        // Replace, then free: no reader can reach a freed node from the root.
                        st(e, uni(c));
                        self.free_tree(n, s);
                        return;
                    }
                }
                let node = arena::node(n);
                if s == LEAF {
                    leaf_update(node, lo, hi, f);
                } else {
                    let cs = s / FAN;
                    let sh = cs.trailing_zeros();
                    let (k0, k1) = (lo >> sh, (hi - 1) >> sh);
                    for (k, w) in node.iter().enumerate().take(k1 + 1).skip(k0) {
                        let (a, b) = (k * cs, (k + 1) * cs);
                        self.upd(w, cs, lo.max(a) - a, hi.min(b) - a, f);
                    }
                }
                self.fold(e, s);
            }
            flat => {
                let r = Runs::of(flat, s);
                let out = r.apply(s, lo, hi, f);
                // A hold keeps one word only if it leaves exactly its own part held there.
                if f != Upd::Hold || out.held_exactly(s, lo, hi) {
                    if let Some(ne) = out.encode(s) {
                        st(e, ne);
                        return;
                    }
                }
                self.split(e, s, &r);
                self.upd(e, s, lo, hi, f);
            }
        }
    }

    /// Give a uniform or exception entry a child node saying the same: filled first, then
    /// linked.
    fn split(&mut self, e: &AtomicU64, s: usize, r: &Runs) {
        let n = self.alloc();
        let node = arena::node(n);
        if s == LEAF {
            for k in 0..r.n {
                leaf_update(node, r.at[k], r.end(k, s), Upd::Set(r.code[k]));
            }
        } else {
            let cs = s / FAN;
            for (k, w) in node.iter().enumerate() {
                let (a, b) = (k * cs, (k + 1) * cs);
                let mut sub = Runs::EMPTY;
                for j in 0..r.n {
                    let (x, y) = (r.at[j].max(a), r.end(j, s).min(b));
                    if x < y {
                        sub.push(x - a, r.code[j]);
                    }
                }
                st(
                    w,
                    sub.encode(cs)
                        .expect("a sixteenth of a one-entry span fits one entry"),
                );
            }
        }
        st(e, child(n));
    }

    /// If the child of `e` can be said in one entry, say it there, then free the child.
    fn fold(&mut self, e: &AtomicU64, s: usize) {
        let E::Child(n) = decode(ld(e)) else { return };
        let node = arena::node(n);
        let mut r = Runs::EMPTY;
        if s == LEAF {
            // Held pages stay in their node until settled (see the module doc).
            if node.iter().any(|w| ld(w) & (SPLAT * BUSY as u64) != 0) {
                return;
            }
            let mut p = 0;
            while p < LEAF {
                if r.n == 3 {
                    return;
                }
                let c = nibble(node, p);
                r.push(p, c);
                p = leaf_scan(node, p, LEAF, c);
            }
        } else {
            let cs = s / FAN;
            for (k, w) in node.iter().enumerate() {
                let d = decode(ld(w));
                if matches!(d, E::Child(_)) {
                    return;
                }
                let sub = Runs::of(d, cs);
                if sub.any_held() {
                    return;
                }
                for j in 0..sub.n {
                    r.push(k * cs + sub.at[j], sub.code[j]);
                }
                if r.n > 3 {
                    return;
                }
            }
        }
        if let Some(ne) = r.encode(s) {
            st(e, ne);
            self.release(n);
        }
    }

    fn free_tree(&mut self, n: u32, s: usize) {
        if s > LEAF {
            for w in arena::node(n).iter() {
                if let E::Child(c) = decode(ld(w)) {
                    self.free_tree(c, s / FAN);
                }
            }
        }
        self.release(n);
    }
}

/// The code of page `p` under entry `e` (span `s`), with nodes from `look`.
#[inline]
fn code_at(
    mut e: u64,
    mut s: usize,
    mut p: usize,
    look: impl Fn(u32) -> Option<&'static Node>,
) -> Option<u8> {
    loop {
        match decode(e) {
            E::Uni(c) => return Some(c),
            E::Exc { bg, off, len, ec } => {
                return Some(if p >= off && p < off + len { ec } else { bg });
            }
            E::Child(n) => {
                let node = look(n)?;
                if s <= LEAF {
                    return Some(nibble(node, p % LEAF));
                }
                // Spans are powers of two: shifts, not divisions, on this path.
                let cs = s / FAN;
                e = ld(&node[(p >> cs.trailing_zeros()) % FAN]);
                s = cs;
                p &= cs - 1;
            }
        }
    }
}

/// Entry `e` (span `s`) after `f` on `[lo, hi)`, when that range is the whole span or exactly
/// the exception: the settling of a one-word hold, without building runs.
#[inline]
fn whole_run(e: u64, s: usize, lo: usize, hi: usize, f: Upd) -> Option<u64> {
    match decode(e) {
        E::Uni(c) if lo == 0 && hi == s => Some(uni(f.apply(c))),
        E::Exc { bg, off, len, ec } if lo == off && hi == off + len => {
            let t = f.apply(ec);
            Some(if t == bg {
                uni(bg)
            } else {
                exc(bg, off, len, t)
            })
        }
        _ => None,
    }
}

/// The first page in `[p, end)` (relative to entry `e` of span `s`) whose code is not `code`,
/// with nodes from `look`. (Readers may pass a span that changed under them; every index is
/// kept inside its node, and their sequence check discards the answer.)
fn scan(
    e: u64,
    s: usize,
    p: usize,
    end: usize,
    code: u8,
    look: impl Fn(u32) -> Option<&'static Node> + Copy,
) -> Option<usize> {
    let end = end.min(s);
    if p >= end {
        return Some(end.max(p));
    }
    Some(match decode(e) {
        E::Uni(c) => {
            if c == code {
                end
            } else {
                p
            }
        }
        E::Child(n) => {
            let node = look(n)?;
            if s <= LEAF {
                return Some(leaf_scan(node, p, end, code));
            }
            let cs = s / FAN;
            let sh = cs.trailing_zeros();
            for (k, w) in node
                .iter()
                .enumerate()
                .take(((end - 1) >> sh) + 1)
                .skip(p >> sh)
            {
                let (a, b) = (k * cs, ((k + 1) * cs).min(end));
                let r = scan(ld(w), cs, p.max(a) - a, b - a, code, look)? + a;
                if r < b {
                    return Some(r);
                }
            }
            end
        }
        // An exception's codes differ from its background (equal ones are said uniform).
        E::Exc { bg, off, len, ec } => {
            let inside = p >= off && p < off + len;
            let stop = match (inside, code) {
                (true, c) if c == ec => off + len,
                (false, c) if c == bg && p < off => off,
                (false, c) if c == bg => end,
                _ => p,
            };
            stop.min(end)
        }
    })
}

/// The bits of the nibbles below nibble `x` of a word, `x` in `[0, 16]`.
const NIBBLES_BELOW: [u64; 17] = {
    let mut t = [0u64; 17];
    let mut x = 1;
    while x < 17 {
        t[x] = u64::MAX >> (64 - 4 * x);
        x += 1;
    }
    t
};

/// The bits of nibbles `[a, b)` of a word (0 ≤ a < b ≤ 16): two loads from a table, as a
/// batch's claims compute one per range (variable shifts cost more there).
#[inline]
pub(crate) fn nibble_mask(a: usize, b: usize) -> u64 {
    debug_assert!(a < b && b <= 16);
    NIBBLES_BELOW[b] & !NIBBLES_BELOW[a]
}

/// The code of page `p` of a leaf.
#[inline]
fn nibble(node: &Node, p: usize) -> u8 {
    ((ld(&node[p / 16]) >> ((p % 16) * 4)) & 0xF) as u8
}

#[inline]
fn leaf_update(node: &Node, lo: usize, hi: usize, f: Upd) {
    let mut p = lo;
    while p < hi {
        let w = p / 16;
        let b = (hi - w * 16).min(16);
        let m = nibble_mask(p % 16, b);
        let word = ld(&node[w]);
        st(
            &node[w],
            match f {
                Upd::Set(c) => (word & !m) | ((SPLAT * c as u64) & m),
                Upd::Hold => word | ((SPLAT * BUSY as u64) & m),
                Upd::Unhold => word & !((SPLAT * BUSY as u64) & m),
            },
        );
        p = w * 16 + b;
    }
}

/// Whether the leaf has more than `max` places where a page's code differs from the one
/// before it (so more than `max + 1` runs), stopping as soon as it knows.
#[inline]
fn leaf_boundaries_exceed(node: &Node, max: u32, from: usize) -> bool {
    let mut n = 0;
    // Starting at word `from` (where the leaf just changed, so where new boundaries are)
    // and wrapping around: each nibble against the one before it; page 0 against itself.
    for k in (from..16).chain(0..from) {
        let w = ld(&node[k]);
        let carry = if k == 0 {
            w & 0xF
        } else {
            ld(&node[k - 1]) >> 60
        };
        let x = w ^ ((w << 4) | carry);
        // One bit per differing nibble, counted one by one (no POPCNT in the x86-64
        // baseline, and a fragmented leaf stops after a few).
        let mut m = (x | x >> 1 | x >> 2 | x >> 3) & SPLAT;
        while m != 0 {
            n += 1;
            if n > max {
                return true;
            }
            m &= m - 1;
        }
    }
    false
}

/// Whether a leaf just updated might fold into one entry: none of its pages is held (held
/// pages stay in their node until settled) and it has at most three runs. When it cannot,
/// nothing above it can change either.
#[inline]
fn leaf_may_fold(node: &Node, at: usize) -> bool {
    !leaf_boundaries_exceed(node, 2, at / 16)
        && !node.iter().any(|w| ld(w) & (SPLAT * BUSY as u64) != 0)
}

/// The first page in `[p, end)` of a leaf whose code is not `code` (`end ≤ LEAF`).
fn leaf_scan(node: &Node, p: usize, end: usize, code: u8) -> usize {
    let end = end.min(LEAF);
    let mut q = p;
    while q < end {
        let w = q / 16;
        let b = (end - w * 16).min(16);
        let x = (ld(&node[w]) ^ (SPLAT * code as u64)) & nibble_mask(q % 16, b);
        if x != 0 {
            return w * 16 + x.trailing_zeros() as usize / 4;
        }
        q = w * 16 + b;
    }
    end
}

#[cfg(test)]
mod tests {
    //! The map against a plain array of codes, over random update sequences, with the node
    //! count checked against the canonical-form promise.
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    fn check_all(t: &Table, model: &[u8]) {
        let g = t.lock().unwrap();
        let mut p = 0;
        while p < model.len() {
            let (c, e) = g.run(p, model.len());
            assert_eq!(c, model[p], "code of page {p}");
            let mut q = p;
            while q < model.len() && model[q] == c {
                q += 1;
            }
            assert_eq!(e, q, "end of the run at {p}");
            p = e;
        }
        drop(g);
        // The readers that take no lock say the same.
        let mut p = 0;
        while p < model.len() {
            let (c, e) = t.run(p, model.len());
            assert_eq!(c, model[p], "code of page {p}, read without the lock");
            assert_eq!(t.code(p), c);
            assert!(t.all(p, e, c));
            p = e;
        }
    }

    /// The number of runs of a model.
    fn runs(model: &[u8]) -> usize {
        1 + model.windows(2).filter(|w| w[0] != w[1]).count()
    }

    fn random_sequence(pages: usize, ops: usize, seed: u64, max_len: usize) {
        crate::arena::ensure();
        let t = Table::new(pages, 0);
        let mut model = [0u8; 0].to_vec();
        model.resize(pages, 0);
        let mut s = seed;
        for _ in 0..ops {
            let lo = (rng(&mut s) as usize) % pages;
            let len = 1 + (rng(&mut s) as usize) % max_len.min(pages - lo);
            let hi = lo + len;
            let f = match rng(&mut s) % 4 {
                0 => Upd::Hold,
                1 => Upd::Unhold,
                _ => Upd::Set((rng(&mut s) % 7) as u8),
            };
            {
                let mut g = t.lock().unwrap();
                let d = g.depth;
                g.ensure(2 * d).unwrap();
                g.holding = true;
                g.update(lo, hi, f);
                g.holding = false;
            }
            for c in &mut model[lo..hi] {
                *c = f.apply(*c);
            }
            check_all(&t, &model);
            // Canonical form: a map that one entry can say holds no node (unless pages are
            // held: their nodes stay until settled).
            let n = runs(&model);
            let last = model[pages - 1];
            let held = model.iter().any(|&c| c & BUSY != 0);
            if !held && (n == 1 || n == 2 || (n == 3 && model[0] == last)) {
                assert_eq!(t.live(), 0, "a map of {n} runs holds no node");
            }
        }
        // Back to uniform: every node is returned.
        {
            let mut g = t.lock().unwrap();
            g.update(0, pages, Upd::Set(3));
        }
        assert_eq!(t.live(), 0);
        t.release_all();
    }

    #[test]
    fn leaf_boundaries_agree_with_a_count() {
        let mut s = 99;
        for _ in 0..2000 {
            let mut node = [0u64; 16];
            let mut codes = [0u8; LEAF];
            // Few runs mostly, so the interesting counts (0..4) come up often.
            let runs = 1 + (rng(&mut s) % 5) as usize;
            let mut c = (rng(&mut s) % 16) as u8;
            let mut p = 0;
            for r in 0..runs {
                let end = if r + 1 == runs {
                    LEAF
                } else {
                    (p + 1 + (rng(&mut s) as usize) % 80).min(LEAF)
                };
                codes[p..end].fill(c);
                p = end;
                c = (c + 1 + (rng(&mut s) % 15) as u8) % 16;
            }
            for (q, &c) in codes.iter().enumerate() {
                node[q / 16] |= (c as u64) << ((q % 16) * 4);
            }
            let node: Node = node.map(AtomicU64::new);
            let count = (1..LEAF).filter(|&q| codes[q] != codes[q - 1]).count() as u32;
            for max in 0..5 {
                for from in [0, 1, 7, 15] {
                    assert_eq!(
                        leaf_boundaries_exceed(&node, max, from),
                        count > max,
                        "{codes:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn small_maps_agree_with_an_array() {
        for (pages, seed) in [(1, 1), (7, 2), (256, 3), (300, 4), (4096, 5), (5000, 6)] {
            random_sequence(pages, 400, seed, 64);
        }
    }

    #[test]
    fn large_maps_agree_with_an_array() {
        random_sequence(1 << 17, 300, 7, 1 << 14);
        random_sequence(70_000, 300, 8, 40);
    }

    /// Many claims outstanding at once, settled in random order, fully, not at all, or in
    /// part: settling never needs a node its claim did not reserve (`alloc` asserts it), and
    /// the map agrees with the model throughout.
    fn interleaved_claims(pages: usize, seed: u64, max_len: usize) {
        crate::arena::ensure();
        let t = Table::new(pages, 3);
        let mut model = [3u8; 0].to_vec();
        model.resize(pages, 3);
        let mut open: std::vec::Vec<(usize, usize)> = std::vec::Vec::new();
        let mut s = seed;
        for _ in 0..2000 {
            if open.len() < 12 && rng(&mut s) % 2 == 0 {
                let lo = (rng(&mut s) as usize) % pages;
                let hi = lo + 1 + (rng(&mut s) as usize) % max_len.min(pages - lo);
                let mut g = t.lock().unwrap();
                if let Ok((runs, _)) = g.check(lo, hi, |c| c != 7) {
                    g.claim(lo, hi, runs).unwrap();
                    drop(g);
                    for m in &mut model[lo..hi] {
                        *m |= BUSY;
                    }
                    open.push((lo, hi));
                }
            } else if !open.is_empty() {
                let k = (rng(&mut s) as usize) % open.len();
                let (lo, hi) = open.swap_remove(k);
                let to = (rng(&mut s) % 7) as u8;
                // A partial settle stops where one of the claim's runs starts (map and used
                // stop at the run whose system call failed).
                let starts: std::vec::Vec<usize> = (lo..hi)
                    .filter(|&p| p == lo || model[p] != model[p - 1])
                    .collect();
                let stop = match rng(&mut s) % 3 {
                    0 => hi,
                    1 => lo,
                    _ => starts[(rng(&mut s) as usize) % starts.len()],
                };
                let mut g = t.lock().unwrap();
                if stop > lo {
                    g.update(lo, stop, Upd::Set(to));
                }
                if stop < hi {
                    g.update(stop, hi, Upd::Unhold);
                }
                drop(g);
                for m in &mut model[lo..stop] {
                    *m = to;
                }
                for m in &mut model[stop..hi] {
                    *m &= !BUSY;
                }
            }
            check_all(&t, &model);
        }
        t.release_all();
    }

    #[test]
    fn interleaved_claims_never_lack_a_node() {
        for (pages, seed) in [(64, 11), (300, 12), (5000, 13), (1 << 20, 14)] {
            interleaved_claims(pages, seed, 40);
        }
        interleaved_claims(1 << 16, 15, 1 << 12);
    }

    #[test]
    fn one_run_inside_another_state_needs_no_node() {
        crate::arena::ensure();
        let t = Table::new(1 << 28, 0);
        {
            let mut g = t.lock().unwrap();
            let (runs, _) = g.check(5, 9, |c| c == 0).unwrap();
            g.claim(5, 9, runs).unwrap();
            assert_eq!(g.live, 0);
            g.update(5, 9, Upd::Set(1));
            assert_eq!(g.get(4), 0);
            assert_eq!(g.get(5), 1);
            assert_eq!(g.run(5, 1 << 28), (1, 9));
        }
        assert_eq!(t.live(), 0);
    }

    /// Readers that take no lock, on other threads, while a writer claims, settles, splits
    /// and folds: every page reads as one of the codes it had, never anything else, and the
    /// writer's pages read consistently (a read of a range with no page held sees a state it
    /// had at one instant).
    #[test]
    fn readers_see_only_codes_the_pages_had() {
        crate::arena::ensure();
        let pages = 1 << 12;
        let t = std::sync::Arc::new(Table::new(pages, 3));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let readers: std::vec::Vec<_> = (0..2)
            .map(|k| {
                let (t, stop) = (t.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut s = 7 + k;
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let p = (rng(&mut s) as usize) % pages;
                        let c = t.code(p) & !BUSY;
                        // The writer only ever uses codes 3 and 5 (settled or held).
                        assert!(c == 3 || c == 5, "page {p} read code {c}");
                        let (c2, e) = t.run(p, pages);
                        assert!(e > p && e <= pages);
                        assert!(c2 & !BUSY == 3 || c2 & !BUSY == 5);
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let mut s = 1;
        for _ in 0..20_000 {
            let lo = (rng(&mut s) as usize) % pages;
            let hi = (lo + 1 + (rng(&mut s) as usize) % 300).min(pages);
            let to = if rng(&mut s) % 2 == 0 { 3 } else { 5 };
            let claimed = {
                let mut g = t.lock().unwrap();
                match g.check(lo, hi, |_| true) {
                    Ok((runs, _)) => g.claim(lo, hi, runs).is_ok(),
                    Err(_) => false,
                }
            };
            if claimed {
                let mut g = t.lock().unwrap();
                g.update(lo, hi, Upd::Set(to));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        t.release_all();
    }

    /// A reader that interrupts a section on its own thread (what a signal handler does):
    /// it does not wait, and reads each page before or after the section.
    #[test]
    fn a_reader_inside_a_section_does_not_wait() {
        crate::arena::ensure();
        let t = Table::new(1000, 3);
        let mut g = t.lock().unwrap();
        let (runs, _) = g.check(10, 700, |_| true).unwrap();
        g.claim(10, 700, runs).unwrap();
        // The section is open (odd count): a read still answers at once.
        assert_eq!(t.code(500) & !BUSY, 3);
        g.update(10, 700, Upd::Set(5));
        assert_eq!(t.code(500), 5);
        assert_eq!(t.code(5), 3);
        drop(g);
        assert_eq!(t.run(10, 1000), (5, 700));
    }
}
