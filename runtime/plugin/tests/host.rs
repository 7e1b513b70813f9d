//! The plugin host with the real built-in plugins and a misbehaving one, all compiled from
//! source by the build: selections, fallbacks, recovery, disabling, reload, picking, caching.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wasp_model::categorize::NodeTopology;
use wasp_model::{
    Endpoint, HashKey, NamespacedName, Planner, Protocol, Selection, ServicePortName,
    ServicePortState,
};
use wasp_plugin::builtin::{BUILTINS, TEST_FAULTY};
use wasp_plugin::{EngineConfig, PluginPlanner};

fn cfg() -> EngineConfig {
    EngineConfig {
        update_deadline: Duration::from_millis(100),
        backoff: Duration::from_millis(50),
        max_failures: 3,
        cache_dir: None,
        ..EngineConfig::default()
    }
}

fn planner(extra: &[(&str, PathBuf)]) -> PluginPlanner {
    let extra: BTreeMap<String, PathBuf> = extra
        .iter()
        .map(|(n, p)| (n.to_string(), p.clone()))
        .collect();
    let mut p = PluginPlanner::new(cfg(), extra).unwrap();
    p.set_node(NodeTopology {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
    });
    p
}

fn name(svc: &str) -> ServicePortName {
    ServicePortName::new(NamespacedName::new("default", svc), "http", Protocol::Tcp)
}

fn port(plugin: &str, config: &str, n: usize) -> ServicePortState {
    let endpoints = (0..n)
        .map(|i| Endpoint {
            zone: Some(if i == 0 { "zone-a" } else { "zone-b" }.into()),
            target: Some(format!("pod-{i}").into()),
            ..Endpoint::ready(format!("10.244.0.{}", i + 1).parse().unwrap(), 8080)
        })
        .collect();
    common::port_with(plugin, config, endpoints)
}

#[test]
fn every_builtin_returns_a_valid_selection() {
    let mut p = planner(&[]);
    for (plugin, _) in BUILTINS {
        let port = port(plugin, "", 3);
        let sel = p.plan(&name(plugin), &port);
        assert!(sel.validate(3).is_ok(), "{plugin}: {sel}");
        assert_eq!(p.stats().ports_on_fallback, 0, "{plugin}: {:?}", p.status());
    }
}

#[test]
fn builtin_decisions() {
    let mut p = planner(&[]);
    assert_eq!(
        p.plan(&name("w"), &port("weighted", "10.244.0.1=3", 2)),
        Selection::Weighted(vec![3, 1])
    );
    assert_eq!(
        p.plan(&name("z"), &port("zone-aware", "", 3)),
        Selection::Weighted(vec![1, 0, 0])
    );
    assert_eq!(
        p.plan(&name("rr"), &port("round-robin", "", 2)),
        Selection::PerConnection {
            fallback: vec![1, 1]
        }
    );
    match p.plan(&name("m"), &port("maglev", "", 4)) {
        Selection::Hashed {
            key: HashKey::SourceIp,
            table,
        } => assert_eq!(table.len(), 65537),
        other => panic!("{other}"),
    }
    match p.plan(
        &name("m251"),
        &port("maglev", "m=251,key=source-ip-port", 4),
    ) {
        Selection::Hashed {
            key: HashKey::SourceIpPort,
            table,
        } => assert_eq!(table.len(), 251),
        other => panic!("{other}"),
    }
    match p.plan(&name("sh"), &port("source-hash", "", 3)) {
        Selection::Hashed { table, .. } => assert_eq!(table, [0, 1, 2]),
        other => panic!("{other}"),
    }
}

#[test]
fn maglev_removing_one_of_n_moves_about_one_nth() {
    let mut p = planner(&[]);
    let table = |p: &mut PluginPlanner, port: &ServicePortState| match p.plan(&name("m"), port) {
        Selection::Hashed { table, .. } => table
            .iter()
            .map(|&i| port.endpoints[i as usize].ip)
            .collect::<Vec<_>>(),
        other => panic!("{other}"),
    };
    let mut full = port("maglev", "", 10);
    let before = table(&mut p, &full);
    let removed = full.endpoints.remove(3).ip;
    let after = table(&mut p, &full);
    let moved = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| **b != removed && b != a)
        .count();
    assert!(
        (moved as f64) < 0.05 * before.len() as f64,
        "moved {moved} of {}",
        before.len()
    );
}

#[test]
fn a_bad_config_falls_back_and_says_why() {
    let mut p = planner(&[]);
    let sel = p.plan(&name("m"), &port("maglev", "m=100", 2));
    assert_eq!(sel, Selection::equal(2));
    assert!(
        p.status()[0].contains("m=100 is not prime"),
        "{:?}",
        p.status()
    );
    let sel = p.plan(&name("u"), &port("no-such-plugin", "", 2));
    assert_eq!(sel, Selection::equal(2));
    assert!(
        p.status().iter().any(|s| s.contains("unknown balancer")),
        "{:?}",
        p.status()
    );
}

fn faulty() -> PluginPlanner {
    planner(&[("faulty", PathBuf::from(TEST_FAULTY))])
}

#[test]
fn every_fault_falls_back_at_once_and_other_ports_keep_working() {
    // A loop returns at all only because of the deadline; each fault names itself.
    let faults = [
        ("loop", "ran past its deadline"),
        // Growing to the memory cap takes long enough that a loaded machine (CI running
        // tests in parallel) may reach the deadline first; either way the port falls back.
        ("alloc", "trapped|ran past its deadline"),
        ("trap", "trapped"),
        ("out-of-range", "invalid selection: slot 1 names endpoint 8"),
        ("empty-table", "invalid selection: empty hash table"),
        ("zero-weights", "invalid selection: all weights are 0"),
        (
            "huge-table",
            "invalid selection: hash table of 2097152 slots",
        ),
        ("error", "returned an error: faulty plugin asked to fail"),
    ];
    for (mode, reason) in faults {
        let mut p = faulty();
        let good = port("weighted", "10.244.0.1=3", 2);
        let sel = p.plan(&name("bad"), &port("faulty", &format!("mode={mode}"), 3));
        assert_eq!(sel, Selection::equal(3), "{mode}");
        let s = p.stats();
        assert_eq!(s.ports_on_fallback, 1, "{mode}");
        assert_eq!(s.failures + s.rejected, 1, "{mode}: {s:?}");
        let status = p.status();
        assert!(
            status[0].contains("on the default selection")
                && reason.split('|').any(|r| status[0].contains(r)),
            "{mode}: {status:?}"
        );
        assert_eq!(
            p.plan(&name("good"), &good),
            Selection::Weighted(vec![3, 1]),
            "{mode}: another plugin is unaffected"
        );
    }
}

#[test]
fn a_loop_after_a_quiet_spell_still_meets_its_deadline() {
    let mut p = faulty();
    let good = port("weighted", "10.244.0.1=3", 2);
    assert_eq!(
        p.plan(&name("good"), &good),
        Selection::Weighted(vec![3, 1])
    );
    // Long enough for the epoch ticker to park (it stops ticking 1 s after the last call).
    std::thread::sleep(Duration::from_millis(1500));
    // A ticker that stayed parked would never end the loop: wait for it on another thread.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sel = p.plan(&name("bad"), &port("faulty", "mode=loop", 3));
        let _ = tx.send((sel, p.status()));
    });
    let (sel, status) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the looping plugin was never stopped");
    assert_eq!(sel, Selection::equal(3));
    assert!(status[0].contains("ran past its deadline"), "{status:?}");
}

#[test]
fn a_trapped_instance_is_recreated_with_backoff_and_the_port_recovers() {
    let mut p = faulty();
    let bad = port("faulty", "mode=trap", 2);
    assert_eq!(p.plan(&name("a"), &bad), Selection::equal(2));
    let other = port("faulty", "mode=ok", 2);
    // While the instance backs off, other ports of the plugin fall back too.
    assert_eq!(p.plan(&name("b"), &other), Selection::equal(2));
    assert!(
        p.status().iter().any(|s| s.contains("restarting")),
        "{:?}",
        p.status()
    );
    let retry = p.next_retry().expect("a retry is scheduled");
    std::thread::sleep(retry.saturating_duration_since(Instant::now()) + Duration::from_millis(10));
    let replans = p.replans();
    assert!(replans.contains(&name("b")), "{replans:?}");
    assert_eq!(p.plan(&name("b"), &other), Selection::Weighted(vec![1, 1]));
    // The fix for `a`: its config no longer traps.
    assert_eq!(
        p.plan(&name("a"), &port("faulty", "mode=ok", 2)),
        Selection::Weighted(vec![1, 1])
    );
    assert_eq!(p.stats().ports_on_fallback, 0, "{:?}", p.status());
}

#[test]
fn failures_on_every_port_disable_the_plugin() {
    let mut p = faulty();
    let bad = port("faulty", "mode=trap", 2);
    for svc in ["a", "b", "c"] {
        p.plan(&name(svc), &bad);
        // Past the plugin's backoff (50 ms, then 100 ms).
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(p.stats().disabled, 1);
    assert!(
        p.status()
            .iter()
            .any(|s| s.contains("disabled after 3 failures")),
        "{:?}",
        p.status()
    );
    assert_eq!(
        p.plan(&name("a"), &port("faulty", "mode=ok", 2)),
        Selection::equal(2),
        "disabled stays disabled"
    );
}

#[test]
fn a_port_that_keeps_failing_backs_off_by_itself_while_its_plugin_serves_the_others() {
    // One faulty port must not hold the plugin's healthy port hostage, nor be retried at the
    // healthy port's pace: it backs off on its own count and is given up on after 3.
    let mut p = faulty();
    let (bad, good) = (port("faulty", "mode=trap", 2), port("faulty", "mode=ok", 2));
    p.plan(&name("good"), &good);
    p.plan(&name("bad"), &bad);
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        // What the daemon does: replan what the planner names, when it says.
        for n in p.replans() {
            let port = if n == name("bad") { &bad } else { &good };
            p.plan(&n, port);
        }
        let wake = p.next_retry().unwrap_or(until).min(until);
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now()) + Duration::from_millis(2),
        );
    }
    for n in p.replans() {
        let port = if n == name("bad") { &bad } else { &good };
        p.plan(&n, port);
    }
    assert_eq!(
        p.stats().failures,
        3,
        "the bad port was tried exactly 3 times: {:?}",
        p.status()
    );
    assert_eq!(p.stats().disabled, 0, "the plugin itself works");
    assert_eq!(p.stats().ports_on_fallback, 1, "{:?}", p.status());
    assert!(
        p.status()
            .iter()
            .any(|s| s.contains("default/bad") && s.contains("given up after 3 failures")),
        "{:?}",
        p.status()
    );
    // A new config is a fresh start.
    assert_eq!(
        p.plan(&name("bad"), &port("faulty", "mode=ok", 2)),
        Selection::equal(2)
    );
    assert_eq!(p.stats().ports_on_fallback, 0, "{:?}", p.status());
}

#[test]
fn a_changed_wasm_file_is_reloaded() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("ext.wasm");
    std::fs::copy(TEST_FAULTY, &path).unwrap();
    let mut p = planner(&[("ext", path.clone())]);
    let port = port("ext", "", 2);
    assert_eq!(
        p.plan(&name("x"), &port),
        Selection::Weighted(vec![1, 1]),
        "faulty in mode ok"
    );
    assert!(p.replans().is_empty());
    let rr = BUILTINS
        .iter()
        .find(|(n, _)| *n == "round-robin")
        .unwrap()
        .1;
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, rr).unwrap();
    assert_eq!(p.replans(), vec![name("x")]);
    assert_eq!(
        p.plan(&name("x"), &port),
        Selection::PerConnection {
            fallback: vec![1, 1]
        },
        "now round-robin"
    );
}

#[test]
fn round_robin_picks_rotate() {
    let mut p = planner(&[]);
    p.plan(&name("rr"), &port("round-robin", "", 3));
    let client = "10.244.9.9:40000".parse().unwrap();
    let picks: Vec<Option<u32>> = (0..4).map(|_| p.pick(&name("rr"), client)).collect();
    assert_eq!(picks, [Some(0), Some(1), Some(2), Some(0)]);
}

#[test]
fn a_bad_pick_is_refused_reported_and_other_ports_keep_picking() {
    let mut p = faulty();
    p.plan(&name("rr"), &port("round-robin", "", 2));
    let client = "10.244.9.9:40000".parse().unwrap();
    for (mode, reason) in [
        (
            "pick-out-of-range",
            "pick returned an error: pick returned endpoint 3 of 3",
        ),
        ("pick-trap", "pick trapped"),
    ] {
        let bad = name(mode);
        p.plan(&bad, &port("faulty", &format!("mode={mode}"), 3));
        assert!(p.status().is_empty(), "{mode}: {:?}", p.status());
        assert_eq!(p.pick(&bad, client), None, "{mode}: refused");
        let status = p.status().join("\n");
        assert!(status.contains(reason), "{mode}: {status}");
        // A declining plugin and a poisoned one both leave picking to the host's weights.
        assert_eq!(p.pick(&bad, client), None, "{mode}");
        p.forget(&bad);
    }
    assert_eq!(p.stats().rejected, 1);
    assert_eq!(p.stats().failures, 1);
    // Round-robin, in another plugin, never noticed.
    let picks: Vec<Option<u32>> = (0..3).map(|_| p.pick(&name("rr"), client)).collect();
    assert_eq!(picks, [Some(0), Some(1), Some(0)]);
}

#[test]
fn ids_of_removed_ports_are_reused_and_picks_reach_the_right_balancer() {
    let mut p = planner(&[]);
    let client = "10.244.9.9:40000".parse().unwrap();
    p.plan(&name("a"), &port("round-robin", "", 2));
    p.plan(&name("b"), &port("round-robin", "", 3));
    p.forget(&name("a"));
    // "c" takes the id "a" had.
    p.plan(&name("c"), &port("round-robin", "", 5));
    let picks = |p: &mut PluginPlanner, svc: &str| -> Vec<Option<u32>> {
        (0..6).map(|_| p.pick(&name(svc), client)).collect()
    };
    assert_eq!(picks(&mut p, "a"), [None; 6], "a is gone");
    let c = picks(&mut p, "c");
    assert_eq!(c, [0, 1, 2, 3, 4, 0].map(Some), "c rotates over its own 5");
    assert_eq!(picks(&mut p, "b"), [0, 1, 2, 0, 1, 2].map(Some));
    assert!(p.status().is_empty(), "{:?}", p.status());
}

#[test]
fn compiled_plugins_are_cached_by_hash() {
    let d = tempfile::tempdir().unwrap();
    let engine = wasp_plugin::PluginEngine::new(EngineConfig {
        cache_dir: Some(d.path().into()),
        ..cfg()
    })
    .unwrap();
    let bytes = BUILTINS[0].1;
    engine.compile("x", bytes).unwrap();
    let files: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    let cached = std::fs::read_dir(d.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let written = std::fs::metadata(&cached).unwrap().modified().unwrap();
    engine.compile("x", bytes).unwrap();
    assert_eq!(
        std::fs::metadata(&cached).unwrap().modified().unwrap(),
        written,
        "loaded, not rewritten"
    );
    assert!(engine.compile("bad", b"not wasm").is_err());
}

struct Busy;

impl wasp_plugin::state::StatsSource for Busy {
    fn stats(&self, _port: &str, index: u32) -> (u32, u32) {
        // Endpoint 1 is the idlest.
        (if index == 1 { 0 } else { 10 }, 0)
    }
}

#[test]
fn least_connections_picks_the_idlest_from_host_stats() {
    let mut p = planner(&[]);
    p.set_stats_source(std::sync::Arc::new(Busy));
    p.plan(&name("lc"), &port("least-connections", "", 3));
    let client = "10.244.9.9:40000".parse().unwrap();
    for _ in 0..3 {
        assert_eq!(
            p.pick(&name("lc"), client),
            Some(1),
            "{:?} {:?}",
            p.status(),
            p.stats()
        );
    }
    let h = p.pick_handle(&name("lc")).unwrap();
    assert_eq!(p.pick_with(&h, client), Some(1));
}
