//! A panicking closure in a child. Kept out of `kernel_view.rs`, whose
//! allocator forbids allocating in children: the panic machinery allocates.

use osmem_testkit::{in_child, in_child_report, ChildExit, CHILD_PANIC_EXIT};

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
