//! The Kubernetes API source against a test API server that speaks the real wire protocol:
//! initial sync, updates, deletes, a re-list after 410 Gone, an outage with the rules kept,
//! service-proxy-name filtering, and the same rules from files as from the API.

mod common;

use std::time::Duration;

use common::apiserver::{FakeApi, decode, fields_match, labels_match};
use common::{EXE, Node, dropped, is, root_or_skip, wait_until};
use serde_json::{Value, json};

const VIP: &str = "10.96.0.80:80";

fn fixture(name: &str) -> Value {
    let p = format!(
        "{}/tests/fixtures/api/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The slice with only the endpoints named.
fn slice(ips: &[&str]) -> Value {
    let mut s = fixture("endpointslice");
    let eps: Vec<Value> = s["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| ips.contains(&e["addresses"][0].as_str().unwrap()))
        .cloned()
        .collect();
    s["endpoints"] = json!(eps);
    s
}

/// A node with pods a and b and a client, and the API server inside the node.
fn cluster(tag: &str) -> (Node, FakeApi) {
    let mut n = Node::new(tag, "iptables", "nft");
    n.pod("a", "10.244.7.2", &[8080], &[]);
    n.pod("b", "10.244.7.3", &[8080], &[]);
    n.tb.add_pod("client", "10.244.2.10").unwrap();
    let api = FakeApi::start_in(&n.tb.node());
    let kc = n.dir.path().join("kubeconfig");
    std::fs::write(&kc, api.kubeconfig()).unwrap();
    n.source_args = vec!["--kubeconfig".into(), kc.display().to_string()];
    (n, api)
}

#[test]
fn fake_api_selectors() {
    let o = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
    assert!(labels_match("!service.kubernetes.io/headless,x=1", &o));
    assert!(!labels_match("!x", &o));
    assert!(labels_match("x!=2", &o));
    assert!(fields_match("metadata.name=a", &o));
    assert!(!fields_match("metadata.name=b", &o));
    assert_eq!(decode("a%21b%3Dc%2Cd"), "a!b=c,d");
}

#[test]
fn follows_the_api_initial_sync_updates_and_deletes() {
    if !root_or_skip("kubernetes-follow") {
        return;
    }
    let (mut n, api) = cluster("kfollow");
    api.apply(fixture("node"));
    api.apply(fixture("service"));
    api.apply(slice(&["10.244.7.2", "10.244.7.3"]));
    n.start();
    n.eventually("initial sync", "client", "tcp", VIP, is(&["a", "b"]));
    api.apply(slice(&["10.244.7.3"]));
    n.eventually("an endpoint removed", "client", "tcp", VIP, is(&["b"]));
    api.delete("Service", "shop", "web");
    n.eventually("the Service deleted", "client", "tcp", VIP, dropped);
    api.apply(fixture("service"));
    n.eventually("the Service back", "client", "tcp", VIP, is(&["b"]));
    // A headless Service is not even watched.
    let mut headless = fixture("service");
    headless["metadata"]["name"] = json!("web-headless");
    headless["metadata"]["labels"]["service.kubernetes.io/headless"] = json!("");
    headless["spec"]["clusterIP"] = json!("10.96.0.81");
    headless["spec"]["clusterIPs"] = json!(["10.96.0.81"]);
    api.apply(headless);
    n.eventually(
        "a headless-labelled Service is skipped",
        "client",
        "tcp",
        "10.96.0.81:80",
        dropped,
    );
}

#[test]
fn no_rules_until_the_initial_lists_are_in() {
    if !root_or_skip("kubernetes-initial") {
        return;
    }
    let (mut n, api) = cluster("kinit");
    api.apply(fixture("service"));
    api.apply(slice(&["10.244.7.2"]));
    api.stop();
    n.spawn();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !n.iptables_save().contains("WASP"),
        "nothing is programmed before the lists are in"
    );
    api.restart();
    n.wait_synced();
    n.eventually("after the initial lists", "client", "tcp", VIP, is(&["a"]));
}

#[test]
fn outage_keeps_rules_and_a_relist_after_410_converges_without_flapping() {
    if !root_or_skip("kubernetes-outage") {
        return;
    }
    let (mut n, api) = cluster("koutage");
    api.apply(fixture("node"));
    api.apply(fixture("service"));
    let mut other = fixture("service");
    other["metadata"]["name"] = json!("other");
    other["spec"]["clusterIP"] = json!("10.96.0.82");
    other["spec"]["clusterIPs"] = json!(["10.96.0.82"]);
    api.apply(other);
    api.apply(slice(&["10.244.7.2", "10.244.7.3"]));
    n.start();
    n.eventually("initial sync", "client", "tcp", VIP, is(&["a", "b"]));
    // Watches dropped mid-stream resume without re-listing and without changes.
    let changes = n
        .metric("wasp_sync_proxy_rules_service_changes_total")
        .unwrap();
    api.disconnect();
    std::thread::sleep(Duration::from_secs(1));
    n.eventually(
        "after a dropped watch",
        "client",
        "tcp",
        VIP,
        is(&["a", "b"]),
    );

    api.stop();
    wait_until("the outage shows in /healthz", || {
        n.healthz().1.contains("stale since")
    });
    assert_eq!(
        n.healthz().0,
        200,
        "an API outage alone does not fail the health check"
    );
    n.eventually(
        "the rules stay during the outage",
        "client",
        "tcp",
        VIP,
        is(&["a", "b"]),
    );
    assert_eq!(
        n.metric("wasp_sources_failing").map(|v| v > 0.0),
        Some(true)
    );

    // Meanwhile `other` is deleted and the history compacted: the watch resumes with 410
    // Gone and must re-list to learn it.
    api.delete("Service", "shop", "other");
    api.compact();
    api.restart();
    wait_until("the source recovers", || {
        n.metric("wasp_sources_failing") == Some(0.0)
    });
    wait_until("the re-list removes the deleted Service", || {
        !n.iptables_save().contains("shop/other")
    });
    n.eventually("web is untouched", "client", "tcp", VIP, is(&["a", "b"]));
    assert_eq!(
        n.metric("wasp_sync_proxy_rules_service_changes_total")
            .unwrap(),
        changes + 1.0,
        "only the deleted Service changed: no flapping of unchanged Services"
    );
    assert!(
        n.log().contains("410") || n.log().contains("too old"),
        "the relist came from a 410:\n{}",
        n.log()
    );
}

#[test]
fn service_proxy_name_selects_the_services_wasp_handles() {
    if !root_or_skip("kubernetes-proxy-name") {
        return;
    }
    let (mut n, api) = cluster("kproxyname");
    api.apply(fixture("service"));
    let mut mine = fixture("service");
    mine["metadata"]["name"] = json!("mine");
    mine["metadata"]["labels"]["service.kubernetes.io/service-proxy-name"] = json!("wasp");
    mine["spec"]["clusterIP"] = json!("10.96.0.83");
    mine["spec"]["clusterIPs"] = json!(["10.96.0.83"]);
    api.apply(mine);
    let mut s = slice(&["10.244.7.2"]);
    s["metadata"]["name"] = json!("mine-1");
    s["metadata"]["labels"]["kubernetes.io/service-name"] = json!("mine");
    s["metadata"]["labels"]["service.kubernetes.io/service-proxy-name"] = json!("wasp");
    api.apply(s);
    api.apply(slice(&["10.244.7.3"]));
    // Without a proxy name, wasp (like kube-proxy) leaves labelled Services alone.
    n.start();
    n.eventually("unlabelled handled", "client", "tcp", VIP, is(&["b"]));
    n.eventually(
        "labelled left to its proxy",
        "client",
        "tcp",
        "10.96.0.83:80",
        dropped,
    );
    n.stop();
    let out =
        n.tb.exec_in(&n.tb.node(), &[EXE, "cleanup", "--iptables-backend", "nft"])
            .unwrap();
    assert!(out.status.success());
    n.extra_args = vec!["--service-proxy-name".into(), "wasp".into()];
    n.start();
    n.eventually(
        "with --service-proxy-name wasp: labelled handled",
        "client",
        "tcp",
        "10.96.0.83:80",
        is(&["a"]),
    );
    n.eventually(
        "and the rest left to kube-proxy",
        "client",
        "tcp",
        VIP,
        dropped,
    );
}

#[test]
fn files_and_api_give_identical_rules() {
    if !root_or_skip("kubernetes-golden") {
        return;
    }
    let (n, api) = cluster("kgolden");
    for (name, obj) in [
        ("node", fixture("node")),
        ("service", fixture("service")),
        ("endpointslice", fixture("endpointslice")),
    ] {
        api.apply(obj.clone());
        std::fs::write(n.config_dir().join(format!("{name}.json")), obj.to_string()).unwrap();
    }
    let plan = |source: &[&str]| {
        let mut args = vec![
            EXE,
            "plan",
            "--iptables-backend",
            "nft",
            "--node-name",
            "node-a",
            "--cluster-cidr",
            "10.244.0.0/16",
        ];
        args.extend_from_slice(source);
        let out = n.tb.exec_in(&n.tb.node(), &args).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let kc = n.dir.path().join("kubeconfig").display().to_string();
    let dir = n.config_dir().display().to_string();
    for (mode, want) in [
        ("iptables", "shop/web:http -> 10.244.7.2:8080"),
        ("nftables", "10.244.7.2 . 8080"),
    ] {
        let from_api = plan(&["--mode", mode, "--kubeconfig", &kc]);
        let from_files = plan(&["--mode", mode, "--config-dir", &dir]);
        assert!(from_api.contains(want), "[{mode}] {from_api}");
        assert_eq!(from_api, from_files, "[{mode}]");
    }
}

#[test]
fn a_load_balancer_from_the_api_is_served_on_the_nodes_internal_ip() {
    if !root_or_skip("kubernetes-external") {
        return;
    }
    let (mut n, api) = cluster("kext");
    // The nftables mode serves node ports on the node's primary address, which comes from its
    // Node object (InternalIP 10.250.0.1), not a flag.
    n.mode = "nftables".into();
    n.node_ip_args = false;
    n.tb.add_pod("outsider", "192.168.50.10").unwrap();
    api.apply(fixture("node"));
    let mut svc = fixture("service");
    svc["spec"]["type"] = json!("LoadBalancer");
    svc["spec"]["externalTrafficPolicy"] = json!("Local");
    svc["spec"]["healthCheckNodePort"] = json!(30190);
    svc["spec"]["ports"][0]["nodePort"] = json!(30090);
    svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.90", "ipMode": "VIP"}]}});
    api.apply(svc);
    api.apply(slice(&["10.244.7.2", "10.244.7.3"]));
    n.start();
    // Off the node, only node-a's endpoint (a), by the node port and the LoadBalancer IP.
    n.eventually(
        "the node port",
        "outsider",
        "tcp",
        "10.250.0.1:30090",
        is(&["a"]),
    );
    n.eventually(
        "the LoadBalancer IP",
        "outsider",
        "tcp",
        "192.0.2.90:80",
        is(&["a"]),
    );
    // From a pod, both.
    n.eventually(
        "pods reach both",
        "client",
        "tcp",
        "10.250.0.1:30090",
        is(&["a", "b"]),
    );
    let out =
        n.tb.exec_in(
            &n.tb.pod_ns("outsider"),
            &["curl", "-s", "--max-time", "2", "http://10.250.0.1:30190/"],
        )
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("\"localEndpoints\": 1"), "{body}");
}
