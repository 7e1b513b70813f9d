//! The one planning path of `wasp run` and `wasp plan`: which service ports to ask the planner
//! about, and the selection of every port, kept across syncs.

use std::collections::BTreeMap;

use wasp_model::{Planner, ProxyState, Selection, ServicePortName, StateDiff};
use wasp_plugin::PluginPlanner;

/// The planner and the selections it made.
pub struct Planning {
    planner: PluginPlanner,
    selections: BTreeMap<ServicePortName, Selection>,
}

impl Planning {
    /// Planning with `planner`; nothing is planned yet.
    pub fn new(planner: PluginPlanner) -> Self {
        Self {
            planner,
            selections: BTreeMap::new(),
        }
    }

    /// Adds to `diff.changed` the ports the planner wants planned again although the model did
    /// not change (a plugin came back, a `.wasm` file changed).
    pub fn replans(&mut self, state: &ProxyState, diff: &mut StateDiff) {
        let replans = self.planner.replans();
        diff.changed
            .extend(replans.into_iter().filter(|n| state.ports.contains_key(n)));
    }

    /// Plans every port `diff` changed and any port not planned yet, and forgets the removed
    /// ones. The planner learns the node from `state`.
    pub fn update(&mut self, state: &ProxyState, diff: &StateDiff) {
        for name in &diff.removed {
            self.planner.forget(name);
            self.selections.remove(name);
        }
        self.planner.set_node(state.node.clone());
        for name in &diff.changed {
            if let Some(port) = state.ports.get(name) {
                let sel = self.planner.plan(name, port);
                self.selections.insert(name.clone(), sel);
            }
        }
        // Ports never planned (the first sync, or after planning was interrupted): only
        // walked when some are missing.
        if self.selections.len() < state.ports.len() {
            for (name, port) in &state.ports {
                if !self.selections.contains_key(name) {
                    let sel = self.planner.plan(name, port);
                    self.selections.insert(name.clone(), sel);
                }
            }
        }
    }

    /// The selection of every planned port.
    pub fn selections(&self) -> &BTreeMap<ServicePortName, Selection> {
        &self.selections
    }

    /// The planner, for its status and counters.
    pub fn planner(&self) -> &PluginPlanner {
        &self.planner
    }
}
