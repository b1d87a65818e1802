//! Failure injection with seccomp: make chosen syscalls fail with a chosen
//! errno in a forked child, so error paths of the code under test can be
//! exercised against the real kernel.
//!
//! Build the filter in the parent ([`build_filter`] allocates), then apply it
//! in the child ([`apply_filter_in_child`] does not), or do both through
//! [`in_child_filtered`].

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::child::{in_child_report, ChildExit, Report, ReportBuf, FILTER_FAILED_EXIT};
use crate::raw::{eprint_bytes, eprint_u64, errno};

/// One failure to inject. When several rules match the same call, the first
/// one in the slice given to [`build_filter`] decides the errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// `madvise(_, _, advice)` fails with `errno`; other advice values pass.
    /// (`process_madvise` is not affected.)
    Madvise {
        /// The `MADV_*` value to fail (compared as a 32-bit int).
        advice: i32,
        /// The errno the call fails with (1..=4095), or 0: the call is skipped and reports success.
        errno: i32,
    },
    /// Every `madvise` call fails with `errno`.
    AnyMadvise {
        /// The errno the call fails with (1..=4095), or 0: the call is skipped and reports success.
        errno: i32,
    },
    /// Every call of syscall number `nr` (a `libc::SYS_*`) fails with `errno`.
    Syscall {
        /// The syscall number, e.g. `libc::SYS_mprotect`.
        nr: i64,
        /// The errno the call fails with (1..=4095), or 0: the call is skipped and reports success.
        errno: i32,
    },
    /// Calls of syscall `nr` whose argument `arg` (0..=5) has low 32 bits
    /// equal to `value` fail with `errno`, e.g.
    /// `SyscallArg { nr: libc::SYS_mprotect, arg: 2, value: libc::PROT_NONE as u32, errno: libc::ENOMEM }`.
    SyscallArg {
        /// The syscall number, e.g. `libc::SYS_mprotect`.
        nr: i64,
        /// The argument index, 0..=5.
        arg: u8,
        /// The value the argument's low 32 bits must equal.
        value: u32,
        /// The errno the call fails with (1..=4095), or 0: the call is skipped and reports success.
        errno: i32,
    },
}

/// `BPF_RET | BPF_K`: return the constant in `k`.
const BPF_RET_K: u16 = 0x06;
/// `BPF_JMP | BPF_JA`: unconditional forward jump by `k`.
const BPF_JMP_JA: u16 = 0x05;
/// The kernel's limit on classic BPF program length (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

fn target_arch() -> TargetArch {
    std::env::consts::ARCH
        .try_into()
        .unwrap_or_else(|e| panic!("seccompiler does not support this architecture: {e}"))
}

/// Compiles one rule into a complete seccompiler program: architecture check
/// (a foreign-arch syscall kills the process), then "this syscall (with this
/// argument) returns errno", default Allow.
fn compile_one(rule: &Inject, arch: TargetArch) -> BpfProgram {
    let (nr, cond, errno) = match *rule {
        Inject::Madvise { advice, errno } => (libc::SYS_madvise, Some((2, advice as u32)), errno),
        Inject::AnyMadvise { errno } => (libc::SYS_madvise, None, errno),
        Inject::Syscall { nr, errno } => (nr, None, errno),
        Inject::SyscallArg {
            nr,
            arg,
            value,
            errno,
        } => (nr, Some((arg, value)), errno),
    };
    // errno 0 is allowed on purpose: SECCOMP_RET_ERRNO with 0 makes the syscall return 0
    // WITHOUT running it, which emulates a sandbox that reports success and does nothing.
    assert!(
        (0..=4095).contains(&errno),
        "{rule:?}: errno must be in 0..=4095"
    );
    // In seccompiler an EMPTY rule vector means "the syscall matches
    // unconditionally"; a SeccompRule must have at least one condition.
    let rules = match cond {
        None => vec![],
        Some((arg, value)) => {
            // Dword: compare only the low 32 bits, the int argument's width;
            // the upper half of the register is not guaranteed for ints.
            let c =
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value.into())
                    .unwrap_or_else(|e| panic!("{rule:?}: {e}"));
            vec![SeccompRule::new(vec![c]).unwrap_or_else(|e| panic!("{rule:?}: {e}"))]
        }
    };
    let filter = SeccompFilter::new(
        BTreeMap::from([(nr, rules)]),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .unwrap_or_else(|e| panic!("{rule:?}: {e}"));
    BpfProgram::try_from(filter).unwrap_or_else(|e| panic!("{rule:?}: {e}"))
}

/// Builds a seccomp program in which every syscall is allowed except those
/// matched by `rules`, which fail with the rule's errno (first matching rule
/// wins). An empty `rules` gives a program that allows everything.
/// Allocates: call it in the parent, before forking.
///
/// A seccompiler filter has a single match action, so each rule is compiled
/// as its own program and the programs are chained: in every program but the
/// last, each "return ALLOW" is rewritten into a jump to the start of the
/// next program (all BPF jumps are relative and forward, so this is sound).
pub fn build_filter(rules: &[Inject]) -> BpfProgram {
    let arch = target_arch();
    let progs: Vec<BpfProgram> = if rules.is_empty() {
        let allow_all = SeccompFilter::new(
            BTreeMap::new(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .expect("empty filter");
        vec![BpfProgram::try_from(allow_all).expect("empty filter")]
    } else {
        rules.iter().map(|r| compile_one(r, arch)).collect()
    };
    let allow = libc::SECCOMP_RET_ALLOW;
    let mut out = BpfProgram::new();
    for (k, prog) in progs.iter().enumerate() {
        let last = k + 1 == progs.len();
        for (i, ins) in prog.iter().enumerate() {
            if !last && ins.code == BPF_RET_K && ins.k == allow {
                let mut jump = ins.clone();
                jump.code = BPF_JMP_JA;
                jump.jt = 0;
                jump.jf = 0;
                // Jumps are relative to the next instruction.
                jump.k = (prog.len() - i - 1) as u32;
                out.push(jump);
            } else {
                out.push(ins.clone());
            }
        }
    }
    assert!(
        out.len() <= BPF_MAXINSNS,
        "seccomp program too long: {} instructions for {} rules",
        out.len(),
        rules.len()
    );
    out
}

// seccompiler's `sock_filter` is declared `repr(C)` with the same fields as the
// kernel's; the pointer cast below relies on the layouts being identical.
const _: () = assert!(
    core::mem::size_of::<seccompiler::sock_filter>() == core::mem::size_of::<libc::sock_filter>()
        && core::mem::align_of::<seccompiler::sock_filter>()
            == core::mem::align_of::<libc::sock_filter>()
);

fn filter_failed(what: &[u8], err: i32) -> ! {
    eprint_bytes(b"osmem-testkit: apply_filter_in_child: ");
    eprint_bytes(what);
    eprint_bytes(b" failed, errno ");
    eprint_u64(err as u64);
    eprint_bytes(b"\n");
    // SAFETY: `_exit` is always safe to call.
    unsafe { libc::_exit(FILTER_FAILED_EXIT) }
}

/// Installs `prog` as a seccomp filter on the calling thread:
/// `prctl(PR_SET_NO_NEW_PRIVS)`, then `seccomp(SECCOMP_SET_MODE_FILTER)`.
/// On failure prints a line to stderr and `_exit(FILTER_FAILED_EXIT)`.
///
/// Allocation-free and panic-free, for use in a forked child (it is written
/// out here rather than calling `seccompiler::apply_filter`, whose error path
/// builds `std::io::Error` values, so that the no-allocation guarantee does
/// not depend on another crate's internals). Never call it in the test
/// process itself: the filter is permanent for the calling thread.
pub fn apply_filter_in_child(prog: &[seccompiler::sock_filter]) {
    if prog.is_empty() || prog.len() > BPF_MAXINSNS {
        filter_failed(b"checking program length", libc::EINVAL);
    }
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        filter_failed(b"prctl(PR_SET_NO_NEW_PRIVS)", errno());
    }
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        // The kernel only reads (copies) the program.
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points to `prog`, which outlives the call; the kernel
    // copies the instructions before returning.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        filter_failed(b"seccomp(SECCOMP_SET_MODE_FILTER)", errno());
    }
}

/// [`in_child_report`] with `prog` applied in the child before `f` runs.
/// If the filter cannot be installed the child exits with
/// `Code(FILTER_FAILED_EXIT)`.
pub fn in_child_filtered<F: FnOnce(&mut Report) -> i32>(
    prog: &[seccompiler::sock_filter],
    f: F,
) -> (ChildExit, ReportBuf) {
    in_child_report(|r| {
        apply_filter_in_child(prog);
        f(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_programs_allow_only_at_the_end() {
        let rules = [
            Inject::Madvise {
                advice: libc::MADV_DONTNEED,
                errno: libc::ENOSYS,
            },
            Inject::Syscall {
                nr: libc::SYS_mprotect,
                errno: libc::EACCES,
            },
        ];
        let prog = build_filter(&rules);
        let first = compile_one(&rules[0], target_arch());
        assert!(prog.len() > first.len());
        let allow = libc::SECCOMP_RET_ALLOW;
        // No ALLOW return within the first segment; it jumps to the next one.
        assert!(!prog[..first.len()]
            .iter()
            .any(|i| i.code == BPF_RET_K && i.k == allow));
        for (i, ins) in prog[..first.len()].iter().enumerate() {
            if ins.code == BPF_JMP_JA && first[i].code == BPF_RET_K {
                assert_eq!(i + 1 + ins.k as usize, first.len());
            }
        }
        assert_eq!(prog.last().unwrap().code, BPF_RET_K);
        assert_eq!(prog.last().unwrap().k, allow);
    }

    #[test]
    #[should_panic(expected = "errno must be in 0..=4095")]
    fn rejects_bad_errno() {
        build_filter(&[Inject::AnyMadvise { errno: 4096 }]);
    }
}
