//! Residency queries: osmem's query with each method next to the raw method it uses (the
//! system call plus the minimal loop that turns its output into runs), and the methods next
//! to each other, on the same ranges in the same rounds.
//!
//! Cases: a 1 GiB region with 1%, 50% and 100% of its pages resident (chosen at random with
//! a fixed seed, so runs are short where it matters), and 100 000 resident pages scattered
//! over a 64 GiB region. Each round runs every (method, flavour) once, in an order that
//! rotates from round to round; a ratio is the median over rounds of the per-round ratio.
//!
//! The raw flavours issue exactly the calls osmem issues for that method (the PAGEMAP_SCAN
//! ioctl with the same 32 regions per call, pagemap reads of 512 entries, mincore of 4096
//! pages, one descriptor opened beforehand) and build the same runs into a caller's vector,
//! so the ratio is what osmem's bookkeeping around them costs.

use crate::median_f64;
use osmem::{PageRun, Reservation, ResidencyMethod};
use std::time::Instant;

/// One case's region and what it holds.
struct Case {
    name: String,
    region: Reservation,
    resident: usize,
}

/// What one (case, method) pair measured.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ResidencyCost {
    /// The case (`1 GiB, 50% resident`, …).
    pub case: String,
    /// The method (`pagemap-scan`, `pagemap`, `mincore`).
    pub method: &'static str,
    /// Pages resident in the case.
    pub resident_pages: usize,
    /// Runs the query returned (the same for osmem and raw, checked).
    pub runs: usize,
    /// Rounds measured.
    pub rounds: usize,
    /// osmem's query, median µs.
    pub osmem_us: f64,
    /// The raw method, median µs.
    pub raw_us: f64,
    /// Median over rounds of osmem / raw.
    pub osmem_over_raw: f64,
    /// Median over rounds of this method's osmem time / the fastest method's in the round.
    pub over_fastest: f64,
}

/// The sizes of a residency run.
#[derive(Copy, Clone, Debug)]
pub struct ResidencyPlan {
    /// The region of the 1%, 50% and 100% cases, bytes.
    pub dense: usize,
    /// The region of the scattered case, bytes.
    pub sparse: usize,
    /// Resident pages scattered over it.
    pub scattered: usize,
    /// Rounds per case.
    pub rounds: usize,
}

impl ResidencyPlan {
    /// The issue's cases: 1 GiB at 1%, 50%, 100%; 100 000 pages in 64 GiB; 15 rounds.
    pub const FULL: ResidencyPlan = ResidencyPlan {
        dense: 1 << 30,
        sparse: 64 << 30,
        scattered: 100_000,
        rounds: 15,
    };
    /// The same cases, 3 rounds.
    pub const QUICK: ResidencyPlan = ResidencyPlan {
        rounds: 3,
        ..ResidencyPlan::FULL
    };
}

/// Every case of `plan`, every method that works here.
///
/// ```
/// let plan = osmem_bench::ResidencyPlan { dense: 8 << 20, sparse: 64 << 20, scattered: 100, rounds: 2 };
/// for c in osmem_bench::residency_costs(plan) {
///     assert!(c.runs >= 1);
///     println!("{} {}: {:.2}× raw", c.case, c.method, c.osmem_over_raw);
/// }
/// ```
pub fn residency_costs(plan: ResidencyPlan) -> Vec<ResidencyCost> {
    let ps = osmem::page_size();
    let methods: Vec<ResidencyMethod> = ResidencyMethod::ALL
        .into_iter()
        .filter(|&m| {
            let p = osmem::probe().residency;
            match m {
                ResidencyMethod::PagemapScan => p.pagemap_scan,
                ResidencyMethod::Pagemap => p.pagemap,
                ResidencyMethod::Mincore => p.mincore,
                // A method this benchmark has no raw counterpart for is not measured.
                _ => false,
            }
        })
        .collect();
    let mut out = Vec::new();
    let (d, s) = (size_name(plan.dense), size_name(plan.sparse));
    let cases = [
        (format!("{d}, 1% resident"), plan.dense, 0.01, 0),
        (format!("{d}, 50% resident"), plan.dense, 0.5, 0),
        (format!("{d}, 100% resident"), plan.dense, 1.0, 0),
        (
            format!("{s}, {} scattered pages", plan.scattered),
            plan.sparse,
            0.0,
            plan.scattered,
        ),
    ];
    for (name, len, share, scattered) in cases {
        let case = make_case(name, len, share, scattered, ps);
        out.extend(measure(&case, &methods, plan.rounds.max(1), ps));
    }
    out
}

fn size_name(b: usize) -> String {
    if b >= 1 << 30 {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

fn make_case(name: String, len: usize, share: f64, scattered: usize, ps: usize) -> Case {
    let region = Reservation::reserve_aligned(len, 2 << 20)
        .and_then(|r| r.map(0, len).and(r.used(0, len)).map(|()| r))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    // THP off, so "resident" means the pages chosen, not the huge pages around them.
    let _ = region.nohugepage(0, len);
    let base = region.as_ptr();
    let pages = len / ps;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut resident = 0;
    let touch = |page: usize| {
        // SAFETY: inside the Ready region.
        unsafe { base.add(page * ps).write_volatile(1) };
    };
    if scattered > 0 {
        let mut seen = std::collections::HashSet::new();
        while seen.len() < scattered {
            let p = (next() % pages as u64) as usize;
            if seen.insert(p) {
                touch(p);
            }
        }
        resident = seen.len();
    } else {
        let cut = (share * u64::MAX as f64) as u64;
        for p in 0..pages {
            if share >= 1.0 || next() < cut {
                touch(p);
                resident += 1;
            }
        }
    }
    Case {
        name,
        region,
        resident,
    }
}

fn measure(
    case: &Case,
    methods: &[ResidencyMethod],
    rounds: usize,
    ps: usize,
) -> Vec<ResidencyCost> {
    let r = &case.region;
    let len = r.len();
    // Runs alternate at most: two per resident page, and one more.
    let cap = 2 * case.resident + 2;
    let mut buf = vec![PageRun::EMPTY; cap];
    let mut raw_buf: Vec<(usize, usize, u8)> = Vec::with_capacity(cap);
    let fd = raw::open();
    let n = methods.len();
    // [method][flavour 0 = osmem, 1 = raw] per round.
    let mut t = vec![[Vec::with_capacity(rounds), Vec::with_capacity(rounds)]; n];
    // What every query must return: osmem's first answer per method, checked against the
    // raw one before anything is timed.
    let runs: Vec<usize> = methods
        .iter()
        .map(|&m| {
            let q = r.residency_with(m, 0, len, &mut buf).expect("a query");
            raw_buf.clear();
            raw::query(m, fd, r.as_ptr() as usize, len, ps, &mut raw_buf);
            assert_eq!(
                q.runs,
                raw_buf.len(),
                "{} {m:?}: osmem and raw runs",
                case.name
            );
            q.runs
        })
        .collect();
    for round in 0..rounds {
        for k in 0..2 * n {
            let slot = (k + round) % (2 * n);
            let (mi, flavour) = (slot / 2, (slot + round) % 2);
            let m = methods[mi];
            let start = Instant::now();
            let got = if flavour == 0 {
                let q = r
                    .residency_with(m, 0, len, &mut buf)
                    .unwrap_or_else(|e| panic!("{} {m:?}: {e}", case.name));
                assert_eq!(q.end, len, "{}: the buffer holds every run", case.name);
                q.runs
            } else {
                raw_buf.clear();
                raw::query(m, fd, r.as_ptr() as usize, len, ps, &mut raw_buf);
                raw_buf.len()
            };
            t[mi][flavour].push(start.elapsed().as_nanos() as f64);
            assert_eq!(got, runs[mi], "{} {m:?}", case.name);
        }
    }
    // SAFETY: the descriptor opened above.
    unsafe { libc::close(fd) };
    let fastest: Vec<f64> = (0..rounds)
        .map(|k| (0..n).map(|m| t[m][0][k]).fold(f64::INFINITY, f64::min))
        .collect();
    (0..n)
        .map(|mi| {
            let mut ratio: Vec<f64> = (0..rounds).map(|k| t[mi][0][k] / t[mi][1][k]).collect();
            let mut rel: Vec<f64> = (0..rounds).map(|k| t[mi][0][k] / fastest[k]).collect();
            let mut o = t[mi][0].clone();
            let mut w = t[mi][1].clone();
            ResidencyCost {
                case: case.name.clone(),
                method: methods[mi].name(),
                resident_pages: case.resident,
                runs: runs[mi],
                rounds,
                osmem_us: median_f64(&mut o) / 1e3,
                raw_us: median_f64(&mut w) / 1e3,
                osmem_over_raw: median_f64(&mut ratio),
                over_fastest: median_f64(&mut rel),
            }
        })
        .collect()
}

/// The raw methods: the same system calls osmem makes, building `(start, len, category)`
/// runs the way any caller would.
mod raw {
    use osmem::ResidencyMethod;

    const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
    const PRESENT: u64 = 1 << 3;
    const SWAPPED: u64 = 1 << 4;
    const PFNZERO: u64 = 1 << 5;
    const GUARD: u64 = 1 << 8;

    pub(super) fn open() -> i32 {
        // SAFETY: a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c"/proc/self/pagemap".as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        fd.max(-1)
    }

    fn push(out: &mut Vec<(usize, usize, u8)>, start: usize, end: usize, cat: u8) {
        if let Some(last) = out.last_mut() {
            if last.2 == cat && last.0 + last.1 == start {
                last.1 += end - start;
                return;
            }
        }
        out.push((start, end - start, cat));
    }

    /// Runs of `[base, base + len)` by method `m` into `out` (gaps as category 0).
    pub(super) fn query(
        m: ResidencyMethod,
        fd: i32,
        base: usize,
        len: usize,
        ps: usize,
        out: &mut Vec<(usize, usize, u8)>,
    ) {
        let end = base + len;
        match m {
            ResidencyMethod::PagemapScan => {
                let guard = osmem::probe().residency.scan_guard;
                let mask = PRESENT | SWAPPED | PFNZERO | if guard { GUARD } else { 0 };
                let mut vec = [[0u64; 3]; 32];
                let (mut start, mut at) = (base, base);
                while start < end {
                    let mut arg: [u64; 12] = [
                        96,
                        0,
                        start as u64,
                        end as u64,
                        0,
                        vec.as_mut_ptr() as u64,
                        vec.len() as u64,
                        0,
                        0,
                        0,
                        mask,
                        mask,
                    ];
                    // SAFETY: `vec` holds `vec_len` regions.
                    let n = unsafe { libc::ioctl(fd, PAGEMAP_SCAN, arg.as_mut_ptr()) };
                    assert!(n >= 0, "PAGEMAP_SCAN: {}", std::io::Error::last_os_error());
                    for r in &vec[..n as usize] {
                        let (s, e) = (r[0] as usize, r[1] as usize);
                        if s > at {
                            push(out, at, s, 0);
                        }
                        let cat = match r[2] {
                            c if c & GUARD != 0 => 4,
                            c if c & SWAPPED != 0 => 3,
                            c if c & PFNZERO != 0 => 2,
                            _ => 1,
                        };
                        push(out, s, e, cat);
                        at = e;
                    }
                    if arg[4] as usize <= start {
                        break;
                    }
                    start = arg[4] as usize;
                }
                if at < end {
                    push(out, at, end, 0);
                }
            }
            ResidencyMethod::Pagemap => {
                let p = osmem::probe().residency;
                let pfn_visible = p.pagemap_pfn;
                let zero_pfn = if pfn_visible { p.zero_pfn } else { u64::MAX };
                let mut buf = [0u64; 512];
                let mut a = base;
                while a < end {
                    let want = ((end - a) / ps).min(buf.len());
                    // SAFETY: the buffer's bounds are passed to pread.
                    let r = unsafe {
                        libc::pread(
                            fd,
                            buf.as_mut_ptr().cast(),
                            want * 8,
                            ((a / ps) * 8) as libc::off_t,
                        )
                    };
                    assert!(r > 0, "pread: {}", std::io::Error::last_os_error());
                    let got = r as usize / 8;
                    // Flags (present, swapped, guard) and, in present runs where frame
                    // numbers are visible, the zero page: the categories osmem reports.
                    const FLAGS: u64 = 1 << 63 | 1 << 62 | 1 << 58;
                    const PFN: u64 = (1 << 55) - 1;
                    let mut i = 0;
                    while i < got {
                        let (e0, rest) = (buf[i], &buf[i + 1..got]);
                        let (f, z) = (e0 & FLAGS, e0 & PFN == zero_pfn);
                        let n = if f >> 63 != 0 && pfn_visible {
                            rest.iter()
                                .position(|&e| e & FLAGS != f || (e & PFN == zero_pfn) != z)
                        } else {
                            rest.iter().position(|&e| e & FLAGS != f)
                        };
                        let j = n.map_or(got, |k| i + 1 + k);
                        push(out, a + i * ps, a + j * ps, (f >> 56) as u8 | z as u8);
                        i = j;
                    }
                    a += got * ps;
                }
            }
            ResidencyMethod::Mincore => {
                let mut vec = [0u8; 4096];
                let mut a = base;
                while a < end {
                    let chunk = (end - a).min(vec.len() * ps);
                    // SAFETY: `vec` has a byte for each page of the chunk.
                    let r =
                        unsafe { libc::mincore(a as *mut libc::c_void, chunk, vec.as_mut_ptr()) };
                    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
                    let v = &vec[..chunk / ps];
                    let mut i = 0;
                    while i < v.len() {
                        let bit = v[i] & 1;
                        let j = v[i + 1..]
                            .iter()
                            .position(|&x| x & 1 != bit)
                            .map_or(v.len(), |k| i + 1 + k);
                        push(out, a + i * ps, a + j * ps, bit);
                        i = j;
                    }
                    a += chunk;
                }
            }
            other => unreachable!("residency_costs measures only the methods above, not {other:?}"),
        }
    }
}
