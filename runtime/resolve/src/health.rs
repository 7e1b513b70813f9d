//! The `wasp.dev/health-check*` annotations: a Service's active health check.
//!
//! - `wasp.dev/health-check`: `tcp` (a connect) or `http:<path>` (a GET; 2xx and 3xx are
//!   healthy);
//! - `wasp.dev/health-check-interval` (default 5s), `…-timeout` (1s, at most the interval):
//!   durations such as
//!   `500ms`, `5s`, `1m`;
//! - `wasp.dev/health-check-healthy-threshold`, `…-unhealthy-threshold` (2 each): counts.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use wasp_model::{HealthCheck, HealthProbe};

/// The annotation that turns a Service's health check on.
pub const HEALTH_CHECK_ANNOTATION: &str = "wasp.dev/health-check";
const INTERVAL: &str = "wasp.dev/health-check-interval";
const TIMEOUT: &str = "wasp.dev/health-check-timeout";
const HEALTHY: &str = "wasp.dev/health-check-healthy-threshold";
const UNHEALTHY: &str = "wasp.dev/health-check-unhealthy-threshold";

/// What is wrong with one annotation: its name and the message.
pub type AnnotationError = (&'static str, String);

/// A duration as `500ms`, `5s`, `2m` or `1h`.
fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// The Service's health check: `None` when it asks for none.
///
/// # Errors
/// The first annotation whose value cannot be used, with why.
pub fn health_check(svc: &Service) -> Result<Option<HealthCheck>, AnnotationError> {
    let empty = BTreeMap::new();
    let a = svc.metadata.annotations.as_ref().unwrap_or(&empty);
    let Some(kind) = a.get(HEALTH_CHECK_ANNOTATION) else {
        for k in [INTERVAL, TIMEOUT, HEALTHY, UNHEALTHY] {
            if a.contains_key(k) {
                return Err((k, format!("needs {HEALTH_CHECK_ANNOTATION}")));
            }
        }
        return Ok(None);
    };
    let probe = match kind.trim() {
        "tcp" => HealthProbe::Tcp,
        k => match k.strip_prefix("http:") {
            Some(path) if path.starts_with('/') && !path.contains(char::is_whitespace) => {
                HealthProbe::Http(path.to_string())
            }
            _ => {
                let why = format!("Unsupported value: {k:?}: use \"tcp\" or \"http:/PATH\"");
                return Err((HEALTH_CHECK_ANNOTATION, why));
            }
        },
    };
    let time = |k: &'static str, default: u64| match a.get(k) {
        None => Ok(Duration::from_millis(default)),
        Some(v) => duration(v).ok_or((
            k,
            format!("Invalid value: {v:?}: a duration such as 500ms, 5s or 1m"),
        )),
    };
    let count = |k: &'static str| match a.get(k) {
        None => Ok(2),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or((k, format!("Invalid value: {v:?}: a count from 1 to 100"))),
    };
    let interval = time(INTERVAL, 5000)?;
    let check = HealthCheck {
        probe,
        interval,
        // The default is 1 s, or the interval when that is shorter.
        timeout: time(TIMEOUT, 1000.min(interval.as_millis() as u64))?,
        healthy_threshold: count(HEALTHY)?,
        unhealthy_threshold: count(UNHEALTHY)?,
    };
    if check.timeout > check.interval {
        return Err((TIMEOUT, "Invalid value: longer than the interval".into()));
    }
    Ok(Some(check))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(annotations: &[(&str, &str)]) -> Service {
        let mut s = Service::default();
        s.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s
    }

    #[test]
    fn annotations_give_a_check_or_name_what_is_wrong() {
        assert_eq!(health_check(&svc(&[])), Ok(None));
        let c = health_check(&svc(&[
            (HEALTH_CHECK_ANNOTATION, "http:/healthz"),
            (INTERVAL, "500ms"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(c.probe, HealthProbe::Http("/healthz".into()));
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(
            c.timeout,
            Duration::from_millis(500),
            "capped by the interval"
        );
        assert_eq!((c.healthy_threshold, c.unhealthy_threshold), (2, 2));
        for (bad, named) in [
            (
                vec![(HEALTH_CHECK_ANNOTATION, "udp")],
                HEALTH_CHECK_ANNOTATION,
            ),
            (
                vec![(HEALTH_CHECK_ANNOTATION, "http:healthz")],
                HEALTH_CHECK_ANNOTATION,
            ),
            (
                vec![(HEALTH_CHECK_ANNOTATION, "tcp"), (INTERVAL, "5")],
                INTERVAL,
            ),
            (
                vec![(HEALTH_CHECK_ANNOTATION, "tcp"), (UNHEALTHY, "0")],
                UNHEALTHY,
            ),
            (
                vec![(HEALTH_CHECK_ANNOTATION, "tcp"), (TIMEOUT, "10s")],
                TIMEOUT,
            ),
            (vec![(HEALTHY, "3")], HEALTHY),
        ] {
            assert_eq!(health_check(&svc(&bad)).unwrap_err().0, named, "{bad:?}");
        }
    }
}

#[cfg(test)]
mod resolution {
    use std::net::SocketAddr;

    use k8s_openapi::api::core::v1::Endpoints;

    use crate::error::Origin;
    use crate::object::Object;
    use crate::validate::ValidationConfig;
    use crate::{Allocator, ObjectStore, ResolveConfig, resolve};

    const YAML: &str = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "annotations": {"wasp.dev/health-check": "tcp"}}, "spec": {"clusterIP": "10.96.0.70", "ports": [{"port": 80}]}}"#;
    const EPS: &str = r#"{"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.244.0.2"}, {"ip": "10.244.0.3"}], "ports": [{"port": 80}]}]}"#;

    #[test]
    fn an_unhealthy_endpoint_is_not_used_but_still_probed() {
        let mut store = ObjectStore::new(ValidationConfig::default());
        let svc = serde_json::from_str(YAML).unwrap();
        store
            .apply(Object::Service(Box::new(svc)), Origin::file("a.yaml", 0))
            .unwrap();
        let eps: Endpoints = serde_json::from_str(EPS).unwrap();
        store
            .apply(Object::Endpoints(Box::new(eps)), Origin::file("a.yaml", 1))
            .unwrap();
        let bad: SocketAddr = "10.244.0.3:80".parse().unwrap();
        let cfg = ResolveConfig {
            unhealthy: [bad].into(),
            ..ResolveConfig::default()
        };
        let (state, errors) = resolve(&store, &mut Allocator::new(vec![]), &cfg);
        assert!(errors.is_empty(), "{errors:?}");
        let port = state.ports.values().next().unwrap();
        let used: Vec<String> = port.endpoints.iter().map(ToString::to_string).collect();
        assert_eq!(used, ["10.244.0.2:80"]);
        let probed: Vec<&SocketAddr> = state.health_checks.keys().collect();
        assert_eq!(
            probed.len(),
            2,
            "the unhealthy one is still probed: {probed:?}"
        );
    }
}
