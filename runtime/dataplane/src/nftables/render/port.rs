//! One service port in one family's table: its chains and rules, its slots in an endpoints
//! map, its dispatch, no-endpoint and firewall elements and, with ClientIP affinity, its
//! per-endpoint sets.
//!
//! - `svc-…` serves the cluster IP: masquerade marking for sources outside the pods, then one
//!   DNAT rule over the internal endpoints (the cluster set, or the local one with
//!   `internalTrafficPolicy: Local`).
//! - `ext-…` serves the node port, the external IPs and the LoadBalancer IPs. With
//!   `externalTrafficPolicy: Cluster` everything is masqueraded and spread over the cluster
//!   set. With `Local`, pods and the node itself short-circuit to the cluster set (the node
//!   masqueraded, pods not), and everything else goes to the local set with its source kept;
//!   without a local endpoint it is not DNATed, and the no-endpoint check drops it.
//! - `fw-…` holds the LoadBalancer source ranges: a source in a range returns, the rest drops.
//!
//! The DNAT key is `daddr . dport . slot`, so each address the port is reached at has its
//! own slots: the class its traffic uses in slots `0..n`, and for `Local` external traffic the
//! short-circuit's cluster set after them (the rule picks with an offset).

use std::collections::BTreeSet;
use std::net::IpAddr;

use wasp_model::{Endpoint, Protocol, Selection, ServicePortName, ServicePortState};

use super::table::{SHARDS, names};
use crate::core::masquerade::{self, Masquerade};
use crate::core::names::{HASH_SEED, hash, hash_u32};
use crate::core::spread::{self, chances, hashed_slots, weighted_slots};
use crate::core::{RenderConfig, endpoints};
use crate::nftables::ops::{Action, Elem, Family, Match, Pick, Rule, Set, SetKind, Verdict};

/// Everything one service port owns in one family's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortObjects {
    /// The protocol.
    pub proto: Protocol,
    /// The port's chains, each with its rules (`svc-…`, then `ext-…` and `fw-…` if any).
    pub chains: Vec<(String, Vec<Rule>)>,
    /// The endpoints map (shard) holding the port's slots.
    pub map: String,
    /// The port's slots in its map.
    pub slots: Vec<Elem>,
    /// `service-ips` elements: each address and port the port is reached at → its chain.
    pub dispatch: Vec<Elem>,
    /// `no-endpoint-services` elements: addresses whose traffic has no endpoint to use.
    pub unusable: Vec<Elem>,
    /// `firewall-ips` elements: LoadBalancer IPs with source ranges → the `fw-…` chain.
    pub firewall: Vec<Elem>,
    /// Endpoint addresses that need hairpin masquerade.
    pub hairpin: BTreeSet<IpAddr>,
    /// The port's cluster IP, in `cluster-ips` (shared with the Service's other ports).
    pub cluster_ips: BTreeSet<IpAddr>,
    /// The affinity sets (ClientIP affinity only).
    pub affinity: Vec<Set>,
}

impl PortObjects {
    /// The port's map, as a set to declare.
    pub(super) fn map_set(&self) -> Set {
        Set {
            name: self.map.clone(),
            kind: SetKind::Endpoints(self.proto),
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

/// The endpoints map (shard) of a service port, among `shards` per protocol.
fn shard(name: &ServicePortName, shards: u32) -> String {
    let h = hash_u32(&name.to_string());
    format!(
        "endpoints-{}-{}",
        name.protocol.lower(),
        h % shards.max(SHARDS)
    )
}

/// A port being rendered: what every part of it needs.
struct Render<'a> {
    name: &'a ServicePortName,
    port: &'a ServicePortState,
    sel: &'a Selection,
    weights: Vec<u32>,
    family: Vec<(usize, &'a Endpoint)>,
    /// The userspace mode's listener, when this port's protocol is captured.
    capture: Option<u16>,
    p: PortObjects,
}

impl<'a> Render<'a> {
    /// This family's endpoints among `indices`.
    fn class(&self, indices: &[usize]) -> Vec<(usize, &'a Endpoint)> {
        endpoints::class(self.port, &self.family, indices)
    }

    /// The slot targets of `class`: the hashed table's slots, or one per unit of weight; a
    /// class the weights leave empty is spread equally rather than left unserved.
    fn targets(&self, class: &[(usize, &'a Endpoint)]) -> Vec<&'a Endpoint> {
        let t = match self.sel {
            Selection::Hashed { table, .. } => hashed_slots(table, &self.port.endpoints, class),
            _ => weighted_slots(class, &self.weights),
        };
        if t.is_empty() {
            return class.iter().map(|(_, e)| *e).collect();
        }
        t
    }

    /// The rules that send traffic matching `when` to `class`, whose slots for each of `keys`
    /// start at `offset`; adds the slots. With affinity, the sticky rules instead.
    fn pick(
        &mut self,
        when: Option<Match>,
        class: &[(usize, &'a Endpoint)],
        keys: &[(IpAddr, u16)],
        offset: u32,
    ) -> Vec<Rule> {
        if class.is_empty() {
            return Vec::new();
        }
        if let Some(port) = self.capture {
            // The proxy picks (and keeps affinity) itself, by where the connection was going.
            let proto = self.port.service.protocol;
            return vec![Rule::Redirect { when, proto, port }];
        }
        if let Some(timeout) = self.port.service.session_affinity_seconds {
            return self.sticky(when, class, timeout);
        }
        let targets = self.targets(class);
        for &(vip, port) in keys {
            self.p
                .slots
                .extend(targets.iter().enumerate().map(|(s, e)| Elem::Slot {
                    vip,
                    port,
                    slot: offset + s as u32,
                    addr: e.ip,
                    target: e.port,
                }));
        }
        let modulus = targets.len() as u32;
        let pick = match self.sel {
            Selection::Hashed { key, .. } => Pick::Hash {
                key: *key,
                modulus,
                seed: HASH_SEED,
                offset,
            },
            _ => Pick::Random { modulus, offset },
        };
        vec![Rule::Dnat {
            when,
            proto: self.port.service.protocol,
            pick,
            map: self.p.map.clone(),
        }]
    }

    /// ClientIP affinity: a known client goes back to its endpoint; a new one is spread by
    /// weight (`core::spread::chances`) and remembered. The sets are per endpoint, so a client
    /// keeps its endpoint whichever address it comes in at.
    fn sticky(
        &mut self,
        when: Option<Match>,
        class: &[(usize, &Endpoint)],
        timeout: u32,
    ) -> Vec<Rule> {
        let name = self.name;
        let set_of = |e: &Endpoint| Set {
            // The timeout is part of the set, so a new timeout makes new sets.
            name: format!("aff-{}", hash(&format!("{name}/{e}/{timeout}"), 8)),
            kind: SetKind::Affinity { timeout },
        };
        let proto = self.port.service.protocol;
        let mut rules = Vec::new();
        for (_, e) in class {
            let set = set_of(e);
            rules.push(Rule::Sticky {
                when: when.clone(),
                proto,
                chance: None,
                known: true,
                set: set.name.clone(),
                addr: e.ip,
                port: e.port,
            });
            if !self.p.affinity.contains(&set) {
                self.p.affinity.push(set);
            }
        }
        for c in chances(class, &self.weights) {
            let chance = c
                .odds
                .map(|(w, rest)| (rest.min(u64::from(u32::MAX)) as u32, w));
            rules.push(Rule::Sticky {
                when: when.clone(),
                proto,
                chance,
                known: false,
                set: set_of(c.endpoint).name,
                addr: c.endpoint.ip,
                port: c.endpoint.port,
            });
        }
        rules
    }

    /// What a packet to `keys` meets when its class is empty: reject without any endpoint,
    /// drop when some endpoint exists but none its traffic may use.
    fn unusable(&mut self, keys: &[(IpAddr, u16)]) {
        let verdict = if self.port.has_any_endpoints {
            Verdict::Drop
        } else {
            Verdict::Goto(names::REJECT.into())
        };
        let proto = self.p.proto;
        self.p
            .unusable
            .extend(keys.iter().map(|&(addr, port)| Elem::Dispatch {
                addr,
                proto,
                port,
                verdict: verdict.clone(),
            }));
    }

    fn dispatch(&mut self, keys: &[(IpAddr, u16)], chain: &str) {
        let proto = self.p.proto;
        self.p
            .dispatch
            .extend(keys.iter().map(|&(addr, port)| Elem::Dispatch {
                addr,
                proto,
                port,
                verdict: Verdict::Goto(chain.to_string()),
            }));
    }
}

/// Renders one service port in one family with its selection (equal weights without one);
/// `None` when the port has no cluster IP in that family. `node_port_ips` are the addresses
/// its node port answers on.
pub fn port_objects(
    name: &ServicePortName,
    port: &ServicePortState,
    sel: Option<&Selection>,
    cfg: &RenderConfig,
    f: Family,
    node_port_ips: &[IpAddr],
    shards: u32,
) -> Option<PortObjects> {
    let sel = spread::or_equal(sel, port.endpoints.len());
    let svc = &port.service;
    let vip = endpoints::vip(port, f)?;
    let mut r = Render {
        name,
        port,
        sel: &sel,
        weights: sel.weights(port.endpoints.len()),
        family: endpoints::of_family(port, f),
        capture: cfg.capture.filter(|_| svc.protocol != Protocol::Sctp),
        p: PortObjects {
            proto: svc.protocol,
            chains: Vec::new(),
            map: shard(name, shards),
            slots: Vec::new(),
            dispatch: Vec::new(),
            unusable: Vec::new(),
            firewall: Vec::new(),
            hairpin: BTreeSet::new(),
            cluster_ips: BTreeSet::from([vip]),
            affinity: Vec::new(),
        },
    };
    r.p.hairpin = r.family.iter().map(|(_, e)| e.ip).collect();
    let sfx = suffix(name);
    internal(&mut r, cfg, f, vip, &format!("svc-{sfx}"));
    let mut keys: Vec<(IpAddr, u16)> = svc
        .external_ips
        .iter()
        .chain(&svc.load_balancer_ips)
        .filter(|ip| f.holds(ip))
        .map(|ip| (*ip, svc.port))
        .collect();
    if let Some(np) = svc.node_port {
        keys.extend(
            node_port_ips
                .iter()
                .filter(|ip| f.holds(ip))
                .map(|ip| (*ip, np)),
        );
    }
    if !keys.is_empty() {
        external(&mut r, cfg, f, &keys, &format!("ext-{sfx}"));
    }
    firewall(&mut r, f, &format!("fw-{sfx}"));
    Some(r.p)
}

/// The cluster IP's chain and elements.
fn internal(r: &mut Render<'_>, cfg: &RenderConfig, f: Family, vip: IpAddr, chain: &str) {
    let key = [(vip, r.port.service.port)];
    let class = r.class(r.port.internal());
    let mut rules = masquerade_rules(cfg, f);
    rules.extend(r.pick(None, &class, &key, 0));
    if class.is_empty() {
        r.unusable(&key);
    }
    r.dispatch(&key, chain);
    r.p.chains.push((chain.to_string(), rules));
}

/// The node port's, external IPs' and LoadBalancer IPs' chain and elements.
fn external(
    r: &mut Render<'_>,
    cfg: &RenderConfig,
    f: Family,
    keys: &[(IpAddr, u16)],
    chain: &str,
) {
    let class = r.class(r.port.external());
    let mark = cfg.masquerade_mark;
    let mut rules = Vec::new();
    if !r.port.service.external_traffic_local {
        rules.push(Rule::Mark { when: None, mark });
        rules.extend(r.pick(None, &class, keys, 0));
    } else {
        // Pods and the node itself reach every endpoint (the node masqueraded, pods not);
        // their slots follow the local ones.
        let cluster = r.class(&r.port.cluster);
        let offset = r.targets(&class).len() as u32;
        let offset = if r.port.service.session_affinity_seconds.is_some() {
            0
        } else {
            offset
        };
        if !cluster.is_empty() {
            for cidr in cfg.cluster_cidrs.iter().filter(|c| f.holds(&c.addr())) {
                let from_pods = Some(Match::Saddr {
                    cidr: *cidr,
                    not: false,
                });
                let picks = r.pick(from_pods, &cluster, keys, offset);
                rules.extend(picks);
                // One set of slots serves every CIDR's rule.
                dedup_slots(&mut r.p.slots);
            }
            rules.push(Rule::Mark {
                when: Some(Match::SaddrLocal),
                mark,
            });
            rules.extend(r.pick(Some(Match::SaddrLocal), &cluster, keys, offset));
            dedup_slots(&mut r.p.slots);
        }
        rules.extend(r.pick(None, &class, keys, 0));
    }
    if class.is_empty() {
        r.unusable(keys);
    }
    r.dispatch(keys, chain);
    r.p.chains.push((chain.to_string(), rules));
}

/// Slots written twice (the same key, slot and target, for two rules) once.
fn dedup_slots(slots: &mut Vec<Elem>) {
    let mut seen = BTreeSet::new();
    slots.retain(|e| seen.insert(e.clone()));
}

/// The LoadBalancer source ranges: `firewall-ips` sends new connections to the LoadBalancer
/// IPs through `fw-…`, which returns for a source in a range and drops the rest.
fn firewall(r: &mut Render<'_>, f: Family, chain: &str) {
    let svc = &r.port.service;
    let ranges: Vec<_> = svc
        .load_balancer_source_ranges
        .iter()
        .filter(|c| f.holds(&c.addr()))
        .collect();
    if ranges.is_empty() {
        return;
    }
    let lb: Vec<(IpAddr, u16)> = svc
        .load_balancer_ips
        .iter()
        .filter(|ip| f.holds(ip))
        .map(|ip| (*ip, svc.port))
        .collect();
    if lb.is_empty() {
        return;
    }
    let mut rules: Vec<Rule> = ranges
        .into_iter()
        .map(|cidr| Rule::Filter {
            when: Some(Match::Saddr {
                cidr: *cidr,
                not: false,
            }),
            action: Action::Return,
        })
        .collect();
    rules.push(Rule::Filter {
        when: None,
        action: Action::Drop,
    });
    let proto = r.p.proto;
    r.p.firewall
        .extend(lb.iter().map(|&(addr, port)| Elem::Dispatch {
            addr,
            proto,
            port,
            verdict: Verdict::Goto(chain.to_string()),
        }));
    r.p.chains.push((chain.to_string(), rules));
}

/// Traffic from outside the cluster CIDRs (or all, with masquerade-all) is marked.
fn masquerade_rules(cfg: &RenderConfig, f: Family) -> Vec<Rule> {
    let mark = cfg.masquerade_mark;
    match masquerade::decision(cfg, f) {
        Masquerade::All => vec![Rule::Mark { when: None, mark }],
        Masquerade::NotFrom(cidrs) => cidrs
            .into_iter()
            .map(|cidr| Rule::Mark {
                when: Some(Match::Saddr { cidr, not: true }),
                mark,
            })
            .collect(),
    }
}
