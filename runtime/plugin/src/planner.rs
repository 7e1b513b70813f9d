//! `PluginPlanner`: the planner the daemon uses. Ports without a `wasp.dev/balancer`
//! annotation get equal weights; the others ask their plugin, and fall back to equal weights at
//! once when it traps, times out, errs or returns an invalid selection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wasp_model::categorize::NodeTopology;
use wasp_model::{EqualWeights, Planner, Selection, ServicePortName, ServicePortState};

use crate::bindings::PluginPre;
use crate::engine::{EngineConfig, LoadError, PluginEngine};
use crate::instance::{CallError, Live};
use crate::state::{NoStats, State, StatsSource};

/// Where a plugin's bytes come from.
#[derive(Debug, Clone)]
pub enum PluginSource {
    /// Embedded in the binary.
    Builtin(&'static [u8]),
    /// A `.wasm` file, reloaded when it changes.
    File(PathBuf),
}

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

/// A port's picker, looked up once.
#[derive(Debug, Clone)]
pub struct PickHandle {
    /// The plugin's position in `PluginPlanner::slots`.
    slot: usize,
    name: ServicePortName,
    generation: u64,
    id: u32,
}

struct Slot {
    name: String,
    source: PluginSource,
    pre: Option<PluginPre<State>>,
    signature: Option<(SystemTime, u64)>,
    live: Option<Live>,
    failures: u32,
    retry_at: Option<Instant>,
    disabled: bool,
    /// What the last failure was.
    last_error: String,
}

impl Slot {
    fn new(name: String, source: PluginSource) -> Self {
        Self {
            name,
            source,
            pre: None,
            signature: None,
            live: None,
            failures: 0,
            retry_at: None,
            disabled: false,
            last_error: String::new(),
        }
    }
}

struct Port {
    plugin: String,
    /// The config string the port's balancer was made with: a new one is a fresh start.
    config: String,
    /// The id the plugin knows this port by (`service.id`, `connection.service`).
    id: u32,
    fallback: Option<String>,
    replan: bool,
    /// This port's own traps and timeouts in a row: a port whose calls keep failing backs
    /// off (and is finally given up on) by itself, whatever the plugin's other ports do.
    failures: u32,
    retry_at: Option<Instant>,
}

impl Port {
    fn backing_off(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| t > now)
    }
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

/// The plugins, by name and by position: a `PickHandle` keeps the position, so a pick does
/// not look the plugin up by name. Plugins are only added, when the planner is built.
#[derive(Default)]
struct Slots {
    index: BTreeMap<String, usize>,
    list: Vec<Slot>,
}

impl Slots {
    fn add(&mut self, name: String, source: PluginSource) {
        match self.index.get(&name) {
            Some(&i) => self.list[i] = Slot::new(name, source),
            None => {
                self.index.insert(name.clone(), self.list.len());
                self.list.push(Slot::new(name, source));
            }
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    fn get(&self, name: &str) -> Option<&Slot> {
        self.list.get(self.position(name)?)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Slot> {
        let i = self.position(name)?;
        self.list.get_mut(i)
    }
}

/// Port ids, kept small and dense: the id of a forgotten port is given to the next new one,
/// so plugins can index their balancers by id instead of hashing it.
#[derive(Default)]
struct Ids {
    next: u32,
    free: std::collections::BTreeSet<u32>,
}

impl Ids {
    fn take(&mut self) -> u32 {
        self.free.pop_first().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }

    fn give_back(&mut self, id: u32) {
        self.free.insert(id);
    }
}

fn signature(p: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
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

    /// A handle for picking on `name` without looking it up per connection; it stays valid
    /// until the plugin's instance is re-created or the port's config changes.
    pub fn pick_handle(&self, name: &ServicePortName) -> Option<PickHandle> {
        let port = self.ports.get(name)?;
        let slot = self.slots.position(&port.plugin)?;
        let live = self.slots.list[slot].live.as_ref()?;
        (live.picks() && live.serves(name)).then(|| PickHandle {
            slot,
            name: name.clone(),
            generation: live.generation,
            id: port.id,
        })
    }

    /// Picks with a handle: `None` when the plugin declines, fails, or the handle is stale. A
    /// failed pick (a trap, a timeout, an index past the port's endpoints) is counted, shows in
    /// [`status`](Self::status), and stops picks for the port, whose connections then use the
    /// weights, until it is planned again (`replans` names it).
    pub fn pick_with(&mut self, h: &PickHandle, client: SocketAddr) -> Option<u32> {
        let slot = self.slots.list.get_mut(h.slot)?;
        let live = slot
            .live
            .as_mut()
            .filter(|l| l.generation == h.generation)?;
        let e = match live.pick_with(&self.engine, &h.name, h.id, client) {
            Ok(i) => return i,
            Err(e) => e,
        };
        let plugin = slot.name.clone();
        if let Some(p) = self.ports.get_mut(&h.name) {
            let reason = format!("pick {e}");
            if p.fallback.as_ref() != Some(&reason) {
                tracing::warn!(%plugin, port = %h.name, %reason, "plugin failed; the port uses the default selection");
            }
            p.fallback = Some(reason);
        }
        self.fail(&plugin, &h.name, e);
        None
    }

    /// Picks an endpoint for a new connection, for the userspace mode.
    pub fn pick(&mut self, name: &ServicePortName, client: SocketAddr) -> Option<u32> {
        let h = self.pick_handle(name)?;
        self.pick_with(&h, client)
    }

    fn load(&mut self, plugin: &str) -> Result<(), String> {
        let slot = self
            .slots
            .get_mut(plugin)
            .ok_or_else(|| format!("unknown balancer {plugin:?}"))?;
        if slot.pre.is_some() {
            return Ok(());
        }
        let bytes = match &slot.source {
            PluginSource::Builtin(b) => b.to_vec(),
            PluginSource::File(p) => {
                slot.signature = signature(p);
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
            }
        };
        let c = self.engine.compile(plugin, &bytes).map_err(|e| {
            format!(
                "{e}: {:#}",
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )
        })?;
        slot.pre = Some(
            self.engine
                .prepare(plugin, &c)
                .map_err(|e| format!("{e}"))?,
        );
        Ok(())
    }

    /// The wait after `failures` failures in a row: the configured backoff, doubling, at most
    /// 60 s.
    fn backoff(&self, failures: u32) -> Duration {
        self.engine
            .cfg
            .backoff
            .saturating_mul(1 << failures.saturating_sub(1).min(6))
            .min(Duration::from_secs(60))
    }

    /// Records a trap or timeout: poison the instance, back off (the plugin, and the port
    /// whose call failed, each by its own count), maybe disable, and have the plugin's other
    /// ports replayed once it is back.
    fn fail(&mut self, plugin: &str, port: &ServicePortName, e: CallError) {
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
