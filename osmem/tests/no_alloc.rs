//! osmem must be callable from inside a `GlobalAlloc`: no operation may allocate from the heap.
//! A counting global allocator, armed only on this test's thread (the harness allocates on its
//! own threads), proves it across a full cycle of every operation, every strategy and knob.

mod common;

use common::{ADVICES, STRATEGIES};
use osmem::{Config, Reservation, Thp, UnusedAdvice};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` init: reading it from inside the allocator never allocates or registers a dtor.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if ARMED.with(|a| a.get()) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        System.realloc(p, l, n)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` armed and returns how many allocations it made.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    f();
    ARMED.with(|a| a.set(false));
    ALLOCS.load(Ordering::Relaxed) - before
}

fn full_cycle() {
    let ps = osmem::page_size();
    let huge = 2 << 20;
    let r = Reservation::reserve_aligned(4 * huge, huge).unwrap();
    let len = 4 * huge;
    r.map(0, len).unwrap();
    r.used(0, len).unwrap();
    unsafe { r.as_ptr().write_bytes(1, len) };
    r.hugepage(0, len).unwrap();
    let _ = r.collapse(0, huge); // may be EAGAIN/unsupported; it must not allocate either way
    r.nohugepage(0, len).unwrap();
    for (i, advice) in ADVICES.into_iter().enumerate() {
        let off = i * 16 * ps;
        let _ = unsafe { r.unused_with(off, 16 * ps, advice).unwrap() };
        r.used(off, 16 * ps).unwrap();
    }
    for (i, s) in STRATEGIES.into_iter().enumerate() {
        let off = huge + i * 16 * ps;
        let _ = unsafe { r.fault_with(off, 16 * ps, s).unwrap() };
        r.map(off, 16 * ps).unwrap();
        r.used(off, 16 * ps).unwrap();
    }
    // Bad input paths build their errors without allocating, Display included.
    let e = r.map(1, ps).unwrap_err();
    let mut buf = [0u8; 256];
    let mut w = Buf(&mut buf, 0);
    core::fmt::write(&mut w, format_args!("{e}")).unwrap();
    assert!(r.used(0, 0).is_err());
    let _ = r.state(0);
    let _ = r.bytes_in(osmem::State::Ready);
    // Residency queries, with every method that works here and a buffer that fills up.
    let mut runs = [osmem::PageRun::EMPTY; 4];
    for m in osmem::ResidencyMethod::ALL {
        let _ = r.residency_with(m, 0, len, &mut runs);
    }
    let _ = r.residency(0, len, &mut runs[..1]).unwrap();
    r.resident_bytes(0, len).unwrap();
    drop(r);

    let a = Reservation::alloc(8 * ps).unwrap();
    let _ = unsafe { a.unused(0, 8 * ps).unwrap() };
    drop(a);
    let _ = Reservation::reserve(ps).unwrap();
    let _ = osmem::stats();
    let _ = osmem::selected();
    let _ = osmem::probe();
    let _ = osmem::env_report();
    let _ = Config::parse(b"unused=free,bogus=1,thp=never");
}

struct Buf<'a>(&'a mut [u8], usize);
impl core::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.1 + s.len();
        self.0
            .get_mut(self.1..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.1 = end;
        Ok(())
    }
}

#[test]
fn no_operation_allocates() {
    // The first cycle also runs the one-time probe and the OSMEM parse: they must not allocate
    // either (an allocator's very first call may be the one that triggers them).
    assert_eq!(
        allocations(full_cycle),
        0,
        "first cycle (with probe and env parse)"
    );

    osmem::configure(
        Config::new()
            .harddecommit(true)
            .prefault(true)
            .unused(UnusedAdvice::Free)
            .thp(Thp::Never),
    );
    assert_eq!(
        allocations(full_cycle),
        0,
        "harddecommit + prefault + free + thp=never"
    );
    osmem::configure(Config::new());

    // The counter itself works: an allocation while armed is seen.
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![1u8; 10]))), 1);
}
