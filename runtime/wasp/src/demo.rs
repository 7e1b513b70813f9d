//! `wasp demo`: the article's walk-through in throw-away network namespaces.
//!
//! Two backend pods answer `Hello from <pod name>` on a container port named `http` (80);
//! `tut-service` listens on 4000 with `targetPort: http`. The daemon runs in the node
//! namespace; a client pod sends 20 requests to the cluster IP and the split is printed. Then
//! the config is edited live: a third pod joins, and a selectorless Service with hand-written
//! Endpoints appears. Everything is removed at the end, and on Ctrl-C.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::echo::Outcome;
use crate::testbed::{Testbed, is_root};

const VIP: &str = "10.96.0.20:4000";
const LEGACY_VIP: &str = "10.96.0.30:5000";
const PODS: [(&str, &str); 3] = [
    ("service-tut-deployment-7d4b9c-x2k9p", "10.244.1.2"),
    ("service-tut-deployment-7d4b9c-q8m4n", "10.244.1.3"),
    ("service-tut-deployment-7d4b9c-h5t7r", "10.244.1.4"),
];

fn pod_yaml(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: service-tut-pod}}\nspec:\n  nodeName: demo-node\n  containers:\n  - name: python-http\n    image: python:3\n    ports: [{{name: http, containerPort: 80}}]\nstatus:\n  phase: Running\n  podIP: {ip}\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
    )
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: tut-service\nspec:\n  clusterIP: 10.96.0.20\n  selector: {app: service-tut-pod}\n  ports:\n  - protocol: TCP\n    port: 4000\n    targetPort: http\n";

const LEGACY: &str = "# A selectorless Service: its endpoints are written by hand.\napiVersion: v1\nkind: Service\nmetadata:\n  name: legacy-backend\nspec:\n  clusterIP: 10.96.0.30\n  ports: [{port: 5000, targetPort: 8080}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: legacy-backend\nsubsets:\n- addresses: [{ip: 10.244.3.5}]\n  ports: [{port: 8080}]\n";

struct Demo {
    tb: Testbed,
    exe: String,
    dir: tempfile::TempDir,
    cancel: Arc<AtomicBool>,
}

/// Runs the walk-through with the daemon in `mode`; `cancel` turns true on Ctrl-C.
///
/// # Errors
/// Fails when not root, when the namespaces cannot be built, or when traffic does not follow.
pub fn run(mode: &str, cancel: Arc<AtomicBool>) -> anyhow::Result<()> {
    if !is_root() {
        bail!("wasp demo builds network namespaces and must run as root");
    }
    let exe = std::env::current_exe()?.display().to_string();
    let prefix = format!("wasp-demo-{}", std::process::id());
    let mut d = Demo {
        tb: Testbed::new(&prefix, "10.96.0.0/12")?,
        exe,
        dir: tempfile::tempdir()?,
        cancel,
    };
    println!(
        "== wasp demo ({mode} mode): the article's walk-through in network namespaces {prefix}-*"
    );
    for (name, ip) in &PODS[..2] {
        d.pod(name, ip, 80)?;
    }
    d.tb.add_pod("client", "10.244.2.10")?;
    d.write("tut-service.yaml", SERVICE)?;
    d.write(
        "deployment-pods.yaml",
        &format!(
            "{}---\n{}",
            pod_yaml(PODS[0].0, PODS[0].1),
            pod_yaml(PODS[1].0, PODS[1].1)
        ),
    )?;
    println!(
        "   config dir {}:\n{}",
        d.dir.path().display(),
        indent(SERVICE)
    );
    let log = d.dir.path().join("wasp.log").display().to_string();
    let node = d.tb.node();
    let cfg = d.dir.path().join("config").display().to_string();
    let cmd = format!(
        "exec {} run --mode {mode} --config-dir {cfg} --cluster-cidr 10.244.0.0/16 --node-name demo-node --min-sync-period 100ms --sync-period 10s >{log} 2>&1",
        d.exe
    );
    d.tb.spawn_in(&node, &["sh", "-c", &cmd], false)?;
    println!("-> started the daemon in {node} (log: {log})");

    d.wait_for(VIP, 2)?;
    d.show(
        "20 requests from the client pod to tut-service (cluster IP 10.96.0.20:4000)",
        VIP,
        20,
    )?;

    println!("\n-> scaling up: adding a third pod to the config dir");
    d.pod(PODS[2].0, PODS[2].1, 80)?;
    d.write("pod-3.yaml", &pod_yaml(PODS[2].0, PODS[2].1))?;
    d.wait_for(VIP, 3)?;
    d.show("20 more requests: the traffic follows the new pod", VIP, 20)?;

    println!(
        "\n-> adding a selectorless Service with hand-written Endpoints:\n{}",
        indent(LEGACY)
    );
    d.pod("legacy-backend-0", "10.244.3.5", 8080)?;
    d.write("legacy.yaml", LEGACY)?;
    d.wait_for(LEGACY_VIP, 1)?;
    d.show(
        "5 requests to legacy-backend (10.96.0.30:5000)",
        LEGACY_VIP,
        5,
    )?;

    println!("\n-> removing the first pod from the config");
    d.write("deployment-pods.yaml", &pod_yaml(PODS[1].0, PODS[1].1))?;
    d.wait_for(VIP, 2)?;
    d.show("20 requests after the removal", VIP, 20)?;
    println!("\n== done; removing the namespaces");
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("      {l}\n")).collect()
}

impl Demo {
    fn check(&self) -> anyhow::Result<()> {
        if self.cancel.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        Ok(())
    }

    fn pod(&mut self, name: &str, ip: &str, port: u16) -> anyhow::Result<()> {
        self.tb.add_pod(name, ip)?;
        let ns = self.tb.pod_ns(name);
        let exe = self.exe.clone();
        self.tb.spawn_in(
            &ns,
            &[&exe, "serve", "--name", name, "--tcp", &port.to_string()],
            true,
        )?;
        println!("   pod {name} ({ip}) serves \"Hello from {name}\" on :{port}");
        Ok(())
    }

    fn write(&self, file: &str, body: &str) -> anyhow::Result<()> {
        let dir = self.dir.path().join("config");
        std::fs::create_dir_all(&dir)?;
        // Write beside, then rename: the watcher never sees half a file.
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, body)?;
        std::fs::rename(&tmp, Path::new(&dir).join(file)).context("cannot update the config dir")
    }

    fn probe(&self, addr: &str, count: u32) -> anyhow::Result<Vec<Outcome>> {
        let client = self.tb.pod_ns("client");
        let out = self.tb.exec_in(
            &client,
            &[
                &self.exe,
                "probe",
                "--count",
                &count.to_string(),
                "tcp",
                addr,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(Outcome::parse)
            .collect())
    }

    /// Waits until `backends` distinct pods answer on `addr`.
    fn wait_for(&self, addr: &str, backends: usize) -> anyhow::Result<()> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            self.check()?;
            let seen: std::collections::BTreeSet<String> = self
                .probe(addr, 12)?
                .into_iter()
                .filter_map(|o| match o {
                    Outcome::Answered { name, .. } => Some(name),
                    _ => None,
                })
                .collect();
            if seen.len() == backends {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("{addr} did not reach {backends} backends within 20 s; see the daemon log")
    }

    fn show(&self, title: &str, addr: &str, count: u32) -> anyhow::Result<()> {
        self.check()?;
        println!("\n-> {title}:");
        let mut split: BTreeMap<String, u32> = BTreeMap::new();
        for o in self.probe(addr, count)? {
            let key = match o {
                Outcome::Answered { name, .. } => format!("Hello from {name}"),
                other => other.to_string(),
            };
            *split.entry(key).or_default() += 1;
        }
        for (k, n) in split {
            println!("   {n:>3} × {k}");
        }
        Ok(())
    }
}
