//! Active health checks of hand-written endpoints (`wasp.dev/health-check`), off the sync
//! loop, on a thread of their own: one task per endpoint, started at a random point of its
//! interval (so 10,000 endpoints do not probe at once), at most [`CONCURRENT`] probes in
//! flight. An endpoint turns unhealthy after the unhealthy threshold of failures in a row and
//! healthy again after the healthy threshold of successes; each turn wakes the sync loop, whose
//! next (partial) sync resolves with the new set of unhealthy endpoints.
//!
//! A TCP check is a half-open handshake from a raw socket where the daemon may open one
//! (`checks/syn.rs`: all of them from one task, the sweep), and a connect where it may not.

mod syn;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use wasp_model::{HealthCheck, HealthProbe};

/// The most probes in flight at once.
pub const CONCURRENT: usize = 64;

/// The grid probes are scheduled on.
const TICK: std::time::Duration = std::time::Duration::from_millis(20);

/// `wasp_endpoint_health_checks_total`'s label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `healthy` or `unhealthy`.
    pub result: String,
}

/// The checker's metrics.
#[derive(Debug, Clone, Default)]
pub struct CheckMetrics {
    /// Probes by result.
    pub checks: Family<ResultLabel, Counter>,
    /// Endpoints unhealthy now.
    pub unhealthy: Gauge,
}

/// What the probe tasks share.
struct Shared {
    /// Unhealthy endpoints, with the last failure.
    unhealthy: Mutex<HashMap<SocketAddr, String>>,
    permits: Semaphore,
    /// Disconnected sockets for TCP probes, IPv4 and IPv6, at most [`CONCURRENT`] each.
    idle: Mutex<[Vec<std::net::TcpStream>; 2]>,
    wake: mpsc::Sender<()>,
    metrics: CheckMetrics,
    /// Probes by result, from `metrics`.
    passed: Counter,
    failed: Counter,
}

/// The running checks.
pub struct Checker {
    shared: Arc<Shared>,
    /// Endpoints probed by a task of their own: HTTP checks, and TCP checks where there is
    /// no raw socket.
    tasks: HashMap<SocketAddr, (HealthCheck, AbortHandle)>,
    /// The sweep of TCP checks, open while there are any.
    syn: Syn,
    /// The endpoints the sweep probes.
    swept: HashMap<SocketAddr, HealthCheck>,
    /// Where the probes run.
    runtime: tokio::runtime::Handle,
    /// Dropped, it ends the probes' thread.
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Checker {
    /// A checker with no endpoints; `wake` hears of every change of an endpoint's health.
    ///
    /// The probes run on a thread of their own, a single-threaded runtime: on the daemon's
    /// runtime, each wake-up could land on the other worker (10,000 endpoints: 9.1 % of a core
    /// there, 7.0–7.5 % on their own thread, 5.9–6.3 % with sockets kept from probe to probe,
    /// 2.6–2.9 % as half-open handshakes from the sweep, all with loopback endpoints). Should
    /// that thread not start, they run on the current runtime.
    pub fn new(wake: mpsc::Sender<()>, metrics: CheckMetrics) -> Self {
        let (runtime, stop) = match own_runtime() {
            Ok((handle, stop)) => (handle, Some(stop)),
            Err(e) => {
                tracing::warn!(error = %e, "health checks run on the daemon's runtime");
                (tokio::runtime::Handle::current(), None)
            }
        };
        Self {
            shared: Arc::new(Shared::new(wake, metrics)),
            tasks: HashMap::new(),
            syn: Syn::Closed,
            swept: HashMap::new(),
            runtime,
            _stop: stop,
        }
    }

    /// Probes exactly `targets` from now on: new endpoints start (healthy until proven
    /// otherwise), gone ones stop and are forgotten, a changed check starts over.
    pub fn update(&mut self, targets: &BTreeMap<SocketAddr, HealthCheck>) {
        let tcp = targets.values().any(|c| c.probe == HealthProbe::Tcp);
        let sweep = self.syn.follow(tcp, &self.runtime, &self.shared);
        let swept = |addr: &SocketAddr, check: &HealthCheck| {
            check.probe == HealthProbe::Tcp && sweep.is_some_and(|s| s.covers(*addr))
        };
        self.tasks.retain(|addr, (check, task)| {
            let keep = targets.get(addr) == Some(check) && !swept(addr, check);
            if !keep {
                task.abort();
            }
            keep
        });
        self.swept.retain(|addr, check| {
            let keep = targets.get(addr) == Some(check) && swept(addr, check);
            if let (false, Some(s)) = (keep, sweep) {
                s.forget(*addr);
            }
            keep
        });
        {
            let mut bad = self
                .shared
                .unhealthy
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Only an endpoint whose check goes on unchanged stays unhealthy.
            bad.retain(|addr, _| self.tasks.contains_key(addr) || self.swept.contains_key(addr));
            self.shared.metrics.unhealthy.set(bad.len() as i64);
        }
        for (addr, check) in targets {
            if self.tasks.contains_key(addr) || self.swept.contains_key(addr) {
                continue;
            }
            if let Some(s) = sweep.filter(|_| swept(addr, check)) {
                s.watch(*addr, check.clone());
                self.swept.insert(*addr, check.clone());
                continue;
            }
            let task = self
                .runtime
                .spawn(watch(*addr, check.clone(), Arc::clone(&self.shared)));
            self.tasks
                .insert(*addr, (check.clone(), task.abort_handle()));
        }
    }

    /// The endpoints unhealthy now.
    pub fn unhealthy(&self) -> HashSet<SocketAddr> {
        let bad = self
            .shared
            .unhealthy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        bad.keys().copied().collect()
    }

    /// One line per unhealthy endpoint, for `/healthz`.
    pub fn report(&self) -> Vec<String> {
        let bad = self
            .shared
            .unhealthy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut lines: Vec<String> = bad
            .iter()
            .map(|(addr, why)| format!("endpoint {addr} is unhealthy: {why}"))
            .collect();
        lines.sort();
        lines
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

/// Whether TCP checks have their sweep.
enum Syn {
    /// No TCP checks, or not yet tried.
    Closed,
    Open(syn::Sweep),
    /// Opening failed (no `CAP_NET_RAW`): TCP checks connect, and it is not tried again.
    Unavailable,
}

impl Syn {
    /// Starts the sweep when TCP checks start, ends it when the last one ends, and returns it.
    fn follow(
        &mut self,
        tcp: bool,
        runtime: &tokio::runtime::Handle,
        shared: &Arc<Shared>,
    ) -> Option<&syn::Sweep> {
        match (tcp, &*self) {
            (true, Self::Closed) => {
                let _enter = runtime.enter();
                *self = match syn::Sweep::start(Arc::clone(shared)) {
                    Ok(s) => Self::Open(s),
                    Err(e) => {
                        tracing::info!(error = %e, "TCP health checks connect: no raw socket for half-open probes");
                        Self::Unavailable
                    }
                };
            }
            (false, Self::Open(_)) => *self = Self::Closed,
            _ => {}
        }
        match self {
            Self::Open(s) => Some(s),
            _ => None,
        }
    }
}

/// A single-threaded runtime on a thread of its own, which runs until the sender is dropped.
fn own_runtime() -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (handle, (stop, stopped)) = (rt.handle().clone(), tokio::sync::oneshot::channel::<()>());
    std::thread::Builder::new()
        .name("wasp-checks".into())
        .spawn(move || {
            rt.block_on(async {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, stop))
}

/// Probes one endpoint forever, turning it unhealthy and healthy by the thresholds.
async fn watch(addr: SocketAddr, check: HealthCheck, sh: Arc<Shared>) {
    // Probes fall on a shared grid of TICK steps, so those due together wake the runtime
    // once: waking per probe cost 15 % of a core at 10,000 endpoints, on a 20 ms grid 10 %
    // (a 100 ms grid bursts 200 connects at once, and some fail).
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    let ticks = (check.interval.as_millis() / TICK.as_millis()).max(1) as u32;
    let slot = (fraction(addr) * f64::from(ticks)) as u32;
    let mut due = epoch + TICK * slot;
    while due < tokio::time::Instant::now() {
        due += TICK * ticks;
    }
    let mut streak = Streak::default();
    tokio::time::sleep_until(due).await;
    due += TICK * ticks;
    loop {
        let result = {
            let _permit = sh.permits.acquire().await;
            probe(addr, &check, &sh).await
        };
        streak.record(addr, &check, result, &sh);
        tokio::time::sleep_until(due).await;
        due += TICK * ticks;
        // After a stall (a slow probe), skip the missed slots rather than probe in a burst.
        while due < tokio::time::Instant::now() {
            due += TICK * ticks;
        }
    }
}

/// An endpoint's probes in a row, and whether they have made it unhealthy.
struct Streak {
    successes: u32,
    failures: u32,
    healthy: bool,
}

impl Default for Streak {
    fn default() -> Self {
        Self {
            successes: 0,
            failures: 0,
            healthy: true,
        }
    }
}

impl Streak {
    /// Healthy, with no failure in a row: one more success changes nothing.
    fn steady(&self) -> bool {
        self.healthy && self.failures == 0
    }

    /// Counts one probe of `addr`, and turns it unhealthy or healthy by the thresholds.
    fn record(
        &mut self,
        addr: SocketAddr,
        check: &HealthCheck,
        result: Result<(), String>,
        sh: &Shared,
    ) {
        if result.is_ok() {
            &sh.passed
        } else {
            &sh.failed
        }
        .inc();
        match result {
            Ok(()) => (self.successes, self.failures) = (self.successes + 1, 0),
            Err(why) => {
                (self.successes, self.failures) = (0, self.failures + 1);
                if self.healthy && self.failures >= check.unhealthy_threshold {
                    self.healthy = false;
                    let failures = self.failures;
                    tracing::warn!(endpoint = %addr, reason = %why, failures, "endpoint unhealthy: it gets no new connections");
                    sh.set(addr, Some(why));
                }
            }
        }
        if !self.healthy && self.successes >= check.healthy_threshold {
            self.healthy = true;
            tracing::info!(endpoint = %addr, successes = self.successes, "endpoint healthy again");
            sh.set(addr, None);
        }
    }
}

impl Shared {
    fn new(wake: mpsc::Sender<()>, metrics: CheckMetrics) -> Self {
        let counter = |result: &str| {
            metrics
                .checks
                .get_or_create(&ResultLabel {
                    result: result.into(),
                })
                .clone()
        };
        Self {
            unhealthy: Mutex::new(HashMap::new()),
            permits: Semaphore::new(CONCURRENT),
            idle: Mutex::default(),
            wake,
            passed: counter("healthy"),
            failed: counter("unhealthy"),
            metrics,
        }
    }

    /// Records `addr` unhealthy (with why) or healthy, and wakes the sync loop.
    fn set(&self, addr: SocketAddr, why: Option<String>) {
        let mut bad = self
            .unhealthy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match why {
            Some(why) => bad.insert(addr, why),
            None => bad.remove(&addr),
        };
        self.metrics.unhealthy.set(bad.len() as i64);
        // A full channel already holds a wake-up.
        let _ = self.wake.try_send(());
    }
}

/// Where in its interval an endpoint's probes fall: a fraction from its address, so probes
/// spread evenly and an endpoint keeps its slot.
fn fraction(addr: SocketAddr) -> f64 {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    addr.hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}

/// One probe by connecting: `Err` says what failed.
async fn probe(addr: SocketAddr, check: &HealthCheck, sh: &Shared) -> Result<(), String> {
    let HealthProbe::Http(path) = &check.probe else {
        return match tokio::time::timeout(check.timeout, connect_probe(addr, sh)).await {
            Ok(r) => r.map_err(|e| format!("connect: {e}")),
            Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        };
    };
    let attempt = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Closed with a reset: no FIN exchange, and no TIME_WAIT left per probe.
        let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
        let req =
            format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: wasp-health-check\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut head = vec![0u8; 64];
        let n = s.read(&mut head).await.map_err(|e| format!("read: {e}"))?;
        let line = String::from_utf8_lossy(&head[..n]);
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                format!(
                    "not an HTTP answer: {:?}",
                    line.lines().next().unwrap_or("")
                )
            })?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(format!("GET {path}: HTTP {status}"))
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}

/// A TCP check: a connect to `addr` that completes, then a reset. The socket is kept for
/// the next probe (a `connect` to `AF_UNSPEC` resets and disconnects it), which spares the
/// kernel a socket's making and closing per probe; one that failed or timed out is closed
/// instead. It is registered with the runtime only while its connect is in flight (an
/// unconnected socket reports a hang-up, which the runtime would remember for good), and
/// not at all when the handshake is done as `connect` returns.
async fn connect_probe(addr: SocketAddr, sh: &Shared) -> std::io::Result<()> {
    let family = usize::from(addr.is_ipv6());
    let taken = sh.idle.lock().unwrap_or_else(PoisonError::into_inner)[family].pop();
    let sock = match taken {
        Some(s) => s,
        None => {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            s.set_cloexec(true)?;
            s.into()
        }
    };
    let sock = match socket2::SockRef::from(&sock).connect(&addr.into()) {
        Ok(()) => sock,
        // To a nearby endpoint (loopback, a veth) the handshake is often done by the time
        // `connect` returns: no need to wait for the runtime then.
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) && sock.peer_addr().is_ok() => {
            sock
        }
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {
            let stream = TcpStream::from_std(sock)?;
            // A connecting socket turns writable once it is connected, or failed.
            stream.writable().await?;
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
            if stream.peer_addr().is_err() {
                return Err(std::io::Error::other("closed as it connected"));
            }
            stream.into_std()?
        }
        Err(e) => return Err(e),
    };
    disconnect(&sock)?;
    let mut idle = sh.idle.lock().unwrap_or_else(PoisonError::into_inner);
    if idle[family].len() < CONCURRENT {
        idle[family].push(sock);
    }
    Ok(())
}

/// Resets a connected socket and leaves it unconnected, ready for another `connect`.
fn disconnect(s: &std::net::TcpStream) -> std::io::Result<()> {
    let unspec = nix::libc::sockaddr {
        sa_family: nix::libc::AF_UNSPEC as nix::libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: `unspec` is a valid sockaddr of the size passed, and `s` an open socket.
    #[allow(unsafe_code)]
    let r = unsafe {
        nix::libc::connect(
            s.as_raw_fd(),
            &raw const unspec,
            std::mem::size_of::<nix::libc::sockaddr>() as nix::libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(mpsc::channel(1).0, CheckMetrics::default())
    }

    fn idle(sh: &Shared) -> usize {
        sh.idle.lock().unwrap()[0].len()
    }

    #[test]
    fn without_a_raw_socket_tcp_checks_connect_from_tasks_of_their_own() {
        let mut checker = Checker::new(mpsc::channel(8).0, CheckMetrics::default());
        // As in a daemon without CAP_NET_RAW.
        checker.syn = Syn::Unavailable;
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let check = HealthCheck {
            probe: HealthProbe::Tcp,
            interval: std::time::Duration::from_millis(100),
            timeout: std::time::Duration::from_millis(500),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        };
        let targets =
            BTreeMap::from([(open.local_addr().unwrap(), check.clone()), (closed, check)]);
        checker.update(&targets);
        assert!(checker.swept.is_empty());
        assert_eq!(checker.tasks.len(), 2);
        let start = std::time::Instant::now();
        while checker.unhealthy().is_empty() && start.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(checker.unhealthy(), HashSet::from([closed]));
        let report = checker.report().join("\n");
        assert!(report.contains("connect: Connection refused"), "{report}");
        // The same targets again change nothing; none stop every check, and forget them.
        checker.update(&targets);
        assert_eq!(checker.tasks.len(), 2);
        assert_eq!(checker.unhealthy().len(), 1);
        checker.update(&BTreeMap::new());
        assert!(checker.tasks.is_empty() && checker.unhealthy().is_empty());
    }

    #[tokio::test]
    async fn a_tcp_probe_reuses_its_socket_and_a_refused_one_is_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap();
        let sh = shared();
        for i in 0..5 {
            connect_probe(up, &sh)
                .await
                .unwrap_or_else(|e| panic!("probe {i} to a listener: {e}"));
            assert_eq!(idle(&sh), 1, "one socket serves probe after probe");
        }
        drop(listener);
        let e = connect_probe(up, &sh)
            .await
            .expect_err("nothing listens any more");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert_eq!(idle(&sh), 0, "a socket whose connect failed is not kept");
    }
}
