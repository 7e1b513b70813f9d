//! Watching the directory: one inotify watch per directory, and a re-read of just the paths
//! that changed.
//!
//! A path whose write is complete — closed after writing, renamed into place, created,
//! deleted — is read at once. A path that was only modified may be half written (an editor,
//! a copy in progress), so it waits until it has been quiet for `debounce`, but never longer
//! than `max_delay` after its first event: a writer that never stops holds back its own file
//! for a bounded time and nobody else's. A full rescan runs every `resync`, and when the
//! kernel's event queue overflowed.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

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

/// How the watch waits.
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    /// How long a modified (not yet closed) file must be quiet before it is read.
    pub debounce: Duration,
    /// The longest any change waits, however busy its file.
    pub max_delay: Duration,
    /// How often the whole tree is walked again, in case events were lost.
    pub resync: Duration,
}

impl WatchConfig {
    /// The defaults (100 ms, 1 s) with a full rescan every `resync`.
    pub fn new(resync: Duration) -> Self {
        Self {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            resync,
        }
    }
}

/// The most distinct paths held between two reads; past it, the next read is a full rescan.
const MAX_PENDING: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Pending {
    first: Instant,
    last: Instant,
    complete: bool,
}

/// What the inotify thread hands the reading task.
#[derive(Debug, Default)]
struct Inbox {
    paths: HashMap<PathBuf, Pending>,
    rescan: bool,
}

impl Inbox {
    fn add(&mut self, event: notify::Event) {
        if event.need_rescan() {
            self.rescan = true;
            return;
        }
        let complete = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_)) => true,
            EventKind::Modify(_) => false,
            // Opens and reads change nothing.
            _ => return,
        };
        let now = Instant::now();
        for path in event.paths {
            if self.paths.len() >= MAX_PENDING && !self.paths.contains_key(&path) {
                self.rescan = true;
                continue;
            }
            let p = self.paths.entry(path).or_insert(Pending {
                first: now,
                last: now,
                complete,
            });
            p.last = now;
            p.complete |= complete;
        }
    }

    /// Takes the paths due now; returns them and when the next one is due.
    fn take_due(
        &mut self,
        cfg: &WatchConfig,
        now: Instant,
    ) -> (BTreeSet<PathBuf>, Option<Instant>) {
        let due = |p: &Pending| {
            if p.complete {
                p.last
            } else {
                (p.last + cfg.debounce).min(p.first + cfg.max_delay)
            }
        };
        let mut out = BTreeSet::new();
        let mut next: Option<Instant> = None;
        self.paths.retain(|path, p| {
            let at = due(p);
            if at <= now {
                out.insert(path.clone());
                false
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
                true
            }
        });
        (out, next)
    }
}

/// The inotify watches, one per directory of the last walk.
struct Watches {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl Watches {
    /// Watches the directories in `dirs` and stops watching the others.
    fn sync(&mut self, dirs: &BTreeSet<PathBuf>) {
        for gone in self.watched.difference(dirs) {
            let _ = self.watcher.unwatch(gone);
        }
        self.watched.retain(|d| dirs.contains(d));
        for dir in dirs.difference(&self.watched.clone()) {
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir.clone());
                }
                // Listed a moment ago; gone or unreadable now. The next walk says which.
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cannot watch"),
            }
        }
    }
}

/// Scans `source` once, then watches its directories. The initial scan's batches come first,
/// then `Synced`, then a batch for each later change.
///
/// # Errors
/// Fails when the directory cannot be listed or watched.
pub fn watch(
    mut source: FileSource,
    cfg: WatchConfig,
) -> Result<mpsc::Receiver<SourceEvent>, WatchError> {
    let dir = source.dir().display().to_string();
    let initial = source.rescan().map_err(|e| WatchError::Read {
        dir: dir.clone(),
        source: e,
    })?;
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let kick = Arc::new(Notify::new());
    let (i, k) = (inbox.clone(), kick.clone());
    let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let mut inbox = i.lock().unwrap_or_else(|e| e.into_inner());
        match ev {
            Ok(ev) => inbox.add(ev),
            Err(_) => inbox.rescan = true,
        }
        k.notify_one();
    })
    .map_err(|e| WatchError::Watch {
        dir: dir.clone(),
        source: e,
    })?;
    let mut watches = Watches {
        watcher,
        watched: BTreeSet::new(),
    };
    watches
        .watcher
        .watch(Path::new(&dir), RecursiveMode::NonRecursive)
        .map_err(|e| WatchError::Watch {
            dir: dir.clone(),
            source: e,
        })?;
    watches.watched.insert(PathBuf::from(&dir));
    watches.sync(source.dirs());
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        if tx.send(SourceEvent::Batches(initial)).await.is_err()
            || tx.send(SourceEvent::Synced).await.is_err()
        {
            return;
        }
        let mut w = Watching {
            source,
            watches,
            inbox,
            kick,
            cfg,
            dir,
        };
        w.run(tx).await;
    });
    Ok(rx)
}

/// The watch task's state.
struct Watching {
    source: FileSource,
    watches: Watches,
    inbox: Arc<Mutex<Inbox>>,
    kick: Arc<Notify>,
    cfg: WatchConfig,
    dir: String,
}

impl Watching {
    /// Reads what changed, when it is due, until the receiver goes away.
    async fn run(&mut self, tx: mpsc::Sender<SourceEvent>) {
        let mut next_resync = Instant::now() + self.cfg.resync;
        let mut next_due: Option<Instant> = None;
        loop {
            let wake = next_due.map_or(next_resync, |d| d.min(next_resync));
            let _ = tokio::time::timeout_at(wake, self.kick.notified()).await;
            let now = Instant::now();
            let (paths, rescan) = {
                let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
                let (paths, next) = inbox.take_due(&self.cfg, now);
                next_due = next;
                (
                    paths,
                    std::mem::take(&mut inbox.rescan) || now >= next_resync,
                )
            };
            if rescan {
                next_resync = now + self.cfg.resync;
            }
            let Some(batches) = self.read(rescan, &paths) else {
                continue;
            };
            self.watches.sync(self.source.dirs());
            if !batches.is_empty() && tx.send(SourceEvent::Batches(batches)).await.is_err() {
                return;
            }
        }
    }

    /// A full rescan, or a refresh of what `paths` name; `None` when there is nothing to do.
    fn read(&mut self, rescan: bool, paths: &BTreeSet<PathBuf>) -> Option<Vec<crate::Batch>> {
        if rescan {
            return match self.source.rescan() {
                Ok(b) => Some(b),
                Err(e) => {
                    let dir = &self.dir;
                    tracing::warn!(%dir, error = %e, "cannot rescan config dir; keeping the last good state");
                    None
                }
            };
        }
        if paths.is_empty() {
            return None;
        }
        let targets: BTreeSet<PathBuf> =
            paths.iter().filter_map(|p| self.source.target(p)).collect();
        Some(self.source.refresh(&targets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange};

    fn ev(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(path.into())
    }

    #[test]
    fn complete_writes_are_due_at_once_partial_ones_after_a_bounded_quiet() {
        let cfg = WatchConfig::new(Duration::from_secs(30));
        let mut inbox = Inbox::default();
        let t0 = Instant::now();
        inbox.add(ev(EventKind::Create(CreateKind::File), "/d/a.yaml"));
        inbox.add(ev(
            EventKind::Modify(ModifyKind::Data(DataChange::Content)),
            "/d/b.yaml",
        ));
        let (now, next) = inbox.take_due(&cfg, Instant::now());
        assert_eq!(now, BTreeSet::from([PathBuf::from("/d/a.yaml")]));
        assert!(next.is_some_and(|n| n >= t0 + cfg.debounce));
        // A writer that never stops: due no later than max_delay after its first write.
        let first = inbox.paths[Path::new("/d/b.yaml")].first;
        inbox.paths.get_mut(Path::new("/d/b.yaml")).unwrap().last = first + cfg.max_delay;
        let (due, _) = inbox.take_due(&cfg, first + cfg.max_delay);
        assert_eq!(due, BTreeSet::from([PathBuf::from("/d/b.yaml")]));
    }
}
