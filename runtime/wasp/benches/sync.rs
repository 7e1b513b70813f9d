//! Sync benchmark of the iptables mode (not a test): render + apply time of a full sync of
//! N Services × 10 endpoints from empty, of one endpoint change at N, and iptables-restore
//! alone on the same full input (the floor), all in one run so they compare as ratios.
//!
//! Needs root: it re-runs itself inside a fresh network namespace.
//!
//! `cargo bench -p wasp --bench sync -- [N ...]` (default 1000 10000); `WASP_BENCH_RUNS`
//! sets runs per figure (default 3), `WASP_BENCH_BACKEND` nft (default) or legacy.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use wasp_dataplane::iptables::{Backend, Iptables, RenderConfig, Scope, Tables, render};
use wasp_dataplane::{Dataplane, SyncRequest};
use wasp_model::{
    Endpoint, NamespacedName, Protocol, ProxyState, Selection, ServicePort, ServicePortName,
    ServicePortState,
};

fn state(n: usize, shift: u32) -> ProxyState {
    let mut s = ProxyState::default();
    for i in 0..n as u32 {
        let name = ServicePortName::new(
            NamespacedName::new("bench", format!("svc-{i}")),
            "http",
            Protocol::Tcp,
        );
        let vip = IpAddr::V4(Ipv4Addr::from(
            u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + i,
        ));
        let eps = (0..10u32)
            .map(|j| {
                // `shift` moves one endpoint of service 0: the one-endpoint change.
                let k = if i == 0 && j == 0 { shift } else { 0 };
                let ip = Ipv4Addr::from(
                    u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * 16 + j + k * 1_000_000,
                );
                Endpoint::ready(IpAddr::V4(ip), 8080)
            })
            .collect();
        let service = ServicePort::new(vip, 80, Protocol::Tcp);
        s.ports.insert(
            name,
            ServicePortState {
                service,
                endpoints: eps,
                has_any_endpoints: true,
            },
        );
    }
    s
}

fn selections(s: &ProxyState) -> BTreeMap<ServicePortName, Selection> {
    s.ports
        .iter()
        .map(|(n, p)| (n.clone(), Selection::equal(p.endpoints.len())))
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

fn bench(n: usize, runs: usize, backend: Backend) {
    let cfg = RenderConfig {
        ipv4: true,
        cluster_cidrs: vec!["10.128.0.0/9".parse().unwrap()],
        masquerade_all: false,
        masquerade_mark: 0x2000,
    };
    let (s0, s1) = (state(n, 0), state(n, 1));
    let (sel0, sel1) = (selections(&s0), selections(&s1));
    let empty = ProxyState::default();
    let tables = Tables {
        backend,
        ipv4: true,
    };
    let (mut render_t, mut full_t, mut delta_t, mut floor_t, mut delta_floor_t) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut rules = 0;
    for _ in 0..runs {
        let mut dp = Iptables::new(backend, cfg.clone());
        let _ = dp.cleanup();
        let t = Instant::now();
        let existing = Default::default();
        let r = render(
            &s0,
            &sel0,
            &cfg,
            Scope::Full {
                existing: &existing,
            },
        );
        render_t.push(t.elapsed());
        rules = r.rules;

        // The floor: iptables-restore alone on the same input, into empty tables.
        let t = Instant::now();
        tables.restore(&r.text).expect("restore");
        floor_t.push(t.elapsed());
        dp.cleanup().expect("cleanup");

        let t = Instant::now();
        dp.sync(SyncRequest {
            state: &s0,
            previous: &empty,
            selections: &sel0,
            diff: None,
        })
        .expect("full sync");
        full_t.push(t.elapsed());

        let diff = s0.diff(&s1);
        let t = Instant::now();
        dp.sync(SyncRequest {
            state: &s1,
            previous: &s0,
            selections: &sel1,
            diff: Some(&diff),
        })
        .expect("partial sync");
        delta_t.push(t.elapsed());

        // The delta's floor: iptables-restore alone on the same partial input.
        let previous = render(
            &s1,
            &sel1,
            &cfg,
            Scope::Full {
                existing: &existing,
            },
        )
        .programmed;
        let back = s1.diff(&s0);
        let partial = render(
            &s0,
            &sel0,
            &cfg,
            Scope::Partial {
                previous: &previous,
                diff: &back,
            },
        );
        let t = Instant::now();
        tables.restore(&partial.text).expect("partial restore");
        delta_floor_t.push(t.elapsed());
        dp.cleanup().expect("cleanup");
    }
    let (full, floor, delta, dfloor) = (
        median(full_t),
        median(floor_t),
        median(delta_t),
        median(delta_floor_t),
    );
    println!(
        "| {n} × 10 | {backend} | {rules} | {} | {} | {} | {:.2}× | {} | {} | {:.2}× |",
        fmt(median(render_t)),
        fmt(full),
        fmt(floor),
        full.as_secs_f64() / floor.as_secs_f64(),
        fmt(delta),
        fmt(dfloor),
        delta.as_secs_f64() / dfloor.as_secs_f64(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if std::env::var_os("WASP_BENCH_IN_NETNS").is_none() {
        let ns = format!("wasp-bench-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "the sync benchmark needs root (it runs in its own network namespace); skipped"
            );
            return;
        }
        let exe = std::env::current_exe().expect("own path");
        let status = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(exe)
            .args(&args)
            .env("WASP_BENCH_IN_NETNS", "1")
            .status();
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        std::process::exit(status.map_or(1, |s| s.code().unwrap_or(1)));
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![1000, 10000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let runs = std::env::var("WASP_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let backend = if std::env::var("WASP_BENCH_BACKEND").as_deref() == Ok("legacy") {
        Backend::Legacy
    } else {
        Backend::Nft
    };
    println!("median of {runs} runs");
    println!(
        "| services | backend | rules | render | full sync (render+apply) | iptables-restore alone | ratio | one-endpoint sync | its restore alone | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        bench(n, runs, backend);
    }
}
