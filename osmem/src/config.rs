//! Knobs: the [`Config`] builder and the `OSMEM` environment variable.
//!
//! `OSMEM=unused=free,harddecommit=1,thp=never` works like Go's `GODEBUG`: read once, at the
//! first operation (or the first [`config`] / [`configure`] call), parsed in place without
//! allocating. Unknown keys and values are never silently taken: they are kept in the
//! [`EnvReport`] that [`env_report`] returns (the CLI prints it) and the built-in default stays.
//!
//! Knobs are process-wide, like Go's `GODEBUG`, and a reservation may override them:
//! [`Reservation::with_config`](crate::Reservation::with_config) gives it a [`Config`] of its
//! own, and every key that `Config` *sets* (with a builder method, or present in a parsed
//! string) applies to that reservation; the keys it does not set follow the process-wide
//! knobs as they change. One exception: `checked` is a debugging switch, so where the process
//! has it on (an operator's `OSMEM=checked=1`, or [`configure`]) it is on for every
//! reservation; a reservation's own `checked=1` turns it on for that reservation only.
//! [`configure`] replaces the process-wide knobs at any time; operations already running
//! finish under the knobs they started with.

use crate::once::Once;
use crate::sys::linux as sys;
use core::sync::atomic::Ordering;

/// Which advice `unused` starts its chain with: the `unused` knob ([`Config::unused`],
/// `OSMEM=unused=…`), or per call with
/// [`Reservation::unused_with`](crate::Reservation::unused_with).
/// Whatever it starts with, the chain goes on to the next link where a link fails, and the
/// [`Unused`](crate::Unused) result says which one ran.
///
/// ```
/// use osmem::{Reservation, UnusedAdvice, UnusedHow};
/// let r = Reservation::alloc(1 << 16)?;
/// // SAFETY: nothing refers to the range.
/// let u = unsafe { r.unused_with(0, 1 << 16, UnusedAdvice::Free)? };
/// // MADV_FREE where the kernel has it (the pages may keep their data), else MADV_DONTNEED.
/// assert!(matches!(u.how, UnusedHow::Free | UnusedHow::DontNeed));
/// assert_eq!(u.zeroed, u.how != UnusedHow::Free);
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnusedAdvice {
    /// `MADV_DONTNEED` (default): RSS drops at once and the range reads zero. Go's default
    /// since 1.16, because MADV_FREE's lazily-dropped pages confused every RSS-based monitor.
    DontNeed,
    /// `MADV_FREE`: cheapest (pages are reclaimed only under memory pressure), but RSS does
    /// not drop and old contents may survive, so the range is *not* known to be zero.
    Free,
    /// Skip madvise and replace the range with `mmap(RW, MAP_FIXED)`: the chain's last link,
    /// selectable for comparison and for kernels built without `CONFIG_ADVISE_SYSCALLS`.
    Remap,
}

/// How `fault` makes a range trap: the `fault` knob ([`Config::fault`], `OSMEM=fault=…`),
/// or per call with [`Reservation::fault_with`](crate::Reservation::fault_with). Each strategy
/// falls back to the next where the kernel refuses it, and [`Faulted`](crate::Faulted) says
/// which link ran; [`selected`](crate::selected) says what `Auto` resolves to here.
///
/// ```
/// use osmem::{FaultHow, FaultStrategy, Reservation};
/// let r = Reservation::alloc(1 << 16)?;
/// // SAFETY: nothing refers to the range.
/// let f = unsafe { r.fault_with(0, 1 << 16, FaultStrategy::Protect)? };
/// assert!(f.traps());
/// assert!(matches!(f.how, FaultHow::Protect | FaultHow::Guard | FaultHow::Remap));
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultStrategy {
    /// Pick by probe: [`Guard`](Self::Guard) where the kernel has guard markers, else
    /// [`Protect`](Self::Protect).
    Auto,
    /// `MADV_GUARD_INSTALL` (Linux ≥ 6.13): no VMA split, never takes mmap_lock for writing.
    Guard,
    /// `MADV_DONTNEED` then `mprotect(PROT_NONE)`: one TLB shootdown instead of Go's two, and
    /// the write lock is held only for the (now cheap) protection change. Safe because the
    /// range is dead: nothing may touch it between the two calls.
    Protect,
    /// What Go's sysFault does today: `mprotect(PROT_NONE)` then `MADV_DONTNEED`, so two TLB
    /// shootdowns, the first with the write lock held while the protection of every present
    /// page is rewritten. Kept for comparison.
    Go,
    /// What Go's sysFault did before it moved to `mprotect`: replace the range with
    /// `mmap(PROT_NONE, MAP_FIXED)`. Holds mmap_lock for writing through the whole zap of the
    /// old pages, but gives back the commit charge (which counts under
    /// `vm.overcommit_memory=2`).
    Remap,
}

/// Transparent-huge-page policy for osmem's own hints: the `thp` knob ([`Config::thp`],
/// `OSMEM=thp=…`).
///
/// ```
/// use osmem::{Config, Reservation, Thp};
/// let r = Reservation::reserve_aligned(4 << 20, 2 << 20)?
///     .with_config(Config::new().thp(Thp::Never));
/// r.hugepage(0, 4 << 20)?; // a counted no-op under thp=never
/// assert_eq!(r.selected().thp, Thp::Never);
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Thp {
    /// Hints are passed to the kernel as asked.
    Default,
    /// Like Go's `disablethp`: `hugepage` and `collapse` become counted no-ops and new
    /// reservations get `MADV_NOHUGEPAGE`.
    Never,
}

/// The process-wide memory policy. Build one, then [`configure`] it.
///
/// ```
/// use osmem::{Config, UnusedAdvice};
/// let cfg = Config::new().unused(UnusedAdvice::Free).harddecommit(false);
/// assert_eq!(cfg.unused_advice(), UnusedAdvice::Free);
/// osmem::configure(Config::from_env()); // back to the defaults plus whatever OSMEM says
/// ```
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct Config {
    unused: UnusedAdvice,
    fault: FaultStrategy,
    harddecommit: bool,
    thp: Thp,
    prefault: bool,
    checked: bool,
    /// The keys set explicitly (`S_*` bits, in [`KEYS`] order): what a reservation's Config
    /// overrides.
    set: u8,
}

const S_UNUSED: u8 = 1 << 0;
const S_FAULT: u8 = 1 << 1;
const S_HARDDECOMMIT: u8 = 1 << 2;
const S_THP: u8 = 1 << 3;
const S_PREFAULT: u8 = 1 << 4;
const S_CHECKED: u8 = 1 << 5;

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Config {
    /// The built-in defaults: `unused=dontneed`, `fault=auto`, `harddecommit=0`,
    /// `thp=default`, `prefault=0`, `checked=0` (`checked=1` when built with the `checked`
    /// cargo feature).
    ///
    /// ```
    /// assert_eq!(osmem::Config::new().fault_strategy(), osmem::FaultStrategy::Auto);
    /// ```
    pub const fn new() -> Self {
        Config {
            unused: UnusedAdvice::DontNeed,
            fault: FaultStrategy::Auto,
            harddecommit: false,
            thp: Thp::Default,
            prefault: false,
            checked: cfg!(feature = "checked"),
            set: 0,
        }
    }

    /// The defaults with the `OSMEM` environment variable applied (as the process started
    /// with it; see the crate docs' "Knobs").
    ///
    /// ```
    /// let cfg = osmem::Config::from_env();
    /// let _ = cfg.unused_advice();
    /// ```
    pub fn from_env() -> Self {
        env_init().config
    }

    /// Set the advice `unused` starts with.
    ///
    /// ```
    /// let c = osmem::Config::new().unused(osmem::UnusedAdvice::Remap);
    /// assert_eq!(c.unused_advice(), osmem::UnusedAdvice::Remap);
    /// ```
    pub const fn unused(mut self, a: UnusedAdvice) -> Self {
        self.unused = a;
        self.set |= S_UNUSED;
        self
    }

    /// Set the fault strategy.
    ///
    /// ```
    /// let c = osmem::Config::new().fault(osmem::FaultStrategy::Go);
    /// assert_eq!(c.fault_strategy(), osmem::FaultStrategy::Go);
    /// ```
    pub const fn fault(mut self, s: FaultStrategy) -> Self {
        self.fault = s;
        self.set |= S_FAULT;
        self
    }

    /// Go's `harddecommit`: `unused` also makes the range `PROT_NONE` and `used` makes it RW
    /// again, so a use-after-unused bug traps instead of reading zeros.
    ///
    /// ```
    /// assert!(osmem::Config::new().harddecommit(true).is_harddecommit());
    /// ```
    pub const fn harddecommit(mut self, on: bool) -> Self {
        self.harddecommit = on;
        self.set |= S_HARDDECOMMIT;
        self
    }

    /// Set the transparent-huge-page policy.
    ///
    /// ```
    /// let c = osmem::Config::new().thp(osmem::Thp::Never);
    /// assert_eq!(c.thp_policy(), osmem::Thp::Never);
    /// ```
    pub const fn thp(mut self, t: Thp) -> Self {
        self.thp = t;
        self.set |= S_THP;
        self
    }

    /// Make `used` prefault the range (`MADV_POPULATE_WRITE`, else touching each page), so
    /// the first accesses do not each take a page fault.
    ///
    /// ```
    /// assert!(osmem::Config::new().prefault(true).is_prefault());
    /// ```
    pub const fn prefault(mut self, on: bool) -> Self {
        self.prefault = on;
        self.set |= S_PREFAULT;
        self
    }

    /// Checked mode: after every transition, ask the kernel whether it did what the syscalls
    /// said — a released range must have no resident page (`mincore`), a faulted range must
    /// refuse access (`MADV_POPULATE_READ` fails on it) — and return
    /// [`Error::Unverified`](crate::Error::Unverified) if not. For tests, bring-up on a new
    /// kernel, and sandboxes suspected of answering 0 without acting. Costs one or two extra
    /// syscalls per transition.
    ///
    /// (The other half of a checked mode, refusing every illegal transition with a typed error
    /// before any syscall, is always on: osmem keeps each page's state anyway, for exact
    /// accounting and for undoing each fault by its own inverse.)
    ///
    /// ```
    /// assert!(osmem::Config::new().checked(true).is_checked());
    /// ```
    pub const fn checked(mut self, on: bool) -> Self {
        self.checked = on;
        self.set |= S_CHECKED;
        self
    }

    /// Whether checked mode is on.
    ///
    /// ```
    /// let _ = osmem::config().is_checked();
    /// ```
    pub const fn is_checked(&self) -> bool {
        self.checked
    }

    /// The advice `unused` starts with.
    ///
    /// ```
    /// assert_eq!(osmem::Config::new().unused_advice(), osmem::UnusedAdvice::DontNeed);
    /// ```
    pub const fn unused_advice(&self) -> UnusedAdvice {
        self.unused
    }

    /// The configured fault strategy (possibly `Auto`; see [`crate::selected`] for the
    /// resolved one).
    ///
    /// ```
    /// assert_eq!(osmem::Config::new().fault_strategy(), osmem::FaultStrategy::Auto);
    /// ```
    pub const fn fault_strategy(&self) -> FaultStrategy {
        self.fault
    }

    /// Whether harddecommit is on.
    ///
    /// ```
    /// assert!(!osmem::Config::new().is_harddecommit());
    /// ```
    pub const fn is_harddecommit(&self) -> bool {
        self.harddecommit
    }

    /// The transparent-huge-page policy.
    ///
    /// ```
    /// assert_eq!(osmem::Config::new().thp_policy(), osmem::Thp::Default);
    /// ```
    pub const fn thp_policy(&self) -> Thp {
        self.thp
    }

    /// Whether `used` prefaults.
    ///
    /// ```
    /// assert!(!osmem::Config::new().is_prefault());
    /// ```
    pub const fn is_prefault(&self) -> bool {
        self.prefault
    }

    /// Parse an `OSMEM`-style string (`key=value,key=value`) on top of the defaults, without
    /// allocating. Problems are reported, and the offending item leaves its knob unchanged. A
    /// key given twice takes the later value and is reported ([`ProblemKind::RepeatedKey`]).
    ///
    /// ```
    /// let (cfg, report) = osmem::Config::parse(b"unused=free,bogus=1,thp=sometimes");
    /// assert_eq!(cfg.unused_advice(), osmem::UnusedAdvice::Free);
    /// assert_eq!(report.problems().len(), 2);
    /// assert_eq!(report.problems()[0].item(), "bogus=1");
    ///
    /// let (cfg, report) = osmem::Config::parse(b"unused=free,unused=dontneed");
    /// assert_eq!(cfg.unused_advice(), osmem::UnusedAdvice::DontNeed);
    /// assert_eq!(report.problems()[0].kind(), osmem::ProblemKind::RepeatedKey);
    /// ```
    pub fn parse(s: &[u8]) -> (Config, EnvReport) {
        let mut cfg = Config::new();
        let mut report = EnvReport::EMPTY;
        for item in s.split(|&b| b == b',') {
            let item = trim(item);
            if item.is_empty() {
                continue;
            }
            let Some(eq) = item.iter().position(|&b| b == b'=') else {
                report.push(ProblemKind::Malformed, item);
                continue;
            };
            let (key, val) = (trim(&item[..eq]), trim(&item[eq + 1..]));
            let (ok, bit) = match key {
                b"unused" => (set(&mut cfg.unused, val, UNUSED_VALUES), S_UNUSED),
                b"fault" => (set(&mut cfg.fault, val, FAULT_VALUES), S_FAULT),
                b"harddecommit" => (set(&mut cfg.harddecommit, val, BOOL_VALUES), S_HARDDECOMMIT),
                b"thp" => (set(&mut cfg.thp, val, THP_VALUES), S_THP),
                b"prefault" => (set(&mut cfg.prefault, val, BOOL_VALUES), S_PREFAULT),
                b"checked" => (set(&mut cfg.checked, val, BOOL_VALUES), S_CHECKED),
                _ => {
                    report.push(ProblemKind::UnknownKey, item);
                    continue;
                }
            };
            if !ok {
                report.push(ProblemKind::BadValue, item);
            } else if cfg.set & bit != 0 {
                // Said twice: the later value holds, and the repetition is a problem (a
                // launcher appending to a variable a user already set, for example).
                report.push(ProblemKind::RepeatedKey, item);
            } else {
                cfg.set |= bit;
            }
        }
        (cfg, report)
    }
}

impl Config {
    /// Whether this Config sets `key` (one of [`KEYS`]) explicitly: with a builder method, or
    /// because the parsed string had it. A reservation's Config overrides exactly those keys.
    ///
    /// ```
    /// let c = osmem::Config::new().fault(osmem::FaultStrategy::Protect);
    /// assert!(c.sets("fault"));
    /// assert!(!c.sets("unused"));
    /// ```
    pub fn sets(&self, key: &str) -> bool {
        KEYS.iter()
            .position(|&k| k == key)
            .is_some_and(|i| self.set & (1 << i) != 0)
    }
}

// ----- knobs packed in one word: bits 0-5 the keys set (`S_*`), then the values

const V_UNUSED: u32 = 3 << 8;
const V_FAULT: u32 = 7 << 10;
const V_HARDDECOMMIT: u32 = 1 << 13;
const V_THP_NEVER: u32 = 1 << 14;
const V_PREFAULT: u32 = 1 << 15;
const V_CHECKED: u32 = 1 << 16;
/// The process-wide word has been set (from `OSMEM`, or by `configure`).
const INIT: u32 = 1 << 31;

fn pack(c: &Config) -> u32 {
    c.set as u32
        | (index_of(UNUSED_VALUES, c.unused) as u32) << 8
        | (index_of(FAULT_VALUES, c.fault) as u32) << 10
        | if c.harddecommit { V_HARDDECOMMIT } else { 0 }
        | if c.thp == Thp::Never { V_THP_NEVER } else { 0 }
        | if c.prefault { V_PREFAULT } else { 0 }
        | if c.checked { V_CHECKED } else { 0 }
}

/// The knobs in force for one operation, resolved once (one or two relaxed loads) and read
/// as often as the operation needs: the operation paths touch one word of knobs, not six
/// statics and a once-cell (measured: each cold cache line after the syscall costs as much as
/// the rest of osmem's bookkeeping).
#[derive(Copy, Clone, Debug)]
pub(crate) struct Knobs(u32);

impl Knobs {
    #[inline]
    pub(crate) fn unused_advice(self) -> UnusedAdvice {
        UNUSED_VALUES[((self.0 & V_UNUSED) >> 8) as usize % UNUSED_VALUES.len()].1
    }
    #[inline]
    pub(crate) fn fault_strategy(self) -> FaultStrategy {
        FAULT_VALUES[((self.0 & V_FAULT) >> 10) as usize % FAULT_VALUES.len()].1
    }
    #[inline]
    pub(crate) fn harddecommit(self) -> bool {
        self.0 & V_HARDDECOMMIT != 0
    }
    #[inline]
    pub(crate) fn thp_never(self) -> bool {
        self.0 & V_THP_NEVER != 0
    }
    #[inline]
    pub(crate) fn prefault(self) -> bool {
        self.0 & V_PREFAULT != 0
    }
    #[inline]
    pub(crate) fn checked(self) -> bool {
        self.0 & V_CHECKED != 0
    }

    pub(crate) fn config(self) -> Config {
        Config {
            unused: self.unused_advice(),
            fault: self.fault_strategy(),
            harddecommit: self.harddecommit(),
            thp: if self.thp_never() {
                Thp::Never
            } else {
                Thp::Default
            },
            prefault: self.prefault(),
            checked: self.checked(),
            set: (self.0 & 0x3F) as u8,
        }
    }
}

/// The value bits of the keys set in `w`.
fn set_values(w: u32) -> u32 {
    let mut m = 0;
    for (bit, v) in [
        (S_UNUSED, V_UNUSED),
        (S_FAULT, V_FAULT),
        (S_HARDDECOMMIT, V_HARDDECOMMIT),
        (S_THP, V_THP_NEVER),
        (S_PREFAULT, V_PREFAULT),
    ] {
        if w & bit as u32 != 0 {
            m |= v;
        }
    }
    m
}

/// A reservation's own knobs, in one atomic word (they may be changed while operations run).
pub(crate) struct Local(core::sync::atomic::AtomicU32);

impl Local {
    /// Set nothing: follow the process-wide knobs (a slot taken by a new reservation).
    pub(crate) fn clear(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    pub(crate) fn store(&self, c: &Config) {
        self.0.store(pack(c), Ordering::Relaxed);
    }

    /// The knobs in force: this reservation's where it sets them, the process's elsewhere;
    /// checked on if the process has it on, or this reservation sets it on.
    #[inline]
    pub(crate) fn resolve(&self) -> Knobs {
        let l = self.0.load(Ordering::Relaxed);
        let g = global();
        if l & 0x3F == 0 {
            return Knobs(g);
        }
        let m = set_values(l);
        let checked = if l & S_CHECKED as u32 != 0 {
            l & V_CHECKED
        } else {
            0
        };
        Knobs((g & !m) | (l & m) | checked)
    }
}

/// The keys the `OSMEM` environment variable (and [`Config::parse`]) accepts, one per knob:
/// `unused` ([`UNUSED_VALUES`]), `fault` ([`FAULT_VALUES`]), `harddecommit`, `prefault` and
/// `checked` ([`BOOL_VALUES`]), `thp` ([`THP_VALUES`]). [`Config::sets`] takes the same names.
///
/// ```
/// assert!(osmem::KEYS.contains(&"harddecommit"));
/// let (_, report) = osmem::Config::parse(b"nonsense=1");
/// assert_eq!(report.problems()[0].kind(), osmem::ProblemKind::UnknownKey);
/// ```
pub const KEYS: &[&str] = &[
    "unused",
    "fault",
    "harddecommit",
    "thp",
    "prefault",
    "checked",
];

/// Values of the `unused` knob, as `(spelling, value)`. These tables are what parsing accepts,
/// in one place for parsing and for help text.
///
/// ```
/// let names: Vec<&str> = osmem::UNUSED_VALUES.iter().map(|&(name, _)| name).collect();
/// assert!(names.contains(&"free"));
/// let (cfg, _) = osmem::Config::parse(b"unused=free");
/// assert_eq!(cfg.unused_advice(), osmem::UnusedAdvice::Free);
/// ```
pub const UNUSED_VALUES: &[(&str, UnusedAdvice)] = &[
    ("dontneed", UnusedAdvice::DontNeed),
    ("free", UnusedAdvice::Free),
    ("remap", UnusedAdvice::Remap),
];
/// Values of the `fault` knob, as `(spelling, value)`.
///
/// ```
/// let (name, _) = osmem::FAULT_VALUES[0];
/// assert_eq!(name, "auto");
/// ```
pub const FAULT_VALUES: &[(&str, FaultStrategy)] = &[
    ("auto", FaultStrategy::Auto),
    ("guard", FaultStrategy::Guard),
    ("protect", FaultStrategy::Protect),
    ("go", FaultStrategy::Go),
    ("remap", FaultStrategy::Remap),
];
/// Values of the `thp` knob, as `(spelling, value)`.
///
/// ```
/// assert!(osmem::THP_VALUES.contains(&("never", osmem::Thp::Never)));
/// ```
pub const THP_VALUES: &[(&str, Thp)] = &[("default", Thp::Default), ("never", Thp::Never)];
/// Values of the boolean knobs (`harddecommit`, `prefault`, `checked`), as
/// `(spelling, value)`.
///
/// ```
/// let (cfg, _) = osmem::Config::parse(b"harddecommit=true,prefault=0");
/// assert!(cfg.is_harddecommit() && !cfg.is_prefault());
/// ```
pub const BOOL_VALUES: &[(&str, bool)] =
    &[("0", false), ("1", true), ("false", false), ("true", true)];

fn set<T: Copy>(slot: &mut T, val: &[u8], table: &[(&str, T)]) -> bool {
    match table.iter().find(|(name, _)| name.as_bytes() == val) {
        Some(&(_, v)) => {
            *slot = v;
            true
        }
        None => false,
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// What kind of problem an `OSMEM` item has.
///
/// ```
/// use osmem::ProblemKind;
/// let (_, r) = osmem::Config::parse(b"unused=never,thp");
/// let kinds: Vec<ProblemKind> = r.problems().iter().map(|p| p.kind()).collect();
/// assert_eq!(kinds, [ProblemKind::BadValue, ProblemKind::Malformed]);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The key is not a knob osmem knows.
    UnknownKey,
    /// The key is known; the value is not one it accepts.
    BadValue,
    /// The item has no `=`.
    Malformed,
    /// The key was given before in the same string: this later value holds.
    RepeatedKey,
}

const ITEM_MAX: usize = 48;
const PROBLEMS_MAX: usize = 8;

/// One rejected `OSMEM` item (truncated to 48 bytes).
///
/// ```
/// let (_, r) = osmem::Config::parse(b"fault=fast");
/// let p = r.problems()[0];
/// assert_eq!((p.kind(), p.item()), (osmem::ProblemKind::BadValue, "fault=fast"));
/// ```
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct Problem {
    kind: ProblemKind,
    len: u8,
    item: [u8; ITEM_MAX],
}

impl Problem {
    /// What is wrong.
    ///
    /// ```
    /// let (_, r) = osmem::Config::parse(b"nope");
    /// assert_eq!(r.problems()[0].kind(), osmem::ProblemKind::Malformed);
    /// ```
    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    /// The offending `key=value` item as written (lossy if it was not UTF-8).
    ///
    /// ```
    /// let (_, r) = osmem::Config::parse(b"fault=sometimes");
    /// assert_eq!(r.problems()[0].item(), "fault=sometimes");
    /// ```
    pub fn item(&self) -> &str {
        let b = &self.item[..self.len as usize];
        match core::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

/// The problems found in `OSMEM` (at most 8 are kept; [`EnvReport::dropped`] counts the rest):
/// what [`env_report`] returns for the variable, and [`Config::parse`] for any string.
///
/// ```
/// let (_, r) = osmem::Config::parse(b"unused=free,bogus=1");
/// assert_eq!((r.problems().len(), r.dropped()), (1, 0));
/// ```
#[must_use = "problems in the environment are only said here"]
#[derive(Copy, Clone, PartialEq, Eq)]
pub struct EnvReport {
    problems: [Problem; PROBLEMS_MAX],
    len: usize,
    dropped: usize,
}

impl EnvReport {
    const EMPTY: EnvReport = EnvReport {
        problems: [Problem {
            kind: ProblemKind::Malformed,
            len: 0,
            item: [0; ITEM_MAX],
        }; PROBLEMS_MAX],
        len: 0,
        dropped: 0,
    };

    fn push(&mut self, kind: ProblemKind, item: &[u8]) {
        if self.len == PROBLEMS_MAX {
            self.dropped += 1;
            return;
        }
        let n = item.len().min(ITEM_MAX);
        let p = &mut self.problems[self.len];
        p.kind = kind;
        p.len = n as u8;
        p.item[..n].copy_from_slice(&item[..n]);
        self.len += 1;
    }

    /// The kept problems, in the order they appear in the variable.
    ///
    /// ```
    /// let (_, r) = osmem::Config::parse(b"unused=free");
    /// assert!(r.problems().is_empty());
    /// ```
    pub fn problems(&self) -> &[Problem] {
        &self.problems[..self.len]
    }

    /// Problems beyond the first 8, not kept.
    ///
    /// ```
    /// let (_, r) = osmem::Config::parse(b"a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1");
    /// assert_eq!(r.dropped(), 1);
    /// ```
    pub fn dropped(&self) -> usize {
        self.dropped
    }
}

/// Every knob's value, and which keys were set explicitly (by name).
///
/// ```
/// let c = osmem::Config::new().harddecommit(true);
/// let d = format!("{c:?}");
/// assert!(d.contains("harddecommit: true") && d.contains(r#"set: ["harddecommit"]"#), "{d}");
/// ```
impl core::fmt::Debug for Config {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        struct Set(u8);
        impl core::fmt::Debug for Set {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.debug_list()
                    .entries(
                        KEYS.iter()
                            .enumerate()
                            .filter(|&(i, _)| self.0 & (1 << i) != 0)
                            .map(|(_, k)| k),
                    )
                    .finish()
            }
        }
        f.debug_struct("Config")
            .field("unused", &self.unused)
            .field("fault", &self.fault)
            .field("harddecommit", &self.harddecommit)
            .field("thp", &self.thp)
            .field("prefault", &self.prefault)
            .field("checked", &self.checked)
            .field("set", &Set(self.set))
            .finish()
    }
}

/// The kind and the item as written.
///
/// ```
/// let (_, r) = osmem::Config::parse(b"fault=fast");
/// assert_eq!(format!("{:?}", r.problems()[0]), r#"Problem { kind: BadValue, item: "fault=fast" }"#);
/// ```
impl core::fmt::Debug for Problem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Problem")
            .field("kind", &self.kind)
            .field("item", &self.item())
            .finish()
    }
}

/// The problems kept and how many were dropped.
///
/// ```
/// let (_, r) = osmem::Config::parse(b"unused=free,bogus=1");
/// assert_eq!(
///     format!("{r:?}"),
///     r#"EnvReport { problems: [Problem { kind: UnknownKey, item: "bogus=1" }], dropped: 0 }"#
/// );
/// ```
impl core::fmt::Debug for EnvReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EnvReport")
            .field("problems", &self.problems())
            .field("dropped", &self.dropped)
            .finish()
    }
}

struct EnvInit {
    config: Config,
    report: EnvReport,
}

static ENV: Once<EnvInit> = Once::new();

// The live process-wide knobs are packed in one word (`pack`, with `INIT`), one of the hot
// words kept beside the counters (stats.rs): readers on the operation paths pay one relaxed
// load of a line they touch anyway, and no knob's meaning depends on another's being read at
// the same instant.
#[inline(always)]
fn global_word() -> &'static core::sync::atomic::AtomicU32 {
    crate::stats::word(crate::stats::Word::Knobs)
}

/// The process-wide knob word (`OSMEM` applied, see "reading OSMEM" below).
#[inline]
fn global() -> u32 {
    let w = global_word().load(Ordering::Relaxed);
    if w & INIT != 0 {
        return w;
    }
    env_init();
    global_word().load(Ordering::Relaxed)
}

/// The process-wide knobs, for an operation.
#[inline]
pub(crate) fn knobs() -> Knobs {
    Knobs(global())
}

// ----- reading OSMEM
//
// Not with `getenv` at first use: that may run on any thread, inside an allocator, while
// another thread calls `setenv` (`std::env::set_var`), and libc's environment is not
// thread-safe: undefined behaviour. (`std::env::var_os` takes std's lock, which libc's
// `setenv` from C code does not, and allocates.) The variable is read once, from the
// environment the process started with, where nobody can be writing:
//
// - with glibc, by a constructor in `.init_array`, which glibc runs before `main` with
//   `(argc, argv, envp)` (std captures `argv` the same way): one thread, before any code of
//   the program runs. A library loaded with `dlopen` reads it when it is loaded (glibc passes
//   the environment of that moment);
// - with other C libraries (or if the constructor did not run), from `/proc/self/environ` at
//   first use: the environment as the process started, read with `open`/`read`, never
//   through libc's environment. Without `/proc`, the defaults hold.
//
// Either way `setenv("OSMEM", ...)` after the start has no effect: use `configure`.

/// The `OSMEM` value among NUL-separated `KEY=value` entries, fed in chunks (the entries of
/// `/proc/self/environ`); values longer than the buffer are cut (and then reported by the
/// parse as whatever they read as).
struct EnvScan {
    entry: [u8; 1024],
    len: usize,
    found: Option<usize>,
}

impl EnvScan {
    const NAME: &'static [u8] = b"OSMEM=";

    fn new() -> Self {
        EnvScan {
            entry: [0; 1024],
            len: 0,
            found: None,
        }
    }

    /// Feed bytes; `false` once the variable is found.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            if b == 0 {
                if self.entry[..self.len.min(Self::NAME.len())] == *Self::NAME
                    && self.len >= Self::NAME.len()
                {
                    self.found = Some(self.len.min(self.entry.len()));
                    return false;
                }
                self.len = 0;
            } else {
                if self.len < self.entry.len() {
                    self.entry[self.len] = b;
                }
                self.len += 1;
            }
        }
        true
    }

    fn value(&self) -> Option<&[u8]> {
        self.found.map(|n| &self.entry[Self::NAME.len()..n])
    }
}

/// `OSMEM` from `/proc/self/environ` (see above), parsed.
fn from_proc_environ() -> EnvInit {
    let mut scan = EnvScan::new();
    let mut buf = [0u8; 512];
    sys::read_chunks(c"/proc/self/environ", &mut buf, |c| scan.feed(c));
    parsed(scan.value())
}

fn parsed(v: Option<&[u8]>) -> EnvInit {
    let (config, report) = match v {
        Some(v) => Config::parse(v),
        None => (Config::new(), EnvReport::EMPTY),
    };
    EnvInit { config, report }
}

/// Publish what was read (once: the first of the constructor and a first use wins).
fn env_set(init: impl FnOnce() -> EnvInit) -> &'static EnvInit {
    // Only the published parse sets the knobs, and before `configure` can run after it.
    ENV.get_or_init(init, |e| store(e.config))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod capture {
    use core::ffi::{c_char, c_int, CStr};

    /// Run by glibc before `main` (see above).
    #[used]
    #[link_section = ".init_array.00099"]
    pub(super) static CAPTURE_ENV: extern "C" fn(
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) = capture_env;

    extern "C" fn capture_env(
        _argc: c_int,
        _argv: *const *const c_char,
        envp: *const *const c_char,
    ) {
        let mut value = None;
        if !envp.is_null() {
            let mut p = envp;
            // SAFETY: glibc passes the NULL-terminated array of NUL-terminated strings the
            // process started with; nothing else runs yet.
            unsafe {
                while !(*p).is_null() {
                    if let Some(v) = CStr::from_ptr(*p).to_bytes().strip_prefix(b"OSMEM=") {
                        value = Some(v);
                        break;
                    }
                    p = p.add(1);
                }
            }
        }
        super::env_set(|| super::parsed(value));
    }
}

fn env_init() -> &'static EnvInit {
    // Keep the constructor linked in with this code (an unreferenced object of an archive may
    // be left out).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: reading a function pointer from a static.
    let _ = unsafe { core::ptr::read_volatile(&capture::CAPTURE_ENV) };
    env_set(from_proc_environ)
}

fn index_of<T: PartialEq + Copy>(table: &[(&str, T)], v: T) -> u8 {
    table.iter().position(|&(_, x)| x == v).unwrap_or(0) as u8
}

fn store(c: Config) {
    // Every key is set process-wide.
    let all = S_UNUSED | S_FAULT | S_HARDDECOMMIT | S_THP | S_PREFAULT | S_CHECKED;
    global_word().store(pack(&Config { set: all, ..c }) | INIT, Ordering::Relaxed);
}

/// Install `cfg` as the process-wide policy (after the `OSMEM` variable has been read, so an
/// explicit `configure` always wins over the environment).
///
/// ```
/// osmem::configure(osmem::Config::from_env().prefault(false));
/// assert!(!osmem::config().is_prefault());
/// ```
pub fn configure(cfg: Config) {
    env_init();
    store(cfg);
}

/// The process-wide policy in force. Every key counts as set, so as a reservation's own
/// Config (see [`Reservation::with_config`](crate::Reservation::with_config)) it pins all of
/// that reservation's knobs to these values.
///
/// ```
/// let c = osmem::config();
/// let _ = c.fault_strategy();
/// ```
pub fn config() -> Config {
    knobs().config()
}

/// What was wrong with the `OSMEM` variable when it was read (empty when it was fine or unset).
///
/// ```
/// for p in osmem::env_report().problems() {
///     eprintln!("OSMEM: ignored {:?} item {}", p.kind(), p.item());
/// }
/// ```
pub fn env_report() -> &'static EnvReport {
    &env_init().report
}

#[cfg(test)]
mod tests {
    use super::EnvScan;

    #[test]
    fn the_environ_scan_finds_the_variable_across_any_chunking() {
        let env = b"A=1\0OSMEMX=no\0XOSMEM=no\0OSMEM=unused=free,thp=never\0OSMEM=second\0B=2\0";
        for cut in 1..env.len() {
            let mut s = EnvScan::new();
            let mut more = true;
            for chunk in env.chunks(cut) {
                if !more {
                    break;
                }
                more = s.feed(chunk);
            }
            assert_eq!(
                s.value(),
                Some(&b"unused=free,thp=never"[..]),
                "chunks of {cut}"
            );
        }
        let mut s = EnvScan::new();
        s.feed(b"A=1\0B=2\0");
        assert_eq!(s.value(), None);
        // Empty value; a value longer than the entry buffer is cut, not overrun.
        let mut s = EnvScan::new();
        s.feed(b"OSMEM=\0");
        assert_eq!(s.value(), Some(&b""[..]));
        let mut s = EnvScan::new();
        s.feed(b"OSMEM=");
        s.feed(&[b'x'; 5000]);
        s.feed(b"\0");
        assert_eq!(s.value().map(<[u8]>::len), Some(1024 - 6));
    }
}
