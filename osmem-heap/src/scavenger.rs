//! The background scavenger thread (the `std` feature): releases free memory toward the
//! heap's goal ([`Heap::scavenge_goal`]) at an average of 1% of all CPUs, paced by
//! [`BudgetPacer`](crate::BudgetPacer) (batched mode) or Go's [`GoPacer`](crate::GoPacer)
//! (Go-faithful mode). Starting it spawns one thread (which allocates through the global
//! allocator; the heap lock is not held meanwhile, so a global allocator built on this heap
//! works); the thread never holds the heap lock while it sleeps.

use crate::pace::{BudgetPacer, GoPacer};
use crate::{Heap, Mode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest an idle scavenger sleeps: work (a free past what it acts on, a cycle, a limit
/// change) wakes it at once (see `wake.rs`); the timeout only bounds what it can miss (an
/// excess below an episode's start that lasts, see SETTLE). At most one wakeup a second with
/// nothing to do (it was every 10 ms, 100 a second).
const IDLE_SLEEP: Duration = Duration::from_secs(1);
/// Go's `scavengeQuantum`.
const QUANTUM: usize = 64 << 10;
/// The least excess over the goal that starts the default scavenger (see `run_budget`).
const MIN_EPISODE: usize = 2 << 20;
/// How long an excess below an episode's start (but at least MIN_EPISODE) may last before
/// the default scavenger releases it anyway.
const SETTLE: Duration = Duration::from_secs(5);
/// Bytes the batched scavenger releases between looks at its budget: ~25 ms of kernel work
/// here, an eighth of a full budget; fewer, fuller process_madvise calls (16 MiB steps split
/// a 1 GiB shrink into 56 calls).
const BATCH_STEP: usize = 256 << 20;

/// A running background scavenger. Dropping it (or [`stop`](Self::stop)) stops the thread.
///
/// ```
/// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
/// let s = h.start_scavenger(0.01).expect("a thread");
/// drop(s); // stops and joins the thread
/// # unsafe { osmem_heap::Heap::destroy(h) };
/// # Ok::<(), osmem_heap::HeapError>(())
/// ```
pub struct Scavenger {
    heap: &'static Heap,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scavenger {
    /// Stop the thread and wait for it.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(8 << 20))?;
    /// let s = h.start_scavenger(0.01).expect("a thread");
    /// s.stop();
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            self.heap.wake_scavenger();
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Scavenger {
    fn drop(&mut self) {
        self.halt();
    }
}

impl Heap {
    /// Start the background scavenger: a thread that releases free memory toward
    /// [`scavenge_goal`](Heap::scavenge_goal) using `fraction` of all CPUs on average (Go:
    /// 0.01), paced by [`BudgetPacer`](crate::BudgetPacer) in [`Mode::Batched`] and by Go's
    /// [`GoPacer`](crate::GoPacer) in [`Mode::GoFaithful`]. It runs until the returned
    /// [`Scavenger`] is stopped or dropped, which must happen before [`Heap::destroy`].
    /// Fails only if the thread cannot be spawned.
    ///
    /// ```
    /// let h = osmem_heap::Heap::create(osmem_heap::HeapConfig::new(64 << 20))?;
    /// let s = h.start_scavenger(0.01).expect("a thread");
    /// s.stop();
    /// # unsafe { osmem_heap::Heap::destroy(h) };
    /// # Ok::<(), osmem_heap::HeapError>(())
    /// ```
    pub fn start_scavenger(&'static self, fraction: f64) -> std::io::Result<Scavenger> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let thread = std::thread::Builder::new()
            .name("osmem-scavenger".into())
            .spawn(move || match self.mode() {
                Mode::Batched => self.run_budget(&flag, BudgetPacer::new(fraction, cpus)),
                Mode::GoFaithful => self.run_go(&flag, GoPacer::new(fraction), cpus),
            })?;
        Ok(Scavenger {
            heap: self,
            stop,
            thread: Some(thread),
        })
    }

    fn run_budget(&self, stop: &AtomicBool, mut pacer: BudgetPacer) {
        let mut last = Instant::now();
        // What the current episode still has to release (0: no episode).
        let mut episode = 0usize;
        // Since when the excess has been at least MIN_EPISODE.
        let mut over_since: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            pacer.accrue((now - last).as_nanos() as f64);
            last = now;
            let goal = self.scavenge_goal();
            // An episode starts only when the excess is a quarter of the memory held (at
            // least 2 MiB), and releases the excess it started with. Measured on the heap
            // trace (steady churn of 64 MiB/s beside 128 MiB live): starting at 1/32 and
            // going on to the goal, the scavenger released what the churn allocated again
            // at once (240 calls, 2.0 GiB released for a 1.5 GiB drop, 20% more minor
            // faults than the Go runtime); at 1/4, with each episode ending at the excess it
            // started with (excess appearing meanwhile waits for the next one), 19 calls
            // release the two drops and the holds need none. A smaller excess that lasts
            // (SETTLE) is released too, so a quiet heap still ends at its goal.
            if goal < MIN_EPISODE {
                over_since = None;
            } else if over_since.is_none() {
                over_since = Some(now);
            }
            if episode == 0 {
                let held = self.stats().mapped_ready_bytes;
                let lasted = over_since.is_some_and(|t| now - t >= SETTLE);
                if goal > 0 && (goal >= (held / 4).max(MIN_EPISODE) || lasted) {
                    episode = goal;
                    over_since = None;
                }
            }
            let want = episode.min(goal);
            if want == 0 {
                episode = 0;
                // Asleep until a free takes the goal to an episode's start, a cycle or a
                // limit change; or, with an excess that may last (SETTLE), until then.
                let at = (self.stats().mapped_ready_bytes / 4).max(MIN_EPISODE);
                let timeout = over_since.map_or(IDLE_SLEEP, |t| {
                    SETTLE
                        .saturating_sub(now - t)
                        .clamp(Duration::from_millis(1), IDLE_SLEEP)
                });
                self.park(stop, at, timeout, || self.scavenge_goal() >= at);
                continue;
            }
            if pacer.available_ns() <= 0.0 {
                let wait = pacer.wait_ns(GoPacer::MIN_WORK_NS);
                std::thread::park_timeout(
                    Duration::from_nanos(wait as u64).max(Duration::from_micros(100)),
                );
                continue;
            }
            let t0 = Instant::now();
            let ask = want.min(BATCH_STEP);
            let r = self.scavenge(ask);
            let worked = t0.elapsed().as_nanos() as f64;
            pacer.spend(worked);
            self.note_background(r.bytes, worked as u64);
            episode = episode.saturating_sub(r.bytes);
            if r.bytes < ask {
                // Less releasable than asked (the rest in dense chunks, or allocated again
                // meanwhile): end the episode rather than follow churn with small calls.
                episode = 0;
            }
            if r.bytes == 0 {
                // Nothing releasable now (dense chunks, or allocated again): what changes
                // that is a free or a cycle.
                let at = goal.saturating_add(MIN_EPISODE);
                self.park(stop, at, IDLE_SLEEP, || self.scavenge_goal() >= at);
            }
        }
    }

    /// Sleep until `ready()` (checked after saying what is worth a wake, so nothing done
    /// meanwhile is missed), a wake (a free taking the goal to `at` bytes or more — `usize::MAX`:
    /// none —, a cycle, a limit change, a stop) or `timeout`. See `wake.rs`.
    fn park(&self, stop: &AtomicBool, at: usize, timeout: Duration, ready: impl Fn() -> bool) {
        self.wake_at.store(at.max(1), Ordering::SeqCst);
        let w = self.wake.load(Ordering::SeqCst);
        if !stop.load(Ordering::SeqCst) && !ready() {
            crate::wake::futex_wait(&self.wake, w, timeout);
        }
        self.wake_at.store(0, Ordering::SeqCst);
    }

    fn run_go(&self, stop: &AtomicBool, mut pacer: GoPacer, cpus: usize) {
        // Whether a GC has just woken the thread: Go wakes its scavenger twice per GC, at the
        // GC's start (`finishsweep_m`) and once the sweep is done (sysmon, within 10 ms of
        // `scavenger.ready`), so the sleep after the first burst of a GC is cut short by the
        // second wake. Measured on the real runtime (perf, the heap trace): its release
        // clusters start at each GC, whatever the controller asked for; without the second
        // wake the first sleep after a long one lasted ~300 ms (the controller opens one step
        // late) and the replay released one GC cycle later than Go.
        let mut gc_woke = false;
        while !stop.load(Ordering::Relaxed) {
            if self.scavenge_goal() == 0 {
                gc_woke = self.park_go(stop);
                continue;
            }
            // Go's `run`: 64 KiB steps until at least 1 ms of work, or nothing left.
            let t0 = Instant::now();
            let mut released = 0;
            loop {
                let r = self.scavenge(QUANTUM);
                released += r.bytes;
                if r.bytes < QUANTUM || t0.elapsed().as_nanos() as f64 >= GoPacer::MIN_WORK_NS {
                    break;
                }
            }
            if released == 0 {
                // Go's `bgscavenge`: a run that released nothing (the goal met, or every
                // candidate behind the density gate) parks without steering the controller.
                // Steering on empty runs wound the controller open during the gate, and the
                // replayed trace then released in a few large bursts where Go releases
                // steadily.
                gc_woke = self.park_go(stop);
                continue;
            }
            let worked = t0.elapsed().as_nanos() as f64;
            self.note_background(released, worked as u64);
            let sleep = Duration::from_nanos(pacer.sleep_ns(worked) as u64);
            let t1 = Instant::now();
            // Sleep, unless a stop request or a GC's wake comes first: Go's `scavenger.wake`
            // cuts the timed sleep short too (the scavenger parks on its timer), and the
            // controller then sees the shorter sleep.
            // (Go's sysmon notices a finished sweep within 10 ms.)
            let sleep = if gc_woke {
                sleep.min(Duration::from_millis(10))
            } else {
                sleep
            };
            gc_woke = self.wait_for_gc(stop, Some(sleep));
            pacer.update(worked, t1.elapsed().as_nanos() as f64, cpus);
        }
    }

    /// Go parks its scavenger until the sweep after the next GC is done (`scavenger.wake`, or
    /// sysmon within 10 ms of `scavenger.ready`): here, until the next [`Heap::cycle`] (or a
    /// limit change), which wakes it at once. A heap that has never had a cycle has no GC to
    /// wait for: a free that gives it a goal wakes it. Returns whether a GC woke it.
    fn park_go(&self, stop: &AtomicBool) -> bool {
        let gen = self.generation();
        let at = if gen == 0 { 1 } else { usize::MAX };
        self.park(stop, at, IDLE_SLEEP, || {
            self.generation() != gen || (gen == 0 && self.scavenge_goal() > 0)
        });
        self.generation() != gen
    }

    /// Sleep until `limit` has passed, a stop request, or the next GC (a [`Heap::cycle`],
    /// which wakes it at once). Returns whether a GC woke the thread.
    fn wait_for_gc(&self, stop: &AtomicBool, limit: Option<Duration>) -> bool {
        let gen = self.generation();
        let t0 = Instant::now();
        loop {
            let left = limit.map_or(IDLE_SLEEP, |l| l.saturating_sub(t0.elapsed()));
            if left == Duration::ZERO || stop.load(Ordering::Relaxed) {
                return false;
            }
            self.park(stop, usize::MAX, left.min(IDLE_SLEEP), || {
                self.generation() != gen
            });
            if self.generation() != gen {
                return true;
            }
            if limit.is_none() {
                return false;
            }
        }
    }
}
