//! round-robin: equal weights in the kernel modes; strict rotation per connection in userspace.

use wasp_balancer_algo::pick::RoundRobin;
use wasp_plugin_sdk::{Connection, Policy, Selection, Service, Snapshot};

struct Rr {
    rr: RoundRobin,
    weights: Vec<u32>,
}

impl Policy for Rr {
    fn new(_: &Service, _: &str) -> Result<Self, String> {
        Ok(Self {
            rr: RoundRobin::default(),
            weights: vec![],
        })
    }

    fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
        self.weights = vec![1; s.endpoints.len()];
        Ok(Selection::PerConnection(self.weights.clone()))
    }

    fn pick(&mut self, _: &Connection) -> Option<u32> {
        self.rr.pick(&self.weights)
    }
}

wasp_plugin_sdk::plugin!(Rr);
