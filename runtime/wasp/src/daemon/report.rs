//! After a sync: the metrics, the health checks, the DNS records and the health check node
//! ports follow what changed; and what the loop reports: `wasp status`'s JSON, the plugin
//! counters, the config errors in `/healthz`.

use std::time::UNIX_EPOCH;

use wasp_model::{ProxyState, StateDiff};

use super::{Daemon, now_secs};

/// Whether `diff` touched a port that has, or had, a health check node port (whose server
/// reports the port's local endpoints).
fn touches_health_ports(state: &ProxyState, previous: &ProxyState, diff: &StateDiff) -> bool {
    diff.touched().any(|n| {
        [state.ports.get(n), previous.ports.get(n)]
            .into_iter()
            .flatten()
            .any(|p| p.service.health_check_node_port.is_some())
    })
}

/// Hands the heap's free pages back to the kernel. A full sync's temporaries (the whole
/// ruleset rendered and encoded at once) leave free memory scattered through the allocator's
/// arenas, which glibc keeps resident otherwise.
pub(super) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Serves every allocation of 128 KiB or more from its own mapping, returned to the kernel
/// when it is freed. glibc otherwise raises that threshold to the size of each large block
/// freed (up to 32 MiB), so after the first full sync its encoded batch and transaction come
/// from the heap and leave it that much larger. At 10,000 Services this took the peak RSS
/// from 184 to 171 MiB.
pub(super) fn keep_large_blocks_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a glibc tunable; it has no preconditions.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

impl Daemon {
    /// After a sync (or a sync with nothing to do): the metrics, the health checks, the DNS
    /// records and the health check node ports follow what `diff` changed (everything on a
    /// full sync).
    pub(super) fn done(&mut self, diff: &StateDiff, previous: &ProxyState, full: bool) {
        let state = self.resolver.state();
        self.pending = 0;
        self.metrics.changes_pending.set(0);
        self.metrics.last_queued_timestamp.set(0.0);
        self.metrics.last_sync_timestamp.set(now_secs());
        self.metrics.service_ports.set(state.ports.len() as i64);
        self.metrics
            .endpoints
            .set(self.resolver.endpoint_count() as i64);
        self.health.updated();
        self.last_sync = Some(k8s_openapi::jiff::Timestamp::now().to_string());
        if self.resolver.checks_version() != self.checks_seen {
            self.checker.update(&state.health_checks);
            self.checks_seen = self.resolver.checks_version();
        }
        if let (Some(dns), Some(cfg)) = (&self.dns, &self.settings.dns) {
            dns.update(
                state,
                &self.store,
                self.resolver.resolved(),
                full,
                &cfg.domain,
            );
        }
        if full || touches_health_ports(state, previous, diff) {
            let errors = self.service_health.sync(state);
            for e in errors.iter().filter(|e| !self.health_errors.contains(e)) {
                tracing::warn!(error = %e, "health check node port not served");
            }
            if errors != self.health_errors {
                self.health_errors = errors;
                self.report_errors();
            }
        }
    }

    /// What `wasp status` shows, as of the last sync.
    pub(super) fn status_json(&self) -> String {
        let errors: Vec<String> = self
            .log
            .all()
            .chain(&self.resolve_errors)
            .map(ToString::to_string)
            .chain(self.planning.planner().status())
            .chain(self.health_errors.iter().cloned())
            .collect();
        let fallback = self.planning.planner().on_fallback();
        let mode = self.settings.mode.to_string();
        let state = self.resolver.state();
        let status = crate::status::build(state, &mode, self.last_sync.clone(), &fallback, errors);
        serde_json::to_string(&status).unwrap_or_default()
    }

    /// Copies the plugin counters into the metrics and the plugin notes into /healthz.
    pub(super) fn report_plugins(&self) {
        let s = self.planning.planner().stats();
        let m = &self.metrics;
        m.plugin_failures
            .inc_by(s.failures.saturating_sub(m.plugin_failures.get()));
        m.plugin_rejected
            .inc_by(s.rejected.saturating_sub(m.plugin_rejected.get()));
        m.plugin_ports_on_fallback.set(s.ports_on_fallback as i64);
        m.plugins_disabled.set(s.disabled as i64);
        self.report_errors();
    }

    /// Shows the current configuration errors in /healthz.
    pub(super) fn report_errors(&self) {
        let mut detail: Vec<String> = self
            .log
            .all()
            .chain(&self.resolve_errors)
            .map(|e| e.to_string())
            .collect();
        let errors = detail.len();
        self.metrics.config_errors.set(errors as i64);
        self.metrics
            .sources_failing
            .set(self.source_problems.len() as i64);
        detail.extend(self.planning.planner().status());
        detail.extend(self.health_errors.iter().cloned());
        detail.extend(self.checker.report());
        for (source, (problem, since)) in &self.source_problems {
            let since = since
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            detail.push(format!("{source}: stale since {since} (unix time), the last state stays programmed: {problem}"));
        }
        self.health.set_detail(errors, detail);
    }
}
