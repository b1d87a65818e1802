//! A WebAssembly linear memory on osmem, checked against the kernel.
//!
//! The layout 64-bit wasm engines use: a 32-bit index reaches at most 4 GiB, so the engine
//! reserves 4 GiB plus a guard region (2 GiB here) once per memory and never bounds-checks
//! loads and stores whose offset stays below the guard's size: anything past the current
//! size traps in hardware. `memory.grow` maps and uses more 64 KiB wasm pages. Between two
//! instances that reuse the slot (a pool of instances), everything the last one used is
//! released in one call, and the next instance must find zeros — never the previous
//! tenant's data.
//!
//! Checked against the kernel, never against osmem's bookkeeping: residency queries
//! (`Reservation::resident_bytes` / `residency`), the `Rss` of the slot's mappings in
//! `/proc/self/smaps`, its lines in `/proc/self/maps`, and forked children that write past
//! the end or into the guard and must die of SIGSEGV. Any failed check panics, so the example
//! exits non-zero.
//!
//! Run it with `cargo run --release -p osmem --example wasm_memory`.

mod kernel;
use kernel::{child_write, perms, range_of, smaps_rss, vmas, Ending};
use osmem::{Config, PageRun, Reservation, Residence, UnusedAdvice};

/// A wasm page.
const WASM_PAGE: usize = 64 << 10;
/// The most a 32-bit linear memory can grow to.
const MAX_MEMORY: usize = 4 << 30;
/// Past the end of the 4 GiB: loads and stores with a constant offset below this need no
/// bounds check.
const GUARD: usize = 2 << 30;

/// One linear memory: its slot of address space and its current size.
struct LinearMemory {
    slot: Reservation,
    /// Bytes accessible to the instance (`memory.size` × 64 KiB).
    size: usize,
    /// Bytes ever mapped (Reserved beyond): a reset leaves them Prepared, so the next
    /// instance grows into them with `used` alone.
    mapped: usize,
}

impl LinearMemory {
    fn new() -> Result<LinearMemory, osmem::Error> {
        // harddecommit for this slot only: a released range is also made PROT_NONE, so after
        // a reset everything past the next instance's size traps again, as the engine's
        // missing bounds checks require (plain Prepared memory would be readable and
        // writable).
        let slot =
            Reservation::reserve(MAX_MEMORY + GUARD)?.with_config(Config::new().harddecommit(true));
        Ok(LinearMemory {
            slot,
            size: 0,
            mapped: 0,
        })
    }

    fn base(&self) -> *mut u8 {
        self.slot.as_ptr()
    }

    /// `memory.grow`: the old size in wasm pages, or `None` (wasm's -1) past 4 GiB.
    fn grow(&mut self, pages: usize) -> Result<Option<usize>, osmem::Error> {
        let old = self.size;
        let new = match pages
            .checked_mul(WASM_PAGE)
            .and_then(|b| b.checked_add(old))
        {
            Some(new) if new <= MAX_MEMORY => new,
            _ => return Ok(None),
        };
        if new == old {
            return Ok(Some(old / WASM_PAGE));
        }
        if new > self.mapped {
            // Fresh address space: Reserved → Prepared (one mprotect).
            self.slot.map(self.mapped, new - self.mapped)?;
            self.mapped = new;
        }
        // Prepared → Ready; after a reset this makes the range accessible again.
        self.slot.used(old, new - old)?;
        self.size = new;
        Ok(Some(old / WASM_PAGE))
    }

    /// End the instance: release everything it used in one call. The memory of the next
    /// instance reads zero, and until it grows, every byte of the slot traps.
    fn reset(&mut self) -> Result<osmem::Unused, osmem::Error> {
        // DONTNEED, whatever the process-wide knobs say: MADV_FREE would let the next
        // tenant read what the kernel has not reclaimed yet.
        // SAFETY: the instance is gone; nothing references its memory.
        let u = unsafe {
            self.slot
                .unused_with(0, self.size, UnusedAdvice::DontNeed)?
        };
        self.size = 0;
        Ok(u)
    }
}

fn main() -> Result<(), osmem::Error> {
    let mut mem = LinearMemory::new()?;
    let base = mem.base() as usize;
    let slot_end = base + MAX_MEMORY + GUARD;
    println!(
        "slot of {} GiB + {} GiB guard at {base:#x}; smaps Rss {} bytes",
        MAX_MEMORY >> 30,
        GUARD >> 30,
        smaps_rss(base, slot_end)
    );

    // Instance 1: starts at 16 pages (1 MiB) and grows 16 pages at a time to 16 MiB,
    // writing everything it gets.
    assert_eq!(mem.grow(16)?, Some(0));
    touch_all(&mem, 0, mem.size, 0xA1);
    while mem.size < 16 << 20 {
        let old = mem.grow(16)?.expect("under 4 GiB") * WASM_PAGE;
        touch_all(&mem, old, mem.size, 0xA1);
    }
    assert_eq!(mem.grow(65536)?, None, "memory.grow past 4 GiB fails");
    let size = mem.size;
    assert_eq!(mem.slot.resident_bytes(0, size)?, size);
    assert_eq!(smaps_rss(base, slot_end), size);
    println!(
        "instance 1: grew to {} wasm pages ({} MiB): kernel reports {} MiB resident",
        size / WASM_PAGE,
        size >> 20,
        mem.slot.resident_bytes(0, size)? >> 20
    );
    // /proc/self/maps: the accessible part, then one PROT_NONE mapping from the end of
    // memory through the guard (and possibly beyond: a reservation of 1 GiB or more keeps
    // the slack of its 1 GiB alignment in its mapping).
    let maps = vmas(base, slot_end);
    for l in &maps {
        println!("  {l}");
    }
    let tail = vmas(base + size, base + size + 1).remove(0);
    assert_eq!(perms(&tail), "---p", "past the end: {tail}");
    assert!(range_of(&tail).is_some_and(|r| r.1 >= slot_end), "{tail}");

    // The traps the engine relies on, seen by forked children: the last byte of memory is
    // writable; the first byte past it, the first byte of the guard and its last byte are not.
    let last = child_write(base + size - 1);
    let past = child_write(base + size);
    let guard = child_write(base + MAX_MEMORY);
    let guard_end = child_write(slot_end - 1);
    println!(
        "instance 1: a child writing the last byte: {last}; one past it: {past}; \
         the guard: {guard}; the guard's last byte: {guard_end}"
    );
    assert_eq!(last, Ending::Exit(0));
    for e in [past, guard, guard_end] {
        assert_eq!(e, Ending::Signal(libc::SIGSEGV));
    }

    // Reset the slot for the next instance: one madvise (and one mprotect) for all of it.
    let u = mem.reset()?;
    assert!(u.zeroed && u.released, "{u:?}");
    assert!(
        u.protected,
        "harddecommit made the released memory PROT_NONE: {u:?}"
    );
    let resident = mem.slot.resident_bytes(0, size)?;
    let rss = smaps_rss(base, slot_end);
    let first = child_write(base);
    println!(
        "reset: released by {:?}: kernel reports {resident} bytes resident, smaps Rss {rss}; \
         a child writing offset 0: {first}",
        u.how
    );
    assert_eq!(
        (resident, rss),
        (0, 0),
        "the kernel holds none of the old instance"
    );
    assert_eq!(
        first,
        Ending::Signal(libc::SIGSEGV),
        "nothing is accessible before grow"
    );

    // Instance 2: grows to 8 MiB, inside what instance 1 used.
    mem.grow(128)?;
    let size2 = mem.size;
    assert_eq!(
        mem.slot.resident_bytes(0, size2)?,
        0,
        "growing costs no memory"
    );
    let words = size2 / 8;
    // SAFETY: [0, size2) is Ready and ours.
    let memory = unsafe { std::slice::from_raw_parts(mem.base() as *const u64, words) };
    let nonzero = memory.iter().filter(|&&w| w != 0).count();
    assert_eq!(nonzero, 0, "instance 2 reads instance 1's data");
    let mut runs = [PageRun::EMPTY; 8];
    let q = mem.slot.residency(0, size2, &mut runs)?;
    println!(
        "instance 2: grew to {} MiB, reads all zeros; the kernel ({}) holds {:?}",
        size2 >> 20,
        q.method.name(),
        runs[..q.runs]
            .iter()
            .map(|r| (r.residence, r.len >> 10))
            .collect::<Vec<_>>()
    );
    if q.tells.zero_page {
        // Reading untouched memory maps the kernel's shared zero page: still no memory.
        assert!(
            runs[..q.runs]
                .iter()
                .all(|r| r.residence != Residence::Present),
            "reading zeros costs no memory"
        );
    }
    touch_all(&mem, 0, size2, 0xB2);
    assert_eq!(mem.slot.resident_bytes(0, size2)?, size2);
    assert_eq!(smaps_rss(base, slot_end), size2);
    assert_eq!(child_write(base + size2), Ending::Signal(libc::SIGSEGV));
    println!(
        "instance 2: wrote its {} MiB: {} MiB resident; one past its end still traps",
        size2 >> 20,
        mem.slot.resident_bytes(0, size2)? >> 20
    );
    let reset = mem.reset()?;
    assert!(reset.released && reset.zeroed, "reset: {reset:?}");
    assert_eq!(mem.slot.resident_bytes(0, MAX_MEMORY)?, 0);
    println!("ok");
    Ok(())
}

/// The instance writes `byte` over `[from, to)` of its memory.
fn touch_all(mem: &LinearMemory, from: usize, to: usize, byte: u8) {
    assert!(to <= mem.size);
    // SAFETY: inside the instance's accessible memory.
    unsafe { mem.base().add(from).write_bytes(byte, to - from) };
}
