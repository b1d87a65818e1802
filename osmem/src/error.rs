//! The one error type. Every variant names the operation; OS failures carry the syscall and
//! errno and say whether anything changed, so a caller never has to guess whether memory was
//! released, protected or lost.

use crate::state::State;
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
    /// Offset (or, for `reserve_fixed`, the address) or length is not a multiple of the
    /// page size.
    Unaligned {
        /// The operation.
        op: Op,
        /// Offset into the region (the address for `reserve_fixed` / a reservation's hint).
        offset: usize,
        /// Length in bytes.
        len: usize,
    },
    /// The alignment asked of `reserve_aligned` is not a power of two of at least the page
    /// size.
    ///
    /// ```
    /// let e = osmem::Reservation::reserve_aligned(1 << 20, 3 << 12).unwrap_err();
    /// assert!(matches!(e, osmem::Error::Alignment { align, .. } if align == 3 << 12));
    /// assert!(e.to_string().contains("alignment 0x3000"));
    /// ```
    Alignment {
        /// The operation.
        op: Op,
        /// The alignment asked for.
        align: usize,
        /// The page size.
        page: usize,
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
            | Error::Alignment { op, .. }
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

/// What a person reads: the operation, what went wrong (the system call with its advice and
/// the errno by name and meaning for [`Error::Os`]), and whether anything changed.
///
/// ```
/// let e = osmem::Error::Os {
///     op: osmem::Op::Collapse,
///     call: osmem::Syscall::Madvise(25),
///     errno: osmem::Errno(libc::EINVAL),
///     changed: false,
/// };
/// assert_eq!(
///     e.to_string(),
///     "osmem collapse: madvise(MADV_COLLAPSE): EINVAL (invalid argument); nothing changed"
/// );
/// ```
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Unaligned { op, offset, len } => write!(
                f,
                "osmem {op}: offset {offset:#x} or length {len:#x} is not a multiple of the page size; nothing changed"
            ),
            Error::Alignment { op, align, page } => write!(
                f,
                "osmem {op}: alignment {align:#x} is not a power of two of at least the page size ({page:#x}); nothing changed"
            ),
            Error::ZeroLength { op } => write!(f, "osmem {op}: zero length; nothing changed"),
            Error::Overflow { op, offset, len } => write!(
                f,
                "osmem {op}: offset {offset:#x} + length {len:#x} overflows; nothing changed"
            ),
            Error::OutOfRange { op, offset, len, size } => write!(
                f,
                "osmem {op}: range {offset:#x}+{len:#x} is outside the region of {size:#x} bytes; nothing changed"
            ),
            Error::WrongState { op, offset, found } => write!(
                f,
                "osmem {op}: the page at offset {offset:#x} is {found:?}, which {op} does not start from; nothing changed"
            ),
            Error::Busy { op, offset } => write!(
                f,
                "osmem {op}: the page at offset {offset:#x} is held by another transition in progress (or the call re-entered osmem from a signal handler); nothing changed"
            ),
            Error::Gone { op } => write!(
                f,
                "osmem {op}: the reservation this id names has been dropped; nothing changed"
            ),
            Error::Unverified { op, offset, len } => write!(
                f,
                "osmem {op}: checked mode: the kernel does not show the effect on {offset:#x}+{len:#x}"
            ),
            Error::Locked { op, offset, len } => write!(
                f,
                "osmem {op}: range {offset:#x}+{len:#x} is mlocked and this kernel cannot release locked memory (MADV_DONTNEED_LOCKED needs Linux 5.18); nothing changed"
            ),
            Error::Unsupported { op } => {
                write!(f, "osmem {op}: not supported by this kernel; nothing changed")
            }
            Error::Os { op, call, errno, changed } => write!(
                f,
                "osmem {op}: {call}: {errno}; {}",
                if changed { "the range changed (see the reservation's state)" } else { "nothing changed" }
            ),
        }
    }
}

impl Op {
    /// The operation's name, as the method that does it is called (`"unused"`,
    /// `"collapse"`, …).
    ///
    /// ```
    /// assert_eq!(osmem::Op::Unused.name(), "unused");
    /// assert_eq!(osmem::Op::Collapse.to_string(), "collapse");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Op::Alloc => "alloc",
            Op::Reserve => "reserve",
            Op::Map => "map",
            Op::Used => "used",
            Op::Unused => "unused",
            Op::Fault => "fault",
            Op::Free => "free",
            Op::HugePage => "hugepage",
            Op::NoHugePage => "nohugepage",
            Op::Collapse => "collapse",
            Op::Residency => "residency",
        }
    }
}

/// [`Op::name`].
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of a `madvise` advice value (`MADV_DONTNEED` for 4), if it is one Linux knows.
///
/// ```
/// assert_eq!(osmem::advice_name(25), Some("MADV_COLLAPSE"));
/// assert_eq!(osmem::advice_name(1000), None);
/// ```
pub fn advice_name(advice: i32) -> Option<&'static str> {
    Some(match advice {
        0 => "MADV_NORMAL",
        1 => "MADV_RANDOM",
        2 => "MADV_SEQUENTIAL",
        3 => "MADV_WILLNEED",
        4 => "MADV_DONTNEED",
        8 => "MADV_FREE",
        9 => "MADV_REMOVE",
        10 => "MADV_DONTFORK",
        11 => "MADV_DOFORK",
        12 => "MADV_MERGEABLE",
        13 => "MADV_UNMERGEABLE",
        14 => "MADV_HUGEPAGE",
        15 => "MADV_NOHUGEPAGE",
        16 => "MADV_DONTDUMP",
        17 => "MADV_DODUMP",
        18 => "MADV_WIPEONFORK",
        19 => "MADV_KEEPONFORK",
        20 => "MADV_COLD",
        21 => "MADV_PAGEOUT",
        22 => "MADV_POPULATE_READ",
        23 => "MADV_POPULATE_WRITE",
        24 => "MADV_DONTNEED_LOCKED",
        25 => "MADV_COLLAPSE",
        100 => "MADV_HWPOISON",
        101 => "MADV_SOFT_OFFLINE",
        102 => "MADV_GUARD_INSTALL",
        103 => "MADV_GUARD_REMOVE",
        _ => return None,
    })
}

/// The call as a person writes it: `madvise(MADV_DONTNEED)`, `mmap`, `ioctl(PAGEMAP_SCAN)`.
///
/// ```
/// assert_eq!(osmem::Syscall::Madvise(4).to_string(), "madvise(MADV_DONTNEED)");
/// assert_eq!(osmem::Syscall::ProcessMadvise(999).to_string(), "process_madvise(advice 999)");
/// assert_eq!(osmem::Syscall::Mmap.to_string(), "mmap");
/// ```
impl fmt::Display for Syscall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let advised = |f: &mut fmt::Formatter<'_>, call: &str, a: i32| match advice_name(a) {
            Some(n) => write!(f, "{call}({n})"),
            None => write!(f, "{call}(advice {a})"),
        };
        match *self {
            Syscall::Mmap => f.write_str("mmap"),
            Syscall::Munmap => f.write_str("munmap"),
            Syscall::Mprotect => f.write_str("mprotect"),
            Syscall::Madvise(a) => advised(f, "madvise", a),
            Syscall::ProcessMadvise(a) => advised(f, "process_madvise", a),
            Syscall::PidfdOpen => f.write_str("pidfd_open"),
            Syscall::Prctl => f.write_str("prctl"),
            Syscall::OpenPagemap => f.write_str("open(/proc/self/pagemap)"),
            Syscall::PagemapScan => f.write_str("ioctl(PAGEMAP_SCAN)"),
            Syscall::PagemapRead => f.write_str("pread(/proc/self/pagemap)"),
            Syscall::Mincore => f.write_str("mincore"),
        }
    }
}

impl Errno {
    /// The errno's symbolic name (`"EINVAL"`), for the ones memory calls return.
    ///
    /// ```
    /// assert_eq!(osmem::Errno(libc::ENOMEM).name(), Some("ENOMEM"));
    /// ```
    pub fn name(self) -> Option<&'static str> {
        errno_text(self.0).map(|t| t.0)
    }

    /// What it means, as `strerror` words it (`"invalid argument"`).
    ///
    /// ```
    /// assert_eq!(osmem::Errno(libc::EINVAL).description(), Some("invalid argument"));
    /// ```
    pub fn description(self) -> Option<&'static str> {
        errno_text(self.0).map(|t| t.1)
    }
}

/// `EINVAL (invalid argument)`; `errno 200` for one without a name here.
///
/// ```
/// assert_eq!(osmem::Errno(libc::EEXIST).to_string(), "EEXIST (file exists)");
/// assert_eq!(osmem::Errno(200).to_string(), "errno 200");
/// ```
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match errno_text(self.0) {
            Some((n, d)) => write!(f, "{n} ({d})"),
            None => write!(f, "errno {}", self.0),
        }
    }
}

/// Name and meaning of the errnos the calls osmem makes can return (x86-64 and aarch64
/// numbers, which agree for these).
fn errno_text(e: i32) -> Option<(&'static str, &'static str)> {
    Some(match e {
        libc::EPERM => ("EPERM", "operation not permitted"),
        libc::ENOENT => ("ENOENT", "no such file or directory"),
        libc::ESRCH => ("ESRCH", "no such process"),
        libc::EINTR => ("EINTR", "interrupted system call"),
        libc::EIO => ("EIO", "input/output error"),
        libc::E2BIG => ("E2BIG", "argument list too long"),
        libc::EBADF => ("EBADF", "bad file descriptor"),
        libc::EAGAIN => ("EAGAIN", "resource temporarily unavailable"),
        libc::ENOMEM => ("ENOMEM", "cannot allocate memory"),
        libc::EACCES => ("EACCES", "permission denied"),
        libc::EFAULT => ("EFAULT", "bad address"),
        libc::EBUSY => ("EBUSY", "device or resource busy"),
        libc::EEXIST => ("EEXIST", "file exists"),
        libc::ENODEV => ("ENODEV", "no such device"),
        libc::EINVAL => ("EINVAL", "invalid argument"),
        libc::ENFILE => ("ENFILE", "too many open files in system"),
        libc::EMFILE => ("EMFILE", "too many open files"),
        libc::ENOTTY => ("ENOTTY", "inappropriate ioctl for device"),
        libc::ENOSPC => ("ENOSPC", "no space left on device"),
        libc::ENOSYS => ("ENOSYS", "function not implemented"),
        libc::EOVERFLOW => ("EOVERFLOW", "value too large for defined data type"),
        libc::EOPNOTSUPP => ("EOPNOTSUPP", "operation not supported"),
        libc::EHWPOISON => ("EHWPOISON", "memory page has hardware error"),
        _ => return None,
    })
}

/// Available with the `std` feature (on by default).
#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// Available with the `std` feature (on by default), for code that reports errors as
/// [`std::io::Error`] (and the `?` operator in functions returning `io::Result`).
///
/// The result always wraps the osmem error itself, so its message names the operation (and,
/// for a failed system call, the call and the errno: `osmem reserve: mmap: EEXIST (file
/// exists); nothing changed`, not `File exists (os error 17)` alone), and
/// [`get_ref`](std::io::Error::get_ref) gives it back, with its [`errno`](Error::errno).
/// (So [`raw_os_error`](std::io::Error::raw_os_error) is `None`: an `io::Error` holds either
/// an OS code or a payload, and the operation is what a reader needs first.) Its kind:
///
/// - [`Error::Os`]: the kind the standard library gives the errno (`ENOMEM` is
///   `OutOfMemory`, `EPERM` `PermissionDenied`, `EEXIST` `AlreadyExists`…);
/// - and for the others:
///   - `InvalidInput` for bad arguments ([`Error::Unaligned`], [`Error::Alignment`], [`Error::ZeroLength`],
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
/// assert!(e.to_string().contains("not a multiple of the page size"));
///
/// // A failed system call: the errno's kind, and the operation in the message.
/// let taken = r.as_ptr() as usize;
/// let e: io::Error = osmem::Reservation::reserve_fixed(taken, ps).unwrap_err().into();
/// assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
/// assert!(e.to_string().starts_with("osmem reserve: mmap: EEXIST"));
/// let os = e.get_ref().and_then(|e| e.downcast_ref::<osmem::Error>()).unwrap();
/// assert_eq!(os.errno(), Some(libc::EEXIST));
/// # Ok::<(), osmem::Error>(())
/// ```
#[cfg(feature = "std")]
impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        use std::io::{Error as IoError, ErrorKind};
        let kind = match e {
            Error::Os { errno, .. } => IoError::from_raw_os_error(errno.0).kind(),
            Error::Unaligned { .. }
            | Error::Alignment { .. }
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
