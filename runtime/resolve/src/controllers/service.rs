//! The service side of resolution: a Service's addresses (cluster IPs allocated when absent,
//! external IPs, the LoadBalancer's ingress IPs), its node ports (allocated when absent, in
//! static mode), and each port's policies, as the dataplane needs them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServicePort as K8sServicePort};
use wasp_model::name::{NamespacedName, ObjectRef, Protocol};
use wasp_model::service::{BalancerRef, ServicePort};

use super::{BALANCER_ANNOTATION, BALANCER_CONFIG_ANNOTATION, DEFAULT_AFFINITY_SECONDS, key};
use crate::allocate::{Allocator, PortRefusal, PortRequest, Refusal, Request};
use crate::error::ConfigError;
use crate::object::Stored;

/// The annotation older clusters give the LoadBalancer source ranges in (the field wins).
pub const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

/// The key of a port's node port in the allocator: its name and protocol.
fn port_key(p: &K8sServicePort) -> String {
    format!(
        "{}/{}",
        p.name.as_deref().unwrap_or_default(),
        p.protocol.as_deref().unwrap_or("TCP")
    )
}

/// The key of a Service's health check node port in the allocator.
const HEALTH_CHECK: &str = "healthCheckNodePort";

fn created(s: &Stored<Service>) -> Option<i128> {
    s.object
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_nanosecond())
}

/// Node ports by Service and port key (or `healthCheckNodePort`), as allocated.
pub(super) type NodePortMap = BTreeMap<(NamespacedName, String), Result<u16, PortRefusal>>;

/// What a Service asks of the allocators: its cluster IP request and its node port requests.
/// A change of these is the only Service change that can move another Service's addresses.
pub(super) type AllocInputs = (Request, Vec<PortRequest>);

/// A Service's requests to the allocators.
pub(super) fn alloc_inputs(alloc: &Allocator, s: &Stored<Service>) -> AllocInputs {
    (request(alloc, s), port_requests(s))
}

/// A Service's cluster IP request: its explicit addresses, else the families it needs.
fn request(alloc: &Allocator, s: &Stored<Service>) -> Request {
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
        created: created(s),
    }
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

pub(super) fn refusal_error(svc: &Stored<Service>, r: &Refusal) -> ConfigError {
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

/// Whether a Service's type gives it node ports.
fn wants_node_ports(svc: &Service) -> bool {
    let Some(spec) = &svc.spec else { return false };
    match spec.type_.as_deref() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    }
}

/// Whether a Service gets a health check node port: LoadBalancer with policy Local.
fn wants_health_check(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer")
            && s.external_traffic_policy.as_deref() == Some("Local")
    })
}

/// A Service's node port requests: one per port when its type gives node ports, and its
/// health check node port.
fn port_requests(s: &Stored<Service>) -> Vec<PortRequest> {
    let mut requests = Vec::new();
    let spec = s.object.spec.as_ref();
    let given = |n: Option<i32>| n.and_then(|n| u16::try_from(n).ok()).filter(|&n| n != 0);
    if wants_node_ports(&s.object) {
        for p in spec.and_then(|s| s.ports.as_ref()).into_iter().flatten() {
            requests.push(PortRequest {
                service: key(&s.object),
                key: port_key(p),
                explicit: given(p.node_port),
                created: created(s),
            });
        }
    }
    if wants_health_check(&s.object) {
        requests.push(PortRequest {
            service: key(&s.object),
            key: HEALTH_CHECK.into(),
            explicit: given(spec.and_then(|s| s.health_check_node_port)),
            created: created(s),
        });
    }
    requests
}

/// The error for a node port that could not be given.
pub(super) fn port_refusal_error(
    svc: &Stored<Service>,
    field: String,
    r: &PortRefusal,
) -> ConfigError {
    let object = ObjectRef {
        kind: "Service".into(),
        name: key(&svc.object),
    };
    let message = match r {
        PortRefusal::Taken { port, holder } => {
            format!(
                "Invalid value: {port}: provided port is already allocated (to Service {holder})"
            )
        }
        PortRefusal::OutOfRange { port } => {
            format!("Invalid value: {port}: provided port is not in the valid range of node ports")
        }
        PortRefusal::Exhausted => "Internal error: no free node port in the range".into(),
    };
    ConfigError::field(&svc.origin, &object, field, message)
}

/// The port's node port and the Service's health check node port, from the allocation;
/// `Err` with the error to report when one was refused.
pub(super) fn port_of(
    svc: &Stored<Service>,
    index: usize,
    p: &K8sServicePort,
    ports: &NodePortMap,
) -> Result<(Option<u16>, Option<u16>), Box<ConfigError>> {
    let name = key(&svc.object);
    let get = |k: String, field: String| match ports.get(&(name.clone(), k)) {
        None => Ok(None),
        Some(Ok(p)) => Ok(Some(*p)),
        Some(Err(r)) => Err(Box::new(port_refusal_error(svc, field, r))),
    };
    let node_port = get(port_key(p), format!("spec.ports[{index}].nodePort"))?;
    let health = get(HEALTH_CHECK.into(), "spec.healthCheckNodePort".into())?;
    Ok((node_port, health))
}

/// The addresses outside the cluster the Service is reached at on this node.
fn external_addresses(svc: &Service) -> (Vec<IpAddr>, Vec<IpAddr>, Vec<IpNet>) {
    let Some(spec) = &svc.spec else {
        return Default::default();
    };
    let external = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|s| s.parse().ok())
        .collect();
    let lb = spec.type_.as_deref() == Some("LoadBalancer");
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref()?.ingress.as_ref())
        .into_iter()
        .flatten()
        // ipMode Proxy: the load balancer proxies to the node itself; capturing the IP here
        // would short-circuit traffic the load balancer means to see (KEP-1860).
        .filter(|i| lb && i.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect();
    let mut ranges: Vec<String> = spec.load_balancer_source_ranges.clone().unwrap_or_default();
    if ranges.is_empty()
        && let Some(a) = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION))
    {
        ranges = a.split(',').map(str::to_string).collect();
    }
    let ranges = if lb {
        ranges
            .iter()
            .filter_map(|r| r.trim().parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    (external, ingress, ranges)
}

/// One port of a Service as the dataplane needs it, with its node port and the Service's
/// health check node port as allocated.
pub(super) fn service_port(
    svc: &Service,
    p: &K8sServicePort,
    protocol: Protocol,
    cluster_ips: Vec<IpAddr>,
    (node_port, health_check_node_port): (Option<u16>, Option<u16>),
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
    let (external_ips, load_balancer_ips, load_balancer_source_ranges) = external_addresses(svc);
    ServicePort {
        cluster_ips,
        port: u16::try_from(p.port).unwrap_or_default(),
        protocol,
        node_port,
        external_ips,
        load_balancer_ips,
        load_balancer_source_ranges,
        health_check_node_port,
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
