//! Starting the configured source: the watched directory or the Kubernetes API.

use std::path::Path;

use anyhow::Context;
use tokio::sync::mpsc;
use wasp_source::kubernetes::{self, KubeConfig};
use wasp_source::{FileSource, SourceEvent, WatchConfig};

use crate::options::{Settings, SourceKind};

/// Starts the source the settings name.
///
/// # Errors
/// Fails when the directory cannot be watched or the API client cannot be configured.
pub async fn start(s: &Settings) -> anyhow::Result<mpsc::Receiver<SourceEvent>> {
    match &s.source {
        SourceKind::Files(dir) => Ok(wasp_source::watch(
            FileSource::with_limits(dir, s.limits.clone()),
            WatchConfig::new(s.sync_period),
        )?),
        SourceKind::Kubernetes(kubeconfig) => {
            let client = client(kubeconfig.as_deref()).await?;
            let cfg = KubeConfig {
                node_name: s.node_name.clone(),
                service_proxy_name: s.service_proxy_name.clone(),
            };
            Ok(kubernetes::watch(client, &cfg))
        }
    }
}

/// A client from a kubeconfig file, or from the in-cluster service account.
async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p).with_context(|| format!("cannot read kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", p.display()))?
        }
        None => kube::Config::incluster().context(
            "no --config-dir or --kubeconfig given, and not running in a cluster: give --config-dir for the files source",
        )?,
    };
    kube::Client::try_from(config).context("cannot build the Kubernetes client")
}
