//! Mapping names are best effort and turned off for good on the first refusal. A region is
//! named at its first `map` (or at `alloc`), never at `reserve`, so reserve + drop stays one
//! mmap and one munmap. This binary holds one test so that no other test creates
//! reservations first: the first map of the process is the one that meets the kernel's answer.

use osmem::Reservation;

#[test]
fn names_are_set_at_the_first_map_or_turned_off_for_good_on_einval() {
    let probe = osmem::probe();
    let s0 = osmem::stats();
    assert_eq!(
        s0.downgrade_anon_name, 0,
        "nothing may have tried naming yet"
    );
    let ps = osmem::page_size();
    let r = Reservation::reserve(4 * ps).unwrap();
    let s1 = osmem::stats();
    assert_eq!(s1.prctl_calls, s0.prctl_calls, "reserve names nothing");
    r.map(0, ps).unwrap();
    let s2 = osmem::stats();
    let line = osmem_testkit::vma_at(r.as_ptr() as usize + ps).expect("mapped");
    if probe.anon_name {
        // The region is named (all of it, so no VMA is split); the kernel shows it in maps.
        assert_eq!(s2.prctl_calls - s1.prctl_calls, 1);
        assert_eq!(s2.downgrade_anon_name, 0);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let start = format!("{:x}-", line.start);
        let l = maps.lines().find(|l| l.starts_with(&start)).unwrap();
        assert!(l.ends_with("[anon:osmem]"), "{l}");
        r.map(ps, ps).unwrap();
        assert_eq!(osmem::stats().prctl_calls, s2.prctl_calls, "named once");
    } else {
        // This machine's kernel lacks CONFIG_ANON_VMA_NAME: one prctl, EINVAL, downgraded
        // once; nothing is named again.
        assert_eq!(s2.prctl_calls - s1.prctl_calls, 1);
        assert_eq!(s2.prctl_errors - s1.prctl_errors, 1);
        assert_eq!(s2.downgrade_anon_name, 1);
        let _r2 = Reservation::alloc(ps).unwrap();
        let s3 = osmem::stats();
        assert_eq!(s3.prctl_calls, s2.prctl_calls, "turned off for good");
        assert_eq!(s3.downgrade_anon_name, 1, "counted once");
    }
    // Naming or not, the reservation itself is what it should be.
    assert_eq!(line.perms_str(), "---p");
}
