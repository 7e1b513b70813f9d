//! The Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, §3.4): each backend walks its own permutation of the M slots and
//! backends take turns claiming their next free slot until the table is full. Removing one of
//! N backends moves about 1/N of the slots.

use crate::hash::fnv1a_seeded;

/// The default table size: a prime, as the paper requires.
pub const DEFAULT_M: usize = 65537;

/// Builds the table of `m` slots (a prime) over backends named by `keys`, each taking turns
/// `weights[i]` times per round (1 when all are equal). Returns endpoint indices.
pub fn table(keys: &[&[u8]], weights: &[u32], m: usize) -> Vec<u32> {
    let n = keys.len();
    if n == 0 || m == 0 {
        return Vec::new();
    }
    let mut offset = Vec::with_capacity(n);
    let mut skip = Vec::with_capacity(n);
    for k in keys {
        offset.push((fnv1a_seeded(k, 0xdead_beef) % m as u64) as usize);
        skip.push((fnv1a_seeded(k, 0x5eed_cafe) % (m as u64 - 1).max(1)) as usize + 1);
    }
    // Each backend's current position in its permutation: offset + j·skip (mod m), advanced
    // by one addition and at most one subtraction instead of a multiply and a divide.
    let mut pos = offset;
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    let weight = |i: usize| weights.get(i).copied().unwrap_or(1);
    if (0..n).all(|i| weight(i) == 0) {
        return Vec::new();
    }
    while filled < m {
        for i in 0..n {
            for _ in 0..weight(i) {
                // Walk backend i's permutation to its next free slot.
                let step = |c: usize| {
                    if c + skip[i] >= m {
                        c + skip[i] - m
                    } else {
                        c + skip[i]
                    }
                };
                let mut c = pos[i];
                while table[c] != u32::MAX {
                    c = step(c);
                }
                table[c] = i as u32;
                pos[i] = step(c);
                filled += 1;
                if filled == m {
                    return table;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("10.0.0.{i}:80").into_bytes())
            .collect()
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
