//! `/healthz` and `/metrics` over hyper.
//!
//! `/healthz` has kube-proxy's semantics (`pkg/proxy/healthcheck/proxy_health.go`): healthy
//! unless a change has been queued for longer than twice the sync period without a sync, and
//! the node is eligible (not being deleted). It answers the network, load balancers probing
//! each node, with kube-proxy's body; a client on the node itself also gets the detail
//! (config errors naming files and objects), which stays off the network.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// What `/healthz` reports on.
#[derive(Debug)]
pub struct Health {
    timeout: Duration,
    /// The most detail lines shown; the rest are counted.
    shown: usize,
    inner: Mutex<HealthState>,
}

/// The longest detail line shown, in characters: an error quotes user input.
const DETAIL_CHARS: usize = 1024;

/// The `/healthz` body: kube-proxy's fields, then, for a client on the node, the detail.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    last_updated: String,
    current_time: String,
    node_eligible: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    local: Option<Detail<'a>>,
}

/// What only a client on the node is shown.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail<'a> {
    healthy: bool,
    pending_for_seconds: f64,
    config_errors: usize,
    detail: &'a [String],
    #[serde(skip_serializing_if = "is_zero")]
    detail_omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone)]
struct HealthState {
    last_updated: Option<SystemTime>,
    node_eligible: bool,
    oldest_queued: Option<Instant>,
    config_errors: usize,
    detail: Vec<String>,
    detail_omitted: usize,
    /// Where `/status` asks the sync loop for `wasp status`'s JSON.
    status: Option<StatusRequests>,
}

/// Requests for `wasp status`'s JSON: each carries where to send the answer.
pub type StatusRequests = tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<String>>;

impl Default for HealthState {
    fn default() -> Self {
        Self {
            last_updated: None,
            node_eligible: true,
            oldest_queued: None,
            config_errors: 0,
            detail: Vec::new(),
            detail_omitted: 0,
            status: None,
        }
    }
}

/// A time as RFC 3339 in UTC.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    k8s_openapi::jiff::Timestamp::new(d.as_secs() as i64, d.subsec_nanos() as i32)
        .map(|ts| ts.to_string())
        .unwrap_or_default()
}

impl Health {
    /// A health tracker that turns unhealthy after `timeout` (2× the sync period) and shows at
    /// most `shown` detail lines.
    pub fn new(timeout: Duration, shown: usize) -> Self {
        Self {
            timeout,
            shown,
            inner: Mutex::new(HealthState::default()),
        }
    }

    /// Makes `/status` ask whoever holds the returned receiver (the sync loop): the JSON is
    /// built when asked for, not at every sync.
    pub fn serve_status(
        &self,
    ) -> tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<String>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        self.lock().status = Some(tx);
        rx
    }

    /// `wasp status`'s JSON from the sync loop, which answers between syncs; `{}` when
    /// nothing answers within 30 s.
    async fn status(&self) -> String {
        let Some(tx) = self.lock().status.clone() else {
            return "{}".into();
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if tx.send(reply).await.is_err() {
            return "{}".into();
        }
        match tokio::time::timeout(Duration::from_secs(30), answer).await {
            Ok(Ok(json)) => json,
            _ => "{}".into(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A change was queued; the first one since the last sync starts the clock.
    pub fn queued(&self) {
        let mut s = self.lock();
        s.oldest_queued.get_or_insert_with(Instant::now);
    }

    /// A sync succeeded: nothing is pending.
    pub fn updated(&self) {
        let mut s = self.lock();
        s.last_updated = Some(SystemTime::now());
        s.oldest_queued = None;
    }

    /// Whether the node may take traffic from load balancers: not when its Node object is
    /// being deleted or tainted for deletion (kube-proxy's `nodeEligible`).
    pub fn set_node_eligible(&self, eligible: bool) {
        self.lock().node_eligible = eligible;
    }

    /// Whether the proxy is syncing as it should (the `serviceProxyHealthy` of health check
    /// node ports).
    pub fn healthy(&self) -> bool {
        let s = self.lock();
        s.oldest_queued.is_none_or(|q| q.elapsed() <= self.timeout)
    }

    /// Records the current configuration errors and degraded-state notes for the detail:
    /// the first `shown` of them, each cut to a bounded length; the rest are counted.
    pub fn set_detail(&self, config_errors: usize, mut detail: Vec<String>) {
        let omitted = detail.len().saturating_sub(self.shown);
        detail.truncate(self.shown);
        for d in &mut detail {
            if let Some((cut, _)) = d.char_indices().nth(DETAIL_CHARS) {
                d.truncate(cut);
                d.push('…');
            }
        }
        let mut s = self.lock();
        s.config_errors = config_errors;
        s.detail = detail;
        s.detail_omitted = omitted;
    }

    /// Whether `/healthz` is healthy (syncing, and the node eligible), and the JSON body to
    /// report; `local` adds the detail, for a client on the node.
    pub fn report(&self, local: bool) -> (bool, String) {
        let s = self.lock().clone();
        let syncing = s.oldest_queued.is_none_or(|q| q.elapsed() <= self.timeout);
        let healthy = syncing && s.node_eligible;
        let now = SystemTime::now();
        // As kube-proxy: a healthy proxy reports itself updated now.
        let last = if healthy { Some(now) } else { s.last_updated };
        let body = Body {
            last_updated: last.map(rfc3339).unwrap_or_default(),
            current_time: rfc3339(now),
            node_eligible: s.node_eligible,
            local: local.then(|| Detail {
                healthy,
                pending_for_seconds: s.oldest_queued.map_or(0.0, |q| q.elapsed().as_secs_f64()),
                config_errors: s.config_errors,
                detail: &s.detail,
                detail_omitted: s.detail_omitted,
            }),
        };
        let body = serde_json::to_string(&body).unwrap_or_default() + "\n";
        (healthy, body)
    }
}

/// A response with `ctype`, and `nosniff` as kube-proxy sends.
pub fn respond(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    r
}

/// Binds the listener `what` is served on; the error names the address and the setting.
///
/// # Errors
/// Fails when the address cannot be bound, saying which flag and field set it and, beside
/// kube-proxy (`service_proxy_name`), that kube-proxy's own `/healthz` is on 10256 too.
pub async fn bind(
    addr: SocketAddr,
    setting: &str,
    beside_kube_proxy: bool,
) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let mut msg = format!("cannot listen on {addr} ({setting}): {e}");
        if beside_kube_proxy && e.kind() == std::io::ErrorKind::AddrInUse {
            msg.push_str(
                "; beside kube-proxy (--service-proxy-name) the ports are kube-proxy's too \
                 (its /healthz is on 10256, its /metrics on 10249): give wasp its own",
            );
        }
        anyhow::anyhow!(msg)
    })
}

/// Serves `/healthz`, `/metrics` and (to loopback clients) `/status` on `listener` until the
/// process ends.
pub fn serve(listener: TcpListener, health: Arc<Health>, metrics: Arc<Metrics>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /healthz and /metrics");
    }
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let local = peer.ip().to_canonical().is_loopback();
            let (health, metrics) = (health.clone(), metrics.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (health, metrics) = (health.clone(), metrics.clone());
                    async move {
                        Ok::<_, Infallible>(match req.uri().path() {
                            "/healthz" | "/livez" => {
                                let (ok, body) = health.report(local);
                                let code = if ok {
                                    StatusCode::OK
                                } else {
                                    StatusCode::SERVICE_UNAVAILABLE
                                };
                                respond(code, "application/json", body)
                            }
                            // The admin endpoint of `wasp status`: it names files and
                            // objects, so only to the node itself.
                            "/status" if local => {
                                respond(StatusCode::OK, "application/json", health.status().await)
                            }
                            "/metrics" => respond(
                                StatusCode::OK,
                                "text/plain; version=0.0.4",
                                metrics.encode(),
                            ),
                            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
                        })
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_json_whatever_the_names_hold_and_its_size_is_bounded() {
        let h = Health::new(Duration::from_secs(1), 3);
        let hostile = [
            "a\u{0}b",
            "\u{1}\u{1f}\u{7f}",
            "q\"uote\\",
            "\u{a0}\u{200b}\u{feff}",
            "\u{202e}x",
        ];
        let mut detail: Vec<String> = hostile
            .iter()
            .map(|s| format!("Service {s}: bad"))
            .collect();
        detail.push("x".repeat(100_000));
        h.set_detail(detail.len(), detail);
        let (_, body) = h.report(true);
        let v: serde_json::Value = serde_json::from_str(&body).expect(&body);
        assert_eq!(v["detail"][0], "Service a\u{0}b: bad");
        assert_eq!(v["detail"].as_array().unwrap().len(), 3);
        assert_eq!(v["detailOmitted"], 3);
        assert_eq!(v["configErrors"], 6);
        h.set_detail(1, vec!["y".repeat(100_000)]);
        assert!(h.report(true).1.len() < 2 * DETAIL_CHARS + 300);
        // Off the node: kube-proxy's fields and nothing that names a file or object.
        let v: serde_json::Value = serde_json::from_str(&h.report(false).1).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["currentTime", "lastUpdated", "nodeEligible"]);
    }

    #[test]
    fn unhealthy_only_when_a_queued_change_waits_too_long() {
        let h = Health::new(Duration::from_millis(50), 100);
        assert!(h.report(false).0, "nothing queued");
        h.queued();
        assert!(h.report(false).0, "queued, within the timeout");
        std::thread::sleep(Duration::from_millis(80));
        let (ok, body) = h.report(false);
        assert!(!ok, "{body}");
        h.updated();
        assert!(h.report(false).0);
        h.set_node_eligible(false);
        let (ok, body) = h.report(false);
        assert!(!ok && body.contains("\"nodeEligible\":false"), "{body}");
    }
}
