//! Why a forked child died, said on stderr.
//!
//! A child that panics or dies of a signal used to leave nothing but its exit status: under
//! `cargo test` the panic message goes to the harness's output capture, which is
//! thread-local, so in a child (a copy of the test thread) it lands in a buffer nobody
//! reads; and a fatal signal says nothing at all. Two unexplained failures in CI
//! (children dying of SIGSEGV, or with status 101, once in hundreds of runs) could not be
//! traced for that reason. So every child made by this crate:
//!
//! - panics through a hook (installed once, in the parent, where allocating is fine) that
//!   writes `testkit child <pid> panicked at <file>:<line>: <message>` straight to fd 2 in a
//!   child and defers to the previous hook in the parent;
//! - has handlers for SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT that write the signal, its
//!   code, the faulting address and the instruction pointer (with the address of a function
//!   of this crate, to find the code in a position-independent binary), then return with
//!   the default action restored, so the child still dies of that signal (tests that expect
//!   a child to die of SIGSEGV see the same exit; the line is printed for them too). A
//!   closure that installs its own handlers replaces these.
//!
//! Both are allocation-free in the child (the panic hook formats into a stack buffer; std
//! itself may allocate to format a panic message with arguments before calling the hook).

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::raw::{eprint_bytes, fmt_hex, fmt_u64};

/// Set in a child right after `fork` (the parent's copy stays `false`).
static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// Parent side, before every fork: install the panic hook once.
pub(crate) fn before_fork() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CHILD.load(Ordering::Relaxed) {
                return prev(info);
            }
            let mut w = StackBuf::new();
            let _ = write!(w, "testkit child {} panicked", unsafe { libc::getpid() });
            if let Some(l) = info.location() {
                let _ = write!(w, " at {}:{}:{}", l.file(), l.line(), l.column());
            }
            let p = info.payload();
            let msg = p
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| p.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(a payload that is not a string)");
            let _ = writeln!(w, ": {msg}");
            w.flush();
        }));
    });
}

/// Child side, first thing after `fork`.
pub(crate) fn in_child() {
    IN_CHILD.store(true, Ordering::Relaxed);
    for sig in [
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGILL,
        libc::SIGFPE,
        libc::SIGABRT,
    ] {
        // SAFETY: a zeroed sigaction with a valid handler; installing handlers in our own
        // (child) process.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = on_fatal as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, core::ptr::null_mut());
        }
    }
}

/// Say what the signal was, then return: `SA_RESETHAND` restored the default action, so the
/// faulting instruction faults again (or `abort` raises again) and the child dies of it.
extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let mut d = [0u8; 20];
    let mut h = [0u8; 16];
    eprint_bytes(b"testkit child ");
    // SAFETY: getpid has no preconditions; `info` is the kernel's siginfo for this signal.
    eprint_bytes(fmt_u64(unsafe { libc::getpid() } as u64, &mut d));
    eprint_bytes(b": signal ");
    eprint_bytes(fmt_u64(sig as u64, &mut d));
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    eprint_bytes(b" code ");
    eprint_bytes(fmt_u64(code as u32 as u64, &mut d));
    eprint_bytes(b" addr 0x");
    eprint_bytes(fmt_hex(addr as u64, &mut h));
    eprint_bytes(b" ip 0x");
    eprint_bytes(fmt_hex(ip(ctx) as u64, &mut h));
    eprint_bytes(b" (testkit's in_child at 0x");
    eprint_bytes(fmt_hex(in_child as *const () as usize as u64, &mut h));
    eprint_bytes(b"; a test may expect this signal)\n");
}

/// The interrupted instruction pointer.
fn ip(ctx: *mut libc::c_void) -> usize {
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    {
        // SAFETY: with SA_SIGINFO the third argument is the interrupted ucontext.
        unsafe {
            (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as usize
        }
    }
    #[cfg(all(target_arch = "aarch64", target_env = "gnu"))]
    {
        // SAFETY: as above.
        unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.pc as usize }
    }
    #[cfg(not(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        target_env = "gnu"
    )))]
    {
        let _ = ctx;
        0
    }
}

/// A line formatted on the stack (longer text is cut), written to fd 2 at once.
struct StackBuf {
    buf: [u8; 1024],
    len: usize,
}

impl StackBuf {
    fn new() -> Self {
        StackBuf {
            buf: [0; 1024],
            len: 0,
        }
    }

    fn flush(&self) {
        eprint_bytes(&self.buf[..self.len]);
    }
}

impl core::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
