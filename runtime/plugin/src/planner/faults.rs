//! Faults: backing off (the plugin and each port by its own count), disabling, and what to
//! plan again once a plugin comes back or its file changes.

use std::time::{Duration, Instant};

use wasp_model::ServicePortName;

use super::PluginPlanner;
use super::registry::{PluginSource, Slot, signature};
use crate::instance::CallError;

impl PluginPlanner {
    /// When a failed plugin may next be re-created.
    pub fn next_retry(&self) -> Option<Instant> {
        let max = self.engine.cfg.max_failures;
        let slots = self
            .slots
            .list
            .iter()
            .filter(|s| !s.disabled && s.live.is_none())
            .filter_map(|s| s.retry_at);
        let ports = self
            .ports
            .values()
            .filter(|p| p.fallback.is_some() && p.failures < max)
            .filter_map(|p| p.retry_at);
        slots.chain(ports).min()
    }
    /// The ports to plan again now: those whose plugin file changed (reloaded), and those on a
    /// fallback or without a balancer whose plugin may be retried.
    pub fn replans(&mut self) -> Vec<ServicePortName> {
        let now = Instant::now();
        let mut reloaded = Vec::new();
        for slot in &mut self.slots.list {
            if let PluginSource::File(p) = &slot.source {
                let sig = signature(p);
                if slot.pre.is_some() && sig != slot.signature {
                    tracing::info!(plugin = %slot.name, path = %p.display(), "plugin file changed; reloading");
                    *slot = Slot::new(slot.name.clone(), slot.source.clone());
                    reloaded.push(slot.name.clone());
                }
            }
        }
        let ready =
            |s: &Slot| !s.disabled && (s.live.is_some() || s.retry_at.is_none_or(|t| t <= now));
        let max = self.engine.cfg.max_failures;
        let mut out = Vec::new();
        for (n, p) in &mut self.ports {
            if reloaded.contains(&p.plugin) {
                // A new plugin: every port starts afresh.
                (p.failures, p.retry_at) = (0, None);
            }
            let slot_ready = self.slots.get(&p.plugin).is_some_and(ready);
            let port_ready = !p.backing_off(now) && p.failures < max;
            if reloaded.contains(&p.plugin)
                || ((p.replan || p.fallback.is_some()) && slot_ready && port_ready)
            {
                p.replan = false;
                out.push(n.clone());
            }
        }
        out
    }
    /// The wait after `failures` failures in a row: the configured backoff, doubling, at most
    /// 60 s.
    pub(super) fn backoff(&self, failures: u32) -> Duration {
        self.engine
            .cfg
            .backoff
            .saturating_mul(1 << failures.saturating_sub(1).min(6))
            .min(Duration::from_secs(60))
    }
    /// Records a trap or timeout: poison the instance, back off (the plugin, and the port
    /// whose call failed, each by its own count), maybe disable, and have the plugin's other
    /// ports replayed once it is back.
    pub(super) fn fail(&mut self, plugin: &str, port: &ServicePortName, e: CallError) {
        if matches!(e, CallError::Plugin(_)) {
            self.counters.rejected += 1;
            return;
        }
        self.counters.failures += 1;
        let max = self.engine.cfg.max_failures;
        if let Some(p) = self.ports.get_mut(port) {
            p.failures += 1;
        }
        let port_failures = self.ports.get(port).map_or(0, |p| p.failures);
        let port_backoff = self.backoff(port_failures);
        if let Some(p) = self.ports.get_mut(port) {
            p.retry_at = Some(Instant::now() + port_backoff);
            if p.failures >= max {
                tracing::error!(plugin, %port, failures = p.failures, "the port's plugin calls keep failing; it stays on the default selection until its config or the plugin changes");
            }
        }
        // The plugin as a whole counts a port's first failure of a streak (and failures to
        // instantiate): one port failing again and again is that port's problem, backed off
        // and given up on by its own count, not a reason to take the plugin from its others.
        let first_of_streak = port_failures <= 1;
        let Some(failures) = self
            .slots
            .get(plugin)
            .map(|s| s.failures + u32::from(first_of_streak))
        else {
            return;
        };
        let backoff = self.backoff(failures);
        let Some(slot) = self.slots.get_mut(plugin) else {
            return;
        };
        slot.last_error = e.to_string();
        slot.live = None;
        slot.failures = failures;
        slot.retry_at = Some(Instant::now() + backoff);
        if slot.failures >= max {
            slot.disabled = true;
            tracing::error!(
                plugin,
                failures = slot.failures,
                "plugin disabled after repeated failures; its ports stay on the default selection"
            );
        } else {
            tracing::warn!(plugin, %port, error = %e, retry_in_ms = backoff.as_millis() as u64, "plugin instance poisoned; re-creating with backoff");
        }
        for (n, p) in &mut self.ports {
            if p.plugin == plugin && n != port {
                p.replan = true;
            }
        }
    }
}
