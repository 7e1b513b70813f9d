//! The flags that configure the model and the dataplane, shared by `run`, `plan` and
//! `validate`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ipnet::IpNet;
use wasp_dataplane::Mode;
use wasp_dataplane::iptables::{Backend, RenderConfig};
use wasp_model::categorize::NodeTopology;
use wasp_model::validate::ValidationConfig;
use wasp_model::{Allocator, ObjectStore, ResolveConfig};

/// Parses `30s`, `100ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 30s or 100ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
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

/// What the model and the dataplane need from the command line.
#[derive(Debug, Clone, Args)]
pub struct ModelOptions {
    /// The directory of Kubernetes manifests to read (watched by `run`).
    #[arg(long, value_name = "DIR")]
    pub config_dir: PathBuf,
    /// The CIDR cluster IPs are allocated from when a Service gives none; repeat for dual-stack.
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/12")]
    pub service_cidr: Vec<IpNet>,
    /// The pod CIDR: traffic to cluster IPs from outside it is masqueraded.
    #[arg(long, value_name = "CIDR")]
    pub cluster_cidr: Vec<IpNet>,
    /// Masquerade all traffic to cluster IPs.
    #[arg(long)]
    pub masquerade_all: bool,
    /// The packet-mark bit (0-31) that asks for masquerade.
    #[arg(long, default_value_t = 13, value_parser = clap::value_parser!(u32).range(0..32))]
    pub masquerade_bit: u32,
    /// This node's name, for local endpoints and topology; defaults to the hostname.
    #[arg(long)]
    pub node_name: Option<String>,
    /// This node's zone, for topology hints (else read from its Node object, if any).
    #[arg(long)]
    pub node_zone: Option<String>,
    /// The iptables backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub iptables_backend: BackendFlag,
}

impl ModelOptions {
    /// An empty store that validates as the API server would with these CIDRs.
    pub fn store(&self) -> ObjectStore {
        ObjectStore::new(ValidationConfig {
            service_cidrs: self.service_cidr.clone(),
        })
    }

    /// The cluster IP allocator.
    pub fn allocator(&self) -> Allocator {
        Allocator::new(self.service_cidr.clone())
    }

    /// The resolution config.
    pub fn resolve_config(&self) -> ResolveConfig {
        let name = self.node_name.clone().unwrap_or_else(hostname);
        ResolveConfig {
            node: NodeTopology {
                name,
                zone: self.node_zone.clone(),
            },
            service_proxy_name: None,
        }
    }

    /// The dataplane for `mode`.
    pub fn dataplane(&self, mode: Mode) -> Box<dyn wasp_dataplane::Dataplane> {
        match mode {
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

    fn render_config(&self) -> RenderConfig {
        RenderConfig {
            ipv4: true,
            cluster_cidrs: self.cluster_cidr.clone(),
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
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
