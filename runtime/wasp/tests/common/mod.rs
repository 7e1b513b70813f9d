//! Shared harness for the root-only tests: a node with pods in network namespaces, the daemon
//! running in the node, probes from any namespace.

#![allow(dead_code)]

pub mod apiserver;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasp::echo::Outcome;
use wasp::testbed::{Testbed, is_root};

pub const EXE: &str = env!("CARGO_BIN_EXE_wasp");

/// The (mode, iptables backend) pairs every behaviour case runs against on this host.
pub const MODES: &[(&str, &str)] = &[
    ("nftables", "auto"),
    ("iptables", "nft"),
    ("iptables", "legacy"),
    ("userspace", "auto"),
    // The userspace mode capturing with iptables (as where the kernel has no nftables).
    ("userspace", "legacy"),
];

/// Modes that run only when named: the ipvs mode needs a kernel with IPVS, which this host
/// lacks; `scripts/vm-test` runs its cases inside a VM with `WASP_TEST_MODES=ipvs`.
/// `ipvs/legacy` writes the helper's rules as iptables-legacy chains (as where the host has no
/// nftables).
pub const NAMED_ONLY: &[(&str, &str)] = &[("ipvs", "auto"), ("ipvs", "legacy")];

/// The modes to run: all of [`MODES`], or those `WASP_TEST_MODES` names (comma-separated,
/// `mode` or `mode/backend`), to run one mode's cases while working on it.
pub fn modes() -> Vec<(&'static str, &'static str)> {
    let only = std::env::var("WASP_TEST_MODES").unwrap_or_default();
    let only: Vec<&str> = only
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if only.is_empty() {
        return MODES.to_vec();
    }
    MODES
        .iter()
        .chain(NAMED_ONLY)
        .copied()
        .filter(|(m, b)| only.iter().any(|o| *o == *m || *o == format!("{m}/{b}")))
        .collect()
}

/// True when the test may run; prints why not and returns false when it may not.
/// Under CI=true a missing root is a failure, not a skip.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root to build network namespaces, and CI=true forbids skipping");
    }
    eprintln!(
        "SKIP {test}: needs root to build network namespaces (run as root, or under CI=true to fail)"
    );
    false
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A node, its pods, its config dir and its daemon.
pub struct Node {
    pub tb: Testbed,
    pub dir: tempfile::TempDir,
    pub mode: String,
    pub backend: String,
    pub daemon: Option<u32>,
    pub extra_args: Vec<String>,
    /// A command the daemon runs under (`exec WRAPPER wasp run …`), empty for none.
    pub wrapper: String,
    /// The source flags; `--config-dir <dir>/config` when empty.
    pub source_args: Vec<String>,
    /// Pass the testbed's node addresses as `--node-ip` (else the daemon finds its own).
    pub node_ip_args: bool,
    /// `--sync-period`: how often the full resync runs.
    pub sync_period: &'static str,
}

impl Node {
    pub fn new(tag: &str, mode: &str, backend: &str) -> Self {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let short: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect();
        let prefix = format!("wt{}-{n}-{short}", std::process::id() % 100000);
        let tb = Testbed::new(&prefix, "10.96.0.0/12").expect("build node namespace");
        tb.route_ipv6_services("fd00:96::/108")
            .expect("route the IPv6 service CIDR");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        Self {
            tb,
            dir,
            mode: mode.into(),
            backend: backend.into(),
            daemon: None,
            extra_args: vec![],
            wrapper: String::new(),
            source_args: vec![],
            node_ip_args: true,
            sync_period: "2s",
        }
    }

    /// Which rules the daemon writes: `nftables`, `iptables` or `ipvs`. The userspace mode
    /// captures with nftables, or with iptables when the test names a backend.
    pub fn rules_kind(&self) -> &str {
        match (self.mode.as_str(), self.backend.as_str()) {
            ("userspace", "auto") => "nftables",
            ("userspace", _) => "iptables",
            (m, _) => m,
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("wasp.log")
    }

    pub fn pod(&mut self, name: &str, ip: &str, tcp: &[u16], udp: &[u16]) {
        self.tb.add_pod(name, ip).expect("add pod");
        let ns = self.tb.pod_ns(name);
        let mut args: Vec<String> = vec![EXE.into(), "serve".into(), "--name".into(), name.into()];
        for p in tcp {
            args.extend(["--tcp".into(), p.to_string()]);
        }
        for p in udp {
            args.extend(["--udp".into(), p.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.tb.spawn_in(&ns, &args, true).expect("start server");
    }

    /// Writes a config file atomically (write beside, rename).
    pub fn write(&self, file: &str, body: &str) {
        let tmp = self.config_dir().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, self.config_dir().join(file)).unwrap();
    }

    pub fn start(&mut self) {
        self.spawn();
        self.wait_synced();
        self.assert_mode_in_use();
    }

    /// wasp's rules as the kernel tools print them: both nftables tables, or iptables-save of
    /// the backend.
    pub fn rules(&self) -> String {
        match self.rules_kind() {
            "nftables" => ["ip", "ip6"]
                .iter()
                .map(|f| {
                    String::from_utf8_lossy(&self.nft(&["list", "table", f, "wasp"]).stdout)
                        .into_owned()
                })
                .collect(),
            "ipvs" => {
                let ipvs = self
                    .tb
                    .exec_in(&self.tb.node(), &["ipvsadm", "-Sn"])
                    .unwrap();
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&ipvs.stdout),
                    self.ipvs_helper()
                )
            }
            _ => self.iptables_save(),
        }
    }

    /// The ipvs mode's helper rules: its nftables table, or (`ipvs/legacy`) its WASP-IPVS-
    /// iptables chains; empty when there are none.
    pub fn ipvs_helper(&self) -> String {
        if self.backend == "auto" {
            let helper = self.nft(&["list", "table", "ip", "wasp-ipvs"]);
            return String::from_utf8_lossy(&helper.stdout).into_owned();
        }
        let save = self.iptables_save();
        let ours: Vec<&str> = save.lines().filter(|l| l.contains("WASP-IPVS-")).collect();
        ours.join("\n")
    }

    /// The rules are where the mode puts them, and only there.
    pub fn assert_mode_in_use(&self) {
        let nft_table = self.nft(&["list", "table", "ip", "wasp"]).status.success();
        // The iptables mode's chains (the ipvs mode's helper chains are WASP-IPVS-).
        let iptables_mode = |save: String| {
            save.lines()
                .any(|l| l.starts_with(":WASP-") && !l.starts_with(":WASP-IPVS-"))
        };
        let wasp_chains = exists("iptables-nft-save")
            && iptables_mode(self.save("iptables-nft-save"))
            || exists("iptables-legacy-save") && iptables_mode(self.save("iptables-legacy-save"));
        match self.rules_kind() {
            "nftables" => assert!(
                nft_table && !wasp_chains,
                "nftables and userspace modes: want table ip wasp and no WASP- iptables chains"
            ),
            "ipvs" => {
                let helper = self.ipvs_helper();
                assert!(
                    !helper.is_empty() && !nft_table && !wasp_chains,
                    "ipvs mode: want its helper rules, no table ip wasp, no WASP- iptables chains of the iptables mode"
                );
            }
            _ => assert!(
                wasp_chains && !nft_table,
                "iptables mode: want WASP- chains and no table ip wasp"
            ),
        }
    }

    pub fn save(&self, tool: &str) -> String {
        let out = self.tb.exec_in(&self.tb.node(), &[tool]).unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Runs nft in the node's namespace.
    pub fn nft(&self, args: &[&str]) -> std::process::Output {
        let mut full = vec!["nft"];
        full.extend_from_slice(args);
        self.tb.exec_in(&self.tb.node(), &full).unwrap()
    }

    /// Starts the daemon without waiting for its first sync.
    pub fn spawn(&mut self) {
        let source = if self.source_args.is_empty() {
            format!("--config-dir {}", self.config_dir().display())
        } else {
            self.source_args.join(" ")
        };
        let node_ips = if self.node_ip_args {
            "--node-ip 10.250.0.1 --node-ip fd00:250::1"
        } else {
            ""
        };
        let capture = match (self.mode.as_str(), self.backend.as_str()) {
            (_, "auto") => "",
            ("userspace", _) => "--userspace-rules iptables",
            ("ipvs", _) => "--ipvs-helper-rules iptables",
            _ => "",
        };
        let cmd = format!(
            "exec {} {EXE} run --mode {} --iptables-backend {} {capture} {source} --cluster-cidr 10.244.0.0/16 --cluster-cidr fd00:244::/64 --service-cidr 10.96.0.0/12 --service-cidr fd00:96::/108 --node-name node-a {node_ips} --min-sync-period 50ms --sync-period {} {} >>{} 2>&1",
            self.wrapper,
            self.mode,
            self.backend,
            self.sync_period,
            self.extra_args.join(" "),
            self.log_path().display()
        );
        let node = self.tb.node();
        self.daemon = Some(self.tb.spawn_in(&node, &["sh", "-c", &cmd], false).unwrap());
    }

    pub fn stop(&mut self) {
        if let Some(pid) = self.daemon.take() {
            self.tb.stop(pid);
        }
    }

    /// Kills the daemon with SIGKILL: no cleanup, wherever it was.
    pub fn kill_9(&mut self) {
        if let Some(pid) = self.daemon.take() {
            self.tb.kill(pid);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Reads one metric from the daemon's /metrics inside the node.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let out = self
            .tb
            .exec_in(
                &self.tb.node(),
                &[
                    "curl",
                    "-s",
                    "--max-time",
                    "2",
                    "http://127.0.0.1:10249/metrics",
                ],
            )
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub fn healthz(&self) -> (u16, String) {
        let out = self
            .tb
            .exec_in(
                &self.tb.node(),
                &[
                    "curl",
                    "-s",
                    "-w",
                    "\n%{http_code}",
                    "--max-time",
                    "2",
                    "http://127.0.0.1:10256/healthz",
                ],
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Waits for the first sync.
    pub fn wait_synced(&self) {
        // On failure the daemon's log is printed by Drop.
        wait_until("the daemon's first sync", || {
            self.metric("wasp_sync_proxy_rules_last_timestamp_seconds")
                .is_some_and(|t| t > 0.0)
        });
    }

    /// Probes from `from` ("node" or a pod's name).
    pub fn probe(
        &self,
        from: &str,
        proto: &str,
        addr: &str,
        count: u32,
        timeout: &str,
    ) -> Vec<Outcome> {
        self.probe_from(from, None, proto, addr, count, timeout)
    }

    /// Probes from `from`, with source address `source` when given.
    pub fn probe_from(
        &self,
        from: &str,
        source: Option<&str>,
        proto: &str,
        addr: &str,
        count: u32,
        timeout: &str,
    ) -> Vec<Outcome> {
        let ns = if from == "node" {
            self.tb.node()
        } else {
            self.tb.pod_ns(from)
        };
        let count = count.to_string();
        let mut args = vec![EXE, "probe", "--count", &count, "--timeout", timeout];
        if let Some(s) = source {
            args.extend(["--source", s]);
        }
        args.extend([proto, addr]);
        let out = self.tb.exec_in(&ns, &args).unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(Outcome::parse)
            .collect()
    }

    /// Probes until `ok` holds for the outcomes (the daemon syncs asynchronously), or panics.
    pub fn eventually(
        &self,
        what: &str,
        from: &str,
        proto: &str,
        addr: &str,
        ok: impl Fn(&[Outcome]) -> bool,
    ) -> Vec<Outcome> {
        let start = Instant::now();
        let mut last = vec![];
        while start.elapsed() < Duration::from_secs(15) {
            last = self.probe(from, proto, addr, 8, "1s");
            if ok(&last) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{what}: not reached within 15 s; last outcomes {last:?}\nlog:\n{}",
            self.log()
        );
    }

    pub fn iptables_save(&self) -> String {
        self.save(&format!("iptables-{}-save", self.backend))
    }

    pub fn ip6tables_save(&self) -> String {
        self.save(&format!("ip6tables-{}-save", self.backend))
    }

    pub fn iptables(&self, args: &[&str]) -> std::process::Output {
        let tool = format!("iptables-{}", self.backend);
        let mut full = vec![tool.as_str()];
        full.extend_from_slice(args);
        self.tb.exec_in(&self.tb.node(), &full).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("daemon log:\n{}", self.log());
        }
    }
}

/// Counts answers by backend name.
pub fn split(outcomes: &[Outcome]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for o in outcomes {
        let k = match o {
            Outcome::Answered { name, .. } => name.clone(),
            other => other.to_string(),
        };
        *m.entry(k).or_default() += 1;
    }
    m
}

pub fn answered_by(outcomes: &[Outcome]) -> Vec<String> {
    split(outcomes).into_keys().collect()
}

/// Every probe answered, by exactly these backends.
pub fn is(names: &[&str]) -> impl Fn(&[Outcome]) -> bool + use<> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    move |o: &[Outcome]| {
        o.iter().all(|x| matches!(x, Outcome::Answered { .. })) && answered_by(o) == names
    }
}

/// No probe answered.
pub fn dropped(o: &[Outcome]) -> bool {
    o.iter().all(|x| x == &Outcome::Timeout)
}

/// Waits (at most 20 s) until `f` holds.
pub fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within 20 s");
}

/// Whether a tool is on PATH.
fn exists(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}
