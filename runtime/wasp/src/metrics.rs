//! Prometheus metrics, named as kube-proxy's (`kubeproxy_*`) with a `wasp_` prefix.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric wasp exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Time of every sync.
    pub sync_duration: Histogram,
    /// Time of full syncs.
    pub full_sync_duration: Histogram,
    /// Time of partial syncs.
    pub partial_sync_duration: Histogram,
    /// When the last sync succeeded (unix seconds).
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
    /// When the oldest pending change was queued (unix seconds; 0 when none is pending).
    pub last_queued_timestamp: Gauge<f64, AtomicU64>,
    /// Object changes received and not yet synced.
    pub changes_pending: Gauge,
    /// Failed syncs.
    pub sync_failures: Counter,
    /// Service ports programmed.
    pub service_ports: Gauge,
    /// Endpoints programmed.
    pub endpoints: Gauge,
    /// Rules written by the last sync.
    pub rules_written: Gauge,
    /// Current configuration errors.
    pub config_errors: Gauge,
    /// Sources whose watch is failing (their last state stays programmed).
    pub sources_failing: Gauge,
    /// Service ports added, removed or changed on the service side, summed over syncs.
    pub service_changes: Counter,
    /// Service ports whose endpoints (only) changed, summed over syncs.
    pub endpoint_changes: Counter,
    /// Services resolved again, summed over syncs: what a change cost (a full sync resolves
    /// every Service, a partial one only those a change can affect).
    pub services_resolved: Counter,
    /// Plugin traps and timeouts.
    pub plugin_failures: Counter,
    /// Plugin errors and invalid selections.
    pub plugin_rejected: Counter,
    /// Service ports on the default selection because their plugin failed.
    pub plugin_ports_on_fallback: Gauge,
    /// Plugins disabled after repeated failures.
    pub plugins_disabled: Gauge,
    /// The userspace proxy's counters, read at each scrape.
    pub userspace: UserspaceMetrics,
    /// The active health checks'.
    pub checks: crate::checks::CheckMetrics,
}

/// The userspace mode's metrics: copied from the proxy's own counters when /metrics is read.
#[derive(Debug, Default)]
pub struct UserspaceMetrics {
    proxy: std::sync::OnceLock<wasp_proxy::Stats>,
    connections: Counter,
    connect_failures: Counter,
    resets: Counter,
    drained: Counter,
    active: Gauge,
}

/// The health checker's metrics, registered.
fn register_checks(r: &mut Registry) -> crate::checks::CheckMetrics {
    let m = crate::checks::CheckMetrics::default();
    r.register(
        "wasp_endpoint_health_checks",
        "Active health check probes, by result",
        m.checks.clone(),
    );
    r.register(
        "wasp_unhealthy_endpoints",
        "Endpoints the active health checks find unhealthy now",
        m.unhealthy.clone(),
    );
    m
}

impl UserspaceMetrics {
    fn register(r: &mut Registry) -> Self {
        let mut c = |name: &str, help: &str| reg(r, name, help, Counter::default());
        let connections = c(
            "wasp_userspace_connections",
            "Connections the userspace proxy made to an endpoint",
        );
        let connect_failures = c(
            "wasp_userspace_connect_failures",
            "Connects to an endpoint that failed (refused, unreachable, timed out), each attempt",
        );
        let resets = c(
            "wasp_userspace_connections_reset",
            "Client connections reset: every attempt failed, or no service port was found",
        );
        let drained = c(
            "wasp_userspace_connections_drained",
            "Connections closed by the drain timeout after their endpoint was removed",
        );
        let active = reg(
            r,
            "wasp_userspace_active_connections",
            "Connections the userspace proxy holds now",
            Gauge::default(),
        );
        Self {
            proxy: std::sync::OnceLock::new(),
            connections,
            connect_failures,
            resets,
            drained,
            active,
        }
    }

    /// Reads the counters of `proxy` from now on.
    pub fn follow(&self, proxy: wasp_proxy::Stats) {
        let _ = self.proxy.set(proxy);
    }

    /// Brings the metrics up to the proxy's counters.
    fn refresh(&self) {
        let Some(p) = self.proxy.get() else { return };
        let c = p.counters();
        let up = |m: &Counter, v: u64| {
            m.inc_by(v.saturating_sub(m.get()));
        };
        up(&self.connections, c.connections.get());
        up(&self.connect_failures, c.connect_failures.get());
        up(&self.resets, c.exhausted.get() + c.unrouted.get());
        up(&self.drained, c.drained.get());
        self.active.set(c.active.get() as i64);
    }
}

fn sync_buckets() -> Histogram {
    // 1 ms to ~16 s, as kube-proxy's sync histograms span.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Registers `metric` as `name` and hands it back.
fn reg<M: prometheus_client::registry::Metric + Clone>(
    r: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    r.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    // One registration per metric, in the order /metrics lists them: long, and flat on purpose.
    fn default() -> Self {
        let mut r = Registry::default();
        let r = &mut r;
        let m = Self {
            sync_duration: reg(
                r,
                "wasp_sync_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds",
                sync_buckets(),
            ),
            full_sync_duration: reg(
                r,
                "wasp_sync_full_proxy_rules_duration_seconds",
                "Full SyncProxyRules latency in seconds",
                sync_buckets(),
            ),
            partial_sync_duration: reg(
                r,
                "wasp_sync_partial_proxy_rules_duration_seconds",
                "Partial SyncProxyRules latency in seconds",
                sync_buckets(),
            ),
            last_sync_timestamp: reg(
                r,
                "wasp_sync_proxy_rules_last_timestamp_seconds",
                "The last time proxy rules were successfully synced",
                Gauge::default(),
            ),
            last_queued_timestamp: reg(
                r,
                "wasp_sync_proxy_rules_last_queued_timestamp_seconds",
                "The time of the oldest change not yet synced (0 when none)",
                Gauge::default(),
            ),
            changes_pending: reg(
                r,
                "wasp_sync_proxy_rules_changes_pending",
                "Object changes received and not yet synced",
                Gauge::default(),
            ),
            sync_failures: reg(
                r,
                "wasp_sync_proxy_rules_failures",
                "Syncs the dataplane rejected",
                Counter::default(),
            ),
            service_ports: reg(
                r,
                "wasp_programmed_service_ports",
                "Service ports programmed",
                Gauge::default(),
            ),
            endpoints: reg(
                r,
                "wasp_programmed_endpoints",
                "Endpoints programmed",
                Gauge::default(),
            ),
            rules_written: reg(
                r,
                "wasp_sync_proxy_rules_rules_written",
                "Rules written by the last sync",
                Gauge::default(),
            ),
            config_errors: reg(
                r,
                "wasp_config_errors",
                "Objects or files currently rejected",
                Gauge::default(),
            ),
            sources_failing: reg(
                r,
                "wasp_sources_failing",
                "Sources whose watch is failing",
                Gauge::default(),
            ),
            plugin_failures: reg(
                r,
                "wasp_plugin_failures",
                "Plugin traps and timeouts",
                Counter::default(),
            ),
            plugin_rejected: reg(
                r,
                "wasp_plugin_rejected",
                "Plugin errors and invalid selections",
                Counter::default(),
            ),
            plugin_ports_on_fallback: reg(
                r,
                "wasp_plugin_ports_on_fallback",
                "Service ports on the default selection because their plugin failed",
                Gauge::default(),
            ),
            plugins_disabled: reg(
                r,
                "wasp_plugins_disabled",
                "Plugins disabled after repeated failures",
                Gauge::default(),
            ),
            service_changes: reg(
                r,
                "wasp_sync_proxy_rules_service_changes",
                "Service ports added, removed or changed",
                Counter::default(),
            ),
            endpoint_changes: reg(
                r,
                "wasp_sync_proxy_rules_endpoint_changes",
                "Service ports whose endpoints changed",
                Counter::default(),
            ),
            services_resolved: reg(
                r,
                "wasp_services_resolved",
                "Services resolved again (every one on a full sync, those a change affects on a partial one)",
                Counter::default(),
            ),
            userspace: UserspaceMetrics::register(r),
            checks: register_checks(r),
            registry: Registry::default(),
        };
        Self {
            registry: std::mem::take(r),
            ..m
        }
    }
}

impl Metrics {
    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        self.userspace.refresh();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
