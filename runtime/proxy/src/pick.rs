//! Picking one endpoint for a new connection: affinity first, then the plugin's own pick
//! where it asked for one, then the Selection (its hashed table exactly, or its weights).
//! Endpoints in backoff are skipped while any other is left.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use wasp_model::Protocol;

use crate::Shared;
use crate::table::{Route, hash_of};

/// A random number (splitmix64 over a shared counter): enough to spread connections.
pub(crate) fn random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);
    let mut z = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The endpoint (its index) for a connection from `client` to `dst`, other than `tried`.
pub(crate) fn choose(
    sh: &Shared,
    route: &Route,
    proto: Protocol,
    client: SocketAddr,
    dst: SocketAddr,
    tried: &[usize],
) -> Option<usize> {
    let t = &route.target;
    let now = Instant::now();
    let left: Vec<usize> = route
        .candidates
        .iter()
        .copied()
        .filter(|i| !tried.contains(i))
        .collect();
    let healthy = sh.endpoints.not_backing_off(t.id, &t.endpoints, &left, now);
    // With every endpoint failing, try them anyway: one may have come back.
    let pool = if healthy.is_empty() { left } else { healthy };
    if pool.is_empty() {
        return None;
    }
    if t.affinity.is_some()
        && let Some(addr) = sh.affine(t.id, client.ip())
        && let Some(&i) = pool.iter().find(|&&i| t.endpoints[i] == addr)
    {
        return Some(i);
    }
    if t.per_connection
        && tried.is_empty()
        && let Some(i) = sh.plugin_pick(&t.name, client)
        && pool.contains(&(i as usize))
    {
        return Some(i as usize);
    }
    if let Some((key, table)) = &t.hashed {
        let slots: Vec<usize> = table
            .iter()
            .map(|&i| i as usize)
            .filter(|i| pool.contains(i))
            .collect();
        if !slots.is_empty() {
            let h = hash_of(*key, client, dst, proto);
            return Some(slots[(h % slots.len() as u64) as usize]);
        }
    }
    Some(weighted(&pool, &t.weights))
}

/// One of `pool`, by weight (equally when all its weights are 0).
fn weighted(pool: &[usize], weights: &[u32]) -> usize {
    let w = |i: usize| u64::from(weights.get(i).copied().unwrap_or(1));
    let total: u64 = pool.iter().map(|&i| w(i)).sum();
    if total == 0 {
        return pool[(random() % pool.len() as u64) as usize];
    }
    let mut r = random() % total;
    for &i in pool {
        if r < w(i) {
            return i;
        }
        r -= w(i);
    }
    pool[pool.len() - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_spread_connections_in_proportion() {
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[weighted(&[0, 1, 2], &[1, 2, 0])] += 1;
        }
        assert_eq!(counts[2], 0, "weight 0 is never picked");
        let ratio = f64::from(counts[1]) / f64::from(counts[0]);
        assert!((1.8..2.2).contains(&ratio), "{counts:?}");
        let mut zero = [0u32; 2];
        for _ in 0..1000 {
            zero[weighted(&[0, 1], &[0, 0])] += 1;
        }
        assert!(
            zero.iter().all(|&c| c > 300),
            "all-zero weights spread equally: {zero:?}"
        );
    }
}
