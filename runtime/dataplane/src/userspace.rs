//! The userspace mode: the [`wasp_proxy`] proxy behind the nftables mode's rules.
//!
//! The nftables mode renders every Service as it always does, except that a TCP port with
//! endpoints ends in `redirect to :PORT` (the proxy's listener) instead of a DNAT: the
//! firewall, the no-endpoint rejects, node ports, external IPs and LoadBalancer IPs all stay
//! the kernel's, and UDP and SCTP keep the kernel's DNAT. The proxy gets the same state and
//! Selections at each sync, before the rules change, so a connection the new rules redirect
//! finds its service port.
//!
//! When the daemon stops, [`Dataplane::stop`] writes the same rules with DNAT in place of
//! the redirects, from the last Selection: new connections keep working through the kernel
//! until the next start puts the redirects back. Connections the proxy held end with the
//! process. After `kill -9` nothing is rewritten: the redirects stay and point at a closed
//! port, so new TCP connections to Services are refused until the daemon is back (a
//! DaemonSet restarts it within seconds).

use wasp_proxy::{Proxy, ProxyConfig};

use crate::core::{RenderConfig, TRANSPARENT_MARK};
use crate::exec::{self, ExecError};
use crate::mode::{Dataplane, Mode, SyncReport, SyncRequest};
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

/// The userspace mode.
pub struct Userspace {
    nft: Nftables,
    cfg: ProxyConfig,
    proxy: Option<Proxy>,
}

impl Userspace {
    /// The mode; the proxy starts at [`Dataplane::probe`] (or the first sync).
    pub fn new(mut render: RenderConfig, cfg: ProxyConfig) -> Self {
        render.capture = Some(cfg.port);
        Self {
            nft: Nftables::new(render),
            cfg,
            proxy: None,
        }
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
        self.nft.probe()?;
        reply_routing(true)?;
        self.proxy().map(|_| ())
    }

    fn preview(&mut self, req: SyncRequest<'_>) -> Result<String, ExecError> {
        self.nft.preview(req)
    }

    fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ExecError> {
        self.proxy()?.update(req.state, req.selections);
        self.nft.sync(req)
    }

    fn stop(&mut self, req: SyncRequest<'_>) -> Result<(), ExecError> {
        self.nft.set_capture(None);
        let done = self.nft.sync(SyncRequest { diff: None, ..req });
        self.nft.set_capture(Some(self.cfg.port));
        done.map(|_| ())
    }

    fn cleanup(&mut self) -> Result<(), ExecError> {
        reply_routing(false)?;
        self.nft.cleanup()
    }

    fn userspace_proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }
}
