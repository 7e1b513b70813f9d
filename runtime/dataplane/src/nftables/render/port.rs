//! One service port in one family's table: its chain, its rules, its slots in an endpoints
//! map, its dispatch elements and, with ClientIP affinity, its per-endpoint sets.

use std::collections::BTreeSet;
use std::net::IpAddr;

use wasp_model::{Endpoint, Selection, ServicePortName, ServicePortState};

use super::table::{SHARDS, names};
use crate::core::masquerade::{self, Masquerade};
use crate::core::names::{HASH_SEED, hash, hash_u32};
use crate::core::spread::{self, chances, hashed_slots, weighted_slots};
use crate::core::{RenderConfig, endpoints};
use crate::nftables::ops::{Elem, Family, Pick, Rule, Set, SetKind, Verdict};

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
    pub(super) fn dispatch_elem(&self, verdict: Verdict) -> Elem {
        Elem::Dispatch {
            addr: self.vip.0,
            proto: self.vip.1,
            port: self.vip.2,
            verdict,
        }
    }

    pub(super) fn map_set(&self) -> Set {
        Set {
            name: self.map.clone(),
            kind: SetKind::Endpoints(self.vip.1),
        }
    }
}

/// The readable suffix of a port's object names: `HASH-ns/name/proto[/port]`.
fn suffix(name: &ServicePortName) -> String {
    let mut s = format!(
        "{}-{}/{}/{}",
        hash(&name.to_string(), 8),
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

/// The endpoints map (shard) of a service port.
fn shard(name: &ServicePortName) -> String {
    let h = hash_u32(&name.to_string());
    format!("endpoints-{}-{}", name.protocol.lower(), h % SHARDS)
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
    let sel = spread::or_equal(sel, port.endpoints.len());
    let svc = &port.service;
    let vip = endpoints::vip(port, f)?;
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
    let eps = endpoints::of_family(port, f);
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
    let targets = match &*sel {
        Selection::Hashed { table, .. } => hashed_slots(table, &port.endpoints, &eps),
        _ => weighted_slots(&eps, &weights),
    };
    let pick = match &*sel {
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
    match masquerade::decision(cfg, f) {
        Masquerade::All => vec![Rule::MarkMasquerade {
            outside: None,
            mark,
        }],
        Masquerade::NotFrom(cidrs) => cidrs
            .into_iter()
            .map(|c| Rule::MarkMasquerade {
                outside: Some(c),
                mark,
            })
            .collect(),
    }
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
        name: format!("aff-{}", hash(&format!("{name}/{e}/{timeout}"), 8)),
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
    for c in chances(eps, weights) {
        let chance = c
            .odds
            .map(|(w, rest)| (rest.min(u64::from(u32::MAX)) as u32, w));
        p.rules.push(Rule::Sticky {
            proto,
            chance,
            known: false,
            set: set_of(c.endpoint).name,
            addr: c.endpoint.ip,
            port: c.endpoint.port,
        });
    }
}
