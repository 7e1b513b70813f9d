//! The nftables mode: wasp's own `ip wasp` and `ip6 wasp` tables, dispatch through one
//! verdict map, endpoints in shared maps, programmed with netlink batches.
//!
//! Each sync is one transaction over both families. A partial sync sends only the operations
//! of the ports that changed, computed against what wasp programmed last (nothing is read
//! back). A full sync (the first, after a failure, and every sync-period) reads the names of
//! the chains and sets in wasp's tables, then in one transaction empties and rewrites
//! everything, deleting what is not wanted; that repairs anything someone changed, and keeps
//! the ClientIP affinity sets' clients.
//!
//! # Layout
//! - [`render`]: the pure render entry point, where a Service becomes rules.
//! - [`ops`]: the transaction as data; [`text`]: as `nft -f` input.
//! - [`expr`]: rules as kernel expressions; [`encode`]: a transaction as one netlink batch;
//!   [`decode`]: a batch read back, for the round-trip tests; [`wire`]: netlink's format.
//! - [`socket`]: the netlink socket, the only I/O.

pub mod decode;
pub mod encode;
pub mod expr;
pub mod ops;
pub mod render;
pub mod socket;
pub mod text;
pub mod wire;

use std::collections::BTreeMap;

pub use ops::{Family, Op, Transaction};
pub use render::{Existing, Planned, Programmed};

use crate::conntrack::StaleFlows;
use crate::core::RenderConfig;
use crate::exec::ExecError;
use crate::mode::{Dataplane, Mode, SyncReport, SyncRequest};
use ops::{Chain, Hook};
use socket::Socket;

/// The nftables mode.
#[derive(Debug)]
pub struct Nftables {
    cfg: RenderConfig,
    programmed: Option<BTreeMap<Family, Programmed>>,
    socket: Option<Socket>,
    stale_flows: StaleFlows,
}

fn netlink_error(what: &str) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Netlink {
        what: what.into(),
        source,
    }
}

impl Nftables {
    /// Redirects TCP to the userspace proxy's `port`, or (`None`) DNATs it again. The next
    /// sync is a full one.
    pub fn set_capture(&mut self, port: Option<u16>) {
        self.cfg.capture = port;
        self.programmed = None;
    }

    /// The mode with `cfg`; both families are programmed.
    pub fn new(cfg: RenderConfig) -> Self {
        Self {
            cfg,
            programmed: None,
            socket: None,
            stale_flows: StaleFlows::default(),
        }
    }

    /// The transaction a sync of `req` would send, without sending it. A full sync
    /// reconciles with `existing`, what the kernel's tables hold now.
    pub fn plan_sync(&self, req: &SyncRequest<'_>, existing: &Existing) -> Planned {
        render::render(req, &self.cfg, self.programmed.as_ref(), existing)
    }

    /// Whether the next sync of `req` is full (and so needs [`Existing`]).
    pub fn needs_full(&self, req: &SyncRequest<'_>) -> bool {
        req.diff.is_none() || self.programmed.is_none()
    }

    /// Records that `planned` was applied, so the next sync is a delta from it.
    pub fn record(&mut self, planned: Planned) {
        render::record(&mut self.programmed, planned);
    }

    /// The names of the chains and sets now in wasp's tables.
    ///
    /// # Errors
    /// Fails when the kernel cannot be asked.
    pub fn existing(&mut self) -> Result<Existing, ExecError> {
        let s = self.socket()?;
        let mut e = Existing::default();
        for f in Family::ALL {
            let what = format!("cannot list the {} {} table", f.nft_name(), ops::TABLE);
            e.chains
                .insert(f, s.names(f, false).map_err(netlink_error(&what))?);
            e.sets
                .insert(f, s.names(f, true).map_err(netlink_error(&what))?);
        }
        Ok(e)
    }

    fn socket(&mut self) -> Result<&mut Socket, ExecError> {
        if self.socket.is_none() {
            let s =
                Socket::open().map_err(netlink_error("cannot open a netfilter netlink socket"))?;
            self.socket = Some(s);
        }
        Ok(self.socket.as_mut().expect("just opened"))
    }
}

/// Sends `tx`; a rejection names the operation, in nft syntax.
fn apply(s: &mut Socket, tx: &[(Family, Op)]) -> Result<(), ExecError> {
    match s.apply(tx) {
        Ok(_) => Ok(()),
        Err(Ok(rejected)) => {
            let what = match rejected.op.and_then(|i| tx.get(i)) {
                Some(op) => format!(
                    "the kernel rejected the transaction at `{}`",
                    text::text(std::slice::from_ref(op)).trim()
                ),
                None => "the kernel refused the transaction".to_string(),
            };
            Err(ExecError::Netlink {
                what,
                source: rejected.error,
            })
        }
        Err(Err(source)) => Err(ExecError::Netlink {
            what: "netlink socket failed".into(),
            source,
        }),
    }
}

impl Dataplane for Nftables {
    fn mode(&self) -> Mode {
        Mode::Nftables
    }

    /// Checks that the kernel takes wasp's kind of transaction: a table with a NAT chain.
    fn probe(&mut self) -> Result<(), ExecError> {
        let chain = "wasp-probe".to_string();
        let tx: Transaction = vec![
            (Family::V4, Op::AddTable),
            (
                Family::V4,
                Op::AddChain(Chain {
                    name: chain.clone(),
                    hook: Some(Hook {
                        kind: "nat",
                        hook: "prerouting",
                        priority: -100,
                    }),
                }),
            ),
            (Family::V4, Op::DeleteChain(chain)),
        ];
        apply(self.socket()?, &tx)
    }

    fn preview(&mut self, req: SyncRequest<'_>) -> Result<String, ExecError> {
        // Planning may run unprivileged: with the tables unreadable, plan as for an empty host.
        let existing = if self.needs_full(&req) {
            self.existing().unwrap_or_default()
        } else {
            Existing::default()
        };
        let planned = self.plan_sync(&req, &existing);
        Ok(format!("# nft -f -\n{}", text::text(&planned.tx)))
    }

    fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ExecError> {
        let existing = if self.needs_full(&req) {
            self.existing()?
        } else {
            Existing::default()
        };
        let planned = self.plan_sync(&req, &existing);
        let report = SyncReport {
            full: planned.full,
            rules: planned
                .tx
                .iter()
                .filter(|(_, op)| matches!(op, Op::AddRule { .. }))
                .count(),
            bytes: 0,
        };
        tracing::trace!(
            ops = planned.tx.len(),
            full = planned.full,
            "nftables transaction"
        );
        if let Err(e) = apply(self.socket()?, &planned.tx) {
            // The kernel kept the previous rules; the next sync rebuilds from scratch.
            self.programmed = None;
            return Err(e);
        }
        self.record(planned);
        self.stale_flows.clear(&req);
        Ok(report)
    }

    fn cleanup(&mut self) -> Result<(), ExecError> {
        let tx: Transaction = Family::ALL
            .iter()
            .flat_map(|f| [(*f, Op::AddTable), (*f, Op::DeleteTable)])
            .collect();
        apply(self.socket()?, &tx)?;
        self.programmed = None;
        Ok(())
    }
}
