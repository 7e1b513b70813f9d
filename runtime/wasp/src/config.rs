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
    /// Accepted for compatibility; wasp always uses --noflush partial syncs.
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
    /// Node port addresses (accepted; NodePort Services are not proxied yet).
    pub node_port_addresses: Option<Vec<String>>,
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
];

impl FileConfig {
    /// Reads a config file.
    ///
    /// # Errors
    /// Fails with the file, the field and the problem.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let v: serde_yaml::Value = serde_yaml::from_str(&text)
            .with_context(|| format!("{}: not valid YAML", path.display()))?;
        let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        let v = match kind {
            "WaspConfiguration" => v,
            "KubeProxyConfiguration" => {
                let mut m = v.as_mapping().cloned().unwrap_or_default();
                let skipped: Vec<String> = m
                    .keys()
                    .filter_map(|k| k.as_str())
                    .filter(|k| !KUBE_PROXY_FIELDS.contains(k))
                    .map(str::to_string)
                    .collect();
                for k in &skipped {
                    m.remove(k.as_str());
                }
                if !skipped.is_empty() {
                    tracing::warn!(file = %path.display(), fields = ?skipped, "KubeProxyConfiguration fields that do not apply to wasp are ignored");
                }
                serde_yaml::Value::Mapping(m)
            }
            other => bail!(
                "{}: kind: expected WaspConfiguration or KubeProxyConfiguration, got {other:?}",
                path.display()
            ),
        };
        let cfg: FileConfig = serde_path_to_error::deserialize(v)
            .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> anyhow::Result<FileConfig> {
        let d = tempfile::tempdir()?;
        let p = d.path().join("wasp.yaml");
        std::fs::write(&p, text)?;
        FileConfig::load(&p)
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
