//! Pods → endpoints: a local endpoints controller for Services with a selector.
//!
//! As the EndpointSlice controller does: a Pod is an endpoint when its labels match the
//! selector, it is not in a terminal phase and it has an IP. Its Ready condition sets
//! `ready` (always true with `publishNotReadyAddresses`); a deletion timestamp marks it
//! terminating. A named `targetPort` is resolved against the Pod's container ports of the same
//! protocol; a Pod without such a port is not an endpoint of that service port.
//!
//! Hand-written Pods have no kubelet to report conditions, so a Running Pod with no Ready
//! condition at all is taken as ready.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort as K8sServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{merge, target_port};
use crate::object::ObjectStore;
use wasp_model::categorize::NodeTopology;
use wasp_model::name::Protocol;
use wasp_model::service::Endpoint;

pub(super) fn endpoints(
    store: &ObjectStore,
    svc: &Service,
    port: &K8sServicePort,
    protocol: Protocol,
    node: &NodeTopology,
    out: &mut Vec<Endpoint>,
) {
    let Some(spec) = &svc.spec else { return };
    if spec.selector.is_none() {
        return;
    }
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    for (pod, pod_ready) in selected(store, svc) {
        let Some(target) = resolve_port(pod, port, protocol) else {
            continue;
        };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        for ip in pod_ips(pod) {
            merge(
                out,
                Endpoint {
                    ready: ready(publish_not_ready, pod_ready, terminating),
                    serving: publish_not_ready || pod_ready,
                    terminating,
                    is_local: node_name.as_deref() == Some(node.name.as_str()),
                    node_name: node_name.as_deref().map(Into::into),
                    target: pod.metadata.name.as_deref().map(Into::into),
                    ..Endpoint::ready(ip, target)
                },
            );
        }
    }
}

/// The Pods `svc`'s selector picks that are endpoints (not in a terminal phase), each with
/// whether it is ready.
fn selected<'a>(store: &'a ObjectStore, svc: &'a Service) -> impl Iterator<Item = (&'a Pod, bool)> {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    store.pods_in(ns).filter_map(move |pod| {
        if !crate::object::selects(svc, pod.metadata.labels.as_ref()) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let ready_cond = (status.conditions.iter().flatten()).find(|c| c.type_ == "Ready");
        let pod_ready = match ready_cond {
            Some(c) => c.status == "True",
            None => status.phase.as_deref() == Some("Running"),
        };
        Some((pod, pod_ready))
    })
}

/// The EndpointSlice controller's rule: never ready while terminating, unless
/// publishNotReadyAddresses is set.
fn ready(publish_not_ready: bool, pod_ready: bool, terminating: bool) -> bool {
    publish_not_ready || (pod_ready && !terminating)
}

/// The addresses of the ready Pods a Service's selector picks (none without a selector):
/// what the endpoints controller would publish as ready for a headless Service, whatever
/// its ports.
pub fn ready_pod_ips(store: &ObjectStore, svc: &Service) -> Vec<IpAddr> {
    let Some(spec) = svc.spec.as_ref().filter(|s| s.selector.is_some()) else {
        return Vec::new();
    };
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    selected(store, svc)
        .filter(|(pod, pod_ready)| {
            ready(
                publish_not_ready,
                *pod_ready,
                pod.metadata.deletion_timestamp.is_some(),
            )
        })
        .flat_map(|(pod, _)| pod_ips(pod))
        .collect()
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return vec![];
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().and_then(|s| s.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

/// kube's `FindPort`: a number is used as is; a name must match a container port of the same
/// protocol.
fn resolve_port(pod: &Pod, port: &K8sServicePort, protocol: Protocol) -> Option<u16> {
    match target_port(port) {
        IntOrString::Int(n) => u16::try_from(n).ok(),
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
            })
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}
