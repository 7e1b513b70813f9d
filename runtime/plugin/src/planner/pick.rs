//! Per-connection picks, for the userspace mode: a handle looked up once per port, then a
//! plugin call per connection under its own deadline.

use std::net::SocketAddr;

use wasp_model::ServicePortName;

use super::PluginPlanner;

/// A port's picker, looked up once.
#[derive(Debug, Clone)]
pub struct PickHandle {
    /// The plugin's position in `PluginPlanner::slots`.
    slot: usize,
    name: ServicePortName,
    generation: u64,
    id: u32,
}

impl PluginPlanner {
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
}
