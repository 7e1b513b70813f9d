//! `/healthz` and `/metrics` over hyper.
//!
//! `/healthz` has kube-proxy's semantics (`pkg/proxy/healthcheck/proxy_health.go`): healthy
//! unless a change has been queued for longer than twice the sync period without a sync.

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
    inner: Mutex<HealthState>,
}

#[derive(Debug, Default, Clone)]
struct HealthState {
    last_updated: Option<SystemTime>,
    oldest_queued: Option<Instant>,
    config_errors: usize,
    detail: Vec<String>,
}

impl Health {
    /// A health tracker that turns unhealthy after `timeout` (2× the sync period).
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            inner: Mutex::new(HealthState::default()),
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

    /// Records the current configuration errors and degraded-state notes for the detail.
    pub fn set_detail(&self, config_errors: usize, detail: Vec<String>) {
        let mut s = self.lock();
        s.config_errors = config_errors;
        s.detail = detail;
    }

    /// Whether the proxy is healthy, and the JSON body to report.
    pub fn report(&self) -> (bool, String) {
        let s = self.lock().clone();
        let healthy = s.oldest_queued.is_none_or(|q| q.elapsed() <= self.timeout);
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        };
        let detail: Vec<String> = s.detail.iter().map(|d| format!("{d:?}")).collect();
        let body = format!(
            "{{\"healthy\":{healthy},\"lastUpdated\":{},\"currentTime\":{},\"pendingForSeconds\":{},\"configErrors\":{},\"detail\":[{}]}}\n",
            s.last_updated.map_or(0.0, secs),
            secs(SystemTime::now()),
            s.oldest_queued.map_or(0.0, |q| q.elapsed().as_secs_f64()),
            s.config_errors,
            detail.join(",")
        );
        (healthy, body)
    }
}

fn respond(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves `/healthz` and `/metrics` on `addr` until the process ends.
///
/// # Errors
/// Fails when the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /healthz and /metrics");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (health, metrics) = (health.clone(), metrics.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (health, metrics) = (health.clone(), metrics.clone());
                    async move {
                        Ok::<_, Infallible>(match req.uri().path() {
                            "/healthz" | "/livez" => {
                                let (ok, body) = health.report();
                                let code = if ok {
                                    StatusCode::OK
                                } else {
                                    StatusCode::SERVICE_UNAVAILABLE
                                };
                                respond(code, "application/json", body)
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_only_when_a_queued_change_waits_too_long() {
        let h = Health::new(Duration::from_millis(50));
        assert!(h.report().0, "nothing queued");
        h.queued();
        assert!(h.report().0, "queued, within the timeout");
        std::thread::sleep(Duration::from_millis(80));
        let (ok, body) = h.report();
        assert!(!ok, "{body}");
        h.updated();
        assert!(h.report().0);
    }
}
