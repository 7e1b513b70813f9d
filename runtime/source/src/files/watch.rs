//! Watching the directory: notify events, debounced, each followed by a rescan.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use thiserror::Error;
use tokio::sync::{Notify, mpsc};

use super::scan::FileSource;
use crate::event::SourceEvent;

/// Why the directory cannot be watched.
#[derive(Debug, Error)]
pub enum WatchError {
    /// The directory cannot be listed.
    #[error("cannot read config dir {dir}")]
    Read {
        /// The directory.
        dir: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// inotify refused the watch.
    #[error("cannot watch config dir {dir}")]
    Watch {
        /// The directory.
        dir: String,
        /// The cause.
        #[source]
        source: notify::Error,
    },
}

/// Scans `source` once, then watches its directory. The initial scan's batches come first,
/// then `Synced`, then the batches of each later scan. Bursts of events are debounced by
/// `debounce`, and a rescan runs every `resync` anyway, in case events were lost.
///
/// # Errors
/// Fails when the directory cannot be listed or watched.
pub fn watch(
    mut source: FileSource,
    debounce: Duration,
    resync: Duration,
) -> Result<mpsc::Receiver<SourceEvent>, WatchError> {
    let dir = source.dir().display().to_string();
    let initial = source.rescan().map_err(|e| WatchError::Read {
        dir: dir.clone(),
        source: e,
    })?;
    let kick = Arc::new(Notify::new());
    let k = kick.clone();
    let mut watcher: RecommendedWatcher = notify::recommended_watcher(move |_| k.notify_one())
        .map_err(|e| WatchError::Watch {
            dir: dir.clone(),
            source: e,
        })?;
    watcher
        .watch(Path::new(&dir), RecursiveMode::Recursive)
        .map_err(|e| WatchError::Watch {
            dir: dir.clone(),
            source: e,
        })?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let _watcher = watcher;
        if tx.send(SourceEvent::Batches(initial)).await.is_err()
            || tx.send(SourceEvent::Synced).await.is_err()
        {
            return;
        }
        loop {
            let _ = tokio::time::timeout(resync, kick.notified()).await;
            // Wait for the burst to end: an editor's save is several events.
            while tokio::time::timeout(debounce, kick.notified())
                .await
                .is_ok()
            {}
            match source.rescan() {
                Ok(b) if b.is_empty() => {}
                Ok(b) => {
                    if tx.send(SourceEvent::Batches(b)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(%dir, error = %e, "cannot rescan config dir; keeping the last good state")
                }
            }
        }
    });
    Ok(rx)
}
