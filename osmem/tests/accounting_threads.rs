//! Exact global accounting under concurrency: two threads on disjoint halves of ONE
//! reservation, thousands of transition cycles each, then the global `osmem::stats()` deltas
//! must equal exactly what the workload did: bytes per state, ops, every syscall and advice.
//!
//! This file holds exactly one `#[test]` on purpose: `cargo test` runs a file's tests as
//! threads of one process, and the global counters are shared by all of them. With a single
//! test the process has no other osmem user, so the deltas are exact (nextest runs every test
//! in its own process anyway). Spawning the two workers in a forked child is not an option:
//! after `fork` in a multi-threaded process a child must not allocate, and spawning threads
//! allocates.

use osmem::{FaultHow, FaultStrategy, Reservation, State, Stats, UnusedAdvice, UnusedHow};
use osmem_testkit::{self as tk, Touch, SEGV_MAPERR};

const SLOT: usize = 4; // pages per slot
const SLOTS: usize = 24; // slots per thread (a multiple of 3)
const CYCLES: usize = 2500; // per thread

const STRATEGIES: [FaultStrategy; 5] = [
    FaultStrategy::Auto,
    FaultStrategy::Guard,
    FaultStrategy::Protect,
    FaultStrategy::Go,
    FaultStrategy::Remap,
];
const ADVICES: [UnusedAdvice; 3] = [
    UnusedAdvice::DontNeed,
    UnusedAdvice::Free,
    UnusedAdvice::Remap,
];

/// Expected counter deltas, by counter name.
#[derive(Default)]
struct Expect(Vec<(&'static str, u64)>);

impl Expect {
    fn add(&mut self, name: &'static str, n: u64) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v += n,
            None => self.0.push((name, n)),
        }
    }

    fn merge(&mut self, other: Expect) {
        for (k, v) in other.0 {
            self.add(k, v);
        }
    }

    fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map_or(0, |&(_, v)| v)
    }

    /// What osmem must issue for one transition, given how it went (no fallback expected on
    /// this kernel: every `how` is asserted to be the requested mechanism).
    fn unused(&mut self, how: UnusedHow) {
        self.add("unused_ops", 1);
        match how {
            UnusedHow::DontNeed => {
                self.add("madvise_calls", 1);
                self.add("madv_dontneed", 1);
            }
            UnusedHow::Free => {
                self.add("madvise_calls", 1);
                self.add("madv_free", 1);
            }
            UnusedHow::Remap => self.add("mmap_calls", 1),
        }
    }

    fn fault(&mut self, how: FaultHow) {
        self.add("fault_ops", 1);
        match how {
            FaultHow::Guard => {
                self.add("madvise_calls", 1);
                self.add("madv_guard_install", 1);
            }
            FaultHow::Protect | FaultHow::Go => {
                self.add("madvise_calls", 1);
                self.add("madv_dontneed", 1);
                self.add("mprotect_calls", 1);
            }
            FaultHow::Remap => self.add("mmap_calls", 1),
            FaultHow::ReleasedOnly => panic!("no fallback expected here"),
        }
    }

    /// `map` of a range last faulted with `how` (`None`: never mapped, Reserved).
    fn map(&mut self, how: Option<FaultHow>) {
        self.add("map_ops", 1);
        match how {
            Some(FaultHow::Guard) => {
                self.add("madvise_calls", 1);
                self.add("madv_guard_remove", 1);
            }
            _ => self.add("mprotect_calls", 1),
        }
    }
}

fn expected_how_unused(a: UnusedAdvice) -> UnusedHow {
    match a {
        UnusedAdvice::DontNeed => UnusedHow::DontNeed,
        UnusedAdvice::Free => UnusedHow::Free,
        UnusedAdvice::Remap => UnusedHow::Remap,
    }
}

fn expected_how_fault(s: FaultStrategy) -> FaultHow {
    match s {
        FaultStrategy::Auto | FaultStrategy::Guard => FaultHow::Guard,
        FaultStrategy::Protect => FaultHow::Protect,
        FaultStrategy::Go => FaultHow::Go,
        FaultStrategy::Remap => FaultHow::Remap,
    }
}

/// Thread `t`'s share of the workload on slots `[t*SLOTS, (t+1)*SLOTS)`; returns what it
/// expects the counters to have moved by.
fn work(r: &Reservation, t: usize) -> Expect {
    let ps = osmem::page_size();
    let len = SLOT * ps;
    let base = r.as_ptr() as usize;
    let mut e = Expect::default();
    let first_bytes_zero =
        |s: usize| (0..SLOT).all(|k| unsafe { *((base + s * len + k * ps) as *const u8) } == 0);
    let mark = |s: usize, v: u8| {
        for k in 0..SLOT {
            unsafe { *((base + s * len + k * ps) as *mut u8) = v };
        }
    };
    for i in 0..CYCLES {
        let s = t * SLOTS + i % SLOTS;
        let off = s * len;
        if i < SLOTS {
            r.map(off, len).unwrap();
            e.map(None);
            r.used(off, len).unwrap();
            e.add("used_ops", 1);
        }
        mark(s, (i % 251) as u8 + 1);
        let adv = ADVICES[(i / SLOTS) % 3];
        let u = unsafe { r.unused_with(off, len, adv) }.unwrap();
        assert_eq!(u.how, expected_how_unused(adv), "slot {s} cycle {i}");
        e.unused(u.how);
        r.used(off, len).unwrap();
        e.add("used_ops", 1);
        if u.zeroed {
            assert!(
                first_bytes_zero(s),
                "slot {s} cycle {i}: not zero after {adv:?}"
            );
        }
        mark(s, 0xee);
        let strat = STRATEGIES[(i / SLOTS) % 5];
        let f = unsafe { r.fault_with(off, len, strat) }.unwrap();
        assert_eq!(f.how, expected_how_fault(strat), "slot {s} cycle {i}");
        e.fault(f.how);
        r.map(off, len).unwrap();
        e.map(Some(f.how));
        r.used(off, len).unwrap();
        e.add("used_ops", 1);
        assert!(
            first_bytes_zero(s),
            "slot {s} cycle {i}: not zero after fault + map"
        );
    }
    // Final states: Ready (marked), Prepared, Faulted, by slot index.
    for k in 0..SLOTS {
        let s = t * SLOTS + k;
        match k % 3 {
            0 => unsafe {
                core::ptr::write_bytes((base + s * len) as *mut u8, 0xa0 + k as u8, len)
            },
            1 => e.unused(
                unsafe { r.unused_with(s * len, len, UnusedAdvice::DontNeed) }
                    .unwrap()
                    .how,
            ),
            _ => e.fault(
                unsafe { r.fault_with(s * len, len, FaultStrategy::Guard) }
                    .unwrap()
                    .how,
            ),
        }
    }
    e
}

fn bytes(s: &Stats) -> [u64; 4] {
    [
        s.reserved_bytes,
        s.prepared_bytes,
        s.ready_bytes,
        s.faulted_bytes,
    ]
}

#[test]
fn two_threads_exact_global_deltas() {
    let ps = osmem::page_size();
    // One-time work before the baseline: the probe and the first naming attempt (which turns
    // naming off for good on a kernel without PR_SET_VMA_ANON_NAME).
    let _ = osmem::probe();
    drop(Reservation::reserve(ps).unwrap());
    let s0 = osmem::stats();

    let r = Reservation::reserve(2 * SLOTS * SLOT * ps).unwrap();
    let mut want = Expect::default();
    want.add("reserve_ops", 1);
    want.add("mmap_calls", 2); // region + state table
    want.add("madvise_calls", 1); // MADV_DONTDUMP on the table
    let (e0, e1) = std::thread::scope(|sc| {
        let h = sc.spawn(|| work(&r, 1));
        let e0 = work(&r, 0);
        (e0, h.join().unwrap())
    });
    want.merge(e0);
    want.merge(e1);
    let s1 = osmem::stats();

    // Bytes: a third of the slots in each of Prepared, Ready, Faulted; same per region.
    let third = (2 * SLOTS / 3 * SLOT * ps) as u64;
    let d: Vec<u64> = (0..4)
        .map(|i| bytes(&s1)[i].wrapping_sub(bytes(&s0)[i]))
        .collect();
    assert_eq!(d, [0, third, third, third], "global byte deltas");
    let region: Vec<u64> = [
        State::Reserved,
        State::Prepared,
        State::Ready,
        State::Faulted,
    ]
    .iter()
    .map(|&st| r.bytes_in(st))
    .collect();
    assert_eq!(region, [0, third, third, third], "region bytes");

    // Every other counter moved by exactly what the workload issued; nothing else (no
    // fallback, retry, downgrade or error) happened.
    let mut wrong = Vec::new();
    for ((name, b), (_, a)) in s0.fields().zip(s1.fields()) {
        if name.ends_with("_bytes") {
            continue;
        }
        let (got, exp) = (a.wrapping_sub(b), want.get(name));
        if got != exp {
            wrong.push(format!("{name}: got {got}, want {exp}"));
        }
    }
    assert!(wrong.is_empty(), "counter deltas: {wrong:#?}");
    assert!(want.get("map_ops") > 2 * CYCLES as u64); // the workload really ran

    // The kernel agrees with the final states.
    let base = r.as_ptr() as usize;
    for s in 0..2 * SLOTS {
        let (a, k) = (base + s * SLOT * ps, s % SLOTS);
        match k % 3 {
            0 => {
                assert_eq!(tk::resident_pages(a, SLOT * ps), SLOT, "slot {s}");
                let v = 0xa0 + k as u8;
                assert!((0..SLOT * ps).all(|i| unsafe { *((a + i) as *const u8) } == v));
            }
            1 => assert_eq!(tk::resident_pages(a, SLOT * ps), 0, "slot {s}"),
            _ => {
                assert_eq!(tk::resident_pages(a, SLOT * ps), 0, "slot {s}");
                assert_eq!(
                    tk::touch_in_child(a, true),
                    Touch::Segv {
                        si_code: SEGV_MAPERR
                    },
                    "slot {s}"
                );
            }
        }
    }

    drop(r);
    let s2 = osmem::stats();
    assert_eq!(
        bytes(&s2),
        bytes(&s0),
        "drop must return every byte figure to the baseline"
    );
    assert_eq!(s2.free_ops - s1.free_ops, 1);
    assert_eq!(s2.munmap_calls - s1.munmap_calls, 2);
}
