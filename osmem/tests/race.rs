//! This binary holds one test (it sets the process-wide prefault knob).
//!
//! Overlapping concurrent transitions: each transition claims its pages atomically before any
//! syscall, so two threads racing on overlapping ranges can never both act on the shared
//! pages. Every round, at most one thread succeeds; a thread that meets a page the other
//! holds gets `Error::Busy` and changes nothing; both can fail only when the holder itself
//! met a page in the wrong state (and let its claim go). Accounting stays exact, and the
//! kernel agrees with the table.

use osmem::{Error, Reservation, State};
use osmem_testkit::resident_pages;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};

const PAGES: usize = 1024;
const ROUNDS: usize = 1000;

const OK: u8 = 0;
const BUSY: u8 = 1;
const WRONG_STATE: u8 = 2;

#[test]
fn two_threads_racing_on_one_range_never_both_win() {
    let ps = osmem::page_size();
    // Prefault makes `used` populate the pages, so every transition holds its pages for a
    // while (the window in which the other thread must be refused). This binary holds only
    // this test, so changing the process-wide knob is safe here.
    osmem::configure(osmem::Config::new().prefault(true));
    let r = Reservation::reserve(PAGES * ps).unwrap();
    // Overlapping ranges: thread 0 takes pages 0..768, thread 1 pages 256..1024.
    let ranges = [(0, 768 * ps), (256 * ps, 768 * ps)];
    let barrier = Barrier::new(2);
    let start = SpinStart::default();
    let outcome = [AtomicU8::new(OK), AtomicU8::new(OK)];
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let tally = Tally::default();
    std::thread::scope(|s| {
        for t in 0..2 {
            let (r, barrier, start, outcome, failure, tally) =
                (&r, &barrier, &start, &outcome, &failure, &tally);
            s.spawn(move || {
                let (off, len) = ranges[t];
                for round in 0..ROUNDS {
                    // Every round both threads try the same next step of the cycle.
                    start.arrive(round);
                    // SAFETY (unused, fault): nothing in this test reads or writes the region.
                    let res = match round % 5 {
                        0 => r.map(off, len),
                        1 | 3 => r.used(off, len),
                        2 => unsafe { r.unused(off, len) }.map(|_| ()),
                        _ => unsafe { r.fault(off, len) }.map(|_| ()),
                    };
                    let code = match res {
                        Ok(()) => OK,
                        Err(Error::Busy { .. }) => BUSY,
                        Err(Error::WrongState { .. }) => WRONG_STATE,
                        Err(e) => {
                            fail(failure, format!("thread {t} round {round}: {e}"));
                            WRONG_STATE
                        }
                    };
                    outcome[t].store(code, Ordering::Relaxed);
                    barrier.wait();
                    if t == 0 {
                        check_round(r, round, outcome, tally, failure);
                    }
                    barrier.wait();
                    // A failed check ends both threads (a panic would leave the other one
                    // waiting at the barrier for ever).
                    if failure.lock().unwrap().is_some() {
                        break;
                    }
                }
            });
        }
    });
    if let Some(msg) = failure.into_inner().unwrap() {
        panic!("{msg}");
    }
    let (wins, busy) = (tally.wins.into_inner(), tally.busy.into_inner());
    eprintln!("{wins} rounds won, {busy} Busy refusals in {ROUNDS} rounds");
    // The race really happened (refusals while the other thread held pages), and the cycle
    // made progress (a round is lost only after a round left the two ranges out of step).
    assert!(
        busy > 0,
        "no round overlapped: the test did not exercise the race"
    );
    assert!(wins > ROUNDS / 2, "only {wins} of {ROUNDS} rounds won");
    // The kernel agrees with the table: pages that are not Ready hold nothing.
    for p in 0..PAGES {
        if r.state(p * ps) != Some(State::Ready) {
            assert_eq!(
                resident_pages(r.as_ptr() as usize + p * ps, ps),
                0,
                "page {p}"
            );
        }
    }
}

#[derive(Default)]
struct Tally {
    wins: AtomicUsize,
    busy: AtomicUsize,
}

/// Both threads spin until both have arrived for `round`, so they start the round within
/// nanoseconds of each other (a blocking barrier wakes them tens of µs apart, and the race
/// would rarely happen).
#[derive(Default)]
struct SpinStart(AtomicUsize);

impl SpinStart {
    fn arrive(&self, round: usize) {
        self.0.fetch_add(1, Ordering::AcqRel);
        while self.0.load(Ordering::Acquire) < 2 * (round + 1) {
            std::hint::spin_loop();
        }
    }
}

/// Between rounds (the other thread waits): at most one winner; never both refused as Busy
/// (a Busy refusal means the other thread held the pages, and it either succeeded or met a
/// page in the wrong state); the bytes add up to the region; and after each cycle's fault
/// every page is brought back to Faulted, so the next cycle starts in step.
fn check_round(
    r: &Reservation,
    round: usize,
    outcome: &[AtomicU8; 2],
    tally: &Tally,
    failure: &Mutex<Option<String>>,
) {
    let ps = osmem::page_size();
    let o = [
        outcome[0].load(Ordering::Relaxed),
        outcome[1].load(Ordering::Relaxed),
    ];
    let wins = o.iter().filter(|&&c| c == OK).count();
    if wins > 1 {
        fail(failure, format!("round {round}: both threads won"));
    }
    if o == [BUSY, BUSY] {
        fail(failure, format!("round {round}: both refused as Busy"));
    }
    tally.wins.fetch_add(wins, Ordering::Relaxed);
    tally
        .busy
        .fetch_add(o.iter().filter(|&&c| c == BUSY).count(), Ordering::Relaxed);
    let total: u64 = [
        State::Reserved,
        State::Prepared,
        State::Ready,
        State::Faulted,
    ]
    .iter()
    .map(|&s| r.bytes_in(s))
    .sum();
    if total != (PAGES * ps) as u64 {
        fail(failure, format!("round {round}: {total} bytes accounted"));
    }
    if round % 5 == 4 {
        settle_everything(r);
    }
}

fn fail(failure: &Mutex<Option<String>>, msg: String) {
    failure.lock().unwrap().get_or_insert(msg);
}

/// Bring every page to Faulted (from whatever mix the losers left): map what can be mapped,
/// use it, fault it.
fn settle_everything(r: &Reservation) {
    let ps = osmem::page_size();
    for p in 0..PAGES {
        let off = p * ps;
        if matches!(r.state(off), Some(State::Reserved | State::Faulted)) {
            r.map(off, ps).unwrap();
        }
        if r.state(off) == Some(State::Prepared) {
            r.used(off, ps).unwrap();
        }
        // SAFETY: nothing reads or writes the region.
        let _ = unsafe { r.fault(off, ps) }.unwrap();
    }
}
