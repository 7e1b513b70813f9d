//! Misbehaves in `update` as the config string asks: `mode=ok` (equal weights), `loop`
//! (never returns), `alloc` (allocates without bound), `trap` (panics), `out-of-range` (an
//! index past the endpoints), `empty-table`, `zero-weights`, `huge-table` (2²¹ slots),
//! `error` (returns an error). Its `pick` misbehaves too: `pick-out-of-range` (the endpoint
//! count) and `pick-trap` (panics) ask for picks with equal weights; every other mode declines.

use wasp_plugin_sdk::{Connection, HashKey, Hashed, Policy, Selection, Service, Snapshot};

struct Faulty {
    mode: String,
    endpoints: u32,
}

impl Policy for Faulty {
    fn new(_: &Service, config: &str) -> Result<Self, String> {
        let mode = config.strip_prefix("mode=").unwrap_or("ok").to_string();
        Ok(Self { mode, endpoints: 0 })
    }

    fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
        let n = s.endpoints.len();
        self.endpoints = n as u32;
        match self.mode.as_str() {
            "ok" => Ok(Selection::Weighted(vec![1; n])),
            "pick-out-of-range" | "pick-trap" => Ok(Selection::PerConnection(vec![1; n])),
            "loop" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(3));
                }
            }
            "alloc" => {
                let mut v: Vec<Vec<u8>> = Vec::new();
                loop {
                    v.push(vec![1u8; 1 << 20]);
                }
            }
            "trap" => panic!("faulty plugin asked to trap"),
            "out-of-range" => Ok(Selection::Hashed(Hashed {
                key: HashKey::SourceIp,
                table: vec![0, n as u32 + 5],
            })),
            "empty-table" => Ok(Selection::Hashed(Hashed {
                key: HashKey::SourceIp,
                table: vec![],
            })),
            "zero-weights" => Ok(Selection::Weighted(vec![0; n])),
            "huge-table" => Ok(Selection::Hashed(Hashed {
                key: HashKey::SourceIp,
                table: vec![0; 1 << 21],
            })),
            "error" => Err("faulty plugin asked to fail".into()),
            other => Err(format!("unknown mode {other}")),
        }
    }

    fn pick(&mut self, _: &Connection) -> Option<u32> {
        match self.mode.as_str() {
            "pick-out-of-range" => Some(self.endpoints),
            "pick-trap" => panic!("faulty plugin asked to trap in pick"),
            _ => None,
        }
    }
}

wasp_plugin_sdk::plugin!(Faulty);
