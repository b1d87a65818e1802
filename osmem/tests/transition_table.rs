//! The transition table, one test per (state, operation) pair. Legal pairs end in the
//! documented state; illegal pairs return `Error::WrongState` naming the state found, issue
//! no syscall at all, and leave the kernel's view (protection, residency, contents) exactly
//! as it was. A page queued in a batch that is not flushed yet is held by nothing: it
//! transitions as the Ready page it is (the flush then refuses it if it is no longer Ready). Each case runs in a forked
//! child, where osmem's counters are exact (the child has one thread).
//!
//! | from \ op | map | used | unused | fault |
//! |---|---|---|---|---|
//! | Reserved | Prepared | ✗ | ✗ | ✗ |
//! | Prepared | ✗ | Ready | ✗ | ✗ |
//! | Ready | ✗ | Ready (no-op: no syscall, nothing changes) | Prepared | Faulted |
//! | Faulted (guard) | Prepared | ✗ | ✗ | ✗ |
//! | Faulted (PROT_NONE) | Prepared | ✗ | ✗ | ✗ |
//! | Ready, queued in a batch | ✗ | Ready | Prepared | Faulted |

use osmem::{Batch, BatchKind, Error, FaultStrategy, Reservation, State, UnusedAdvice};
use osmem_testkit::{in_child_report, resident_pages, vma_at};

#[derive(Copy, Clone, Debug, PartialEq)]
enum From {
    Reserved,
    Prepared,
    Ready,
    FaultedGuard,
    FaultedProtect,
    Queued,
}

#[derive(Copy, Clone, Debug)]
enum Do {
    Map,
    Used,
    Unused,
    Fault,
}

const PAGES: usize = 4;

/// Bring pages [PAGES, 2*PAGES) of `r` into `from` (the other pages stay Reserved as fences).
fn prepare<'r>(r: &'r Reservation, from: From, batch: &mut Batch<'r, 4>) {
    let ps = osmem::page_size();
    let (off, len) = (PAGES * ps, PAGES * ps);
    if from == From::Reserved {
        return;
    }
    r.map(off, len).unwrap();
    if from == From::Prepared {
        return;
    }
    r.used(off, len).unwrap();
    unsafe { r.as_ptr().add(off).write_bytes(0x3c, len) };
    match from {
        From::FaultedGuard => {
            let _ = unsafe { r.fault_with(off, len, FaultStrategy::Guard) }.unwrap();
        }
        From::FaultedProtect => {
            let _ = unsafe { r.fault_with(off, len, FaultStrategy::Protect) }.unwrap();
        }
        From::Queued => unsafe { batch.push(r, off, len) }.unwrap(),
        _ => {}
    }
}

fn syscalls(s: &osmem::Stats) -> u64 {
    s.mmap_calls
        + s.munmap_calls
        + s.mprotect_calls
        + s.madvise_calls
        + s.process_madvise_calls
        + s.pidfd_open_calls
        + s.prctl_calls
}

/// Run `op` on a range in state `from`; report (outcome, syscalls issued, kernel view
/// unchanged, state after). Outcome: 0 Ok, 1 WrongState with the right `found`, 3 Busy
/// naming the first page, 2 other.
fn case(from: From, op: Do) -> [u64; 4] {
    osmem::probe();
    let (exit, rep) = in_child_report(|out| {
        let ps = osmem::page_size();
        let r = Reservation::reserve(3 * PAGES * ps).unwrap();
        let mut batch: Batch<'_, 4> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
        prepare(&r, from, &mut batch);
        let (off, len) = (PAGES * ps, PAGES * ps);
        let addr = r.as_ptr() as usize + off;
        let view = || {
            let v = vma_at(addr).unwrap();
            (v.perms, resident_pages(addr, len))
        };
        let found = r.state(off).unwrap();
        let before = (view(), osmem::stats());
        let res = unsafe {
            match op {
                Do::Map => r.map(off, len),
                Do::Used => r.used(off, len),
                Do::Unused => r.unused(off, len).map(|_| ()),
                Do::Fault => r.fault(off, len).map(|_| ()),
            }
        };
        let after = (view(), osmem::stats());
        out.push(match res {
            Ok(()) => 0,
            Err(Error::WrongState {
                found: f, offset, ..
            }) if f == found && offset == off => 1,
            Err(Error::Busy { offset, .. }) if offset == off => 3,
            Err(_) => 2,
        });
        out.push(syscalls(&after.1) - syscalls(&before.1));
        out.push(u64::from(after.0 == before.0));
        out.push(match r.state(off).unwrap() {
            State::Reserved => 0,
            State::Prepared => 1,
            State::Ready => 2,
            State::Faulted => 3,
        });
        let _ = unsafe { batch.flush() };
        0
    });
    assert!(exit.is_success(), "{from:?} {op:?}: {exit:?}");
    let mut a = [0; 4];
    a.copy_from_slice(rep.as_slice());
    a
}

fn legal(from: From, op: Do, to: State) {
    let [outcome, _, _, state] = case(from, op);
    assert_eq!(outcome, 0, "{from:?} --{op:?}--> must succeed");
    let want = match to {
        State::Reserved => 0,
        State::Prepared => 1,
        State::Ready => 2,
        State::Faulted => 3,
    };
    assert_eq!(state, want, "{from:?} --{op:?}--> {to:?}");
}

fn illegal(from: From, op: Do) {
    let [outcome, syscalls, unchanged, _] = case(from, op);
    assert_eq!(
        outcome, 1,
        "{from:?} --{op:?}--> must be WrongState naming the state found"
    );
    assert_quiet(from, op, syscalls, unchanged);
}

/// A legal pair that changes nothing (used on Ready pages, as Go's sysUsed allows).
fn no_op(from: From, op: Do, stays: State) {
    legal(from, op, stays);
    let [_, syscalls, unchanged, _] = case(from, op);
    assert_quiet(from, op, syscalls, unchanged);
}

/// No system call, and the kernel's view (maps, residency) as it was.
fn assert_quiet(from: From, op: Do, syscalls: u64, unchanged: u64) {
    assert_eq!(
        syscalls, 0,
        "{from:?} --{op:?}-->: no syscall may be issued"
    );
    assert_eq!(
        unchanged, 1,
        "{from:?} --{op:?}-->: maps and residency unchanged"
    );
}

macro_rules! pairs {
    ($($name:ident: $from:ident $op:ident => $to:tt;)*) => {
        $(#[test] fn $name() { pairs!(@ $from $op $to); })*
    };
    (@ $from:ident $op:ident Refused) => { illegal(From::$from, Do::$op) };
    (@ $from:ident $op:ident Unchanged) => { no_op(From::$from, Do::$op, State::$from) };
    (@ $from:ident $op:ident $to:ident) => { legal(From::$from, Do::$op, State::$to) };
}

pairs! {
    reserved_map: Reserved Map => Prepared;
    reserved_used: Reserved Used => Refused;
    reserved_unused: Reserved Unused => Refused;
    reserved_fault: Reserved Fault => Refused;
    prepared_map: Prepared Map => Refused;
    prepared_used: Prepared Used => Ready;
    prepared_unused: Prepared Unused => Refused;
    prepared_fault: Prepared Fault => Refused;
    ready_map: Ready Map => Refused;
    ready_used: Ready Used => Unchanged;
    ready_unused: Ready Unused => Prepared;
    ready_fault: Ready Fault => Faulted;
    faulted_guard_map: FaultedGuard Map => Prepared;
    faulted_guard_used: FaultedGuard Used => Refused;
    faulted_guard_unused: FaultedGuard Unused => Refused;
    faulted_guard_fault: FaultedGuard Fault => Refused;
    faulted_protect_map: FaultedProtect Map => Prepared;
    faulted_protect_used: FaultedProtect Used => Refused;
    faulted_protect_unused: FaultedProtect Unused => Refused;
    faulted_protect_fault: FaultedProtect Fault => Refused;
    queued_map: Queued Map => Refused;
    queued_used: Queued Used => Ready;
    queued_unused: Queued Unused => Prepared;
    queued_fault: Queued Fault => Faulted;
}
