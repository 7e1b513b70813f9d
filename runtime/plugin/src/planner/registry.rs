//! The registry of plugins and ports: where each plugin comes from, its compiled form and
//! live instance, and the ports that use it with their ids and fault counts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::bindings::PluginPre;
use crate::instance::Live;
use crate::state::State;

use super::PluginPlanner;

/// Where a plugin's bytes come from.
#[derive(Debug, Clone)]
pub enum PluginSource {
    /// Embedded in the binary.
    Builtin(&'static [u8]),
    /// A `.wasm` file, reloaded when it changes.
    File(PathBuf),
}

pub(super) struct Slot {
    pub(super) name: String,
    pub(super) source: PluginSource,
    pub(super) pre: Option<PluginPre<State>>,
    pub(super) signature: Option<(SystemTime, u64)>,
    pub(super) live: Option<Live>,
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
    pub(super) disabled: bool,
    /// What the last failure was.
    pub(super) last_error: String,
}

impl Slot {
    pub(super) fn new(name: String, source: PluginSource) -> Self {
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

pub(super) struct Port {
    pub(super) plugin: String,
    /// The config string the port's balancer was made with: a new one is a fresh start.
    pub(super) config: String,
    /// The id the plugin knows this port by (`service.id`, `connection.service`).
    pub(super) id: u32,
    pub(super) fallback: Option<String>,
    pub(super) replan: bool,
    /// This port's own traps and timeouts in a row: a port whose calls keep failing backs
    /// off (and is finally given up on) by itself, whatever the plugin's other ports do.
    pub(super) failures: u32,
    pub(super) retry_at: Option<Instant>,
}

impl Port {
    pub(super) fn backing_off(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| t > now)
    }
}

/// The plugins, by name and by position: a `PickHandle` keeps the position, so a pick does
/// not look the plugin up by name. Plugins are only added, when the planner is built.
#[derive(Default)]
pub(super) struct Slots {
    pub(super) index: BTreeMap<String, usize>,
    pub(super) list: Vec<Slot>,
}

impl Slots {
    pub(super) fn add(&mut self, name: String, source: PluginSource) {
        match self.index.get(&name) {
            Some(&i) => self.list[i] = Slot::new(name, source),
            None => {
                self.index.insert(name.clone(), self.list.len());
                self.list.push(Slot::new(name, source));
            }
        }
    }

    pub(super) fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub(super) fn get(&self, name: &str) -> Option<&Slot> {
        self.list.get(self.position(name)?)
    }

    pub(super) fn get_mut(&mut self, name: &str) -> Option<&mut Slot> {
        let i = self.position(name)?;
        self.list.get_mut(i)
    }
}

/// Port ids, kept small and dense: the id of a forgotten port is given to the next new one,
/// so plugins can index their balancers by id instead of hashing it.
#[derive(Default)]
pub(super) struct Ids {
    pub(super) next: u32,
    pub(super) free: std::collections::BTreeSet<u32>,
}

impl Ids {
    pub(super) fn take(&mut self) -> u32 {
        self.free.pop_first().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }

    pub(super) fn give_back(&mut self, id: u32) {
        self.free.insert(id);
    }
}

pub(super) fn signature(p: &PathBuf) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl PluginPlanner {
    pub(super) fn load(&mut self, plugin: &str) -> Result<(), String> {
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
}
