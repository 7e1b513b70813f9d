//! random: equal weights; a uniformly random endpoint per connection.

use wasp_balancer_algo::pick::{Cumulative, Rng};
use wasp_plugin_sdk::{Connection, Policy, Selection, Service, Snapshot, host};

struct Random {
    rng: Rng,
    weights: Cumulative,
}

impl Policy for Random {
    fn new(_: &Service, _: &str) -> Result<Self, String> {
        Ok(Self {
            rng: Rng::new(host::now_ms() ^ 0x9e37_79b9_7f4a_7c15),
            weights: Cumulative::default(),
        })
    }

    fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
        let weights = vec![1; s.endpoints.len()];
        self.weights = Cumulative::new(&weights);
        Ok(Selection::Weighted(weights))
    }

    fn pick(&mut self, _: &Connection) -> Option<u32> {
        self.rng.weighted(&self.weights)
    }
}

wasp_plugin_sdk::plugin!(Random);
