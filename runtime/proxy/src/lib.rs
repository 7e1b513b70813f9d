//! wasp's userspace L4 proxy: the data path of the userspace mode.
//!
//! The mode's nftables rules redirect each TCP connection and UDP flow to a service port
//! that has endpoints to the proxy's sockets ([`ProxyConfig::port`], one TCP listener and one
//! UDP socket per family); the proxy reads where it was going (`SO_ORIGINAL_DST` for TCP,
//! conntrack for UDP), finds the service port in its [`update`]d table, and picks an
//! endpoint per connection (per UDP session, keyed by the client's address):
//! - ClientIP affinity first, then the plugin's own pick when its Selection asks for one
//!   (`PerConnection`, through a [`Picker`]), else the Selection: a hashed table slot for slot,
//!   or the weights;
//! - a refused, unreachable or timed-out connect tries another endpoint, up to
//!   [`ProxyConfig::connect_attempts`]; the failing endpoint is skipped for
//!   [`ProxyConfig::backoff`] (passive health) and its failures are counted
//!   ([`Stats::endpoint`], the stats plugins see, and [`Counters`]);
//! - bytes move with `splice(2)` both ways, with half-close and an idle timeout;
//! - an endpoint that leaves the table drains: its connections go on until they end or
//!   [`ProxyConfig::drain_timeout`] passes;
//! - where the kernel modes would not masquerade, the upstream connection keeps the client's
//!   address (a transparent socket; the mode's rules route the replies back to it);
//! - UDP replies leave from the redirected address, so the client sees them come from the
//!   Service's; sessions end after [`ProxyConfig::udp_idle_timeout`].
//!
//! The proxy runs on its own threads, so a long sync never delays a connection and a burst
//! of connections never delays a sync.
//!
//! [`update`]: Proxy::update

mod conntrack;
mod endpoint;
mod pick;
mod splice;
mod table;
mod tcp;
mod udp;

pub use udp::socket_addr;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use socket2::{Domain, Socket, Type};
use tokio::sync::Semaphore;
use wasp_model::{ProxyState, Selection, ServicePortName};

use endpoint::Endpoints;
use table::{Route, Table};

/// When a connection (or a UDP session) last moved a byte either way: its idle timeout.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// How the proxy behaves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The listeners' port, on every address of each family.
    pub port: u16,
    /// How long one connect to an endpoint may take.
    pub connect_timeout: Duration,
    /// How many endpoints one connection tries.
    pub connect_attempts: u32,
    /// How long an endpoint whose connect failed is skipped.
    pub backoff: Duration,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// A UDP session with no datagram either way for this long ends.
    pub udp_idle_timeout: Duration,
    /// How long connections to a removed endpoint may go on.
    pub drain_timeout: Duration,
    /// The most connections held at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// The pod CIDRs: their clients reach every endpoint of a Local-policy Service, and keep
    /// their address to cluster IPs.
    pub cluster_cidrs: Vec<IpNet>,
    /// Connections to cluster IPs never keep the client's address (`--masquerade-all`).
    pub masquerade_all: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            port: 15001,
            connect_timeout: Duration::from_secs(1),
            connect_attempts: 3,
            backoff: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(3600),
            udp_idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(60),
            max_connections: 100_000,
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
        }
    }
}

/// Picks an endpoint per connection for ports whose Selection is `PerConnection`.
pub trait Picker: Send + Sync {
    /// The index (into the port's endpoints) for a new connection from `client`; `None` to
    /// use the Selection's fallback weights.
    fn pick(&self, port: &ServicePortName, client: SocketAddr) -> Option<u32>;
}

/// One counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Its value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the proxy did since it started, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections proxied to an endpoint.
    pub connections: Counter,
    /// Connects to an endpoint that failed (each attempt).
    pub connect_failures: Counter,
    /// Connections reset because every attempt failed.
    pub exhausted: Counter,
    /// Connections whose original destination is no captured service port.
    pub unrouted: Counter,
    /// Connections closed by a drain timeout.
    pub drained: Counter,
    /// Connections open now.
    pub active: Counter,
}

/// What the listener tasks share with the handle.
pub(crate) struct Shared {
    cfg: ProxyConfig,
    table: RwLock<Arc<Table>>,
    endpoints: Endpoints,
    /// ClientIP affinity: (port id, client) → the endpoint and when the entry expires.
    affinity: Mutex<HashMap<(u64, IpAddr), (SocketAddr, Instant)>>,
    picker: RwLock<Option<Arc<dyn Picker>>>,
    permits: Arc<Semaphore>,
    counters: Counters,
}

impl Shared {
    fn table(&self) -> Arc<Table> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The endpoint `client` is bound to on port `id`, if its affinity has not expired.
    fn affine(&self, id: u64, client: IpAddr) -> Option<SocketAddr> {
        let map = self.affinity.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(id, client))
            .filter(|(_, until)| *until > Instant::now())
            .map(|(addr, _)| *addr)
    }

    /// Binds `client` to `addr` for the port's affinity timeout (from now: each connection
    /// renews it, as the kernel's affinity sets do).
    fn remember(&self, route: &Route, client: SocketAddr, addr: SocketAddr) {
        let Some(timeout) = route.target.affinity else {
            return;
        };
        let mut map = self.affinity.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(
            (route.target.id, client.ip()),
            (addr, Instant::now() + timeout),
        );
    }

    fn plugin_pick(&self, port: &ServicePortName, client: SocketAddr) -> Option<u32> {
        let picker = self
            .picker
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        picker.pick(port, client)
    }
}

/// The proxy's live per-endpoint stats; cheap to clone, valid while the proxy runs.
#[derive(Clone)]
pub struct Stats(Arc<Shared>);

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stats")
    }
}

impl Stats {
    /// What the proxy did since it started.
    pub fn counters(&self) -> &Counters {
        &self.0.counters
    }

    /// Open connections and recent failed connects (since the last connect that worked) of
    /// endpoint `index` of port `port` (as `ServicePortName` displays it).
    pub fn endpoint(&self, port: &str, index: u32) -> (u32, u32) {
        let table = self.0.table();
        let Some(t) = table.target(port) else {
            return (0, 0);
        };
        t.endpoints
            .get(index as usize)
            .and_then(|addr| self.0.endpoints.find(t.id, *addr))
            .map_or((0, 0), |s| s.stats())
    }
}

/// The running proxy: dropping it stops its listeners and closes its connections.
pub struct Proxy {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.shared.cfg.port)
            .finish_non_exhaustive()
    }
}

/// The sockets of one family: TCP listening, UDP receiving with each datagram's
/// (redirected) destination. IPv6 sockets are IPv6 only.
fn sockets(addr: SocketAddr) -> io::Result<(std::net::TcpListener, std::net::UdpSocket)> {
    let tcp = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    let udp = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    for s in [&tcp, &udp] {
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
    }
    tcp.listen(4096)?;
    if addr.is_ipv4() {
        nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::Ipv4OrigDstAddr, &true)?;
    } else {
        nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::Ipv6OrigDstAddr, &true)?;
    }
    Ok((tcp.into(), udp.into()))
}

/// Raises the open-file limit to its hard limit: each connection holds two sockets and two
/// pipes.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, "userspace proxy: the open-file limit stays");
    }
}

impl Proxy {
    /// Binds the listeners (IPv4; IPv6 too where the host has it) and starts serving on the
    /// proxy's own threads, with an empty table until the first [`update`](Self::update).
    ///
    /// # Errors
    /// Fails when the IPv4 listener cannot be bound (the port is taken) or the threads
    /// cannot start.
    pub fn start(cfg: ProxyConfig) -> io::Result<Self> {
        raise_nofile();
        let v4 = sockets(SocketAddr::from(([0, 0, 0, 0], cfg.port)))
            .map_err(|e| io::Error::new(e.kind(), format!("0.0.0.0:{}: {e}", cfg.port)))?;
        let v6 = sockets(SocketAddr::from(([0u16; 8], cfg.port)))
            .inspect_err(|e| tracing::warn!(error = %e, port = cfg.port, "userspace proxy: no IPv6 listener"))
            .ok();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wasp-proxy")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            permits: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
            cfg,
            table: RwLock::new(Arc::new(Table::default())),
            endpoints: Endpoints::default(),
            affinity: Mutex::new(HashMap::new()),
            picker: RwLock::new(None),
            counters: Counters::default(),
        });
        let _guard = runtime.enter();
        for (tcp, udp) in std::iter::once(v4).chain(v6) {
            let tcp = tokio::net::TcpListener::from_std(tcp)?;
            let udp = tokio::net::UdpSocket::from_std(udp)?;
            runtime.spawn(tcp::serve(tcp, Arc::clone(&shared)));
            runtime.spawn(udp::serve(udp, Arc::clone(&shared)));
        }
        drop(_guard);
        Ok(Self {
            shared,
            runtime: Some(runtime),
        })
    }

    /// Serves `state` from now on, each port spread as `selections` say; endpoints that left
    /// start draining.
    pub fn update(&self, state: &ProxyState, selections: &BTreeMap<ServicePortName, Selection>) {
        let sh = &self.shared;
        let c = &sh.cfg;
        let table = Table::build(
            state,
            selections,
            &c.cluster_cidrs,
            c.masquerade_all,
            local_addresses(),
        );
        let live = table.endpoints();
        *sh.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
        if let Some(rt) = &self.runtime {
            for timer in sh.endpoints.update(&live, sh.cfg.drain_timeout) {
                rt.spawn(timer);
            }
        }
        let now = Instant::now();
        sh.affinity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, (_, until)| *until > now);
    }

    /// Sets what picks for `PerConnection` ports.
    pub fn set_picker(&self, picker: Arc<dyn Picker>) {
        *self
            .shared
            .picker
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(picker);
    }

    /// A handle on the live endpoint stats, for the plugins' `host.stats`.
    pub fn stats(&self) -> Stats {
        Stats(Arc::clone(&self.shared))
    }

    /// What the proxy did since it started.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The number of captured addresses the table holds.
    pub fn captured(&self) -> usize {
        self.shared.table().len()
    }

    /// The listeners' port.
    pub fn port(&self) -> u16 {
        self.shared.cfg.port
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// This node's addresses: node ports answer on them.
fn local_addresses() -> HashSet<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return HashSet::new();
    };
    addrs
        .filter_map(|a| {
            let s = a.address?;
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect()
}
