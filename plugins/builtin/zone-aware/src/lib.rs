//! zone-aware: only endpoints in this node's zone, as topology hints would route; when the
//! zone is unknown or has no endpoint, all of them (the hints' fallback).

use wasp_plugin_sdk::{Policy, Selection, Service, Snapshot, string};

struct ZoneAware {
    zone: Option<String>,
}

impl Policy for ZoneAware {
    fn new(service: &Service, _: &str) -> Result<Self, String> {
        Ok(Self {
            zone: service.node_zone.clone(),
        })
    }

    fn update(&mut self, s: &Snapshot) -> Result<Selection, String> {
        let local: Vec<u32> = s
            .endpoints
            .iter()
            .map(|e| u32::from(self.zone.is_some() && string(s, e.zone) == self.zone.as_deref()))
            .collect();
        if local.contains(&1) {
            Ok(Selection::Weighted(local))
        } else {
            Ok(Selection::Weighted(vec![1; s.endpoints.len()]))
        }
    }
}

wasp_plugin_sdk::plugin!(ZoneAware);
