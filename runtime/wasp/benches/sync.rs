//! Sync benchmark of the iptables mode (not a test): render + apply time of a full sync of
//! N Services × 10 endpoints from empty, of one endpoint change at N, and iptables-restore
//! alone on the same full input (the floor), all in one run so they compare as ratios.
//!
//! Needs root: it re-runs itself inside a fresh network namespace.
//!
//! `cargo bench -p wasp --bench sync -- [N ...]` (default 1000 10000); `WASP_BENCH_RUNS`
//! sets runs per figure (default 3), `WASP_BENCH_BACKEND` nft (default) or legacy.

mod common;

use std::time::Instant;

use common::{fmt, median, selections, state};
use wasp_dataplane::iptables::{Backend, Iptables, Scope, Tables, render};
use wasp_dataplane::{Dataplane, SyncRequest};
use wasp_dataplane::{Family, RenderConfig};
use wasp_model::ProxyState;

fn bench(n: usize, runs: usize, backend: Backend) {
    let cfg = RenderConfig {
        cluster_cidrs: vec!["10.128.0.0/9".parse().unwrap()],
        masquerade_all: false,
        masquerade_mark: 0x2000,
        service_cidrs: Vec::new(),
        capture: None,
    };
    let (s0, s1) = (state(n, 0, None), state(n, 1, None));
    let (sel0, sel1) = (selections(&s0), selections(&s1));
    let empty = ProxyState::default();
    let tables = Tables {
        backend,
        family: Family::V4,
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
            Family::V4,
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
            Family::V4,
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
            Family::V4,
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
    let args = common::args();
    if !common::in_fresh_netns(&args) {
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![1000, 10000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    let runs = common::runs(3);
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
