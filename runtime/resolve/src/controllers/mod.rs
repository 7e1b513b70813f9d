//! Resolution: the stored objects → `ProxyState`, as the API server and its controllers would.
//!
//! The service side comes from each Service's spec (cluster IPs allocated when absent). The
//! endpoint side comes from three places, merged and de-duplicated by address and port:
//! EndpointSlices labelled with the Service's name; for a Service with a selector, its Pods
//! (a local endpoints controller, see `pods`); for one without, its v1 Endpoints, mirrored as
//! the API server's mirroring controller does (see `mirror`).

mod mirror;
mod pods;
mod slices;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::allocate::{Allocator, Refusal, Request};
use crate::error::ConfigError;
use crate::object::{ObjectStore, Stored};
use wasp_model::categorize::{NodeTopology, categorize};
use wasp_model::name::{NamespacedName, ObjectRef, Protocol, ServicePortName};
use wasp_model::service::{BalancerRef, Endpoint, ServicePort};
use wasp_model::state::{ProxyState, ServicePortState};

/// The annotation that names a Service's balancer plugin.
pub const BALANCER_ANNOTATION: &str = "wasp.dev/balancer";
/// The annotation that carries the balancer's config string.
pub const BALANCER_CONFIG_ANNOTATION: &str = "wasp.dev/balancer-config";
/// The label that hands a Service to a named proxy (kube-proxy skips such Services).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label that marks a Service headless.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The node label that carries the node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// kube-proxy's default ClientIP affinity timeout.
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

/// What resolution needs to know about this node and this proxy.
#[derive(Debug, Clone, Default)]
pub struct ResolveConfig {
    /// This node, for local endpoints and topology.
    pub node: NodeTopology,
    /// Handle only Services labelled with this proxy name; when `None`, handle only unlabelled
    /// Services (kube-proxy's behaviour).
    pub service_proxy_name: Option<String>,
}

/// Resolves every stored Service into service ports; returns the state and the errors met.
pub fn resolve(
    store: &ObjectStore,
    alloc: &mut Allocator,
    cfg: &ResolveConfig,
) -> (ProxyState, Vec<ConfigError>) {
    let node = node_topology(store, cfg);
    let services: Vec<&Stored<Service>> = store
        .services
        .values()
        .filter(|s| proxied(&s.object, cfg))
        .collect();
    let ips = allocate(alloc, &services);
    let slices = slices::index(store);
    let pods = pods::index(store);
    let mut state = ProxyState {
        node: node.clone(),
        ..ProxyState::default()
    };
    let mut errors = Vec::new();
    for svc in services {
        let name = key(&svc.object);
        let cluster_ips = match &ips[&name] {
            Ok(ips) => ips.clone(),
            Err(r) => {
                errors.push(refusal_error(svc, r));
                continue;
            }
        };
        let Some(spec) = &svc.object.spec else {
            continue;
        };
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
            let spn =
                ServicePortName::new(name.clone(), p.name.clone().unwrap_or_default(), protocol);
            let service = service_port(&svc.object, p, protocol, cluster_ips.clone());
            let mut eps = Vec::new();
            slices::endpoints(&slices, &spn, &node, &mut eps);
            if spec.selector.is_some() {
                pods::endpoints(&pods, &svc.object, p, protocol, &node, &mut eps);
            } else if let Some(e) = store.endpoints.get(&name) {
                mirror::endpoints(&e.object, &spn, &node, &mut eps);
            }
            eps.retain(|e| cluster_ips.iter().any(|ip| ip.is_ipv4() == e.ip.is_ipv4()));
            eps.sort_by_key(|e| (e.ip, e.port));
            let cat = categorize(&eps, &service, &node);
            let endpoints = if service.internal_traffic_local {
                cat.local
            } else {
                cat.cluster
            };
            state.ports.insert(
                spn,
                ServicePortState {
                    service,
                    endpoints,
                    has_any_endpoints: cat.has_any,
                },
            );
        }
    }
    (state, errors)
}

/// kube-proxy skips headless and ExternalName Services, and those handed to another proxy.
fn proxied(svc: &Service, cfg: &ResolveConfig) -> bool {
    let labels = svc.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    if label(HEADLESS_LABEL).is_some()
        || label(SERVICE_PROXY_NAME_LABEL) != cfg.service_proxy_name.as_deref()
    {
        return false;
    }
    let Some(spec) = &svc.spec else { return false };
    spec.type_.as_deref() != Some("ExternalName") && spec.cluster_ip.as_deref() != Some("None")
}

fn key(svc: &Service) -> NamespacedName {
    NamespacedName::new(
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// This node as resolution sees it: the configured name and zone, the zone else from the
/// Node object.
pub fn node_topology(store: &ObjectStore, cfg: &ResolveConfig) -> NodeTopology {
    let mut node = cfg.node.clone();
    if node.zone.is_none() {
        node.zone = store
            .nodes
            .get(&NamespacedName::new("", node.name.clone()))
            .and_then(|n| n.object.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned());
    }
    node
}

fn allocate(
    alloc: &mut Allocator,
    services: &[&Stored<Service>],
) -> BTreeMap<NamespacedName, Result<Vec<IpAddr>, Refusal>> {
    let requests: Vec<Request> = services
        .iter()
        .map(|s| {
            let spec = s.object.spec.as_ref();
            let mut explicit: Vec<IpAddr> = spec
                .and_then(|s| s.cluster_ips.clone())
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            if explicit.is_empty()
                && let Some(ip) = spec.and_then(|s| s.cluster_ip.as_deref()?.parse().ok())
            {
                explicit.push(ip);
            }
            let families = if explicit.is_empty() {
                wanted_families(alloc, s)
            } else {
                vec![]
            };
            Request {
                name: key(&s.object),
                explicit,
                families,
                created: s
                    .object
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_nanosecond()),
            }
        })
        .collect();
    alloc.assign(&requests)
}

/// The families a Service without explicit addresses needs, from ipFamilies and its policy.
fn wanted_families(alloc: &Allocator, s: &Stored<Service>) -> Vec<bool> {
    let spec = s.object.spec.as_ref();
    let mut fams: Vec<bool> = spec
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default()
        .iter()
        .map(|f| f == "IPv4")
        .collect();
    if fams.is_empty() {
        fams.push(alloc.primary_ipv4());
    }
    let dual = matches!(
        spec.and_then(|s| s.ip_family_policy.as_deref()),
        Some("PreferDualStack" | "RequireDualStack")
    );
    if dual && fams.len() == 1 && alloc.has_family(!fams[0]) {
        fams.push(!fams[0]);
    }
    fams
}

fn refusal_error(svc: &Stored<Service>, r: &Refusal) -> ConfigError {
    let object = ObjectRef {
        kind: "Service".into(),
        name: key(&svc.object),
    };
    let message = match r {
        Refusal::Taken { ip, holder } => {
            format!(
                "Invalid value: \"{ip}\": provided IP is already allocated (to Service {holder})"
            )
        }
        Refusal::Exhausted { ipv4 } => format!(
            "Internal error: no free {} address in the service CIDR",
            if *ipv4 { "IPv4" } else { "IPv6" }
        ),
    };
    ConfigError::field(&svc.origin, &object, "spec.clusterIP", message)
}

fn service_port(
    svc: &Service,
    p: &K8sServicePort,
    protocol: Protocol,
    cluster_ips: Vec<IpAddr>,
) -> ServicePort {
    let spec = svc.spec.as_ref();
    let annotation = |k: &str| {
        svc.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(k))
            .cloned()
    };
    let affinity = spec
        .filter(|s| s.session_affinity.as_deref() == Some("ClientIP"))
        .map(|s| {
            s.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref()?.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
    ServicePort {
        cluster_ips,
        port: u16::try_from(p.port).unwrap_or_default(),
        protocol,
        node_port: p
            .node_port
            .and_then(|n| u16::try_from(n).ok())
            .filter(|&n| n != 0),
        session_affinity_seconds: affinity,
        internal_traffic_local: spec.and_then(|s| s.internal_traffic_policy.as_deref())
            == Some("Local"),
        external_traffic_local: spec.and_then(|s| s.external_traffic_policy.as_deref())
            == Some("Local"),
        balancer: annotation(BALANCER_ANNOTATION).map(|name| BalancerRef {
            name,
            config: annotation(BALANCER_CONFIG_ANNOTATION).unwrap_or_default(),
        }),
    }
}

/// The target port of a service port: a number, or a name to resolve against pods.
fn target_port(p: &K8sServicePort) -> IntOrString {
    p.target_port.clone().unwrap_or(IntOrString::Int(p.port))
}

/// Adds `ep` to `eps`; an endpoint already there (same address and port) is replaced only by a
/// ready one, as kube-proxy's EndpointSlice cache does.
fn merge(eps: &mut Vec<Endpoint>, ep: Endpoint) {
    match eps.iter_mut().find(|e| e.ip == ep.ip && e.port == ep.port) {
        Some(old) if ep.ready && !old.ready => *old = ep,
        Some(_) => {}
        None => eps.push(ep),
    }
}

#[cfg(test)]
mod tests;
