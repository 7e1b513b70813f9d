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
        namespace: name.service.namespace.clone(),
        name: name.service.name.clone(),
        port_name: name.port.clone(),
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

fn intern<'a>(
    s: Option<&'a str>,
    strings: &mut Vec<String>,
    ids: &mut HashMap<&'a str, u32>,
) -> Option<u32> {
    let s = s?;
    Some(*ids.entry(s).or_insert_with(|| {
        strings.push(s.to_string());
        strings.len() as u32 - 1
    }))
}

/// The snapshot passed to `update`, with zones, nodes and targets interned.
pub fn snapshot(port: &ServicePortState) -> wit::Snapshot {
    let mut strings: Vec<String> = Vec::new();
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut endpoints = Vec::with_capacity(port.endpoints.len());
    for e in &port.endpoints {
        endpoints.push(wit::Endpoint {
            address: ip(e.ip),
            port: e.port,
            ready: e.ready,
            serving: e.serving,
            terminating: e.terminating,
            is_local: e.is_local,
            zone: intern(e.zone.as_deref(), &mut strings, &mut ids),
            node: intern(e.node_name.as_deref(), &mut strings, &mut ids),
            target: intern(e.target.as_deref(), &mut strings, &mut ids),
        });
    }
    wit::Snapshot { endpoints, strings }
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
