//! The iptables mode: kube-proxy's chain layout under a `WASP-` prefix, applied with
//! `iptables-restore --noflush`.
//!
//! Layout: nat `PREROUTING`/`OUTPUT` → `WASP-SERVICES` (one rule per cluster IP, external IP
//! and LoadBalancer IP, then the node's addresses → `WASP-NODEPORTS`) → `WASP-SVC-*`/`WASP-SVL-*`
//! (cluster and local policy: masquerade mark, affinity, weighted spread), `WASP-EXT-*`
//! (external destinations: masquerade or keep the source, by policy) and `WASP-FW-*`
//! (LoadBalancer source ranges) → `WASP-SEP-*` (hairpin mark, DNAT); nat `POSTROUTING` →
//! `WASP-POSTROUTING` masquerades marked packets. In filter, `WASP-SERVICES` and
//! `WASP-EXTERNAL-SERVICES` reject or drop traffic without endpoints, `WASP-PROXY-FIREWALL`
//! drops what the source ranges refused, `WASP-NODEPORTS` accepts health check node ports,
//! `WASP-FIREWALL` closes the localnet hole `route_localnet` opens, and `WASP-FORWARD` accepts
//! marked and established traffic on hosts whose FORWARD policy is DROP.
//!
//! A partial sync rewrites only the chains of the service ports that changed (and
//! `WASP-SERVICES` and `WASP-NODEPORTS` only when their rules changed); a full sync rewrites
//! everything, removes chains nothing wants and re-inserts missing hooks.

pub mod backend;
pub mod chain;
pub mod render;

use std::collections::BTreeSet;

pub use backend::{Backend, Snapshot, Tables};
pub use render::{Programmed, Rendered, Scope, render};

use crate::conntrack;
use crate::core::{Family, RenderConfig};
use crate::exec::ExecError;
use crate::mode::{Dataplane, Mode, SyncReport, SyncRequest};

/// One IP family's tables and what the last sync programmed there.
#[derive(Debug)]
struct FamilyTables {
    tables: Tables,
    programmed: Option<Programmed>,
}

/// The iptables mode.
#[derive(Debug)]
pub struct Iptables {
    cfg: RenderConfig,
    families: Vec<FamilyTables>,
    stale_flows: conntrack::StaleFlows,
}

impl Iptables {
    /// The mode over `backend`, for IPv4 and, when ip6tables is installed, IPv6.
    pub fn new(backend: Backend, cfg: RenderConfig) -> Self {
        let families = Family::ALL
            .into_iter()
            .map(|family| FamilyTables {
                tables: Tables { backend, family },
                programmed: None,
            })
            .filter(|f| f.tables.family == Family::V4 || f.tables.available())
            .collect();
        Self {
            cfg,
            families,
            stale_flows: conntrack::StaleFlows::default(),
        }
    }

    /// Sets the userspace mode's listener: a captured port then redirects there instead of
    /// DNATing. The next sync must be a full one.
    pub fn set_capture(&mut self, port: Option<u16>) {
        self.cfg.capture = port;
    }

    /// Renders one family's sync: partial when a diff is given and the family was synced;
    /// a full one also re-inserts the hooks `snap` did not see.
    fn render(
        cfg: &RenderConfig,
        f: &FamilyTables,
        req: &SyncRequest<'_>,
        snap: Option<&Snapshot>,
    ) -> Rendered {
        let none = BTreeSet::new();
        let scope = match (req.diff, &f.programmed, snap) {
            (Some(diff), Some(previous), None) => Scope::Partial { previous, diff },
            (_, _, snap) => Scope::Full {
                existing: snap.map_or(&none, |s| &s.nat_chains),
            },
        };
        let mut r = render(req.state, req.selections, cfg, f.tables.family, scope);
        if let Some(snap) = snap {
            r.text = backend::with_missing_hooks(&r.text, snap);
        }
        r
    }

    /// What a full sync must read first; a partial sync reads nothing.
    fn snapshot(f: &FamilyTables, req: &SyncRequest<'_>) -> Result<Option<Snapshot>, ExecError> {
        if req.diff.is_some() && f.programmed.is_some() {
            return Ok(None);
        }
        f.tables.snapshot().map(Some)
    }
}

impl Dataplane for Iptables {
    fn mode(&self) -> Mode {
        Mode::Iptables
    }

    fn probe(&mut self) -> Result<(), ExecError> {
        match self.families.first() {
            Some(f) => f.tables.chains("nat").map(|_| ()),
            None => Ok(()),
        }
    }

    fn preview(&mut self, req: SyncRequest<'_>) -> Result<String, ExecError> {
        let mut out = String::new();
        for f in &self.families {
            // Planning may run unprivileged: with the tables unreadable, plan as for an empty host.
            let snap = Self::snapshot(f, &req).unwrap_or(Some(Snapshot::default()));
            out.push_str(match f.tables.family {
                Family::V4 => "# iptables-restore --noflush\n",
                Family::V6 => "# ip6tables-restore --noflush\n",
            });
            out.push_str(&Self::render(&self.cfg, f, &req, snap.as_ref()).text);
        }
        Ok(out)
    }

    fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ExecError> {
        let mut report = SyncReport {
            full: true,
            ..SyncReport::default()
        };
        for f in &mut self.families {
            let snap = Self::snapshot(f, &req)?;
            let r = Self::render(&self.cfg, f, &req, snap.as_ref());
            tracing::trace!(family = ?f.tables.family, rules = %r.text, "iptables-restore input");
            if let Err(e) = f.tables.restore(&r.text) {
                // The kernel kept the old rules, but our record may no longer match it.
                f.programmed = None;
                return Err(e);
            }
            f.programmed = Some(r.programmed);
            report.full &= snap.is_some();
            report.rules += r.rules;
            report.bytes += r.text.len();
        }
        self.stale_flows.clear(&req);
        Ok(report)
    }

    fn cleanup(&mut self) -> Result<(), ExecError> {
        for f in &mut self.families {
            f.tables.cleanup()?;
            f.programmed = None;
        }
        Ok(())
    }
}
