//! The userspace mode: the [`wasp_proxy`] proxy behind a kernel mode's rules.
//!
//! The nftables mode (or, where the kernel has no nftables, the iptables mode) renders every
//! Service as it always does, except that a TCP or UDP port with endpoints ends in a redirect
//! to the proxy's listener instead of a DNAT: the firewall, the no-endpoint rejects, node
//! ports, external IPs and LoadBalancer IPs all stay the kernel's, and SCTP keeps the
//! kernel's DNAT. The proxy gets the same state and Selections at each sync, before the rules
//! change, so a connection the new rules redirect finds its service port.
//!
//! When the daemon stops, [`Dataplane::stop`] writes the same rules with DNAT in place of
//! the redirects, from the last Selection: new connections keep working through the kernel
//! until the next start puts the redirects back. Connections the proxy held end with the
//! process. After `kill -9` nothing is rewritten: the redirects stay and point at a closed
//! port, so new connections to Services are refused until the daemon is back (a DaemonSet
//! restarts it within seconds).

use wasp_proxy::{Proxy, ProxyConfig};

use crate::core::{RenderConfig, TRANSPARENT_MARK};
use crate::exec::{self, ExecError};
use crate::iptables::Iptables;
use crate::mode::{
    BackendChoice, Dataplane, DataplaneConfig, Mode, RulesChoice, SyncReport, SyncRequest,
};
use crate::nftables::Nftables;

/// The routing table that delivers marked replies to the proxy.
const ROUTE_TABLE: &str = "15001";

/// Policy routing for the proxy's transparent connections: packets the `mangle-prerouting`
/// chain marks are delivered locally, so replies addressed to a client reach the proxy's
/// socket. Added when `add`, else removed; each family's step is idempotent.
fn reply_routing(add: bool) -> Result<(), ExecError> {
    let mark = format!("{TRANSPARENT_MARK:#x}/{TRANSPARENT_MARK:#x}");
    for (family, default) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
        let rule = ["rule", "del", "fwmark", &mark, "lookup", ROUTE_TABLE];
        // Deleting until none is left makes adding idempotent.
        while exec::run("ip", &[&[family][..], &rule].concat(), None).is_ok() {}
        if !add {
            let _ = exec::run(
                "ip",
                &[family, "route", "flush", "table", ROUTE_TABLE],
                None,
            );
            continue;
        }
        let route = [
            family,
            "route",
            "replace",
            "local",
            default,
            "dev",
            "lo",
            "table",
            ROUTE_TABLE,
        ];
        let added = exec::run("ip", &route, None).and_then(|_| {
            let rule = [
                family,
                "rule",
                "add",
                "fwmark",
                &mark,
                "lookup",
                ROUTE_TABLE,
            ];
            exec::run("ip", &rule, None)
        });
        match (family, added) {
            (_, Ok(_)) => {}
            // A host without IPv6 has no IPv6 clients to keep.
            ("-6", Err(e)) => tracing::warn!(error = %e, "userspace proxy: no IPv6 reply routing"),
            (_, Err(e)) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the reply routing the userspace mode left, if it did; says so.
pub(crate) fn remove_reply_routing() -> Option<String> {
    let rules = exec::run("ip", &["-4", "rule", "show"], None).unwrap_or_default();
    if !rules.contains(&format!("lookup {ROUTE_TABLE}")) {
        return None;
    }
    Some(match reply_routing(false) {
        Ok(()) => "removed the userspace mode's reply routing (ip rule fwmark lookup 15001)".into(),
        Err(e) => format!("cannot remove the userspace mode's reply routing: {e}"),
    })
}

/// The rules that capture traffic for the proxy and take over when it stops: the nftables
/// mode's tables, or the iptables mode's chains. Both render the same Services with the
/// proxy's port as [`RenderConfig::capture`].
enum Rules {
    Nftables(Nftables),
    Iptables(Iptables),
}

impl Rules {
    fn as_dataplane(&mut self) -> &mut dyn Dataplane {
        match self {
            Self::Nftables(n) => n,
            Self::Iptables(i) => i,
        }
    }

    fn set_capture(&mut self, port: Option<u16>) {
        match self {
            Self::Nftables(n) => n.set_capture(port),
            Self::Iptables(i) => i.set_capture(port),
        }
    }
}

/// The userspace mode.
pub struct Userspace {
    rules: Rules,
    choice: RulesChoice,
    render: RenderConfig,
    backend: BackendChoice,
    cfg: ProxyConfig,
    proxy: Option<Proxy>,
}

impl Userspace {
    /// The mode; the proxy starts at [`Dataplane::probe`] (or the first sync), which also
    /// settles the rules when they are `Auto`.
    pub fn new(dp: &DataplaneConfig) -> Self {
        let mut render = dp.render.clone();
        render.capture = Some(dp.proxy.port);
        let rules = match dp.capture_rules {
            RulesChoice::Iptables => {
                let backend = dp.iptables_backend.resolve();
                tracing::info!(%backend, "userspace proxy: capturing with iptables");
                Rules::Iptables(Iptables::new(backend, render.clone()))
            }
            _ => Rules::Nftables(Nftables::new(render.clone())),
        };
        Self {
            rules,
            choice: dp.capture_rules,
            render,
            backend: dp.iptables_backend,
            cfg: dp.proxy.clone(),
            proxy: None,
        }
    }

    /// Probes the rules; with `Auto`, a kernel that refuses nftables gets iptables instead.
    fn probe_rules(&mut self) -> Result<(), ExecError> {
        let Err(nft) = self.rules.as_dataplane().probe() else {
            return Ok(());
        };
        if self.choice != RulesChoice::Auto {
            return Err(nft);
        }
        let mut ipt = self.fallback();
        match ipt.probe() {
            Ok(()) => {
                tracing::warn!(error = %nft, backend = %self.backend.without_nftables(), "userspace proxy: this kernel refused nftables; capturing with iptables");
                self.rules = Rules::Iptables(ipt);
                Ok(())
            }
            // Neither works: the nftables error is the one to read.
            Err(_) => Err(nft),
        }
    }

    /// The iptables rules `Auto` falls back to.
    fn fallback(&self) -> Iptables {
        Iptables::new(self.backend.without_nftables(), self.render.clone())
    }

    /// The running proxy, started on first use.
    fn proxy(&mut self) -> Result<&Proxy, ExecError> {
        if self.proxy.is_none() {
            let p = Proxy::start(self.cfg.clone()).map_err(ExecError::Proxy)?;
            tracing::info!(port = p.port(), "userspace proxy listening");
            self.proxy = Some(p);
        }
        Ok(self.proxy.as_ref().expect("started above"))
    }
}

impl Dataplane for Userspace {
    fn mode(&self) -> Mode {
        Mode::Userspace
    }

    fn probe(&mut self) -> Result<(), ExecError> {
        self.probe_rules()?;
        reply_routing(true)?;
        self.proxy().map(|_| ())
    }

    fn preview(&mut self, req: SyncRequest<'_>) -> Result<String, ExecError> {
        self.rules.as_dataplane().preview(req)
    }

    fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ExecError> {
        self.proxy()?.update(req.state, req.selections);
        self.rules.as_dataplane().sync(req)
    }

    fn stop(&mut self, req: SyncRequest<'_>) -> Result<(), ExecError> {
        self.rules.set_capture(None);
        let done = self
            .rules
            .as_dataplane()
            .sync(SyncRequest { diff: None, ..req });
        self.rules.set_capture(Some(self.cfg.port));
        done.map(|_| ())
    }

    fn writes_nftables_tables(&self) -> bool {
        matches!(self.rules, Rules::Nftables(_))
    }

    fn writes_iptables_chains(&self) -> bool {
        matches!(self.rules, Rules::Iptables(_))
    }

    fn cleanup(&mut self) -> Result<(), ExecError> {
        reply_routing(false)?;
        let done = self.rules.as_dataplane().cleanup();
        if self.choice != RulesChoice::Auto || !self.writes_nftables_tables() {
            return done;
        }
        // A start where the kernel refused nftables captured with iptables: those chains go
        // too. On such a kernel there is nothing in nftables to remove.
        let mut ipt = self.fallback();
        if ipt.probe().is_err() {
            return done;
        }
        match (done, ipt.cleanup()) {
            (Ok(()), ipt) => ipt,
            (Err(_), Ok(())) => Ok(()),
            (Err(nft), Err(_)) => Err(nft),
        }
    }

    fn userspace_proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }
}
