//! maglev: the Maglev table (M slots, default 65537, `m=PRIME` to change) over the endpoints,
//! hashed on the client address (`key=source-ip-port` or `key=five-tuple` to change);
//! other config pairs are weights.

use wasp_balancer_algo::maglev::{self, DEFAULT_M};
use wasp_balancer_algo::next_prime;
use wasp_balancer_algo::options::Options;
use wasp_plugin_sdk::util::weights_for;
use wasp_plugin_sdk::{HashKey, Hashed, Policy, Selection, Service, Snapshot, write_endpoint_key};

struct Maglev {
    m: usize,
    key: HashKey,
    pairs: Vec<(String, u32)>,
}

/// The hash key named in a config.
pub fn hash_key(v: Option<&str>) -> Result<HashKey, String> {
    match v.unwrap_or("source-ip") {
        "source-ip" => Ok(HashKey::SourceIp),
        "source-ip-port" => Ok(HashKey::SourceIpPort),
        "five-tuple" => Ok(HashKey::FiveTuple),
        other => Err(format!(
            "key={other}: use source-ip, source-ip-port or five-tuple"
        )),
    }
}

impl Policy for Maglev {
    fn new(_: &Service, config: &str) -> Result<Self, String> {
        let o = Options::parse(config, &["m", "key"])?;
        let m = match o.get("m") {
            Some(v) => {
                let m: usize = v.parse().map_err(|_| format!("m={v} is not a number"))?;
                if next_prime(m) != m {
                    return Err(format!("m={m} is not prime (try {})", next_prime(m)));
                }
                m
            }
            None => DEFAULT_M,
        };
        Ok(Self {
            m,
            key: hash_key(o.get("key"))?,
            pairs: o.weights,
        })
    }

    fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
        // Every endpoint's key in one buffer: one allocation rather than one per endpoint.
        let mut keys = String::with_capacity(24 * s.endpoints.len());
        let mut ends = Vec::with_capacity(s.endpoints.len());
        for e in &s.endpoints {
            write_endpoint_key(&mut keys, e);
            ends.push(keys.len());
        }
        let refs: Vec<&[u8]> = ends
            .iter()
            .scan(0, |start, &end| {
                let k = &keys.as_bytes()[*start..end];
                *start = end;
                Some(k)
            })
            .collect();
        // No weight pairs: every endpoint weighs 1, without looking at any.
        let weights = if self.pairs.is_empty() {
            Vec::new()
        } else {
            weights_for(&self.pairs, s)
        };
        let table = maglev::table(&refs, &weights, self.m);
        Ok(Selection::Hashed(Hashed {
            key: self.key,
            table,
        }))
    }
}

wasp_plugin_sdk::plugin!(Maglev);
