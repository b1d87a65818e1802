//! osmem's own metadata, in the kernel's view: the arena that holds the page-state maps is
//! `MADV_NOHUGEPAGE` (so a THP=always host cannot back sparse nodes with huge pages; read from
//! smaps `VmFlags`, since `THPeligible` alone cannot fail on a THP=madvise host), it never
//! shows up in a region's own smaps lines (even when a region sits right next to it), and its
//! resident memory follows the shape of use: it grows with scattered mixed pages and goes
//! back down once the reservation is uniform again. Each case runs in a re-executed process
//! (a role, see `common`), where no other test's reservations share the arena.

mod common;

use common::{play_role_if, spawn_role};
use osmem::Reservation;

/// `(start, end, rss_kb, vm_flags)` of every VMA overlapping `[lo, hi)`.
fn smaps_in(lo: usize, hi: usize) -> Vec<(usize, usize, u64, String)> {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut out: Vec<(usize, usize, u64, String)> = Vec::new();
    let mut cur: Option<(usize, usize, u64, String)> = None;
    for line in text.lines() {
        let head = line.split(' ').next().unwrap_or("");
        if let Some((a, b)) = head.split_once('-') {
            if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                if let Some(c) = cur.take() {
                    out.push(c);
                }
                if a < hi && b > lo {
                    cur = Some((a, b, 0, String::new()));
                }
                continue;
            }
        }
        if let Some(c) = cur.as_mut() {
            if let Some(v) = line.strip_prefix("Rss:") {
                c.2 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            }
            if let Some(v) = line.strip_prefix("VmFlags:") {
                c.3 = v.trim().to_string();
            }
        }
    }
    out.extend(cur);
    out
}

fn arena_rss_kb() -> u64 {
    let m = osmem::metadata_range().unwrap();
    smaps_in(m.start, m.end).iter().map(|v| v.2).sum()
}

/// A reservation with scattered single faulted pages holds nodes; the arena is `nh`; a region
/// placed right against either end of the arena keeps its own VMA.
#[test]
fn the_arena_is_nohugepage_and_never_merges_with_a_region() {
    play_role_if("arena_flags", &[], || {
        let ps = osmem::page_size();
        let r = Reservation::reserve(1 << 30).unwrap();
        r.map(0, 1 << 30).unwrap();
        r.used(0, 1 << 30).unwrap();
        for i in 0..64 {
            // Pages far apart: each needs its own nodes.
            let _ = unsafe { r.fault(i * (1 << 24) + 3 * ps, ps) }.unwrap();
        }
        let held = osmem::stats().metadata_bytes;
        let m = osmem::metadata_range().unwrap();
        let arena = smaps_in(m.start, m.end);
        let all_nh = !arena.is_empty()
            && arena
                .iter()
                .all(|v| v.3.split_whitespace().any(|f| f == "nh"));
        let rss = arena_rss_kb();
        // Regions against both ends of the arena, made RW: their VMAs stay their own.
        let len = 16 * ps;
        let below = Reservation::reserve_fixed(m.start - len, len);
        let above = Reservation::reserve_fixed(m.end, len);
        let mut separate = 0;
        for x in [&below, &above].into_iter().flatten() {
            x.map(0, len).unwrap();
            x.used(0, len).unwrap();
            unsafe { core::ptr::write_bytes(x.as_ptr(), 1, len) };
            let a = x.as_ptr() as usize;
            let own = smaps_in(a, a + len);
            if own.iter().all(|v| v.1 <= m.start || v.0 >= m.end) {
                separate += 1;
            }
        }
        let placed = [&below, &above].iter().filter(|x| x.is_ok()).count();
        format!(
            "held={held} arena_vmas={} all_nh={all_nh} rss_kb={rss} placed={placed} \
             separate={separate}",
            arena.len()
        )
    });
    let kv = spawn_role(
        "the_arena_is_nohugepage_and_never_merges_with_a_region",
        "arena_flags",
    );
    assert_ne!(kv["held"], "0", "the scattered faults needed nodes: {kv:?}");
    assert_eq!(kv["all_nh"], "true", "{kv:?}");
    assert_ne!(kv["rss_kb"], "0", "{kv:?}");
    // At least one side of the arena must have been free to test adjacency.
    assert_ne!(kv["placed"], "0", "{kv:?}");
    assert_eq!(kv["separate"], kv["placed"], "{kv:?}");
}

/// Scattered mixed pages grow the arena's resident memory by about one node each; once the
/// reservation is uniform again (every page mapped back), it is back under 64 KiB, at once.
#[test]
fn metadata_follows_the_shape_and_returns_when_uniform() {
    play_role_if("arena_shape", &[], || {
        let ps = osmem::page_size();
        let len = 64usize << 30;
        let r = Reservation::reserve(len).unwrap();
        r.map(0, len).unwrap();
        r.used(0, len).unwrap();
        let rss0 = arena_rss_kb();
        // Pages chosen at random (a fixed xorshift sequence): isolated mixed pages.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut pages: Vec<usize> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % (len / ps) as u64) as usize
            })
            .collect();
        pages.sort_unstable();
        pages.dedup();
        let n = pages.len();
        for &p in &pages {
            let _ = unsafe { r.fault(p * ps, ps) }.unwrap();
        }
        let rss1 = arena_rss_kb();
        for &p in &pages {
            r.map(p * ps, ps).unwrap();
            r.used(p * ps, ps).unwrap();
        }
        let rss2 = arena_rss_kb();
        let held = osmem::stats().metadata_bytes;
        let releases = osmem::stats().metadata_releases;
        format!("n={n} rss0={rss0} rss1={rss1} rss2={rss2} held={held} releases={releases}")
    });
    let kv = spawn_role(
        "metadata_follows_the_shape_and_returns_when_uniform",
        "arena_shape",
    );
    let get = |k: &str| kv[k].parse::<u64>().unwrap();
    let n = get("n");
    let grown = (get("rss1") - get("rss0")) * 1024;
    assert!(
        grown > 64 * 1024,
        "mixed pages hold nodes (more than 64 KiB here): {kv:?}"
    );
    assert!(grown <= 64 * n, "≤ 64 bytes per isolated page: {kv:?}");
    assert!(get("rss2") <= 64, "back under 64 KiB once uniform: {kv:?}");
    assert_eq!(
        get("held"),
        0,
        "a uniform reservation holds no metadata: {kv:?}"
    );
    assert!(get("releases") >= 1, "{kv:?}");
}

/// A pool of 200 slots, each grown in two steps (so its map is mixed for a while): once every
/// slot is uniform again, the reservations hold no metadata and the arena's resident memory
/// is back to what it was but for the few free chunks it keeps for reuse (8 × 4 KiB).
#[test]
fn a_pool_of_slots_uniform_again_holds_no_metadata() {
    play_role_if("slot_pool", &[], || {
        let ps = osmem::page_size();
        let slot = 64 * ps;
        let pool: Vec<Reservation> = (0..200)
            .map(|_| Reservation::reserve(slot).unwrap())
            .collect();
        let held0 = osmem::stats().metadata_bytes;
        let rss0 = arena_rss_kb();
        // First step: two quarters of each slot (mixed: Ready, Reserved, Ready, Reserved, more
        // runs than one map entry holds).
        for r in &pool {
            for q in [0, slot / 2] {
                r.map(q, slot / 4).unwrap();
                r.used(q, slot / 4).unwrap();
            }
        }
        let held1 = osmem::stats().metadata_bytes;
        // Second step: the rest (uniform again: all Ready).
        for r in &pool {
            for q in [slot / 4, 3 * slot / 4] {
                r.map(q, slot / 4).unwrap();
                r.used(q, slot / 4).unwrap();
            }
        }
        let held2 = osmem::stats().metadata_bytes;
        let rss2 = arena_rss_kb();
        let uniform = pool.iter().all(|r| r.state(0) == Some(osmem::State::Ready));
        format!(
            "held0={held0} held1={held1} held2={held2} rss0={rss0} rss2={rss2} uniform={uniform}"
        )
    });
    let kv = spawn_role(
        "a_pool_of_slots_uniform_again_holds_no_metadata",
        "slot_pool",
    );
    let get = |k: &str| kv[k].parse::<u64>().unwrap_or(u64::MAX);
    assert_eq!(kv["uniform"], "true", "{kv:?}");
    assert!(
        get("held1") > get("held0"),
        "mixed slots hold nodes: {kv:?}"
    );
    assert_eq!(
        get("held2"),
        get("held0"),
        "uniform again: nothing held: {kv:?}"
    );
    let kept = 8 * osmem::page_size() as u64 / 1024;
    assert!(
        get("rss2") <= get("rss0") + kept,
        "the arena keeps at most 8 free chunks resident: {kv:?}"
    );
}
