//! Per-connection pickers.

/// Round-robin over the endpoints with weight > 0.
#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// The next endpoint with a non-zero weight.
    pub fn pick(&mut self, weights: &[u32]) -> Option<u32> {
        let n = weights.len();
        for _ in 0..n {
            let i = self.next % n;
            self.next = self.next.wrapping_add(1);
            if weights[i] > 0 {
                return Some(i as u32);
            }
        }
        None
    }
}

/// A small, fast PRNG (xorshift64*), seeded by the caller.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A weighted random index from `c`, or `None` when every weight is 0.
    pub fn weighted(&mut self, c: &Cumulative) -> Option<u32> {
        c.at(self.next_u64())
    }
}

/// Weights as running totals, built once per update so a weighted pick is a binary search
/// rather than a pass over every weight.
#[derive(Debug, Default, Clone)]
pub struct Cumulative {
    ends: Vec<u64>,
}

impl Cumulative {
    /// The running totals of `weights`.
    pub fn new(weights: &[u32]) -> Self {
        let mut total = 0u64;
        let ends = weights
            .iter()
            .map(|&w| {
                total += u64::from(w);
                total
            })
            .collect();
        Self { ends }
    }

    /// The index whose share of the total holds `r`, read as a fraction of 2^64; `None` when
    /// every weight is 0.
    pub fn at(&self, r: u64) -> Option<u32> {
        let total = *self.ends.last().filter(|&&t| t > 0)?;
        // r / 2^64 of the total, without a division.
        let x = ((u128::from(r) * u128::from(total)) >> 64) as u64;
        Some(self.ends.partition_point(|&e| e <= x) as u32)
    }
}

/// The endpoint with the fewest active connections per unit of weight (ties: the first after
/// `start`, so ties rotate). Loads are compared exactly, by cross-multiplying, without a
/// division per endpoint. A missing weight counts as 1; weight 0 is never picked.
pub fn least_connections(active: &[u32], weights: &[u32], start: usize) -> Option<u32> {
    let n = active.len();
    // (index, active, weight) of the idlest so far.
    let mut best: Option<(usize, u64, u64)> = None;
    let start = if n == 0 { 0 } else { start % n };
    for i in (start..n).chain(0..start) {
        let w = u64::from(weights.get(i).copied().unwrap_or(1));
        if w == 0 {
            continue;
        }
        let a = u64::from(active[i]);
        // a / w < best_a / best_w, both sides multiplied out.
        if best.is_none_or(|(_, ba, bw)| a * bw < ba * w) {
            best = Some((i, a, w));
        }
    }
    best.map(|(i, _, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickers() {
        let mut rr = RoundRobin::default();
        let got: Vec<u32> = (0..4).filter_map(|_| rr.pick(&[1, 0, 1])).collect();
        assert_eq!(got, [0, 2, 0, 2]);
        assert_eq!(least_connections(&[5, 1, 3], &[1, 1, 1], 0), Some(1));
        assert_eq!(least_connections(&[5, 1, 3], &[1, 0, 1], 0), Some(2));
        // Per unit of weight: 4 connections on weight 4 is idler than 2 on weight 1.
        assert_eq!(least_connections(&[2, 4], &[1, 4], 0), Some(1));
        // Ties go to the first after `start`.
        assert_eq!(least_connections(&[1, 1, 1], &[1, 1, 1], 1), Some(1));
        assert_eq!(least_connections(&[1, 1, 1], &[1, 1, 1], 2), Some(2));
        assert_eq!(least_connections(&[1, 1], &[0, 0], 0), None);
        assert_eq!(least_connections(&[], &[], 0), None);
        let mut r = Rng::new(7);
        let mut c = [0u32; 3];
        let w = Cumulative::new(&[3, 0, 1]);
        for _ in 0..4000 {
            c[r.weighted(&w).unwrap() as usize] += 1;
        }
        assert!((2800..3200).contains(&c[0]), "{c:?}");
        assert_eq!(c[1], 0, "a 0 weight is never picked");
        assert_eq!(r.weighted(&Cumulative::new(&[0, 0])), None);
        assert_eq!(r.weighted(&Cumulative::new(&[])), None);
        // The ends of the range land on the first and last non-zero weights.
        assert_eq!(w.at(0), Some(0));
        assert_eq!(w.at(u64::MAX), Some(2));
    }
}
