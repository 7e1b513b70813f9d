//! `wasp status`: what the running daemon serves, from its local admin endpoint (`/status` on
//! the metrics address, 127.0.0.1:10249 by default), as a table or as JSON.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasp_model::ProxyState;

/// The daemon's state as `wasp status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The dataplane mode.
    pub mode: String,
    /// When the last sync succeeded (RFC 3339), if one did.
    pub last_sync: Option<String>,
    /// Every service port.
    pub ports: Vec<PortStatus>,
    /// The current config errors, source problems and plugin notes.
    pub errors: Vec<String>,
}

/// One service port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortStatus {
    /// `namespace/name:port/protocol`.
    pub name: String,
    /// Where it is served: cluster IPs, node port, external and LoadBalancer IPs.
    pub addresses: Vec<String>,
    /// The balancer plugin, if the Service names one.
    pub balancer: Option<String>,
    /// The plugin failed and the port uses equal weights.
    pub on_fallback: bool,
    /// Its endpoints, then the ones its health check holds back.
    pub endpoints: Vec<EndpointStatus>,
}

/// One endpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// `ip:port`.
    pub address: String,
    /// `ready`, `serving`, `terminating` (kube-proxy's conditions), or `not ready`.
    pub readiness: String,
    /// `healthy` or `unhealthy` under an active health check, else `-`.
    pub health: String,
}

fn addr(ip: &std::net::IpAddr, port: u16) -> String {
    SocketAddr::new(*ip, port).to_string()
}

/// The status of `state`, as last programmed.
pub fn build(
    state: &ProxyState,
    mode: &str,
    last_sync: Option<String>,
    on_fallback: &std::collections::BTreeSet<wasp_model::ServicePortName>,
    errors: Vec<String>,
) -> Status {
    let ports = state
        .ports
        .iter()
        .map(|(name, p)| {
            let s = &p.service;
            let mut addresses: Vec<String> =
                s.cluster_ips.iter().map(|ip| addr(ip, s.port)).collect();
            addresses.extend(s.node_port.map(|n| format!("node port {n}")));
            addresses.extend(
                s.external_ips
                    .iter()
                    .chain(&s.load_balancer_ips)
                    .map(|ip| addr(ip, s.port)),
            );
            let checked = |a: SocketAddr| state.health_checks.contains_key(&a);
            let mut endpoints: Vec<EndpointStatus> = p
                .endpoints
                .iter()
                .map(|e| {
                    let a = SocketAddr::new(e.ip, e.port);
                    let readiness = match (e.ready, e.serving, e.terminating) {
                        (true, _, _) => "ready",
                        (false, true, true) => "terminating",
                        (false, true, false) => "serving",
                        _ => "not ready",
                    };
                    EndpointStatus {
                        address: a.to_string(),
                        readiness: readiness.into(),
                        health: if checked(a) { "healthy" } else { "-" }.into(),
                    }
                })
                .collect();
            endpoints.extend(state.held_back.get(name).into_iter().flatten().map(|a| {
                EndpointStatus {
                    address: a.to_string(),
                    readiness: "not ready".into(),
                    health: "unhealthy".into(),
                }
            }));
            PortStatus {
                name: name.to_string(),
                addresses,
                balancer: s.balancer.as_ref().map(|b| b.name.clone()),
                on_fallback: on_fallback.contains(name),
                endpoints,
            }
        })
        .collect();
    Status {
        mode: mode.into(),
        last_sync,
        ports,
        errors,
    }
}

/// The status as a table.
pub fn table(s: &Status) -> String {
    let mut out = String::new();
    let synced = s.last_sync.as_deref().unwrap_or("never");
    let _ = writeln!(
        out,
        "mode {}, last sync {synced}, {} service ports\n",
        s.mode,
        s.ports.len()
    );
    let _ = writeln!(
        out,
        "{:<40} {:<28} {:<20} ENDPOINTS",
        "SERVICE PORT", "ADDRESSES", "BALANCER"
    );
    for p in &s.ports {
        let balancer = match (&p.balancer, p.on_fallback) {
            (Some(b), true) => format!("{b} (fallback)"),
            (Some(b), false) => b.clone(),
            (None, _) => "equal weights".into(),
        };
        let eps: Vec<String> = p
            .endpoints
            .iter()
            .map(|e| match e.health.as_str() {
                "-" => format!("{} {}", e.address, e.readiness),
                h => format!("{} {} {h}", e.address, e.readiness),
            })
            .collect();
        let eps = if eps.is_empty() {
            "none".to_string()
        } else {
            eps.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<40} {:<28} {:<20} {eps}",
            p.name,
            p.addresses.join(" "),
            balancer
        );
    }
    if !s.errors.is_empty() {
        let _ = writeln!(out, "\n{} errors:", s.errors.len());
        for e in &s.errors {
            let _ = writeln!(out, "  {e}");
        }
    }
    out
}

/// Reads the running daemon's status from `admin` (its metrics address).
///
/// # Errors
/// Says that no daemon answers there, or what it answered instead.
pub fn fetch(admin: SocketAddr) -> anyhow::Result<Status> {
    let no_daemon = |e: std::io::Error| {
        anyhow::anyhow!(
            "no wasp daemon answers at {admin} ({e}); is `wasp run` running on this node, with this --metrics-bind-address?"
        )
    };
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2)).map_err(no_daemon)?;
    // The daemon answers between syncs, and waits up to 30 s for a sync to end.
    s.set_read_timeout(Some(Duration::from_secs(35)))?;
    write!(s, "GET /status HTTP/1.0\r\nHost: {admin}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        anyhow::bail!(
            "{admin} answered {:?}, not a wasp status",
            head.lines().next().unwrap_or("")
        );
    }
    serde_json::from_str(body).map_err(|e| anyhow::anyhow!("{admin}: not a wasp status: {e}"))
}
