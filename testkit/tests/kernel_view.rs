//! Tests of the testkit against the real kernel.
//!
//! This binary's global allocator terminates any forked child that allocates
//! (exit code [`ALLOC_IN_CHILD`]), so every child-side path exercised here is
//! checked to be allocation-free, under `cargo test` (many threads) as well as
//! under nextest (one process per test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI32, Ordering};

use osmem_testkit::*;

/// Exit code of a child that allocated.
const ALLOC_IN_CHILD: i32 = 113;

/// Pid of the test process; 0 until the first test records it.
static PARENT: AtomicI32 = AtomicI32::new(0);

struct NoAllocInChild;

impl NoAllocInChild {
    fn check() {
        let parent = PARENT.load(Ordering::Relaxed);
        // SAFETY: getpid/_exit have no preconditions.
        if parent != 0 && unsafe { libc::getpid() } != parent {
            eprint_bytes(b"kernel_view: allocation in a forked child\n");
            unsafe { libc::_exit(ALLOC_IN_CHILD) };
        }
    }
}

// SAFETY: forwards to the system allocator.
unsafe impl GlobalAlloc for NoAllocInChild {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check();
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::check();
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: NoAllocInChild = NoAllocInChild;

fn setup() {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let _ = PARENT.compare_exchange(0, pid, Ordering::Relaxed, Ordering::Relaxed);
}

fn ps() -> usize {
    page_size()
}

fn kb(pages: usize) -> u64 {
    (pages * ps() / 1024) as u64
}

/// `pages` private anonymous RW pages, fenced by a PROT_NONE page on each
/// side so the kernel cannot merge the VMA with a neighbour, and marked
/// MADV_NOHUGEPAGE so (m)THP cannot fault in more than one page at a time.
struct Isolated {
    outer: usize,
    base: usize,
    pages: usize,
}

impl Isolated {
    fn new(pages: usize) -> Isolated {
        let ps = ps();
        // SAFETY: fresh anonymous mappings; MAP_FIXED only inside our reservation.
        unsafe {
            let outer = libc::mmap(
                std::ptr::null_mut(),
                (pages + 2) * ps,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            assert_ne!(outer, libc::MAP_FAILED);
            let outer = outer as usize;
            let base = outer + ps;
            let p = libc::mmap(
                base as *mut _,
                pages * ps,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            assert_eq!(p as usize, base);
            assert_eq!(libc::madvise(p, pages * ps, libc::MADV_NOHUGEPAGE), 0);
            Isolated { outer, base, pages }
        }
    }

    fn page(&self, i: usize) -> usize {
        self.base + i * ps()
    }

    fn end(&self) -> usize {
        self.page(self.pages)
    }

    fn write(&self, i: usize, v: u8) {
        // SAFETY: page `i` is ours and writable (callers make sure).
        unsafe { std::ptr::write_volatile(self.page(i) as *mut u8, v) }
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        // SAFETY: unmapping our own reservation.
        unsafe { libc::munmap(self.outer as *mut _, (self.pages + 2) * ps()) };
    }
}

fn errno_after<F: FnOnce() -> i32>(f: F) -> (i32, i32) {
    let rc = f();
    (rc, errno())
}

#[test]
fn residency_smaps_and_maps_agree_with_touches() {
    setup();
    let m = Isolated::new(16);
    for i in [0, 3, 7, 8, 15] {
        m.write(i, 1);
    }
    assert_eq!(resident_pages(m.base, 16 * ps()), 5);
    assert_eq!(resident_pages(m.page(3), 1), 1);
    assert_eq!(resident_pages(m.page(4), ps()), 0);
    assert_eq!(resident_pages(m.page(3) + 17, ps()), 1, "unaligned start");

    let v = vma_at(m.page(5)).expect("mapped");
    assert_eq!((v.start, v.end), (m.base, m.end()));
    assert_eq!(v.perms_str(), "rw-p");
    assert_eq!(vma_at(m.base - 1).unwrap().perms_str(), "---p");
    assert_eq!(vmas_in(m.base, m.end()), 1);

    let e = smaps_at(m.base).expect("mapped");
    assert_eq!(e.vma, v);
    assert_eq!(e.size_kb, kb(16));
    assert_eq!(e.rss_kb, kb(5));
    assert_eq!(e.anon_kb, kb(5));
    assert_eq!(e.lazy_free_kb, 0);
    assert_eq!(e.anon_huge_kb, 0);
    assert!(e.vm_flags.contains("rd") && e.vm_flags.contains("wr"));
    assert!(e.vm_flags.contains("nh"), "{:?}", e.vm_flags);

    let s = smaps_sum(m.base, m.end());
    assert_eq!((s.vmas, s.size_kb, s.rss_kb), (1, kb(16), kb(5)));
    // The sum includes the fence VMAs when the range touches them.
    assert_eq!(smaps_sum(m.base - 1, m.end() + 1).vmas, 3);

    // MADV_FREE shows up as LazyFree.
    // SAFETY: our own mapping.
    assert_eq!(
        unsafe { libc::madvise(m.page(0) as *mut _, ps(), libc::MADV_FREE) },
        0
    );
    assert_eq!(smaps_at(m.base).unwrap().lazy_free_kb, kb(1));
    // SAFETY: our own mapping.
    assert_eq!(
        unsafe { libc::madvise(m.base as *mut _, 16 * ps(), libc::MADV_FREE) },
        0
    );
    let e = smaps_at(m.base).unwrap();
    assert_eq!((e.lazy_free_kb, e.rss_kb), (kb(5), kb(5)));

    // The same views from inside a child (checked allocation-free).
    let (exit, r) = in_child_report(|r| {
        r.push(resident_pages(m.base, 16 * ps()) as u64);
        r.push(smaps_at(m.base).map_or(0, |e| e.rss_kb));
        r.push(vma_at(m.base).map_or(0, |v| v.end as u64));
        r.push(vmas_in(m.base, m.end()) as u64);
        r.push(maps_line_count() as u64);
        r.push(smaps_sum(m.base, m.end()).size_kb);
        0
    });
    assert_eq!(exit, ChildExit::Code(0));
    assert_eq!(r.len(), 6);
    assert_eq!(r[0], 5);
    assert_eq!(r[1], kb(5));
    assert_eq!(r[2], m.end() as u64);
    assert_eq!(r[3], 1);
    assert!(r[4] > 3);
    assert_eq!(r[5], kb(16));
}

#[test]
fn mprotect_split_and_faults() {
    setup();
    let m = Isolated::new(16);
    for i in [0, 3, 8] {
        m.write(i, 1);
    }
    let mid = m.page(8);
    // SAFETY: our own mapping.
    assert_eq!(
        unsafe { libc::mprotect(mid as *mut _, ps(), libc::PROT_NONE) },
        0
    );
    assert_eq!(vmas_in(m.base, m.end()), 3);
    let v = vma_at(mid).unwrap();
    assert_eq!((v.start, v.end, v.perms_str()), (mid, mid + ps(), "---p"));
    assert_eq!(vma_at(m.page(9)).unwrap().perms_str(), "rw-p");
    // mprotect keeps pages resident.
    assert_eq!(resident_pages(m.base, 16 * ps()), 3);

    assert_eq!(
        touch_in_child(mid, false),
        Touch::Segv {
            si_code: SEGV_ACCERR
        }
    );
    assert_eq!(
        touch_in_child(mid, true),
        Touch::Segv {
            si_code: SEGV_ACCERR
        }
    );
    assert_eq!(touch_in_child(m.page(0), true), Touch::Ok);
    assert_eq!(touch_in_child(m.page(0), false), Touch::Ok);

    // Read-only page: reads pass, writes fault.
    // SAFETY: our own mapping.
    assert_eq!(
        unsafe { libc::mprotect(m.page(1) as *mut _, ps(), libc::PROT_READ) },
        0
    );
    assert_eq!(touch_in_child(m.page(1), false), Touch::Ok);
    assert_eq!(
        touch_in_child(m.page(1), true),
        Touch::Segv {
            si_code: SEGV_ACCERR
        }
    );

    // Unmapped page: MAPERR; the hole is not counted as resident.
    let hole = m.page(15);
    // SAFETY: our own mapping.
    assert_eq!(unsafe { libc::munmap(hole as *mut _, ps()) }, 0);
    assert!(vma_at(hole).is_none());
    assert_eq!(
        touch_in_child(hole, false),
        Touch::Segv {
            si_code: SEGV_MAPERR
        }
    );
    assert_eq!(resident_pages(m.base, 16 * ps()), 3);
    assert_eq!(vmas_in(m.base, m.end()), 5);

    // Probing in the child leaves the parent's residency alone.
    assert_eq!(touch_in_child(m.page(5), false), Touch::Ok);
    assert_eq!(touch_in_child(m.page(6), true), Touch::Ok);
    assert_eq!(resident_pages(m.page(5), 2 * ps()), 0);

    // touch_in_child also works from inside a child (it forks a grandchild).
    let exit = in_child(|| match touch_in_child(mid, false) {
        Touch::Segv { si_code } => si_code,
        _ => 0,
    });
    assert_eq!(exit, ChildExit::Code(SEGV_ACCERR));
}

#[test]
fn sigbus_past_end_of_file() {
    setup();
    // A one-byte memfd mapped over two pages: the second page is past EOF.
    // SAFETY: plain syscalls on our own fd and mapping.
    unsafe {
        let fd = libc::memfd_create(c"testkit".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, 1), 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            2 * ps(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let p = p as usize;
        assert_eq!(touch_in_child(p, false), Touch::Ok);
        assert_eq!(
            touch_in_child(p + ps(), false),
            Touch::Bus {
                si_code: BUS_ADRERR
            }
        );
        libc::munmap(p as *mut _, 2 * ps());
        libc::close(fd);
    }
}

#[test]
fn is_zero_and_child_residency() {
    setup();
    let m = Isolated::new(8);
    m.write(2, 0);
    m.write(5, 9);
    // SAFETY: the mapping is readable.
    let (exit, r) = in_child_report(|r| unsafe {
        r.push(is_zero(m.base, 5 * ps()) as u64);
        r.push(is_zero(m.base, 8 * ps()) as u64);
        r.push(is_zero(m.page(5) + 1, ps() - 1) as u64);
        r.push(is_zero(m.page(6), 2 * ps()) as u64);
        // Read faults in the child mapped zero pages there: mincore sees
        // them, smaps Rss does not.
        r.push(resident_pages(m.base, 8 * ps()) as u64);
        r.push(smaps_at(m.base).map_or(u64::MAX, |e| e.rss_kb));
        0
    });
    assert_eq!(exit, ChildExit::Code(0));
    assert_eq!(r.as_slice(), &[1, 0, 1, 1, 8, kb(2)]);
    // The parent still has only the two written pages.
    assert_eq!(resident_pages(m.base, 8 * ps()), 2);
}

#[test]
fn seccomp_fails_only_the_chosen_madvise() {
    setup();
    let m = Isolated::new(4);
    m.write(0, 1);
    let prog = build_filter(&[Inject::Madvise {
        advice: libc::MADV_DONTNEED,
        errno: libc::ENOSYS,
    }]);
    let (exit, r) = in_child_report(|r| {
        apply_filter_in_child(&prog);
        let page = m.base as *mut libc::c_void;
        // SAFETY: our own mapping.
        let (rc, e) = errno_after(|| unsafe { libc::madvise(page, ps(), libc::MADV_DONTNEED) });
        r.push_i64(rc as i64);
        r.push_i64(e as i64);
        // SAFETY: our own mapping.
        let rc = unsafe { libc::madvise(page, ps(), libc::MADV_WILLNEED) };
        r.push_i64(rc as i64);
        // The failed DONTNEED really did nothing: the page is still there.
        r.push(resident_pages(m.base, ps()) as u64);
        0
    });
    assert_eq!(exit, ChildExit::Code(0));
    assert_eq!(r.get_i64(0), Some(-1));
    assert_eq!(r.get_i64(1), Some(libc::ENOSYS as i64));
    assert_eq!(r.get_i64(2), Some(0));
    assert_eq!(r.get(3), Some(1));

    // The filter stayed in the child.
    // SAFETY: our own mapping.
    assert_eq!(
        unsafe { libc::madvise(m.base as *mut _, ps(), libc::MADV_DONTNEED) },
        0
    );
    assert_eq!(resident_pages(m.base, ps()), 0);
}

#[test]
fn seccomp_several_rules_first_match_wins() {
    setup();
    let m = Isolated::new(4);
    let prog = build_filter(&[
        Inject::Madvise {
            advice: libc::MADV_DONTNEED,
            errno: libc::ENOSYS,
        },
        Inject::AnyMadvise { errno: libc::EIO },
        Inject::SyscallArg {
            nr: libc::SYS_mprotect,
            arg: 2,
            value: libc::PROT_NONE as u32,
            errno: libc::ENOMEM,
        },
        Inject::Syscall {
            nr: libc::SYS_mlock,
            errno: libc::EAGAIN,
        },
    ]);
    let (exit, r) = in_child_filtered(&prog, |r| {
        let p = m.base as *mut libc::c_void;
        let n = ps();
        // SAFETY: our own mapping.
        unsafe {
            for (rc, e) in [
                errno_after(|| libc::madvise(p, n, libc::MADV_DONTNEED)),
                errno_after(|| libc::madvise(p, n, libc::MADV_WILLNEED)),
                errno_after(|| libc::mprotect(p, n, libc::PROT_NONE)),
                errno_after(|| libc::mlock(p, n)),
            ] {
                r.push_i64(rc as i64);
                r.push_i64(e as i64);
            }
            r.push_i64(libc::mprotect(p, n, libc::PROT_READ) as i64);
        }
        0
    });
    assert_eq!(exit, ChildExit::Code(0));
    let got: Vec<i64> = r.as_slice().iter().map(|&v| v as i64).collect();
    let want = [
        -1,
        libc::ENOSYS,
        -1,
        libc::EIO,
        -1,
        libc::ENOMEM,
        -1,
        libc::EAGAIN,
        0,
    ]
    .map(|v| v as i64);
    assert_eq!(got, want);

    // An empty rule set allows everything.
    let allow_all = build_filter(&[]);
    let (exit, r) = in_child_filtered(&allow_all, |r| {
        // SAFETY: our own mapping.
        r.push_i64(unsafe { libc::madvise(m.base as *mut _, ps(), libc::MADV_DONTNEED) } as i64);
        0
    });
    assert_eq!((exit, r.get_i64(0)), (ChildExit::Code(0), Some(0)));

    // A program that cannot be installed ends the child with FILTER_FAILED_EXIT.
    let exit = in_child(|| {
        apply_filter_in_child(&[]);
        0
    });
    assert_eq!(exit, ChildExit::Code(FILTER_FAILED_EXIT));
}

#[test]
fn report_round_trip_and_exit_decoding() {
    setup();
    let (exit, r) = in_child_report(|r| {
        for i in 0..REPORT_CAP as u64 {
            // No assert!/panic in a child: report failure through the code.
            if !r.push(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
                return 2;
            }
        }
        // Full: further values are refused.
        if r.push(1) || r.len() != REPORT_CAP {
            return 1;
        }
        7
    });
    assert_eq!(exit, ChildExit::Code(7));
    assert_eq!(r.len(), REPORT_CAP);
    for i in 0..REPORT_CAP {
        assert_eq!(
            r.get(i),
            Some((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        );
    }
    assert_eq!(r.get(REPORT_CAP), None);

    // Values pushed before a fatal signal still arrive.
    let (exit, r) = in_child_report(|r| {
        r.push(u64::MAX);
        r.push_i64(-5);
        // SAFETY: kills only the child.
        unsafe { libc::raise(libc::SIGKILL) };
        0
    });
    assert_eq!(exit, ChildExit::Signal(libc::SIGKILL));
    assert_eq!(r.as_slice(), &[u64::MAX, -5i64 as u64]);
    assert_eq!(r.get_i64(1), Some(-5));

    let (exit, r) = in_child_report(|_| 0);
    assert!(exit.is_success() && r.is_empty());

    assert_eq!(in_child(|| 42), ChildExit::Code(42));
    assert_eq!(in_child(|| 42).code(), Some(42));
    // SAFETY: signals only the child.
    let exit = in_child(|| unsafe { libc::raise(libc::SIGTERM) });
    assert_eq!(exit, ChildExit::Signal(libc::SIGTERM));
    assert_eq!(exit.code(), None);
}

#[test]
fn allocation_in_child_is_caught_by_this_harness() {
    // Proves the guard allocator above works, i.e. that the other tests
    // would notice an allocating child.
    setup();
    let exit = in_child(|| {
        let v = std::hint::black_box(vec![1u8; 100]);
        v.len() as i32
    });
    assert_eq!(exit, ChildExit::Code(ALLOC_IN_CHILD));
}
