//! The ipvs mode's helper table, `ip wasp-ipvs` and `ip6 wasp-ipvs`: what IPVS does not do
//! itself, applied with `nft -f`.
//!
//! - **Reject** new connections to a virtual server without endpoints, and to any port of an
//!   address on the dummy device that is not a virtual server (else a process listening on
//!   the wildcard address would answer on a service IP). Drop those whose endpoints are all
//!   on other nodes (traffic policy Local).
//! - **LoadBalancer source ranges**: other sources are dropped.
//! - **Masquerade**: marked in `nat` prerouting and output, which run before IPVS; the
//!   mark is masqueraded in postrouting (IPVS keeps conntrack entries, `vs/conntrack`). An
//!   endpoint reaching itself through a virtual server (hairpin) is masqueraded too.
//!
//! Everything that changes is a set element, so a sync sends only the elements that changed;
//! the firewall chain is rewritten when a source range changes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use ipnet::IpNet;

use super::genl::VsKey;
use super::render::Elem;
use super::render::{MARK_BASE, MARK_MASK};
use crate::core::masquerade::{Masquerade, decision};
use crate::core::{Family, RenderConfig};
use crate::nftables::ops::proto_number;

/// The helper table's name, in both families.
pub const TABLE: &str = "wasp-ipvs";

const TUPLE: &str = "ip daddr . meta l4proto . th dport";

/// The set (or map) an element belongs to.
pub fn set_name(e: &Elem) -> &'static str {
    match e {
        Elem::Vip(_) => "vips",
        Elem::Service(_) => "services",
        Elem::Reject(_) => "rejected",
        Elem::Drop(_) => "dropped",
        Elem::MasqueradeOutside(_) => "masquerade-outside",
        Elem::MasqueradeAll(_) => "masquerade-all",
        Elem::Hairpin(_) => "hairpin",
        Elem::Firewall(..) => "firewall",
        Elem::ShortCircuit(..) => "short-circuit",
    }
}

/// The family of the table an element belongs to.
pub fn family(e: &Elem) -> Family {
    match e {
        Elem::Vip(a) | Elem::Hairpin(a) => Family::of(a),
        Elem::Service(k)
        | Elem::Reject(k)
        | Elem::Drop(k)
        | Elem::MasqueradeOutside(k)
        | Elem::MasqueradeAll(k)
        | Elem::Firewall(k, _)
        | Elem::ShortCircuit(k, _) => Family::of(&k.addr),
    }
}

fn tuple(k: &VsKey) -> String {
    format!("{} . {} . {}", k.addr, proto_number(k.proto), k.port)
}

fn element(e: &Elem) -> String {
    match e {
        Elem::Vip(a) => a.to_string(),
        Elem::Hairpin(a) => format!("{a} . {a}"),
        Elem::Service(k)
        | Elem::Reject(k)
        | Elem::Drop(k)
        | Elem::MasqueradeOutside(k)
        | Elem::MasqueradeAll(k)
        | Elem::Firewall(k, _) => tuple(k),
        Elem::ShortCircuit(k, mark) => format!("{} : {mark:#x}", tuple(k)),
    }
}

fn addr_type(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4_addr",
        Family::V6 => "ipv6_addr",
    }
}

/// `ip` matches become `ip6` ones in the IPv6 table.
fn in_family(f: Family, s: String) -> String {
    match f {
        Family::V4 => s,
        Family::V6 => s
            .replace("ip daddr", "ip6 daddr")
            .replace("ip saddr", "ip6 saddr"),
    }
}

fn firewall_rules(f: Family, elems: &BTreeSet<&Elem>) -> String {
    let mut out = String::new();
    for e in elems.iter().filter(|e| family(e) == f) {
        if let Elem::Firewall(k, ranges) = e {
            let allowed: Vec<String> = ranges.iter().map(IpNet::to_string).collect();
            let from = if allowed.is_empty() {
                String::new()
            } else {
                format!("ip saddr != {{ {} }} ", allowed.join(", "))
            };
            let _ = writeln!(
                out,
                "add rule {} {TABLE} firewall ip daddr {} meta l4proto {} th dport {} {from}drop",
                f.nft_name(),
                k.addr,
                proto_number(k.proto),
                k.port
            );
        }
    }
    in_family(f, out)
}

/// The whole table of family `f` (both tables, one `nft -f` input), replacing what is there.
pub fn full(cfg: &RenderConfig, f: Family, elems: &BTreeSet<&Elem>) -> String {
    let t = format!("{} {TABLE}", f.nft_name());
    let at = addr_type(f);
    let mark = cfg.masquerade_mark;
    let mut s = format!("add table {t}\ndelete table {t}\nadd table {t}\n");
    let tuple_type = format!("{at} . inet_proto . inet_service");
    for (name, ty) in [
        ("vips", at.to_string()),
        ("services", tuple_type.clone()),
        ("rejected", tuple_type.clone()),
        ("dropped", tuple_type.clone()),
        ("masquerade-outside", tuple_type.clone()),
        ("masquerade-all", tuple_type.clone()),
        ("hairpin", format!("{at} . {at}")),
    ] {
        let _ = writeln!(s, "add set {t} {name} {{ type {ty}; }}");
    }
    let _ = writeln!(
        s,
        "add map {t} short-circuit {{ type {tuple_type} : mark; }}"
    );
    let short = format!("meta mark & {MARK_MASK:#x} == {MARK_BASE:#x}");
    let filter = [
        format!("ct state new {TUPLE} @rejected reject"),
        // Pods and the node reach a Local-policy address's marked virtual server.
        format!(
            "ct state new {} {TUPLE} @dropped drop",
            short.replace("==", "!=")
        ),
        "jump firewall".to_string(),
        format!(
            "ct state new ip daddr @vips meta l4proto {{ tcp, udp, sctp }} {TUPLE} != @services reject"
        ),
    ];
    let _ = writeln!(s, "add chain {t} firewall");
    for (chain, hook, prio) in [
        ("filter-input", "input", 0),
        ("filter-output", "output", -99),
    ] {
        let _ = writeln!(
            s,
            "add chain {t} {chain} {{ type filter hook {hook} priority {prio}; }}"
        );
        for r in &filter {
            let _ = writeln!(s, "add rule {t} {chain} {r}");
        }
    }
    let cidrs: Vec<String> = cfg
        .cluster_cidrs
        .iter()
        .filter(|c| f.holds(&c.addr()))
        .map(ToString::to_string)
        .collect();
    let pods = (!cidrs.is_empty()).then(|| format!("{{ {} }}", cidrs.join(", ")));
    let _ = writeln!(s, "add chain {t} masquerade-mark");
    let _ = writeln!(
        s,
        "add rule {t} masquerade-mark {TUPLE} @masquerade-all meta mark set mark | {mark:#x}"
    );
    if let (Masquerade::NotFrom(_), Some(pods)) = (decision(cfg, f), &pods) {
        let rule = format!(
            "ip saddr != {pods} {TUPLE} @masquerade-outside meta mark set mark | {mark:#x}"
        );
        let _ = writeln!(s, "add rule {t} masquerade-mark {rule}");
    }
    let set_mark = format!("meta mark set {TUPLE} map @short-circuit");
    let _ = writeln!(
        s,
        "add chain {t} nat-prerouting {{ type nat hook prerouting priority -100; }}"
    );
    if let Some(pods) = &pods {
        let _ = writeln!(s, "add rule {t} nat-prerouting ip saddr {pods} {set_mark}");
    }
    let _ = writeln!(s, "add rule {t} nat-prerouting jump masquerade-mark");
    let _ = writeln!(
        s,
        "add chain {t} nat-output {{ type nat hook output priority -100; }}"
    );
    let _ = writeln!(s, "add rule {t} nat-output {set_mark}");
    let _ = writeln!(s, "add rule {t} nat-output jump masquerade-mark");
    let _ = writeln!(
        s,
        "add chain {t} nat-postrouting {{ type nat hook postrouting priority 100; }}"
    );
    // The node's own short-circuited traffic is masqueraded; pods' keeps their address.
    let not_pods = pods
        .as_ref()
        .map(|p| format!("ip saddr != {p} "))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "add rule {t} nat-postrouting {short} {not_pods}masquerade"
    );
    let _ = writeln!(
        s,
        "add rule {t} nat-postrouting meta mark & {mark:#x} == {mark:#x} meta mark set mark ^ {mark:#x} masquerade"
    );
    let _ = writeln!(
        s,
        "add rule {t} nat-postrouting ip saddr . ip daddr @hairpin masquerade"
    );
    let mut s = in_family(f, s);
    s += &elements(f, "add", elems.iter().copied());
    s += &firewall_rules(f, elems);
    s
}

/// `add element` (or `delete element`) lines for `elems` of family `f`, one per set.
pub fn elements<'a>(f: Family, verb: &str, elems: impl Iterator<Item = &'a Elem>) -> String {
    let mut by_set: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in elems.filter(|e| family(e) == f && !matches!(e, Elem::Firewall(..))) {
        let item = match e {
            // A map's element is deleted by its key.
            Elem::ShortCircuit(k, _) if verb == "delete" => tuple(k),
            _ => element(e),
        };
        by_set.entry(set_name(e)).or_default().push(item);
    }
    let mut s = String::new();
    for (set, items) in by_set {
        for chunk in items.chunks(4096) {
            let _ = writeln!(
                s,
                "{verb} element {} {TABLE} {set} {{ {} }}",
                f.nft_name(),
                chunk.join(", ")
            );
        }
    }
    s
}

/// Rewrites the firewall chain of family `f` with `elems`' source ranges.
pub fn firewall(f: Family, elems: &BTreeSet<&Elem>) -> String {
    format!(
        "flush chain {} {TABLE} firewall\n{}",
        f.nft_name(),
        firewall_rules(f, elems)
    )
}

/// Removes both tables, if there.
pub fn delete() -> String {
    Family::ALL
        .iter()
        .map(|f| {
            format!(
                "add table {0} {TABLE}\ndelete table {0} {TABLE}\n",
                f.nft_name()
            )
        })
        .collect()
}
