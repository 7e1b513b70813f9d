//! Settings: the command-line flags merged over the config file (flags win), and what the
//! model, the sources and the dataplane are built from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use ipnet::IpNet;
use wasp_dataplane::Mode;
use wasp_dataplane::iptables::{Backend, RenderConfig};
use wasp_dataplane::sysctl::ConntrackSettings;
use wasp_model::categorize::NodeTopology;
use wasp_model::validate::ValidationConfig;
use wasp_model::{Allocator, ObjectStore, ResolveConfig};

use crate::config::FileConfig;

/// Parses a Go-style duration (`30s`, `1m0s`, `100ms`, `1h30m`) or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected e.g. 30s, 1m0s or 100ms");
    if let Ok(n) = s.parse::<f64>() {
        return Ok(Duration::from_secs_f64(n));
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        total += n * match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        rest = next;
    }
    Ok(Duration::from_secs_f64(total))
}

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
    /// The iptables backend [default: auto].
    #[arg(long, value_enum)]
    pub iptables_backend: Option<BackendFlag>,
    /// Handle only Services labelled `service.kubernetes.io/service-proxy-name` with this value.
    #[arg(long)]
    pub service_proxy_name: Option<String>,
    /// The longest time between full syncs [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    pub sync_period: Option<Duration>,
    /// The shortest time between syncs [default: 1s].
    #[arg(long, value_parser = parse_duration)]
    pub min_sync_period: Option<Duration>,
    /// Where /healthz is served [default: 127.0.0.1:10256].
    #[arg(long)]
    pub healthz_bind_address: Option<SocketAddr>,
    /// Where /metrics is served [default: 127.0.0.1:10249].
    #[arg(long)]
    pub metrics_bind_address: Option<SocketAddr>,
}

/// Where objects come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A watched directory of manifests.
    Files(PathBuf),
    /// The Kubernetes API, through this kubeconfig or the in-cluster config.
    Kubernetes(Option<PathBuf>),
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
    /// Extra balancer plugins: name → .wasm path (relative paths are against the config file).
    pub plugins: std::collections::BTreeMap<String, PathBuf>,
}

fn cidrs(field: &str, s: Option<&str>) -> anyhow::Result<Vec<IpNet>> {
    s.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse()
                .with_context(|| format!("{field}: invalid CIDR {c:?}"))
        })
        .collect()
}

fn duration(field: &str, s: Option<&String>) -> anyhow::Result<Option<Duration>> {
    s.map(|s| parse_duration(s).map_err(|e| anyhow::anyhow!("{field}: {e}")))
        .transpose()
}

impl Settings {
    /// Merges the flags over the config file (if any) over the defaults.
    ///
    /// # Errors
    /// Fails when the config file cannot be read or a value is invalid.
    pub fn new(f: &Flags) -> anyhow::Result<Self> {
        let file = match &f.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let origin = f
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let ctx = |field: &str| format!("{origin}: {field}");
        let ipt = file.iptables.clone().unwrap_or_default();
        let mode = match (&f.mode, &file.mode) {
            (Some(m), _) => *m,
            (None, Some(m)) if !m.is_empty() => m
                .parse()
                .map_err(|e: String| anyhow::anyhow!("{}: {e}", ctx("mode")))?,
            _ => Mode::default(),
        };
        let config_dir = f
            .config_dir
            .clone()
            .or(file.config_dir.clone().map(PathBuf::from));
        let kubeconfig = f.kubeconfig.clone().or(file
            .client_connection
            .as_ref()
            .and_then(|c| c.kubeconfig.clone())
            .map(PathBuf::from));
        let source = match (config_dir, kubeconfig) {
            (Some(_), Some(_)) if f.config_dir.is_some() && f.kubeconfig.is_some() => {
                bail!(
                    "give either --config-dir (files source) or --kubeconfig (Kubernetes API source), not both"
                )
            }
            (Some(d), _) => SourceKind::Files(d),
            (None, k) => SourceKind::Kubernetes(k),
        };
        let mut service_cidrs = f.service_cidr.clone();
        if service_cidrs.is_empty() {
            service_cidrs = cidrs(&ctx("serviceCIDR"), file.service_cidr.as_deref())?;
        }
        if service_cidrs.is_empty() {
            service_cidrs = vec!["10.96.0.0/12".parse()?];
        }
        let mut cluster_cidrs = f.cluster_cidr.clone();
        if cluster_cidrs.is_empty() {
            cluster_cidrs = cidrs(&ctx("clusterCIDR"), file.cluster_cidr.as_deref())?;
        }
        let masquerade_bit = f.masquerade_bit.or(ipt.masquerade_bit).unwrap_or(13);
        if masquerade_bit > 31 {
            bail!(
                "{}: {masquerade_bit} is not a bit of a 32-bit mark",
                ctx("iptables.masqueradeBit")
            );
        }
        let sync_period = f
            .sync_period
            .or(duration(&ctx("syncPeriod"), file.sync_period.as_ref())?)
            .or(duration(
                &ctx("iptables.syncPeriod"),
                ipt.sync_period.as_ref(),
            )?)
            .unwrap_or(Duration::from_secs(30));
        let min_sync_period = f
            .min_sync_period
            .or(duration(
                &ctx("minSyncPeriod"),
                file.min_sync_period.as_ref(),
            )?)
            .or(duration(
                &ctx("iptables.minSyncPeriod"),
                ipt.min_sync_period.as_ref(),
            )?)
            .unwrap_or(Duration::from_secs(1));
        let addr = |flag: Option<SocketAddr>,
                    file: &Option<String>,
                    field: &str,
                    default: &str|
         -> anyhow::Result<SocketAddr> {
            match (flag, file) {
                (Some(a), _) => Ok(a),
                (None, Some(s)) => s
                    .parse()
                    .with_context(|| format!("{}: invalid address {s:?}", ctx(field))),
                _ => Ok(default.parse()?),
            }
        };
        let ct = file.conntrack.clone().unwrap_or_default();
        let base = f
            .config
            .as_ref()
            .and_then(|p| p.parent())
            .map(PathBuf::from)
            .unwrap_or_default();
        let plugins = file
            .plugins
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(n, p)| (n, base.join(p)))
            .collect();
        Ok(Self {
            mode,
            source,
            service_cidrs,
            cluster_cidrs,
            masquerade_all: f.masquerade_all || ipt.masquerade_all.unwrap_or(false),
            masquerade_bit,
            node_name: f
                .node_name
                .clone()
                .or(file.hostname_override.clone())
                .unwrap_or_else(hostname),
            node_zone: f.node_zone.clone(),
            iptables_backend: f.iptables_backend.unwrap_or(BackendFlag::Auto),
            service_proxy_name: f
                .service_proxy_name
                .clone()
                .or(file.service_proxy_name.clone()),
            sync_period,
            min_sync_period,
            healthz_addr: addr(
                f.healthz_bind_address,
                &file.healthz_bind_address,
                "healthzBindAddress",
                "127.0.0.1:10256",
            )?,
            metrics_addr: addr(
                f.metrics_bind_address,
                &file.metrics_bind_address,
                "metricsBindAddress",
                "127.0.0.1:10249",
            )?,
            conntrack: ConntrackSettings {
                max_per_core: ct.max_per_core,
                min: ct.min,
                tcp_established_timeout: duration(
                    &ctx("conntrack.tcpEstablishedTimeout"),
                    ct.tcp_established_timeout.as_ref(),
                )?,
                tcp_close_wait_timeout: duration(
                    &ctx("conntrack.tcpCloseWaitTimeout"),
                    ct.tcp_close_wait_timeout.as_ref(),
                )?,
                udp_timeout: duration(&ctx("conntrack.udpTimeout"), ct.udp_timeout.as_ref())?,
                udp_stream_timeout: duration(
                    &ctx("conntrack.udpStreamTimeout"),
                    ct.udp_stream_timeout.as_ref(),
                )?,
                tcp_be_liberal: ct.tcp_be_liberal,
            },
            plugins,
        })
    }

    /// An empty store that validates as the API server would with these CIDRs.
    pub fn store(&self) -> ObjectStore {
        ObjectStore::new(ValidationConfig {
            service_cidrs: self.service_cidrs.clone(),
        })
    }

    /// The cluster IP allocator.
    pub fn allocator(&self) -> Allocator {
        Allocator::new(self.service_cidrs.clone())
    }

    /// The resolution config.
    pub fn resolve_config(&self) -> ResolveConfig {
        ResolveConfig {
            node: NodeTopology {
                name: self.node_name.clone(),
                zone: self.node_zone.clone(),
            },
            service_proxy_name: self.service_proxy_name.clone(),
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
        match self.mode {
            Mode::Nftables => Box::new(wasp_dataplane::nftables::Nftables::new(
                self.render_config(),
            )),
            Mode::Iptables => {
                let backend = match self.iptables_backend {
                    BackendFlag::Auto => wasp_dataplane::iptables::backend::detect(true),
                    BackendFlag::Nft => Backend::Nft,
                    BackendFlag::Legacy => Backend::Legacy,
                };
                tracing::info!(%backend, "iptables backend");
                Box::new(wasp_dataplane::iptables::Iptables::new(
                    backend,
                    self.render_config(),
                ))
            }
        }
    }

    /// The render configuration both modes use.
    pub fn render_config(&self) -> RenderConfig {
        RenderConfig {
            ipv4: true,
            cluster_cidrs: self.cluster_cidrs.clone(),
            masquerade_all: self.masquerade_all,
            masquerade_mark: 1 << self.masquerade_bit,
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
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1m0s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("wasp.yaml");
        std::fs::write(&p, "kind: WaspConfiguration\nmode: iptables\nsyncPeriod: 10s\nminSyncPeriod: 2s\nclusterCIDR: 10.244.0.0/16\nconfigDir: /etc/wasp/services\niptables: {masqueradeBit: 12}\nconntrack: {udpTimeout: 30s}\n").unwrap();
        let flags = Flags {
            config: Some(p.clone()),
            min_sync_period: Some(Duration::from_millis(100)),
            ..Flags::default()
        };
        let s = Settings::new(&flags).unwrap();
        assert_eq!(s.sync_period, Duration::from_secs(10), "from the file");
        assert_eq!(
            s.min_sync_period,
            Duration::from_millis(100),
            "the flag wins"
        );
        assert_eq!(s.masquerade_bit, 12);
        assert_eq!(
            s.cluster_cidrs,
            vec!["10.244.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            s.service_cidrs,
            vec!["10.96.0.0/12".parse::<IpNet>().unwrap()],
            "the default"
        );
        assert_eq!(s.source, SourceKind::Files("/etc/wasp/services".into()));
        assert_eq!(s.conntrack.udp_timeout, Some(Duration::from_secs(30)));
        let flags = Flags {
            config: Some(p),
            kubeconfig: Some("/k".into()),
            ..Flags::default()
        };
        assert_eq!(
            Settings::new(&flags).unwrap().source,
            SourceKind::Files("/etc/wasp/services".into())
        );
        let none = Settings::new(&Flags::default()).unwrap();
        assert_eq!(
            none.source,
            SourceKind::Kubernetes(None),
            "no dir: the in-cluster API"
        );
    }
}
