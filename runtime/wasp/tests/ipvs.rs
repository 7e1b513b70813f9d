//! The ipvs mode on a real IPVS kernel: per-Service schedulers changed in place, other
//! programs' virtual servers left alone, `wasp plan` and `wasp cleanup`. This host's kernel
//! has no IPVS: `scripts/vm-test` runs these inside a VM (`WASP_IPVS_VM=1`), with the
//! behaviour cases in ipvs mode.

mod common;

use std::time::{Duration, Instant};

use common::{EXE, Node, is};

fn in_vm(test: &str) -> bool {
    if std::env::var("WASP_IPVS_VM").as_deref() == Ok("1") {
        return true;
    }
    eprintln!("SKIP {test}: needs a kernel with IPVS; scripts/vm-test runs it in a VM");
    false
}

fn svc(name: &str, vip: &str, balancer: &str, ips: &[&str]) -> String {
    let addrs: Vec<String> = ips.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  annotations: {{wasp.dev/balancer: {balancer}}}\nspec: {{clusterIP: {vip}, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}}}\nsubsets: [{{addresses: [{}], ports: [{{port: 80}}]}}]\n",
        addrs.join(", ")
    )
}

fn ipvsadm(node: &Node, args: &[&str]) -> String {
    let mut full = vec!["ipvsadm"];
    full.extend_from_slice(args);
    let out = node.tb.exec_in(&node.tb.node(), &full).unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (at most 180 s: a plugin compiles slowly in the emulated VM) until `f` holds.
fn wait_long(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(180) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what}: not within 180 s");
}

/// Waits (as [`wait_long`]) for the daemon's first sync to be done: its virtual servers and
/// its helper rules.
fn wait_synced_long(node: &Node) {
    wait_long("the first sync", || {
        node.metric("wasp_sync_proxy_rules_last_timestamp_seconds")
            .is_some_and(|t| t > 0.0)
    });
}

fn scheduler_of(node: &Node, vip: &str) -> Option<String> {
    ipvsadm(node, &["-Ln", "-t", vip])
        .lines()
        .find(|l| l.starts_with("TCP"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
}

#[test]
fn each_service_has_its_own_scheduler_changed_in_place() {
    if !in_vm("each_service_has_its_own_scheduler_changed_in_place") {
        return;
    }
    let mut node = Node::new("ipvs-sched", "ipvs", "auto");
    node.pod("a", "10.244.1.2", &[80], &[]);
    node.pod("b", "10.244.1.3", &[80], &[]);
    let ips = ["10.244.1.2", "10.244.1.3"];
    let both = |hashed: &str| {
        format!(
            "{}---\n{}",
            svc("plain", "10.96.0.30", "round-robin", &ips),
            svc("hashed", "10.96.0.31", hashed, &ips)
        )
    };
    node.write("svc.yaml", &both("maglev"));
    node.spawn();
    wait_long("the first sync", || {
        scheduler_of(&node, "10.96.0.31:80").as_deref() == Some("mh")
    });
    assert_eq!(scheduler_of(&node, "10.96.0.30:80").as_deref(), Some("wrr"));
    node.eventually("maglev spreads", "node", "tcp", "10.96.0.31:80", |o| {
        o.len() == 8
            && o.iter()
                .all(|x| matches!(x, wasp::echo::Outcome::Answered { .. }))
    });
    // The hashed Service goes back to weights: the same virtual server, another scheduler.
    node.write("svc.yaml", &both("round-robin"));
    wait_long("the scheduler changes", || {
        scheduler_of(&node, "10.96.0.31:80").as_deref() == Some("wrr")
    });
    assert_eq!(scheduler_of(&node, "10.96.0.30:80").as_deref(), Some("wrr"));
    node.eventually(
        "both answer",
        "node",
        "tcp",
        "10.96.0.31:80",
        is(&["a", "b"]),
    );
    let log = node.log();
    assert!(
        !log.contains("-D -t 10.96.0.31:80"),
        "deleted instead of edited:\n{log}"
    );
}

#[test]
fn other_programs_virtual_servers_are_left_alone() {
    if !in_vm("other_programs_virtual_servers_are_left_alone") {
        return;
    }
    let mut node = Node::new("ipvs-others", "ipvs", "auto");
    node.pod("a", "10.244.1.2", &[80], &[]);
    let theirs = ["-A", "-t", "192.0.2.1:80", "-s", "rr"];
    ipvsadm(&node, &theirs);
    node.write(
        "svc.yaml",
        &svc("plain", "10.96.0.30", "round-robin", &["10.244.1.2"]),
    );
    node.start();
    let listed = ipvsadm(&node, &["-Sn"]);
    assert!(listed.contains("-A -t 192.0.2.1:80 -s rr"), "{listed}");
    assert!(listed.contains("-A -t 10.96.0.30:80 -s wrr"), "{listed}");
    // A plan prints ipvsadm lines and the helper table.
    let cfg = node.config_dir();
    let plan = node
        .tb
        .exec_in(
            &node.tb.node(),
            &[
                EXE,
                "plan",
                "--mode",
                "ipvs",
                "--config-dir",
                cfg.to_str().unwrap(),
            ],
        )
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("# ipvsadm -R") && plan.contains("# nft -f -"),
        "{plan}"
    );
    node.stop();
    let out = node
        .tb
        .exec_in(&node.tb.node(), &[EXE, "cleanup", "--mode", "ipvs"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = ipvsadm(&node, &["-Sn"]);
    assert!(
        listed.contains("-A -t 192.0.2.1:80 -s rr"),
        "theirs removed: {listed}"
    );
    assert!(!listed.contains("10.96.0.30"), "ours left: {listed}");
    let link = node
        .tb
        .exec_in(&node.tb.node(), &["ip", "link", "show", "wasp-ipvs0"])
        .unwrap();
    assert!(!link.status.success(), "the dummy device is left");
}

#[test]
fn a_removed_real_server_drains_at_weight_zero_then_goes() {
    if !in_vm("a_removed_real_server_drains_at_weight_zero_then_goes") {
        return;
    }
    let mut node = Node::new("ipvs-drain", "ipvs", "auto");
    node.extra_args = vec!["--ipvs-drain-timeout".into(), "4s".into()];
    node.pod("a", "10.244.1.2", &[80], &[]);
    node.pod("b", "10.244.1.3", &[80], &[]);
    let plain = |ips: &[&str]| svc("plain", "10.96.0.40", "round-robin", ips);
    node.write("svc.yaml", &plain(&["10.244.1.2", "10.244.1.3"]));
    node.spawn();
    wait_long("the first sync", || {
        scheduler_of(&node, "10.96.0.40:80").is_some()
    });
    // Connections to both leave IPVS entries behind (closing, then TIME_WAIT).
    node.eventually(
        "both answer",
        "node",
        "tcp",
        "10.96.0.40:80",
        is(&["a", "b"]),
    );
    node.write("svc.yaml", &plain(&["10.244.1.2"]));
    let b = "10.244.1.3:80";
    let weight_of_b = |node: &Node| {
        ipvsadm(node, &["-Ln", "-t", "10.96.0.40:80"])
            .lines()
            .find(|l| l.contains(b))
            .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
    };
    wait_long("b at weight 0", || {
        weight_of_b(&node).as_deref() == Some("0")
    });
    node.eventually("only a answers", "node", "tcp", "10.96.0.40:80", is(&["a"]));
    // Its connections outlive the drain timeout (4 s); a later sync deletes it.
    wait_long("b deleted", || weight_of_b(&node).is_none());
    let listed = ipvsadm(&node, &["-Ln", "-t", "10.96.0.40:80"]);
    assert!(listed.contains("10.244.1.2:80"), "{listed}");
}

#[test]
fn switching_modes_removes_the_other_modes_rules() {
    if !in_vm("switching_modes_removes_the_other_modes_rules") {
        return;
    }
    let mut node = Node::new("ipvs-switch", "nftables", "auto");
    node.pod("a", "10.244.1.2", &[80], &[]);
    node.write(
        "svc.yaml",
        &svc("plain", "10.96.0.50", "round-robin", &["10.244.1.2"]),
    );
    node.start();
    node.stop();
    // nftables → ipvs: the nftables mode's tables go.
    node.mode = "ipvs".into();
    node.spawn();
    wait_synced_long(&node);
    node.assert_mode_in_use();
    node.eventually("a answers", "node", "tcp", "10.96.0.50:80", is(&["a"]));
    node.stop();
    // ipvs → nftables: the virtual servers, the device and the helper table go.
    node.mode = "nftables".into();
    node.start();
    assert!(
        scheduler_of(&node, "10.96.0.50:80").is_none(),
        "{}",
        ipvsadm(&node, &["-Sn"])
    );
    let link = node
        .tb
        .exec_in(&node.tb.node(), &["ip", "link", "show", "wasp-ipvs0"])
        .unwrap();
    assert!(!link.status.success(), "the dummy device is left");
    let helper = node.nft(&["list", "table", "ip", "wasp-ipvs"]);
    assert!(!helper.status.success(), "the helper table is left");
    node.assert_mode_in_use();
    node.eventually("a answers", "node", "tcp", "10.96.0.50:80", is(&["a"]));
}

/// A directory of links to every tool on `PATH` but `nft`: a host without the nftables
/// package.
fn path_without_nft(node: &Node) -> String {
    let bin = node.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let link = bin.join(entry.file_name());
            if entry.file_name() != "nft" && !link.exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), link);
            }
        }
    }
    bin.display().to_string()
}

#[test]
fn without_nftables_the_helper_rules_are_iptables_chains() {
    if !in_vm("without_nftables_the_helper_rules_are_iptables_chains") {
        return;
    }
    let mut node = Node::new("ipvs-nonft", "ipvs", "auto");
    let path = path_without_nft(&node);
    node.wrapper = format!("env PATH={path}");
    node.pod("a", "10.244.1.2", &[80], &[]);
    node.pod("b", "10.244.1.3", &[80], &[]);
    let both = svc(
        "web",
        "10.96.0.40",
        "round-robin",
        &["10.244.1.2", "10.244.1.3"],
    );
    node.write("svc.yaml", &both);
    node.spawn();
    wait_synced_long(&node);
    let log = node.log();
    assert!(
        log.contains("the helper rules are iptables chains"),
        "{log}"
    );
    let save = node.save("iptables-legacy-save");
    assert!(
        save.contains("-A WASP-IPVS-SERVICES -d 10.96.0.40/32 -p tcp -m tcp --dport 80 -j RETURN"),
        "{save}"
    );
    let table = node.nft(&["list", "table", "ip", "wasp-ipvs"]);
    assert!(!table.status.success(), "and no helper table");
    // Masqueraded from the node (the helper's mark), and a port that is no Service refused.
    node.eventually(
        "both answer",
        "node",
        "tcp",
        "10.96.0.40:80",
        is(&["a", "b"]),
    );
    node.eventually("port 81 is refused", "node", "tcp", "10.96.0.40:81", |o| {
        o.iter().all(|x| *x == wasp::echo::Outcome::Refused)
    });
    // A partial sync: a second Service adds its rules, b's removal deletes its hairpin rule.
    let other = svc("other", "10.96.0.41", "round-robin", &["10.244.1.2"]);
    let one = svc("web", "10.96.0.40", "round-robin", &["10.244.1.2"]);
    node.write("svc.yaml", &format!("{one}---\n{other}"));
    node.eventually(
        "the new Service",
        "node",
        "tcp",
        "10.96.0.41:80",
        is(&["a"]),
    );
    node.eventually("b is gone", "node", "tcp", "10.96.0.40:80", is(&["a"]));
    let save = node.save("iptables-legacy-save");
    assert!(
        save.contains("-A WASP-IPVS-VIPS -d 10.96.0.41/32 -j WASP-IPVS-SERVICES")
            && !save.contains("-s 10.244.1.3/32 -d 10.244.1.3/32"),
        "{save}"
    );
    node.stop();
    let cleanup = format!("PATH={path} {EXE} cleanup --mode ipvs");
    let out = node
        .tb
        .exec_in(&node.tb.node(), &["sh", "-c", &cleanup])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let save = node.save("iptables-legacy-save");
    assert!(!save.contains("WASP-IPVS"), "cleanup left chains: {save}");
}

#[test]
fn sctp_ports_are_virtual_servers_with_either_helper() {
    if !in_vm("sctp_ports_are_virtual_servers_with_either_helper") {
        return;
    }
    let ports = "[{name: sctp, port: 3868, protocol: SCTP}, {name: tcp, port: 3868}]";
    let sig = |ips: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: sig}}\nspec: {{clusterIP: 10.96.0.45, ports: {ports}}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: sig}}\nsubsets: [{{addresses: [{ips}], ports: {ports}}}]\n"
        )
    };
    for backend in ["auto", "legacy"] {
        let mut node = Node::new("ipvs-sctp", "ipvs", backend);
        node.write("svc.yaml", &sig("{ip: 10.244.1.2}, {ip: 10.244.1.3}"));
        node.spawn();
        let sctp = |node: &Node| ipvsadm(node, &["-Ln", "--sctp-service", "10.96.0.45:3868"]);
        wait_synced_long(&node);
        let listed = sctp(&node);
        let server = listed.lines().find(|l| l.starts_with("SCTP")).map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(1..3).map(<[&str]>::to_vec)
        });
        assert_eq!(
            server,
            Some(Some(vec!["10.96.0.45:3868", "wrr"])),
            "[{backend}] {listed}"
        );
        assert!(listed.contains("10.244.1.2:3868"), "[{backend}] {listed}");
        let helper = node.ipvs_helper();
        assert!(
            helper.contains("10.96.0.45 . sctp . 3868")
                || helper.contains("-d 10.96.0.45/32 -p sctp -m sctp --dport 3868 -j RETURN"),
            "[{backend}] the helper lets SCTP to the Service through: {helper}"
        );
        // SCTP real servers go at once (no close to wait for).
        node.write("svc.yaml", &sig("{ip: 10.244.1.2}"));
        wait_long("the removed SCTP real server goes", || {
            !sctp(&node).contains("10.244.1.3:3868")
        });
        assert!(sctp(&node).contains("10.244.1.2:3868"), "[{backend}]");
    }
}
