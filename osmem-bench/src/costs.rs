//! Several operations on one range, interleaved round by round: the side-by-side cost
//! comparison every ranking of strategies (and [`paired`](crate::paired)'s osmem/raw ratio)
//! is taken from.

use crate::{over_budget, Estimate, Flavour, Op, OpBench, Sibling};
use std::time::{Duration, Instant};

/// The result of [`interleaved`]: per entry, the time of every round.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Interleaved {
    /// What was measured, in the order given.
    pub entries: Vec<(Op, Flavour)>,
    /// The range size in bytes.
    pub size: usize,
    /// Whether a [`Sibling`] was spinning.
    pub sibling: bool,
    /// Rounds measured (fewer than asked if the time budget ran out).
    pub rounds: usize,
    /// `op_ns[i][k]`: the time of entry `i`'s operation in round `k`, ns.
    pub op_ns: Vec<Vec<u64>>,
    /// `undo_ns[i][k]`: the time of undoing it ([`OpBench::restore`]: unfault for a fault,
    /// `used` for unused), ns.
    pub undo_ns: Vec<Vec<u64>>,
}

impl Interleaved {
    /// The median time of entry `i`'s operation, ns.
    pub fn median_ns(&self, i: usize) -> f64 {
        crate::median(&mut self.op_ns[i].clone())
    }

    /// The median time of undoing entry `i`'s operation, ns.
    pub fn undo_median_ns(&self, i: usize) -> f64 {
        crate::median(&mut self.undo_ns[i].clone())
    }

    /// The ratio of entry `i`'s time to entry `j`'s, round by round (both from the same
    /// round), as an [`Estimate`].
    pub fn ratio(&self, i: usize, j: usize) -> Estimate {
        let mut r: Vec<f64> = self.op_ns[i]
            .iter()
            .zip(&self.op_ns[j])
            .map(|(&a, &b)| a as f64 / b.max(1) as f64)
            .collect();
        Estimate::of(&mut r)
    }
}

/// Measure every entry (an [`Op`] in a [`Flavour`]) on **one** `size`-byte range (see
/// [`OpBench`]), round by round: each round runs every entry once, the order rotating by one
/// place per round so that no entry always follows the same other one. With a [`Sibling`]
/// spinning if `sibling`. One untimed warm-up round goes first. Stops after `rounds` rounds,
/// or once `budget` has passed (but never before [`MIN_ITERS`](crate::MIN_ITERS) rounds).
///
/// Because every entry of a round runs within a few milliseconds of the others on the same
/// range, a ratio of two entries from one round is free of the machine's slow drift; the
/// spread of those ratios over the rounds is the noise of the comparison ([`Interleaved::ratio`]).
///
/// # Panics
/// If the region cannot be created or an iteration fails (see [`OpBench::apply`]); check
/// [`Op::is_supported`] first. If `entries` is empty.
///
/// ```no_run
/// use osmem_bench::{interleaved, Flavour, Op};
/// let ops = [(Op::FaultGuard, Flavour::Osmem), (Op::FaultProtect, Flavour::Osmem)];
/// let run = interleaved(&ops, 64 << 10, 500, false, std::time::Duration::from_secs(5));
/// println!("protect/guard = {:.2}", run.ratio(1, 0).median);
/// ```
pub fn interleaved(
    entries: &[(Op, Flavour)],
    size: usize,
    rounds: usize,
    sibling: bool,
    budget: Duration,
) -> Interleaved {
    assert!(!entries.is_empty(), "nothing to measure");
    let mut bench = OpBench::new(size).unwrap_or_else(|e| panic!("{size}-byte region: {e}"));
    let _sibling = Sibling::maybe(sibling);
    // Warm-up: the first touch of the page tables and osmem's lazy probe/config happen here.
    for &(op, flavour) in entries {
        bench.once(op, flavour);
    }
    let n = entries.len();
    let mut op_ns: Vec<Vec<u64>> = (0..n).map(|_| Vec::with_capacity(rounds)).collect();
    let mut undo_ns = op_ns.clone();
    let start = Instant::now();
    for k in 0..rounds {
        for step in 0..n {
            let i = (k + step) % n;
            let (op, flavour) = entries[i];
            bench.prepare();
            let t = bench.apply(op, flavour);
            let u = bench.restore();
            op_ns[i].push(t.as_nanos() as u64);
            undo_ns[i].push(u.as_nanos() as u64);
        }
        if over_budget(start, budget, k + 1) {
            break;
        }
    }
    Interleaved {
        entries: entries.to_vec(),
        size,
        sibling,
        rounds: op_ns[0].len(),
        op_ns,
        undo_ns,
    }
}
