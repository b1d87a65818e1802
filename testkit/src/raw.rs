//! Allocation-free low-level helpers: raw fd I/O, number formatting and
//! diagnostics to stderr.
//!
//! Everything here may be called in a forked child of a multi-threaded
//! process. After `fork()` only the calling thread exists in the child; any
//! lock another thread held at the time of the fork (the allocator's, stdio's,
//! the panic machinery's) stays locked forever there. So nothing in this
//! module allocates, takes a std lock or formats through `std::fmt`.

use libc::c_int;

/// The calling thread's `errno`.
pub fn errno() -> i32 {
    // SAFETY: `__errno_location` always returns a valid thread-local pointer.
    unsafe { *libc::__errno_location() }
}

/// Writes all of `bytes` to `fd`, retrying on `EINTR` and short writes.
/// Returns `false` on any other error.
pub fn write_all(fd: c_int, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        // SAFETY: the pointer/length pair comes from a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        if n == 0 {
            return false;
        }
        bytes = &bytes[n as usize..];
    }
    true
}

/// Formats `v` in decimal into `buf`; returns the digits (a suffix of `buf`).
pub fn fmt_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Formats `v` in lowercase hex without a `0x` prefix or leading zeros
/// (as `/proc/self/maps` does, minus its zero padding); returns a suffix of `buf`.
pub fn fmt_hex(mut v: u64, buf: &mut [u8; 16]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Writes raw bytes to stderr (fd 2), bypassing std's locked `Stderr`.
///
/// Note: under `cargo test` this is not captured by the harness, which is
/// what you want for diagnostics from a child process.
pub fn eprint_bytes(bytes: &[u8]) {
    let _ = write_all(2, bytes);
}

/// Writes `v` in decimal to stderr.
pub fn eprint_u64(v: u64) {
    let mut buf = [0u8; 20];
    eprint_bytes(fmt_u64(v, &mut buf));
}

/// Writes `v` as `0x…` hex to stderr.
pub fn eprint_hex(v: u64) {
    let mut buf = [0u8; 16];
    eprint_bytes(b"0x");
    eprint_bytes(fmt_hex(v, &mut buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        let mut d = [0u8; 20];
        assert_eq!(fmt_u64(0, &mut d), b"0");
        assert_eq!(fmt_u64(1234567890, &mut d), b"1234567890");
        assert_eq!(fmt_u64(u64::MAX, &mut d), b"18446744073709551615");
        let mut h = [0u8; 16];
        assert_eq!(fmt_hex(0, &mut h), b"0");
        assert_eq!(fmt_hex(0x7fff_dead_beef, &mut h), b"7fffdeadbeef");
        assert_eq!(fmt_hex(u64::MAX, &mut h), b"ffffffffffffffff");
    }
}
