//! DNS queries per second (not a test): wasp's responder against dnsmasq (Debian's
//! `dnsmasq-base`, from a hosts file) serving the same 1,000 Service names on loopback, in one
//! run, round by round. `cargo bench -p wasp --bench dns`; `WASP_BENCH_RUNS` rounds (3).
//! Four client threads, each sending one A query and waiting for its answer, for 3 s per
//! server per round. Without dnsmasq its row is skipped.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use wasp::dns::{Dns, Records};
use wasp_model::{
    NamespacedName, Protocol, ProxyState, ServicePort, ServicePortName, ServicePortState,
};

const SERVICES: u32 = 1000;
const WASP: &str = "127.0.0.1:15353";
const DNSMASQ: &str = "127.0.0.1:15354";

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i)
}

fn state() -> ProxyState {
    let mut s = ProxyState::default();
    for i in 0..SERVICES {
        let spn = ServicePortName::new(
            NamespacedName::new("bench", format!("svc-{i}")),
            "",
            Protocol::Tcp,
        );
        let svc = ServicePort::new(IpAddr::V4(vip(i)), 80, Protocol::Tcp);
        s.ports.insert(spn, ServicePortState::new(svc, Vec::new()));
    }
    s
}

fn dnsmasq(dir: &std::path::Path) -> Option<Child> {
    let hosts: String = (0..SERVICES)
        .map(|i| format!("{} svc-{i}.bench.svc.cluster.local\n", vip(i)))
        .collect();
    let path = dir.join("hosts");
    std::fs::write(&path, hosts).unwrap();
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--port=15354",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
        ])
        .args([
            "--no-resolv",
            "--no-hosts",
            "--local=/cluster.local/",
            "--cache-size=10000",
            "--user=root",
        ])
        .arg(format!("--addn-hosts={}", path.display()))
        .spawn();
    match child {
        Ok(c) => {
            std::thread::sleep(Duration::from_millis(500));
            Some(c)
        }
        Err(e) => {
            eprintln!("dnsmasq not run ({e}; apt-get install dnsmasq-base): its row is skipped");
            None
        }
    }
}

/// Queries per second against `server` from 4 threads for 3 s; every answer is checked.
fn qps(server: SocketAddr) -> f64 {
    let start = Instant::now();
    let window = Duration::from_secs(3);
    let done: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u32)
            .map(|w| {
                s.spawn(move || {
                    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    sock.connect(server).unwrap();
                    let mut buf = [0u8; 512];
                    let (mut n, mut i) = (0u64, w);
                    while start.elapsed() < window {
                        let mut m = Message::new();
                        m.set_id(i as u16);
                        let name = format!("svc-{}.bench.svc.cluster.local.", i % SERVICES);
                        m.add_query(Query::query(
                            Name::from_ascii(&name).unwrap(),
                            RecordType::A,
                        ));
                        sock.send(&m.to_vec().unwrap()).unwrap();
                        if let Ok(len) = sock.recv(&mut buf) {
                            let a = Message::from_vec(&buf[..len]).unwrap();
                            assert_eq!(a.answers().len(), 1, "{name}: {a:?}");
                            n += 1;
                        }
                        i += 4;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dns = rt
        .block_on(Dns::start(WASP.parse().unwrap(), Vec::new()))
        .expect("the responder starts");
    let store = wasp_resolve::ObjectStore::default();
    dns.set(Records::build(&state(), &store, "cluster.local"));
    let dir = tempfile::tempdir().unwrap();
    let mut masq = dnsmasq(dir.path());
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..common::runs(3) {
        ours.push(qps(WASP.parse().unwrap()));
        if masq.is_some() {
            theirs.push(qps(DNSMASQ.parse().unwrap()));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let (o, t) = (med(&mut ours), med(&mut theirs));
    println!(
        "| server | queries/s (median of {} rounds) |\n|---|---|",
        ours.len()
    );
    println!("| wasp | {:.0} |", o.unwrap_or(0.0));
    if let Some(t) = t {
        println!("| dnsmasq | {t:.0} |");
        println!("wasp / dnsmasq: {:.2}×", o.unwrap_or(0.0) / t);
    }
    if let Some(m) = masq.as_mut() {
        let _ = m.kill();
        let _ = m.wait();
    }
}
