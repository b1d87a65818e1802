//! Goals against the kernel's view: under a memory limit, with a live size below it, the
//! heap's resident memory (mincore over its whole range) never exceeds the limit, sampled
//! after every operation; the retain goal and `scavenge` bring a shrunken heap down.

use osmem_heap::{Heap, HeapConfig};
use osmem_testkit::resident_pages;

fn rng(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn resident_memory_stays_under_the_limit() {
    let ps = osmem::page_size();
    let limit = 32 << 20;
    let heap = Heap::create(HeapConfig::new(256 << 20)).unwrap();
    heap.set_memory_limit(limit);
    let range = heap.range();
    let mut live: Vec<(usize, usize)> = Vec::new();
    let mut live_pages = 0;
    let mut s = 42;
    let mut worst = 0;
    for step in 0..3000 {
        let grow = rng(&mut s) % 3 != 0 && live_pages < 24 * 256; // live ≤ 24 MiB
        if grow || live.is_empty() {
            let n = 1 + (rng(&mut s) % 300) as usize;
            let r = heap.alloc(n).unwrap();
            // SAFETY: our run.
            unsafe { (r.addr as *mut u8).write_bytes(1, n * ps) };
            live.push((r.addr, n));
            live_pages += n;
        } else {
            let k = (rng(&mut s) as usize) % live.len();
            let (a, n) = live.swap_remove(k);
            heap.free(a, n).unwrap();
            live_pages -= n;
        }
        let resident = resident_pages(range.start, range.len()) * ps;
        worst = worst.max(resident);
        assert!(
            resident <= limit,
            "step {step}: {resident} bytes resident over a {limit}-byte limit ({:?})",
            heap.stats()
        );
    }
    let st = heap.stats();
    assert!(
        st.sync_released_bytes > 0,
        "the limit made it release: {st:?}"
    );
    assert!(
        worst > limit / 2,
        "the workload came near the limit: {worst}"
    );
    // SAFETY: done.
    unsafe { Heap::destroy(heap) };
}

#[test]
fn the_retain_goal_brings_a_shrunken_heap_down() {
    let ps = osmem::page_size();
    let heap = Heap::create(HeapConfig::new(256 << 20)).unwrap();
    let range = heap.range();
    // A 64 MiB burst, then 4 MiB stays live.
    let runs: Vec<_> = (0..64).map(|_| heap.alloc(256).unwrap()).collect();
    for r in &runs {
        // SAFETY: our runs.
        unsafe { (r.addr as *mut u8).write_bytes(1, r.pages * ps) };
    }
    for r in &runs[4..] {
        heap.free(r.addr, r.pages).unwrap();
    }
    let before = resident_pages(range.start, range.len()) * ps;
    assert_eq!(before, 64 << 20);
    // Retain goal: in use (4 MiB) + 10%, in pages (Go's integer arithmetic).
    let (held, in_use) = ((64 << 20) / ps, (4 << 20) / ps);
    assert_eq!(
        heap.scavenge_goal(),
        (held - in_use - in_use / 100 * 10) * ps
    );
    while heap.scavenge(1 << 20).bytes > 0 {}
    let after = resident_pages(range.start, range.len()) * ps;
    assert!(after <= (4 << 20) + (4 << 20) / 10, "{after}");
    assert!(after >= 4 << 20, "live memory kept: {after}");
    assert_eq!(heap.scavenge_goal(), 0);
    // A GC-driven runtime: the heap goal halves, so the retain goal (half the in-use size,
    // +10%) is under the in-use size: every free page must go, and no more (in-use pages are
    // never released).
    // (Whole free huge pages went out whole, past the goal: make 100 free, unreleased pages
    // in a chunk that is partly released.)
    let r = heap.alloc(100).unwrap();
    // SAFETY: our run.
    unsafe { (r.addr as *mut u8).write_bytes(2, 100 * ps) };
    heap.free(r.addr, 100).unwrap();
    heap.cycle(8 << 20);
    heap.cycle(4 << 20);
    let free = heap.stats().free_bytes - heap.stats().released_bytes;
    assert_eq!(free, 100 * ps);
    assert_eq!(heap.scavenge_goal(), free);
    assert_eq!(heap.scavenge(usize::MAX).bytes, free);
    assert_eq!(heap.scavenge_goal(), 0);
    assert_eq!(resident_pages(range.start, range.len()) * ps, 4 << 20);
    // SAFETY: done.
    unsafe { Heap::destroy(heap) };
}

/// The cgroup limit osmem-heap reads equals what the files say, read here independently.
#[test]
fn the_cgroup_limit_is_what_the_files_say() {
    let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut want: Option<usize> = None;
    let mut take = |f: String| {
        if let Ok(s) = std::fs::read_to_string(&f) {
            if let Ok(v) = s.trim().parse::<u64>() {
                if v < 1 << 62 {
                    want = Some(want.map_or(v as usize, |w| w.min(v as usize)));
                }
            }
        }
    };
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (id, ctl, path) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let mut ancestors = vec![path.trim_end_matches('/').to_string()];
        while let Some(i) = ancestors.last().unwrap().rfind('/') {
            let up = ancestors.last().unwrap()[..i].to_string();
            ancestors.push(up.clone());
            if up.is_empty() {
                break;
            }
        }
        for p in ancestors {
            if id == "0" && ctl.is_empty() {
                for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    take(format!("{root}{p}/memory.max"));
                    take(format!("{root}{p}/memory.high"));
                }
            } else if ctl.split(',').any(|c| c == "memory") {
                take(format!("/sys/fs/cgroup/memory{p}/memory.limit_in_bytes"));
            }
        }
    }
    assert_eq!(osmem_heap::cgroup_memory_limit().map(|l| l.bytes), want);
}
