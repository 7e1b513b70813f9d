//! Names and hashes: what rules and chains are called, and the seed kernel hashes use.

use data_encoding::BASE32;
use sha2::{Digest, Sha256};

/// The seed of the kernel hashes that pick a slot (nftables `jhash`, iptables `HMARK`):
/// fixed ("wasp"), so a restart hashes every client to the same slot.
pub const HASH_SEED: u32 = 0x7761_7370;

/// The first `len` characters of base32(sha256(`s`)), as kube-proxy names its chains.
pub fn hash(s: &str, len: usize) -> String {
    let mut h = BASE32.encode(&Sha256::digest(s.as_bytes()));
    h.truncate(len);
    h
}

/// The first 32 bits of sha256(`s`), for spreading names over shards.
pub fn hash_u32(s: &str) -> u32 {
    let d = Sha256::digest(s.as_bytes());
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable() {
        // kube-proxy's scheme: these must never change, or a restart renames every chain.
        assert_eq!(hash("default/web:httptcp", 16), "CDGGSHYLG3RE2FKL");
        assert_eq!(hash("x", 8), hash("x", 16)[..8]);
        assert_eq!(hash_u32("default/web"), hash_u32("default/web"));
    }
}
