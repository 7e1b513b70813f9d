//! `Resolver`: the resolved state kept across syncs, and brought up to date by resolving
//! again only the Services a change can affect.
//!
//! The store says which Services each object change touches ([`Changes`]); the resolver
//! resolves those alone, and records the old version of every port that changed until the
//! sync that programs it commits. A partial update costs what changed, not what exists,
//! including a change to what a Service asks of the allocators (its cluster IPs, its node
//! ports, its existence): the allocators assign the changed Services alone whenever no other
//! Service's result can move. Only when one can (a refused Service waiting for what the
//! change may free, or a claim on what another Service holds) do they run over every
//! Service. [`Resolver::full`] resolves everything, and is what the periodic resync runs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use wasp_model::name::{NamespacedName, Protocol, ServicePortName};
use wasp_model::service::HealthCheck;
use wasp_model::state::{ProxyState, ServicePortState, StateDiff};

use super::service::{self, AllocInputs, NodePortMap};
use super::{Context, ResolveConfig, node_port_ips, node_topology, proxied, resolve_service};
use crate::allocate::{Allocator, PortRefusal, PortRequest, Refusal, Request};

/// What the node port allocator gave one port.
type NodePortResult = Result<u16, PortRefusal>;
use crate::error::ConfigError;
use crate::object::{Changes, ObjectStore, Stored};

/// What the allocators gave, and what each Service asked of them.
#[derive(Debug, Default)]
struct Allocation {
    ips: BTreeMap<NamespacedName, Result<Vec<IpAddr>, Refusal>>,
    node_ports: NodePortMap,
    inputs: BTreeMap<NamespacedName, AllocInputs>,
}

/// The node ports of Service `k` in `map`.
fn ports_of(
    map: &NodePortMap,
    k: &NamespacedName,
) -> Vec<((NamespacedName, String), NodePortResult)> {
    map.range((k.clone(), String::new())..)
        .take_while(|((n, _), _)| n == k)
        .map(|(key, v)| (key.clone(), v.clone()))
        .collect()
}

/// The resolved state, kept up to date incrementally.
#[derive(Debug, Default)]
pub struct Resolver {
    state: ProxyState,
    /// The errors each Service's resolution met.
    errors: BTreeMap<NamespacedName, Vec<ConfigError>>,
    /// The endpoints each Service asks to be probed.
    checks: HashMap<NamespacedName, Vec<(SocketAddr, HealthCheck)>>,
    /// Per probed endpoint, the Services that ask for it and their checks.
    check_owners: HashMap<SocketAddr, BTreeMap<NamespacedName, HealthCheck>>,
    allocation: Allocation,
    /// The unhealthy endpoints the state was resolved with.
    unhealthy: HashSet<SocketAddr>,
    /// The ports changed since the last commit, with their versions then (`None`: new).
    before: BTreeMap<ServicePortName, Option<ServicePortState>>,
    /// Whether the node port addresses changed since the last commit.
    moved: bool,
    /// The Services resolved again since the last commit.
    resolved: BTreeSet<NamespacedName>,
    /// Bumped whenever the endpoints to probe may have changed.
    checks_version: u64,
    /// The number of endpoints over all ports.
    endpoints: usize,
}

impl Resolver {
    /// The current state.
    pub fn state(&self) -> &ProxyState {
        &self.state
    }

    /// The current resolution errors, by Service.
    pub fn errors(&self) -> Vec<ConfigError> {
        self.errors.values().flatten().cloned().collect()
    }

    /// The state and the errors.
    pub fn into_parts(self) -> (ProxyState, Vec<ConfigError>) {
        let errors = self.errors();
        (self.state, errors)
    }

    /// Resolves every Service again, and this node.
    pub fn full(&mut self, store: &ObjectStore, alloc: &mut Allocator, cfg: &ResolveConfig) {
        self.node(store, cfg);
        self.unhealthy.clone_from(&cfg.unhealthy);
        self.reallocate(store, alloc, cfg);
        let mut all: BTreeSet<NamespacedName> = store.services.keys().cloned().collect();
        all.extend(self.state.ports.keys().map(|n| n.service.clone()));
        all.extend(self.errors.keys().cloned());
        for k in &all {
            self.resolve_one(store, k, cfg);
        }
    }

    /// Resolves again what `changes` (from the store) and the health checks' verdicts can
    /// affect. A change of this node's topology resolves everything.
    pub fn update(
        &mut self,
        store: &ObjectStore,
        changes: Changes,
        alloc: &mut Allocator,
        cfg: &ResolveConfig,
    ) {
        if changes.node && node_topology(store, cfg) != self.state.node {
            return self.full(store, alloc, cfg);
        }
        if changes.node {
            self.node(store, cfg);
        }
        let mut dirty = changes.services;
        for addr in cfg.unhealthy.symmetric_difference(&self.unhealthy) {
            dirty.extend(
                self.check_owners
                    .get(addr)
                    .into_iter()
                    .flat_map(|o| o.keys().cloned()),
            );
        }
        self.unhealthy.clone_from(&cfg.unhealthy);
        let asks = |k: &NamespacedName| {
            store
                .services
                .get(k)
                .filter(|s| proxied(&s.object, cfg))
                .map(|s| service::alloc_inputs(alloc, s))
        };
        let asked: Vec<(NamespacedName, Option<AllocInputs>)> = dirty
            .iter()
            .filter_map(|k| {
                let now = asks(k);
                (now.as_ref() != self.allocation.inputs.get(k)).then(|| (k.clone(), now))
            })
            .collect();
        if !asked.is_empty() {
            let moved = self.reallocate_changed(store, alloc, cfg, asked);
            dirty.extend(moved);
        }
        for k in &dirty {
            self.resolve_one(store, k, cfg);
        }
    }

    /// This node's topology and node port addresses.
    fn node(&mut self, store: &ObjectStore, cfg: &ResolveConfig) {
        self.state.node = node_topology(store, cfg);
        let ips = node_port_ips(store, cfg);
        if ips != self.state.node_port_ips {
            self.state.node_port_ips = ips;
            self.moved = true;
        }
    }

    /// Runs the allocators over every proxied Service; returns the Services whose addresses
    /// or node ports changed.
    fn reallocate(
        &mut self,
        store: &ObjectStore,
        alloc: &mut Allocator,
        cfg: &ResolveConfig,
    ) -> BTreeSet<NamespacedName> {
        let services: Vec<&Stored<Service>> = store
            .services
            .values()
            .map(|s| &**s)
            .filter(|s| proxied(&s.object, cfg))
            .collect();
        let inputs: BTreeMap<NamespacedName, AllocInputs> = services
            .iter()
            .map(|s| (super::key(&s.object), service::alloc_inputs(alloc, s)))
            .collect();
        let requests: Vec<_> = inputs.values().map(|(r, _)| r.clone()).collect();
        let ports: Vec<_> = inputs.values().flat_map(|(_, p)| p.clone()).collect();
        let next = Allocation {
            ips: alloc.assign(&requests),
            node_ports: alloc.node_ports.assign(&ports),
            inputs,
        };
        let old = std::mem::replace(&mut self.allocation, next);
        let new = &self.allocation;
        let mut moved = BTreeSet::new();
        for k in old.ips.keys().chain(new.ips.keys()) {
            if old.ips.get(k) != new.ips.get(k) {
                moved.insert(k.clone());
            }
        }
        for ((k, p), v) in &old.node_ports {
            if new.node_ports.get(&(k.clone(), p.clone())) != Some(v) {
                moved.insert(k.clone());
            }
        }
        for ((k, p), v) in &new.node_ports {
            if old.node_ports.get(&(k.clone(), p.clone())) != Some(v) {
                moved.insert(k.clone());
            }
        }
        moved
    }

    /// Runs the allocators over the Services whose requests changed (`None`: no longer
    /// proxied), or over every Service when another's result could move; returns the Services
    /// whose addresses or node ports changed.
    fn reallocate_changed(
        &mut self,
        store: &ObjectStore,
        alloc: &mut Allocator,
        cfg: &ResolveConfig,
        asked: Vec<(NamespacedName, Option<AllocInputs>)>,
    ) -> BTreeSet<NamespacedName> {
        let excluded: HashSet<&NamespacedName> = asked.iter().map(|(k, _)| k).collect();
        let requests: Vec<Request> = asked
            .iter()
            .filter_map(|(_, i)| Some(i.as_ref()?.0.clone()))
            .collect();
        let ports: Vec<PortRequest> = asked
            .iter()
            .filter_map(|(_, i)| i.as_ref())
            .flat_map(|(_, p)| p.iter().cloned())
            .collect();
        if !alloc.isolated(&requests, &excluded) || !alloc.node_ports.isolated(&ports, &excluded) {
            return self.reallocate(store, alloc, cfg);
        }
        let ips = alloc.assign_changed(&requests, &excluded);
        let node_ports = alloc.node_ports.assign_changed(&ports, &excluded);
        let a = &mut self.allocation;
        let mut moved = BTreeSet::new();
        for (k, inputs) in &asked {
            let old_ports = ports_of(&a.node_ports, k);
            for (key, _) in &old_ports {
                a.node_ports.remove(key);
            }
            let new_ports = ports_of(&node_ports, k);
            let old_ip = a.ips.remove(k);
            let new_ip = ips.get(k).cloned();
            if old_ip != new_ip || old_ports != new_ports {
                moved.insert(k.clone());
            }
            if let Some(ip) = new_ip {
                a.ips.insert(k.clone(), ip);
            }
            a.node_ports.extend(new_ports);
            match inputs {
                Some(i) => a.inputs.insert(k.clone(), i.clone()),
                None => a.inputs.remove(k),
            };
        }
        moved
    }

    /// Resolves Service `key` again (or removes it), recording the ports that changed.
    fn resolve_one(&mut self, store: &ObjectStore, key: &NamespacedName, cfg: &ResolveConfig) {
        self.resolved.insert(key.clone());
        let first = ServicePortName::new(key.clone(), "", Protocol::Tcp);
        let names: Vec<ServicePortName> = self
            .state
            .ports
            .range(first..)
            .take_while(|(n, _)| n.service == *key)
            .map(|(n, _)| n.clone())
            .collect();
        let mut old = BTreeMap::new();
        for n in names {
            self.state.held_back.remove(&n);
            if let Some(p) = self.state.ports.remove(&n) {
                self.endpoints -= p.endpoints.len();
                old.insert(n, p);
            }
        }
        self.forget_checks(key);
        self.errors.remove(key);
        let r = match store.services.get(key) {
            Some(svc) if proxied(&svc.object, cfg) => {
                let cx = Context {
                    ips: self.allocation.ips.get(key),
                    node_ports: &self.allocation.node_ports,
                    node: &self.state.node,
                    cfg,
                };
                resolve_service(store, svc, &cx)
            }
            _ => super::Resolved::default(),
        };
        if !r.errors.is_empty() {
            self.errors.insert(key.clone(), r.errors);
        }
        self.add_checks(key, r.checks);
        self.state.held_back.extend(r.held);
        for (n, new) in r.ports {
            self.endpoints += new.endpoints.len();
            match old.remove(&n) {
                Some(o) if o == new => {}
                o => {
                    self.before.entry(n.clone()).or_insert(o);
                }
            }
            self.state.ports.insert(n, new);
        }
        for (n, o) in old {
            self.before.entry(n).or_insert(Some(o));
        }
    }

    fn forget_checks(&mut self, key: &NamespacedName) {
        let Some(checks) = self.checks.remove(key) else {
            return;
        };
        self.checks_version += 1;
        for (addr, _) in checks {
            let Some(owners) = self.check_owners.get_mut(&addr) else {
                continue;
            };
            owners.remove(key);
            match owners.values().next() {
                Some(c) => {
                    self.state.health_checks.insert(addr, c.clone());
                }
                None => {
                    self.check_owners.remove(&addr);
                    self.state.health_checks.remove(&addr);
                }
            }
        }
    }

    fn add_checks(&mut self, key: &NamespacedName, checks: Vec<(SocketAddr, HealthCheck)>) {
        if checks.is_empty() {
            return;
        }
        self.checks_version += 1;
        for (addr, c) in &checks {
            let owners = self.check_owners.entry(*addr).or_default();
            owners.insert(key.clone(), c.clone());
            if let Some(first) = owners.values().next() {
                self.state.health_checks.insert(*addr, first.clone());
            }
        }
        self.checks.insert(key.clone(), checks);
    }

    /// What changed since the last [`commit`](Self::commit): the diff, and the old versions
    /// of the ports it names (the rest of `previous` is empty: it stands for the state last
    /// programmed only where that differs from the current one).
    pub fn changes(&self) -> (StateDiff, ProxyState) {
        let mut d = StateDiff::default();
        let mut previous = ProxyState::default();
        for (name, old) in &self.before {
            d.record(name, old.as_ref(), self.state.ports.get(name), false);
            if let Some(o) = old
                && (d.changed.contains(name) || d.removed.contains(name))
            {
                previous.ports.insert(name.clone(), o.clone());
            }
        }
        if self.moved {
            // New node port addresses change every port with a node port.
            for (name, p) in &self.state.ports {
                d.record(name, Some(p), Some(p), true);
            }
        }
        (d, previous)
    }

    /// The Services resolved again since the last commit (some may be gone).
    pub fn resolved(&self) -> &BTreeSet<NamespacedName> {
        &self.resolved
    }

    /// Changes whenever the endpoints to probe ([`ProxyState::health_checks`]) may have.
    pub fn checks_version(&self) -> u64 {
        self.checks_version
    }

    /// The number of endpoints over all ports ([`ProxyState::endpoint_count`], kept as
    /// ports change rather than counted).
    pub fn endpoint_count(&self) -> usize {
        self.endpoints
    }

    /// The changes are programmed: forget the old versions.
    pub fn commit(&mut self) {
        self.before.clear();
        self.resolved.clear();
        self.moved = false;
    }
}
