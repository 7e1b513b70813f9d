//! Validation cases: what the API server would reject, and how the error reads.

use super::*;

fn check(yaml: &str) -> Vec<String> {
    let v: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
    let mut obj = match v["kind"].as_str().unwrap() {
        "Service" => Object::Service(Box::new(serde_json::from_value(v).unwrap())),
        "Endpoints" => Object::Endpoints(Box::new(serde_json::from_value(v).unwrap())),
        "EndpointSlice" => Object::EndpointSlice(Box::new(serde_json::from_value(v).unwrap())),
        "Pod" => Object::Pod(Box::new(serde_json::from_value(v).unwrap())),
        k => panic!("kind {k}"),
    };
    obj.normalize();
    let cfg = ValidationConfig {
        service_cidrs: vec!["10.96.0.0/12".parse().unwrap()],
    };
    validate(&obj, &Origin::file("svc.yaml", 2), &cfg)
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn a_good_service_passes() {
    let e = check(
        "kind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.1, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}, {name: dns, port: 53, protocol: UDP}]}",
    );
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn errors_name_file_document_object_and_field() {
    let e = check("kind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 70000}]}");
    assert_eq!(
        e,
        [
            "svc.yaml: document 2: Service default/web: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        ]
    );
}

#[test]
fn service_rejections() {
    let cases = [
        (
            "metadata: {name: Web}\nspec: {ports: [{port: 80}]}",
            "metadata.name",
        ),
        (
            "metadata: {name: 1web}\nspec: {ports: [{port: 80}]}",
            "metadata.name",
        ),
        (
            "metadata: {name: web, namespace: Bad_NS}\nspec: {ports: [{port: 80}]}",
            "metadata.namespace",
        ),
        ("metadata: {name: web}\nspec: {ports: []}", "spec.ports"),
        (
            "metadata: {name: web}\nspec: {ports: [{port: 80}, {port: 81}]}",
            "spec.ports[0].name",
        ),
        (
            "metadata: {name: web}\nspec: {ports: [{name: a, port: 80}, {name: a, port: 81}]}",
            "spec.ports[1].name",
        ),
        (
            "metadata: {name: web}\nspec: {ports: [{name: a, port: 80}, {name: b, port: 80}]}",
            "spec.ports[1]: Duplicate",
        ),
        (
            "metadata: {name: web}\nspec: {ports: [{port: 80, protocol: ICMP}]}",
            "spec.ports[0].protocol",
        ),
        (
            "metadata: {name: web}\nspec: {ports: [{port: 80, targetPort: 0}]}",
            "spec.ports[0].targetPort",
        ),
        (
            "metadata: {name: web}\nspec: {ports: [{port: 80, targetPort: Not_A_Name}]}",
            "spec.ports[0].targetPort",
        ),
        (
            "metadata: {name: web}\nspec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}",
            "not in the valid range",
        ),
        (
            "metadata: {name: web}\nspec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}",
            "spec.clusterIP: Invalid value",
        ),
        (
            "metadata: {name: web}\nspec: {type: Balanced, ports: [{port: 80}]}",
            "spec.type",
        ),
        (
            "metadata: {name: web}\nspec: {sessionAffinity: Sticky, ports: [{port: 80}]}",
            "spec.sessionAffinity",
        ),
        (
            "metadata: {name: web}\nspec: {ports: [{port: 80, nodePort: 30000}]}",
            "spec.ports[0].nodePort: Forbidden",
        ),
        (
            "metadata: {name: web}\nspec: {internalTrafficPolicy: Nearby, ports: [{port: 80}]}",
            "spec.internalTrafficPolicy",
        ),
        (
            "metadata: {name: web}\nspec: {externalTrafficPolicy: Local, ports: [{port: 80}]}",
            "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set",
        ),
        (
            "metadata: {name: web}\nspec: {type: NodePort, externalTrafficPolicy: Local, healthCheckNodePort: 30100, ports: [{port: 80}]}",
            "spec.healthCheckNodePort: Invalid value: may only be set",
        ),
        (
            "metadata: {name: web}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 70000}]}",
            "spec.ports[0].nodePort",
        ),
        (
            "metadata: {name: web}\nspec: {externalIPs: [192.0.2.300], ports: [{port: 80}]}",
            "spec.externalIPs[0]: Invalid value",
        ),
        (
            "metadata: {name: web}\nspec: {type: NodePort, loadBalancerSourceRanges: [10.0.0.0/8], ports: [{port: 80}]}",
            "spec.loadBalancerSourceRanges: Forbidden",
        ),
        (
            "metadata: {name: web}\nspec: {type: LoadBalancer, loadBalancerSourceRanges: [10.0.0.0/33], ports: [{port: 80}]}",
            "spec.loadBalancerSourceRanges[0]: Invalid value",
        ),
        (
            "metadata: {name: web}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.10, ipMode: Tunnel}]}}",
            "status.loadBalancer.ingress[0].ipMode: Unsupported value",
        ),
    ];
    for (body, want) in cases {
        let e = check(&format!("kind: Service\n{body}"));
        assert!(
            e.iter().any(|m| m.contains(want)),
            "{body}: want {want}, got {e:?}"
        );
    }
}

#[test]
fn external_traffic_fields_that_kube_apiserver_accepts_pass() {
    let e = check(
        "kind: Service\nmetadata: {name: web}\nspec: {type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 30100, externalIPs: [192.0.2.5], loadBalancerSourceRanges: [203.0.113.0/24], ports: [{port: 80, nodePort: 30080}]}\nstatus: {loadBalancer: {ingress: [{ip: 192.0.2.10}, {ip: 192.0.2.11, ipMode: Proxy}]}}",
    );
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn endpoints_slices_and_pods_rejections() {
    let cases = [
        (
            "kind: Endpoints\nmetadata: {name: e}\nsubsets: [{addresses: [{ip: 127.0.0.1}], ports: [{port: 80}]}]",
            "subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback",
        ),
        (
            "kind: Endpoints\nmetadata: {name: e}\nsubsets: [{addresses: [{ip: nope}], ports: [{port: 80}]}]",
            "subsets[0].addresses[0].ip",
        ),
        (
            "kind: Endpoints\nmetadata: {name: e}\nsubsets: [{notReadyAddresses: [{ip: 169.254.1.1}], ports: [{port: 80}]}]",
            "notReadyAddresses[0].ip",
        ),
        (
            "kind: Endpoints\nmetadata: {name: e}\nsubsets: [{addresses: [{ip: 10.0.0.1}], ports: [{port: 0}]}]",
            "subsets[0].ports[0].port",
        ),
        (
            "kind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: [{addresses: ['2001:db8::1']}]",
            "endpoints[0].addresses[0]",
        ),
        (
            "kind: EndpointSlice\nmetadata: {name: s}\naddressType: IPX\nendpoints: []",
            "addressType",
        ),
        (
            "kind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\nendpoints: [{addresses: []}]",
            "endpoints[0].addresses",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{name: http_x, containerPort: 80}]}]}",
            "spec.containers[0].ports[0].name",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\nstatus: {podIP: 10.0.0.999}",
            "status.podIP",
        ),
    ];
    for (yaml, want) in cases {
        let e = check(yaml);
        assert!(
            e.iter().any(|m| m.contains(want)),
            "{yaml}: want {want}, got {e:?}"
        );
    }
}

#[test]
fn name_rules() {
    assert!(is_dns1123_label("a-1"));
    assert!(!is_dns1123_label("-a") && !is_dns1123_label("a-") && !is_dns1123_label("A"));
    assert!(is_dns1035_label("web") && !is_dns1035_label("1web"));
    assert!(is_dns1123_subdomain("a.b-c.d"));
    assert!(
        is_port_name("http") && is_port_name("h2c") && !is_port_name("80") && !is_port_name("a--b")
    );
    assert!(!is_port_name("abcdefghijklmnop"));
}
