//! Behaviour cases on the real kernel, written as data (`tests/cases/*.yaml`) so that every
//! mode runs the same cases: a config, the pods and clients, and probes with the expected
//! outcome (which backends answered and from which peer address, or rejected, or dropped).

mod common;

use std::collections::BTreeSet;

use common::{Node, answered_by, modes, root_or_skip};
use serde::Deserialize;
use wasp::echo::Outcome;
use wasp::testbed::{NODE_LINK_IP, NODE_LINK_IP6};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    #[serde(default)]
    pods: Vec<Pod>,
    #[serde(default)]
    clients: Vec<Client>,
    config: String,
    probes: Vec<Probe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pod {
    name: String,
    ip: String,
    #[serde(default)]
    ip6: Option<String>,
    #[serde(default)]
    tcp: Vec<u16>,
    #[serde(default)]
    udp: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Client {
    name: String,
    ip: String,
    #[serde(default)]
    ip6: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Probe {
    from: String,
    to: String,
    #[serde(default = "tcp")]
    proto: String,
    #[serde(default = "one")]
    count: u32,
    expect: Expect,
    /// Only in these modes (every mode when empty): where kube-proxy's modes differ.
    #[serde(default)]
    modes: Vec<String>,
}

fn tcp() -> String {
    "tcp".into()
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Expect {
    /// Every probe answered, by exactly this set of backends (each at least once).
    Backends(Vec<String>),
    /// Every probe answered by one backend of this set, always the same one.
    SameBackendOf(Vec<String>),
    /// Every probe answered by these backends, which saw the node's address (masquerade).
    Masqueraded(Vec<String>),
    /// Every probe answered by these backends, which saw the client's own address.
    Unmasqueraded(Vec<String>),
    /// Every probe refused (REJECT).
    Rejected,
    /// Every probe unanswered (DROP, or nothing there).
    Dropped,
}

fn check(case_name: &str, case: &Case, node: &Node, p: &Probe, client_ips: &[(String, String)]) {
    let timeout = if matches!(p.expect, Expect::Dropped) {
        "500ms"
    } else {
        "2s"
    };
    let outs = node.probe(&p.from, &p.proto, &p.to, p.count, timeout);
    let what = format!(
        "{case_name} ({}): {} {} from {} -> {:?}",
        case.description, p.proto, p.to, p.from, p.expect
    );
    assert_eq!(
        outs.len(),
        p.count as usize,
        "{what}: probe printed {outs:?}"
    );
    let all_answered = outs.iter().all(|o| matches!(o, Outcome::Answered { .. }));
    let peers: BTreeSet<&str> = outs
        .iter()
        .filter_map(|o| match o {
            Outcome::Answered { peer, .. } => Some(peer.as_str()),
            _ => None,
        })
        .collect();
    let got = answered_by(&outs);
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    match &p.expect {
        Expect::Backends(want) => {
            assert!(
                all_answered && set(want) == got.iter().cloned().collect(),
                "{what}: got {outs:?}"
            );
        }
        Expect::SameBackendOf(want) => {
            assert!(
                all_answered && got.len() == 1 && want.contains(&got[0]),
                "{what}: got {outs:?}"
            );
        }
        Expect::Masqueraded(want) | Expect::Unmasqueraded(want) => {
            assert!(
                all_answered && set(want) == got.iter().cloned().collect(),
                "{what}: got {outs:?}"
            );
            // The client's own address of the probed family, or the node's link address.
            let v6 = p.to.starts_with('[');
            let own = client_ips
                .iter()
                .find(|(n, ip)| n == &p.from && ip.contains(':') == v6)
                .map(|(_, ip)| ip.as_str());
            let node = if v6 { NODE_LINK_IP6 } else { NODE_LINK_IP };
            let want_peer = if matches!(p.expect, Expect::Masqueraded(_)) {
                Some(node)
            } else {
                own
            };
            assert_eq!(
                peers,
                want_peer.into_iter().collect(),
                "{what}: backends saw {peers:?}"
            );
        }
        Expect::Rejected => assert!(
            outs.iter().all(|o| o == &Outcome::Refused),
            "{what}: got {outs:?}"
        ),
        Expect::Dropped => assert!(
            outs.iter().all(|o| o == &Outcome::Timeout),
            "{what}: got {outs:?}"
        ),
    }
}

fn run_case(file: &str) {
    if !root_or_skip(file) {
        return;
    }
    let path = format!("{}/tests/cases/{file}.yaml", env!("CARGO_MANIFEST_DIR"));
    let case: Case = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (mode, backend) in modes() {
        let mut node = Node::new(file, mode, backend);
        let mut ips: Vec<(String, String)> = Vec::new();
        for p in &case.pods {
            node.pod(&p.name, &p.ip, &p.tcp, &p.udp);
            ips.push((p.name.clone(), p.ip.clone()));
            if let Some(ip6) = &p.ip6 {
                node.tb.add_ipv6(&p.name, ip6).unwrap();
                ips.push((p.name.clone(), ip6.clone()));
            }
        }
        for c in &case.clients {
            node.tb.add_pod(&c.name, &c.ip).unwrap();
            ips.push((c.name.clone(), c.ip.clone()));
            if let Some(ip6) = &c.ip6 {
                node.tb.add_ipv6(&c.name, ip6).unwrap();
                ips.push((c.name.clone(), ip6.clone()));
            }
        }
        node.write("config.yaml", &case.config);
        node.start();
        for p in case
            .probes
            .iter()
            .filter(|p| p.modes.is_empty() || p.modes.iter().any(|m| m == mode))
        {
            check(&format!("{file} [{mode}/{backend}]"), &case, &node, p, &ips);
        }
    }
}

#[test]
fn article() {
    run_case("article");
}

#[test]
fn selectorless_tcp_and_udp() {
    run_case("selectorless-tcp-udp");
}

#[test]
fn no_endpoints() {
    run_case("no-endpoints");
}

#[test]
fn endpoint_slices() {
    run_case("endpoint-slices");
}

#[test]
fn dual_stack() {
    run_case("dual-stack");
}

#[test]
fn session_affinity() {
    run_case("session-affinity");
}

#[test]
fn node_ports() {
    run_case("node-ports");
}

#[test]
fn external_traffic_policy_local() {
    run_case("external-traffic-policy-local");
}

#[test]
fn load_balancer() {
    run_case("load-balancer");
}

#[test]
fn external_ips() {
    run_case("external-ips");
}
