//! Golden tests of what each mode renders. Re-bless with `WASP_BLESS=1`.
//!
//! Each case under `tests/golden/<case>/` holds `config.yaml` (and, for a partial sync,
//! `after.yaml`): the manifests are resolved through the model exactly as the daemon does, and
//! the iptables-restore input must equal `iptables.txt` and the nftables transactions
//! `nftables.nft` (and, for some, the userspace mode's `userspace.nft`); and each nftables
//! transaction's netlink batch must read back into it.

mod common;

use std::collections::BTreeSet;

use common::{Case, config};
use wasp_dataplane::Family;
use wasp_dataplane::iptables::{Scope, render};
use wasp_dataplane::nftables::decode::{chunked, decode};
use wasp_dataplane::nftables::encode::encode;
use wasp_dataplane::nftables::text::text;

/// The iptables-restore input of the case's full sync (and partial one, with `after.yaml`).
fn iptables_text(c: &Case, cfg: &wasp_dataplane::RenderConfig) -> String {
    let existing = BTreeSet::new();
    let full = render(
        &c.before,
        &c.selections(&c.before),
        cfg,
        Family::V4,
        Scope::Full {
            existing: &existing,
        },
    );
    let Some(after) = &c.after else {
        return full.text;
    };
    let diff = c.before.diff(after);
    let partial = render(
        after,
        &c.selections(after),
        cfg,
        Family::V4,
        Scope::Partial {
            previous: &full.programmed,
            diff: &diff,
        },
    );
    format!(
        "# full sync of config.yaml\n{}# partial sync to after.yaml\n{}",
        full.text, partial.text
    )
}

fn check(case: &str) {
    let c = Case::load(case);
    let got = iptables_text(&c, &config());
    c.compare("iptables.txt", &got);

    // The nftables mode's transactions, as `wasp plan` prints them.
    let (full, partial) = c.nftables_transactions();
    for tx in std::iter::once(&full).chain(partial.as_ref()) {
        round_trip(case, tx);
    }
    let mut got = format!("# full sync of config.yaml\n{}", text(&full));
    if let Some(partial) = partial {
        got.push_str(&format!("# partial sync to after.yaml\n{}", text(&partial)));
    }
    c.compare("nftables.nft", &got);

    // The ipvs mode's full render, with node ports on the testbed's node address.
    let node_ips = c
        .before
        .node_port_ips
        .clone()
        .unwrap_or_else(|| vec!["10.250.0.1".parse().unwrap()]);
    let sel = c.selections(&c.before);
    let empty = wasp_model::ProxyState::default();
    let req = wasp_dataplane::SyncRequest {
        state: &c.before,
        previous: &empty,
        selections: &sel,
        diff: None,
    };
    let mut ipvs = wasp_dataplane::ipvs::Ipvs::new(config(), std::time::Duration::ZERO);
    c.compare("ipvs.txt", &ipvs.render_text(&req, &node_ips));
    // And with the helper's rules as iptables chains (a host without nftables).
    if IPVS_IPTABLES.contains(&case) {
        let mut ipvs = wasp_dataplane::ipvs::Ipvs::new(config(), std::time::Duration::ZERO)
            .with_helper_rules(
                wasp_dataplane::RulesChoice::Iptables,
                wasp_dataplane::BackendChoice::Legacy,
            );
        c.compare("ipvs-iptables.txt", &ipvs.render_text(&req, &node_ips));
    }
}

/// The cases whose ipvs render is also checked with the helper as iptables chains.
const IPVS_IPTABLES: &[&str] = &["article", "external", "no-endpoints", "dual-stack"];

/// The netlink batch of `tx` reads back into `tx` (element lists cut per message), and
/// encoding what was read gives the same bytes: `parse(raw) == msg`, `emit(parse(raw)) == raw`.
fn round_trip(case: &str, tx: &[(Family, wasp_dataplane::nftables::Op)]) {
    let raw = encode(tx, 7).bytes;
    let back = decode(&raw).unwrap_or_else(|e| panic!("{case}: {e}"));
    let want = chunked(tx);
    for (i, (got, want)) in back.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "{case}: operation {i}");
    }
    assert_eq!(back.len(), want.len(), "{case}");
    assert_eq!(
        encode(&back, 7).bytes,
        raw,
        "{case}: re-encoded bytes differ"
    );
}

/// The userspace mode's rules (`userspace.nft`, and `userspace.txt` where it captures with
/// iptables): the kernel mode's, with TCP and UDP redirected to the proxy and the reply mark
/// for its transparent connections.
fn check_userspace(case: &str) {
    let c = Case::load(case);
    let cfg = wasp_dataplane::RenderConfig {
        capture: Some(15001),
        ..config()
    };
    c.compare("userspace.txt", &iptables_text(&c, &cfg));
    let (full, partial) = c.nftables_transactions_with(cfg);
    for tx in std::iter::once(&full).chain(partial.as_ref()) {
        round_trip(case, tx);
    }
    let mut got = format!("# full sync of config.yaml\n{}", text(&full));
    if let Some(partial) = partial {
        got.push_str(&format!("# partial sync to after.yaml\n{}", text(&partial)));
    }
    c.compare("userspace.nft", &got);
}

#[test]
fn userspace() {
    for case in ["article", "affinity", "external", "sctp"] {
        check_userspace(case);
    }
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

#[test]
fn dual_stack() {
    check("dual-stack");
}

#[test]
fn sctp() {
    check("sctp");
}

#[test]
fn port_rename() {
    check("port-rename");
}

#[test]
fn external() {
    check("external");
}

#[test]
fn external_all_local() {
    check("external-all-local");
}
