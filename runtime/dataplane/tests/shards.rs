//! The nftables mode's endpoint maps grow in number with the Services: a full sync picks the
//! count, and the partial syncs after it keep it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use wasp_dataplane::nftables::ops::Elem;
use wasp_dataplane::nftables::render::{SHARDS, shards_for};
use wasp_dataplane::nftables::{Existing, Nftables, Op};
use wasp_dataplane::{RenderConfig, SyncRequest};
use wasp_model::{
    Endpoint, NamespacedName, Protocol, ProxyState, Selection, ServicePort, ServicePortName,
    ServicePortState,
};

fn state(n: u32) -> ProxyState {
    let mut s = ProxyState::default();
    for i in 0..n {
        let name = ServicePortName::new(
            NamespacedName::new("t", format!("svc-{i}")),
            "",
            Protocol::Tcp,
        );
        let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i);
        let ep = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i);
        let port = ServicePortState::new(
            ServicePort::new(IpAddr::V4(vip), 80, Protocol::Tcp),
            vec![Endpoint::ready(IpAddr::V4(ep), 8080)],
        );
        s.ports.insert(name, port);
    }
    s
}

fn selections(s: &ProxyState) -> BTreeMap<ServicePortName, Selection> {
    s.ports
        .keys()
        .map(|n| (n.clone(), Selection::equal(1)))
        .collect()
}

/// The endpoints maps a transaction fills.
fn maps(tx: &[(wasp_dataplane::Family, Op)]) -> BTreeSet<String> {
    tx.iter()
        .filter_map(|(_, op)| match op {
            Op::AddElements { set, .. } if set.name.starts_with("endpoints-") => {
                Some(set.name.clone())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_count_grows_with_the_ports_and_stops_at_1024() {
    assert_eq!(shards_for(0), SHARDS);
    assert_eq!(shards_for(8_192), 64);
    assert_eq!(shards_for(8_193), 128);
    assert_eq!(shards_for(10_000), 128, "10k Services take 128 maps");
    assert_eq!(shards_for(50_000), 512);
    assert_eq!(shards_for(100_000), 1024);
    assert_eq!(shards_for(10_000_000), 1024);
}

#[test]
fn a_partial_sync_keeps_the_count_of_the_full_sync() {
    let cfg = RenderConfig {
        cluster_cidrs: vec!["10.128.0.0/9".parse().unwrap()],
        masquerade_all: false,
        masquerade_mark: 0x2000,
        service_cidrs: Vec::new(),
        capture: None,
    };
    let big = state(10_000);
    let sel = selections(&big);
    let empty = ProxyState::default();
    let mut dp = Nftables::new(cfg);
    let full = dp.plan_sync(
        &SyncRequest {
            state: &big,
            previous: &empty,
            selections: &sel,
            diff: None,
        },
        &Existing::default(),
    );
    let declared = maps(&full.tx);
    assert_eq!(declared.len(), 128, "10,000 ports spread over 128 maps");
    let planned_tx = full.tx.clone();
    dp.record(full);

    // A port in a map past the 64th: a partial sync that changes its endpoint keeps it in
    // that map (with 64 maps it would move to another).
    let (map, vip) = full_slots(&declared, &planned_tx)
        .into_iter()
        .find(|(m, _)| m.rsplit('-').next().and_then(|n| n.parse::<u32>().ok()) >= Some(64))
        .expect("a port in a map past the 64th");
    let mut changed = big.clone();
    let port = changed
        .ports
        .values_mut()
        .find(|p| p.service.cluster_ips == [vip])
        .unwrap();
    port.endpoints = vec![Endpoint::ready("10.129.0.1".parse().unwrap(), 8080)];
    let diff = big.diff(&changed);
    assert_eq!(diff.changed.len(), 1);
    let partial = dp.plan_sync(
        &SyncRequest {
            state: &changed,
            previous: &big,
            selections: &sel,
            diff: Some(&diff),
        },
        &Existing::default(),
    );
    assert_eq!(maps(&partial.tx), BTreeSet::from([map]));
}

/// Each endpoints map of `tx` with the VIPs its slots are for.
fn full_slots(
    declared: &BTreeSet<String>,
    tx: &[(wasp_dataplane::Family, Op)],
) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    for (_, op) in tx {
        if let Op::AddElements { set, elems } = op
            && declared.contains(&set.name)
        {
            for e in elems {
                if let Elem::Slot { vip, .. } = e {
                    out.push((set.name.clone(), *vip));
                }
            }
        }
    }
    out
}
