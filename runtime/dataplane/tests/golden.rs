//! Golden tests of the rendered iptables-restore input. Re-bless with `WASP_BLESS=1`.
//!
//! Each case under `tests/golden/<case>/` holds `config.yaml` (and, for a partial sync,
//! `after.yaml`): the manifests are resolved through the model exactly as the daemon does, and
//! the render must equal `iptables.txt`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use wasp_dataplane::iptables::{RenderConfig, Scope, render};
use wasp_model::validate::ValidationConfig;
use wasp_model::{
    Allocator, EqualWeights, HashKey, ObjectStore, Planner, ProxyState, ResolveConfig, Selection,
    resolve,
};
use wasp_source::parse_manifests;

fn state(path: &Path) -> ProxyState {
    let bytes = std::fs::read(path).unwrap();
    let parsed = parse_manifests("config.yaml", &bytes);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let mut store = ObjectStore::new(ValidationConfig::default());
    for (o, origin) in parsed.objects {
        store.apply(o, origin).unwrap();
    }
    let mut cfg = ResolveConfig::default();
    cfg.node.name = "node-a".into();
    let (state, errors) = resolve(
        &store,
        &mut Allocator::new(vec!["10.96.0.0/12".parse().unwrap()]),
        &cfg,
    );
    assert!(errors.is_empty(), "{errors:?}");
    state
}

fn config() -> RenderConfig {
    RenderConfig {
        ipv4: true,
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        masquerade_all: false,
        masquerade_mark: 0x2000,
    }
}

fn check(case: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case);
    let before = state(&dir.join("config.yaml"));
    // A case may fix a hashed table for every port (`hashed`: "KEY I,J,K…"), as a plugin would.
    let hashed = std::fs::read_to_string(dir.join("hashed")).ok().map(|t| {
        let (key, table) = t.trim().split_once(' ').unwrap();
        let key = match key {
            "source-ip" => HashKey::SourceIp,
            "source-ip-port" => HashKey::SourceIpPort,
            _ => HashKey::FiveTuple,
        };
        Selection::Hashed {
            key,
            table: table.split(',').map(|i| i.parse().unwrap()).collect(),
        }
    });
    let sel = |s: &ProxyState| {
        s.ports
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    hashed.clone().unwrap_or_else(|| EqualWeights.plan(n, p)),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };
    let existing = BTreeSet::new();
    let full = render(
        &before,
        &sel(&before),
        &config(),
        Scope::Full {
            existing: &existing,
        },
    );
    let mut got = full.text.clone();
    let after_path = dir.join("after.yaml");
    if after_path.exists() {
        let after = state(&after_path);
        let diff = before.diff(&after);
        let partial = render(
            &after,
            &sel(&after),
            &config(),
            Scope::Partial {
                previous: &full.programmed,
                diff: &diff,
            },
        );
        got = format!(
            "# full sync of config.yaml\n{}# partial sync to after.yaml\n{}",
            full.text, partial.text
        );
    }
    let want_path = dir.join("iptables.txt");
    if std::env::var_os("WASP_BLESS").is_some() {
        std::fs::write(&want_path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&want_path).unwrap_or_default();
    assert!(
        got == want,
        "{case}: render differs from {}; re-bless with WASP_BLESS=1\n--- got ---\n{got}",
        want_path.display()
    );
}

#[test]
fn article() {
    check("article");
}

#[test]
fn multiport() {
    check("multiport");
}

#[test]
fn no_endpoints() {
    check("no-endpoints");
}

#[test]
fn affinity() {
    check("affinity");
}

#[test]
fn hashed() {
    check("hashed");
}

#[test]
fn partial_endpoint_change() {
    check("partial-endpoint-change");
}
