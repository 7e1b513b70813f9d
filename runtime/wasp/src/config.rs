//! The daemon config file (`--config`): kube-proxy's `KubeProxyConfiguration` fields that apply
//! to wasp, under its own kind, or a `KubeProxyConfiguration` itself.
//!
//! `WaspConfiguration` (`wasp.dev/v1alpha1`) rejects unknown fields, so a typo is an error
//! that names the file and the field. A `KubeProxyConfiguration`
//! (`kubeproxy.config.k8s.io/v1alpha1`) is read for the fields that apply and the rest are
//! listed in one warning, so an existing kube-proxy ConfigMap can be reused as is.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

/// The iptables section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IptablesConfig {
    /// Masquerade all traffic to cluster IPs.
    pub masquerade_all: Option<bool>,
    /// The mark bit that asks for masquerade.
    pub masquerade_bit: Option<u32>,
    /// Older kube-proxy configs put the sync periods here.
    pub sync_period: Option<String>,
    /// Older kube-proxy configs put the sync periods here.
    pub min_sync_period: Option<String>,
    /// Accepted for compatibility: with node ports on every address, the iptables mode
    /// always answers them on 127.0.0.1 too, as kube-proxy's default does.
    pub local_host_nodeports: Option<bool>,
}

/// The conntrack section: kernel settings applied at start.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConntrackConfig {
    /// `nf_conntrack_max` per CPU.
    pub max_per_core: Option<u32>,
    /// The floor of `nf_conntrack_max`.
    pub min: Option<u32>,
    /// `nf_conntrack_tcp_timeout_established`.
    pub tcp_established_timeout: Option<String>,
    /// `nf_conntrack_tcp_timeout_close_wait`.
    pub tcp_close_wait_timeout: Option<String>,
    /// `nf_conntrack_udp_timeout`.
    pub udp_timeout: Option<String>,
    /// `nf_conntrack_udp_timeout_stream`.
    pub udp_stream_timeout: Option<String>,
    /// `nf_conntrack_tcp_be_liberal`.
    pub tcp_be_liberal: Option<bool>,
}

/// The userspace section: the userspace mode's proxy (wasp only).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserspaceConfig {
    /// The listeners' port (default 15001).
    pub port: Option<u16>,
    /// How long one connect to an endpoint may take (default 1s).
    pub connect_timeout: Option<String>,
    /// How many endpoints one connection tries (default 3).
    pub connect_attempts: Option<u32>,
    /// How long an endpoint whose connect failed is skipped (default 5s).
    pub backoff: Option<String>,
    /// A connection idle this long is closed (default 1h).
    pub idle_timeout: Option<String>,
    /// A UDP session idle this long ends (default 30s).
    pub udp_idle_timeout: Option<String>,
    /// How long connections to a removed endpoint go on (default 60s).
    pub drain_timeout: Option<String>,
    /// The most connections held at once (default 100000).
    pub max_connections: Option<usize>,
    /// The rules that capture traffic: `auto` (nftables, else iptables), `nftables` or
    /// `iptables` (default auto).
    pub rules: Option<String>,
}

/// The limits section: what one manifest file may hold, and how much of the error list
/// `/healthz` shows. Each limit is named in the error it causes.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// The largest manifest file read, in bytes (default 64 MiB).
    pub file_bytes: Option<u64>,
    /// The most documents in one file (default 500,000).
    pub documents_per_file: Option<usize>,
    /// The longest string in a document, in bytes (default 1 MiB).
    pub string_bytes: Option<usize>,
    /// The deepest nesting of a document (default 64).
    pub depth: Option<usize>,
    /// The most config errors `/healthz` lists (default 100; the count is always complete).
    pub errors_shown: Option<usize>,
}

/// kube-proxy's logging section; only the format applies.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoggingConfig {
    /// `text` (the default) or `json`.
    pub format: Option<String>,
}

/// kube-proxy's client connection section; only the kubeconfig applies.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    /// The kubeconfig file.
    pub kubeconfig: Option<String>,
}

/// The daemon config file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    /// `wasp.dev/v1alpha1`.
    pub api_version: Option<String>,
    /// `WaspConfiguration`.
    pub kind: Option<String>,
    /// The dataplane mode.
    pub mode: Option<String>,
    /// Pod CIDRs, comma-separated as kube-proxy writes them.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<String>,
    /// Service CIDRs for cluster IP allocation and validation, comma-separated (wasp only).
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: Option<String>,
    /// The longest time between full syncs.
    pub sync_period: Option<String>,
    /// The shortest time between syncs.
    pub min_sync_period: Option<String>,
    /// Where /healthz is served.
    pub healthz_bind_address: Option<String>,
    /// Where /metrics is served.
    pub metrics_bind_address: Option<String>,
    /// Where node ports answer: CIDRs, or `primary`.
    pub node_port_addresses: Option<Vec<String>>,
    /// This node's primary addresses, one per family (wasp only; `--node-ip`).
    #[serde(rename = "nodeIPs")]
    pub node_ips: Option<Vec<String>>,
    /// The node port range of static mode, `LO-HI` (wasp only; kube-apiserver's flag).
    pub service_node_port_range: Option<String>,
    /// The node name.
    pub hostname_override: Option<String>,
    /// The client connection.
    pub client_connection: Option<ClientConnection>,
    /// The iptables section.
    pub iptables: Option<IptablesConfig>,
    /// The conntrack section.
    pub conntrack: Option<ConntrackConfig>,
    /// The config dir of the files source (wasp only).
    pub config_dir: Option<String>,
    /// Handle only Services labelled with this proxy name (wasp only).
    pub service_proxy_name: Option<String>,
    /// Extra balancer plugins by name → .wasm path (wasp only; used by the plugin host).
    pub plugins: Option<BTreeMap<String, String>>,
    /// The userspace mode's proxy (wasp only).
    pub userspace: Option<UserspaceConfig>,
    /// Where the DNS responder listens (wasp only; off when absent).
    pub dns_bind_address: Option<String>,
    /// The cluster domain (default `cluster.local`).
    pub cluster_domain: Option<String>,
    /// Where the DNS responder forwards other names (wasp only).
    pub dns_upstreams: Option<Vec<String>>,
    /// Limits on manifest files and the error list (wasp only).
    pub limits: Option<LimitsConfig>,
    /// The log format.
    pub logging: Option<LoggingConfig>,
}

const KUBE_PROXY_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "mode",
    "clusterCIDR",
    "syncPeriod",
    "minSyncPeriod",
    "healthzBindAddress",
    "metricsBindAddress",
    "nodePortAddresses",
    "hostnameOverride",
    "clientConnection",
    "iptables",
    "conntrack",
    "logging",
];

impl FileConfig {
    /// Reads a config file; returns it with the warnings to log once logging is set up.
    ///
    /// # Errors
    /// Fails with the file, the field and the problem.
    pub fn load(path: &Path) -> anyhow::Result<(Self, Vec<String>)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut opts = serde_saphyr::Options::default();
        opts.with_snippet = false;
        let v: Value = serde_saphyr::from_str_with_options(&text, opts)
            .map_err(|e| anyhow::anyhow!("{}: not valid YAML: {e}", path.display()))?;
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let mut warnings = Vec::new();
        let v = match kind {
            "WaspConfiguration" => v,
            "KubeProxyConfiguration" => {
                let mut m = v.as_object().cloned().unwrap_or_default();
                let skipped: Vec<String> = m
                    .keys()
                    .filter(|k| !KUBE_PROXY_FIELDS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                for k in &skipped {
                    m.remove(k);
                }
                if !skipped.is_empty() {
                    warnings.push(format!(
                        "{}: KubeProxyConfiguration fields that do not apply to wasp are ignored: {}",
                        path.display(),
                        skipped.join(", ")
                    ));
                }
                Value::Object(m)
            }
            other => bail!(
                "{}: kind: expected WaspConfiguration or KubeProxyConfiguration, got {other:?}",
                path.display()
            ),
        };
        let cfg: FileConfig = serde_path_to_error::deserialize(v)
            .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
        Ok((cfg, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<FileConfig> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("wasp.yaml");
        std::fs::write(&p, text)?;
        Ok(FileConfig::load(&p)?.0)
    }

    #[test]
    fn wasp_configuration_reads_and_rejects_typos() {
        let c = load("apiVersion: wasp.dev/v1alpha1\nkind: WaspConfiguration\nmode: iptables\nclusterCIDR: 10.244.0.0/16\nsyncPeriod: 1m0s\niptables: {masqueradeBit: 12}\nconntrack: {udpTimeout: 30s}\n").unwrap();
        assert_eq!(c.mode.as_deref(), Some("iptables"));
        assert_eq!(c.iptables.unwrap().masquerade_bit, Some(12));
        let e = load("kind: WaspConfiguration\nsyncPeriodd: 1s\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("wasp.yaml") && e.contains("syncPeriodd"), "{e}");
        let e = load("kind: WaspConfiguration\niptables: {masqueradeBit: x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("iptables.masqueradeBit"), "{e}");
    }

    #[test]
    fn a_kube_proxy_configuration_is_read_for_what_applies() {
        let c = load("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\nbindAddress: 0.0.0.0\nipvs: {scheduler: rr}\nclusterCIDR: 10.244.0.0/16,fd00::/48\nclientConnection: {kubeconfig: /var/lib/kube-proxy/kubeconfig.conf, qps: 5}\n").unwrap();
        assert_eq!(c.cluster_cidr.as_deref(), Some("10.244.0.0/16,fd00::/48"));
        assert_eq!(
            c.client_connection.unwrap().kubeconfig.as_deref(),
            Some("/var/lib/kube-proxy/kubeconfig.conf")
        );
    }
}
