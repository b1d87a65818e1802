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

mod common;

use common::{
    check_cycle_final, cycle_slots, expected_how_fault, expected_how_unused, CycleHooks, Expect,
    CYCLE_SLOT as SLOT, CYCLE_SLOTS as SLOTS, STATES,
};
use osmem::{
    FaultHow, FaultStrategy, Faulted, Reservation, Stats, Unused, UnusedAdvice, UnusedHow,
};

const CYCLES: usize = 2500; // per thread

/// What osmem must issue for each step of the workload, given how it went (no fallback
/// expected on this kernel: every `how` is asserted to be the requested mechanism).
impl CycleHooks for Expect {
    fn mapped(&mut self, faulted: Option<FaultHow>) {
        self.add("map_ops", 1);
        self.map_run_calls(faulted == Some(FaultHow::Guard));
    }

    fn used(&mut self) {
        self.add("used_ops", 1);
    }

    fn unused(&mut self, s: usize, i: usize, adv: UnusedAdvice, u: &Unused) {
        assert_eq!(u.how, expected_how_unused(adv), "slot {s} cycle {i}");
        self.final_unused(u.how);
    }

    fn faulted(&mut self, s: usize, i: usize, strat: FaultStrategy, f: &Faulted) {
        assert_eq!(f.how, expected_how_fault(strat), "slot {s} cycle {i}");
        self.final_fault(f.how);
    }

    fn final_unused(&mut self, how: UnusedHow) {
        self.add("unused_ops", 1);
        self.unused_calls(how, false);
    }

    fn final_fault(&mut self, how: FaultHow) {
        self.add("fault_ops", 1);
        assert!(how != FaultHow::ReleasedOnly, "no fallback expected here");
        self.fault_calls(how, false);
    }
}

/// Thread `t`'s share of the workload on slots `[t*SLOTS, (t+1)*SLOTS)`; returns what it
/// expects the counters to have moved by.
fn work(r: &Reservation, t: usize) -> Expect {
    let mut e = Expect::NONE;
    cycle_slots(r, t, CYCLES, &mut e);
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
    // One-time work before the baseline: the probe, the metadata arena and the first naming
    // attempt (which turns naming off for good on a kernel without PR_SET_VMA_ANON_NAME).
    let env = common::linux_6_14();
    let s0 = osmem::stats();

    let r = Reservation::reserve(2 * SLOTS * SLOT * ps).unwrap();
    let mut want = Expect::NONE;
    want.add("reserve_ops", 1);
    want.add("mmap_calls", 1); // the region, nothing else
    if env.names {
        want.add("prctl_calls", 1); // its name, at the first map
    }
    let (e0, e1) = std::thread::scope(|sc| {
        let h = sc.spawn(|| work(&r, 1));
        let e0 = work(&r, 0);
        (e0, h.join().unwrap())
    });
    want.merge(&e0);
    want.merge(&e1);
    let s1 = osmem::stats();

    // Bytes: a third of the slots in each of Prepared, Ready, Faulted; same per region.
    let third = (2 * SLOTS / 3 * SLOT * ps) as u64;
    let d: Vec<u64> = (0..4)
        .map(|i| bytes(&s1)[i].wrapping_sub(bytes(&s0)[i]))
        .collect();
    assert_eq!(d, [0, third, third, third], "global byte deltas");
    let region: Vec<u64> = STATES.iter().map(|&st| r.bytes_in(st)).collect();
    assert_eq!(region, [0, third, third, third], "region bytes");

    // Every other counter moved by exactly what the workload issued; nothing else (no
    // fallback, retry, downgrade or error) happened.
    let wrong: Vec<String> = want
        .mismatches(&s0, &s1)
        .filter(|(name, ..)| !name.ends_with("_bytes"))
        .map(|(name, got, exp)| format!("{name}: got {got}, want {exp}"))
        .collect();
    assert!(wrong.is_empty(), "counter deltas: {wrong:#?}");
    assert!(want.get("map_ops") > 2 * CYCLES as i64); // the workload really ran

    // The kernel agrees with the final states.
    check_cycle_final(&r, 0);

    drop(r);
    let s2 = osmem::stats();
    assert_eq!(
        bytes(&s2),
        bytes(&s0),
        "drop must return every byte figure to the baseline"
    );
    assert_eq!(s2.free_ops - s1.free_ops, 1);
    assert_eq!(s2.munmap_calls - s1.munmap_calls, 1);
}
