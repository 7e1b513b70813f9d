//! The ipvs mode: one IPVS virtual server per service address, port and protocol, over
//! generic netlink; service addresses on the dummy device `wasp-ipvs0`, over rtnetlink; and
//! a small nftables helper table for what IPVS does not do (rejects, source ranges,
//! masquerade).
//!
//! Each Service's scheduler follows its Selection (`wrr` or `mh`), so the balancing
//! annotation changes one Service's scheduler in place, where kube-proxy has one global
//! scheduler. A partial sync renders only the ports that changed and sends only the
//! virtual and real servers that differ from what wasp programmed last. A full sync (the
//! first, after a failure, and every sync-period) dumps the kernel's virtual servers and
//! reconciles wasp's own, which are those on an address of `wasp-ipvs0`, and those on a node
//! address at a port of the node-port range (30000-32767) or that wasp programmed. Other
//! programs' virtual servers are never touched.
//!
//! # Layout
//! - [`render`]: the pure render of a service port; [`diff`]: the commands that take the
//!   kernel from one state to another, with graceful termination.
//! - [`genl`]: IPVS's messages; [`link`]: the dummy device's; [`netlink`]: the socket.
//! - [`helper`]: the helper table, as `nft -f` input; [`helper_ipt`]: the same as iptables
//!   chains, where the host has no nftables; `helper_rules`: which of the two, applied.

pub mod diff;
pub mod elements;
pub mod genl;
pub mod helper;
pub mod helper_ipt;
mod helper_rules;
pub mod link;
pub mod netlink;
mod plan;
pub mod render;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use nix::sys::socket::SockProtocol;

use crate::conntrack::StaleFlows;
use crate::core::{Family, RenderConfig};
use crate::exec::ExecError;
use crate::mode::{BackendChoice, Dataplane, Mode, RulesChoice, SyncReport, SyncRequest};
use crate::nftables::wire::Writer;
use diff::Draining;
use genl::{Command, VsKey};
use helper_rules::Helper;
use netlink::Netlink;
use plan::{Addresses, Marks, Plan, Programmed};

/// The node-port range: a virtual server on a node address at one of these ports is wasp's.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// The ipvs mode.
#[derive(Debug)]
pub struct Ipvs {
    cfg: RenderConfig,
    drain_timeout: Duration,
    genl: Option<(Netlink, u16)>,
    route: Option<Netlink>,
    helper: Helper,
    programmed: Option<Programmed>,
    draining: Draining,
    stale_flows: StaleFlows,
    /// The firewall mark of each port with a marked virtual server.
    marks: Marks,
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
    let what = what.into();
    move |source| ExecError::Ipvs { what, source }
}

/// The sysctls kube-proxy's ipvs mode sets: conntrack entries for IPVS connections (for
/// masquerade), expiring connections to removed real servers, and forwarding.
fn sysctls() -> Vec<String> {
    let mut want = vec![
        ("net/ipv4/vs/conntrack", "1"),
        ("net/ipv4/vs/expire_nodest_conn", "1"),
        ("net/ipv4/vs/expire_quiescent_template", "1"),
        ("net/ipv4/ip_forward", "1"),
    ];
    // Before 5.9, connection reuse stalls new connections for a second after a server
    // goes; kube-proxy turns it off there.
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut v = release
        .split(['.', '-'])
        .map(|x| x.parse::<u32>().unwrap_or(0));
    if (v.next().unwrap_or(0), v.next().unwrap_or(0)) < (5, 9) {
        want.push(("net/ipv4/vs/conn_reuse_mode", "0"));
    }
    let mut warnings = Vec::new();
    for (name, value) in want {
        let path = format!("/proc/sys/{name}");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
            continue;
        }
        if let Err(e) = std::fs::write(&path, value) {
            warnings.push(format!("cannot set {name} to {value}: {e}"));
        }
    }
    warnings
}

impl Ipvs {
    /// The mode with `cfg`; removed real servers drain for at most `drain_timeout`.
    pub fn new(cfg: RenderConfig, drain_timeout: Duration) -> Self {
        Self {
            cfg,
            drain_timeout,
            genl: None,
            route: None,
            helper: Helper::Nftables(None),
            programmed: None,
            draining: Draining::new(),
            stale_flows: StaleFlows::default(),
            marks: Marks::default(),
        }
    }

    /// The helper's rules as `choice` asks: nftables, or iptables chains on `backend`'s
    /// backend (`Auto`: iptables where the host has no nftables).
    pub fn with_helper_rules(mut self, choice: RulesChoice, backend: BackendChoice) -> Self {
        self.helper = Helper::choose(choice, backend);
        self
    }

    fn route(&mut self) -> Result<&mut Netlink, ExecError> {
        if self.route.is_none() {
            let nl = Netlink::open(SockProtocol::NetlinkRoute)
                .map_err(io_error("cannot open an rtnetlink socket"))?;
            self.route = Some(nl);
        }
        Ok(self.route.as_mut().expect("just opened"))
    }

    /// The IPVS socket and family id; asking for the family loads `ip_vs`.
    fn genl(&mut self) -> Result<(&mut Netlink, u16), ExecError> {
        if self.genl.is_none() {
            let mut nl = Netlink::open(SockProtocol::NetlinkGeneric)
                .map_err(io_error("cannot open a generic netlink socket"))?;
            let seq = nl.seq();
            let mut w = Writer::default();
            genl::family_request(&mut w, seq);
            let what = "the kernel has no IPVS (generic netlink family IPVS; is ip_vs loaded?)";
            let replies = nl.request(&w.buf, seq).map_err(io_error(what))?;
            let id = replies
                .iter()
                .find_map(|r| genl::family_id(&r.message()))
                .ok_or_else(|| io_error(what)(std::io::Error::from_raw_os_error(libc::ENOENT)))?;
            self.genl = Some((nl, id));
        }
        let (nl, id) = self.genl.as_mut().expect("just opened");
        Ok((nl, *id))
    }

    /// Sends `cmds`; the first failure names its command.
    fn send(&mut self, cmds: &[Command]) -> Result<(), ExecError> {
        if cmds.is_empty() {
            return Ok(());
        }
        let (nl, id) = self.genl()?;
        let first = nl.seq();
        let mut w = Writer::default();
        for (i, c) in cmds.iter().enumerate() {
            genl::encode(&mut w, id, first.wrapping_add(i as u32), c);
        }
        // Keep the sequence numbers past this batch.
        for _ in 1..cmds.len() {
            nl.seq();
        }
        let failed = nl
            .apply(&w.buf, first, cmds.len())
            .map_err(io_error("the IPVS socket failed"))?;
        match failed.into_iter().next() {
            None => Ok(()),
            Some((i, source)) => Err(ExecError::Ipvs {
                what: format!(
                    "the kernel rejected `ipvsadm {}`",
                    cmds.get(i).map(diff::line).unwrap_or_default()
                ),
                source,
            }),
        }
    }

    fn dump_services(&mut self) -> Result<Vec<genl::Service>, ExecError> {
        let (nl, id) = self.genl()?;
        let seq = nl.seq();
        let mut w = Writer::default();
        genl::encode(&mut w, id, seq, &Command::GetServices);
        let replies = nl
            .request(&w.buf, seq)
            .map_err(io_error("cannot list the IPVS virtual servers"))?;
        Ok(replies
            .iter()
            .filter_map(|r| match genl::decode(&r.message()) {
                Some(Command::NewService(s)) => Some(s),
                _ => None,
            })
            .collect())
    }

    fn dump_dests(&mut self, key: VsKey) -> Result<Vec<genl::DestState>, ExecError> {
        let (nl, id) = self.genl()?;
        let seq = nl.seq();
        let mut w = Writer::default();
        genl::encode(&mut w, id, seq, &Command::GetDests(key));
        let replies = nl.request(&w.buf, seq).map_err(io_error(
            "cannot list an IPVS virtual server's real servers",
        ))?;
        Ok(replies
            .iter()
            .filter_map(|r| genl::decode_dest(&r.message()))
            .collect())
    }

    /// The device's index (creating it) and every address by device.
    fn device(&mut self) -> Result<(u32, Addresses), ExecError> {
        let nl = self.route()?;
        let what = format!("cannot create the dummy device {}", link::DEVICE);
        let index = link::ensure_device(nl).map_err(io_error(what))?;
        let addrs = link::addresses(nl).map_err(io_error("cannot list the addresses"))?;
        Ok((index, addrs))
    }
}

impl Dataplane for Ipvs {
    fn mode(&self) -> Mode {
        Mode::Ipvs
    }

    /// Checks that the kernel has IPVS and that the device can be made; sets the sysctls.
    fn probe(&mut self) -> Result<(), ExecError> {
        self.genl()?;
        self.device()?;
        for w in sysctls() {
            tracing::warn!("{w}");
        }
        Ok(())
    }

    fn preview(&mut self, req: SyncRequest<'_>) -> Result<String, ExecError> {
        let saved = (
            self.programmed.take(),
            self.draining.clone(),
            self.marks.clone(),
        );
        self.programmed = None;
        let plan = self.plan(&SyncRequest { diff: None, ..req }, false);
        (self.programmed, self.draining, self.marks) = saved;
        let plan = plan?;
        let mut out = String::from("# ipvsadm -R\n");
        for c in &plan.commands {
            out += &diff::line(c);
            out.push('\n');
        }
        out += &format!("# ip address ... dev {}\n", link::DEVICE);
        for ip in &plan.add {
            out += &format!(
                "add {ip}/{} dev {}\n",
                Family::of(ip).host_prefix(),
                link::DEVICE
            );
        }
        for ip in &plan.remove {
            out += &format!(
                "del {ip}/{} dev {}\n",
                Family::of(ip).host_prefix(),
                link::DEVICE
            );
        }
        out += &self.helper.preview(&self.cfg, &plan);
        Ok(out)
    }

    fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ExecError> {
        let plan = match self.plan(&req, true) {
            Ok(p) => p,
            Err(e) => {
                self.programmed = None;
                return Err(e);
            }
        };
        let full = plan.full;
        let drained = match self.apply(&plan) {
            Ok(d) => d,
            Err(e) => {
                // Part may have been applied: the next sync reads the kernel and starts over.
                self.programmed = None;
                return Err(e);
            }
        };
        let mut next = plan.next;
        diff::record(&mut next.servers, &plan.commands);
        diff::record(&mut next.servers, &drained);
        self.programmed = Some(next);
        self.stale_flows.clear(&req);
        Ok(SyncReport {
            full,
            rules: plan.commands.len(),
            bytes: plan.helper.iter().map(|(_, t)| t.len()).sum(),
        })
    }

    fn cleanup(&mut self) -> Result<(), ExecError> {
        let mut errors = Vec::new();
        if let Ok((device, addrs)) = self.existing_device() {
            let node = node_ips_of(device, &addrs);
            let on_device: BTreeSet<IpAddr> = addrs
                .iter()
                .filter(|(i, _)| Some(*i) == device)
                .map(|(_, ip)| *ip)
                .collect();
            match self.dump_services() {
                Ok(all) => {
                    let ours: Vec<Command> = all
                        .into_iter()
                        .filter(|s| {
                            s.key.fwmark & render::MARK_MASK == render::MARK_BASE
                                || on_device.contains(&s.key.addr)
                                || (node.contains(&s.key.addr) && NODE_PORTS.contains(&s.key.port))
                        })
                        .map(|s| Command::DelService(s.key))
                        .collect();
                    if let Err(e) = self.send(&ours) {
                        errors.push(e);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "no IPVS to clean"),
            }
            if let Some(i) = device {
                let nl = self.route()?;
                let seq = nl.seq();
                let msg = link::bytes(link::delete_device(i), netlink_packet_core::NLM_F_ACK, seq);
                if let Err(e) = nl.request(&msg, seq) {
                    errors.push(io_error(format!("cannot delete {}", link::DEVICE))(e));
                }
            }
        }
        errors.extend(self.helper.cleanup());
        self.programmed = None;
        self.draining.clear();
        match errors.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

impl Ipvs {
    /// Applies `plan`, then deletes the real servers whose drain is over; returns those
    /// deletions.
    fn apply(&mut self, plan: &Plan) -> Result<Vec<Command>, ExecError> {
        self.addresses(plan)?;
        self.send(&plan.commands)?;
        let drained = self.drained(Instant::now())?;
        self.send(&drained)?;
        self.helper.apply(&self.cfg, plan)?;
        Ok(drained)
    }

    /// The device's index, if it exists, and every address.
    fn existing_device(&mut self) -> Result<(Option<u32>, Addresses), ExecError> {
        let nl = self.route()?;
        let index =
            link::index(nl, link::DEVICE).map_err(io_error("cannot look for the device"))?;
        let addrs = link::addresses(nl).map_err(io_error("cannot list the addresses"))?;
        Ok((index, addrs))
    }

    /// Whether this mode left anything: the device or the helper's rules.
    pub fn left_behind(&mut self) -> bool {
        let device = self.existing_device().is_ok_and(|(d, _)| d.is_some());
        device || Helper::left_behind()
    }
}

fn node_ips_of(device: Option<u32>, addrs: &[(u32, IpAddr)]) -> BTreeSet<IpAddr> {
    addrs
        .iter()
        .filter(|(i, ip)| Some(*i) != device && !ip.is_loopback())
        .map(|(_, ip)| *ip)
        .collect()
}
