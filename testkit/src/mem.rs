//! Residency (`mincore`) and content checks. Allocation-free.

use core::sync::atomic::{AtomicUsize, Ordering};

/// The system page size (cached after the first call). Allocation-free.
pub fn page_size() -> usize {
    static CACHE: AtomicUsize = AtomicUsize::new(0);
    let v = CACHE.load(Ordering::Relaxed);
    if v != 0 {
        return v;
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let v = if v > 0 { v as usize } else { 4096 };
    CACHE.store(v, Ordering::Relaxed);
    v
}

/// Pages per `mincore` call; also the size of the on-stack result vector.
const MINCORE_CHUNK: usize = 4096;

/// Number of pages overlapping `[addr, addr + len)` that the kernel reports
/// resident via `mincore(2)` (`addr` need not be aligned; any length works,
/// it is processed in chunks). Allocation-free.
///
/// Pages in holes (unmapped) count as not resident. A read fault on
/// untouched private anonymous memory maps the shared zero page, which
/// `mincore` reports resident although smaps `Rss` does not count it.
pub fn resident_pages(addr: usize, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let ps = page_size();
    let start = addr & !(ps - 1);
    let end = match addr.checked_add(len).and_then(|e| e.checked_add(ps - 1)) {
        Some(e) => e & !(ps - 1),
        None => usize::MAX & !(ps - 1),
    };
    let mut vec = [0u8; MINCORE_CHUNK];
    let mut count = 0;
    let mut cur = start;
    while cur < end {
        let pages = ((end - cur) / ps).min(MINCORE_CHUNK);
        // SAFETY: `vec` has room for `pages` entries; mincore only writes there.
        let rc = unsafe { libc::mincore(cur as *mut _, pages * ps, vec.as_mut_ptr()) };
        if rc == 0 {
            count += vec[..pages].iter().filter(|&&b| b & 1 != 0).count();
        } else {
            // ENOMEM: part of the chunk is unmapped and the kernel does not
            // say which, so fall back to asking page by page.
            for i in 0..pages {
                let mut one = 0u8;
                // SAFETY: as above, for a single page.
                let rc = unsafe { libc::mincore((cur + i * ps) as *mut _, ps, &mut one) };
                if rc == 0 && one & 1 != 0 {
                    count += 1;
                }
            }
        }
        cur += pages * ps;
    }
    count
}

/// Whether every byte of `[addr, addr + len)` is zero, using volatile reads
/// (word-sized where aligned) so the kernel really serves each page.
/// Allocation-free.
///
/// Reading faults pages in: on untouched private anonymous memory it maps the
/// zero page (visible to `mincore`). Call it inside [`crate::in_child`] when
/// the caller's residency must stay unchanged.
///
/// # Safety
///
/// The whole range must be mapped and readable, or the process gets SIGSEGV /
/// SIGBUS.
pub unsafe fn is_zero(addr: usize, len: usize) -> bool {
    const W: usize = core::mem::size_of::<usize>();
    let end = addr.saturating_add(len);
    let mut p = addr;
    while p < end && p % W != 0 {
        if core::ptr::read_volatile(p as *const u8) != 0 {
            return false;
        }
        p += 1;
    }
    // Four words per step, OR-ed together, keeps the volatile loop quick.
    while end - p >= 4 * W {
        let q = p as *const usize;
        let v = core::ptr::read_volatile(q)
            | core::ptr::read_volatile(q.add(1))
            | core::ptr::read_volatile(q.add(2))
            | core::ptr::read_volatile(q.add(3));
        if v != 0 {
            return false;
        }
        p += 4 * W;
    }
    while end - p >= W {
        if core::ptr::read_volatile(p as *const usize) != 0 {
            return false;
        }
        p += W;
    }
    while p < end {
        if core::ptr::read_volatile(p as *const u8) != 0 {
            return false;
        }
        p += 1;
    }
    true
}

/// Flushes the kernel's per-CPU LRU batches on all CPUs. Allocation-free.
///
/// Some page state changes are queued in per-CPU batches and only become
/// visible in `/proc/*/smaps` when a batch is drained: in particular
/// `MADV_FREE` marks a page lazily-free (smaps `LazyFree`) through such a
/// batch, so `LazyFree` can lag behind by up to a batch per CPU (a few dozen
/// pages). [`crate::smaps_at`] and [`crate::smaps_sum`] call this first.
///
/// It works through a side effect of `migrate_pages(2)` with identical source
/// and target nodes, which migrates nothing but drains every CPU's batches
/// (`lru_cache_disable()`); it costs about 10 µs. Returns `false` if the
/// kernel refused (e.g. no NUMA support or a seccomp filter), in which case
/// `LazyFree` may lag.
pub fn drain_lru_batches() -> bool {
    let try_node = |node: u32| -> bool {
        if node >= 63 {
            return false;
        }
        let mask: u64 = 1 << node;
        // SAFETY: both masks are live u64s covering `maxnode` = 64 bits
        // (the kernel reads maxnode - 1 bits); `to` is only read.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_migrate_pages,
                0,
                64u64,
                &mask as *const u64,
                &mask as *const u64,
            )
        };
        rc >= 0
    };
    if try_node(0) {
        return true;
    }
    // Node 0 may have no memory: use the node of the CPU we run on.
    let (mut cpu, mut node) = (0u32, 0u32);
    // SAFETY: getcpu writes two u32 values.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            &mut cpu as *mut u32,
            &mut node as *mut u32,
            core::ptr::null_mut::<libc::c_void>(),
        )
    };
    rc == 0 && node != 0 && try_node(node)
}

/// A fresh private anonymous read-write mapping of `len` bytes (not osmem's): its address,
/// or `None` if the kernel refused it. Allocation-free, so it may be called in a forked
/// child. The caller unmaps it (or lets the process end).
///
/// ```
/// let a = osmem_testkit::map_rw(4096).expect("a page");
/// assert_eq!(a % 4096, 0);
/// // SAFETY: the mapping just made.
/// unsafe { libc::munmap(a as *mut libc::c_void, 4096) };
/// ```
pub fn map_rw(len: usize) -> Option<usize> {
    // SAFETY: a fresh mapping at an address of the kernel's choosing replaces nothing.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p as usize)
}

/// The `/proc/self/pagemap` entries (8 bytes a page: bit 63 present, 62 swapped, 58 guard
/// marker on Linux ≥ 6.15, bits 0-54 the page frame number where visible) of the pages
/// starting at page-aligned `addr`, into `out`. The test kit's own reader, independent of
/// osmem's: opened, read and closed here. Allocation-free. `false` if the file cannot be read.
///
/// ```
/// let ps = osmem_testkit::page_size();
/// let a = osmem_testkit::map_rw(ps).unwrap();
/// unsafe { (a as *mut u8).write(1) };
/// let mut e = [0u64; 1];
/// assert!(osmem_testkit::pagemap_entries(a, &mut e));
/// assert_eq!(e[0] >> 63, 1);
/// ```
pub fn pagemap_entries(addr: usize, out: &mut [u64]) -> bool {
    let ps = page_size();
    let Some(fd) = open_pagemap() else {
        return false;
    };
    // SAFETY: the buffer's bounds are passed to pread.
    unsafe {
        let want = out.len() * 8;
        let r = libc::pread(
            fd,
            out.as_mut_ptr() as *mut libc::c_void,
            want,
            ((addr / ps) * 8) as libc::off_t,
        );
        libc::close(fd);
        r == want as isize
    }
}

fn open_pagemap() -> Option<i32> {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c"/proc/self/pagemap".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    (fd >= 0).then_some(fd)
}

/// Whether the `PAGEMAP_SCAN` ioctl (Linux 6.7) answers on `/proc/self/pagemap` for the
/// page-aligned range `[addr, addr + len)` (asking for present pages only). The test kit's own
/// call, independent of osmem's. Allocation-free.
///
/// ```
/// let ps = osmem_testkit::page_size();
/// let a = osmem_testkit::map_rw(ps).unwrap();
/// println!("PAGEMAP_SCAN here: {}", osmem_testkit::pagemap_scan_answers(a, ps));
/// ```
pub fn pagemap_scan_answers(addr: usize, len: usize) -> bool {
    let Some(fd) = open_pagemap() else {
        return false;
    };
    let mut regions = [[0u64; 3]; 4];
    // struct pm_scan_arg: size, flags, start, end, walk_end, vec, vec_len, max_pages,
    // category_inverted, category_mask, category_anyof_mask, return_mask (PAGE_IS_PRESENT).
    let mut arg: [u64; 12] = [
        96,
        0,
        addr as u64,
        (addr + len) as u64,
        0,
        regions.as_mut_ptr() as u64,
        4,
        0,
        0,
        0,
        1 << 3,
        1 << 3,
    ];
    // SAFETY: PAGEMAP_SCAN (_IOWR('f', 16, struct pm_scan_arg)) writes at most 4 regions.
    let r = unsafe { libc::ioctl(fd, 0xC060_6610, arg.as_mut_ptr()) };
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    r >= 0
}

/// A page's tag for fork tests: the first word of a page derived from its address and a
/// test's `magic`, and in its last word a flag saying the tag is there. Both are in one page,
/// so a fork copies both or neither: a child that finds the flag set and the tag wrong has a
/// page that lost its contents. Allocation-free.
pub fn page_tag(addr: usize, magic: u64) -> u64 {
    addr as u64 ^ magic
}

/// Write the tag of the page at `addr` (see [`page_tag`]), then set its flag.
///
/// # Safety
/// `[addr, addr + page_size())` is writable memory the caller owns.
pub unsafe fn tag_page(addr: usize, magic: u64) {
    (addr as *mut u64).write_volatile(page_tag(addr, magic));
    tag_flag(addr).store(1, Ordering::Release);
}

/// Clear the flag of the page at `addr`: its tag no longer counts (the page is about to be
/// released or faulted).
///
/// # Safety
/// As for [`tag_page`].
pub unsafe fn untag_page(addr: usize) {
    tag_flag(addr).store(0, Ordering::Release);
}

/// Whether the page at `addr` holds what its flag says: no flag, or the right tag.
///
/// # Safety
/// `[addr, addr + page_size())` is readable.
pub unsafe fn page_tag_intact(addr: usize, magic: u64) -> bool {
    let t = (addr as *const u64).read_volatile();
    let flag = ((addr + page_size() - 8) as *const u64).read_volatile();
    flag != 1 || t == page_tag(addr, magic)
}

/// The flag word of the page at `addr`.
///
/// # Safety
/// As for [`tag_page`].
unsafe fn tag_flag(addr: usize) -> &'static core::sync::atomic::AtomicU64 {
    &*((addr + page_size() - 8) as *const core::sync::atomic::AtomicU64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_unaligned_edges() {
        let mut buf = [0u8; 200];
        let base = buf.as_ptr() as usize;
        // SAFETY: all ranges are inside `buf`.
        unsafe {
            assert!(is_zero(base, 200));
            assert!(is_zero(base + 3, 0));
            for i in 0..200 {
                buf[i] = 1;
                let b = buf.as_ptr() as usize;
                assert!(!is_zero(b, 200), "{i}");
                assert!(!is_zero(b + i, 1));
                assert!(is_zero(b, i));
                assert!(is_zero(b + i + 1, 199 - i));
                buf[i] = 0;
            }
        }
        assert_eq!(base, buf.as_ptr() as usize);
    }
}
