//! The nftables mode: wasp's own `ip wasp` and `ip6 wasp` tables, dispatch through one
//! verdict map, endpoints in per-port interval maps, programmed with netlink batches.
//!
//! Each sync is one transaction over both families. A partial sync sends only the operations
//! of the ports that changed, computed against what wasp programmed last (nothing is read
//! back). A full sync (the first, after a failure, and every sync-period) reads the names of
//! the chains and sets in wasp's tables, then in one transaction empties and rewrites
//! everything, deleting what is not wanted; that repairs anything someone changed, and keeps
//! the ClientIP affinity sets' clients. `render` has the layout and the reasons for it.

pub mod expr;
pub mod netlink;
pub mod ops;
pub mod render;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub use ops::{Family, Op, Transaction};
pub use render::Programmed;

use crate::conntrack::StaleFlows;
use crate::exec::ExecError;
use crate::iptables::RenderConfig;
use crate::mode::{Dataplane, Mode, SyncReport, SyncRequest};
use netlink::Socket;
use ops::{Chain, Hook, SetKind};

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// The names of the chains and sets in wasp's tables, per family: what a full sync
/// reconciles with.
#[derive(Debug, Clone, Default)]
pub struct Existing {
    /// Chain names.
    pub chains: BTreeMap<Family, Vec<String>>,
    /// Set and map names.
    pub sets: BTreeMap<Family, Vec<String>>,
}

/// The nftables mode.
#[derive(Debug)]
pub struct Nftables {
    cfg: RenderConfig,
    programmed: Option<BTreeMap<Family, Programmed>>,
    socket: Option<Socket>,
    stale_flows: StaleFlows,
}

/// A transaction and what is programmed once it is applied.
#[derive(Debug)]
pub struct Planned {
    /// The operations.
    pub tx: Transaction,
    /// Whether it replaces everything.
    pub full: bool,
    /// Per family: the ports whose objects change (`None`: removed).
    updates: BTreeMap<Family, Vec<(wasp_model::ServicePortName, Option<render::PortObjects>)>>,
    /// Per family: hairpin reference-count changes.
    hairpin: BTreeMap<Family, BTreeMap<IpAddr, i64>>,
    /// The full state, for a full sync.
    replace: Option<BTreeMap<Family, Programmed>>,
}

impl Nftables {
    /// The mode with `cfg` (its `ipv4` field is ignored: both families are programmed).
    pub fn new(cfg: RenderConfig) -> Self {
        Self {
            cfg,
            programmed: None,
            socket: None,
            stale_flows: StaleFlows::default(),
        }
    }

    /// Checks that the kernel takes wasp's kind of transaction: a table with a NAT chain.
    ///
    /// # Errors
    /// Names what failed, for the caller to suggest another mode.
    pub fn probe() -> Result<(), ExecError> {
        let mut s = Socket::open().map_err(|source| ExecError::Netlink {
            what: "cannot open a netfilter netlink socket".into(),
            source,
        })?;
        let chain = "wasp-probe".to_string();
        let tx: Transaction = vec![
            (Family::V4, Op::AddTable),
            (
                Family::V4,
                Op::AddChain(Chain {
                    name: chain.clone(),
                    hook: Some(Hook {
                        kind: "nat",
                        hook: "prerouting",
                        priority: -100,
                    }),
                }),
            ),
            (Family::V4, Op::DeleteChain(chain)),
        ];
        apply(&mut s, &tx)
    }

    /// The transaction a sync would send, without sending it. A full sync reconciles with
    /// `existing`, what the kernel's tables hold now.
    pub fn plan_sync(&self, req: &SyncRequest<'_>, existing: &Existing) -> Planned {
        match (req.diff, &self.programmed) {
            (Some(diff), Some(programmed)) => self.partial(req, diff, programmed),
            _ => self.full(req, existing),
        }
    }

    /// Whether the next sync of `req` is full (and so needs [`Existing`]).
    pub fn needs_full(&self, req: &SyncRequest<'_>) -> bool {
        req.diff.is_none() || self.programmed.is_none()
    }

    /// The names of the chains and sets now in wasp's tables.
    ///
    /// # Errors
    /// Fails when the kernel cannot be asked.
    pub fn existing(&mut self) -> Result<Existing, ExecError> {
        let s = self.socket()?;
        let mut e = Existing::default();
        for f in FAMILIES {
            let read = |s: &mut Socket, sets| {
                s.names(f, sets).map_err(|source| ExecError::Netlink {
                    what: format!("cannot list the {} {} table", f.name(), ops::TABLE),
                    source,
                })
            };
            e.chains.insert(f, read(s, false)?);
            e.sets.insert(f, read(s, true)?);
        }
        Ok(e)
    }

    /// A full sync: empty every chain and set wasp wants (affinity sets keep their clients),
    /// delete what it does not want, and write everything. One transaction, so traffic
    /// never sees a half-written table.
    fn full(&self, req: &SyncRequest<'_>, existing: &Existing) -> Planned {
        let mut tx = Vec::new();
        let mut replace = BTreeMap::new();
        for f in FAMILIES {
            let ports = render::desired(req.state, req.selections, &self.cfg, f);
            let mut adds = Vec::new();
            render::static_ops(f, &self.cfg, &mut adds);
            let mut counts = BTreeMap::new();
            for p in ports.values() {
                render::port_ops(f, None, Some(p), &mut adds);
                for ip in &p.hairpin {
                    *counts.entry(*ip).or_insert(0) += 1;
                }
            }
            render::hairpin_ops(
                f,
                counts.keys().copied().collect(),
                BTreeSet::new(),
                &mut adds,
            );
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
                    None => tx.push((f, Op::DeleteSet(render::stray_set(name)))),
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
                    hairpin: counts,
                },
            );
        }
        Planned {
            tx,
            full: true,
            updates: BTreeMap::new(),
            hairpin: BTreeMap::new(),
            replace: Some(replace),
        }
    }

    fn partial(
        &self,
        req: &SyncRequest<'_>,
        diff: &wasp_model::StateDiff,
        programmed: &BTreeMap<Family, Programmed>,
    ) -> Planned {
        let mut tx = Vec::new();
        let mut updates = BTreeMap::new();
        let mut hairpin = BTreeMap::new();
        let empty = Programmed::default();
        for f in FAMILIES {
            let prog = programmed.get(&f).unwrap_or(&empty);
            let mut changed = Vec::new();
            let mut delta: BTreeMap<IpAddr, i64> = BTreeMap::new();
            for name in diff.touched() {
                let new = req.state.ports.get(name).and_then(|port| {
                    render::port_objects(name, port, req.selections.get(name), &self.cfg, f)
                });
                let old = prog.ports.get(name);
                if old == new.as_ref() {
                    continue;
                }
                render::port_ops(f, old, new.as_ref(), &mut tx);
                for ip in old.into_iter().flat_map(|p| &p.hairpin) {
                    *delta.entry(*ip).or_insert(0) -= 1;
                }
                for ip in new.iter().flat_map(|p| &p.hairpin) {
                    *delta.entry(*ip).or_insert(0) += 1;
                }
                changed.push((name.clone(), new));
            }
            let (mut added, mut removed) = (BTreeSet::new(), BTreeSet::new());
            for (ip, d) in &delta {
                let before = prog.hairpin.get(ip).copied().unwrap_or(0) as i64;
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
            render::hairpin_ops(f, added, removed, &mut tx);
            updates.insert(f, changed);
            hairpin.insert(f, delta);
        }
        // Element deletions first: a port renamed in place (or moved to another namespace)
        // hands its VIP and port to a new name, and the kernel refuses a key that is added
        // while it still exists. A deletion never needs anything the batch creates.
        tx.sort_by_key(|(_, op)| !matches!(op, Op::DeleteElements { .. }));
        Planned {
            tx,
            full: false,
            updates,
            hairpin,
            replace: None,
        }
    }

    /// Records that `planned` was applied, so the next plan is a delta from it (`sync` calls
    /// this after the kernel accepted the transaction).
    pub fn record(&mut self, planned: Planned) {
        if let Some(all) = planned.replace {
            self.programmed = Some(all);
            return;
        }
        let programmed = self.programmed.get_or_insert_with(BTreeMap::new);
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
            for (ip, d) in planned.hairpin.get(&f).into_iter().flatten() {
                let c = prog.hairpin.entry(*ip).or_insert(0);
                *c = (*c as i64 + d).max(0) as usize;
                if *c == 0 {
                    prog.hairpin.remove(ip);
                }
            }
        }
    }

    fn socket(&mut self) -> Result<&mut Socket, ExecError> {
        if self.socket.is_none() {
            self.socket = Some(Socket::open().map_err(|source| ExecError::Netlink {
                what: "cannot open a netfilter netlink socket".into(),
                source,
            })?);
        }
        Ok(self.socket.as_mut().expect("just opened"))
    }
}

/// Sends `tx`; a rejection names the operation, in nft syntax.
fn apply(s: &mut Socket, tx: &[(Family, Op)]) -> Result<(), ExecError> {
    match s.apply(tx) {
        Ok(_) => Ok(()),
        Err(Ok(rejected)) => {
            let what = match rejected.op.and_then(|i| tx.get(i)) {
                Some(op) => format!(
                    "the kernel rejected the transaction at `{}`",
                    ops::text(std::slice::from_ref(op)).trim()
                ),
                None => "the kernel refused the transaction".to_string(),
            };
            Err(ExecError::Netlink {
                what,
                source: rejected.error,
            })
        }
        Err(Err(source)) => Err(ExecError::Netlink {
            what: "netlink socket failed".into(),
            source,
        }),
    }
}

impl Dataplane for Nftables {
    fn mode(&self) -> Mode {
        Mode::Nftables
    }

    fn preview(&mut self, req: SyncRequest<'_>) -> Result<String, ExecError> {
        // Planning may run unprivileged: with the tables unreadable, plan as for an empty host.
        let existing = if self.needs_full(&req) {
            self.existing().unwrap_or_default()
        } else {
            Existing::default()
        };
        let planned = self.plan_sync(&req, &existing);
        Ok(format!("# nft -f -\n{}", ops::text(&planned.tx)))
    }

    fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ExecError> {
        let existing = if self.needs_full(&req) {
            self.existing()?
        } else {
            Existing::default()
        };
        let planned = self.plan_sync(&req, &existing);
        let report = SyncReport {
            full: planned.full,
            rules: planned
                .tx
                .iter()
                .filter(|(_, op)| matches!(op, Op::AddRule { .. }))
                .count(),
            bytes: 0,
        };
        tracing::trace!(
            ops = planned.tx.len(),
            full = planned.full,
            "nftables transaction"
        );
        let result = apply(self.socket()?, &planned.tx);
        if let Err(e) = result {
            // The kernel kept the previous rules; the next sync rebuilds from scratch.
            self.programmed = None;
            return Err(e);
        }
        self.record(planned);
        self.stale_flows.clear(&req);
        Ok(report)
    }

    fn cleanup(&mut self) -> Result<(), ExecError> {
        let tx: Transaction = FAMILIES
            .iter()
            .flat_map(|f| [(*f, Op::AddTable), (*f, Op::DeleteTable)])
            .collect();
        apply(self.socket()?, &tx)?;
        self.programmed = None;
        Ok(())
    }
}
