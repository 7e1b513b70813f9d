//! Model types ↔ WIT types.

use std::collections::HashMap;
use std::net::IpAddr;

use wasp_model::categorize::NodeTopology;
use wasp_model::{HashKey, Protocol, Selection, ServicePortName, ServicePortState};

use crate::bindings::wasp::balancer::types as wit;

/// An address for the guest.
pub fn ip(a: IpAddr) -> wit::IpAddress {
    match a {
        IpAddr::V4(v) => wit::IpAddress::V4(u32::from(v)),
        IpAddr::V6(v) => {
            let x = u128::from(v);
            wit::IpAddress::V6(((x >> 64) as u64, x as u64))
        }
    }
}

/// The service a balancer is constructed with.
pub fn service(
    id: u32,
    name: &ServicePortName,
    port: &ServicePortState,
    node: &NodeTopology,
) -> wit::Service {
    wit::Service {
        id,
        namespace: name.service.namespace.to_string(),
        name: name.service.name.to_string(),
        port_name: name.port.to_string(),
        protocol: match name.protocol {
            Protocol::Tcp => wit::Protocol::Tcp,
            Protocol::Udp => wit::Protocol::Udp,
            Protocol::Sctp => wit::Protocol::Sctp,
        },
        port: port.service.port,
        node_name: node.name.clone(),
        node_zone: node.zone.clone(),
    }
}

/// FNV-1a: interning runs for every endpoint of every update, and SipHash's resistance to
/// chosen keys buys nothing for names the host itself passes to its own plugins.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Interns strings into one concatenated string and its end offsets.
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, u32, std::hash::BuildHasherDefault<Fnv>>,
    text: String,
    ends: Vec<u32>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, s: Option<&'a str>) -> Option<u32> {
        let s = s?;
        Some(*self.ids.entry(s).or_insert_with(|| {
            self.text.push_str(s);
            self.ends.push(self.text.len() as u32);
            self.ends.len() as u32 - 1
        }))
    }
}

/// The snapshot passed to `update`, with zones, nodes and targets interned.
pub fn snapshot(port: &ServicePortState) -> wit::Snapshot {
    let mut strings = Interner::default();
    let mut endpoints = Vec::with_capacity(port.endpoints.len());
    for e in &port.endpoints {
        endpoints.push(wit::Endpoint {
            address: ip(e.ip),
            port: e.port,
            ready: e.ready,
            serving: e.serving,
            terminating: e.terminating,
            is_local: e.is_local,
            zone: strings.id(e.zone.as_deref()),
            node: strings.id(e.node_name.as_deref()),
            target: strings.id(e.target.as_deref()),
        });
    }
    wit::Snapshot {
        endpoints,
        strings: strings.text,
        string_ends: strings.ends,
    }
}

/// The model's Selection.
pub fn selection(s: wit::Selection) -> Selection {
    match s {
        wit::Selection::Weighted(w) => Selection::Weighted(w),
        wit::Selection::PerConnection(w) => Selection::PerConnection { fallback: w },
        wit::Selection::Hashed(h) => Selection::Hashed {
            key: match h.key {
                wit::HashKey::SourceIp => HashKey::SourceIp,
                wit::HashKey::SourceIpPort => HashKey::SourceIpPort,
                wit::HashKey::FiveTuple => HashKey::FiveTuple,
            },
            table: h.table,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_model::{Endpoint, ServicePort};

    #[test]
    fn strings_are_interned_once_each_into_one_string() {
        let ep = |ip: &str, zone: &str, target: &str| Endpoint {
            zone: Some(zone.into()),
            target: Some(target.into()),
            ..Endpoint::ready(ip.parse().unwrap(), 80)
        };
        let port = ServicePortState::new(
            ServicePort::new("10.96.0.1".parse().unwrap(), 80, Protocol::Tcp),
            vec![
                ep("10.0.0.1", "zone-a", "pod-1"),
                ep("10.0.0.2", "zone-a", "pod-2"),
            ],
        );
        let s = snapshot(&port);
        assert_eq!(s.strings, "zone-apod-1pod-2");
        assert_eq!(s.string_ends, [6, 11, 16]);
        let ids: Vec<_> = s.endpoints.iter().map(|e| (e.zone, e.target)).collect();
        assert_eq!(ids, [(Some(0), Some(1)), (Some(0), Some(2))]);
    }
}
