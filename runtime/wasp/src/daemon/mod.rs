//! The sync loop: store → resolve → diff → plan → apply, at most every `min-sync-period` and
//! at least every `sync-period` as a full resync that repairs drift.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use wasp_dataplane::{Dataplane, SyncRequest};
use wasp_resolve::{Allocator, NodePortAddresses, ObjectStore, ResolveConfig, Resolver};
use wasp_source::{Batch, ErrorLog, SourceEvent};

use crate::healthcheck::ServiceHealth;
use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::options::Settings;
use crate::planning::Planning;

mod report;

use report::release_free_memory;

/// Everything the loop owns.
struct Daemon {
    store: ObjectStore,
    log: ErrorLog,
    alloc: Allocator,
    resolve: ResolveConfig,
    planning: Planning,
    dataplane: Box<dyn Dataplane>,
    /// The resolved state, brought up to date with what changed at each sync; its pending
    /// changes are committed once the dataplane has programmed them.
    resolver: Resolver,
    /// Whether any port was programmed.
    programmed: bool,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    pending: i64,
    needs_full: bool,
    resolve_errors: Vec<wasp_resolve::ConfigError>,
    /// Sources that are failing, with what is wrong and since when.
    source_problems: BTreeMap<String, (String, SystemTime)>,
    /// The health check node port servers, and the ports they could not bind.
    service_health: ServiceHealth,
    health_errors: Vec<String>,
    /// What the node's addresses are re-read from at each full resync.
    settings: Settings,
    /// The active health checks, and the channel they wake the loop on.
    checker: crate::checks::Checker,
    checks_changed: mpsc::Receiver<()>,
    /// The DNS responder, when on.
    dns: Option<crate::dns::Dns>,
    /// `/status` asks here for `wasp status`'s JSON.
    status_requests: mpsc::Receiver<tokio::sync::oneshot::Sender<String>>,
    /// When the last sync finished (RFC 3339), for `wasp status`.
    last_sync: Option<String>,
    /// The resolver's health check version the checker last saw.
    checks_seen: u64,
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
/// Fails when the source cannot start, the HTTP addresses cannot be bound, or the mode cannot
/// run on this kernel; each before anything touches the kernel.
pub async fn run(s: Settings) -> anyhow::Result<()> {
    report::keep_large_blocks_mapped();
    let (listeners, mut rx, dataplane) = prepare(&s).await?;
    let dns = match &s.dns {
        Some(d) => Some(crate::dns::Dns::start(d.addr, d.upstreams.clone()).await?),
        None => None,
    };
    for what in
        wasp_dataplane::leftovers::remove_other_modes(dataplane.as_ref(), &s.render_config())
    {
        tracing::warn!("{what}");
    }
    let health = Arc::new(Health::new(s.sync_period * 2, s.errors_shown));
    let metrics = Arc::new(Metrics::default());
    for l in listeners {
        http::serve(l, health.clone(), metrics.clone());
    }
    for w in wasp_dataplane::sysctl::apply(&s.conntrack) {
        tracing::warn!(warning = %w, "conntrack setting not applied");
    }
    if localhost_node_ports(&s)
        && let Some(w) = wasp_dataplane::sysctl::route_localnet()
    {
        tracing::warn!(warning = %w, "sysctl not applied");
    }
    let (wake, checks_changed) = mpsc::channel(1);
    let checker = crate::checks::Checker::new(wake, metrics.checks.clone());
    let mut d = Daemon {
        store: s.store(),
        log: ErrorLog::default(),
        alloc: s.allocator(),
        resolve: s.resolve_config(),
        planning: Planning::new(s.planner()?),
        dataplane,
        resolver: Resolver::default(),
        programmed: false,
        health: Arc::clone(&health),
        metrics,
        pending: 0,
        needs_full: true,
        resolve_errors: Vec::new(),
        source_problems: BTreeMap::new(),
        service_health: ServiceHealth::new(Arc::clone(&health)),
        health_errors: Vec::new(),
        settings: s.clone(),
        checker,
        checks_changed,
        dns,
        status_requests: health.serve_status(),
        last_sync: None,
        checks_seen: u64::MAX,
    };
    if d.resolve.node_ips.is_empty() && matches!(s.source, crate::options::SourceKind::Files(_)) {
        tracing::warn!(
            "no node IP: neither --node-ip nor a default route gives one; node ports answer only \
             where nodePortAddresses says"
        );
    }
    d.connect_proxy();
    tracing::info!(mode = %s.mode, source = ?s.source, node = %d.resolve.node.name, "wasp starting");
    let mut stop = Stop::new()?;
    // No rules until the initial lists are in, as kube-proxy waits for its informers.
    loop {
        tokio::select! {
            _ = stop.requested() => return Ok(()),
            ev = rx.recv() => match ev {
                Some(SourceEvent::Synced) => break,
                Some(ev) => d.event(ev),
                None => anyhow::bail!("the source ended before it synced"),
            },
            Some(reply) = d.status_requests.recv() => {
                let _ = reply.send(d.status_json());
            }
        }
    }
    d.serve(&s, &mut rx, &mut stop).await?;
    d.hand_over();
    tracing::info!("wasp stopping; the rules stay in place");
    Ok(())
}

/// Whether node ports answer on 127.0.0.1: the iptables mode with every local address (or a
/// CIDR holding 127.0.0.1), as kube-proxy's `localhostNodePorts`.
fn localhost_node_ports(s: &Settings) -> bool {
    let lo = std::net::IpAddr::from([127, 0, 0, 1]);
    s.mode == wasp_dataplane::Mode::Iptables
        && match &s.node_port_addresses {
            NodePortAddresses::AllLocal => true,
            NodePortAddresses::Cidrs(c) => c.iter().any(|c| c.contains(&lo)),
            NodePortAddresses::Primary => s.node_ips.iter().any(|ip| ip.is_loopback()),
        }
}

/// What must work before the kernel is touched: the listeners, the source, the mode's probe.
async fn prepare(
    s: &Settings,
) -> anyhow::Result<(
    Vec<tokio::net::TcpListener>,
    mpsc::Receiver<SourceEvent>,
    Box<dyn Dataplane>,
)> {
    let beside = s.service_proxy_name.is_some();
    let healthz = "--healthz-bind-address, healthzBindAddress";
    let mut listeners = vec![http::bind(s.healthz_addr, healthz, beside).await?];
    if s.metrics_addr != s.healthz_addr {
        let metrics = "--metrics-bind-address, metricsBindAddress";
        listeners.push(http::bind(s.metrics_addr, metrics, beside).await?);
    }
    let rx = crate::source::start(s).await?;
    let mut dataplane = s.dataplane();
    dataplane.probe().map_err(|e| {
        let other = match s.mode {
            wasp_dataplane::Mode::Nftables => "; start with --mode iptables",
            _ => "",
        };
        let why: Vec<String> = anyhow::Error::from(e)
            .chain()
            .map(ToString::to_string)
            .collect();
        anyhow::anyhow!(
            "the {} mode cannot run on this host ({}){other}",
            s.mode,
            why.join(": ")
        )
    })?;
    Ok((listeners, rx, dataplane))
}

/// SIGTERM or SIGINT.
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stop {
    fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn requested(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

/// The plugins' `host.stats`, from the userspace proxy.
struct ProxyStats(wasp_proxy::Stats);

impl wasp_plugin::state::StatsSource for ProxyStats {
    fn stats(&self, port: &str, index: u32) -> (u32, u32) {
        self.0.endpoint(port, index)
    }
}

impl Daemon {
    /// In the userspace mode: per-connection picks go through the plugins, and the plugins
    /// see the proxy's live stats.
    fn connect_proxy(&mut self) {
        let Some(proxy) = self.dataplane.userspace_proxy() else {
            return;
        };
        proxy.set_picker(Arc::new(self.planning.picker()));
        self.metrics.userspace.follow(proxy.stats());
        let stats = Arc::new(ProxyStats(proxy.stats()));
        self.planning.planner().set_stats_source(stats);
    }

    /// Hands the data path to the kernel as the daemon stops (the userspace mode's DNAT
    /// takeover), from the last state programmed; nothing when no port was programmed.
    fn hand_over(&mut self) {
        if !self.programmed {
            return;
        }
        let state = self.resolver.state();
        let req = SyncRequest {
            state,
            previous: state,
            selections: self.planning.selections(),
            diff: None,
        };
        if let Err(e) = tokio::task::block_in_place(|| self.dataplane.stop(req)) {
            tracing::warn!(error = %format!("{:#}", anyhow::Error::from(e)), "cannot hand the data path to the kernel");
        }
    }

    /// The sync loop: a partial sync at most every `min-sync-period` once something changed
    /// (at once after a quiet period), a full one every `sync-period`; failures back off.
    async fn serve(
        &mut self,
        s: &Settings,
        rx: &mut mpsc::Receiver<SourceEvent>,
        stop: &mut Stop,
    ) -> anyhow::Result<()> {
        // Syncs block (kernel tools, plugin calls; wasmtime-wasi drives its own futures), so
        // they run with the worker handed over to blocking.
        tokio::task::block_in_place(|| self.sync(true));
        let mut last_sync = Instant::now();
        let mut last_full = Instant::now();
        let mut retry = s.min_sync_period;
        loop {
            let full_due = last_full + s.sync_period;
            let partial_due = last_sync + retry;
            let mut due = if self.pending > 0 || self.needs_full {
                partial_due.min(full_due)
            } else {
                full_due
            };
            // A plugin due to be re-created (or a changed .wasm file) wakes the loop, so its
            // ports leave the fallback.
            if let Some(t) = self.planning.planner().next_retry() {
                due = due.min(t.max(partial_due));
            }
            tokio::select! {
                _ = stop.requested() => return Ok(()),
                ev = rx.recv() => match ev {
                    Some(ev) => self.event(ev),
                    None => anyhow::bail!("the source ended"),
                },
                Some(reply) = self.status_requests.recv() => {
                    let _ = reply.send(self.status_json());
                }
                Some(()) = self.checks_changed.recv() => {
                    // An endpoint's health turned: one more change for the next sync.
                    self.pending += 1;
                    self.health.queued();
                }
                _ = tokio::time::sleep_until(due.into()) => {
                    let full = self.needs_full || Instant::now() >= full_due;
                    let ok = tokio::task::block_in_place(|| self.sync(full));
                    last_sync = Instant::now();
                    if full && ok {
                        last_full = last_sync;
                    }
                    // Back off on failure, up to the sync period.
                    retry = if ok { s.min_sync_period } else { (retry * 2).min(s.sync_period) };
                }
            }
        }
    }

    fn event(&mut self, ev: SourceEvent) {
        match ev {
            SourceEvent::Batches(b) => self.receive(b),
            SourceEvent::Synced => {}
            SourceEvent::Health {
                source,
                problem: Some(p),
            } => {
                self.source_problems
                    .entry(source)
                    .or_insert((p, SystemTime::now()));
                self.report_errors();
            }
            SourceEvent::Health {
                source,
                problem: None,
            } => {
                self.source_problems.remove(&source);
                self.report_errors();
            }
        }
    }

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
        self.resolve(full);
        let state = self.resolver.state();
        let (mut diff, previous) = self.resolver.changes();
        let (service_changes, endpoint_changes) = (
            diff.service_changed.len() + diff.removed.len(),
            diff.changed.len() - diff.service_changed.len(),
        );
        // Ports whose plugin came back, or whose .wasm changed, are planned (and so rewritten)
        // again even though the model did not change.
        self.planning.replans(state, &mut diff);
        if !full && diff.is_empty() {
            self.done(&diff, &previous, false);
            self.resolver.commit();
            return true;
        }
        self.planning.update(state, &diff);
        self.report_plugins();
        let req = SyncRequest {
            state,
            previous: &previous,
            selections: self.planning.selections(),
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
                self.metrics.service_changes.inc_by(service_changes as u64);
                self.metrics
                    .endpoint_changes
                    .inc_by(endpoint_changes as u64);
                tracing::info!(
                    full = report.full,
                    ports = state.ports.len(),
                    changed = diff.changed.len(),
                    removed = diff.removed.len(),
                    rules = report.rules,
                    ms = secs * 1000.0,
                    errors = self.log.len() + self.resolve_errors.len(),
                    "synced"
                );
                self.needs_full = false;
                self.programmed = true;
                self.done(&diff, &previous, full);
                self.resolver.commit();
                if full {
                    release_free_memory();
                }
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

    /// Brings the resolved state up to date: everything on a full sync, else what the
    /// store's changes and the health checks' verdicts can affect.
    fn resolve(&mut self, full: bool) {
        if full {
            // Addresses come and go (DHCP, a new interface); a full resync picks them up.
            self.resolve = self.settings.resolve_config();
        }
        self.resolve.unhealthy = self.checker.unhealthy();
        self.health.set_node_eligible(wasp_resolve::node_eligible(
            &self.store,
            &self.resolve.node.name,
        ));
        let changes = self.store.take_changes();
        let before = self.resolver.resolved().len();
        if full {
            self.resolver
                .full(&self.store, &mut self.alloc, &self.resolve);
        } else {
            self.resolver
                .update(&self.store, changes, &mut self.alloc, &self.resolve);
        }
        let resolved = self.resolver.resolved().len().saturating_sub(before);
        self.metrics.services_resolved.inc_by(resolved as u64);
        let resolve_errors = self.resolver.errors();
        for e in resolve_errors
            .iter()
            .filter(|e| !self.resolve_errors.contains(e))
        {
            tracing::warn!(error = %e, "config error");
        }
        self.resolve_errors = resolve_errors;
        self.report_errors();
    }
}
