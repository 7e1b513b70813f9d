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

    /// A weighted random index.
    pub fn weighted(&mut self, weights: &[u32]) -> Option<u32> {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        let mut r = self.next_u64() % total;
        for (i, &w) in weights.iter().enumerate() {
            if r < u64::from(w) {
                return Some(i as u32);
            }
            r -= u64::from(w);
        }
        None
    }
}

/// The endpoint with the fewest active connections per unit of weight (ties: the lowest
/// index after `start`, so ties rotate).
pub fn least_connections(active: &[u32], weights: &[u32], start: usize) -> Option<u32> {
    let n = active.len();
    (0..n)
        .map(|k| (start + k) % n)
        .filter(|&i| weights.get(i).copied().unwrap_or(1) > 0)
        .min_by(|&a, &b| {
            let load = |i: usize| {
                u64::from(active[i]) * 1000 / u64::from(weights.get(i).copied().unwrap_or(1).max(1))
            };
            load(a).cmp(&load(b))
        })
        .map(|i| i as u32)
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
        let mut r = Rng::new(7);
        let mut c = [0u32; 2];
        for _ in 0..4000 {
            c[r.weighted(&[3, 1]).unwrap() as usize] += 1;
        }
        assert!((2800..3200).contains(&c[0]), "{c:?}");
    }
}
