//! The pure render of the nftables mode, where a Service becomes rules: the model and the
//! selections → the objects each family's table should hold, and the transaction that takes
//! the kernel from what was programmed to that. [`render`] is the entry point; it does no I/O
//! (the caller reads the names of what exists, for a full sync, and sends the transaction).
//!
//! Layout (per family, `table ip wasp` / `table ip6 wasp`):
//! - `nat-prerouting`, `nat-output` → `services`: one rule, `daddr . l4proto . dport vmap
//!   @service-ips`, so dispatch costs one hash lookup whatever the number of Services;
//! - `svc-…` per service port: masquerade marking, then one DNAT rule that picks a slot
//!   (`numgen random mod S` or `jhash … mod M`) and looks `VIP . port . slot` up in a map of
//!   `… : address . port`. Endpoint changes that keep the slot count rewrite map elements
//!   only; a new count rewrites the one rule.
//! - The maps are shared: `endpoints-<proto>-<shard>`, [`SHARDS`] per protocol (more past
//!   8,192 ports: [`shards_for`]), a port's shard chosen by the hash of its name. The kernel makes both extremes quadratic: it finds a set
//!   by name with a linear walk (with a map per port a 10k full sync took 10 s), and adding an
//!   element to a map visits every rule bound to it (one map for all ports was slow too).
//! - `nat-postrouting`: hairpin masquerade from the `hairpin` set of `ep . ep` pairs, then the
//!   masquerade mark;
//! - `filter-forward`, `filter-output` → `service-endpoints-check`: new connections to a VIP
//!   in `no-endpoint-services` are rejected (no endpoints) or dropped (no usable local ones).
//!
//! ClientIP affinity needs to remember each client's endpoint, so those ports get one rule
//! and one timeout set per endpoint, as kube-proxy does; their endpoint changes rewrite rules.

//!
//! # Layout
//! - `port`: one service port's objects (chain, rules, slots, dispatch, affinity sets).
//! - `table`: what every table holds besides the ports, and the names.
//! - `delta`: the operations that take a port from what is programmed to what is wanted.
//! - `recorded`: what is kept of each programmed port for that.

mod delta;
mod port;
mod recorded;
mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use wasp_model::{ServicePortName, StateDiff};

pub use delta::{port_ops, shared_ops};
pub use port::{PortObjects, port_objects};
pub use recorded::Recorded;
pub use table::{SHARDS, names, node_port_ips, rendered, shards_for, static_ops, stray_set};

use super::ops::{Elem, Family, Op, Set, SetKind, Transaction};
use crate::core::RenderConfig;
use crate::mode::SyncRequest;
use table::{cluster_ips, hairpin};

/// The names of the chains and sets in wasp's tables, per family: what a full sync
/// reconciles with.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    /// Chain names.
    pub chains: BTreeMap<Family, Vec<String>>,
    /// Set and map names.
    pub sets: BTreeMap<Family, Vec<String>>,
}

/// A transaction and what is programmed once it is applied.
#[derive(Debug)]
pub struct Planned {
    /// The operations.
    pub tx: Transaction,
    /// Whether it replaces everything.
    pub full: bool,
    /// Per family: the ports whose objects change (`None`: removed).
    updates: BTreeMap<Family, Vec<(ServicePortName, Option<Recorded>)>>,
    /// Per family: the shared sets' reference-count changes.
    shared: BTreeMap<Family, [BTreeMap<IpAddr, i64>; 2]>,
    /// The full state, for a full sync.
    replace: Option<BTreeMap<Family, Programmed>>,
}

/// How many ports need each element of a shared set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs(pub BTreeMap<IpAddr, usize>);

impl Refs {
    /// The elements `delta` adds (needed by no port before) and removes (by none after).
    fn changes(&self, delta: &BTreeMap<IpAddr, i64>) -> (BTreeSet<IpAddr>, BTreeSet<IpAddr>) {
        let (mut added, mut removed) = (BTreeSet::new(), BTreeSet::new());
        for (ip, d) in delta {
            let before = self.0.get(ip).copied().unwrap_or(0) as i64;
            match (before, before + d) {
                (0, n) if n > 0 => {
                    added.insert(*ip);
                }
                (b, 0) if b > 0 => {
                    removed.insert(*ip);
                }
                _ => {}
            }
        }
        (added, removed)
    }

    fn apply(&mut self, delta: &BTreeMap<IpAddr, i64>) {
        for (ip, d) in delta {
            let c = self.0.entry(*ip).or_insert(0);
            *c = (*c as i64 + d).max(0) as usize;
            if *c == 0 {
                self.0.remove(ip);
            }
        }
    }
}

/// What is programmed in one family's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    /// Each service port, as programmed.
    pub ports: BTreeMap<ServicePortName, Recorded>,
    /// The shared sets: the hairpin pairs and the cluster IPs.
    pub shared: [Refs; 2],
    /// The endpoints maps per protocol, chosen at the full sync ([`shards_for`]) and kept by
    /// the partial ones (0 before any: [`SHARDS`]).
    pub shards: u32,
}

/// A shared set, what one port needs in it, and how an address becomes its element.
type SharedSet = (Set, fn(&Recorded) -> &[IpAddr], fn(IpAddr) -> Elem);

/// The sets several ports share elements of: each with what a port needs in it.
fn shared_sets() -> [SharedSet; 2] {
    [
        (hairpin(), |p| &p.hairpin, Elem::Hairpin),
        (cluster_ips(), |p| &p.cluster_ips, Elem::Addr),
    ]
}

/// Renders one sync: a partial one against `programmed` when the request carries a diff and
/// something is programmed, else a full one that reconciles with `existing` (the names of
/// what the kernel's tables hold now).
pub fn render(
    req: &SyncRequest<'_>,
    cfg: &RenderConfig,
    programmed: Option<&BTreeMap<Family, Programmed>>,
    existing: &Existing,
) -> Planned {
    match (req.diff, programmed) {
        (Some(diff), Some(programmed)) => partial(req, cfg, diff, programmed),
        _ => full(req, cfg, existing),
    }
}

/// A full sync: empty every chain and set wasp wants (affinity sets keep their clients),
/// delete what it does not want, and write everything. One transaction, so traffic
/// never sees a half-written table.
fn full(req: &SyncRequest<'_>, cfg: &RenderConfig, existing: &Existing) -> Planned {
    let mut tx = Vec::new();
    let mut replace = BTreeMap::new();
    let shards = shards_for(req.state.ports.len());
    for f in Family::ALL {
        let mut adds = Vec::new();
        static_ops(f, cfg, &mut adds);
        let mut shared: [Refs; 2] = Default::default();
        let mut ports = BTreeMap::new();
        // Every port's record first, then its operations from a second rendering. The
        // record stays, so it should fill the heap densely; the operations go once sent, and
        // lying above it they are freed whole. Built together, the record was left scattered
        // among the operations' holes (8 MiB more RSS at 10k Services).
        for (name, p) in rendered(req.state, req.selections, cfg, f, shards) {
            let p = Recorded::from(p);
            for (i, (_, of, _)) in shared_sets().iter().enumerate() {
                for ip in of(&p) {
                    *shared[i].0.entry(*ip).or_insert(0) += 1;
                }
            }
            ports.insert(name.clone(), p);
        }
        for (_, p) in rendered(req.state, req.selections, cfg, f, shards) {
            port_ops(f, None, Some(&p), &mut adds);
        }
        for (i, (set, _, elem)) in shared_sets().into_iter().enumerate() {
            let all = shared[i].0.keys().copied().collect();
            shared_ops(f, set, all, BTreeSet::new(), elem, &mut adds);
        }
        // Elements last: binding a lookup to a map makes the kernel walk every element the
        // map holds, so rules added before the elements bind to empty maps.
        adds.sort_by_key(|(_, op)| matches!(op, Op::AddElements { .. }));
        // Each port declares its shard; once is enough.
        let mut declared = BTreeSet::new();
        adds.retain(|(_, op)| match op {
            Op::AddSet(s) => declared.insert(s.name.clone()),
            _ => true,
        });
        let mut want_chains = BTreeSet::new();
        let mut want_sets = BTreeMap::new();
        for (_, op) in &adds {
            match op {
                Op::AddChain(c) => {
                    want_chains.insert(c.name.as_str());
                }
                Op::AddSet(s) => {
                    want_sets.insert(s.name.as_str(), s);
                }
                _ => {}
            }
        }
        tx.push((f, Op::AddTable));
        tx.push((f, Op::FlushRules));
        for name in existing.sets.get(&f).into_iter().flatten() {
            match want_sets.get(name.as_str()) {
                Some(s) if matches!(s.kind, SetKind::Affinity { .. }) => {}
                // Re-created rather than flushed: a flushed element still costs each new
                // binding a visit until the commit frees it.
                Some(s) if matches!(s.kind, SetKind::Endpoints(_)) => {
                    tx.push((f, Op::DeleteSet((*s).clone())));
                }
                Some(s) => tx.push((f, Op::FlushSet((*s).clone()))),
                None => tx.push((f, Op::DeleteSet(stray_set(name)))),
            }
        }
        for name in existing.chains.get(&f).into_iter().flatten() {
            if !want_chains.contains(name.as_str()) {
                tx.push((f, Op::DeleteChain(name.clone())));
            }
        }
        tx.extend(adds);
        replace.insert(
            f,
            Programmed {
                ports,
                shared,
                shards,
            },
        );
    }
    Planned {
        tx,
        full: true,
        updates: BTreeMap::new(),
        shared: BTreeMap::new(),
        replace: Some(replace),
    }
}

fn partial(
    req: &SyncRequest<'_>,
    cfg: &RenderConfig,
    diff: &StateDiff,
    programmed: &BTreeMap<Family, Programmed>,
) -> Planned {
    let mut tx = Vec::new();
    let mut updates = BTreeMap::new();
    let mut shared = BTreeMap::new();
    let empty = Programmed::default();
    let np = node_port_ips(req.state);
    for f in Family::ALL {
        let prog = programmed.get(&f).unwrap_or(&empty);
        let mut changed = Vec::new();
        let mut delta: [BTreeMap<IpAddr, i64>; 2] = Default::default();
        for name in diff.touched() {
            let new = req.state.ports.get(name).and_then(|port| {
                port_objects(
                    name,
                    port,
                    req.selections.get(name),
                    cfg,
                    f,
                    &np,
                    prog.shards,
                )
            });
            let old = prog.ports.get(name);
            let recorded = new.clone().map(Recorded::from);
            if old == recorded.as_ref() {
                continue;
            }
            port_ops(f, old, new.as_ref(), &mut tx);
            for (i, (_, of, _)) in shared_sets().iter().enumerate() {
                for ip in old.into_iter().flat_map(*of) {
                    *delta[i].entry(*ip).or_insert(0) -= 1;
                }
                for ip in recorded.iter().flat_map(*of) {
                    *delta[i].entry(*ip).or_insert(0) += 1;
                }
            }
            changed.push((name.clone(), recorded));
        }
        for (i, (set, _, elem)) in shared_sets().into_iter().enumerate() {
            let (added, removed) = prog.shared[i].changes(&delta[i]);
            shared_ops(f, set, added, removed, elem, &mut tx);
        }
        updates.insert(f, changed);
        shared.insert(f, delta);
    }
    // Element deletions first: a port renamed in place (or moved to another namespace)
    // hands its VIP and port to a new name, and the kernel refuses a key that is added
    // while it still exists. A deletion never needs anything the batch creates.
    tx.sort_by_key(|(_, op)| !matches!(op, Op::DeleteElements { .. }));
    Planned {
        tx,
        full: false,
        updates,
        shared,
        replace: None,
    }
}

/// Records that `planned` was applied, so the next render is a delta from it (`sync` calls
/// this once the kernel accepted the transaction).
pub fn record(programmed: &mut Option<BTreeMap<Family, Programmed>>, planned: Planned) {
    if let Some(all) = planned.replace {
        *programmed = Some(all);
        return;
    }
    let programmed = programmed.get_or_insert_with(BTreeMap::new);
    for (f, changed) in planned.updates {
        let prog = programmed.entry(f).or_default();
        for (name, objects) in changed {
            match objects {
                Some(o) => {
                    prog.ports.insert(name, o);
                }
                None => {
                    prog.ports.remove(&name);
                }
            }
        }
        if let Some(deltas) = planned.shared.get(&f) {
            for (refs, delta) in prog.shared.iter_mut().zip(deltas) {
                refs.apply(delta);
            }
        }
    }
}
