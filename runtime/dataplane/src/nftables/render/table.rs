//! What every family's table holds besides the ports, and the names they are known by.
//!
//! | chain | hook | what it does |
//! |---|---|---|
//! | `nat-prerouting`, `nat-output` → `services` | nat, dstnat (-100) | `daddr . l4proto . dport vmap @service-ips`: every cluster IP, external IP, LoadBalancer IP and node port address, one lookup |
//! | `nat-postrouting` | nat, srcnat (100) | hairpin masquerade from `@hairpin`; masquerade what carries the mark |
//! | `filter-prerouting`, `filter-output` → `firewall-check` | filter (-110), before DNAT | new connections to a LoadBalancer IP with source ranges go through its `fw-…` chain |
//! | `filter-input`, `filter-forward`, `filter-output` → `service-endpoints-check` | filter (-110) | `@no-endpoint-services`: reject without endpoints, drop with none the traffic may use |
//! | `filter-forward`, `filter-output-post-dnat` → `cluster-ips-check` | filter, after DNAT (-110 on forward, -90 on output) | what still goes to a cluster IP was not a Service port: reject; an unallocated address in a service CIDR: drop |

use std::collections::BTreeMap;
use std::net::IpAddr;

use wasp_model::{ProxyState, Selection, ServicePortName};

use super::port::{PortObjects, port_objects};
use crate::core::RenderConfig;
use crate::nftables::ops::{Action, Chain, Family, Hook, Match, Op, Rule, Set, SetKind};

/// Endpoints maps per protocol and family, up to 8,192 service ports.
pub const SHARDS: u32 = 64;

/// The endpoints maps per protocol and family for `ports` service ports: [`SHARDS`] until
/// more than 128 ports would share a map, then twice as many each time the ports double, up
/// to 1,024. Adding an element makes the kernel visit every rule bound to its map, and finding
/// a set by name visits every set, so the count that keeps a full sync fastest grows with
/// the Services. Full syncs measured on 6.18 (the daemon's own `synced` line): at 10k,
/// 1.05 s with 64 maps, 1.00 s with 128 and 0.99 s with 256; at 100k, 17.4–19.6 s with 512,
/// 16.2–16.3 s with 1,024, 19.3 s with 2,048 and 23.8 s with 4,096.
pub fn shards_for(ports: usize) -> u32 {
    let mut shards = SHARDS;
    while shards < 1024 && ports > shards as usize * 128 {
        shards *= 2;
    }
    shards
}

/// Static names.
pub mod names {
    /// The dispatch map.
    pub const SERVICE_IPS: &str = "service-ips";
    /// Addresses without usable endpoints.
    pub const NO_ENDPOINTS: &str = "no-endpoint-services";
    /// LoadBalancer IPs with source ranges.
    pub const FIREWALL_IPS: &str = "firewall-ips";
    /// Hairpin pairs.
    pub const HAIRPIN: &str = "hairpin";
    /// Every cluster IP.
    pub const CLUSTER_IPS: &str = "cluster-ips";
    /// The dispatch chain.
    pub const SERVICES: &str = "services";
    /// The filter check chain.
    pub const CHECK: &str = "service-endpoints-check";
    /// The source-range check chain.
    pub const FIREWALL_CHECK: &str = "firewall-check";
    /// The chain for traffic to cluster IPs that no Service port took.
    pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
    /// The chain that rejects.
    pub const REJECT: &str = "reject-chain";
    /// Every static name a rule refers to.
    pub const ALL: &[&str] = &[
        SERVICE_IPS,
        NO_ENDPOINTS,
        FIREWALL_IPS,
        HAIRPIN,
        CLUSTER_IPS,
        SERVICES,
        CHECK,
        FIREWALL_CHECK,
        CLUSTER_IPS_CHECK,
        REJECT,
    ];
}

fn hook(kind: &'static str, hook: &'static str, priority: i32) -> Option<Hook> {
    Some(Hook {
        kind,
        hook,
        priority,
    })
}

/// The sets, chains and rules every sync relies on.
pub fn static_ops(f: Family, cfg: &RenderConfig, tx: &mut Vec<(Family, Op)>) {
    let mut op = |o: Op| tx.push((f, o));
    for set in [
        service_ips(),
        no_endpoints(),
        firewall_ips(),
        hairpin(),
        cluster_ips(),
    ] {
        op(Op::AddSet(set));
    }
    for (name, hook, rules) in regular_chains(f, cfg).into_iter().chain(base_chains(cfg)) {
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

/// A chain wasp always has: its name, its hook if it is a base chain, and its rules.
type StaticChain = (&'static str, Option<Hook>, Vec<Rule>);

/// The regular chains: the dispatch verdict maps' and the checks'.
fn regular_chains(f: Family, cfg: &RenderConfig) -> Vec<StaticChain> {
    let mut unallocated: Vec<Rule> = vec![Rule::Filter {
        when: Some(Match::DaddrIn(names::CLUSTER_IPS)),
        action: Action::Reject,
    }];
    unallocated.extend(
        cfg.service_cidrs
            .iter()
            .filter(|c| f.holds(&c.addr()))
            .map(|c| Rule::Filter {
                when: Some(Match::Daddr(*c)),
                action: Action::Drop,
            }),
    );
    vec![
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
            names::FIREWALL_CHECK,
            None,
            vec![Rule::Dispatch(names::FIREWALL_IPS)],
        ),
        (names::CLUSTER_IPS_CHECK, None, unallocated),
    ]
}

/// The base chains, hooked into netfilter.
fn base_chains(cfg: &RenderConfig) -> Vec<StaticChain> {
    let mut chains = nat_and_filter_chains(cfg);
    if cfg.capture.is_some() {
        // Replies to the userspace proxy's transparent upstream connections are addressed to
        // the client: marked here, policy routing delivers them to the proxy's socket.
        chains.push((
            "mangle-prerouting",
            hook("filter", "prerouting", -150),
            vec![Rule::Mark {
                when: Some(Match::SocketTransparent),
                mark: crate::core::TRANSPARENT_MARK,
            }],
        ));
    }
    chains
}

/// The NAT and filter base chains every sync writes.
fn nat_and_filter_chains(cfg: &RenderConfig) -> Vec<StaticChain> {
    vec![
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
            "filter-prerouting",
            hook("filter", "prerouting", -110),
            vec![Rule::JumpIfNew(names::FIREWALL_CHECK)],
        ),
        (
            "filter-input",
            hook("filter", "input", -110),
            vec![Rule::JumpIfNew(names::CHECK)],
        ),
        (
            "filter-forward",
            hook("filter", "forward", -110),
            vec![
                Rule::JumpIfNew(names::CHECK),
                Rule::JumpIfNew(names::CLUSTER_IPS_CHECK),
            ],
        ),
        (
            "filter-output",
            hook("filter", "output", -110),
            vec![
                Rule::JumpIfNew(names::FIREWALL_CHECK),
                Rule::JumpIfNew(names::CHECK),
            ],
        ),
        (
            "filter-output-post-dnat",
            hook("filter", "output", -90),
            vec![Rule::JumpIfNew(names::CLUSTER_IPS_CHECK)],
        ),
    ]
}

/// A set wasp does not want any more, known only by name: its kind is read off the name
/// (it decides only whether `wasp plan` says `set` or `map`).
pub fn stray_set(name: &str) -> Set {
    let kind = if let Some(rest) = name.strip_prefix("endpoints-") {
        // `endpoints-<protocol>-<shard>`.
        let proto = match rest.split('-').next() {
            Some("udp") => wasp_model::Protocol::Udp,
            Some("sctp") => wasp_model::Protocol::Sctp,
            _ => wasp_model::Protocol::Tcp,
        };
        SetKind::Endpoints(proto)
    } else if [names::SERVICE_IPS, names::NO_ENDPOINTS, names::FIREWALL_IPS].contains(&name) {
        SetKind::Dispatch
    } else if name == names::HAIRPIN {
        SetKind::Hairpin
    } else if name == names::CLUSTER_IPS {
        SetKind::Addresses
    } else {
        SetKind::Affinity { timeout: 0 }
    };
    Set {
        name: name.into(),
        kind,
    }
}

fn dispatch_map(name: &str) -> Set {
    Set {
        name: name.into(),
        kind: SetKind::Dispatch,
    }
}

pub(super) fn hairpin() -> Set {
    Set {
        name: names::HAIRPIN.into(),
        kind: SetKind::Hairpin,
    }
}

pub(super) fn cluster_ips() -> Set {
    Set {
        name: names::CLUSTER_IPS.into(),
        kind: SetKind::Addresses,
    }
}

pub(super) fn service_ips() -> Set {
    dispatch_map(names::SERVICE_IPS)
}

pub(super) fn no_endpoints() -> Set {
    dispatch_map(names::NO_ENDPOINTS)
}

pub(super) fn firewall_ips() -> Set {
    dispatch_map(names::FIREWALL_IPS)
}

/// The addresses node ports answer on in this mode: the given ones, never loopback (the
/// nftables mode does not serve node ports on localhost, as kube-proxy's does not).
pub fn node_port_ips(state: &ProxyState) -> Vec<IpAddr> {
    state
        .node_port_ips
        .iter()
        .flatten()
        .copied()
        .filter(|ip| !ip.is_loopback())
        .collect()
}

/// Each port of `state` in family `f` rendered, one at a time, in order.
pub fn rendered<'a>(
    state: &'a ProxyState,
    selections: &'a BTreeMap<ServicePortName, Selection>,
    cfg: &'a RenderConfig,
    f: Family,
    shards: u32,
) -> impl Iterator<Item = (&'a ServicePortName, PortObjects)> + 'a {
    let np = node_port_ips(state);
    state.ports.iter().filter_map(move |(name, port)| {
        port_objects(name, port, selections.get(name), cfg, f, &np, shards).map(|p| (name, p))
    })
}
