//! Noise-aware comparison: a median with a distribution-free confidence interval, and rankings
//! as tiers in which differences within noise are ties.
//!
//! Every comparison here is of a **ratio measured side by side**: per round (or per
//! iteration) of one run, the time (or throughput) of `a` divided by that of `b` from the same
//! round. The machine's drift then cancels within a round, and the spread of the per-round
//! ratios says how sure the comparison is.

use std::cmp::Ordering;

/// The median of per-round ratios with an approximate 95% confidence interval for it.
///
/// The interval is the distribution-free one from order statistics (no assumption about the
/// shape of the noise): for `n` sorted samples, the samples `k = ⌈0.98·√n⌉` places either side
/// of the middle. With few samples it widens to the whole range (n ≤ 8 gives min..max).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Estimate {
    /// The median.
    pub median: f64,
    /// The lower end of the interval.
    pub lo: f64,
    /// The upper end of the interval.
    pub hi: f64,
    /// Samples.
    pub n: usize,
}

impl Estimate {
    /// Estimate from samples (NaN-free; sorted in place). An empty slice gives NaNs.
    ///
    /// ```
    /// let e = osmem_bench::Estimate::of(&mut [1.0, 1.2, 0.9, 1.1, 1.0]);
    /// assert_eq!(e.median, 1.0);
    /// assert_eq!((e.lo, e.hi), (0.9, 1.2)); // few samples: the whole range
    /// ```
    pub fn of(samples: &mut [f64]) -> Estimate {
        let n = samples.len();
        if n == 0 {
            return Estimate {
                median: f64::NAN,
                lo: f64::NAN,
                hi: f64::NAN,
                n,
            };
        }
        samples.sort_unstable_by(f64::total_cmp);
        let median = crate::median_f64(samples);
        let k = (0.98 * (n as f64).sqrt()).ceil() as usize;
        let lo = samples[(n / 2).saturating_sub(k)];
        let hi = samples[((n - 1) / 2 + k).min(n - 1)];
        Estimate { median, lo, hi, n }
    }

    /// An exact value (an interval of width 0), for a reference compared with itself.
    ///
    /// ```
    /// assert_eq!(osmem_bench::Estimate::exact(1.0).hi, 1.0);
    /// ```
    pub fn exact(v: f64) -> Estimate {
        Estimate {
            median: v,
            lo: v,
            hi: v,
            n: 1,
        }
    }

    /// Compare a ratio `a/b` with 1: `Less` (a is clearly smaller) only if the whole interval
    /// is below 1 **and** the median is at least `min_gap` (relative) below 1; `Greater`
    /// likewise; otherwise `Equal` (within noise). The interval guards against a difference
    /// the run cannot resolve; the minimum gap against one so small that the drift of a
    /// shared machine *between* runs could flip it (which no single run can see).
    ///
    /// ```
    /// use osmem_bench::Estimate;
    /// use std::cmp::Ordering;
    /// let clear = Estimate { median: 0.5, lo: 0.45, hi: 0.55, n: 100 };
    /// assert_eq!(clear.versus_one(0.1), Ordering::Less);
    /// let small = Estimate { median: 0.97, lo: 0.96, hi: 0.98, n: 1000 };
    /// assert_eq!(small.versus_one(0.1), Ordering::Equal); // resolved, but under the gap
    /// let noisy = Estimate { median: 0.6, lo: 0.3, hi: 1.2, n: 5 };
    /// assert_eq!(noisy.versus_one(0.1), Ordering::Equal); // big, but not resolved
    /// ```
    pub fn versus_one(&self, min_gap: f64) -> Ordering {
        if self.hi < 1.0 && self.median * (1.0 + min_gap) <= 1.0 {
            Ordering::Less
        } else if self.lo > 1.0 && self.median >= 1.0 + min_gap {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }
}

impl Estimate {
    /// A stricter [`versus_one`](Self::versus_one): `Less` / `Greater` only if the **whole
    /// interval** lies `min_gap` beyond 1, not just its median. For figures taken from few,
    /// noisy windows (contention), where a loaded machine can push a median past the gap
    /// while the interval still reaches back to within it.
    ///
    /// ```
    /// use osmem_bench::Estimate;
    /// use std::cmp::Ordering;
    /// let e = Estimate { median: 2.0, lo: 1.1, hi: 3.0, n: 11 };
    /// assert_eq!(e.versus_one(0.25), Ordering::Greater);
    /// assert_eq!(e.clears(0.25), Ordering::Equal);
    /// let e = Estimate { median: 4.0, lo: 3.0, hi: 5.0, n: 11 };
    /// assert_eq!(e.clears(0.25), Ordering::Greater);
    /// ```
    pub fn clears(&self, min_gap: f64) -> Ordering {
        if self.hi * (1.0 + min_gap) <= 1.0 {
            Ordering::Less
        } else if self.lo >= 1.0 + min_gap {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }
}

/// The minimum relative gap for two costs to rank apart (see [`Estimate::versus_one`]):
/// 12%. Chosen from six full `osmem report` runs on the 2-vCPU development VM (loaded by
/// other work): a side-by-side cost ratio moved by 2–4% between runs, and the ratios there
/// cluster at 1.03–1.10 (one TLB shootdown more or less at small sizes, page-table work at
/// big ones), 1.11–1.15 and ≥ 1.2. With 10% the 1.06–1.10 cluster straddled the threshold
/// from run to run; with 12% no pair did.
pub const COST_GAP: f64 = 0.12;

/// The minimum relative gap for two contention ratios (throughput kept relative to the
/// control, or to running alone) to rank apart: 25%, which the whole interval must clear
/// ([`Estimate::clears`]). Contention windows are few (rounds of
/// 60 ms) and the threads share two vCPUs with whatever else runs on the machine, so
/// differences of 10–20% came and went between runs; the effects that matter (a writer kept
/// to 10% of its pace, or a reader losing half its throughput) are far larger.
pub const THROUGHPUT_GAP: f64 = 0.25;

/// Group items into tiers, best first. `order` lists the items best first (by their
/// side-by-side ratios); `tied(a, b)` says whether two items are within noise of each other.
/// An item joins the current tier only if it is tied with that tier's **first** member (its
/// leader), else it starts the next tier. So every member of a tier is within noise of the
/// tier's best, and "in the top tier" means "the run cannot tell it from the best". (Tiers
/// once grew by neighbours: 1.0 ≈ 1.08 ≈ 1.16 ≈ … chained a strategy whose mutator kept 28%
/// into the top tier beside one that kept 100%, through noisy middles.)
///
/// ```
/// // Costs 1.0, 1.05, 1.5, 1.52 with "tied within 10%":
/// let v = [1.0, 1.05, 1.5, 1.52];
/// let t = osmem_bench::tiers(&[0, 1, 2, 3], |a, b| (v[a] / v[b] - 1.0f64).abs() < 0.1);
/// assert_eq!(t, vec![vec![0, 1], vec![2, 3]]);
/// ```
pub fn tiers(order: &[usize], mut tied: impl FnMut(usize, usize) -> bool) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for &i in order {
        match out.last_mut() {
            Some(t) if tied(i, t[0]) => t.push(i),
            _ => out.push(vec![i]),
        }
    }
    out
}

/// Tiers as text: members of a tier joined with ` ≈ `, tiers with `sep` (` < ` for costs,
/// ` > ` for throughput).
///
/// ```
/// let t = vec![vec![0, 1], vec![2]];
/// let s = osmem_bench::tiers_text(&t, |i| ["guard", "protect", "go"][i].to_string(), " < ");
/// assert_eq!(s, "guard ≈ protect < go");
/// ```
pub fn tiers_text(tiers: &[Vec<usize>], name: impl Fn(usize) -> String, sep: &str) -> String {
    tiers
        .iter()
        .map(|t| t.iter().map(|&i| name(i)).collect::<Vec<_>>().join(" ≈ "))
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_widens_with_fewer_samples() {
        let mut many: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let e = Estimate::of(&mut many);
        assert!(e.lo > 400.0 && e.hi < 600.0, "{e:?}");
        assert!(e.lo < e.median && e.median < e.hi);
        let mut few = [3.0, 1.0, 2.0];
        let e = Estimate::of(&mut few);
        assert_eq!((e.lo, e.median, e.hi), (1.0, 2.0, 3.0));
        assert!(Estimate::of(&mut []).median.is_nan());
    }

    #[test]
    fn greater_needs_the_gap_and_the_interval() {
        let e = Estimate {
            median: 1.5,
            lo: 1.2,
            hi: 1.8,
            n: 50,
        };
        assert_eq!(e.versus_one(0.1), Ordering::Greater);
        assert_eq!(e.versus_one(0.6), Ordering::Equal);
        let e = Estimate {
            median: 1.5,
            lo: 0.99,
            hi: 1.8,
            n: 50,
        };
        assert_eq!(e.versus_one(0.1), Ordering::Equal);
    }

    #[test]
    fn a_tier_holds_only_what_is_tied_with_its_best() {
        // 1.0 ≈ 1.08 (within 10%), but 1.16 is 16% above the leader: it starts the next
        // tier, though it is within 10% of its neighbour 1.08.
        let v = [1.0, 1.08, 1.16, 1.2, 1.4];
        let t = tiers(&[0, 1, 2, 3, 4], |a, b| (v[a] / v[b] - 1.0f64).abs() < 0.1);
        assert_eq!(t, vec![vec![0, 1], vec![2, 3], vec![4]]);
        assert!(tiers(&[], |_, _| true).is_empty());
    }
}
