//! Health check node ports: for each LoadBalancer Service with `externalTrafficPolicy: Local`,
//! an HTTP server on its `healthCheckNodePort` that tells load balancers whether this node has
//! a ready local endpoint, as kube-proxy's `pkg/proxy/healthcheck/service_health.go` does.
//!
//! Any path answers: 200 when the Service has a local ready endpoint and the proxy is healthy,
//! else 503, with `X-Load-Balancing-Endpoint-Weight: N` and kube-proxy's tab-indented body.
//! Servers follow the state after every sync: started, stopped, and their counts updated.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use wasp_model::{NamespacedName, ProxyState};

use crate::http::{Health, respond};

/// The body kube-proxy sends, tab-indented, without a final newline.
pub fn body(service: &NamespacedName, local: usize, healthy: bool) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {local},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        q(&service.namespace),
        q(&service.name)
    )
}

/// What each health check node port reports: its Service and the Service's local ready
/// endpoints (distinct address and port, over all its ports).
pub fn wanted(state: &ProxyState) -> BTreeMap<u16, (NamespacedName, usize)> {
    let mut eps: BTreeMap<u16, (NamespacedName, BTreeSet<(IpAddr, u16)>)> = BTreeMap::new();
    for (name, p) in &state.ports {
        let Some(hc) = p.service.health_check_node_port else {
            continue;
        };
        let entry = eps
            .entry(hc)
            .or_insert_with(|| (name.service.clone(), BTreeSet::new()));
        if entry.0 != name.service {
            continue;
        }
        entry.1.extend(
            p.endpoints
                .iter()
                .filter(|e| e.is_local && e.ready)
                .map(|e| (e.ip, e.port)),
        );
    }
    eps.into_iter()
        .map(|(port, (svc, set))| (port, (svc, set.len())))
        .collect()
}

struct Server {
    service: NamespacedName,
    addrs: Vec<SocketAddr>,
    local: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The running health check servers.
pub struct ServiceHealth {
    health: Arc<Health>,
    servers: BTreeMap<u16, Server>,
}

impl ServiceHealth {
    /// No servers yet; `health` says whether the proxy is healthy.
    pub fn new(health: Arc<Health>) -> Self {
        Self {
            health,
            servers: BTreeMap::new(),
        }
    }

    /// The ports served now.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }

    /// Brings the servers in line with `state`; returns a message for each port that could
    /// not be bound (it is tried again on the next sync).
    pub fn sync(&mut self, state: &ProxyState) -> Vec<String> {
        let wanted = wanted(state);
        let addrs = |port: u16| -> Vec<SocketAddr> {
            match &state.node_port_ips {
                Some(ips) if !ips.is_empty() => {
                    ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
                }
                _ => vec![SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)],
            }
        };
        self.servers.retain(|port, s| {
            wanted
                .get(port)
                .is_some_and(|(svc, _)| *svc == s.service && s.addrs == addrs(*port))
        });
        let mut errors = Vec::new();
        for (port, (svc, local)) in wanted {
            if let Some(s) = self.servers.get(&port) {
                s.local.store(local, Ordering::Relaxed);
                continue;
            }
            match self.start(&svc, addrs(port), local) {
                Ok(s) => {
                    tracing::info!(service = %svc, port, "serving the health check node port");
                    self.servers.insert(port, s);
                }
                Err(e) => errors.push(format!(
                    "Service {svc}: spec.healthCheckNodePort: cannot listen on port {port}: {e}"
                )),
            }
        }
        errors
    }

    fn start(
        &self,
        svc: &NamespacedName,
        addrs: Vec<SocketAddr>,
        local: usize,
    ) -> std::io::Result<Server> {
        let counter = Arc::new(AtomicUsize::new(local));
        let mut listeners = Vec::new();
        for a in &addrs {
            listeners.push(bind(*a)?);
        }
        let tasks = listeners
            .into_iter()
            .map(|l| {
                let (svc, counter, health) = (svc.clone(), counter.clone(), self.health.clone());
                tokio::spawn(serve(l, svc, counter, health))
            })
            .collect();
        Ok(Server {
            service: svc.clone(),
            addrs,
            local: counter,
            tasks,
        })
    }
}

/// Binds `addr`; the unspecified IPv6 address falls back to 0.0.0.0 where IPv6 is off.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let l = match std::net::TcpListener::bind(addr) {
        Err(e) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => std::net::TcpListener::bind(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port()),
        )
        .map_err(|_| e)?,
        r => r?,
    };
    l.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(l)
}

async fn serve(
    listener: tokio::net::TcpListener,
    svc: NamespacedName,
    local: Arc<AtomicUsize>,
    health: Arc<Health>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (svc, local, health) = (svc.clone(), local.clone(), health.clone());
        tokio::spawn(async move {
            let handler = service_fn(move |_req| {
                let n = local.load(Ordering::Relaxed);
                let healthy = health.healthy();
                let code = if n > 0 && healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let mut r = respond(code, "application/json", body(&svc, n, healthy));
                if let Ok(v) = n.to_string().parse() {
                    r.headers_mut()
                        .insert("x-load-balancing-endpoint-weight", v);
                }
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_model::{Endpoint, Protocol, ServicePort, ServicePortName, ServicePortState};

    #[test]
    fn the_body_is_kube_proxys() {
        let b = body(&NamespacedName::new("ns", "web"), 2, true);
        assert_eq!(
            b,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"ns\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["localEndpoints"], 2);
    }

    #[test]
    fn local_ready_endpoints_are_counted_once_per_service() {
        let mut state = ProxyState::default();
        let svc = NamespacedName::new("ns", "web");
        for (port, proto) in [("http", Protocol::Tcp), ("dns", Protocol::Udp)] {
            let mut sp = ServicePort::new("10.96.0.1".parse().unwrap(), 80, proto);
            sp.health_check_node_port = Some(30100);
            let ep = |ip: &str, local: bool, ready: bool| Endpoint {
                is_local: local,
                ready,
                ..Endpoint::ready(ip.parse().unwrap(), 8080)
            };
            let eps = vec![
                ep("10.0.0.1", true, true),
                ep("10.0.0.2", true, false),
                ep("10.0.0.3", false, true),
            ];
            state.ports.insert(
                ServicePortName::new(svc.clone(), port, proto),
                ServicePortState::new(sp, eps),
            );
        }
        assert_eq!(wanted(&state), BTreeMap::from([(30100, (svc, 1))]));
    }
}
