//! Convergence benchmark (not a test): how long one endpoint change takes from the user's
//! edit until traffic through the VIP follows it, with the daemon's RSS and CPU time per
//! change. The `wasp run` binary serves N Services × 10 endpoints; Service 0 has one endpoint,
//! which each change moves between two real servers on this namespace's loopback. A probe
//! connects to Service 0's VIP again and again until the new server answers.
//!
//! `cargo bench -p wasp --bench converge -- [N ...] [files|file|api] [nftables|iptables] [resize|new]`
//! (default 100 10000, every source and both modes). `WASP_BENCH_RUNS` sets the changes per
//! row (default 7). Needs root: it runs in its own network namespace.
//!
//! - **files**: a Service and its Endpoints per file; a change is an atomic rename of the
//!   Service's file.
//! - **file**: every Service in one file; a change is an atomic rename of the whole file.
//! - **api**: the test API server (the real wire format); a change is an EndpointSlice
//!   update.
//!
//! A change replaces Service 0's one endpoint with another; with `resize` it alternates
//! between one endpoint and two others, so the endpoint count changes too. With `new` a
//! change adds a Service instead (files: a file of its own; api: the Service and its slice),
//! on an address nobody has, with one endpoint, and the probe goes to its VIP.

#[path = "../tests/common/apiserver.rs"]
mod apiserver;
mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{fmt, median, vip};
use serde_json::{Value, json};

/// The servers Service 0's endpoints move between: the first alone, or (with `resize`) the
/// other two together.
const SERVERS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 128, 255, 1),
    Ipv4Addr::new(10, 128, 255, 2),
    Ipv4Addr::new(10, 128, 255, 3),
];
const TARGET: u16 = 8080;
const METRICS: &str = "127.0.0.1:19349";

/// Serves `Hello from <i>` on each server address until the process ends.
fn start_servers() {
    for (i, ip) in SERVERS.iter().enumerate() {
        let _ = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
            .status();
        let l = TcpListener::bind((*ip, TARGET)).expect("bind server");
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(format!("Hello from {i}\n").as_bytes());
            }
        });
    }
}

/// Whether a change also changes Service 0's endpoint count (`resize`): one endpoint, then
/// two, then one.
fn resize() -> bool {
    // Asked on every probe: read the arguments once.
    static RESIZE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *RESIZE.get_or_init(|| std::env::args().any(|a| a == "resize"))
}

/// Whether each change adds a Service (`new`).
fn adding() -> bool {
    static NEW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NEW.get_or_init(|| std::env::args().any(|a| a == "new"))
}

/// The first of the Services `new` adds (above any N benchmarked, inside 10.96.0.0/12).
const ADDED: u32 = 200_000;
/// The Service whose VIP the probe connects to.
static PROBED: AtomicU32 = AtomicU32::new(0);
/// The Services added so far.
static ADDED_SO_FAR: AtomicU32 = AtomicU32::new(0);

/// The Service the next change adds, which the probe follows from then on.
fn next_added() -> u32 {
    let i = ADDED + ADDED_SO_FAR.fetch_add(1, Ordering::Relaxed);
    PROBED.store(i, Ordering::Relaxed);
    i
}

/// The endpoint addresses of service `i` (Service 0 and the added ones: the one server
/// `which`, or with [`resize`] the first server, then the other two).
fn endpoints(i: u32, which: usize) -> Vec<Ipv4Addr> {
    if i == 0 || i >= ADDED {
        return match (resize(), which) {
            (true, 1) => vec![SERVERS[1], SERVERS[2]],
            _ => vec![SERVERS[which]],
        };
    }
    (0..10u32)
        .map(|j| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * 16 + j))
        .collect()
}

/// Service `i` and its Endpoints as YAML.
fn yaml(i: u32, which: usize) -> String {
    let eps: Vec<String> = endpoints(i, which)
        .iter()
        .map(|ip| format!("{{ip: {ip}}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec: {{clusterIP: {}, ports: [{{name: http, port: 80, targetPort: {TARGET}}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: svc-{i}, namespace: bench}}\nsubsets: [{{addresses: [{}], ports: [{{name: http, port: {TARGET}}}]}}]\n---\n",
        vip(i),
        eps.join(", ")
    )
}

/// Writes `body` to `path` as editors and config managers do: a temporary file renamed over
/// it. Returns the moment of the rename.
fn replace(path: &Path, body: &str) -> Instant {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).expect("write");
    let t = Instant::now();
    std::fs::rename(&tmp, path).expect("rename");
    t
}

/// Which server answers the probed Service's VIP now, if any.
fn answer() -> Option<usize> {
    let probed = PROBED.load(Ordering::Relaxed);
    let addr = SocketAddr::from((vip(probed), 80));
    // An added Service's VIP drops the SYN until it is programmed (its connection is then
    // tracked as not DNATed, so the retransmissions would not be either): give up at once
    // and try a new connection. A connection through DNAT here takes well under 1 ms.
    let timeout = Duration::from_millis(if probed >= ADDED { 1 } else { 200 });
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.trim().strip_prefix("Hello from ")?.parse().ok()
}

/// Probes until server `which` (or, resizing, any of the other two) answers: at most 300,000
/// probes and `limit`.
fn until_answered(which: usize, since: Instant, limit: Duration) -> Option<Duration> {
    for _ in 0..300_000 {
        match answer() {
            Some(w) if w == which || (resize() && which == 1 && w == 2) => {
                return Some(since.elapsed());
            }
            // The old server: probe again shortly, leaving the CPUs to the daemon.
            Some(_) => std::thread::sleep(Duration::from_micros(200)),
            // A Service being added: try again at once (the connect waited 1 ms).
            None if PROBED.load(Ordering::Relaxed) >= ADDED => {}
            // Nothing answers yet (the daemon is starting): don't spin.
            None => std::thread::sleep(Duration::from_millis(1)),
        }
        if since.elapsed() > limit {
            break;
        }
    }
    None
}

/// The daemon's resident and peak memory (kB), and its CPU time so far (of the threads alive
/// now).
fn usage(pid: u32) -> (u64, u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    // Each thread's time on a CPU, in nanoseconds (the first field of its schedstat).
    let mut ns = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (kb("VmRSS:"), kb("VmHWM:"), Duration::from_nanos(ns))
}

/// A source the daemon reads, and how to make one change in it.
enum Source {
    Files(tempfile::TempDir),
    File(tempfile::TempDir, usize),
    Api(apiserver::FakeApi, tempfile::TempDir),
}

impl Source {
    fn new(kind: &str, n: usize, ns: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        match kind {
            "files" => {
                for i in 0..n as u32 {
                    std::fs::write(dir.path().join(format!("svc-{i}.yaml")), yaml(i, 0))
                        .expect("write");
                }
                Self::Files(dir)
            }
            "file" => {
                std::fs::write(dir.path().join("services.yaml"), one_file(n, 0)).expect("write");
                Self::File(dir, n)
            }
            _ => {
                let api = apiserver::FakeApi::start_in(ns);
                for i in 0..n as u32 {
                    api.apply(service_json(i));
                    api.apply(slice_json(i, 0));
                }
                std::fs::write(dir.path().join("kubeconfig"), api.kubeconfig()).expect("write");
                Self::Api(api, dir)
            }
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            Self::Files(d) | Self::File(d, _) => {
                vec!["--config-dir".into(), d.path().display().to_string()]
            }
            Self::Api(_, d) => vec![
                "--kubeconfig".into(),
                d.path().join("kubeconfig").display().to_string(),
            ],
        }
    }

    /// Moves Service 0's endpoint to server `which` (or, with `new`, adds a Service whose
    /// endpoint it is); returns when the change was made.
    fn change(&self, which: usize) -> Instant {
        if adding() {
            let i = next_added();
            return match self {
                Self::Files(d) | Self::File(d, _) => {
                    replace(&d.path().join(format!("svc-{i}.yaml")), &yaml(i, which))
                }
                Self::Api(api, _) => {
                    let t = Instant::now();
                    api.apply(service_json(i));
                    api.apply(slice_json(i, which));
                    t
                }
            };
        }
        match self {
            Self::Files(d) => replace(&d.path().join("svc-0.yaml"), &yaml(0, which)),
            Self::File(d, n) => replace(&d.path().join("services.yaml"), &one_file(*n, which)),
            Self::Api(api, _) => {
                let t = Instant::now();
                api.apply(slice_json(0, which));
                t
            }
        }
    }
}

fn one_file(n: usize, which: usize) -> String {
    (0..n as u32).map(|i| yaml(i, which)).collect()
}

fn service_json(i: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"clusterIP": vip(i).to_string(), "clusterIPs": [vip(i).to_string()],
                 "type": "ClusterIP", "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                 "targetPort": TARGET}]}
    })
}

fn slice_json(i: u32, which: usize) -> Value {
    let eps: Vec<Value> = endpoints(i, which)
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": [{"name": "http", "port": TARGET, "protocol": "TCP"}]
    })
}

fn spawn(mode: &str, source: &Source) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wasp"))
        .args(["run", "--mode", mode])
        // The legacy backend: iptables-nft-restore of 10,000 Services takes minutes here.
        .args(["--iptables-backend", "legacy"])
        .args(source.args())
        .args(common::DAEMON_ARGS)
        .args([
            "--metrics-bind-address",
            METRICS,
            "--healthz-bind-address",
            "127.0.0.1:19356",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wasp run")
}

/// One row: start the daemon on `source`, wait for the first full sync, make `runs` changes.
fn row(n: usize, kind: &str, mode: &str, runs: usize, ns: &str) {
    PROBED.store(0, Ordering::Relaxed);
    let source = Source::new(kind, n, ns);
    let start = Instant::now();
    let mut child = spawn(mode, &source);
    let pid = child.id();
    let Some(first) = until_answered(0, start, Duration::from_secs(300)) else {
        println!("| {n} | {kind} | {mode} | no traffic after 300 s | | | | |");
        stop(&mut child, mode);
        return;
    };
    let mut took = Vec::new();
    let mut cpu = Duration::ZERO;
    let mut missed = 0;
    for r in 0..runs {
        let which = (r + 1) % 2;
        // A quiet period first, longer than the default --min-sync-period (1 s): a user's
        // edit, not a burst.
        std::thread::sleep(Duration::from_millis(1100));
        let (_, _, before) = usage(pid);
        let t = source.change(which);
        match until_answered(which, t, Duration::from_secs(20)) {
            Some(d) => took.push(d),
            None => missed += 1,
        }
        // Whatever the daemon does after the rules changed counts too.
        std::thread::sleep(Duration::from_millis(300));
        cpu += usage(pid).2.saturating_sub(before);
    }
    let (rss, peak, _) = usage(pid);
    let p = |v: &[Duration]| {
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for d in v {
            lo = lo.min(*d);
            hi = hi.max(*d);
        }
        format!("{}–{}", fmt(lo), fmt(hi))
    };
    let med = if took.is_empty() {
        "–".into()
    } else {
        fmt(median(took.clone()))
    };
    println!(
        "| {n} | {kind} | {mode} | {} | {med} | {} | {} MiB | {} MiB | {} |{}",
        fmt(first),
        if took.is_empty() {
            "–".into()
        } else {
            p(&took)
        },
        rss / 1024,
        peak / 1024,
        fmt(cpu / runs.max(1) as u32),
        if missed > 0 {
            format!(" {missed} changes never reached traffic")
        } else {
            String::new()
        }
    );
    stop(&mut child, mode);
}

fn stop(child: &mut Child, mode: &str) {
    let _ = child.kill();
    let _ = child.wait();
    let _ = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .args(["cleanup", "--mode", mode, "--iptables-backend", "legacy"])
        .output();
}

fn main() {
    let args = common::args();
    if !common::in_fresh_netns(&args) {
        return;
    }
    let ns = std::env::var("WASP_BENCH_IN_NETNS").unwrap_or_default();
    let _ = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    // Service traffic needs a route before the output hook's DNAT gives it a local one.
    let _ = Command::new("ip")
        .args(["route", "add", "10.96.0.0/12", "dev", "lo"])
        .status();
    start_servers();
    let runs = common::runs(7);
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() {
        vec![100, 10_000]
    } else {
        sizes
    };
    let pick = |all: &[&'static str]| -> Vec<&'static str> {
        let chosen: Vec<&'static str> = all
            .iter()
            .copied()
            .filter(|k| args.iter().any(|a| a == k))
            .collect();
        if chosen.is_empty() {
            all.to_vec()
        } else {
            chosen
        }
    };
    let kinds = pick(&["files", "file", "api"]);
    let modes = pick(&["nftables", "iptables"]);
    println!(
        "{runs} changes per row; edit → traffic through the VIP{}",
        if resize() {
            "; the endpoint count changes (1 ↔ 2)"
        } else if adding() {
            "; each change adds a Service"
        } else {
            ""
        }
    );
    println!(
        "| services | source | mode | start → traffic | edit → traffic, median | range | RSS after | peak RSS | CPU per change |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for &kind in &kinds {
            for &mode in &modes {
                row(n, kind, mode, runs, &ns);
            }
        }
    }
}
