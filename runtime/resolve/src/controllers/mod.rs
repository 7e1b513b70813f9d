//! Resolution: the stored objects → `ProxyState`, as the API server and its controllers would.
//!
//! The service side comes from each Service's spec (cluster IPs allocated when absent). The
//! endpoint side comes from three places, merged and de-duplicated by address and port:
//! EndpointSlices labelled with the Service's name; for a Service with a selector, its Pods
//! (a local endpoints controller, see `pods`); for one without, its v1 Endpoints, mirrored as
//! the API server's mirroring controller does (see `mirror`).

mod mirror;
mod pods;
mod resolver;
mod service;
mod slices;

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use wasp_model::categorize::{NodeTopology, categorize};
use wasp_model::name::{NamespacedName, Protocol, ServicePortName};
use wasp_model::service::{Endpoint, HealthCheck, ServicePort};
use wasp_model::state::{ProxyState, ServicePortState};

pub use pods::ready_pod_ips;
pub use resolver::Resolver;
pub use slices::SERVICE_NAME_LABEL;

use crate::allocate::{Allocator, Refusal};
use crate::error::ConfigError;
use crate::object::{ObjectStore, Stored};

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

/// Which addresses node ports answer on (kube-proxy's `nodePortAddresses`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address, loopback included (the iptables mode's default).
    AllLocal,
    /// The node's primary addresses (the nftables mode's default, and `primary`).
    #[default]
    Primary,
    /// The node's addresses inside these CIDRs.
    Cidrs(Vec<IpNet>),
}

/// What resolution needs to know about this node and this proxy.
#[derive(Debug, Clone, Default)]
pub struct ResolveConfig {
    /// This node, for local endpoints and topology.
    pub node: NodeTopology,
    /// Handle only Services labelled with this proxy name; when `None`, handle only unlabelled
    /// Services (kube-proxy's behaviour).
    pub service_proxy_name: Option<String>,
    /// The node's primary addresses as configured (`--node-ip`, else the default route's);
    /// the Node object's InternalIPs are used when this is empty.
    pub node_ips: Vec<IpAddr>,
    /// The host's addresses, for `nodePortAddresses` given as CIDRs.
    pub host_addresses: Vec<IpAddr>,
    /// Where node ports answer.
    pub node_port_addresses: NodePortAddresses,
    /// Endpoints (address and target port) the active health checks found unhealthy: they
    /// count as not ready.
    pub unhealthy: std::collections::HashSet<std::net::SocketAddr>,
}

/// Resolves every stored Service into service ports; returns the state and the errors met.
pub fn resolve(
    store: &ObjectStore,
    alloc: &mut Allocator,
    cfg: &ResolveConfig,
) -> (ProxyState, Vec<ConfigError>) {
    let mut r = Resolver::default();
    r.full(store, alloc, cfg);
    r.into_parts()
}

/// One Service resolved: its ports, the errors met, the endpoints it asks to be probed and,
/// per port, those the probes hold back.
#[derive(Debug, Default)]
struct Resolved {
    ports: Vec<(ServicePortName, ServicePortState)>,
    errors: Vec<ConfigError>,
    checks: Vec<(SocketAddr, HealthCheck)>,
    held: Vec<(ServicePortName, Vec<SocketAddr>)>,
}

/// What resolving one Service needs besides the store: its allocation and this node.
struct Context<'a> {
    ips: Option<&'a Result<Vec<IpAddr>, Refusal>>,
    node_ports: &'a service::NodePortMap,
    node: &'a NodeTopology,
    cfg: &'a ResolveConfig,
}

/// Resolves one (proxied) Service into its service ports.
fn resolve_service(store: &ObjectStore, svc: &Stored<Service>, cx: &Context<'_>) -> Resolved {
    let mut out = Resolved::default();
    let name = key(&svc.object);
    let cluster_ips = match cx.ips {
        Some(Ok(ips)) => ips.clone(),
        Some(Err(r)) => {
            out.errors.push(service::refusal_error(svc, r));
            return out;
        }
        None => return out,
    };
    let Some(spec) = &svc.object.spec else {
        return out;
    };
    let check = crate::health::health_check(&svc.object).ok().flatten();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            continue;
        };
        let ports = match service::port_of(svc, i, p, cx.node_ports) {
            Ok(ports) => ports,
            Err(e) => {
                out.errors.push(*e);
                continue;
            }
        };
        let spn = ServicePortName::new(name.clone(), p.name.clone().unwrap_or_default(), protocol);
        let service = service::service_port(&svc.object, p, protocol, cluster_ips.clone(), ports);
        let mut eps = Vec::new();
        slices::endpoints(store, &spn, cx.node, &mut eps);
        if spec.selector.is_some() {
            pods::endpoints(store, &svc.object, p, protocol, cx.node, &mut eps);
        } else if let Some(e) = store.endpoints.get(&name) {
            mirror::endpoints(&e.object, &spn, cx.node, &mut eps);
        }
        eps.retain(|e| cluster_ips.iter().any(|ip| ip.is_ipv4() == e.ip.is_ipv4()));
        if let Some(check) = &check {
            let held = apply_health(&mut eps, check, cx.cfg, &mut out.checks);
            if !held.is_empty() {
                out.held.push((spn.clone(), held));
            }
        }
        eps.sort_by_key(|e| (e.ip, e.port));
        out.ports.push((spn, port_state(service, &eps, cx.node)));
    }
    out
}

/// Records `eps` for probing with `check`, and marks the unhealthy ones neither ready nor
/// serving, so categorisation treats them as a kubelet's failed readiness probe would.
/// Returns the endpoints held back.
fn apply_health(
    eps: &mut [Endpoint],
    check: &HealthCheck,
    cfg: &ResolveConfig,
    checks: &mut Vec<(SocketAddr, HealthCheck)>,
) -> Vec<SocketAddr> {
    let mut held = Vec::new();
    for e in eps {
        let addr = SocketAddr::new(e.ip, e.port);
        checks.push((addr, check.clone()));
        if cfg.unhealthy.contains(&addr) {
            e.ready = false;
            e.serving = false;
            held.push(addr);
        }
    }
    held
}

/// A port's endpoints after kube-proxy's categorisation: every reachable one, and which of
/// them cluster-policy and local-policy traffic may use.
fn port_state(service: ServicePort, eps: &[Endpoint], node: &NodeTopology) -> ServicePortState {
    let cat = categorize(eps, &service, node);
    let endpoints = cat.all_reachable;
    let at: std::collections::HashMap<&Endpoint, usize> =
        endpoints.iter().enumerate().map(|(i, e)| (e, i)).collect();
    let index = |set: &[Endpoint]| -> Vec<usize> {
        set.iter().filter_map(|e| at.get(e).copied()).collect()
    };
    let (cluster, local) = (index(&cat.cluster), index(&cat.local));
    drop(at);
    ServicePortState {
        cluster,
        local,
        has_any_endpoints: cat.has_any,
        service,
        endpoints,
    }
}

/// The addresses node ports answer on: every local one, the node's primary addresses (as
/// configured, else its Node object's InternalIPs), or its addresses inside the CIDRs.
fn node_port_ips(store: &ObjectStore, cfg: &ResolveConfig) -> Option<Vec<IpAddr>> {
    match &cfg.node_port_addresses {
        NodePortAddresses::AllLocal => None,
        NodePortAddresses::Primary if !cfg.node_ips.is_empty() => Some(cfg.node_ips.clone()),
        NodePortAddresses::Primary => Some(
            store
                .nodes
                .get(&NamespacedName::new("", cfg.node.name.clone()))
                .and_then(|n| n.object.status.as_ref()?.addresses.clone())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect(),
        ),
        NodePortAddresses::Cidrs(cidrs) => Some(
            cfg.host_addresses
                .iter()
                .copied()
                .filter(|ip| cidrs.iter().any(|c| c.contains(ip)))
                .collect(),
        ),
    }
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

/// Whether load balancers may send this node traffic: not when its Node object is being
/// deleted or tainted for deletion by the cluster autoscaler (kube-proxy's `nodeEligible`).
/// A node without a Node object (static mode) is eligible.
pub fn node_eligible(store: &ObjectStore, node: &str) -> bool {
    let Some(n) = store.nodes.get(&NamespacedName::new("", node)) else {
        return true;
    };
    let n = &n.object;
    let tainted = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.key == "ToBeDeletedByClusterAutoscaler");
    n.metadata.deletion_timestamp.is_none() && !tainted
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
