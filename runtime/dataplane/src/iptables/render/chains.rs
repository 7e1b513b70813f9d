//! One service port's own nat chains, as kube-proxy writes them.
//!
//! - `WASP-SVC-…` (cluster policy): every endpoint cluster traffic may use.
//! - `WASP-SVL-…` (local policy): this node's endpoints.
//! - The internal chain (one of those two) first marks cluster IP traffic from outside the
//!   pods for masquerade.
//! - `WASP-EXT-…`, for node ports, external IPs and LoadBalancer IPs: with
//!   `externalTrafficPolicy: Cluster` everything is masqueraded and goes to `WASP-SVC-…`.
//!   With `Local`, pods go to `WASP-SVC-…` unmasqueraded, the node itself masqueraded, and
//!   the rest to `WASP-SVL-…` with its source kept (or, with no local endpoint, falls through
//!   to the filter table's DROP).
//! - `WASP-FW-…`: sources in the LoadBalancer source ranges go on to `WASP-EXT-…`.
//! - `WASP-SEP-…`, one per endpoint: hairpin masquerade, then DNAT.
//!
//! A hashed selection writes its slot into the packet mark with `HMARK`, which overwrites the
//! whole mark: so the slot is written first, in `WASP-EXT-…` for external traffic and in the
//! internal chain (for cluster IP traffic only) otherwise, and the masquerade mark after it.

use std::net::IpAddr;

use wasp_model::{Endpoint, HashKey, Protocol, Selection, ServicePortName, ServicePortState};

use super::{Table, View, dest_match, host};
use crate::core::masquerade::{self, Masquerade};
use crate::core::names::HASH_SEED;
use crate::core::spread::{self, chances};
use crate::core::{Family, RenderConfig};
use crate::iptables::chain;

/// The most slots a hashed table is realised with: one mark rule each.
pub const HMARK_SLOTS: usize = 256;
/// The mark bits the slot number is written to.
const SLOT_MASK: u32 = 0xfff;

/// Writes the port's chains; returns their names.
pub(super) fn port_chains(
    v: &View<'_>,
    sel: &Selection,
    cfg: &RenderConfig,
    f: Family,
    nat: &mut Table,
) -> Vec<String> {
    let svc = &v.port.service;
    let capture = cfg.capture.filter(|_| svc.protocol != Protocol::Sctp);
    // HMARK overwrites the whole mark, so it must come before the masquerade mark is set.
    let hashed = match sel {
        Selection::Hashed { key, table } if capture.is_none() && hashed_realisable(cfg) => {
            Some((*key, &table[..]))
        }
        _ => None,
    };
    let weights = sel.weights(v.port.endpoints.len());
    let pick = Pick {
        hashed,
        weights,
        capture,
    };
    let external = v.has_external();
    let mut written = Vec::new();
    if !svc.internal_traffic_local || external {
        let c = chain::service(v.name);
        nat.chain(&c);
        policy_chain(
            v,
            &c,
            &v.cluster,
            !svc.internal_traffic_local,
            &pick,
            cfg,
            f,
            nat,
        );
        written.push(c);
    }
    if svc.internal_traffic_local || (external && svc.external_traffic_local) {
        let c = chain::local(v.name);
        nat.chain(&c);
        policy_chain(
            v,
            &c,
            &v.local,
            svc.internal_traffic_local,
            &pick,
            cfg,
            f,
            nat,
        );
        written.push(c);
    }
    if external {
        written.push(external_chain(v, &pick, cfg, f, nat));
    }
    let ranges = v.source_ranges(f);
    if !ranges.is_empty() {
        let fw = chain::firewall(v.name);
        nat.chain(&fw);
        let comment = format!("-m comment --comment \"{} loadbalancer IP\"", v.name);
        for r in ranges {
            nat.rule(format!(
                "-A {fw} {comment} -s {r} -j {}",
                chain::external(v.name)
            ));
        }
        nat.rule(format!(
            "-A {fw} -m comment --comment \"other traffic to {} will be dropped by {}\"",
            v.name,
            chain::PROXY_FIREWALL
        ));
        written.push(fw);
    }
    // A captured port's connections go to the proxy, which picks the endpoint itself.
    for (_, e) in v.all.iter().filter(|_| capture.is_none()) {
        let sep = chain::endpoint(v.name, e);
        endpoint_chain(v.name, v.port, e, &sep, nat);
        written.push(sep);
    }
    written
}

/// How a port spreads: its hashed table, if realisable, and its weights; or to the userspace
/// proxy's listener, when the port is captured.
struct Pick<'a> {
    hashed: Option<(HashKey, &'a [u32])>,
    weights: Vec<u32>,
    capture: Option<u16>,
}

/// A policy chain over `class`; `internal` when cluster IP traffic comes here, which then
/// gets its slot and masquerade mark in this chain.
#[allow(clippy::too_many_arguments)]
fn policy_chain(
    v: &View<'_>,
    c: &str,
    class: &[(usize, &Endpoint)],
    internal: bool,
    pick: &Pick<'_>,
    cfg: &RenderConfig,
    f: Family,
    nat: &mut Table,
) {
    let cluster_ip = dest_match(&v.vip, v.port, v.port.service.port);
    if internal {
        if let Some((key, table)) = pick.hashed {
            hmark_rule(v.name, c, &cluster_ip, key, table.len(), nat);
        }
        masquerade_rule(v.name, &cluster_ip, cfg, f, c, nat);
    }
    if class.is_empty() {
        return;
    }
    if let Some(to) = pick.capture {
        // The proxy picks (and keeps affinity) itself, by where the connection was going.
        let p = v.port.service.protocol.lower();
        nat.rule(format!(
            "-A {c} -p {p} -m comment --comment \"{} -> wasp userspace proxy\" -j REDIRECT --to-ports {to}",
            v.name
        ));
        return;
    }
    if let Some(timeout) = v.port.service.session_affinity_seconds {
        for (_, e) in class {
            let sep = chain::endpoint(v.name, e);
            nat.rule(format!(
                "-A {c} -m comment --comment \"{} -> {e}\" -m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}",
                v.name
            ));
        }
    }
    if let Some((_, table)) = pick.hashed {
        slot_rules(v.name, c, v.port, table, class, nat);
    }
    // Per-connection selections use their fallback weights; a hashed table that cannot be
    // realised here uses its slot counts.
    spread_rules(v.name, c, class, &pick.weights, nat);
}

/// The external chain; returns its name.
fn external_chain(
    v: &View<'_>,
    pick: &Pick<'_>,
    cfg: &RenderConfig,
    f: Family,
    nat: &mut Table,
) -> String {
    let (name, ext) = (v.name, chain::external(v.name));
    let svc = chain::service(name);
    nat.chain(&ext);
    if let Some((key, table)) = pick.hashed {
        hmark_rule(name, &ext, "", key, table.len(), nat);
    }
    let masq = chain::MARK_MASQ;
    if !v.port.service.external_traffic_local {
        nat.rule(format!(
            "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j {masq}"
        ));
        nat.rule(format!("-A {ext} -j {svc}"));
        return ext;
    }
    for cidr in cfg.cluster_cidrs.iter().filter(|c| f.holds(&c.addr())) {
        nat.rule(format!(
            "-A {ext} -s {cidr} -m comment --comment \"pod traffic for {name} external destinations\" -j {svc}"
        ));
    }
    nat.rule(format!(
        "-A {ext} -m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {masq}"
    ));
    nat.rule(format!(
        "-A {ext} -m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {svc}"
    ));
    if !v.local.is_empty() {
        nat.rule(format!("-A {ext} -j {}", chain::local(name)));
    }
    ext
}

/// Cluster IP traffic from outside the cluster CIDRs (or all, with masquerade-all) is marked.
fn masquerade_rule(
    name: &ServicePortName,
    cluster_ip: &str,
    cfg: &RenderConfig,
    f: Family,
    c: &str,
    nat: &mut Table,
) {
    let comment = format!("-m comment --comment \"{name} cluster IP\"");
    match masquerade::decision(cfg, f) {
        Masquerade::All => nat.rule(format!(
            "-A {c} {comment} {cluster_ip} -j {}",
            chain::MARK_MASQ
        )),
        Masquerade::NotFrom(cidrs) => {
            for cidr in cidrs {
                nat.rule(format!(
                    "-A {c} {comment} {cluster_ip} ! -s {cidr} -j {}",
                    chain::MARK_MASQ
                ));
            }
        }
    }
}

/// Whether hashed tables can be realised: the slot bits must not overlap the masquerade mark.
fn hashed_realisable(cfg: &RenderConfig) -> bool {
    cfg.masquerade_mark & SLOT_MASK == 0
}

/// `HMARK` writes `hash(key) mod M + 1` into the packet mark (the slot), for the packets
/// matching `when` (all, when empty).
fn hmark_rule(
    name: &ServicePortName,
    c: &str,
    when: &str,
    key: HashKey,
    m: usize,
    nat: &mut Table,
) {
    let tuple = match key {
        HashKey::SourceIp => "src",
        HashKey::SourceIpPort => "src,sport",
        HashKey::FiveTuple => "src,dst,sport,dport,proto",
    };
    let when = if when.is_empty() {
        String::new()
    } else {
        format!(" {when}")
    };
    nat.rule(format!(
        "-A {c} -m comment --comment \"{name} hash\"{when} -j HMARK --hmark-tuple {tuple} --hmark-mod {} --hmark-offset 1 --hmark-rnd {HASH_SEED:#x}",
        m.min(HMARK_SLOTS)
    ));
}

/// One rule per slot (the table sampled to at most [`HMARK_SLOTS`]): the slot's mark → the
/// endpoint the table names. Slots naming an endpoint outside `class` (another family's, or
/// one this traffic may not use) fall through to the weighted rules after them.
fn slot_rules(
    name: &ServicePortName,
    c: &str,
    port: &ServicePortState,
    table: &[u32],
    class: &[(usize, &Endpoint)],
    nat: &mut Table,
) {
    let mut member = vec![false; port.endpoints.len()];
    for (i, _) in class {
        member[*i] = true;
    }
    for (s, original) in spread::sampled(table.len(), HMARK_SLOTS).enumerate() {
        let Some(&i) = table.get(original) else {
            continue;
        };
        let i = i as usize;
        if !member.get(i).copied().unwrap_or(false) {
            continue;
        }
        let e = &port.endpoints[i];
        nat.rule(format!(
            "-A {c} -m comment --comment \"{name} -> {e}\" -m mark --mark {:#x}/{SLOT_MASK:#x} -j {}",
            s + 1,
            chain::endpoint(name, e)
        ));
    }
}

/// A weighted pick with `statistic` (`core::spread::chances`); weight 0 means never.
fn spread_rules(
    name: &ServicePortName,
    c: &str,
    eps: &[(usize, &Endpoint)],
    weights: &[u32],
    nat: &mut Table,
) {
    for ch in chances(eps, weights) {
        let (e, sep) = (ch.endpoint, chain::endpoint(name, ch.endpoint));
        let comment = format!("-m comment --comment \"{name} -> {e}\"");
        match ch.odds {
            None => nat.rule(format!("-A {c} {comment} -j {sep}")),
            Some((w, rest)) => {
                let p = f64::from(w) / rest as f64;
                nat.rule(format!(
                    "-A {c} {comment} -m statistic --mode random --probability {p:.10} -j {sep}"
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
    let ip: &IpAddr = &e.ip;
    nat.rule(format!(
        "-A {sep} {comment} -s {} -j {}",
        host(ip),
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
