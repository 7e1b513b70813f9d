//! Clearing stale UDP flows.
//!
//! UDP has no connection teardown, so conntrack keeps steering a client's datagrams to an
//! endpoint that is gone until the entry times out. kube-proxy deletes those entries after each
//! sync (`pkg/proxy/conntrack/cleanup.go`), and so does wasp: flows to a removed endpoint, and
//! flows to a VIP that had no endpoints (they were never NATed) once it gets one.

use std::collections::BTreeSet;
use std::net::IpAddr;

use wasp_model::{Protocol, ProxyState, StateDiff};

use crate::exec::{self, ExecError};
use crate::mode::SyncRequest;

/// One conntrack deletion.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flush {
    /// Flows to `vip:port` NATed to `endpoint`.
    Nat {
        /// The service VIP.
        vip: IpAddr,
        /// The service port.
        port: u16,
        /// The endpoint address that went away.
        endpoint: IpAddr,
    },
    /// Every flow to `vip:port`.
    Vip {
        /// The service VIP.
        vip: IpAddr,
        /// The service port.
        port: u16,
    },
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
        for vip in &old.service.cluster_ips {
            for e in old
                .endpoints
                .iter()
                .filter(|e| !new_eps.contains(&(e.ip, e.port)))
            {
                out.insert(Flush::Nat {
                    vip: *vip,
                    port: old.service.port,
                    endpoint: e.ip,
                });
            }
            if old.endpoints.is_empty() && new.is_some_and(|n| !n.endpoints.is_empty()) {
                out.insert(Flush::Vip {
                    vip: *vip,
                    port: old.service.port,
                });
            }
        }
    }
    out
}

/// Deletes the flows; a missing conntrack tool is reported once by the caller.
///
/// # Errors
/// Fails when the conntrack tool cannot be run.
pub fn flush(flows: &BTreeSet<Flush>) -> Result<(), ExecError> {
    for f in flows {
        let (vip, port, nat) = match f {
            Flush::Nat {
                vip,
                port,
                endpoint,
            } => (vip, port, Some(endpoint.to_string())),
            Flush::Vip { vip, port } => (vip, port, None),
        };
        let (vip, port) = (vip.to_string(), port.to_string());
        let family = if vip.contains(':') { "ipv6" } else { "ipv4" };
        let mut args = vec![
            "-D",
            "-f",
            family,
            "-p",
            "udp",
            "--orig-dst",
            &vip,
            "--orig-port-dst",
            &port,
        ];
        if let Some(ep) = &nat {
            args.extend(["--dst-nat", ep]);
        }
        match exec::run("conntrack", &args, None) {
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
