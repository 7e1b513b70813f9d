//! Helpers every built-in shares: weights from config and endpoint keys.

use wasp_balancer_algo::weights::{self, EndpointKeys};

use crate::{Snapshot, ip, string};

/// The weight of each endpoint from `pairs` (see `wasp_balancer_algo::weights`).
pub fn weights_for(pairs: &[(String, u32)], s: &Snapshot) -> Vec<u32> {
    let keys: Vec<EndpointKeys<'_>> = s
        .endpoints
        .iter()
        .map(|e| EndpointKeys {
            address: ip(&e.address),
            target: string(s, e.target),
            zone: string(s, e.zone),
        })
        .collect();
    weights::resolve(pairs, &keys)
}
