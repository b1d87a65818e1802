//! What the kernel says, for the examples (shared by `gc_arena` and `wasm_memory`): a forked
//! child that writes one byte and how it ended, the `/proc/self/maps` lines and the smaps
//! `Rss` of a range. Plain `std` and `libc`, as a user's own program would have them.
#![allow(dead_code)] // each example uses its part

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Ending {
    /// `_exit` with this status.
    Exit(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Ending::Exit(c) => write!(f, "exited with status {c}"),
            Ending::Signal(libc::SIGSEGV) => write!(f, "killed by SIGSEGV"),
            Ending::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Fork a child that writes one byte at `addr` and exits 0, and say how it ended. The write
/// lands in the child's copy of the memory; the parent's is untouched. The child makes only
/// system calls and that one store: a forked copy of a process must not allocate or lock.
pub fn child_write(addr: usize) -> Ending {
    // SAFETY: the child runs only the async-signal-safe code below and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain system calls on the child's own state, then the access under test.
        unsafe {
            // The crash is expected: no core dump, and the kernel's default action for
            // SIGSEGV rather than the handler Rust's runtime installs for stack overflows.
            libc::prctl(libc::PR_SET_DUMPABLE, 0);
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::alarm(10); // a child that hangs dies of SIGALRM instead
            (addr as *mut u8).write_volatile(0x5A);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "waitpid: {e}");
    }
    if libc::WIFSIGNALED(status) {
        Ending::Signal(libc::WTERMSIG(status))
    } else {
        Ending::Exit(libc::WEXITSTATUS(status))
    }
}

/// The lines of `/proc/self/maps` for mappings that overlap `[start, end)`.
pub fn vmas(start: usize, end: usize) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    maps.lines()
        .filter(|l| range_of(l).is_some_and(|(a, b)| a < end && b > start))
        .map(str::to_owned)
        .collect()
}

/// The permissions column of a maps line (`rw-p`, `---p`).
pub fn perms(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or("")
}

/// The `Rss` of the mappings that overlap `[start, end)`, from `/proc/self/smaps`, in bytes.
pub fn smaps_rss(start: usize, end: usize) -> usize {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut inside = false;
    let mut rss = 0;
    for line in smaps.lines() {
        if let Some((a, b)) = range_of(line) {
            inside = a < end && b > start;
        } else if let Some(kb) = line.strip_prefix("Rss:").filter(|_| inside) {
            let kb = kb.trim().trim_end_matches("kB").trim();
            rss += kb.parse::<usize>().expect("an Rss figure") << 10;
        }
    }
    rss
}

/// The address range of a mapping's header line in maps/smaps (`start-end perms ...`).
pub fn range_of(line: &str) -> Option<(usize, usize)> {
    let (a, b) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        usize::from_str_radix(a, 16).ok()?,
        usize::from_str_radix(b, 16).ok()?,
    ))
}
