//! The one planning path of `wasp run` and `wasp plan`: which service ports to ask the planner
//! about, and the selection of every port, kept across syncs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wasp_model::{Planner, ProxyState, Selection, ServicePortName, StateDiff};
use wasp_plugin::PluginPlanner;

/// The planner and the selections it made.
pub struct Planning {
    /// Shared with the userspace proxy's picker, which never waits for it.
    planner: Arc<Mutex<PluginPlanner>>,
    selections: BTreeMap<ServicePortName, Selection>,
}

/// The userspace proxy's per-connection picks, through the plugins. While a sync holds the
/// planner the pick declines and the connection uses the Selection's weights: the proxy never
/// waits for the sync loop.
pub struct PluginPicker(Arc<Mutex<PluginPlanner>>);

impl wasp_proxy::Picker for PluginPicker {
    fn pick(&self, port: &ServicePortName, client: SocketAddr) -> Option<u32> {
        self.0.try_lock().ok()?.pick(port, client)
    }
}

impl Planning {
    /// Planning with `planner`; nothing is planned yet.
    pub fn new(planner: PluginPlanner) -> Self {
        Self {
            planner: Arc::new(Mutex::new(planner)),
            selections: BTreeMap::new(),
        }
    }

    /// A picker over the same planner, for the userspace proxy.
    pub fn picker(&self) -> PluginPicker {
        PluginPicker(Arc::clone(&self.planner))
    }

    /// Adds to `diff.changed` the ports the planner wants planned again although the model did
    /// not change (a plugin came back, a `.wasm` file changed).
    pub fn replans(&mut self, state: &ProxyState, diff: &mut StateDiff) {
        let replans = self.planner().replans();
        diff.changed
            .extend(replans.into_iter().filter(|n| state.ports.contains_key(n)));
    }

    /// Plans every port `diff` changed and any port not planned yet, and forgets the removed
    /// ones. The planner learns the node from `state`.
    pub fn update(&mut self, state: &ProxyState, diff: &StateDiff) {
        let mut planner = self.planner.lock().unwrap_or_else(PoisonError::into_inner);
        for name in &diff.removed {
            planner.forget(name);
            self.selections.remove(name);
        }
        planner.set_node(state.node.clone());
        for name in &diff.changed {
            if let Some(port) = state.ports.get(name) {
                let sel = planner.plan(name, port);
                self.selections.insert(name.clone(), sel);
            }
        }
        // Ports never planned (the first sync, or after planning was interrupted): only
        // walked when some are missing.
        if self.selections.len() < state.ports.len() {
            for (name, port) in &state.ports {
                if !self.selections.contains_key(name) {
                    let sel = planner.plan(name, port);
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
    pub fn planner(&self) -> MutexGuard<'_, PluginPlanner> {
        self.planner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
