//! The per-page state table against a plain model: random transitions on random page ranges
//! (crossing the table's 8-page words at every alignment), checking after every step that
//! each transition succeeded exactly when every page was in a state it starts from, that a
//! refused one changed nothing, and that each page's state and the region's byte accounting
//! match the model. The kernel's view is checked too: Ready pages are writable and keep what
//! was written; Prepared/Faulted pages made Ready again read zero (unused defaults to
//! DONTNEED, fault drops pages).

use osmem::{Error, FaultStrategy, Reservation, State};

const PAGES: usize = 77; // not a multiple of 8: the last table word is partial

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Copy, Clone, Debug)]
enum Step {
    Map,
    Used,
    Unused,
    Fault(FaultStrategy),
}

fn allowed(step: Step, s: State) -> bool {
    match step {
        Step::Map => matches!(s, State::Reserved | State::Faulted),
        Step::Used => s == State::Prepared,
        Step::Unused | Step::Fault(_) => s == State::Ready,
    }
}

fn after(step: Step) -> State {
    match step {
        Step::Map | Step::Unused => State::Prepared,
        Step::Used => State::Ready,
        Step::Fault(_) => State::Faulted,
    }
}

#[test]
fn table_matches_model_under_random_transitions() {
    let ps = osmem::page_size();
    let r = Reservation::reserve(PAGES * ps).unwrap();
    let base = r.as_ptr();
    let mut model = [State::Reserved; PAGES];
    // What each Ready page holds: Some(byte) once written, None when it must read zero.
    let mut data: [Option<u8>; PAGES] = [None; PAGES];
    let mut rng = Lcg(0x05e3_a11c);
    let strategies = [
        FaultStrategy::Guard,
        FaultStrategy::Protect,
        FaultStrategy::Go,
        FaultStrategy::Remap,
    ];
    let mut ok_steps = 0;
    for i in 0..10_000u32 {
        let first = rng.below(PAGES);
        let mut n = 1 + rng.below((PAGES - first).min(12));
        let mut step = match rng.below(4) {
            0 => Step::Map,
            1 => Step::Used,
            2 => Step::Unused,
            _ => Step::Fault(strategies[rng.below(4)]),
        };
        // Three times in four, stay inside one run of equal state and pick a step allowed
        // from it, so the walk makes progress; the rest probe refusals across runs.
        if rng.below(4) != 0 {
            let run = model[first..]
                .iter()
                .take_while(|&&m| m == model[first])
                .count();
            n = n.min(run);
            step = match model[first] {
                State::Reserved | State::Faulted => Step::Map,
                State::Prepared => Step::Used,
                State::Ready if rng.below(2) == 0 => Step::Unused,
                State::Ready => Step::Fault(strategies[rng.below(4)]),
            };
        }
        let (off, len) = (first * ps, n * ps);
        let res: Result<(), Error> = unsafe {
            match step {
                Step::Map => r.map(off, len),
                Step::Used => r.used(off, len),
                Step::Unused => r.unused(off, len).map(|u| assert!(u.zeroed)),
                Step::Fault(s) => r.fault_with(off, len, s).map(|f| assert!(f.traps())),
            }
        };
        let bad = (first..first + n).find(|&p| !allowed(step, model[p]));
        match (bad, res) {
            (None, Ok(())) => {
                ok_steps += 1;
                for p in first..first + n {
                    model[p] = after(step);
                    if step_drops(step) {
                        data[p] = None;
                    }
                }
            }
            (Some(p), Err(Error::WrongState { offset, found, .. })) => {
                assert_eq!(offset, p * ps, "step {i}: {step:?} first offending page");
                assert_eq!(found, model[p]);
            }
            (bad, res) => {
                panic!("step {i}: {step:?} on {first}+{n}: model says {bad:?}, osmem {res:?}")
            }
        }
        // Write to a few Ready pages and check every Ready page's contents.
        for p in 0..PAGES {
            assert_eq!(r.state(p * ps), Some(model[p]), "step {i}: page {p}");
            if model[p] == State::Ready {
                let at = unsafe { base.add(p * ps) };
                let want = data[p].unwrap_or(0);
                assert_eq!(
                    unsafe { at.read_volatile() },
                    want,
                    "step {i}: page {p} contents"
                );
                if rng.below(3) == 0 {
                    let v = (rng.below(255) + 1) as u8;
                    unsafe { at.write_volatile(v) };
                    data[p] = Some(v);
                }
            }
        }
        for s in [
            State::Reserved,
            State::Prepared,
            State::Ready,
            State::Faulted,
        ] {
            let pages = model.iter().filter(|&&m| m == s).count();
            assert_eq!(
                r.bytes_in(s),
                (pages * ps) as u64,
                "step {i}: bytes in {s:?}"
            );
        }
    }
    // The walk must actually have exercised the transitions, not only refusals.
    eprintln!("{ok_steps} successful steps");
    assert!(ok_steps > 5000, "only {ok_steps} successful steps");
}

fn step_drops(step: Step) -> bool {
    matches!(step, Step::Unused | Step::Fault(_) | Step::Map)
}
