//! The pure render: model + selections → the objects each family's table should hold, and
//! the transaction that takes the kernel from what was programmed to that.
//!
//! Layout (per family, `table ip wasp` / `table ip6 wasp`):
//! - `nat-prerouting`, `nat-output` → `services`: one rule, `daddr . l4proto . dport vmap
//!   @service-ips`, so dispatch costs one hash lookup whatever the number of Services;
//! - `svc-…` per service port: masquerade marking, then one DNAT rule that picks a slot
//!   (`numgen random mod S` or `jhash … mod M`) and looks `VIP . port . slot` up in a map of
//!   `… : address . port`. Endpoint changes that keep the slot count rewrite map elements
//!   only; a new count rewrites the one rule.
//! - The maps are shared: `endpoints-<proto>-<shard>`, [`SHARDS`] per protocol, a port's shard
//!   chosen by the hash of its name. The kernel makes both extremes quadratic: it finds a set
//!   by name with a linear walk (with a map per port a 10k full sync took 10 s), and adding an
//!   element to a map visits every rule bound to it (one map for all ports was slow too).
//! - `nat-postrouting`: hairpin masquerade from the `hairpin` set of `ep . ep` pairs, then the
//!   masquerade mark;
//! - `filter-forward`, `filter-output` → `service-endpoints-check`: new connections to a VIP
//!   in `no-endpoint-services` are rejected (no endpoints) or dropped (no usable local ones).
//!
//! ClientIP affinity needs to remember each client's endpoint, so those ports get one rule
//! and one timeout set per endpoint, as kube-proxy does; their endpoint changes rewrite rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use data_encoding::BASE32;
use sha2::{Digest, Sha256};
use wasp_model::{Endpoint, ProxyState, Selection, ServicePortName, ServicePortState};

use super::ops::{Chain, Elem, Family, Hook, Op, Pick, Rule, Set, SetKind, Verdict};
use crate::iptables::RenderConfig;

/// Endpoints maps per protocol and family.
pub const SHARDS: u32 = 64;
/// The most slots a weighted selection is spread over; below it weights are exact.
pub const MAX_WEIGHT_SLOTS: u64 = 4096;
/// The jhash seed ("wasp"): fixed, so a restart hashes clients to the same slots.
pub const HASH_SEED: u32 = 0x7761_7370;

/// Static names.
pub mod names {
    /// The dispatch map.
    pub const SERVICE_IPS: &str = "service-ips";
    /// VIPs without usable endpoints.
    pub const NO_ENDPOINTS: &str = "no-endpoint-services";
    /// Hairpin pairs.
    pub const HAIRPIN: &str = "hairpin";
    /// The dispatch chain.
    pub const SERVICES: &str = "services";
    /// The filter check chain.
    pub const CHECK: &str = "service-endpoints-check";
    /// The chain that rejects.
    pub const REJECT: &str = "reject-chain";
}

/// Everything one service port owns in one family's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortObjects {
    /// The dispatch key: VIP, protocol, port.
    pub vip: (IpAddr, wasp_model::Protocol, u16),
    /// The service chain.
    pub chain: String,
    /// The endpoints map (shard) holding the port's slots.
    pub map: String,
    /// The service chain's rules.
    pub rules: Vec<Rule>,
    /// The port's elements in its protocol's endpoints map.
    pub slots: Vec<Elem>,
    /// The verdict when no endpoint may be used (`no-endpoint-services`).
    pub unusable: Option<Verdict>,
    /// Endpoint addresses that need hairpin masquerade.
    pub hairpin: BTreeSet<IpAddr>,
    /// The affinity sets (ClientIP affinity only).
    pub affinity: Vec<Set>,
}

impl PortObjects {
    fn dispatch_elem(&self, verdict: Verdict) -> Elem {
        Elem::Dispatch {
            addr: self.vip.0,
            proto: self.vip.1,
            port: self.vip.2,
            verdict,
        }
    }

    fn map_set(&self) -> Set {
        Set {
            name: self.map.clone(),
            kind: SetKind::Endpoints(self.vip.1),
        }
    }
}

/// What is programmed in one family's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    /// Each service port's objects.
    pub ports: BTreeMap<ServicePortName, PortObjects>,
    /// Each hairpin address, with the number of ports that use it.
    pub hairpin: BTreeMap<IpAddr, usize>,
}

fn hash(s: &str) -> String {
    BASE32.encode(&Sha256::digest(s.as_bytes()))[..8].to_string()
}

/// The readable suffix of a port's object names: `HASH-ns/name/proto[/port]`.
fn suffix(name: &ServicePortName) -> String {
    let mut s = format!(
        "{}-{}/{}/{}",
        hash(&name.to_string()),
        name.service.namespace,
        name.service.name,
        name.protocol.lower(),
    );
    if !name.port.is_empty() {
        s.push('/');
        s.push_str(&name.port);
    }
    s
}

/// Renders one service port in one family with its selection (equal weights without one);
/// `None` when the port has no cluster IP in that family.
pub fn port_objects(
    name: &ServicePortName,
    port: &ServicePortState,
    sel: Option<&Selection>,
    cfg: &RenderConfig,
    f: Family,
) -> Option<PortObjects> {
    let equal;
    let sel = match sel {
        Some(s) => s,
        None => {
            equal = Selection::equal(port.endpoints.len());
            &equal
        }
    };
    let svc = &port.service;
    let vip = *svc.cluster_ips.iter().find(|ip| Family::of(ip) == f)?;
    let sfx = suffix(name);
    let mut p = PortObjects {
        vip: (vip, svc.protocol, svc.port),
        chain: format!("svc-{sfx}"),
        map: shard(name),
        rules: masquerade_rules(cfg, f),
        slots: Vec::new(),
        unusable: None,
        hairpin: BTreeSet::new(),
        affinity: Vec::new(),
    };
    let eps: Vec<(usize, &Endpoint)> = port
        .endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| Family::of(&e.ip) == f)
        .collect();
    if eps.is_empty() {
        p.unusable = Some(if port.has_any_endpoints {
            Verdict::Drop
        } else {
            Verdict::Goto(names::REJECT.into())
        });
    }
    p.hairpin = eps.iter().map(|(_, e)| e.ip).collect();
    let weights = sel.weights(port.endpoints.len());
    if let Some(timeout) = svc.session_affinity_seconds {
        sticky_rules(name, port, &eps, &weights, timeout, &mut p);
        return Some(p);
    }
    let targets = match sel {
        Selection::Hashed { table, .. } => hashed_slots(table, port, &eps),
        _ => weighted_slots(&eps, &weights),
    };
    let pick = match sel {
        Selection::Hashed { key, table } => Pick::Hash {
            key: *key,
            modulus: table.len() as u32,
            seed: HASH_SEED,
        },
        _ => Pick::Random {
            modulus: targets.len() as u32,
        },
    };
    p.slots = targets
        .into_iter()
        .enumerate()
        .map(|(slot, e)| Elem::Slot {
            vip,
            port: svc.port,
            slot: slot as u32,
            addr: e.ip,
            target: e.port,
        })
        .collect();
    if !p.slots.is_empty() {
        p.rules.push(Rule::Dnat {
            proto: svc.protocol,
            pick,
            map: p.map.clone(),
        });
    }
    Some(p)
}

/// Traffic from outside the cluster CIDRs (or all, with masquerade-all) is marked.
fn masquerade_rules(cfg: &RenderConfig, f: Family) -> Vec<Rule> {
    let mark = cfg.masquerade_mark;
    if cfg.masquerade_all {
        return vec![Rule::MarkMasquerade {
            outside: None,
            mark,
        }];
    }
    cfg.cluster_cidrs
        .iter()
        .filter(|c| Family::of(&c.addr()) == f)
        .map(|c| Rule::MarkMasquerade {
            outside: Some(*c),
            mark,
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One slot per unit of weight, after dividing the weights by their greatest common divisor
/// (3:1 is 4 slots, equal weights one slot each). Past [`MAX_WEIGHT_SLOTS`] the weights are
/// scaled down, keeping at least one slot for every endpoint of non-zero weight.
pub fn weighted_slots<'a>(eps: &[(usize, &'a Endpoint)], weights: &[u32]) -> Vec<&'a Endpoint> {
    let live: Vec<(&Endpoint, u64)> = eps
        .iter()
        .map(|&(i, e)| (e, u64::from(weights.get(i).copied().unwrap_or(1))))
        .filter(|(_, w)| *w > 0)
        .collect();
    let g = live.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
    let total: u64 = live.iter().map(|(_, w)| w / g).sum();
    let scale = |w: u64| {
        if total <= MAX_WEIGHT_SLOTS {
            w / g
        } else {
            (w / g * MAX_WEIGHT_SLOTS / total).max(1)
        }
    };
    live.iter()
        .flat_map(|&(e, w)| std::iter::repeat_n(e, scale(w) as usize))
        .collect()
}

/// The table's endpoint for each slot. A slot naming an endpoint of the other family goes to
/// one of this family's, chosen by slot number.
pub fn hashed_slots<'a>(
    table: &[u32],
    port: &'a ServicePortState,
    eps: &[(usize, &'a Endpoint)],
) -> Vec<&'a Endpoint> {
    if eps.is_empty() {
        return Vec::new();
    }
    table
        .iter()
        .enumerate()
        .map(|(s, &i)| match port.endpoints.get(i as usize) {
            Some(e) if eps.iter().any(|(j, _)| *j == i as usize) => e,
            _ => eps[s % eps.len()].1,
        })
        .collect()
}

/// ClientIP affinity: a known client goes back to its endpoint; a new one is spread by weight
/// (endpoint i with probability wᵢ / Σⱼ≥ᵢ wⱼ) and remembered.
fn sticky_rules(
    name: &ServicePortName,
    port: &ServicePortState,
    eps: &[(usize, &Endpoint)],
    weights: &[u32],
    timeout: u32,
    p: &mut PortObjects,
) {
    let set_of = |e: &Endpoint| Set {
        // The timeout is part of the set, so a new timeout makes new sets.
        name: format!("aff-{}", hash(&format!("{name}/{e}/{timeout}"))),
        kind: SetKind::Affinity { timeout },
    };
    let proto = port.service.protocol;
    for (_, e) in eps {
        let set = set_of(e);
        p.rules.push(Rule::Sticky {
            proto,
            chance: None,
            known: true,
            set: set.name.clone(),
            addr: e.ip,
            port: e.port,
        });
        p.affinity.push(set);
    }
    let live: Vec<(&Endpoint, u32)> = eps
        .iter()
        .map(|&(i, e)| (e, weights.get(i).copied().unwrap_or(1)))
        .filter(|(_, w)| *w > 0)
        .collect();
    let mut rest: u64 = live.iter().map(|(_, w)| u64::from(*w)).sum();
    for (k, (e, w)) in live.iter().enumerate() {
        let chance = (k + 1 < live.len()).then(|| (rest.min(u64::from(u32::MAX)) as u32, *w));
        p.rules.push(Rule::Sticky {
            proto,
            chance,
            known: false,
            set: set_of(e).name,
            addr: e.ip,
            port: e.port,
        });
        rest -= u64::from(*w);
    }
}

/// The sets, chains and rules every sync relies on.
pub fn static_ops(f: Family, cfg: &RenderConfig, tx: &mut Vec<(Family, Op)>) {
    let mut op = |o: Op| tx.push((f, o));
    for set in [service_ips(), no_endpoints(), hairpin()] {
        op(Op::AddSet(set));
    }

    let hook = |kind, hook, priority| {
        Some(Hook {
            kind,
            hook,
            priority,
        })
    };
    let chains: [(&str, Option<Hook>, Vec<Rule>); 8] = [
        (
            names::SERVICES,
            None,
            vec![Rule::Dispatch(names::SERVICE_IPS)],
        ),
        (names::REJECT, None, vec![Rule::Reject]),
        (
            names::CHECK,
            None,
            vec![Rule::Dispatch(names::NO_ENDPOINTS)],
        ),
        (
            "nat-prerouting",
            hook("nat", "prerouting", -100),
            vec![Rule::Jump(names::SERVICES)],
        ),
        (
            "nat-output",
            hook("nat", "output", -100),
            vec![Rule::Jump(names::SERVICES)],
        ),
        (
            "nat-postrouting",
            hook("nat", "postrouting", 100),
            vec![
                Rule::Hairpin(names::HAIRPIN),
                Rule::ReturnUnmarked(cfg.masquerade_mark),
                Rule::ClearMark(cfg.masquerade_mark),
                Rule::Masquerade,
            ],
        ),
        (
            "filter-forward",
            hook("filter", "forward", -110),
            vec![Rule::JumpIfNew(names::CHECK)],
        ),
        (
            "filter-output",
            hook("filter", "output", -110),
            vec![Rule::JumpIfNew(names::CHECK)],
        ),
    ];
    for (name, hook, rules) in chains {
        op(Op::AddChain(Chain {
            name: name.into(),
            hook,
        }));
        for rule in rules {
            op(Op::AddRule {
                chain: name.into(),
                rule,
            });
        }
    }
}

/// A set wasp does not want any more, known only by name: its kind is read off the name
/// (it decides only whether `wasp plan` says `set` or `map`).
pub fn stray_set(name: &str) -> Set {
    let kind = if name.starts_with("endpoints-") {
        // Only `wasp plan`'s noun depends on it: `delete map` needs no protocol.
        SetKind::Endpoints(wasp_model::Protocol::Tcp)
    } else if name == names::SERVICE_IPS || name == names::NO_ENDPOINTS {
        SetKind::Dispatch
    } else if name == names::HAIRPIN {
        SetKind::Hairpin
    } else {
        SetKind::Affinity { timeout: 0 }
    };
    Set {
        name: name.into(),
        kind,
    }
}

/// The endpoints map (shard) of a service port.
fn shard(name: &ServicePortName) -> String {
    let d = Sha256::digest(name.to_string().as_bytes());
    let h = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    format!("endpoints-{}-{}", name.protocol.lower(), h % SHARDS)
}

fn hairpin() -> Set {
    Set {
        name: names::HAIRPIN.into(),
        kind: SetKind::Hairpin,
    }
}

fn service_ips() -> Set {
    Set {
        name: names::SERVICE_IPS.into(),
        kind: SetKind::Dispatch,
    }
}

fn no_endpoints() -> Set {
    Set {
        name: names::NO_ENDPOINTS.into(),
        kind: SetKind::Dispatch,
    }
}

/// The operations that take one port from `old` to `new` (either may be absent).
pub fn port_ops(
    f: Family,
    old: Option<&PortObjects>,
    new: Option<&PortObjects>,
    tx: &mut Vec<(Family, Op)>,
) {
    let mut op = |o: Op| tx.push((f, o));
    let goto = |p: &PortObjects| p.dispatch_elem(Verdict::Goto(p.chain.clone()));
    match (old, new) {
        (None, None) => {}
        (None, Some(n)) => {
            op(Op::AddChain(Chain {
                name: n.chain.clone(),
                hook: None,
            }));
            // Adding a set that exists changes nothing, so the shard is simply declared.
            op(Op::AddSet(n.map_set()));
            for s in &n.affinity {
                op(Op::AddSet(s.clone()));
            }
            if !n.slots.is_empty() {
                op(Op::AddElements {
                    set: n.map_set(),
                    elems: n.slots.clone(),
                });
            }
            for r in &n.rules {
                op(Op::AddRule {
                    chain: n.chain.clone(),
                    rule: r.clone(),
                });
            }
            op(Op::AddElements {
                set: service_ips(),
                elems: vec![goto(n)],
            });
            if let Some(v) = &n.unusable {
                op(Op::AddElements {
                    set: no_endpoints(),
                    elems: vec![n.dispatch_elem(v.clone())],
                });
            }
        }
        (Some(o), None) => {
            op(Op::DeleteElements {
                set: service_ips(),
                elems: vec![goto(o)],
            });
            if let Some(v) = &o.unusable {
                op(Op::DeleteElements {
                    set: no_endpoints(),
                    elems: vec![o.dispatch_elem(v.clone())],
                });
            }
            op(Op::FlushChain(o.chain.clone()));
            op(Op::DeleteChain(o.chain.clone()));
            if !o.slots.is_empty() {
                op(Op::DeleteElements {
                    set: o.map_set(),
                    elems: o.slots.clone(),
                });
            }
            for s in &o.affinity {
                op(Op::DeleteSet(s.clone()));
            }
        }
        (Some(o), Some(n)) => {
            let moved = o.vip != n.vip;
            let unusable_changed = moved || o.unusable != n.unusable;
            if unusable_changed && let Some(v) = &o.unusable {
                op(Op::DeleteElements {
                    set: no_endpoints(),
                    elems: vec![o.dispatch_elem(v.clone())],
                });
            }
            if moved {
                op(Op::DeleteElements {
                    set: service_ips(),
                    elems: vec![goto(o)],
                });
            }
            for s in n.affinity.iter().filter(|s| !o.affinity.contains(s)) {
                op(Op::AddSet(s.clone()));
            }
            if o.slots != n.slots {
                // A slot whose endpoint changed is deleted and added again: elements only.
                // Slots are in slot order, so compare position by position.
                let (mut gone, mut new) = (Vec::new(), Vec::new());
                for i in 0..o.slots.len().max(n.slots.len()) {
                    let (a, b) = (o.slots.get(i), n.slots.get(i));
                    if a != b {
                        gone.extend(a);
                        new.extend(b);
                    }
                }
                if !gone.is_empty() {
                    op(Op::DeleteElements {
                        set: o.map_set(),
                        elems: gone.into_iter().cloned().collect(),
                    });
                }
                if !new.is_empty() {
                    op(Op::AddElements {
                        set: n.map_set(),
                        elems: new.into_iter().cloned().collect(),
                    });
                }
            }
            if o.rules != n.rules {
                op(Op::FlushChain(n.chain.clone()));
                for r in &n.rules {
                    op(Op::AddRule {
                        chain: n.chain.clone(),
                        rule: r.clone(),
                    });
                }
            }
            for s in o.affinity.iter().filter(|s| !n.affinity.contains(s)) {
                op(Op::DeleteSet(s.clone()));
            }
            if moved {
                op(Op::AddElements {
                    set: service_ips(),
                    elems: vec![goto(n)],
                });
            }
            if unusable_changed && let Some(v) = &n.unusable {
                op(Op::AddElements {
                    set: no_endpoints(),
                    elems: vec![n.dispatch_elem(v.clone())],
                });
            }
        }
    }
}

/// The hairpin set's element changes.
pub fn hairpin_ops(
    f: Family,
    added: BTreeSet<IpAddr>,
    removed: BTreeSet<IpAddr>,
    tx: &mut Vec<(Family, Op)>,
) {
    let set = hairpin();
    if !removed.is_empty() {
        tx.push((
            f,
            Op::DeleteElements {
                set: set.clone(),
                elems: removed.into_iter().map(Elem::Hairpin).collect(),
            },
        ));
    }
    if !added.is_empty() {
        tx.push((
            f,
            Op::AddElements {
                set,
                elems: added.into_iter().map(Elem::Hairpin).collect(),
            },
        ));
    }
}

/// The desired objects of every port in one family.
pub fn desired(
    state: &ProxyState,
    selections: &BTreeMap<ServicePortName, Selection>,
    cfg: &RenderConfig,
    f: Family,
) -> BTreeMap<ServicePortName, PortObjects> {
    state
        .ports
        .iter()
        .filter_map(|(name, port)| {
            port_objects(name, port, selections.get(name), cfg, f).map(|p| (name.clone(), p))
        })
        .collect()
}
