//! Pacing: how much CPU the background scavenger may use. Both pacers hold it to the same
//! average fraction — by default 1% of all the CPUs the process runs on, as Go's
//! `scavengePercent` counts it (`worked / ((slept + worked) × GOMAXPROCS)`) — and differ in
//! how they spend it.
//!
//! - [`GoPacer`]: Go's. Bursts of 64 KiB steps until at least 1 ms of work (a shorter burst
//!   is charged as 1 ms, `minScavWorkTime`), then a sleep of `worked / ratio`, where a PI
//!   controller (kp 0.3375, ti 3.2e6, tt 1e9, ratio clamped to [0.001, 1000]) steers the
//!   ratio toward the target fraction. Starting at 0.001, it sleeps ~1000× each burst: on a
//!   large release the controller takes seconds to open up (measured on the real runtime:
//!   ~1 s between bursts at the floor).
//! - [`BudgetPacer`] (the default): a budget that accrues at the target fraction of wall
//!   time, capped at the fraction of a 10 s window (so over any 10 s the average is the same
//!   as Go's), and is spent at once when there is work. A heap that shrinks after a quiet
//!   period has its whole budget available immediately.

/// The averaging window of [`BudgetPacer`]: over any window this long, the scavenger uses
/// at most `fraction` of it.
///
/// ```
/// assert_eq!(osmem_heap::BUDGET_WINDOW_NS, 10e9);
/// ```
pub const BUDGET_WINDOW_NS: f64 = 10e9;

/// Go's scavenger pacing, its numbers unchanged.
///
/// ```
/// let mut p = osmem_heap::GoPacer::new(0.01);
/// let worked = 1e6; // a 1 ms burst
/// let slept = p.sleep_ns(worked);
/// p.update(worked, slept, 2);
/// ```
#[derive(Copy, Clone, Debug)]
pub struct GoPacer {
    ratio: f64,
    integral: f64,
    cooldown_ns: f64,
    fraction: f64,
}

impl GoPacer {
    const KP: f64 = 0.3375;
    const TI: f64 = 3.2e6;
    const TT: f64 = 1e9;
    const MIN: f64 = 0.001;
    const MAX: f64 = 1000.0;
    /// `minScavWorkTime`: a burst is charged at least this.
    ///
    /// ```
    /// let p = osmem_heap::GoPacer::new(0.01);
    /// assert_eq!(p.sleep_ns(1.0), p.sleep_ns(osmem_heap::GoPacer::MIN_WORK_NS));
    /// ```
    pub const MIN_WORK_NS: f64 = 1e6;

    /// Aiming at `fraction` of all CPUs (Go: 0.01).
    ///
    /// ```
    /// let p = osmem_heap::GoPacer::new(0.01);
    /// assert_eq!(p.sleep_ns(1e6), 1e9); // the controller starts at ratio 0.001
    /// ```
    pub fn new(fraction: f64) -> GoPacer {
        GoPacer {
            ratio: Self::MIN,
            integral: 0.0,
            cooldown_ns: 0.0,
            fraction,
        }
    }

    /// How long to sleep after a burst of `worked_ns`.
    ///
    /// ```
    /// let p = osmem_heap::GoPacer::new(0.01);
    /// assert_eq!(p.sleep_ns(2e6), 2e9); // 2 ms of work at the starting ratio 0.001
    /// ```
    pub fn sleep_ns(&self, worked_ns: f64) -> f64 {
        worked_ns.max(Self::MIN_WORK_NS) / self.ratio
    }

    /// After sleeping `slept_ns` following a burst of `worked_ns`, on `cpus` CPUs: steer.
    ///
    /// ```
    /// let mut p = osmem_heap::GoPacer::new(0.01);
    /// let s = p.sleep_ns(1e6);
    /// p.update(1e6, s, 2);
    /// assert!(p.sleep_ns(1e6) < s); // it used less than 1%: sleep less next time
    /// ```
    pub fn update(&mut self, worked_ns: f64, slept_ns: f64, cpus: usize) {
        let worked = worked_ns.max(Self::MIN_WORK_NS);
        if self.cooldown_ns > 0.0 {
            self.cooldown_ns -= slept_ns + worked;
            return;
        }
        let input = worked / ((slept_ns + worked) * cpus.max(1) as f64);
        let period = slept_ns + worked;
        let err = self.fraction - input;
        let raw = Self::KP * err + self.integral;
        if !raw.is_finite() {
            self.reset();
            return;
        }
        let out = raw.clamp(Self::MIN, Self::MAX);
        self.integral += (Self::KP * period / Self::TI) * err + (period / Self::TT) * (out - raw);
        if !self.integral.is_finite() {
            self.reset();
            return;
        }
        self.ratio = out;
    }

    fn reset(&mut self) {
        self.ratio = Self::MIN;
        self.integral = 0.0;
        self.cooldown_ns = 5e9;
    }
}

/// The default pacing: a budget of CPU time that accrues at `fraction` of wall time × CPUs,
/// capped at a 10 s window's worth, and is spent at once when there is work.
///
/// ```
/// let mut p = osmem_heap::BudgetPacer::new(0.01, 2);
/// p.spend(p.available_ns()); // a burst spends it all
/// p.accrue(1e9); // a second later: 1% of 2 CPUs of it back
/// assert_eq!(p.available_ns(), 2e7);
/// ```
#[derive(Copy, Clone, Debug)]
pub struct BudgetPacer {
    budget_ns: f64,
    cap_ns: f64,
    rate: f64,
}

impl BudgetPacer {
    /// `fraction` of all `cpus` (the default: 1%, as Go). Starts with a full budget.
    ///
    /// ```
    /// let p = osmem_heap::BudgetPacer::new(0.01, 2);
    /// assert_eq!(p.available_ns(), 0.01 * 2.0 * 10e9); // 200 ms of work at once
    /// ```
    pub fn new(fraction: f64, cpus: usize) -> BudgetPacer {
        let rate = fraction * cpus.max(1) as f64;
        BudgetPacer {
            budget_ns: rate * BUDGET_WINDOW_NS,
            cap_ns: rate * BUDGET_WINDOW_NS,
            rate,
        }
    }

    /// `elapsed_ns` of wall time passed: the budget grows (up to the cap).
    ///
    /// ```
    /// let mut p = osmem_heap::BudgetPacer::new(0.01, 1);
    /// let full = p.available_ns();
    /// p.accrue(1e12);
    /// assert_eq!(p.available_ns(), full); // capped
    /// ```
    pub fn accrue(&mut self, elapsed_ns: f64) {
        self.budget_ns = (self.budget_ns + elapsed_ns * self.rate).min(self.cap_ns);
    }

    /// `worked_ns` were spent.
    ///
    /// ```
    /// let mut p = osmem_heap::BudgetPacer::new(0.01, 1);
    /// let full = p.available_ns();
    /// p.spend(1e6);
    /// assert_eq!(p.available_ns(), full - 1e6);
    /// ```
    pub fn spend(&mut self, worked_ns: f64) {
        self.budget_ns -= worked_ns;
    }

    /// Work time available now.
    ///
    /// ```
    /// let p = osmem_heap::BudgetPacer::new(0.01, 1);
    /// assert_eq!(p.available_ns(), 1e8); // 1% of a 10 s window
    /// ```
    pub fn available_ns(&self) -> f64 {
        self.budget_ns
    }

    /// How long until `need_ns` of budget is available.
    ///
    /// ```
    /// let mut p = osmem_heap::BudgetPacer::new(0.01, 1);
    /// p.spend(p.available_ns());
    /// assert_eq!(p.wait_ns(1e6), 1e8); // 1 ms of work needs 100 ms at 1%
    /// ```
    pub fn wait_ns(&self, need_ns: f64) -> f64 {
        ((need_ns - self.budget_ns) / self.rate).max(0.0)
    }
}
