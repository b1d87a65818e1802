//! Signal handlers that call osmem, with real signals; a fork from a handler; children made
//! without fork handlers; the process-wide lookup against `/proc/self/maps`.
//!
//! Every test that could hang has a watchdog thread that aborts the process (failing the
//! test) when nothing moves for a while.

use osmem::{lookup, Error, Reservation, State, UnusedAdvice};
use osmem_testkit::{resident_pages, vma_at, Rng};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn ps() -> usize {
    osmem::page_size()
}

#[allow(clippy::declare_interior_mutable_const)] // a repeat operand (the MSRV has no inline const)
const ZERO: AtomicUsize = AtomicUsize::new(0);

fn scale(release: usize, debug: usize) -> usize {
    if cfg!(debug_assertions) {
        debug
    } else {
        release
    }
}

/// Aborts the process if `progress` does not move for `quiet` (a hang), until dropped.
struct Watchdog {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn new(what: &'static str, progress: &'static AtomicU64, quiet: Duration) -> Watchdog {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut last, mut since) = (progress.load(Ordering::Relaxed), Instant::now());
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let now = progress.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > quiet {
                    eprintln!("watchdog: {what}: no progress for {quiet:?} (at {now}): a hang");
                    std::process::abort();
                }
            }
        });
        Watchdog {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

fn install(sig: libc::c_int, h: Handler) {
    // SAFETY: a zeroed sigaction with our handler; SA_SIGINFO matches its signature.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = h as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &sa, core::ptr::null_mut()), 0);
    }
}

/// The index of the calling thread among `tps` (its `osmem::current_thread()`).
fn thread_index(tps: &[AtomicUsize]) -> Option<usize> {
    let me = osmem::current_thread();
    tps.iter().position(|t| t.load(Ordering::Relaxed) == me)
}

// ---------------------------------------------------------------------------------------
// 1. A storm of SIGUSR1 sent with pthread_kill to threads in the middle of transitions.

const STORM_THREADS: usize = 4;
const STORM_PAGES: usize = 32;
/// What a worker is doing now, for its signal handler: the page's address | the operation.
static CUR: [AtomicUsize; STORM_THREADS] = [ZERO; STORM_THREADS];
static TPS: [AtomicUsize; STORM_THREADS] = [ZERO; STORM_THREADS];
/// Each worker's pthread_t, for pthread_kill.
static PTH: [AtomicUsize; STORM_THREADS] = [ZERO; STORM_THREADS];
/// Each worker's page that only its signal handler transitions.
static HPAGE: [AtomicUsize; STORM_THREADS] = [ZERO; STORM_THREADS];
static BASE: [AtomicUsize; STORM_THREADS] = [ZERO; STORM_THREADS];
static HANDLED: AtomicU64 = AtomicU64::new(0);
static HANDLER_BUSY: AtomicU64 = AtomicU64::new(0);
static HANDLER_WRONG: AtomicU64 = AtomicU64::new(0);
static STORM_PROGRESS: AtomicU64 = AtomicU64::new(0);
/// The first thing a handler found wrong (0: nothing).
static STORM_FAIL: AtomicI32 = AtomicI32::new(0);

const OP_MAP: usize = 1;
const OP_USED: usize = 2;
const OP_UNUSED: usize = 3;
const OP_FAULT: usize = 4;

fn storm_fail(code: i32) {
    let _ = STORM_FAIL.compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
}

/// Async-signal-safe work only: osmem's reads, lookups and transitions, and atomics.
extern "C" fn storm_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let Some(t) = thread_index(&TPS) else { return };
    let ps = ps();
    // 1. The page the interrupted transition is on reads as its state before or after, at
    // once; a transition that is wrong from both is refused at once (WrongState, or Busy
    // while the interrupted one holds the page or the map's lock).
    let cur = CUR[t].load(Ordering::Relaxed);
    if cur != 0 {
        let (addr, op) = (cur & !(ps - 1), cur & (ps - 1));
        let Some(l) = lookup(addr) else {
            return storm_fail(1);
        };
        let ok_states: &[State] = match op {
            OP_MAP => &[State::Reserved, State::Faulted, State::Prepared],
            OP_USED => &[State::Prepared, State::Ready],
            OP_UNUSED => &[State::Ready, State::Prepared],
            _ => &[State::Ready, State::Faulted],
        };
        if !ok_states.contains(&l.state) {
            return storm_fail(2);
        }
        let off = addr - l.base;
        // SAFETY: refused whatever the page's state (checked below): nothing changes.
        let r = unsafe {
            match op {
                OP_MAP => l.id.fault(off, ps).map(|_| ()),
                OP_USED | OP_UNUSED => l.id.map(off, ps),
                _ => Err(Error::WrongState {
                    op: osmem::Op::Map,
                    offset: off,
                    found: State::Ready,
                }),
            }
        };
        match r {
            Err(Error::Busy { .. }) => {
                HANDLER_BUSY.fetch_add(1, Ordering::Relaxed);
            }
            Err(Error::WrongState { .. }) => {
                HANDLER_WRONG.fetch_add(1, Ordering::Relaxed);
            }
            _ => return storm_fail(3),
        }
    }
    // 2. The handler's own page: a real transition (Busy only if the interrupted code holds
    // that map's lock).
    let hp = HPAGE[t].load(Ordering::Relaxed);
    let Some(l) = lookup(hp) else {
        return storm_fail(4);
    };
    let off = hp - l.base;
    // SAFETY: the handler's own page: nothing references it.
    let r = unsafe {
        match l.state {
            State::Reserved | State::Faulted => l.id.map(off, ps),
            State::Prepared => l.id.used(off, ps),
            State::Ready => l.id.unused(off, ps).map(|_| ()),
        }
    };
    match r {
        Ok(()) => {}
        Err(Error::Busy { .. }) => {
            HANDLER_BUSY.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => return storm_fail(5),
    }
    // 3. The lookup of an address inside the thread's reservation names it.
    let base = BASE[t].load(Ordering::Relaxed);
    match lookup(base + (HANDLED.load(Ordering::Relaxed) as usize % STORM_PAGES) * ps) {
        Some(l) if l.base == base && l.len == STORM_PAGES * ps => {}
        _ => return storm_fail(6),
    }
    HANDLED.fetch_add(1, Ordering::Relaxed);
    STORM_PROGRESS.fetch_add(1, Ordering::Relaxed);
}

fn storm_worker(t: usize, r: &Reservation, stop: &AtomicBool) -> u64 {
    // SAFETY: pthread_self has no preconditions.
    PTH[t].store(unsafe { libc::pthread_self() } as usize, Ordering::Relaxed);
    TPS[t].store(osmem::current_thread(), Ordering::Release);
    let base = r.as_ptr() as usize;
    let mut rng = Rng::new(500 + t as u64);
    // Page 0 is the handler's; the worker uses the others.
    let mut model = [State::Reserved; STORM_PAGES];
    let mut ops = 0;
    while !stop.load(Ordering::Relaxed) {
        let p = 1 + rng.below(STORM_PAGES - 1);
        let (o, addr) = (p * ps(), base + p * ps());
        let op = match model[p] {
            State::Reserved | State::Faulted => OP_MAP,
            State::Prepared => OP_USED,
            State::Ready if rng.below(2) == 0 => OP_UNUSED,
            State::Ready => OP_FAULT,
        };
        CUR[t].store(addr | op, Ordering::Relaxed);
        // SAFETY: the worker's own page; nothing references it.
        let (res, to) = unsafe {
            match op {
                OP_MAP => (r.map(o, ps()), State::Prepared),
                OP_USED => (r.used(o, ps()), State::Ready),
                OP_UNUSED => (
                    r.unused_with(o, ps(), UnusedAdvice::DontNeed).map(|_| ()),
                    State::Prepared,
                ),
                _ => (r.fault(o, ps()).map(|_| ()), State::Faulted),
            }
        };
        CUR[t].store(0, Ordering::Relaxed);
        res.unwrap_or_else(|e| panic!("thread {t}: {e}"));
        model[p] = to;
        ops += 1;
        STORM_PROGRESS.fetch_add(1, Ordering::Relaxed);
    }
    for (p, &m) in model.iter().enumerate().skip(1) {
        assert_eq!(r.state(p * ps()), Some(m), "thread {t} page {p}");
        if m == State::Prepared {
            assert_eq!(resident_pages(base + p * ps(), ps()), 0);
        }
    }
    ops
}

#[test]
fn handlers_read_look_up_and_transition_in_a_signal_storm_and_nothing_hangs() {
    osmem::probe();
    install(libc::SIGUSR1, storm_handler);
    let _dog = Watchdog::new("signal storm", &STORM_PROGRESS, Duration::from_secs(30));
    let regions: Vec<Reservation> = (0..STORM_THREADS)
        .map(|_| Reservation::reserve(STORM_PAGES * ps()).unwrap())
        .collect();
    for (t, r) in regions.iter().enumerate() {
        BASE[t].store(r.as_ptr() as usize, Ordering::Relaxed);
        HPAGE[t].store(r.as_ptr() as usize, Ordering::Relaxed);
    }
    let signals = scale(200_000, 30_000);
    let stop = AtomicBool::new(false);
    let (ops, sent) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let workers: Vec<_> = regions
            .iter()
            .enumerate()
            .map(|(t, r)| {
                let stop = &stop;
                s.spawn(move || storm_worker(t, r, stop))
            })
            .collect();
        while TPS.iter().any(|t| t.load(Ordering::Acquire) == 0) {
            std::thread::yield_now();
        }
        let targets: Vec<libc::pthread_t> = PTH
            .iter()
            .map(|p| p.load(Ordering::Relaxed) as libc::pthread_t)
            .collect();
        let mut rng = Rng::new(3);
        for i in 0..signals {
            // SAFETY: the workers are alive until `stop`.
            unsafe { libc::pthread_kill(targets[rng.below(STORM_THREADS)], libc::SIGUSR1) };
            if i % 64 == 0 {
                std::thread::yield_now();
            }
        }
        stop.store(true, Ordering::Relaxed);
        let ops: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        (ops, signals)
    });
    let (handled, busy, wrong) = (
        HANDLED.load(Ordering::Relaxed),
        HANDLER_BUSY.load(Ordering::Relaxed),
        HANDLER_WRONG.load(Ordering::Relaxed),
    );
    eprintln!(
        "{sent} signals sent, {handled} handled; {ops} transitions by the workers; handlers \
         refused: {busy} busy, {wrong} wrong state"
    );
    assert_eq!(
        STORM_FAIL.load(Ordering::Relaxed),
        0,
        "a handler found something wrong"
    );
    assert!(handled > 0 && ops > 0);
}

// ---------------------------------------------------------------------------------------
// 2. Real SIGSEGVs on faulted pages: the handler finds the page with `lookup` and maps it.

static SEGV_HANDLED: AtomicU64 = AtomicU64::new(0);
static SEGV_FAIL: AtomicI32 = AtomicI32::new(0);

extern "C" fn segv_handler(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSEGV.
    let addr = unsafe { (*info).si_addr() } as usize;
    let ps = ps();
    match lookup(addr) {
        Some(l) if l.state == State::Faulted => {
            let off = (addr - l.base) & !(ps - 1);
            if l.id.map(off, ps).is_err() || l.id.used(off, ps).is_err() {
                let _ = SEGV_FAIL.compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed);
            }
            SEGV_HANDLED.fetch_add(1, Ordering::Relaxed);
        }
        // Not a page osmem faulted: the default action (death by SIGSEGV) on return.
        _ => {
            // SAFETY: restoring the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

#[test]
fn a_segv_handler_unfaults_the_page_it_trapped_on() {
    osmem::probe();
    install(libc::SIGSEGV, segv_handler);
    let pages = 64;
    // Guard markers and PROT_NONE both, and another thread making transitions meanwhile on
    // the same reservation (the handler's map waits only for its brief sections).
    let r = Reservation::alloc(2 * pages * ps()).unwrap();
    let base = r.as_ptr() as usize;
    for p in 0..pages {
        let s = if p % 2 == 0 {
            osmem::FaultStrategy::Guard
        } else {
            osmem::FaultStrategy::Protect
        };
        // SAFETY: nothing references the pages.
        let _ = unsafe { r.fault_with(p * ps(), ps(), s) }.unwrap();
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let o = (pages + i % pages) * ps();
                // SAFETY: the other half, which only this thread uses.
                let _ = unsafe { r.unused(o, ps()) }.unwrap();
                r.used(o, ps()).unwrap();
                i += 1;
            }
        });
        for p in 0..pages {
            let a = base + p * ps() + 100;
            // SAFETY: the access traps; the handler maps the page and it is retried.
            unsafe { (a as *mut u8).write_volatile(0x11) };
            assert_eq!(unsafe { (a as *const u8).read_volatile() }, 0x11);
            assert_eq!(r.state(p * ps()), Some(State::Ready));
        }
    });
    assert_eq!(SEGV_FAIL.load(Ordering::Relaxed), 0);
    assert_eq!(SEGV_HANDLED.load(Ordering::Relaxed), pages as u64);
    // An address that is not osmem's: the handler lets the default action kill the process.
    let exit = osmem_testkit::in_child(|| {
        let other = osmem_testkit::map_rw(ps()).unwrap();
        // SAFETY: our own mapping, made inaccessible.
        unsafe { libc::mprotect(other as *mut libc::c_void, ps(), libc::PROT_NONE) };
        // SAFETY: traps; the handler finds nothing and the default action ends the child.
        unsafe { (other as *mut u8).write_volatile(1) };
        0
    });
    assert_eq!(exit, osmem_testkit::ChildExit::Signal(libc::SIGSEGV));
    // SAFETY: back to the default disposition.
    unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
}

// ---------------------------------------------------------------------------------------
// 3. fork() from a signal handler that interrupted osmem on the forking thread.

const X_PAGES: usize = 256;
/// The target thread and the reservations, for its handler.
static TARGET_TP: AtomicUsize = AtomicUsize::new(0);
static TARGET_PTH: AtomicUsize = AtomicUsize::new(0);
static X_BASE: AtomicUsize = AtomicUsize::new(0);
static OTHER_BASE: [AtomicUsize; 2] = [ZERO; 2];
static IN_CHILD: AtomicBool = AtomicBool::new(false);
static CHILD_STATUS: AtomicI32 = AtomicI32::new(0);
static FORKED: AtomicU64 = AtomicU64::new(0);
static FORK_PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Child exit codes.
const C_STATE: i32 = 20;
const C_OTHER: i32 = 21;
const C_X: i32 = 22;

/// In the child: a transition on every page of a reservation (no other thread exists).
fn transition_all(base: usize, pages: usize) -> bool {
    (0..pages).all(|p| {
        let a = base + p * ps();
        let Some(l) = lookup(a) else { return false };
        let off = a - l.base;
        // SAFETY: the child owns every page.
        unsafe {
            match l.state {
                State::Ready => l.id.unused(off, ps()).is_ok(),
                State::Prepared => l.id.used(off, ps()).is_ok(),
                _ => l.id.map(off, ps()).is_ok(),
            }
        }
    })
}

extern "C" fn fork_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if osmem::current_thread() != TARGET_TP.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: fork from a signal handler is what is tested; the child runs only
    // async-signal-safe code until the handler returns.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: alarm has no preconditions: a hang ends the child with SIGALRM.
        unsafe { libc::alarm(10) };
        IN_CHILD.store(true, Ordering::Relaxed);
        // Reads never wait, whatever the interrupted code holds.
        let xb = X_BASE.load(Ordering::Relaxed);
        for p in 0..X_PAGES {
            if lookup(xb + p * ps()).is_none() {
                // SAFETY: ends the child.
                unsafe { libc::_exit(C_STATE) };
            }
        }
        // The other threads' reservations: their transitions were done or not begun at the
        // fork; every page takes a transition now, though the interrupted call still runs.
        for b in &OTHER_BASE {
            if !transition_all(b.load(Ordering::Relaxed), X_PAGES / 4) {
                // SAFETY: ends the child.
                unsafe { libc::_exit(C_OTHER) };
            }
        }
        // Return: the interrupted call finishes in the child, whose loop then checks X.
        return;
    }
    let mut status = 0;
    // SAFETY: our own child; waitpid is async-signal-safe.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let _ = CHILD_STATUS.compare_exchange(
            0,
            status | 1 << 30,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    FORKED.fetch_add(1, Ordering::Relaxed);
    FORK_PROGRESS.fetch_add(1, Ordering::Relaxed);
}

/// The target: bookkeeping-heavy transitions on X (`used` of Ready pages of a fragmented map:
/// two sections of the map's lock each, no system call), so the signal often lands inside a
/// section; and real ones now and then. In a child it stops after the interrupted call and
/// checks that every page of X takes a transition.
fn target(x: &Reservation, stop: &AtomicBool) {
    // SAFETY: pthread_self has no preconditions.
    TARGET_PTH.store(unsafe { libc::pthread_self() } as usize, Ordering::Relaxed);
    TARGET_TP.store(osmem::current_thread(), Ordering::Release);
    let mut rng = Rng::new(9);
    while !stop.load(Ordering::Relaxed) {
        // The target's pages: the even ones of the first half (Ready).
        let p = 2 * rng.below(X_PAGES / 4);
        let _ = x.used(p * ps(), ps());
        if rng.below(16) == 0 {
            // SAFETY: the target's own page.
            let _ = unsafe { x.unused(p * ps(), ps()) };
            let _ = x.used(p * ps(), ps());
        }
        if IN_CHILD.load(Ordering::Relaxed) {
            let code = if transition_all(x.as_ptr() as usize, X_PAGES) {
                0
            } else {
                C_X
            };
            // SAFETY: ends the child.
            unsafe { libc::_exit(code) };
        }
        FORK_PROGRESS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Another thread: real transitions (claims held across system calls) on its pages of X —
/// which settle while the target, forking from its handler, may hold X's lock — and on a
/// reservation of its own.
fn helper(k: usize, x: &Reservation, own: &Reservation, stop: &AtomicBool) {
    let mut rng = Rng::new(40 + k as u64);
    while !stop.load(Ordering::Relaxed) {
        // Its pages of X: the odd ones of its quarter of the second half.
        let p = X_PAGES / 2 + k * X_PAGES / 4 + 2 * rng.below(X_PAGES / 8) + 1;
        let q = rng.below(X_PAGES / 4);
        // SAFETY: pages only this thread uses.
        unsafe {
            match x.state(p * ps()).unwrap() {
                State::Ready => {
                    let _ = x.unused(p * ps(), ps()).unwrap();
                }
                State::Prepared => x.used(p * ps(), ps()).unwrap(),
                _ => x.map(p * ps(), ps()).unwrap(),
            }
            match own.state(q * ps()).unwrap() {
                State::Ready => {
                    let _ = own.fault(q * ps(), ps()).unwrap();
                }
                State::Prepared => own.used(q * ps(), ps()).unwrap(),
                _ => own.map(q * ps(), ps()).unwrap(),
            }
        }
        FORK_PROGRESS.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn fork_from_a_handler_that_interrupted_osmem_does_not_deadlock() {
    osmem::probe();
    install(libc::SIGUSR2, fork_handler);
    let _dog = Watchdog::new(
        "fork from a handler",
        &FORK_PROGRESS,
        Duration::from_secs(30),
    );
    let x = Reservation::alloc(X_PAGES * ps()).unwrap();
    // Fragment X: every odd page Prepared, so its map has nodes and claims take sections.
    for p in (1..X_PAGES).step_by(2) {
        // SAFETY: nothing references the pages.
        let _ = unsafe { x.unused(p * ps(), ps()) }.unwrap();
    }
    let own: Vec<Reservation> = (0..2)
        .map(|_| Reservation::alloc(X_PAGES / 4 * ps()).unwrap())
        .collect();
    X_BASE.store(x.as_ptr() as usize, Ordering::Relaxed);
    for (b, r) in OTHER_BASE.iter().zip(&own) {
        b.store(r.as_ptr() as usize, Ordering::Relaxed);
    }
    let forks = scale(600, 150) as u64;
    let before = osmem::stats();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| target(&x, &stop));
        for (k, r) in own.iter().enumerate() {
            let (x, stop) = (&x, &stop);
            s.spawn(move || helper(k, x, r, stop));
        }
        while TARGET_TP.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        let pt = TARGET_PTH.load(Ordering::Relaxed) as libc::pthread_t;
        let mut rng = Rng::new(17);
        while FORKED.load(Ordering::Relaxed) < forks {
            let f = FORKED.load(Ordering::Relaxed);
            // SAFETY: the target runs until `stop`.
            unsafe { libc::pthread_kill(pt, libc::SIGUSR2) };
            while FORKED.load(Ordering::Relaxed) == f {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_micros(rng.below(300) as u64));
        }
    });
    let after = osmem::stats();
    let reentrant = after.forks_reentrant - before.forks_reentrant;
    eprintln!(
        "{forks} forks from the handler; {reentrant} while the target was inside osmem; {} \
         settles handed over; {} calls answered Busy at once",
        after.settles_handed_over - before.settles_handed_over,
        after.reentered - before.reentered
    );
    assert_eq!(
        CHILD_STATUS.load(Ordering::Relaxed),
        0,
        "a child failed (status | 1 << 30)"
    );
    assert!(
        reentrant > 0,
        "no fork landed inside osmem: the case was not exercised"
    );
    // The parent: every page of X still takes a transition.
    for p in 0..X_PAGES {
        let st = x.state(p * ps()).unwrap();
        // SAFETY: the threads are done; nothing references X.
        unsafe {
            match st {
                State::Ready => {
                    let _ = x.unused(p * ps(), ps()).unwrap();
                }
                State::Prepared => x.used(p * ps(), ps()).unwrap(),
                _ => x.map(p * ps(), ps()).unwrap(),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// 4. Children made without the fork handlers (a raw clone, as _Fork makes them): a lock
//    another thread held there is orphaned; calls answer Busy instead of waiting.

static CLONE_PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Sets the flag when dropped, also by a panic.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn children_made_without_fork_handlers_never_hang() {
    osmem::probe();
    let _dog = Watchdog::new(
        "raw clone children",
        &CLONE_PROGRESS,
        Duration::from_secs(30),
    );
    let pages = 128;
    let x = Reservation::alloc(pages * ps()).unwrap();
    for p in (1..pages).step_by(2) {
        // SAFETY: nothing references the pages.
        let _ = unsafe { x.unused(p * ps(), ps()) }.unwrap();
    }
    let stop = AtomicBool::new(false);
    let (mut ok, mut busy) = (0u64, 0u64);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let p = 2 * (i % (pages / 2));
                let _ = x.used(p * ps(), ps());
                i += 1;
            }
        });
        // A failed check below panics: the worker must stop then too, or the scope waits for
        // it for ever and the watchdog reports a hang instead of the failure.
        let _stop = StopOnDrop(&stop);
        for _ in 0..scale(300, 100) {
            // SAFETY: a raw clone (no fork handlers), as `_Fork` makes a child; the child
            // runs only osmem calls and `_exit`.
            let pid = unsafe {
                libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0)
            } as libc::pid_t;
            if pid == 0 {
                // SAFETY: alarm: a hang ends the child with SIGALRM.
                unsafe { libc::alarm(10) };
                let mut busy = 0;
                for p in 0..pages {
                    if x.state(p * ps()).is_none() {
                        // SAFETY: ends the child.
                        unsafe { libc::_exit(3) };
                    }
                    match x.used(p * ps(), ps()) {
                        Ok(()) | Err(Error::WrongState { .. }) => {}
                        Err(Error::Busy { .. }) => busy = 1,
                        Err(_) => unsafe { libc::_exit(4) },
                    }
                }
                // SAFETY: ends the child.
                unsafe { libc::_exit(busy) };
            }
            assert!(pid > 0);
            let mut status = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(
                libc::WIFEXITED(status),
                "child status {status:#x}: it hung or crashed"
            );
            match libc::WEXITSTATUS(status) {
                0 => ok += 1,
                1 => busy += 1,
                c => panic!("child exit {c}"),
            }
            CLONE_PROGRESS.fetch_add(1, Ordering::Relaxed);
        }
    });
    eprintln!("raw clone children: {ok} found nothing held, {busy} answered Busy somewhere");
}

// ---------------------------------------------------------------------------------------
// 5. The lookup against /proc/self/maps, for every reservation alive.

#[test]
fn lookup_agrees_with_proc_self_maps_for_every_reservation() {
    osmem::probe();
    let mut rng = Rng::new(123);
    let mut live: Vec<Reservation> = Vec::new();
    let mut gone: Vec<(usize, usize)> = Vec::new();
    // More than the 64 static slots, so the registry's arena chunks are used too.
    for i in 0..200 {
        let pages = 1 + rng.below(40);
        let r = if i % 3 == 0 {
            Reservation::alloc(pages * ps()).unwrap()
        } else {
            let r = Reservation::reserve(pages * ps()).unwrap();
            if pages > 1 {
                r.map(0, ps()).unwrap();
            }
            r
        };
        live.push(r);
        if rng.below(4) == 0 {
            let k = rng.below(live.len());
            let r = live.swap_remove(k);
            gone.push((r.as_ptr() as usize, r.len()));
        }
    }
    for r in &live {
        let (base, len) = (r.as_ptr() as usize, r.len());
        for a in [base, base + len / 2, base + len - 1] {
            let l = lookup(a).unwrap_or_else(|| panic!("{a:#x} not found"));
            assert_eq!((l.base, l.len, l.id), (base, len, r.id()));
            assert_eq!(Some(l.state), r.state((a - base) & !(ps() - 1)));
            assert!(vma_at(a).is_some(), "{a:#x}: not mapped");
        }
        // The kernel: `/proc/self/maps` covers the reservation's whole range without a gap
        // (the kernel may merge it with a neighbour's mapping of the same kind).
        let mut vmas = [vma_at(base).unwrap(); 64];
        let n = osmem_testkit::vmas_within(base, base + len, &mut vmas);
        assert!(n >= 1 && n <= vmas.len());
        assert!(vmas[0].start <= base && vmas[n - 1].end >= base + len);
        for w in vmas[..n].windows(2) {
            assert_eq!(w[0].end, w[1].start, "a gap in {base:#x}+{len:#x}");
        }
        if let Some(l) = lookup(base + len) {
            assert_eq!(l.base, base + len, "the next page is another reservation's");
        }
    }
    for &(base, len) in &gone {
        if let Some(l) = lookup(base) {
            // The address was reused by a later reservation.
            assert!(live.iter().any(|r| r.id() == l.id));
        } else {
            // Not osmem's any more: no live reservation covers it.
            assert!(
                !live.iter().any(|r| {
                    let rb = r.as_ptr() as usize;
                    base >= rb && base < rb + r.len()
                }),
                "{base:#x}+{len:#x}"
            );
        }
    }
    let on_stack = 0u8;
    assert!(lookup(&on_stack as *const u8 as usize).is_none());
    if let Some(m) = osmem::metadata_range() {
        assert!(
            lookup(m.start).is_none(),
            "osmem's metadata is no reservation"
        );
    }
}
