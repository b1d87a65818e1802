//! A language runtime's page heap under a memory limit, checked against the kernel.
//!
//! The runtime reserves address space for its heap, sets a memory limit (as Go's
//! `GOMEMLIMIT`, or from its container with `Heap::set_memory_limit_from_cgroup`), and starts
//! the background scavenger. Its mutator then allocates and writes spans while a collector
//! frees the garbage at the end of each cycle. Many times the limit goes through the heap,
//! and the memory the kernel holds for it must stay under the limit all along. When the
//! program's live data shrinks, the background scavenger brings the memory back down on its
//! own.
//!
//! The heap's resident memory is asked of the kernel with `mincore(2)` over the heap's range
//! after every allocation (the moment it can grow: a free never adds memory), never taken
//! from the heap's own figures; `HeapStats` is printed beside it. Any failed check panics, so
//! the example exits non-zero.
//!
//! Run it with `cargo run --release -p osmem-heap --example runtime_limit`.

use osmem_heap::{Heap, HeapConfig};
use std::time::{Duration, Instant};

/// Address space for the heap: far more than the limit, as a runtime reserves.
const MAX_HEAP: usize = 1 << 30;
/// The memory limit.
const LIMIT: usize = 64 << 20;
/// GC cycles to run.
const CYCLES: usize = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // With transparent huge pages for every mapping, the kernel backs a first touch with a
    // whole 2 MiB page, so resident memory would exceed what the heap holds: a runtime that
    // must keep a hard limit turns huge pages off for its heap (Go's GODEBUG=disablethp=1).
    if osmem::probe().thp == osmem::ThpMode::Always {
        osmem::configure(osmem::config().thp(osmem::Thp::Never));
    }
    let heap = Heap::create(HeapConfig::new(MAX_HEAP))?;
    heap.set_memory_limit(LIMIT);
    let scavenger = heap.start_scavenger(0.01)?;
    let ps = heap.page_size();
    let mut kernel = Mincore::default();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut live: Vec<(usize, usize)> = Vec::new();
    let mut live_bytes = 0usize;
    let (mut allocated, mut allocations, mut needzero, mut worst) = (0usize, 0usize, 0usize, 0);
    let started = Instant::now();

    for cycle in 0..CYCLES {
        // The live data each collection keeps varies from cycle to cycle (16-40 MiB), and the
        // mutator allocates up to the heap goal: twice the live data (GOGC=100), capped
        // under the limit as Go's memory limit caps it.
        let keep = (16 + next(&mut rng) % 25) << 20;
        let goal = (2 * keep).min(LIMIT / 10 * 9);
        while live_bytes < goal {
            let pages = 1 + next(&mut rng) % 64;
            let run = heap.alloc(pages)?;
            if run.needzero {
                // Pages freed and not released since may hold old objects; released pages
                // come back zeroed by the kernel and need no clearing.
                // SAFETY: the run is ours.
                unsafe { (run.addr as *mut u8).write_bytes(0, pages * ps) };
                needzero += 1;
            }
            // SAFETY: the run is ours: the mutator fills it with objects.
            unsafe { (run.addr as *mut u8).write_bytes(cycle as u8 + 1, pages * ps) };
            live.push((run.addr, pages));
            live_bytes += pages * ps;
            allocated += pages * ps;
            allocations += 1;
            worst = worst.max(kernel.resident(heap, cycle));
        }
        // The collection: random objects die until `keep` is left.
        while live_bytes > keep {
            let (addr, pages) = live.swap_remove(next(&mut rng) % live.len());
            heap.free(addr, pages)?;
            live_bytes -= pages * ps;
        }
        heap.cycle(goal);
    }
    let st = heap.stats();
    println!(
        "{CYCLES} GC cycles in {:?}: {} MiB allocated in {allocations} runs ({needzero} needed \
         zeroing) through a heap limited to {} MiB",
        started.elapsed(),
        allocated >> 20,
        LIMIT >> 20
    );
    println!(
        "  resident memory as the kernel reports it (mincore) peaked at {:.1} MiB; released: \
         {} MiB by the background scavenger, {} MiB synchronously on allocation",
        worst as f64 / (1 << 20) as f64,
        st.background_released_bytes >> 20,
        st.sync_released_bytes >> 20,
    );
    assert!(
        allocated > 8 * LIMIT,
        "the workload went well past the limit"
    );
    assert!(worst <= LIMIT);
    assert!(
        worst > LIMIT / 2,
        "the workload came near the limit: {worst}"
    );
    assert!(
        st.sync_released_bytes + st.background_released_bytes > 0,
        "the limit made the heap release memory: {st:?}"
    );

    // The program's live data shrinks to 4 MiB and stays there. The collection that finds
    // it reports its new heap goal; the background scavenger then releases the excess on its
    // own, down to its retain goal (Go's: in use × this goal / the last one, + 10%).
    while live_bytes > 4 << 20 {
        let (addr, pages) = live.pop().expect("live runs");
        heap.free(addr, pages)?;
        live_bytes -= pages * ps;
    }
    heap.cycle(2 * live_bytes);
    let target = live_bytes + live_bytes / 10 + (2 << 20);
    let t = Instant::now();
    let mut resident = kernel.resident(heap, CYCLES);
    while resident > target && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(10));
        resident = kernel.resident(heap, CYCLES);
    }
    println!(
        "live data down to {:.1} MiB: {:?} later the kernel holds {:.1} MiB of the heap",
        live_bytes as f64 / (1 << 20) as f64,
        t.elapsed(),
        resident as f64 / (1 << 20) as f64
    );
    assert!(
        resident <= target,
        "the scavenger brought the heap down: {resident} bytes resident, {:?}",
        heap.stats()
    );
    scavenger.stop();
    println!("{:#?}", heap.stats());
    for (addr, pages) in live.drain(..) {
        heap.free(addr, pages)?;
    }
    // SAFETY: the scavenger is stopped and nothing uses the heap or its memory any more.
    unsafe { Heap::destroy(heap) };
    println!("ok");
    Ok(())
}

/// Asks the kernel which pages of the heap are resident.
#[derive(Default)]
struct Mincore {
    /// One byte per page (bit 0: resident), in whole words.
    vec: Vec<u64>,
}

impl Mincore {
    /// The heap's resident memory as the kernel reports it (`mincore` over the part of its
    /// range the heap has grown into), checked against the limit.
    fn resident(&mut self, heap: &Heap, cycle: usize) -> usize {
        let ps = heap.page_size();
        // The heap grows from the bottom of its range: nothing above `mapped_bytes` is
        // mapped yet.
        let len = heap.stats().mapped_bytes;
        self.vec.clear();
        self.vec.resize((len / ps).div_ceil(8), 0);
        let start = heap.range().start as *mut libc::c_void;
        // SAFETY: the range is inside the heap's mapping (mincore reads no memory), and `vec`
        // has at least a byte per page.
        let r = unsafe { libc::mincore(start, len, self.vec.as_mut_ptr().cast()) };
        assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
        let pages: u32 = (self.vec.iter())
            .map(|w| (w & 0x0101_0101_0101_0101).count_ones())
            .sum();
        let resident = pages as usize * ps;
        assert!(
            resident <= LIMIT,
            "cycle {cycle}: {resident} bytes resident over the {LIMIT}-byte limit: {:?}",
            heap.stats()
        );
        resident
    }
}

/// A xorshift step: the workload is the same on every run.
fn next(s: &mut u64) -> usize {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s as usize
}
