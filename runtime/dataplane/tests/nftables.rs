//! The nftables mode on the kernel: what wasp's netlink batches program must be exactly what
//! `nft -f` makes of the same transaction's text (which `wasp plan` prints), for the full sync
//! of every golden case and for the partial sync that follows it. Also: a rejected
//! transaction leaves the previous rules in force, and a full sync repairs drift.
//!
//! Root only: each test builds its own network namespaces.

mod common;

use std::process::Command;

use common::{CASES, Case, config};
use wasp_dataplane::nftables::Existing;
use wasp_dataplane::nftables::Nftables;
use wasp_dataplane::nftables::text::text;
use wasp_dataplane::{Dataplane, SyncRequest};
use wasp_model::ProxyState;

fn root_or_skip(test: &str) -> bool {
    if std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    }) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root, and CI=true forbids skipping"
    );
    eprintln!("skipping {test}: it needs root (network namespaces and nftables)");
    false
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("wasp-nft-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        Self(name)
    }

    /// Runs nft in the namespace; panics on failure.
    fn nft(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or_default().as_bytes())
            .unwrap();
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft {args:?} in {}: {}",
            self.0,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Both of wasp's tables, as `nft list` prints them.
    fn tables(&self) -> String {
        ["ip", "ip6"]
            .iter()
            .map(|f| self.nft(&["list", "table", f, "wasp"], None))
            .collect()
    }

    /// Runs `f` on a thread inside the namespace (a netlink socket opened there stays there).
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn netlink_programs_what_nft_makes_of_the_plan() {
    if !root_or_skip("netlink_programs_what_nft_makes_of_the_plan") {
        return;
    }
    let (ours, theirs) = (Netns::new("ours"), Netns::new("theirs"));
    // The namespaces are reused, so each case's full sync also reconciles away the last one's.
    for name in CASES {
        let case = Case::load(name);
        let empty = ProxyState::default();
        let sel = case.selections(&case.before);
        let mut nft = Nftables::new(config());
        let req = SyncRequest {
            state: &case.before,
            previous: &empty,
            selections: &sel,
            diff: None,
        };
        let full = ours.enter(|| {
            let existing = nft.existing().unwrap();
            let full = text(&nft.plan_sync(&req, &existing).tx);
            nft.sync(req)
                .unwrap_or_else(|e| panic!("{name}: full sync: {}", anyhow_chain(&e)));
            full
        });
        theirs.nft(&["-f", "-"], Some(&full));
        assert!(
            ours.tables().contains("map service-ips"),
            "{name}: nothing programmed"
        );
        assert_eq!(
            ours.tables(),
            theirs.tables(),
            "{name}: netlink and nft -f disagree after the full sync"
        );
        if let Some(after) = &case.after {
            let diff = case.before.diff(after);
            let sel = case.selections(after);
            let req = SyncRequest {
                state: after,
                previous: &case.before,
                selections: &sel,
                diff: Some(&diff),
            };
            let partial = text(&nft.plan_sync(&req, &Existing::default()).tx);
            let report = nft
                .sync(req)
                .unwrap_or_else(|e| panic!("{name}: partial sync: {}", anyhow_chain(&e)));
            assert!(!report.full, "{name}: the second sync should be partial");
            theirs.nft(&["-f", "-"], Some(&partial));
            assert_eq!(
                ours.tables(),
                theirs.tables(),
                "{name}: netlink and nft -f disagree after the partial sync"
            );
        }
    }
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

#[test]
fn a_rejected_transaction_changes_nothing_and_a_full_sync_repairs_drift() {
    if !root_or_skip("a_rejected_transaction_changes_nothing_and_a_full_sync_repairs_drift") {
        return;
    }
    let ns = Netns::new("drift");
    let case = Case::load("partial-endpoint-change");
    let after = case.after.clone().unwrap();
    let empty = ProxyState::default();
    let (sel_before, sel_after) = (case.selections(&case.before), case.selections(&after));
    let mut nft = Nftables::new(config());
    ns.enter(|| {
        nft.sync(SyncRequest {
            state: &case.before,
            previous: &empty,
            selections: &sel_before,
            diff: None,
        })
        .unwrap()
    });
    let good = ns.tables();

    // Someone deletes b's service chain and the slot of the endpoint that is about to
    // change; the partial sync that deletes that slot is rejected whole.
    let chain = good
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("chain svc-")
                .filter(|c| c.contains("/b/"))
        })
        .map(|c| format!("svc-{}", c.trim_end_matches(" {")))
        .expect("b's service chain");
    let lines: Vec<&str> = good.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("10.96.0.51 . 80 . 1 : 10.244.6.2 . 80"))
        .unwrap_or_else(|| panic!("b's slot 1: {good}"));
    let map = lines[..at]
        .iter()
        .rev()
        .find_map(|l| l.trim().strip_prefix("map "))
        .map(|m| m.trim_end_matches(" {").to_string())
        .expect("the map holding b's slots");
    ns.nft(
        &[
            "delete",
            "element",
            "ip",
            "wasp",
            "service-ips",
            "{ 10.96.0.51 . tcp . 80 }",
        ],
        None,
    );
    ns.nft(&["delete", "chain", "ip", "wasp", &chain], None);
    ns.nft(
        &[
            "delete",
            "element",
            "ip",
            "wasp",
            &map,
            "{ 10.96.0.51 . 80 . 1 }",
        ],
        None,
    );
    let drifted = ns.tables();
    let diff = case.before.diff(&after);
    let err = nft
        .sync(SyncRequest {
            state: &after,
            previous: &case.before,
            selections: &sel_after,
            diff: Some(&diff),
        })
        .expect_err("deleting a missing element must be rejected");
    let msg = anyhow_chain(&err);
    assert!(
        msg.contains(&format!(
            "delete element ip wasp {map} {{ 10.96.0.51 . 80 . 1 }}"
        )) && msg.contains("No such file"),
        "the error names the operation and the cause: {msg}"
    );
    assert_eq!(ns.tables(), drifted, "a rejected transaction changed rules");

    // The retry is a full sync: it rebuilds the tables, repairing the drift.
    let report = nft
        .sync(SyncRequest {
            state: &after,
            previous: &case.before,
            selections: &sel_after,
            diff: Some(&diff),
        })
        .unwrap();
    assert!(report.full, "the sync after a failure must be full");
    let repaired = ns.tables();
    assert!(repaired.contains(&format!("chain {chain}")), "{repaired}");
    assert!(
        repaired.contains("10.96.0.51 . tcp . 80 : goto"),
        "{repaired}"
    );
    assert!(
        repaired.contains("10.96.0.51 . 80 . 1 : 10.244.6.3 . 80")
            && !repaired.contains("10.244.6.2"),
        "{repaired}"
    );

    nft.cleanup().unwrap();
    let left = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "");
}

#[test]
fn a_full_resync_keeps_the_clients_of_affinity_sets() {
    if !root_or_skip("a_full_resync_keeps_the_clients_of_affinity_sets") {
        return;
    }
    let ns = Netns::new("affinity");
    let case = Case::load("affinity");
    let empty = ProxyState::default();
    let sel = case.selections(&case.before);
    let req = SyncRequest {
        state: &case.before,
        previous: &empty,
        selections: &sel,
        diff: None,
    };
    let mut nft = Nftables::new(config());
    ns.enter(|| nft.sync(req).unwrap());
    let set = ns
        .tables()
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("set aff-")
                .map(|s| format!("aff-{}", s.trim_end_matches(" {")))
        })
        .expect("an affinity set");
    // A client the kernel remembered, as `update @set { ip saddr }` would add it.
    ns.nft(
        &["add", "element", "ip", "wasp", &set, "{ 10.244.9.9 }"],
        None,
    );
    let report = nft.sync(req).unwrap();
    assert!(report.full);
    let after = ns.nft(&["list", "set", "ip", "wasp", &set], None);
    assert!(
        after.contains("10.244.9.9"),
        "the client was forgotten:\n{after}"
    );
}
