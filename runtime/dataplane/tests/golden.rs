//! Golden tests of what each mode renders. Re-bless with `WASP_BLESS=1`.
//!
//! Each case under `tests/golden/<case>/` holds `config.yaml` (and, for a partial sync,
//! `after.yaml`): the manifests are resolved through the model exactly as the daemon does, and
//! the iptables-restore input must equal `iptables.txt` and the nftables transactions
//! `nftables.nft`.

mod common;

use std::collections::BTreeSet;

use common::{Case, config};
use wasp_dataplane::iptables::{Scope, render};
use wasp_dataplane::nftables::ops::text;

fn check(case: &str) {
    let c = Case::load(case);
    let existing = BTreeSet::new();
    let full = render(
        &c.before,
        &c.selections(&c.before),
        &config(),
        Scope::Full {
            existing: &existing,
        },
    );
    let mut got = full.text.clone();
    if let Some(after) = &c.after {
        let diff = c.before.diff(after);
        let partial = render(
            after,
            &c.selections(after),
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
    c.compare("iptables.txt", &got);

    // The nftables mode's transactions, as `wasp plan` prints them.
    let (full, partial) = c.nftables_transactions();
    let mut got = format!("# full sync of config.yaml\n{}", text(&full));
    if let Some(partial) = partial {
        got.push_str(&format!("# partial sync to after.yaml\n{}", text(&partial)));
    }
    c.compare("nftables.nft", &got);
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
