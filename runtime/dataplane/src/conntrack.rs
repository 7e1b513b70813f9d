//! Clearing stale UDP flows.
//!
//! UDP has no connection teardown, so conntrack keeps steering a client's datagrams to an
//! endpoint that is gone until the entry times out. kube-proxy deletes those entries after each
//! sync (`pkg/proxy/conntrack/cleanup.go`), and so does wasp: flows to a removed endpoint, and
//! flows to a destination that had no endpoints (they were never NATed) once it gets one. The
//! destinations are every address the port is reached at (cluster IPs, external IPs,
//! LoadBalancer IPs) and its node port, whatever the address.

use std::collections::BTreeSet;
use std::net::IpAddr;

use wasp_model::{Protocol, ProxyState, ServicePort, StateDiff};

use crate::exec::{self, ExecError};
use crate::mode::SyncRequest;

/// Where the flows went.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dest {
    /// `addr:port`.
    Addr(IpAddr, u16),
    /// A node port, on any of the node's addresses of the family (`true` for IPv6).
    NodePort(u16, bool),
}

/// One conntrack deletion: the flows to `dest`, only those NATed to `endpoint` when given.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flush {
    /// Where the flows went.
    pub dest: Dest,
    /// The endpoint that went away; `None` for every flow to `dest`.
    pub endpoint: Option<IpAddr>,
}

/// Every destination of a port, for flows of `ip`'s family.
fn dests(svc: &ServicePort, v6: bool) -> Vec<Dest> {
    let mut out: Vec<Dest> = svc
        .cluster_ips
        .iter()
        .chain(&svc.external_ips)
        .chain(&svc.load_balancer_ips)
        .filter(|ip| ip.is_ipv6() == v6)
        .map(|ip| Dest::Addr(*ip, svc.port))
        .collect();
    out.extend(svc.node_port.map(|np| Dest::NodePort(np, v6)));
    out
}

/// The deletions that a change from `previous` to `state` calls for.
pub fn stale(previous: &ProxyState, state: &ProxyState, diff: &StateDiff) -> BTreeSet<Flush> {
    let mut out = BTreeSet::new();
    for name in diff.touched().filter(|n| n.protocol == Protocol::Udp) {
        let Some(old) = previous.ports.get(name) else {
            continue;
        };
        let new = state.ports.get(name);
        let new_eps: BTreeSet<(IpAddr, u16)> = new
            .iter()
            .flat_map(|p| &p.endpoints)
            .map(|e| (e.ip, e.port))
            .collect();
        for e in old
            .endpoints
            .iter()
            .filter(|e| !new_eps.contains(&(e.ip, e.port)))
        {
            for dest in dests(&old.service, e.ip.is_ipv6()) {
                out.insert(Flush {
                    dest,
                    endpoint: Some(e.ip),
                });
            }
        }
        if let Some(new) = new.filter(|n| old.endpoints.is_empty() && !n.endpoints.is_empty()) {
            for v6 in [false, true] {
                for dest in dests(&new.service, v6) {
                    out.insert(Flush {
                        dest,
                        endpoint: None,
                    });
                }
            }
        }
    }
    out
}

/// The `conntrack -D` arguments of one deletion.
fn args(f: &Flush) -> Vec<String> {
    let v6 = match f.dest {
        Dest::Addr(ip, _) => ip.is_ipv6(),
        Dest::NodePort(_, v6) => v6,
    };
    let mut a: Vec<String> = ["-D", "-f", if v6 { "ipv6" } else { "ipv4" }, "-p", "udp"]
        .map(String::from)
        .to_vec();
    match f.dest {
        Dest::Addr(ip, port) => a.extend([
            "--orig-dst".into(),
            ip.to_string(),
            "--orig-port-dst".into(),
            port.to_string(),
        ]),
        Dest::NodePort(port, _) => a.extend(["--orig-port-dst".into(), port.to_string()]),
    }
    if let Some(ep) = f.endpoint {
        a.extend(["--dst-nat".into(), ep.to_string()]);
    }
    a
}

/// Deletes the flows; a missing conntrack tool is reported once by the caller.
///
/// # Errors
/// Fails when the conntrack tool cannot be run.
pub fn flush(flows: &BTreeSet<Flush>) -> Result<(), ExecError> {
    for f in flows {
        let a = args(f);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        match exec::run("conntrack", &a, None) {
            // conntrack exits 1 when no entry matched: nothing to delete is not a failure.
            Ok(_) | Err(ExecError::Failed { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Clears the flows a sync made stale, warning once when the conntrack tool is missing.
#[derive(Debug, Default)]
pub struct StaleFlows {
    warned: bool,
}

impl StaleFlows {
    /// Clears the flows that `req` made stale.
    pub fn clear(&mut self, req: &SyncRequest<'_>) {
        let diff;
        let diff = match req.diff {
            Some(d) => d,
            None => {
                diff = req.previous.diff(req.state);
                &diff
            }
        };
        let flows = stale(req.previous, req.state, diff);
        if flows.is_empty() {
            return;
        }
        if let Err(e) = flush(&flows) {
            if !self.warned {
                tracing::warn!(error = %e, "cannot clear stale UDP conntrack entries; install conntrack");
            }
            self.warned = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_model::{Endpoint, NamespacedName, ServicePortName, ServicePortState};

    fn state(eps: &[&str]) -> ProxyState {
        let mut svc = ServicePort::new("10.96.0.10".parse().unwrap(), 53, Protocol::Udp);
        svc.external_ips = vec!["192.0.2.5".parse().unwrap()];
        svc.node_port = Some(30053);
        let eps = eps
            .iter()
            .map(|e| Endpoint::ready(e.parse().unwrap(), 5353))
            .collect();
        let mut s = ProxyState::default();
        s.ports.insert(
            ServicePortName::new(NamespacedName::new("kube-system", "dns"), "", Protocol::Udp),
            ServicePortState::new(svc, eps),
        );
        s
    }

    #[test]
    fn a_removed_endpoint_is_flushed_at_every_destination_and_the_node_port() {
        let (a, b) = (state(&["10.244.1.2", "10.244.1.3"]), state(&["10.244.1.3"]));
        let got: Vec<String> = stale(&a, &b, &a.diff(&b))
            .iter()
            .map(|f| args(f).join(" "))
            .collect();
        assert_eq!(
            got,
            [
                "-D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --dst-nat 10.244.1.2",
                "-D -f ipv4 -p udp --orig-dst 192.0.2.5 --orig-port-dst 53 --dst-nat 10.244.1.2",
                "-D -f ipv4 -p udp --orig-port-dst 30053 --dst-nat 10.244.1.2",
            ]
        );
    }

    #[test]
    fn first_endpoints_flush_the_flows_that_were_never_natted() {
        let (a, b) = (state(&[]), state(&["10.244.1.3"]));
        let got: Vec<String> = stale(&a, &b, &a.diff(&b))
            .iter()
            .map(|f| args(f).join(" "))
            .collect();
        assert_eq!(
            got,
            [
                "-D -f ipv4 -p udp --orig-dst 10.96.0.10 --orig-port-dst 53",
                "-D -f ipv4 -p udp --orig-dst 192.0.2.5 --orig-port-dst 53",
                "-D -f ipv4 -p udp --orig-port-dst 30053",
                "-D -f ipv6 -p udp --orig-port-dst 30053",
            ]
        );
    }
}
