//! v1 Endpoints → endpoints, as the API server's EndpointSlice mirroring controller does.
//!
//! The mirroring controller copies a selectorless Service's Endpoints into EndpointSlices:
//! `addresses` become ready endpoints, `notReadyAddresses` not-ready ones, and each subset's
//! ports are matched to the Service's ports by name and protocol. Endpoints labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"` are not mirrored.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Endpoints;

use super::merge;
use wasp_model::categorize::NodeTopology;
use wasp_model::name::{Protocol, ServicePortName};
use wasp_model::service::Endpoint;

/// The label that stops the mirroring controller.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";

pub(super) fn endpoints(
    e: &Endpoints,
    spn: &ServicePortName,
    node: &NodeTopology,
    out: &mut Vec<Endpoint>,
) {
    let skip = e
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL));
    if skip.map(String::as_str) == Some("true") {
        return;
    }
    for subset in e.subsets.iter().flatten() {
        let port = subset.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == spn.port
                && Protocol::parse(p.protocol.as_deref()) == Some(spn.protocol)
        });
        let Some(port) = port.and_then(|p| u16::try_from(p.port).ok()) else {
            continue;
        };
        let groups = [
            (true, &subset.addresses),
            (false, &subset.not_ready_addresses),
        ];
        for (ready, addrs) in groups {
            for a in addrs.iter().flatten() {
                let Ok(ip) = a.ip.parse::<IpAddr>() else {
                    continue;
                };
                merge(
                    out,
                    Endpoint {
                        ready,
                        serving: ready,
                        is_local: a.node_name.as_deref() == Some(node.name.as_str()),
                        node_name: a.node_name.clone(),
                        target: a
                            .target_ref
                            .as_ref()
                            .and_then(|t| t.name.clone())
                            .or(a.hostname.clone()),
                        ..Endpoint::ready(ip, port)
                    },
                );
            }
        }
    }
}
