//! Active health checks of hand-written endpoints, on the real kernel: a backend killed stops
//! getting traffic once the unhealthy threshold has passed, and gets it back once restored.

mod common;

use common::{EXE, Node, answered_by, is, modes, root_or_skip, wait_until};

fn service(check: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {{wasp.dev/health-check: \"{check}\", wasp.dev/health-check-interval: 200ms}}\nspec: {{clusterIP: 10.96.0.70, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: web}}\nsubsets: [{{addresses: [{{ip: 10.244.50.2}}, {{ip: 10.244.50.3}}], ports: [{{port: 80}}]}}]\n"
    )
}

const VIP: &str = "10.96.0.70:80";

#[test]
fn a_dead_endpoint_leaves_and_comes_back() {
    if !root_or_skip("health checks") {
        return;
    }
    for (i, (mode, backend)) in modes().into_iter().enumerate() {
        // TCP checks in one mode, HTTP in the next: the probe is the daemon's, not the mode's.
        let check = if i % 2 == 0 { "tcp" } else { "http:/ready" };
        let mut n = Node::new("checks", mode, backend);
        n.pod("a", "10.244.50.2", &[80], &[]);
        n.tb.add_pod("b", "10.244.50.3").unwrap();
        let b_ns = n.tb.pod_ns("b");
        let serve_b = [EXE, "serve", "--name", "b", "--tcp", "80"];
        let b = n.tb.spawn_in(&b_ns, &serve_b, true).unwrap();
        n.tb.add_pod("client", "10.244.2.10").unwrap();
        n.write("web.yaml", &service(check));
        n.start();
        n.eventually("both serve", "client", "tcp", VIP, is(&["a", "b"]));

        n.tb.kill(b);
        wait_until("b is found unhealthy", || {
            n.metric("wasp_unhealthy_endpoints") == Some(1.0)
        });
        // Once the threshold has passed, not one request fails.
        n.eventually("only a serves", "client", "tcp", VIP, is(&["a"]));
        let outs = n.probe("client", "tcp", VIP, 40, "2s");
        assert_eq!(answered_by(&outs), ["a"], "[{mode}] {outs:?}");
        let (_, body) = n.healthz();
        assert!(
            body.contains("10.244.50.3:80 is unhealthy"),
            "[{mode}] {body}"
        );
        if check == "tcp" {
            // As root, a TCP check is a half-open handshake, answered here with a reset.
            assert!(body.contains("refused (a reset)"), "[{mode}] {body}");
        }
        assert!(n.log().contains("endpoint unhealthy"), "{}", n.log());
        let checks = n
            .metric("wasp_endpoint_health_checks_total{result=\"unhealthy\"}")
            .unwrap_or(0.0);
        assert!(checks >= 2.0, "[{mode}] failed probes counted: {checks}");
        if i == 0 {
            status_shows_the_unhealthy_endpoint(&mut n);
        }

        n.tb.spawn_in(&b_ns, &serve_b, true).unwrap();
        n.eventually("b is back", "client", "tcp", VIP, is(&["a", "b"]));
        assert_eq!(n.metric("wasp_unhealthy_endpoints"), Some(0.0));
    }
}

#[test]
fn a_bad_health_check_annotation_is_an_error_and_the_last_good_service_stays() {
    if !root_or_skip("health check annotation") {
        return;
    }
    let (mode, backend) = modes()[0];
    let mut n = Node::new("badcheck", mode, backend);
    n.pod("a", "10.244.50.2", &[80], &[]);
    n.pod("b", "10.244.50.3", &[80], &[]);
    n.tb.add_pod("client", "10.244.2.10").unwrap();
    n.write("web.yaml", &service("tcp"));
    n.start();
    n.eventually("served", "client", "tcp", VIP, is(&["a", "b"]));
    n.write("web.yaml", &service("icmp"));
    wait_until("the error is reported", || {
        let (_, body) = n.healthz();
        body.contains("metadata.annotations[wasp.dev/health-check]") && body.contains("icmp")
    });
    let outs = n.probe("client", "tcp", VIP, 20, "2s");
    assert_eq!(
        answered_by(&outs),
        ["a", "b"],
        "the last good Service stays: {outs:?}"
    );
}

#[test]
fn a_black_holed_endpoint_fails_at_its_timeout() {
    if !root_or_skip("health check timeout") {
        return;
    }
    let (mode, backend) = modes()[0];
    let mut n = Node::new("holecheck", mode, backend);
    n.pod("a", "10.244.50.2", &[80], &[]);
    // SYNs to the hole vanish: no SYN-ACK and no reset, so only the timeout tells.
    n.tb.add_pod("hole", "10.244.50.3").unwrap();
    let hole = n.tb.pod_ns("hole");
    let drop_all = "add chain ip hole in { type filter hook input priority 0; policy drop; }";
    for args in [
        &["nft", "add", "table", "ip", "hole"][..],
        &["nft", drop_all][..],
    ] {
        let out = n.tb.exec_in(&hole, args).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    n.tb.add_pod("client", "10.244.2.10").unwrap();
    // The timeout may be no longer than the interval.
    let yaml = service("tcp").replace(
        "wasp.dev/health-check-interval: 200ms",
        "wasp.dev/health-check-interval: 400ms, wasp.dev/health-check-timeout: 300ms",
    );
    n.write("web.yaml", &yaml);
    n.start();
    wait_until("the hole is found unhealthy", || {
        n.metric("wasp_unhealthy_endpoints") == Some(1.0)
    });
    let (_, body) = n.healthz();
    assert!(
        body.contains("10.244.50.3:80 is unhealthy: no answer within 300ms"),
        "[{mode}] {body}"
    );
    let outs = n.probe("client", "tcp", VIP, 20, "2s");
    assert_eq!(answered_by(&outs), ["a"], "[{mode}] {outs:?}");
    assert_eq!(
        n.metric("wasp_endpoint_health_checks_total{result=\"unhealthy\"}")
            .map(|f| f >= 2.0),
        Some(true)
    );
}

/// `wasp status`, as a table and as JSON, while b is unhealthy; and without a daemon.
fn status_shows_the_unhealthy_endpoint(n: &mut Node) {
    let node = n.tb.node();
    let table = n.tb.exec_in(&node, &[EXE, "status"]).unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("default/web"))
        .unwrap_or_default();
    assert!(row.contains("10.96.0.70:80"), "{text}");
    assert!(row.contains("10.244.50.2:80 ready healthy"), "{text}");
    assert!(row.contains("10.244.50.3:80 not ready unhealthy"), "{text}");
    let json =
        n.tb.exec_in(&node, &[EXE, "status", "--output", "json"])
            .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let eps = &v["ports"][0]["endpoints"];
    assert_eq!(eps[1]["address"], "10.244.50.3:80", "{v}");
    assert_eq!(eps[1]["health"], "unhealthy", "{v}");
    assert!(v["lastSync"].is_string(), "{v}");
    // Another node's view is not served: only the daemon's own node asks.
    let away =
        n.tb.exec_in(
            &n.tb.pod_ns("client"),
            &[EXE, "status", "--address", "10.250.0.1:10256"],
        )
        .unwrap();
    assert!(!away.status.success());
    n.stop();
    let none = n.tb.exec_in(&node, &[EXE, "status"]).unwrap();
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        !none.status.success() && err.contains("no wasp daemon answers"),
        "{err}"
    );
    n.start();
}
