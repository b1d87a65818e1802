//! The one error type. Every variant names the operation; OS failures carry the syscall and
//! errno and say whether anything changed, so a caller never has to guess whether memory was
//! released, protected or lost.

use crate::region::State;
pub use crate::sys::linux::{Errno, Syscall};
use core::fmt;

/// The osmem operation an error is about ([`Error::op`]).
///
/// ```
/// let r = osmem::Reservation::reserve(4096)?;
/// assert_eq!(r.used(0, 4096).unwrap_err().op(), osmem::Op::Used);
/// # Ok::<(), osmem::Error>(())
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// [`Reservation::alloc`](crate::Reservation::alloc): None → Ready.
    Alloc,
    /// [`Reservation::reserve`](crate::Reservation::reserve) and `reserve_aligned`: None → Reserved.
    Reserve,
    /// [`Reservation::map`](crate::Reservation::map): Reserved/Faulted → Prepared.
    Map,
    /// [`Reservation::used`](crate::Reservation::used): Prepared → Ready.
    Used,
    /// [`Reservation::unused`](crate::Reservation::unused): Ready → Prepared.
    Unused,
    /// [`Reservation::fault`](crate::Reservation::fault): Ready → Faulted.
    Fault,
    /// Dropping a [`Reservation`](crate::Reservation): → None.
    Free,
    /// [`Reservation::hugepage`](crate::Reservation::hugepage).
    HugePage,
    /// [`Reservation::nohugepage`](crate::Reservation::nohugepage).
    NoHugePage,
    /// [`Reservation::collapse`](crate::Reservation::collapse).
    Collapse,
    /// [`Reservation::residency`](crate::Reservation::residency) and friends: a query that
    /// changes nothing.
    Residency,
}

/// Everything that can go wrong. Input errors (`Unaligned` … `Busy`) are detected before any
/// syscall is issued and never change anything.
///
/// ```
/// let r = osmem::Reservation::reserve(1 << 16)?;
/// let e = r.map(1, 4096).unwrap_err();
/// assert_eq!(e.op(), osmem::Op::Map);
/// assert!(!e.changed());
/// assert!(matches!(e, osmem::Error::Unaligned { .. }));
/// # Ok::<(), osmem::Error>(())
/// ```
#[must_use = "an error that is dropped is lost"]
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Offset or length is not a multiple of the page size (or `align` is not a power of two
    /// at least the page size).
    Unaligned {
        /// The operation.
        op: Op,
        /// Offset into the region (or the requested alignment for `reserve_aligned`).
        offset: usize,
        /// Length in bytes.
        len: usize,
    },
    /// Length is zero.
    ZeroLength {
        /// The operation.
        op: Op,
    },
    /// `offset + len` (or a size rounding) overflows `usize`.
    Overflow {
        /// The operation.
        op: Op,
        /// Offset into the region.
        offset: usize,
        /// Length in bytes.
        len: usize,
    },
    /// The range is not inside the region.
    OutOfRange {
        /// The operation.
        op: Op,
        /// Offset into the region.
        offset: usize,
        /// Length in bytes.
        len: usize,
        /// The region's size.
        size: usize,
    },
    /// A page of the range is in a state the transition does not start from.
    WrongState {
        /// The operation.
        op: Op,
        /// Offset of the first offending page.
        offset: usize,
        /// The state that page is in.
        found: State,
    },
    /// A page of the range is held by another transition in progress (on another thread, or
    /// one a signal handler interrupted on this thread, or an earlier range of the same
    /// [`Batch`](crate::Batch) flush). Nothing changed; the caller raced with itself
    /// (transitions of overlapping ranges must not run concurrently). Also what a call
    /// answers at once where waiting could never end: re-entered from a signal handler on
    /// the thread that is inside osmem's bookkeeping of the same reservation, or meeting a
    /// `fork` in progress that waits for that thread (see the crate docs, "Threads, fork and
    /// signals").
    Busy {
        /// The operation.
        op: Op,
        /// Offset of the first page found held.
        offset: usize,
    },
    /// The [`ReservationId`](crate::ReservationId) names a reservation that has been
    /// dropped. Nothing changed.
    Gone {
        /// The operation.
        op: Op,
    },
    /// The range is mlocked and this kernel cannot release locked memory without dropping
    /// the lock (`MADV_DONTNEED_LOCKED` needs Linux 5.18). Nothing changed: the range is still
    /// Ready, locked and resident.
    Locked {
        /// The operation.
        op: Op,
        /// Offset of the range in the region.
        offset: usize,
        /// Length of the range.
        len: usize,
    },
    /// The kernel does not offer what the operation needs (for example MADV_COLLAPSE without
    /// transparent huge pages). Nothing changed.
    Unsupported {
        /// The operation.
        op: Op,
    },
    /// Checked mode: the syscalls succeeded but the kernel does not show their effect (a
    /// released range still has resident pages, or a faulted range is still accessible). osmem
    /// records the transition as done; something between osmem and the kernel (a
    /// sandbox answering 0 without acting, say) is not doing what it reports.
    Unverified {
        /// The operation.
        op: Op,
        /// Offset of the range in the region.
        offset: usize,
        /// Length of the range.
        len: usize,
    },
    /// A syscall failed and no fallback was left.
    Os {
        /// The operation.
        op: Op,
        /// The syscall that failed last.
        call: Syscall,
        /// Its errno.
        errno: Errno,
        /// Whether anything in the range changed before the failure (protection, contents,
        /// residency). `false` means the range is exactly as before the call.
        changed: bool,
    },
}

impl Error {
    /// The operation that failed.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(4096)?;
    /// assert_eq!(r.used(0, 0).unwrap_err().op(), osmem::Op::Used);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn op(&self) -> Op {
        match *self {
            Error::Unaligned { op, .. }
            | Error::ZeroLength { op }
            | Error::Overflow { op, .. }
            | Error::OutOfRange { op, .. }
            | Error::WrongState { op, .. }
            | Error::Busy { op, .. }
            | Error::Gone { op }
            | Error::Unsupported { op }
            | Error::Locked { op, .. }
            | Error::Unverified { op, .. }
            | Error::Os { op, .. } => op,
        }
    }

    /// The errno, for OS failures.
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(4096)?;
    /// assert_eq!(r.map(0, 8192).unwrap_err().errno(), None);
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn errno(&self) -> Option<i32> {
        match *self {
            Error::Os { errno, .. } => Some(errno.0),
            _ => None,
        }
    }

    /// Whether anything changed before the error. Always `false` for input errors; `true`
    /// for [`Error::Unverified`] (the transition was recorded).
    ///
    /// ```
    /// let r = osmem::Reservation::reserve(4096)?;
    /// assert!(!r.map(4096, 4096).unwrap_err().changed());
    /// # Ok::<(), osmem::Error>(())
    /// ```
    pub fn changed(&self) -> bool {
        matches!(
            *self,
            Error::Os { changed: true, .. } | Error::Unverified { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Unaligned { op, offset, len } => write!(
                f,
                "osmem {op:?}: offset {offset:#x} or length {len:#x} is not page-aligned; nothing changed"
            ),
            Error::ZeroLength { op } => write!(f, "osmem {op:?}: zero length; nothing changed"),
            Error::Overflow { op, offset, len } => write!(
                f,
                "osmem {op:?}: offset {offset:#x} + length {len:#x} overflows; nothing changed"
            ),
            Error::OutOfRange { op, offset, len, size } => write!(
                f,
                "osmem {op:?}: range {offset:#x}+{len:#x} is outside the region of {size:#x} bytes; nothing changed"
            ),
            Error::WrongState { op, offset, found } => write!(
                f,
                "osmem {op:?}: page at offset {offset:#x} is {found:?}, which this transition does not start from; nothing changed"
            ),
            Error::Busy { op, offset } => write!(
                f,
                "osmem {op:?}: page at offset {offset:#x} is held by another transition in progress (or the call re-entered osmem from a signal handler); nothing changed"
            ),
            Error::Gone { op } => write!(
                f,
                "osmem {op:?}: the reservation this id names has been dropped; nothing changed"
            ),
            Error::Unverified { op, offset, len } => write!(
                f,
                "osmem {op:?}: checked mode: the kernel does not show the effect on {offset:#x}+{len:#x}"
            ),
            Error::Locked { op, offset, len } => write!(
                f,
                "osmem {op:?}: range {offset:#x}+{len:#x} is mlocked and this kernel cannot release locked memory (MADV_DONTNEED_LOCKED needs Linux 5.18); nothing changed"
            ),
            Error::Unsupported { op } => {
                write!(f, "osmem {op:?}: not supported by this kernel; nothing changed")
            }
            Error::Os { op, call, errno, changed } => write!(
                f,
                "osmem {op:?}: {call:?} failed with errno {}; {}",
                errno.0,
                if changed { "the range may have changed" } else { "nothing changed" }
            ),
        }
    }
}

/// Available with the `std` feature (on by default).
#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Available with the `std` feature (on by default), for code that reports errors as
/// [`std::io::Error`] (and the `?` operator in functions returning `io::Result`).
///
/// - [`Error::Os`] keeps the kernel's errno: the result is
///   [`io::Error::from_raw_os_error`](std::io::Error::from_raw_os_error), so
///   [`raw_os_error`](std::io::Error::raw_os_error) and [`kind`](std::io::Error::kind) are
///   those of the failed system call (`ENOMEM` is `OutOfMemory`, `EPERM` `PermissionDenied`…).
/// - Every other variant carries no errno: the result wraps the osmem error itself, so its
///   message is osmem's and [`get_ref`](std::io::Error::get_ref) gives it back. Its kind:
///   - `InvalidInput` for bad arguments ([`Error::Unaligned`], [`Error::ZeroLength`],
///     [`Error::Overflow`], [`Error::OutOfRange`]) and for pages in a state the transition does
///     not start from ([`Error::WrongState`]): the call can never succeed as made;
///   - `WouldBlock` for [`Error::Busy`]: another transition holds the pages, and the same
///     call may succeed once it is done;
///   - `Unsupported` for [`Error::Unsupported`] and [`Error::Locked`]: this kernel lacks what
///     the call needs;
///   - `NotFound` for [`Error::Gone`]: the reservation no longer exists;
///   - `Other` for [`Error::Unverified`].
///
/// ```
/// use std::io;
/// let ps = osmem::page_size();
/// let r = osmem::Reservation::reserve(4 * ps)?;
///
/// // No errno: the kind says what went wrong, the message is osmem's.
/// let e: io::Error = r.map(1, ps).unwrap_err().into();
/// assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
/// assert_eq!(e.raw_os_error(), None);
/// assert!(e.to_string().contains("page-aligned"));
///
/// // A failed system call: its errno.
/// let taken = r.as_ptr() as usize;
/// let e: io::Error = osmem::Reservation::reserve_fixed(taken, ps).unwrap_err().into();
/// assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
/// assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
/// # Ok::<(), osmem::Error>(())
/// ```
#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        use std::io::{Error as IoError, ErrorKind};
        let kind = match e {
            Error::Os { errno, .. } => return IoError::from_raw_os_error(errno.0),
            Error::Unaligned { .. }
            | Error::ZeroLength { .. }
            | Error::Overflow { .. }
            | Error::OutOfRange { .. }
            | Error::WrongState { .. } => ErrorKind::InvalidInput,
            Error::Busy { .. } => ErrorKind::WouldBlock,
            Error::Unsupported { .. } | Error::Locked { .. } => ErrorKind::Unsupported,
            Error::Gone { .. } => ErrorKind::NotFound,
            Error::Unverified { .. } => ErrorKind::Other,
        };
        IoError::new(kind, e)
    }
}
