//! Merging one section at a time: the flag, else the config file's field, else the default.
//! Every error names the file and the field, or the flag.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::IpNet;
use wasp_dataplane::sysctl::ConntrackSettings;
use wasp_dataplane::{Mode, RulesChoice};
use wasp_resolve::NodePortAddresses;
use wasp_source::Limits;

use super::{Flags, LogFormat, SourceKind, hostname};
use crate::config::FileConfig;
use crate::duration::parse_duration;

/// The shortest sync period: a full resync costs about a second at 10k Services.
const MIN_SYNC_PERIOD: Duration = Duration::from_secs(1);

/// The flags and the config file, being merged.
pub(super) struct Merge<'a> {
    f: &'a Flags,
    file: FileConfig,
    /// The config file's path, for messages.
    origin: String,
    pub(super) warnings: Vec<String>,
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

impl<'a> Merge<'a> {
    pub(super) fn load(f: &'a Flags) -> anyhow::Result<Self> {
        let (file, warnings) = match &f.config {
            Some(p) => FileConfig::load(p)?,
            None => (FileConfig::default(), Vec::new()),
        };
        let origin = f
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Ok(Self {
            f,
            file,
            origin,
            warnings,
        })
    }

    fn ctx(&self, field: &str) -> String {
        format!("{}: {field}", self.origin)
    }

    fn duration(&self, field: &str, s: Option<&String>) -> anyhow::Result<Option<Duration>> {
        s.map(|s| parse_duration(s).map_err(|e| anyhow::anyhow!("{}: {e}", self.ctx(field))))
            .transpose()
    }

    pub(super) fn mode(&self) -> anyhow::Result<Mode> {
        Ok(match (&self.f.mode, &self.file.mode) {
            (Some(m), _) => *m,
            (None, Some(m)) if !m.is_empty() => m
                .parse()
                .map_err(|e: String| anyhow::anyhow!("{}: {e}", self.ctx("mode")))?,
            _ => Mode::default(),
        })
    }

    pub(super) fn source(&self) -> anyhow::Result<SourceKind> {
        let f = self.f;
        let config_dir = f
            .config_dir
            .clone()
            .or(self.file.config_dir.clone().map(PathBuf::from));
        let kubeconfig = f.kubeconfig.clone().or(self
            .file
            .client_connection
            .as_ref()
            .and_then(|c| c.kubeconfig.clone())
            .map(PathBuf::from));
        if f.config_dir.is_some() && f.kubeconfig.is_some() {
            bail!(
                "give either --config-dir (files source) or --kubeconfig (Kubernetes API source), not both"
            )
        }
        Ok(match config_dir {
            Some(d) => SourceKind::Files(d),
            None => SourceKind::Kubernetes(kubeconfig),
        })
    }

    pub(super) fn cidrs(&self) -> anyhow::Result<(Vec<IpNet>, Vec<IpNet>)> {
        let mut service = self.f.service_cidr.clone();
        if service.is_empty() {
            service = cidrs(&self.ctx("serviceCIDR"), self.file.service_cidr.as_deref())?;
        }
        if service.is_empty() {
            service = vec!["10.96.0.0/12".parse()?];
        }
        let mut cluster = self.f.cluster_cidr.clone();
        if cluster.is_empty() {
            cluster = cidrs(&self.ctx("clusterCIDR"), self.file.cluster_cidr.as_deref())?;
        }
        Ok((service, cluster))
    }

    fn iptables(&self) -> crate::config::IptablesConfig {
        self.file.iptables.clone().unwrap_or_default()
    }

    pub(super) fn masquerade_all(&self) -> bool {
        self.f.masquerade_all || self.iptables().masquerade_all.unwrap_or(false)
    }

    pub(super) fn masquerade_bit(&self) -> anyhow::Result<u32> {
        let bit = self
            .f
            .masquerade_bit
            .or(self.iptables().masquerade_bit)
            .unwrap_or(13);
        if bit > 31 {
            bail!(
                "{}: {bit} is not a bit of a 32-bit mark",
                self.ctx("iptables.masqueradeBit")
            );
        }
        Ok(bit)
    }

    pub(super) fn node_name(&self) -> String {
        self.f
            .node_name
            .clone()
            .or(self.file.hostname_override.clone())
            .unwrap_or_else(hostname)
    }

    pub(super) fn service_proxy_name(&self) -> Option<String> {
        self.f
            .service_proxy_name
            .clone()
            .or(self.file.service_proxy_name.clone())
    }

    /// `syncPeriod` and `minSyncPeriod`: the sync period is at least 1 s (a period of 0 would
    /// resync without pause), and the minimum is at most the period, as kube-proxy validates.
    pub(super) fn sync_periods(&self) -> anyhow::Result<(Duration, Duration)> {
        let ipt = self.iptables();
        let period = match self.f.sync_period {
            Some(d) => (d, "--sync-period".to_string()),
            None => match self
                .duration("syncPeriod", self.file.sync_period.as_ref())?
                .map(|d| (d, self.ctx("syncPeriod")))
            {
                Some(d) => d,
                None => (
                    self.duration("iptables.syncPeriod", ipt.sync_period.as_ref())?
                        .unwrap_or(Duration::from_secs(30)),
                    self.ctx("iptables.syncPeriod"),
                ),
            },
        };
        let min = match self.f.min_sync_period {
            Some(d) => (d, "--min-sync-period".to_string()),
            None => match self
                .duration("minSyncPeriod", self.file.min_sync_period.as_ref())?
                .map(|d| (d, self.ctx("minSyncPeriod")))
            {
                Some(d) => d,
                None => (
                    self.duration("iptables.minSyncPeriod", ipt.min_sync_period.as_ref())?
                        .unwrap_or(Duration::from_secs(1)),
                    self.ctx("iptables.minSyncPeriod"),
                ),
            },
        };
        if period.0 < MIN_SYNC_PERIOD {
            bail!(
                "{}: {:?} is shorter than the minimum of 1s",
                period.1,
                period.0
            );
        }
        if min.0 > period.0 {
            bail!(
                "{}: {:?} is longer than the sync period ({:?})",
                min.1,
                min.0,
                period.0
            );
        }
        Ok((period.0, min.0))
    }

    pub(super) fn addresses(&self) -> anyhow::Result<(SocketAddr, SocketAddr)> {
        let addr = |flag: Option<SocketAddr>,
                    file: &Option<String>,
                    field: &str,
                    default: &str|
         -> anyhow::Result<SocketAddr> {
            match (flag, file) {
                (Some(a), _) => Ok(a),
                (None, Some(s)) => s
                    .parse()
                    .with_context(|| format!("{}: invalid address {s:?}", self.ctx(field))),
                _ => Ok(default.parse()?),
            }
        };
        Ok((
            addr(
                self.f.healthz_bind_address,
                &self.file.healthz_bind_address,
                "healthzBindAddress",
                "0.0.0.0:10256",
            )?,
            addr(
                self.f.metrics_bind_address,
                &self.file.metrics_bind_address,
                "metricsBindAddress",
                "127.0.0.1:10249",
            )?,
        ))
    }

    /// `--node-ip`, else `nodeIPs`.
    pub(super) fn node_ips(&self) -> anyhow::Result<Vec<IpAddr>> {
        if !self.f.node_ip.is_empty() {
            return Ok(self.f.node_ip.clone());
        }
        let given = self.file.node_ips.clone().unwrap_or_default();
        given
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.trim().parse().with_context(|| {
                    format!(
                        "{}: invalid IP address {s:?}",
                        self.ctx(&format!("nodeIPs[{i}]"))
                    )
                })
            })
            .collect()
    }

    /// `--nodeport-addresses`, else `nodePortAddresses`, else the mode's default: every local
    /// address in the iptables mode (also for a CIDR of prefix 0, by address type), the
    /// primary addresses in the nftables mode, as kube-proxy.
    pub(super) fn node_port_addresses(&self, mode: Mode) -> anyhow::Result<NodePortAddresses> {
        let (given, field) = if self.f.nodeport_addresses.is_empty() {
            (
                self.file.node_port_addresses.clone().unwrap_or_default(),
                self.ctx("nodePortAddresses"),
            )
        } else {
            (
                self.f.nodeport_addresses.clone(),
                "--nodeport-addresses".to_string(),
            )
        };
        let given: Vec<&str> = given
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if given.is_empty() {
            return Ok(match mode {
                Mode::Iptables | Mode::Ipvs => NodePortAddresses::AllLocal,
                _ => NodePortAddresses::Primary,
            });
        }
        if given.contains(&"primary") {
            if given.len() > 1 {
                bail!("{field}: \"primary\" cannot be combined with CIDRs");
            }
            return Ok(NodePortAddresses::Primary);
        }
        let cidrs = given
            .iter()
            .map(|c| {
                c.parse::<IpNet>().with_context(|| {
                    format!("{field}: invalid value {c:?}: give CIDRs or \"primary\"")
                })
            })
            .collect::<anyhow::Result<Vec<IpNet>>>()?;
        if mode == Mode::Iptables && cidrs.iter().any(|c| c.prefix_len() == 0) {
            return Ok(NodePortAddresses::AllLocal);
        }
        Ok(NodePortAddresses::Cidrs(cidrs))
    }

    /// `--service-node-port-range`, else `serviceNodePortRange`: `LO-HI`.
    pub(super) fn node_port_range(&self) -> anyhow::Result<RangeInclusive<u16>> {
        let (s, field) = match (
            &self.f.service_node_port_range,
            &self.file.service_node_port_range,
        ) {
            (Some(s), _) => (s.clone(), "--service-node-port-range".to_string()),
            (None, Some(s)) => (s.clone(), self.ctx("serviceNodePortRange")),
            (None, None) => return Ok(30000..=32767),
        };
        let bad = || anyhow::anyhow!("{field}: invalid range {s:?}: want LO-HI, as 30000-32767");
        let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
        let (lo, hi): (u16, u16) = (
            lo.trim().parse().map_err(|_| bad())?,
            hi.trim().parse().map_err(|_| bad())?,
        );
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(lo..=hi)
    }

    pub(super) fn conntrack(&self) -> anyhow::Result<ConntrackSettings> {
        let ct = self.file.conntrack.clone().unwrap_or_default();
        let d = |field: &str, v: &Option<String>| {
            self.duration(&format!("conntrack.{field}"), v.as_ref())
        };
        Ok(ConntrackSettings {
            max_per_core: ct.max_per_core,
            min: ct.min,
            tcp_established_timeout: d("tcpEstablishedTimeout", &ct.tcp_established_timeout)?,
            tcp_close_wait_timeout: d("tcpCloseWaitTimeout", &ct.tcp_close_wait_timeout)?,
            udp_timeout: d("udpTimeout", &ct.udp_timeout)?,
            udp_stream_timeout: d("udpStreamTimeout", &ct.udp_stream_timeout)?,
            tcp_be_liberal: ct.tcp_be_liberal,
        })
    }

    /// The userspace mode's proxy: flags over the `userspace` section over the defaults.
    pub(super) fn userspace(
        &self,
        cluster_cidrs: &[IpNet],
    ) -> anyhow::Result<wasp_proxy::ProxyConfig> {
        let u = self.file.userspace.clone().unwrap_or_default();
        let d = wasp_proxy::ProxyConfig::default();
        let dur = |flag: Option<Duration>, field: &str, v: &Option<String>, default: Duration| {
            Ok::<_, anyhow::Error>(match flag {
                Some(f) => f,
                None => self
                    .duration(&format!("userspace.{field}"), v.as_ref())?
                    .unwrap_or(default),
            })
        };
        let f = self.f;
        Ok(wasp_proxy::ProxyConfig {
            port: f.userspace_port.or(u.port).unwrap_or(d.port),
            connect_timeout: dur(
                f.userspace_connect_timeout,
                "connectTimeout",
                &u.connect_timeout,
                d.connect_timeout,
            )?,
            connect_attempts: f
                .userspace_connect_attempts
                .or(u.connect_attempts)
                .unwrap_or(d.connect_attempts)
                .max(1),
            backoff: dur(None, "backoff", &u.backoff, d.backoff)?,
            idle_timeout: dur(
                f.userspace_idle_timeout,
                "idleTimeout",
                &u.idle_timeout,
                d.idle_timeout,
            )?,
            drain_timeout: dur(
                f.userspace_drain_timeout,
                "drainTimeout",
                &u.drain_timeout,
                d.drain_timeout,
            )?,
            udp_idle_timeout: dur(
                f.userspace_udp_idle_timeout,
                "udpIdleTimeout",
                &u.udp_idle_timeout,
                d.udp_idle_timeout,
            )?,
            max_connections: u.max_connections.unwrap_or(d.max_connections),
            cluster_cidrs: cluster_cidrs.to_vec(),
            masquerade_all: self.masquerade_all(),
        })
    }

    /// What captures traffic for the userspace mode: the flag over `userspace.rules`.
    pub(super) fn capture_rules(&self) -> anyhow::Result<RulesChoice> {
        let rules = self
            .file
            .userspace
            .as_ref()
            .and_then(|u| u.rules.as_deref());
        Ok(match (self.f.userspace_rules, rules) {
            (Some(flag), _) => flag.choice(),
            (None, None | Some("auto")) => RulesChoice::Auto,
            (None, Some("nftables")) => RulesChoice::Nftables,
            (None, Some("iptables")) => RulesChoice::Iptables,
            (None, Some(other)) => anyhow::bail!(
                "{}: unknown value {other:?}; the values are: auto, nftables, iptables",
                self.ctx("userspace.rules")
            ),
        })
    }

    /// The DNS responder: on when an address is given.
    pub(super) fn dns(&self) -> anyhow::Result<Option<super::DnsSettings>> {
        let addr = match (&self.f.dns_bind_address, &self.file.dns_bind_address) {
            (Some(a), _) => *a,
            (None, Some(a)) => a
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: {e}: {a:?}", self.ctx("dnsBindAddress")))?,
            (None, None) => return Ok(None),
        };
        let domain = (self.f.cluster_domain.clone())
            .or_else(|| self.file.cluster_domain.clone())
            .unwrap_or_else(|| "cluster.local".into());
        let given = if self.f.dns_upstream.is_empty() {
            self.file.dns_upstreams.clone().unwrap_or_default()
        } else {
            self.f.dns_upstream.clone()
        };
        let upstreams = match given.as_slice() {
            [] => crate::dns::system_upstreams(addr),
            [none] if none == "none" => Vec::new(),
            list => list
                .iter()
                .map(|u| {
                    u.parse::<SocketAddr>()
                        .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                        .map_err(|_| anyhow::anyhow!("--dns-upstream, dnsUpstreams: invalid value {u:?}: give IP[:PORT] or none"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        Ok(Some(super::DnsSettings {
            addr,
            domain,
            upstreams,
        }))
    }

    /// Registered plugins, with paths relative to the config file.
    pub(super) fn plugins(&self) -> std::collections::BTreeMap<String, PathBuf> {
        let base = self
            .f
            .config
            .as_ref()
            .and_then(|p| p.parent())
            .map(PathBuf::from)
            .unwrap_or_default();
        self.file
            .plugins
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(n, p)| (n, base.join(p)))
            .collect()
    }

    pub(super) fn limits(&self) -> Limits {
        let l = self.file.limits.clone().unwrap_or_default();
        let d = Limits::default();
        Limits {
            file_bytes: l.file_bytes.unwrap_or(d.file_bytes),
            documents: l.documents_per_file.unwrap_or(d.documents),
            string_bytes: l.string_bytes.unwrap_or(d.string_bytes),
            depth: l.depth.unwrap_or(d.depth),
        }
    }

    pub(super) fn errors_shown(&self) -> usize {
        self.file
            .limits
            .as_ref()
            .and_then(|l| l.errors_shown)
            .unwrap_or(100)
    }

    pub(super) fn log_format(&self) -> anyhow::Result<Option<LogFormat>> {
        match self.file.logging.as_ref().and_then(|l| l.format.as_deref()) {
            None => Ok(None),
            Some("text") => Ok(Some(LogFormat::Text)),
            Some("json") => Ok(Some(LogFormat::Json)),
            Some(other) => bail!(
                "{}: unsupported value {other:?}: supported values: \"text\", \"json\"",
                self.ctx("logging.format")
            ),
        }
    }
}
