//! The per-port service model and the endpoint model, free of Kubernetes types.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::name::Protocol;

/// The balancer a Service asked for by annotation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BalancerRef {
    /// The plugin's name (`wasp.dev/balancer`).
    pub name: String,
    /// The plugin's config string (`wasp.dev/balancer-config`), empty when absent.
    pub config: String,
}

/// An active health check of a Service's endpoints (`wasp.dev/health-check`): for endpoints
/// no kubelet watches, as on a node without an API server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// What a probe does.
    pub probe: HealthProbe,
    /// Time between probes of one endpoint.
    pub interval: std::time::Duration,
    /// How long one probe may take.
    pub timeout: std::time::Duration,
    /// Successes in a row that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// One health probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthProbe {
    /// A TCP connect.
    Tcp,
    /// An HTTP GET of this path; a 2xx or 3xx answer is healthy.
    Http(String),
}

/// One port of a Service as the dataplane needs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// The cluster IPs, primary first (one per IP family).
    pub cluster_ips: Vec<IpAddr>,
    /// The service port.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
    /// The node port, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`: addresses outside the cluster this node also serves the port on.
    pub external_ips: Vec<IpAddr>,
    /// The LoadBalancer's ingress IPs this node captures (`status.loadBalancer.ingress[].ip`,
    /// without those whose `ipMode` is `Proxy`: the load balancer handles those itself).
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`: the clients the LoadBalancer IPs accept (all when empty).
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `spec.healthCheckNodePort`: where load balancers ask whether this node has a local
    /// endpoint (LoadBalancer Services with `externalTrafficPolicy: Local`).
    pub health_check_node_port: Option<u16>,
    /// ClientIP session affinity timeout in seconds, when affinity is on.
    pub session_affinity_seconds: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_traffic_local: bool,
    /// `externalTrafficPolicy: Local`.
    pub external_traffic_local: bool,
    /// The balancer named by annotation, if any.
    pub balancer: Option<BalancerRef>,
}

impl ServicePort {
    /// Whether traffic reaches the port from outside the cluster: a node port, external IPs or
    /// LoadBalancer IPs.
    pub fn has_external(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    /// A plain ClusterIP port: no node port, affinity, local policies or balancer.
    pub fn new(cluster_ip: IpAddr, port: u16, protocol: Protocol) -> Self {
        Self {
            cluster_ips: vec![cluster_ip],
            port,
            protocol,
            node_port: None,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            load_balancer_source_ranges: Vec::new(),
            health_check_node_port: None,
            session_affinity_seconds: None,
            internal_traffic_local: false,
            external_traffic_local: false,
            balancer: None,
        }
    }
}

/// One backend of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The endpoint's address.
    pub ip: IpAddr,
    /// The endpoint's (resolved, numeric) port.
    pub port: u16,
    /// The endpoint is ready for new connections.
    pub ready: bool,
    /// The endpoint is serving, whether or not it is terminating.
    pub serving: bool,
    /// The endpoint is terminating.
    pub terminating: bool,
    /// The node the endpoint runs on, if known.
    pub node_name: Option<Arc<str>>,
    /// The endpoint's zone, if known.
    pub zone: Option<Arc<str>>,
    /// Topology hints: the zones this endpoint should serve, when the slice has them.
    pub zone_hints: Option<Arc<[Arc<str>]>>,
    /// The endpoint runs on this node.
    pub is_local: bool,
    /// The endpoint's pod or target name, for logs and plugins.
    pub target: Option<Arc<str>>,
}

impl Endpoint {
    /// A ready, serving endpoint with nothing else known, as a test or mirror would make.
    pub fn ready(ip: IpAddr, port: u16) -> Self {
        Self {
            ip,
            port,
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
            zone: None,
            zone_hints: None,
            is_local: false,
            target: None,
        }
    }
}

impl fmt::Display for Endpoint {
    /// Formats as `ip:port`, with brackets for IPv6 (kube-proxy's endpoint string).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.port),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}
