//! Stable 64-bit hashes: the same on every platform and in every release, so a table built
//! after a restart is the table built before it.

/// FNV-1a over `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A strong 64-bit mixer (splitmix64's finaliser).
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A second, independent hash of `bytes`.
pub fn fnv1a_seeded(bytes: &[u8], seed: u64) -> u64 {
    mix(fnv1a(bytes) ^ mix(seed))
}
