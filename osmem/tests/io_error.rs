//! `impl From<osmem::Error> for std::io::Error`: an OS failure keeps its errno, every other
//! error keeps osmem's message and maps to a kind that says what went wrong.
#![cfg(feature = "std")]

use osmem::{Batch, BatchKind, Errno, Error, Op, Reservation, Syscall, UnusedAdvice};
use std::io::{self, ErrorKind};

/// The conversion, with the checks every non-OS error must pass: no errno, osmem's own
/// message, and the osmem error itself behind `get_ref`.
fn wrapped(e: Error, kind: ErrorKind) -> io::Error {
    let io: io::Error = e.into();
    assert_eq!(io.kind(), kind, "{e:?}");
    assert_eq!(io.raw_os_error(), None, "{e:?}: no errno was kept");
    assert_eq!(io.to_string(), e.to_string(), "{e:?}: osmem's message");
    let inner = io.get_ref().and_then(|x| x.downcast_ref::<Error>());
    assert_eq!(inner, Some(&e), "the osmem error is inside");
    io
}

#[test]
fn input_errors_are_invalid_input() {
    let ps = osmem::page_size();
    let r = Reservation::reserve(4 * ps).unwrap();
    let cases = [
        r.map(1, ps).unwrap_err(),                      // unaligned
        r.map(0, 0).unwrap_err(),                       // zero length
        r.map(ps, usize::MAX & !(ps - 1)).unwrap_err(), // overflow
        r.map(0, 8 * ps).unwrap_err(),                  // out of range
    ];
    assert!(matches!(cases[0], Error::Unaligned { .. }));
    assert!(matches!(cases[1], Error::ZeroLength { .. }));
    assert!(matches!(cases[2], Error::Overflow { .. }));
    assert!(matches!(cases[3], Error::OutOfRange { .. }));
    for e in cases {
        wrapped(e, ErrorKind::InvalidInput);
    }
}

#[test]
fn a_wrong_state_is_invalid_input() {
    let ps = osmem::page_size();
    let r = Reservation::reserve(4 * ps).unwrap();
    let e = r.used(0, ps).unwrap_err(); // Reserved, not Prepared
    assert!(matches!(e, Error::WrongState { .. }), "{e:?}");
    wrapped(e, ErrorKind::InvalidInput);
}

#[test]
fn busy_pages_would_block() {
    let ps = osmem::page_size();
    let r = Reservation::alloc(4 * ps).unwrap();
    let mut b: Batch<'_, 4> = Batch::new(BatchKind::Unused(UnusedAdvice::DontNeed));
    // SAFETY: nothing uses the pages. The second range overlaps the first: the flush holds
    // the first while it claims the second, which is refused as busy.
    unsafe {
        b.push(&r, 0, 2 * ps).unwrap();
        b.push(&r, ps, ps).unwrap();
    }
    // SAFETY: as above.
    let rep = unsafe { b.flush() };
    assert_eq!((rep.ranges, rep.refused), (1, 1));
    let e = rep.error.unwrap();
    assert!(matches!(e, Error::Busy { .. }), "{e:?}");
    wrapped(e, ErrorKind::WouldBlock);
}

#[test]
fn a_dropped_reservation_is_not_found() {
    let r = Reservation::reserve(osmem::page_size()).unwrap();
    let id = r.id();
    drop(r);
    let e = id.map(0, osmem::page_size()).unwrap_err();
    assert!(matches!(e, Error::Gone { .. }), "{e:?}");
    wrapped(e, ErrorKind::NotFound);
}

#[test]
fn missing_kernel_features_are_unsupported() {
    wrapped(
        Error::Unsupported { op: Op::Collapse },
        ErrorKind::Unsupported,
    );
    let locked = Error::Locked {
        op: Op::Unused,
        offset: 0,
        len: 4096,
    };
    wrapped(locked, ErrorKind::Unsupported);
}

#[test]
fn unverified_is_other() {
    let e = Error::Unverified {
        op: Op::Fault,
        offset: 0,
        len: 4096,
    };
    wrapped(e, ErrorKind::Other);
}

#[test]
fn an_os_error_keeps_its_operation_kind_and_errno() {
    // A real failure: MAP_FIXED_NOREPLACE over a range that is taken.
    let ps = osmem::page_size();
    let r = Reservation::reserve(ps).unwrap();
    let e = Reservation::reserve_fixed(r.as_ptr() as usize, ps).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EEXIST));
    let io: io::Error = e.into();
    assert_eq!(io.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        io.to_string(),
        "osmem reserve: mmap: EEXIST (file exists); nothing changed"
    );
    let back = io.get_ref().and_then(|i| i.downcast_ref::<Error>());
    assert_eq!(back.and_then(Error::errno), Some(libc::EEXIST));

    // Built by hand: each errno gives std's kind for it.
    for (errno, kind) in [
        (libc::ENOMEM, ErrorKind::OutOfMemory),
        (libc::EPERM, ErrorKind::PermissionDenied),
        (libc::EINVAL, ErrorKind::InvalidInput),
    ] {
        let e = Error::Os {
            op: Op::Map,
            call: Syscall::Mprotect,
            errno: Errno(errno),
            changed: false,
        };
        let io = io::Error::from(e);
        assert_eq!(io.kind(), kind, "errno {errno}");
        assert!(io.to_string().starts_with("osmem map: mprotect: E"), "{io}");
    }
}

#[test]
fn question_mark_converts() {
    fn reserve_and_map(len: usize) -> io::Result<Reservation> {
        let r = Reservation::reserve(len)?;
        r.map(0, len)?;
        Ok(r)
    }
    let ps = osmem::page_size();
    assert!(reserve_and_map(4 * ps).is_ok());
    let e = reserve_and_map(0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
