//! Benchmarks of the nftables mode (not a test), each figure measured in the same run as the
//! iptables mode and as `nft -f` doing the same work, so they compare as ratios.
//!
//! `cargo bench -p wasp --bench nftables -- [sync [N ...]] [lookup] [external] [memory]` (all
//! by default; sync at 1000 and 10000). `WASP_BENCH_RUNS` sets runs per figure (default 3).
//! Needs root: it re-runs itself inside a fresh network namespace.
//!
//! - **sync**: a full sync of N Services × 10 endpoints from empty, and one endpoint change
//!   at N (the time from the change reaching the dataplane until the kernel has it): wasp's
//!   netlink transaction, `nft -f` of the very same transaction text, and the iptables mode.
//! - **lookup**: TCP connect+response latency through the first and the last VIP with 10 and
//!   with 10,000 Services installed, in the nftables and the iptables mode.
//! - **external**: the same through the first and the last Service's node port and
//!   LoadBalancer IP, with every Service a LoadBalancer.
//! - **memory**: the `wasp run` daemon's RSS with 10,000 Services from a config directory.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    NODE_IP, cfg, fmt, in_netns, latencies, lb_ip, median, node_port, percentile, pin_to_cpu0,
    selections, state, timed, vip, with_external,
};
use wasp_dataplane::iptables::{Backend, Iptables};
use wasp_dataplane::nftables::{Existing, Nftables, text::text};
use wasp_dataplane::{Dataplane, SyncRequest};
use wasp_model::ProxyState;

/// `nft -f FILE`, timed.
fn nft_file(text: &str) -> Duration {
    let path = std::env::temp_dir().join(format!("wasp-bench-{}.nft", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let (d, out) = timed(|| Command::new("nft").arg("-f").arg(&path).output().unwrap());
    assert!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(path);
    d
}

/// The syncs measured at each size: a full sync from empty, one endpoint replaced (the slot
/// count stays), one endpoint removed (it changes), and a full resync of the populated table.
#[derive(Default)]
struct Figures {
    full: Vec<Duration>,
    replaced: Vec<Duration>,
    removed: Vec<Duration>,
    resync: Vec<Duration>,
}

impl Figures {
    fn row(self, n: usize, what: &str, base: Option<&[Duration; 4]>) -> [Duration; 4] {
        let m = [
            median(self.full),
            median(self.replaced),
            median(self.removed),
            median(self.resync),
        ];
        let cell = |i: usize| match base {
            Some(b) => format!(
                "{} ({:.0}×)",
                fmt(m[i]),
                m[i].as_secs_f64() / b[i].as_secs_f64()
            ),
            None => fmt(m[i]),
        };
        println!(
            "| {n} × 10 | {what} | {} | {} | {} | {} |",
            cell(0),
            cell(1),
            cell(2),
            cell(3)
        );
        m
    }
}

/// Syncs at `n`: wasp over netlink, `nft -f` of the very same transaction text, and the
/// iptables mode (legacy always; iptables-nft up to 1,000, past which `--noflush` is
/// quadratic).
fn sync(n: usize, runs: usize) {
    let s0 = state(n, 0, None);
    let s1 = state(n, 1, None);
    let s2 = common::state_with(n, 0, None, 9);
    let (sel0, sel1, sel2) = (selections(&s0), selections(&s1), selections(&s2));
    let empty = ProxyState::default();
    let (d01, d02) = (s0.diff(&s1), s0.diff(&s2));
    let full = SyncRequest {
        state: &s0,
        previous: &empty,
        selections: &sel0,
        diff: None,
    };
    let replaced = SyncRequest {
        state: &s1,
        previous: &s0,
        selections: &sel1,
        diff: Some(&d01),
    };
    let removed = SyncRequest {
        state: &s2,
        previous: &s0,
        selections: &sel2,
        diff: Some(&d02),
    };

    // wasp over netlink; each delta starts from a fresh full sync of s0.
    let mut w = Figures::default();
    let mut texts = [String::new(), String::new(), String::new(), String::new()];
    for _ in 0..runs {
        let mut dp = Nftables::new(cfg());
        dp.cleanup().unwrap();
        texts[0] = text(&dp.plan_sync(&full, &Existing::default()).tx);
        w.full.push(timed(|| dp.sync(full).expect("full sync")).0);
        texts[1] = text(&dp.plan_sync(&replaced, &Existing::default()).tx);
        w.replaced
            .push(timed(|| dp.sync(replaced).expect("delta")).0);
        dp.sync(full).expect("back to s0");
        dp.sync(SyncRequest { diff: None, ..full }).expect("resync");
        texts[2] = text(&dp.plan_sync(&removed, &Existing::default()).tx);
        w.removed.push(timed(|| dp.sync(removed).expect("delta")).0);
        let existing = dp.existing().unwrap();
        let resync = SyncRequest {
            diff: None,
            ..removed
        };
        texts[3] = text(&dp.plan_sync(&resync, &existing).tx);
        w.resync.push(timed(|| dp.sync(resync).expect("resync")).0);
        dp.cleanup().unwrap();
    }
    let ops = texts[0].lines().count();
    let base = w.row(n, "wasp nftables (netlink)", None);

    // nft -f, the same transactions as text, in the same order.
    let nft_runs = if n > 1000 { 1 } else { runs };
    let mut t = Figures::default();
    for _ in 0..nft_runs {
        let mut dp = Nftables::new(cfg());
        dp.cleanup().unwrap();
        t.full.push(nft_file(&texts[0]));
        t.replaced.push(nft_file(&texts[1]));
        dp.cleanup().unwrap();
        nft_file(&texts[0]);
        t.removed.push(nft_file(&texts[2]));
        t.resync.push(nft_file(&texts[3]));
        dp.cleanup().unwrap();
    }
    t.row(n, "nft -f (same transactions)", Some(&base));

    // The iptables mode.
    let mut backends = vec![Backend::Legacy];
    if n <= 1000 {
        backends.push(Backend::Nft);
    }
    for backend in backends {
        let mut f = Figures::default();
        for _ in 0..runs {
            let mut dp = Iptables::new(backend, cfg());
            let _ = dp.cleanup();
            f.full.push(timed(|| dp.sync(full).expect("full sync")).0);
            f.replaced
                .push(timed(|| dp.sync(replaced).expect("delta")).0);
            dp.sync(SyncRequest { diff: None, ..full }).expect("resync");
            f.removed.push(timed(|| dp.sync(removed).expect("delta")).0);
            let resync = SyncRequest {
                diff: None,
                ..removed
            };
            f.resync.push(timed(|| dp.sync(resync).expect("resync")).0);
            dp.cleanup().unwrap();
        }
        f.row(n, &format!("iptables mode ({backend})"), Some(&base));
    }
    println!("(the full transaction is {ops} lines of nft text)");
}

/// Where a lookup benchmark connects: service `i`'s address.
#[derive(Clone, Copy)]
enum Target {
    ClusterIp,
    NodePort,
    LoadBalancerIp,
}

impl Target {
    fn addr(self, i: u32) -> SocketAddr {
        match self {
            Self::ClusterIp => SocketAddr::from((vip(i), 80)),
            Self::NodePort => SocketAddr::from((NODE_IP, node_port(i))),
            Self::LoadBalancerIp => SocketAddr::from((lb_ip(i), 80)),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::ClusterIp => "VIP",
            Self::NodePort => "node port",
            Self::LoadBalancerIp => "LB IP",
        }
    }
}

/// Lookup cost: latency through the first and the last of `n` Services' `target`, per mode.
fn lookup(runs: usize, targets: &[Target]) {
    let mut tb = wasp::testbed::Testbed::new("wb", "10.96.0.0/12").expect("testbed");
    let server = Ipv4Addr::new(10, 244, 1, 2);
    tb.add_pod("srv", &server.to_string()).expect("pod");
    let pod = tb.pod_ns("srv");
    let node = tb.node();
    // The server: accept, answer, and close once the client has; on a thread inside the pod's
    // namespace. The client closing first keeps TIME_WAIT on its side, before NAT: with the
    // server closing first, masquerade's random ports meet its TIME_WAIT sockets, whose
    // timestamp check drops a reused tuple's SYN now and then, and the connect stalls 1 s.
    // A second thread waits for those closes, so that the answering one never does.
    let listener = in_netns(&pod, || TcpListener::bind((server, 80)).expect("bind"));
    let (closes, closing) = std::sync::mpsc::channel::<TcpStream>();
    std::thread::spawn(move || {
        pin_to_cpu0();
        for mut s in closing {
            let _ = s.read(&mut [0u8; 16]);
        }
    });
    std::thread::spawn(move || {
        pin_to_cpu0();
        for s in listener.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            let _ = s.write_all(b"ok\n");
            let _ = closes.send(s);
        }
    });
    println!(
        "| services installed | mode | through | first median | first p90 | last median | last p90 | last / first |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let sizes = [10usize, 10_000];
    let external = !matches!(targets, [Target::ClusterIp]);
    let states: Vec<ProxyState> = sizes
        .iter()
        .map(|&n| {
            let s = state(n, 0, Some((server, 80)));
            if external { with_external(s) } else { s }
        })
        .collect();
    let sels: Vec<_> = states.iter().map(selections).collect();
    let modes: Vec<(&str, Box<dyn Dataplane>)> = vec![
        ("nftables", Box::new(Nftables::new(cfg()))),
        (
            "iptables (legacy)",
            Box::new(Iptables::new(Backend::Legacy, cfg())),
        ),
    ];
    for (name, mut dp) in modes {
        for &target in targets {
            lookup_mode(
                &node,
                name,
                dp.as_mut(),
                target,
                &sizes,
                &states,
                &sels,
                runs,
            );
        }
        in_netns(&node, || dp.cleanup().expect("cleanup"));
    }
}

/// One mode's and one target's rows.
#[allow(clippy::too_many_arguments)]
fn lookup_mode(
    node: &str,
    name: &str,
    dp: &mut dyn Dataplane,
    target: Target,
    sizes: &[usize; 2],
    states: &[ProxyState],
    sels: &[std::collections::BTreeMap<wasp_model::ServicePortName, wasp_model::Selection>],
    runs: usize,
) {
    // Sizes alternate, round by round, so that both see the same machine.
    let mut got: Vec<[Vec<Duration>; 2]> = vec![Default::default(), Default::default()];
    for _ in 0..runs {
        for (k, &n) in sizes.iter().enumerate() {
            let empty = ProxyState::default();
            let req = SyncRequest {
                state: &states[k],
                previous: &empty,
                selections: &sels[k],
                diff: None,
            };
            in_netns(node, || dp.sync(req).expect("sync"));
            let (first, last) = (target.addr(0), target.addr(n as u32 - 1));
            let [a, b] = in_netns(node, || {
                pin_to_cpu0();
                latencies([first, last], 100, Duration::from_secs(5));
                latencies([first, last], 1000, Duration::from_secs(30))
            });
            got[k][0].extend(a);
            got[k][1].extend(b);
        }
    }
    let mut medians = Vec::new();
    for (k, [a, b]) in got.into_iter().enumerate() {
        let (ma, mb) = (median(a.clone()), median(b.clone()));
        println!(
            "| {} | {name} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs | {:.2}× |",
            sizes[k],
            target.name(),
            ma.as_secs_f64() * 1e6,
            percentile(a, 0.9).as_secs_f64() * 1e6,
            mb.as_secs_f64() * 1e6,
            percentile(b, 0.9).as_secs_f64() * 1e6,
            mb.as_secs_f64() / ma.as_secs_f64()
        );
        medians.push((ma, mb));
    }
    println!(
        "{name}, {}: at 10,000 Services / at 10: first {:.2}×, last {:.2}×",
        target.name(),
        medians[1].0.as_secs_f64() / medians[0].0.as_secs_f64(),
        medians[1].1.as_secs_f64() / medians[0].1.as_secs_f64()
    );
}

/// The daemon's RSS with 10,000 Services × 10 endpoints read from a directory.
fn memory() {
    let n = 10_000usize;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::new();
    for i in 0..n as u32 {
        let eps: Vec<String> = (0..10u32)
            .map(|j| {
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * 16 + j);
                format!("{{ip: {ip}}}")
            })
            .collect();
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}}}\nspec: {{clusterIP: {}, ports: [{{port: 80}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: svc-{i}}}\nsubsets: [{{addresses: [{}], ports: [{{port: 8080}}]}}]\n---\n",
            vip(i),
            eps.join(", ")
        ));
    }
    std::fs::write(dir.path().join("services.yaml"), yaml).unwrap();
    println!("| what | time to the first full sync | RSS after it | peak RSS |");
    println!("|---|---|---|---|");
    // The nft tool loading the same transaction, as the first child (its peak is the peak of
    // all children so far).
    let s = state(n, 0, None);
    let sel = selections(&s);
    let empty = ProxyState::default();
    let req = SyncRequest {
        state: &s,
        previous: &empty,
        selections: &sel,
        diff: None,
    };
    let mut dp = Nftables::new(cfg());
    let tx = text(&dp.plan_sync(&req, &Existing::default()).tx);
    let took = nft_file(&tx);
    let peak = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage")
        .max_rss();
    println!(
        "| nft -f of the same full transaction | {} | – | {} kB |",
        fmt(took),
        peak
    );
    dp.cleanup().unwrap();
    let _ = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    for (mode, backend) in [("nftables", "auto"), ("iptables", "legacy")] {
        let start = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasp"))
            .args(["run", "--mode", mode, "--iptables-backend", backend])
            .arg("--config-dir")
            .arg(dir.path())
            .args(common::DAEMON_ARGS)
            .args([
                "--metrics-bind-address",
                "127.0.0.1:19249",
                "--healthz-bind-address",
                "127.0.0.1:19256",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("wasp run");
        let mut synced = None;
        while start.elapsed() < Duration::from_secs(300) {
            let out = Command::new("curl")
                .args(["-s", "http://127.0.0.1:19249/metrics"])
                .output();
            let body = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            if body.is_ok_and(|b| b.contains(&format!("wasp_programmed_service_ports {n}"))) {
                synced = Some(start.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let field = |k: &str| {
            status
                .lines()
                .find(|l| l.starts_with(k))
                .map(|l| l[k.len()..].trim().to_string())
                .unwrap_or_default()
        };
        println!(
            "| wasp run --mode {mode} | {} | {} | {} |",
            synced.map_or("did not finish in 300 s".into(), fmt),
            field("VmRSS:"),
            field("VmHWM:")
        );
        let _ = child.kill();
        let _ = child.wait();
        let _ = Command::new(env!("CARGO_BIN_EXE_wasp"))
            .args(["cleanup", "--mode", mode, "--iptables-backend", backend])
            .output();
    }
}

fn main() {
    let args = common::args();
    if !common::in_fresh_netns(&args) {
        return;
    }
    let runs = common::runs(3);
    let all = args.is_empty();
    let want = |what: &str| all || args.iter().any(|a| a == what);
    println!("median of {runs} runs per figure");
    if want("sync") {
        let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
        let sizes = if sizes.is_empty() {
            vec![1000, 10_000]
        } else {
            sizes
        };
        println!(
            "| services | method | full sync from empty | one endpoint replaced | one endpoint removed | full resync, populated |"
        );
        println!("|---|---|---|---|---|---|");
        for n in sizes {
            sync(n, runs);
        }
    }
    if want("lookup") {
        lookup(runs, &[Target::ClusterIp]);
    }
    if want("external") {
        lookup(runs, &[Target::NodePort, Target::LoadBalancerIp]);
    }
    if want("memory") {
        memory();
    }
}
