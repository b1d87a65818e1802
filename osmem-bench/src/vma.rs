//! What an operation leaves in the kernel, read from the kernel's own view: VMAs added
//! (`/proc/self/maps`) and pages still resident (`mincore`).

use crate::raw::{self, MADV_POPULATE_WRITE};
use crate::{Flavour, Op, OpBench};
use osmem::{FaultHow, Reservation};
use std::time::{Duration, Instant};

/// The result of [`vma_growth`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmaGrowth {
    /// The fault strategy.
    pub op: Op,
    /// The mapping's size, bytes.
    pub region: usize,
    /// The chunk size, bytes.
    pub chunk: usize,
    /// Chunks faulted (every other one).
    pub faults: usize,
    /// VMAs of the mapping before.
    pub vmas_before: usize,
    /// VMAs of the mapping with every other chunk faulted.
    pub vmas_after: usize,
    /// Time of all the faults together.
    pub elapsed: Duration,
}

impl VmaGrowth {
    /// VMAs added.
    pub fn added(&self) -> usize {
        self.vmas_after.saturating_sub(self.vmas_before)
    }
}

/// Fault every other `chunk` of a populated `region`-byte mapping with the fault `op`
/// (through osmem), the chunks between staying Ready — a heap whose free spans are made to
/// trap — and count the mapping's VMAs before and after in `/proc/self/maps`. The faulted
/// chunks are the odd ones: a strategy that changes the protection splits its VMA twice per
/// chunk (once for the last, which ends where the mapping ends); guard markers never split. With the default
/// `vm.max_map_count` (65530) a process runs out of VMAs after ~32k such holes.
///
/// # Panics
/// If `op` is not a fault op or unsupported, if the mapping cannot be made, or if osmem took
/// another link of its chain than `op` names.
///
/// ```no_run
/// let g = osmem_bench::vma_growth(osmem_bench::Op::FaultProtect, 64 << 20, 64 << 10);
/// assert_eq!(g.added(), 2 * g.faults - 1);
/// ```
pub fn vma_growth(op: Op, region: usize, chunk: usize) -> VmaGrowth {
    let strategy = op.fault_strategy().expect("a fault op");
    assert!(op.is_supported(), "{} is not supported here", op.name());
    let r = Reservation::reserve_aligned(region, 2 << 20)
        .and_then(|r| r.map(0, region).and(r.used(0, region)).map(|()| r))
        .unwrap_or_else(|e| panic!("{region}-byte region: {e}"));
    let (start, end) = (r.as_ptr() as usize, r.as_ptr() as usize + region);
    // SAFETY: the region is ours and Ready.
    unsafe { raw::madvise(start, region, MADV_POPULATE_WRITE) };
    let vmas_before = raw::vmas_in(start, end);
    let mut faults = 0;
    let t = Instant::now();
    for off in (chunk..region).step_by(2 * chunk) {
        // SAFETY: nothing references the region's contents.
        let f = unsafe { r.fault_with(off, chunk, strategy) };
        match f {
            Ok(f) if f.how == expected(op) => faults += 1,
            other => panic!("{} at offset {off}: got {other:?}", op.name()),
        }
    }
    let elapsed = t.elapsed();
    let vmas_after = raw::vmas_in(start, end);
    VmaGrowth {
        op,
        region,
        chunk,
        faults,
        vmas_before,
        vmas_after,
        elapsed,
    }
}

fn expected(op: Op) -> FaultHow {
    match op {
        Op::FaultGuard => FaultHow::Guard,
        Op::FaultGo => FaultHow::Go,
        Op::FaultRemap => FaultHow::Remap,
        _ => FaultHow::Protect,
    }
}

/// The result of [`footprint`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Footprint {
    /// The operation.
    pub op: Op,
    /// Pages in the range.
    pub pages: usize,
    /// Pages resident before the operation (all of them: the range is populated).
    pub resident_before: usize,
    /// Pages resident (`mincore`) right after it. `MADV_FREE` leaves them resident until
    /// reclaim, so RSS does not drop; DONTNEED and remap drop them at once.
    pub resident_after: usize,
    /// VMAs the operation added around the range while applied.
    pub vmas_added: usize,
}

impl Footprint {
    /// Whether the operation gave the memory back at once (nothing left resident), so RSS
    /// says what the process really uses.
    pub fn rss_honest(&self) -> bool {
        self.resident_after == 0
    }
}

/// Apply `op` once through osmem to a populated `size`-byte range inside padding (see
/// [`OpBench`]) and read what it left: resident pages (`mincore`) and VMAs added
/// (`/proc/self/maps`). The range is restored afterwards.
///
/// # Panics
/// As for [`OpBench::apply`].
///
/// ```no_run
/// let f = osmem_bench::footprint(osmem_bench::Op::UnusedFree, 64 << 10);
/// assert!(!f.rss_honest()); // MADV_FREE leaves the pages resident
/// ```
pub fn footprint(op: Op, size: usize) -> Footprint {
    let mut b = OpBench::new(size).unwrap_or_else(|e| panic!("{size}-byte region: {e}"));
    let (start, end) = (
        b.region().as_ptr() as usize,
        b.region().as_ptr() as usize + b.region().len(),
    );
    b.prepare();
    let resident_before = raw::resident_pages(b.addr(), size);
    let vmas_before = raw::vmas_in(start, end);
    b.apply(op, Flavour::Osmem);
    let resident_after = raw::resident_pages(b.addr(), size);
    let vmas_added = raw::vmas_in(start, end).saturating_sub(vmas_before);
    b.restore();
    Footprint {
        op,
        pages: size / osmem::page_size(),
        resident_before,
        resident_after,
        vmas_added,
    }
}
