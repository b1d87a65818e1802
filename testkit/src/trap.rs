//! "Fail the first N calls, then succeed": transient-failure injection with
//! `SECCOMP_RET_TRAP` (x86_64 only).
//!
//! A seccomp filter cannot count, so it cannot say "EAGAIN once, then let
//! the call through" on its own. Here the filter *traps* the chosen syscall:
//! the kernel skips it and raises `SIGSYS` in the calling thread, with the
//! syscall's registers in the signal's `ucontext`. An allocation-free
//! `SIGSYS` handler then decides per trapped call:
//!
//! - the first `N` matching calls fail: `-errno` is written into `RAX`, which
//!   is the syscall's return value when the handler returns;
//! - later calls are re-issued by the handler itself (a raw `syscall`
//!   instruction) and their real result goes into `RAX`.
//!
//! The re-issued call must not be trapped again, so the filter matches only
//! calls that do NOT carry a marker the handler adds:
//!
//! - most syscalls: argument 5 (`r9`) equal to [`TRAP_MAGIC`]. Every syscall
//!   osmem issues except mmap takes at most 5 arguments (madvise, mprotect:
//!   3; munmap, pidfd_open: 2; process_madvise, prctl: 5), and the kernel
//!   ignores unused argument registers;
//! - `mmap` uses all six, but for `MAP_ANONYMOUS` the kernel ignores the fd:
//!   the filter matches only `fd == -1` and the handler re-issues with
//!   `fd == -2` (checked against the kernel in `tests/trap.rs`).
//!
//! Build the filter in the parent ([`build_trap_filter`] allocates), apply it
//! in a forked child ([`apply_trap_filter_in_child`] does not), or both via
//! [`in_child_trapped`]. It stacks with the errno filters of
//! [`crate::build_filter`]: `SECCOMP_RET_TRAP` takes precedence over
//! `SECCOMP_RET_ERRNO`, and a re-issued call is judged by the other filters
//! as usual.
//!
//! Why x86_64 only: the handler reads and writes the syscall registers in
//! `ucontext_t` (`REG_RAX`, `REG_RDI`, …) and re-issues the call with inline
//! assembly; other architectures would need their own register map.
#![cfg(target_arch = "x86_64")]

use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::collections::BTreeMap;

use libc::{c_int, c_void};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::child::{in_child_report, ChildExit, Report, ReportBuf};
use crate::seccomp::apply_filter_in_child;

/// The value the handler puts in argument 5 of a re-issued call, so the
/// filter lets it through. Not a plausible argument of any syscall here.
pub const TRAP_MAGIC: u64 = 0x05ec_c0de_7a11_0a5e;

/// The fd the handler passes to a re-issued anonymous `mmap` (the filter
/// traps only `fd == -1`; the kernel ignores the fd of `MAP_ANONYMOUS`).
const MMAP_BYPASS_FD: i64 = -2;

/// Most rules a [`TrapFilter`] holds.
pub const MAX_TRAPS: usize = 8;

/// Most argument conditions of one [`Trap`].
const MAX_CONDS: usize = 3;

/// One transient failure to inject: calls of syscall `nr` whose arguments
/// match every [`when`](Self::when) condition fail with `errno` (default
/// `EAGAIN`) the first `n` times (default 1) and then go through.
///
/// ```no_run
/// use osmem_testkit::Trap;
/// // madvise(_, _, MADV_DONTNEED) fails once with EAGAIN, then works.
/// let t = Trap::new(libc::SYS_madvise).when(2, libc::MADV_DONTNEED as u32);
/// # let _ = t;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trap {
    nr: i64,
    conds: [(u8, u32); MAX_CONDS],
    nconds: u8,
    fail: u32,
    errno: i32,
    /// Bits cleared in one argument of every re-issued call: (argument, mask).
    clear: (u8, u64),
    /// A failing `mmap` first unmaps its range (see [`Trap::unmap_on_fail`]).
    unmap: bool,
}

impl Trap {
    /// Trap every call of `nr` (a `libc::SYS_*`); the first one fails with
    /// `EAGAIN`.
    pub const fn new(nr: i64) -> Trap {
        Trap {
            nr,
            conds: [(0, 0); MAX_CONDS],
            nconds: 0,
            fail: 1,
            errno: libc::EAGAIN,
            clear: (0, 0),
            unmap: false,
        }
    }

    /// The failing calls of an `mmap` rule first unmap their range (a real `munmap` of
    /// arguments 0 and 1), then fail: emulates a `MAP_FIXED` mmap that failed after the
    /// kernel had cleared the old mapping's page tables, which cannot be undone and leaves a
    /// hole (`vms_abort_munmap_vmas` in mm/vma.c). A seccomp errno rule cannot: it fails the
    /// call before the kernel does anything.
    ///
    /// ```no_run
    /// use osmem_testkit::Trap;
    /// let hole = Trap::new(libc::SYS_mmap)
    ///     .when(3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED) as u32)
    ///     .errno(libc::ENOMEM)
    ///     .unmap_on_fail();
    /// # let _ = hole;
    /// ```
    pub const fn unmap_on_fail(mut self) -> Trap {
        self.unmap = true;
        self
    }

    /// Re-issue the calls that go through with `mask` cleared in argument `arg`: emulates a
    /// kernel that does not know a flag and ignores it (e.g. `MAP_FIXED_NOREPLACE` before
    /// Linux 4.17, which then takes the address as a hint). Combine with `fail_first(0)`.
    ///
    /// ```no_run
    /// use osmem_testkit::Trap;
    /// let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u32;
    /// let old_kernel = Trap::new(libc::SYS_mmap)
    ///     .when(3, flags)
    ///     .fail_first(0)
    ///     .clear_bits(3, libc::MAP_FIXED_NOREPLACE as u64);
    /// # let _ = old_kernel;
    /// ```
    pub const fn clear_bits(mut self, arg: u8, mask: u64) -> Trap {
        self.clear = (arg, mask);
        self
    }

    /// Only calls whose argument `arg` (0..=5) has low 32 bits equal to
    /// `value`. At most 3 conditions; argument 5 is reserved for the marker
    /// (argument 4, the fd, for mmap). Checked by [`build_trap_filter`].
    pub const fn when(mut self, arg: u8, value: u32) -> Trap {
        if (self.nconds as usize) < MAX_CONDS {
            self.conds[self.nconds as usize] = (arg, value);
        }
        // One past the limit is remembered so build_trap_filter can reject it.
        self.nconds += 1;
        self
    }

    /// The first `n` matching calls fail (0: none, all are re-issued).
    pub const fn fail_first(mut self, n: u32) -> Trap {
        self.fail = n;
        self
    }

    /// The errno the failing calls get (1..=4095; default `EAGAIN`).
    pub const fn errno(mut self, errno: i32) -> Trap {
        self.errno = errno;
        self
    }

    /// The argument that carries the bypass marker.
    const fn marker_arg(&self) -> u8 {
        if self.nr == libc::SYS_mmap {
            4
        } else {
            5
        }
    }

    fn conds(&self) -> &[(u8, u32)] {
        &self.conds[..(self.nconds as usize).min(MAX_CONDS)]
    }

    fn check(&self) {
        assert!(
            (self.nconds as usize) <= MAX_CONDS,
            "{self:?}: at most {MAX_CONDS} conditions"
        );
        assert!(
            (1..=4095).contains(&self.errno),
            "{self:?}: errno must be in 1..=4095"
        );
        for &(arg, _) in self.conds() {
            assert!(arg <= 5, "{self:?}: argument index must be 0..=5");
            assert!(
                arg != self.marker_arg(),
                "{self:?}: argument {arg} carries the bypass marker"
            );
        }
    }
}

/// A compiled trap filter and the rules its handler applies; from
/// [`build_trap_filter`].
#[derive(Clone, Debug)]
pub struct TrapFilter {
    prog: BpfProgram,
    rules: [Trap; MAX_TRAPS],
    len: usize,
}

impl TrapFilter {
    /// The seccomp program (default `ALLOW`, matching calls `TRAP`).
    pub fn program(&self) -> &BpfProgram {
        &self.prog
    }

    /// The rules, in the order given to [`build_trap_filter`] (the index of
    /// a rule is the index for [`trap_counts`]).
    pub fn rules(&self) -> &[Trap] {
        &self.rules[..self.len]
    }
}

/// Builds the filter for `rules` (1..=[`MAX_TRAPS`]). When several rules
/// match one call, the first decides. Allocates: call it in the parent.
pub fn build_trap_filter(rules: &[Trap]) -> TrapFilter {
    assert!(
        !rules.is_empty() && rules.len() <= MAX_TRAPS,
        "build_trap_filter: 1..={MAX_TRAPS} rules"
    );
    let arch: TargetArch = std::env::consts::ARCH
        .try_into()
        .unwrap_or_else(|e| panic!("seccompiler does not support this architecture: {e}"));
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for t in rules {
        t.check();
        let cond = |arg: u8, len, op, value: u64| {
            SeccompCondition::new(arg, len, op, value).unwrap_or_else(|e| panic!("{t:?}: {e}"))
        };
        let mut conds: Vec<SeccompCondition> = t
            .conds()
            .iter()
            .map(|&(arg, v)| cond(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, v.into()))
            .collect();
        // The bypass: a re-issued call carries the marker and is not matched.
        conds.push(if t.nr == libc::SYS_mmap {
            cond(
                4,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                u32::MAX.into(),
            )
        } else {
            cond(5, SeccompCmpArgLen::Qword, SeccompCmpOp::Ne, TRAP_MAGIC)
        });
        let rule = SeccompRule::new(conds).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        map.entry(t.nr).or_default().push(rule);
    }
    let filter = SeccompFilter::new(map, SeccompAction::Allow, SeccompAction::Trap, arch)
        .unwrap_or_else(|e| panic!("{rules:?}: {e}"));
    let prog = BpfProgram::try_from(filter).unwrap_or_else(|e| panic!("{rules:?}: {e}"));
    let mut out = [Trap::new(-1); MAX_TRAPS];
    out[..rules.len()].copy_from_slice(rules);
    TrapFilter {
        prog,
        rules: out,
        len: rules.len(),
    }
}

/// What the handler did for one rule (see [`trap_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapCounts {
    /// Calls the rule trapped.
    pub trapped: u32,
    /// Of those, calls made to fail with the rule's errno.
    pub failed: u32,
    /// Of those, calls re-issued to the kernel.
    pub passed: u32,
}

/// The handler's view of one rule. Atomics, so a `static` array needs no
/// `unsafe` and the handler reads what the child wrote before installing.
struct Slot {
    nr: AtomicI64,
    conds: [AtomicU64; MAX_CONDS],
    nconds: AtomicU8,
    clear_arg: AtomicU8,
    clear_mask: AtomicU64,
    unmap: AtomicU8,
    left: AtomicU32,
    errno: AtomicI32,
    trapped: AtomicU32,
    failed: AtomicU32,
    passed: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    nr: AtomicI64::new(-1),
    conds: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
    nconds: AtomicU8::new(0),
    clear_arg: AtomicU8::new(0),
    clear_mask: AtomicU64::new(0),
    unmap: AtomicU8::new(0),
    left: AtomicU32::new(0),
    errno: AtomicI32::new(0),
    trapped: AtomicU32::new(0),
    failed: AtomicU32::new(0),
    passed: AtomicU32::new(0),
};
static SLOTS: [Slot; MAX_TRAPS] = [EMPTY; MAX_TRAPS];
static NSLOTS: AtomicU8 = AtomicU8::new(0);

/// The counts of rule `i` in this process (the child that applied the
/// filter). Allocation-free.
pub fn trap_counts(i: usize) -> TrapCounts {
    match SLOTS.get(i) {
        Some(s) if i < NSLOTS.load(Ordering::Relaxed) as usize => TrapCounts {
            trapped: s.trapped.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            passed: s.passed.load(Ordering::Relaxed),
        },
        _ => TrapCounts::default(),
    }
}

/// One raw syscall with six arguments; returns the kernel's value
/// (`-errno` on failure). No libc: errno of the interrupted code is untouched.
///
/// # Safety
/// As for the syscall issued.
unsafe fn raw_syscall6(nr: i64, a: [u64; 6]) -> i64 {
    let ret: i64;
    core::arch::asm!(
        "syscall",
        inlateout("rax") nr => ret,
        in("rdi") a[0],
        in("rsi") a[1],
        in("rdx") a[2],
        in("r10") a[3],
        in("r8") a[4],
        in("r9") a[5],
        lateout("rcx") _,
        lateout("r11") _,
        options(nostack),
    );
    ret
}

/// `si_code` of a seccomp `SIGSYS`.
const SYS_SECCOMP: c_int = 1;

/// The `SIGSYS` handler. Async-signal-safe: atomics, register access and
/// one raw syscall; no allocation, no locks, no libc call.
extern "C" fn on_sigsys(_sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t and
    // ucontext_t; the ucontext is ours to modify until we return.
    unsafe {
        if info.is_null() || ctx.is_null() || (*info).si_code != SYS_SECCOMP {
            return;
        }
        let g = &mut (*(ctx as *mut libc::ucontext_t)).uc_mcontext.gregs;
        // For SECCOMP_RET_TRAP the kernel rolls RAX back to the syscall
        // number (syscall_rollback) and RIP points after the instruction.
        let nr = g[libc::REG_RAX as usize];
        let mut args = [
            g[libc::REG_RDI as usize] as u64,
            g[libc::REG_RSI as usize] as u64,
            g[libc::REG_RDX as usize] as u64,
            g[libc::REG_R10 as usize] as u64,
            g[libc::REG_R8 as usize] as u64,
            g[libc::REG_R9 as usize] as u64,
        ];
        let n = (NSLOTS.load(Ordering::Relaxed) as usize).min(MAX_TRAPS);
        let slot = SLOTS[..n].iter().find(|s| {
            s.nr.load(Ordering::Relaxed) == nr
                && s.conds[..s.nconds.load(Ordering::Relaxed) as usize]
                    .iter()
                    .all(|c| {
                        let c = c.load(Ordering::Relaxed);
                        // (arg << 32 | value), compared on the low 32 bits as the filter does.
                        args[(c >> 32) as usize] as u32 == c as u32
                    })
        });
        if let Some(s) = slot {
            s.trapped.fetch_add(1, Ordering::Relaxed);
            let fail = s
                .left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                .is_ok();
            if fail {
                s.failed.fetch_add(1, Ordering::Relaxed);
                if nr == libc::SYS_mmap && s.unmap.load(Ordering::Relaxed) != 0 {
                    raw_syscall6(libc::SYS_munmap, [args[0], args[1], 0, 0, 0, TRAP_MAGIC]);
                }
                g[libc::REG_RAX as usize] = -(s.errno.load(Ordering::Relaxed) as i64);
                return;
            }
            s.passed.fetch_add(1, Ordering::Relaxed);
            let arg = (s.clear_arg.load(Ordering::Relaxed) as usize).min(5);
            args[arg] &= !s.clear_mask.load(Ordering::Relaxed);
        }
        // Re-issue with the bypass marker (also for a call no slot claims,
        // which cannot happen with a filter built from the same rules).
        if nr == libc::SYS_mmap {
            args[4] = MMAP_BYPASS_FD as u64;
        } else {
            args[5] = TRAP_MAGIC;
        }
        g[libc::REG_RAX as usize] = raw_syscall6(nr, args);
    }
}

/// Loads `f`'s rules into the handler's table, installs the `SIGSYS`
/// handler (unblocked) and then the filter (via
/// [`apply_filter_in_child`], which `_exit`s with
/// [`FILTER_FAILED_EXIT`](crate::FILTER_FAILED_EXIT) on failure).
/// Allocation-free. Never call it in the test process itself: the filter is
/// permanent for the calling thread.
pub fn apply_trap_filter_in_child(f: &TrapFilter) {
    for (s, t) in SLOTS.iter().zip(f.rules()) {
        s.nr.store(t.nr, Ordering::Relaxed);
        for (c, &(arg, v)) in s.conds.iter().zip(t.conds()) {
            c.store((arg as u64) << 32 | v as u64, Ordering::Relaxed);
        }
        s.nconds.store(t.conds().len() as u8, Ordering::Relaxed);
        s.clear_arg.store(t.clear.0, Ordering::Relaxed);
        s.clear_mask.store(t.clear.1, Ordering::Relaxed);
        s.unmap.store(t.unmap as u8, Ordering::Relaxed);
        s.left.store(t.fail, Ordering::Relaxed);
        s.errno.store(t.errno, Ordering::Relaxed);
        s.trapped.store(0, Ordering::Relaxed);
        s.failed.store(0, Ordering::Relaxed);
        s.passed.store(0, Ordering::Relaxed);
    }
    NSLOTS.store(f.len as u8, Ordering::Release);
    // SAFETY: a zeroed sigaction is a valid starting point; all pointers
    // passed are to live stack values.
    unsafe {
        let mut sa: libc::sigaction = MaybeUninit::zeroed().assume_init();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, core::ptr::null_mut());
        // A trap while SIGSYS is blocked would kill the process.
        let mut set: libc::sigset_t = MaybeUninit::zeroed().assume_init();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGSYS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, core::ptr::null_mut());
    }
    apply_filter_in_child(f.program());
}

/// [`in_child_report`] with `f` applied in the child before `body` runs.
pub fn in_child_trapped<F: FnOnce(&mut Report) -> i32>(
    f: &TrapFilter,
    body: F,
) -> (ChildExit, ReportBuf) {
    in_child_report(|r| {
        apply_trap_filter_in_child(f);
        body(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_marker_argument_and_too_many_conditions() {
        let r = std::panic::catch_unwind(|| {
            build_trap_filter(&[Trap::new(libc::SYS_madvise).when(5, 1)])
        });
        assert!(r.is_err());
        let r =
            std::panic::catch_unwind(|| build_trap_filter(&[Trap::new(libc::SYS_mmap).when(4, 1)]));
        assert!(r.is_err());
        let t = Trap::new(libc::SYS_mprotect)
            .when(0, 1)
            .when(1, 1)
            .when(2, 1)
            .when(3, 1);
        assert!(std::panic::catch_unwind(|| build_trap_filter(&[t])).is_err());
        let f = build_trap_filter(&[Trap::new(libc::SYS_mprotect).when(2, 0).fail_first(2)]);
        assert_eq!(f.rules().len(), 1);
        assert!(!f.program().is_empty());
    }
}
