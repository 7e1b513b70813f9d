//! v1 Endpoints → endpoints, as the API server's EndpointSlice mirroring controller does.
//!
//! The mirroring controller copies a selectorless Service's Endpoints into EndpointSlices:
//! `addresses` become ready endpoints, `notReadyAddresses` not-ready ones, and each subset's
//! ports are matched to the Service's ports by name and protocol. Endpoints labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"` are not mirrored. The store keeps each
//! subset in the form slices take ([`crate::compact`]), so the reading is the slices' one.

use super::slices::group_endpoints;
use crate::compact::StoredEndpoints;
use wasp_model::categorize::NodeTopology;
use wasp_model::name::ServicePortName;
use wasp_model::service::Endpoint;

pub(super) fn endpoints(
    e: &StoredEndpoints,
    spn: &ServicePortName,
    node: &NodeTopology,
    out: &mut Vec<Endpoint>,
) {
    if e.skip_mirror {
        return;
    }
    for subset in &e.subsets {
        group_endpoints(subset, spn, node, out);
    }
}
