//! Streaming, allocation-free parsers for `/proc/self/maps` and
//! `/proc/self/smaps`.
//!
//! The files are read with raw `open`/`read`/`close` into a fixed stack buffer
//! and split into lines on the fly; a line may straddle two reads. Only a
//! fixed-size prefix of each line ([`LINE_CAP`] bytes) is kept, which always
//! covers the fields parsed here (the address range, the permissions, and the
//! `Name:  value kB` fields); long file paths at the end of maps lines are
//! simply truncated.
//!
//! No function here allocates, so all of them may be called in a forked child
//! (see the crate docs for why that matters).
//!
//! Reading `/proc/self/*maps` is not atomic with respect to other threads that
//! change the address space concurrently (the kernel may drop the lock between
//! chunks): counts over the whole file are only exact when nothing else maps or
//! unmaps meanwhile, as in a forked child. Checks on a range that only the
//! calling test touches are reliable either way.

use core::ffi::CStr;
use core::fmt;

use libc::c_int;

use crate::raw::{eprint_bytes, errno};

/// Bytes of each line that are kept; the rest of a longer line is skipped.
pub(crate) const LINE_CAP: usize = 256;
/// Size of the read buffer used for the real files.
const READ_BUF: usize = 4096;

/// Where a [`LineReader`] gets its bytes from: a file descriptor in real use,
/// a byte slice in the parser's own tests.
pub(crate) trait ByteSource {
    /// Reads into `buf`; returns the number of bytes read, 0 at end of input
    /// or on error.
    fn read_into(&mut self, buf: &mut [u8]) -> usize;
}

/// An owned, open file descriptor, closed on drop.
pub(crate) struct Fd(c_int);

impl Fd {
    /// Opens `path` read-only.
    pub(crate) fn open(path: &CStr) -> Option<Fd> {
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            None
        } else {
            Some(Fd(fd))
        }
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

impl ByteSource for Fd {
    fn read_into(&mut self, buf: &mut [u8]) -> usize {
        loop {
            // SAFETY: the pointer/length pair comes from a live mutable slice.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return n as usize;
            }
            if errno() != libc::EINTR {
                return 0;
            }
        }
    }
}

/// One line (or its first [`LINE_CAP`] bytes), without the trailing newline.
pub(crate) struct Line {
    bytes: [u8; LINE_CAP],
    len: usize,
}

impl Line {
    pub(crate) fn new() -> Line {
        Line {
            bytes: [0; LINE_CAP],
            len: 0,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Splits a [`ByteSource`] into lines using a fixed buffer of `B` bytes.
pub(crate) struct LineReader<S, const B: usize> {
    src: S,
    buf: [u8; B],
    pos: usize,
    len: usize,
    eof: bool,
}

impl<S: ByteSource, const B: usize> LineReader<S, B> {
    pub(crate) fn new(src: S) -> Self {
        LineReader {
            src,
            buf: [0; B],
            pos: 0,
            len: 0,
            eof: false,
        }
    }

    /// Reads the next line into `line`. Returns `false` at end of input.
    /// A final line without a newline is still returned.
    pub(crate) fn next_line(&mut self, line: &mut Line) -> bool {
        line.len = 0;
        let mut any = false;
        loop {
            if self.pos == self.len {
                if self.eof {
                    return any;
                }
                self.len = self.src.read_into(&mut self.buf);
                self.pos = 0;
                if self.len == 0 {
                    self.eof = true;
                    return any;
                }
            }
            let chunk = &self.buf[self.pos..self.len];
            any = true;
            match chunk.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    line.push(&chunk[..nl]);
                    self.pos += nl + 1;
                    return true;
                }
                None => {
                    line.push(chunk);
                    self.pos = self.len;
                }
            }
        }
    }
}

impl Line {
    /// Appends as much of `bytes` as fits; the rest is dropped.
    fn push(&mut self, bytes: &[u8]) {
        let room = LINE_CAP - self.len;
        let n = bytes.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

fn open_reader(path: &CStr) -> Option<LineReader<Fd, READ_BUF>> {
    Fd::open(path).map(LineReader::new)
}

const MAPS: &CStr = c"/proc/self/maps";
const SMAPS: &CStr = c"/proc/self/smaps";

/// One mapping (VMA) as the kernel reports it in `/proc/self/maps`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Vma {
    /// First address of the mapping.
    pub start: usize,
    /// One past the last address of the mapping.
    pub end: usize,
    /// The permission column verbatim, e.g. `*b"rw-p"`.
    pub perms: [u8; 4],
}

impl Vma {
    /// The permission column as text, e.g. `"---p"` or `"rw-p"`.
    pub fn perms_str(&self) -> &str {
        core::str::from_utf8(&self.perms).unwrap_or("????")
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the mapping is empty (never true for a real VMA).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Whether `addr` lies in `[start, end)`.
    pub fn contains(&self, addr: usize) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether the mapping intersects `[start, end)`.
    pub fn intersects(&self, start: usize, end: usize) -> bool {
        self.start < end && start < self.end
    }
}

impl fmt::Debug for Vma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Vma({:#x}-{:#x} {})",
            self.start,
            self.end,
            self.perms_str()
        )
    }
}

/// Parses a lowercase hex number at `*i`, advancing `*i` past it.
fn parse_hex(s: &[u8], i: &mut usize) -> Option<usize> {
    let begin = *i;
    let mut v: usize = 0;
    while let Some(&c) = s.get(*i) {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        v = v.checked_mul(16)?.checked_add(d as usize)?;
        *i += 1;
    }
    if *i == begin {
        None
    } else {
        Some(v)
    }
}

/// Parses the `start-end perms` prefix of a maps line (or an smaps header line).
fn parse_vma(s: &[u8]) -> Option<Vma> {
    let mut i = 0;
    let start = parse_hex(s, &mut i)?;
    if s.get(i) != Some(&b'-') {
        return None;
    }
    i += 1;
    let end = parse_hex(s, &mut i)?;
    if s.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let p = s.get(i..i + 4)?;
    Some(Vma {
        start,
        end,
        perms: [p[0], p[1], p[2], p[3]],
    })
}

/// Whether a line of smaps is a VMA header (`7f…-7f… rw-p …`) rather than a
/// `Name: value` field. Field names start with an uppercase letter, header
/// lines with a lowercase hex digit.
fn is_header(s: &[u8]) -> bool {
    matches!(s.first(), Some(b'0'..=b'9' | b'a'..=b'f'))
}

/// Splits a `Name:   value [kB]` field line into name and the text after the colon.
fn split_field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = s.iter().position(|&b| b == b':')?;
    Some((&s[..colon], &s[colon + 1..]))
}

/// Parses the first decimal number in `s` (after leading spaces).
fn parse_dec(s: &[u8]) -> u64 {
    let mut v: u64 = 0;
    for &c in s.iter().skip_while(|&&c| c == b' ' || c == b'\t') {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.saturating_mul(10).saturating_add((c - b'0') as u64);
    }
    v
}

fn find_vma<S: ByteSource, const B: usize>(r: &mut LineReader<S, B>, addr: usize) -> Option<Vma> {
    let mut line = Line::new();
    while r.next_line(&mut line) {
        if let Some(v) = parse_vma(line.as_bytes()) {
            if v.contains(addr) {
                return Some(v);
            }
        }
    }
    None
}

fn count_lines<S: ByteSource, const B: usize>(r: &mut LineReader<S, B>) -> usize {
    let mut line = Line::new();
    let mut n = 0;
    while r.next_line(&mut line) {
        n += 1;
    }
    n
}

fn count_intersecting<S: ByteSource, const B: usize>(
    r: &mut LineReader<S, B>,
    start: usize,
    end: usize,
) -> usize {
    let mut line = Line::new();
    let mut n = 0;
    while r.next_line(&mut line) {
        if let Some(v) = parse_vma(line.as_bytes()) {
            if v.intersects(start, end) {
                n += 1;
            }
        }
    }
    n
}

/// Returns the mapping of the calling process that contains `addr`, read from
/// `/proc/self/maps`, or `None` if `addr` is not mapped (or the file cannot
/// be read). Allocation-free.
pub fn vma_at(addr: usize) -> Option<Vma> {
    find_vma(&mut open_reader(MAPS)?, addr)
}

/// Number of lines (mappings) in `/proc/self/maps`; 0 if it cannot be read.
/// Allocation-free.
///
/// In a multi-threaded test process other threads change this number at any
/// time; compare counts only in a forked child or use [`vmas_in`].
pub fn maps_line_count() -> usize {
    open_reader(MAPS).map_or(0, |mut r| count_lines(&mut r))
}

/// Number of mappings in `/proc/self/maps` that intersect `[start, end)`.
/// Allocation-free.
pub fn vmas_in(start: usize, end: usize) -> usize {
    open_reader(MAPS).map_or(0, |mut r| count_intersecting(&mut r, start, end))
}

/// The mappings of `/proc/self/maps` that intersect `[start, end)`, in address order, into
/// `out`; returns how many there are (more than `out.len()` if it was too small: the first
/// `out.len()` are written). One read of the file for any number of pages, allocation-free:
/// for children of a fork that check many pages.
///
/// ```
/// let ps = osmem_testkit::page_size();
/// let p = osmem_testkit::map_rw(4 * ps).unwrap();
/// let mut out = [osmem_testkit::vma_at(p).unwrap(); 4];
/// let n = osmem_testkit::vmas_within(p, p + 4 * ps, &mut out);
/// assert!(n >= 1 && out[0].contains(p));
/// ```
pub fn vmas_within(start: usize, end: usize, out: &mut [Vma]) -> usize {
    let Some(mut r) = open_reader(MAPS) else {
        return 0;
    };
    let mut line = Line::new();
    let mut n = 0;
    while r.next_line(&mut line) {
        if let Some(v) = parse_vma(line.as_bytes()) {
            if v.intersects(start, end) {
                if n < out.len() {
                    out[n] = v;
                }
                n += 1;
            }
        }
    }
    n
}

/// Writes the lines of `/proc/self/maps` that intersect `[start, end)` to
/// stderr (each cut to its first 256 bytes), for diagnosing a failing check.
/// Allocation-free.
pub fn eprint_maps(start: usize, end: usize) {
    let Some(mut r) = open_reader(MAPS) else {
        eprint_bytes(b"osmem-testkit: cannot open /proc/self/maps\n");
        return;
    };
    let mut line = Line::new();
    while r.next_line(&mut line) {
        if let Some(v) = parse_vma(line.as_bytes()) {
            if v.intersects(start, end) {
                eprint_bytes(line.as_bytes());
                eprint_bytes(b"\n");
            }
        }
    }
}

/// Maximum number of two-letter flags a [`VmFlags`] keeps (the kernel has
/// far fewer per VMA).
const VM_FLAGS_CAP: usize = 48;

/// The `VmFlags:` field of an smaps entry: two-letter codes such as `rd`,
/// `wr`, `hg` (MADV_HUGEPAGE), `nh` (MADV_NOHUGEPAGE), `dc` (MADV_DONTFORK),
/// `wf` (MADV_WIPEONFORK), `nr` (MAP_NORESERVE). See `proc(5)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VmFlags {
    flags: [[u8; 2]; VM_FLAGS_CAP],
    len: usize,
}

impl VmFlags {
    const fn empty() -> VmFlags {
        VmFlags {
            flags: [[0; 2]; VM_FLAGS_CAP],
            len: 0,
        }
    }

    fn parse(s: &[u8]) -> VmFlags {
        let mut f = VmFlags::empty();
        for tok in s.split(|&b| b == b' ') {
            if tok.len() == 2 && f.len < VM_FLAGS_CAP {
                f.flags[f.len] = [tok[0], tok[1]];
                f.len += 1;
            }
        }
        f
    }

    /// Whether the two-letter flag `flag` (e.g. `"hg"`) is present.
    pub fn contains(&self, flag: &str) -> bool {
        self.as_slice().iter().any(|f| f[..] == *flag.as_bytes())
    }

    /// All flags in kernel order.
    pub fn as_slice(&self) -> &[[u8; 2]] {
        &self.flags[..self.len]
    }
}

impl fmt::Debug for VmFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VmFlags(")?;
        for (i, fl) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(core::str::from_utf8(fl).unwrap_or("??"))?;
        }
        f.write_str(")")
    }
}

/// One VMA of `/proc/self/smaps` with the fields tests care about.
/// All sizes are in kB, as the kernel prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmapsEntry {
    /// The mapping itself.
    pub vma: Vma,
    /// `Size:` — virtual size of the VMA.
    pub size_kb: u64,
    /// `Rss:` — resident memory. Note: pages that merely map the shared zero
    /// page (read faults on untouched anonymous memory) are not counted here,
    /// while `mincore` ([`crate::resident_pages`]) reports them resident.
    pub rss_kb: u64,
    /// `Anonymous:` — resident anonymous memory.
    pub anon_kb: u64,
    /// `LazyFree:` — memory marked with MADV_FREE and not yet reclaimed or
    /// redirtied. The kernel applies MADV_FREE to its LRU through per-CPU
    /// batches; [`smaps_at`]/[`smaps_sum`] drain them first
    /// ([`crate::drain_lru_batches`]) so the figure is current.
    pub lazy_free_kb: u64,
    /// `AnonHugePages:` — anonymous memory backed by PMD-sized transparent
    /// huge pages.
    pub anon_huge_kb: u64,
    /// `THPeligible:` — whether the VMA may get transparent huge pages.
    pub thp_eligible: bool,
    /// `VmFlags:` — the VMA's flags.
    pub vm_flags: VmFlags,
}

impl SmapsEntry {
    fn new(vma: Vma) -> SmapsEntry {
        SmapsEntry {
            vma,
            size_kb: 0,
            rss_kb: 0,
            anon_kb: 0,
            lazy_free_kb: 0,
            anon_huge_kb: 0,
            thp_eligible: false,
            vm_flags: VmFlags::empty(),
        }
    }

    fn apply_field(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b"Size" => self.size_kb = parse_dec(value),
            b"Rss" => self.rss_kb = parse_dec(value),
            b"Anonymous" => self.anon_kb = parse_dec(value),
            b"LazyFree" => self.lazy_free_kb = parse_dec(value),
            b"AnonHugePages" => self.anon_huge_kb = parse_dec(value),
            b"THPeligible" => self.thp_eligible = parse_dec(value) != 0,
            b"VmFlags" => self.vm_flags = VmFlags::parse(value),
            _ => {}
        }
    }
}

/// Totals of smaps fields over every VMA that intersects a range
/// (see [`smaps_sum`]). All sizes in kB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmapsSum {
    /// Number of VMAs that were summed.
    pub vmas: usize,
    /// Sum of `Size:`.
    pub size_kb: u64,
    /// Sum of `Rss:`.
    pub rss_kb: u64,
    /// Sum of `Anonymous:`.
    pub anon_kb: u64,
    /// Sum of `LazyFree:`.
    pub lazy_free_kb: u64,
    /// Sum of `AnonHugePages:`.
    pub anon_huge_kb: u64,
}

impl SmapsSum {
    fn add(&mut self, e: &SmapsEntry) {
        self.vmas += 1;
        self.size_kb += e.size_kb;
        self.rss_kb += e.rss_kb;
        self.anon_kb += e.anon_kb;
        self.lazy_free_kb += e.lazy_free_kb;
        self.anon_huge_kb += e.anon_huge_kb;
    }
}

/// Walks smaps entries, calling `f` with each complete entry whose VMA
/// satisfies `want`. `f` returns `false` to stop early.
fn for_each_smaps<S: ByteSource, const B: usize>(
    r: &mut LineReader<S, B>,
    want: impl Fn(&Vma) -> bool,
    mut f: impl FnMut(&SmapsEntry) -> bool,
) {
    let mut line = Line::new();
    let mut cur: Option<SmapsEntry> = None;
    while r.next_line(&mut line) {
        let s = line.as_bytes();
        if is_header(s) {
            if let Some(v) = parse_vma(s) {
                if let Some(done) = cur.take() {
                    if !f(&done) {
                        return;
                    }
                }
                if want(&v) {
                    cur = Some(SmapsEntry::new(v));
                }
                continue;
            }
        }
        if let (Some(e), Some((name, value))) = (cur.as_mut(), split_field(s)) {
            e.apply_field(name, value);
        }
    }
    if let Some(done) = cur {
        f(&done);
    }
}

fn smaps_find<S: ByteSource, const B: usize>(
    r: &mut LineReader<S, B>,
    addr: usize,
) -> Option<SmapsEntry> {
    let mut found = None;
    for_each_smaps(
        r,
        |v| v.contains(addr),
        |e| {
            found = Some(*e);
            false
        },
    );
    found
}

fn smaps_total<S: ByteSource, const B: usize>(
    r: &mut LineReader<S, B>,
    start: usize,
    end: usize,
) -> SmapsSum {
    let mut sum = SmapsSum::default();
    for_each_smaps(
        r,
        |v| v.intersects(start, end),
        |e| {
            sum.add(e);
            true
        },
    );
    sum
}

/// Returns the `/proc/self/smaps` entry of the VMA containing `addr`, or
/// `None` if `addr` is not mapped. Allocation-free. Calls
/// [`crate::drain_lru_batches`] first so that `LazyFree` is up to date.
///
/// The figures are for the whole VMA, which the kernel may have merged with
/// neighbouring mappings of identical flags; for exact per-range residency use
/// [`crate::resident_pages`].
pub fn smaps_at(addr: usize) -> Option<SmapsEntry> {
    crate::drain_lru_batches();
    smaps_find(&mut open_reader(SMAPS)?, addr)
}

/// Sums `/proc/self/smaps` fields over every VMA that intersects
/// `[start, end)`. Allocation-free. Calls [`crate::drain_lru_batches`]
/// first so that `LazyFree` is up to date.
///
/// The sum is over WHOLE intersecting VMAs: a VMA reaching beyond the range
/// contributes all of its pages. Use it on ranges whose VMAs are exactly the
/// mapping under test, or use [`crate::resident_pages`] for exact
/// per-range residency. Returns all zeros if the file cannot be read.
pub fn smaps_sum(start: usize, end: usize) -> SmapsSum {
    crate::drain_lru_batches();
    open_reader(SMAPS).map_or_else(SmapsSum::default, |mut r| smaps_total(&mut r, start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds a byte slice in chunks of at most `chunk` bytes, to exercise
    /// lines straddling reads.
    struct Chunks<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl ByteSource for Chunks<'_> {
        fn read_into(&mut self, buf: &mut [u8]) -> usize {
            let n = self.data.len().min(self.chunk).min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            n
        }
    }

    const MAPS_TEXT: &[u8] = b"\
55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 1234                       /usr/bin/some-very-long-binary-name-that-goes-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on-and-on\n\
7f0000000000-7f0000010000 rw-p 00000000 00:00 0 \n\
7f0000010000-7f0000011000 ---p 00000000 00:00 0 \n\
7f0000011000-7f0000020000 rw-p 00000000 00:00 0 \n\
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]";

    const SMAPS_TEXT: &[u8] = b"\
7f0000000000-7f0000010000 rw-p 00000000 00:00 0 \n\
Size:                 64 kB\n\
KernelPageSize:        4 kB\n\
Rss:                  20 kB\n\
Anonymous:            20 kB\n\
LazyFree:              8 kB\n\
AnonHugePages:         0 kB\n\
THPeligible:           0\n\
VmFlags: rd wr mr mw me ac nh \n\
7f0000010000-7f0000011000 ---p 00000000 00:00 0 \n\
Size:                  4 kB\n\
Rss:                   0 kB\n\
VmFlags: mr mw me ac \n\
7f0000011000-7f0000020000 rw-p 00000000 00:00 0 \n\
Size:                 60 kB\n\
Rss:                  12 kB\n\
Anonymous:            12 kB\n\
AnonHugePages:      2048 kB\n\
THPeligible:           1\n\
VmFlags: rd wr mr mw me ac hg";

    fn reader(data: &[u8], chunk: usize) -> LineReader<Chunks<'_>, 16> {
        LineReader::new(Chunks { data, chunk })
    }

    #[test]
    fn lines_straddle_reads_and_long_lines_are_truncated() {
        for chunk in 1..40 {
            let mut r = reader(MAPS_TEXT, chunk);
            let mut line = Line::new();
            let mut n = 0;
            while r.next_line(&mut line) {
                if n == 0 {
                    assert_eq!(line.as_bytes().len(), LINE_CAP);
                }
                if n == 4 {
                    assert!(line.as_bytes().ends_with(b"[vsyscall]"));
                }
                n += 1;
            }
            assert_eq!(n, 5, "chunk {chunk}");
        }
    }

    #[test]
    fn parses_maps() {
        for chunk in [1, 3, 7, 16, 100] {
            let v = find_vma(&mut reader(MAPS_TEXT, chunk), 0x7f0000010fff).unwrap();
            assert_eq!((v.start, v.end), (0x7f0000010000, 0x7f0000011000));
            assert_eq!(v.perms_str(), "---p");
            let v = find_vma(&mut reader(MAPS_TEXT, chunk), 0xffffffffff600000).unwrap();
            assert_eq!(v.perms_str(), "--xp");
            assert!(find_vma(&mut reader(MAPS_TEXT, chunk), 0x7f0000020000).is_none());
            assert_eq!(count_lines(&mut reader(MAPS_TEXT, chunk)), 5);
            let n = count_intersecting(
                &mut reader(MAPS_TEXT, chunk),
                0x7f000000f000,
                0x7f0000012000,
            );
            assert_eq!(n, 3);
            let n = count_intersecting(
                &mut reader(MAPS_TEXT, chunk),
                0x7f0000010000,
                0x7f0000011000,
            );
            assert_eq!(n, 1);
        }
    }

    #[test]
    fn parses_smaps() {
        for chunk in [1, 5, 16, 1000] {
            let e = smaps_find(&mut reader(SMAPS_TEXT, chunk), 0x7f0000000000).unwrap();
            assert_eq!(e.vma.perms_str(), "rw-p");
            assert_eq!(
                (
                    e.size_kb,
                    e.rss_kb,
                    e.anon_kb,
                    e.lazy_free_kb,
                    e.anon_huge_kb
                ),
                (64, 20, 20, 8, 0)
            );
            assert!(!e.thp_eligible);
            assert!(e.vm_flags.contains("nh") && !e.vm_flags.contains("hg"));

            // Last entry, no trailing newline.
            let e = smaps_find(&mut reader(SMAPS_TEXT, chunk), 0x7f000001ffff).unwrap();
            assert_eq!((e.size_kb, e.rss_kb, e.anon_huge_kb), (60, 12, 2048));
            assert!(e.thp_eligible && e.vm_flags.contains("hg"));

            let s = smaps_total(
                &mut reader(SMAPS_TEXT, chunk),
                0x7f000000f000,
                0x7f0000011001,
            );
            assert_eq!(s.vmas, 3);
            assert_eq!((s.size_kb, s.rss_kb, s.lazy_free_kb), (128, 32, 8));
            assert_eq!(s.anon_huge_kb, 2048);
            assert!(smaps_find(&mut reader(SMAPS_TEXT, chunk), 0x1000).is_none());
        }
    }

    #[test]
    fn real_maps_small_buffers_agree() {
        // A non-zero writable static lives in .data, the binary's stable
        // file-backed `rw-p` mapping (not .bss, which may abut the heap):
        // parse it with a tiny and a normal buffer.
        static X: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(1);
        let addr = &X as *const _ as usize;
        let big = vma_at(addr).unwrap();
        let small = find_vma(&mut LineReader::<_, 7>::new(Fd::open(MAPS).unwrap()), addr).unwrap();
        assert_eq!((big.start, big.end), (small.start, small.end));
        assert_eq!(big.perms_str(), "rw-p");
        assert!(maps_line_count() > 3);
    }
}
