//! EndpointSlices → endpoints, as kube-proxy's EndpointSlice cache reads them.

use std::net::IpAddr;

use super::merge;
use crate::object::ObjectStore;
use wasp_model::categorize::NodeTopology;
use wasp_model::name::{Protocol, ServicePortName};
use wasp_model::service::Endpoint;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Adds the endpoints every slice of `spn`'s Service has for that port (matched by name and
/// protocol). Unset conditions mean ready and serving, and not terminating (KEP-1672).
pub(super) fn endpoints(
    store: &ObjectStore,
    spn: &ServicePortName,
    node: &NodeTopology,
    out: &mut Vec<Endpoint>,
) {
    for slice in store.slices_of(&spn.service) {
        if slice.address_type == "FQDN" {
            continue;
        }
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == spn.port
                && Protocol::parse(p.protocol.as_deref()) == Some(spn.protocol)
        });
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for e in slice.endpoints.iter().flatten() {
            // kube-proxy uses the first address only: the others are the same endpoint.
            let Some(ip) = e.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let cond = e.conditions.as_ref();
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            let hints = e.hints.as_ref().and_then(|h| h.for_zones.as_ref());
            merge(
                out,
                Endpoint {
                    ip,
                    port,
                    ready,
                    serving,
                    terminating,
                    is_local: e.node_name.as_deref() == Some(node.name.as_str()),
                    node_name: e.node_name.clone(),
                    zone: e.zone.clone(),
                    zone_hints: hints.map(|z| z.iter().map(|z| z.name.clone()).collect()),
                    target: e.target_ref.as_ref().and_then(|t| t.name.clone()),
                },
            );
        }
    }
}
