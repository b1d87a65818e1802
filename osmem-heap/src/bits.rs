//! One chunk's bitmaps (512 pages: 8 words of 64 bits, bit `i` = page `i`) and the summary
//! of its free pages, as Go's `pallocBits` and `pallocSum`.

/// Pages per chunk (Go's `pallocChunkPages`).
pub(crate) const CHUNK_PAGES: usize = 512;
/// Words per chunk bitmap.
pub(crate) const WORDS: usize = CHUNK_PAGES / 64;

/// A chunk's bitmaps: `alloc` (1 = in use) and `scav` (1 = released to the OS, or never
/// touched since the heap grew: known to read zero).
#[repr(C)]
#[derive(Copy, Clone)]
pub(crate) struct ChunkBits {
    pub(crate) alloc: [u64; WORDS],
    pub(crate) scav: [u64; WORDS],
    /// Free pages hidden (their `alloc` bits set) while the kernel releases them: not
    /// allocated, so `free` must refuse them.
    pub(crate) hide: [u64; WORDS],
    /// Pages in use (allocated; not counting runs hidden while the kernel releases them).
    pub(crate) in_use: u32,
    /// `in_use` when the last generation (GC cycle) ended, and the generation `in_use` is of
    /// (Go's `scavChunkData`): the density gate's history.
    pub(crate) last_in_use: u32,
    pub(crate) gen: u32,
}

/// Go's `scavChunkHiOccFrac` (96.875%) of a chunk: at least this many pages in use makes a
/// chunk dense, and the scavenger leaves it alone unless forced.
pub(crate) const HI_OCC_PAGES: u32 = (CHUNK_PAGES as u32) * 31 / 32;

impl ChunkBits {
    /// `n` pages of this chunk were allocated (`add`) or freed, in generation `gen`.
    pub(crate) fn note_use(&mut self, n: usize, add: bool, gen: u32) {
        if self.gen != gen {
            self.last_in_use = self.in_use;
            self.gen = gen;
        }
        if add {
            self.in_use += n as u32;
        } else {
            self.in_use -= n as u32;
        }
    }

    /// Go's `shouldScavenge` density rule: a chunk dense in this generation or the last one is
    /// skipped; a chunk untouched since an older generation is judged by its present.
    pub(crate) fn dense_go(&self, gen: u32) -> bool {
        if self.gen == gen {
            self.in_use >= HI_OCC_PAGES || self.last_in_use >= HI_OCC_PAGES
        } else {
            self.in_use >= HI_OCC_PAGES
        }
    }
}

/// The free pages of a node of the summary tree (a chunk, or a group of chunks): how many at
/// its start, the longest run anywhere, how many at its end (Go's `pallocSum`). A node that is
/// entirely free has `start == max == end == size`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Sum {
    pub(crate) start: u32,
    pub(crate) max: u32,
    pub(crate) end: u32,
}

impl Sum {
    /// The summary of children in order, each of `size` pages.
    pub(crate) fn combine(children: &[Sum], size: u32) -> Sum {
        let mut out = Sum::default();
        let mut run = 0u32; // free pages ending at the current boundary
        let mut all_free = true;
        for c in children {
            if all_free {
                out.start += c.start;
                all_free = c.start == size;
            }
            if c.start == size {
                run += size;
                out.max = out.max.max(run);
            } else {
                out.max = out.max.max(run + c.start).max(c.max);
                run = c.end;
            }
        }
        out.end = run;
        out
    }
}

/// The bits of pages `[a, b)` of word `w` (0 ≤ a < b ≤ 64, positions within the chunk).
#[inline]
fn word_mask(w: usize, a: usize, b: usize) -> u64 {
    let lo = a.max(w * 64) - w * 64;
    let hi = b.min(w * 64 + 64) - w * 64;
    if lo >= hi {
        return 0;
    }
    (u64::MAX >> (64 - (hi - lo))) << lo
}

/// Apply `f(word, mask)` to every word overlapping pages `[a, b)` of the chunk.
#[inline]
pub(crate) fn each_word(a: usize, b: usize, mut f: impl FnMut(usize, u64)) {
    for w in a / 64..b.div_ceil(64) {
        let m = word_mask(w, a, b);
        if m != 0 {
            f(w, m);
        }
    }
}

/// Set bits `[a, b)`.
pub(crate) fn set(words: &mut [u64; WORDS], a: usize, b: usize) {
    each_word(a, b, |w, m| words[w] |= m);
}

/// Clear bits `[a, b)`.
pub(crate) fn clear(words: &mut [u64; WORDS], a: usize, b: usize) {
    each_word(a, b, |w, m| words[w] &= !m);
}

/// How many of bits `[a, b)` are set.
pub(crate) fn count(words: &[u64; WORDS], a: usize, b: usize) -> usize {
    let mut n = 0;
    each_word(a, b, |w, m| n += (words[w] & m).count_ones() as usize);
    n
}

/// Whether all bits `[a, b)` are set.
pub(crate) fn all_set(words: &[u64; WORDS], a: usize, b: usize) -> bool {
    let mut ok = true;
    each_word(a, b, |w, m| ok &= words[w] & m == m);
    ok
}

/// The summary of the free (clear) bits of `alloc`.
pub(crate) fn summarize(alloc: &[u64; WORDS]) -> Sum {
    let mut s = Sum::default();
    let mut run = 0u32;
    let mut all_free = true;
    for &w in alloc {
        if w == 0 {
            run += 64;
            if all_free {
                s.start += 64;
            }
            s.max = s.max.max(run);
            continue;
        }
        let lead = w.trailing_zeros(); // free pages at the word's start
        if all_free {
            s.start += lead;
            all_free = false;
        }
        s.max = s.max.max(run + lead);
        // Longest run of zeros strictly inside the word.
        s.max = s.max.max(longest_zero_run(w));
        run = w.leading_zeros(); // free pages at the word's end
    }
    s.end = run;
    s
}

/// The longest run of clear bits of `w` (nonzero).
fn longest_zero_run(w: u64) -> u32 {
    // Shrink the zero runs one bit per step: the steps until none is left is the longest.
    let mut z = !w;
    let mut n = 0;
    while z != 0 {
        z &= z >> 1;
        n += 1;
    }
    n
}

/// The first page of the chunk starting a run of `n` clear bits in `alloc` (1 ≤ n ≤ 512), if
/// any: the lowest address, as Go's `pallocBits.find`.
pub(crate) fn find(alloc: &[u64; WORDS], n: usize) -> Option<usize> {
    let mut run = 0usize; // clear bits ending at the current position
    for (wi, &w) in alloc.iter().enumerate() {
        let base = wi * 64;
        if w == 0 {
            run += 64;
            if run >= n {
                return Some(base + 64 - run);
            }
            continue;
        }
        let mut bit = 0u32;
        while bit < 64 {
            let rest = w >> bit;
            let zeros = if rest == 0 {
                64 - bit
            } else {
                rest.trailing_zeros()
            };
            run += zeros as usize;
            bit += zeros;
            if run >= n {
                return Some(base + bit as usize - run);
            }
            if bit >= 64 {
                break;
            }
            bit += (w >> bit).trailing_ones();
            run = 0;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// The crate docs and `Heap::create` quote the metadata per chunk: keep them true.
    #[test]
    fn metadata_per_chunk_is_220_bytes() {
        assert_eq!(
            core::mem::size_of::<ChunkBits>() + core::mem::size_of::<Sum>(),
            220
        );
    }

    fn rng(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    fn naive(bits: &[bool]) -> (Sum, Vec<Option<usize>>) {
        let n = bits.len();
        let start = bits.iter().take_while(|&&b| !b).count() as u32;
        let end = bits.iter().rev().take_while(|&&b| !b).count() as u32;
        let mut max = 0;
        let mut run = 0;
        for &b in bits {
            run = if b { 0 } else { run + 1 };
            max = max.max(run);
        }
        let finds = (1..=n)
            .map(|k| (0..=n - k).find(|&i| bits[i..i + k].iter().all(|&b| !b)))
            .collect();
        (Sum { start, max, end }, finds)
    }

    #[test]
    fn summaries_and_finds_agree_with_a_naive_scan() {
        let mut s = 7;
        for round in 0..300 {
            let mut words = [0u64; WORDS];
            let density = rng(&mut s) % 100;
            let mut bits = [false; CHUNK_PAGES];
            let mut p = 0;
            while p < CHUNK_PAGES {
                let len = 1 + (rng(&mut s) % if round % 3 == 0 { 200 } else { 9 }) as usize;
                let used = rng(&mut s) % 100 < density;
                bits[p..(p + len).min(CHUNK_PAGES)].fill(used);
                p += len;
            }
            for (i, &b) in bits.iter().enumerate() {
                if b {
                    words[i / 64] |= 1 << (i % 64);
                }
            }
            let (sum, finds) = naive(&bits);
            assert_eq!(summarize(&words), sum, "round {round}");
            for (k, want) in finds.iter().enumerate() {
                assert_eq!(find(&words, k + 1), *want, "round {round} n {}", k + 1);
            }
            let (a, b) = ((rng(&mut s) % 512) as usize, 512);
            let a = a.min(b - 1);
            let want = bits[a..b].iter().filter(|&&x| x).count();
            assert_eq!(count(&words, a, b), want);
            assert_eq!(all_set(&words, a, b), want == b - a);
        }
    }

    #[test]
    fn combine_agrees_with_the_children_laid_end_to_end() {
        let mut s = 11;
        for _ in 0..500 {
            let size = 8u32;
            let kids: Vec<Vec<bool>> = (0..5)
                .map(|_| (0..size).map(|_| rng(&mut s) % 3 == 0).collect())
                .collect();
            let sums: Vec<Sum> = kids.iter().map(|k| naive(k).0).collect();
            let all: Vec<bool> = kids.concat();
            assert_eq!(Sum::combine(&sums, size), naive(&all).0);
        }
    }
}
