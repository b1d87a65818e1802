//! The raw libc calls, exactly as osmem issues them (osmem/src/sys/linux.rs), with the
//! result checked: a raw call that failed did not do the work, and timing it would compare
//! osmem with nothing. The check is one compare on the hot path; the failure path is cold.

use std::ffi::c_void;

pub(crate) const MADV_DONTNEED: i32 = 4;
pub(crate) const MADV_FREE: i32 = 8;
pub(crate) const MADV_POPULATE_WRITE: i32 = 23;
pub(crate) const MADV_GUARD_INSTALL: i32 = 102;
pub(crate) const MADV_GUARD_REMOVE: i32 = 103;

pub(crate) const PROT_NONE: i32 = libc::PROT_NONE;
pub(crate) const PROT_RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

#[cold]
#[inline(never)]
fn fail(call: &str, arg: i32, addr: usize, len: usize) -> ! {
    panic!(
        "{call}({addr:#x}, {len}, {arg}) failed: {}",
        std::io::Error::last_os_error()
    )
}

/// `madvise(addr, len, advice)`.
///
/// # Safety
/// The range must belong to the caller, and destructive advice must be acceptable for it.
#[inline]
pub(crate) unsafe fn madvise(addr: usize, len: usize, advice: i32) {
    if libc::madvise(addr as *mut c_void, len, advice) != 0 {
        fail("madvise", advice, addr, len);
    }
}

/// `mprotect(addr, len, prot)`.
///
/// # Safety
/// The range must belong to the caller.
#[inline]
pub(crate) unsafe fn mprotect(addr: usize, len: usize, prot: i32) {
    if libc::mprotect(addr as *mut c_void, len, prot) != 0 {
        fail("mprotect", prot, addr, len);
    }
}

/// `mmap(addr, len, prot, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)`:
/// osmem's remap inside a region it reserved (its regions are MAP_NORESERVE, and it remaps with
/// the same flags so the pieces merge back).
///
/// # Safety
/// The range must belong to the caller; its contents are replaced.
#[inline]
pub(crate) unsafe fn mmap_fixed(addr: usize, len: usize, prot: i32) {
    let flags = libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let p = libc::mmap(addr as *mut c_void, len, prot, flags, -1, 0);
    if p == libc::MAP_FAILED || p as usize != addr {
        fail("mmap", prot, addr, len);
    }
}

/// `PIDFD_SELF_THREAD_GROUP` (Linux ≥ 6.15): names the calling process without a descriptor.
const PIDFD_SELF_THREAD_GROUP: i32 = -10001;
const SYS_PROCESS_MADVISE: libc::c_long = 440;
const SYS_PIDFD_OPEN: libc::c_long = 434;

/// `struct iovec`'s layout with plain integers, so holders stay `Send`.
#[derive(Copy, Clone, Debug)]
#[repr(C)]
pub(crate) struct Iov {
    pub(crate) base: usize,
    pub(crate) len: usize,
}

/// A pidfd of the own process as osmem's batch gets one for each flush: the `PIDFD_SELF`
/// sentinel where the kernel has it, else `pidfd_open(getpid())` (closed on drop).
pub(crate) struct SelfPidfd(i32);

impl SelfPidfd {
    pub(crate) fn get() -> SelfPidfd {
        if osmem::probe().process_madvise == osmem::ProcessMadvise::PidfdSelf {
            return SelfPidfd(PIDFD_SELF_THREAD_GROUP);
        }
        // SAFETY: no memory-safety preconditions.
        let fd = unsafe { libc::syscall(SYS_PIDFD_OPEN, libc::getpid(), 0u32) };
        if fd < 0 {
            fail("pidfd_open", 0, 0, 0);
        }
        SelfPidfd(fd as i32)
    }
}

impl Drop for SelfPidfd {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: we opened it.
            unsafe { libc::close(self.0) };
        }
    }
}

/// `process_madvise(pidfd, iov, iov.len(), advice, 0)`, ≤ 1024 iovecs per call, checked to
/// have advised every byte.
///
/// # Safety
/// Every range must belong to the caller, and the advice must be acceptable for it.
pub(crate) unsafe fn process_madvise(pidfd: &SelfPidfd, iov: &[Iov], advice: i32) {
    for chunk in iov.chunks(1024) {
        let total: usize = chunk.iter().map(|v| v.len).sum();
        let r = libc::syscall(
            SYS_PROCESS_MADVISE,
            pidfd.0,
            chunk.as_ptr(),
            chunk.len(),
            advice,
            0u32,
        );
        if r < 0 || r as usize != total {
            fail(
                "process_madvise",
                advice,
                chunk.as_ptr() as usize,
                chunk.len(),
            );
        }
    }
}

/// The number of `/proc/self/maps` entries (VMAs) that overlap `[start, end)`.
///
/// # Panics
/// If the file cannot be read.
pub(crate) fn vmas_in(start: usize, end: usize) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_else(|e| panic!("read /proc/self/maps: {e}"));
    maps.lines()
        .filter_map(|l| {
            let range = l.split(' ').next()?;
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .filter(|&(a, b)| a < end && b > start)
        .count()
}

/// Pages of `[addr, addr + len)` resident in memory (`mincore`).
///
/// # Panics
/// If `mincore` fails (the range is not mapped).
pub(crate) fn resident_pages(addr: usize, len: usize) -> usize {
    let ps = osmem::page_size();
    let mut vec = vec![0u8; len.div_ceil(ps)];
    // SAFETY: `vec` has one byte per page of the range.
    if unsafe { libc::mincore(addr as *mut c_void, len, vec.as_mut_ptr()) } != 0 {
        fail("mincore", 0, addr, len);
    }
    vec.iter().filter(|&&b| b & 1 != 0).count()
}
