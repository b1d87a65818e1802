//! The heap under every emulated kernel and sandbox (testkit's `PROFILES`), in both modes,
//! checked against the kernel's own view (mincore, page contents), not the heap's bookkeeping.
//!
//! [`every_profile_runs_the_heap_scenario_in_both_modes`] re-executes this test binary once
//! per profile with only [`profile_entry`] selected and `OSMEM_PROFILE=<name>` (testkit's
//! `run_under_profile`, the mechanism of `osmem/tests/profiles.rs`). The entry installs the
//! profile's seccomp filter before anything calls osmem — a fresh exec'd process, so osmem's
//! probe and every chain see that kernel, which a fork of this (already probed) process would
//! not — then runs the suites and prints one result line each; the parent asserts that every
//! profile reported every suite, and that every suite passed.
//!
//! The suites: `filter` (the profile is really in force: raw madvise / process_madvise
//! answer as that kernel would), then one heap scenario per mode (`batched`, `go-faithful`):
//! 32 MiB of runs of mixed sizes (some crossing chunks), every page written with a pattern
//! that depends on its address, a mixed subset freed (whole runs, heads, tails), then
//! `scavenge(budget)` and `release_all`, each checked for: free pages not resident, live
//! pages resident and holding their pattern, resident pages == in-use pages, exact stats,
//! `Released.bytes` == the drop in resident memory, the release link osmem took for that
//! kernel (process_madvise / madvise / MAP_FIXED remap, from osmem's counters), and
//! `needzero` exact on re-allocation (false and reading zero for released pages; true, with
//! the old data still there, for freed pages not released).
//!
//! `Released.calls` is checked against the release syscalls osmem issued (its counters),
//! exactly (it once counted a process_madvise per flush on kernels without a usable one).
//!
//! No profile in the list leaves the kernel unable to release: where madvise is missing or
//! refused (`linux-3.18-no-advise`, `eperm-sandbox`) osmem releases by a MAP_FIXED remap, and
//! the suites assert that link ran and released everything (`failed == 0`). The documented
//! behaviour when nothing can release at all (`Released.failed`, the runs stay free and
//! unreleased, nothing lost, `needzero` true) is checked by
//! [`a_kernel_that_refuses_every_release_path_loses_nothing`], in a forked child whose
//! filter refuses madvise, process_madvise and mmap.

use std::panic::{catch_unwind, AssertUnwindSafe};

use osmem_heap::{Heap, HeapConfig, HeapStats, Mode, Released, Run};
use osmem_testkit::{
    build_filter, emit, enter_profile, in_child_filtered, is_zero, map_rw, resident_pages,
    run_under_profile, ChildExit, Inject, Report, Rng, PROFILES,
};

/// The heap's reservation: room for the 32 MiB scenario and its re-allocations.
const HEAP_BYTES: usize = 64 << 20;
/// What the scenario grows the heap to.
const GROW_BYTES: usize = 32 << 20;
/// Run sizes in pages: small ones, and 257/513 (more than half a chunk / more than a chunk,
/// so runs cross chunk boundaries).
const SIZES: &[usize] = &[1, 2, 3, 5, 8, 13, 21, 34, 64, 100, 257, 513];
/// Pages per chunk (one 2 MiB huge page with 4 KiB pages).
const CHUNK_PAGES: usize = 512;

const SUITES: &[&str] = &["heap-filter", "heap-batched", "heap-go-faithful"];

// ---------------------------------------------------------------------------------------
// Helpers (the entry is a fresh process: allocating is fine there).

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}: {}", line!(), format!($($fmt)+)));
        }
    };
}

/// The word every 8 bytes of the page at `page` hold after a write with `tag`: a function of
/// the address, so a page that moved, or was swapped with another, is caught; odd, so it is
/// never mistaken for a page that reads zero.
fn word(page: usize, tag: u64) -> u64 {
    ((page as u64).rotate_left(17) ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// Fill `pages` pages at `addr` with their pattern.
///
/// # Safety
/// The pages are the caller's, mapped and writable.
unsafe fn fill(addr: usize, pages: usize, ps: usize, tag: u64) {
    for k in 0..pages {
        let p = addr + k * ps;
        std::slice::from_raw_parts_mut(p as *mut u64, ps / 8).fill(word(p, tag));
    }
}

/// The first page of `[addr, addr + pages)` that does not hold its pattern, if any.
///
/// # Safety
/// The pages are mapped and readable.
unsafe fn first_bad(addr: usize, pages: usize, ps: usize, tag: u64) -> Option<usize> {
    (0..pages).map(|k| addr + k * ps).find(|&p| {
        let w = word(p, tag);
        !std::slice::from_raw_parts(p as *const u64, ps / 8)
            .iter()
            .all(|&x| x == w)
    })
}

fn resident(heap: &Heap) -> usize {
    let r = heap.range();
    resident_pages(r.start, r.len())
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "non-string panic".into())
}

// ---------------------------------------------------------------------------------------
// What each profile must look like.

/// How osmem releases memory under a profile.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Link {
    /// One `process_madvise(MADV_DONTNEED)` per batch.
    ProcessMadvise,
    /// `madvise(MADV_DONTNEED)` per run.
    Madvise,
    /// `mmap(MAP_FIXED)` over each run (no usable madvise).
    Remap,
}

/// The link a release must take under `profile` in `mode`. Derived from the profile's
/// definition (testkit/src/profile.rs), not from osmem's probe, except for `native`, where
/// the machine decides whether process_madvise takes DONTNEED for the own process.
fn expected_link(profile: &str, mode: Mode) -> Link {
    let batched = mode == Mode::Batched;
    match profile {
        // madvise missing (ENOSYS) or refused (EPERM), process_madvise too.
        "linux-3.18-no-advise" | "eperm-sandbox" => Link::Remap,
        // No process_madvise (4.4, 5.4), or one that refuses DONTNEED for the own process
        // before 6.13 (6.1, 6.12): per-run madvise.
        "linux-4.4" | "linux-5.4" | "linux-6.1" | "linux-6.12" => Link::Madvise,
        // 6.13+: process_madvise takes DONTNEED (through pidfd_open on 6.14).
        "linux-6.14" if batched => Link::ProcessMadvise,
        "linux-6.14" => Link::Madvise,
        "native"
            if batched && osmem::probe().process_madvise != osmem::ProcessMadvise::Unsupported =>
        {
            Link::ProcessMadvise
        }
        "native" => Link::Madvise,
        p => panic!("no expectations for profile {p:?}: add them here"),
    }
}

/// The raw answers the profile's filter must give (errno, 0 = success) for
/// `madvise(MADV_DONTNEED)` and `process_madvise(PIDFD_SELF, MADV_DONTNEED)`; `None`: not
/// fixed by the profile (the machine's own kernel answers).
fn expected_raw(profile: &str) -> (i32, Option<i32>) {
    match profile {
        "linux-3.18-no-advise" => (libc::ENOSYS, Some(libc::ENOSYS)),
        "linux-4.4" | "linux-5.4" => (0, Some(libc::ENOSYS)),
        // The PIDFD_SELF sentinels (6.15) are bad descriptors before 6.15.
        "linux-6.1" | "linux-6.12" | "linux-6.14" => (0, Some(libc::EBADF)),
        "eperm-sandbox" => (libc::EPERM, Some(libc::EPERM)),
        "native" => (0, None),
        p => panic!("no expectations for profile {p:?}: add them here"),
    }
}

/// `PIDFD_SELF_THREAD_GROUP` (Linux 6.15).
const PIDFD_SELF: i32 = -10001;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `filter`: the profile is in force in this process (otherwise every other suite would
/// pass vacuously, on the native kernel).
fn suite_filter(profile: &str) -> Result<String, String> {
    let ps = osmem_testkit::page_size();
    let page = map_rw(ps).ok_or("scratch mmap")?;
    // SAFETY: our scratch page.
    unsafe { (page as *mut u8).write(1) };
    // SAFETY: the scratch page only.
    let m = unsafe { libc::madvise(page as *mut libc::c_void, ps, libc::MADV_DONTNEED) };
    let m_errno = if m == 0 { 0 } else { errno() };
    // SAFETY: our scratch page.
    unsafe { (page as *mut u8).write(1) };
    let iov = libc::iovec {
        iov_base: page as *mut libc::c_void,
        iov_len: ps,
    };
    // SAFETY: one iovec on the scratch page.
    let pm = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            PIDFD_SELF,
            &iov,
            1usize,
            libc::MADV_DONTNEED,
            0u32,
        )
    };
    let pm_errno = if pm >= 0 { 0 } else { errno() };
    // SAFETY: our scratch mapping.
    unsafe { libc::munmap(page as *mut libc::c_void, ps) };
    let (want_m, want_pm) = expected_raw(profile);
    ensure!(
        m_errno == want_m,
        "madvise(DONTNEED) errno {m_errno}, the profile says {want_m}"
    );
    if let Some(w) = want_pm {
        ensure!(
            pm_errno == w,
            "process_madvise(PIDFD_SELF, DONTNEED) errno {pm_errno}, the profile says {w}"
        );
    }
    Ok(format!(
        "madvise errno {m_errno}, process_madvise errno {pm_errno}"
    ))
}

/// osmem's counters of the three release links, and of batch flushes.
#[derive(Copy, Clone, Debug)]
struct Links {
    pm: u64,
    madv: u64,
    mmap: u64,
    flushes: u64,
}

fn links() -> Links {
    let s = osmem::stats();
    Links {
        pm: s.process_madvise_calls,
        madv: s.madv_dontneed,
        mmap: s.mmap_calls,
        flushes: s.batch_flushes,
    }
}

/// The release between `a` and `b` went through `want`, and only through it.
fn check_link(what: &str, a: Links, b: Links, want: Link) -> Result<(), String> {
    let (pm, madv, mmap) = (b.pm - a.pm, b.madv - a.madv, b.mmap - a.mmap);
    let ok = match want {
        Link::ProcessMadvise => pm > 0 && madv == 0 && mmap == 0,
        Link::Madvise => pm == 0 && madv > 0 && mmap == 0,
        Link::Remap => pm == 0 && madv == 0 && mmap > 0,
    };
    ensure!(
        ok,
        "{what}: expected the {want:?} link, osmem issued process_madvise {pm}, madvise(DONTNEED) {madv}, mmap {mmap}"
    );
    Ok(())
}

/// The release counters moved by exactly what the release returned.
fn stats_moved_by(what: &str, a: &HeapStats, b: &HeapStats, r: &Released) -> Result<(), String> {
    ensure!(
        b.released_bytes.checked_sub(a.released_bytes) == Some(r.bytes)
            && b.released_total_bytes.checked_sub(a.released_total_bytes) == Some(r.bytes as u64)
            && b.release_runs.checked_sub(a.release_runs) == Some(r.runs as u64)
            && b.release_calls.checked_sub(a.release_calls) == Some(r.calls as u64),
        "{what}: stats {a:?} -> {b:?}, Released {r:?}"
    );
    Ok(())
}

/// `Released.calls` ("system calls it took") against what osmem issued for the release.
/// `strict` (what the suites use): exactly that. Otherwise at least that and at most one
/// more per batch flush (kept for diagnosing a miscount).
fn check_calls(what: &str, a: Links, b: Links, r: &Released, strict: bool) -> Result<(), String> {
    let issued = (b.pm - a.pm) + (b.madv - a.madv) + (b.mmap - a.mmap);
    let slack = if strict { 0 } else { b.flushes - a.flushes };
    ensure!(
        r.calls as u64 >= issued && r.calls as u64 <= issued + slack,
        "{what}: Released.calls {} but osmem issued {issued} release syscalls in {} batch flushes ({r:?})",
        r.calls,
        b.flushes - a.flushes
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The heap scenario.

/// A live run: first byte, pages, and the tag its pages were written with.
type Live = (usize, usize, u64);

/// Every live page is resident and holds its pattern; every freed run (not re-allocated
/// since) is not resident; resident pages in the heap == in-use pages == what the stats say.
fn check_after_release(
    heap: &Heap,
    ps: usize,
    live: &[Live],
    freed: &[(usize, usize)],
    what: &str,
) -> Result<(), String> {
    let in_use: usize = live.iter().map(|l| l.1).sum();
    let st = heap.stats();
    ensure!(
        st.in_use_bytes == in_use * ps,
        "{what}: in_use_bytes {} != {} live pages",
        st.in_use_bytes,
        in_use
    );
    ensure!(
        st.mapped_bytes == st.in_use_bytes + st.free_bytes,
        "{what}: mapped != in use + free: {st:?}"
    );
    ensure!(
        st.released_bytes == st.free_bytes,
        "{what}: released_bytes {} != free_bytes {}",
        st.released_bytes,
        st.free_bytes
    );
    ensure!(
        st.mapped_ready_bytes == st.in_use_bytes,
        "{what}: mapped_ready {} != in use {}",
        st.mapped_ready_bytes,
        st.in_use_bytes
    );
    for &(a, n) in freed {
        let r = resident_pages(a, n * ps);
        ensure!(
            r == 0,
            "{what}: freed run {a:#x}+{n} has {r} resident pages"
        );
    }
    for &(a, n, tag) in live {
        let r = resident_pages(a, n * ps);
        ensure!(r == n, "{what}: live run {a:#x}+{n}: {r} resident");
        // SAFETY: our live run.
        let bad = unsafe { first_bad(a, n, ps, tag) };
        ensure!(bad.is_none(), "{what}: live page {bad:x?} lost its pattern");
    }
    let res = resident(heap);
    ensure!(
        res == in_use,
        "{what}: {res} pages resident in the heap, {in_use} in use"
    );
    Ok(())
}

fn scenario(profile: &str, mode: Mode, strict: bool) -> Result<String, String> {
    let heap =
        Heap::create(HeapConfig::new(HEAP_BYTES).mode(mode)).map_err(|e| format!("create: {e}"))?;
    let r = catch_unwind(AssertUnwindSafe(|| {
        scenario_on(heap, profile, mode, strict)
    }))
    .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(p))));
    // SAFETY: nothing uses the heap or its memory after this.
    unsafe { Heap::destroy(heap) };
    r
}

fn scenario_on(
    heap: &'static Heap,
    profile: &str,
    mode: Mode,
    strict: bool,
) -> Result<String, String> {
    let ps = heap.page_size();
    let chunk = CHUNK_PAGES * ps;
    let base = heap.range().start;
    let link = expected_link(profile, mode);
    let mut rng = Rng::new(if mode == Mode::Batched {
        0x2545_F491_4F6C_DD1D
    } else {
        0x9E37_79B9_7F4A_7C15
    });

    // 1. Grow to 32 MiB of runs of mixed sizes: lowest address first, so packed from the
    // heap's start; fresh pages read zero and say so.
    let mut runs = Vec::new();
    let mut next = base;
    while next - base < GROW_BYTES {
        let n = SIZES[rng.below(SIZES.len())];
        let r = heap.alloc(n).map_err(|e| format!("alloc({n}): {e}"))?;
        ensure!(
            r.addr == next,
            "alloc({n}) at {:#x}, lowest fit {next:#x}",
            r.addr
        );
        ensure!(
            !r.needzero && r.scavenged == n,
            "fresh run {r:?}: never-used pages are known zero"
        );
        // SAFETY: our run.
        ensure!(
            unsafe { is_zero(r.addr, n * ps) },
            "fresh run {r:?} reads non-zero"
        );
        // SAFETY: our run.
        unsafe { fill(r.addr, n, ps, 1) };
        runs.push((r.addr, n));
        next += n * ps;
    }
    let used_end = next;
    let total = (used_end - base) / ps;
    let st = heap.stats();
    ensure!(st.in_use_bytes == total * ps, "in use after growth: {st:?}");
    ensure!(
        st.mapped_bytes >= st.in_use_bytes && st.mapped_bytes % chunk == 0,
        "mapped after growth: {st:?}"
    );
    ensure!(
        st.released_bytes == st.free_bytes,
        "never-used pages count as released: {st:?}"
    );
    ensure!(resident(heap) == total, "resident after growth != {total}");

    // 2. Free a mixed subset: whole runs, heads, tails; big runs (crossing chunks) always
    // lose all or their tail half, so no chunk is dense (the scavenger's density gate would
    // skip it, and the exact scavenge figures below assume it does not).
    let mut live: Vec<Live> = Vec::new();
    let mut freed: Vec<(usize, usize)> = Vec::new();
    let free = |a: usize, n: usize, freed: &mut Vec<(usize, usize)>| {
        heap.free(a, n)
            .map_err(|e| format!("free({a:#x}, {n}): {e}"))?;
        freed.push((a, n));
        Ok::<(), String>(())
    };
    for (i, &(a, n)) in runs.iter().enumerate() {
        if n >= 257 {
            if i % 2 == 0 {
                free(a, n, &mut freed)?;
            } else {
                free(a + n / 2 * ps, n - n / 2, &mut freed)?;
                live.push((a, n / 2, 1));
            }
            continue;
        }
        match rng.below(4) {
            0 | 1 => free(a, n, &mut freed)?,
            2 if n >= 2 => {
                free(a, n / 2, &mut freed)?;
                live.push((a + n / 2 * ps, n - n / 2, 1));
            }
            _ => live.push((a, n, 1)),
        }
    }
    let freed_pages: usize = freed.iter().map(|f| f.1).sum();
    let live_pages: usize = live.iter().map(|l| l.1).sum();
    ensure!(
        freed_pages > total / 4 && live_pages > total / 4,
        "a mixed subset: {freed_pages} freed, {live_pages} live"
    );
    let st_freed = heap.stats();
    ensure!(
        st_freed.in_use_bytes == live_pages * ps,
        "in use after frees: {st_freed:?}, {live_pages} live pages"
    );
    ensure!(
        st_freed.free_bytes == st_freed.mapped_bytes - live_pages * ps
            && st_freed.released_bytes == st.released_bytes,
        "a free releases nothing: {st_freed:?} vs {st:?}"
    );
    ensure!(resident(heap) == total, "a free leaves the pages resident");

    // 3. Freed, not released: re-allocation says needzero, and the old data is still there.
    let lowest = freed.iter().map(|f| f.0).min().unwrap_or(0);
    let r = heap.alloc(1).map_err(|e| format!("alloc(1): {e}"))?;
    ensure!(
        r.addr == lowest,
        "alloc(1) at {:#x}, lowest free {lowest:#x}",
        r.addr
    );
    ensure!(
        r.needzero && r.scavenged == 0,
        "a freed, unreleased page: {r:?}"
    );
    // SAFETY: our run now.
    let bad = unsafe { first_bad(r.addr, 1, ps, 1) };
    ensure!(
        bad.is_none(),
        "freed, unreleased page lost its data: {bad:x?}"
    );
    heap.free(r.addr, 1).map_err(|e| e.to_string())?;
    let longest = freed.iter().map(|f| f.1).max().unwrap_or(1);
    let r = heap.alloc(longest).map_err(|e| e.to_string())?;
    ensure!(
        r.addr + longest * ps <= used_end && r.needzero && r.scavenged == 0,
        "alloc({longest}) over freed pages: {r:?}"
    );
    heap.free(r.addr, longest).map_err(|e| e.to_string())?;
    ensure!(
        heap.stats() == st_freed,
        "alloc + free of unreleased pages changed the stats: {:?} vs {st_freed:?}",
        heap.stats()
    );

    // 4. scavenge(budget): toward the goal, at most the budget (Go-faithful: one candidate
    // may grow to its whole huge page), exactly what the kernel dropped.
    let goal0 = heap.scavenge_goal();
    ensure!(
        goal0 > 0 && goal0 % ps == 0,
        "half the heap freed: the goal asks for a release ({goal0})"
    );
    let budget = ((goal0 / 2).min(1 << 20) / ps * ps).max(ps);
    let (st0, res0, l0) = (heap.stats(), resident(heap), links());
    let sc = heap.scavenge(budget);
    let (st1, res1, l1) = (heap.stats(), resident(heap), links());
    ensure!(sc.failed == 0, "scavenge: {sc:?}");
    if mode == Mode::Batched {
        ensure!(sc.bytes == budget, "scavenge({budget}) released {sc:?}");
    } else {
        ensure!(
            sc.bytes >= budget && sc.bytes < budget + chunk,
            "go-faithful scavenge({budget}): {sc:?}"
        );
        ensure!(sc.calls == sc.runs, "one madvise per candidate: {sc:?}");
    }
    ensure!(
        res0.checked_sub(res1) == Some(sc.bytes / ps),
        "scavenge: resident {res0} -> {res1} pages, Released says {sc:?}"
    );
    stats_moved_by("scavenge", &st0, &st1, &sc)?;
    ensure!(
        st1.in_use_bytes == st0.in_use_bytes
            && st1.mapped_bytes == st0.mapped_bytes
            && st1.sync_released_bytes == 0,
        "scavenge: {st0:?} -> {st1:?}"
    );
    let goal1 = heap.scavenge_goal();
    ensure!(
        goal1 == goal0.saturating_sub(sc.bytes),
        "goal {goal0} -> {goal1} after releasing {}",
        sc.bytes
    );
    check_link("scavenge", l0, l1, link)?;
    check_calls("scavenge", l0, l1, &sc, strict)?;
    for &(a, n, tag) in &live {
        ensure!(
            resident_pages(a, n * ps) == n,
            "scavenge released a live run {a:#x}+{n}"
        );
        // SAFETY: our live run.
        let bad = unsafe { first_bad(a, n, ps, tag) };
        ensure!(bad.is_none(), "scavenge: live page {bad:x?} changed");
    }

    // 5. release_all: every free page goes, exactly the free unreleased ones.
    let (st1, res1, l1) = (heap.stats(), resident(heap), links());
    let ra = heap.release_all();
    let l2 = links();
    ensure!(ra.failed == 0 && ra.bytes > 0, "release_all: {ra:?}");
    ensure!(
        Some(ra.bytes) == st1.free_bytes.checked_sub(st1.released_bytes),
        "release_all released {ra:?}; before it {st1:?}"
    );
    let res2 = resident(heap);
    ensure!(
        res1.checked_sub(res2) == Some(ra.bytes / ps),
        "release_all: resident {res1} -> {res2} pages, Released says {ra:?}"
    );
    if mode == Mode::GoFaithful {
        ensure!(ra.calls == ra.runs, "one madvise per candidate: {ra:?}");
    }
    let st2 = heap.stats();
    stats_moved_by("release_all", &st1, &st2, &ra)?;
    check_link("release_all", l1, l2, link)?;
    check_calls("release_all", l1, l2, &ra, strict)?;
    check_after_release(heap, ps, &live, &freed, "after release_all")?;
    ensure!(heap.scavenge_goal() == 0, "nothing left to release");
    let again = heap.release_all();
    ensure!(
        again == Released::default(),
        "a second release_all found work: {again:?}"
    );

    // 6. Released pages come back known zero: every allocation now takes released (or
    // never-used) pages only, whichever hole it lands in.
    let mut reused = 0;
    for &(_, n) in &freed {
        let r = heap.alloc(n).map_err(|e| format!("alloc({n}): {e}"))?;
        ensure!(
            !r.needzero && r.scavenged == n,
            "after release_all: {r:?} (every free page was released)"
        );
        // SAFETY: our run.
        ensure!(
            unsafe { is_zero(r.addr, n * ps) },
            "released run {r:?} reads non-zero"
        );
        if r.addr < used_end {
            reused += n;
        }
        // SAFETY: our run.
        unsafe { fill(r.addr, n, ps, 2) };
        live.push((r.addr, n, 2));
    }
    ensure!(
        reused > 0,
        "no re-allocation landed on released pages (lowest address first)"
    );
    check_after_release(heap, ps, &live, &[], "after re-allocation")?;

    // 6b. A run partly released: needzero and `scavenged` per page. Every free page is
    // released now, so a freed 16-page run Z is the only candidate for a release of 8 pages
    // (highest first: Z's top 8, or in Go-faithful mode all of Z if it starts a huge page),
    // and Z is again the lowest fit for 16 pages.
    let z = heap.alloc(16).map_err(|e| e.to_string())?;
    // SAFETY: our run.
    unsafe { fill(z.addr, 16, ps, 4) };
    heap.free(z.addr, 16).map_err(|e| e.to_string())?;
    let part = heap.release(8 * ps);
    let m = part.bytes / ps;
    ensure!(
        part.failed == 0
            && if mode == Mode::Batched {
                m == 8
            } else {
                m == 8 || m == 16
            },
        "release(8 pages) with only {z:?} free and unreleased: {part:?}"
    );
    let r = heap.alloc(16).map_err(|e| e.to_string())?;
    ensure!(
        r.addr == z.addr && r.scavenged == m && r.needzero == (m < 16),
        "{r:?} over {z:?} whose top {m} pages were released"
    );
    for k in 0..16 {
        let p = r.addr + k * ps;
        // SAFETY: our run.
        let ok = unsafe {
            if k >= 16 - m {
                is_zero(p, ps)
            } else {
                first_bad(p, 1, ps, 4).is_none()
            }
        };
        ensure!(
            ok,
            "page {k} of {r:?}: released pages read zero, the others keep their data"
        );
    }
    // SAFETY: our run.
    unsafe { fill(r.addr, 16, ps, 2) };
    live.push((r.addr, 16, 2));
    check_after_release(heap, ps, &live, &[], "after the partly released run")?;

    // 7. Freed after that, not released: needzero again, for exactly the pages that may
    // hold data (the freed run's); the rest of the run reads zero.
    let (xa, xn, _) = live.pop().ok_or("no run")?;
    heap.free(xa, xn).map_err(|e| e.to_string())?;
    let r: Run = heap.alloc(xn).map_err(|e| e.to_string())?;
    let lo = r.addr.max(xa);
    let hi = (r.addr + xn * ps).min(xa + xn * ps);
    let overlap = if hi > lo { (hi - lo) / ps } else { 0 };
    ensure!(
        overlap > 0,
        "alloc({xn}) after freeing the last run {xa:#x} landed at {:#x}",
        r.addr
    );
    ensure!(
        r.needzero && r.scavenged == xn - overlap,
        "{r:?} over {overlap} freed, unreleased pages"
    );
    for k in 0..xn {
        let p = r.addr + k * ps;
        // SAFETY: our run.
        let ok = unsafe {
            if p >= lo && p < hi {
                first_bad(p, 1, ps, 2).is_none()
            } else {
                is_zero(p, ps)
            }
        };
        ensure!(
            ok,
            "page {p:#x} of {r:?}: neither its old data nor zero as it should be"
        );
    }
    // SAFETY: our run.
    unsafe { fill(r.addr, xn, ps, 3) };
    live.push((r.addr, xn, 3));

    // 8. Free everything: the heap holds nothing once released.
    for &(a, n, tag) in &live {
        // SAFETY: our live run.
        let bad = unsafe { first_bad(a, n, ps, tag) };
        ensure!(bad.is_none(), "at the end: live page {bad:x?} changed");
        heap.free(a, n).map_err(|e| e.to_string())?;
    }
    let fin = heap.release_all();
    ensure!(fin.failed == 0, "final release_all: {fin:?}");
    check_after_release(heap, ps, &[], &[], "everything freed and released")?;
    let st = heap.stats();
    ensure!(
        st.in_use_bytes == 0 && st.released_bytes == st.mapped_bytes,
        "an empty heap: {st:?}"
    );
    Ok(format!(
        "{} runs, {freed_pages} of {total} pages freed; scavenge({budget}) {} B in {} runs / {} calls; release_all {} B in {} runs / {} calls; link {link:?}",
        runs.len(),
        sc.bytes,
        sc.runs,
        sc.calls,
        ra.bytes,
        ra.runs,
        ra.calls
    ))
}

// ---------------------------------------------------------------------------------------
// The entry and the parent.

/// The suites under the profile this process was started with (`strict`: `Released.calls`
/// exact too).
fn run_entry(strict: bool) {
    // First thing: the filter, before anything calls osmem (so its probe sees the profile).
    let Some(profile) = enter_profile() else {
        return;
    };
    let mut failed = Vec::new();
    for &suite in SUITES {
        let r = catch_unwind(AssertUnwindSafe(|| match suite {
            "heap-filter" => suite_filter(&profile),
            "heap-batched" => scenario(&profile, Mode::Batched, strict),
            "heap-go-faithful" => scenario(&profile, Mode::GoFaithful, strict),
            s => Err(format!("unknown suite {s}")),
        }))
        .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(p))));
        match r {
            Ok(detail) => emit(suite, &Ok(()), &detail),
            Err(e) => {
                emit(suite, &Err(e.clone()), "");
                failed.push(format!("{suite}: {e}"));
            }
        }
    }
    assert!(failed.is_empty(), "under {profile}:\n{}", failed.join("\n"));
}

#[test]
#[ignore = "entry point: run by every_profile_runs_the_heap_scenario_in_both_modes in a re-executed copy of this binary"]
fn profile_entry() {
    run_entry(true);
}

/// Run `entry` under every profile, each in its own process, and assert that every one
/// reported every suite as passed (a profile whose process crashed, timed out or skipped a
/// suite fails).
fn check_every_profile(entry: &str) {
    // The list must hold the kernels this test is about; an empty list would pass vacuously.
    assert!(
        PROFILES.contains(&"native") && PROFILES.len() >= 2,
        "{PROFILES:?}"
    );
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = PROFILES
            .iter()
            .map(|&p| s.spawn(move || run_under_profile(p, entry)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("profile thread"))
            .collect()
    });
    assert_eq!(runs.len(), PROFILES.len());
    let mut problems = Vec::new();
    for (run, &p) in runs.iter().zip(PROFILES) {
        assert_eq!(run.profile, p);
        if !run.problems(SUITES).is_empty() {
            problems.push(run.explain(SUITES));
        }
    }
    // TESTING.md's rows (with OSMEM_TESTING_OUT set; see scripts/testing_md.py).
    for run in &runs {
        run.append_testing_rows(SUITES);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    // Every profile reported exactly the suites, all passed (what `problems` checked).
    for run in &runs {
        let passed: Vec<_> = run
            .results
            .iter()
            .filter(|r| r.passed)
            .map(|r| r.suite.as_str())
            .collect();
        assert_eq!(passed, SUITES, "[{}]", run.profile);
    }
}

/// Every profile testkit defines, both modes.
#[test]
fn every_profile_runs_the_heap_scenario_in_both_modes() {
    check_every_profile("profile_entry");
}

// ---------------------------------------------------------------------------------------
// A kernel that cannot release at all (no profile in the list is one: see the module docs).

/// Exit codes of the child below: which check failed.
const NO_RELEASE_CHECKS: &[&str] = &[
    "ok",
    "release_all: failed > 0, bytes == 0, runs == 0",
    "release_all: stats unchanged (in use, free, released, totals)",
    "release_all: resident memory unchanged",
    "freed pages still hold their data",
    "live pages still hold their data",
    "scavenge: failed > 0, bytes == 0",
    "scavenge_goal unchanged",
    "alloc of a freed page: needzero, not scavenged, old data",
    "free of it back",
    "stats after the alloc/free pair",
];

#[test]
fn a_kernel_that_refuses_every_release_path_loses_nothing() {
    // SAFETY: alarm has no preconditions; a hang fails the test by SIGALRM.
    unsafe { libc::alarm(120) };
    // madvise, process_madvise and mmap (osmem's MAP_FIXED remap, its last link) refused.
    let prog = build_filter(&[
        Inject::AnyMadvise { errno: libc::EPERM },
        Inject::Syscall {
            nr: libc::SYS_process_madvise,
            errno: libc::EPERM,
        },
        Inject::Syscall {
            nr: libc::SYS_mmap,
            errno: libc::EPERM,
        },
    ]);
    for mode in [Mode::Batched, Mode::GoFaithful] {
        let ps = osmem::page_size();
        let heap = Heap::create(HeapConfig::new(16 << 20).mode(mode)).unwrap();
        // 64 runs of 16 pages, written; every other one freed: 32 separate free runs.
        let runs: Vec<Run> = (0..64).map(|_| heap.alloc(16).unwrap()).collect();
        for r in &runs {
            // SAFETY: our runs.
            unsafe { fill(r.addr, r.pages, ps, 7) };
        }
        for r in runs.iter().step_by(2) {
            heap.free(r.addr, r.pages).unwrap();
        }
        let freed: Vec<(usize, usize)> = runs.iter().step_by(2).map(|r| (r.addr, 16)).collect();
        let live: Vec<(usize, usize)> = runs
            .iter()
            .skip(1)
            .step_by(2)
            .map(|r| (r.addr, 16))
            .collect();
        let lowest = freed[0].0;
        // The child: allocation-free (a fork of a multi-threaded process); reports numbers
        // and exits with the index of the first failed check.
        let (exit, rep) = in_child_filtered(&prog, |out: &mut Report| {
            let st0 = heap.stats();
            let res0 = resident(heap);
            let goal0 = heap.scavenge_goal();
            let r = heap.release_all();
            out.push(r.failed as u64);
            out.push(r.bytes as u64);
            out.push(r.calls as u64);
            if !(r.failed > 0 && r.bytes == 0 && r.runs == 0) {
                return 1;
            }
            let st1 = heap.stats();
            if st1.in_use_bytes != st0.in_use_bytes
                || st1.free_bytes != st0.free_bytes
                || st1.released_bytes != st0.released_bytes
                || st1.mapped_ready_bytes != st0.mapped_ready_bytes
                || st1.released_total_bytes != st0.released_total_bytes
                || st1.release_runs != st0.release_runs
            {
                return 2;
            }
            if resident(heap) != res0 {
                return 3;
            }
            // SAFETY: the heap's free pages are mapped; nothing else touches them.
            if freed
                .iter()
                .any(|&(a, n)| unsafe { first_bad(a, n, ps, 7) }.is_some())
            {
                return 4;
            }
            // SAFETY: our live runs.
            if live
                .iter()
                .any(|&(a, n)| unsafe { first_bad(a, n, ps, 7) }.is_some())
            {
                return 5;
            }
            let s = heap.scavenge(64 * ps);
            out.push(s.failed as u64);
            if !(s.failed > 0 && s.bytes == 0) {
                return 6;
            }
            if heap.scavenge_goal() != goal0 {
                return 7;
            }
            let st2 = heap.stats();
            let Ok(a) = heap.alloc(1) else { return 8 };
            // SAFETY: our run now.
            if a.addr != lowest
                || !a.needzero
                || a.scavenged != 0
                || unsafe { first_bad(a.addr, 1, ps, 7) }.is_some()
            {
                return 8;
            }
            if heap.free(a.addr, 1).is_err() {
                return 9;
            }
            if heap.stats() != st2 {
                return 10;
            }
            0
        });
        let what = match exit {
            ChildExit::Code(c) => NO_RELEASE_CHECKS
                .get(c as usize)
                .copied()
                .unwrap_or("the filter could not be installed, or the child panicked"),
            ChildExit::Signal(_) => "killed by a signal",
        };
        assert_eq!(
            exit,
            ChildExit::Code(0),
            "{mode:?}: {what} (failed, bytes, calls, scavenge failed: {rep:?})"
        );
        // Not vacuous: the same release in this process, where the kernel lets it, releases
        // all 32 runs — so the child's failures came from the refused calls.
        let r = heap.release_all();
        assert!(
            r.failed == 0 && r.bytes == 32 * 16 * ps && r.runs >= 32,
            "{mode:?}: {r:?}"
        );
        for &(a, n) in &freed {
            assert_eq!(resident_pages(a, n * ps), 0, "{mode:?}: {a:#x}");
        }
        // SAFETY: the child is gone; nothing uses the heap after this.
        unsafe { Heap::destroy(heap) };
    }
}
