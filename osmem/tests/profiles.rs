//! The complete semantic suite under every emulated kernel and sandbox.
//!
//! Each `profile_*` test re-executes this test binary with only [`profile_entry`] selected
//! and `OSMEM_PROFILE=<name>` (testkit's `run_under_profile`). The entry installs the
//! profile's seccomp filter before anything calls osmem — so osmem's probe, the sticky
//! downgrades it implies and every chain see that kernel — then runs each suite and prints
//! one result line per suite; the parent test asserts that every suite passed.
//!
//! Why a fresh exec'd process and not a fork: osmem probes once per process and caches it; a
//! forked child would inherit the native probe of the test process and never see the
//! profile as "this kernel does not have it". (The entry is a fresh single-user process, so
//! it may allocate; its own forks — `touch_in_child` — are allocation-free in the child.)
//!
//! What a suite expects is derived from what the kernel *behind the filter* does, measured
//! by the suite itself with raw syscalls on its own scratch pages ([`Kernel::measure`]), plus,
//! per profile, the list of features the profile must hide (checked both in that raw view —
//! the filter does what it claims — and in osmem's probe). Every check is on the kernel's
//! view (maps permissions, mincore, smaps LazyFree/AnonHugePages/VmFlags, SIGSEGV of a
//! forked grandchild and its si_code, zero reads); osmem's own accounting is checked in
//! addition, in `accounting` and `batch`, where the deltas are exact because the entry's
//! thread is the only one using osmem in that process.
//!
//! Each suite is a plain function returning `Result<String, String>`: `Ok` carries a short
//! description of the links the profile left (the detail column of TESTING.md), `Err` every
//! failed check at once. Besides the seven profiles, `linux-6.14` (guards and an
//! unrestricted process_madvise, but no PIDFD_SELF) is the one kernel where batches must
//! open a pidfd per flush.
//!
//! With `OSMEM_TESTING_OUT` set, each profile test appends its rows (profile, suite,
//! pass/fail, detail) to `$OSMEM_TESTING_OUT/profiles.tsv` for `scripts/testing_md.py`.

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};

mod common;

use common::{
    MADV_COLD, MADV_COLLAPSE, MADV_DONTNEED, MADV_FREE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE,
    MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_POPULATE_WRITE, PIDFD_SELF, STATES, STRATEGIES,
};
use osmem::{
    Batch, BatchKind, BatchReport, Config, Error, FaultHow, FaultStrategy, Op, ProcessMadvise,
    Reservation, State, Thp, UnusedAdvice, UnusedHow,
};
use osmem_testkit::{
    emit, enter_profile, is_zero, resident_pages, run_under_profile, smaps_at, touch_in_child,
    vma_at, Touch, PROFILES, SEGV_ACCERR, SEGV_MAPERR,
};

const MIB2: usize = 2 << 20;

/// The suites, in the order the entry runs them (`probe` first: it checks the downgrade
/// counters the probe alone set).
type Suite = fn(&Kernel) -> Result<String, String>;
const SUITES: &[(&str, Suite)] = &[
    ("probe", suite_probe),
    ("reserve", suite_reserve),
    ("map", suite_map),
    ("used", suite_used),
    ("unused", suite_unused),
    ("fault", suite_fault),
    ("huge", suite_huge),
    ("batch", suite_batch),
    ("accounting", suite_accounting),
];

fn suite_names() -> Vec<&'static str> {
    SUITES.iter().map(|(n, _)| *n).collect()
}

// ---------------------------------------------------------------------------------------
// The kernel behind the filter, measured with raw syscalls (never through osmem).

#[derive(Clone, Debug)]
struct Kernel {
    profile: String,
    page_size: usize,
    free: bool,
    dontneed: bool,
    populate_write: bool,
    hugepage: bool,
    nohugepage: bool,
    collapse: bool,
    guard: bool,
    pm: ProcessMadvise,
    /// errno of `process_madvise(pidfd, MADV_COLD)` (0: it worked; -1: no pidfd).
    pm_cold_errno: i32,
    /// The PAGEMAP_SCAN ioctl answers on /proc/self/pagemap.
    scan: bool,
    /// What the profile must hide.
    hidden: &'static [&'static str],
}

const ALL_FEATURES: &[&str] = &[
    "free",
    "dontneed",
    "populate_write",
    "hugepage",
    "nohugepage",
    "collapse",
    "guard",
    "process_madvise",
    "pidfd_self",
    "pagemap_scan",
];

fn hidden_by(profile: &str) -> &'static [&'static str] {
    match profile {
        "linux-3.18-no-advise" => ALL_FEATURES,
        // The sandbox refuses madvise and process_madvise, not the pagemap ioctl.
        "eperm-sandbox" => &ALL_FEATURES[..ALL_FEATURES.len() - 1],
        "linux-4.4" => &[
            "free",
            "populate_write",
            "collapse",
            "guard",
            "process_madvise",
            "pidfd_self",
            "pagemap_scan",
        ],
        "linux-5.4" => &[
            "populate_write",
            "collapse",
            "guard",
            "process_madvise",
            "pidfd_self",
            "pagemap_scan",
        ],
        "linux-6.1" => &["guard", "process_madvise", "pidfd_self", "pagemap_scan"],
        "linux-6.12" => &["guard", "process_madvise", "pidfd_self"],
        "linux-6.14" => &["pidfd_self"],
        "native" => &[],
        p => panic!("no expectations for profile {p:?}"),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn raw_madvise(addr: usize, len: usize, advice: i32) -> bool {
    // SAFETY: only ever called on the scratch mapping of `measure`.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, advice) == 0 }
}

/// `process_madvise(fd, [addr, addr+len), advice)`: Ok(bytes) or Err(errno).
fn raw_process_madvise(fd: i32, addr: usize, len: usize, advice: i32) -> Result<usize, i32> {
    let iov = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: one iovec on the scratch mapping.
    let r = unsafe { libc::syscall(libc::SYS_process_madvise, fd, &iov, 1usize, advice, 0u32) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

impl Kernel {
    /// Use each primitive on a scratch page this test maps for itself.
    fn measure(profile: &str) -> Kernel {
        // SAFETY: sysconf has no preconditions.
        let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let page = osmem_testkit::map_rw(ps).expect("scratch mmap");
        // SAFETY: the page is ours and RW.
        let touch = || unsafe { std::ptr::write_volatile(page as *mut u8, 1) };
        touch();
        let free = raw_madvise(page, ps, MADV_FREE);
        touch();
        let dontneed = raw_madvise(page, ps, MADV_DONTNEED);
        let populate_write = raw_madvise(page, ps, MADV_POPULATE_WRITE);
        // Zero-length: "is the advice known" without changing the VMA's flags.
        let hugepage = raw_madvise(page, 0, MADV_HUGEPAGE);
        let nohugepage = raw_madvise(page, 0, MADV_NOHUGEPAGE);
        let collapse = raw_madvise(page, 0, MADV_COLLAPSE);
        touch();
        let pm_self = raw_process_madvise(PIDFD_SELF, page, ps, MADV_DONTNEED);
        // SAFETY: plain syscall.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0u32) } as i32;
        let (pm_open, pm_cold_errno) = if fd >= 0 {
            touch();
            let dn = raw_process_madvise(fd, page, ps, MADV_DONTNEED);
            let cold = raw_process_madvise(fd, page, ps, MADV_COLD);
            // SAFETY: our descriptor.
            unsafe { libc::close(fd) };
            (dn == Ok(ps), cold.err().unwrap_or(0))
        } else {
            (false, -1)
        };
        let pm = if pm_self == Ok(ps) {
            ProcessMadvise::PidfdSelf
        } else if pm_open {
            ProcessMadvise::PidfdOpen
        } else {
            ProcessMadvise::Unsupported
        };
        let guard =
            raw_madvise(page, ps, MADV_GUARD_INSTALL) && raw_madvise(page, ps, MADV_GUARD_REMOVE);
        let scan = osmem_testkit::pagemap_scan_answers(page, ps);
        // SAFETY: ours.
        unsafe { libc::munmap(page as *mut libc::c_void, ps) };
        Kernel {
            profile: profile.to_string(),
            page_size: ps,
            free,
            dontneed,
            populate_write,
            hugepage,
            nohugepage,
            collapse,
            guard,
            pm,
            pm_cold_errno,
            scan,
            hidden: hidden_by(profile),
        }
    }

    fn feature(&self, name: &str) -> bool {
        match name {
            "free" => self.free,
            "dontneed" => self.dontneed,
            "populate_write" => self.populate_write,
            "hugepage" => self.hugepage,
            "nohugepage" => self.nohugepage,
            "collapse" => self.collapse,
            "guard" => self.guard,
            "process_madvise" => self.pm != ProcessMadvise::Unsupported,
            "pidfd_self" => self.pm == ProcessMadvise::PidfdSelf,
            "pagemap_scan" => self.scan,
            _ => unreachable!("{name}"),
        }
    }

    fn pm_usable(&self) -> bool {
        self.pm != ProcessMadvise::Unsupported
    }

    /// The link `unused_with(advice)` must end on: the chain FREE → DONTNEED → remap, with
    /// every link this kernel lacks skipped.
    fn unused_how(&self, advice: UnusedAdvice) -> UnusedHow {
        match advice {
            UnusedAdvice::Free if self.free => UnusedHow::Free,
            UnusedAdvice::Free | UnusedAdvice::DontNeed if self.dontneed => UnusedHow::DontNeed,
            _ => UnusedHow::Remap,
        }
    }

    /// How `fault_with(s)` must leave the range (no VMA limit in play here, so it traps).
    fn fault_how(&self, s: FaultStrategy) -> FaultHow {
        match s {
            FaultStrategy::Auto | FaultStrategy::Guard if self.guard => FaultHow::Guard,
            FaultStrategy::Auto | FaultStrategy::Guard | FaultStrategy::Protect
                if self.dontneed =>
            {
                FaultHow::Protect
            }
            FaultStrategy::Go if self.dontneed => FaultHow::Go,
            // Without DONTNEED every strategy ends on the PROT_NONE remap.
            _ => FaultHow::Remap,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers (the entry is a fresh process: allocating here is fine).

#[derive(Default)]
struct Checks {
    fails: Vec<String>,
}

impl Checks {
    fn eq<T: PartialEq + Debug>(&mut self, what: impl AsRef<str>, got: T, want: T) {
        if got != want {
            self.fails
                .push(format!("{}: got {got:?}, want {want:?}", what.as_ref()));
        }
    }

    fn ok(&mut self, what: impl AsRef<str>, cond: bool) {
        if !cond {
            self.fails.push(what.as_ref().to_string());
        }
    }

    /// An operation that must succeed; on error the suite stops with everything so far.
    fn op<T>(&self, what: &str, r: Result<T, Error>) -> Result<T, String> {
        r.map_err(|e| {
            let mut f = self.fails.clone();
            f.push(format!("{what}: {e:?}"));
            f.join("; ")
        })
    }

    fn done(self, detail: String) -> Result<String, String> {
        if self.fails.is_empty() {
            Ok(detail)
        } else {
            Err(self.fails.join("; "))
        }
    }
}

fn perms(addr: usize) -> String {
    vma_at(addr).map_or_else(|| "unmapped".to_string(), |v| v.perms_str().to_string())
}

fn base(r: &Reservation) -> usize {
    r.as_ptr() as usize
}

/// A fresh `reserve_aligned(len, align)` region, mapped and used: all Ready.
fn ready_region(c: &Checks, len: usize, align: usize) -> Result<Reservation, String> {
    let r = c.op("reserve", Reservation::reserve_aligned(len, align))?;
    c.op("map", r.map(0, len))?;
    c.op("used", r.used(0, len))?;
    Ok(r)
}

/// A flushed batch of `kind` over every other page of `r`: `n` single-page ranges, from page 0.
fn batch_every_other(
    c: &Checks,
    r: &Reservation,
    kind: BatchKind,
    n: usize,
    ps: usize,
) -> Result<BatchReport, String> {
    let mut batch: Batch = Batch::new(kind);
    for i in 0..n {
        // SAFETY: nothing references the queued pages.
        c.op("push", unsafe { batch.push(r, 2 * i * ps, ps) })?;
    }
    // SAFETY: as above.
    Ok(unsafe { batch.flush() })
}

/// Fill page `i` of `[addr, addr+pages*ps)` with `seed + i`.
fn fill_pages(addr: usize, pages: usize, ps: usize, seed: u8) {
    for i in 0..pages {
        // SAFETY: callers pass Ready ranges of their own regions.
        unsafe {
            std::ptr::write_bytes((addr + i * ps) as *mut u8, seed.wrapping_add(i as u8), ps)
        };
    }
}

/// Whether every page still holds what `fill_pages` wrote.
fn pages_hold(addr: usize, pages: usize, ps: usize, seed: u8) -> bool {
    (0..pages).all(|i| {
        // SAFETY: callers pass Ready ranges of their own regions.
        let s = unsafe { std::slice::from_raw_parts((addr + i * ps) as *const u8, ps) };
        let v = seed.wrapping_add(i as u8);
        s.iter().all(|&b| b == v)
    })
}

fn zero(addr: usize, len: usize) -> bool {
    // SAFETY: callers pass readable ranges of their own regions.
    unsafe { is_zero(addr, len) }
}

fn segv(code: i32) -> Touch {
    Touch::Segv { si_code: code }
}

fn trap_code(how: FaultHow) -> i32 {
    // Guard markers leave the VMA RW: the fault is on a PTE marker, reported as MAPERR.
    if how == FaultHow::Guard {
        SEGV_MAPERR
    } else {
        SEGV_ACCERR
    }
}

// ---------------------------------------------------------------------------------------
// probe: the probe reports what the profile hides, and `selected()` agrees.

fn suite_probe(k: &Kernel) -> Result<String, String> {
    let mut c = Checks::default();
    let p = osmem::probe();
    let a = p.advice;
    for (name, probed) in [
        ("free", a.free),
        ("dontneed", a.dontneed),
        ("populate_write", a.populate_write),
        ("hugepage", a.hugepage),
        ("nohugepage", a.nohugepage),
        ("collapse", a.collapse),
        ("guard", a.guard_install),
    ] {
        c.eq(format!("probe.advice.{name}"), probed, k.feature(name));
    }
    c.eq("probe.process_madvise", p.process_madvise, k.pm);
    c.eq(
        "probe.residency.pagemap_scan",
        p.residency.pagemap_scan,
        k.scan,
    );
    let want = if k.scan {
        osmem::ResidencyMethod::PagemapScan
    } else {
        osmem::ResidencyMethod::Pagemap
    };
    c.eq("residency_method()", osmem::residency_method(), Some(want));
    c.eq("probe.page_size", p.page_size, k.page_size);
    // The filter hides what the profile says (raw view), and so does the probe.
    for &h in k.hidden {
        c.ok(format!("the filter must hide {h}"), !k.feature(h));
    }
    // A pre-6.13 process_madvise takes MADV_COLD: the profile refuses only what those
    // kernels refused (0 = worked; ENOSYS/EPERM = the real kernel lacks it or refuses).
    if k.profile.starts_with("linux-6.1") {
        c.ok(
            format!(
                "process_madvise(pidfd, COLD) must pass the 6.x filter, errno {}",
                k.pm_cold_errno
            ),
            !matches!(k.pm_cold_errno, libc::EINVAL | libc::EBADF),
        );
    }
    // What the probe found missing is a sticky downgrade, counted once, from the start.
    let s = osmem::stats();
    for (name, count, missing) in [
        ("free", s.downgrade_free, !k.free),
        ("dontneed", s.downgrade_dontneed, !k.dontneed),
        ("guard", s.downgrade_guard, !k.guard),
        ("collapse", s.downgrade_collapse, !k.collapse),
        (
            "process_madvise",
            s.downgrade_process_madvise,
            !k.pm_usable(),
        ),
        (
            "pidfd_self",
            s.downgrade_pidfd_self,
            k.pm != ProcessMadvise::PidfdSelf,
        ),
        ("madvise", s.downgrade_madvise, false),
    ] {
        c.eq(
            format!("downgrade_{name} after the probe"),
            count,
            missing as u64,
        );
    }
    let sel = osmem::selected();
    // selected() "agrees with what the chains will do" (probe.rs): the fault strategy it
    // names is the link the default fault ends on (on a kernel without DONTNEED that is the
    // PROT_NONE remap, not DONTNEED + mprotect), as `unused` names its first working link.
    let want_fault = match k.fault_how(FaultStrategy::Auto) {
        FaultHow::Guard => FaultStrategy::Guard,
        FaultHow::Protect => FaultStrategy::Protect,
        _ => FaultStrategy::Remap,
    };
    c.eq(
        "selected().fault vs the link the default fault takes",
        sel.fault,
        want_fault,
    );
    c.eq(
        "selected().unused",
        sel.unused,
        k.unused_how(UnusedAdvice::DontNeed),
    );
    osmem::configure(Config::new().unused(UnusedAdvice::Free));
    let free_first = osmem::selected().unused;
    osmem::configure(Config::new());
    c.eq(
        "selected().unused with unused=free",
        free_first,
        k.unused_how(UnusedAdvice::Free),
    );
    let detail = format!(
        "free={} dontneed={} populate_write={} hugepage={} collapse={} guard={} process_madvise={:?} pagemap_scan={}; selected unused={:?} fault={:?} residency={}",
        a.free,
        a.dontneed,
        a.populate_write,
        a.hugepage,
        a.collapse,
        a.guard_install,
        p.process_madvise,
        p.residency.pagemap_scan,
        sel.unused,
        sel.fault,
        osmem::residency_method().map_or("none", |m| m.name())
    );
    c.done(detail)
}

// ---------------------------------------------------------------------------------------
// reserve: ---p, no RSS, traps; alloc: rw-p, zero; drop unmaps.

fn suite_reserve(k: &Kernel) -> Result<String, String> {
    let mut c = Checks::default();
    let ps = k.page_size;
    let len = 4 << 20;
    let r = c.op("reserve_aligned", Reservation::reserve_aligned(len, MIB2))?;
    let b = base(&r);
    c.eq("alignment", b % MIB2, 0);
    match vma_at(b) {
        Some(v) => {
            c.eq("reserved perms", v.perms_str(), "---p");
            c.ok(
                format!("VMA {v:?} covers the reservation"),
                v.start <= b && v.end >= b + len,
            );
        }
        None => c.ok("reservation not in /proc/self/maps", false),
    }
    c.eq("reserved resident pages", resident_pages(b, len), 0);
    c.eq(
        "reserved VMA Rss kB",
        smaps_at(b).map(|s| s.rss_kb),
        Some(0),
    );
    // PROT_NONE mapping: an access is refused by protection (ACCERR), not missing (MAPERR).
    c.eq(
        "read of reserved page",
        touch_in_child(b, false),
        segv(SEGV_ACCERR),
    );
    c.eq(
        "write of last reserved byte",
        touch_in_child(b + len - 1, true),
        segv(SEGV_ACCERR),
    );
    c.eq("state", r.state(len - ps), Some(State::Reserved));
    c.eq(
        "bytes_in(Reserved)",
        r.bytes_in(State::Reserved),
        len as u64,
    );
    c.eq("bytes_in(Ready)", r.bytes_in(State::Ready), 0);

    let a = c.op("alloc", Reservation::alloc(16 * ps))?;
    let ab = base(&a);
    c.eq("alloc perms", perms(ab), "rw-p".into());
    c.eq("alloc state", a.state(0), Some(State::Ready));
    c.ok("alloc reads zero", zero(ab, 16 * ps));
    fill_pages(ab, 16, ps, 3);
    c.ok("alloc writes read back", pages_hold(ab, 16, ps, 3));
    c.eq(
        "alloc resident after writes",
        resident_pages(ab, 16 * ps),
        16,
    );
    drop(a);
    drop(r);
    c.ok(
        "the reservation is unmapped after drop",
        vma_at(b).map_or(true, |v| !v.intersects(b, b + len)),
    );
    c.done("---p, Rss 0, SEGV_ACCERR; alloc rw-p zero-filled; drop unmaps".into())
}

// ---------------------------------------------------------------------------------------
// map: Reserved → Prepared is rw-p, not resident, reads zero, and only the range changes.

fn suite_map(k: &Kernel) -> Result<String, String> {
    let mut c = Checks::default();
    let ps = k.page_size;
    let r = c.op("reserve", Reservation::reserve_aligned(64 * ps, MIB2))?;
    let b = base(&r);
    c.op("map [0,16)", r.map(0, 16 * ps))?;
    c.eq("mapped perms", perms(b), "rw-p".into());
    c.eq(
        "perms after the mapped range",
        perms(b + 16 * ps),
        "---p".into(),
    );
    c.eq(
        "mapped resident (map populates nothing)",
        resident_pages(b, 16 * ps),
        0,
    );
    c.eq("state", r.state(0), Some(State::Prepared));
    c.eq("state after", r.state(16 * ps), Some(State::Reserved));
    c.eq(
        "bytes_in(Prepared)",
        r.bytes_in(State::Prepared),
        16 * ps as u64,
    );
    c.eq(
        "bytes_in(Reserved)",
        r.bytes_in(State::Reserved),
        48 * ps as u64,
    );
    // Overlapping a Prepared page: refused before any syscall; nothing changes.
    let e = r.map(8 * ps, 16 * ps);
    c.ok(
        format!("map over Prepared pages must be WrongState, got {e:?}"),
        matches!(
            e,
            Err(Error::WrongState {
                op: Op::Map,
                found: State::Prepared,
                ..
            })
        ),
    );
    c.eq(
        "refused map left [16,24) Reserved",
        r.state(16 * ps),
        Some(State::Reserved),
    );
    c.eq(
        "refused map left [16,24) ---p",
        perms(b + 16 * ps),
        "---p".into(),
    );
    c.op("map [32,40)", r.map(32 * ps, 8 * ps))?;
    c.eq("middle perms", perms(b + 32 * ps), "rw-p".into());
    c.eq("before the middle", perms(b + 31 * ps), "---p".into());
    c.eq("after the middle", perms(b + 40 * ps), "---p".into());
    c.eq(
        "a Prepared page is writable",
        touch_in_child(b + 33 * ps, true),
        Touch::Ok,
    );
    c.ok(
        "mapped ranges read zero",
        zero(b, 16 * ps) && zero(b + 32 * ps, 8 * ps),
    );
    c.done("rw-p, not resident, reads zero; overlap refused with WrongState".into())
}

// ---------------------------------------------------------------------------------------
// used: Prepared → Ready, writes read back; with prefault every page resident at once.

fn suite_used(k: &Kernel) -> Result<String, String> {
    let mut c = Checks::default();
    let ps = k.page_size;
    let n = 32;
    let len = n * ps;
    let r = ready_region(&c, len, MIB2)?;
    let b = base(&r);
    c.eq("state", r.state(len - ps), Some(State::Ready));
    c.eq("bytes_in(Ready)", r.bytes_in(State::Ready), len as u64);
    c.eq("perms", perms(b), "rw-p".into());
    fill_pages(b, n, ps, 0x40);
    c.ok("writes read back", pages_hold(b, n, ps, 0x40));
    c.eq("resident after writes", resident_pages(b, len), n);

    // prefault: MADV_POPULATE_WRITE where the kernel has it, else one write per page.
    osmem::configure(Config::new().prefault(true));
    let r2 = Reservation::reserve_aligned(len, MIB2);
    let res = (|| {
        let r2 = r2?;
        r2.map(0, len)?;
        let before = osmem::stats();
        r2.used(0, len)?;
        let after = osmem::stats();
        Ok::<_, Error>((r2, after.madv_populate_write - before.madv_populate_write))
    })();
    osmem::configure(Config::new());
    let (r2, populate_calls) = c.op("prefault map+used", res)?;
    c.eq(
        "prefaulted pages resident before any access",
        resident_pages(base(&r2), len),
        n,
    );
    c.eq(
        "POPULATE_WRITE calls",
        populate_calls,
        k.populate_write as u64,
    );
    c.ok("prefaulted range reads zero", zero(base(&r2), len));
    c.done(format!(
        "rw-p, {n} pages written and read back; prefault via {}",
        if k.populate_write {
            "MADV_POPULATE_WRITE"
        } else {
            "one write per page"
        }
    ))
}

// ---------------------------------------------------------------------------------------
// unused: released per the kernel through whatever link the profile leaves.

fn suite_unused(k: &Kernel) -> Result<String, String> {
    let mut c = Checks::default();
    let ps = k.page_size;
    let n = 64;
    let len = n * ps;
    let mut taken = Vec::new();
    for (label, advice) in [
        ("default", None),
        ("free", Some(UnusedAdvice::Free)),
        ("dontneed", Some(UnusedAdvice::DontNeed)),
        ("remap", Some(UnusedAdvice::Remap)),
    ] {
        let r = ready_region(&c, len, MIB2)?;
        let b = base(&r);
        fill_pages(b, n, ps, 0xA0);
        c.eq(
            format!("{label}: resident before"),
            resident_pages(b, len),
            n,
        );
        // SAFETY: nothing references the range.
        let u = unsafe {
            match advice {
                None => r.unused(0, len),
                Some(a) => r.unused_with(0, len, a),
            }
        };
        let u = c.op(&format!("{label}: unused"), u)?;
        let want = k.unused_how(advice.unwrap_or(UnusedAdvice::DontNeed));
        c.eq(format!("{label}: how"), u.how, want);
        c.eq(
            format!("{label}: zeroed"),
            u.zeroed,
            u.how != UnusedHow::Free,
        );
        c.eq(format!("{label}: protected"), u.protected, false);
        c.eq(format!("{label}: state"), r.state(0), Some(State::Prepared));
        c.eq(
            format!("{label}: bytes_in(Prepared)"),
            r.bytes_in(State::Prepared),
            len as u64,
        );
        c.eq(format!("{label}: perms"), perms(b), "rw-p".into());
        if u.zeroed {
            // DONTNEED or remap: the pages are gone now.
            c.eq(
                format!("{label}: resident after"),
                resident_pages(b, len),
                0,
            );
        } else {
            // MADV_FREE: pages stay mapped until reclaim, marked lazily free.
            c.eq(
                format!("{label}: resident after FREE"),
                resident_pages(b, len),
                n,
            );
            let lazy = smaps_at(b).map_or(0, |s| s.lazy_free_kb);
            c.ok(
                format!("{label}: LazyFree {lazy} kB < {} kB", len / 1024),
                lazy >= (len / 1024) as u64,
            );
        }
        c.op(&format!("{label}: used again"), r.used(0, len))?;
        if u.zeroed {
            c.ok(format!("{label}: reads zero"), zero(b, len));
        } else {
            // Undefined contents, but never garbage: each page is old data or zeros.
            let whole = (0..n).all(|i| {
                let p = b + i * ps;
                zero(p, ps) || pages_hold(p, 1, ps, 0xA0u8.wrapping_add(i as u8))
            });
            c.ok(format!("{label}: each page old or zero"), whole);
        }
        fill_pages(b, n, ps, 0x10);
        c.ok(
            format!("{label}: writable again"),
            pages_hold(b, n, ps, 0x10),
        );
        taken.push(format!("{label}→{:?}", u.how));
    }

    // harddecommit: the released range also traps until `used`.
    osmem::configure(Config::new().harddecommit(true));
    let res = (|| {
        let r = Reservation::reserve_aligned(len, MIB2)?;
        r.map(0, len)?;
        r.used(0, len)?;
        fill_pages(base(&r), n, ps, 0x33);
        // SAFETY: nothing references the range.
        let u = unsafe { r.unused(0, len) }?;
        Ok::<_, Error>((r, u))
    })();
    osmem::configure(Config::new());
    let (r, u) = c.op("harddecommit unused", res)?;
    let b = base(&r);
    c.eq("harddecommit: protected", u.protected, true);
    c.eq("harddecommit: perms", perms(b), "---p".into());
    c.eq("harddecommit: resident", resident_pages(b, len), 0);
    c.eq(
        "harddecommit: read traps",
        touch_in_child(b, false),
        segv(SEGV_ACCERR),
    );
    c.op("harddecommit: used", r.used(0, len))?;
    c.eq("harddecommit: perms after used", perms(b), "rw-p".into());
    c.ok("harddecommit: reads zero", zero(b, len));
    taken.push("harddecommit→---p".into());
    c.done(taken.join(" "))
}

// ---------------------------------------------------------------------------------------
// fault: every strategy traps with the si_code of its link, and map+used gives zeros back.

fn suite_fault(k: &Kernel) -> Result<String, String> {
    let mut c = Checks::default();
    let ps = k.page_size;
    let n = 32;
    let len = n * ps;
    // Fault the middle [4, 28): the pages around must stay Ready and intact.
    let (off, flen) = (4 * ps, 24 * ps);
    let mut taken = Vec::new();
    for s in STRATEGIES {
        let r = ready_region(&c, len, MIB2)?;
        let b = base(&r);
        fill_pages(b, n, ps, 0x50);
        // SAFETY: nothing references the range.
        let f = c.op(&format!("{s:?}: fault"), unsafe {
            r.fault_with(off, flen, s)
        })?;
        c.eq(format!("{s:?}: how"), f.how, k.fault_how(s));
        c.ok(format!("{s:?}: traps() (no VMA limit here)"), f.traps());
        c.eq(format!("{s:?}: state"), r.state(off), Some(State::Faulted));
        c.eq(
            format!("{s:?}: state before"),
            r.state(off - ps),
            Some(State::Ready),
        );
        c.eq(
            format!("{s:?}: state after"),
            r.state(off + flen),
            Some(State::Ready),
        );
        c.eq(
            format!("{s:?}: bytes_in(Faulted)"),
            r.bytes_in(State::Faulted),
            flen as u64,
        );
        c.ok(
            format!("{s:?}: the pages around are intact"),
            pages_hold(b, 4, ps, 0x50) && pages_hold(b + off + flen, 4, ps, 0x50 + 28),
        );
        c.eq(format!("{s:?}: resident"), resident_pages(b + off, flen), 0);
        let a = b + off;
        if f.traps() {
            let code = trap_code(f.how);
            c.eq(
                format!("{s:?}: read traps"),
                touch_in_child(a, false),
                segv(code),
            );
            c.eq(
                format!("{s:?}: write of last byte traps"),
                touch_in_child(a + flen - 1, true),
                segv(code),
            );
            let want = if f.how == FaultHow::Guard {
                "rw-p"
            } else {
                "---p"
            };
            c.eq(format!("{s:?}: perms"), perms(a), want.into());
        } else {
            c.ok(
                format!("{s:?}: released, not trapping, reads zero"),
                zero(a, flen),
            );
        }
        c.op(&format!("{s:?}: map"), r.map(off, flen))?;
        c.eq(
            format!("{s:?}: state after map"),
            r.state(off),
            Some(State::Prepared),
        );
        c.eq(format!("{s:?}: perms after map"), perms(a), "rw-p".into());
        c.eq(
            format!("{s:?}: writable after map"),
            touch_in_child(a + flen - 1, true),
            Touch::Ok,
        );
        c.eq(
            format!("{s:?}: resident after map"),
            resident_pages(a, flen),
            0,
        );
        c.op(&format!("{s:?}: used"), r.used(off, flen))?;
        c.ok(format!("{s:?}: zero-filled after map+used"), zero(a, flen));
        fill_pages(a, 24, ps, 0x70);
        c.ok(
            format!("{s:?}: writes read back"),
            pages_hold(a, 24, ps, 0x70),
        );
        taken.push(format!("{s:?}→{:?}", f.how));
    }
    c.done(taken.join(" "))
}

// ---------------------------------------------------------------------------------------
// huge: the hints take effect where the kernel has them, else a typed error; never a crash.

fn hint_ok_or_typed(
    c: &mut Checks,
    what: &str,
    r: Result<(), Error>,
    available: bool,
    op: Op,
) -> String {
    match r {
        Ok(()) => {
            c.ok(
                format!("{what}: Ok although the kernel lacks it"),
                available,
            );
            "Ok".into()
        }
        Err(e) => {
            c.ok(
                format!("{what}: {e:?} although the kernel has it"),
                !available,
            );
            let typed = match e {
                Error::Unsupported { op: o } => o == op,
                Error::Os { op: o, changed, .. } => o == op && !changed,
                _ => false,
            };
            c.ok(
                format!("{what}: {e:?} is not a typed no-change error"),
                typed,
            );
            match e {
                Error::Os { errno, .. } => format!("Os(errno {})", errno.0),
                e => format!("{e:?}"),
            }
        }
    }
}

fn suite_huge(k: &Kernel) -> Result<String, String> {
    let mut c = Checks::default();
    let ps = k.page_size;
    let pmd = osmem::probe().pmd_size;
    if pmd == 0 {
        // No THP in this kernel: hugepage has no aligned interior and is a counted no-op.
        let r = c.op("reserve", Reservation::reserve_aligned(MIB2, MIB2))?;
        c.op("hugepage without THP", r.hugepage(0, MIB2))?;
        return c.done("no THP: hugepage is a no-op".into());
    }
    let mut d = Vec::new();
    for (what, flag, available) in [
        ("hugepage", "hg", k.hugepage),
        ("nohugepage", "nh", k.nohugepage),
    ] {
        let r = ready_region(&c, 2 * pmd, pmd)?;
        let b = base(&r);
        let (res, op) = if flag == "hg" {
            (r.hugepage(0, 2 * pmd), Op::HugePage)
        } else {
            (r.nohugepage(0, 2 * pmd), Op::NoHugePage)
        };
        let got = hint_ok_or_typed(&mut c, what, res, available, op);
        let flags = smaps_at(b).map(|s| s.vm_flags);
        c.eq(
            format!("{what}: VmFlags {flags:?} has {flag}"),
            flags.is_some_and(|f| f.contains(flag)),
            available,
        );
        d.push(format!("{what} {got}"));
    }

    // collapse: a touched, aligned Ready range becomes one huge page, data intact.
    let r = ready_region(&c, pmd, pmd)?;
    let b = base(&r);
    let pages = pmd / ps;
    fill_pages(b, pages, ps, 1);
    let res = r.collapse(0, pmd);
    // The one outcome that is the machine's, not the profile's: with MADV_COLLAPSE present
    // the kernel may still have no free huge page right now (ENOMEM, or EAGAIN after osmem's
    // bounded retries). That is a typed no-change error too; it is named in the detail.
    let no_huge_page_now = k.collapse
        && matches!(res, Err(Error::Os { op: Op::Collapse, errno, changed: false, .. })
            if errno.0 == libc::ENOMEM || errno.0 == libc::EAGAIN);
    let got = if no_huge_page_now {
        format!("{:?} (no huge page free now)", res.err())
    } else {
        hint_ok_or_typed(&mut c, "collapse", res, k.collapse, Op::Collapse)
    };
    if k.collapse && !no_huge_page_now {
        let huge = smaps_at(b).map_or(0, |s| s.anon_huge_kb);
        c.ok(
            format!("collapse: AnonHugePages {huge} kB < {} kB", pmd / 1024),
            huge >= (pmd / 1024) as u64,
        );
    }
    c.ok("collapse: data intact", pages_hold(b, pages, ps, 1));
    c.eq("collapse: state", r.state(0), Some(State::Ready));
    d.push(format!("collapse {got}"));
    drop(r);

    // thp=never: the hints become counted no-ops; new reservations get NOHUGEPAGE.
    osmem::configure(Config::new().thp(Thp::Never));
    let before = osmem::stats();
    let res = (|| {
        let r = Reservation::reserve_aligned(pmd, pmd)?;
        r.map(0, pmd)?;
        r.used(0, pmd)?;
        r.hugepage(0, pmd)?;
        r.collapse(0, pmd)?;
        Ok::<_, Error>(r)
    })();
    osmem::configure(Config::new());
    let after = osmem::stats();
    let r = c.op("thp=never: reserve, hugepage, collapse", res)?;
    c.eq(
        "thp=never: hints skipped",
        after.huge_hints_skipped - before.huge_hints_skipped,
        2,
    );
    c.eq(
        "thp=never: collapse calls",
        after.madv_collapse - before.madv_collapse,
        0,
    );
    let nh = smaps_at(base(&r)).is_some_and(|s| s.vm_flags.contains("nh"));
    c.eq("thp=never: new reservation has nh", nh, k.nohugepage);
    d.push("thp=never skips".into());
    c.done(d.join(", "))
}

// ---------------------------------------------------------------------------------------
// batch: 3000 scattered ranges released per mincore, with 3 process_madvise calls where the
// profile leaves it usable, else through the per-range loop; a fault batch traps.

fn suite_batch(k: &Kernel) -> Result<String, String> {
    const RANGES: usize = 3000;
    let mut c = Checks::default();
    let ps = k.page_size;
    let pages = 2 * RANGES;
    let r = ready_region(&c, pages * ps, MIB2)?;
    let b = base(&r);
    fill_pages(b, pages, ps, 9);
    c.eq("resident before", resident_pages(b, pages * ps), pages);
    let before = osmem::stats();
    let kind = BatchKind::Unused(UnusedAdvice::DontNeed);
    let rep = batch_every_other(&c, &r, kind, RANGES, ps)?;
    let after = osmem::stats();
    let d = |f: fn(&osmem::Stats) -> u64| f(&after) - f(&before);
    c.eq("report.ranges", rep.ranges, RANGES);
    c.eq("report.bytes", rep.bytes, RANGES * ps);
    c.eq("report.failed", rep.failed, 0);
    c.eq("report.error", rep.error, None);
    c.eq("report.not_zeroed", rep.not_zeroed, 0);
    let per_range = if k.pm_usable() { 0 } else { RANGES };
    c.eq("report.per_range", rep.per_range, per_range);
    // ceil(3000 / 1024) = 3 flushes, one process_madvise each.
    let pm_calls = if k.pm_usable() { 3 } else { 0 };
    c.eq(
        "process_madvise calls",
        d(|s| s.process_madvise_calls),
        pm_calls,
    );
    c.eq("batch flushes", d(|s| s.batch_flushes), 3);
    // Without the PIDFD_SELF sentinel each flush opens (and closes) a pidfd of its own.
    let opens = if k.pm == ProcessMadvise::PidfdOpen {
        3
    } else {
        0
    };
    c.eq("pidfd_open calls", d(|s| s.pidfd_open_calls), opens);
    c.eq("batch ranges", d(|s| s.batch_ranges), RANGES as u64);
    c.eq(
        "fallback_batch_range",
        d(|s| s.fallback_batch_range),
        per_range as u64,
    );
    let (madv, remaps) = match (k.pm_usable(), k.dontneed) {
        (true, _) => (0, 0),
        (false, true) => (RANGES as u64, 0),
        (false, false) => (0, RANGES as u64),
    };
    c.eq("madvise(DONTNEED) calls", d(|s| s.madv_dontneed), madv);
    c.eq("mmap calls (remap loop)", d(|s| s.mmap_calls), remaps);
    let mut bad = Vec::new();
    for i in 0..RANGES {
        let (q, kept) = (b + 2 * i * ps, b + (2 * i + 1) * ps);
        let ok = resident_pages(q, ps) == 0
            && resident_pages(kept, ps) == 1
            && r.state(2 * i * ps) == Some(State::Prepared)
            && r.state((2 * i + 1) * ps) == Some(State::Ready)
            && pages_hold(kept, 1, ps, 9u8.wrapping_add((2 * i + 1) as u8));
        if !ok && bad.len() < 5 {
            bad.push(i);
        }
    }
    c.ok(
        format!("ranges not released / kept pages changed: {bad:?}"),
        bad.is_empty(),
    );
    c.eq(
        "bytes_in(Prepared)",
        r.bytes_in(State::Prepared),
        (RANGES * ps) as u64,
    );
    c.op("used of a released page", r.used(0, ps))?;
    c.ok("a released page reads zero", zero(b, ps));
    drop(r);

    // A FREE batch: lazily freed where the kernel has MADV_FREE (pages stay resident,
    // LazyFree), else released through the next link (gone now, zero).
    const FREE_RANGES: usize = 512;
    let r = ready_region(&c, 2 * FREE_RANGES * ps, MIB2)?;
    let b = base(&r);
    fill_pages(b, 2 * FREE_RANGES, ps, 0x21);
    let kind = BatchKind::Unused(UnusedAdvice::Free);
    let rep = batch_every_other(&c, &r, kind, FREE_RANGES, ps)?;
    c.eq("free report.ranges", rep.ranges, FREE_RANGES);
    c.eq("free report.failed", rep.failed, 0);
    let lazily = if k.free { FREE_RANGES } else { 0 };
    c.eq("free report.not_zeroed", rep.not_zeroed, lazily);
    let queued: usize = (0..FREE_RANGES)
        .map(|i| resident_pages(b + 2 * i * ps, ps))
        .sum();
    c.eq("FREE'd pages still resident", queued, lazily);
    if k.free {
        let lazy = smaps_at(b).map_or(0, |s| s.lazy_free_kb);
        let want = (FREE_RANGES * ps / 1024) as u64;
        c.ok(format!("LazyFree {lazy} kB < {want} kB"), lazy >= want);
    }
    drop(r);

    // A fault batch: 256 scattered ranges trap, the pages between stay.
    const FR: usize = 256;
    let r = ready_region(&c, 2 * FR * ps, MIB2)?;
    let b = base(&r);
    fill_pages(b, 2 * FR, ps, 0x77);
    let before = osmem::stats();
    let rep = batch_every_other(&c, &r, BatchKind::Fault(FaultStrategy::Auto), FR, ps)?;
    let after = osmem::stats();
    c.eq("fault report.ranges", rep.ranges, FR);
    c.eq("fault report.failed", rep.failed, 0);
    c.eq("fault report.not_trapping", rep.not_trapping, 0);
    // One batched DONTNEED, then (with guards) one batched GUARD_INSTALL.
    let fpm = match (k.pm_usable(), k.guard) {
        (false, _) => 0,
        (true, true) => 2,
        (true, false) => 1,
    };
    c.eq(
        "fault batch process_madvise calls",
        after.process_madvise_calls - before.process_madvise_calls,
        fpm,
    );
    let mut bad = Vec::new();
    for i in 0..FR {
        let (q, kept) = (b + 2 * i * ps, b + (2 * i + 1) * ps);
        let ok = resident_pages(q, ps) == 0
            && r.state(2 * i * ps) == Some(State::Faulted)
            && pages_hold(kept, 1, ps, 0x77u8.wrapping_add((2 * i + 1) as u8));
        if !ok && bad.len() < 5 {
            bad.push(i);
        }
    }
    c.ok(
        format!("fault ranges not released / kept pages changed: {bad:?}"),
        bad.is_empty(),
    );
    let code = trap_code(k.fault_how(FaultStrategy::Auto));
    for i in [0, 1, FR / 2, FR - 1] {
        c.eq(
            format!("faulted range {i} traps"),
            touch_in_child(b + 2 * i * ps, false),
            segv(code),
        );
    }
    c.op("map a faulted range", r.map(0, ps))?;
    c.op("used it", r.used(0, ps))?;
    c.ok("it reads zero", zero(b, ps));
    c.done(format!(
        "{RANGES} ranges: {pm_calls} process_madvise + {madv} madvise + {remaps} remaps; free batch: {}; fault batch: {fpm} process_madvise",
        if k.free { "lazily freed" } else { "released" }
    ))
}

// ---------------------------------------------------------------------------------------
// accounting: exact per-region and global byte figures after every step of a sequence.

fn suite_accounting(k: &Kernel) -> Result<String, String> {
    let mut c = Checks::default();
    let ps = k.page_size;
    let pg = |n: usize| n * ps;
    osmem::probe();
    let start = osmem::stats();
    // Model, in pages: [Reserved, Prepared, Ready, Faulted].
    let mut m = [0i64; 4];
    let global = |s: &osmem::Stats| {
        [
            s.reserved_bytes.wrapping_sub(start.reserved_bytes) as i64,
            s.prepared_bytes.wrapping_sub(start.prepared_bytes) as i64,
            s.ready_bytes.wrapping_sub(start.ready_bytes) as i64,
            s.faulted_bytes.wrapping_sub(start.faulted_bytes) as i64,
        ]
    };
    let check = |c: &mut Checks, step: &str, r: Option<&Reservation>, m: &[i64; 4]| {
        let want: Vec<i64> = m.iter().map(|&p| p * ps as i64).collect();
        if let Some(r) = r {
            let got: Vec<i64> = STATES.iter().map(|&s| r.bytes_in(s) as i64).collect();
            c.eq(format!("{step}: bytes_in"), got, want.clone());
        }
        c.eq(
            format!("{step}: global byte deltas"),
            global(&osmem::stats()).to_vec(),
            want,
        );
    };

    let r = c.op("reserve", Reservation::reserve(pg(64)))?;
    m[0] += 64;
    check(&mut c, "reserve 64", Some(&r), &m);
    c.op("map", r.map(0, pg(32)))?;
    m[0] -= 32;
    m[1] += 32;
    check(&mut c, "map [0,32)", Some(&r), &m);
    c.op("used", r.used(0, pg(32)))?;
    m[1] -= 32;
    m[2] += 32;
    check(&mut c, "used [0,32)", Some(&r), &m);
    // SAFETY (all unsafe calls below): nothing references the ranges.
    let _ = c.op("unused", unsafe { r.unused(0, pg(8)) })?;
    m[2] -= 8;
    m[1] += 8;
    check(&mut c, "unused [0,8)", Some(&r), &m);
    let sel_fault = osmem::selected().fault;
    let f = c.op("fault", unsafe { r.fault(pg(8), pg(8)) })?;
    m[2] -= 8;
    m[3] += 8;
    check(&mut c, "fault [8,16)", Some(&r), &m);
    c.op("map faulted", r.map(pg(8), pg(8)))?;
    m[3] -= 8;
    m[1] += 8;
    check(&mut c, "map [8,16)", Some(&r), &m);
    c.op("used mixed", r.used(0, pg(16)))?;
    m[1] -= 16;
    m[2] += 16;
    check(&mut c, "used [0,16)", Some(&r), &m);
    // A range reaching into Reserved pages: refused before any syscall, nothing moves.
    let e = unsafe { r.unused(pg(28), pg(8)) };
    c.ok(
        format!("unused over Reserved pages must be WrongState, got {e:?}"),
        matches!(
            e,
            Err(Error::WrongState {
                found: State::Reserved,
                ..
            })
        ),
    );
    check(&mut c, "refused unused [28,36)", Some(&r), &m);
    let _ = c.op("fault remap", unsafe {
        r.fault_with(pg(16), pg(8), FaultStrategy::Remap)
    })?;
    m[2] -= 8;
    m[3] += 8;
    check(&mut c, "fault(Remap) [16,24)", Some(&r), &m);
    // The kernel agrees with the books.
    let b = base(&r);
    c.eq(
        "faulted pages resident",
        resident_pages(b + pg(16), pg(8)),
        0,
    );
    c.eq(
        "faulted pages trap",
        touch_in_child(b + pg(16), false),
        segv(SEGV_ACCERR),
    );
    c.eq("reserved tail perms", perms(b + pg(32)), "---p".into());
    c.eq(
        "ready pages writable",
        touch_in_child(b + pg(24), true),
        Touch::Ok,
    );
    drop(r);
    m = [0; 4];
    check(&mut c, "drop", None, &m);

    let end = osmem::stats();
    let d = |f: fn(&osmem::Stats) -> u64| f(&end) - f(&start);
    for (name, got, want) in [
        ("reserve_ops", d(|s| s.reserve_ops), 1),
        ("alloc_ops", d(|s| s.alloc_ops), 0),
        ("map_ops", d(|s| s.map_ops), 2),
        ("used_ops", d(|s| s.used_ops), 2),
        ("unused_ops", d(|s| s.unused_ops), 1),
        ("fault_ops", d(|s| s.fault_ops), 2),
        ("free_ops", d(|s| s.free_ops), 1),
        // The links the profile removed were skipped, each counted once.
        (
            "fallback_unused_remap",
            d(|s| s.fallback_unused_remap),
            !k.dontneed as u64,
        ),
        ("fallback_unused_free", d(|s| s.fallback_unused_free), 0),
        (
            "fallback_fault_remap",
            d(|s| s.fallback_fault_remap),
            // Counted when the selected Protect chain had to fall to the remap.
            (sel_fault == FaultStrategy::Protect && f.how == FaultHow::Remap) as u64,
        ),
        ("fallback_fault_guard", d(|s| s.fallback_fault_guard), 0),
        ("fallback_fault_open", d(|s| s.fallback_fault_open), 0),
        ("fallback_map_remap", d(|s| s.fallback_map_remap), 0),
        // The probe already took every downgrade this kernel needs: none happen here.
        ("downgrade_free", d(|s| s.downgrade_free), 0),
        ("downgrade_dontneed", d(|s| s.downgrade_dontneed), 0),
        ("downgrade_guard", d(|s| s.downgrade_guard), 0),
        (
            "downgrade_process_madvise",
            d(|s| s.downgrade_process_madvise),
            0,
        ),
    ] {
        c.eq(name, got, want);
    }
    c.done(format!(
        "bytes exact at 10 steps; unused→{:?}, fault→{:?}",
        k.unused_how(UnusedAdvice::DontNeed),
        f.how
    ))
}

// ---------------------------------------------------------------------------------------
// The entry (run in the re-executed binary) and one test per profile.

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

#[test]
#[ignore = "entry point: run by the profile_* tests in a re-executed copy of this binary"]
fn profile_entry() {
    // First thing: the filter, before anything calls osmem (so its probe sees the profile).
    let Some(profile) = enter_profile() else {
        return;
    };
    let k = Kernel::measure(&profile);
    let mut failed = Vec::new();
    for (name, suite) in SUITES {
        let r = catch_unwind(AssertUnwindSafe(|| suite(&k)))
            .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(p))));
        osmem::configure(Config::new());
        match r {
            Ok(detail) => emit(name, &Ok(()), &detail),
            Err(e) => {
                emit(name, &Err(e.clone()), "");
                failed.push(format!("{name}: {e}"));
            }
        }
    }
    assert!(failed.is_empty(), "under {profile}:\n{}", failed.join("\n"));
}

fn check_profile(profile: &str) {
    let run = run_under_profile(profile, "profile_entry");
    let suites = suite_names();
    run.append_testing_rows(&suites);
    assert!(run.problems(&suites).is_empty(), "{}", run.explain(&suites));
}

#[test]
fn profile_linux_3_18_no_advise() {
    check_profile("linux-3.18-no-advise");
}

#[test]
fn profile_linux_4_4() {
    check_profile("linux-4.4");
}

#[test]
fn profile_linux_5_4() {
    check_profile("linux-5.4");
}

#[test]
fn profile_linux_6_1() {
    check_profile("linux-6.1");
}

#[test]
fn profile_linux_6_12() {
    check_profile("linux-6.12");
}

#[test]
fn profile_linux_6_14() {
    check_profile("linux-6.14");
}

#[test]
fn profile_eperm_sandbox() {
    check_profile("eperm-sandbox");
}

#[test]
fn profile_native() {
    check_profile("native");
}

/// Every profile testkit defines has a test above and expectations here.
#[test]
fn every_profile_is_tested() {
    let tested = [
        "linux-3.18-no-advise",
        "linux-4.4",
        "linux-5.4",
        "linux-6.1",
        "linux-6.12",
        "linux-6.14",
        "eperm-sandbox",
        "native",
    ];
    assert_eq!(PROFILES, tested);
    for p in PROFILES {
        let _ = hidden_by(p);
    }
}
