//! `ProxyState`, the whole resolved model, and the change tracker that diffs two of them.
//!
//! kube-proxy keeps `{previous, current}` per object and drops a change that ends where it
//! started. Diffing two resolved states per service port gives the same result: a port whose
//! resolved form is unchanged is not in the diff, however many object events touched it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::categorize::NodeTopology;
use crate::name::ServicePortName;
use crate::service::{Endpoint, HealthCheck, ServicePort};

/// One service port with the endpoints its traffic may use, after kube-proxy's
/// categorisation.
///
/// `endpoints` holds every endpoint some traffic may use, in a stable order: a Selection's
/// weights and slots refer to these. Which of them a packet may reach depends on where it is
/// going: traffic to a cluster IP uses [`internal`](Self::internal), traffic to a node port,
/// an external IP or a LoadBalancer IP uses [`external`](Self::external); each is the cluster
/// set or the local set, as the Service's traffic policies say.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortState {
    /// The service side.
    pub service: ServicePort,
    /// Every endpoint some traffic may use.
    pub endpoints: Vec<Endpoint>,
    /// The indices (into `endpoints`) of the endpoints cluster-policy traffic uses; empty when
    /// no traffic of the port uses the cluster policy.
    pub cluster: Vec<usize>,
    /// The indices of this node's usable endpoints, for local-policy traffic.
    pub local: Vec<usize>,
    /// Some endpoint anywhere is usable, even if none is in this node's sets (traffic policy
    /// Local with no local endpoint): such a port drops instead of rejecting.
    pub has_any_endpoints: bool,
}

impl ServicePortState {
    /// A port whose traffic all uses the cluster policy, over every one of `endpoints`.
    pub fn new(service: ServicePort, endpoints: Vec<Endpoint>) -> Self {
        Self {
            service,
            cluster: (0..endpoints.len()).collect(),
            local: Vec::new(),
            has_any_endpoints: !endpoints.is_empty(),
            endpoints,
        }
    }

    /// The endpoints traffic to a cluster IP may use (by index).
    pub fn internal(&self) -> &[usize] {
        if self.service.internal_traffic_local {
            &self.local
        } else {
            &self.cluster
        }
    }

    /// The endpoints traffic to a node port, an external IP or a LoadBalancer IP may use.
    pub fn external(&self) -> &[usize] {
        if self.service.external_traffic_local {
            &self.local
        } else {
            &self.cluster
        }
    }
}

/// The resolved model: every service port this node proxies, and the node itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyState {
    /// The service ports, by name.
    pub ports: BTreeMap<ServicePortName, ServicePortState>,
    /// This node as resolution saw it (its name, and its zone from the config or its Node),
    /// for the planner and the plugins.
    pub node: NodeTopology,
    /// The addresses node ports answer on; `None` for every local address (the iptables
    /// mode's default, which matches by address type).
    pub node_port_ips: Option<Vec<IpAddr>>,
    /// The endpoints (address and target port) to probe, with their Service's check: every
    /// endpoint the source gives a Service with a health check, healthy or not.
    pub health_checks: BTreeMap<std::net::SocketAddr, HealthCheck>,
    /// Per port, the endpoints the health checks hold back (for `wasp status`).
    pub held_back: BTreeMap<ServicePortName, Vec<std::net::SocketAddr>>,
}

/// What changed between two states.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDiff {
    /// Ports that are new or whose service side or endpoints changed.
    pub changed: BTreeSet<ServicePortName>,
    /// Ports that no longer exist.
    pub removed: BTreeSet<ServicePortName>,
    /// Of `changed`, the ports whose service side (not only endpoints) changed or that are new.
    pub service_changed: BTreeSet<ServicePortName>,
}

impl StateDiff {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }

    /// Every port that changed or went away.
    pub fn touched(&self) -> impl Iterator<Item = &ServicePortName> {
        self.changed.iter().chain(self.removed.iter())
    }

    /// Records port `name` going from `old` to `new` (`None`: absent); `moved` says the node
    /// port addresses changed, which changes a port with a node port even when it is equal.
    pub fn record(
        &mut self,
        name: &ServicePortName,
        old: Option<&ServicePortState>,
        new: Option<&ServicePortState>,
        moved: bool,
    ) {
        match (old, new) {
            (Some(o), Some(n)) if o == n && !(moved && n.service.node_port.is_some()) => {}
            (Some(o), Some(n)) => {
                if o.service != n.service || (moved && n.service.node_port.is_some()) {
                    self.service_changed.insert(name.clone());
                }
                self.changed.insert(name.clone());
            }
            (None, Some(_)) => {
                self.service_changed.insert(name.clone());
                self.changed.insert(name.clone());
            }
            (Some(_), None) => {
                self.removed.insert(name.clone());
            }
            (None, None) => {}
        }
    }
}

impl ProxyState {
    /// The number of endpoints over all ports.
    pub fn endpoint_count(&self) -> usize {
        self.ports.values().map(|p| p.endpoints.len()).sum()
    }

    /// Diffs `self` (the state last synced) against `next`.
    pub fn diff(&self, next: &ProxyState) -> StateDiff {
        let mut d = StateDiff::default();
        // New node port addresses change every port with a node port.
        let moved = self.node_port_ips != next.node_port_ips;
        for (name, new) in &next.ports {
            d.record(name, self.ports.get(name), Some(new), moved);
        }
        for (name, old) in &self.ports {
            if !next.ports.contains_key(name) {
                d.record(name, Some(old), None, moved);
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::{NamespacedName, Protocol};

    fn port(eps: &[&str]) -> ServicePortState {
        ServicePortState::new(
            ServicePort::new("10.96.0.1".parse().unwrap(), 80, Protocol::Tcp),
            eps.iter()
                .map(|e| Endpoint::ready(e.parse().unwrap(), 8080))
                .collect(),
        )
    }

    fn name(n: &str) -> ServicePortName {
        ServicePortName::new(NamespacedName::new("default", n), "http", Protocol::Tcp)
    }

    #[test]
    fn diff_reports_adds_changes_and_removals() {
        let mut a = ProxyState::default();
        a.ports.insert(name("same"), port(&["10.0.0.1"]));
        a.ports.insert(name("eps"), port(&["10.0.0.1"]));
        a.ports.insert(name("gone"), port(&["10.0.0.1"]));
        let mut b = a.clone();
        b.ports.remove(&name("gone"));
        b.ports.insert(name("eps"), port(&["10.0.0.2"]));
        b.ports.insert(name("new"), port(&[]));
        let d = a.diff(&b);
        assert_eq!(d.changed, [name("eps"), name("new")].into_iter().collect());
        assert_eq!(d.service_changed, [name("new")].into_iter().collect());
        assert_eq!(d.removed, [name("gone")].into_iter().collect());
    }

    #[test]
    fn new_node_port_addresses_change_the_ports_with_node_ports() {
        let mut a = ProxyState::default();
        a.ports.insert(name("plain"), port(&["10.0.0.1"]));
        let mut np = port(&["10.0.0.1"]);
        np.service.node_port = Some(30080);
        a.ports.insert(name("np"), np);
        a.node_port_ips = Some(vec!["10.250.0.1".parse().unwrap()]);
        let mut b = a.clone();
        assert!(a.diff(&b).is_empty());
        b.node_port_ips = Some(vec!["10.250.0.2".parse().unwrap()]);
        let d = a.diff(&b);
        assert_eq!(d.changed, [name("np")].into_iter().collect());
        assert_eq!(d.service_changed, [name("np")].into_iter().collect());
    }

    #[test]
    fn a_change_that_ends_where_it_started_is_dropped() {
        let mut a = ProxyState::default();
        a.ports.insert(name("x"), port(&["10.0.0.1"]));
        let b = a.clone();
        assert!(a.diff(&b).is_empty());
    }
}
