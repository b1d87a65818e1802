//! Checked mode (`OSMEM=checked=1` / `Config::checked`): every transition is cross-checked
//! with the kernel's view. On a real kernel nothing changes; under a sandbox that answers 0
//! without acting (seccomp's RET_ERRNO with errno 0 skips the syscall and reports success),
//! checked mode reports `Error::Unverified` where the unchecked default is fooled.
//! Runs in forked children: the knob is process-wide.

mod common;

use common::{ADVICES, STRATEGIES};
use osmem::{Config, Error, FaultStrategy, Op, Reservation};
use osmem_testkit::{build_filter, in_child_filtered, in_child_report, resident_pages, Inject};

/// Encodes a result for the report: 0 ok, 1 Unverified, 2 any other error.
fn code<T>(r: Result<T, Error>) -> u64 {
    match r {
        Ok(_) => 0,
        Err(Error::Unverified { .. }) => 1,
        Err(_) => 2,
    }
}

#[test]
fn checked_mode_passes_on_a_real_kernel() {
    osmem::probe();
    let (exit, rep) = in_child_report(|out| {
        osmem::configure(Config::new().checked(true));
        let ps = osmem::page_size();
        let r = Reservation::alloc(64 * ps).unwrap();
        unsafe { r.as_ptr().write_bytes(1, 64 * ps) };
        for (i, a) in ADVICES.into_iter().enumerate() {
            out.push(code(unsafe { r.unused_with(i * 4 * ps, 4 * ps, a) }));
        }
        // Every strategy but Auto (which is one of them).
        for (i, s) in STRATEGIES.into_iter().skip(1).enumerate() {
            out.push(code(unsafe { r.fault_with((16 + i * 4) * ps, 4 * ps, s) }));
        }
        0
    });
    assert!(exit.is_success(), "{exit:?}");
    assert_eq!(
        rep.as_slice(),
        &[0; 7],
        "no transition may be flagged on a real kernel"
    );
}

#[test]
fn checked_mode_catches_a_sandbox_that_fakes_dontneed() {
    osmem::probe();
    // MADV_DONTNEED "succeeds" without running.
    let prog = build_filter(&[Inject::Madvise {
        advice: libc::MADV_DONTNEED,
        errno: 0,
    }]);
    let (exit, rep) = in_child_filtered(&prog, |out| {
        let ps = osmem::page_size();
        let r = Reservation::alloc(16 * ps).unwrap();
        unsafe { r.as_ptr().write_bytes(1, 16 * ps) };
        let base = r.as_ptr() as usize;
        // Unchecked: fooled — Ok, zeroed claimed, but every page is still resident.
        out.push(code(unsafe { r.unused(0, 4 * ps) }));
        out.push(resident_pages(base, 4 * ps) as u64);
        osmem::configure(Config::new().checked(true));
        // Checked: the same call is reported, and names the operation and range.
        let e = unsafe { r.unused(4 * ps, 4 * ps) };
        out.push(code(e));
        out.push(u64::from(matches!(
            e,
            Err(Error::Unverified { op: Op::Unused, offset, len }) if offset == 4 * ps && len == 4 * ps
        )));
        // A Protect fault relies on DONTNEED for the release: the trap is real (mprotect
        // ran), the release is not, and checked mode says so.
        out.push(code(unsafe {
            r.fault_with(8 * ps, 4 * ps, FaultStrategy::Protect)
        }));
        0
    });
    assert!(exit.is_success(), "{exit:?}");
    assert_eq!(rep.as_slice(), &[0, 4, 1, 1, 1]);
}

#[test]
fn checked_mode_catches_a_sandbox_that_fakes_mprotect() {
    osmem::probe();
    // mprotect(PROT_NONE) "succeeds" without running: the range stays accessible.
    let prog = build_filter(&[Inject::SyscallArg {
        nr: libc::SYS_mprotect,
        arg: 2,
        value: libc::PROT_NONE as u32,
        errno: 0,
    }]);
    let (exit, rep) = in_child_filtered(&prog, |out| {
        osmem::configure(Config::new().checked(true));
        let ps = osmem::page_size();
        let r = Reservation::alloc(8 * ps).unwrap();
        unsafe { r.as_ptr().write_bytes(1, 8 * ps) };
        let e = unsafe { r.fault_with(0, 4 * ps, FaultStrategy::Protect) };
        out.push(u64::from(matches!(
            e,
            Err(Error::Unverified { op: Op::Fault, .. })
        )));
        // The guard strategy does not use mprotect: verified fine.
        out.push(code(unsafe {
            r.fault_with(4 * ps, 4 * ps, FaultStrategy::Guard)
        }));
        0
    });
    assert!(exit.is_success(), "{exit:?}");
    assert_eq!(rep.as_slice(), &[1, 0]);
}
