//! Raw Linux primitives. Every function is one syscall (plus retry-free errno capture) and
//! the counter bumps that make the syscall visible in [`crate::stats()`]. The policy that
//! decides what to call next on failure lives in the strategy files (`unused.rs`, `fault.rs`,
//! `huge.rs`), never here.

use crate::stats::{self, Counter};
use core::ffi::{c_int, c_void};

/// A raw `errno` value returned by a failed syscall (compare with the `libc::E*` constants).
///
/// ```
/// let ps = osmem::page_size();
/// let r = osmem::Reservation::reserve(ps)?;
/// // That address is taken: mmap(MAP_FIXED_NOREPLACE) fails with EEXIST.
/// let e = osmem::Reservation::reserve_fixed(r.as_ptr() as usize, ps).unwrap_err();
/// if let osmem::Error::Os { errno, .. } = e {
///     assert_eq!(errno, osmem::Errno(libc::EEXIST));
/// }
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Errno(
    /// The errno number.
    pub i32,
);

impl Errno {
    pub(crate) const EPERM: Errno = Errno(libc::EPERM);
    pub(crate) const EINTR: Errno = Errno(libc::EINTR);
    pub(crate) const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub(crate) const EACCES: Errno = Errno(libc::EACCES);
    pub(crate) const EINVAL: Errno = Errno(libc::EINVAL);
    pub(crate) const ENOSYS: Errno = Errno(libc::ENOSYS);
    pub(crate) const EBADF: Errno = Errno(libc::EBADF);
    pub(crate) const ESRCH: Errno = Errno(libc::ESRCH);
    pub(crate) const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub(crate) const EEXIST: Errno = Errno(libc::EEXIST);
    pub(crate) const ENOTTY: Errno = Errno(libc::ENOTTY);
    pub(crate) const ENOENT: Errno = Errno(libc::ENOENT);
}

fn last_errno() -> Errno {
    // SAFETY: __errno_location always returns the calling thread's valid errno slot.
    Errno(unsafe { *libc::__errno_location() })
}

// uapi values newer than some libc releases. Defined here (not taken from libc) so the crate
// builds against any libc 0.2; the `uapi` unit test below checks every one against
// linux-raw-sys.
pub(crate) const MADV_NORMAL: i32 = 0;
pub(crate) const MADV_DONTNEED: i32 = 4;
pub(crate) const MADV_FREE: i32 = 8;
pub(crate) const MADV_HUGEPAGE: i32 = 14;
pub(crate) const MADV_NOHUGEPAGE: i32 = 15;
pub(crate) const MADV_POPULATE_READ: i32 = 22;
pub(crate) const MADV_POPULATE_WRITE: i32 = 23;
pub(crate) const MADV_DONTNEED_LOCKED: i32 = 24;
pub(crate) const MADV_COLLAPSE: i32 = 25;
pub(crate) const MADV_GUARD_INSTALL: i32 = 102;
pub(crate) const MADV_GUARD_REMOVE: i32 = 103;
pub(crate) const SYS_PROCESS_MADVISE: libc::c_long = 440;
pub(crate) const SYS_PIDFD_OPEN: libc::c_long = 434;
/// `PIDFD_SELF_THREAD_GROUP` (Linux 6.15): a pidfd sentinel that names the calling process
/// without opening a file descriptor.
pub(crate) const PIDFD_SELF_THREAD_GROUP: c_int = -10001;
pub(crate) const PR_SET_VMA: c_int = 0x5356_4d41;
pub(crate) const PR_SET_VMA_ANON_NAME: libc::c_ulong = 0;
/// `PAGEMAP_SCAN` = `_IOWR('f', 16, struct pm_scan_arg)` (Linux 6.7).
pub(crate) const PAGEMAP_SCAN: libc::c_ulong = 0xC000_0000
    | ((core::mem::size_of::<PmScanArg>() as libc::c_ulong) << 16)
    | ((b'f' as libc::c_ulong) << 8)
    | 16;
pub(crate) const PAGE_IS_PRESENT: u64 = 1 << 3;
pub(crate) const PAGE_IS_SWAPPED: u64 = 1 << 4;
pub(crate) const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// Linux 6.16; an older kernel answers EINVAL to a mask that names it.
pub(crate) const PAGE_IS_GUARD: u64 = 1 << 8;

/// `struct page_region` of the PAGEMAP_SCAN ioctl: pages `[start, end)` share `categories`.
#[repr(C)]
#[derive(Copy, Clone, Default)]
pub(crate) struct PageRegion {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) categories: u64,
}

/// `struct pm_scan_arg` of the PAGEMAP_SCAN ioctl.
#[repr(C)]
#[derive(Copy, Clone, Default)]
pub(crate) struct PmScanArg {
    pub(crate) size: u64,
    pub(crate) flags: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) walk_end: u64,
    pub(crate) vec: u64,
    pub(crate) vec_len: u64,
    pub(crate) max_pages: u64,
    pub(crate) category_inverted: u64,
    pub(crate) category_mask: u64,
    pub(crate) category_anyof_mask: u64,
    pub(crate) return_mask: u64,
}

pub(crate) const PROT_NONE: c_int = libc::PROT_NONE;
pub(crate) const PROT_RW: c_int = libc::PROT_READ | libc::PROT_WRITE;

/// Which system call an [`Error::Os`](crate::Error::Os) is about: the one that failed last.
///
/// ```
/// use osmem::{Error, Reservation, Syscall};
/// let ps = osmem::page_size();
/// let r = Reservation::reserve(ps)?;
/// match Reservation::reserve_fixed(r.as_ptr() as usize, ps) {
///     Err(Error::Os { call, .. }) => assert_eq!(call, Syscall::Mmap),
///     other => panic!("the address is taken: {other:?}"),
/// }
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Syscall {
    /// `mmap(2)`.
    Mmap,
    /// `munmap(2)`.
    Munmap,
    /// `mprotect(2)`.
    Mprotect,
    /// `madvise(2)` with the given advice value.
    Madvise(i32),
    /// `process_madvise(2)` with the given advice value.
    ProcessMadvise(i32),
    /// `pidfd_open(2)`.
    PidfdOpen,
    /// `prctl(2)`.
    Prctl,
    /// `open(2)` of `/proc/self/pagemap`.
    OpenPagemap,
    /// The `PAGEMAP_SCAN` ioctl on `/proc/self/pagemap`.
    PagemapScan,
    /// `pread(2)` of `/proc/self/pagemap`.
    PagemapRead,
    /// `mincore(2)`.
    Mincore,
}

fn advice_counter(advice: i32) -> Option<Counter> {
    Some(match advice {
        MADV_FREE => Counter::MadvFree,
        MADV_DONTNEED => Counter::MadvDontneed,
        MADV_DONTNEED_LOCKED => Counter::MadvDontneedLocked,
        MADV_HUGEPAGE => Counter::MadvHugepage,
        MADV_NOHUGEPAGE => Counter::MadvNohugepage,
        MADV_COLLAPSE => Counter::MadvCollapse,
        MADV_POPULATE_WRITE => Counter::MadvPopulateWrite,
        MADV_GUARD_INSTALL => Counter::MadvGuardInstall,
        MADV_GUARD_REMOVE => Counter::MadvGuardRemove,
        _ => return None,
    })
}

#[inline]
fn count(calls: Counter, errors: Counter, failed: bool) {
    stats::bump(calls);
    if failed {
        stats::bump(errors);
    }
}

/// Anonymous private mapping. `fixed` replaces whatever is mapped at `addr`: callers pass it
/// only for ranges inside a region osmem owns.
///
/// # Safety
/// With `fixed`, `[addr, addr+len)` must be owned by the caller: its old contents are discarded.
#[inline(always)] // see unused::release
pub(crate) unsafe fn mmap_anon(
    addr: usize,
    len: usize,
    prot: c_int,
    fixed: bool,
    noreserve: bool,
) -> Result<usize, Errno> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    if fixed {
        flags |= libc::MAP_FIXED;
    }
    if noreserve {
        flags |= libc::MAP_NORESERVE;
    }
    let p = libc::mmap(addr as *mut c_void, len, prot, flags, -1, 0);
    let failed = p == libc::MAP_FAILED;
    count(Counter::MmapCalls, Counter::MmapErrors, failed);
    if failed {
        return Err(last_errno());
    }
    // Go never checks that a MAP_FIXED remap landed where asked; a kernel that ignores
    // MAP_FIXED would leave the old pages in place while the caller believes them gone.
    if fixed && p as usize != addr {
        libc::munmap(p, len);
        stats::bump(Counter::MmapErrors);
        return Err(Errno::EINVAL);
    }
    Ok(p as usize)
}

/// `mmap(PROT_NONE, MAP_NORESERVE | MAP_FIXED_NOREPLACE)` at exactly `addr`: fails with EEXIST
/// if anything is mapped in `[addr, addr+len)`, and never replaces it. Kernels before 4.17 do
/// not know the flag and take the address as a hint: a mapping placed elsewhere is unmapped
/// again and reported as EEXIST, so the caller gets exactly `addr` or an error either way.
pub(crate) fn mmap_noreplace(addr: usize, len: usize) -> Result<usize, Errno> {
    let flags =
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
    let p = unsafe { libc::mmap(addr as *mut c_void, len, PROT_NONE, flags, -1, 0) };
    let failed = p == libc::MAP_FAILED;
    count(Counter::MmapCalls, Counter::MmapErrors, failed);
    if failed {
        return Err(last_errno());
    }
    if p as usize != addr {
        // SAFETY: the mapping just made, elsewhere; nobody has seen it.
        unsafe { libc::munmap(p, len) };
        stats::bump(Counter::MmapErrors);
        return Err(Errno::EEXIST);
    }
    Ok(addr)
}

/// # Safety
/// The range must be owned by the caller and no longer referenced.
pub(crate) unsafe fn munmap(addr: usize, len: usize) -> Result<(), Errno> {
    let r = libc::munmap(addr as *mut c_void, len);
    count(Counter::MunmapCalls, Counter::MunmapErrors, r != 0);
    if r != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// # Safety
/// The range must be owned by the caller.
#[inline(always)] // see unused::release
pub(crate) unsafe fn mprotect(addr: usize, len: usize, prot: c_int) -> Result<(), Errno> {
    let r = libc::mprotect(addr as *mut c_void, len, prot);
    count(Counter::MprotectCalls, Counter::MprotectErrors, r != 0);
    if r != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// # Safety
/// The range must be owned by the caller; destructive advice discards its contents.
#[inline(always)] // see unused::release
pub(crate) unsafe fn madvise(addr: usize, len: usize, advice: i32) -> Result<(), Errno> {
    let r = libc::madvise(addr as *mut c_void, len, advice);
    // One count per call: its advice's counter (madvise_calls is their sum, see stats.rs).
    match advice_counter(advice) {
        Some(c) => stats::bump(c),
        None => stats::madvise_other(),
    }
    if r != 0 {
        stats::bump(Counter::MadviseErrors);
    }
    if r != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// `madvise(addr, 0, advice)`: the kernel validates the advice before it looks at the length,
/// so a zero-length call answers "is this advice known?" without touching any page.
pub(crate) fn madvise_known(addr: usize, advice: i32) -> Result<(), Errno> {
    stats::bump(Counter::EinvalProbes);
    // SAFETY: a zero-length madvise changes nothing.
    unsafe { madvise(addr, 0, advice) }
}

/// `munlock` (used by the probe on its scratch page, see probe.rs).
pub(crate) fn munlock(addr: usize, len: usize) -> Result<(), Errno> {
    // SAFETY: munlock changes no contents; the range is the caller's.
    if unsafe { libc::munlock(addr as *const c_void, len) } != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// How many pages of `[addr, addr+len)` are resident (`mincore`), in fixed-size chunks so
/// nothing is allocated.
pub(crate) fn resident_pages(addr: usize, len: usize, ps: usize) -> Result<usize, Errno> {
    let mut vec = [0u8; 256];
    let (mut a, end, mut n) = (addr, addr + len, 0);
    while a < end {
        let chunk = (end - a).min(vec.len() * ps);
        mincore(a, chunk, &mut vec, ps)?;
        n += vec[..chunk / ps].iter().filter(|&&v| v & 1 != 0).count();
        a += chunk;
    }
    Ok(n)
}

/// `mincore(addr, len, vec)`: one byte per page of the range into `vec` (bit 0: resident).
pub(crate) fn mincore(addr: usize, len: usize, vec: &mut [u8], ps: usize) -> Result<(), Errno> {
    debug_assert!(vec.len() >= len.div_ceil(ps));
    // SAFETY: `vec` has a byte for every page of the range (the caller's contract above).
    let r = unsafe { libc::mincore(addr as *mut c_void, len, vec.as_mut_ptr()) };
    count(Counter::MincoreCalls, Counter::MincoreErrors, r != 0);
    if r != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// `open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)`.
pub(crate) fn open_pagemap() -> Result<c_int, Errno> {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/pagemap".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    count(Counter::PagemapOpens, Counter::PagemapOpenErrors, fd < 0);
    if fd < 0 {
        return Err(last_errno());
    }
    Ok(fd)
}

/// The `PAGEMAP_SCAN` ioctl; returns the regions written into `arg.vec`.
///
/// # Safety
/// `arg.vec` must point at `arg.vec_len` writable `PageRegion`s.
pub(crate) unsafe fn pagemap_scan(fd: c_int, arg: &mut PmScanArg) -> Result<usize, Errno> {
    let r = libc::ioctl(fd, PAGEMAP_SCAN as _, arg as *mut PmScanArg);
    count(Counter::PagemapScanCalls, Counter::PagemapScanErrors, r < 0);
    if r < 0 {
        return Err(last_errno());
    }
    Ok(r as usize)
}

/// `pread` of pagemap entries (8 bytes per page) starting at entry `index`; returns how many
/// whole entries were read.
pub(crate) fn pagemap_read(fd: c_int, entries: &mut [u64], index: u64) -> Result<usize, Errno> {
    // SAFETY: the buffer's bounds are passed to pread.
    let r = unsafe {
        libc::pread(
            fd,
            entries.as_mut_ptr() as *mut c_void,
            entries.len() * 8,
            (index * 8) as libc::off_t,
        )
    };
    count(Counter::PagemapReads, Counter::PagemapReadErrors, r < 0);
    if r < 0 {
        return Err(last_errno());
    }
    Ok(r as usize / 8)
}

/// `process_madvise(pidfd, iov, n, advice, 0)`; returns the bytes advised, which stops short of
/// the total at the first iovec that failed.
///
/// # Safety
/// Every iovec must describe a range owned by the caller.
pub(crate) unsafe fn process_madvise(
    pidfd: c_int,
    iov: *const libc::iovec,
    n: usize,
    advice: i32,
) -> Result<usize, Errno> {
    let r = libc::syscall(SYS_PROCESS_MADVISE, pidfd, iov, n, advice, 0u32);
    count(
        Counter::ProcessMadviseCalls,
        Counter::ProcessMadviseErrors,
        r < 0,
    );
    if r < 0 {
        return Err(last_errno());
    }
    Ok(r as usize)
}

pub(crate) fn pidfd_open_self() -> Result<c_int, Errno> {
    // SAFETY: getpid and pidfd_open have no memory-safety preconditions.
    let r = unsafe { libc::syscall(SYS_PIDFD_OPEN, libc::getpid(), 0u32) };
    count(Counter::PidfdOpenCalls, Counter::PidfdOpenErrors, r < 0);
    if r < 0 {
        return Err(last_errno());
    }
    Ok(r as c_int)
}

pub(crate) fn close(fd: c_int) {
    // SAFETY: the caller passes an fd it opened and no longer uses.
    unsafe { libc::close(fd) };
}

/// Name an anonymous mapping (`PR_SET_VMA_ANON_NAME`); `name` must be NUL-terminated.
pub(crate) fn set_anon_name(addr: usize, len: usize, name: &'static [u8]) -> Result<(), Errno> {
    debug_assert_eq!(name.last(), Some(&0));
    // SAFETY: the kernel copies the NUL-terminated name; the range is only relabelled.
    let r = unsafe {
        libc::prctl(
            PR_SET_VMA,
            PR_SET_VMA_ANON_NAME,
            addr as libc::c_ulong,
            len as libc::c_ulong,
            name.as_ptr() as libc::c_ulong,
        )
    };
    count(Counter::PrctlCalls, Counter::PrctlErrors, r != 0);
    if r != 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// Read a file (procfs) in chunks of `buf` without allocating, giving each to `f` until it
/// returns `false` or the file ends; `false` if the file cannot be opened.
pub(crate) fn read_chunks(
    path: &core::ffi::CStr,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]) -> bool,
) -> bool {
    // SAFETY: path is NUL-terminated; the buffer bounds are passed to read.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        loop {
            let r = libc::read(fd, buf.as_mut_ptr() as *mut c_void, buf.len());
            if r < 0 && last_errno() == Errno::EINTR {
                continue;
            }
            if r <= 0 || !f(&buf[..r as usize]) {
                break;
            }
        }
        libc::close(fd);
        true
    }
}

/// Read a small file (procfs/sysfs) into `buf` without allocating; returns the bytes read.
pub(crate) fn read_file(path: &core::ffi::CStr, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: path is NUL-terminated; the buffer bounds are passed to read.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut n = 0;
        while n < buf.len() {
            let r = libc::read(fd, buf[n..].as_mut_ptr() as *mut c_void, buf.len() - n);
            if r < 0 && last_errno() == Errno::EINTR {
                continue;
            }
            if r <= 0 {
                break;
            }
            n += r as usize;
        }
        libc::close(fd);
        Some(n)
    }
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    //! The locally defined uapi values, checked against the kernel headers as packaged by
    //! linux-raw-sys, so a typo cannot make osmem issue the wrong advice or syscall.
    use super::*;
    use linux_raw_sys::{general as g, prctl as p};

    #[test]
    fn uapi_constants_match_kernel_headers() {
        assert_eq!(MADV_NORMAL, g::MADV_NORMAL as i32);
        assert_eq!(MADV_DONTNEED, g::MADV_DONTNEED as i32);
        assert_eq!(MADV_FREE, g::MADV_FREE as i32);
        assert_eq!(MADV_HUGEPAGE, g::MADV_HUGEPAGE as i32);
        assert_eq!(MADV_NOHUGEPAGE, g::MADV_NOHUGEPAGE as i32);
        assert_eq!(MADV_POPULATE_READ, g::MADV_POPULATE_READ as i32);
        assert_eq!(MADV_POPULATE_WRITE, g::MADV_POPULATE_WRITE as i32);
        assert_eq!(MADV_DONTNEED_LOCKED, g::MADV_DONTNEED_LOCKED as i32);
        assert_eq!(MADV_COLLAPSE, g::MADV_COLLAPSE as i32);
        assert_eq!(MADV_GUARD_INSTALL, g::MADV_GUARD_INSTALL as i32);
        assert_eq!(MADV_GUARD_REMOVE, g::MADV_GUARD_REMOVE as i32);
        assert_eq!(SYS_PROCESS_MADVISE, g::__NR_process_madvise as libc::c_long);
        assert_eq!(SYS_PIDFD_OPEN, g::__NR_pidfd_open as libc::c_long);
        assert_eq!(PIDFD_SELF_THREAD_GROUP, g::PIDFD_SELF_THREAD_GROUP);
        assert_eq!(PR_SET_VMA, p::PR_SET_VMA as c_int);
        assert_eq!(
            PR_SET_VMA_ANON_NAME,
            p::PR_SET_VMA_ANON_NAME as libc::c_ulong
        );
    }
}

#[cfg(test)]
mod uapi {
    //! The uapi values and layouts defined above, checked against linux-raw-sys.
    use super::*;
    use core::mem::{align_of, offset_of, size_of};
    use linux_raw_sys::general as k;

    #[test]
    fn madvise_values_match_the_kernel_headers() {
        for (ours, theirs) in [
            (MADV_NORMAL, k::MADV_NORMAL),
            (MADV_DONTNEED, k::MADV_DONTNEED),
            (MADV_FREE, k::MADV_FREE),
            (MADV_HUGEPAGE, k::MADV_HUGEPAGE),
            (MADV_NOHUGEPAGE, k::MADV_NOHUGEPAGE),
            (MADV_POPULATE_READ, k::MADV_POPULATE_READ),
            (MADV_POPULATE_WRITE, k::MADV_POPULATE_WRITE),
            (MADV_DONTNEED_LOCKED, k::MADV_DONTNEED_LOCKED),
            (MADV_COLLAPSE, k::MADV_COLLAPSE),
            (MADV_GUARD_INSTALL, k::MADV_GUARD_INSTALL),
            (MADV_GUARD_REMOVE, k::MADV_GUARD_REMOVE),
        ] {
            assert_eq!(ours as u32, theirs);
        }
        assert_eq!(SYS_PROCESS_MADVISE, k::__NR_process_madvise as libc::c_long);
        assert_eq!(SYS_PIDFD_OPEN, k::__NR_pidfd_open as libc::c_long);
    }

    #[test]
    // `c_ulong` is u64 here but u32 on 32-bit targets: the conversion is needed there.
    #[allow(clippy::useless_conversion)]
    fn pagemap_scan_matches_the_kernel_headers() {
        assert_eq!(PAGE_IS_PRESENT, k::PAGE_IS_PRESENT as u64);
        assert_eq!(PAGE_IS_SWAPPED, k::PAGE_IS_SWAPPED as u64);
        assert_eq!(PAGE_IS_PFNZERO, k::PAGE_IS_PFNZERO as u64);
        assert_eq!(PAGE_IS_GUARD, k::PAGE_IS_GUARD as u64);
        assert_eq!(size_of::<PmScanArg>(), size_of::<k::pm_scan_arg>());
        assert_eq!(align_of::<PmScanArg>(), align_of::<k::pm_scan_arg>());
        assert_eq!(size_of::<PageRegion>(), size_of::<k::page_region>());
        assert_eq!(
            offset_of!(PmScanArg, walk_end),
            offset_of!(k::pm_scan_arg, walk_end)
        );
        assert_eq!(
            offset_of!(PmScanArg, return_mask),
            offset_of!(k::pm_scan_arg, return_mask)
        );
        assert_eq!(
            offset_of!(PageRegion, categories),
            offset_of!(k::page_region, categories)
        );
        // _IOWR('f', 16, struct pm_scan_arg): direction 3, size, type, number.
        let want = (3u64 << 30) | ((size_of::<k::pm_scan_arg>() as u64) << 16) | (0x66 << 8) | 16;
        assert_eq!(u64::from(PAGEMAP_SCAN), want);
        assert_eq!(u64::from(PAGEMAP_SCAN), 0xC060_6610);
    }
}
