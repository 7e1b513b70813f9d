//! Settings: the command-line flags merged over the config file (flags win), and what the
//! model, the sources and the dataplane are built from.
//!
//! Each section of the config is merged by a function of its own (`merge`); this module
//! holds the flags, the result, and the builders that turn it into the daemon's parts.

mod merge;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use wasp_dataplane::sysctl::ConntrackSettings;
use wasp_dataplane::{BackendChoice, DataplaneConfig, Mode, RenderConfig, RulesChoice};
use wasp_model::categorize::NodeTopology;
use wasp_resolve::allocate::NodePorts;
use wasp_resolve::validate::ValidationConfig;
use wasp_resolve::{Allocator, NodePortAddresses, ObjectStore, ResolveConfig};
use wasp_source::Limits;

pub use crate::duration::parse_duration;

/// The iptables backend flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendFlag {
    /// Detect as kube-proxy does.
    Auto,
    /// iptables-nft.
    Nft,
    /// iptables-legacy.
    Legacy,
}

/// What writes the userspace mode's capture and the ipvs mode's helper rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RulesFlag {
    /// nftables, else iptables where the host has no nftables.
    Auto,
    /// nftables.
    Nftables,
    /// iptables (on `--iptables-backend`).
    Iptables,
}

impl RulesFlag {
    /// The dataplane's choice.
    pub fn choice(self) -> RulesChoice {
        match self {
            Self::Auto => RulesChoice::Auto,
            Self::Nftables => RulesChoice::Nftables,
            Self::Iptables => RulesChoice::Iptables,
        }
    }
}

/// The log format (kube-proxy's `--logging-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event: `level message key=value…`, control characters escaped.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The flags of `run`, `plan` and `validate`. Every one overrides the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct Flags {
    /// The daemon config file (WaspConfiguration, or a KubeProxyConfiguration).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The dataplane mode [default: nftables].
    #[arg(long)]
    pub mode: Option<Mode>,
    /// Read Services from this directory of manifests (watched) instead of the Kubernetes API.
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// The kubeconfig for the Kubernetes API source (else the in-cluster config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The CIDR cluster IPs are allocated from when a Service gives none; repeat for
    /// dual-stack [default: 10.96.0.0/12].
    #[arg(long, value_name = "CIDR")]
    pub service_cidr: Vec<IpNet>,
    /// The pod CIDR: traffic to cluster IPs from outside it is masqueraded; repeatable.
    #[arg(long, value_name = "CIDR")]
    pub cluster_cidr: Vec<IpNet>,
    /// Masquerade all traffic to cluster IPs.
    #[arg(long)]
    pub masquerade_all: bool,
    /// The packet-mark bit (0-31) that asks for masquerade [default: 13].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..32))]
    pub masquerade_bit: Option<u32>,
    /// This node's name, for local endpoints and topology [default: the hostname].
    #[arg(long)]
    pub node_name: Option<String>,
    /// This node's zone, for topology hints (else read from its Node object).
    #[arg(long)]
    pub node_zone: Option<String>,
    /// This node's primary address, where node ports answer by default; repeat for the other
    /// family [default: from the Kubernetes API its Node's InternalIPs; in static mode the
    /// address of the interface that holds the default route].
    #[arg(long, value_name = "IP")]
    pub node_ip: Vec<IpAddr>,
    /// Where node ports answer: CIDRs (this node's addresses inside them) or `primary`;
    /// comma-separated or repeated [default: every local address in the iptables mode, the
    /// primary addresses in the nftables mode, as kube-proxy].
    #[arg(
        long = "nodeport-addresses",
        alias = "node-port-addresses",
        value_name = "CIDR|primary",
        value_delimiter = ','
    )]
    pub nodeport_addresses: Vec<String>,
    /// The range static mode allocates node ports from [default: 30000-32767].
    #[arg(long, value_name = "LO-HI")]
    pub service_node_port_range: Option<String>,
    /// The iptables backend [default: auto].
    #[arg(long, value_enum)]
    pub iptables_backend: Option<BackendFlag>,
    /// Handle only Services labelled `service.kubernetes.io/service-proxy-name` with this value.
    #[arg(long)]
    pub service_proxy_name: Option<String>,
    /// The longest time between full syncs, at least 1s [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub sync_period: Option<Duration>,
    /// The shortest time between syncs, at most the sync period [default: 1s].
    #[arg(long, value_parser = parse_duration)]
    pub min_sync_period: Option<Duration>,
    /// Where /healthz is served; load balancers probe it [default: 0.0.0.0:10256].
    #[arg(long)]
    pub healthz_bind_address: Option<SocketAddr>,
    /// Where /metrics is served [default: 127.0.0.1:10249].
    #[arg(long)]
    pub metrics_bind_address: Option<SocketAddr>,
    /// Answer DNS for Service names here, over UDP and TCP (off by default).
    #[arg(long, value_name = "ADDR:PORT")]
    pub dns_bind_address: Option<SocketAddr>,
    /// The cluster domain the DNS responder answers for [default: cluster.local].
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// Where the DNS responder forwards other names; repeatable, `none` to refuse them
    /// [default: the nameservers of /etc/resolv.conf].
    #[arg(long, value_name = "IP[:PORT]|none")]
    pub dns_upstream: Vec<String>,
    /// The userspace mode's listener port [default: 15001].
    #[arg(long, value_name = "PORT")]
    pub userspace_port: Option<u16>,
    /// What captures traffic for the userspace mode: nftables, else iptables where the kernel
    /// has no nftables (auto), or the one named [default: auto].
    #[arg(long, value_enum)]
    pub userspace_rules: Option<RulesFlag>,
    /// The userspace mode's connect timeout per endpoint [default: 1s].
    #[arg(long, value_parser = parse_duration)]
    pub userspace_connect_timeout: Option<Duration>,
    /// How many endpoints the userspace mode tries per connection [default: 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub userspace_connect_attempts: Option<u32>,
    /// How long the userspace mode keeps connections to a removed endpoint [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub userspace_drain_timeout: Option<Duration>,
    /// The userspace mode closes a connection idle this long [default: 1h].
    #[arg(long, value_parser = parse_duration)]
    pub userspace_idle_timeout: Option<Duration>,
    /// The userspace mode ends a UDP session idle this long [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub userspace_udp_idle_timeout: Option<Duration>,
    /// The ipvs mode keeps a removed real server at weight 0 until its connections are
    /// gone, or this long at most [default: 60s].
    #[arg(long, value_parser = parse_duration)]
    pub ipvs_drain_timeout: Option<Duration>,
    /// What writes the ipvs mode's helper rules: nftables, else iptables where the host has
    /// no nftables (auto), or the one named [default: auto].
    #[arg(long, value_enum)]
    pub ipvs_helper_rules: Option<RulesFlag>,
}

/// Where objects come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A watched directory of manifests.
    Files(PathBuf),
    /// The Kubernetes API, through this kubeconfig or the in-cluster config.
    Kubernetes(Option<PathBuf>),
}

/// The DNS responder's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSettings {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The cluster domain.
    pub domain: String,
    /// Where other names go (none: they are refused).
    pub upstreams: Vec<SocketAddr>,
}

/// Everything the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The dataplane mode.
    pub mode: Mode,
    /// The source.
    pub source: SourceKind,
    /// Service CIDRs.
    pub service_cidrs: Vec<IpNet>,
    /// Pod CIDRs.
    pub cluster_cidrs: Vec<IpNet>,
    /// Masquerade all cluster-IP traffic.
    pub masquerade_all: bool,
    /// The masquerade mark bit.
    pub masquerade_bit: u32,
    /// This node.
    pub node_name: String,
    /// This node's zone, if given.
    pub node_zone: Option<String>,
    /// This node's primary addresses as given (`--node-ip`, `nodeIPs`).
    pub node_ips: Vec<IpAddr>,
    /// Where node ports answer, with the mode's default applied.
    pub node_port_addresses: NodePortAddresses,
    /// The node port range of static mode.
    pub node_port_range: RangeInclusive<u16>,
    /// The iptables backend.
    pub iptables_backend: BackendFlag,
    /// The service proxy name.
    pub service_proxy_name: Option<String>,
    /// The longest time between full syncs.
    pub sync_period: Duration,
    /// The shortest time between syncs.
    pub min_sync_period: Duration,
    /// Where /healthz is served.
    pub healthz_addr: SocketAddr,
    /// Where /metrics is served.
    pub metrics_addr: SocketAddr,
    /// Conntrack kernel settings to apply at start.
    pub conntrack: ConntrackSettings,
    /// The userspace mode's proxy.
    pub proxy: wasp_proxy::ProxyConfig,
    /// The rules the userspace mode captures with.
    pub capture_rules: RulesChoice,
    /// The ipvs mode's drain timeout for removed real servers.
    pub ipvs_drain_timeout: Duration,
    /// What writes the ipvs mode's helper rules.
    pub ipvs_helper_rules: RulesChoice,
    /// The DNS responder, when on.
    pub dns: Option<DnsSettings>,
    /// Extra balancer plugins: name → .wasm path (relative paths are against the config file).
    pub plugins: std::collections::BTreeMap<String, PathBuf>,
    /// What one manifest file may hold.
    pub limits: Limits,
    /// The most config errors `/healthz` lists.
    pub errors_shown: usize,
    /// The log format the config file asks for (the flag wins).
    pub log_format: Option<LogFormat>,
    /// Warnings met while reading the config, for the log once it is set up.
    pub warnings: Vec<String>,
}

impl Settings {
    /// Merges the flags over the config file (if any) over the defaults, section by section.
    ///
    /// # Errors
    /// Fails when the config file cannot be read or a value is invalid; the error names the
    /// file and the field, or the flag.
    pub fn new(f: &Flags) -> anyhow::Result<Self> {
        let m = merge::Merge::load(f)?;
        let (sync_period, min_sync_period) = m.sync_periods()?;
        let (healthz_addr, metrics_addr) = m.addresses()?;
        let (service_cidrs, cluster_cidrs) = m.cidrs()?;
        let mode = m.mode()?;
        Ok(Self {
            mode,
            source: m.source()?,
            service_cidrs,
            cluster_cidrs: cluster_cidrs.clone(),
            masquerade_all: m.masquerade_all(),
            masquerade_bit: m.masquerade_bit()?,
            node_name: m.node_name(),
            node_zone: f.node_zone.clone(),
            node_ips: m.node_ips()?,
            node_port_addresses: m.node_port_addresses(mode)?,
            node_port_range: m.node_port_range()?,
            iptables_backend: f.iptables_backend.unwrap_or(BackendFlag::Auto),
            service_proxy_name: m.service_proxy_name(),
            sync_period,
            min_sync_period,
            healthz_addr,
            metrics_addr,
            conntrack: m.conntrack()?,
            proxy: m.userspace(&cluster_cidrs)?,
            capture_rules: m.capture_rules()?,
            ipvs_drain_timeout: f.ipvs_drain_timeout.unwrap_or(Duration::from_secs(60)),
            ipvs_helper_rules: f
                .ipvs_helper_rules
                .map_or(RulesChoice::Auto, RulesFlag::choice),
            dns: m.dns()?,
            plugins: m.plugins(),
            limits: m.limits(),
            errors_shown: m.errors_shown(),
            log_format: m.log_format()?,
            warnings: m.warnings,
        })
    }

    /// An empty store that validates as the API server would with these CIDRs.
    pub fn store(&self) -> ObjectStore {
        ObjectStore::new(ValidationConfig {
            service_cidrs: self.service_cidrs.clone(),
        })
    }

    /// The cluster IP and node port allocator. With the Kubernetes API the API server
    /// allocated the node ports, so any it gave is accepted.
    pub fn allocator(&self) -> Allocator {
        let mut a = Allocator::new(self.service_cidrs.clone());
        a.node_ports = match self.source {
            SourceKind::Files(_) => NodePorts::new(self.node_port_range.clone()),
            SourceKind::Kubernetes(_) => NodePorts::new(1..=65535),
        };
        a
    }

    /// This node's primary addresses: as given; else, in static mode, those of the interface
    /// that holds the default route; else (with the Kubernetes API) none, and resolution
    /// takes the Node object's.
    pub fn node_ips(&self) -> Vec<IpAddr> {
        if !self.node_ips.is_empty() {
            return self.node_ips.clone();
        }
        match self.source {
            SourceKind::Files(_) => crate::node::primary_addresses(),
            SourceKind::Kubernetes(_) => Vec::new(),
        }
    }

    /// The resolution config; the host's addresses are read now.
    pub fn resolve_config(&self) -> ResolveConfig {
        ResolveConfig {
            node: NodeTopology {
                name: self.node_name.clone(),
                zone: self.node_zone.clone(),
            },
            service_proxy_name: self.service_proxy_name.clone(),
            node_ips: self.node_ips(),
            host_addresses: match self.node_port_addresses {
                NodePortAddresses::Cidrs(_) => crate::node::host_addresses(),
                _ => Vec::new(),
            },
            node_port_addresses: self.node_port_addresses.clone(),
            unhealthy: Default::default(),
        }
    }

    /// The planner: built-in plugins plus the registered ones.
    ///
    /// # Errors
    /// Fails when the WebAssembly engine cannot be built.
    pub fn planner(&self) -> anyhow::Result<wasp_plugin::PluginPlanner> {
        let mut p = wasp_plugin::PluginPlanner::new(
            wasp_plugin::EngineConfig::default(),
            self.plugins.clone(),
        )?;
        p.set_node(NodeTopology {
            name: self.node_name.clone(),
            zone: self.node_zone.clone(),
        });
        Ok(p)
    }

    /// The dataplane for the mode.
    pub fn dataplane(&self) -> Box<dyn wasp_dataplane::Dataplane> {
        wasp_dataplane::build(self.mode, &self.dataplane_config())
    }

    /// What the dataplane is built from.
    pub fn dataplane_config(&self) -> DataplaneConfig {
        DataplaneConfig {
            render: self.render_config(),
            iptables_backend: match self.iptables_backend {
                BackendFlag::Auto => BackendChoice::Detect,
                BackendFlag::Nft => BackendChoice::Nft,
                BackendFlag::Legacy => BackendChoice::Legacy,
            },
            proxy: self.proxy.clone(),
            capture_rules: self.capture_rules,
            ipvs_drain_timeout: self.ipvs_drain_timeout,
            ipvs_helper_rules: self.ipvs_helper_rules,
        }
    }

    /// The render configuration every mode uses.
    pub fn render_config(&self) -> RenderConfig {
        RenderConfig {
            cluster_cidrs: self.cluster_cidrs.clone(),
            masquerade_all: self.masquerade_all,
            masquerade_mark: 1 << self.masquerade_bit,
            service_cidrs: self.service_cidrs.clone(),
            capture: None,
        }
    }
}

/// The host's name, as kube-proxy's default node name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
