//! Batched release and fault, against the kernel: residency by mincore, traps by a forked
//! child, syscall counts by osmem's counters in a forked child (the only thread there, so the
//! deltas are exact), and process_madvise refused by seccomp.

use osmem::{Batch, BatchKind, FaultStrategy, Reservation, State, UnusedAdvice};
use osmem_testkit::{
    build_filter, in_child_filtered, in_child_report, resident_pages, touch_in_child, Inject,
    Touch, SEGV_ACCERR, SEGV_MAPERR,
};

const RANGES: usize = 3000;

/// 3000 scattered one-page ranges: every other page of a 6000-page region, all touched.
fn scattered() -> (Reservation, usize) {
    let ps = osmem::page_size();
    let r = Reservation::alloc(2 * RANGES * ps).unwrap();
    unsafe { r.as_ptr().write_bytes(0x5a, 2 * RANGES * ps) };
    (r, ps)
}

fn resident_queued(r: &Reservation, ps: usize) -> usize {
    (0..RANGES)
        .map(|i| resident_pages(r.as_ptr() as usize + 2 * i * ps, ps))
        .sum()
}

fn resident_kept(r: &Reservation, ps: usize) -> usize {
    (0..RANGES)
        .map(|i| resident_pages(r.as_ptr() as usize + (2 * i + 1) * ps, ps))
        .sum()
}

/// Queue every other page and flush; report (resident queued pages, resident kept pages,
/// process_madvise calls, madvise calls, ranges settled, per-range fallbacks, failures).
fn run_batch(kind: BatchKind) -> [u64; 8] {
    let (r, ps) = scattered();
    osmem::probe();
    let before = osmem::stats();
    let mut b: Batch = Batch::new(kind);
    for i in 0..RANGES {
        unsafe { b.push(&r, 2 * i * ps, ps).unwrap() };
    }
    let rep = unsafe { b.flush() };
    let after = osmem::stats();
    [
        resident_queued(&r, ps) as u64,
        resident_kept(&r, ps) as u64,
        after.process_madvise_calls - before.process_madvise_calls,
        after.madvise_calls - before.madvise_calls,
        rep.ranges as u64,
        rep.per_range as u64,
        rep.failed as u64,
        rep.batch_calls as u64,
    ]
}

fn in_child_batch(prog: &[osmem_testkit::seccompiler::sock_filter], kind: BatchKind) -> [u64; 8] {
    // Probe in the parent: the child must meet the refusal in the batch path, not in a probe
    // of its own (which would downgrade process_madvise before any batch runs).
    osmem::probe();
    let body = |out: &mut osmem_testkit::Report| {
        for v in run_batch(kind) {
            out.push(v);
        }
        0
    };
    let (exit, rep) = if prog.is_empty() {
        in_child_report(body)
    } else {
        in_child_filtered(prog, body)
    };
    assert!(exit.is_success(), "child: {exit:?}");
    let mut a = [0u64; 8];
    a.copy_from_slice(&rep.as_slice()[..8]);
    a
}

#[test]
fn batch_of_3000_releases_with_exactly_3_process_madvise_calls() {
    let [queued, kept, pm, madv, ranges, per_range, failed, batch_calls] =
        in_child_batch(&[], BatchKind::Unused(UnusedAdvice::DontNeed));
    assert_eq!(batch_calls, pm, "the report counts the calls osmem made");
    assert_eq!(queued, 0, "queued ranges must be released (mincore)");
    assert_eq!(kept, RANGES as u64, "neighbours must keep their pages");
    assert_eq!(pm, 3, "ceil(3000 / 1024) process_madvise calls");
    assert_eq!(madv, 0, "no per-range madvise");
    assert_eq!((ranges, per_range, failed), (RANGES as u64, 0, 0));
}

#[test]
fn refused_process_madvise_still_releases_everything_through_the_loop() {
    for errno in [libc::ENOSYS, libc::EPERM, libc::EINVAL] {
        let prog = build_filter(&[Inject::Syscall {
            nr: libc::SYS_process_madvise,
            errno,
        }]);
        let [queued, kept, pm, madv, ranges, per_range, failed, batch_calls] =
            in_child_batch(&prog, BatchKind::Unused(UnusedAdvice::DontNeed));
        assert_eq!(
            batch_calls, pm,
            "errno {errno}: refused calls are counted too"
        );
        assert_eq!(
            queued, 0,
            "errno {errno}: released through the madvise loop"
        );
        assert_eq!(kept, RANGES as u64, "errno {errno}");
        // With EINVAL, each refused call's first range is released by the madvise that
        // decides the refusal is about the advice; every other range goes through the
        // per-range chain.
        let confirmed = if errno == libc::EINVAL { pm } else { 0 };
        assert_eq!(
            (ranges, per_range + confirmed, failed),
            (RANGES as u64, RANGES as u64, 0),
            "errno {errno}"
        );
        assert!(
            madv >= RANGES as u64,
            "errno {errno}: one madvise per range, got {madv}"
        );
        // The refusal is sticky for ENOSYS/EPERM (1 call), and for EINVAL decided by madvise
        // taking the advice (1 call, then downgrade of process_madvise for DONTNEED; one
        // more if locked memory was seen in this process before the child was forked: the
        // batch then starts with MADV_DONTNEED_LOCKED, which is downgraded on its own).
        let most = if errno == libc::EINVAL { 2 } else { 1 };
        assert!(
            (1..=most).contains(&pm),
            "errno {errno}: process_madvise must not be retried per range ({pm} calls)"
        );
    }
}

#[test]
fn batched_faults_trap_and_release() {
    let ps = osmem::page_size();
    for (strategy, code) in [
        (FaultStrategy::Guard, SEGV_MAPERR),
        (FaultStrategy::Protect, SEGV_ACCERR),
    ] {
        let r = Reservation::alloc(64 * ps).unwrap();
        unsafe { r.as_ptr().write_bytes(7, 64 * ps) };
        let base = r.as_ptr() as usize;
        {
            let mut b: Batch<'_, 16> = Batch::new(BatchKind::Fault(strategy));
            for i in (0..64).step_by(4) {
                unsafe { b.push(&r, i * ps, 2 * ps).unwrap() };
            }
            // 16 ranges fill the batch exactly; dropping it flushes.
        }
        for i in (0..64).step_by(4) {
            assert_eq!(r.state(i * ps), Some(State::Faulted));
            assert_eq!(
                resident_pages(base + i * ps, 2 * ps),
                0,
                "{strategy:?}: released"
            );
            assert_eq!(
                touch_in_child(base + i * ps, false),
                Touch::Segv { si_code: code },
                "{strategy:?}"
            );
            assert_eq!(
                unsafe { *(base as *const u8).add((i + 2) * ps) },
                7,
                "neighbour intact"
            );
        }
        // Usable again, zero-filled.
        for i in (0..64).step_by(4) {
            r.map(i * ps, 2 * ps).unwrap();
            r.used(i * ps, 2 * ps).unwrap();
            assert_eq!(unsafe { *(base as *const u8).add(i * ps) }, 0);
        }
    }
}

#[test]
fn batched_guard_faults_take_two_process_madvise_calls() {
    osmem::probe();
    let (exit, rep) = in_child_report(|out| {
        let (r, ps) = scattered();
        osmem::probe();
        let before = osmem::stats();
        let mut b: Batch = Batch::new(BatchKind::Fault(FaultStrategy::Guard));
        for i in 0..1000 {
            unsafe { b.push(&r, 2 * i * ps, ps).unwrap() };
        }
        let rep = unsafe { b.flush() };
        let after = osmem::stats();
        out.push(after.process_madvise_calls - before.process_madvise_calls);
        out.push(after.madvise_calls - before.madvise_calls);
        out.push(after.mprotect_calls - before.mprotect_calls);
        out.push(rep.ranges as u64);
        out.push(after.faulted_bytes - before.faulted_bytes);
        0
    });
    assert!(exit.is_success(), "{exit:?}");
    // One batched DONTNEED, one batched GUARD_INSTALL; no per-range syscalls at all.
    assert_eq!(&rep.as_slice()[..4], &[2, 0, 0, 1000]);
    assert_eq!(rep[4], 1000 * osmem::page_size() as u64);
}

/// Pushing claims nothing: a queued range is not held (a direct transition on it goes
/// through), bad input queues nothing, and the flush claims what it can: a range that overlaps
/// one pushed before it, or that is no longer Ready, is refused with nothing changed, and
/// `flush_with` reports every range.
#[test]
fn pushing_holds_nothing_and_the_flush_refuses_what_it_cannot_claim() {
    use osmem::{BatchDone, Error, UnusedHow};
    let ps = osmem::page_size();
    let r = Reservation::alloc(8 * ps).unwrap();
    let base = r.as_ptr() as usize;
    unsafe { r.as_ptr().write_bytes(3, 8 * ps) };
    let mut b: Batch<'_, 8> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
    unsafe {
        b.push(&r, 0, 2 * ps).unwrap();
        b.push(&r, ps, ps).unwrap(); // overlaps the first
        b.push(&r, 0, 2 * ps).unwrap(); // an exact duplicate
        b.push(&r, 4 * ps, ps).unwrap();
    }
    assert!(matches!(
        unsafe { b.push(&r, 1, ps) },
        Err(Error::Unaligned { .. })
    ));
    assert!(matches!(
        unsafe { b.push(&r, 8 * ps, ps) },
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(b.len(), 4);
    // Queued, not held: a direct transition goes through (page 4 is Prepared now).
    let _ = unsafe { r.unused(4 * ps, ps) }.unwrap();
    r.used(4 * ps, ps).unwrap();
    let _ = unsafe { r.fault(4 * ps, ps) }.unwrap();
    let mut seen = Vec::new();
    let rep = unsafe { b.flush_with(|x| seen.push((x.offset, x.len, x.result))) };
    assert_eq!((rep.ranges, rep.refused, rep.failed), (1, 3, 0), "{rep:?}");
    assert_eq!(seen.len(), 4, "{seen:?}");
    seen.sort_by_key(|x| (x.0, x.1));
    let done = seen.iter().filter(|x| x.0 == 0 && x.2.is_ok()).count();
    assert_eq!(done, 1, "one of the two [0, 2 pages) ranges: {seen:?}");
    assert!(seen.iter().any(|x| x.0 == 0
        // (DontNeedLocked once locked memory was seen in this process: another test.)
        && matches!(x.2, Ok(BatchDone::Unused(u))
            if matches!(u.how, UnusedHow::DontNeed | UnusedHow::DontNeedLocked) && u.zeroed)));
    assert!(
        seen.iter()
            .any(|x| x.0 == 0 && matches!(x.2, Err(Error::Busy { offset: 0, .. }))),
        "the duplicate is refused as held by the first: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|x| x.0 == ps && matches!(x.2, Err(Error::Busy { offset, .. }) if offset == ps)),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|x| x.0 == 4 * ps
            && matches!(x.2, Err(Error::WrongState { offset, found: State::Faulted, .. }) if offset == 4 * ps)),
        "{seen:?}"
    );
    // The kernel's view: the claimed range released, the others as they were.
    assert_eq!(resident_pages(base, 2 * ps), 0);
    assert_eq!(resident_pages(base + 2 * ps, 2 * ps), 2);
    assert_eq!(r.state(0), Some(State::Prepared));
    assert_eq!(r.state(ps), Some(State::Prepared));
    assert_eq!(r.state(2 * ps), Some(State::Ready));
    assert_eq!(r.state(4 * ps), Some(State::Faulted));
    assert_eq!(
        touch_in_child(base + 4 * ps, false),
        Touch::Segv {
            si_code: if osmem::selected().fault == FaultStrategy::Guard {
                SEGV_MAPERR
            } else {
                SEGV_ACCERR
            }
        }
    );
    // Nothing is left held: every page takes a transition.
    r.map(4 * ps, ps).unwrap();
    r.used(0, 8 * ps).unwrap();
}

/// A batch that is leaked (`mem::forget`) or dropped unflushed holds nothing: its ranges are
/// free for any transition.
#[test]
fn a_leaked_batch_holds_nothing() {
    let ps = osmem::page_size();
    let r = Reservation::alloc(4 * ps).unwrap();
    let mut b: Batch<'_, 4> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
    unsafe { b.push(&r, 0, 4 * ps).unwrap() };
    core::mem::forget(b);
    assert_eq!(r.state(0), Some(State::Ready));
    let u = unsafe { r.unused(0, 4 * ps) }.unwrap();
    assert!(u.zeroed);
    assert_eq!(resident_pages(r.as_ptr() as usize, 4 * ps), 0);
}

/// The stack sizes the documentation states (25.2 KiB, 1.8 KiB for 64 ranges): 25 bytes per
/// range plus a header of under 256 bytes.
#[test]
fn batch_size_is_as_documented() {
    let default = core::mem::size_of::<Batch<'static>>();
    let small = core::mem::size_of::<Batch<'static, 64>>();
    eprintln!("size_of Batch = {default}, Batch<'_, 64> = {small}");
    assert!(default <= 25 * 1024 + 256, "{default}");
    assert!(default >= 25 * 1024, "{default}");
    assert!(small <= 64 * 25 + 256, "{small}");
    assert_eq!(default - small, (1024 - 64) * 25);
}

/// One mlocked range in the middle of a batch: the kernel's process_madvise stops at it; the
/// call that starts there is refused (EINVAL), madvise confirms the range is locked, and the
/// rest of the batch is released with `MADV_DONTNEED_LOCKED` in one more call (the same as
/// DONTNEED on unlocked memory). No range goes per range. Every range must end released
/// (mincore), the locked page still locked (`lo` in its VMA's flags); for a guard fault every
/// page must trap, and the report names the locked range as having taken another link
/// (guard markers are refused on mlocked memory: it is made PROT_NONE instead).
#[test]
fn a_locked_range_in_the_middle_of_a_batch_is_released_in_the_batch() {
    use osmem::{BatchDone, FaultHow, UnusedHow};
    let ps = osmem::page_size();
    osmem::probe();
    let kinds = [
        BatchKind::Unused(UnusedAdvice::DontNeed),
        BatchKind::Fault(FaultStrategy::Auto),
    ];
    for kind in kinds {
        let r = Reservation::alloc(8 * ps).unwrap();
        let base = r.as_ptr() as usize;
        unsafe { r.as_ptr().write_bytes(0x5a, 8 * ps) };
        // SAFETY: a page of our own mapping; mlock only pins it.
        if unsafe { libc::mlock((base + 3 * ps) as *const libc::c_void, ps) } != 0 {
            eprintln!("mlock refused here (RLIMIT_MEMLOCK?): nothing to test");
            return;
        }
        let mut b: Batch<'_, 8> = Batch::new(kind);
        for i in 0..8 {
            unsafe { b.push(&r, i * ps, ps).unwrap() };
        }
        let mut hows = [None; 8];
        let rep = unsafe { b.flush_with(|x| hows[x.offset / ps] = x.result.ok()) };
        assert_eq!(
            (rep.ranges, rep.failed, rep.per_range),
            (8, 0, 0),
            "{kind:?}: {rep:?}"
        );
        assert!(rep.batch_calls <= 5, "{kind:?}: {rep:?}");
        assert_eq!(
            resident_pages(base, 8 * ps),
            0,
            "{kind:?}: every page released"
        );
        let locked = osmem_testkit::smaps_at(base + 3 * ps).expect("the locked page's VMA");
        assert!(
            locked.vm_flags.contains("lo"),
            "{kind:?}: the page keeps its lock"
        );
        let want = match kind {
            BatchKind::Unused(_) => State::Prepared,
            BatchKind::Fault(_) => State::Faulted,
            other => unreachable!("a batch kind these tests do not know: {other:?}"),
        };
        for i in 0..8 {
            assert_eq!(r.state(i * ps), Some(want), "{kind:?}: page {i}");
            if let BatchKind::Fault(_) = kind {
                assert!(
                    matches!(touch_in_child(base + i * ps, false), Touch::Segv { .. }),
                    "{kind:?}: page {i} must trap"
                );
            }
        }
        match kind {
            BatchKind::Unused(_) => assert!(
                matches!(hows[3], Some(BatchDone::Unused(u)) if u.how == UnusedHow::DontNeedLocked),
                "{hows:?}"
            ),
            _ if osmem::selected().fault == FaultStrategy::Guard => {
                assert!(
                    matches!(hows[3], Some(BatchDone::Faulted(f)) if f.how == FaultHow::Protect),
                    "{hows:?}"
                );
                assert!(
                    matches!(hows[0], Some(BatchDone::Faulted(f)) if f.how == FaultHow::Guard),
                    "{hows:?}"
                );
                assert_eq!(rep.other_link, 1, "{rep:?}");
            }
            _ => {}
        }
    }
}

/// Ranges of two reservations pushed interleaved, many of them sharing a 16-page word of
/// their map (the flush claims and settles those as one group per word), with a range across
/// two words, a two-page range and an overlap among them: every page ends in the state the
/// ranges say, and the kernel agrees page by page (mincore); the pages between stay resident
/// with their contents.
#[test]
fn interleaved_groups_of_two_reservations_settle_page_by_page() {
    // With a refusal the flush settles range by range; without, by groups.
    interleaved(true);
    interleaved(false);
}

fn interleaved(with_overlap: bool) {
    let ps = osmem::page_size();
    let pages = 96;
    let (a, b) = (
        Reservation::alloc(pages * ps).unwrap(),
        Reservation::alloc(pages * ps).unwrap(),
    );
    for r in [&a, &b] {
        unsafe { r.as_ptr().write_bytes(0x6b, pages * ps) };
    }
    // (reservation, first page, pages): every third page of both, interleaved, then a range
    // across the word boundary at page 48, a two-page range, and an overlap (refused).
    let mut ranges: Vec<(usize, usize, usize)> = Vec::new();
    for p in (0..40).step_by(3) {
        ranges.push((0, p, 1));
        ranges.push((1, p + 1, 1));
    }
    ranges.extend([(0, 46, 4), (1, 60, 2), (0, 61, 1)]);
    // Runs of one reservation in one word (groups), two groups in the same word of `a`, a
    // group of `b` between them.
    ranges.extend([(0, 64, 1), (0, 66, 1), (0, 68, 2), (0, 71, 1)]);
    ranges.extend([(1, 64, 1), (1, 65, 1), (1, 67, 3)]);
    ranges.extend([(0, 72, 1), (0, 74, 1), (0, 79, 1)]);
    // Last: an overlap of an earlier range (refused, nothing changed).
    if with_overlap {
        ranges.push((0, 61, 2));
    }
    let acted = ranges.len() - usize::from(with_overlap);
    let mut q: Batch<'_, 64> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
    for &(k, p, n) in &ranges {
        let r = if k == 0 { &a } else { &b };
        unsafe { q.push(r, p * ps, n * ps).unwrap() };
    }
    let rep = unsafe { q.flush() };
    assert_eq!(
        (rep.ranges, rep.refused, rep.failed),
        (acted, usize::from(with_overlap), 0),
        "{rep:?}"
    );
    // What each page must be: released if a range acted on it (the first of two that
    // overlap), Ready otherwise.
    let mut released = [[false; 96]; 2];
    for &(k, p, n) in &ranges[..acted] {
        released[k][p..p + n].fill(true);
    }
    for (k, r) in [&a, &b].into_iter().enumerate() {
        let base = r.as_ptr() as usize;
        for (p, &rel) in released[k].iter().enumerate() {
            let (want, resident) = if rel {
                (State::Prepared, 0)
            } else {
                (State::Ready, 1)
            };
            assert_eq!(r.state(p * ps), Some(want), "reservation {k} page {p}");
            assert_eq!(
                resident_pages(base + p * ps, ps),
                resident,
                "reservation {k} page {p}"
            );
            if !rel {
                assert_eq!(unsafe { *((base + p * ps) as *const u8) }, 0x6b);
            }
        }
        // The accounting agrees with the pages.
        let n = released[k].iter().filter(|&&x| x).count();
        assert_eq!(
            r.bytes_in(State::Prepared),
            (n * ps) as u64,
            "reservation {k}"
        );
        // Nothing is left held.
        r.used(0, pages * ps).unwrap();
    }
}

#[test]
fn finish_returns_what_dropping_would_discard() {
    let ps = osmem::page_size();
    let r = Reservation::reserve(8 * ps).unwrap();
    r.map(0, 4 * ps).unwrap();
    r.used(0, 4 * ps).unwrap();
    unsafe { r.as_ptr().write_bytes(0x5a, 4 * ps) };
    let mut b: Batch<'_, 8> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
    unsafe {
        b.push(&r, 0, 2 * ps).unwrap(); // Ready: released
        b.push(&r, 4 * ps, ps).unwrap(); // Reserved: refused, unchanged
    }
    // Before the flush the range is still resident (pushing does nothing).
    assert_eq!(resident_pages(r.as_ptr() as usize, 2 * ps), 2);
    let rep = b.finish();
    assert_eq!(
        (rep.ranges, rep.bytes, rep.refused, rep.failed),
        (1, 2 * ps, 1, 0)
    );
    assert!(
        matches!(rep.error, Some(osmem::Error::WrongState { .. })),
        "{rep:?}"
    );
    assert_eq!(resident_pages(r.as_ptr() as usize, 2 * ps), 0);
    assert_eq!(resident_pages(r.as_ptr() as usize + 2 * ps, 2 * ps), 2);
    assert_eq!(r.state(0), Some(State::Prepared));
    assert_eq!(r.state(4 * ps), Some(State::Reserved));
}
