//! The active health checker's CPU at 10,000 endpoints (not a test): `cargo bench -p wasp
//! --bench checks`. Every endpoint is a distinct loopback address (127.0.x.y) on one port,
//! where `wasp serve` (another process) accepts; TCP checks every 5 s, as the defaults. The
//! figure is this process's user + system CPU time over 10 s, after one interval of warm-up
//! (probes start spread over the first interval), as a share of one core. Then the floor, in
//! the same run: the same connects on the same 20 ms grid from one thread with no runtime
//! (non-blocking, a tick to complete, closed with a reset), which is the kernel's own cost of
//! the probes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use wasp::checks::{CheckMetrics, Checker, ResultLabel};
use wasp_model::{HealthCheck, HealthProbe};

const PORT: u16 = 18_999;
const ENDPOINTS: u32 = 10_000;

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let d =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    d(u.user_time()) + d(u.system_time())
}

fn main() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .args(["serve", "--name", "target", "--tcp", &PORT.to_string()])
        .spawn()
        .expect("start wasp serve");
    std::thread::sleep(Duration::from_millis(500));
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
    let targets: BTreeMap<SocketAddr, HealthCheck> = (0..ENDPOINTS)
        .map(|i| {
            let ip = Ipv4Addr::new(127, 0, (i / 250) as u8, (i % 250 + 1) as u8);
            (SocketAddr::new(IpAddr::V4(ip), PORT), check.clone())
        })
        .collect();
    let metrics = CheckMetrics::default();
    let (wake, _woken) = tokio::sync::mpsc::channel(1);
    let mut checker = rt.block_on(async { Checker::new(wake, metrics.clone()) });
    rt.block_on(async { checker.update(&targets) });
    std::thread::sleep(check.interval);
    let ok = |m: &CheckMetrics, r: &str| {
        m.checks
            .get_or_create(&ResultLabel { result: r.into() })
            .get()
    };
    let (probes, t, c) = (ok(&metrics, "healthy"), Instant::now(), cpu());
    std::thread::sleep(Duration::from_secs(10));
    let (used, wall) = (cpu() - c, t.elapsed());
    let done = ok(&metrics, "healthy") - probes;
    println!(
        "{ENDPOINTS} endpoints, TCP every {:?}: {done} probes in {:.1} s ({} failed in all), CPU {:.2} % of one core",
        check.interval,
        wall.as_secs_f64(),
        ok(&metrics, "unhealthy"),
        used.as_secs_f64() / wall.as_secs_f64() * 100.0
    );
    drop(checker);
    let targets: Vec<SocketAddr> = targets.into_keys().collect();
    let (probes, floor) = floor(&targets, check.interval);
    println!(
        "floor, the same connects from one thread: {probes} probes, CPU {:.2} % of one core; checker / floor {:.2}×",
        floor * 100.0,
        used.as_secs_f64() / wall.as_secs_f64() / floor
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// The kernel's cost of the probes: every target connected once per `interval`, on a 20 ms
/// grid, from this thread alone, each checked at the next tick (connected or not) and closed
/// with a reset, for 10 s. The probes that connected, and the process's CPU as a share of one
/// core.
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
