//! What the running kernel can do, probed once and cached.
//!
//! Each advice is probed by *using* it on a private page osmem maps for itself (where that is
//! harmless), because "the kernel knows the advice" (a zero-length madvise succeeds) is not the
//! same as "the call works here": a seccomp sandbox can refuse an advice the kernel knows.

use crate::once::Once;
use crate::sys::linux as sys;

/// The kernel's transparent-huge-page mode (`/sys/kernel/mm/transparent_hugepage/enabled`).
///
/// ```
/// if osmem::probe().thp == osmem::ThpMode::Madvise {
///     println!("huge pages only where Reservation::hugepage asks for them");
/// }
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThpMode {
    /// THP for every anonymous mapping.
    Always,
    /// THP only where `MADV_HUGEPAGE` asks.
    Madvise,
    /// No THP.
    Never,
    /// The file is absent (kernel without THP) or unreadable.
    Unavailable,
}

/// `vm.overcommit_memory`: under `Never` (strict accounting) every Ready byte is charged,
/// and reserving more than the commit limit as Ready fails.
///
/// ```
/// println!("overcommit: {:?}", osmem::probe().overcommit);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overcommit {
    /// 0: heuristic (the default); huge RW mappings without MAP_NORESERVE may be refused.
    Heuristic,
    /// 1: always overcommit.
    Always,
    /// 2: strict accounting; MAP_NORESERVE is ignored.
    Never,
    /// Unreadable.
    Unknown,
}

/// How osmem can reach `process_madvise` on its own process (what [`Batch`](crate::Batch)
/// uses).
///
/// ```
/// use osmem::ProcessMadvise;
/// let batched = osmem::probe().process_madvise != ProcessMadvise::Unsupported;
/// println!("a Batch makes {} per 1024 ranges", if batched { "one call" } else { "1024 calls" });
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessMadvise {
    /// Not usable (absent, refused, or rejecting the own process).
    Unsupported,
    /// With the `PIDFD_SELF` sentinel: no file descriptor needed (Linux ≥ 6.15).
    PidfdSelf,
    /// With a `pidfd_open(getpid())` descriptor (Linux ≥ 5.10 for madvise of the own process).
    PidfdOpen,
}

/// Which advice values work here, as the probe found them at first use (part of
/// [`Probe`]). A later failure may turn one off for the rest of the process;
/// [`selected`](crate::selected) reflects that.
///
/// ```
/// let a = osmem::probe().advice;
/// println!("MADV_FREE {}, guard markers {}", a.free, a.guard_install);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Advices {
    /// `MADV_FREE` (Linux ≥ 4.5).
    pub free: bool,
    /// `MADV_DONTNEED`.
    pub dontneed: bool,
    /// `MADV_DONTNEED_LOCKED` (Linux ≥ 5.18): releases mlocked memory and keeps the lock.
    pub dontneed_locked: bool,
    /// `MADV_HUGEPAGE`.
    pub hugepage: bool,
    /// `MADV_NOHUGEPAGE`.
    pub nohugepage: bool,
    /// `MADV_COLLAPSE` (Linux ≥ 6.1).
    pub collapse: bool,
    /// `MADV_POPULATE_WRITE` (Linux ≥ 5.14).
    pub populate_write: bool,
    /// `MADV_GUARD_INSTALL` / `MADV_GUARD_REMOVE` (Linux ≥ 6.13).
    pub guard_install: bool,
}

/// The running kernel's capabilities. Obtain with [`probe()`].
///
/// ```
/// let p = osmem::probe();
/// assert!(p.page_size.is_power_of_two());
/// println!("kernel {} guard markers: {}", p.release(), p.advice.guard_install);
/// ```
#[derive(Copy, Clone)]
#[non_exhaustive]
pub struct Probe {
    /// The base page size.
    pub page_size: usize,
    /// The THP mode.
    pub thp: ThpMode,
    /// The PMD (transparent huge page) size, 0 if unknown.
    pub pmd_size: usize,
    /// `vm.max_map_count`, 0 if unreadable.
    pub max_map_count: u64,
    /// `vm.overcommit_memory`.
    pub overcommit: Overcommit,
    /// Which advice values work.
    pub advice: Advices,
    /// How `process_madvise` reaches the own process.
    pub process_madvise: ProcessMadvise,
    /// Whether `prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME)` works (needs CONFIG_ANON_VMA_NAME).
    pub anon_name: bool,
    /// How residency queries can ask the kernel (see [`residency_method`](crate::residency_method)).
    pub residency: crate::ResidencyProbe,
    release: [u8; 65],
    release_len: usize,
}

impl Probe {
    /// The kernel release (`uname -r`).
    ///
    /// ```
    /// assert!(!osmem::probe().release().is_empty());
    /// ```
    pub fn release(&self) -> &str {
        core::str::from_utf8(&self.release[..self.release_len]).unwrap_or("?")
    }
}

impl core::fmt::Debug for Probe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Probe")
            .field("release", &self.release())
            .field("page_size", &self.page_size)
            .field("thp", &self.thp)
            .field("pmd_size", &self.pmd_size)
            .field("max_map_count", &self.max_map_count)
            .field("overcommit", &self.overcommit)
            .field("advice", &self.advice)
            .field("process_madvise", &self.process_madvise)
            .field("anon_name", &self.anon_name)
            .field("residency", &self.residency)
            .finish()
    }
}

static PROBE: Once<Probe> = Once::new();

/// The kernel's capabilities, probed on first call (a few dozen syscalls) and cached.
///
/// ```
/// let p = osmem::probe();
/// assert_eq!(p.page_size, osmem::page_size());
/// ```
pub fn probe() -> &'static Probe {
    PROBE.get_or_init(run, downgrade_missing)
}

/// What the probe found missing is a sticky downgrade from the start, so every chain asks
/// one question (is it downgraded?) and `selected()` agrees with what the chains will do.
/// The probe's calls are definitive: private pages osmem owns, valid arguments.
fn downgrade_missing(p: &Probe) {
    crate::fork::init();
    use crate::advise::{
        self, D_COLLAPSE, D_DONTNEED, D_DONTNEED_LOCKED, D_FREE, D_GUARD, D_HUGEPAGE, D_NOHUGEPAGE,
        D_PM, D_PM_SELF, D_POPULATE,
    };
    for (works, bit) in [
        (p.advice.free, D_FREE),
        (p.advice.populate_write, D_POPULATE),
        (p.advice.hugepage, D_HUGEPAGE),
        (p.advice.nohugepage, D_NOHUGEPAGE),
        (p.advice.dontneed, D_DONTNEED),
        (p.advice.dontneed_locked, D_DONTNEED_LOCKED),
        (p.advice.guard_install, D_GUARD),
        (p.advice.collapse, D_COLLAPSE),
        (p.process_madvise != ProcessMadvise::Unsupported, D_PM),
        (p.process_madvise == ProcessMadvise::PidfdSelf, D_PM_SELF),
        (p.residency.pagemap_scan, advise::D_SCAN),
        (p.residency.pagemap, advise::D_PAGEMAP),
    ] {
        if !works {
            advise::downgrade(bit);
        }
    }
}

/// The page size (probed once).
///
/// ```
/// assert!(osmem::page_size() >= 4096);
/// ```
#[inline]
pub fn page_size() -> usize {
    probe().page_size
}

fn run() -> Probe {
    let page_size = sys::page_size();
    let mut p = Probe {
        page_size,
        thp: thp_mode(),
        pmd_size: read_number(c"/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").unwrap_or(0)
            as usize,
        max_map_count: read_number(c"/proc/sys/vm/max_map_count").unwrap_or(0),
        overcommit: match read_number(c"/proc/sys/vm/overcommit_memory") {
            Some(0) => Overcommit::Heuristic,
            Some(1) => Overcommit::Always,
            Some(2) => Overcommit::Never,
            _ => Overcommit::Unknown,
        },
        advice: Advices::default(),
        process_madvise: ProcessMadvise::Unsupported,
        anon_name: false,
        residency: crate::ResidencyProbe::default(),
        release: [0; 65],
        release_len: 0,
    };
    // SAFETY: utsname is plain data; uname fills it.
    unsafe {
        let mut u: libc::utsname = core::mem::zeroed();
        if libc::uname(&mut u) == 0 {
            for (i, &c) in u.release.iter().take(64).enumerate() {
                if c == 0 {
                    break;
                }
                p.release[i] = c as u8;
                p.release_len = i + 1;
            }
        }
    }
    probe_on_scratch_page(&mut p);
    p.residency = crate::residency::probe_methods(page_size, p.advice.guard_install);
    p
}

/// Try each primitive on a private page mapped only for this purpose, then unmap it.
fn probe_on_scratch_page(p: &mut Probe) {
    let ps = p.page_size;
    // SAFETY: a fresh mapping osmem owns; every call below is confined to it.
    let Ok(page) = (unsafe { sys::mmap_anon(0, ps, sys::PROT_RW, false, false) }) else {
        return;
    };
    // Under mlockall(MCL_FUTURE) the scratch page is born locked, and the kernel refuses FREE,
    // DONTNEED, guard markers and process_madvise on locked memory: the probe would record
    // them missing for the whole process, and unlocked memory would then be released by
    // remap. Unlock it first (a no-op when nothing is locked; failure leaves it as it was).
    // A page resident before it was ever touched was born locked: remember that.
    if sys::resident_pages(page, ps, ps).is_ok_and(|n| n > 0) {
        crate::advise::saw_locked();
    }
    let _ = sys::munlock(page, ps);
    let touch = || unsafe { core::ptr::write_volatile(page as *mut u8, 1) };
    let works = |advice: i32| unsafe { sys::madvise(page, ps, advice) }.is_ok();
    let known = |advice: i32| sys::madvise_known(page, advice).is_ok();

    touch();
    p.advice.free = works(sys::MADV_FREE);
    touch();
    p.advice.dontneed = works(sys::MADV_DONTNEED);
    touch();
    p.advice.dontneed_locked = works(sys::MADV_DONTNEED_LOCKED);
    p.advice.populate_write = works(sys::MADV_POPULATE_WRITE);
    // These change VMA flags (HUGEPAGE/NOHUGEPAGE) or need a 2 MiB block (COLLAPSE): asking
    // with length 0 tells whether the kernel knows them without splitting anything.
    p.advice.hugepage = known(sys::MADV_HUGEPAGE);
    p.advice.nohugepage = known(sys::MADV_NOHUGEPAGE);
    p.advice.collapse = known(sys::MADV_COLLAPSE);

    touch();
    p.process_madvise = probe_process_madvise(page, ps);
    p.anon_name = sys::set_anon_name(page, ps, b"osmem probe\0").is_ok();
    // Guard markers last: install must succeed and remove must too; if a sandbox refuses the
    // remove, the page stays a trap, so nothing may touch it after this.
    if works(sys::MADV_GUARD_INSTALL) {
        p.advice.guard_install = works(sys::MADV_GUARD_REMOVE);
    }
    // SAFETY: the scratch page is ours and no longer used.
    let _ = unsafe { sys::munmap(page, ps) };
}

fn probe_process_madvise(page: usize, ps: usize) -> ProcessMadvise {
    let iov = libc::iovec {
        iov_base: page as *mut libc::c_void,
        iov_len: ps,
    };
    let ok = |fd| unsafe { sys::process_madvise(fd, &iov, 1, sys::MADV_DONTNEED) } == Ok(ps);
    if ok(sys::PIDFD_SELF_THREAD_GROUP) {
        return ProcessMadvise::PidfdSelf;
    }
    match sys::pidfd_open_self() {
        Ok(fd) => {
            let r = ok(fd);
            sys::close(fd);
            if r {
                ProcessMadvise::PidfdOpen
            } else {
                ProcessMadvise::Unsupported
            }
        }
        Err(_) => ProcessMadvise::Unsupported,
    }
}

fn thp_mode() -> ThpMode {
    let mut buf = [0u8; 128];
    let Some(n) = sys::read_file(c"/sys/kernel/mm/transparent_hugepage/enabled", &mut buf) else {
        return ThpMode::Unavailable;
    };
    // The active mode is the bracketed word: "always [madvise] never".
    let s = &buf[..n];
    let Some(open) = s.iter().position(|&b| b == b'[') else {
        return ThpMode::Unavailable;
    };
    match &s[open + 1..] {
        w if w.starts_with(b"always]") => ThpMode::Always,
        w if w.starts_with(b"madvise]") => ThpMode::Madvise,
        w if w.starts_with(b"never]") => ThpMode::Never,
        _ => ThpMode::Unavailable,
    }
}

fn read_number(path: &core::ffi::CStr) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = sys::read_file(path, &mut buf)?;
    let mut v: u64 = 0;
    let mut any = false;
    for &b in &buf[..n] {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
        any = true;
    }
    any.then_some(v)
}
