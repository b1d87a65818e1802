//! Pieces shared by the integration tests. Every test file is its own crate and includes this
//! module with `mod common;`; each uses a subset of it (hence the `allow`s).
//!
//! What forked children of a multi-threaded process use here does not allocate: the numeric
//! codes, `Slots::try_new` and its methods, `Expect` and the page model. Items meant for the
//! test process or worker threads (they may allocate, e.g. on a failed assert) say so.
#![allow(dead_code)]

use osmem::{
    BatchReport, Error, FaultHow, FaultStrategy, Faulted, Op, Reservation, State, Stats, Syscall,
    Unused, UnusedAdvice, UnusedHow,
};
use osmem_testkit::{
    self as tk, resident_pages, touch_in_child, vma_at, ChildExit, ReportBuf, Touch, SEGV_ACCERR,
    SEGV_MAPERR,
};

// ---------------------------------------------------------------------------------------
// Every value of osmem's knobs and states, in one fixed order

pub const ADVICES: [UnusedAdvice; 3] = [
    UnusedAdvice::DontNeed,
    UnusedAdvice::Free,
    UnusedAdvice::Remap,
];
pub const STRATEGIES: [FaultStrategy; 5] = [
    FaultStrategy::Auto,
    FaultStrategy::Guard,
    FaultStrategy::Protect,
    FaultStrategy::Go,
    FaultStrategy::Remap,
];
pub const STATES: [State; 4] = [
    State::Reserved,
    State::Prepared,
    State::Ready,
    State::Faulted,
];

/// The link `unused_with(a)` takes on a kernel that has every advice.
pub fn expected_how_unused(a: UnusedAdvice) -> UnusedHow {
    match a {
        UnusedAdvice::Free => UnusedHow::Free,
        UnusedAdvice::DontNeed => UnusedHow::DontNeed,
        UnusedAdvice::Remap => UnusedHow::Remap,
        other => unreachable!("an advice these tests do not know: {other:?}"),
    }
}

/// The link `fault_with(s)` takes on a kernel with guard markers (Linux ≥ 6.13).
pub fn expected_how_fault(s: FaultStrategy) -> FaultHow {
    match s {
        FaultStrategy::Auto | FaultStrategy::Guard => FaultHow::Guard,
        FaultStrategy::Protect => FaultHow::Protect,
        FaultStrategy::Go => FaultHow::Go,
        FaultStrategy::Remap => FaultHow::Remap,
        other => unreachable!("a strategy these tests do not know: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Kernel constants (not all in the libc crate)

pub const MADV_DONTNEED: i32 = libc::MADV_DONTNEED;
pub const MADV_FREE: i32 = libc::MADV_FREE;
pub const MADV_HUGEPAGE: i32 = 14;
pub const MADV_NOHUGEPAGE: i32 = 15;
pub const MADV_COLD: i32 = 20;
pub const MADV_POPULATE_WRITE: i32 = 23;
pub const MADV_DONTNEED_LOCKED: i32 = 24;
pub const MADV_COLLAPSE: i32 = 25;
pub const MADV_GUARD_INSTALL: i32 = 102;
pub const MADV_GUARD_REMOVE: i32 = 103;
/// `PIDFD_SELF_THREAD_GROUP`: process_madvise's "this process" sentinel (Linux ≥ 6.15).
pub const PIDFD_SELF: i32 = -10001;
/// `/proc/self/pagemap` bits: guard marker (PM_GUARD_REGION, Linux ≥ 6.14) and present.
pub const PM_GUARD_BIT: u32 = 58;
pub const PM_PRESENT_BIT: u32 = 63;

// ---------------------------------------------------------------------------------------
// Forked children that report through the testkit `Report` (accounting.rs, transitions.rs)

/// In a forked child: if `$c` is false, report this line and exit 1 (allocation-free).
#[allow(unused_macros)]
macro_rules! ck {
    ($rep:expr, $c:expr) => {
        if !$c {
            $rep.push(line!() as u64);
            return 1;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use ck;

/// In a forked child: unwrap a `Result`, or report this line and exit 1.
#[allow(unused_macros)]
macro_rules! ok {
    ($rep:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(_) => {
                $rep.push(line!() as u64);
                return 1;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use ok;

/// Run osmem's one-time initialisation (probe, knobs) in the test process before forking, so
/// no child is ever forked while another thread is half-way through it.
pub fn warm() {
    let _ = osmem::probe();
    let _ = osmem::config();
}

/// The child of `in_child_report` exited 0; else fail with what it reported (the line of the
/// failed check, then its values, if the check reports any).
pub fn child_ok(what: &str, (exit, buf): (ChildExit, ReportBuf)) {
    assert_eq!(
        exit,
        ChildExit::Code(0),
        "{what}: child failed; [line, values...] = {buf:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Numeric codes of osmem's enums and of the kernel's view (failure.rs, matrix.rs)

pub fn op_code(op: Op) -> u64 {
    match op {
        Op::Alloc => 1,
        Op::Reserve => 2,
        Op::Map => 3,
        Op::Used => 4,
        Op::Unused => 5,
        Op::Fault => 6,
        Op::Free => 7,
        Op::HugePage => 8,
        Op::NoHugePage => 9,
        Op::Collapse => 10,
        Op::Residency => 11,
        other => unreachable!("an op these tests do not know: {other:?}"),
    }
}

/// Below 1000 for every advice osmem issues (matrix.rs packs `op * 1000 + call`).
pub fn call_code(c: Syscall) -> u64 {
    match c {
        Syscall::Mmap => 1,
        Syscall::Munmap => 2,
        Syscall::Mprotect => 3,
        Syscall::PidfdOpen => 4,
        Syscall::Prctl => 5,
        Syscall::OpenPagemap => 6,
        Syscall::PagemapScan => 7,
        Syscall::PagemapRead => 8,
        Syscall::Mincore => 9,
        Syscall::Madvise(a) => 100 + a as u64,
        Syscall::ProcessMadvise(a) => 300 + a as u64,
        other => unreachable!("a syscall these tests do not know: {other:?}"),
    }
}

// `UnusedHow` and `FaultHow` codes never overlap, so one field can hold either.
pub const U_FREE: u64 = 1;
pub const U_DONTNEED: u64 = 2;
pub const U_REMAP: u64 = 3;
pub const U_DONTNEED_LOCKED: u64 = 4;
pub const F_GUARD: u64 = 11;
pub const F_PROTECT: u64 = 12;
pub const F_GO: u64 = 13;
pub const F_REMAP: u64 = 14;
pub const F_RELEASED_ONLY: u64 = 15;

pub fn unused_code(h: UnusedHow) -> u64 {
    match h {
        UnusedHow::Free => U_FREE,
        UnusedHow::DontNeed => U_DONTNEED,
        UnusedHow::DontNeedLocked => U_DONTNEED_LOCKED,
        UnusedHow::Remap => U_REMAP,
        other => unreachable!("a link these tests do not know: {other:?}"),
    }
}

pub fn fault_code(h: FaultHow) -> u64 {
    match h {
        FaultHow::Guard => F_GUARD,
        FaultHow::Protect => F_PROTECT,
        FaultHow::Go => F_GO,
        FaultHow::Remap => F_REMAP,
        FaultHow::ReleasedOnly => F_RELEASED_ONLY,
        other => unreachable!("a link these tests do not know: {other:?}"),
    }
}

pub const T_OK: u64 = 1;
pub const T_MAPERR: u64 = 100 + SEGV_MAPERR as u64;
pub const T_ACCERR: u64 = 100 + SEGV_ACCERR as u64;

/// A forked grandchild's access: `Touch::Ok` = 1, SIGSEGV = 100 + si_code, SIGBUS = 200 +
/// si_code, anything else 300.
pub fn touch_code(addr: usize, write: bool) -> u64 {
    match touch_in_child(addr, write) {
        Touch::Ok => T_OK,
        Touch::Segv { si_code } => 100 + si_code as u64,
        Touch::Bus { si_code } => 200 + si_code as u64,
        Touch::Other(_) => 300,
    }
}

pub const P_RW: u64 = 6;
pub const P_NONE: u64 = 0;
pub const P_UNMAPPED: u64 = 9;

/// Protection of the VMA holding `addr` as rwx bits (rw-p = 6, ---p = 0); 9 = not mapped.
pub fn perms_code(addr: usize) -> u64 {
    match vma_at(addr) {
        None => P_UNMAPPED,
        Some(v) => {
            (if v.perms[0] == b'r' { 4 } else { 0 })
                | (if v.perms[1] == b'w' { 2 } else { 0 })
                | (if v.perms[2] == b'x' { 1 } else { 0 })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Slots: 16-page ranges between Reserved gaps (failure.rs, matrix.rs)

pub const SLOT_PAGES: usize = 16;

pub fn ps() -> usize {
    osmem::page_size()
}

pub fn slot_len() -> usize {
    SLOT_PAGES * ps()
}

/// Offset of slot `i` in a [`Slots`] reservation.
pub fn slot_off(i: usize) -> usize {
    (2 * i + 1) * slot_len()
}

/// A reservation of `n` slots of 16 pages, each between two Reserved (PROT_NONE) gaps. Each
/// slot that is made RW is then its own VMA: PROT_NONE neighbours cannot merge with it, so
/// the smaps entry of a slot covers exactly that slot.
pub struct Slots {
    pub r: Reservation,
}

impl Slots {
    /// In the test process (panics if the reservation fails). Probes and reads the knobs
    /// first, so no child probes under its filter.
    pub fn new(n: usize) -> Slots {
        let _ = osmem::probe();
        let _ = osmem::config();
        Slots::try_new(n).unwrap()
    }

    /// `None` if the reservation fails (in a child, where panicking is not an option).
    pub fn try_new(n: usize) -> Option<Slots> {
        let r = Reservation::reserve_aligned((2 * n + 1) * slot_len(), 2 << 20).ok()?;
        Some(Slots { r })
    }

    pub fn off(&self, i: usize) -> usize {
        slot_off(i)
    }

    pub fn addr(&self, i: usize) -> usize {
        self.r.as_ptr() as usize + slot_off(i)
    }

    /// map + used + fill slot `i` with `byte`; true when every page is resident.
    pub fn ready(&self, i: usize, byte: u8) -> bool {
        let (off, len) = (slot_off(i), slot_len());
        if self.r.map(off, len).is_err() || self.r.used(off, len).is_err() {
            return false;
        }
        // SAFETY: the slot is Ready (RW) and nothing else references it.
        unsafe { core::ptr::write_bytes(self.addr(i) as *mut u8, byte, len) };
        resident_pages(self.addr(i), len) == SLOT_PAGES
    }
}

/// Whether every byte of `[addr, addr+len)` is `byte`.
pub fn all_bytes(addr: usize, len: usize, byte: u8) -> bool {
    // SAFETY: callers pass a mapped read-write range.
    (0..len).all(|i| unsafe { core::ptr::read_volatile((addr + i) as *const u8) } == byte)
}

// ---------------------------------------------------------------------------------------
// Page models (model.rs, stress.rs, stress_batch.rs)

/// A page's state as osmem and the kernel hold it: the public state plus how the kernel sees
/// it (protection, guard markers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    Reserved,
    /// Prepared, RW.
    Prepared,
    /// Prepared, PROT_NONE (harddecommit).
    PreparedNone,
    /// Prepared after MADV_FREE (the kernel may still drop its old pages), RW.
    PreparedFree,
    /// Prepared after MADV_FREE, PROT_NONE (harddecommit).
    PreparedNoneFree,
    Ready,
    /// Faulted with guard markers (RW underneath).
    FaultGuard,
    /// Faulted PROT_NONE (Protect, Go, Remap).
    FaultNone,
}

impl PageKind {
    pub fn state(self) -> State {
        match self {
            PageKind::Reserved => State::Reserved,
            PageKind::Prepared
            | PageKind::PreparedNone
            | PageKind::PreparedFree
            | PageKind::PreparedNoneFree => State::Prepared,
            PageKind::Ready => State::Ready,
            PageKind::FaultGuard | PageKind::FaultNone => State::Faulted,
        }
    }

    pub fn prot_none(self) -> bool {
        matches!(
            self,
            PageKind::Reserved
                | PageKind::PreparedNone
                | PageKind::PreparedNoneFree
                | PageKind::FaultNone
        )
    }

    /// What `used` starts from: Prepared pages of any kind, and Ready ones (left alone).
    pub fn used_ok(self) -> bool {
        self.state() == State::Prepared || self == PageKind::Ready
    }

    /// The kind of a Ready page after `unused` released it by `how`.
    pub fn after_unused(how: UnusedHow, protected: bool) -> PageKind {
        match (how == UnusedHow::Free, protected) {
            (false, false) => PageKind::Prepared,
            (false, true) => PageKind::PreparedNone,
            (true, false) => PageKind::PreparedFree,
            (true, true) => PageKind::PreparedNoneFree,
        }
    }

    /// The permissions `/proc/self/maps` must show for the page.
    pub fn perms(self) -> &'static [u8; 4] {
        if self.prot_none() {
            b"---p"
        } else {
            b"rw-p"
        }
    }

    /// What a forked grandchild's access to the page must give.
    pub fn touch(self) -> Touch {
        match self {
            PageKind::FaultGuard => Touch::Segv {
                si_code: SEGV_MAPERR,
            },
            k if k.prot_none() => Touch::Segv {
                si_code: SEGV_ACCERR,
            },
            _ => Touch::Ok,
        }
    }
}

/// What a page holds: bytes 0 and ps-1 are the written value, every other byte is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    Zero,
    Val(u8),
    /// Released with MADV_FREE: `Val` if the kernel has not reclaimed it, else `Zero`.
    FreeOr(u8),
}

impl Data {
    /// Whether a page whose bytes 0 and ps-1 read `marks` may hold this.
    pub fn admits(self, marks: (u8, u8)) -> bool {
        match self {
            Data::Zero => marks == (0, 0),
            Data::Val(v) => marks == (v, v),
            Data::FreeOr(v) => marks == (0, 0) || marks == (v, v),
        }
    }
}

/// Write `v` to bytes 0 and ps-1 of the page at `addr`.
///
/// # Safety
/// The page must be mapped read-write and not referenced elsewhere.
pub unsafe fn write_marks(addr: usize, ps: usize, v: u8) {
    (addr as *mut u8).write_volatile(v);
    ((addr + ps - 1) as *mut u8).write_volatile(v);
}

/// Bytes 0 and ps-1 of the page at `addr`, and whether every byte between them is zero.
///
/// # Safety
/// The page must be mapped readable.
pub unsafe fn read_marks(addr: usize, ps: usize) -> ((u8, u8), bool) {
    (
        (
            (addr as *const u8).read_volatile(),
            ((addr + ps - 1) as *const u8).read_volatile(),
        ),
        tk::is_zero(addr + 1, ps - 2),
    )
}

pub fn bytes_name(s: State) -> &'static str {
    match s {
        State::Reserved => "reserved_bytes",
        State::Prepared => "prepared_bytes",
        State::Ready => "ready_bytes",
        State::Faulted => "faulted_bytes",
    }
}

/// Room for every `Stats` field (55 today).
const EXPECT_CAP: usize = 64;

/// Expected deltas of `osmem::stats()` counters, by field name. Fixed capacity: usable in a
/// forked child. An `add` that finds no room sets a flag [`Expect::names_ok`] reports.
#[derive(Clone, Copy)]
pub struct Expect {
    items: [(&'static str, i64); EXPECT_CAP],
    len: usize,
    full: bool,
}

impl core::fmt::Debug for Expect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map()
            .entries(self.items().iter().map(|&(k, v)| (k, v)))
            .finish()
    }
}

impl Expect {
    pub const NONE: Expect = Expect {
        items: [("", 0); EXPECT_CAP],
        len: 0,
        full: false,
    };

    pub fn add(&mut self, name: &'static str, v: i64) {
        if let Some(it) = self.items[..self.len].iter_mut().find(|it| it.0 == name) {
            it.1 += v;
        } else if self.len < EXPECT_CAP {
            self.items[self.len] = (name, v);
            self.len += 1;
        } else {
            self.full = true;
        }
    }

    pub fn get(&self, name: &str) -> i64 {
        self.items()
            .iter()
            .find(|it| it.0 == name)
            .map_or(0, |it| it.1)
    }

    pub fn items(&self) -> &[(&'static str, i64)] {
        &self.items[..self.len]
    }

    pub fn merge(&mut self, other: &Expect) {
        for &(k, v) in other.items() {
            self.add(k, v);
        }
        self.full |= other.full;
    }

    /// `bytes` move from state `from` to state `to`.
    pub fn mv(&mut self, from: State, to: State, bytes: usize) {
        if from != to {
            self.add(bytes_name(from), -(bytes as i64));
            self.add(bytes_name(to), bytes as i64);
        }
    }

    /// A MAP_FIXED remap link ran `n` times: one mmap each, and under `thp=never` the
    /// MADV_NOHUGEPAGE osmem puts back on the fresh VMA.
    pub fn remapped(&mut self, n: i64, thp_never: bool) {
        self.add("mmap_calls", n);
        if thp_never {
            self.add("madvise_calls", n);
            self.add("madv_nohugepage", n);
        }
    }

    /// The syscalls of a direct `unused` that took `how`.
    pub fn unused_calls(&mut self, how: UnusedHow, thp_never: bool) {
        match how {
            UnusedHow::Free => {
                self.add("madvise_calls", 1);
                self.add("madv_free", 1);
            }
            UnusedHow::DontNeed => {
                self.add("madvise_calls", 1);
                self.add("madv_dontneed", 1);
            }
            // Refused DONTNEED, then DONTNEED_LOCKED (the model tests never lock memory).
            UnusedHow::DontNeedLocked => {
                self.add("madvise_calls", 2);
                self.add("madv_dontneed", 1);
                self.add("madv_dontneed_locked", 1);
                self.add("madvise_errors", 1);
                self.add("fallback_locked", 1);
            }
            UnusedHow::Remap => self.remapped(1, thp_never),
            other => unreachable!("a link these tests do not know: {other:?}"),
        }
    }

    /// The syscalls of a direct `fault` that took `how`.
    pub fn fault_calls(&mut self, how: FaultHow, thp_never: bool) {
        match how {
            FaultHow::Guard => {
                self.add("madvise_calls", 1);
                self.add("madv_guard_install", 1);
            }
            FaultHow::Protect | FaultHow::Go => {
                self.add("madvise_calls", 1);
                self.add("madv_dontneed", 1);
                self.add("mprotect_calls", 1);
            }
            FaultHow::Remap | FaultHow::ReleasedOnly => self.remapped(1, thp_never),
            other => unreachable!("a link these tests do not know: {other:?}"),
        }
    }

    /// The syscall `map` issues for one run of pages: guard markers are removed, anything
    /// else is made RW.
    pub fn map_run_calls(&mut self, guarded: bool) {
        if guarded {
            self.add("madvise_calls", 1);
            self.add("madv_guard_remove", 1);
        } else {
            self.add("mprotect_calls", 1);
        }
    }

    /// The system calls `used` issues for a range of pages of these kinds, per run of equal
    /// kinds (as osmem's map has them): `mprotect(RW)` for a PROT_NONE run; with prefault, one
    /// `MADV_POPULATE_WRITE` per Prepared run that was not released with MADV_FREE (those are
    /// written instead, no system call); nothing for Ready runs.
    pub fn used_calls(&mut self, kinds: &[PageKind], prefault: bool) {
        for (i, &k) in kinds.iter().enumerate() {
            if i > 0 && kinds[i - 1] == k {
                continue;
            }
            if k.prot_none() {
                self.add("mprotect_calls", 1);
            }
            let lazy = matches!(k, PageKind::PreparedFree | PageKind::PreparedNoneFree);
            if prefault && k != PageKind::Ready && !lazy {
                self.add("madvise_calls", 1);
                self.add("madv_populate_write", 1);
            }
        }
    }

    /// Every `Stats` field whose `after - before` is not what this expects: (name, got, want).
    pub fn mismatches<'a>(
        &'a self,
        before: &'a Stats,
        after: &'a Stats,
    ) -> impl Iterator<Item = (&'static str, i64, i64)> + 'a {
        // The metadata counters follow the shape of the page-state map, not the operation;
        // the metadata tests check them (and the arena's RSS) on their own. The system calls
        // they count are osmem's too, so they are expected on top of the operation's own.
        let moved = |f: fn(&Stats) -> u64| f(after).wrapping_sub(f(before)) as i64;
        let releases = moved(|s| s.metadata_releases);
        let grows = moved(|s| s.metadata_grows);
        before
            .fields()
            .zip(after.fields())
            .filter(|((name, _), _)| !METADATA_COUNTERS.contains(name))
            .map(move |((name, b), (_, a))| {
                let extra = match name {
                    "madvise_calls" | "madv_dontneed" => releases,
                    "mprotect_calls" => grows,
                    _ => 0,
                };
                (name, a.wrapping_sub(b) as i64, self.get(name) + extra)
            })
            .filter(|&(_, got, want)| got != want)
    }

    /// Every name is a `Stats` field and every `add` found room (else: a test bug).
    pub fn names_ok(&self) -> bool {
        let known = osmem::stats()
            .fields()
            .filter(|(name, _)| self.items().iter().any(|it| it.0 == *name))
            .count();
        !self.full && known == self.len
    }
}

/// Stats fields that count osmem's own metadata memory: not predicted per operation.
pub const METADATA_COUNTERS: [&str; 4] = [
    "metadata_reserved_bytes",
    "metadata_bytes",
    "metadata_releases",
    "metadata_grows",
];

/// Assert that every `Stats` field moved from `before` to `after` by exactly what `exp` says.
/// Allocates (test process or worker threads only).
pub fn assert_deltas(what: &str, before: &Stats, after: &Stats, exp: &Expect) {
    assert!(exp.names_ok(), "{what}: unknown counter names in {exp:?}");
    let bad: Vec<String> = exp
        .mismatches(before, after)
        .map(|(name, got, want)| format!("{name}: moved by {got}, expected {want}"))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: global stats deltas:\n  {}",
        bad.join("\n  ")
    );
}

/// What the model-based tests (model.rs, stress.rs, stress_batch.rs) predict from: the kernel
/// and the knobs this process runs with (`OSMEM` may set them).
#[derive(Clone, Copy, Debug)]
pub struct ModelEnv {
    pub ps: usize,
    /// Regions get their `[anon:osmem]` name (one prctl) at their first `map`.
    pub names: bool,
    /// Batches open a pidfd per flush (no PIDFD_SELF sentinel).
    pub pidfd_open: bool,
    pub harddecommit: bool,
    pub prefault: bool,
    pub unused: UnusedAdvice,
    pub fault: FaultStrategy,
}

/// The model-based tests predict every syscall for a kernel with guard markers and their
/// pagemap bit, process_madvise of the own process, MADV_FREE, MADV_POPULATE_WRITE and THP
/// (Linux ≥ 6.14). Asserts the probe found them and runs the first reservation's one-time
/// work (e.g. the anon-name downgrade), so no baseline taken after this sees it.
pub fn linux_6_14() -> ModelEnv {
    let p = osmem::probe();
    let c = osmem::config();
    assert!(
        p.advice.guard_install
            && p.advice.free
            && p.advice.populate_write
            && p.advice.hugepage
            && p.advice.nohugepage
            && p.process_madvise != osmem::ProcessMadvise::Unsupported,
        "the expectations assume Linux ≥ 6.14 (guard markers and their pagemap bit, \
         process_madvise of the own process, MADV_FREE, MADV_POPULATE_WRITE, THP)"
    );
    let r = Reservation::reserve(p.page_size).unwrap();
    r.map(0, p.page_size).unwrap();
    drop(r);
    ModelEnv {
        ps: p.page_size,
        names: osmem::stats().downgrade_anon_name == 0,
        pidfd_open: p.process_madvise == osmem::ProcessMadvise::PidfdOpen,
        harddecommit: c.is_harddecommit(),
        prefault: c.is_prefault(),
        unused: c.unused_advice(),
        fault: c.fault_strategy(),
    }
}

/// The outcome of a batch of up to `N` pushes, as the model tests compare it (expected or
/// observed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOutcome<const N: usize> {
    /// Per range: the error `push` returned, if any.
    pub pushes: [Option<Error>; N],
    pub ranges: usize,
    pub refused: usize,
    pub bytes: usize,
    pub per_range: usize,
    pub not_zeroed: usize,
    pub not_trapping: usize,
    pub failed: usize,
    pub error: Option<Error>,
    /// `state` of the last queued range's first page, just before the batch ends (model.rs):
    /// pushing it changed nothing.
    pub queued_state: Option<State>,
    /// Unused (kept for the layout of older reports): pushing claims nothing, so there is no
    /// direct transition to refuse.
    pub direct: Option<Result<(), Error>>,
}

impl<const N: usize> Default for BatchOutcome<N> {
    fn default() -> Self {
        BatchOutcome {
            pushes: [None; N],
            ranges: 0,
            refused: 0,
            bytes: 0,
            per_range: 0,
            not_zeroed: 0,
            not_trapping: 0,
            failed: 0,
            error: None,
            queued_state: None,
            direct: None,
        }
    }
}

impl<const N: usize> BatchOutcome<N> {
    /// Take the figures of `flush`'s report.
    pub fn reported(&mut self, rep: &BatchReport) {
        self.ranges = rep.ranges;
        self.refused = rep.refused;
        self.bytes = rep.bytes;
        self.per_range = rep.per_range;
        self.not_zeroed = rep.not_zeroed;
        self.not_trapping = rep.not_trapping;
        self.failed = rep.failed;
        self.error = rep.error;
    }
}

// ---------------------------------------------------------------------------------------
// The two-thread cycle workload: accounting.rs checks its per-region figures (whatever the
// rest of the process does), accounting_threads.rs its exact global deltas.

/// Pages per slot.
pub const CYCLE_SLOT: usize = 4;
/// Slots per thread (a multiple of 3: the final states take a third each).
pub const CYCLE_SLOTS: usize = 24;

/// What a caller of [`cycle_slots`] checks or counts along the way.
pub trait CycleHooks {
    /// A `map` of a slot that was Reserved (`None`) or faulted with `how`.
    fn mapped(&mut self, _faulted: Option<FaultHow>) {}
    fn used(&mut self) {}
    /// Slot `s`, cycle `i`: `unused_with(adv)` returned `u`.
    fn unused(&mut self, _s: usize, _i: usize, _adv: UnusedAdvice, _u: &Unused) {}
    /// Slot `s`, cycle `i`: `fault_with(strat)` returned `f`.
    fn faulted(&mut self, _s: usize, _i: usize, _strat: FaultStrategy, _f: &Faulted) {}
    /// The final `unused_with(DontNeed)` / `fault_with(Guard)` of a slot went `how`.
    fn final_unused(&mut self, _how: UnusedHow) {}
    fn final_fault(&mut self, _how: FaultHow) {}
}

/// Thread `t`'s share on slots `[t*CYCLE_SLOTS, (t+1)*CYCLE_SLOTS)` of `r`: `cycles` rounds of
/// mark → unused_with (each advice in turn) → used → zero if zeroed → mark → fault_with (each
/// strategy in turn) → map → used → zero; then the final states by slot index: Ready (filled
/// with `0xa0 + k`), Prepared, Faulted (guard markers).
pub fn cycle_slots(r: &Reservation, t: usize, cycles: usize, h: &mut impl CycleHooks) {
    let ps = osmem::page_size();
    let len = CYCLE_SLOT * ps;
    let base = r.as_ptr() as usize;
    // SAFETY (both): the slot's pages are Ready and only this thread uses them.
    let first_bytes_zero = |s: usize| {
        (0..CYCLE_SLOT).all(|k| unsafe { *((base + s * len + k * ps) as *const u8) } == 0)
    };
    let mark = |s: usize, v: u8| {
        for k in 0..CYCLE_SLOT {
            unsafe { *((base + s * len + k * ps) as *mut u8) = v };
        }
    };
    for i in 0..cycles {
        let s = t * CYCLE_SLOTS + i % CYCLE_SLOTS;
        let off = s * len;
        if i < CYCLE_SLOTS {
            r.map(off, len).unwrap();
            h.mapped(None);
            r.used(off, len).unwrap();
            h.used();
        }
        mark(s, (i % 251) as u8 + 1);
        let adv = ADVICES[(i / CYCLE_SLOTS) % 3];
        // SAFETY: this thread's slot; nothing references it.
        let u = unsafe { r.unused_with(off, len, adv) }.unwrap();
        h.unused(s, i, adv, &u);
        r.used(off, len).unwrap();
        h.used();
        if u.zeroed {
            assert!(
                first_bytes_zero(s),
                "slot {s} cycle {i}: not zero after {adv:?}"
            );
        }
        mark(s, 0xee);
        let strat = STRATEGIES[(i / CYCLE_SLOTS) % 5];
        // SAFETY: as above.
        let f = unsafe { r.fault_with(off, len, strat) }.unwrap();
        h.faulted(s, i, strat, &f);
        r.map(off, len).unwrap();
        h.mapped(Some(f.how));
        r.used(off, len).unwrap();
        h.used();
        assert!(
            first_bytes_zero(s),
            "slot {s} cycle {i}: not zero after fault + map"
        );
    }
    for k in 0..CYCLE_SLOTS {
        let s = t * CYCLE_SLOTS + k;
        // SAFETY: as above.
        match k % 3 {
            0 => unsafe {
                core::ptr::write_bytes((base + s * len) as *mut u8, 0xa0 + k as u8, len)
            },
            1 => h.final_unused(
                unsafe { r.unused_with(s * len, len, UnusedAdvice::DontNeed) }
                    .unwrap()
                    .how,
            ),
            _ => h.final_fault(
                unsafe { r.fault_with(s * len, len, FaultStrategy::Guard) }
                    .unwrap()
                    .how,
            ),
        }
    }
}

/// The kernel agrees with the final states of [`cycle_slots`] (both threads), slot by slot:
/// Ready slots resident with their data, Prepared and Faulted ones released, Faulted ones trap
/// with SEGV_MAPERR (guard markers) when page `trap_page` of the slot is touched.
pub fn check_cycle_final(r: &Reservation, trap_page: usize) {
    let ps = osmem::page_size();
    let base = r.as_ptr() as usize;
    for s in 0..2 * CYCLE_SLOTS {
        let (a, k) = (base + s * CYCLE_SLOT * ps, s % CYCLE_SLOTS);
        match k % 3 {
            0 => {
                assert_eq!(resident_pages(a, CYCLE_SLOT * ps), CYCLE_SLOT, "slot {s}");
                let v = 0xa0 + k as u8;
                assert!(all_bytes(a, CYCLE_SLOT * ps, v), "slot {s}");
            }
            1 => assert_eq!(resident_pages(a, CYCLE_SLOT * ps), 0, "slot {s}"),
            _ => {
                assert_eq!(resident_pages(a, CYCLE_SLOT * ps), 0, "slot {s}");
                assert_eq!(
                    touch_in_child(a + trap_page * ps, true),
                    Touch::Segv {
                        si_code: SEGV_MAPERR
                    },
                    "slot {s}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Roles: a test's other half in a fresh process (this test binary re-executed with only the
// test selected and an environment variable naming the role). For what must happen before
// osmem's first use (the probe under a filter, `mlockall`) or must not touch the test process
// (`mlockall` would lock and populate other tests' regions).

const ROLE_ENV: &str = "OSMEM_TEST_ROLE";

/// In the re-executed process: install `rules`, run `body`, print its line, exit. (Called
/// first thing in a test, so in the re-executed process nothing of osmem has run yet.)
pub fn play_role_if(role: &str, rules: &[tk::Inject], body: impl FnOnce() -> String) {
    if std::env::var(ROLE_ENV).as_deref() != Ok(role) {
        return;
    }
    let prog = tk::build_filter(rules);
    osmem_testkit::apply_filter_in_child(&prog);
    let line = body();
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "RESULT {line}");
    let _ = out.flush();
    std::process::exit(0);
}

/// In the test process: re-execute this binary for `test` in `role` (without the `OSMEM`
/// variable); returns key=value pairs.
pub fn spawn_role(test: &str, role: &str) -> std::collections::HashMap<String, String> {
    tk::rerun_self(test, &[(ROLE_ENV, role)], &["OSMEM"])
}
