//! What the sync benchmarks share: the synthetic state, medians, and running inside a fresh
//! network namespace.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use wasp_model::{
    Endpoint, NamespacedName, Protocol, ProxyState, Selection, ServicePort, ServicePortName,
    ServicePortState,
};

/// The VIP of service `i`.
pub fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + i)
}

/// The node port of service `i` (the model does not check the range).
pub fn node_port(i: u32) -> u16 {
    20000 + i as u16
}

/// The LoadBalancer IP of service `i` (in the benchmarking range 198.18.0.0/15).
pub fn lb_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 10)) + i)
}

/// The node address node ports answer on in the benchmarks (the testbed's).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);

/// `s` with every Service a LoadBalancer: node port [`node_port`] on [`NODE_IP`], and
/// LoadBalancer IP [`lb_ip`].
pub fn with_external(mut s: ProxyState) -> ProxyState {
    for p in s.ports.values_mut() {
        // Service k is the one whose VIP is vip(k).
        let IpAddr::V4(ip) = p.service.cluster_ips[0] else {
            continue;
        };
        let k = u32::from(ip) - u32::from(vip(0));
        p.service.node_port = Some(node_port(k));
        p.service.load_balancer_ips = vec![IpAddr::V4(lb_ip(k))];
    }
    s.node_port_ips = Some(vec![IpAddr::V4(NODE_IP)]);
    s
}

/// `n` TCP Services × 10 endpoints; `shift` moves one endpoint of service 0 (the one-endpoint
/// change). `real` replaces the endpoints of the first and last service with that one.
pub fn state(n: usize, shift: u32, real: Option<(Ipv4Addr, u16)>) -> ProxyState {
    state_with(n, shift, real, 10)
}

/// As [`state`], with service 0 keeping only `first` endpoints.
pub fn state_with(n: usize, shift: u32, real: Option<(Ipv4Addr, u16)>, first: u32) -> ProxyState {
    let mut s = ProxyState::default();
    for i in 0..n as u32 {
        let name = ServicePortName::new(
            NamespacedName::new("bench", format!("svc-{i}")),
            "http",
            Protocol::Tcp,
        );
        let eps = match real {
            Some((ip, port)) if i == 0 || i + 1 == n as u32 => {
                vec![Endpoint::ready(IpAddr::V4(ip), port)]
            }
            _ => (0..if i == 0 { first } else { 10 })
                .map(|j| {
                    let k = if i == 0 && j == 0 { shift } else { 0 };
                    let ip = Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * 16 + j + k * 1_000_000,
                    );
                    Endpoint::ready(IpAddr::V4(ip), 8080)
                })
                .collect(),
        };
        let service = ServicePort::new(IpAddr::V4(vip(i)), 80, Protocol::Tcp);
        s.ports.insert(name, ServicePortState::new(service, eps));
    }
    s
}

/// Equal weights for every port.
pub fn selections(s: &ProxyState) -> BTreeMap<ServicePortName, Selection> {
    s.ports
        .iter()
        .map(|(n, p)| (n.clone(), Selection::equal(p.endpoints.len())))
        .collect()
}

/// The median.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A duration for a table: seconds above 1 s, else milliseconds.
pub fn fmt(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else if d.as_secs_f64() >= 0.01 {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    }
}

/// Runs `f` on a thread inside the network namespace `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

/// Re-runs this benchmark inside a fresh network namespace unless it already is there;
/// returns false in the parent (which should exit) or when not root (a message says so).
pub fn in_fresh_netns(args: &[String]) -> bool {
    if std::env::var_os("WASP_BENCH_IN_NETNS").is_some() {
        return true;
    }
    let ns = format!("wasp-bench-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("this benchmark needs root (it runs in its own network namespace); skipped");
        return false;
    }
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args(args)
        .env("WASP_BENCH_IN_NETNS", &ns)
        .status();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    std::process::exit(status.map_or(1, |s| s.code().unwrap_or(1)));
}

/// The benchmark's arguments, without cargo's `--bench`.
pub fn args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect()
}

/// Runs per figure: `WASP_BENCH_RUNS`, else `default`.
pub fn runs(default: usize) -> usize {
    std::env::var("WASP_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

/// Connect+response latencies to each of `addrs`, taken in turn so that both see the same
/// machine: at most `count` rounds and `limit` time.
pub fn latencies(addrs: [SocketAddr; 2], count: usize, limit: Duration) -> [Vec<Duration>; 2] {
    let start = Instant::now();
    let mut out = [Vec::with_capacity(count), Vec::with_capacity(count)];
    let mut buf = [0u8; 16];
    while out[0].len() < count && start.elapsed() < limit {
        for (i, addr) in addrs.iter().enumerate() {
            let t = Instant::now();
            let mut s = TcpStream::connect_timeout(addr, Duration::from_secs(1))
                .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let _ = s
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("response from {addr}: {e}"));
            out[i].push(t.elapsed());
        }
    }
    out
}

/// Client and server share CPU 0: otherwise the scheduler's choice of one core or two makes
/// the latency bimodal (about 23 µs or 53 µs here), which would swamp the lookup cost.
pub fn pin_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).expect("cpu 0");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).expect("pin");
}

/// The `p` quantile of `v`.
pub fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

/// The flags every benchmark's `wasp run` shares: the CIDRs the synthetic state uses, a node
/// name, and no full resync while it is measured.
pub const DAEMON_ARGS: [&str; 8] = [
    "--service-cidr",
    "10.96.0.0/12",
    "--cluster-cidr",
    "10.128.0.0/9",
    "--node-name",
    "bench",
    "--sync-period",
    "1h",
];

/// The render configuration the sync and lookup benchmarks use.
pub fn cfg() -> wasp_dataplane::RenderConfig {
    wasp_dataplane::RenderConfig {
        cluster_cidrs: vec!["10.128.0.0/9".parse().unwrap()],
        masquerade_all: false,
        masquerade_mark: 0x2000,
        service_cidrs: Vec::new(),
        capture: None,
    }
}

/// `f`'s result, with how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed(), v)
}
