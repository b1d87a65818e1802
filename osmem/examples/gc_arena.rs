//! A garbage collector's heap arena on osmem, checked against the kernel.
//!
//! The shape of the Go runtime's heap: one large reservation of address space (here 64 GiB,
//! which costs nothing until used), a 64 MiB heap arena mapped when the heap grows (Go's
//! `sysMap`), spans made usable as they are allocated (`sysUsed`), and the spans a collection
//! finds dead given back to the kernel (`sysUnused`). In a debug mode (Go's
//! `GODEBUG=efence=1`) dead spans are faulted instead (`sysFault`), so a use after free
//! crashes on the spot rather than reading recycled memory. The arena is then mapped again
//! and reused.
//!
//! Every claim is checked against the kernel, never against osmem's bookkeeping: residency
//! queries (`Reservation::resident_bytes` / `residency`, which ask the kernel through the
//! `PAGEMAP_SCAN` ioctl, `/proc/self/pagemap` or `mincore`), the `Rss` of the arena's
//! mappings in `/proc/self/smaps`, its lines in `/proc/self/maps`, and a forked child that
//! writes into a span and must (or must not) die of SIGSEGV. Any failed check panics, so the
//! example exits non-zero.
//!
//! Run it with `cargo run --release -p osmem --example gc_arena`.

mod kernel;
use kernel::{child_write, smaps_rss, vmas, Ending};
use osmem::{Config, FaultHow, PageRun, Reservation, Residence, State, UnusedAdvice};

/// Address space reserved for the whole heap (Go reserves its arenas in the same spirit).
const ARENA: usize = 64 << 30;
/// One heap arena: the unit in which the heap grows (Go's `heapArenaBytes` on 64-bit Linux).
const HEAP_ARENA: usize = 64 << 20;
/// One span: a run of pages holding objects of one size class (large here, so a span is
/// many pages and the kernel's figures are easy to read).
const SPAN: usize = 1 << 20;
const SPANS: usize = HEAP_ARENA / SPAN;

fn main() -> Result<(), osmem::Error> {
    // DONTNEED for freed spans, whatever the process-wide knobs say: memory released with
    // MADV_FREE stays in the process's RSS until the kernel is short of memory, which is
    // why Go went back to DONTNEED by default in 1.16 (monitors and OOM killers read RSS).
    let arena =
        Reservation::reserve(ARENA)?.with_config(Config::new().unused(UnusedAdvice::DontNeed));
    let base = arena.as_ptr() as usize;
    println!(
        "reserved {} GiB of address space at {base:#x}: {} bytes resident",
        ARENA >> 30,
        smaps_rss(base, base + ARENA)
    );
    assert_eq!(
        smaps_rss(base, base + ARENA),
        0,
        "a reservation costs no memory"
    );

    // The heap grows by one heap arena: Reserved → Prepared (one mprotect).
    arena.map(0, HEAP_ARENA)?;

    // The mutator allocates every span of it and fills it with objects.
    for s in 0..SPANS {
        arena.used(s * SPAN, SPAN)?;
        fill(&arena, s, s as u8 + 1);
    }
    assert_eq!(arena.resident_bytes(0, HEAP_ARENA)?, HEAP_ARENA);
    println!(
        "cycle 1: {SPANS} spans of {} KiB in use: kernel reports {} MiB resident (smaps Rss {} MiB)",
        SPAN >> 10,
        arena.resident_bytes(0, HEAP_ARENA)? >> 20,
        smaps_rss(base, base + ARENA) >> 20
    );

    // A collection finds every other span dead; the scavenger gives those back.
    let dead: Vec<usize> = (0..SPANS).filter(|s| s % 2 == 1).collect();
    for &s in &dead {
        // SAFETY: the span is dead: nothing references it any more.
        let u = unsafe { arena.unused(s * SPAN, SPAN)? };
        assert!(u.zeroed && u.released, "{u:?}");
    }
    for s in 0..SPANS {
        let resident = arena.resident_bytes(s * SPAN, SPAN)?;
        if s % 2 == 1 {
            assert_eq!(
                resident, 0,
                "span {s} was released, the kernel still holds it"
            );
        } else {
            assert_eq!(resident, SPAN, "live span {s} lost memory");
            check(&arena, s, s as u8 + 1);
        }
    }
    let live = (SPANS - dead.len()) * SPAN;
    let rss = smaps_rss(base, base + ARENA);
    println!(
        "cycle 1: {} dead spans released: kernel reports {} MiB resident, smaps Rss {} MiB \
         (osmem's books: {} MiB Ready, {} MiB Prepared)",
        dead.len(),
        arena.resident_bytes(0, HEAP_ARENA)? >> 20,
        rss >> 20,
        arena.bytes_in(State::Ready) >> 20,
        arena.bytes_in(State::Prepared) >> 20,
    );
    assert_eq!(rss, live, "smaps: only the live spans are resident");

    // Cycle 2 in debug mode: the freed spans are allocated again (Prepared → Ready; released
    // memory reads zero, so the allocator need not clear it), used, and found dead again.
    for &s in &dead {
        arena.used(s * SPAN, SPAN)?;
        check(&arena, s, 0);
        fill(&arena, s, 0xEE);
    }
    let vmas_before = vmas(base, base + ARENA);
    let mut how = None;
    for &s in &dead {
        // SAFETY: dead span, as above; from now on any access to it traps.
        let f = unsafe { arena.fault(s * SPAN, SPAN)? };
        assert!(f.traps(), "{f:?}: the protecting step failed (VMA limit?)");
        how = Some(f.how);
    }
    let how = how.expect("spans were faulted");
    let vmas_after = vmas(base, base + ARENA);
    println!(
        "cycle 2 (debug mode): {} dead spans faulted with {how:?}: mappings in the arena {} → {}",
        dead.len(),
        vmas_before.len(),
        vmas_after.len()
    );
    let dead_map = vmas(base + dead[0] * SPAN, base + dead[0] * SPAN + 1).remove(0);
    println!("  the mapping of a faulted span: {dead_map}");
    if how == FaultHow::Guard {
        // Guard markers live in the page tables: no mapping is split, the mmap lock is not
        // taken for writing, and /proc/self/maps does not change.
        assert_eq!(vmas_before, vmas_after, "guard markers split no mapping");
    } else {
        // The other strategies make each dead span a PROT_NONE mapping of its own.
        assert!(
            dead_map.split_whitespace().nth(1) == Some("---p"),
            "{dead_map}"
        );
    }
    let mut runs = [PageRun::EMPTY; 4];
    for &s in &dead {
        assert_eq!(
            arena.resident_bytes(s * SPAN, SPAN)?,
            0,
            "faulted span {s} is resident"
        );
        let q = arena.residency(s * SPAN, SPAN, &mut runs)?;
        let kinds = &runs[..q.runs];
        assert!(
            kinds.iter().all(|r| r.residence != Residence::Present),
            "{kinds:?}"
        );
        if how == FaultHow::Guard && q.tells.guard {
            assert!(
                kinds.iter().all(|r| r.residence == Residence::Guard),
                "{kinds:?}"
            );
        }
        if s == dead[0] {
            println!(
                "cycle 2: the kernel sees a faulted span as {:?} (asked with {})",
                runs[0].residence,
                q.method.name()
            );
        }
    }

    // A use after free: a forked child writes into a dead span and must die of SIGSEGV; a
    // write into a live span must go through.
    let uaf = child_write(arena.as_ptr() as usize + dead[3] * SPAN + 100);
    println!("cycle 2: a child writing into a freed span: {uaf}");
    assert_eq!(
        uaf,
        Ending::Signal(libc::SIGSEGV),
        "the use after free was caught"
    );
    let ok = child_write(arena.as_ptr() as usize + 2 * SPAN + 100);
    println!("cycle 2: a child writing into a live span: {ok}");
    assert_eq!(ok, Ending::Exit(0));

    // Debug mode off: the faulted spans are mapped again (Faulted → Prepared, zero-filled)
    // and reused.
    for &s in &dead {
        arena.map(s * SPAN, SPAN)?;
        arena.used(s * SPAN, SPAN)?;
        check(&arena, s, 0);
        fill(&arena, s, s as u8 + 1);
    }
    for s in 0..SPANS {
        check(&arena, s, s as u8 + 1);
    }
    assert_eq!(arena.resident_bytes(0, HEAP_ARENA)?, HEAP_ARENA);
    assert_eq!(smaps_rss(base, base + ARENA), HEAP_ARENA);
    let again = child_write(arena.as_ptr() as usize + dead[3] * SPAN + 100);
    assert_eq!(again, Ending::Exit(0), "a reused span is writable");
    println!(
        "cycle 3: the spans are mapped again and reused: {} MiB resident, a child's write: {again}",
        arena.resident_bytes(0, HEAP_ARENA)? >> 20
    );
    let st = osmem::stats();
    println!(
        "osmem's calls: {} map, {} used, {} unused, {} fault; system calls: {} madvise, {} mprotect",
        st.map_ops, st.used_ops, st.unused_ops, st.fault_ops, st.madvise_calls, st.mprotect_calls
    );
    drop(arena); // munmap: the whole 64 GiB goes back
    println!("ok");
    Ok(())
}

/// Fill span `s` with `byte` (the mutator's objects).
fn fill(arena: &Reservation, s: usize, byte: u8) {
    // SAFETY: the span is Ready and ours alone.
    unsafe { arena.as_ptr().add(s * SPAN).write_bytes(byte, SPAN) };
}

/// Every page of span `s` holds `byte`.
fn check(arena: &Reservation, s: usize, byte: u8) {
    let ps = osmem::page_size();
    for off in (0..SPAN).step_by(ps) {
        // SAFETY: the span is Ready.
        let got = unsafe { arena.as_ptr().add(s * SPAN + off).read_volatile() };
        assert_eq!(got, byte, "span {s}, offset {off:#x}");
    }
}
