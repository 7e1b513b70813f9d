//! What the proxy knows of each endpoint of each port: its open connections, its recent
//! failures (passive health), and whether it was removed and is draining.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// One endpoint of one port.
#[derive(Debug)]
pub(crate) struct EndpointState {
    active: AtomicU32,
    /// Failed connects since the last one that worked.
    failures: AtomicU32,
    /// Until when new connections skip the endpoint, after a failed connect.
    backoff_until: Mutex<Option<Instant>>,
    /// Not 0: the update that removed the endpoint (its drain timer's token).
    removed: AtomicU64,
    /// Becomes true when the drain timeout of a removal passes.
    drained: watch::Sender<bool>,
}

impl EndpointState {
    fn new() -> Self {
        Self {
            active: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            backoff_until: Mutex::new(None),
            removed: AtomicU64::new(0),
            drained: watch::Sender::new(false),
        }
    }

    /// Counts an open connection until the guard drops.
    pub fn open(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(Arc::clone(self))
    }

    /// Open connections and recent failures, as plugins see them.
    pub fn stats(&self) -> (u32, u32) {
        (
            self.active.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }

    /// A connect failed: skip the endpoint for `backoff`. Returns whether it was healthy.
    pub fn failed(&self, backoff: Duration) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut until = self
            .backoff_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let was_healthy = until.is_none_or(|t| t <= Instant::now());
        *until = Some(Instant::now() + backoff);
        was_healthy
    }

    /// A connect worked.
    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        *self
            .backoff_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// New connections skip the endpoint now.
    pub fn backing_off(&self, now: Instant) -> bool {
        self.backoff_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| t > now)
    }

    /// Resolves when a removal's drain timeout has passed.
    pub async fn drained(&self) {
        let mut rx = self.drained.subscribe();
        // An error means the sender is gone, which it cannot be while `self` lives.
        let _ = rx.wait_for(|d| *d).await;
    }
}

/// An open connection to an endpoint.
#[derive(Debug)]
pub(crate) struct Active(Arc<EndpointState>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every endpoint's state, by port id and address.
#[derive(Debug, Default)]
pub(crate) struct Endpoints {
    map: Mutex<HashMap<(u64, SocketAddr), Arc<EndpointState>>>,
    updates: AtomicU64,
}

impl Endpoints {
    /// The state of endpoint `addr` of port `id`, made on first use.
    pub fn get(&self, id: u64, addr: SocketAddr) -> Arc<EndpointState> {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry((id, addr))
                .or_insert_with(|| Arc::new(EndpointState::new())),
        )
    }

    /// The state of endpoint `addr` of port `id`, if it has one.
    pub fn find(&self, id: u64, addr: SocketAddr) -> Option<Arc<EndpointState>> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(id, addr)).cloned()
    }

    /// Of `candidates` (indices into `addrs`, port `id`'s endpoints), those not in backoff
    /// at `now`: one lock for the whole list, as this runs for every new connection.
    pub fn not_backing_off(
        &self,
        id: u64,
        addrs: &[SocketAddr],
        candidates: &[usize],
        now: Instant,
    ) -> Vec<usize> {
        let map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        candidates
            .iter()
            .copied()
            .filter(|&i| map.get(&(id, addrs[i])).is_none_or(|s| !s.backing_off(now)))
            .collect()
    }

    /// After an update to `live`: endpoints that left start draining; their connections are
    /// closed after `drain` unless they come back first. Returns the timers to run.
    pub fn update(
        &self,
        live: &HashSet<(u64, SocketAddr)>,
        drain: Duration,
    ) -> Vec<impl Future<Output = ()> + Send + 'static> {
        let token = self.updates.fetch_add(1, Ordering::Relaxed) + 1;
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let mut timers = Vec::new();
        map.retain(|key, state| {
            if live.contains(key) {
                if *state.drained.borrow() {
                    // Back after its connections were closed: a fresh start.
                    *state = Arc::new(EndpointState::new());
                }
                state.removed.store(0, Ordering::Relaxed);
                return true;
            }
            if *state.drained.borrow() {
                // Drained: kept only while connections are still closing.
                return state.active.load(Ordering::Relaxed) > 0;
            }
            if state.removed.load(Ordering::Relaxed) == 0 {
                state.removed.store(token, Ordering::Relaxed);
                let state = Arc::clone(state);
                timers.push(async move {
                    tokio::time::sleep(drain).await;
                    if state.removed.load(Ordering::Relaxed) == token {
                        state.drained.send_replace(true);
                    }
                });
            }
            true
        });
        timers
    }
}
