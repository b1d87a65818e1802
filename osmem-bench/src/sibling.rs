//! A second thread of the process, spinning, so that every TLB flush becomes an IPI.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// While alive, a thread of this process spins on another core (a busy loop on an
/// [`AtomicBool`] with [`spin_loop`]).
///
/// Why it matters: the kernel must shoot down stale TLB entries on every CPU
/// currently running the process's address space. Alone, that is a local flush; with a
/// sibling thread running on the other core, every `madvise(DONTNEED)` / `mprotect` that
/// drops or changes PTEs sends an inter-processor interrupt and waits for it. Purging 1024
/// ranges one call at a time then costs 17× more, which is what batching saves. The thread
/// never sleeps, so its CPU never drops the address space into lazy-TLB mode.
///
/// Where the process may run on two or more CPUs, the sibling is pinned to a CPU other than
/// the calling (measuring) thread's, and the caller to its current CPU, until the guard is
/// dropped (the caller's own CPU mask is then restored). Unpinned, on a loaded 2-vCPU machine
/// the scheduler sometimes put both on one CPU for a whole measurement, and then no flush
/// needed an IPI: the "with sibling" figures equalled the "alone" ones. [`start`](Self::start)
/// returns once the thread is spinning; dropping the guard (or [`stop`](Self::stop)) ends
/// the loop and joins the thread.
///
/// ```
/// let s = osmem_bench::Sibling::start();
/// // ... measure: every TLB flush now interrupts the spinning core ...
/// assert!(s.stop() > 0, "the thread spun");
/// ```
#[derive(Debug)]
pub struct Sibling {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
    /// The caller's CPU mask before it was pinned, to restore.
    caller_mask: Option<libc::cpu_set_t>,
}

/// The calling thread's CPU mask.
fn mask() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

/// Set the calling thread's CPU mask (best effort: a refusal leaves the thread unpinned).
fn set_mask(set: &libc::cpu_set_t) {
    // SAFETY: as above.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
}

fn only(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: as above; CPU_SET writes inside the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// Two different CPUs the caller may run on: (its current one, another), if there are two.
fn two_cpus(allowed: &libc::cpu_set_t) -> Option<(usize, usize)> {
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: reads inside the set.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, allowed) })
        .collect();
    // SAFETY: no preconditions.
    let here = unsafe { libc::sched_getcpu() };
    let a = usize::try_from(here)
        .ok()
        .filter(|c| cpus.contains(c))
        .or_else(|| cpus.first().copied())?;
    let b = cpus.iter().copied().find(|&c| c != a)?;
    Some((a, b))
}

impl Sibling {
    /// Spawn the spinning thread and wait until it runs.
    ///
    /// # Panics
    /// If the thread cannot be spawned.
    pub fn start() -> Sibling {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let caller_mask = mask();
        let cpus = caller_mask.as_ref().and_then(two_cpus);
        if let Some((a, _)) = cpus {
            set_mask(&only(a));
        }
        let handle = {
            let (stop, started) = (Arc::clone(&stop), Arc::clone(&started));
            std::thread::Builder::new()
                .name("osmem-bench-sibling".into())
                .spawn(move || {
                    if let Some((_, b)) = cpus {
                        set_mask(&only(b));
                    }
                    started.store(true, Ordering::Release);
                    let mut spins = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        spin_loop();
                        spins += 1;
                    }
                    spins
                })
                .expect("spawn the sibling thread")
        };
        while !started.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        Sibling {
            stop,
            handle: Some(handle),
            caller_mask: cpus.and(caller_mask),
        }
    }

    /// [`start`](Self::start) if `on`, else nothing: `let _s = Sibling::maybe(sibling);`.
    ///
    /// ```
    /// assert!(osmem_bench::Sibling::maybe(false).is_none());
    /// ```
    pub fn maybe(on: bool) -> Option<Sibling> {
        on.then(Sibling::start)
    }

    /// Stop and join the thread; returns how many times it went round its loop.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let spins = match self.handle.take() {
            Some(h) => h.join().unwrap_or(0),
            None => 0,
        };
        if let Some(m) = self.caller_mask.take() {
            set_mask(&m);
        }
        spins
    }
}

impl Drop for Sibling {
    fn drop(&mut self) {
        self.halt();
    }
}
