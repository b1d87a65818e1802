//! `fork()` at any instant, from any thread: the child finds every reservation consistent and
//! usable, checked against the kernel.
//!
//! Four threads run transitions (unused/used, fault/map, batches of both) on pages of their
//! own: a stripe of one shared reservation and a reservation each. They fork at random
//! between their operations (so every fork meets the other three in the middle of theirs),
//! and each child checks every page of every reservation:
//! - osmem answers: `state()` and `lookup()` agree, and no lock is orphaned;
//! - the kernel agrees with the state: the protection of the page's VMA in
//!   `/proc/self/maps`; guard markers through the residency query; Prepared (released with
//!   `MADV_DONTNEED`) and Reserved pages not resident (`mincore`); a Ready page that its thread
//!   had filled still holds what it wrote (each page carries its own tag and, in its last
//!   word, a flag saying the tag is there: both in one page, so the fork's copy of the page
//!   sees both or neither);
//! - then a transition on every page succeeds: no page is left held by a transition that was
//!   in flight in the parent.
//!
//! 10 000 forks in release builds (5 000 in debug builds, where each child's checks are
//! slower). The parent checks its own pages at the end: the forks changed nothing for it.

use osmem::{
    lookup, Batch, BatchKind, FaultStrategy, PageRun, Reservation, Residence, State, UnusedAdvice,
};
use osmem_testkit::{
    eprint_bytes, eprint_u64, page_tag, page_tag_intact, resident_pages, tag_page, untag_page,
    vma_at, vmas_within, Rng, Vma,
};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const THREADS: usize = 4;
/// Pages of each thread's own reservation, and of its stripe of the shared one.
const OWN: usize = 48;
const STRIPE: usize = 48;
const MAGIC: u64 = 0x05ee_d00d_f00d_0000;

fn forks_wanted() -> usize {
    if cfg!(debug_assertions) {
        5_000
    } else {
        10_000
    }
}

fn ps() -> usize {
    osmem::page_size()
}

fn tag(addr: usize) -> u64 {
    page_tag(addr, MAGIC)
}

/// Fill a Ready page: its tag first, then the flag in its last word saying the tag is there.
fn fill(addr: usize) {
    // SAFETY: a Ready page of the calling thread's own.
    unsafe { tag_page(addr, MAGIC) }
}

/// The page is about to be released or faulted: its tag no longer counts.
fn unflag(addr: usize) {
    // SAFETY: as for `fill`.
    unsafe { untag_page(addr) }
}

/// A page of a thread: which reservation, which page.
#[derive(Copy, Clone)]
struct Page {
    r: usize,
    p: usize,
}

struct World {
    regions: Vec<Reservation>,
}

impl World {
    fn new() -> World {
        let mut regions = vec![Reservation::reserve(THREADS * STRIPE * ps()).unwrap()];
        for _ in 0..THREADS {
            regions.push(Reservation::reserve(OWN * ps()).unwrap());
        }
        World { regions }
    }

    fn pages_of(&self, t: usize) -> Vec<Page> {
        let mut v: Vec<Page> = (0..STRIPE)
            .map(|i| Page {
                r: 0,
                p: t * STRIPE + i,
            })
            .collect();
        v.extend((0..OWN).map(|i| Page { r: 1 + t, p: i }));
        v
    }

    fn addr(&self, pg: Page) -> usize {
        self.regions[pg.r].as_ptr() as usize + pg.p * ps()
    }
}

/// Child exit codes: which check failed.
const BAD_STATE: i32 = 10;
const BAD_LOOKUP: i32 = 11;
const BAD_PERMS: i32 = 12;
const BAD_RESIDENT: i32 = 13;
const BAD_CONTENT: i32 = 14;
const BAD_GUARD: i32 = 15;
const BAD_TRANSITION: i32 = 16;
const BAD_AFTER: i32 = 17;
const BAD_QUERY: i32 = 18;

fn fail(code: i32, what: &[u8], addr: usize) -> i32 {
    eprint_bytes(b"fork child: ");
    eprint_bytes(what);
    eprint_bytes(b" at ");
    eprint_u64(addr as u64);
    eprint_bytes(b"\n");
    code
}

/// The child's checks of one reservation, page by page, against the kernel; then a
/// transition on every page. Allocation-free (a copy of a multi-threaded process).
fn check_region(r: &Reservation) -> i32 {
    let (base, len) = (r.as_ptr() as usize, r.len());
    let pages = len / ps();
    let mut vmas = [Vma {
        start: 0,
        end: 0,
        perms: *b"----",
    }; 512];
    let nv = vmas_within(base, base + len, &mut vmas);
    if nv == 0 || nv > vmas.len() {
        return fail(BAD_QUERY, b"maps", base);
    }
    let mut runs = [PageRun::EMPTY; 256];
    let Ok(q) = r.residency(0, len, &mut runs) else {
        return fail(BAD_QUERY, b"residency", base);
    };
    if q.end != len {
        return fail(BAD_QUERY, b"residency runs", base);
    }
    let tells_guard = q.tells.guard;
    for p in 0..pages {
        let addr = base + p * ps();
        let Some(st) = r.state(p * ps()) else {
            return fail(BAD_STATE, b"state None inside", addr);
        };
        match lookup(addr) {
            Some(l) if l.state == st && l.base == base && l.len == len => {}
            _ => return fail(BAD_LOOKUP, b"lookup", addr),
        }
        let Some(v) = vmas[..nv].iter().find(|v| v.contains(addr)) else {
            return fail(BAD_PERMS, b"no VMA", addr);
        };
        let rw = &v.perms[..3] == b"rw-";
        let none = &v.perms[..3] == b"---";
        let res = runs
            .iter()
            .find(|x| x.offset <= p * ps() && p * ps() < x.offset + x.len)
            .map(|x| x.residence);
        let resident = resident_pages(addr, ps());
        match st {
            State::Ready => {
                if !rw {
                    return fail(BAD_PERMS, b"Ready not rw", addr);
                }
                // SAFETY: a Ready page (rw-p, checked above).
                if !unsafe { page_tag_intact(addr, MAGIC) } {
                    return fail(BAD_CONTENT, b"Ready page lost its contents", addr);
                }
            }
            State::Prepared => {
                if !rw {
                    return fail(BAD_PERMS, b"Prepared not rw", addr);
                }
                if resident != 0 {
                    return fail(BAD_RESIDENT, b"Prepared page resident", addr);
                }
            }
            State::Reserved => {
                if !none {
                    return fail(BAD_PERMS, b"Reserved not PROT_NONE", addr);
                }
                if resident != 0 {
                    return fail(BAD_RESIDENT, b"Reserved page resident", addr);
                }
            }
            State::Faulted => {
                let guard = rw && (!tells_guard || res == Some(Residence::Guard));
                let protected = none && res != Some(Residence::Present);
                if !(guard || protected) {
                    return fail(
                        BAD_GUARD,
                        b"Faulted page neither guarded nor PROT_NONE",
                        addr,
                    );
                }
                if resident != 0 {
                    return fail(BAD_RESIDENT, b"Faulted page resident", addr);
                }
            }
        }
    }
    // A transition on every page: none may be left held.
    for p in 0..pages {
        let (o, addr) = (p * ps(), base + p * ps());
        let st = r.state(o).unwrap();
        // SAFETY: the child owns every page now; nothing references them.
        let (ok, want) = unsafe {
            match st {
                State::Ready => (r.unused(o, ps()).is_ok(), State::Prepared),
                State::Prepared => (r.used(o, ps()).is_ok(), State::Ready),
                State::Reserved | State::Faulted => (r.map(o, ps()).is_ok(), State::Prepared),
            }
        };
        if !ok {
            return fail(BAD_TRANSITION, b"transition refused", addr);
        }
        if r.state(o) != Some(want) {
            return fail(BAD_AFTER, b"state after the transition", addr);
        }
    }
    0
}

fn child_checks(world: &World) -> i32 {
    for r in &world.regions {
        let c = check_region(r);
        if c != 0 {
            return c;
        }
    }
    0
}

/// One thread's work: random transitions on its pages, a fork now and then.
fn worker(world: &World, t: usize, forks: &AtomicUsize, failed: &AtomicUsize, stop: &AtomicBool) {
    let mut rng = Rng::new(0xf0 + t as u64);
    let pages = world.pages_of(t);
    let mut model = vec![State::Reserved; pages.len()];
    let wanted = forks_wanted();
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ops += 1;
        if rng.below(6) == 0 {
            if forks.fetch_add(1, Ordering::Relaxed) >= wanted {
                stop.store(true, Ordering::Relaxed);
                break;
            }
            // SAFETY: fork has no preconditions; the child only runs the allocation-free
            // checks and `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                let code = child_checks(world);
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) };
            }
            assert!(pid > 0, "fork failed");
            let mut status = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                eprintln!("thread {t}: child status {status:#x} after {ops} operations");
                failed.fetch_add(1, Ordering::Relaxed);
                stop.store(true, Ordering::Relaxed);
            }
            continue;
        }
        let i = rng.below(pages.len());
        let pg = pages[i];
        let r = &world.regions[pg.r];
        let (o, addr) = (pg.p * ps(), world.addr(pg));
        match model[i] {
            State::Reserved | State::Faulted => {
                r.map(o, ps()).unwrap();
                model[i] = State::Prepared;
            }
            State::Prepared => {
                r.used(o, ps()).unwrap();
                fill(addr);
                model[i] = State::Ready;
            }
            State::Ready => match rng.below(3) {
                0 => {
                    unflag(addr);
                    // SAFETY: this thread's own page; nothing references it.
                    let _ = unsafe { r.unused_with(o, ps(), UnusedAdvice::DontNeed) }.unwrap();
                    model[i] = State::Prepared;
                }
                1 => {
                    unflag(addr);
                    // SAFETY: as above.
                    let _ = unsafe { r.fault(o, ps()) }.unwrap();
                    model[i] = State::Faulted;
                }
                _ => {
                    // A batch of this thread's Ready pages, on both reservations.
                    let fault = rng.below(2) == 0;
                    let kind = if fault {
                        BatchKind::Fault(FaultStrategy::Auto)
                    } else {
                        BatchKind::Unused(UnusedAdvice::DontNeed)
                    };
                    let mut b: Batch<'_, 8> = Batch::new(kind);
                    let mut queued = Vec::new();
                    for _ in 0..8 {
                        let j = rng.below(pages.len());
                        if model[j] == State::Ready && !queued.contains(&j) {
                            let pj = pages[j];
                            unflag(world.addr(pj));
                            // SAFETY: as above.
                            unsafe { b.push(&world.regions[pj.r], pj.p * ps(), ps()) }.unwrap();
                            queued.push(j);
                        }
                    }
                    // SAFETY: as above.
                    let rep = unsafe { b.flush() };
                    assert_eq!(
                        (rep.ranges, rep.refused, rep.failed),
                        (queued.len(), 0, 0),
                        "{rep:?}"
                    );
                    for j in queued {
                        model[j] = if fault {
                            State::Faulted
                        } else {
                            State::Prepared
                        };
                    }
                }
            },
        }
    }
    // The forks changed nothing for the parent: osmem and the kernel agree with the model.
    for (i, pg) in pages.iter().enumerate() {
        let r = &world.regions[pg.r];
        let addr = world.addr(*pg);
        assert_eq!(r.state(pg.p * ps()), Some(model[i]), "thread {t} page {i}");
        if model[i] == State::Ready {
            // SAFETY: Ready, this thread's.
            assert_eq!(unsafe { (addr as *const u64).read() }, tag(addr));
        }
        if model[i] == State::Prepared {
            assert_eq!(resident_pages(addr, ps()), 0);
        }
    }
}

#[test]
fn children_forked_beside_transitions_find_every_page_consistent_and_usable() {
    osmem::probe();
    let world = World::new();
    let forks = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let t0 = std::time::Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (world, forks, failed, stop) = (&world, &forks, &failed, &stop);
            s.spawn(move || worker(world, t, forks, failed, stop));
        }
    });
    let n = forks.load(Ordering::Relaxed).min(forks_wanted());
    eprintln!(
        "{n} forks beside {THREADS} threads of transitions in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a child found a page wrong"
    );
    assert!(n >= forks_wanted(), "{n} forks");
    let _ = vma_at(world.regions[0].as_ptr() as usize);
}

/// The first forks of a process, made at once by several threads (a test harness starting
/// its tests): every child finds its own reservation usable. (A thread used to read the fork
/// owner's pid before the forking thread had stored it, take that fork for another
/// process's and steal it; the children then found their locks orphaned and answered
/// `Busy`.) Each round is a fresh process of this test binary, so its forks are its first.
#[test]
fn first_forks_at_once_from_many_threads_leave_every_child_usable() {
    const ROLE: &str = "OSMEM_FIRST_FORKS_ROLE";
    const THREADS: usize = 8;
    if std::env::var_os(ROLE).is_some() {
        let ps = osmem::page_size();
        let rs: Vec<Reservation> = (0..THREADS)
            .map(|_| Reservation::reserve(16 * ps).unwrap())
            .collect();
        let barrier = std::sync::Barrier::new(THREADS);
        let bad = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in &rs {
                let (barrier, bad, rs) = (&barrier, &bad, &rs);
                s.spawn(move || {
                    barrier.wait();
                    // Every reservation of the process, not only this thread's: a lock left
                    // orphaned by the race is on any of them.
                    let exit = osmem_testkit::in_child(|| {
                        i32::from(
                            rs.iter()
                                .any(|r| r.map(0, 4 * ps).is_err() || r.used(0, 4 * ps).is_err()),
                        )
                    });
                    if exit != osmem_testkit::ChildExit::Code(0) {
                        bad.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        println!("RESULT bad={}", bad.into_inner());
        return;
    }
    let mut bad = 0;
    for _ in 0..100 {
        let kv = osmem_testkit::rerun_self(
            "first_forks_at_once_from_many_threads_leave_every_child_usable",
            &[(ROLE, "1")],
            &[],
        );
        bad += kv["bad"].parse::<usize>().unwrap();
    }
    assert_eq!(bad, 0, "children that found their own reservation unusable");
}
