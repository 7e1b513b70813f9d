//! The same small policy ("local-first": local endpoints get weight N, default 3, the others 1)
//! written in C, Zig, Go, JavaScript and Python under examples/plugins/, each built from source
//! by its build script and loaded by the host. A missing toolchain skips the language with a
//! message, and fails under CI=true (the README's test command installs them).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use wasp_model::categorize::NodeTopology;
use wasp_model::{
    Endpoint, NamespacedName, Planner, Protocol, Selection, ServicePortName, ServicePortState,
};
use wasp_plugin::{EngineConfig, PluginPlanner};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins")
}

fn port(plugin: &str, config: &str) -> ServicePortState {
    let mut local = Endpoint::ready("10.244.0.1".parse().unwrap(), 80);
    local.is_local = true;
    let remote = Endpoint::ready("10.244.0.2".parse().unwrap(), 80);
    common::port_with(plugin, config, vec![local, remote])
}

/// Builds `lang`'s plugin; `None` (after a message) when its toolchain is missing outside CI.
fn build(lang: &str) -> Option<PathBuf> {
    let dir = examples().join(lang);
    let out = Command::new("bash")
        .arg(dir.join("build.sh"))
        .current_dir(&dir)
        .output()
        .expect("run bash");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Some(dir.join("local-first.wasm")),
        // build.sh exits 3 when its toolchain is not installed.
        Some(3) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIP {lang}: {}", log.trim());
            None
        }
        _ => panic!("{lang}: build.sh failed:\n{log}"),
    }
}

fn check(lang: &str) {
    let Some(wasm) = build(lang) else { return };
    // Every toolchain's component takes the cheaper call path (wasp_plugin::reexport).
    let bytes = std::fs::read(&wasm).unwrap();
    let rewritten = wasp_plugin::reexport::rewrite(&bytes)
        .unwrap_or_else(|| panic!("{lang}: the component was not rewritten"));
    assert!(
        wasp_plugin::reexport::lifts_reexported(&rewritten),
        "{lang}"
    );
    wasmtime::component::Component::new(&wasmtime::Engine::default(), &rewritten)
        .unwrap_or_else(|e| panic!("{lang}: wasmtime refuses the rewritten component: {e:#}"));
    let name = format!("local-first-{lang}");
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    let cfg = EngineConfig {
        cache_dir: Some(cache),
        ..EngineConfig::default()
    };
    let mut p = PluginPlanner::new(cfg, BTreeMap::from([(name.clone(), wasm)])).unwrap();
    p.set_node(NodeTopology {
        name: "node-a".into(),
        zone: None,
    });
    let spn = |s: &str| ServicePortName::new(NamespacedName::new("default", s), "", Protocol::Tcp);
    assert_eq!(
        p.plan(&spn("a"), &port(&name, "")),
        Selection::Weighted(vec![3, 1]),
        "{lang}: {:?}",
        p.status()
    );
    assert_eq!(
        p.plan(&spn("b"), &port(&name, "5")),
        Selection::Weighted(vec![5, 1]),
        "{lang}: {:?}",
        p.status()
    );
    assert_eq!(
        p.plan(&spn("c"), &port(&name, "five")),
        Selection::equal(2),
        "{lang}: a bad config falls back"
    );
    assert_eq!(p.stats().ports_on_fallback, 1, "{lang}: {:?}", p.status());
}

#[test]
fn javascript() {
    check("js");
}

#[test]
fn python() {
    check("python");
}

#[test]
fn c() {
    check("c");
}

#[test]
fn zig() {
    check("zig");
}

#[test]
fn go() {
    check("go");
}
