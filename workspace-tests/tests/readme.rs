//! The README's Rust examples, compiled and run. Each example sits below between marker
//! comments; `readme_shows_these_examples` checks the README's ```rust blocks are exactly this
//! code, so the two cannot drift apart.

const SOURCE: &str = include_str!("readme.rs");
const README: &str = include_str!("../../README.md");

#[test]
fn readme_examples_run() {
    // README-EXAMPLE-BEGIN
    use osmem::{Reservation, State};

    fn main() -> Result<(), osmem::Error> {
        let ps = osmem::page_size();
        let r = Reservation::reserve(64 * ps)?; // None → Reserved: address space only
        r.map(0, 16 * ps)?; // Reserved → Prepared
        r.used(0, 16 * ps)?; // Prepared → Ready
        unsafe { r.as_ptr().write_bytes(0xAB, 16 * ps) };

        // SAFETY (both calls): nothing reads or writes the range any more.
        let u = unsafe { r.unused(0, 16 * ps)? }; // Ready → Prepared: pages released
        println!("released by {:?}, reads zero: {}", u.how, u.zeroed);
        r.used(0, 16 * ps)?;
        let f = unsafe { r.fault(0, 16 * ps)? }; // Ready → Faulted: any access traps
        println!("faulted by {:?}, traps: {}", f.how, f.traps());

        r.map(0, 16 * ps)?; // Faulted → Prepared, zero-filled
        assert_eq!(r.state(0), Some(State::Prepared));
        println!("{:?}", osmem::stats());
        Ok(()) // dropping `r` unmaps it: → None
    }
    // README-EXAMPLE-END
    main().unwrap();

    // The knobs example changes process-wide knobs, so it runs after the first, in the same
    // test (tests in this binary run in parallel).
    let before = osmem::config();
    {
        // README-EXAMPLE-BEGIN
        use osmem::{Config, FaultStrategy, Thp, UnusedAdvice};

        osmem::configure(
            Config::from_env() // or Config::new() to ignore OSMEM
                .unused(UnusedAdvice::Free)
                .fault(FaultStrategy::Protect)
                .harddecommit(false)
                .thp(Thp::Never)
                .prefault(true),
        );
        // README-EXAMPLE-END
    }
    let c = osmem::config();
    assert_eq!(c.unused_advice(), osmem::UnusedAdvice::Free);
    assert_eq!(c.fault_strategy(), osmem::FaultStrategy::Protect);
    assert_eq!(c.thp_policy(), osmem::Thp::Never);
    assert!(c.is_prefault());
    osmem::configure(before);

    let residency = || -> Result<(), osmem::Error> {
        // README-EXAMPLE-BEGIN
        use osmem::{PageRun, Reservation, Residence};

        let ps = osmem::page_size();
        let r = Reservation::alloc(64 * ps)?;
        unsafe { r.as_ptr().write_bytes(1, 4 * ps) };
        let mut runs = [PageRun::EMPTY; 16];
        let q = r.residency(0, 64 * ps, &mut runs)?;
        assert_eq!(runs[0].residence, Residence::Present);
        assert_eq!(runs[0].len, 4 * ps);
        println!("asked with {:?}, which tells {:?}", q.method, q.tells);
        assert_eq!(r.resident_bytes(0, 64 * ps)?, 4 * ps);
        // README-EXAMPLE-END
        Ok(())
    };
    residency().unwrap();

    let batch = || -> Result<(), osmem::Error> {
        // README-EXAMPLE-BEGIN
        use osmem::{Batch, BatchKind, Reservation, UnusedAdvice};

        let ps = osmem::page_size();
        let r = Reservation::alloc(4096 * ps)?;
        let mut batch: Batch = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
        for i in (0..4096).step_by(2) {
            // SAFETY: nothing uses these pages any more.
            unsafe { batch.push(&r, i * ps, ps)? };
        }
        let report = unsafe { batch.flush() }; // 2 process_madvise calls on Linux ≥ 6.13
        assert_eq!(report.ranges, 2048);
        // README-EXAMPLE-END
        Ok(())
    };
    batch().unwrap();

    let heap = || -> Result<(), osmem_heap::HeapError> {
        // README-EXAMPLE-BEGIN
        use osmem_heap::{Heap, HeapConfig};

        // At start: address space for the whole heap (nothing committed), the container's limit,
        // and the background scavenger at 1% of all CPUs.
        let heap = Heap::create(HeapConfig::new(64 << 30))?;
        heap.set_memory_limit_from_cgroup();
        let _scavenger = heap.start_scavenger(0.01).expect("a thread");

        // A span for the allocator: zero it only if it may hold old data.
        let span = heap.alloc(8)?;
        if span.needzero {
            unsafe { (span.addr as *mut u8).write_bytes(0, 8 * heap.page_size()) };
        }

        // The GC sweeps it free, and reports the end of its cycle with its next heap goal: the
        // scavenger keeps in-use × goal/last goal + 10%, as Go's does.
        heap.free(span.addr, span.pages)?;
        heap.cycle(128 << 20);

        // `debug.FreeOSMemory()`: everything free goes back now.
        let released = heap.release_all(); // bytes, runs, system calls, failures
        println!("{released:?} {:?}", heap.stats()); // in use, free, released, held; scavenger work
                                                     // README-EXAMPLE-END
        Ok(())
    };
    heap().unwrap();
}

/// The code between the markers above, dedented, one string per example.
fn examples_here() -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, Vec<&str>)> = None;
    for line in SOURCE.lines() {
        let t = line.trim_start();
        // The markers are spelled in two pieces so these lines are not markers themselves.
        if t == concat!("// README-", "EXAMPLE-BEGIN") {
            cur = Some((line.len() - t.len(), Vec::new()));
        } else if t == concat!("// README-", "EXAMPLE-END") {
            let (_, lines) = cur.take().expect("END without BEGIN");
            out.push(lines.join("\n"));
        } else if let Some((indent, lines)) = cur.as_mut() {
            lines.push(line.get(*indent..).unwrap_or(""));
        }
    }
    out
}

/// The README's ```rust blocks.
fn examples_in_readme() -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for line in README.lines() {
        match (&mut cur, line.trim_end()) {
            (None, "```rust") => cur = Some(Vec::new()),
            (Some(_), "```") => out.push(cur.take().unwrap().join("\n")),
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    out
}

#[test]
fn readme_shows_these_examples() {
    let here = examples_here();
    assert_eq!(here.len(), 5);
    assert_eq!(examples_in_readme(), here);
}
