//! A consistent-hash ring (Karger et al.), sampled into a table of M slots so every mode can
//! realise it as a hashed Selection: each endpoint places `replicas × weight` points on the
//! ring, and slot s takes the endpoint owning the first point at or after s·2⁶⁴/M.

use crate::hash::fnv1a_seeded;

/// The default table size.
pub const DEFAULT_M: usize = 4096;
/// Points per endpoint of weight 1.
pub const REPLICAS: u32 = 100;

/// Builds the table of `m` slots over endpoints named by `keys`.
pub fn table(keys: &[&[u8]], weights: &[u32], m: usize) -> Vec<u32> {
    let mut points: Vec<(u64, u32)> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let w = weights.get(i).copied().unwrap_or(1);
        for r in 0..REPLICAS * w {
            points.push((fnv1a_seeded(k, u64::from(r)), i as u32));
        }
    }
    if points.is_empty() {
        return Vec::new();
    }
    points.sort_unstable();
    let step = u64::MAX / m as u64;
    let mut j = 0;
    (0..m as u64)
        .map(|s| {
            let at = s * step;
            while j < points.len() && points[j].0 < at {
                j += 1;
            }
            points[j % points.len()].1
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_on_removal() {
        let k: Vec<Vec<u8>> = (0..8)
            .map(|i| format!("10.0.1.{i}:80").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = k.iter().map(Vec::as_slice).collect();
        let before = table(&refs, &[], 4096);
        let after = table(&refs[1..], &[], 4096);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|&(&b, &a)| b != 0 && b - 1 != a)
            .count();
        assert_eq!(moved, 0, "a ring never moves a surviving endpoint's keys");
        assert_eq!(before.len(), 4096);
    }
}
