//! Plugins on the real kernel: weights, consistent hashing, and a faulty plugin that the
//! daemon survives.

mod common;

use std::collections::BTreeMap;

use common::{Node, answered_by, modes, root_or_skip, split, wait_until};
use wasp::echo::Outcome;

fn svc(name: &str, vip: &str, annotations: &str, ips: &[&str]) -> String {
    let addrs: Vec<String> = ips.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\nspec: {{clusterIP: {vip}, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}}}\nsubsets: [{{addresses: [{}], ports: [{{port: 80}}]}}]\n",
        addrs.join(", ")
    )
}

#[test]
fn a_three_to_one_weighted_plugin_gives_75_percent() {
    if !root_or_skip("weighted") {
        return;
    }
    for (mode, backend) in modes() {
        let mut n = Node::new("weighted", mode, backend);
        n.pod("heavy", "10.244.11.2", &[80], &[]);
        n.pod("light", "10.244.11.3", &[80], &[]);
        n.tb.add_pod("client", "10.244.2.10").unwrap();
        n.write(
            "svc.yaml",
            &svc(
                "web",
                "10.96.0.100",
                "wasp.dev/balancer: weighted, wasp.dev/balancer-config: \"10.244.11.2=3\"",
                &["10.244.11.2", "10.244.11.3"],
            ),
        );
        n.start();
        let outs = n.probe("client", "tcp", "10.96.0.100:80", 400, "2s");
        let s = split(&outs);
        assert_eq!(s.values().sum::<usize>(), 400, "{s:?}");
        let share = *s.get("heavy").unwrap_or(&0) as f64 / 400.0;
        assert!(
            (0.68..=0.82).contains(&share),
            "[{backend}] heavy share {share}: {s:?}"
        );
    }
}

#[test]
fn maglev_keeps_each_client_on_one_backend_and_a_removal_moves_about_one_nth() {
    if !root_or_skip("maglev") {
        return;
    }
    // Hashed selections are realised differently in each mode: jhash maps, HMARK slots.
    for (mode, backend) in [("nftables", "auto"), ("iptables", "nft")] {
        maglev_case(mode, backend);
    }
}

fn maglev_case(mode: &str, backend: &str) {
    let mut n = Node::new("maglev", mode, backend);
    let pods = ["m0", "m1", "m2", "m3"];
    let ips = ["10.244.13.2", "10.244.13.3", "10.244.13.4", "10.244.13.5"];
    for (p, ip) in pods.iter().zip(ips) {
        n.pod(p, ip, &[80], &[]);
    }
    n.tb.add_pod("clients", "10.244.14.1").unwrap();
    let clients: Vec<String> = (10..70).map(|i| format!("10.244.14.{i}")).collect();
    n.tb.add_addresses("clients", &clients).unwrap();
    n.write(
        "svc.yaml",
        &svc("hashed", "10.96.0.101", "wasp.dev/balancer: maglev", &ips),
    );
    n.start();
    let backend_of = |c: &str, count: u32| -> String {
        let outs = n.probe_from("clients", Some(c), "tcp", "10.96.0.101:80", count, "2s");
        let names = answered_by(&outs);
        assert!(
            outs.iter().all(|o| matches!(o, Outcome::Answered { .. })),
            "[{mode}] {c}: {outs:?}\n{}",
            n.log()
        );
        assert_eq!(
            names.len(),
            1,
            "[{mode}] client {c} must stay on one backend: {outs:?}"
        );
        names[0].clone()
    };
    let before: BTreeMap<&str, String> = clients
        .iter()
        .map(|c| (c.as_str(), backend_of(c, 4)))
        .collect();
    let used: std::collections::BTreeSet<&String> = before.values().collect();
    assert!(
        used.len() >= 3,
        "clients spread over the backends: {before:?}"
    );

    // Remove m3: only its clients should move.
    n.write(
        "svc.yaml",
        &svc(
            "hashed",
            "10.96.0.101",
            "wasp.dev/balancer: maglev",
            &ips[..3],
        ),
    );
    wait_until("m3 leaves", || {
        let outs = n.probe_from(
            "clients",
            Some("10.244.14.1"),
            "tcp",
            "10.96.0.101:80",
            1,
            "2s",
        );
        !answered_by(&outs).contains(&"m3".to_string())
            && clients.iter().take(20).all(|c| backend_of(c, 1) != "m3")
    });
    let after: BTreeMap<&str, String> = clients
        .iter()
        .map(|c| (c.as_str(), backend_of(c, 2)))
        .collect();
    let survivors: Vec<&&str> = before
        .iter()
        .filter(|(_, b)| *b != "m3")
        .map(|(c, _)| c)
        .collect();
    let moved = survivors
        .iter()
        .filter(|c| before[**c] != after[**c])
        .count();
    assert!(
        (moved as f64) <= 0.15 * survivors.len() as f64,
        "[{mode}] of {} clients on surviving backends {moved} moved:\nbefore {before:?}\nafter {after:?}",
        survivors.len()
    );
    let total_moved = clients
        .iter()
        .filter(|c| before[c.as_str()] != after[c.as_str()])
        .count();
    assert!(
        (total_moved as f64) <= 0.45 * clients.len() as f64,
        "about 1/4 should move, {total_moved} did"
    );
}

#[test]
fn a_faulty_plugin_falls_back_is_reported_and_recovers_once_fixed() {
    if !root_or_skip("faulty") {
        return;
    }
    let mut n = Node::new("faulty", "nftables", "auto");
    n.pod("a", "10.244.15.2", &[80], &[]);
    n.pod("b", "10.244.15.3", &[80], &[]);
    n.tb.add_pod("client", "10.244.2.10").unwrap();
    let cfg = n.dir.path().join("wasp.yaml");
    std::fs::write(
        &cfg,
        format!(
            "kind: WaspConfiguration\nplugins: {{faulty: {}}}\n",
            wasp_plugin::builtin::TEST_FAULTY
        ),
    )
    .unwrap();
    n.extra_args = vec!["--config".into(), cfg.display().to_string()];
    let both = ["10.244.15.2", "10.244.15.3"];
    let good = svc(
        "good",
        "10.96.0.110",
        "wasp.dev/balancer: weighted, wasp.dev/balancer-config: \"10.244.15.3=0\"",
        &both,
    );
    n.write("good.yaml", &good);
    n.write(
        "bad.yaml",
        &svc(
            "bad",
            "10.96.0.111",
            "wasp.dev/balancer: faulty, wasp.dev/balancer-config: mode=trap",
            &both,
        ),
    );
    n.start();
    let is = |want: &[&str]| {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        move |o: &[Outcome]| {
            o.iter().all(|x| matches!(x, Outcome::Answered { .. })) && answered_by(o) == want
        }
    };
    n.eventually(
        "the good Service follows its plugin",
        "client",
        "tcp",
        "10.96.0.110:80",
        is(&["a"]),
    );
    n.eventually(
        "the faulty port serves on the default selection",
        "client",
        "tcp",
        "10.96.0.111:80",
        is(&["a", "b"]),
    );
    assert_eq!(n.metric("wasp_plugin_ports_on_fallback"), Some(1.0));
    assert!(
        n.metric("wasp_plugin_failures_total")
            .is_some_and(|f| f >= 1.0)
    );
    let (code, body) = n.healthz();
    assert_eq!(code, 200);
    assert!(
        body.contains("plugin faulty: default/bad on the default selection: trapped"),
        "{body}"
    );

    // A plugin that never returns: the sync is bounded by the deadline and everything serves.
    n.write(
        "bad.yaml",
        &svc(
            "bad",
            "10.96.0.111",
            "wasp.dev/balancer: faulty, wasp.dev/balancer-config: mode=loop",
            &both,
        ),
    );
    wait_until("the loop is reported", || {
        n.healthz().1.contains("ran past its deadline")
    });
    n.eventually(
        "still serving",
        "client",
        "tcp",
        "10.96.0.111:80",
        is(&["a", "b"]),
    );
    n.eventually(
        "the other Service too",
        "client",
        "tcp",
        "10.96.0.110:80",
        is(&["a"]),
    );

    // Fixed: a config that works.
    n.write(
        "bad.yaml",
        &svc(
            "bad",
            "10.96.0.111",
            "wasp.dev/balancer: weighted, wasp.dev/balancer-config: \"10.244.15.2=0\"",
            &both,
        ),
    );
    wait_until("the port leaves the fallback", || {
        n.metric("wasp_plugin_ports_on_fallback") == Some(0.0)
    });
    n.eventually(
        "the fixed port follows its plugin",
        "client",
        "tcp",
        "10.96.0.111:80",
        is(&["b"]),
    );
}
