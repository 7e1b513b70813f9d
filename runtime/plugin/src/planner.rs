//! `PluginPlanner`: the planner the daemon uses. Ports without a `wasp.dev/balancer`
//! annotation get equal weights; the others ask their plugin, and fall back to equal weights at
//! once when it traps, times out, errs or returns an invalid selection.
//!
//! # Layout
//! - `registry`: the plugins (source, compiled form, live instance) and the ports using them.
//! - `faults`: backoff per plugin and per port, disabling, and what to plan again.
//! - `pick`: per-connection picks for the userspace mode.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use wasp_model::categorize::NodeTopology;
use wasp_model::{EqualWeights, Planner, Selection, ServicePortName, ServicePortState};

use crate::engine::{EngineConfig, LoadError, PluginEngine};
use crate::instance::Live;
use crate::state::{NoStats, StatsSource};

mod faults;
mod pick;
mod registry;

pub use pick::PickHandle;
pub use registry::PluginSource;
use registry::{Ids, Port, Slots};

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Traps and timeouts.
    pub failures: u64,
    /// Invalid selections and plugin-reported errors.
    pub rejected: u64,
    /// Ports now on the default selection because of their plugin.
    pub ports_on_fallback: usize,
    /// Plugins disabled after repeated failures.
    pub disabled: usize,
}

/// The plugin planner.
pub struct PluginPlanner {
    engine: PluginEngine,
    node: NodeTopology,
    slots: Slots,
    ports: BTreeMap<ServicePortName, Port>,
    stats_source: Arc<dyn StatsSource>,
    counters: PluginStats,
    ids: Ids,
}

impl PluginPlanner {
    /// A planner with the built-ins and the `extra` plugins (name → .wasm path); an extra may
    /// replace a built-in of the same name. Nothing is compiled until first use.
    ///
    /// # Errors
    /// Fails when the engine cannot be built.
    pub fn new(cfg: EngineConfig, extra: BTreeMap<String, PathBuf>) -> Result<Self, LoadError> {
        let mut slots = Slots::default();
        let sources = crate::builtin::BUILTINS
            .iter()
            .map(|(n, b)| (n.to_string(), PluginSource::Builtin(b)))
            .chain(extra.into_iter().map(|(n, p)| (n, PluginSource::File(p))));
        for (name, source) in sources {
            slots.add(name, source);
        }
        Ok(Self {
            engine: PluginEngine::new(cfg)?,
            node: NodeTopology::default(),
            slots,
            ports: BTreeMap::new(),
            stats_source: Arc::new(NoStats),
            counters: PluginStats::default(),
            ids: Ids::default(),
        })
    }
    /// Sets this node's name and zone, which plugins are told.
    pub fn set_node(&mut self, node: NodeTopology) {
        self.node = node;
    }
    /// Sets where live endpoint stats come from.
    pub fn set_stats_source(&mut self, s: Arc<dyn StatsSource>) {
        self.stats_source = s;
    }
    /// The counters.
    pub fn stats(&self) -> PluginStats {
        PluginStats {
            ports_on_fallback: self.ports.values().filter(|p| p.fallback.is_some()).count(),
            disabled: self.slots.list.iter().filter(|s| s.disabled).count(),
            ..self.counters.clone()
        }
    }
    /// The ports on the default selection because their plugin failed.
    pub fn on_fallback(&self) -> std::collections::BTreeSet<ServicePortName> {
        self.ports
            .iter()
            .filter(|(_, p)| p.fallback.is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// One line per port on the default selection and per disabled plugin, for /healthz.
    pub fn status(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ports
            .iter()
            .filter_map(|(n, p)| {
                let r = p.fallback.as_ref()?;
                let plugin = &p.plugin;
                Some(if p.failures >= self.engine.cfg.max_failures {
                    format!(
                        "plugin {plugin}: {n} on the default selection, given up after {} failures in a row until its config or the plugin changes: {r}",
                        p.failures
                    )
                } else {
                    format!("plugin {plugin}: {n} on the default selection: {r}")
                })
            })
            .collect();
        out.extend(
            self.slots
                .index
                .values()
                .map(|&i| &self.slots.list[i])
                .filter(|s| s.disabled)
                .map(|s| format!("plugin {}: disabled after {} failures", s.name, s.failures)),
        );
        out
    }
    fn try_plan(
        &mut self,
        name: &ServicePortName,
        port: &ServicePortState,
        plugin: &str,
        config: &str,
    ) -> Result<Selection, String> {
        self.load(plugin)?;
        let max = self.engine.cfg.max_failures;
        if let Some(p) = self.ports.get(name) {
            if p.failures >= max {
                return Err(format!(
                    "given up after {} failures in a row; the last: {}",
                    p.failures,
                    self.slots.get(plugin).map_or("", |s| s.last_error.as_str())
                ));
            }
            if let Some(t) = p.retry_at.filter(|_| p.backing_off(Instant::now())) {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                return Err(format!(
                    "backing off after {} failures in a row (retry in {ms} ms)",
                    p.failures
                ));
            }
        }
        let stats = self.stats_source.clone();
        let slot = self
            .slots
            .get_mut(plugin)
            .ok_or_else(|| format!("unknown balancer {plugin:?}"))?;
        if slot.disabled {
            return Err(format!(
                "plugin disabled after {} failures; the last: {}",
                slot.failures, slot.last_error
            ));
        }
        if slot.live.is_none() {
            if let Some(t) = slot.retry_at.filter(|t| *t > Instant::now()) {
                let ms = t.saturating_duration_since(Instant::now()).as_millis();
                return Err(format!(
                    "{} (plugin restarting in {ms} ms)",
                    slot.last_error
                ));
            }
            let pre = slot.pre.as_ref().ok_or("plugin not loaded")?;
            match Live::new(&self.engine, plugin, pre, stats) {
                Ok(l) => slot.live = Some(l),
                Err(e) => {
                    let msg = format!("instantiation {e}");
                    self.fail(plugin, name, e);
                    return Err(msg);
                }
            }
        }
        let live = slot.live.as_mut().ok_or("plugin not running")?;
        let id = self.ports.get(name).map_or(0, |p| p.id);
        let result = live.update(&self.engine, name, port, &self.node, config, id);
        match result {
            Ok(sel) => {
                slot.failures = 0;
                if let Some(p) = self.ports.get_mut(name) {
                    (p.failures, p.retry_at) = (0, None);
                }
                sel.validate(port.endpoints.len()).map_err(|e| {
                    self.counters.rejected += 1;
                    format!("invalid selection: {e}")
                })?;
                Ok(sel)
            }
            Err(e) => {
                let msg = e.to_string();
                self.fail(plugin, name, e);
                Err(msg)
            }
        }
    }
}

impl Planner for PluginPlanner {
    fn plan(&mut self, name: &ServicePortName, port: &ServicePortState) -> Selection {
        let Some(b) = port.service.balancer.clone() else {
            self.forget(name);
            return EqualWeights.plan(name, port);
        };
        if self.ports.get(name).is_some_and(|p| p.plugin != b.name) {
            self.forget(name);
        }
        if let Some(p) = self.ports.get_mut(name)
            && p.config != b.config
        {
            // A new config is a fresh start for the port.
            (p.config, p.failures, p.retry_at) = (b.config.clone(), 0, None);
        }
        if !self.ports.contains_key(name) {
            let id = self.ids.take();
            self.ports.insert(
                name.clone(),
                Port {
                    plugin: b.name.clone(),
                    config: b.config.clone(),
                    id,
                    fallback: None,
                    replan: false,
                    failures: 0,
                    retry_at: None,
                },
            );
        }
        let result = self.try_plan(name, port, &b.name, &b.config);
        let entry = self.ports.get_mut(name);
        match result {
            Ok(sel) => {
                if let Some(p) = entry
                    && p.fallback.take().is_some()
                {
                    tracing::info!(plugin = %b.name, port = %name, "plugin recovered");
                }
                sel
            }
            Err(reason) => {
                if let Some(p) = entry {
                    if p.fallback.as_ref() != Some(&reason) {
                        tracing::warn!(plugin = %b.name, port = %name, %reason, "plugin failed; the port uses the default selection");
                    }
                    p.fallback = Some(reason);
                }
                EqualWeights.plan(name, port)
            }
        }
    }

    fn forget(&mut self, name: &ServicePortName) {
        let Some(p) = self.ports.remove(name) else {
            return;
        };
        if let Some(live) = self.slots.get_mut(&p.plugin).and_then(|s| s.live.as_mut()) {
            live.forget(name);
        }
        self.ids.give_back(p.id);
    }
}
