//! mmap_lock contention: how much throughput threads that take `mmap_lock` for reading keep
//! while another thread faults and unfaults a range with each strategy.

use crate::raw::{self, MADV_DONTNEED, MADV_POPULATE_WRITE};
use crate::{Estimate, Flavour, Op, OpBench};
use osmem::Reservation;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The mutator of the control windows: `MADV_DONTNEED` of its range and repopulating it, the
/// same work as every other mutator minus the strategy's protection change. It never takes
/// `mmap_lock` for writing (DONTNEED takes it for reading or only the VMA's lock;
/// `MADV_POPULATE_WRITE` for reading), so readers run beside it unhindered.
pub const CONTROL: Op = Op::UnusedDontNeed;

/// A thread that needs `mmap_lock` for reading, whose throughput is measured.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Worker {
    /// Faults pages in with `MADV_POPULATE_WRITE`, 64 KiB at a time, on its own ranges
    /// (cycling through 64 of them and dropping them all with one `MADV_DONTNEED` per
    /// cycle): GUP takes `mmap_lock` for reading, as does a runtime prefaulting a span.
    Populate,
    /// Reads `/proc/self/maps` from start to end, again and again, as profilers, monitoring
    /// agents and `ps`-like tools do.
    MapsReader,
    /// Asks osmem which pages of a fully resident 1 GiB region the kernel holds
    /// ([`Reservation::residency`], the method osmem selects), again and again: the kernel
    /// walks the page tables under `mmap_lock` for reading (PAGEMAP_SCAN: the whole range
    /// in one walk). Not in [`Worker::ALL`]: it is what osmem itself adds, measured apart
    /// from the readers a runtime meets anyway.
    ResidencyScan,
}

impl Worker {
    /// Both.
    pub const ALL: [Worker; 2] = [Worker::Populate, Worker::MapsReader];

    /// `populate` or `maps-reader`.
    ///
    /// ```
    /// assert_eq!(osmem_bench::Worker::MapsReader.name(), "maps-reader");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Worker::Populate => "populate",
            Worker::MapsReader => "maps-reader",
            Worker::ResidencyScan => "residency-scan",
        }
    }

    /// What one unit of its throughput is.
    ///
    /// ```
    /// assert!(osmem_bench::Worker::Populate.unit().contains("64 KiB"));
    /// ```
    pub fn unit(self) -> &'static str {
        match self {
            Worker::Populate => "MADV_POPULATE_WRITE of 64 KiB",
            Worker::MapsReader => "full read of /proc/self/maps",
            Worker::ResidencyScan => "residency query of a resident 1 GiB",
        }
    }
}

/// The mutator's pace: one cycle (populate, op, undo) every 100 µs, 10,000 per second, the
/// same for every strategy and for the control. Unpaced, a mutator that the readers starve
/// (one that needs mmap_lock(W)) would do a tenth of the work of one they do not, and the
/// readers would look *better* off beside the starved one. At a common pace the readers are
/// compared on equal work, and a mutator that cannot keep the pace shows it in its own rate
/// ([`Contention::mutator_kept`]). A 64 KiB cycle takes 30–80 µs on a 2-vCPU VM, so every
/// strategy can keep this pace alone; the thread spins between cycles, so it keeps its CPU.
pub const MUTATOR_PERIOD: Duration = Duration::from_micros(100);

const POP_CHUNK: usize = 64 << 10;
const POP_CHUNKS: usize = 64;

/// A worker's state: set up before its window starts, so the window times only the work.
enum WorkerState {
    Populate { region: Reservation, next: usize },
    Maps { buf: Vec<u8> },
    Residency { buf: Vec<osmem::PageRun> },
}

/// The residency worker's region: 1 GiB, every page written once, THP off (so the walk
/// visits every page-table entry). Made once per process: populating it takes longer than
/// a window.
fn residency_region() -> &'static Reservation {
    static R: std::sync::OnceLock<Reservation> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let len = 1 << 30;
        let r = Reservation::reserve_aligned(len, 2 << 20)
            .and_then(|r| r.map(0, len).and(r.used(0, len)).map(|()| r))
            .unwrap_or_else(|e| panic!("residency worker's region: {e}"));
        let _ = r.nohugepage(0, len);
        let ps = osmem::page_size();
        for off in (0..len).step_by(ps) {
            // SAFETY: inside the Ready region.
            unsafe { r.as_ptr().add(off).write_volatile(1) };
        }
        r
    })
}

impl WorkerState {
    fn new(w: Worker) -> WorkerState {
        match w {
            Worker::Populate => {
                let len = POP_CHUNK * POP_CHUNKS;
                let region = Reservation::reserve_aligned(len, 2 << 20)
                    .and_then(|r| r.map(0, len).and(r.used(0, len)).map(|()| r))
                    .unwrap_or_else(|e| panic!("populate worker's region: {e}"));
                WorkerState::Populate { region, next: 0 }
            }
            Worker::MapsReader => WorkerState::Maps {
                buf: Vec::with_capacity(1 << 20),
            },
            Worker::ResidencyScan => {
                residency_region();
                WorkerState::Residency {
                    buf: vec![osmem::PageRun::EMPTY; 16],
                }
            }
        }
    }

    /// One unit of work.
    fn step(&mut self) {
        match self {
            WorkerState::Populate { region, next } => {
                let base = region.as_ptr() as usize;
                // SAFETY: the region is ours, Ready, and holds nothing anyone reads.
                unsafe {
                    raw::madvise(base + *next * POP_CHUNK, POP_CHUNK, MADV_POPULATE_WRITE);
                }
                *next += 1;
                if *next == POP_CHUNKS {
                    *next = 0;
                    // SAFETY: as above.
                    unsafe { raw::madvise(base, region.len(), MADV_DONTNEED) };
                }
            }
            WorkerState::Maps { buf } => {
                buf.clear();
                std::fs::File::open("/proc/self/maps")
                    .and_then(|mut f| f.read_to_end(buf))
                    .unwrap_or_else(|e| panic!("read /proc/self/maps: {e}"));
            }
            WorkerState::Residency { buf } => {
                let r = residency_region();
                let _ = r
                    .residency(0, r.len(), buf)
                    .unwrap_or_else(|e| panic!("residency query: {e}"));
            }
        }
    }
}

/// One window: `mutator` (through osmem, on its own `size`-byte range inside padding, see
/// [`OpBench`]) and, if given, `worker` run on two threads for `window`; returns (worker
/// ops/s, 0 without a worker; mutator cycles/s). The calling thread sleeps meanwhile, so on a
/// 2-CPU machine each of the two measured threads has a CPU (a third busy thread would make
/// the figures about scheduling, not about the lock).
fn window(worker: Option<Worker>, mutator: Op, size: usize, window: Duration) -> (f64, f64) {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(2 + usize::from(worker.is_some()));
    let (stop, barrier) = (&stop, &barrier);
    std::thread::scope(|s| {
        let m = s.spawn(move || {
            let mut b = OpBench::new(size).unwrap_or_else(|e| panic!("mutator region: {e}"));
            b.once(mutator, Flavour::Osmem);
            barrier.wait();
            let start = Instant::now();
            let mut next = start;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::hint::spin_loop();
                    continue;
                }
                b.once(mutator, Flavour::Osmem);
                n += 1;
                // A cycle that ran late is not made up for with a burst.
                next = (next + MUTATOR_PERIOD).max(now);
            }
            n as f64 / start.elapsed().as_secs_f64()
        });
        let w = worker.map(|worker| {
            s.spawn(move || {
                let mut st = WorkerState::new(worker);
                st.step();
                barrier.wait();
                let start = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    st.step();
                    n += 1;
                }
                n as f64 / start.elapsed().as_secs_f64()
            })
        });
        barrier.wait();
        std::thread::sleep(window);
        stop.store(true, Ordering::Relaxed);
        let unwind =
            |r: std::thread::Result<f64>| r.unwrap_or_else(|p| std::panic::resume_unwind(p));
        let w = w.map_or(0.0, |w| unwind(w.join()));
        (w, unwind(m.join()))
    })
}

/// The result of [`contention`] for one worker kind.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Contention {
    /// The worker measured.
    pub worker: Worker,
    /// The mutators compared with [`CONTROL`], in the order given.
    pub mutators: Vec<Op>,
    /// The mutator's range size, bytes.
    pub size: usize,
    /// The length of one window.
    pub window: Duration,
    /// Rounds measured.
    pub rounds: usize,
    /// `relative[i][k]`: in round `k`, the worker's throughput beside mutator `i` divided by
    /// the mean of its throughput in the two control windows on either side.
    pub relative: Vec<Vec<f64>>,
    /// `worker_rate[i][k]`: the worker's throughput beside mutator `i` in round `k`, ops/s.
    pub worker_rate: Vec<Vec<f64>>,
    /// `mutator_rate[i][k]`: mutator `i`'s own rate (fault + unfault cycles/s) in round `k`.
    pub mutator_rate: Vec<Vec<f64>>,
    /// `mutator_kept[i][k]`: mutator `i`'s rate beside the worker in round `k` divided by its
    /// rate alone (no worker) in the window right after: how much the *writer* side is
    /// slowed. A strategy that needs mmap_lock(W) waits for the readers to drain.
    pub mutator_kept: Vec<Vec<f64>>,
    /// The worker's throughput in every control window, ops/s.
    pub control_rate: Vec<f64>,
    /// The control mutator's rate in every control window, cycles/s.
    pub control_mutator_rate: Vec<f64>,
    /// The control mutator's rate beside the worker over its rate alone, per round.
    pub control_mutator_kept: Vec<f64>,
}

impl Contention {
    /// The worker's throughput beside mutator `i` relative to the control (1.0 = unhindered).
    pub fn relative(&self, i: usize) -> Estimate {
        Estimate::of(&mut self.relative[i].clone())
    }

    /// Mutator `i`'s relative throughput divided by mutator `j`'s, round by round.
    pub fn between(&self, i: usize, j: usize) -> Estimate {
        let mut r: Vec<f64> = self.relative[i]
            .iter()
            .zip(&self.relative[j])
            .map(|(a, b)| a / b)
            .collect();
        Estimate::of(&mut r)
    }

    /// The median worker throughput beside mutator `i`, ops/s.
    pub fn worker_ops_per_s(&self, i: usize) -> f64 {
        crate::median_f64(&mut self.worker_rate[i].clone())
    }

    /// Mutator `i`'s rate beside the worker relative to its rate alone (1.0 = unhindered).
    pub fn mutator_kept(&self, i: usize) -> Estimate {
        Estimate::of(&mut self.mutator_kept[i].clone())
    }

    /// The control mutator's rate beside the worker relative to its rate alone.
    pub fn control_mutator_kept(&self) -> Estimate {
        Estimate::of(&mut self.control_mutator_kept.clone())
    }

    /// The median rate of mutator `i`, cycles/s.
    pub fn mutator_ops_per_s(&self, i: usize) -> f64 {
        crate::median_f64(&mut self.mutator_rate[i].clone())
    }

    /// The median worker throughput in the control windows, ops/s.
    pub fn control_ops_per_s(&self) -> f64 {
        crate::median_f64(&mut self.control_rate.clone())
    }
}

/// Measure `worker`'s throughput beside each mutator and beside the [`CONTROL`] mutator, in
/// windows of `window`, alternating control and mutator windows:
/// `C M₁ C M₂ C … Mₙ C`, for `rounds` rounds (the mutator order rotating each round). Each
/// mutator window is compared with the mean of the two control windows around it, so the
/// ratio is taken side by side, within a fraction of a second, and slow drift of the machine
/// cancels. Every mutator runs at the same pace ([`MUTATOR_PERIOD`]). Right after each mutator window the same mutator runs once more without the
/// worker, which gives the writer side: the mutator's rate beside the worker over its rate
/// alone ([`Contention::mutator_kept`]). A mutator cycle is [`OpBench::once`] through osmem: populate its `size`-byte
/// range (`MADV_POPULATE_WRITE`), apply the op, undo it (`map` + `used` after a fault).
///
/// Two threads run at a time (one mutator, one worker); with several worker kinds, call this
/// once per kind rather than running them together: on a 2-CPU machine a third busy thread
/// would be measuring the scheduler.
///
/// # Panics
/// If a region cannot be made, a syscall fails, an op is unsupported (check
/// [`Op::is_supported`]), or `mutators` contains the control.
///
/// ```no_run
/// use osmem_bench::{contention, Op, Worker};
/// use std::time::Duration;
/// let c = contention(Worker::Populate, &[Op::FaultGo, Op::FaultGuard], 64 << 10, 5, Duration::from_millis(100));
/// println!("beside Go's order the worker keeps {:.0}%", 100.0 * c.relative(0).median);
/// ```
pub fn contention(
    worker: Worker,
    mutators: &[Op],
    size: usize,
    rounds: usize,
    window_len: Duration,
) -> Contention {
    assert!(
        !mutators.contains(&CONTROL),
        "the control is measured anyway"
    );
    let n = mutators.len();
    let mut relative: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); n];
    let mut worker_rate = relative.clone();
    let mut mutator_rate = relative.clone();
    let mut mutator_kept = relative.clone();
    let mut control_rate = Vec::new();
    let mut control_mutator_rate = Vec::new();
    let mut control_mutator_kept = Vec::new();
    // A control window, and (once per round) the control mutator alone after it.
    let mut control = |alone: bool| {
        let (w, m) = window(Some(worker), CONTROL, size, window_len);
        control_rate.push(w);
        control_mutator_rate.push(m);
        if alone {
            let (_, a) = window(None, CONTROL, size, window_len);
            control_mutator_kept.push(m / a);
        }
        w
    };
    for k in 0..rounds {
        let mut before = control(true);
        for step in 0..n {
            let i = (k + step) % n;
            let (w, m) = window(Some(worker), mutators[i], size, window_len);
            let (_, alone) = window(None, mutators[i], size, window_len);
            let after = control(false);
            relative[i].push(w / ((before + after) / 2.0));
            worker_rate[i].push(w);
            mutator_rate[i].push(m);
            mutator_kept[i].push(m / alone);
            before = after;
        }
    }
    Contention {
        worker,
        mutators: mutators.to_vec(),
        size,
        window: window_len,
        rounds,
        relative,
        worker_rate,
        mutator_rate,
        mutator_kept,
        control_rate,
        control_mutator_rate,
        control_mutator_kept,
    }
}
