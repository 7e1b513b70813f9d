//! What every family's table holds besides the ports: the hooks, the dispatch chain and maps,
//! the reject and check chains, the hairpin set; and the names they are known by.

use std::collections::BTreeMap;

use wasp_model::{ProxyState, Selection, ServicePortName};

use super::port::{PortObjects, port_objects};
use crate::core::RenderConfig;
use crate::nftables::ops::{Chain, Family, Hook, Op, Rule, Set, SetKind};

/// Endpoints maps per protocol and family.
pub const SHARDS: u32 = 64;

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
    let kind = if let Some(rest) = name.strip_prefix("endpoints-") {
        // `endpoints-<protocol>-<shard>`.
        let proto = match rest.split('-').next() {
            Some("udp") => wasp_model::Protocol::Udp,
            Some("sctp") => wasp_model::Protocol::Sctp,
            _ => wasp_model::Protocol::Tcp,
        };
        SetKind::Endpoints(proto)
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

pub(super) fn hairpin() -> Set {
    Set {
        name: names::HAIRPIN.into(),
        kind: SetKind::Hairpin,
    }
}

pub(super) fn service_ips() -> Set {
    Set {
        name: names::SERVICE_IPS.into(),
        kind: SetKind::Dispatch,
    }
}

pub(super) fn no_endpoints() -> Set {
    Set {
        name: names::NO_ENDPOINTS.into(),
        kind: SetKind::Dispatch,
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
