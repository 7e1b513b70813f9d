//! What one sync's resolution costs as Services grow: `resolve` (allocation included) over a
//! store of N Services with one endpoint each, half with explicit cluster IPs. Before the
//! allocator was made O(n log n) this grew with the square of N (the reliability issue's
//! probe: 84 ms at 5k, 1.05 s at 20k, 12.8 s at 50k Services for a one-port sync).
//!
//! `cargo bench -p wasp-resolve --bench resolve` (WASP_BENCH_RUNS, default 3).

use std::time::{Duration, Instant};

use wasp_model::categorize::NodeTopology;
use wasp_resolve::validate::ValidationConfig;
use wasp_resolve::{Allocator, Object, ObjectStore, Origin, ResolveConfig, resolve};

fn store(n: usize) -> ObjectStore {
    let mut store = ObjectStore::new(ValidationConfig::default());
    for i in 0..n {
        let ip = if i % 2 == 0 {
            format!(
                "\"clusterIP\": \"10.{}.{}.{}\",",
                96 + i / 65536,
                (i / 256) % 256,
                i % 256
            )
        } else {
            String::new()
        };
        let svc = format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"s{i}","namespace":"default"}},"spec":{{{ip}"ports":[{{"port":80}}]}}}}"#
        );
        let eps = format!(
            r#"{{"apiVersion":"v1","kind":"Endpoints","metadata":{{"name":"s{i}","namespace":"default"}},"subsets":[{{"addresses":[{{"ip":"10.244.{}.{}"}}],"ports":[{{"port":80}}]}}]}}"#,
            (i / 250) % 250,
            i % 250 + 1
        );
        let o = Origin::file("bench.yaml", i);
        store
            .apply(
                Object::Service(Box::new(serde_json::from_str(&svc).expect("a Service"))),
                o.clone(),
            )
            .expect("valid");
        store
            .apply(
                Object::Endpoints(Box::new(serde_json::from_str(&eps).expect("Endpoints"))),
                o,
            )
            .expect("valid");
    }
    store
}

fn main() {
    let runs: usize = std::env::var("WASP_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let cfg = ResolveConfig {
        node: NodeTopology {
            name: "node-a".into(),
            zone: None,
        },
        ..ResolveConfig::default()
    };
    println!("resolve of N Services (1 endpoint each), median of {runs}, allocator warm:");
    for n in [5_000, 10_000, 20_000, 50_000] {
        let s = store(n);
        let mut alloc = Allocator::new(vec!["10.96.0.0/12".parse().expect("a CIDR")]);
        let _ = resolve(&s, &mut alloc, &cfg);
        let mut times: Vec<Duration> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                let (state, _) = resolve(&s, &mut alloc, &cfg);
                assert_eq!(state.ports.len(), n);
                t.elapsed()
            })
            .collect();
        times.sort();
        println!(
            "  {n:>6} Services: {:>8.1} ms",
            times[runs / 2].as_secs_f64() * 1e3
        );
    }
}
