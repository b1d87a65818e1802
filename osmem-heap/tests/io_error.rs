//! `HeapError` → `std::io::Error`: a failed system call keeps its errno (a real one, from a
//! heap the kernel refuses to reserve), every other error keeps the `HeapError` inside an
//! `io::Error` of a fitting kind.
//!
//! One test function: it lowers the process's address-space limit for a moment, which
//! another test running beside it in the same process would feel.

use osmem_heap::{Heap, HeapConfig, HeapError};
use std::io::ErrorKind;

/// The `HeapError` an `io::Error` carries, if any.
fn inner(e: &std::io::Error) -> Option<&HeapError> {
    e.get_ref().and_then(|i| i.downcast_ref::<HeapError>())
}

#[test]
fn heap_errors_convert_to_io_errors() {
    let heap = Heap::create(HeapConfig::new(8 << 20)).unwrap();
    let ps = heap.page_size();

    // Refusals of bad arguments: InvalidInput, with the HeapError inside and its message.
    let run = heap.alloc(1).unwrap();
    heap.free(run.addr, 1).unwrap();
    let cases = [
        heap.alloc(0).unwrap_err(),
        heap.alloc(usize::MAX / ps).unwrap_err(),
        heap.free(run.addr + 1, 1).unwrap_err(),
        heap.free(ps, 1).unwrap_err(),
        heap.free(run.addr, 1).unwrap_err(),
    ];
    let names = [
        "ZeroPages",
        "TooLarge",
        "Unaligned",
        "NotInHeap",
        "NotAllocated",
    ];
    for (want, he) in cases.into_iter().enumerate().map(|(k, he)| (names[k], he)) {
        assert!(format!("{he:?}").starts_with(want), "{he:?} is not {want}");
        let e = std::io::Error::from(he);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{he:?}");
        assert_eq!(inner(&e), Some(&he));
        assert_eq!(e.raw_os_error(), None);
        assert_eq!(e.to_string(), he.to_string());
    }

    // A full heap: OutOfMemory, still carrying the HeapError.
    let all = heap.alloc(heap.range().len() / ps).unwrap();
    let he = heap.alloc(1).unwrap_err();
    heap.free(all.addr, all.pages).unwrap();
    assert!(matches!(he, HeapError::OutOfMemory { .. }), "{he:?}");
    let e = std::io::Error::from(he);
    assert_eq!(e.kind(), ErrorKind::OutOfMemory);
    assert_eq!(inner(&e), Some(&he));

    // Through `?` in a function returning io::Result.
    fn alloc(h: &Heap, pages: usize) -> std::io::Result<usize> {
        Ok(h.alloc(pages)?.addr)
    }
    assert_eq!(alloc(heap, 0).unwrap_err().kind(), ErrorKind::InvalidInput);
    assert!(alloc(heap, 1).is_ok());

    // An osmem refusal without a system call behind it (an unaligned range): no errno,
    // InvalidInput.
    let r = osmem::Reservation::reserve(4 * ps).unwrap();
    let he = HeapError::Os(r.map(1, ps).unwrap_err());
    let e = std::io::Error::from(he);
    assert_eq!(
        (e.kind(), e.raw_os_error()),
        (ErrorKind::InvalidInput, None)
    );
    assert_eq!(inner(&e), Some(&he));

    // Too many heaps: Other.
    let e = std::io::Error::from(HeapError::TooManyHeaps);
    assert_eq!(e.kind(), ErrorKind::Other);
    assert_eq!(inner(&e), Some(&HeapError::TooManyHeaps));

    // A real failed system call: with the address-space limit just above what the process
    // maps now, reserving 1 GiB fails with ENOMEM, and the errno survives the conversion.
    let vm = vm_size();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut old) }, 0);
    let low = libc::rlimit {
        rlim_cur: (vm + (64 << 20)) as libc::rlim_t,
        rlim_max: old.rlim_max,
    };
    // SAFETY: lowering the soft limit of this process; restored right after.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &low) }, 0);
    let refused = Heap::create(HeapConfig::new(1 << 30));
    // SAFETY: restoring the limit read above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &old) }, 0);
    let he = match refused {
        Err(he) => he,
        Ok(h) => {
            // SAFETY: nothing uses it.
            unsafe { Heap::destroy(h) };
            panic!("a 1 GiB heap was reserved past RLIMIT_AS");
        }
    };
    let errno = match he {
        HeapError::Os(os) => os.errno().expect("a system call's errno"),
        other => panic!("not an OS error: {other:?}"),
    };
    assert_eq!(errno, libc::ENOMEM, "{he:?}");
    let e = std::io::Error::from(he);
    assert_eq!(e.kind(), ErrorKind::OutOfMemory);
    // The heap error itself travels inside, with its errno; the message names the operation.
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<HeapError>());
    assert_eq!(inner, Some(&he));
    assert!(e.to_string().contains("ENOMEM"), "{e}");

    // SAFETY: nothing uses the heap any more.
    unsafe { Heap::destroy(heap) };
}

/// The process's mapped address space (`VmSize` in `/proc/self/status`), in bytes.
fn vm_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kb: usize = line
        .trim_start_matches("VmSize:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb << 10
}
