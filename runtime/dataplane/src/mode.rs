//! `Mode` and `Dataplane`: what every dataplane mode offers the daemon.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use wasp_model::{ProxyState, Selection, ServicePortName, StateDiff};

use crate::core::{Family, RenderConfig};
use crate::exec::ExecError;

/// A dataplane mode, named as kube-proxy's `--proxy-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// wasp's own nftables tables, programmed over netlink (the default).
    #[default]
    Nftables,
    /// iptables NAT rules in kube-proxy's chain layout.
    Iptables,
    /// A userspace L4 proxy (TCP), behind the nftables mode's rules: they redirect TCP to
    /// it and serve everything else, and take over when the daemon stops.
    Userspace,
    /// IPVS virtual servers, with a small nftables helper table.
    Ipvs,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nftables" => Ok(Self::Nftables),
            "iptables" => Ok(Self::Iptables),
            "userspace" => Ok(Self::Userspace),
            "ipvs" => Ok(Self::Ipvs),
            _ => Err(format!(
                "unknown mode {s:?}; the modes are: nftables, iptables, ipvs, userspace"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nftables => "nftables",
            Self::Iptables => "iptables",
            Self::Userspace => "userspace",
            Self::Ipvs => "ipvs",
        })
    }
}

/// One sync: the state to program, what was programmed before, and what changed.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest<'a> {
    /// The state to program.
    pub state: &'a ProxyState,
    /// The state the last successful sync programmed.
    pub previous: &'a ProxyState,
    /// The selection of every service port in `state`.
    pub selections: &'a BTreeMap<ServicePortName, Selection>,
    /// What changed since `previous`; `None` asks for a full sync that also repairs drift.
    pub diff: Option<&'a StateDiff>,
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// It was a full sync.
    pub full: bool,
    /// Rules written.
    pub rules: usize,
    /// Bytes handed to the kernel tool.
    pub bytes: usize,
}

/// The interface every mode offers.
pub trait Dataplane: Send {
    /// The mode.
    fn mode(&self) -> Mode;

    /// Checks that this host's kernel can run the mode, before anything is programmed.
    ///
    /// # Errors
    /// Names what the kernel refused, for the caller to suggest another mode.
    fn probe(&mut self) -> Result<(), ExecError> {
        Ok(())
    }

    /// Returns, as text, exactly what [`Dataplane::sync`] would apply, changing nothing (the
    /// dry run behind `wasp plan`).
    ///
    /// # Errors
    /// Fails when the kernel's current state cannot be read.
    fn preview(&mut self, req: SyncRequest<'_>) -> Result<String, ExecError>;

    /// Programs the kernel. On failure the previous rules stay in force.
    ///
    /// # Errors
    /// Fails when the kernel tool rejects the change.
    fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ExecError>;

    /// Hands the data path to the kernel as the daemon stops, with `req` (a full sync of the
    /// last state programmed): the userspace mode replaces its redirects with the nftables
    /// mode's DNAT, so connections to Services keep working while it is down. Kernel modes
    /// have nothing to do.
    ///
    /// # Errors
    /// Fails when the kernel rejects the change; the previous rules stay.
    fn stop(&mut self, _req: SyncRequest<'_>) -> Result<(), ExecError> {
        Ok(())
    }

    /// The userspace mode's proxy, once started: the daemon gives it a picker and reads its
    /// stats and counters.
    fn userspace_proxy(&self) -> Option<&wasp_proxy::Proxy> {
        None
    }

    /// Whether it writes the nftables mode's `wasp` tables (which the leftovers of other
    /// modes must then not remove).
    fn writes_nftables_tables(&self) -> bool {
        self.mode() == Mode::Nftables
    }

    /// Whether it writes the iptables mode's `WASP-` chains.
    fn writes_iptables_chains(&self) -> bool {
        self.mode() == Mode::Iptables
    }

    /// Removes everything this mode installed, and nothing else.
    ///
    /// # Errors
    /// Fails when the kernel tool fails.
    fn cleanup(&mut self) -> Result<(), ExecError>;
}

/// The iptables backend to use: detected as kube-proxy does, or given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The one wasp already programmed, else the one kubelet uses, else the one with more
    /// rules, else nft.
    #[default]
    Detect,
    /// iptables-nft.
    Nft,
    /// iptables-legacy.
    Legacy,
}

impl BackendChoice {
    /// The backend: the one given, or the one detection finds.
    pub fn resolve(self) -> crate::iptables::Backend {
        use crate::iptables::{Backend, backend};
        match self {
            Self::Detect => backend::detect(Family::V4),
            Self::Nft => Backend::Nft,
            Self::Legacy => Backend::Legacy,
        }
    }

    /// The backend where the host has no nftables: the one given, else legacy (iptables-nft
    /// needs nftables too).
    pub fn without_nftables(self) -> crate::iptables::Backend {
        match self {
            Self::Detect => crate::iptables::Backend::Legacy,
            given => given.resolve(),
        }
    }
}

/// What writes the rules the userspace mode captures traffic with, and the ipvs mode's
/// helper rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RulesChoice {
    /// nftables, else iptables where the host has no nftables.
    #[default]
    Auto,
    /// nftables: the nftables mode's tables, or the ipvs mode's helper table.
    Nftables,
    /// iptables chains, on the iptables backend chosen for them.
    Iptables,
}

/// What building a mode needs.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// The render configuration every mode uses.
    pub render: RenderConfig,
    /// The iptables backend, where the mode uses iptables.
    pub iptables_backend: BackendChoice,
    /// The userspace mode's proxy.
    pub proxy: wasp_proxy::ProxyConfig,
    /// The rules the userspace mode captures with.
    pub capture_rules: RulesChoice,
    /// The ipvs mode: how long a removed real server drains at weight 0 at most.
    pub ipvs_drain_timeout: std::time::Duration,
    /// What writes the ipvs mode's helper rules.
    pub ipvs_helper_rules: RulesChoice,
}

/// Builds the dataplane for `mode`: the one place that knows every mode's type.
pub fn build(mode: Mode, cfg: &DataplaneConfig) -> Box<dyn Dataplane> {
    match mode {
        Mode::Nftables => Box::new(crate::nftables::Nftables::new(cfg.render.clone())),
        Mode::Iptables => {
            let backend = cfg.iptables_backend.resolve();
            tracing::info!(%backend, "iptables backend");
            Box::new(crate::iptables::Iptables::new(backend, cfg.render.clone()))
        }
        Mode::Userspace => Box::new(crate::userspace::Userspace::new(cfg)),
        Mode::Ipvs => Box::new(
            crate::ipvs::Ipvs::new(cfg.render.clone(), cfg.ipvs_drain_timeout)
                .with_helper_rules(cfg.ipvs_helper_rules, cfg.iptables_backend),
        ),
    }
}
