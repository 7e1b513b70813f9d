//! The ipvs mode's helper rules where the host has no nftables: the same decisions as the
//! helper table ([`super::helper`]), as `WASP-IPVS-` chains written with
//! `iptables-restore --noflush`.
//!
//! Each kind of element has a chain of its own, one rule per element, so a partial sync
//! adds (`-A`, or `-I … 1` where a chain ends in fixed rules) and deletes (`-D`) only the
//! rules of the elements that changed; a full sync declares every chain, which flushes it,
//! and writes them all. The firewall chain is rewritten whenever a source range changes.
//!
//! - filter `INPUT` and `OUTPUT` → `WASP-IPVS-FILTER`: new connections to `-REJECTED`
//!   (REJECT), to `-DROPPED` unless short-circuited (DROP), everything through `-FIREWALL`
//!   (sources outside a LoadBalancer's ranges dropped), and new connections to an address on
//!   the device through `-VIPS` → `-SERVICES`, which returns for each virtual server and
//!   rejects the rest. (filter `OUTPUT` runs after IPVS has taken the node's own connections
//!   to a virtual server, where the nftables chain runs before it; a virtual server without
//!   real servers refuses them itself.)
//! - nat `PREROUTING` (pods) and `OUTPUT` → `-SHORT` sets a Local-policy address's mark for
//!   its marked virtual server; then `-MASQ-ALL` and `-MASQ-OUTSIDE` set the masquerade mark.
//! - nat `POSTROUTING` → `WASP-IPVS-POSTROUTING`: the node's short-circuited traffic, the
//!   marked, and hairpin (`-HAIRPIN`) are masqueraded.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::genl::VsKey;
use super::render::{Elem, MARK_BASE, MARK_MASK};
use crate::core::masquerade::{Masquerade, decision};
use crate::core::{Family, RenderConfig};
use crate::iptables::render::host;

const FILTER: &str = "WASP-IPVS-FILTER";
const REJECTED: &str = "WASP-IPVS-REJECTED";
const DROPPED: &str = "WASP-IPVS-DROPPED";
const FIREWALL: &str = "WASP-IPVS-FIREWALL";
const VIPS: &str = "WASP-IPVS-VIPS";
const SERVICES: &str = "WASP-IPVS-SERVICES";
const PREROUTING: &str = "WASP-IPVS-PREROUTING";
const OUTPUT: &str = "WASP-IPVS-OUTPUT";
const SHORT: &str = "WASP-IPVS-SHORT";
const MASQ_ALL: &str = "WASP-IPVS-MASQ-ALL";
const MASQ_OUTSIDE: &str = "WASP-IPVS-MASQ-OUTSIDE";
const MARK_OUTSIDE: &str = "WASP-IPVS-MARK-OUTSIDE";
const POSTROUTING: &str = "WASP-IPVS-POSTROUTING";
const SHORT_MASQ: &str = "WASP-IPVS-SHORT-MASQ";
const UNMARK_MASQ: &str = "WASP-IPVS-UNMARK-MASQ";
const HAIRPIN: &str = "WASP-IPVS-HAIRPIN";

const FILTER_CHAINS: &[&str] = &[FILTER, REJECTED, DROPPED, FIREWALL, VIPS, SERVICES];
const NAT_CHAINS: &[&str] = &[
    PREROUTING,
    OUTPUT,
    SHORT,
    MASQ_ALL,
    MASQ_OUTSIDE,
    MARK_OUTSIDE,
    POSTROUTING,
    SHORT_MASQ,
    UNMARK_MASQ,
    HAIRPIN,
];

/// The hooks from the built-in chains, as (table, chain, rule spec).
pub const HOOKS: &[(&str, &str, &str)] = &[
    ("filter", "INPUT", HOOK_FILTER),
    ("filter", "OUTPUT", HOOK_FILTER),
    (
        "nat",
        "PREROUTING",
        "-m comment --comment \"wasp ipvs helper\" -j WASP-IPVS-PREROUTING",
    ),
    (
        "nat",
        "OUTPUT",
        "-m comment --comment \"wasp ipvs helper\" -j WASP-IPVS-OUTPUT",
    ),
    (
        "nat",
        "POSTROUTING",
        "-m comment --comment \"wasp ipvs helper\" -j WASP-IPVS-POSTROUTING",
    ),
];

const HOOK_FILTER: &str = "-m comment --comment \"wasp ipvs helper\" -j WASP-IPVS-FILTER";

/// `-d A -p P -m P --dport N`.
fn dest(k: &VsKey) -> String {
    let p = k.proto.lower();
    format!("-d {} -p {p} -m {p} --dport {}", host(&k.addr), k.port)
}

/// The element's rule: its table, chain and spec; the firewall's are written by
/// [`firewall_rules`].
fn rule(cfg: &RenderConfig, e: &Elem) -> Option<(&'static str, &'static str, String)> {
    let mark = cfg.masquerade_mark;
    Some(match e {
        Elem::Vip(a) => ("filter", VIPS, format!("-d {} -j {SERVICES}", host(a))),
        Elem::Service(k) => ("filter", SERVICES, format!("{} -j RETURN", dest(k))),
        Elem::Reject(k) => ("filter", REJECTED, format!("{} -j REJECT", dest(k))),
        Elem::Drop(k) => ("filter", DROPPED, format!("{} -j DROP", dest(k))),
        Elem::MasqueradeAll(k) => (
            "nat",
            MASQ_ALL,
            format!("{} -j MARK --set-xmark {mark:#x}/{mark:#x}", dest(k)),
        ),
        Elem::MasqueradeOutside(k) => (
            "nat",
            MASQ_OUTSIDE,
            format!("{} -j {MARK_OUTSIDE}", dest(k)),
        ),
        Elem::Hairpin(a) => (
            "nat",
            HAIRPIN,
            format!("-s {0} -d {0} -j MASQUERADE", host(a)),
        ),
        Elem::ShortCircuit(k, m) => (
            "nat",
            SHORT,
            format!("{} -j MARK --set-xmark {m:#x}/0xffffffff", dest(k)),
        ),
        Elem::Firewall(..) => return None,
    })
}

/// Whether the element belongs to family `f`'s tables.
fn in_family(f: Family, e: &Elem) -> bool {
    super::helper::family(e) == f
}

/// The firewall chain's rules: each LoadBalancer address's ranges return, the rest drop.
fn firewall_rules(f: Family, elems: &BTreeSet<&Elem>) -> Vec<String> {
    let mut out = Vec::new();
    for e in elems.iter().filter(|e| in_family(f, e)) {
        if let Elem::Firewall(k, ranges) = e {
            for r in ranges {
                out.push(format!("-A {FIREWALL} {} -s {r} -j RETURN", dest(k)));
            }
            out.push(format!("-A {FIREWALL} {} -j DROP", dest(k)));
        }
    }
    out
}

/// One table's part of a restore input.
#[derive(Default)]
struct Table {
    chains: Vec<&'static str>,
    lines: Vec<String>,
}

impl Table {
    fn emit(&self, name: &str, out: &mut String) {
        if self.chains.is_empty() && self.lines.is_empty() {
            return;
        }
        let _ = writeln!(out, "*{name}");
        for c in &self.chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for l in &self.lines {
            let _ = writeln!(out, "{l}");
        }
        out.push_str("COMMIT\n");
    }
}

/// The pod CIDRs of family `f`.
fn pods(cfg: &RenderConfig, f: Family) -> Vec<String> {
    (cfg.cluster_cidrs.iter())
        .filter(|c| f.holds(&c.addr()))
        .map(ToString::to_string)
        .collect()
}

/// The fixed rules of the filter chains.
fn filter_rules(filter: &mut Table) {
    let new = "-m conntrack --ctstate NEW";
    filter.lines.extend([
        format!("-A {FILTER} {new} -j {REJECTED}"),
        // Pods and the node reach a Local-policy address's marked virtual server.
        format!("-A {FILTER} {new} -m mark ! --mark {MARK_BASE:#x}/{MARK_MASK:#x} -j {DROPPED}"),
        format!("-A {FILTER} -j {FIREWALL}"),
        format!("-A {FILTER} {new} -j {VIPS}"),
    ]);
    for p in ["tcp", "udp", "sctp"] {
        filter.lines.push(format!("-A {SERVICES} -p {p} -j REJECT"));
    }
}

/// The fixed rules of the nat chains.
fn nat_rules(cfg: &RenderConfig, f: Family, nat: &mut Table) {
    let mark = cfg.masquerade_mark;
    let pods = pods(cfg, f);
    let outside = matches!(decision(cfg, f), Masquerade::NotFrom(_)) && !pods.is_empty();
    let l = &mut nat.lines;
    l.extend(
        pods.iter()
            .map(|p| format!("-A {PREROUTING} -s {p} -j {SHORT}")),
    );
    l.push(format!("-A {OUTPUT} -j {SHORT}"));
    for c in [PREROUTING, OUTPUT] {
        l.push(format!("-A {c} -j {MASQ_ALL}"));
        if outside {
            l.push(format!("-A {c} -j {MASQ_OUTSIDE}"));
        }
    }
    l.extend(
        pods.iter()
            .map(|p| format!("-A {MARK_OUTSIDE} -s {p} -j RETURN")),
    );
    l.push(format!(
        "-A {MARK_OUTSIDE} -j MARK --set-xmark {mark:#x}/{mark:#x}"
    ));
    // The node's own short-circuited traffic is masqueraded; pods' keeps their address.
    l.push(format!(
        "-A {POSTROUTING} -m mark --mark {MARK_BASE:#x}/{MARK_MASK:#x} -j {SHORT_MASQ}"
    ));
    l.extend(
        pods.iter()
            .map(|p| format!("-A {SHORT_MASQ} -s {p} -j RETURN")),
    );
    l.extend([
        format!("-A {SHORT_MASQ} -j MASQUERADE"),
        format!("-A {POSTROUTING} -m mark --mark {mark:#x}/{mark:#x} -j {UNMARK_MASQ}"),
        // Cleared, so that a re-traversal does not masquerade twice.
        format!("-A {UNMARK_MASQ} -j MARK --set-xmark {mark:#x}/0x0"),
        format!("-A {UNMARK_MASQ} -j MASQUERADE"),
        format!("-A {POSTROUTING} -j {HAIRPIN}"),
    ]);
}

/// The whole helper of family `f`, replacing what is there; `hooks` are those of [`HOOKS`]
/// (by index) already in place.
pub fn full(cfg: &RenderConfig, f: Family, elems: &BTreeSet<&Elem>, hooks: &[usize]) -> String {
    let mut filter = Table {
        chains: FILTER_CHAINS.to_vec(),
        ..Table::default()
    };
    let mut nat = Table {
        chains: NAT_CHAINS.to_vec(),
        ..Table::default()
    };
    filter_rules(&mut filter);
    nat_rules(cfg, f, &mut nat);
    filter.lines.extend(firewall_rules(f, elems));
    for e in elems.iter().filter(|e| in_family(f, e)) {
        if let Some((table, chain, spec)) = rule(cfg, e) {
            let t = if table == "nat" {
                &mut nat
            } else {
                &mut filter
            };
            // Before the fixed rejects at the end of the chain.
            let verb = if chain == SERVICES { "-I" } else { "-A" };
            let at = if chain == SERVICES { " 1" } else { "" };
            t.lines.push(format!("{verb} {chain}{at} {spec}"));
        }
    }
    // Each hook goes in first, so the last inserted stands first: insert in reverse.
    for (i, (table, chain, spec)) in HOOKS.iter().enumerate().rev() {
        if !hooks.contains(&i) {
            let t = if *table == "nat" {
                &mut nat
            } else {
                &mut filter
            };
            t.lines.push(format!("-I {chain} 1 {spec}"));
        }
    }
    let mut out = String::new();
    filter.emit("filter", &mut out);
    nat.emit("nat", &mut out);
    out
}

/// The rules of family `f` that take the chains from `removed` to `added`.
pub fn changes(cfg: &RenderConfig, f: Family, removed: &[Elem], added: &[Elem]) -> String {
    let (mut filter, mut nat) = (Table::default(), Table::default());
    let mut put = |verb: &str, e: &Elem| {
        if let Some((table, chain, spec)) = rule(cfg, e).filter(|_| in_family(f, e)) {
            let t = if table == "nat" {
                &mut nat
            } else {
                &mut filter
            };
            let at = if verb == "-I" { " 1" } else { "" };
            t.lines.push(format!("{verb} {chain}{at} {spec}"));
        }
    };
    for e in removed {
        put("-D", e);
    }
    for e in added {
        let verb = if matches!(e, Elem::Service(_)) {
            "-I"
        } else {
            "-A"
        };
        put(verb, e);
    }
    let mut out = String::new();
    filter.emit("filter", &mut out);
    nat.emit("nat", &mut out);
    out
}

/// Rewrites the firewall chain of family `f` with `elems`' source ranges.
pub fn firewall(f: Family, elems: &BTreeSet<&Elem>) -> String {
    let filter = Table {
        chains: vec![FIREWALL],
        lines: firewall_rules(f, elems),
    };
    let mut out = String::new();
    filter.emit("filter", &mut out);
    out
}

/// Removes every helper chain (once the hooks are gone), as restore input.
pub fn delete() -> String {
    let mut out = String::new();
    for (table, chains) in [("filter", FILTER_CHAINS), ("nat", NAT_CHAINS)] {
        let _ = writeln!(out, "*{table}");
        for c in chains {
            let _ = writeln!(out, ":{c} - [0:0]");
        }
        for c in chains {
            let _ = writeln!(out, "-X {c}");
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Whether iptables-save output holds any helper chain.
pub fn present(save: &str) -> bool {
    save.lines().any(|l| l.starts_with(":WASP-IPVS-"))
}

#[cfg(test)]
mod tests {
    use super::super::render::tests::cfg;
    use super::*;
    use wasp_model::Protocol;

    fn key(addr: &str, port: u16) -> VsKey {
        VsKey {
            proto: Protocol::Tcp,
            addr: addr.parse().unwrap(),
            port,
            fwmark: 0,
        }
    }

    #[test]
    fn a_partial_sync_deletes_and_adds_only_the_changed_elements() {
        let gone = [Elem::Hairpin("10.244.1.3".parse().unwrap())];
        let new = [
            Elem::Vip("10.96.0.41".parse().unwrap()),
            Elem::Service(key("10.96.0.41", 80)),
            Elem::Hairpin("fd00::2".parse().unwrap()),
        ];
        let v4 = changes(&cfg(), Family::V4, &gone, &new);
        assert_eq!(
            v4,
            "*filter\n\
             -A WASP-IPVS-VIPS -d 10.96.0.41/32 -j WASP-IPVS-SERVICES\n\
             -I WASP-IPVS-SERVICES 1 -d 10.96.0.41/32 -p tcp -m tcp --dport 80 -j RETURN\n\
             COMMIT\n\
             *nat\n\
             -D WASP-IPVS-HAIRPIN -s 10.244.1.3/32 -d 10.244.1.3/32 -j MASQUERADE\n\
             COMMIT\n"
        );
        let v6 = changes(&cfg(), Family::V6, &gone, &new);
        assert_eq!(
            v6,
            "*nat\n-A WASP-IPVS-HAIRPIN -s fd00::2/128 -d fd00::2/128 -j MASQUERADE\nCOMMIT\n"
        );
        assert_eq!(changes(&cfg(), Family::V4, &[], &[]), "");
    }

    #[test]
    fn a_full_sync_inserts_only_the_missing_hooks() {
        let all = BTreeSet::new();
        let none = full(&cfg(), Family::V4, &all, &[]);
        let hooks = |t: &str| t.lines().filter(|l| l.contains("wasp ipvs helper")).count();
        assert_eq!(hooks(&none), HOOKS.len());
        let present: Vec<usize> = (0..HOOKS.len()).collect();
        assert_eq!(hooks(&full(&cfg(), Family::V4, &all, &present)), 0);
        // The service rejects stay last: services are inserted before them.
        assert!(none.contains("-A WASP-IPVS-SERVICES -p sctp -j REJECT"));
    }

    #[test]
    fn a_firewall_returns_its_ranges_and_drops_the_rest() {
        let fw = Elem::Firewall(
            key("192.0.2.10", 443),
            vec!["203.0.113.0/24".parse().unwrap()],
        );
        let all: BTreeSet<&Elem> = [&fw].into_iter().collect();
        assert_eq!(
            firewall(Family::V4, &all),
            "*filter\n:WASP-IPVS-FIREWALL - [0:0]\n\
             -A WASP-IPVS-FIREWALL -d 192.0.2.10/32 -p tcp -m tcp --dport 443 -s 203.0.113.0/24 -j RETURN\n\
             -A WASP-IPVS-FIREWALL -d 192.0.2.10/32 -p tcp -m tcp --dport 443 -j DROP\n\
             COMMIT\n"
        );
    }
}
