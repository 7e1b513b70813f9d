//! The fuzz targets' bodies, as plain functions: `cargo fuzz` drives them (scripts/fuzz), and
//! the tests below replay the committed seed corpus through them on stable Rust.
//!
//! The invariants: no input makes wasp panic; time and memory stay bounded (libFuzzer's
//! `-timeout` and `-rss_limit_mb` enforce it); and a good object in another file is never
//! lost, whatever a file holds.
//!
//! # Layout
//! - [`manifests`]: bytes as a manifest file, through parsing, validation, the store and
//!   resolution, beside a file that stays good.
//! - [`netlink`]: bytes as a random model, rendered by both kernel modes and encoded as a
//!   netlink batch that must be well formed and read back into the transaction.
//! - [`reexport`]: bytes as a plugin component, through the call-path rewrite.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::SystemTime;

use libfuzzer_sys::arbitrary::{Result as ArbResult, Unstructured};
use wasp_model::categorize::NodeTopology;
use wasp_model::{
    Endpoint, HashKey, NamespacedName, Protocol, ProxyState, Selection, ServicePort,
    ServicePortName, ServicePortState,
};
use wasp_resolve::validate::ValidationConfig;
use wasp_resolve::{Allocator, ObjectStore, ResolveConfig, resolve};
use wasp_source::{ErrorLog, FileSource};

const GOOD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: good, creationTimestamp: \"2026-01-01T00:00:00Z\"}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: good}\nsubsets: [{addresses: [{ip: 10.244.0.5}], ports: [{port: 80}]}]\n";

const EARLIER: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";

/// A manifest file's bytes: parsed, validated, stored and resolved beside a good file, first
/// as a new file and then as the edit of an existing one. The good Service must survive.
pub fn manifests(data: &[u8]) {
    let mut src = FileSource::new("/fuzz");
    let mut store = ObjectStore::new(ValidationConfig {
        service_cidrs: vec!["10.96.0.0/12".parse().expect("a CIDR")],
    });
    let mut log = ErrorLog::default();
    let mut alloc = Allocator::new(vec!["10.96.0.0/12".parse().expect("a CIDR")]);
    let cfg = ResolveConfig {
        node: NodeTopology {
            name: "node-a".into(),
            zone: None,
        },
        ..ResolveConfig::default()
    };
    let t = SystemTime::UNIX_EPOCH;
    for (path, bytes) in [
        ("/fuzz/good.yaml", GOOD.as_bytes()),
        ("/fuzz/a.yaml", EARLIER.as_bytes()),
    ] {
        if let Some(b) = src.ingest(Path::new(path), bytes, t) {
            b.apply_to(&mut store, &mut log);
        }
    }
    let _ = resolve(&store, &mut alloc, &cfg);
    for path in ["/fuzz/a.yaml", "/fuzz/new.yaml"] {
        if let Some(b) = src.ingest(Path::new(path), data, t) {
            b.apply_to(&mut store, &mut log);
        }
    }
    let (state, _) = resolve(&store, &mut alloc, &cfg);
    let good = NamespacedName::new("default", "good");
    assert!(
        store.services.contains_key(&good),
        "the good Service was lost"
    );
    let port = ServicePortName::new(good, "", Protocol::Tcp);
    assert!(
        state.ports.contains_key(&port),
        "the good Service's port was lost"
    );
}

fn ip(u: &mut Unstructured<'_>) -> ArbResult<IpAddr> {
    Ok(if u.ratio(1, 4)? {
        IpAddr::V6(Ipv6Addr::from(u.arbitrary::<u128>()?))
    } else {
        IpAddr::V4(Ipv4Addr::from(u.arbitrary::<u32>()?))
    })
}

fn selection(u: &mut Unstructured<'_>, n: usize) -> ArbResult<Selection> {
    Ok(match u.int_in_range(0..=2)? {
        0 => Selection::Weighted(
            (0..n)
                .map(|_| u.int_in_range(0..=1000))
                .collect::<ArbResult<_>>()?,
        ),
        1 => {
            let m = u.int_in_range(1..=300)?;
            let table = (0..m)
                .map(|_| u.int_in_range(0..=n.saturating_sub(1) as u32))
                .collect::<ArbResult<_>>()?;
            let key = *u.choose(&[HashKey::SourceIp, HashKey::SourceIpPort, HashKey::FiveTuple])?;
            Selection::Hashed { key, table }
        }
        _ => Selection::PerConnection {
            fallback: (0..n)
                .map(|_| u.int_in_range(1..=10))
                .collect::<ArbResult<_>>()?,
        },
    })
}

/// A random model: ports with random addresses, endpoints, policies and selections.
fn model(
    u: &mut Unstructured<'_>,
) -> ArbResult<(
    ProxyState,
    std::collections::BTreeMap<ServicePortName, Selection>,
)> {
    let mut state = ProxyState::default();
    let mut sels = std::collections::BTreeMap::new();
    for i in 0..u.int_in_range(0..=20)? {
        let protocol = *u.choose(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp])?;
        let name = ServicePortName::new(
            NamespacedName::new("ns", format!("s{i}")),
            if u.arbitrary()? { "p" } else { "" },
            protocol,
        );
        let mut service = ServicePort::new(ip(u)?, u.arbitrary()?, protocol);
        if u.arbitrary()? {
            service.cluster_ips.push(ip(u)?);
        }
        service.session_affinity_seconds =
            u.arbitrary::<bool>()?.then_some(u.int_in_range(1..=86400)?);
        let n = u.int_in_range(0..=12)?;
        let endpoints: Vec<Endpoint> = (0..n)
            .map(|_| Ok(Endpoint::ready(ip(u)?, u.arbitrary()?)))
            .collect::<ArbResult<_>>()?;
        if u.arbitrary()? {
            sels.insert(name.clone(), selection(u, n)?);
        }
        let has_any_endpoints = n > 0 || u.arbitrary()?;
        state.ports.insert(
            name,
            ServicePortState {
                has_any_endpoints,
                ..ServicePortState::new(service, endpoints)
            },
        );
    }
    Ok((state, sels))
}

/// Walks a netlink buffer: every message and every nested attribute must fit exactly.
fn well_formed(b: &[u8], depth: usize) -> bool {
    let mut rest = b;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return false;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let nested = u16::from_ne_bytes([rest[2], rest[3]]) & 0x8000 != 0;
        if len < 4 || len > rest.len() {
            return false;
        }
        if nested && (depth > 16 || !well_formed(&rest[4..len], depth + 1)) {
            return false;
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    true
}

/// A random model, rendered by both kernel modes, full and partial (from an empty model):
/// nothing panics, and the netlink batch parses back message by message and decodes into
/// the operations it was made from.
pub fn netlink(data: &[u8]) {
    use wasp_dataplane::nftables::decode::{chunked, decode};
    use wasp_dataplane::nftables::{Existing, Nftables, encode::encode};
    use wasp_dataplane::{Family, RenderConfig, SyncRequest, iptables};
    let mut u = Unstructured::new(data);
    let Ok((state, selections)) = model(&mut u) else {
        return;
    };
    let cfg = RenderConfig {
        cluster_cidrs: vec!["10.244.0.0/16".parse().expect("a CIDR")],
        masquerade_all: false,
        masquerade_mark: 0x2000,
        service_cidrs: Vec::new(),
        capture: None,
    };
    let empty = ProxyState::default();
    let diff = empty.diff(&state);
    let nft = Nftables::new(cfg.clone());
    for diff in [None, Some(&diff)] {
        let req = SyncRequest {
            state: &state,
            previous: &empty,
            selections: &selections,
            diff,
        };
        let planned = nft.plan_sync(&req, &Existing::default());
        let batch = encode(&planned.tx, 7);
        let messages = wasp_dataplane::nftables::wire::messages(&batch.bytes);
        assert_eq!(
            messages.len(),
            batch.op_of.len() + 2,
            "every message parses back"
        );
        for m in &messages {
            assert!(
                well_formed(m.payload.get(4..).unwrap_or_default(), 0),
                "attributes fit"
            );
        }
        let seqs: Vec<u32> = messages.iter().map(|m| m.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "sequence numbers follow"
        );
        let back = decode(&batch.bytes).expect("the batch decodes");
        assert_eq!(back, chunked(&planned.tx), "the batch reads back");
        assert_eq!(encode(&back, 7).bytes, batch.bytes, "re-encoding is exact");
    }
    let existing = std::collections::BTreeSet::new();
    let _ = iptables::render(
        &state,
        &selections,
        &cfg,
        Family::V4,
        iptables::Scope::Full {
            existing: &existing,
        },
    );
}

/// A plugin component's bytes through the call-path rewrite: it declines or returns a
/// component that validates and whose lifts all go through the re-export.
pub fn reexport(data: &[u8]) {
    if let Some(out) = wasp_reexport::rewrite(data) {
        let mut v = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
        assert!(
            v.validate_all(&out).is_ok(),
            "the rewrite produced an invalid component"
        );
        assert!(
            wasp_reexport::lifts_reexported(&out),
            "a lift still calls a defined function"
        );
    }
}

#[cfg(test)]
mod tests {
    //! The committed seed corpus, replayed through each target (stable Rust, no libFuzzer).

    fn replay(target: &str, f: fn(&[u8])) {
        let dir = format!("{}/corpus/{target}", env!("CARGO_MANIFEST_DIR"));
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect(&dir) {
            let path = entry.expect("an entry").path();
            f(&std::fs::read(&path).expect("a seed"));
            n += 1;
        }
        assert!(n > 0, "{dir} holds seeds");
    }

    #[test]
    fn manifests_corpus() {
        replay("manifests", super::manifests);
    }

    #[test]
    fn netlink_corpus() {
        replay("netlink", super::netlink);
    }

    #[test]
    fn reexport_corpus() {
        replay("reexport", super::reexport);
    }
}
