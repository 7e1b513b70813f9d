//! Plugin benchmark (not a test): `update` µs and `pick` ns/call at 10, 100 and 1000 endpoints
//! for every built-in, each against the same algorithm run natively (wasp-balancer-algo);
//! Maglev table builds at M = 65537; instantiate time and memory per instance.
//!
//! `cargo bench -p wasp-plugin --bench plugins`; `WASP_BENCH_ONLY=update|pick|maglev|instantiate`
//! runs one table, `WASP_BENCH_PLUGIN=NAME` one plugin's pick, and `WASP_BENCH_CALLS=N` sets
//! the pick batch (to profile one plugin's pick under `perf record`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasp_balancer_algo::pick::{Cumulative, Rng, RoundRobin, least_connections};
use wasp_balancer_algo::weights::{self, EndpointKeys};
use wasp_balancer_algo::{maglev, ring};
use wasp_model::categorize::NodeTopology;
use wasp_model::{Endpoint, NamespacedName, Planner, Protocol, ServicePortName, ServicePortState};
use wasp_plugin::builtin::BUILTINS;
use wasp_plugin::instance::Live;
use wasp_plugin::state::NoStats;
use wasp_plugin::{EngineConfig, PluginEngine, PluginPlanner};

fn port(plugin: &str, config: &str, n: usize) -> ServicePortState {
    let endpoints = (0..n)
        .map(|i| Endpoint {
            zone: Some(format!("zone-{}", i % 3).into()),
            target: Some(format!("pod-{i}").into()),
            ..Endpoint::ready(
                std::net::Ipv4Addr::from(0x0af4_0000 + i as u32).into(),
                8080,
            )
        })
        .collect();
    common::port_with(plugin, config, endpoints)
}

fn per_call(iters: u32, mut f: impl FnMut()) -> Duration {
    // Median of 5 batches.
    let mut v: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed() / iters
        })
        .collect();
    v.sort();
    v[2]
}

fn keys(p: &ServicePortState) -> Vec<Vec<u8>> {
    p.endpoints
        .iter()
        .map(|e| e.to_string().into_bytes())
        .collect()
}

/// The built-in's decision, natively.
fn native_update(plugin: &str, p: &ServicePortState) {
    let n = p.endpoints.len();
    match plugin {
        "maglev" => {
            let k = keys(p);
            let r: Vec<&[u8]> = k.iter().map(Vec::as_slice).collect();
            black_box(maglev::table(&r, &[], maglev::DEFAULT_M));
        }
        "ring-hash" => {
            let k = keys(p);
            let r: Vec<&[u8]> = k.iter().map(Vec::as_slice).collect();
            black_box(ring::table(&r, &[], ring::DEFAULT_M));
        }
        "weighted" | "least-connections" => {
            let pairs = weights::parse("10.244.0.1=3").unwrap_or_default();
            let ek: Vec<EndpointKeys<'_>> = p
                .endpoints
                .iter()
                .map(|e| EndpointKeys {
                    address: e.ip,
                    target: e.target.as_deref(),
                    zone: e.zone.as_deref(),
                })
                .collect();
            black_box(weights::resolve(&pairs, &ek));
        }
        "zone-aware" => {
            black_box(
                p.endpoints
                    .iter()
                    .map(|e| u32::from(e.zone.as_deref() == Some("zone-a")))
                    .collect::<Vec<_>>(),
            );
        }
        "source-hash" => {
            black_box((0..n as u32).collect::<Vec<_>>());
        }
        _ => {
            black_box(vec![1u32; n]);
        }
    }
}

fn main() {
    let cfg = EngineConfig {
        cache_dir: None,
        ..EngineConfig::default()
    };
    let mut planner = PluginPlanner::new(cfg.clone(), BTreeMap::new()).expect("engine");
    planner.set_node(NodeTopology {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
    });
    let only = std::env::var("WASP_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "update" {
        update_table(&mut planner);
    }
    if only.is_empty() || only == "pick" {
        // The same plugins compiled without the call-path rewrite, for its column.
        let mut as_built = PluginPlanner::new(
            EngineConfig {
                reexport: false,
                ..cfg.clone()
            },
            BTreeMap::new(),
        )
        .expect("engine");
        pick_table(&mut planner, &mut as_built);
    }
    if only.is_empty() || only == "maglev" {
        maglev_table(&mut planner);
    }
    if only.is_empty() || only == "instantiate" {
        instantiate_table(cfg);
    }
}

fn update_table(planner: &mut PluginPlanner) {
    println!("## update (µs per call, median of 5 batches)\n");
    println!("| plugin | n=10 wasm | native | n=100 wasm | native | n=1000 wasm | native |");
    println!("|---|---|---|---|---|---|---|");
    for (plugin, _) in BUILTINS {
        let config = if *plugin == "weighted" || *plugin == "least-connections" {
            "10.244.0.1=3"
        } else {
            ""
        };
        let mut row = format!("| {plugin} |");
        for n in [10, 100, 1000] {
            let name = ServicePortName::new(
                NamespacedName::new("bench", *plugin),
                format!("n{n}"),
                Protocol::Tcp,
            );
            let p = port(plugin, config, n);
            planner.plan(&name, &p);
            let iters = if *plugin == "maglev" || n == 1000 {
                20
            } else {
                200
            };
            let wasm = per_call(iters, || {
                black_box(planner.plan(&name, &p));
            });
            let native = per_call(iters, || native_update(plugin, &p));
            row.push_str(&format!(
                " {:.1} | {:.1} |",
                wasm.as_secs_f64() * 1e6,
                native.as_secs_f64() * 1e6
            ));
        }
        println!("{row}");
    }
    assert!(planner.status().is_empty(), "{:?}", planner.status());
}

fn pick_table(planner: &mut PluginPlanner, as_built: &mut PluginPlanner) {
    println!("\n## pick (ns per call, median of 5 batches of 100,000), n=100\n");
    println!("| plugin | wasm | wasm without the call-path rewrite | native |");
    println!("|---|---|---|---|");
    let client = "10.244.9.9:40000".parse().unwrap();
    let only = std::env::var("WASP_BENCH_PLUGIN").unwrap_or_default();
    for (plugin, _) in BUILTINS
        .iter()
        .filter(|(p, _)| only.is_empty() || only == *p)
    {
        let name =
            ServicePortName::new(NamespacedName::new("bench", *plugin), "n100", Protocol::Tcp);
        let p = port(plugin, "", 100);
        let calls = std::env::var("WASP_BENCH_CALLS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(100_000);
        let time = |planner: &mut PluginPlanner| {
            planner.plan(&name, &p);
            let handle = planner.pick_handle(&name).expect("a picker");
            per_call(calls, || {
                black_box(planner.pick_with(&handle, client));
            })
        };
        let wasm = time(planner);
        let unrewritten = time(as_built);
        let (mut rr, mut rng, w, active) = (
            RoundRobin::default(),
            Rng::new(7),
            vec![1u32; 100],
            vec![0u32; 100],
        );
        let cumulative = Cumulative::new(&w);
        let native = per_call(100_000, || match *plugin {
            "round-robin" => {
                black_box(rr.pick(&w));
            }
            "random" | "weighted" => {
                black_box(rng.weighted(&cumulative));
            }
            "least-connections" => {
                black_box(least_connections(&active, &w, 0));
            }
            _ => {
                black_box(());
            }
        });
        assert!(
            planner.status().is_empty(),
            "{plugin}: {:?}",
            planner.status()
        );
        println!(
            "| {plugin} | {} | {} | {} |",
            wasm.as_nanos(),
            unrewritten.as_nanos(),
            native.as_nanos()
        );
    }
}

fn maglev_table(planner: &mut PluginPlanner) {
    println!("\n## Maglev table build at M = 65537 (ms, median of 5)\n");
    println!("| endpoints | wasm (update) | native |");
    println!("|---|---|---|");
    for n in [100, 1000] {
        let name = ServicePortName::new(
            NamespacedName::new("bench", "maglev-build"),
            format!("n{n}"),
            Protocol::Tcp,
        );
        let p = port("maglev", "", n);
        planner.plan(&name, &p);
        let wasm = per_call(4, || {
            black_box(planner.plan(&name, &p));
        });
        let native = per_call(4, || native_update("maglev", &p));
        println!(
            "| {n} | {:.2} | {:.2} |",
            wasm.as_secs_f64() * 1e3,
            native.as_secs_f64() * 1e3
        );
    }
}

fn instantiate_table(cfg: EngineConfig) {
    println!("\n## instantiate (µs, median of 5 batches of 20) and memory per instance\n");
    println!("| plugin | instantiate | linear memory |");
    println!("|---|---|---|");
    let engine = PluginEngine::new(cfg).expect("engine");
    for (plugin, bytes) in BUILTINS {
        let c = engine.compile(plugin, bytes).expect("compile");
        let pre = engine.prepare(plugin, &c).expect("prepare");
        let mut mem = 0;
        let t = per_call(20, || {
            let live = Live::new(&engine, plugin, &pre, Arc::new(NoStats)).expect("instantiate");
            mem = live.memory_bytes();
            black_box(live);
        });
        println!(
            "| {plugin} | {:.0} | {} KiB |",
            t.as_secs_f64() * 1e6,
            mem / 1024
        );
    }
}
