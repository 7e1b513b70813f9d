//! wasp's balancing algorithms, free of any ABI, so the built-in plugins and the benchmarks'
//! native baselines run the very same code.
//!
//! # Layout
//! - [`hash`]: stable 64-bit hashes (FNV-1a and a mixer).
//! - [`maglev`]: the Maglev lookup table (Eisenbud et al., NSDI 2016, §3.4).
//! - [`ring`]: a consistent-hash ring sampled into a lookup table.
//! - [`weights`]: weights from a config string (by address, target or zone).
//! - [`pick`]: per-connection pickers (round-robin, random, least-connections).
//! - [`options`]: the config string: named options and weights.

pub mod hash;
pub mod maglev;
pub mod options;
pub mod pick;
pub mod ring;
pub mod weights;

/// The smallest prime at or above `n` (table sizes must be prime for Maglev).
pub fn next_prime(n: usize) -> usize {
    let is_prime = |x: usize| {
        x >= 2
            && (2..)
                .take_while(|d| d * d <= x)
                .all(|d| !x.is_multiple_of(d))
    };
    (n.max(2)..).find(|&x| is_prime(x)).unwrap_or(n)
}
