//! The sync loop: store → resolve → diff → plan → apply, at most every `min-sync-period` and
//! at least every `sync-period` as a full resync that repairs drift.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{SignalKind, signal};
use wasp_dataplane::{Dataplane, SyncRequest};
use wasp_model::{
    Allocator, EqualWeights, ObjectStore, Planner, ProxyState, ResolveConfig, Selection,
    ServicePortName, resolve,
};
use wasp_source::{Batch, ErrorLog, FileSource};

use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::options::ModelOptions;

/// The daemon's settings beyond the model's.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The longest time between full syncs.
    pub sync_period: Duration,
    /// The shortest time between syncs.
    pub min_sync_period: Duration,
    /// Where `/healthz` is served.
    pub healthz_addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
}

/// Everything the loop owns.
struct Daemon {
    store: ObjectStore,
    log: ErrorLog,
    alloc: Allocator,
    resolve: ResolveConfig,
    planner: Box<dyn Planner + Send>,
    selections: BTreeMap<ServicePortName, Selection>,
    dataplane: Box<dyn Dataplane>,
    synced: ProxyState,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    pending: i64,
    needs_full: bool,
    resolve_errors: Vec<wasp_model::ConfigError>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs the daemon until SIGTERM or SIGINT. The rules stay in place when it stops, so traffic
/// flows across a restart; the next start reconciles instead of flushing.
///
/// # Errors
/// Fails when the config dir cannot be watched or the HTTP addresses cannot be bound.
pub async fn run(
    mode: wasp_dataplane::Mode,
    opts: ModelOptions,
    cfg: DaemonConfig,
) -> anyhow::Result<()> {
    let health = Arc::new(Health::new(cfg.sync_period * 2));
    let metrics = Arc::new(Metrics::default());
    http::serve(cfg.healthz_addr, health.clone(), metrics.clone()).await?;
    if cfg.metrics_addr != cfg.healthz_addr {
        http::serve(cfg.metrics_addr, health.clone(), metrics.clone()).await?;
    }
    let mut rx = wasp_source::watch(
        FileSource::new(&opts.config_dir),
        Duration::from_millis(100),
        cfg.sync_period,
    )?;
    let mut d = Daemon {
        store: opts.store(),
        log: ErrorLog::default(),
        alloc: opts.allocator(),
        resolve: opts.resolve_config(),
        planner: Box::new(EqualWeights),
        selections: BTreeMap::new(),
        dataplane: opts.dataplane(mode),
        synced: ProxyState::default(),
        health,
        metrics,
        pending: 0,
        needs_full: true,
        resolve_errors: Vec::new(),
    };
    tracing::info!(%mode, dir = %opts.config_dir.display(), node = %d.resolve.node.name, "wasp starting");
    // No rules until the initial list is in, as kube-proxy waits for its informers.
    if let Some(initial) = rx.recv().await {
        d.receive(initial);
    }
    d.sync(true);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut last_sync = Instant::now();
    let mut last_full = Instant::now();
    let mut retry = cfg.min_sync_period;
    loop {
        let full_due = last_full + cfg.sync_period;
        let partial_due = last_sync + retry;
        let due = if d.pending > 0 || d.needs_full {
            partial_due.min(full_due)
        } else {
            full_due
        };
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            got = rx.recv() => match got {
                Some(b) => d.receive(b),
                None => anyhow::bail!("the config dir watch ended"),
            },
            _ = tokio::time::sleep_until(due.into()) => {
                let full = d.needs_full || Instant::now() >= full_due;
                let ok = d.sync(full);
                last_sync = Instant::now();
                if full && ok {
                    last_full = last_sync;
                }
                // Back off on failure, up to the sync period.
                retry = if ok { cfg.min_sync_period } else { (retry * 2).min(cfg.sync_period) };
            }
        }
    }
    tracing::info!("wasp stopping; the rules stay in place");
    Ok(())
}

impl Daemon {
    fn receive(&mut self, batches: Vec<Batch>) {
        let mut changed = false;
        for b in batches {
            let n = (b.applies.len() + b.deletes.len()) as i64;
            if b.apply_to(&mut self.store, &mut self.log) {
                changed = true;
                self.pending += n.max(1);
            }
        }
        self.report_errors();
        if changed {
            self.health.queued();
            self.metrics.changes_pending.set(self.pending);
            if self.metrics.last_queued_timestamp.get() == 0.0 {
                self.metrics.last_queued_timestamp.set(now_secs());
            }
        }
    }

    /// One sync; returns whether it succeeded.
    fn sync(&mut self, full: bool) -> bool {
        let start = Instant::now();
        let (state, resolve_errors) = resolve(&self.store, &mut self.alloc, &self.resolve);
        for e in resolve_errors
            .iter()
            .filter(|e| !self.resolve_errors.contains(e))
        {
            tracing::warn!(error = %e, "config error");
        }
        let errors = self.log.len() + resolve_errors.len();
        self.resolve_errors = resolve_errors;
        self.report_errors();
        let diff = self.synced.diff(&state);
        if !full && diff.is_empty() {
            self.done(&state);
            return true;
        }
        for name in &diff.removed {
            self.planner.forget(name);
            self.selections.remove(name);
        }
        let replan: Vec<&ServicePortName> = if full {
            state.ports.keys().collect()
        } else {
            diff.changed.iter().collect()
        };
        for name in replan {
            let sel = self.planner.plan(name, &state.ports[name]);
            self.selections.insert(name.clone(), sel);
        }
        let req = SyncRequest {
            state: &state,
            previous: &self.synced,
            selections: &self.selections,
            diff: if full { None } else { Some(&diff) },
        };
        match self.dataplane.sync(req) {
            Ok(report) => {
                let secs = start.elapsed().as_secs_f64();
                self.metrics.sync_duration.observe(secs);
                if report.full {
                    &self.metrics.full_sync_duration
                } else {
                    &self.metrics.partial_sync_duration
                }
                .observe(secs);
                self.metrics.rules_written.set(report.rules as i64);
                tracing::info!(
                    full = report.full,
                    ports = state.ports.len(),
                    changed = diff.changed.len(),
                    removed = diff.removed.len(),
                    rules = report.rules,
                    ms = secs * 1000.0,
                    errors,
                    "synced"
                );
                self.needs_full = false;
                self.done(&state);
                self.synced = state;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "sync failed; the previous rules stay in force, retrying");
                self.metrics.sync_failures.inc();
                self.needs_full = true;
                false
            }
        }
    }

    fn done(&mut self, state: &ProxyState) {
        self.pending = 0;
        self.metrics.changes_pending.set(0);
        self.metrics.last_queued_timestamp.set(0.0);
        self.metrics.last_sync_timestamp.set(now_secs());
        self.metrics.service_ports.set(state.ports.len() as i64);
        self.metrics.endpoints.set(state.endpoint_count() as i64);
        self.health.updated();
    }

    /// Shows the current configuration errors in /healthz.
    fn report_errors(&self) {
        let detail: Vec<String> = self
            .log
            .all()
            .chain(&self.resolve_errors)
            .map(|e| e.to_string())
            .collect();
        self.metrics.config_errors.set(detail.len() as i64);
        self.health.set_detail(detail.len(), detail);
    }
}
