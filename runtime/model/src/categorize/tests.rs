//! Cases from kube-proxy's `TestCategorizeEndpoints`.

use super::*;
use crate::name::Protocol;

fn svc(internal_local: bool, external_local: bool, node_port: bool) -> ServicePort {
    ServicePort {
        node_port: node_port.then_some(30080),
        internal_traffic_local: internal_local,
        external_traffic_local: external_local,
        ..ServicePort::new("10.96.0.1".parse().unwrap(), 80, Protocol::Tcp)
    }
}

/// ip, ready, serving, terminating, local, hints
fn ep(ip: &str, ready: bool, serving: bool, terminating: bool, local: bool) -> Endpoint {
    Endpoint {
        ready,
        serving,
        terminating,
        is_local: local,
        ..Endpoint::ready(ip.parse().unwrap(), 80)
    }
}

fn hinted(ip: &str, zones: &[&str]) -> Endpoint {
    Endpoint {
        zone_hints: Some(zones.iter().map(|z| (*z).into()).collect()),
        ..Endpoint::ready(ip.parse().unwrap(), 80)
    }
}

fn ips(eps: &[Endpoint]) -> Vec<String> {
    eps.iter().map(|e| e.ip.to_string()).collect()
}

fn node(zone: Option<&str>) -> NodeTopology {
    NodeTopology {
        name: "node-a".into(),
        zone: zone.map(str::to_string),
    }
}

#[test]
fn cluster_policy_uses_ready_endpoints_only() {
    let eps = [
        ep("10.0.0.1", true, true, false, false),
        ep("10.0.0.2", false, false, false, false),
        ep("10.0.0.3", false, true, true, false),
    ];
    let c = categorize(&eps, &svc(false, false, false), &node(None));
    assert_eq!(ips(&c.cluster), ["10.0.0.1"]);
    assert!(c.local.is_empty());
    assert_eq!(ips(&c.all_reachable), ["10.0.0.1"]);
    assert!(c.has_any);
}

#[test]
fn falls_back_to_serving_terminating_when_none_ready() {
    let eps = [
        ep("10.0.0.1", false, true, true, false),
        ep("10.0.0.2", false, false, true, false),
        ep("10.0.0.3", false, false, false, false),
    ];
    let c = categorize(&eps, &svc(false, false, false), &node(None));
    assert_eq!(ips(&c.cluster), ["10.0.0.1"]);
    assert!(c.has_any);
}

#[test]
fn no_usable_endpoints() {
    let eps = [ep("10.0.0.1", false, false, true, false)];
    let c = categorize(&eps, &svc(false, false, false), &node(None));
    assert!(c.cluster.is_empty());
    assert!(!c.has_any);
}

#[test]
fn internal_local_uses_local_ready_endpoints() {
    let eps = [
        ep("10.0.0.1", true, true, false, true),
        ep("10.0.0.2", true, true, false, false),
    ];
    let c = categorize(&eps, &svc(true, false, false), &node(None));
    assert!(c.cluster.is_empty());
    assert_eq!(ips(&c.local), ["10.0.0.1"]);
    assert_eq!(ips(&c.all_reachable), ["10.0.0.1"]);
    assert!(c.has_any);
}

#[test]
fn internal_local_without_local_endpoints_still_has_any() {
    let eps = [ep("10.0.0.2", true, true, false, false)];
    let c = categorize(&eps, &svc(true, false, false), &node(None));
    assert!(c.local.is_empty());
    assert!(c.all_reachable.is_empty());
    assert!(
        c.has_any,
        "remote endpoints exist, so traffic is dropped, not rejected"
    );
}

#[test]
fn local_falls_back_to_local_serving_terminating() {
    let eps = [
        ep("10.0.0.1", false, true, true, true),
        ep("10.0.0.2", true, true, false, false),
    ];
    let c = categorize(&eps, &svc(true, false, false), &node(None));
    assert_eq!(ips(&c.local), ["10.0.0.1"]);
}

#[test]
fn external_local_with_cluster_internal_reaches_both() {
    let eps = [
        ep("10.0.0.1", true, true, false, true),
        ep("10.0.0.2", true, true, false, false),
    ];
    let c = categorize(&eps, &svc(false, true, true), &node(None));
    assert_eq!(ips(&c.cluster), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(ips(&c.local), ["10.0.0.1"]);
    assert_eq!(ips(&c.all_reachable), ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn topology_hints_filter_cluster_endpoints() {
    let eps = [
        hinted("10.0.0.1", &["zone-a"]),
        hinted("10.0.0.2", &["zone-b"]),
        hinted("10.0.0.3", &["zone-a", "zone-c"]),
    ];
    let c = categorize(&eps, &svc(false, false, false), &node(Some("zone-a")));
    assert_eq!(ips(&c.cluster), ["10.0.0.1", "10.0.0.3"]);
}

#[test]
fn topology_hints_ignored_when_one_ready_endpoint_lacks_them() {
    let eps = [
        hinted("10.0.0.1", &["zone-a"]),
        Endpoint::ready("10.0.0.2".parse().unwrap(), 80),
    ];
    let c = categorize(&eps, &svc(false, false, false), &node(Some("zone-a")));
    assert_eq!(ips(&c.cluster), ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn topology_hints_ignored_when_none_for_this_zone_or_no_zone() {
    let eps = [
        hinted("10.0.0.1", &["zone-b"]),
        hinted("10.0.0.2", &["zone-c"]),
    ];
    let c = categorize(&eps, &svc(false, false, false), &node(Some("zone-a")));
    assert_eq!(c.cluster.len(), 2);
    let c = categorize(&eps, &svc(false, false, false), &node(None));
    assert_eq!(c.cluster.len(), 2);
}
