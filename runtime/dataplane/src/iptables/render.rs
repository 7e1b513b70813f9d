//! The pure render: model + selections → `iptables-restore` input.
//!
//! One function per feature, as the house style asks: dispatch, masquerade, spreading,
//! affinity, the endpoint chain, and rejection; kube-proxy's 800-line `syncProxyRules` is the
//! counter-example.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use wasp_model::{
    Endpoint, HashKey, ProxyState, Selection, ServicePortName, ServicePortState, StateDiff,
};

use super::chain;
use crate::core::masquerade::{self, Masquerade};
use crate::core::names::HASH_SEED;
use crate::core::spread::{self, chances};
use crate::core::{Family, RenderConfig, endpoints};

/// What is programmed after a sync: the chains each service port owns, and the dispatch rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    /// The nat chains of each service port.
    pub chains: BTreeMap<ServicePortName, Vec<String>>,
    /// The nat dispatch rules (`WASP-SERVICES`).
    pub dispatch: Vec<String>,
}

/// A rendered sync.
#[derive(Debug, Clone, Default)]
pub struct Rendered {
    /// The `iptables-restore --noflush` input.
    pub text: String,
    /// What is programmed once the text is applied.
    pub programmed: Programmed,
    /// Rules written.
    pub rules: usize,
}

/// Which service ports to write, and which chains to remove.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Everything; chains in `existing` that are not wanted are removed.
    Full {
        /// The WASP- chains now in the nat table.
        existing: &'a BTreeSet<String>,
    },
    /// Only what changed since `previous` was programmed.
    Partial {
        /// What the last sync programmed.
        previous: &'a Programmed,
        /// What changed since.
        diff: &'a StateDiff,
    },
}

/// Renders one sync for one IP family: the pure entry point of the iptables mode, where a
/// Service becomes rules.
pub fn render(
    state: &ProxyState,
    selections: &BTreeMap<ServicePortName, Selection>,
    cfg: &RenderConfig,
    f: Family,
    scope: Scope<'_>,
) -> Rendered {
    let mut nat = Table::default();
    let mut filter = Table::default();
    let full = matches!(scope, Scope::Full { .. });
    let mut programmed = match scope {
        Scope::Full { .. } => Programmed::default(),
        Scope::Partial { previous, .. } => previous.clone(),
    };
    if full {
        static_chains(cfg, &mut nat, &mut filter);
    }
    filter.chain(chain::SERVICES);
    let dispatch: Vec<String> = state
        .ports
        .iter()
        .filter_map(|(name, port)| dispatch_rule(name, port, f))
        .collect();
    if full || dispatch != programmed.dispatch {
        nat.chain(chain::SERVICES);
        for r in &dispatch {
            nat.rule(r.clone());
        }
    }
    programmed.dispatch = dispatch;
    for (name, port) in &state.ports {
        reject_rule(name, port, f, &mut filter);
    }
    let write: Vec<&ServicePortName> = match scope {
        Scope::Full { .. } => state.ports.keys().collect(),
        Scope::Partial { diff, .. } => diff.changed.iter().collect(),
    };
    for name in write {
        let Some(port) = state.ports.get(name) else {
            continue;
        };
        let sel = spread::or_equal(selections.get(name), port.endpoints.len());
        let chains = service_chains(name, port, &sel, cfg, f, &mut nat);
        programmed.chains.insert(name.clone(), chains);
    }
    let stale = stale_chains(state, scope, &mut programmed);
    for c in &stale {
        nat.chain(c);
    }
    let rules = nat.rules + filter.rules;
    let mut text = String::new();
    filter.emit("filter", &[], &mut text);
    nat.emit("nat", &stale, &mut text);
    Rendered {
        text,
        programmed,
        rules,
    }
}

/// The chains to delete: in a full sync, those in the kernel that nothing wants; in a partial
/// one, the old chains of ports that changed or went away.
fn stale_chains(state: &ProxyState, scope: Scope<'_>, programmed: &mut Programmed) -> Vec<String> {
    match scope {
        Scope::Full { existing } => {
            let wanted: BTreeSet<&String> = programmed.chains.values().flatten().collect();
            existing
                .iter()
                .filter(|c| chain::per_service(c) && !wanted.contains(c))
                .cloned()
                .collect()
        }
        Scope::Partial { previous, diff } => {
            let mut stale = BTreeSet::new();
            for name in diff.touched() {
                let old = previous.chains.get(name).into_iter().flatten();
                let new: BTreeSet<&String> =
                    programmed.chains.get(name).into_iter().flatten().collect();
                stale.extend(old.filter(|c| !new.contains(c)).cloned());
                if !state.ports.contains_key(name) {
                    programmed.chains.remove(name);
                }
            }
            stale.into_iter().collect()
        }
    }
}

/// The chains and rules every sync relies on: masquerade marking and forwarding acceptance.
fn static_chains(cfg: &RenderConfig, nat: &mut Table, filter: &mut Table) {
    let mark = format!("{:#x}/{:#x}", cfg.masquerade_mark, cfg.masquerade_mark);
    nat.chain(chain::POSTROUTING);
    nat.rule(format!(
        "-A {} -m mark ! --mark {mark} -j RETURN",
        chain::POSTROUTING
    ));
    // Clear the mark so a re-traversal (e.g. IPsec) does not masquerade twice. Marks are
    // written as iptables-save prints them (`--xor-mark M` is `--set-xmark M/0x0`), so the
    // rules read back exactly as rendered.
    nat.rule(format!(
        "-A {} -j MARK --set-xmark {:#x}/0x0",
        chain::POSTROUTING,
        cfg.masquerade_mark
    ));
    nat.rule(format!(
        "-A {} -m comment --comment \"wasp service traffic requiring SNAT\" -j MASQUERADE --random-fully",
        chain::POSTROUTING
    ));
    nat.chain(chain::MARK_MASQ);
    nat.rule(format!(
        "-A {} -j MARK --set-xmark {mark}",
        chain::MARK_MASQ
    ));
    filter.chain(chain::FORWARD);
    filter.rule(format!(
        "-A {} -m conntrack --ctstate INVALID -j DROP",
        chain::FORWARD
    ));
    filter.rule(format!(
        "-A {} -m comment --comment \"wasp forwarding rules\" -m mark --mark {mark} -j ACCEPT",
        chain::FORWARD
    ));
    filter.rule(format!(
        "-A {} -m comment --comment \"wasp forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        chain::FORWARD
    ));
}

fn host(ip: &IpAddr) -> String {
    format!("{ip}/{}", Family::of(ip).host_prefix())
}

/// `-d VIP -p proto -m proto --dport P`, the match every per-VIP rule starts with.
fn vip_match(ip: &IpAddr, port: &ServicePortState) -> String {
    let p = port.service.protocol.lower();
    format!(
        "-d {} -p {p} -m {p} --dport {}",
        host(ip),
        port.service.port
    )
}

/// The nat dispatch rule: jump to the service chain. It is kept even with no endpoints (the
/// chain is then empty and filter rejects), so endpoint changes never rewrite `WASP-SERVICES`.
fn dispatch_rule(name: &ServicePortName, port: &ServicePortState, f: Family) -> Option<String> {
    let ip = endpoints::vip(port, f)?;
    Some(format!(
        "-A {} -m comment --comment \"{name} cluster IP\" {} -j {}",
        chain::SERVICES,
        vip_match(&ip, port),
        chain::service(name)
    ))
}

/// REJECT when there is no endpoint; DROP when endpoints exist but none this traffic may use
/// (traffic policy Local), as kube-proxy does.
fn reject_rule(name: &ServicePortName, port: &ServicePortState, f: Family, filter: &mut Table) {
    if !endpoints::of_family(port, f).is_empty() {
        return;
    }
    let Some(ip) = endpoints::vip(port, f) else {
        return;
    };
    let (why, verdict) = if port.has_any_endpoints {
        ("has no local endpoints", "DROP")
    } else {
        ("has no endpoints", "REJECT")
    };
    filter.rule(format!(
        "-A {} -m comment --comment \"{name} {why}\" {} -j {verdict}",
        chain::SERVICES,
        vip_match(&ip, port)
    ));
}

/// Writes the service chain and its endpoint chains; returns their names.
fn service_chains(
    name: &ServicePortName,
    port: &ServicePortState,
    sel: &Selection,
    cfg: &RenderConfig,
    f: Family,
    nat: &mut Table,
) -> Vec<String> {
    let svc = chain::service(name);
    nat.chain(&svc);
    let mut chains = vec![svc.clone()];
    let Some(vip) = endpoints::vip(port, f) else {
        return chains;
    };
    let eps = endpoints::of_family(port, f);
    if eps.is_empty() {
        return chains;
    }
    // HMARK overwrites the whole mark, so it must come before the masquerade mark is set.
    let hashed = match sel {
        Selection::Hashed { key, table } if hashed_realisable(cfg) => Some((*key, table)),
        _ => None,
    };
    if let Some((key, table)) = hashed {
        hmark_rule(name, &svc, key, table.len(), nat);
    }
    masquerade_rule(name, &vip, port, cfg, f, &svc, nat);
    if let Some(timeout) = port.service.session_affinity_seconds {
        for (_, e) in &eps {
            let sep = chain::endpoint(name, e);
            nat.rule(format!(
                "-A {svc} -m comment --comment \"{name} -> {e}\" -m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}"
            ));
        }
    }
    if let Some((_, table)) = hashed {
        slot_rules(name, &svc, port, table, f, nat);
    }
    // Per-connection selections use their fallback weights; a hashed table that cannot be
    // realised here uses its slot counts.
    spread_rules(name, &svc, &eps, &sel.weights(port.endpoints.len()), nat);
    for (_, e) in &eps {
        let sep = chain::endpoint(name, e);
        endpoint_chain(name, port, e, &sep, nat);
        chains.push(sep);
    }
    chains
}

/// Traffic from outside the cluster CIDRs (or all, with masquerade-all) is marked.
fn masquerade_rule(
    name: &ServicePortName,
    vip: &IpAddr,
    port: &ServicePortState,
    cfg: &RenderConfig,
    f: Family,
    svc: &str,
    nat: &mut Table,
) {
    let m = vip_match(vip, port);
    let comment = format!("-m comment --comment \"{name} cluster IP\"");
    match masquerade::decision(cfg, f) {
        Masquerade::All => nat.rule(format!("-A {svc} {comment} {m} -j {}", chain::MARK_MASQ)),
        Masquerade::NotFrom(cidrs) => {
            for cidr in cidrs {
                nat.rule(format!(
                    "-A {svc} {comment} {m} ! -s {cidr} -j {}",
                    chain::MARK_MASQ
                ));
            }
        }
    }
}

/// The most slots a hashed table is realised with: one mark rule each.
pub const HMARK_SLOTS: usize = 256;
/// The mark bits the slot number is written to.
const SLOT_MASK: u32 = 0xfff;

/// Whether hashed tables can be realised: the slot bits must not overlap the masquerade mark.
fn hashed_realisable(cfg: &RenderConfig) -> bool {
    cfg.masquerade_mark & SLOT_MASK == 0
}

/// `HMARK` writes `hash(key) mod M + 1` into the packet mark (the slot).
fn hmark_rule(name: &ServicePortName, svc: &str, key: HashKey, m: usize, nat: &mut Table) {
    let tuple = match key {
        HashKey::SourceIp => "src",
        HashKey::SourceIpPort => "src,sport",
        HashKey::FiveTuple => "src,dst,sport,dport,proto",
    };
    nat.rule(format!(
        "-A {svc} -m comment --comment \"{name} hash\" -j HMARK --hmark-tuple {tuple} --hmark-mod {} --hmark-offset 1 --hmark-rnd {HASH_SEED:#x}",
        m.min(HMARK_SLOTS)
    ));
}

/// One rule per slot (the table sampled to at most [`HMARK_SLOTS`]): the slot's mark → the
/// endpoint the table names. Slots naming an endpoint of the other family fall through to
/// the weighted rules after them.
fn slot_rules(
    name: &ServicePortName,
    svc: &str,
    port: &ServicePortState,
    table: &[u32],
    f: Family,
    nat: &mut Table,
) {
    for (s, original) in spread::sampled(table.len(), HMARK_SLOTS).enumerate() {
        let Some(e) = table
            .get(original)
            .and_then(|&i| port.endpoints.get(i as usize))
        else {
            continue;
        };
        if !f.holds(&e.ip) {
            continue;
        }
        nat.rule(format!(
            "-A {svc} -m comment --comment \"{name} -> {e}\" -m mark --mark {:#x}/{SLOT_MASK:#x} -j {}",
            s + 1,
            chain::endpoint(name, e)
        ));
    }
}

/// A weighted pick with `statistic` (`core::spread::chances`); weight 0 means never.
fn spread_rules(
    name: &ServicePortName,
    svc: &str,
    eps: &[(usize, &Endpoint)],
    weights: &[u32],
    nat: &mut Table,
) {
    for c in chances(eps, weights) {
        let (e, sep) = (c.endpoint, chain::endpoint(name, c.endpoint));
        let comment = format!("-m comment --comment \"{name} -> {e}\"");
        match c.odds {
            None => nat.rule(format!("-A {svc} {comment} -j {sep}")),
            Some((w, rest)) => {
                let p = f64::from(w) / rest as f64;
                nat.rule(format!(
                    "-A {svc} {comment} -m statistic --mode random --probability {p:.10} -j {sep}"
                ));
            }
        }
    }
}

/// The endpoint chain: hairpin masquerade, then DNAT (recording affinity when it is on).
fn endpoint_chain(
    name: &ServicePortName,
    port: &ServicePortState,
    e: &Endpoint,
    sep: &str,
    nat: &mut Table,
) {
    nat.chain(sep);
    let comment = format!("-m comment --comment \"{name}\"");
    nat.rule(format!(
        "-A {sep} {comment} -s {} -j {}",
        host(&e.ip),
        chain::MARK_MASQ
    ));
    let p = port.service.protocol.lower();
    let affinity = if port.service.session_affinity_seconds.is_some() {
        format!(" -m recent --name {sep} --set")
    } else {
        String::new()
    };
    nat.rule(format!(
        "-A {sep} {comment} -p {p}{affinity} -m {p} -j DNAT --to-destination {e}"
    ));
}

/// One table's part of the restore input.
#[derive(Debug, Default)]
struct Table {
    chains: Vec<String>,
    lines: String,
    rules: usize,
}

impl Table {
    fn chain(&mut self, name: &str) {
        self.chains.push(name.to_string());
    }

    fn rule(&mut self, r: String) {
        self.lines.push_str(&r);
        self.lines.push('\n');
        self.rules += 1;
    }

    /// Declaring a chain under `--noflush` creates or flushes it; `-X` then deletes the stale.
    fn emit(&self, table: &str, delete: &[String], out: &mut String) {
        let _ = writeln!(out, "*{table}");
        for c in &self.chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        out.push_str(&self.lines);
        for c in delete {
            let _ = writeln!(out, "-X {c}");
        }
        out.push_str("COMMIT\n");
    }
}
