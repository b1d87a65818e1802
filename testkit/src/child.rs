//! Fork helpers: run a closure in a child process, observe how it ends, get a
//! few numbers back, and probe whether an address faults.
//!
//! # Why everything here is allocation-free
//!
//! Test processes are multi-threaded (`cargo test` runs tests on many threads;
//! even under nextest the harness has more than one). `fork()` copies only the
//! calling thread: a lock that another thread held at that moment (allocator,
//! stdio, the test harness's output capture) stays locked forever in the
//! child, so the child may deadlock on its first allocation or print. The child
//! side of these helpers therefore uses only raw syscalls and stack memory,
//! and the closures you pass must do the same (use the crate's allocation-free
//! helpers, raw `libc` calls, and [`crate::eprint_bytes`] for diagnostics).
//!
//! The child always leaves through `_exit`, never returning into the test
//! harness and never running exit handlers or destructors of copied state.

use core::mem::{forget, MaybeUninit};
use core::ops::Index;
use core::sync::atomic::{AtomicI32, Ordering};

use libc::{c_int, c_void};

use crate::raw::{errno, write_all};

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildExit {
    /// Exited with this status (the closure's return value, or one of the
    /// crate's special codes such as [`CHILD_PANIC_EXIT`]).
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ChildExit {
    /// The exit code, if the child exited normally.
    pub fn code(self) -> Option<i32> {
        match self {
            ChildExit::Code(c) => Some(c),
            ChildExit::Signal(_) => None,
        }
    }

    /// Whether the child exited with status 0.
    pub fn is_success(self) -> bool {
        self == ChildExit::Code(0)
    }
}

/// Exit status of a child whose closure panicked.
pub const CHILD_PANIC_EXIT: i32 = 101;

/// Exit status of a child in which [`crate::apply_filter_in_child`] failed.
pub const FILTER_FAILED_EXIT: i32 = 99;

/// Exit status used internally by [`touch_in_child`] when the probe faulted.
const FAULT_EXIT: i32 = 77;

/// Every child gets `alarm(CHILD_TIMEOUT_SECS)` as a watchdog, so a child
/// that deadlocks (e.g. because something allocated after fork) dies with
/// `SIGALRM` instead of hanging the test run. A closure may call
/// `libc::alarm(0)` to cancel it.
pub const CHILD_TIMEOUT_SECS: u32 = 120;

/// `si_code` of a SIGSEGV on an address with no mapping.
pub const SEGV_MAPERR: i32 = 1;
/// `si_code` of a SIGSEGV on a mapping whose protection forbids the access.
pub const SEGV_ACCERR: i32 = 2;
/// `si_code` of a SIGSEGV caused by a memory protection key.
pub const SEGV_PKUERR: i32 = 4;
pub use libc::{BUS_ADRALN, BUS_ADRERR, BUS_OBJERR};

/// Calls `_exit` when dropped. Armed around the child's closure so that a
/// panic unwinding out of it ends the child instead of unwinding into the
/// copy of the test harness.
struct ExitOnDrop(i32);

impl Drop for ExitOnDrop {
    fn drop(&mut self) {
        // SAFETY: `_exit` is always safe to call.
        unsafe { libc::_exit(self.0) }
    }
}

/// Forks; panics in the parent (where allocating is fine) on failure.
fn fork() -> libc::pid_t {
    crate::diag::before_fork();
    // SAFETY: the child side only runs allocation-free code (see module docs).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        panic!("fork failed: {}", std::io::Error::last_os_error());
    }
    pid
}

/// Child side: arm the watchdog, run `f`, `_exit` with its result.
fn run_child<F: FnOnce() -> i32>(f: F) -> ! {
    crate::diag::in_child();
    // SAFETY: plain syscalls on the child's own state.
    unsafe {
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        libc::alarm(CHILD_TIMEOUT_SECS);
    }
    // Best effort on panic: the panic hook (see `diag`) writes the message to
    // fd 2; std may allocate to format it (glibc's fork does make malloc
    // usable in the child, so this usually works), then unwinding drops the guard, which exits with
    // CHILD_PANIC_EXIT. Do not rely on panicking in a child.
    let guard = ExitOnDrop(CHILD_PANIC_EXIT);
    let code = f();
    forget(guard);
    // SAFETY: `_exit` is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Waits for `pid` (retrying on EINTR) and decodes its status.
fn wait_child(pid: libc::pid_t) -> ChildExit {
    let mut status: c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        panic!("waitpid({pid}) failed: {}", std::io::Error::last_os_error());
    }
    if libc::WIFEXITED(status) {
        ChildExit::Code(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        ChildExit::Signal(libc::WTERMSIG(status))
    } else {
        unreachable!("waitpid without WUNTRACED returned status {status:#x}")
    }
}

/// Runs `f` in a forked child and returns how the child ended: `f`'s return
/// value becomes the exit code (`_exit(f())`); a panic gives
/// `Code(CHILD_PANIC_EXIT)` (best effort; with `panic = "abort"` it is
/// `Signal(SIGABRT)`); a fatal signal gives `Signal(n)`.
///
/// `f` runs in a copy of a multi-threaded process and MUST NOT allocate,
/// lock std's stdio or otherwise rely on other threads (see the module docs).
/// Exit codes are truncated to 0..=255 by the kernel.
pub fn in_child<F: FnOnce() -> i32>(f: F) -> ChildExit {
    let pid = fork();
    if pid == 0 {
        run_child(f);
    }
    wait_child(pid)
}

/// Maximum number of values a [`Report`] carries.
pub const REPORT_CAP: usize = 32;

/// Child side of [`in_child_report`]: sends up to [`REPORT_CAP`] `u64` values
/// to the parent. Allocation-free; each value is written to a pipe at once,
/// so values pushed before a crash still arrive.
pub struct Report {
    fd: c_int,
    len: usize,
}

impl Report {
    /// Sends `v`. Returns `false` (and sends nothing) once [`REPORT_CAP`]
    /// values have been sent, or if the write fails.
    pub fn push(&mut self, v: u64) -> bool {
        if self.len >= REPORT_CAP {
            return false;
        }
        if !write_all(self.fd, &v.to_ne_bytes()) {
            return false;
        }
        self.len += 1;
        true
    }

    /// Sends a signed value (e.g. a syscall's return); read it back with
    /// [`ReportBuf::get_i64`].
    pub fn push_i64(&mut self, v: i64) -> bool {
        self.push(v as u64)
    }

    /// Number of values sent so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been sent yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Parent side of [`in_child_report`]: the values the child pushed, in order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReportBuf {
    vals: [u64; REPORT_CAP],
    len: usize,
}

impl ReportBuf {
    /// The `i`-th value, if the child pushed that many.
    pub fn get(&self, i: usize) -> Option<u64> {
        self.as_slice().get(i).copied()
    }

    /// The `i`-th value as `i64` (see [`Report::push_i64`]).
    pub fn get_i64(&self, i: usize) -> Option<i64> {
        self.get(i).map(|v| v as i64)
    }

    /// All values received.
    pub fn as_slice(&self) -> &[u64] {
        &self.vals[..self.len]
    }

    /// Number of values received.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no value was received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Index<usize> for ReportBuf {
    type Output = u64;

    /// Panics (in the parent) if the child pushed fewer than `i + 1` values.
    fn index(&self, i: usize) -> &u64 {
        &self.as_slice()[i]
    }
}

impl core::fmt::Debug for ReportBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Creates a pipe; panics in the parent on failure.
///
/// Both ends are non-blocking: the child never writes more than the pipe
/// holds, and the parent only drains what is already there (see
/// [`in_child_report`]). CLOEXEC keeps them out of anything exec'd.
fn pipe() -> [c_int; 2] {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if rc != 0 {
        panic!("pipe2 failed: {}", std::io::Error::last_os_error());
    }
    fds
}

/// Reads whatever the (already exited) child left in the pipe.
fn drain(fd: c_int) -> ReportBuf {
    let mut bytes = [0u8; REPORT_CAP * 8];
    let mut got = 0;
    while got < bytes.len() {
        let rest = &mut bytes[got..];
        // SAFETY: the pointer/length pair comes from a live mutable slice.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n > 0 {
            got += n as usize;
        } else if n < 0 && errno() == libc::EINTR {
            continue;
        } else {
            break; // 0: EOF; EAGAIN: nothing more in the pipe.
        }
    }
    let mut out = ReportBuf {
        vals: [0; REPORT_CAP],
        len: got / 8,
    };
    for (v, chunk) in out.vals.iter_mut().zip(bytes[..got].chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *v = u64::from_ne_bytes(b);
    }
    out
}

/// Like [`in_child`], but `f` also gets a [`Report`] through which it can
/// send up to [`REPORT_CAP`] `u64` values back; returns the exit and the values.
///
/// The parent reads the pipe only after `waitpid`, never waiting for EOF:
/// children forked concurrently by other test threads inherit the write end
/// too (CLOEXEC only acts on exec) and could hold EOF off indefinitely. At most
/// 256 bytes are written, far below the pipe's capacity, so everything the
/// child sent is in the pipe by the time it has exited.
pub fn in_child_report<F: FnOnce(&mut Report) -> i32>(f: F) -> (ChildExit, ReportBuf) {
    let [rd, wr] = pipe();
    let pid = fork();
    if pid == 0 {
        // SAFETY: closing our copy of the read end.
        unsafe { libc::close(rd) };
        let mut report = Report { fd: wr, len: 0 };
        run_child(move || f(&mut report));
    }
    // SAFETY: closing the parent's copy of the write end, which we own.
    unsafe { libc::close(wr) };
    let exit = wait_child(pid);
    let buf = drain(rd);
    // SAFETY: we own the read end.
    unsafe { libc::close(rd) };
    (exit, buf)
}

/// Result of [`touch_in_child`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// The access succeeded.
    Ok,
    /// The access raised SIGSEGV with this `si_code` ([`SEGV_MAPERR`],
    /// [`SEGV_ACCERR`], ...).
    Segv {
        /// `siginfo_t::si_code` of the fault.
        si_code: i32,
    },
    /// The access raised SIGBUS with this `si_code` ([`BUS_ADRERR`], ...),
    /// e.g. past the end of a file mapping.
    Bus {
        /// `siginfo_t::si_code` of the fault.
        si_code: i32,
    },
    /// The child ended some other way.
    Other(ChildExit),
}

/// Write end of the report pipe in the probing child, for the signal handler.
/// (A static is fine: it is set after fork, in the child's own memory.)
static FAULT_FD: AtomicI32 = AtomicI32::new(-1);

/// SIGSEGV/SIGBUS handler of the probing child: reports signal, si_code and
/// fault address through the pipe, then exits. Async-signal-safe.
extern "C" fn on_fault(sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    let (code, addr) = if info.is_null() {
        (0, 0)
    } else {
        // SAFETY: the kernel passes a valid siginfo_t with SA_SIGINFO.
        unsafe { ((*info).si_code, (*info).si_addr() as usize) }
    };
    let mut bytes = [0u8; 24];
    bytes[..8].copy_from_slice(&(sig as u64).to_ne_bytes());
    bytes[8..16].copy_from_slice(&(code as i64 as u64).to_ne_bytes());
    bytes[16..].copy_from_slice(&(addr as u64).to_ne_bytes());
    let _ = write_all(FAULT_FD.load(Ordering::Relaxed), &bytes);
    // SAFETY: `_exit` is async-signal-safe.
    unsafe { libc::_exit(FAULT_EXIT) }
}

/// Installs [`on_fault`] for SIGSEGV and SIGBUS and unblocks them.
fn install_fault_handler(fd: c_int) {
    FAULT_FD.store(fd, Ordering::Relaxed);
    // SAFETY: a zeroed sigaction is a valid starting point; all pointers
    // passed are to live stack values.
    unsafe {
        let mut sa: libc::sigaction = MaybeUninit::zeroed().assume_init();
        sa.sa_sigaction = on_fault as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSEGV, &sa, core::ptr::null_mut());
        libc::sigaction(libc::SIGBUS, &sa, core::ptr::null_mut());
        // A blocked synchronous SIGSEGV would kill the child outright.
        let mut set: libc::sigset_t = MaybeUninit::zeroed().assume_init();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGSEGV);
        libc::sigaddset(&mut set, libc::SIGBUS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
    }
}

/// Accesses one byte at `addr`: a volatile read, or (for `write`) a write
/// that leaves the value unchanged.
///
/// # Safety
/// May fault; only call in a child with the fault handler installed.
unsafe fn access(addr: usize, write: bool) {
    if !write {
        core::ptr::read_volatile(addr as *const u8);
        return;
    }
    // A locked add of 0 is a genuine write access that cannot change the
    // byte, even if the parent writes a MAP_SHARED page concurrently.
    #[cfg(target_arch = "x86_64")]
    core::arch::asm!("lock add byte ptr [{0}], 0", in(reg) addr, options(nostack));
    #[cfg(not(target_arch = "x86_64"))]
    {
        let p = addr as *mut u8;
        core::ptr::write_volatile(p, core::ptr::read_volatile(p));
    }
}

/// Reads (or, with `write`, writes without changing) the byte at `addr` in a
/// forked child and reports whether the kernel let the access through.
///
/// The parent's memory is not affected: a read fault on an untouched
/// private page, or a write fault breaking COW, happens in the child only.
/// (For MAP_SHARED memory the child's write fault does dirty the shared
/// page.) Allocation-free, so it may itself be called inside a child; it
/// then forks a grandchild.
pub fn touch_in_child(addr: usize, write: bool) -> Touch {
    let (exit, buf) = in_child_report(|r| {
        install_fault_handler(r.fd);
        // SAFETY: a fault is caught by the handler, which exits the child.
        unsafe { access(addr, write) };
        0
    });
    match (exit, buf.get(0), buf.get(1)) {
        (ChildExit::Code(0), _, _) => Touch::Ok,
        (ChildExit::Code(FAULT_EXIT), Some(sig), Some(code)) => {
            let si_code = code as i64 as i32;
            match sig as i32 {
                libc::SIGSEGV => Touch::Segv { si_code },
                libc::SIGBUS => Touch::Bus { si_code },
                _ => Touch::Other(exit),
            }
        }
        _ => Touch::Other(exit),
    }
}

/// Run test `test` of this test binary again in a process of its own (one test, one thread
/// of the harness), with `env` set and the variables in `unset` removed, and return the
/// `key=value` pairs of the line it printed after `RESULT ` (for checks that need a fresh
/// process: an environment at exec, a thread of which only one may exist). Panics if it fails
/// or prints no such line.
///
/// ```no_run
/// let kv = osmem_testkit::rerun_self("my_test", &[("MY_ROLE", "child")], &["OSMEM"]);
/// assert_eq!(kv["answer"], "42");
/// ```
pub fn rerun_self(
    test: &str,
    env: &[(&str, &str)],
    unset: &[&str],
) -> std::collections::HashMap<String, String> {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test}: subprocess failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{test}: no RESULT line in {stdout}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
