//! What wasp promises on bad input and hostile conditions, checked on the running daemon
//! (docs/reliability.md names each promise and its test): a contested cluster IP stays with
//! its holder; a busy directory does not hold back a change; hostile names give valid JSON
//! and unforgeable logs; a port in use is named before the kernel is touched; and a
//! `kill -9` at any point of a sync converges to exactly a fresh start's rules.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{EXE, Node, is, root_or_skip, wait_until};

fn service(name: &str, vip: &str, eps: &[&str]) -> String {
    let addrs: Vec<String> = eps.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: {vip}, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}}}\nsubsets: [{{addresses: [{}], ports: [{{port: 80}}]}}]\n",
        addrs.join(", ")
    )
}

fn node(tag: &str, mode: &str, backend: &str) -> Node {
    let mut n = Node::new(tag, mode, backend);
    n.pod("a", "10.244.7.2", &[80], &[]);
    n.pod("b", "10.244.7.3", &[80], &[]);
    n.tb.add_pod("client", "10.244.2.10").unwrap();
    n
}

#[test]
fn a_new_service_never_takes_a_running_services_cluster_ip() {
    if !root_or_skip("contested-ip") {
        return;
    }
    for (mode, backend) in [("nftables", "auto"), ("iptables", "legacy")] {
        let mut n = node("contested", mode, backend);
        n.write("zeta.yaml", &service("zeta", "10.96.0.50", &["10.244.7.2"]));
        n.start();
        n.eventually("zeta", "client", "tcp", "10.96.0.50:80", is(&["a"]));
        // alpha sorts first by name, and arrives second.
        std::thread::sleep(Duration::from_millis(20));
        n.write(
            "alpha.yaml",
            &service("alpha", "10.96.0.50", &["10.244.7.3"]),
        );
        wait_until("the newcomer is refused", || {
            n.healthz()
                .1
                .contains("Service default/alpha: spec.clusterIP: Invalid value: \\\"10.96.0.50\\\": provided IP is already allocated (to Service default/zeta)")
        });
        n.eventually(
            "zeta keeps it",
            "client",
            "tcp",
            "10.96.0.50:80",
            is(&["a"]),
        );
        // Across a restart: zeta's file is the older.
        n.stop();
        n.start();
        n.eventually(
            "zeta keeps it after a restart",
            "client",
            "tcp",
            "10.96.0.50:80",
            is(&["a"]),
        );
        assert!(
            n.healthz().1.contains("(to Service default/zeta)"),
            "[{mode}]"
        );
    }
}

#[test]
fn steady_writes_elsewhere_do_not_hold_back_a_change() {
    if !root_or_skip("steady-writes") {
        return;
    }
    let mut n = node("steady", "nftables", "auto");
    n.write("web.yaml", &service("web", "10.96.0.70", &["10.244.7.2"]));
    n.start();
    n.eventually("initial", "client", "tcp", "10.96.0.70:80", is(&["a"]));
    // A file rewritten every 50 ms for as long as the test runs (a log, a metrics dump).
    let stop = Arc::new(AtomicBool::new(false));
    let (dir, s) = (n.config_dir(), stop.clone());
    let writer = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut i = 0u64;
        while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
            let _ = std::fs::write(dir.join("busy.yaml"), format!("# write {i}\n"));
            let _ = std::fs::write(dir.join("notes.txt"), format!("{i}\n"));
            i += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    n.write("new.yaml", &service("new", "10.96.0.71", &["10.244.7.3"]));
    n.eventually(
        "the new Service is applied while the writer runs",
        "client",
        "tcp",
        "10.96.0.71:80",
        is(&["b"]),
    );
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
}

#[test]
fn hostile_file_names_give_valid_healthz_json_and_unforgeable_logs() {
    if !root_or_skip("hostile-names") {
        return;
    }
    for format in ["text", "json"] {
        let mut n = node("hostile", "nftables", "auto");
        n.extra_args = vec!["--logging-format".into(), format.into()];
        n.write("web.yaml", &service("web", "10.96.0.72", &["10.244.7.2"]));
        // A file name with a newline, NUL-free control characters and bidi overrides, and a
        // broken body, so that the name reaches both the log and /healthz.
        let evil = "evil\nERROR forged line\u{1}\u{1b}[31m\u{202e}\u{feff}\u{a0}.yaml";
        std::fs::write(n.config_dir().join(evil), "apiVersion: v1\nkind: [\n").unwrap();
        n.start();
        wait_until("the broken file is reported", || {
            n.metric("wasp_config_errors") == Some(1.0)
        });
        let (code, body) = n.healthz();
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect(&body);
        assert!(
            v["detail"][0]
                .as_str()
                .unwrap()
                .contains("evil\nERROR forged"),
            "{body}"
        );
        let log = n.log();
        assert!(
            !log.contains('\u{1b}'),
            "[{format}] no colour, no raw escapes: {log}"
        );
        for line in log.lines() {
            assert!(
                !line.starts_with("ERROR forged"),
                "[{format}] forged: {log}"
            );
            match format {
                "json" => {
                    serde_json::from_str::<serde_json::Value>(line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                }
                _ => assert!(
                    line.len() > 20 && line.as_bytes()[4] == b'-' && line.contains('T'),
                    "[{format}] every line is an event of its own: {line:?}"
                ),
            }
        }
        assert!(log.contains("evil"), "{log}");
        n.stop();
    }
}

#[test]
fn a_port_in_use_is_named_and_the_kernel_is_left_alone() {
    if !root_or_skip("port-in-use") {
        return;
    }
    let mut n = node("portinuse", "nftables", "auto");
    n.write("web.yaml", &service("web", "10.96.0.73", &["10.244.7.2"]));
    let node_ns = n.tb.node();
    // Something (kube-proxy, say) already listens on the /healthz port.
    n.tb.spawn_in(
        &node_ns,
        &[EXE, "serve", "--name", "kube-proxy", "--tcp", "10256"],
        true,
    )
    .unwrap();
    wait_until("the squatter listens", || {
        let out =
            n.tb.exec_in(&node_ns, &["ss", "-ltnH", "sport = :10256"])
                .unwrap();
        !out.stdout.is_empty()
    });
    let dir = n.config_dir().display().to_string();
    for extra in [&[][..], &["--service-proxy-name", "wasp"][..]] {
        let mut args = vec![EXE, "run", "--config-dir", &dir];
        args.extend_from_slice(extra);
        let out = n.tb.exec_in(&node_ns, &args).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("cannot listen on 0.0.0.0:10256 (--healthz-bind-address, healthzBindAddress): Address already in use"),
            "{err}"
        );
        assert_eq!(
            err.contains("beside kube-proxy"),
            !extra.is_empty(),
            "the hint is given beside kube-proxy: {err}"
        );
        let tables = String::from_utf8_lossy(&n.nft(&["list", "tables"]).stdout).into_owned();
        assert!(!tables.contains("wasp"), "nothing was programmed: {tables}");
    }
}

/// Rules as the kernel tools print them, without traffic counters and timestamps.
fn rules(n: &Node) -> String {
    let text = n.rules();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.find(" [") {
            Some(i) if l.starts_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Many Services in one file, with endpoints chosen by `round`, so a sync takes a while.
fn many(count: usize, round: usize) -> String {
    (0..count)
        .map(|i| {
            let ep = if (i + round).is_multiple_of(2) {
                "10.244.7.2"
            } else {
                "10.244.7.3"
            };
            service(
                &format!("s{i}"),
                &format!("10.96.{}.{}", 10 + i / 200, 1 + i % 200),
                &[ep],
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn kill_9_at_any_point_of_a_sync_converges_to_a_fresh_starts_rules() {
    if !root_or_skip("kill-9") {
        return;
    }
    for (mode, backend, count) in [("nftables", "auto", 2000), ("iptables", "legacy", 400)] {
        // What a fresh start programs for the final config.
        let mut fresh = node("k9fresh", mode, backend);
        fresh.write("many.yaml", &many(count, 9));
        fresh.start();
        let want = rules(&fresh);
        fresh.stop();
        drop(fresh);

        let mut n = node("k9", mode, backend);
        // Deterministic "random" kill points, spread over the first and partial syncs.
        let delays = [35u64, 80, 140, 260, 420, 15];
        for (round, ms) in delays.iter().enumerate() {
            n.write("many.yaml", &many(count, round));
            n.spawn();
            if round > 0 {
                // Let it finish its first sync, then change everything and kill mid-partial.
                n.wait_synced();
                n.write("many.yaml", &many(count, round + 1));
            }
            std::thread::sleep(Duration::from_millis(*ms));
            n.kill_9();
        }
        n.write("many.yaml", &many(count, 9));
        n.start();
        let got = rules(&n);
        let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
        let only_got: Vec<&&str> = g.iter().filter(|l| !w.contains(l)).take(10).collect();
        let only_want: Vec<&&str> = w.iter().filter(|l| !g.contains(l)).take(10).collect();
        assert!(
            got == want,
            "[{mode}] after kill -9 and a restart: extra {only_got:#?}, missing {only_want:#?}"
        );
        n.eventually(
            &format!("[{mode}] traffic after the restart"),
            "client",
            "tcp",
            "10.96.10.1:80",
            is(&["b"]),
        );
        n.stop();
    }
}
