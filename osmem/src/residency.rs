//! Residency queries: which pages of a range the kernel really holds, and how (present, the
//! shared zero page, swapped out, guard-marked, nothing), asked of the kernel itself.
//!
//! The chain, fastest first, each link taken where the probe found it working and not
//! downgraded since:
//! 1. The `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap` (Linux 6.7): the kernel walks the page
//!    tables and returns *runs* of pages with their categories — one call for a whole range,
//!    however large, and nothing to scan for the pages it skips. `PAGE_IS_GUARD` (Linux 6.16)
//!    is probed on its own: a mask naming a category the kernel does not know is EINVAL, and
//!    the method must not be lost for that on 6.7–6.15 (there guard markers read as swapped).
//! 2. Reading `/proc/self/pagemap`: 8 bytes per page (bit 63 present, 62 swapped, 58 guard
//!    marker on Linux ≥ 6.15; on 6.13–6.14 a guard marker reads as swapped only). The shared
//!    zero page is told apart only where the process may see page frame numbers (root, or
//!    CAP_SYS_ADMIN): the probe learns the zero page's frame by read-touching a page.
//! 3. `mincore`: 1 byte per page, resident or not. It cannot tell the zero page from memory
//!    (both read resident), and it reads swapped-out and guard-marked pages as not resident.
//!
//! Fallback rules (next to the chain, as for the other chains): ENOSYS, EINVAL, EPERM, ENOTTY
//! and EACCES from a link mean "this method does not work here" — downgraded for the rest of
//! the process (counted once in `downgrade_pagemap_scan` / `downgrade_pagemap`), and the
//! query starts again with the next link. An `open` of `/proc/self/pagemap` refused for good
//! (ENOENT, EACCES, EPERM: no /proc, a hardened mount) downgrades both pagemap links. Any
//! other error is returned (`Error::Os`); nothing is guessed.
//!
//! Fork safety: a pagemap descriptor describes the process that opened it — read in a forked
//! child, an inherited one reports the *parent's* memory. The descriptor is opened once per
//! process with `O_CLOEXEC` and cached with the pid it belongs to (the pid osmem's fork
//! handler refreshes); a child opens its own and closes the inherited one.
//!
//! Facts the categories respect (measured on Linux 6.18): a page released with `MADV_FREE`
//! reads present until the kernel reclaims it; a read-only touch maps the zero page, which
//! `mincore` and the pagemap's present bit report as present; the PAGEMAP_SCAN ioctl reports
//! a guard-marked page as swapped as well as guarded (guarded wins here).

use crate::advise::{self, D_PAGEMAP, D_SCAN};
use crate::probe;
use crate::stats::{self, Counter};
use crate::sys::linux::{self as sys, Errno, Syscall};
use core::sync::atomic::{AtomicU64, Ordering};

/// How a residency query asks the kernel.
///
/// ```
/// use osmem::ResidencyMethod;
/// for m in ResidencyMethod::ALL {
///     println!("{}: works here: {}", m.name(), osmem::probe().residency.works(m));
/// }
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResidencyMethod {
    /// The `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap` (Linux ≥ 6.7): runs of pages by
    /// category in one call.
    PagemapScan,
    /// Reading `/proc/self/pagemap`: 8 bytes per page.
    Pagemap,
    /// `mincore(2)`: 1 byte per page, resident or not.
    Mincore,
}

impl ResidencyMethod {
    /// Every method, fastest first (the order of the chain).
    ///
    /// ```
    /// use osmem::ResidencyMethod;
    /// assert_eq!(ResidencyMethod::ALL.last(), Some(&ResidencyMethod::Mincore));
    /// ```
    pub const ALL: [ResidencyMethod; 3] = [
        ResidencyMethod::PagemapScan,
        ResidencyMethod::Pagemap,
        ResidencyMethod::Mincore,
    ];

    /// A short lowercase name (`pagemap-scan`, `pagemap`, `mincore`).
    ///
    /// ```
    /// assert_eq!(osmem::ResidencyMethod::Mincore.name(), "mincore");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            ResidencyMethod::PagemapScan => "pagemap-scan",
            ResidencyMethod::Pagemap => "pagemap",
            ResidencyMethod::Mincore => "mincore",
        }
    }

    fn bit(self) -> u32 {
        match self {
            ResidencyMethod::PagemapScan => D_SCAN,
            ResidencyMethod::Pagemap => D_PAGEMAP,
            ResidencyMethod::Mincore => 0,
        }
    }
}

/// What the kernel holds for a run of pages ([`PageRun::residence`]).
///
/// ```
/// use osmem::{PageRun, Reservation, Residence};
/// let ps = osmem::page_size();
/// let r = Reservation::alloc(ps)?;
/// let mut runs = [PageRun::EMPTY; 1];
/// r.residency(0, ps, &mut runs)?;
/// assert_eq!(runs[0].residence, Residence::None); // never touched
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Residence {
    /// Memory of the process's own is mapped (where the method cannot tell the zero page
    /// apart, the zero page too: see [`Tells`]).
    Present,
    /// The shared zero page is mapped: a read touched the page and nothing wrote it. It costs
    /// the process no memory.
    ZeroPage,
    /// Swapped out.
    Swapped,
    /// A guard marker (`MADV_GUARD_INSTALL`): any access traps.
    Guard,
    /// Nothing: never touched, or released (where the method cannot tell, also swapped-out
    /// or guard-marked pages).
    None,
}

/// Which categories a method tells apart on this kernel. `Present` and `None` it always does.
///
/// ```
/// let r = osmem::Reservation::alloc(4096)?;
/// let mut runs = [osmem::PageRun::EMPTY; 1];
/// let q = r.residency(0, 4096, &mut runs)?;
/// if !q.tells.zero_page {
///     println!("{:?} reads the shared zero page as Present", q.method);
/// }
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tells {
    /// The zero page ([`Residence::ZeroPage`]); otherwise it reads as `Present`.
    pub zero_page: bool,
    /// Swapped-out pages ([`Residence::Swapped`]); otherwise they read as `None`.
    pub swapped: bool,
    /// Guard markers ([`Residence::Guard`]); otherwise they read as `Swapped` (pagemap on
    /// Linux 6.13–6.14, PAGEMAP_SCAN before 6.16) or `None` (mincore).
    pub guard: bool,
}

/// A run of pages in one category: `[offset, offset + len)` of the reservation.
///
/// Queries fill a buffer of these ([`Reservation::residency`](crate::Reservation::residency));
/// start it with [`PageRun::EMPTY`], and build one to compare with [`PageRun::new`] (the
/// struct may gain fields, so it cannot be written as a literal outside osmem).
///
/// ```
/// use osmem::{PageRun, Residence};
/// let mut runs = [PageRun::EMPTY; 16];
/// runs[0] = PageRun::new(0, 4096, Residence::Present);
/// assert_eq!(runs[0].residence, Residence::Present);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PageRun {
    /// Offset of the run's first page in the reservation.
    pub offset: usize,
    /// Length in bytes (whole pages).
    pub len: usize,
    /// What the kernel holds there.
    pub residence: Residence,
}

impl PageRun {
    /// An empty run, to fill an output buffer with.
    ///
    /// ```
    /// let runs = [osmem::PageRun::EMPTY; 8];
    /// assert_eq!(runs[7].len, 0);
    /// ```
    pub const EMPTY: PageRun = PageRun::new(0, 0, Residence::None);

    /// The run of `len` bytes at `offset` of the reservation, in `residence`.
    ///
    /// ```
    /// use osmem::{PageRun, Reservation, Residence};
    /// let ps = osmem::page_size();
    /// let r = Reservation::alloc(2 * ps)?;
    /// unsafe { r.as_ptr().write(1) }; // the first page only
    /// let mut runs = [PageRun::EMPTY; 2];
    /// r.residency(0, 2 * ps, &mut runs)?;
    /// assert_eq!(runs[0], PageRun::new(0, ps, Residence::Present));
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub const fn new(offset: usize, len: usize, residence: Residence) -> PageRun {
        PageRun {
            offset,
            len,
            residence,
        }
    }
}

/// What a residency query returned.
///
/// ```
/// use osmem::{PageRun, Reservation};
/// let ps = osmem::page_size();
/// let r = Reservation::alloc(8 * ps)?;
/// for i in (0..8).step_by(2) {
///     unsafe { r.as_ptr().add(i * ps).write(1) }; // every other page
/// }
/// let mut runs = [PageRun::EMPTY; 3]; // too small for all 8 runs
/// let mut at = 0;
/// let mut total = 0;
/// while at < 8 * ps {
///     let q = r.residency(at, 8 * ps - at, &mut runs)?;
///     total += q.runs;
///     at = q.end; // continue where the buffer filled up
/// }
/// assert_eq!(total, 8);
/// # Ok::<(), osmem::Error>(())
/// ```
#[must_use = "a residency query has no other effect"]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Residency {
    /// Runs written to the output buffer, `out[..runs]`: maximal, in address order, and
    /// covering `[offset, end)` without a gap.
    pub runs: usize,
    /// Where the runs end: the end of the range asked for, or (when the buffer filled up)
    /// the offset to continue from.
    pub end: usize,
    /// The method that answered.
    pub method: ResidencyMethod,
    /// What that method tells apart here.
    pub tells: Tells,
}

/// What the probe found about residency queries (part of [`probe()`](crate::probe())).
///
/// ```
/// let p = osmem::probe().residency;
/// println!("PAGEMAP_SCAN {}, pagemap {}, mincore {}", p.pagemap_scan, p.pagemap, p.mincore);
/// ```
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResidencyProbe {
    /// The PAGEMAP_SCAN ioctl works.
    pub pagemap_scan: bool,
    /// …and knows `PAGE_IS_GUARD` (Linux ≥ 6.16).
    pub scan_guard: bool,
    /// Reading `/proc/self/pagemap` works.
    pub pagemap: bool,
    /// …and shows guard markers (bit 58, Linux ≥ 6.15).
    pub pagemap_guard: bool,
    /// …and shows page frame numbers (root or CAP_SYS_ADMIN), so the zero page can be told.
    pub pagemap_pfn: bool,
    /// The zero page's frame number, if `pagemap_pfn`.
    pub zero_pfn: u64,
    /// `mincore` works.
    pub mincore: bool,
}

impl ResidencyProbe {
    /// Whether method `m` worked when the kernel was probed (a later failure may have
    /// downgraded it since: [`residency_method`] says which one queries use now).
    ///
    /// ```
    /// use osmem::ResidencyMethod;
    /// let p = osmem::probe().residency;
    /// for m in ResidencyMethod::ALL.into_iter().filter(|&m| p.works(m)) {
    ///     println!("{} works here, telling apart {:?}", m.name(), p.tells(m));
    /// }
    /// ```
    pub fn works(&self, m: ResidencyMethod) -> bool {
        match m {
            ResidencyMethod::PagemapScan => self.pagemap_scan,
            ResidencyMethod::Pagemap => self.pagemap,
            ResidencyMethod::Mincore => self.mincore,
        }
    }

    /// What method `m` tells apart here.
    ///
    /// ```
    /// use osmem::ResidencyMethod;
    /// let t = osmem::probe().residency.tells(ResidencyMethod::Mincore);
    /// assert!(!t.zero_page && !t.swapped && !t.guard); // mincore: resident or not
    /// ```
    pub fn tells(&self, m: ResidencyMethod) -> Tells {
        match m {
            ResidencyMethod::PagemapScan => Tells {
                zero_page: true,
                swapped: true,
                guard: self.scan_guard,
            },
            ResidencyMethod::Pagemap => Tells {
                zero_page: self.pagemap_pfn,
                swapped: true,
                guard: self.pagemap_guard,
            },
            ResidencyMethod::Mincore => Tells::default(),
        }
    }
}

/// The method a query would use now: the first of the chain that the probe found working
/// and that has not been downgraded since. `None` only if not even `mincore` works.
///
/// ```
/// println!("residency queries use {:?}", osmem::residency_method());
/// ```
pub fn residency_method() -> Option<ResidencyMethod> {
    let p = &probe::probe().residency;
    ResidencyMethod::ALL.into_iter().find(|&m| usable(p, m))
}

fn usable(p: &ResidencyProbe, m: ResidencyMethod) -> bool {
    p.works(m) && (m.bit() == 0 || advise::clear(m.bit()))
}

/// Whether `e` from a link means "this method does not work here".
fn refused(e: Errno) -> bool {
    matches!(
        e,
        Errno::ENOSYS | Errno::EINVAL | Errno::EPERM | Errno::ENOTTY | Errno::EACCES
    )
}

// ----- the pagemap descriptor, one per process -----

/// `pid << 32 | fd`, 0 when none is open.
static FD: AtomicU64 = AtomicU64::new(0);

fn pagemap_fd() -> Result<i32, Errno> {
    let pid = crate::lock::pid() as u32;
    loop {
        let w = FD.load(Ordering::Acquire);
        if w != 0 && (w >> 32) as u32 == pid {
            return Ok(w as u32 as i32);
        }
        let fd = sys::open_pagemap()?;
        let new = (pid as u64) << 32 | fd as u32 as u64;
        match FD.compare_exchange(w, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                if w != 0 {
                    // Inherited across fork: it reads the parent's memory. Ours to close.
                    sys::close(w as u32 as i32);
                }
                return Ok(fd);
            }
            // Another thread opened one first: use that.
            Err(_) => sys::close(fd),
        }
    }
}

// ----- building runs into the caller's buffer -----

/// Runs written so far, merged, gaps filled with `None`.
struct Out<'a> {
    out: &'a mut [PageRun],
    n: usize,
    base: usize,
    /// Address covered so far.
    at: usize,
}

impl Out<'_> {
    /// Pages `[start, end)` (addresses, `start >= at`) are `r`; the gap before them is None.
    /// `false`: the buffer is full, `at` stays where the last whole run ended.
    #[inline]
    fn push(&mut self, start: usize, end: usize, r: Residence) -> bool {
        if start > self.at && !self.emit(self.at, start, Residence::None) {
            return false;
        }
        self.emit(start, end, r)
    }

    /// Pages `[at, to)` hold nothing (if the buffer has room for that).
    fn fill(&mut self, to: usize) {
        if to > self.at {
            let _ = self.emit(self.at, to, Residence::None);
        }
    }

    /// Pages `[start, end)` (`start == at`) are `r`: extend the last run or start one.
    #[inline(always)]
    fn emit(&mut self, start: usize, end: usize, r: Residence) -> bool {
        debug_assert!(start == self.at && end > start);
        match self.out[..self.n].last_mut() {
            Some(last) if last.residence == r => last.len += end - start,
            _ => {
                let Some(slot) = self.out.get_mut(self.n) else {
                    return false;
                };
                *slot = PageRun {
                    offset: start - self.base,
                    len: end - start,
                    residence: r,
                };
                self.n += 1;
            }
        }
        self.at = end;
        true
    }
}

/// Classify `[lo, hi)` (page-aligned addresses of the reservation at `base`) into `out` with
/// method `m`. `Ok(covered end address)`; `Err` as the method's syscall answered.
fn run_method(
    m: ResidencyMethod,
    p: &ResidencyProbe,
    o: &mut Out<'_>,
    lo: usize,
    hi: usize,
) -> Result<(), (Syscall, Errno)> {
    match m {
        ResidencyMethod::PagemapScan => scan(p, o, lo, hi),
        ResidencyMethod::Pagemap => read_pagemap(p, o, lo, hi),
        ResidencyMethod::Mincore => by_mincore(o, lo, hi),
    }
}

fn scan(p: &ResidencyProbe, o: &mut Out<'_>, lo: usize, hi: usize) -> Result<(), (Syscall, Errno)> {
    let fd = pagemap_fd().map_err(|e| (Syscall::OpenPagemap, e))?;
    let mut mask = sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED | sys::PAGE_IS_PFNZERO;
    if p.scan_guard {
        mask |= sys::PAGE_IS_GUARD;
    }
    let mut vec = [sys::PageRegion::default(); 32];
    let mut start = lo;
    while start < hi {
        let mut arg = sys::PmScanArg {
            size: core::mem::size_of::<sys::PmScanArg>() as u64,
            start: start as u64,
            end: hi as u64,
            vec: vec.as_mut_ptr() as u64,
            vec_len: vec.len() as u64,
            category_anyof_mask: mask,
            return_mask: mask,
            ..Default::default()
        };
        // SAFETY: `vec` holds `vec_len` regions for the kernel to write.
        let n = advise::retry(|| unsafe { sys::pagemap_scan(fd, &mut arg) })
            .map_err(|e| (Syscall::PagemapScan, e))?;
        for r in &vec[..n] {
            let what = match r.categories {
                c if c & sys::PAGE_IS_GUARD != 0 => Residence::Guard,
                c if c & sys::PAGE_IS_SWAPPED != 0 => Residence::Swapped,
                c if c & sys::PAGE_IS_PFNZERO != 0 => Residence::ZeroPage,
                _ => Residence::Present,
            };
            if !o.push(r.start as usize, r.end as usize, what) {
                return Ok(());
            }
        }
        let walked = arg.walk_end as usize;
        if walked <= start {
            // No progress (never seen): do not spin; the rest reads as what was not reported.
            break;
        }
        start = walked;
    }
    // The pages after the last region reported hold nothing.
    o.fill(hi);
    Ok(())
}

fn read_pagemap(
    p: &ResidencyProbe,
    o: &mut Out<'_>,
    lo: usize,
    hi: usize,
) -> Result<(), (Syscall, Errno)> {
    let fd = pagemap_fd().map_err(|e| (Syscall::OpenPagemap, e))?;
    let ps = probe::page_size();
    // Entry bits: 63 present, 62 swapped, 58 guard marker; 0-54 the frame number.
    const PRESENT: u64 = 1 << 63;
    const SWAPPED: u64 = 1 << 62;
    const GUARD: u64 = 1 << 58;
    const FLAGS: u64 = PRESENT | SWAPPED | GUARD;
    const PFN_MASK: u64 = (1 << 55) - 1;
    // No frame numbers visible: a value no 55-bit frame number equals.
    let zero_pfn = if p.pagemap_pfn { p.zero_pfn } else { u64::MAX };
    let class = |flags: u64, zero: bool| {
        if flags & PRESENT != 0 {
            if zero {
                Residence::ZeroPage
            } else {
                Residence::Present
            }
        } else if flags & SWAPPED != 0 {
            if p.pagemap_guard && flags & GUARD != 0 {
                Residence::Guard
            } else {
                Residence::Swapped
            }
        } else {
            Residence::None
        }
    };
    let mut buf = [0u64; 512];
    let mut a = lo;
    while a < hi {
        let want = ((hi - a) / ps).min(buf.len());
        let got = advise::retry(|| sys::pagemap_read(fd, &mut buf[..want], (a / ps) as u64))
            .map_err(|e| (Syscall::PagemapRead, e))?;
        if got == 0 {
            // The file ended inside our mapping: not a pagemap we can use.
            return Err((Syscall::PagemapRead, Errno::EINVAL));
        }
        // Run by run: the flag bits (present, swapped, guard) find where runs change with one
        // AND and one compare per entry; only a present run, where the zero page is told,
        // also compares frame numbers. Only the first entry of a run is classified.
        let mut i = 0;
        while i < got {
            let (e0, rest) = (buf[i], &buf[i + 1..got]);
            let flags = e0 & FLAGS;
            let zero = e0 & PFN_MASK == zero_pfn;
            let n = if flags & PRESENT != 0 && p.pagemap_pfn {
                rest.iter()
                    .position(|&e| e & FLAGS != flags || (e & PFN_MASK == zero_pfn) != zero)
            } else {
                rest.iter().position(|&e| e & FLAGS != flags)
            };
            let j = n.map_or(got, |n| i + 1 + n);
            if !o.emit(a + i * ps, a + j * ps, class(flags, zero)) {
                return Ok(());
            }
            i = j;
        }
        a += got * ps;
    }
    Ok(())
}

fn by_mincore(o: &mut Out<'_>, lo: usize, hi: usize) -> Result<(), (Syscall, Errno)> {
    let ps = probe::page_size();
    let mut vec = [0u8; 4096];
    let mut a = lo;
    while a < hi {
        let chunk = (hi - a).min(vec.len() * ps);
        advise::retry(|| sys::mincore(a, chunk, &mut vec, ps))
            .map_err(|e| (Syscall::Mincore, e))?;
        let v = &vec[..chunk / ps];
        // Run by run: find where residency changes, then one push per run.
        let mut i = 0;
        while i < v.len() {
            let bit = v[i] & 1;
            let j = v[i + 1..]
                .iter()
                .position(|&x| x & 1 != bit)
                .map_or(v.len(), |k| i + 1 + k);
            let what = if bit != 0 {
                Residence::Present
            } else {
                Residence::None
            };
            if !o.emit(a + i * ps, a + j * ps, what) {
                return Ok(());
            }
            i = j;
        }
        a += chunk;
    }
    Ok(())
}

/// The query behind `Reservation::residency*`: `[lo, hi)` (page-aligned addresses inside
/// the reservation at `base`, `lo < hi`) into `out` (non-empty). `forced`: only that method,
/// no fallback. Returns (runs, end address, method), or the method and syscall that failed.
pub(crate) fn query(
    base: usize,
    lo: usize,
    hi: usize,
    out: &mut [PageRun],
    forced: Option<ResidencyMethod>,
) -> Result<(usize, usize, ResidencyMethod, Tells), QueryError> {
    let p = &probe::probe().residency;
    for m in ResidencyMethod::ALL {
        if forced.is_some_and(|f| f != m) || !usable(p, m) {
            continue;
        }
        let mut o = Out {
            out: &mut *out,
            n: 0,
            base,
            at: lo,
        };
        match run_method(m, p, &mut o, lo, hi) {
            Ok(()) => {
                stats::bump(Counter::ResidencyQueries);
                return Ok((o.n, o.at, m, p.tells(m)));
            }
            Err((call, e)) => {
                let gone = matches!(e, Errno::ENOENT | Errno::EACCES | Errno::EPERM);
                if call == Syscall::OpenPagemap && gone {
                    // No usable /proc/self/pagemap: neither pagemap link works.
                    advise::downgrade(D_SCAN);
                    advise::downgrade(D_PAGEMAP);
                } else if refused(e) && m.bit() != 0 {
                    advise::downgrade(m.bit());
                } else {
                    return Err(QueryError::Os(call, e));
                }
                if forced.is_some() {
                    return Err(QueryError::Os(call, e));
                }
            }
        }
    }
    Err(QueryError::Unsupported)
}

pub(crate) enum QueryError {
    /// No method works (or the forced one does not).
    Unsupported,
    Os(Syscall, Errno),
}

/// Resident bytes (present, not the zero page where the method tells, not swapped) of
/// `[addr, addr + len)`, a page-aligned range inside a mapping osmem owns.
pub(crate) fn resident_bytes_at(addr: usize, len: usize) -> Result<usize, QueryError> {
    let mut out = [PageRun::EMPTY; 64];
    let (mut lo, hi, mut total) = (addr, addr + len, 0);
    while lo < hi {
        let (n, end, _, _) = query(addr, lo, hi, &mut out, None)?;
        total += out[..n]
            .iter()
            .filter(|r| r.residence == Residence::Present)
            .map(|r| r.len)
            .sum::<usize>();
        lo = end;
    }
    Ok(total)
}

// ----- the probe's part -----

/// Probe the three methods on three private pages: written (present), read-touched (the zero
/// page), and guard-marked where the kernel has guard markers. Unmaps them.
pub(crate) fn probe_methods(ps: usize, guards: bool) -> ResidencyProbe {
    let mut r = ResidencyProbe::default();
    // SAFETY: a fresh mapping osmem owns; every call below is confined to it.
    let Ok(base) = (unsafe { sys::mmap_anon(0, 3 * ps, sys::PROT_RW, false, false) }) else {
        return r;
    };
    // SAFETY: inside the fresh RW mapping.
    unsafe {
        core::ptr::write_volatile(base as *mut u8, 1);
        core::ptr::read_volatile((base + ps) as *const u8);
    }
    // SAFETY: the third page is ours and unused.
    let guarded =
        guards && unsafe { sys::madvise(base + 2 * ps, ps, sys::MADV_GUARD_INSTALL) }.is_ok();
    let mut vec = [0u8; 3];
    r.mincore = sys::mincore(base, 3 * ps, &mut vec, ps).is_ok();
    // The probe runs before any fork handler exists: open, use, close here (the query path
    // opens its own, keyed by pid).
    if let Ok(fd) = sys::open_pagemap() {
        let base_mask = sys::PAGE_IS_PRESENT | sys::PAGE_IS_SWAPPED | sys::PAGE_IS_PFNZERO;
        let ask = |mask: u64| {
            let mut regions = [sys::PageRegion::default(); 4];
            let mut arg = sys::PmScanArg {
                size: core::mem::size_of::<sys::PmScanArg>() as u64,
                start: base as u64,
                end: (base + 3 * ps) as u64,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                category_anyof_mask: mask,
                return_mask: mask,
                ..Default::default()
            };
            // SAFETY: `regions` holds `vec_len` regions.
            let n = unsafe { sys::pagemap_scan(fd, &mut arg) }.ok()?;
            Some((n, regions))
        };
        // It must also say what it is asked: page 0 present, page 1 the zero page.
        r.pagemap_scan = ask(base_mask).is_some_and(|(n, regions)| {
            n >= 2
                && regions[0].start == base as u64
                && regions[0].categories == sys::PAGE_IS_PRESENT
                && regions[1].categories & sys::PAGE_IS_PFNZERO != 0
        });
        r.scan_guard = r.pagemap_scan && ask(base_mask | sys::PAGE_IS_GUARD).is_some();
        let mut e = [0u64; 3];
        if sys::pagemap_read(fd, &mut e, (base / ps) as u64) == Ok(3) && e[0] >> 63 & 1 != 0 {
            r.pagemap = true;
            let pfn = |x: u64| x & ((1 << 55) - 1);
            r.pagemap_pfn = pfn(e[0]) != 0 && e[1] >> 63 & 1 != 0 && pfn(e[1]) != 0;
            r.zero_pfn = if r.pagemap_pfn { pfn(e[1]) } else { 0 };
            r.pagemap_guard = guarded && e[2] >> 58 & 1 != 0;
        }
        sys::close(fd);
    }
    // SAFETY: the pages are ours and no longer used.
    let _ = unsafe { sys::munmap(base, 3 * ps) };
    r
}
