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
    /// Plugin traps and timeouts.
    pub plugin_failures: Counter,
    /// Plugin errors and invalid selections.
    pub plugin_rejected: Counter,
    /// Service ports on the default selection because their plugin failed.
    pub plugin_ports_on_fallback: Gauge,
    /// Plugins disabled after repeated failures.
    pub plugins_disabled: Gauge,
}

fn sync_buckets() -> Histogram {
    // 1 ms to ~16 s, as kube-proxy's sync histograms span.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            registry: Registry::default(),
            sync_duration: sync_buckets(),
            full_sync_duration: sync_buckets(),
            partial_sync_duration: sync_buckets(),
            last_sync_timestamp: Gauge::default(),
            last_queued_timestamp: Gauge::default(),
            changes_pending: Gauge::default(),
            sync_failures: Counter::default(),
            service_ports: Gauge::default(),
            endpoints: Gauge::default(),
            rules_written: Gauge::default(),
            config_errors: Gauge::default(),
            sources_failing: Gauge::default(),
            service_changes: Counter::default(),
            endpoint_changes: Counter::default(),
            plugin_failures: Counter::default(),
            plugin_rejected: Counter::default(),
            plugin_ports_on_fallback: Gauge::default(),
            plugins_disabled: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "wasp_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "wasp_sync_full_proxy_rules_duration_seconds",
            "Full SyncProxyRules latency in seconds",
            m.full_sync_duration.clone(),
        );
        r.register(
            "wasp_sync_partial_proxy_rules_duration_seconds",
            "Partial SyncProxyRules latency in seconds",
            m.partial_sync_duration.clone(),
        );
        r.register(
            "wasp_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync_timestamp.clone(),
        );
        r.register(
            "wasp_sync_proxy_rules_last_queued_timestamp_seconds",
            "The time of the oldest change not yet synced (0 when none)",
            m.last_queued_timestamp.clone(),
        );
        r.register(
            "wasp_sync_proxy_rules_changes_pending",
            "Object changes received and not yet synced",
            m.changes_pending.clone(),
        );
        r.register(
            "wasp_sync_proxy_rules_failures",
            "Syncs the dataplane rejected",
            m.sync_failures.clone(),
        );
        r.register(
            "wasp_programmed_service_ports",
            "Service ports programmed",
            m.service_ports.clone(),
        );
        r.register(
            "wasp_programmed_endpoints",
            "Endpoints programmed",
            m.endpoints.clone(),
        );
        r.register(
            "wasp_sync_proxy_rules_rules_written",
            "Rules written by the last sync",
            m.rules_written.clone(),
        );
        r.register(
            "wasp_config_errors",
            "Objects or files currently rejected",
            m.config_errors.clone(),
        );
        r.register(
            "wasp_sources_failing",
            "Sources whose watch is failing",
            m.sources_failing.clone(),
        );
        r.register(
            "wasp_plugin_failures",
            "Plugin traps and timeouts",
            m.plugin_failures.clone(),
        );
        r.register(
            "wasp_plugin_rejected",
            "Plugin errors and invalid selections",
            m.plugin_rejected.clone(),
        );
        r.register(
            "wasp_plugin_ports_on_fallback",
            "Service ports on the default selection because their plugin failed",
            m.plugin_ports_on_fallback.clone(),
        );
        r.register(
            "wasp_plugins_disabled",
            "Plugins disabled after repeated failures",
            m.plugins_disabled.clone(),
        );
        r.register(
            "wasp_sync_proxy_rules_service_changes",
            "Service ports added, removed or changed",
            m.service_changes.clone(),
        );
        r.register(
            "wasp_sync_proxy_rules_endpoint_changes",
            "Service ports whose endpoints changed",
            m.endpoint_changes.clone(),
        );
        m
    }
}

impl Metrics {
    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
