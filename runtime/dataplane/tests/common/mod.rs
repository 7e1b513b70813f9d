//! The golden cases, shared by the golden tests and the kernel round trip.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wasp_dataplane::RenderConfig;
use wasp_dataplane::SyncRequest;
use wasp_dataplane::nftables::{Existing, Nftables, Transaction};
use wasp_model::{EqualWeights, HashKey, Planner, ProxyState, Selection, ServicePortName};
use wasp_resolve::validate::ValidationConfig;
use wasp_resolve::{Allocator, NodePortAddresses, ObjectStore, ResolveConfig, resolve};
use wasp_source::parse_manifests;

/// The case names under `tests/golden/`.
pub const CASES: &[&str] = &[
    "article",
    "multiport",
    "no-endpoints",
    "affinity",
    "hashed",
    "partial-endpoint-change",
    "dual-stack",
    "sctp",
    "port-rename",
    "external",
    "external-all-local",
];

fn state(path: &Path) -> ProxyState {
    let bytes = std::fs::read(path).unwrap();
    let parsed = parse_manifests("config.yaml", &bytes, &wasp_source::Limits::default());
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    let mut store = ObjectStore::new(ValidationConfig::default());
    for (o, origin) in parsed.objects {
        store.apply(o, origin).unwrap();
    }
    let mut cfg = ResolveConfig::default();
    cfg.node.name = "node-a".into();
    // Node ports on the node's primary addresses, or (`node-port-addresses` saying `all`)
    // on every local address.
    let all = path.with_file_name("node-port-addresses");
    if std::fs::read_to_string(all).is_ok_and(|s| s.trim() == "all") {
        cfg.node_port_addresses = NodePortAddresses::AllLocal;
    }
    cfg.node_ips = vec![
        "10.250.0.1".parse().unwrap(),
        "fd00:250::1".parse().unwrap(),
    ];
    let (state, errors) = resolve(
        &store,
        &mut Allocator::new(vec!["10.96.0.0/12".parse().unwrap()]),
        &cfg,
    );
    assert!(errors.is_empty(), "{errors:?}");
    state
}

/// The render configuration every case uses.
pub fn config() -> RenderConfig {
    RenderConfig {
        cluster_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/48".parse().unwrap(),
        ],
        masquerade_all: false,
        masquerade_mark: 0x2000,
        service_cidrs: vec![
            "10.96.0.0/12".parse().unwrap(),
            "fd00:96::/108".parse().unwrap(),
        ],
        capture: None,
    }
}

/// One golden case: the state before, and optionally after, a change.
pub struct Case {
    /// The case's directory.
    pub dir: PathBuf,
    /// The state of `config.yaml`.
    pub before: ProxyState,
    /// The state of `after.yaml`, when the case has one.
    pub after: Option<ProxyState>,
    hashed: Option<Selection>,
}

impl Case {
    /// Loads `tests/golden/<name>`.
    pub fn load(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
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
        let after = dir.join("after.yaml");
        Self {
            before: state(&dir.join("config.yaml")),
            after: after.exists().then(|| state(&after)),
            hashed,
            dir,
        }
    }

    /// The selection of every port of `s`.
    pub fn selections(&self, s: &ProxyState) -> BTreeMap<ServicePortName, Selection> {
        s.ports
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    self.hashed
                        .clone()
                        .unwrap_or_else(|| EqualWeights.plan(n, p)),
                )
            })
            .collect()
    }

    /// The nftables mode's full transaction for `before` and, with `after`, the partial one
    /// that follows it.
    pub fn nftables_transactions(&self) -> (Transaction, Option<Transaction>) {
        self.nftables_transactions_with(config())
    }

    /// The same, rendered with `cfg` (the userspace mode's capture, say).
    pub fn nftables_transactions_with(
        &self,
        cfg: wasp_dataplane::RenderConfig,
    ) -> (Transaction, Option<Transaction>) {
        let mut nft = Nftables::new(cfg);
        let sel = self.selections(&self.before);
        let empty = ProxyState::default();
        let req = SyncRequest {
            state: &self.before,
            previous: &empty,
            selections: &sel,
            diff: None,
        };
        let full = nft.plan_sync(&req, &Existing::default());
        let full_tx = full.tx.clone();
        nft.record(full);
        let partial = self.after.as_ref().map(|after| {
            let sel = self.selections(after);
            let diff = self.before.diff(after);
            let req = SyncRequest {
                state: after,
                previous: &self.before,
                selections: &sel,
                diff: Some(&diff),
            };
            nft.plan_sync(&req, &Existing::default()).tx
        });
        (full_tx, partial)
    }

    /// Compares `got` with the case's `file`, or writes it under `WASP_BLESS`.
    pub fn compare(&self, file: &str, got: &str) {
        let want_path = self.dir.join(file);
        if std::env::var_os("WASP_BLESS").is_some() {
            std::fs::write(&want_path, got).unwrap();
            return;
        }
        let want = std::fs::read_to_string(&want_path).unwrap_or_default();
        assert!(
            got == want,
            "{}: render differs; re-bless with WASP_BLESS=1\n--- got ---\n{got}",
            want_path.display()
        );
    }
}
