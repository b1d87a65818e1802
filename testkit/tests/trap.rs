//! The "fail N times, then succeed" injector against the real kernel (x86_64 only).
//!
//! Every check runs in a forked child (the filter is permanent there) and is reported back as
//! numbers; the parent asserts. The child side is allocation-free.
#![cfg(target_arch = "x86_64")]

use osmem_testkit::{
    build_filter, build_trap_filter, errno, in_child_report, in_child_trapped, resident_pages,
    trap_counts, ChildExit, Inject, Trap, TrapCounts,
};

fn ps() -> usize {
    osmem_testkit::page_size()
}

/// `-errno` of a failed libc call, else its return value.
fn rc(r: libc::c_int) -> i64 {
    if r == 0 {
        0
    } else {
        -(errno() as i64)
    }
}

fn counts(v: &[u64]) -> TrapCounts {
    TrapCounts {
        trapped: v[0] as u32,
        failed: v[1] as u32,
        passed: v[2] as u32,
    }
}

fn push_counts(r: &mut osmem_testkit::Report, i: usize) {
    let c = trap_counts(i);
    r.push(c.trapped as u64);
    r.push(c.failed as u64);
    r.push(c.passed as u64);
}

/// madvise(DONTNEED) fails once with EAGAIN (the page stays, data intact), then really
/// releases it; another advice is never trapped.
#[test]
fn madvise_dontneed_eagain_once_then_releases() {
    let f = build_trap_filter(&[Trap::new(libc::SYS_madvise).when(2, libc::MADV_DONTNEED as u32)]);
    let (exit, buf) = in_child_trapped(&f, |r| {
        let len = 4 * ps();
        let Some(a) = osmem_testkit::map_rw(len) else {
            return 10;
        };
        let p = a as *mut libc::c_void;
        unsafe { core::ptr::write_bytes(p as *mut u8, 0x5A, len) };
        r.push(resident_pages(a, len) as u64); // 0: 4
        r.push_i64(rc(unsafe { libc::madvise(p, len, libc::MADV_DONTNEED) })); // 1: -EAGAIN
        r.push(resident_pages(a, len) as u64); // 2: still 4: the kernel never saw the call
        r.push(unsafe { *(p as *const u8).add(len - 1) } as u64); // 3: 0x5A
        r.push_i64(rc(unsafe { libc::madvise(p, len, libc::MADV_DONTNEED) })); // 4: 0
        r.push(resident_pages(a, len) as u64); // 5: 0: really released
        r.push(unsafe { osmem_testkit::is_zero(a, len) } as u64); // 6: reads zero
        unsafe { core::ptr::write_bytes(p as *mut u8, 0x11, len) };
        // MADV_FREE does not match the rule: straight to the kernel, not trapped.
        r.push_i64(rc(unsafe { libc::madvise(p, len, libc::MADV_FREE) })); // 7: 0
        push_counts(r, 0); // 8..11
        0
    });
    assert_eq!(exit, ChildExit::Code(0), "{buf:?}");
    let v = buf.as_slice();
    assert_eq!(v[0], 4, "setup: every page resident");
    assert_eq!(
        buf.get_i64(1),
        Some(-(libc::EAGAIN as i64)),
        "first call fails"
    );
    assert_eq!(v[2], 4, "the failed call released nothing");
    assert_eq!(v[3], 0x5A, "data intact after the failed call");
    assert_eq!(buf.get_i64(4), Some(0), "second call succeeds");
    assert_eq!(v[5], 0, "and the kernel released the pages");
    assert_eq!(v[6], 1, "which read as zero");
    assert_eq!(buf.get_i64(7), Some(0), "MADV_FREE untouched by the rule");
    assert_eq!(
        counts(&v[8..11]),
        TrapCounts {
            trapped: 2,
            failed: 1,
            passed: 1
        }
    );
}

/// mmap(MAP_ANONYMOUS) with fd -1 is trapped; the handler re-issues with fd -2, which the
/// kernel accepts for anonymous mappings (checked first without any filter), and the result
/// is a real, usable mapping. A file-backed mmap (fd != -1) is not trapped.
#[test]
fn mmap_anonymous_fails_twice_then_maps() {
    let f = build_trap_filter(&[Trap::new(libc::SYS_mmap)
        .when(2, libc::PROT_NONE as u32)
        .fail_first(2)
        .errno(libc::ENOMEM)]);
    let (exit, buf) = in_child_report(|r| {
        let len = 2 * ps();
        let anon = |fd: i64| unsafe {
            libc::syscall(
                libc::SYS_mmap,
                0usize,
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                fd,
                0usize,
            )
        };
        // The kernel itself: fd -2 is ignored for MAP_ANONYMOUS.
        let p = anon(-2);
        r.push((p > 0) as u64); // 0
        if p > 0 {
            unsafe { libc::munmap(p as *mut libc::c_void, len) };
        }
        osmem_testkit::apply_trap_filter_in_child(&f);
        let mmap = || unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        for _ in 0..2 {
            let p = mmap();
            r.push_i64(if p == libc::MAP_FAILED {
                -(errno() as i64)
            } else {
                0
            }); // 1, 2: -ENOMEM
        }
        let p = mmap();
        r.push((p != libc::MAP_FAILED) as u64); // 3
        let a = p as usize;
        // The mapping exists with the requested protection.
        r.push(osmem_testkit::vma_at(a).is_some_and(|v| &v.perms == b"---p") as u64); // 4
        r.push(rc(unsafe { libc::mprotect(p, len, libc::PROT_READ | libc::PROT_WRITE) }) as u64); // 5
        unsafe { (p as *mut u8).write_volatile(7) };
        r.push(unsafe { (p as *const u8).read_volatile() } as u64); // 6: 7
                                                                    // A non-anonymous-fd call (fd = 0, which fails for other reasons) is not trapped.
        let before = trap_counts(0).trapped;
        let q = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE,
                0,
                0,
            )
        };
        if q != libc::MAP_FAILED {
            unsafe { libc::munmap(q, len) };
        }
        r.push((trap_counts(0).trapped - before) as u64); // 7: 0
        push_counts(r, 0); // 8..11
        0
    });
    assert_eq!(exit, ChildExit::Code(0), "{buf:?}");
    let v = buf.as_slice();
    assert_eq!(v[0], 1, "this kernel accepts fd -2 for MAP_ANONYMOUS");
    assert_eq!(buf.get_i64(1), Some(-(libc::ENOMEM as i64)));
    assert_eq!(buf.get_i64(2), Some(-(libc::ENOMEM as i64)));
    assert_eq!(v[3], 1, "third call maps");
    assert_eq!(v[4], 1, "a real PROT_NONE mapping");
    assert_eq!(v[5], 0);
    assert_eq!(v[6], 7, "usable after mprotect");
    assert_eq!(v[7], 0, "fd != -1 is not trapped");
    assert_eq!(
        counts(&v[8..11]),
        TrapCounts {
            trapped: 3,
            failed: 2,
            passed: 1
        }
    );
}

/// Stacked with an errno filter: the trap decides first (it takes precedence), the re-issued
/// call then meets the errno filter like any other call.
#[test]
fn stacks_with_errno_filter() {
    let errf = build_filter(&[Inject::SyscallArg {
        nr: libc::SYS_mprotect,
        arg: 2,
        value: libc::PROT_NONE as u32,
        errno: libc::EPERM,
    }]);
    let f = build_trap_filter(&[Trap::new(libc::SYS_mprotect)]);
    let (exit, buf) = in_child_report(|r| {
        let len = ps();
        let Some(a) = osmem_testkit::map_rw(len) else {
            return 10;
        };
        let p = a as *mut libc::c_void;
        osmem_testkit::apply_filter_in_child(&errf);
        osmem_testkit::apply_trap_filter_in_child(&f);
        r.push_i64(rc(unsafe { libc::mprotect(p, len, libc::PROT_READ) })); // 0: -EAGAIN (trap)
        r.push_i64(rc(unsafe { libc::mprotect(p, len, libc::PROT_NONE) })); // 1: -EPERM (errno filter)
        r.push_i64(rc(unsafe { libc::mprotect(p, len, libc::PROT_READ) })); // 2: 0
        r.push(osmem_testkit::vma_at(p as usize).is_some_and(|v| &v.perms == b"r--p") as u64); // 3
        push_counts(r, 0); // 4..7
        0
    });
    assert_eq!(exit, ChildExit::Code(0), "{buf:?}");
    let v = buf.as_slice();
    assert_eq!(buf.get_i64(0), Some(-(libc::EAGAIN as i64)));
    assert_eq!(buf.get_i64(1), Some(-(libc::EPERM as i64)));
    assert_eq!(buf.get_i64(2), Some(0));
    assert_eq!(v[3], 1);
    assert_eq!(
        counts(&v[4..7]),
        TrapCounts {
            trapped: 3,
            failed: 1,
            passed: 2
        }
    );
}
