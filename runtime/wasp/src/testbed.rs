//! A node and its pods as network namespaces joined by veth pairs, for the demo and the tests.
//!
//! The node namespace forwards, owns an empty bridge (this kernel may lack the dummy driver) with
//! the node's addresses, and routes the service CIDR and the default route into it (so traffic
//! to a VIP or an external address that nothing claims vanishes, as into a real node's uplink,
//! rather than meeting "no route"), and reaches each
//! pod over a routed veth pair: the pod's /32 on its `eth0`, a default route via 169.254.1.1,
//! which the node side of every pair holds (the layout Calico uses). Traffic therefore crosses
//! the node's netfilter hooks exactly as pod traffic does on a real node.

use std::process::{Child, Command, Output, Stdio};

use anyhow::{Context, bail};

/// The address the node side of every pod link holds: what masqueraded traffic comes from.
pub const NODE_LINK_IP: &str = "169.254.1.1";
/// The node's own address, on its port-less bridge.
pub const NODE_IP: &str = "10.250.0.1";
/// The node's own IPv6 address, on the same bridge.
pub const NODE_IP6: &str = "fd00:250::1";
/// The IPv6 address the node side of every pod link holds (masqueraded IPv6 comes from it).
pub const NODE_LINK_IP6: &str = "fd00:ffff::1";
/// The IPv6 next hop every pod routes through (link-local, on the node side of its link).
const GATEWAY6: &str = "fe80::1";

/// Runs a command, failing with its stderr when it fails.
///
/// # Errors
/// Fails when the command cannot start or exits non-zero.
pub fn sh(args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Runs a command inside namespace `ns`, failing with its stderr when it fails.
fn in_netns(ns: &str, args: &[&str]) -> anyhow::Result<Output> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    sh(&full)
}

/// Whether this process can build namespaces (is root).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// One node with pods; everything is removed on drop.
#[derive(Debug)]
pub struct Testbed {
    prefix: String,
    pods: Vec<String>,
    children: Vec<Child>,
}

impl Testbed {
    /// Builds the node namespace `<prefix>-node`.
    ///
    /// # Errors
    /// Fails when a namespace or link cannot be made.
    pub fn new(prefix: &str, service_cidr: &str) -> anyhow::Result<Self> {
        let tb = Self {
            prefix: prefix.to_string(),
            pods: Vec::new(),
            children: Vec::new(),
        };
        let node = tb.node();
        let _ = Command::new("ip")
            .args(["netns", "del", &node])
            .stderr(Stdio::null())
            .status();
        sh(&["ip", "netns", "add", &node])?;
        tb.node_sh(&["ip", "link", "set", "lo", "up"])?;
        tb.node_sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        tb.node_sh(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        // No duplicate address detection: addresses are usable at once.
        tb.node_sh(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"])?;
        tb.node_sh(&["ip", "link", "add", "wasp-node0", "type", "bridge"])?;
        tb.node_sh(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_IP}/32"),
            "dev",
            "wasp-node0",
        ])?;
        tb.node_sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{NODE_IP6}/128"),
            "dev",
            "wasp-node0",
            "nodad",
        ])?;
        // No ARP: traffic to a VIP nothing claims vanishes, as into a real default route.
        tb.node_sh(&["ip", "link", "set", "wasp-node0", "arp", "off", "up"])?;
        tb.node_sh(&["ip", "route", "add", service_cidr, "dev", "wasp-node0"])?;
        tb.node_sh(&["ip", "route", "add", "default", "dev", "wasp-node0"])?;
        tb.node_sh(&["ip", "-6", "route", "add", "default", "dev", "wasp-node0"])?;
        Ok(tb)
    }

    /// The node namespace's name.
    pub fn node(&self) -> String {
        format!("{}-node", self.prefix)
    }

    /// A pod namespace's name.
    pub fn pod_ns(&self, pod: &str) -> String {
        format!("{}-{pod}", self.prefix)
    }

    fn node_sh(&self, args: &[&str]) -> anyhow::Result<Output> {
        in_netns(&self.node(), args)
    }

    /// Adds a pod (or an outside host) with address `ip`, linked to the node.
    ///
    /// # Errors
    /// Fails when the namespace or its link cannot be made.
    pub fn add_pod(&mut self, name: &str, ip: &str) -> anyhow::Result<()> {
        let ns = self.pod_ns(name);
        let idx = self.pods.len();
        let (host_if, peer_if) = (format!("wv{idx}"), format!("wp{idx}"));
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        sh(&["ip", "netns", "add", &ns])?;
        self.pods.push(ns.clone());
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.accept_dad=0",
        ])?;
        let node = self.node();
        sh(&[
            "ip", "link", "add", &host_if, "netns", &node, "type", "veth", "peer", "name",
            &peer_if, "netns", &ns,
        ])?;
        let in_pod = |args: &[&str]| in_netns(&ns, args);
        in_pod(&["ip", "link", "set", "lo", "up"])?;
        in_pod(&["ip", "link", "set", &peer_if, "name", "eth0"])?;
        in_pod(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        in_pod(&["ip", "link", "set", "eth0", "up"])?;
        in_pod(&["ip", "route", "add", NODE_LINK_IP, "dev", "eth0"])?;
        in_pod(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            NODE_LINK_IP,
            "dev",
            "eth0",
        ])?;
        self.node_sh(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_LINK_IP}/32"),
            "dev",
            &host_if,
        ])?;
        self.node_sh(&["ip", "link", "set", &host_if, "up"])?;
        self.node_sh(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{host_if}.proxy_arp=1"),
        ])?;
        self.node_sh(&["ip", "route", "add", &format!("{ip}/32"), "dev", &host_if])?;
        Ok(())
    }

    /// Routes the IPv6 service CIDR `cidr` on the node, as `new` does for IPv4.
    ///
    /// # Errors
    /// Fails when the route cannot be added.
    pub fn route_ipv6_services(&self, cidr: &str) -> anyhow::Result<()> {
        self.node_sh(&["ip", "-6", "route", "add", cidr, "dev", "wasp-node0"])?;
        Ok(())
    }

    /// Gives pod `name` an IPv6 address, routed through the node like its IPv4 one.
    ///
    /// # Errors
    /// Fails when an address or route cannot be added.
    pub fn add_ipv6(&self, name: &str, ip6: &str) -> anyhow::Result<()> {
        let ns = self.pod_ns(name);
        let idx = self
            .pods
            .iter()
            .position(|p| p == &ns)
            .context("no such pod")?;
        let host_if = format!("wv{idx}");
        let in_pod = |args: &[&str]| in_netns(&ns, args);
        in_pod(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{ip6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        in_pod(&[
            "ip", "-6", "route", "add", "default", "via", GATEWAY6, "dev", "eth0",
        ])?;
        self.node_sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{GATEWAY6}/64"),
            "dev",
            &host_if,
            "nodad",
        ])?;
        self.node_sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{NODE_LINK_IP6}/128"),
            "dev",
            &host_if,
            "nodad",
        ])?;
        self.node_sh(&[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{ip6}/128"),
            "dev",
            &host_if,
        ])?;
        Ok(())
    }

    /// Gives pod `name` more addresses (as many clients behind one link).
    ///
    /// # Errors
    /// Fails when an address or route cannot be added.
    pub fn add_addresses(&self, name: &str, ips: &[String]) -> anyhow::Result<()> {
        let ns = self.pod_ns(name);
        let idx = self
            .pods
            .iter()
            .position(|p| p == &ns)
            .context("no such pod")?;
        for ip in ips {
            sh(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "ip",
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                "eth0",
            ])?;
            self.node_sh(&[
                "ip",
                "route",
                "add",
                &format!("{ip}/32"),
                "dev",
                &format!("wv{idx}"),
            ])?;
        }
        Ok(())
    }

    /// Starts `args` inside namespace `ns`; the process is killed on drop.
    ///
    /// # Errors
    /// Fails when the process cannot start.
    pub fn spawn_in(&mut self, ns: &str, args: &[&str], quiet: bool) -> anyhow::Result<u32> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null());
        if quiet {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {args:?} in {ns}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Runs `args` inside namespace `ns` and returns its output.
    ///
    /// # Errors
    /// Fails when the command cannot start.
    pub fn exec_in(&self, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .with_context(|| format!("cannot run {args:?} in {ns}"))
    }

    /// Sends SIGTERM to a child started here and waits for it.
    pub fn stop(&mut self, pid: u32) {
        self.signal(pid, "-TERM");
    }

    /// Sends SIGKILL to a child started here (no chance to clean up) and waits for it.
    pub fn kill(&mut self, pid: u32) {
        self.signal(pid, "-KILL");
    }

    fn signal(&mut self, pid: u32, signal: &str) {
        if let Some(pos) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(pos);
            let _ = Command::new("kill")
                .args([signal, &pid.to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.pods.iter().chain(std::iter::once(&self.node())) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
