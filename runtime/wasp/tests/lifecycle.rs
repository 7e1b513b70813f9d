//! The daemon's lifecycle on the real kernel, in every mode: the watch follows edits, renames,
//! deletes and corruption; a full resync repairs drift; a restart keeps traffic flowing and
//! reconciles; cleanup removes wasp's rules and nothing else; plan prints what run applies.

mod common;

use std::time::Duration;

use common::{EXE, Node, dropped, is, modes, root_or_skip, wait_until};

const VIP: &str = "10.96.0.70:80";

fn service(eps: &[&str]) -> String {
    let addrs: Vec<String> = eps.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{clusterIP: 10.96.0.70, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: web}}\nsubsets: [{{addresses: [{}], ports: [{{port: 80}}]}}]\n",
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

fn nft_ok(n: &Node, args: &[&str]) {
    let out = n.nft(args);
    assert!(
        out.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the daemon reports `n` config errors.
/// `wasp plan` for the node's config dir with `args`, run in the node's namespace; its output.
fn plan(n: &Node, args: &[&str]) -> String {
    let dir = n.config_dir().display().to_string();
    let mut argv = vec![EXE, "plan", "--config-dir", &dir, "--node-name", "node-a"];
    argv.extend_from_slice(args);
    let out = n.tb.exec_in(&n.tb.node(), &argv).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_errors(n: &Node, want: f64) {
    wait_until(&format!("wasp_config_errors becomes {want}"), || {
        n.metric("wasp_config_errors") == Some(want)
    });
}

#[test]
fn watch_follows_edits_renames_deletes_and_corruption() {
    if !root_or_skip("watch") {
        return;
    }
    for (mode, backend) in modes() {
        watch_case(mode, backend);
    }
}

fn watch_case(mode: &str, backend: &str) {
    let mut n = node("watch", mode, backend);
    n.write("web.yaml", &service(&["10.244.7.2"]));
    n.start();
    n.eventually("initial", "client", "tcp", VIP, is(&["a"]));

    n.write("web.yaml", &service(&["10.244.7.2", "10.244.7.3"]));
    n.eventually("an edit adds b", "client", "tcp", VIP, is(&["a", "b"]));

    // Broken YAML: the whole file keeps its last good objects.
    n.write(
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web\n",
    );
    wait_until("the broken file is reported", || {
        n.healthz().1.contains("not valid YAML")
    });
    n.eventually(
        "corrupt file keeps the last good state",
        "client",
        "tcp",
        VIP,
        is(&["a", "b"]),
    );
    let (code, body) = n.healthz();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("web.yaml: document 0: not valid YAML"),
        "{body}"
    );

    // A bad field: that object keeps its last good version.
    n.write(
        "web.yaml",
        &service(&["10.244.7.3"]).replace(
            "10.96.0.70, ports: [{port: 80}]",
            "10.96.0.70, ports: [{port: 70000}]",
        ),
    );
    wait_until("the bad field is reported", || {
        n.healthz()
            .1
            .contains("Service default/web: spec.ports[0].port: Invalid value: 70000")
    });
    assert_eq!(n.metric("wasp_config_errors"), Some(1.0));
    n.eventually(
        "the endpoints change, the bad Service keeps its port",
        "client",
        "tcp",
        VIP,
        is(&["b"]),
    );

    n.write("web.yaml", &service(&["10.244.7.2", "10.244.7.3"]));
    wait_errors(&n, 0.0);

    // An editor's partial write, then the rest of the file.
    let full = service(&["10.244.7.2"]);
    std::fs::write(n.config_dir().join("web.yaml"), &full[..full.len() / 2]).unwrap();
    std::fs::write(n.config_dir().join("web.yaml"), &full).unwrap();
    n.eventually("a partial write settles", "client", "tcp", VIP, is(&["a"]));
    wait_errors(&n, 0.0);

    // A rename into a subdirectory is not a delete.
    std::fs::create_dir_all(n.config_dir().join("moved")).unwrap();
    std::fs::rename(
        n.config_dir().join("web.yaml"),
        n.config_dir().join("moved/web.yaml"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    n.eventually("renamed", "client", "tcp", VIP, is(&["a"]));

    std::fs::remove_file(n.config_dir().join("moved/web.yaml")).unwrap();
    n.eventually(
        "a deleted file removes its Service",
        "client",
        "tcp",
        VIP,
        dropped,
    );
}

/// Breaks wasp's rules by hand, as an operator or another program might: removes the
/// dispatch (and, in iptables, the hook into it) and adds a rule wasp did not write.
fn break_rules(n: &Node) {
    match n.rules_kind() {
        "nftables" => {
            nft_ok(n, &["flush", "chain", "ip", "wasp", "services"]);
            nft_ok(
                n,
                &["add", "rule", "ip", "wasp", "nat-postrouting", "counter"],
            );
        }
        _ => {
            let out = n.iptables(&with_hook("-D"));
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                n.iptables(&["-t", "nat", "-F", "WASP-SERVICES"])
                    .status
                    .success()
            );
            assert!(
                n.iptables(&["-t", "nat", "-A", "WASP-SERVICES", "-j", "RETURN"])
                    .status
                    .success()
            );
        }
    }
}

/// The iptables hook from PREROUTING into wasp's dispatch chain, for `op` (-C, -D).
fn with_hook(op: &'static str) -> Vec<&'static str> {
    vec![
        "-t",
        "nat",
        op,
        "PREROUTING",
        "-m",
        "comment",
        "--comment",
        "wasp service portals",
        "-j",
        "WASP-SERVICES",
    ]
}

/// Whether the rules are as wasp writes them again.
fn repaired(n: &Node) -> bool {
    let t = n.rules();
    match n.rules_kind() {
        "nftables" => {
            t.contains("ip daddr . meta l4proto . th dport vmap @service-ips")
                && !t.contains("counter")
        }
        _ => {
            n.iptables(&with_hook("-C")).status.success()
                && t.contains("-A WASP-SERVICES -d 10.96.0.70/32")
                && !t.contains("-A WASP-SERVICES -j RETURN")
        }
    }
}

#[test]
fn a_full_resync_repairs_rules_someone_deleted_or_added() {
    if !root_or_skip("resync") {
        return;
    }
    for (mode, backend) in modes() {
        let mut n = node("resync", mode, backend);
        n.write("web.yaml", &service(&["10.244.7.2", "10.244.7.3"]));
        n.start();
        n.eventually("initial", "client", "tcp", VIP, is(&["a", "b"]));
        break_rules(&n);
        assert!(!repaired(&n), "[{mode}/{backend}] the rules are broken");
        wait_until(
            &format!("[{mode}/{backend}] the full resync (2 s) repairs them"),
            || repaired(&n),
        );
        n.eventually(
            "traffic after the repair",
            "client",
            "tcp",
            VIP,
            is(&["a", "b"]),
        );
    }
}

#[test]
fn restart_keeps_traffic_and_reconciles() {
    if !root_or_skip("restart") {
        return;
    }
    for (mode, backend) in modes() {
        let mut n = node("restart", mode, backend);
        n.write("web.yaml", &service(&["10.244.7.2", "10.244.7.3"]));
        n.write("other.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: other}\nspec: {clusterIP: 10.96.0.71, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: other}\nsubsets: [{addresses: [{ip: 10.244.7.3}], ports: [{port: 80}]}]\n");
        n.start();
        n.eventually("initial", "client", "tcp", VIP, is(&["a", "b"]));
        n.stop();
        assert!(n.log().contains("the rules stay in place"), "{}", n.log());
        n.eventually(
            "traffic flows while the daemon is down",
            "client",
            "tcp",
            VIP,
            is(&["a", "b"]),
        );
        let sep_chains = |rules: &str| {
            rules
                .lines()
                .filter(|l| l.starts_with(":WASP-SEP-"))
                .count()
        };
        let before = n.rules();
        assert!(before.contains("default/other"), "[{mode}] {before}");
        if mode == "iptables" {
            assert_eq!(sep_chains(&before), 3);
        }
        std::fs::remove_file(n.config_dir().join("other.yaml")).unwrap();
        n.start();
        let after = n.rules();
        assert!(
            !after.contains("default/other"),
            "[{mode}] the stale service is removed:\n{after}"
        );
        if mode == "iptables" {
            assert_eq!(
                sep_chains(&after),
                2,
                "the stale chain of `other` is removed:\n{after}"
            );
        }
        n.eventually("after the restart", "client", "tcp", VIP, is(&["a", "b"]));
        n.stop();
    }
}

/// Somebody else's rules, in the place the mode works in: a table of its own for nftables
/// (and an iptables-nft chain), a chain with a hook for iptables.
fn add_foreign(n: &Node) {
    match n.rules_kind() {
        "nftables" => {
            nft_ok(n, &["add", "table", "ip", "foreign"]);
            nft_ok(
                n,
                &[
                    "add",
                    "chain",
                    "ip",
                    "foreign",
                    "pre",
                    "{ type nat hook prerouting priority 0; }",
                ],
            );
            let out =
                n.tb.exec_in(
                    &n.tb.node(),
                    &["iptables-nft", "-t", "nat", "-N", "FOREIGN"],
                )
                .unwrap();
            assert!(out.status.success());
        }
        _ => {
            assert!(n.iptables(&["-t", "nat", "-N", "FOREIGN"]).status.success());
            assert!(
                n.iptables(&["-t", "nat", "-A", "PREROUTING", "-j", "FOREIGN"])
                    .status
                    .success()
            );
        }
    }
}

/// wasp's rules are gone and the foreign ones are intact.
fn only_foreign_left(n: &Node) {
    match n.rules_kind() {
        "nftables" => {
            let tables = String::from_utf8_lossy(&n.nft(&["list", "tables"]).stdout).into_owned();
            assert!(
                !tables.contains("wasp") && tables.contains("table ip foreign"),
                "{tables}"
            );
            let out =
                n.tb.exec_in(&n.tb.node(), &["iptables-nft", "-t", "nat", "-S"])
                    .unwrap();
            let save = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(save.contains("-N FOREIGN"), "{save}");
        }
        _ => {
            let save = n.iptables_save();
            assert!(!save.contains("WASP"), "{save}");
            assert!(
                save.contains(":FOREIGN") && save.contains("-A PREROUTING -j FOREIGN"),
                "{save}"
            );
        }
    }
}

#[test]
fn cleanup_removes_wasp_rules_and_nothing_else() {
    if !root_or_skip("cleanup") {
        return;
    }
    for (mode, backend) in modes() {
        let mut n = node("cleanup", mode, backend);
        add_foreign(&n);
        n.write("web.yaml", &service(&["10.244.7.2"]));
        n.start();
        n.stop();
        let out =
            n.tb.exec_in(
                &n.tb.node(),
                &[
                    EXE,
                    "cleanup",
                    "--mode",
                    mode,
                    "--iptables-backend",
                    backend,
                ],
            )
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        only_foreign_left(&n);
        n.eventually("no service rules remain", "client", "tcp", VIP, dropped);
    }
}

#[test]
fn healthz_and_metrics() {
    if !root_or_skip("healthz") {
        return;
    }
    let mut n = node("health", "iptables", "nft");
    n.write("web.yaml", &service(&["10.244.7.2", "10.244.7.3"]));
    n.start();
    let (code, body) = n.healthz();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"healthy\":true"), "{body}");
    assert_eq!(n.metric("wasp_programmed_service_ports"), Some(1.0));
    assert_eq!(n.metric("wasp_programmed_endpoints"), Some(2.0));
    assert_eq!(n.metric("wasp_sync_proxy_rules_failures_total"), Some(0.0));
    assert!(
        n.metric("wasp_sync_proxy_rules_duration_seconds_count")
            .is_some_and(|c| c >= 1.0)
    );
}

#[test]
fn config_file_conntrack_settings_reach_the_kernel() {
    if !root_or_skip("conntrack") {
        return;
    }
    let mut n = node("conntrack", "iptables", "nft");
    n.write("web.yaml", &service(&["10.244.7.2"]));
    let cfg = n.dir.path().join("wasp.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\nconntrack:\n  maxPerCore: 65536\n  min: 131072\n  tcpEstablishedTimeout: 1h0m0s\n  udpTimeout: 33s\nipvs: {scheduler: rr}\n",
    )
    .unwrap();
    n.extra_args = vec!["--config".into(), cfg.display().to_string()];
    n.start();
    let read = |name: &str| {
        let out =
            n.tb.exec_in(
                &n.tb.node(),
                &["cat", &format!("/proc/sys/net/netfilter/{name}")],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(read("nf_conntrack_udp_timeout"), "33");
    assert_eq!(read("nf_conntrack_tcp_timeout_established"), "3600");
    // nf_conntrack_max is global: outside the initial namespace the kernel refuses, and wasp
    // says so and goes on.
    assert!(
        n.log().contains("cannot set nf_conntrack_max"),
        "{}",
        n.log()
    );
    assert!(
        n.log()
            .contains("fields that do not apply to wasp are ignored"),
        "{}",
        n.log()
    );
    n.eventually(
        "serving with the config file",
        "client",
        "tcp",
        VIP,
        is(&["a"]),
    );
}

/// The plan's rules equal the kernel's once the daemon ran: nftables loads the plan with the
/// nft tool and compares `nft list` of both; iptables compares rules as word sets (save
/// orders match options its own way).
fn assert_plan_applied(n: &mut Node, plan: &str) {
    if n.rules_kind() != "iptables" {
        let path = n.dir.path().join("plan.nft");
        std::fs::write(&path, plan).unwrap();
        nft_ok(n, &["-f", &path.display().to_string()]);
        let planned = n.rules();
        n.start();
        let applied = n.rules();
        assert!(applied.contains("10.96.0.70 . tcp . 80"), "{applied}");
        assert_eq!(planned, applied);
        return;
    }
    n.start();
    // Both families: the plan prints the ip6tables input too.
    let save = n.iptables_save() + &n.ip6tables_save();
    let norm = |l: &str| {
        let mut w: Vec<String> = l
            .replace('"', "")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        w.sort();
        w.join(" ")
    };
    let planned: std::collections::BTreeSet<String> = plan
        .lines()
        .filter(|l| l.starts_with("-A ") && l.contains("WASP"))
        .map(|l| norm(&l.replace("0.5000000000", "0.50000000000")))
        .collect();
    let applied: std::collections::BTreeSet<String> = save
        .lines()
        .filter(|l| l.starts_with("-A WASP"))
        .map(|l| norm(&l.replace(" --mask 255.255.255.255 --rsource", "")))
        .collect();
    let only_plan: Vec<&String> = planned.difference(&applied).collect();
    let only_kernel: Vec<&String> = applied.difference(&planned).collect();
    assert!(
        only_plan.is_empty() && only_kernel.is_empty(),
        "only planned: {only_plan:#?}\nonly in the kernel: {only_kernel:#?}"
    );
}

#[test]
fn plan_prints_exactly_what_run_applies() {
    if !root_or_skip("plan") {
        return;
    }
    for (mode, backend) in modes() {
        let mut n = node("plan", mode, backend);
        n.write("web.yaml", &service(&["10.244.7.2", "10.244.7.3"]));
        let mut args = vec![
            "--mode",
            mode,
            "--iptables-backend",
            backend,
            "--cluster-cidr",
            "10.244.0.0/16",
            "--cluster-cidr",
            "fd00:244::/64",
            "--service-cidr",
            "10.96.0.0/12",
            "--service-cidr",
            "fd00:96::/108",
        ];
        if mode == "userspace" && n.rules_kind() == "iptables" {
            args.extend(["--userspace-rules", "iptables"]);
        }
        let plan = plan(&n, &args);
        let header = if n.rules_kind() != "iptables" {
            "# nft -f -\n"
        } else {
            "# iptables-restore --noflush\n"
        };
        assert!(plan.starts_with(header), "[{mode}]\n{plan}");
        assert!(
            n.rules()
                .lines()
                .all(|l| !l.contains("WASP") && !l.contains("table ip wasp")),
            "plan changed nothing"
        );
        assert_plan_applied(&mut n, &plan);
    }
}

#[test]
fn switching_modes_removes_the_other_modes_rules() {
    if !root_or_skip("switch") {
        return;
    }
    let mut n = node("switch", "iptables", "nft");
    n.write("web.yaml", &service(&["10.244.7.2", "10.244.7.3"]));
    n.start();
    n.eventually("iptables mode", "client", "tcp", VIP, is(&["a", "b"]));
    n.stop();
    assert!(n.iptables_save().contains(":WASP-SERVICES"));

    n.mode = "nftables".into();
    n.start(); // asserts the rules are in nftables only
    assert!(
        n.log()
            .contains("removed the iptables mode's WASP- chains (iptables-nft)"),
        "{}",
        n.log()
    );
    n.eventually("nftables mode", "client", "tcp", VIP, is(&["a", "b"]));
    n.stop();

    n.mode = "iptables".into();
    n.start();
    assert!(
        n.log().contains("removed the nftables mode's tables"),
        "{}",
        n.log()
    );
    n.eventually("iptables mode again", "client", "tcp", VIP, is(&["a", "b"]));
    n.stop();
}
