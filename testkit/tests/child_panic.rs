//! A panicking closure in a child, and what a dying child says on stderr. Kept out of
//! `kernel_view.rs`, whose allocator forbids allocating in children: the panic machinery
//! allocates.

use osmem_testkit::{in_child, in_child_report, ChildExit, CHILD_PANIC_EXIT};

/// Run `f` in a child whose fd 2 is a pipe; how it ended and what it wrote there.
fn stderr_of(f: impl FnOnce() -> i32) -> (ChildExit, String) {
    let mut fds = [0; 2];
    // SAFETY: a valid two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let exit = in_child(|| {
        // SAFETY: our own descriptors, in the child.
        unsafe {
            libc::close(fds[0]);
            libc::dup2(fds[1], 2);
        }
        f()
    });
    // SAFETY: the parent's write end, ours to close; then read what the child wrote (it
    // has exited, so the pipe holds everything; other tests' children may hold copies of
    // the write end, so read what is there rather than waiting for EOF).
    unsafe { libc::close(fds[1]) };
    let mut buf = [0u8; 4096];
    // SAFETY: non-blocking read into a live buffer.
    unsafe { libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK) };
    let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
    unsafe { libc::close(fds[0]) };
    (
        exit,
        String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned(),
    )
}

#[test]
fn a_child_panic_is_said_on_stderr() {
    let (exit, err) = stderr_of(|| {
        if std::hint::black_box(true) {
            panic!("the message {}", 42);
        }
        0
    });
    assert_eq!(exit, ChildExit::Code(CHILD_PANIC_EXIT));
    assert!(
        err.contains("testkit child")
            && err.contains("child_panic.rs:")
            && err.contains(": the message 42"),
        "stderr: {err:?}"
    );
}

#[test]
fn a_child_killed_by_a_fault_says_where_and_still_dies_of_it() {
    let (exit, err) = stderr_of(|| {
        // SAFETY: none: the write faults, which is the point.
        unsafe { core::ptr::write_volatile(std::hint::black_box(8usize) as *mut u8, 1) };
        0
    });
    assert_eq!(exit, ChildExit::Signal(libc::SIGSEGV));
    assert!(
        err.contains(": signal 11 code 1 addr 0x8 ip 0x"),
        "stderr: {err:?}"
    );
    let (exit, err) = stderr_of(|| {
        // SAFETY: abort ends the child.
        unsafe { libc::abort() }
    });
    assert_eq!(exit, ChildExit::Signal(libc::SIGABRT));
    assert!(err.contains(": signal 6 "), "stderr: {err:?}");
}

#[test]
fn panic_in_child_exits_with_panic_code() {
    let exit = in_child(|| {
        if std::hint::black_box(true) {
            panic!("deliberate panic in a forked child");
        }
        0
    });
    assert_eq!(exit, ChildExit::Code(CHILD_PANIC_EXIT));

    let (exit, r) = in_child_report(|r| {
        r.push(3);
        if std::hint::black_box(true) {
            panic!("deliberate panic in a forked child");
        }
        0
    });
    assert_eq!(exit, ChildExit::Code(CHILD_PANIC_EXIT));
    assert_eq!(r.as_slice(), &[3]);
}
