//! The whole test binary allocates through a small allocator built on osmem-heap (every
//! allocation rounded up to whole pages): proof that creating a heap, allocating, freeing and
//! releasing never allocate themselves (a recursive allocation would deadlock or overflow
//! the stack), from several threads, with std's collections on top.

use osmem_heap::{Heap, HeapConfig};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

struct PageAlloc;

static HEAP: AtomicPtr<Heap> = AtomicPtr::new(std::ptr::null_mut());
static MADE: AtomicUsize = AtomicUsize::new(0);

fn heap() -> &'static Heap {
    let p = HEAP.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: set once below, never destroyed.
        return unsafe { &*p };
    }
    // First use: make it (Heap::create must not allocate, or this recurses). Losers of a
    // race destroy theirs.
    let h = Heap::create(HeapConfig::new(1 << 30)).expect("a heap");
    match HEAP.compare_exchange(
        std::ptr::null_mut(),
        h as *const Heap as *mut Heap,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => {
            MADE.fetch_add(1, Ordering::Relaxed);
            h
        }
        Err(winner) => {
            // SAFETY: nobody else saw `h`.
            unsafe { Heap::destroy(h) };
            // SAFETY: the winner's heap, never destroyed.
            unsafe { &*winner }
        }
    }
}

fn pages(l: Layout) -> usize {
    let ps = 4096;
    l.size().max(1).div_ceil(ps).max(l.align().div_ceil(ps))
}

// SAFETY: page runs are page-aligned (alignments up to the page size), and exclusive until
// freed; larger alignments are refused (null).
unsafe impl GlobalAlloc for PageAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.align() > 4096 {
            return std::ptr::null_mut();
        }
        match heap().alloc(pages(l)) {
            Ok(r) => r.addr as *mut u8,
            Err(_) => std::ptr::null_mut(),
        }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        heap()
            .free(p as usize, pages(l))
            .expect("a run we handed out");
    }
}

#[global_allocator]
static A: PageAlloc = PageAlloc;

#[test]
fn std_runs_on_a_heap_made_of_osmem_heap_pages() {
    // A deadlock here (a spin lock never released) must fail the test, not hang CI: the
    // process dies of SIGALRM after two minutes (the test takes well under a second).
    // SAFETY: alarm has no preconditions.
    unsafe { libc::alarm(120) };
    assert_eq!(
        osmem::page_size(),
        4096,
        "this test's allocator assumes 4 KiB pages"
    );
    let h = heap();
    assert!(
        h.stats().in_use_bytes > 0,
        "the test harness itself allocated through it"
    );
    // Starting the background scavenger spawns a thread, which allocates through this very
    // heap: it must not deadlock.
    let scavenger = h.start_scavenger(0.01).expect("a scavenger thread");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut m = std::collections::HashMap::new();
                for k in 0..2000u64 {
                    m.insert(k, vec![t as u8; (k % 97) as usize * 31]);
                    if k % 3 == 0 {
                        m.remove(&(k / 2));
                    }
                }
                let s: String = (0..500)
                    .map(|i| char::from(b'a' + (i % 26) as u8))
                    .collect();
                if t == 0 {
                    let _ = heap().release_all();
                }
                (m.len(), s.len())
            })
        })
        .collect();
    for t in threads {
        let (n, l) = t.join().unwrap();
        assert!(n > 0 && l == 500);
    }
    scavenger.stop();
    let before = h.stats();
    let released = h.release_all();
    let after = h.stats();
    assert_eq!(
        after.free_bytes, after.released_bytes,
        "every free page released"
    );
    assert!(released.bytes as u64 + before.released_bytes as u64 >= after.released_bytes as u64);
    assert_eq!(MADE.load(Ordering::Relaxed), 1);
}
