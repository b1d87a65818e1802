//! The memory limit of the process's cgroup, where runtimes in containers get theirs.
//!
//! cgroup v2: `memory.max` (the hard limit) and `memory.high` (the throttling threshold) of
//! the process's cgroup and of every ancestor, at `/sys/fs/cgroup` (unified hierarchy) or
//! `/sys/fs/cgroup/unified` (hybrid hosts). cgroup v1 (still common): `memory.limit_in_bytes`
//! of the memory controller's cgroup and its ancestors. The limit is the smallest value
//! found; `max` (v2) and the v1 "unlimited" value (≥ 2^62) mean none. Read with fixed
//! buffers: no allocation.

/// Where a cgroup limit came from. New sources may be added: match with a `_` arm.
///
/// ```
/// if let Some(l) = osmem_heap::cgroup_memory_limit() {
///     println!("{} bytes from {:?}", l.bytes, l.source);
/// }
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CgroupSource {
    /// cgroup v2 `memory.max`.
    Max,
    /// cgroup v2 `memory.high`.
    High,
    /// cgroup v1 `memory.limit_in_bytes`.
    V1Limit,
}

/// A cgroup memory limit, as [`cgroup_memory_limit`] found it.
///
/// ```
/// match osmem_heap::cgroup_memory_limit() {
///     Some(l) => assert!(l.bytes > 0),
///     None => println!("no memory limit in this process's cgroups"),
/// }
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CgroupLimit {
    /// The limit in bytes.
    pub bytes: usize,
    /// The file it came from.
    pub source: CgroupSource,
}

const PATH_MAX: usize = 512;

/// The process's cgroup memory limit, if it has one: the smallest of cgroup v2's
/// `memory.max` and `memory.high` of the process's cgroup and its ancestors (under
/// `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts), or cgroup v1's
/// `memory.limit_in_bytes` of the memory controller's cgroups. `max` and v1's "unlimited"
/// mean no limit. Read with fixed buffers: nothing is allocated.
///
/// ```
/// match osmem_heap::cgroup_memory_limit() {
///     Some(l) => println!("limited to {} bytes by {:?}", l.bytes, l.source),
///     None => println!("no cgroup memory limit"),
/// }
/// ```
pub fn cgroup_memory_limit() -> Option<CgroupLimit> {
    let mut buf = [0u8; 4096];
    let n = read(b"/proc/self/cgroup\0", &mut buf)?;
    let text = &buf[..n];
    let mut best: Option<CgroupLimit> = None;
    let mut consider = |bytes: Option<usize>, source| {
        if let Some(bytes) = bytes {
            if best.map_or(true, |b| bytes < b.bytes) {
                best = Some(CgroupLimit { bytes, source });
            }
        }
    };
    for line in text.split(|&b| b == b'\n') {
        // "hierarchy-id:controllers:path"
        let mut parts = line.splitn(3, |&b| b == b':');
        let (Some(id), Some(ctl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == b"0" && ctl.is_empty() {
            for root in [&b"/sys/fs/cgroup"[..], &b"/sys/fs/cgroup/unified"[..]] {
                each_ancestor(path, |p| {
                    consider(value(root, p, b"memory.max"), CgroupSource::Max);
                    consider(value(root, p, b"memory.high"), CgroupSource::High);
                });
            }
        } else if ctl.split(|&b| b == b',').any(|c| c == b"memory") {
            each_ancestor(path, |p| {
                consider(
                    value(b"/sys/fs/cgroup/memory", p, b"memory.limit_in_bytes"),
                    CgroupSource::V1Limit,
                )
            });
        }
    }
    best
}

/// `path` ("/a/b/c") and each ancestor ("/a/b", "/a", ""), deepest first.
fn each_ancestor(path: &[u8], mut f: impl FnMut(&[u8])) {
    let mut p = path;
    while p.last() == Some(&b'/') {
        p = &p[..p.len() - 1];
    }
    loop {
        f(p);
        match p.iter().rposition(|&b| b == b'/') {
            Some(i) => p = &p[..i],
            None => break,
        }
        if p.is_empty() {
            f(p);
            break;
        }
    }
}

/// The number in `root` + `path` + "/" + `file`, or None (absent, unreadable, "max",
/// unlimited).
fn value(root: &[u8], path: &[u8], file: &[u8]) -> Option<usize> {
    let mut name = [0u8; PATH_MAX];
    let len = root.len() + path.len() + 1 + file.len();
    if len + 1 > PATH_MAX {
        return None;
    }
    name[..root.len()].copy_from_slice(root);
    name[root.len()..root.len() + path.len()].copy_from_slice(path);
    name[root.len() + path.len()] = b'/';
    name[root.len() + path.len() + 1..len].copy_from_slice(file);
    let mut buf = [0u8; 64];
    let n = read(&name[..len + 1], &mut buf)?;
    let mut v: u64 = 0;
    let mut any = false;
    for &b in &buf[..n] {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
        any = true;
    }
    (any && v < 1 << 62).then_some(v as usize)
}

/// Read a NUL-terminated path into `buf`; the bytes read.
fn read(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    // SAFETY: `path` is NUL-terminated; the buffer's bounds are passed to read.
    unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut n = 0;
        while n < buf.len() {
            let r = libc::read(fd, buf[n..].as_mut_ptr().cast(), buf.len() - n);
            if r <= 0 {
                break;
            }
            n += r as usize;
        }
        libc::close(fd);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    #[test]
    fn ancestors_deepest_first() {
        let mut seen: Vec<String> = Vec::new();
        each_ancestor(b"/a/b/c/", |p| {
            seen.push(String::from_utf8(p.to_vec()).unwrap())
        });
        assert_eq!(seen, ["/a/b/c", "/a/b", "/a", ""]);
        seen.clear();
        each_ancestor(b"/", |p| seen.push(String::from_utf8(p.to_vec()).unwrap()));
        assert_eq!(seen, [""]);
    }

    #[test]
    fn values_are_parsed_and_unlimited_is_none() {
        let dir = std::env::temp_dir().join(std::format!("osmem-heap-cg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/memory.max"), "1048576\n").unwrap();
        std::fs::write(dir.join("a/memory.high"), "max\n").unwrap();
        std::fs::write(dir.join("a/memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let root = dir.to_str().unwrap().as_bytes();
        assert_eq!(value(root, b"/a", b"memory.max"), Some(1 << 20));
        assert_eq!(value(root, b"/a", b"memory.high"), None);
        assert_eq!(value(root, b"/a", b"memory.limit_in_bytes"), None);
        assert_eq!(value(root, b"/a", b"absent"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
