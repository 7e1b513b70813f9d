//! least-connections: per connection, the endpoint with the fewest active connections per unit
//! of weight, from the host's live stats (one `all-stats` call); the kernel modes use the
//! weights.

use wasp_balancer_algo::pick::least_connections;
use wasp_balancer_algo::weights;
use wasp_plugin_sdk::util::weights_for;
use wasp_plugin_sdk::{Connection, Policy, Selection, Service, Snapshot, host};

struct LeastConn {
    pairs: Vec<(String, u32)>,
    weights: Vec<u32>,
    start: usize,
}

impl Policy for LeastConn {
    fn new(_: &Service, config: &str) -> Result<Self, String> {
        Ok(Self {
            pairs: weights::parse(config)?,
            weights: vec![],
            start: 0,
        })
    }

    fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
        self.weights = weights_for(&self.pairs, s);
        Ok(Selection::PerConnection(self.weights.clone()))
    }

    fn pick(&mut self, _: &Connection) -> Option<u32> {
        let active = host::all_stats().active_connections;
        self.start = self.start.wrapping_add(1);
        least_connections(
            &active,
            &self.weights,
            self.start % self.weights.len().max(1),
        )
    }
}

wasp_plugin_sdk::plugin!(LeastConn);
