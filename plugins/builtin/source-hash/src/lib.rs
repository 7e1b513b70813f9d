//! source-hash: the client address hashed modulo the endpoint count (IPVS's `sh`): simple and
//! even, but most clients move when the count changes (use maglev when that matters).

use wasp_plugin_sdk::{HashKey, Hashed, Policy, Selection, Service, Snapshot};

struct SourceHash;

impl Policy for SourceHash {
    fn new(_: &Service, _: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
        let table = (0..s.endpoints.len() as u32).collect();
        Ok(Selection::Hashed(Hashed {
            key: HashKey::SourceIp,
            table,
        }))
    }
}

wasp_plugin_sdk::plugin!(SourceHash);
