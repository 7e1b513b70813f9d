//! What only the userspace mode does, on the real kernel: retries past endpoints that refuse
//! or black-hole connections, per-connection plugin picks with live counts, drain on removal,
//! half-close, the kernel taking over when the daemon stops, and the capture on a kernel
//! without nftables. Clients and servers are real programs in the namespaces (`wasp
//! probe`/`serve`, and small Python ones where a test needs to hold a connection).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Node, answered_by, is, root_or_skip, wait_until};

/// A selectorless Service `web` at 10.96.0.60:80 over `ips` (port 80), with `annotations`.
fn service(annotations: &str, ips: &[&str]) -> String {
    let addrs: Vec<String> = ips.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, annotations: {{{annotations}}}}}\nspec: {{clusterIP: 10.96.0.60, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: web}}\nsubsets: [{{addresses: [{}], ports: [{{port: 80}}]}}]\n",
        addrs.join(", ")
    )
}

const VIP: &str = "10.96.0.60:80";

fn userspace(tag: &str, extra: &[&str]) -> Node {
    let mut n = Node::new(tag, "userspace", "auto");
    n.extra_args = extra.iter().map(|s| s.to_string()).collect();
    n.tb.add_pod("client", "10.244.2.10").unwrap();
    n
}

/// Runs a Python program in namespace `ns` in the background; it is killed with the node.
fn python_in(n: &mut Node, ns: &str, program: &str) {
    n.tb.spawn_in(ns, &["python3", "-c", program], false)
        .expect("start python");
}

/// Runs a Python program in namespace `ns` to its end (at most `secs`); returns its stdout.
fn python_run(ns: &str, program: &str, secs: u64) -> String {
    let out = Command::new("timeout")
        .args([
            &secs.to_string(),
            "ip",
            "netns",
            "exec",
            ns,
            "python3",
            "-c",
            program,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server on port 80 that answers each line with `NAME LINE`.
fn line_echo(name: &str) -> String {
    format!(
        r#"
import socket, threading
def serve(c):
    f = c.makefile("rwb", buffering=0)
    for line in f:
        f.write(b"{name} " + line)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(128)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#
    )
}

#[test]
fn refused_and_black_holed_endpoints_cost_no_request() {
    if !root_or_skip("userspace retries") {
        return;
    }
    let mut n = userspace("retry", &["--userspace-connect-timeout", "300ms"]);
    n.pod("live", "10.244.40.2", &[80], &[]);
    // Nothing listens: the kernel answers SYNs with a reset.
    n.tb.add_pod("refuser", "10.244.40.3").unwrap();
    // SYNs vanish: the connect times out.
    n.tb.add_pod("hole", "10.244.40.4").unwrap();
    let hole = n.tb.pod_ns("hole");
    for args in [
        &["nft", "add", "table", "ip", "hole"][..],
        &[
            "nft",
            "add chain ip hole in { type filter hook input priority 0; policy drop; }",
        ][..],
    ] {
        let out = n.tb.exec_in(&hole, args).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    n.write(
        "web.yaml",
        &service("", &["10.244.40.2", "10.244.40.3", "10.244.40.4"]),
    );
    n.start();
    let outs = n.probe("client", "tcp", VIP, 40, "3s");
    assert_eq!(
        answered_by(&outs),
        ["live"],
        "every request answered: {outs:?}"
    );
    let failures = n
        .metric("wasp_userspace_connect_failures_total")
        .unwrap_or(0.0);
    assert!(
        failures >= 2.0,
        "both bad endpoints failed at least once: {failures}"
    );
    let proxied = n.metric("wasp_userspace_connections_total").unwrap_or(0.0);
    assert!(proxied >= 40.0, "the proxy carried the requests: {proxied}");
    let log = n.log();
    assert!(
        log.contains("10.244.40.3:80") && log.contains("10.244.40.4:80"),
        "{log}"
    );
    assert!(log.contains("connect failed"), "{log}");
}

#[test]
fn least_connections_picks_each_connection_from_live_counts() {
    if !root_or_skip("userspace least-connections") {
        return;
    }
    let mut n = userspace("leastconn", &[]);
    for (name, ip) in [("a", "10.244.41.2"), ("b", "10.244.41.3")] {
        n.tb.add_pod(name, ip).unwrap();
        let ns = n.tb.pod_ns(name);
        python_in(&mut n, &ns, &line_echo(name));
    }
    n.write(
        "web.yaml",
        &service(
            "wasp.dev/balancer: least-connections",
            &["10.244.41.2", "10.244.41.3"],
        ),
    );
    n.start();
    // Twenty connections held open one after the other: each goes where fewer are open.
    let client = r#"
import socket
held = []
for i in range(20):
    c = socket.create_connection(("10.96.0.60", 80), timeout=3)
    c.sendall(b"hi\n")
    print(c.recv(100).decode().split()[0], flush=True)
    held.append(c)
"#;
    let client_ns = n.tb.pod_ns("client");
    let picks: Vec<String> = python_run(&client_ns, client, 20)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(picks.len(), 20, "{picks:?}\n{}", n.log());
    let mut open = [0i32; 2];
    for p in &picks {
        open[usize::from(p == "b")] += 1;
        assert!(
            (open[0] - open[1]).abs() <= 1,
            "after each connection the counts differ by at most one: {picks:?}"
        );
    }
}

#[test]
fn a_removed_endpoint_drains_then_closes() {
    if !root_or_skip("userspace drain") {
        return;
    }
    let mut n = userspace("drain", &["--userspace-drain-timeout", "3s"]);
    n.tb.add_pod("old", "10.244.42.2").unwrap();
    let old = n.tb.pod_ns("old");
    python_in(&mut n, &old, &line_echo("old"));
    n.pod("new", "10.244.42.3", &[80], &[]);
    n.write("web.yaml", &service("", &["10.244.42.2"]));
    n.start();
    // One connection: a line now, one after the endpoint is gone (t=1.5 s: it drains), one
    // after the drain timeout (t=7 s: closed).
    let client = r#"
import socket, time
c = socket.create_connection(("10.96.0.60", 80), timeout=3)
start = time.time()
for at, line in [(0, b"one\n"), (1.5, b"two\n"), (7, b"three\n")]:
    time.sleep(max(0, at - (time.time() - start)))
    try:
        c.sendall(line)
        got = c.recv(100).decode().strip()
        print(got if got else "closed", flush=True)
    except OSError as e:
        print("closed", flush=True)
"#;
    let client_ns = n.tb.pod_ns("client");
    let child = Command::new("ip")
        .args(["netns", "exec", &client_ns, "python3", "-c", client])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("start client");
    std::thread::sleep(Duration::from_millis(500));
    n.write("web.yaml", &service("", &["10.244.42.3"]));
    n.eventually(
        "new connections go to the new endpoint",
        "client",
        "tcp",
        VIP,
        is(&["new"]),
    );
    let out = child.wait_with_output().expect("client ends");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines, ["old one", "old two", "closed"], "{}", n.log());
    // The close came from the drain timeout: the old endpoint's server never closes.
}

#[test]
fn half_close_keeps_the_other_direction_open() {
    if !root_or_skip("userspace half-close") {
        return;
    }
    let mut n = userspace("halfclose", &[]);
    n.tb.add_pod("counter", "10.244.43.2").unwrap();
    let ns = n.tb.pod_ns("counter");
    // Reads to end of stream, then answers with what it counted.
    let server = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(16)
while True:
    c, _ = s.accept()
    total = 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        total += len(b)
    c.sendall(b"got %d" % total)
    c.close()
"#;
    python_in(&mut n, &ns, server);
    n.write("web.yaml", &service("", &["10.244.43.2"]));
    n.start();
    let client = r#"
import socket
c = socket.create_connection(("10.96.0.60", 80), timeout=5)
c.sendall(b"x" * 1000000)
c.shutdown(socket.SHUT_WR)
reply = b""
while True:
    b = c.recv(100)
    if not b:
        break
    reply += b
print(reply.decode())
"#;
    let client_ns = n.tb.pod_ns("client");
    let reply = python_run(&client_ns, client, 10);
    assert_eq!(reply.trim(), "got 1000000", "{}", n.log());
}

#[test]
fn the_kernel_takes_over_while_the_daemon_is_stopped() {
    if !root_or_skip("userspace takeover") {
        return;
    }
    let mut n = userspace("takeover", &[]);
    n.pod("a", "10.244.44.2", &[80], &[]);
    n.pod("b", "10.244.44.3", &[80], &[]);
    n.write("web.yaml", &service("", &["10.244.44.2", "10.244.44.3"]));
    n.start();
    assert!(n.rules().contains("redirect to :15001"), "{}", n.rules());
    n.eventually("through the proxy", "client", "tcp", VIP, is(&["a", "b"]));
    n.stop();
    let rules = n.rules();
    assert!(
        !rules.contains("redirect") && rules.contains("dnat ip to"),
        "the redirects gave way to DNAT: {rules}"
    );
    n.eventually("through the kernel", "client", "tcp", VIP, is(&["a", "b"]));
    n.start();
    assert!(n.rules().contains("redirect to :15001"), "{}", n.rules());
    n.eventually(
        "through the proxy again",
        "client",
        "tcp",
        VIP,
        is(&["a", "b"]),
    );
}

#[test]
fn udp_sessions_answer_from_the_service_address_and_expire() {
    if !root_or_skip("userspace udp") {
        return;
    }
    let mut n = userspace("udp", &["--userspace-udp-idle-timeout", "1s"]);
    n.pod("a", "10.244.45.2", &[], &[53]);
    n.pod("b", "10.244.45.3", &[], &[53]);
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec: {clusterIP: 10.96.0.61, ports: [{port: 53, protocol: UDP}]}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: dns}\nsubsets: [{addresses: [{ip: 10.244.45.2}, {ip: 10.244.45.3}], ports: [{port: 53, protocol: UDP}]}]\n";
    n.write("dns.yaml", svc);
    n.start();
    assert!(
        n.rules().contains("meta l4proto udp redirect to :15001"),
        "{}",
        n.rules()
    );
    // The client's socket is connected to the Service's address: a reply from anywhere else
    // would not reach it.
    let outs = n.probe("client", "udp", "10.96.0.61:53", 20, "2s");
    assert_eq!(answered_by(&outs), ["a", "b"], "{outs:?}");
    let sessions = n.metric("wasp_userspace_connections_total").unwrap_or(0.0);
    assert!(
        sessions >= 20.0,
        "one session per client socket: {sessions}"
    );
    wait_until("idle sessions end", || {
        n.metric("wasp_userspace_active_connections") == Some(0.0)
    });
}

#[test]
fn without_nftables_the_capture_is_iptables() {
    if !root_or_skip("userspace without nftables") {
        return;
    }
    let mut n = userspace("nonft", &[]);
    // A seccomp filter refuses nfnetlink sockets, as a kernel without nftables does.
    let wrapper = format!(
        "python3 {}/tests/fixtures/without-nftables.py",
        env!("CARGO_MANIFEST_DIR")
    );
    n.wrapper = wrapper.clone();
    n.pod("a", "10.244.45.2", &[80], &[]);
    n.pod("b", "10.244.45.3", &[80], &[]);
    n.write("web.yaml", &service("", &["10.244.45.2", "10.244.45.3"]));
    n.spawn();
    n.wait_synced();
    n.eventually("through the proxy", "client", "tcp", VIP, is(&["a", "b"]));
    let log = n.log();
    assert!(log.contains("capturing with iptables"), "{log}");
    let save = n.save("iptables-legacy-save");
    assert!(
        save.contains("-j REDIRECT --to-ports 15001") && save.contains("-A WASP-PROXY-REPLIES"),
        "the capture is iptables-legacy's: {save}"
    );
    let table = n.nft(&["list", "table", "ip", "wasp"]);
    assert!(!table.status.success(), "and nothing is in nftables");
    let proxied = n.metric("wasp_userspace_connections_total").unwrap_or(0.0);
    assert!(proxied >= 8.0, "the proxy carried the requests: {proxied}");

    n.stop();
    let save = n.save("iptables-legacy-save");
    assert!(
        !save.contains("REDIRECT") && save.contains("-j DNAT --to-destination 10.244.45.2:80"),
        "the redirects gave way to DNAT: {save}"
    );
    n.eventually("through the kernel", "client", "tcp", VIP, is(&["a", "b"]));

    let cleanup = format!("{wrapper} {} cleanup --mode userspace", common::EXE);
    let out = n.tb.exec_in(&n.tb.node(), &["sh", "-c", &cleanup]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let save = n.save("iptables-legacy-save");
    assert!(
        !save.contains("WASP"),
        "cleanup removed the capture: {save}"
    );
}
