//! The Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, §3.4): each backend walks its own permutation of the M slots and
//! backends take turns claiming their next free slot until the table is full. Removing one of
//! N backends moves about 1/N of the slots.

#[cfg(test)]
use crate::hash::fnv1a_seeded;
use crate::hash::{fnv1a, mix};

/// The default table size: a prime, as the paper requires.
pub const DEFAULT_M: usize = 65537;

/// The table's last slots are filled by looking at every empty slot rather than by walking a
/// permutation to one (see [`table`]).
const LAST: usize = 128;

/// Builds the table of `m` slots (a prime) over backends named by `keys`, each taking turns
/// `weights[i]` times per round (1 when all are equal). Returns endpoint indices.
///
/// This is the paper's fill, slot for slot, done in two ways. While many slots are empty, each
/// turn walks the backend's permutation (`offset + j·skip mod m`) to its next empty slot. The
/// walks grow long as the table fills: with E slots empty, m/E steps on average. So for the
/// last [`LAST`] slots, each turn instead takes, among the empty slots, the
/// one the backend's walk would reach first: the one `(slot − position) · skip⁻¹ mod m` steps
/// ahead, fewest steps winning. Every slot the walk passes on the way is full, so it is the
/// same slot.
pub fn table(keys: &[&[u8]], weights: &[u32], m: usize) -> Vec<u32> {
    let n = keys.len();
    let weight = |i: usize| weights.get(i).copied().unwrap_or(1);
    // Positions plus a step stay below 2m, so m must fit in 31 bits.
    if n == 0 || m == 0 || m >= 1 << 31 || (0..n).all(|i| weight(i) == 0) {
        return Vec::new();
    }
    let m32 = m as u32;
    // Per backend: its position in its permutation, and its step.
    let mut walk: Vec<(u32, u32)> = keys
        .iter()
        .map(|k| {
            // fnv1a_seeded(k, seed), hashing the key once for both seeds.
            let h = fnv1a(k);
            let offset = mix(h ^ mix(0xdead_beef)) % m as u64;
            let skip = mix(h ^ mix(0x5eed_cafe)) % (m as u64 - 1).max(1) + 1;
            (offset as u32, skip as u32)
        })
        .collect();
    // The turns of one round, in order.
    let turns: Vec<u32> = (0..n)
        .flat_map(|i| std::iter::repeat_n(i as u32, weight(i) as usize))
        .collect();
    let mut table = vec![u32::MAX; m];
    // The turn after the one just taken.
    let mut t = 0;
    let mut next_turn = || {
        let i = turns[t];
        t = if t + 1 == turns.len() { 0 } else { t + 1 };
        i
    };
    for _ in LAST.min(m)..m {
        let i = next_turn();
        let (mut c, skip) = walk[i as usize];
        let step = |c: u32| {
            let c = c + skip;
            if c >= m32 { c - m32 } else { c }
        };
        while table[c as usize] != u32::MAX {
            c = step(c);
        }
        table[c as usize] = i;
        walk[i as usize].0 = step(c);
    }
    let mut left: Vec<u32> = (0..m32)
        .filter(|&c| table[c as usize] == u32::MAX)
        .collect();
    while !left.is_empty() {
        let i = next_turn();
        let (pos, skip) = walk[i as usize];
        let k = match inverse(skip, m32) {
            Some(inv) => first_reached(&left, pos, inv, m32),
            // m is not prime: walk (a prime m always has the inverse).
            None => {
                let mut c = pos;
                while table[c as usize] != u32::MAX {
                    c = (c + skip) % m32;
                }
                left.iter().position(|&x| x == c).expect("an empty slot")
            }
        };
        let c = left.swap_remove(k);
        table[c as usize] = i;
        walk[i as usize].0 = ((u64::from(c) + u64::from(skip)) % u64::from(m32)) as u32;
    }
    table
}

/// The position in `left` of the slot a walk from `pos` with step skip (`inv` = skip⁻¹ mod m)
/// reaches first.
fn first_reached(left: &[u32], pos: u32, inv: u64, m: u32) -> usize {
    let m = u64::from(m);
    // x mod m without a division: the quotient from a float reciprocal is off by at most one
    // (x < 2⁶², and a double carries 53 bits), which the two corrections fix.
    let reciprocal = 1.0 / m as f64;
    let steps = |c: u32| {
        let (c, pos) = (u64::from(c), u64::from(pos));
        let d = if c >= pos { c - pos } else { c + m - pos };
        let x = d * inv;
        let q = (x as f64 * reciprocal) as u64;
        let r = x.wrapping_sub(q.wrapping_mul(m)) as i64;
        let r = if r < 0 { r + m as i64 } else { r };
        (if r >= m as i64 { r - m as i64 } else { r }) as u64
    };
    (0..left.len())
        .min_by_key(|&k| steps(left[k]))
        .expect("not empty")
}

/// `a`⁻¹ mod `m`, by the extended Euclidean algorithm; `None` when there is none.
fn inverse(a: u32, m: u32) -> Option<u64> {
    let (mut r0, mut r1) = (i64::from(m), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    (r0 == 1).then(|| t0.rem_euclid(i64::from(m)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("10.0.0.{i}:80").into_bytes())
            .collect()
    }

    /// The paper's fill as written: every turn walks to the next empty slot.
    fn paper(keys: &[&[u8]], weights: &[u32], m: usize) -> Vec<u32> {
        let n = keys.len();
        let w = |i: usize| weights.get(i).copied().unwrap_or(1);
        let offset: Vec<usize> = keys
            .iter()
            .map(|k| (fnv1a_seeded(k, 0xdead_beef) % m as u64) as usize)
            .collect();
        let skip: Vec<usize> = keys
            .iter()
            .map(|k| (fnv1a_seeded(k, 0x5eed_cafe) % (m as u64 - 1)) as usize + 1)
            .collect();
        let mut next = vec![0usize; n];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        loop {
            for i in 0..n {
                for _ in 0..w(i) {
                    let mut c = (offset[i] + next[i] * skip[i]) % m;
                    while table[c] != u32::MAX {
                        next[i] += 1;
                        c = (offset[i] + next[i] * skip[i]) % m;
                    }
                    table[c] = i as u32;
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        return table;
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_table_as_the_paper_slot_for_slot() {
        for (n, m) in [
            (1, 7),
            (3, 13),
            (5, 251),
            (10, 65537),
            (100, 65537),
            (1000, 65537),
            (7, 131),
        ] {
            let k = keys(n);
            let refs: Vec<&[u8]> = k.iter().map(Vec::as_slice).collect();
            assert_eq!(table(&refs, &[], m), paper(&refs, &[], m), "n={n} m={m}");
            let w: Vec<u32> = (0..n as u32).map(|i| i % 4).collect();
            if w.iter().any(|&x| x > 0) {
                assert_eq!(
                    table(&refs, &w, m),
                    paper(&refs, &w, m),
                    "n={n} m={m} weighted"
                );
            }
        }
        assert_eq!(inverse(3, 7), Some(5));
        assert_eq!(inverse(4, 8), None);
        assert!(table(&[], &[], 7).is_empty());
        assert!(table(&[b"a"], &[0], 7).is_empty());
    }

    #[test]
    fn balanced_and_full() {
        let k = keys(5);
        let refs: Vec<&[u8]> = k.iter().map(Vec::as_slice).collect();
        let t = table(&refs, &[], 65537);
        assert_eq!(t.len(), 65537);
        let mut counts = [0usize; 5];
        for &i in &t {
            counts[i as usize] += 1;
        }
        for c in counts {
            assert!((12_000..14_300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let k = keys(10);
        let refs: Vec<&[u8]> = k.iter().map(Vec::as_slice).collect();
        let before = table(&refs, &[], 65537);
        let after = table(&refs[1..], &[], 65537);
        // Slots that pointed at a surviving backend and now point elsewhere.
        let moved = before
            .iter()
            .zip(&after)
            .filter(|&(&b, &a)| b != 0 && b - 1 != a)
            .count();
        let share = moved as f64 / 65537.0;
        assert!(
            share < 0.05,
            "only the removed backend's ~10% should move; {share}"
        );
    }

    #[test]
    fn weights_skew_the_table() {
        let k = keys(2);
        let refs: Vec<&[u8]> = k.iter().map(Vec::as_slice).collect();
        let t = table(&refs, &[3, 1], 1009);
        let zero = t.iter().filter(|&&i| i == 0).count() as f64 / 1009.0;
        assert!((0.70..0.80).contains(&zero), "{zero}");
    }
}
