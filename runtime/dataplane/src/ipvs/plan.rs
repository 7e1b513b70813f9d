//! Planning a sync: the commands, the helper table's changes and the device's addresses
//! that take the kernel to the wanted state, from wasp's record (a partial sync) or from a
//! dump of the kernel (a full sync); and applying the device's addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use wasp_model::ServicePortName;

use super::diff::{self, Server};
use super::genl::{self, Command, VsKey};
use super::render::{self, Elem, PortPlan};
use super::{Ipvs, NODE_PORTS, helper, io_error, link};
use crate::core::Family;
use crate::exec::ExecError;
use crate::mode::SyncRequest;

/// Every address, with its device's index.
pub(super) type Addresses = Vec<(u32, IpAddr)>;

/// What wasp programmed.
#[derive(Debug, Default)]
pub(super) struct Programmed {
    pub(super) ports: BTreeMap<ServicePortName, PortPlan>,
    pub(super) servers: BTreeMap<VsKey, Server>,
    /// Each helper element, with how many ports want it.
    pub(super) elems: BTreeMap<Elem, usize>,
    pub(super) node_ips: Vec<IpAddr>,
}

/// The node's addresses for node ports: the configured ones, else every address but the
/// device's, loopback and link-local ones.
fn node_ips(req: &SyncRequest<'_>, device: u32, addrs: &[(u32, IpAddr)]) -> Vec<IpAddr> {
    if let Some(ips) = &req.state.node_port_ips {
        return ips.clone();
    }
    let link_local = |ip: &IpAddr| match ip {
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
        IpAddr::V4(a) => a.is_link_local(),
    };
    let mut ips: Vec<IpAddr> = addrs
        .iter()
        .filter(|(i, ip)| *i != device && !ip.is_loopback() && !link_local(ip))
        .map(|(_, ip)| *ip)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Everything `plans` want: the virtual servers (the first port wins a shared one) and the
/// helper elements, counted.
fn wanted<'a>(
    plans: impl Iterator<Item = &'a PortPlan>,
) -> (BTreeMap<VsKey, Server>, BTreeMap<Elem, usize>) {
    let mut servers = BTreeMap::new();
    let mut elems = BTreeMap::new();
    for p in plans {
        for (s, ds) in &p.servers {
            servers
                .entry(s.key)
                .or_insert_with(|| Server::new(s.clone(), ds));
        }
        for e in &p.elems {
            *elems.entry(e.clone()).or_insert(0) += 1;
        }
    }
    (servers, elems)
}

/// The firewall marks of the ports with a marked virtual server.
#[derive(Debug, Clone, Default)]
pub(super) struct Marks {
    by_port: BTreeMap<ServicePortName, u32>,
    used: BTreeSet<u32>,
    last: u32,
}

impl Marks {
    /// The port's mark: the one it has, or the next free one (`MARK_BASE | n`) that holds
    /// none of the `reserved` bits.
    fn get(&mut self, name: &ServicePortName, reserved: u32) -> u32 {
        if let Some(m) = self.by_port.get(name) {
            return *m;
        }
        loop {
            self.last = self.last % !render::MARK_MASK + 1;
            let m = render::MARK_BASE | self.last;
            if m & reserved == 0 && self.used.insert(m) {
                self.by_port.insert(name.clone(), m);
                return m;
            }
        }
    }

    fn release(&mut self, name: &ServicePortName) {
        if let Some(m) = self.by_port.remove(name) {
            self.used.remove(&m);
        }
    }

    fn retain(&mut self, keep: impl Fn(&ServicePortName) -> bool) {
        let used = &mut self.used;
        self.by_port.retain(|name, m| {
            let k = keep(name);
            if !k {
                used.remove(m);
            }
            k
        });
    }
}

/// One sync's work, planned.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub(super) commands: Vec<Command>,
    /// The helper's rules of each family, as the tool's input, where they are rewritten (a
    /// full sync, a source range's change).
    pub(super) helper: Vec<(Family, String)>,
    /// The helper table's elements that go and come (a partial sync).
    pub(super) removed: Vec<Elem>,
    pub(super) added: Vec<Elem>,
    /// Addresses to add to and remove from the device.
    pub(super) add: Vec<IpAddr>,
    pub(super) remove: Vec<IpAddr>,
    pub(super) next: Programmed,
    pub(super) full: bool,
}

impl Ipvs {
    /// The port's firewall mark when it needs a marked virtual server.
    fn mark_for(
        &mut self,
        name: &ServicePortName,
        p: &wasp_model::ServicePortState,
    ) -> Option<u32> {
        if !render::needs_mark(p) {
            self.marks.release(name);
            return None;
        }
        let reserved = self.cfg.masquerade_mark | crate::core::TRANSPARENT_MARK;
        Some(self.marks.get(name, reserved))
    }

    /// Every port's render, with the marks they need; the pure part of a full sync.
    fn render_ports(
        &mut self,
        req: &SyncRequest<'_>,
        node_ips: &[IpAddr],
    ) -> BTreeMap<ServicePortName, PortPlan> {
        self.marks.retain(|name| req.state.ports.contains_key(name));
        (req.state.ports.iter())
            .map(|(name, p)| {
                let mark = self.mark_for(name, p);
                let plan = render::port(p, req.selections.get(name), &self.cfg, node_ips, mark);
                (name.clone(), plan)
            })
            .collect()
    }

    /// What a full sync of `req` programs on a host without wasp's virtual servers, as
    /// text, with node ports on `node_ips`: the pure render, without the kernel (the golden
    /// tests' view of the mode).
    pub fn render_text(&mut self, req: &SyncRequest<'_>, node_ips: &[IpAddr]) -> String {
        let ports = self.render_ports(req, node_ips);
        let (want, elems) = wanted(ports.values());
        let mut cmds = Vec::new();
        let mut draining = diff::Draining::new();
        for (k, w) in &want {
            diff::server(*k, None, Some(w), &mut draining, Instant::now(), &mut cmds);
        }
        let mut out = String::from("# ipvsadm -R\n");
        for c in &cmds {
            out += &diff::line(c);
            out.push('\n');
        }
        out += &format!("# ip address add ... dev {}\n", link::DEVICE);
        for ip in elems.keys().filter_map(vip) {
            out += &format!("{ip}/{}\n", Family::of(&ip).host_prefix());
        }
        let all: BTreeSet<&Elem> = elems.keys().collect();
        let iptables = self.helper.is_iptables();
        out += if iptables {
            "# iptables-restore --noflush\n"
        } else {
            "# nft -f -\n"
        };
        for f in Family::ALL {
            out += &match iptables {
                // As on a host without the helper's hooks.
                true => super::helper_ipt::full(&self.cfg, f, &all, &[]),
                false => helper::full(&self.cfg, f, &all),
            };
        }
        out
    }

    pub(super) fn plan(&mut self, req: &SyncRequest<'_>, reading: bool) -> Result<Plan, ExecError> {
        let now = Instant::now();
        let full = req.diff.is_none() || self.programmed.is_none();
        if full {
            return self.plan_full(req, reading, now);
        }
        let mut prog = self.programmed.take().expect("partial syncs have a record");
        let diff = req.diff.expect("partial syncs have a diff");
        let mut plan = Plan::default();
        let mut old_elems = BTreeMap::new();
        let mut touched_keys = BTreeSet::new();
        for name in diff.touched() {
            if let Some(old) = prog.ports.remove(name) {
                touched_keys.extend(old.servers.iter().map(|(s, _)| s.key));
                for e in old.elems {
                    *old_elems.entry(e).or_insert(0usize) += 1;
                }
            }
            if !req.state.ports.contains_key(name) {
                self.marks.release(name);
            }
            if let Some(p) = req.state.ports.get(name) {
                let mark = self.mark_for(name, p);
                let new =
                    render::port(p, req.selections.get(name), &self.cfg, &prog.node_ips, mark);
                touched_keys.extend(new.servers.iter().map(|(s, _)| s.key));
                prog.ports.insert(name.clone(), new);
            }
        }
        // A touched key may be shared with an untouched port: recompute it from every
        // port that names it.
        let (want, _) = wanted(
            prog.ports
                .values()
                .filter(|p| p.servers.iter().any(|(s, _)| touched_keys.contains(&s.key))),
        );
        for key in &touched_keys {
            diff::server(
                *key,
                prog.servers.get(key),
                want.get(key),
                &mut self.draining,
                now,
                &mut plan.commands,
            );
        }
        let mut new_elems = BTreeMap::new();
        for name in diff.changed.iter() {
            for e in prog
                .ports
                .get(name)
                .map(|p| p.elems.clone())
                .unwrap_or_default()
            {
                *new_elems.entry(e).or_insert(0usize) += 1;
            }
        }
        self.element_changes(&mut prog, &old_elems, &new_elems, &mut plan);
        plan.next = prog;
        Ok(plan)
    }

    /// Applies the element counts' change to `prog` and plans the set elements and device
    /// addresses that appear or go.
    fn element_changes(
        &self,
        prog: &mut Programmed,
        old: &BTreeMap<Elem, usize>,
        new: &BTreeMap<Elem, usize>,
        plan: &mut Plan,
    ) {
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for e in old.keys().chain(new.keys()).collect::<BTreeSet<_>>() {
            let before = prog.elems.get(e).copied().unwrap_or(0);
            let after = (before + new.get(e).copied().unwrap_or(0))
                .saturating_sub(old.get(e).copied().unwrap_or(0));
            match (before > 0, after > 0) {
                (false, true) => added.push(e.clone()),
                (true, false) => removed.push(e.clone()),
                _ => {}
            }
            prog.elems.insert(e.clone(), after);
        }
        prog.elems.retain(|_, c| *c > 0);
        let firewall = |v: &[Elem]| v.iter().any(|e| matches!(e, Elem::Firewall(..)));
        let rewrite_firewall = firewall(&added) || firewall(&removed);
        for f in Family::ALL {
            if rewrite_firewall {
                let all: BTreeSet<&Elem> = prog.elems.keys().collect();
                plan.helper.push((f, self.helper.firewall(f, &all)));
            }
        }
        plan.add = added.iter().filter_map(vip).collect();
        plan.remove = removed.iter().filter_map(vip).collect();
        plan.added = added;
        plan.removed = removed;
    }

    fn plan_full(
        &mut self,
        req: &SyncRequest<'_>,
        reading: bool,
        now: Instant,
    ) -> Result<Plan, ExecError> {
        // A dry run creates nothing: it reads the device if it is there.
        let (device, addrs) = if reading {
            self.device()?
        } else {
            self.existing_device()
                .map(|(d, a)| (d.unwrap_or(0), a))
                .unwrap_or_default()
        };
        let node_ips = node_ips(req, device, &addrs);
        let ports = self.render_ports(req, &node_ips);
        let (want, elems) = wanted(ports.values());
        let on_device: BTreeSet<IpAddr> = addrs
            .iter()
            .filter(|(i, _)| *i == device)
            .map(|(_, ip)| *ip)
            .collect();
        let previous = self.programmed.take().unwrap_or_default();
        let kernel = match self.dump_services() {
            Ok(k) => k,
            Err(_) if !reading => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut have = BTreeMap::new();
        for s in kernel {
            let k = s.key;
            let ours = k.fwmark & render::MARK_MASK == render::MARK_BASE
                || on_device.contains(&k.addr)
                || (node_ips.contains(&k.addr) && NODE_PORTS.contains(&k.port))
                || want.contains_key(&k)
                || previous.servers.contains_key(&k);
            if !ours {
                continue;
            }
            let dests = self.dump_dests(k)?;
            let ds: Vec<genl::Dest> = dests.iter().map(|d| d.dest).collect();
            have.insert(k, Server::new(s, &ds));
        }
        let mut plan = Plan {
            full: true,
            ..Plan::default()
        };
        let keys: BTreeSet<VsKey> = have.keys().chain(want.keys()).copied().collect();
        for k in keys {
            diff::server(
                k,
                have.get(&k),
                want.get(&k),
                &mut self.draining,
                now,
                &mut plan.commands,
            );
        }
        let wanted_vips: BTreeSet<IpAddr> = elems.keys().filter_map(vip).collect();
        plan.add = wanted_vips.difference(&on_device).copied().collect();
        plan.remove = on_device.difference(&wanted_vips).copied().collect();
        let all: BTreeSet<&Elem> = elems.keys().collect();
        for f in Family::ALL {
            plan.helper.push((f, self.helper.full(&self.cfg, f, &all)));
        }
        plan.next = Programmed {
            ports,
            servers: have,
            elems,
            node_ips,
        };
        Ok(plan)
    }

    /// Real servers whose drain is over: no connections left, or past the timeout.
    pub(super) fn drained(&mut self, now: Instant) -> Result<Vec<Command>, ExecError> {
        // The draining real servers, by virtual server: one dump each.
        let mut by_server: BTreeMap<VsKey, Vec<(diff::DestKey, Instant)>> = BTreeMap::new();
        for (&(k, d), &since) in &self.draining {
            by_server.entry(k).or_default().push((d, since));
        }
        let mut out = Vec::new();
        for (k, waiting) in by_server {
            let dests = self.dump_dests(k)?;
            for (d, since) in waiting {
                let conns = dests
                    .iter()
                    .find(|x| (x.dest.addr, x.dest.port) == d)
                    .map_or(0, |x| x.active + x.inactive);
                if conns == 0 || now.duration_since(since) >= self.drain_timeout {
                    self.draining.remove(&(k, d));
                    let dest = genl::Dest {
                        addr: d.0,
                        port: d.1,
                        weight: 0,
                    };
                    out.push(Command::DelDest(k, dest));
                }
            }
        }
        Ok(out)
    }

    pub(super) fn addresses(&mut self, plan: &Plan) -> Result<(), ExecError> {
        if plan.add.is_empty() && plan.remove.is_empty() {
            return Ok(());
        }
        let nl = self.route()?;
        let index = link::index(nl, link::DEVICE)
            .map_err(io_error("cannot find the dummy device"))?
            .ok_or_else(|| {
                io_error("the dummy device is gone")(std::io::Error::from_raw_os_error(
                    libc::ENODEV,
                ))
            })?;
        let first = nl.seq();
        let mut buf = Vec::new();
        let msgs = plan
            .remove
            .iter()
            .map(|ip| link::address(index, *ip, false))
            .chain(plan.add.iter().map(|ip| link::address(index, *ip, true)));
        let mut count = 0;
        for (i, m) in msgs.enumerate() {
            let flags = if i < plan.remove.len() {
                0
            } else {
                netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE
            };
            buf.extend(link::bytes(m, flags, first.wrapping_add(i as u32)));
            count += 1;
        }
        for _ in 1..count {
            nl.seq();
        }
        let failed = nl
            .apply(&buf, first, count)
            .map_err(io_error("the rtnetlink socket failed"))?;
        // An address already gone is what a removal wants.
        match failed.into_iter().find(|(i, e)| {
            !(*i < plan.remove.len() && e.raw_os_error() == Some(libc::EADDRNOTAVAIL))
        }) {
            None => Ok(()),
            Some((_, source)) => Err(ExecError::Ipvs {
                what: format!("cannot change the addresses of {}", link::DEVICE),
                source,
            }),
        }
    }
}

fn vip(e: &Elem) -> Option<IpAddr> {
    match e {
        Elem::Vip(ip) => Some(*ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasp_model::{NamespacedName, Protocol};

    fn name(n: &str) -> ServicePortName {
        ServicePortName::new(NamespacedName::new("default", n), "", Protocol::Tcp)
    }

    #[test]
    fn marks_are_stable_skip_reserved_bits_and_are_freed() {
        let mut m = Marks::default();
        let reserved = 0x2;
        let a = m.get(&name("a"), reserved);
        let b = m.get(&name("b"), reserved);
        assert_eq!((a, b), (render::MARK_BASE | 1, render::MARK_BASE | 4));
        assert_eq!(m.get(&name("a"), reserved), a, "a port keeps its mark");
        m.retain(|n| n != &name("a"));
        assert!(!m.used.contains(&a) && m.used.contains(&b));
        m.release(&name("b"));
        assert!(m.used.is_empty() && m.by_port.is_empty());
    }
}
