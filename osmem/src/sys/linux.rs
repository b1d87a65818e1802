//! Raw Linux primitives. Every function is one syscall (plus retry-free errno capture) and
//! the counter bumps that make the syscall visible in [`crate::stats()`]. The policy that
//! decides what to call next on failure lives in the strategy files (`unused.rs`, `fault.rs`,
//! `huge.rs`), never here.

use crate::stats::{self, Counter};
use core::ffi::{c_int, c_void};

/// A raw `errno` value returned by a failed syscall.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

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
}

fn last_errno() -> Errno {
    // SAFETY: __errno_location always returns the calling thread's valid errno slot.
    Errno(unsafe { *libc::__errno_location() })
}

// uapi values newer than some libc releases. Defined here (not taken from libc) so the crate
// builds against any libc 0.2; `tests/uapi.rs` checks every one against linux-raw-sys.
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

pub(crate) const PROT_NONE: c_int = libc::PROT_NONE;
pub(crate) const PROT_RW: c_int = libc::PROT_READ | libc::PROT_WRITE;

/// Which primitive a counter or an error is about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
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
        // SAFETY: mincore writes one byte per page of the chunk into `vec`, which is large
        // enough by construction.
        if unsafe { libc::mincore(a as *mut c_void, chunk, vec.as_mut_ptr()) } != 0 {
            return Err(last_errno());
        }
        n += vec[..chunk / ps].iter().filter(|&&v| v & 1 != 0).count();
        a += chunk;
    }
    Ok(n)
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
