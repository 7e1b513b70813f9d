//! kube-proxy's endpoint categorisation (`CategorizeEndpoints` in `pkg/proxy/topology.go`).
//!
//! Decides which endpoints cluster traffic and node-local traffic may use, applying traffic
//! policies, topology hints and the fallback to serving-terminating endpoints
//! (KEP-1669, ProxyTerminatingEndpoints).

use crate::service::{Endpoint, ServicePort};

/// The outcome of categorisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Categorized {
    /// Endpoints for traffic policy Cluster.
    pub cluster: Vec<Endpoint>,
    /// Endpoints for traffic policy Local.
    pub local: Vec<Endpoint>,
    /// Every endpoint some traffic may reach.
    pub all_reachable: Vec<Endpoint>,
    /// Some endpoint anywhere is usable.
    pub has_any: bool,
}

/// Where this node is, for topology-aware routing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeTopology {
    /// The node's name.
    pub name: String,
    /// The node's `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
}

fn filter(eps: &[Endpoint], f: impl Fn(&Endpoint) -> bool) -> Vec<Endpoint> {
    eps.iter().filter(|e| f(e)).cloned().collect()
}

/// Topology hints are used only when every ready endpoint has hints and one of them is for
/// this node's zone; otherwise routing would black-hole or skew.
fn can_use_topology(eps: &[Endpoint], node: &NodeTopology) -> bool {
    let Some(zone) = node.zone.as_deref().filter(|z| !z.is_empty()) else {
        return false;
    };
    let mut has_for_zone = false;
    for ep in eps.iter().filter(|e| e.ready) {
        match &ep.zone_hints {
            Some(h) if !h.is_empty() => has_for_zone |= h.iter().any(|z| **z == *zone),
            _ => return false,
        }
    }
    has_for_zone
}

fn in_zone(ep: &Endpoint, node: &NodeTopology) -> bool {
    match (&ep.zone_hints, &node.zone) {
        (Some(h), Some(z)) => h.iter().any(|x| **x == **z),
        _ => false,
    }
}

/// Categorises `eps` for `svc` on `node`, exactly as kube-proxy does.
pub fn categorize(eps: &[Endpoint], svc: &ServicePort, node: &NodeTopology) -> Categorized {
    let mut out = Categorized::default();
    // kube-proxy's UsesClusterEndpoints / UsesLocalEndpoints: external traffic (a node port,
    // external IPs, LoadBalancer IPs) follows the external policy.
    let uses_cluster =
        !svc.internal_traffic_local || (svc.has_external() && !svc.external_traffic_local);
    let uses_local =
        svc.internal_traffic_local || (svc.has_external() && svc.external_traffic_local);

    if uses_cluster {
        let topo = can_use_topology(eps, node);
        out.cluster = filter(eps, |e| e.ready && (!topo || in_zone(e, node)));
        // With no ready endpoint anywhere, fall back to ones that still serve while terminating.
        if out.cluster.is_empty() {
            out.cluster = filter(eps, |e| e.serving && e.terminating);
        }
        out.has_any = !out.cluster.is_empty();
    }
    if !uses_local {
        out.all_reachable = out.cluster.clone();
        return out;
    }

    let (mut local_ready, mut local_terminating) = (false, false);
    for e in eps {
        if e.ready {
            out.has_any = true;
            local_ready |= e.is_local;
        } else if e.serving && e.terminating {
            out.has_any = true;
            local_terminating |= e.is_local;
        }
    }
    if local_ready {
        out.local = filter(eps, |e| e.is_local && e.ready);
    } else if local_terminating {
        out.local = filter(eps, |e| e.is_local && e.serving && e.terminating);
    }
    if !uses_cluster {
        out.all_reachable = out.local.clone();
        return out;
    }
    let mut all = out.cluster.clone();
    for e in &out.local {
        if !all.contains(e) {
            all.push(e.clone());
        }
    }
    out.all_reachable = all;
    out
}

#[cfg(test)]
mod tests;
