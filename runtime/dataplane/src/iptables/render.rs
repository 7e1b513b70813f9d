//! The pure render: model + selections → `iptables-restore` input.
//!
//! One function per feature, as the house style asks: here the sync as a whole and the
//! chains every sync relies on; `render/dispatch.rs` the rules that pick a Service by
//! destination (nat `WASP-SERVICES` and `WASP-NODEPORTS`, and the filter table's rejections
//! and firewall); `render/chains.rs` each port's own chains. kube-proxy's 800-line
//! `syncProxyRules` is the counter-example.

mod chains;
mod dispatch;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;

use wasp_model::{Endpoint, ProxyState, Selection, ServicePortName, ServicePortState, StateDiff};

use super::chain;
use crate::core::spread;
use crate::core::{Family, RenderConfig, endpoints};

/// What is programmed after a sync: the chains each service port owns, and the dispatch rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    /// The nat chains of each service port.
    pub chains: BTreeMap<ServicePortName, Vec<String>>,
    /// The nat dispatch rules (`WASP-SERVICES`).
    pub dispatch: Vec<String>,
    /// The nat node port rules (`WASP-NODEPORTS`).
    pub nodeports: Vec<String>,
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

/// One service port as one family's tables see it: its addresses in the family and the
/// family's endpoints of each traffic class.
pub(super) struct View<'a> {
    pub name: &'a ServicePortName,
    pub port: &'a ServicePortState,
    pub vip: IpAddr,
    pub external_ips: Vec<IpAddr>,
    pub lb_ips: Vec<IpAddr>,
    /// Every endpoint of the family (each gets an endpoint chain).
    pub all: Vec<(usize, &'a Endpoint)>,
    /// Those cluster-policy traffic uses.
    pub cluster: Vec<(usize, &'a Endpoint)>,
    /// This node's.
    pub local: Vec<(usize, &'a Endpoint)>,
}

impl<'a> View<'a> {
    /// The port in family `f`; `None` when it has no cluster IP there.
    fn new(name: &'a ServicePortName, port: &'a ServicePortState, f: Family) -> Option<Self> {
        let vip = endpoints::vip(port, f)?;
        let all = endpoints::of_family(port, f);
        let class = |idx: &[usize]| endpoints::class(port, &all, idx);
        let svc = &port.service;
        let in_family = |ips: &[IpAddr]| ips.iter().copied().filter(|ip| f.holds(ip)).collect();
        Some(Self {
            name,
            port,
            vip,
            external_ips: in_family(&svc.external_ips),
            lb_ips: in_family(&svc.load_balancer_ips),
            cluster: class(&port.cluster),
            local: class(&port.local),
            all,
        })
    }

    /// Whether the port is reached from outside at all.
    pub fn has_external(&self) -> bool {
        self.port.service.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.lb_ips.is_empty()
    }

    /// The endpoints cluster IP traffic uses.
    pub fn internal(&self) -> &[(usize, &'a Endpoint)] {
        if self.port.service.internal_traffic_local {
            &self.local
        } else {
            &self.cluster
        }
    }

    /// The endpoints external traffic from off the node uses.
    pub fn external(&self) -> &[(usize, &'a Endpoint)] {
        if self.port.service.external_traffic_local {
            &self.local
        } else {
            &self.cluster
        }
    }

    /// The chain cluster IP traffic jumps to.
    pub fn internal_chain(&self) -> String {
        if self.port.service.internal_traffic_local {
            chain::local(self.name)
        } else {
            chain::service(self.name)
        }
    }

    /// The source ranges of this family, when the port has LoadBalancer IPs in it.
    pub fn source_ranges(&self, f: Family) -> Vec<ipnet::IpNet> {
        if self.lb_ips.is_empty() {
            return Vec::new();
        }
        let ranges = &self.port.service.load_balancer_source_ranges;
        ranges
            .iter()
            .copied()
            .filter(|c| f.holds(&c.addr()))
            .collect()
    }

    /// What a packet meets when its class is empty: REJECT without any endpoint, DROP when
    /// endpoints exist but none this traffic may use (traffic policy Local), as kube-proxy does.
    pub fn unusable(&self) -> (&'static str, &'static str) {
        if self.port.has_any_endpoints {
            ("has no local endpoints", "DROP")
        } else {
            ("has no endpoints", "REJECT")
        }
    }
}

/// Whether node ports answer on 127.0.0.1 in family `f` (IPv4 with every local address, or
/// with a loopback address given): the kernel then needs `route_localnet`, and the localnet
/// firewall rule closes the hole it opens.
pub fn localhost_node_ports(state: &ProxyState, f: Family) -> bool {
    f == Family::V4
        && state
            .node_port_ips
            .as_ref()
            .is_none_or(|ips| ips.iter().any(|ip| ip.is_ipv4() && ip.is_loopback()))
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
    let mut mangle = Table::default();
    let full = matches!(scope, Scope::Full { .. });
    let mut programmed = match scope {
        Scope::Full { .. } => Programmed::default(),
        Scope::Partial { previous, .. } => previous.clone(),
    };
    if full {
        static_chains(cfg, localhost_node_ports(state, f), &mut nat, &mut filter);
        if cfg.capture.is_some() {
            proxy_replies(&mut mangle);
        }
    }
    let views: BTreeMap<&ServicePortName, View<'_>> = state
        .ports
        .iter()
        .filter_map(|(name, port)| View::new(name, port, f).map(|v| (name, v)))
        .collect();
    dispatch::filter_rules(views.values(), f, &mut filter);
    let rules = dispatch::services(views.values(), state, f);
    if full || rules != programmed.dispatch {
        nat.chain(chain::SERVICES);
        for r in &rules {
            nat.rule(r.clone());
        }
    }
    programmed.dispatch = rules;
    let rules = dispatch::node_ports(views.values());
    if full || rules != programmed.nodeports {
        nat.chain(chain::NODEPORTS);
        for r in &rules {
            nat.rule(r.clone());
        }
    }
    programmed.nodeports = rules;
    let write: Vec<&ServicePortName> = match scope {
        Scope::Full { .. } => state.ports.keys().collect(),
        Scope::Partial { diff, .. } => diff.changed.iter().collect(),
    };
    for name in write {
        let Some(port) = state.ports.get(name) else {
            continue;
        };
        let sel = spread::or_equal(selections.get(name), port.endpoints.len());
        let written = match views.get(name) {
            Some(v) => chains::port_chains(v, &sel, cfg, f, &mut nat),
            None => Vec::new(),
        };
        programmed.chains.insert(name.clone(), written);
    }
    let stale = stale_chains(state, scope, &mut programmed);
    for c in &stale {
        nat.chain(c);
    }
    let rules = nat.rules + filter.rules + mangle.rules;
    let mut text = String::new();
    filter.emit("filter", &[], &mut text);
    nat.emit("nat", &stale, &mut text);
    if !mangle.chains.is_empty() {
        mangle.emit("mangle", &[], &mut text);
    }
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

/// The chains and rules every sync relies on: masquerade marking, forwarding acceptance and,
/// with node ports on localhost, the localnet firewall.
fn static_chains(cfg: &RenderConfig, localhost: bool, nat: &mut Table, filter: &mut Table) {
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
    filter.chain(chain::FIREWALL);
    if localhost {
        // `route_localnet` lets 127.0.0.1 be routed; nothing from off the node may use it.
        filter.rule(format!(
            "-A {} -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m comment --comment \"block incoming localnet connections\" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
            chain::FIREWALL
        ));
    }
}

/// The userspace mode's upstream connections keep the client's address (transparent
/// sockets): their replies are addressed to the client, and marked here so that policy
/// routing delivers them to the proxy. (Left in place when the mode stops: without the
/// proxy's sockets it matches nothing.)
fn proxy_replies(mangle: &mut Table) {
    let c = chain::PROXY_REPLIES;
    mangle.chain(c);
    mangle.rule(format!(
        "-A {c} -m socket --transparent -j MARK --set-xmark {m:#x}/{m:#x}",
        m = crate::core::TRANSPARENT_MARK
    ));
}

/// `IP/32` (or `/128`), as iptables prints a host.
pub(crate) fn host(ip: &IpAddr) -> String {
    format!("{ip}/{}", Family::of(ip).host_prefix())
}

/// `-d IP -p proto -m proto --dport P`, the match every per-address rule starts with.
fn dest_match(ip: &IpAddr, port: &ServicePortState, dport: u16) -> String {
    let p = port.service.protocol.lower();
    format!("-d {} -p {p} -m {p} --dport {dport}", host(ip))
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
