//! `ProxyState`, the whole resolved model, and the change tracker that diffs two of them.
//!
//! kube-proxy keeps `{previous, current}` per object and drops a change that ends where it
//! started. Diffing two resolved states per service port gives the same result: a port whose
//! resolved form is unchanged is not in the diff, however many object events touched it.

use std::collections::{BTreeMap, BTreeSet};

use crate::categorize::NodeTopology;
use crate::name::ServicePortName;
use crate::service::{Endpoint, ServicePort};

/// One service port with the endpoints its cluster traffic may use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePortState {
    /// The service side.
    pub service: ServicePort,
    /// The endpoints cluster-IP traffic may use, after categorisation, in a stable order.
    pub endpoints: Vec<Endpoint>,
    /// Some endpoint anywhere is usable, even if none is in `endpoints` (traffic policy Local
    /// with no local endpoint): such a port drops instead of rejecting.
    pub has_any_endpoints: bool,
}

/// The resolved model: every service port this node proxies, and the node itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyState {
    /// The service ports, by name.
    pub ports: BTreeMap<ServicePortName, ServicePortState>,
    /// This node as resolution saw it (its name, and its zone from the config or its Node),
    /// for the planner and the plugins.
    pub node: NodeTopology,
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
}

impl ProxyState {
    /// The number of endpoints over all ports.
    pub fn endpoint_count(&self) -> usize {
        self.ports.values().map(|p| p.endpoints.len()).sum()
    }

    /// Diffs `self` (the state last synced) against `next`.
    pub fn diff(&self, next: &ProxyState) -> StateDiff {
        let mut d = StateDiff::default();
        for (name, new) in &next.ports {
            match self.ports.get(name) {
                Some(old) if old == new => {}
                Some(old) => {
                    if old.service != new.service {
                        d.service_changed.insert(name.clone());
                    }
                    d.changed.insert(name.clone());
                }
                None => {
                    d.service_changed.insert(name.clone());
                    d.changed.insert(name.clone());
                }
            }
        }
        for name in self.ports.keys() {
            if !next.ports.contains_key(name) {
                d.removed.insert(name.clone());
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
        ServicePortState {
            service: ServicePort::new("10.96.0.1".parse().unwrap(), 80, Protocol::Tcp),
            endpoints: eps
                .iter()
                .map(|e| Endpoint::ready(e.parse().unwrap(), 8080))
                .collect(),
            has_any_endpoints: !eps.is_empty(),
        }
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
    fn a_change_that_ends_where_it_started_is_dropped() {
        let mut a = ProxyState::default();
        a.ports.insert(name("x"), port(&["10.0.0.1"]));
        let b = a.clone();
        assert!(a.diff(&b).is_empty());
    }
}
