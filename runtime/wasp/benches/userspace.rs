//! Benchmarks of the userspace mode's data path (not a test). One veth path, node → pod,
//! measured four ways in the same run, round by round: straight to the pod (*direct*),
//! through kernel DNAT (the nftables mode), through wasp's proxy (the userspace mode), and
//! through HAProxy (Debian's, TCP mode, 2 threads).
//!
//! `cargo bench -p wasp --bench userspace -- [throughput] [rate] [latency] [memory]` (all by
//! default). `WASP_BENCH_RUNS` sets the rounds (default 3). Needs root and `haproxy`
//! (`apt-get install haproxy`; without it, its rows are skipped).
//!
//! - **throughput**: one connection, 3 s of 1 MiB writes into a sink; Gbit/s.
//! - **rate**: 4 client threads, one request per connection, for 3 s; connections/s.
//! - **latency**: one client, connect + request + response, 3 s; p50 and p99.
//! - **memory**: the proxy's resident memory per idle connection, with 4,000 held (this
//!   machine's hard limit of 20,000 open files per process bounds what one process holds);
//!   HAProxy's the same way. `pick`: the latency row *wasp + least-connections* is the
//!   proxy asking the built-in plugin for every connection, beside plain *wasp*.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{in_netns, median};
use wasp::planning::Planning;
use wasp_dataplane::nftables::Nftables;
use wasp_dataplane::userspace::Userspace;
use wasp_dataplane::{Dataplane, RenderConfig, SyncRequest};
use wasp_model::{
    BalancerRef, Endpoint, NamespacedName, Protocol, ProxyState, ServicePort, ServicePortName,
    ServicePortState,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The Service whose plugin picks every connection.
const PICKED_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
/// The server's ports: request/response, sink, hold.
const RR: u16 = 80;
const SINK: u16 = 81;
const HOLD: u16 = 82;
const HAPROXY_BASE: u16 = 18000;
const HELD: usize = 4000;

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Dnat,
    Proxy,
    ProxyPicked,
    Haproxy,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Dnat => "kernel DNAT (nftables)",
            Self::Proxy => "wasp userspace",
            Self::ProxyPicked => "wasp + least-connections",
            Self::Haproxy => "HAProxy",
        }
    }

    fn addr(self, port: u16) -> SocketAddr {
        match self {
            Self::Direct => SocketAddr::from((SERVER, port)),
            Self::Dnat | Self::Proxy => SocketAddr::from((VIP, port)),
            Self::ProxyPicked => SocketAddr::from((PICKED_VIP, port)),
            Self::Haproxy => SocketAddr::from(([127, 0, 0, 1], HAPROXY_BASE + port)),
        }
    }
}

fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        masquerade_all: false,
        masquerade_mark: 0x2000,
        service_cidrs: Vec::new(),
        capture: None,
    }
}

/// The Services: the VIP with the three ports, and the picked VIP with one.
fn services() -> ProxyState {
    let mut s = ProxyState::default();
    let mut add = |name: &str, vip: Ipv4Addr, port: u16, balancer: Option<&str>| {
        let mut svc = ServicePort::new(IpAddr::V4(vip), port, Protocol::Tcp);
        svc.balancer = balancer.map(|b| BalancerRef {
            name: b.into(),
            config: String::new(),
        });
        let eps = vec![Endpoint::ready(IpAddr::V4(SERVER), port)];
        let spn = ServicePortName::new(
            NamespacedName::new("bench", name),
            port.to_string(),
            Protocol::Tcp,
        );
        s.ports.insert(spn, ServicePortState::new(svc, eps));
    };
    for port in [RR, SINK, HOLD] {
        add("web", VIP, port, None);
    }
    add("picked", PICKED_VIP, RR, Some("least-connections"));
    s
}

/// Accepts on `l` forever, each connection handled by `f` on a pool of threads.
fn serve(l: TcpListener, threads: usize, f: fn(TcpStream)) {
    let l = Arc::new(l);
    for _ in 0..threads {
        let l = Arc::clone(&l);
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                f(s);
            }
        });
    }
}

/// The pod's servers, on threads inside its namespace.
fn servers(pod: &str) {
    let [rr, sink, hold] = in_netns(pod, || {
        [RR, SINK, HOLD].map(|p| TcpListener::bind((SERVER, p)).expect("bind"))
    });
    // Answers, then waits for the client to close first (its TIME_WAIT stays on its side).
    serve(rr, 8, |mut s| {
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"ok\n");
        let _ = s.read(&mut buf);
    });
    serve(sink, 2, |mut s| {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n @ 1..) = s.read(&mut buf) {
            total += n as u64;
        }
        let _ = s.write_all(&total.to_be_bytes());
    });
    std::thread::spawn(move || {
        for s in hold.incoming().flatten() {
            HELD_BY_SERVER.lock().unwrap().push(s);
        }
    });
}

/// The server's side of the held connections, closed after each memory figure.
static HELD_BY_SERVER: std::sync::Mutex<Vec<TcpStream>> = std::sync::Mutex::new(Vec::new());

/// HAProxy in the node's namespace, in front of the pod's three ports.
fn haproxy(node: &str, dir: &std::path::Path) -> Option<Child> {
    if !Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("haproxy is not installed (apt-get install haproxy): its rows are skipped");
        return None;
    }
    let mut conf = String::from(
        "global\n  nbthread 2\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n",
    );
    for p in [RR, SINK, HOLD] {
        conf.push_str(&format!(
            "listen p{p}\n  bind 127.0.0.1:{}\n  server s {SERVER}:{p}\n",
            HAPROXY_BASE + p
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", node, "haproxy", "-db", "-f"])
        .arg(&path)
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    Some(child)
}

const WINDOW: Duration = Duration::from_secs(3);

/// One connection's bytes per second into the sink, in Gbit/s.
fn throughput(addr: SocketAddr) -> f64 {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    let buf = vec![0u8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < WINDOW {
        s.write_all(&buf).expect("write");
        sent += buf.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut got = [0u8; 8];
    s.read_exact(&mut got).expect("the sink's count");
    assert_eq!(u64::from_be_bytes(got), sent, "every byte arrived");
    sent as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

/// One request per connection, from 4 threads for the window: connections per second.
fn rate(addr: SocketAddr) -> f64 {
    let start = Instant::now();
    let done: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(move || {
                    let mut n = 0;
                    while start.elapsed() < WINDOW {
                        if request(addr).is_some() {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

/// Connect, request, response; the time it took.
fn request(addr: SocketAddr) -> Option<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.write_all(b"GET\n").ok()?;
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).ok()?;
    Some(t.elapsed())
}

/// Sequential requests for the window (at most 20,000).
fn latencies(addr: SocketAddr) -> Vec<Duration> {
    let start = Instant::now();
    let mut v = Vec::new();
    while start.elapsed() < WINDOW && v.len() < 20_000 {
        v.extend(request(addr));
    }
    v
}

fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// The resident memory `pid` gains per idle connection, with [`HELD`] held through `addr`.
fn memory_per_connection(addr: SocketAddr, pid: u32) -> f64 {
    let before = rss_kib(pid);
    let held: Vec<TcpStream> = (0..HELD)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert_eq!(held.len(), HELD, "every connection held");
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    drop(held);
    HELD_BY_SERVER.lock().unwrap().clear();
    std::thread::sleep(Duration::from_millis(500));
    (after - before) / HELD as f64
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

/// What one round measured on one path.
#[derive(Default, Clone)]
struct Figures {
    gbps: Vec<f64>,
    conns: Vec<f64>,
    lat: Vec<Duration>,
    kib: Vec<f64>,
}

/// The two modes' dataplanes, the picker's planning, and switching between them.
struct Modes {
    node: String,
    dnat: Nftables,
    user: Userspace,
    planning: Planning,
    state: ProxyState,
}

/// The plugins' `host.stats`, from the proxy.
struct ProxyStats(wasp_proxy::Stats);

impl wasp_plugin::state::StatsSource for ProxyStats {
    fn stats(&self, port: &str, index: u32) -> (u32, u32) {
        self.0.endpoint(port, index)
    }
}

impl Modes {
    fn new(node: &str) -> Self {
        let state = services();
        let planner =
            wasp_plugin::PluginPlanner::new(wasp_plugin::EngineConfig::default(), BTreeMap::new())
                .expect("planner");
        let mut planning = Planning::new(planner);
        planning.update(&state, &ProxyState::default().diff(&state));
        let mut user = Userspace::new(&wasp_dataplane::DataplaneConfig {
            render: cfg(),
            iptables_backend: wasp_dataplane::BackendChoice::Detect,
            proxy: wasp_proxy::ProxyConfig::default(),
            capture_rules: wasp_dataplane::RulesChoice::Nftables,
            ipvs_drain_timeout: Duration::ZERO,
            ipvs_helper_rules: wasp_dataplane::RulesChoice::Nftables,
        });
        in_netns(node, || user.probe().expect("the userspace mode starts"));
        let proxy = user.userspace_proxy().expect("started");
        proxy.set_picker(Arc::new(planning.picker()));
        let stats = Arc::new(ProxyStats(proxy.stats()));
        planning.planner().set_stats_source(stats);
        Self {
            node: node.into(),
            dnat: Nftables::new(cfg()),
            user,
            planning,
            state,
        }
    }

    /// Programs the mode `path` goes through.
    fn switch(&mut self, path: Path) {
        let empty = ProxyState::default();
        let req = SyncRequest {
            state: &self.state,
            previous: &empty,
            selections: self.planning.selections(),
            diff: None,
        };
        let dp: &mut dyn Dataplane = match path {
            Path::Dnat => &mut self.dnat,
            Path::Proxy | Path::ProxyPicked => &mut self.user,
            Path::Direct | Path::Haproxy => return,
        };
        in_netns(&self.node, || dp.sync(req).expect("sync"));
    }
}

/// Which figures to take.
struct Wanted {
    throughput: bool,
    rate: bool,
    latency: bool,
    memory: bool,
}

/// One round over every path.
fn round(
    modes: &mut Modes,
    paths: &[Path],
    want: &Wanted,
    haproxy: Option<u32>,
    out: &mut [Figures],
) {
    let own = std::process::id();
    for (k, &path) in paths.iter().enumerate() {
        modes.switch(path);
        let node = modes.node.clone();
        let f = &mut out[k];
        in_netns(&node, || {
            if want.throughput && path != Path::ProxyPicked {
                f.gbps.push(throughput(path.addr(SINK)));
            }
            if want.rate {
                f.conns.push(rate(path.addr(RR)));
            }
            if want.latency {
                f.lat.extend(latencies(path.addr(RR)));
            }
            let pid = match path {
                Path::Proxy => Some(own),
                Path::Haproxy => haproxy,
                _ => None,
            };
            if want.memory
                && let Some(pid) = pid
            {
                f.kib.push(memory_per_connection(path.addr(HOLD), pid));
            }
        });
    }
}

/// The median of `v`, and its ratio to the median of `base` (`-` when either is empty).
fn cell(v: &[f64], base: &[f64], unit: &str) -> (String, String) {
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    match (med(v), med(base)) {
        (Some(m), Some(b)) => (format!("{m:.2} {unit}"), format!("{:.2}×", m / b)),
        (Some(m), None) => (format!("{m:.2} {unit}"), "-".into()),
        _ => ("-".into(), "-".into()),
    }
}

fn report(paths: &[Path], figs: &[Figures]) {
    println!(
        "| path | throughput | vs direct | conn/s (4 clients) | vs direct | p50 | p99 | RSS per idle connection |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (path, f) in paths.iter().zip(figs) {
        let (g, gr) = cell(&f.gbps, &figs[0].gbps, "Gbit/s");
        let (c, cr) = cell(&f.conns, &figs[0].conns, "");
        let (p50, p99) = if f.lat.is_empty() {
            ("-".into(), "-".into())
        } else {
            let us = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6);
            (
                us(median(f.lat.clone())),
                us(percentile(f.lat.clone(), 0.99)),
            )
        };
        let (kib, _) = cell(&f.kib, &[], "KiB");
        println!(
            "| {} | {g} | {gr} | {c} | {cr} | {p50} | {p99} | {kib} |",
            path.name()
        );
    }
}

fn main() {
    let args = common::args();
    if !common::in_fresh_netns(&std::env::args().skip(1).collect::<Vec<_>>()) {
        return;
    }
    let all = args.is_empty();
    let has = |a: &str| all || args.iter().any(|x| x == a);
    let want = Wanted {
        throughput: has("throughput"),
        rate: has("rate"),
        latency: has("latency"),
        memory: has("memory"),
    };
    let mut tb = wasp::testbed::Testbed::new("ub", "10.96.0.0/12").expect("testbed");
    tb.add_pod("srv", &SERVER.to_string()).expect("pod");
    let (pod, node) = (tb.pod_ns("srv"), tb.node());
    for s in [
        "net.ipv4.tcp_tw_reuse=1",
        "net.ipv4.ip_local_port_range=1024 65535",
    ] {
        let _ = Command::new("ip")
            .args(["netns", "exec", &node, "sysctl", "-qw", s])
            .status();
    }
    servers(&pod);
    let dir = tempfile::tempdir().unwrap();
    let mut ha = haproxy(&node, dir.path());
    let mut paths = vec![Path::Direct, Path::Dnat, Path::Proxy, Path::ProxyPicked];
    if ha.is_some() {
        paths.push(Path::Haproxy);
    }
    let mut modes = Modes::new(&node);
    let mut figs = vec![Figures::default(); paths.len()];
    let ha_pid = ha.as_ref().map(Child::id);
    for _ in 0..common::runs(3) {
        round(&mut modes, &paths, &want, ha_pid, &mut figs);
    }
    report(&paths, &figs);
    in_netns(&node, || modes.user.cleanup().expect("cleanup"));
    if let Some(h) = ha.as_mut() {
        let _ = h.kill();
        let _ = h.wait();
    }
}
