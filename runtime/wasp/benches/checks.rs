//! The active health checker's CPU at 10,000 endpoints (not a test): `cargo bench -p wasp
//! --bench checks`. TCP checks every 5 s, as the defaults, to 10,000 distinct addresses on one
//! port, where `wasp serve` (another process) listens. The figure is this process's user +
//! system CPU time over 10 s, after one interval of warm-up (probes start spread over the
//! first interval), as a share of one core. Two places for the endpoints, in one run:
//!
//! - *loopback*: 127.0.x.y, beside the checker. Loopback runs the endpoint's side of every
//!   handshake in the prober's context, so the endpoints' kernel work counts as the checker's.
//! - *remote*: 10.201.x.y in another network namespace behind a veth, whose receive processing
//!   is steered to the other CPU (RPS) while the checker keeps to CPU 0, as when the endpoints
//!   are other hosts: what is counted is the checker's own side.
//!
//! Then the floor at each place, in the same run: the same connects on the same 20 ms grid
//! from one thread with no runtime (non-blocking, a tick to complete, closed with a reset),
//! which is the kernel's own cost of probing by connecting. As root the checker probes with
//! half-open handshakes from a raw socket; run it without `CAP_NET_RAW` (`setpriv
//! --bounding-set=-net_raw --inh-caps=-net_raw`) and it connects. `WASP_BENCH_ONLY=loopback`
//! or `remote` measures one place.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use wasp::checks::{CheckMetrics, Checker, ResultLabel};
use wasp::testbed::Testbed;
use wasp_model::{HealthCheck, HealthProbe};

const PORT: u16 = 18_999;
const ENDPOINTS: u32 = 10_000;
const SERVE: &str = env!("CARGO_BIN_EXE_wasp");

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let d =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    d(u.user_time()) + d(u.system_time())
}

fn main() {
    if !wasp::testbed::is_root() {
        eprintln!("this benchmark needs root (it builds network namespaces); skipped");
        return;
    }
    let probe = if socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::TCP),
    )
    .is_ok()
    {
        "half-open (raw socket)"
    } else {
        "connect (no CAP_NET_RAW)"
    };
    println!("probes: {probe}");
    let mut tb = Testbed::new("wasp-bench-checks", "10.96.0.0/16").expect("the node namespace");
    tb.add_pod("far", "10.244.9.2")
        .expect("the endpoints' namespace");
    let (node, far) = (tb.node(), tb.pod_ns("far"));
    let run = |ns: &str, args: &[&str]| {
        let out = tb.exec_in(ns, args).expect("run");
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    // Every 10.201.x.y is the far namespace's own; its receive work goes to CPU 1.
    run(
        &far,
        &["ip", "route", "add", "local", "10.201.0.0/16", "dev", "lo"],
    );
    run(
        &far,
        &[
            "sh",
            "-c",
            "echo 2 > /sys/class/net/eth0/queues/rx-0/rps_cpus",
        ],
    );
    // Through the pod's address: one neighbour, not one per endpoint.
    run(
        &node,
        &[
            "ip",
            "route",
            "add",
            "10.201.0.0/16",
            "via",
            "10.244.9.2",
            "dev",
            "wv0",
        ],
    );
    let port = PORT.to_string();
    let serve = [SERVE, "serve", "--name", "target", "--tcp", &port];
    tb.spawn_in(&node, &serve, true).expect("serve on the node");
    tb.spawn_in(&far, &serve, true).expect("serve far");
    std::thread::sleep(Duration::from_millis(500));
    let only = std::env::var("WASP_BENCH_ONLY").ok();
    for (place, a) in [("loopback", 127), ("remote", 10)] {
        if only.as_deref().is_some_and(|o| o != place) {
            continue;
        }
        let b = if a == 127 { 0 } else { 201 };
        let targets: Vec<SocketAddr> = (0..ENDPOINTS)
            .map(|i| {
                let ip = Ipv4Addr::new(a, b, (i / 250) as u8, (i % 250 + 1) as u8);
                SocketAddr::new(IpAddr::V4(ip), PORT)
            })
            .collect();
        let (checker, floor) = common::in_netns(&node, || {
            common::pin_to_cpu0();
            (measure(&targets), floor(&targets, Duration::from_secs(5)))
        });
        println!(
            "{place}: floor, the same connects from one thread: {} probes, CPU {:.2} % of one core; checker / floor {:.2}×",
            floor.0,
            floor.1 * 100.0,
            checker / floor.1
        );
    }
}

/// The checker's CPU as a share of one core, probing `targets` every 5 s.
fn measure(targets: &[SocketAddr]) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let check = HealthCheck {
        probe: HealthProbe::Tcp,
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
    };
    let targets: BTreeMap<SocketAddr, HealthCheck> =
        targets.iter().map(|t| (*t, check.clone())).collect();
    let metrics = CheckMetrics::default();
    let (wake, _woken) = tokio::sync::mpsc::channel(1);
    let mut checker = rt.block_on(async { Checker::new(wake, metrics.clone()) });
    rt.block_on(async { checker.update(&targets) });
    std::thread::sleep(check.interval);
    let count = |m: &CheckMetrics, r: &str| {
        m.checks
            .get_or_create(&ResultLabel { result: r.into() })
            .get()
    };
    let (probes, t, c) = (count(&metrics, "healthy"), Instant::now(), cpu());
    std::thread::sleep(Duration::from_secs(10));
    let (used, wall) = (cpu() - c, t.elapsed());
    let done = count(&metrics, "healthy") - probes;
    let share = used.as_secs_f64() / wall.as_secs_f64();
    println!(
        "{} endpoints at {}, TCP every {:?}: {done} probes in {:.1} s ({} failed in all), CPU {:.2} % of one core",
        targets.len(),
        targets.keys().next().map(|a| a.ip()).unwrap(),
        check.interval,
        wall.as_secs_f64(),
        count(&metrics, "unhealthy"),
        share * 100.0
    );
    drop(checker);
    share
}

/// The kernel's cost of probing by connecting: every target connected once per `interval`, on
/// a 20 ms grid, from this thread alone, each checked at the next tick (connected or not) and
/// closed with a reset, for 10 s. The probes that connected, and the process's CPU as a share
/// of one core.
fn floor(targets: &[SocketAddr], interval: Duration) -> (u64, f64) {
    use socket2::{Domain, Socket, Type};
    let tick = Duration::from_millis(20);
    let per_tick = targets.len() * tick.as_millis() as usize / interval.as_millis() as usize;
    let (start, c) = (Instant::now(), cpu());
    let (mut pending, mut next, mut connected, mut ticks) = (Vec::new(), 0usize, 0u64, 0u32);
    while start.elapsed() < Duration::from_secs(10) {
        for s in pending.drain(..) {
            let s: Socket = s;
            if s.peer_addr().is_ok() {
                connected += 1;
            }
            let _ = s.set_linger(Some(Duration::ZERO));
        }
        for _ in 0..per_tick {
            let to = targets[next % targets.len()];
            next += 1;
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            s.set_nonblocking(true).expect("non-blocking");
            let _ = s.connect(&to.into());
            pending.push(s);
        }
        ticks += 1;
        std::thread::sleep((start + tick * ticks).saturating_duration_since(Instant::now()));
    }
    let used = cpu() - c;
    (
        connected,
        used.as_secs_f64() / start.elapsed().as_secs_f64(),
    )
}
