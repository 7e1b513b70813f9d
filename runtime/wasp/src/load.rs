//! One-shot loading, for `plan` and `validate`: everything the source holds until it is
//! synced, resolved once.

use std::time::Duration;

use wasp_model::ProxyState;
use wasp_resolve::{ConfigError, ObjectStore, resolve};
use wasp_source::{ErrorLog, SourceEvent};

use crate::options::Settings;

/// The source's objects, loaded and resolved once.
#[derive(Debug)]
pub struct Loaded {
    /// The objects.
    pub store: ObjectStore,
    /// The resolved state.
    pub state: ProxyState,
    /// Every error: reading, validation and resolution.
    pub errors: Vec<ConfigError>,
}

/// Loads from the configured source until it is synced (at most 30 s), then resolves.
///
/// # Errors
/// Fails when the source cannot start or does not sync in time.
pub async fn load(s: &Settings) -> anyhow::Result<Loaded> {
    let mut rx = crate::source::start(s).await?;
    let mut store = s.store();
    let mut log = ErrorLog::default();
    let wait = async {
        while let Some(ev) = rx.recv().await {
            match ev {
                SourceEvent::Batches(bs) => {
                    for b in bs {
                        b.apply_to(&mut store, &mut log);
                    }
                }
                SourceEvent::Synced => return Ok(()),
                SourceEvent::Health {
                    source,
                    problem: Some(p),
                } => tracing::warn!(%source, problem = %p, "source unhealthy"),
                SourceEvent::Health { .. } => {}
            }
        }
        anyhow::bail!("the source ended before it synced")
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .map_err(|_| anyhow::anyhow!("the source did not sync within 30 s"))??;
    let (state, resolve_errors) = resolve(&store, &mut s.allocator(), &s.resolve_config());
    let mut errors: Vec<ConfigError> = log.all().cloned().collect();
    errors.extend(resolve_errors);
    Ok(Loaded {
        store,
        state,
        errors,
    })
}
