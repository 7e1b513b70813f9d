//! The incremental resolver against a full resolution: after every step of a history of
//! object changes, resolving only what the store says changed must give exactly the state,
//! the errors and the diff that resolving everything gives.

use std::collections::HashSet;

use wasp_model::categorize::NodeTopology;
use wasp_model::{NamespacedName, ProxyState};
use wasp_resolve::validate::ValidationConfig;
use wasp_resolve::{Allocator, Object, ObjectKind, ObjectStore, Origin, ResolveConfig, Resolver};

fn object(yaml: &str) -> Object {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    match v["kind"].as_str().unwrap() {
        "Service" => Object::Service(Box::new(serde_json::from_value(v).unwrap())),
        "Endpoints" => Object::Endpoints(Box::new(serde_json::from_value(v).unwrap())),
        "EndpointSlice" => Object::EndpointSlice(Box::new(serde_json::from_value(v).unwrap())),
        "Pod" => Object::Pod(Box::new(serde_json::from_value(v).unwrap())),
        "Node" => Object::Node(Box::new(serde_json::from_value(v).unwrap())),
        k => panic!("kind {k}"),
    }
}

enum Step {
    Apply(&'static str),
    /// Several objects in one sync.
    Batch(&'static [&'static str]),
    Delete(ObjectKind, &'static str, &'static str),
    Unhealthy(&'static [&'static str]),
    /// A new Service (the second name) claiming the cluster IP (or, if true, the node port)
    /// the first was given, which then moves.
    ClaimWhatWasGiven(&'static str, &'static str, bool),
}
use Step::{Apply, Batch, ClaimWhatWasGiven, Delete, Unhealthy};

/// The cluster IP and node port Service `name` has in `state`.
fn given(state: &ProxyState, name: &str) -> (String, Option<u16>) {
    let (_, p) = state
        .ports
        .iter()
        .find(|(n, _)| &*n.service.name == name)
        .unwrap_or_else(|| panic!("no port of {name}"));
    (p.service.cluster_ips[0].to_string(), p.service.node_port)
}

fn pod(name: &str, app: &str, ip: &str) -> String {
    format!(
        "{{apiVersion: v1, kind: Pod, metadata: {{name: {name}, labels: {{app: {app}}}}}, spec: {{nodeName: node-a, containers: [{{name: c, image: x}}]}}, status: {{phase: Running, podIP: {ip}}}}}"
    )
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn history() -> Vec<Step> {
    vec![
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {selector: {app: a}, ports: [{name: http, port: 80, targetPort: 8080}]}}",
        ),
        Apply(leak(pod("p1", "a", "10.0.0.1"))),
        Apply(leak(pod("p2", "b", "10.0.0.2"))),
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: b}, spec: {ports: [{name: web, port: 80}, {name: dns, port: 53, protocol: UDP}]}}",
        ),
        Apply(
            "{apiVersion: v1, kind: Endpoints, metadata: {name: b}, subsets: [{addresses: [{ip: 10.0.1.1}, {ip: 10.0.1.2}], ports: [{name: web, port: 8080}, {name: dns, port: 53, protocol: UDP}]}]}",
        ),
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: c}, spec: {clusterIP: 10.96.0.30, ports: [{port: 80}]}}",
        ),
        Apply(
            "{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: c-1, labels: {kubernetes.io/service-name: c}}, addressType: IPv4, endpoints: [{addresses: [10.0.2.1]}], ports: [{port: 8080}]}",
        ),
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: d, creationTimestamp: '2026-01-01T00:00:00Z'}, spec: {clusterIP: 10.96.0.50, ports: [{port: 80}]}}",
        ),
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: f}, spec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}}",
        ),
        // Pods move in and out of a selector.
        Apply(leak(pod("p2", "a", "10.0.0.2"))),
        Delete(ObjectKind::Pod, "default", "p1"),
        // A slice moves from one Service to another.
        Apply(
            "{apiVersion: discovery.k8s.io/v1, kind: EndpointSlice, metadata: {name: c-1, labels: {kubernetes.io/service-name: b}}, addressType: IPv4, endpoints: [{addresses: [10.0.2.1]}], ports: [{name: web, port: 8080}]}",
        ),
        Apply(
            "{apiVersion: v1, kind: Endpoints, metadata: {name: b}, subsets: [{addresses: [{ip: 10.0.1.1}], ports: [{name: web, port: 8080}, {name: dns, port: 53, protocol: UDP}]}]}",
        ),
        // A claim on a held address is refused, and wins once the holder goes.
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: g, creationTimestamp: '2026-02-01T00:00:00Z'}, spec: {clusterIP: 10.96.0.50, ports: [{port: 81}]}}",
        ),
        Delete(ObjectKind::Service, "default", "d"),
        // New Services that leave everyone else alone: allocated, explicit, a node port,
        // two in one sync, one gone, one that gives up its explicit address.
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: m}, spec: {type: NodePort, ports: [{port: 80}]}}",
        ),
        Batch(&[
            "{apiVersion: v1, kind: Service, metadata: {name: n1}, spec: {ports: [{port: 80}]}}",
            "{apiVersion: v1, kind: Service, metadata: {name: n2}, spec: {clusterIP: 10.96.0.70, type: NodePort, ports: [{name: web, port: 80, nodePort: 30090}, {name: dns, port: 53, protocol: UDP}]}}",
        ]),
        Delete(ObjectKind::Service, "default", "n1"),
        Apply("{apiVersion: v1, kind: Service, metadata: {name: c}, spec: {ports: [{port: 80}]}}"),
        // A claim on what the allocators gave another: that one moves.
        ClaimWhatWasGiven("m", "k", false),
        ClaimWhatWasGiven("m", "k2", true),
        // Two new claims on one address in one sync: the older wins.
        Batch(&[
            "{apiVersion: v1, kind: Service, metadata: {name: q1, creationTimestamp: '2026-03-02T00:00:00Z'}, spec: {clusterIP: 10.96.0.80, ports: [{port: 80}]}}",
            "{apiVersion: v1, kind: Service, metadata: {name: q2, creationTimestamp: '2026-03-01T00:00:00Z'}, spec: {clusterIP: 10.96.0.80, ports: [{port: 80}]}}",
        ]),
        Delete(ObjectKind::Service, "default", "q2"),
        // Node ports move between Services.
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: f}, spec: {type: NodePort, ports: [{port: 80, nodePort: 30081}]}}",
        ),
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: h}, spec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}}",
        ),
        // Health checks, then a verdict from them.
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: b, annotations: {wasp.dev/health-check: tcp}}, spec: {ports: [{name: web, port: 80}, {name: dns, port: 53, protocol: UDP}]}}",
        ),
        Unhealthy(&["10.0.1.1:8080"]),
        Unhealthy(&[]),
        // This node's zone: every port is categorised again.
        Apply(
            "{apiVersion: v1, kind: Node, metadata: {name: node-a, labels: {topology.kubernetes.io/zone: z1}}}",
        ),
        Apply(
            "{apiVersion: v1, kind: Service, metadata: {name: a, annotations: {wasp.dev/balancer: maglev}}, spec: {selector: {app: a}, ports: [{name: http, port: 80, targetPort: 8080}]}}",
        ),
        Delete(ObjectKind::Service, "default", "a"),
        Delete(ObjectKind::EndpointSlice, "default", "c-1"),
    ]
}

fn cfg() -> ResolveConfig {
    ResolveConfig {
        node: NodeTopology {
            name: "node-a".into(),
            zone: None,
        },
        ..ResolveConfig::default()
    }
}

fn allocator() -> Allocator {
    Allocator::new(vec!["10.96.0.0/12".parse().unwrap()])
}

#[test]
fn resolving_what_changed_matches_resolving_everything() {
    let mut store = ObjectStore::new(ValidationConfig {
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
    });
    let mut cfg = cfg();
    let (mut inc, mut inc_alloc) = (Resolver::default(), allocator());
    let mut full_alloc = allocator();
    inc.full(&store, &mut inc_alloc, &cfg);
    inc.commit();
    let mut last = ProxyState::default();
    for (i, step) in history().into_iter().enumerate() {
        match step {
            Apply(y) => {
                store.apply(object(y), Origin::file("t.yaml", i)).unwrap();
            }
            Batch(ys) => {
                for y in ys {
                    store.apply(object(y), Origin::file("t.yaml", i)).unwrap();
                }
            }
            ClaimWhatWasGiven(holder, claimant, node_port) => {
                let (ip, port) = given(inc.state(), holder);
                let spec = if node_port {
                    format!(
                        "type: NodePort, ports: [{{port: 80, nodePort: {}}}]",
                        port.unwrap()
                    )
                } else {
                    format!("clusterIP: {ip}, ports: [{{port: 80}}]")
                };
                let y = format!(
                    "{{apiVersion: v1, kind: Service, metadata: {{name: {claimant}, creationTimestamp: '2020-01-01T00:00:00Z'}}, spec: {{{spec}}}}}"
                );
                store.apply(object(&y), Origin::file("t.yaml", i)).unwrap();
            }
            Delete(kind, ns, name) => {
                assert!(store.delete(kind, &NamespacedName::new(ns, name)));
            }
            Unhealthy(addrs) => {
                cfg.unhealthy = addrs
                    .iter()
                    .map(|a| a.parse().unwrap())
                    .collect::<HashSet<_>>();
            }
        }
        let changes = store.take_changes();
        inc.update(&store, changes, &mut inc_alloc, &cfg);
        let mut reference = Resolver::default();
        reference.full(&store, &mut full_alloc, &cfg);
        let (want, want_errors) = reference.into_parts();
        assert_eq!(inc.state(), &want, "state after step {i}");
        assert_eq!(
            inc.endpoint_count(),
            want.endpoint_count(),
            "after step {i}"
        );
        assert_eq!(inc.errors(), want_errors, "errors after step {i}");
        let (diff, previous) = inc.changes();
        assert_eq!(diff, last.diff(&want), "diff after step {i}");
        for name in diff.touched() {
            assert_eq!(
                previous.ports.get(name),
                last.ports.get(name),
                "old version of {name} after step {i}"
            );
        }
        inc.commit();
        last = want;
    }
    assert!(!last.ports.is_empty());
}

#[test]
fn an_endpoint_change_names_only_its_service() {
    let mut store = ObjectStore::default();
    for y in [
        "{apiVersion: v1, kind: Service, metadata: {name: a}, spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}}",
        "{apiVersion: v1, kind: Service, metadata: {name: b}, spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}}",
        "{apiVersion: v1, kind: Endpoints, metadata: {name: a}, subsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 80}]}]}",
    ] {
        store.apply(object(y), Origin::file("t.yaml", 0)).unwrap();
    }
    let _ = store.take_changes();
    let y = "{apiVersion: v1, kind: Endpoints, metadata: {name: a}, subsets: [{addresses: [{ip: 10.0.0.2}], ports: [{port: 80}]}]}";
    store.apply(object(y), Origin::file("t.yaml", 0)).unwrap();
    let c = store.take_changes();
    assert_eq!(
        c.services.into_iter().collect::<Vec<_>>(),
        vec![NamespacedName::new("default", "a")]
    );
    assert!(!c.node);
    // The same object again changes nothing.
    store.apply(object(y), Origin::file("t.yaml", 0)).unwrap();
    assert!(store.take_changes().services.is_empty());
}
