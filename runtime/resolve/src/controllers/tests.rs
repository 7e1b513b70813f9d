//! Resolution cases: what the API server's controllers and kube-proxy would make of objects.

use super::*;
use crate::error::Origin;
use crate::object::Object;
use crate::validate::ValidationConfig;
use wasp_model::service::BalancerRef;

fn store(yaml: &str) -> ObjectStore {
    let mut store = ObjectStore::new(ValidationConfig {
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
    });
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).unwrap();
    for (i, v) in docs.into_iter().enumerate() {
        let obj = match v["kind"].as_str().unwrap() {
            "Service" => Object::Service(Box::new(serde_json::from_value(v).unwrap())),
            "Endpoints" => Object::Endpoints(Box::new(serde_json::from_value(v).unwrap())),
            "EndpointSlice" => Object::EndpointSlice(Box::new(serde_json::from_value(v).unwrap())),
            "Pod" => Object::Pod(Box::new(serde_json::from_value(v).unwrap())),
            "Node" => Object::Node(Box::new(serde_json::from_value(v).unwrap())),
            k => panic!("kind {k}"),
        };
        store.apply(obj, Origin::file("test.yaml", i)).unwrap();
    }
    store
}

fn run(yaml: &str) -> (ProxyState, Vec<ConfigError>) {
    let cfg = ResolveConfig {
        node: NodeTopology {
            name: "node-a".into(),
            zone: None,
        },
        ..ResolveConfig::default()
    };
    resolve(
        &store(yaml),
        &mut Allocator::new(vec!["10.96.0.0/12".parse().unwrap()]),
        &cfg,
    )
}

fn spn(svc: &str, port: &str, proto: Protocol) -> ServicePortName {
    ServicePortName::new(NamespacedName::new("default", svc), port, proto)
}

fn eps(state: &ProxyState, name: &ServicePortName) -> Vec<String> {
    state.ports[name]
        .endpoints
        .iter()
        .map(|e| e.to_string())
        .collect()
}

const ARTICLE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: tut-service}
spec:
  clusterIP: 10.96.0.20
  selector: {app: service-tut-pod}
  ports: [{port: 4000, targetPort: http, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: pod-a, labels: {app: service-tut-pod}}
spec:
  nodeName: node-a
  containers: [{name: web, image: python, ports: [{name: http, containerPort: 80}]}]
status: {phase: Running, podIP: 10.244.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: pod-b, labels: {app: service-tut-pod}}
spec:
  containers: [{name: web, image: python, ports: [{name: http, containerPort: 8080}]}]
status:
  phase: Running
  podIP: 10.244.1.3
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: not-ready, labels: {app: service-tut-pod}}
spec:
  containers: [{name: web, image: python, ports: [{name: http, containerPort: 80}]}]
status:
  phase: Running
  podIP: 10.244.1.4
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: v1
kind: Pod
metadata: {name: finished, labels: {app: service-tut-pod}}
spec:
  containers: [{name: web, image: python, ports: [{name: http, containerPort: 80}]}]
status: {phase: Succeeded, podIP: 10.244.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: no-port, labels: {app: service-tut-pod}}
spec:
  containers: [{name: web, image: python, ports: [{name: metrics, containerPort: 9090}]}]
status: {phase: Running, podIP: 10.244.1.6}
---
apiVersion: v1
kind: Pod
metadata: {name: other-app, labels: {app: other}}
spec:
  containers: [{name: web, image: python, ports: [{name: http, containerPort: 80}]}]
status: {phase: Running, podIP: 10.244.1.7}
"#;

#[test]
fn selector_pods_with_named_target_port() {
    let (state, errors) = run(ARTICLE);
    assert!(errors.is_empty(), "{errors:?}");
    let name = spn("tut-service", "", Protocol::Tcp);
    // Each pod's own container port; not-ready, finished, port-less and unmatched pods are out.
    assert_eq!(eps(&state, &name), ["10.244.1.2:80", "10.244.1.3:8080"]);
    let p = &state.ports[&name];
    assert_eq!(
        p.service.cluster_ips,
        ["10.96.0.20".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(p.service.port, 4000);
    assert!(p.endpoints[0].is_local && !p.endpoints[1].is_local);
}

#[test]
fn publish_not_ready_addresses_includes_not_ready_pods() {
    let yaml = ARTICLE.replace(
        "selector: {app: service-tut-pod}",
        "selector: {app: service-tut-pod}\n  publishNotReadyAddresses: true",
    );
    let (state, _) = run(&yaml);
    assert_eq!(
        eps(&state, &spn("tut-service", "", Protocol::Tcp)),
        ["10.244.1.2:80", "10.244.1.3:8080", "10.244.1.4:80"]
    );
}

#[test]
fn terminating_pods_are_used_only_when_nothing_is_ready() {
    let (state, _) = run(r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.30, selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: old, labels: {app: web}, deletionTimestamp: "2026-01-01T00:00:00Z"}
spec: {containers: [{name: c, image: x}]}
status: {phase: Running, podIP: 10.244.2.1, conditions: [{type: Ready, status: "True"}]}
"#);
    let p = &state.ports[&spn("web", "", Protocol::Tcp)];
    assert_eq!(
        eps(&state, &spn("web", "", Protocol::Tcp)),
        ["10.244.2.1:80"]
    );
    assert!(p.endpoints[0].terminating && p.endpoints[0].serving && !p.endpoints[0].ready);
}

const MANUAL: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: edge}
spec:
  clusterIP: 10.96.0.40
  ports:
  - {name: web, port: 80, targetPort: 8080}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Endpoints
metadata: {name: legacy, namespace: edge}
subsets:
- addresses: [{ip: 192.0.2.10, nodeName: node-a}, {ip: 192.0.2.11}]
  notReadyAddresses: [{ip: 192.0.2.12}]
  ports: [{name: web, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
- addresses: [{ip: 192.0.2.20}]
  ports: [{name: web, port: 9090}]
"#;

#[test]
fn selectorless_endpoints_are_mirrored_per_port() {
    let (state, errors) = run(MANUAL);
    assert!(errors.is_empty(), "{errors:?}");
    let ns = |p: &str, proto| ServicePortName::new(NamespacedName::new("edge", "legacy"), p, proto);
    assert_eq!(
        eps(&state, &ns("web", Protocol::Tcp)),
        ["192.0.2.10:8080", "192.0.2.11:8080", "192.0.2.20:9090"]
    );
    assert_eq!(
        eps(&state, &ns("dns", Protocol::Udp)),
        ["192.0.2.10:5353", "192.0.2.11:5353"]
    );
    assert!(state.ports[&ns("web", Protocol::Tcp)].endpoints[0].is_local);
}

#[test]
fn skip_mirror_label_is_honoured() {
    let yaml = MANUAL.replace(
        "metadata: {name: legacy, namespace: edge}\nsubsets",
        "metadata: {name: legacy, namespace: edge, labels: {endpointslice.kubernetes.io/skip-mirror: \"true\"}}\nsubsets",
    );
    let (state, _) = run(&yaml);
    let web = ServicePortName::new(NamespacedName::new("edge", "legacy"), "web", Protocol::Tcp);
    assert!(state.ports[&web].endpoints.is_empty());
    assert!(!state.ports[&web].has_any_endpoints);
}

#[test]
fn endpoint_slices_merge_and_dedupe() {
    let (state, _) = run(r#"
apiVersion: v1
kind: Service
metadata: {name: api}
spec: {clusterIP: 10.96.0.50, ports: [{name: https, port: 443, targetPort: 8443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints:
- addresses: [10.244.3.1]
  conditions: {ready: false}
- addresses: [10.244.3.2]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-2, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints:
- addresses: [10.244.3.1]
  conditions: {ready: true}
- addresses: [10.244.3.3]
  conditions: {ready: false, serving: true, terminating: true}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other, labels: {kubernetes.io/service-name: not-api}}
addressType: IPv4
ports: [{name: https, port: 8443}]
endpoints: [{addresses: [10.244.3.9]}]
"#);
    assert_eq!(
        eps(&state, &spn("api", "https", Protocol::Tcp)),
        ["10.244.3.1:8443", "10.244.3.2:8443"]
    );
}

#[test]
fn cluster_ip_allocated_when_absent_and_skips_headless_and_external_name() {
    let (state, errors) = run(r#"
apiVersion: v1
kind: Service
metadata: {name: auto}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.org}
"#);
    assert!(errors.is_empty());
    assert_eq!(state.ports.len(), 1);
    let ip = state.ports[&spn("auto", "", Protocol::Tcp)]
        .service
        .cluster_ips[0];
    assert!(
        "10.96.0.0/12"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&ip)
    );
    let (again, _) =
        run("apiVersion: v1\nkind: Service\nmetadata: {name: auto}\nspec: {ports: [{port: 80}]}\n");
    assert_eq!(
        again.ports[&spn("auto", "", Protocol::Tcp)]
            .service
            .cluster_ips[0],
        ip,
        "stable across restarts"
    );
}

#[test]
fn an_empty_selector_is_no_selector() {
    // The API server does not store `selector: {}`: the Service reads back selectorless, so
    // no Pod becomes its endpoint, and its hand-written Endpoints are mirrored.
    let (state, _) = run(r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.30, selector: {}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p, labels: {app: x}}
status: {phase: Running, podIP: 10.244.1.2}
---
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets: [{addresses: [{ip: 10.244.9.9}], ports: [{port: 80}]}]
"#);
    assert_eq!(
        eps(&state, &spn("web", "", Protocol::Tcp)),
        ["10.244.9.9:80"]
    );
}

#[test]
fn the_older_service_keeps_a_contested_cluster_ip() {
    // zeta is older (and sorts after alpha by name): it keeps the address, alpha is refused.
    let (state, errors) = run(r#"
apiVersion: v1
kind: Service
metadata: {name: zeta, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {clusterIP: 10.96.0.50, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: alpha, creationTimestamp: "2026-06-01T00:00:00Z"}
spec: {clusterIP: 10.96.0.50, ports: [{port: 80}]}
"#);
    assert!(state.ports.contains_key(&spn("zeta", "", Protocol::Tcp)));
    assert!(!state.ports.contains_key(&spn("alpha", "", Protocol::Tcp)));
    let e = errors[0].to_string();
    assert!(
        e.contains("Service default/alpha") && e.contains("(to Service default/zeta)"),
        "{e}"
    );
}

#[test]
fn duplicate_cluster_ip_is_an_error_on_the_second_service() {
    let (state, errors) = run(r#"
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.60, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.96.0.60, ports: [{port: 80}]}
"#);
    assert_eq!(state.ports.len(), 1);
    assert_eq!(errors.len(), 1);
    let e = errors[0].to_string();
    assert!(
        e.contains("test.yaml: document 1: Service default/b: spec.clusterIP"),
        "{e}"
    );
    assert!(
        e.contains("already allocated (to Service default/a)"),
        "{e}"
    );
}

#[test]
fn service_proxy_name_label_hands_services_to_another_proxy() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: mine, labels: {service.kubernetes.io/service-proxy-name: wasp}}
spec: {clusterIP: 10.96.0.70, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: theirs}
spec: {clusterIP: 10.96.0.71, ports: [{port: 80}]}
"#;
    let (state, _) = run(yaml);
    assert_eq!(
        state
            .ports
            .keys()
            .map(|k| &*k.service.name)
            .collect::<Vec<_>>(),
        ["theirs"]
    );
    let cfg = ResolveConfig {
        service_proxy_name: Some("wasp".into()),
        ..Default::default()
    };
    let (state, _) = resolve(&store(yaml), &mut Allocator::new(vec![]), &cfg);
    assert_eq!(
        state
            .ports
            .keys()
            .map(|k| &*k.service.name)
            .collect::<Vec<_>>(),
        ["mine"]
    );
}

#[test]
fn session_affinity_traffic_policy_and_balancer_annotations() {
    let (state, _) = run(r#"
apiVersion: v1
kind: Service
metadata:
  name: sticky
  annotations: {wasp.dev/balancer: maglev, wasp.dev/balancer-config: "m=251"}
spec:
  clusterIP: 10.96.0.80
  sessionAffinity: ClientIP
  internalTrafficPolicy: Local
  ports: [{port: 80}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: sticky}
subsets: [{addresses: [{ip: 10.244.4.1, nodeName: node-a}, {ip: 10.244.4.2, nodeName: node-b}], ports: [{port: 80}]}]
"#);
    let p = &state.ports[&spn("sticky", "", Protocol::Tcp)];
    assert_eq!(p.service.session_affinity_seconds, Some(10800));
    assert_eq!(
        p.service.balancer,
        Some(BalancerRef {
            name: "maglev".into(),
            config: "m=251".into()
        })
    );
    assert_eq!(
        eps(&state, &spn("sticky", "", Protocol::Tcp)),
        ["10.244.4.1:80"],
        "internal traffic policy Local"
    );
}

const EXTERNAL: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.90
  externalTrafficPolicy: Local
  externalIPs: [192.0.2.5]
  loadBalancerSourceRanges: [203.0.113.0/24]
  ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]
status: {loadBalancer: {ingress: [{ip: 192.0.2.10}, {ip: 192.0.2.11, ipMode: Proxy}]}}
---
apiVersion: v1
kind: Endpoints
metadata: {name: lb}
subsets:
- addresses: [{ip: 10.244.9.1, nodeName: node-a}, {ip: 10.244.9.2, nodeName: node-b}]
  ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]
"#;

#[test]
fn node_ports_are_allocated_stably_and_health_check_ports_only_for_local_load_balancers() {
    let (state, errors) = run(EXTERNAL);
    assert!(errors.is_empty(), "{errors:?}");
    let http = &state.ports[&spn("lb", "http", Protocol::Tcp)].service;
    let dns = &state.ports[&spn("lb", "dns", Protocol::Udp)].service;
    let range = 30000..=32767;
    let (np, hc) = (
        http.node_port.unwrap(),
        http.health_check_node_port.unwrap(),
    );
    assert!(range.contains(&np) && range.contains(&hc) && np != hc);
    assert_ne!(dns.node_port, Some(np), "each port its own node port");
    assert_eq!(dns.health_check_node_port, Some(hc), "one per Service");
    // The same ports from a fresh allocator: a restart moves nothing.
    let (again, _) = run(EXTERNAL);
    assert_eq!(
        again.ports[&spn("lb", "http", Protocol::Tcp)].service,
        *http
    );
    // A Cluster-policy NodePort has no health check port.
    let (state, _) = run(
        "apiVersion: v1\nkind: Service\nmetadata: {name: np}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}",
    );
    let s = &state.ports[&spn("np", "", Protocol::Tcp)].service;
    assert_eq!((s.node_port, s.health_check_node_port), (Some(30080), None));
}

#[test]
fn a_node_port_used_twice_is_an_error_naming_both_services() {
    let (state, errors) = run(r#"
apiVersion: v1
kind: Service
metadata: {name: first, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {type: NodePort, ports: [{port: 80, nodePort: 30080}]}
---
apiVersion: v1
kind: Service
metadata: {name: second, creationTimestamp: "2026-02-01T00:00:00Z"}
spec: {type: NodePort, ports: [{port: 81, nodePort: 30080}]}
"#);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].to_string();
    assert!(
        e.contains("Service default/second: spec.ports[0].nodePort")
            && e.contains("already allocated (to Service default/first)"),
        "{e}"
    );
    assert!(state.ports.contains_key(&spn("first", "", Protocol::Tcp)));
    assert!(!state.ports.contains_key(&spn("second", "", Protocol::Tcp)));
}

#[test]
fn external_addresses_skip_proxy_mode_ingress_and_local_policy_splits_the_endpoints() {
    let (state, _) = run(EXTERNAL);
    let p = &state.ports[&spn("lb", "http", Protocol::Tcp)];
    assert_eq!(
        p.service.external_ips,
        ["192.0.2.5".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        p.service.load_balancer_ips,
        ["192.0.2.10".parse::<IpAddr>().unwrap()],
        "ipMode Proxy is not captured"
    );
    assert_eq!(
        p.service.load_balancer_source_ranges,
        ["203.0.113.0/24".parse::<IpNet>().unwrap()]
    );
    assert!(p.service.external_traffic_local);
    let of = |idx: &[usize]| -> Vec<String> {
        idx.iter().map(|&i| p.endpoints[i].to_string()).collect()
    };
    assert_eq!(of(p.internal()), ["10.244.9.1:80", "10.244.9.2:80"]);
    assert_eq!(of(p.external()), ["10.244.9.1:80"], "only node-a's");
}

#[test]
fn node_port_addresses_come_from_the_config_the_node_or_the_cidrs() {
    let node = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 10.250.0.7}, {type: Hostname, address: node-a}]}
"#;
    let with = |a: NodePortAddresses, ips: &[&str]| {
        let cfg = ResolveConfig {
            node: NodeTopology {
                name: "node-a".into(),
                zone: None,
            },
            node_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            host_addresses: ["127.0.0.1", "10.250.0.7", "192.168.1.4"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            node_port_addresses: a,
            ..ResolveConfig::default()
        };
        resolve(&store(node), &mut Allocator::new(vec![]), &cfg)
            .0
            .node_port_ips
            .map(|v| v.iter().map(IpAddr::to_string).collect::<Vec<_>>())
    };
    assert_eq!(with(NodePortAddresses::AllLocal, &[]), None);
    assert_eq!(
        with(NodePortAddresses::Primary, &[]),
        Some(vec!["10.250.0.7".into()]),
        "the Node's InternalIP"
    );
    assert_eq!(
        with(NodePortAddresses::Primary, &["10.250.0.9"]),
        Some(vec!["10.250.0.9".into()]),
        "--node-ip wins"
    );
    assert_eq!(
        with(
            NodePortAddresses::Cidrs(vec!["192.168.0.0/16".parse().unwrap()]),
            &[]
        ),
        Some(vec!["192.168.1.4".into()])
    );
}
