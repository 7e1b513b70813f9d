//! weighted: weights from the config string, e.g. `10.0.0.1=3,zone-b=1,default=1`.

use wasp_balancer_algo::pick::{Cumulative, Rng};
use wasp_balancer_algo::weights;
use wasp_plugin_sdk::util::weights_for;
use wasp_plugin_sdk::{Connection, Policy, Selection, Service, Snapshot, host};

struct Weighted {
    pairs: Vec<(String, u32)>,
    weights: Cumulative,
    rng: Rng,
}

impl Policy for Weighted {
    fn new(_: &Service, config: &str) -> Result<Self, String> {
        Ok(Self {
            pairs: weights::parse(config)?,
            weights: Cumulative::default(),
            rng: Rng::new(host::now_ms() | 1),
        })
    }

    fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
        let weights = weights_for(&self.pairs, s);
        self.weights = Cumulative::new(&weights);
        Ok(Selection::Weighted(weights))
    }

    fn pick(&mut self, _: &Connection) -> Option<u32> {
        self.rng.weighted(&self.weights)
    }
}

wasp_plugin_sdk::plugin!(Weighted);
