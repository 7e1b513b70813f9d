//! EndpointSlices → endpoints, as kube-proxy's EndpointSlice cache reads them.

use super::merge;
use crate::compact::EndpointGroup;
use crate::object::ObjectStore;
use wasp_model::categorize::NodeTopology;
use wasp_model::name::ServicePortName;
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
        group_endpoints(&slice.group, spn, node, out);
    }
}

/// Adds the endpoints of `group` that serve `spn`'s port: none when the group has no port of
/// that name and protocol.
pub(super) fn group_endpoints(
    group: &EndpointGroup,
    spn: &ServicePortName,
    node: &NodeTopology,
    out: &mut Vec<Endpoint>,
) {
    let Some(port) = group.port(&spn.port, spn.protocol) else {
        return;
    };
    for e in &group.endpoints {
        merge(
            out,
            Endpoint {
                ip: e.ip,
                port,
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                is_local: e.node_name.as_deref() == Some(node.name.as_str()),
                node_name: e.node_name.clone(),
                zone: e.zone().cloned(),
                zone_hints: e.zone_hints().cloned(),
                target: e.target.clone(),
            },
        );
    }
}
