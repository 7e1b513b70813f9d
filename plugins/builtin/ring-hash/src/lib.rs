//! ring-hash: a consistent-hash ring over the endpoints, sampled into M slots (default 4096,
//! `m=N` to change), hashed on the client address; other config pairs are weights.

use wasp_balancer_algo::options::Options;
use wasp_balancer_algo::ring::{self, DEFAULT_M};
use wasp_plugin_sdk::util::weights_for;
use wasp_plugin_sdk::{HashKey, Hashed, Policy, Selection, Service, Snapshot, endpoint_key};

struct Ring {
    m: usize,
    pairs: Vec<(String, u32)>,
}

impl Policy for Ring {
    fn new(_: &Service, config: &str) -> Result<Self, String> {
        let o = Options::parse(config, &["m"])?;
        let m = match o.get("m") {
            Some(v) => v.parse().map_err(|_| format!("m={v} is not a number"))?,
            None => DEFAULT_M,
        };
        if m == 0 || m > 1 << 20 {
            return Err(format!("m={m} must be between 1 and 1048576"));
        }
        Ok(Self {
            m,
            pairs: o.weights,
        })
    }

    fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
        let keys: Vec<String> = s.endpoints.iter().map(endpoint_key).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let table = ring::table(&refs, &weights_for(&self.pairs, s), self.m);
        Ok(Selection::Hashed(Hashed {
            key: HashKey::SourceIp,
            table,
        }))
    }
}

wasp_plugin_sdk::plugin!(Ring);
