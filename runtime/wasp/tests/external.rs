//! External traffic beyond the behaviour cases, on the real kernel: the health check node
//! port follows endpoint changes with kube-proxy's body and headers; `/healthz` answers the
//! network without the detail; static mode allocates node ports that `wasp plan` shows and
//! that survive a restart.

mod common;

use common::{EXE, MODES, Node, is, root_or_skip, wait_until};

fn lb(local: &[&str], remote: &[&str]) -> String {
    let addr = |ip: &&str, node: &str| format!("{{ip: {ip}, nodeName: {node}}}");
    let mut addrs: Vec<String> = local.iter().map(|ip| addr(ip, "node-a")).collect();
    addrs.extend(remote.iter().map(|ip| addr(ip, "node-b")));
    let subsets = if addrs.is_empty() {
        "[]".to_string()
    } else {
        format!(
            "[{{addresses: [{}], ports: [{{port: 80}}]}}]",
            addrs.join(", ")
        )
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: lb, namespace: shop}}\nspec: {{type: LoadBalancer, clusterIP: 10.96.0.150, externalTrafficPolicy: Local, healthCheckNodePort: 30150, ports: [{{port: 80, nodePort: 30151}}]}}\nstatus: {{loadBalancer: {{ingress: [{{ip: 192.0.2.50}}]}}}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: lb, namespace: shop}}\nsubsets: {subsets}\n"
    )
}

/// An HTTP answer: the status, the headers (lower-cased names) and the body.
type Answer = (u16, Vec<(String, String)>, String);

/// `curl -i` from namespace `ns`.
fn get(n: &Node, ns: &str, url: &str) -> Option<Answer> {
    let out =
        n.tb.exec_in(ns, &["curl", "-s", "-i", "--max-time", "2", url])
            .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, body.to_string()))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn the_health_check_node_port_follows_endpoint_changes() {
    if !root_or_skip("health check node port") {
        return;
    }
    // The servers are the daemon's, the same in every mode: one mode is enough.
    let (mode, backend) = MODES[0];
    let mut n = Node::new("hcnp", mode, backend);
    n.pod("a", "10.244.30.2", &[80], &[]);
    n.pod("b", "10.244.30.3", &[80], &[]);
    n.tb.add_pod("outsider", "192.168.50.10").unwrap();
    let outsider = n.tb.pod_ns("outsider");
    n.write("lb.yaml", &lb(&["10.244.30.2"], &["10.244.30.3"]));
    n.start();
    let url = "http://10.250.0.1:30150/anything";
    let (code, headers, body) = get(&n, &outsider, url).expect("the health check port answers");
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert_eq!(
        header(&headers, "x-load-balancing-endpoint-weight"),
        Some("1")
    );
    assert_eq!(
        body,
        "{\n\t\"service\": {\n\t\t\"namespace\": \"shop\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
    );
    // The local endpoint goes: 503, and the load balancer stops sending.
    n.write("lb.yaml", &lb(&[], &["10.244.30.3"]));
    wait_until("the health check reports no local endpoint", || {
        get(&n, &outsider, url).is_some_and(|(c, h, b)| {
            c == 503
                && header(&h, "x-load-balancing-endpoint-weight") == Some("0")
                && b.contains("\"localEndpoints\": 0")
        })
    });
    n.eventually(
        "off-node traffic is dropped",
        "outsider",
        "tcp",
        "192.0.2.50:80",
        |o| o.iter().all(|x| *x == wasp::echo::Outcome::Timeout),
    );
    // Two local endpoints: 200 with weight 2, and traffic follows.
    n.write("lb.yaml", &lb(&["10.244.30.2", "10.244.30.3"], &[]));
    wait_until("the health check reports two local endpoints", || {
        get(&n, &outsider, url).is_some_and(|(c, h, _)| {
            c == 200 && header(&h, "x-load-balancing-endpoint-weight") == Some("2")
        })
    });
    n.eventually(
        "both local endpoints serve",
        "outsider",
        "tcp",
        "192.0.2.50:80",
        is(&["a", "b"]),
    );
    // The Service goes: so does its server.
    std::fs::remove_file(n.config_dir().join("lb.yaml")).unwrap();
    wait_until("the health check port closes", || {
        get(&n, &outsider, url).is_none()
    });
}

#[test]
fn healthz_answers_the_network_without_the_detail() {
    if !root_or_skip("healthz on the network") {
        return;
    }
    let (mode, backend) = MODES[0];
    let mut n = Node::new("healthz", mode, backend);
    n.tb.add_pod("outsider", "192.168.50.10").unwrap();
    let outsider = n.tb.pod_ns("outsider");
    // A config error names a file and an object: it must not leave the node.
    n.write("bad.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: secret-name}\nspec: {ports: [{port: 0}]}\n");
    n.start();
    let (code, headers, body) = get(&n, &outsider, "http://10.250.0.1:10256/healthz")
        .expect("/healthz answers off the node");
    assert_eq!(code, 200, "{body}");
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    let v: serde_json::Value = serde_json::from_str(&body).expect(&body);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["currentTime", "lastUpdated", "nodeEligible"],
        "{body}"
    );
    assert!(!body.contains("secret-name"), "{body}");
    // On the node, the detail is there.
    let (_, local) = n.healthz();
    assert!(
        local.contains("secret-name") && local.contains("\"configErrors\":1"),
        "{local}"
    );
}

#[test]
fn static_mode_allocates_node_ports_that_plan_shows_and_a_restart_keeps() {
    if !root_or_skip("node port allocation") {
        return;
    }
    for (mode, backend) in MODES.iter().take(2) {
        let mut n = Node::new("npalloc", mode, backend);
        n.pod("a", "10.244.31.2", &[80], &[]);
        n.tb.add_pod("outsider", "192.168.50.10").unwrap();
        n.write(
            "web.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: NodePort, clusterIP: 10.96.0.160, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: web}\nsubsets: [{addresses: [{ip: 10.244.31.2}], ports: [{port: 80}]}]\n",
        );
        let dir = n.config_dir().display().to_string();
        let argv = [
            EXE,
            "plan",
            "--mode",
            mode,
            "--config-dir",
            &dir,
            "--node-name",
            "node-a",
            "--node-ip",
            "10.250.0.1",
            "--service-node-port-range",
            "31000-31999",
        ];
        let out = n.tb.exec_in(&n.tb.node(), &argv).unwrap();
        let plan = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The plan names the node port: in the iptables rule, or the nftables element.
        let port: u16 = (31000..=31999)
            .find(|p| plan.contains(&format!("--dport {p} ")) || plan.contains(&format!(". {p} :")))
            .unwrap_or_else(|| panic!("[{mode}] no node port in the plan:\n{plan}"));
        n.extra_args = vec!["--service-node-port-range".into(), "31000-31999".into()];
        n.start();
        let to = format!("10.250.0.1:{port}");
        n.eventually(
            "the allocated node port serves",
            "outsider",
            "tcp",
            &to,
            is(&["a"]),
        );
        n.stop();
        n.start();
        n.eventually(
            "the same port after a restart",
            "outsider",
            "tcp",
            &to,
            is(&["a"]),
        );
    }
}
