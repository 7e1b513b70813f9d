//! Benchmarks of the ipvs mode (not a test). This host's kernel has no IPVS: `scripts/vm-bench`
//! runs this inside the VM (TCG, so figures compare as ratios within one run).
//!
//! `ipvs -- [sync [N ...]] [lookup]` (both by default; sync at 1000 and 10000).
//! `WASP_BENCH_RUNS` sets runs per figure (default 3). Needs root: it re-runs itself inside a
//! fresh network namespace.
//!
//! - **sync**: a full sync of N Services × 10 endpoints from empty (virtual and real servers,
//!   the device's addresses, the helper table), `ipvsadm -R` of the same virtual and real
//!   servers from empty, and a one-endpoint change at N.
//! - **lookup**: TCP connect+response latency through the first and the last VIP with 10 and
//!   with 10,000 Services installed.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    cfg, fmt, in_netns, latencies, median, percentile, pin_to_cpu0, selections, state, timed, vip,
};
use wasp_dataplane::ipvs::Ipvs;
use wasp_dataplane::{Dataplane, SyncRequest};
use wasp_model::ProxyState;

/// A new network namespace: each measurement starts from an empty IPVS table there, since
/// deleting thousands of virtual servers is slow under emulation (a grace period each).
/// Namespaces are deleted as the benchmark ends.
fn fresh_ns(tag: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let ns = format!("wasp-ipvs-{tag}-{n}");
    let ok = Command::new("ip").args(["netns", "add", &ns]).status();
    assert!(ok.is_ok_and(|s| s.success()), "ip netns add {ns}");
    // Loopback up gives the namespace its local routing table: IPVS checks real servers'
    // address types in it.
    let up = Command::new("ip")
        .args(["-n", &ns, "link", "set", "lo", "up"])
        .status();
    assert!(up.is_ok_and(|s| s.success()), "lo up in {ns}");
    ns
}

/// `ipvsadm -R` of `lines` in an empty namespace, timed.
fn ipvsadm_restore(lines: &str) -> Duration {
    let ns = fresh_ns("restore");
    let (d, out) = timed(|| {
        let mut c = Command::new("ip")
            .args(["netns", "exec", &ns, "ipvsadm", "-R"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ipvsadm");
        use std::io::Write;
        c.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    });
    assert!(
        out.status.success(),
        "ipvsadm -R: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

/// The `ipvsadm -R` part of a plan.
fn ipvsadm_lines(plan: &str) -> String {
    plan.lines()
        .skip_while(|l| !l.starts_with("# ipvsadm"))
        .skip(1)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn sync(n: usize, runs: usize) {
    let (s0, s1) = (state(n, 0, None), state(n, 1, None));
    let (sel0, sel1) = (selections(&s0), selections(&s1));
    let empty = ProxyState::default();
    let d01 = s0.diff(&s1);
    let full = SyncRequest {
        state: &s0,
        previous: &empty,
        selections: &sel0,
        diff: None,
    };
    let change = SyncRequest {
        state: &s1,
        previous: &s0,
        selections: &sel1,
        diff: Some(&d01),
    };
    let (mut wasp, mut one, mut restore) = (Vec::new(), Vec::new(), Vec::new());
    let mut lines = String::new();
    for run in 0..runs {
        eprintln!("sync {n}: run {run}");
        let ns = fresh_ns("sync");
        let (w, o) = in_netns(&ns, || {
            let mut dp = Ipvs::new(cfg(), Duration::ZERO);
            dp.probe().expect("probe");
            lines = ipvsadm_lines(&dp.preview(full).expect("plan"));
            let w = timed(|| dp.sync(full).expect("full sync")).0;
            (w, timed(|| dp.sync(change).expect("one endpoint")).0)
        });
        wasp.push(w);
        one.push(o);
        eprintln!("sync {n}: ipvsadm -R");
        restore.push(ipvsadm_restore(&lines));
    }
    let (w, o, r) = (median(wasp), median(one), median(restore));
    println!(
        "| {n} | {} | {} | {:.2}× | {} | {:.0}× |",
        fmt(w),
        fmt(r),
        w.as_secs_f64() / r.as_secs_f64(),
        fmt(o),
        w.as_secs_f64() / o.as_secs_f64()
    );
    println!("(ipvsadm -R input: {} lines)", lines.lines().count());
}

/// A node namespace with one backend pod that answers and closes: `(testbed, node, pod
/// address)`.
fn backend(tag: &str) -> (wasp::testbed::Testbed, String, Ipv4Addr) {
    let mut tb = wasp::testbed::Testbed::new(tag, "10.96.0.0/12").expect("testbed");
    let server = Ipv4Addr::new(10, 244, 1, 2);
    tb.add_pod("srv", &server.to_string()).expect("pod");
    let listener = in_netns(&tb.pod_ns("srv"), || {
        TcpListener::bind((server, 80)).expect("bind")
    });
    // The client closes first (its TIME_WAIT stays before NAT); a second thread waits for
    // those closes, so that the answering one never does.
    let (closes, closing) = std::sync::mpsc::channel::<std::net::TcpStream>();
    std::thread::spawn(move || {
        for mut s in closing {
            let _ = s.read(&mut [0u8; 16]);
        }
    });
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            use std::io::Write;
            let _ = s.write_all(b"ok\n");
            let _ = closes.send(s);
        }
    });
    let node = tb.node();
    (tb, node, server)
}

/// Latency through the first and the last of 10 and of 10,000 Services, each size in its own
/// node (re-syncing from one size to the other would delete thousands of virtual servers).
fn lookup(runs: usize) {
    let sizes = [10usize, 10_000];
    let mut nodes = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        eprintln!("lookup: node with {n} Services");
        let (tb, node, server) = backend(&format!("wb{k}"));
        let s = state(n, 0, Some((server, 80)));
        let sel = selections(&s);
        let empty = ProxyState::default();
        let req = SyncRequest {
            state: &s,
            previous: &empty,
            selections: &sel,
            diff: None,
        };
        let mut dp = Ipvs::new(cfg(), Duration::ZERO);
        // As the daemon: the probe sets the sysctls (vs/conntrack for masquerade) first.
        in_netns(&node, || {
            dp.probe().expect("probe");
            dp.sync(req).expect("sync")
        });
        nodes.push((tb, node, dp));
    }
    let mut got: Vec<[Vec<Duration>; 2]> = vec![Default::default(), Default::default()];
    // Sizes alternate, round by round, so that both see the same machine.
    for run in 0..runs {
        for (k, &n) in sizes.iter().enumerate() {
            eprintln!("lookup: run {run} at {n}");
            let first = SocketAddr::from((vip(0), 80));
            let last = SocketAddr::from((vip(n as u32 - 1), 80));
            let [a, b] = in_netns(&nodes[k].1, || {
                pin_to_cpu0();
                latencies([first, last], 50, Duration::from_secs(5));
                latencies([first, last], 300, Duration::from_secs(30))
            });
            got[k][0].extend(a);
            got[k][1].extend(b);
        }
    }
    println!("| services installed | first median | first p90 | last median | last p90 |");
    println!("|---|---|---|---|---|");
    let mut medians = Vec::new();
    for (k, [a, b]) in got.into_iter().enumerate() {
        let (ma, mb) = (median(a.clone()), median(b.clone()));
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "| {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs |",
            sizes[k],
            us(ma),
            us(percentile(a, 0.9)),
            us(mb),
            us(percentile(b, 0.9))
        );
        medians.push((ma, mb));
    }
    println!(
        "ipvs: at 10,000 Services / at 10: first {:.2}×, last {:.2}×",
        medians[1].0.as_secs_f64() / medians[0].0.as_secs_f64(),
        medians[1].1.as_secs_f64() / medians[0].1.as_secs_f64()
    );
}

fn main() {
    let args = common::args();
    if !common::in_fresh_netns(&args) {
        return;
    }
    if Ipvs::new(cfg(), Duration::ZERO).probe().is_err() {
        eprintln!("this kernel has no IPVS: run scripts/vm-bench (the benchmark in a VM); skipped");
        return;
    }
    let runs = common::runs(3);
    let all = args.is_empty();
    if all || args.iter().any(|a| a == "sync") {
        let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
        let sizes = if sizes.is_empty() {
            vec![1000, 10_000]
        } else {
            sizes
        };
        println!(
            "| services | wasp full sync | ipvsadm -R | wasp / ipvsadm | one endpoint | full / one |"
        );
        println!("|---|---|---|---|---|---|");
        for n in sizes {
            sync(n, runs);
        }
    }
    if all || args.iter().any(|a| a == "lookup") {
        lookup(runs);
    }
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    for ns in String::from_utf8_lossy(&list.stdout).lines() {
        if let Some(name) = ns
            .split_whitespace()
            .next()
            .filter(|n| n.starts_with("wasp-ipvs-"))
        {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
