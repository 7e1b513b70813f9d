//! The proxy's view of the model: for each address a captured connection may have been sent
//! to, the service port it belongs to, and which of its endpoints that connection may use.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use wasp_model::{HashKey, Protocol, ProxyState, Selection, ServicePortName, ServicePortState};

/// One service port as the proxy serves it.
#[derive(Debug)]
pub(crate) struct Target {
    /// A stable id for the port (its name's hash): affinity and endpoint state are per port.
    pub id: u64,
    pub name: ServicePortName,
    /// Every endpoint, indexed as the model's (and the Selection's) indices.
    pub endpoints: Vec<SocketAddr>,
    pub cluster_ips: Vec<IpAddr>,
    internal: Vec<usize>,
    external: Vec<usize>,
    cluster: Vec<usize>,
    external_local: bool,
    pub weights: Vec<u32>,
    pub hashed: Option<(HashKey, Vec<u32>)>,
    pub affinity: Option<Duration>,
    /// The plugin asked to pick every connection itself.
    pub per_connection: bool,
}

impl Target {
    fn new(name: &ServicePortName, port: &ServicePortState, sel: Option<&Selection>) -> Self {
        let n = port.endpoints.len();
        let equal = Selection::equal(n);
        let sel = sel.filter(|s| s.validate(n).is_ok()).unwrap_or(&equal);
        let svc = &port.service;
        Self {
            id: id_of(name),
            name: name.clone(),
            endpoints: port
                .endpoints
                .iter()
                .map(|e| SocketAddr::new(e.ip, e.port))
                .collect(),
            cluster_ips: svc.cluster_ips.clone(),
            internal: port.internal().to_vec(),
            external: port.external().to_vec(),
            cluster: port.cluster.clone(),
            external_local: svc.external_traffic_local,
            weights: sel.weights(n),
            hashed: match sel {
                Selection::Hashed { key, table } => Some((*key, table.clone())),
                _ => None,
            },
            affinity: svc
                .session_affinity_seconds
                .map(|s| Duration::from_secs(s.into())),
            per_connection: matches!(sel, Selection::PerConnection { .. }),
        }
    }
}

/// A port's id: the hash of its name.
pub(crate) fn id_of(name: &ServicePortName) -> u64 {
    let mut h = DefaultHasher::new();
    name.to_string().hash(&mut h);
    h.finish()
}

/// Where one captured connection goes: its port, and the endpoints (by index) it may use.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub target: Arc<Target>,
    pub candidates: Vec<usize>,
    /// The upstream connection keeps the client's address, where the kernel modes would not
    /// masquerade; else it comes from this node.
    pub keep_client: bool,
}

/// Every captured address, and what the route of a connection depends on.
#[derive(Debug, Default)]
pub(crate) struct Table {
    by_addr: HashMap<(SocketAddr, Protocol), Arc<Target>>,
    /// Node ports that answer on every local address.
    by_node_port: HashMap<(u16, Protocol), Arc<Target>>,
    /// Every port, by its name as plugins see it.
    by_name: HashMap<String, Arc<Target>>,
    /// This node's addresses.
    local: HashSet<IpAddr>,
    cluster_cidrs: Vec<IpNet>,
    masquerade_all: bool,
}

impl Table {
    /// The table for `state`, each port spread as its Selection says.
    pub fn build(
        state: &ProxyState,
        selections: &BTreeMap<ServicePortName, Selection>,
        cluster_cidrs: &[IpNet],
        masquerade_all: bool,
        local: HashSet<IpAddr>,
    ) -> Self {
        let mut t = Self {
            local,
            cluster_cidrs: cluster_cidrs.to_vec(),
            masquerade_all,
            ..Self::default()
        };
        for (name, port) in &state.ports {
            let target = Arc::new(Target::new(name, port, selections.get(name)));
            t.by_name.insert(name.to_string(), Arc::clone(&target));
            let svc = &port.service;
            let proto = svc.protocol;
            let addrs = svc
                .cluster_ips
                .iter()
                .chain(&svc.external_ips)
                .chain(&svc.load_balancer_ips);
            for ip in addrs {
                let key = (SocketAddr::new(*ip, svc.port), proto);
                t.by_addr.insert(key, Arc::clone(&target));
            }
            let Some(np) = svc.node_port else { continue };
            match &state.node_port_ips {
                Some(ips) => {
                    for ip in ips {
                        let key = (SocketAddr::new(*ip, np), proto);
                        t.by_addr.insert(key, Arc::clone(&target));
                    }
                }
                None => {
                    t.by_node_port.insert((np, proto), Arc::clone(&target));
                }
            }
        }
        t
    }

    /// The route of a connection from `client` that was going to `dst`.
    pub fn route(&self, proto: Protocol, dst: SocketAddr, client: SocketAddr) -> Option<Route> {
        let target = match self.by_addr.get(&(dst, proto)) {
            Some(t) => t,
            None if self.local.contains(&dst.ip()) || dst.ip().is_loopback() => {
                self.by_node_port.get(&(dst.port(), proto))?
            }
            None => return None,
        };
        let ip = client.ip();
        let local = ip.is_loopback() || self.local.contains(&ip);
        let (class, keep_client) = if target.cluster_ips.contains(&dst.ip()) {
            (&target.internal, !local && self.unmasqueraded(ip))
        } else if target.external_local {
            // As the kernel modes: pods and the node itself reach every endpoint; only the
            // node's own connections are masqueraded.
            let inside = local || self.in_cluster(ip);
            let class = if inside {
                &target.cluster
            } else {
                &target.external
            };
            (class, !local)
        } else {
            (&target.external, false)
        };
        let candidates = class
            .iter()
            .copied()
            .filter(|&i| target.endpoints[i].is_ipv4() == dst.is_ipv4())
            .collect();
        Some(Route {
            target: Arc::clone(target),
            candidates,
            keep_client,
        })
    }

    fn in_cluster(&self, ip: IpAddr) -> bool {
        self.cluster_cidrs.iter().any(|c| c.contains(&ip))
    }

    /// The kernel modes' masquerade rule for cluster IPs: everything with masquerade-all,
    /// else what comes from outside the family's cluster CIDRs (none given: nothing).
    fn unmasqueraded(&self, ip: IpAddr) -> bool {
        let mut family = self
            .cluster_cidrs
            .iter()
            .filter(|c| c.addr().is_ipv4() == ip.is_ipv4())
            .peekable();
        !self.masquerade_all && (family.peek().is_none() || family.any(|c| c.contains(&ip)))
    }

    /// The number of captured addresses.
    pub fn len(&self) -> usize {
        self.by_addr.len() + self.by_node_port.len()
    }

    /// Every (port id, endpoint) the table holds.
    pub fn endpoints(&self) -> HashSet<(u64, SocketAddr)> {
        self.by_name
            .values()
            .flat_map(|t| t.endpoints.iter().map(|e| (t.id, *e)))
            .collect()
    }

    /// The port named `name` (as `ServicePortName` displays).
    pub fn target(&self, name: &str) -> Option<&Arc<Target>> {
        self.by_name.get(name)
    }
}

/// The hash of what `key` names of a connection, for a hashed Selection's table.
pub(crate) fn hash_of(key: HashKey, client: SocketAddr, dst: SocketAddr, proto: Protocol) -> u64 {
    let mut h = DefaultHasher::new();
    client.ip().hash(&mut h);
    if matches!(key, HashKey::SourceIpPort | HashKey::FiveTuple) {
        client.port().hash(&mut h);
    }
    if key == HashKey::FiveTuple {
        dst.hash(&mut h);
        proto.hash(&mut h);
    }
    h.finish()
}
