//! One live instance of a plugin, with a balancer resource per service port it serves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use wasmtime::component::{ResourceAny, TypedFunc};
use wasmtime::{Store, Trap};
use wasp_model::categorize::NodeTopology;
use wasp_model::{Selection, ServicePortName, ServicePortState};

use crate::bindings::wasp::balancer::types as wit;
use crate::bindings::{PICKER, Plugin, PluginPre};
use crate::convert;
use crate::engine::{PluginEngine, Ticker};
use crate::state::{State, StatsSource};

/// What `picker.pick` returns to let the host use the weights.
const NO_PICK: u32 = u32::MAX;

/// Why a call did not return a selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The instance trapped; it is poisoned.
    Trap(String),
    /// The call ran past its deadline; the instance is poisoned.
    Timeout,
    /// The plugin returned an error; the instance is fine.
    Plugin(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Trap(e) => write!(f, "trapped: {e}"),
            Self::Timeout => f.write_str("ran past its deadline"),
            Self::Plugin(e) => write!(f, "returned an error: {e}"),
        }
    }
}

fn classify(e: wasmtime::Error) -> CallError {
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        CallError::Timeout
    } else {
        CallError::Trap(format!("{e:#}").chars().take(1000).collect())
    }
}

type PickFunc = TypedFunc<(wit::Connection,), (u32,)>;

/// A port's balancer in the instance.
struct Balancer {
    resource: ResourceAny,
    /// The config it was constructed with.
    config: String,
    id: u32,
}

/// A live instance.
pub struct Live {
    store: Store<State>,
    plugin: Plugin,
    resources: HashMap<ServicePortName, Balancer>,
    /// Endpoints per port id (ids are small and dense), for checking what `pick` returns; 0
    /// stops picking for the port until its next update.
    endpoints: Vec<u32>,
    pick: Option<PickFunc>,
    /// Runs the epoch while calls come into the plugin.
    ticker: Arc<Ticker>,
    /// Distinguishes this instance from the ones before and after it.
    pub generation: u64,
}

static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Live {
    /// Instantiates the plugin in a fresh Store.
    ///
    /// # Errors
    /// A trap or timeout in the component's start.
    pub fn new(
        engine: &PluginEngine,
        name: &str,
        pre: &PluginPre<State>,
        stats: Arc<dyn StatsSource>,
    ) -> Result<Self, CallError> {
        let ticker = engine.ticker();
        ticker.busy();
        let mut store = engine.store(name, stats);
        let instance = pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(classify)?;
        let plugin = Plugin::new(&mut store, &instance).map_err(classify)?;
        let component = pre.instance_pre().component();
        let pick = component
            .get_export_index(None, PICKER)
            .and_then(|i| component.get_export_index(Some(&i), "pick"))
            .and_then(|f| {
                instance
                    .get_typed_func::<(wit::Connection,), (u32,)>(&mut store, &f)
                    .ok()
            });
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            store,
            plugin,
            resources: HashMap::new(),
            endpoints: Vec::new(),
            pick,
            ticker,
            generation,
        })
    }

    /// The linear memory the instance uses, in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.memory
    }

    /// Whether the plugin exports the per-connection picker.
    pub fn picks(&self) -> bool {
        self.pick.is_some()
    }

    fn enter(
        &mut self,
        name: &ServicePortName,
        id: u32,
        endpoints: u32,
        deadline: std::time::Duration,
    ) {
        let d = self.store.data_mut();
        d.endpoints = endpoints;
        // Per-call cost matters for pick: rewrite the name only when the port changes.
        if d.port_id != id || d.port.is_empty() {
            d.port = name.to_string();
            d.port_id = id;
        }
        d.log_budget = 16;
        self.store.set_epoch_deadline(PluginEngine::ticks(deadline));
        self.ticker.busy();
    }

    /// Runs `update` for one port, constructing (or, on a config change, re-constructing) its
    /// balancer first, with the port's `id`.
    ///
    /// # Errors
    /// See [`CallError`].
    pub fn update(
        &mut self,
        engine: &PluginEngine,
        name: &ServicePortName,
        port: &ServicePortState,
        node: &NodeTopology,
        config: &str,
        id: u32,
    ) -> Result<Selection, CallError> {
        self.enter(
            name,
            id,
            port.endpoints.len() as u32,
            engine.cfg.update_deadline,
        );
        let res = match self.resources.get(name) {
            Some(b) if b.config == config && b.id == id => b.resource,
            _ => {
                self.forget(name);
                let svc = convert::service(id, name, port, node);
                let resource = self
                    .plugin
                    .wasp_balancer_balancer()
                    .balancer()
                    .call_constructor(&mut self.store, &svc, config)
                    .map_err(classify)?;
                let config = config.to_string();
                self.resources.insert(
                    name.clone(),
                    Balancer {
                        resource,
                        config,
                        id,
                    },
                );
                resource
            }
        };
        let snap = convert::snapshot(port);
        // Until the plugin has answered, no index it picks is valid.
        self.set_endpoints(id, 0);
        let out = self
            .plugin
            .wasp_balancer_balancer()
            .balancer()
            .call_update(&mut self.store, res, &snap)
            .map_err(classify)?;
        let sel = out.map(convert::selection).map_err(CallError::Plugin)?;
        self.set_endpoints(id, port.endpoints.len() as u32);
        Ok(sel)
    }

    fn set_endpoints(&mut self, id: u32, n: u32) {
        let i = id as usize;
        if self.endpoints.len() <= i {
            self.endpoints.resize(i + 1, 0);
        }
        self.endpoints[i] = n;
    }

    /// Whether the port has a balancer in this instance.
    pub fn serves(&self, name: &ServicePortName) -> bool {
        self.resources.contains_key(name)
    }

    /// Picks for the port with `id`: the per-connection fast path.
    ///
    /// # Errors
    /// See [`CallError`].
    pub fn pick_with(
        &mut self,
        engine: &PluginEngine,
        name: &ServicePortName,
        id: u32,
        client: SocketAddr,
    ) -> Result<Option<u32>, CallError> {
        let Some(f) = self.pick else {
            return Ok(None);
        };
        // No endpoints, or picking stopped after a bad index until the next update.
        let n = self.endpoints.get(id as usize).copied().unwrap_or(0);
        if n == 0 {
            return Ok(None);
        }
        self.enter(name, id, n, engine.cfg.pick_deadline);
        let conn = wit::Connection {
            service: id,
            client: convert::ip(client.ip()),
            client_port: client.port(),
        };
        let (out,) = f.call(&mut self.store, (conn,)).map_err(classify)?;
        match out {
            NO_PICK => Ok(None),
            i if i < n => Ok(Some(i)),
            i => {
                self.set_endpoints(id, 0);
                Err(CallError::Plugin(format!(
                    "pick returned endpoint {i} of {n}"
                )))
            }
        }
    }

    /// Drops the balancer of a port that is gone.
    pub fn forget(&mut self, name: &ServicePortName) {
        if let Some(b) = self.resources.remove(name) {
            self.set_endpoints(b.id, 0);
            self.ticker.busy();
            let _ = b.resource.resource_drop(&mut self.store);
        }
    }
}
