//! The ipvs mode's pure render: a service port becomes its virtual servers (one per address,
//! port and protocol: cluster IPs, node ports, external IPs, LoadBalancer IPs), the
//! addresses that go on the dummy device, and its elements of the helper table.
//!
//! A Selection becomes a scheduler:
//! - weighted (and a plugin's per-connection fallback) → `wrr` with the weights, divided by
//!   their gcd;
//! - hashed → `mh` with each endpoint's slot count as its weight. IPVS builds its own Maglev
//!   table from the weights, so the slots an endpoint gets are the table's in proportion,
//!   not the table's exact slots. A key with the source port sets `mh-port`.
//!
//! ClientIP affinity is persistence with the affinity's timeout.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use wasp_model::{HashKey, Protocol, Selection, ServicePortState};

use super::genl::{Dest, F_MH_FALLBACK, F_MH_PORT, F_PERSISTENT, Service, VsKey};
use crate::core::endpoints::{class, of_family};
use crate::core::masquerade::{Masquerade, decision};
use crate::core::{Family, RenderConfig, spread};

/// One element of the helper table (see [`super::helper`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    /// An address on the dummy device: its ports that are not services are rejected.
    Vip(IpAddr),
    /// A virtual server: its address's other ports are rejected.
    Service(VsKey),
    /// A virtual server without endpoints: rejected.
    Reject(VsKey),
    /// A virtual server whose endpoints are all elsewhere (traffic policy Local): dropped.
    Drop(VsKey),
    /// Traffic to it from outside the cluster CIDRs is masqueraded.
    MasqueradeOutside(VsKey),
    /// Traffic to it is always masqueraded.
    MasqueradeAll(VsKey),
    /// An endpoint that may reach itself through a virtual server.
    Hairpin(IpAddr),
    /// A LoadBalancer address that only these sources may reach.
    Firewall(VsKey, Vec<IpNet>),
    /// Traffic policy Local: pods and the node reaching this external address are marked
    /// for the port's marked virtual server, which has every endpoint.
    ShortCircuit(VsKey, u32),
}

/// What one service port programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortPlan {
    /// Its virtual servers, each with its real servers.
    pub servers: Vec<(Service, Vec<Dest>)>,
    /// Its elements of the helper table.
    pub elems: BTreeSet<Elem>,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The real servers of one traffic class: the endpoints with a weight, the weights divided
/// by their gcd; equal weights when the Selection gives the whole class 0.
fn dests(class: &[(usize, &wasp_model::Endpoint)], weights: &[u32]) -> Vec<Dest> {
    let w = |i: usize| weights.get(i).copied().unwrap_or(1);
    let all_zero = class.iter().all(|(i, _)| w(*i) == 0);
    let raw: Vec<(IpAddr, u16, u32)> = class
        .iter()
        .map(|(i, e)| (e.ip, e.port, if all_zero { 1 } else { w(*i) }))
        .filter(|(_, _, w)| *w > 0)
        .collect();
    let g = raw.iter().fold(0, |g, (_, _, w)| gcd(g, *w)).max(1);
    raw.into_iter()
        .map(|(addr, port, w)| Dest {
            addr,
            port,
            weight: (w / g).min(i32::MAX as u32),
        })
        .collect()
}

/// The scheduler and flags a Selection asks for.
fn scheduler(sel: &Selection) -> (&'static str, u32) {
    match sel {
        Selection::Hashed { key, .. } => {
            let port = match key {
                HashKey::SourceIp => 0,
                HashKey::SourceIpPort | HashKey::FiveTuple => F_MH_PORT,
            };
            ("mh", F_MH_FALLBACK | port)
        }
        Selection::Weighted(_) | Selection::PerConnection { .. } => ("wrr", 0),
    }
}

/// The firewall marks of marked virtual servers: `MARK_BASE | n`, under `MARK_MASK`.
pub const MARK_BASE: u32 = 0x5a00_0000;
/// The bits that say a mark is a marked virtual server's.
pub const MARK_MASK: u32 = 0xff00_0000;

/// Whether a port needs a marked virtual server: traffic policy Local on external
/// addresses, where pods and the node still reach every endpoint (as in the other modes).
pub fn needs_mark(p: &ServicePortState) -> bool {
    p.service.external_traffic_local && p.service.has_external() && !p.cluster.is_empty()
}

/// One port's render, built a virtual server at a time.
struct Builder<'a> {
    p: &'a ServicePortState,
    cfg: &'a RenderConfig,
    weights: Vec<u32>,
    scheduler: &'static str,
    flags: u32,
    timeout: u32,
    plan: PortPlan,
}

impl Builder<'_> {
    fn server(&mut self, key: VsKey, ds: &[Dest], masq: Option<Elem>, device: bool) {
        let service = Service {
            key,
            scheduler: self.scheduler.into(),
            flags: self.flags,
            timeout: self.timeout,
        };
        self.plan.servers.push((service, ds.to_vec()));
        let e = &mut self.plan.elems;
        if key.fwmark == 0 {
            e.insert(Elem::Service(key));
            match (ds.is_empty(), self.p.has_any_endpoints) {
                (false, _) => {}
                (true, true) => {
                    e.insert(Elem::Drop(key));
                }
                (true, false) => {
                    e.insert(Elem::Reject(key));
                }
            }
        }
        e.extend(masq);
        e.extend(ds.iter().map(|d| Elem::Hairpin(d.addr)));
        if device {
            e.insert(Elem::Vip(key.addr));
        }
    }

    /// The external addresses of family `f`: `(address, port, on the device)`.
    fn external(&self, f: Family, node_ips: &[IpAddr]) -> Vec<(IpAddr, u16, bool)> {
        let s = &self.p.service;
        let mut out: Vec<(IpAddr, u16, bool)> = (s.external_ips.iter())
            .chain(&s.load_balancer_ips)
            .filter(|ip| f.holds(ip))
            .map(|ip| (*ip, s.port, true))
            .collect();
        if let Some(np) = s.node_port {
            out.extend(
                node_ips
                    .iter()
                    .filter(|ip| f.holds(ip))
                    .map(|ip| (*ip, np, false)),
            );
        }
        out
    }

    fn family(&mut self, f: Family, node_ips: &[IpAddr], mark: Option<u32>) {
        let (p, proto, port) = (self.p, self.p.service.protocol, self.p.service.port);
        let eps = of_family(p, f);
        let internal = dests(&class(p, &eps, p.internal()), &self.weights);
        let external = dests(&class(p, &eps, p.external()), &self.weights);
        for &vip in p.service.cluster_ips.iter().filter(|ip| f.holds(ip)) {
            let key = VsKey::tuple(proto, vip, port);
            let masq = match decision(self.cfg, f) {
                Masquerade::All => Some(Elem::MasqueradeAll(key)),
                Masquerade::NotFrom(c) if c.is_empty() => None,
                Masquerade::NotFrom(_) => Some(Elem::MasqueradeOutside(key)),
            };
            self.server(key, &internal, masq, true);
        }
        // External traffic keeps the client's address only with traffic policy Local.
        let local = p.service.external_traffic_local && !self.cfg.masquerade_all;
        let outside = self.external(f, node_ips);
        for &(addr, port, device) in &outside {
            let key = VsKey::tuple(proto, addr, port);
            let masq = (!local).then_some(Elem::MasqueradeAll(key));
            self.server(key, &external, masq, device);
        }
        let cluster = dests(&class(p, &eps, &p.cluster), &self.weights);
        if let Some(m) = mark.filter(|_| !cluster.is_empty() && !outside.is_empty()) {
            self.server(VsKey::marked(f, m), &cluster, None, false);
            for &(addr, port, _) in &outside {
                let e = Elem::ShortCircuit(VsKey::tuple(proto, addr, port), m);
                self.plan.elems.insert(e);
            }
        }
        let ranges = &p.service.load_balancer_source_ranges;
        for &ip in p.service.load_balancer_ips.iter().filter(|ip| f.holds(ip)) {
            if !ranges.is_empty() {
                let mine = ranges.iter().filter(|r| f.holds(&r.addr())).copied();
                let e = Elem::Firewall(VsKey::tuple(proto, ip, port), mine.collect());
                self.plan.elems.insert(e);
            }
        }
    }
}

/// Renders one service port. `node_ips` are the addresses its node port answers on; `mark`
/// is its firewall mark when [`needs_mark`].
pub fn port(
    p: &ServicePortState,
    sel: Option<&Selection>,
    cfg: &RenderConfig,
    node_ips: &[IpAddr],
    mark: Option<u32>,
) -> PortPlan {
    let n = p.endpoints.len();
    let sel = spread::or_equal(sel, n);
    let (scheduler, mut flags) = scheduler(&sel);
    let timeout = p.service.session_affinity_seconds.unwrap_or(0);
    if timeout > 0 {
        flags |= F_PERSISTENT;
    }
    let mut b = Builder {
        p,
        cfg,
        weights: sel.weights(n),
        scheduler,
        flags,
        timeout,
        plan: PortPlan::default(),
    };
    for f in Family::ALL {
        b.family(f, node_ips, mark);
    }
    b.plan
}

fn proto_flag(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
        Protocol::Sctp => "--sctp-service",
    }
}

/// `ADDR:PORT`, with brackets for IPv6.
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A virtual server as `ipvsadm` names it: `-t ADDR:PORT`, or `-f MARK [-6]`.
pub fn target(k: &VsKey) -> String {
    if k.fwmark != 0 {
        let six = if k.addr.is_ipv6() { " -6" } else { "" };
        return format!("-f {}{six}", k.fwmark);
    }
    format!("{} {}", proto_flag(k.proto), endpoint(k.addr, k.port))
}

/// A virtual server in `ipvsadm -R` syntax (`ipvsadm -Sn` prints the same).
pub fn service_line(s: &Service) -> String {
    let mut line = format!("-A {} -s {}", target(&s.key), s.scheduler);
    let mut sched_flags = Vec::new();
    if s.flags & F_MH_FALLBACK != 0 {
        sched_flags.push("mh-fallback");
    }
    if s.flags & F_MH_PORT != 0 {
        sched_flags.push("mh-port");
    }
    if !sched_flags.is_empty() {
        let _ = write!(line, " -b {}", sched_flags.join(","));
    }
    if s.flags & F_PERSISTENT != 0 {
        let _ = write!(line, " -p {}", s.timeout);
    }
    line
}

/// A real server in `ipvsadm -R` syntax (masquerading).
pub fn dest_line(k: &VsKey, d: &Dest) -> String {
    format!(
        "-a {} -r {} -m -w {}",
        target(k),
        endpoint(d.addr, d.port),
        d.weight
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use wasp_model::{Endpoint, ServicePort};

    /// The render configuration the ipvs mode's unit tests use.
    pub(in crate::ipvs) fn cfg() -> RenderConfig {
        RenderConfig {
            cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            masquerade_all: false,
            masquerade_mark: 0x4000,
            service_cidrs: Vec::new(),
            capture: None,
        }
    }

    fn port_with(eps: &[&str]) -> ServicePortState {
        let mut s = ServicePort::new("10.96.0.10".parse().unwrap(), 80, Protocol::Tcp);
        s.node_port = Some(30080);
        let eps = eps
            .iter()
            .map(|ip| Endpoint::ready(ip.parse().unwrap(), 8080))
            .collect();
        ServicePortState::new(s, eps)
    }

    #[test]
    fn weights_become_wrr_and_a_table_becomes_mh_with_slot_counts() {
        let p = port_with(&["10.244.1.2", "10.244.1.3"]);
        let node = ["10.250.0.1".parse().unwrap()];
        let plan = port(
            &p,
            Some(&Selection::Weighted(vec![2, 4])),
            &cfg(),
            &node,
            None,
        );
        assert_eq!(plan.servers.len(), 2, "the cluster IP and the node port");
        let (s, ds) = &plan.servers[0];
        assert_eq!(service_line(s), "-A -t 10.96.0.10:80 -s wrr");
        let lines: Vec<String> = ds.iter().map(|d| dest_line(&s.key, d)).collect();
        assert_eq!(
            lines,
            [
                "-a -t 10.96.0.10:80 -r 10.244.1.2:8080 -m -w 1",
                "-a -t 10.96.0.10:80 -r 10.244.1.3:8080 -m -w 2"
            ]
        );
        let hashed = Selection::Hashed {
            key: HashKey::SourceIpPort,
            table: vec![0, 1, 1, 0, 1, 1],
        };
        let plan = port(&p, Some(&hashed), &cfg(), &node, None);
        let (s, ds) = &plan.servers[1];
        assert_eq!(
            service_line(s),
            "-A -t 10.250.0.1:30080 -s mh -b mh-fallback,mh-port"
        );
        assert_eq!(ds.iter().map(|d| d.weight).collect::<Vec<_>>(), [1, 2]);
        assert!(plan.elems.contains(&Elem::MasqueradeAll(s.key)));
    }

    #[test]
    fn no_endpoints_reject_and_affinity_persists() {
        let mut p = port_with(&[]);
        p.service.session_affinity_seconds = Some(600);
        let plan = port(&p, None, &cfg(), &[], None);
        let (s, ds) = &plan.servers[0];
        assert!(ds.is_empty());
        assert_eq!(service_line(s), "-A -t 10.96.0.10:80 -s wrr -p 600");
        assert!(plan.elems.contains(&Elem::Reject(s.key)));
        assert!(plan.elems.contains(&Elem::Vip(s.key.addr)));
        assert!(plan.elems.contains(&Elem::MasqueradeOutside(s.key)));
    }
}
