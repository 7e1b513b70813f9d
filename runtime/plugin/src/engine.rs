//! The wasmtime engine: configuration, the epoch ticker, compilation and its cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};

use crate::bindings::{Plugin, PluginPre};
use crate::state::{Limits, State, StatsSource};

/// The epoch tick: deadlines are whole ticks.
const TICK: Duration = Duration::from_millis(1);

/// Limits and deadlines.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long `update` (and the constructor) may run.
    pub update_deadline: Duration,
    /// How long `pick` may run.
    pub pick_deadline: Duration,
    /// The most linear memory one instance may have.
    pub memory_limit: usize,
    /// Where compiled plugins are cached; `None` compiles every time.
    pub cache_dir: Option<PathBuf>,
    /// Failures (traps, timeouts) after which a plugin is disabled.
    pub max_failures: u32,
    /// The first re-creation delay; it doubles per failure.
    pub backoff: Duration,
    /// Whether components get the call-path rewrite (`crate::reexport`) before compiling.
    pub reexport: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            update_deadline: Duration::from_millis(500),
            pick_deadline: Duration::from_millis(20),
            memory_limit: 64 << 20,
            cache_dir: default_cache_dir(),
            max_failures: 5,
            backoff: Duration::from_secs(1),
            reexport: true,
        }
    }
}

/// `$WASP_PLUGIN_CACHE`, else `$XDG_CACHE_HOME/wasp/plugins`, else `~/.cache/wasp/plugins`.
fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WASP_PLUGIN_CACHE") {
        return (!d.is_empty()).then(|| PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasp/plugins"))
}

/// Why a plugin could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The engine could not be built.
    #[error("cannot configure wasmtime")]
    Engine(#[source] wasmtime::Error),
    /// The bytes are not a component wasp can run.
    #[error("plugin {name}: not a valid wasp:balancer component")]
    Compile {
        /// The plugin.
        name: String,
        /// The cause.
        #[source]
        source: wasmtime::Error,
    },
    /// The plugin's file cannot be read.
    #[error("plugin {name}: cannot read {path}")]
    Read {
        /// The plugin.
        name: String,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The epoch ticker's shared state: it advances the engine's epoch every tick (1 ms), and
/// parks (no wakeups) once no call has entered a plugin for a while, until the next one
/// does. A deadline is set relative to the epoch when a call starts, so a frozen epoch
/// between calls changes no deadline; the while is longer than any deadline, so a call's
/// deadline passes before the ticker can park under it; and a call soon after another finds
/// the ticker running, with nothing to wake.
#[derive(Debug)]
pub struct Ticker {
    /// Calls ever started: the ticker's sign of activity between two ticks.
    calls: AtomicU64,
    /// The ticker is parked (or about to be); the first call to see it wakes it.
    parked: AtomicBool,
    stop: AtomicBool,
    /// Ticks without a call before it parks.
    idle_ticks: u64,
    thread: OnceLock<std::thread::Thread>,
}

/// The ticker runs on at least this long after the last call.
const IDLE: Duration = Duration::from_secs(1);

impl Ticker {
    /// Counts a call into a plugin, waking the ticker if it is parked; every entry into a
    /// plugin's code calls this first, or a parked ticker would never let its deadline pass.
    pub fn busy(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst)
            && self.parked.swap(false, Ordering::SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }

    fn run(&self, engine: &Engine) {
        let mut seen = self.calls.load(Ordering::SeqCst);
        let mut idle = 0;
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(TICK);
            engine.increment_epoch();
            let calls = self.calls.load(Ordering::SeqCst);
            if calls != seen {
                (seen, idle) = (calls, 0);
                continue;
            }
            idle += 1;
            if idle < self.idle_ticks {
                continue;
            }
            // Parked is set before calls is read again: a call that comes after either sees
            // it set (and wakes the thread) or is counted in calls (and the thread stays up).
            self.parked.store(true, Ordering::SeqCst);
            while self.parked.load(Ordering::SeqCst)
                && self.calls.load(Ordering::SeqCst) == seen
                && !self.stop.load(Ordering::Relaxed)
            {
                std::thread::park();
            }
            self.parked.store(false, Ordering::SeqCst);
            idle = 0;
        }
    }
}

/// The engine every plugin runs on.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<State>,
    /// The configuration.
    pub cfg: EngineConfig,
    ticker: Arc<Ticker>,
    started: Instant,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.thread.get() {
            t.unpark();
        }
    }
}

impl PluginEngine {
    /// Builds the engine, its linker (deny-all WASI plus the host imports) and the ticker.
    ///
    /// # Errors
    /// Fails when wasmtime rejects the configuration.
    pub fn new(cfg: EngineConfig) -> Result<Self, LoadError> {
        let mut c = Config::new();
        c.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&c).map_err(LoadError::Engine)?;
        let mut linker = Linker::new(&engine);
        // Most toolchains import WASI; link it with nothing granted.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(LoadError::Engine)?;
        Plugin::add_to_linker::<State, wasmtime::component::HasSelf<State>>(&mut linker, |s| s)
            .map_err(LoadError::Engine)?;
        let longest = cfg.update_deadline.max(cfg.pick_deadline);
        let ticker = Arc::new(Ticker {
            calls: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            idle_ticks: Self::ticks(IDLE.max(longest * 2)),
            thread: OnceLock::new(),
        });
        let (e, t) = (engine.clone(), ticker.clone());
        let handle = std::thread::Builder::new()
            .name("wasp-epoch".into())
            .spawn(move || t.run(&e))
            .map_err(|e| LoadError::Engine(e.into()))?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(Self {
            engine,
            linker,
            cfg,
            ticker,
            started: Instant::now(),
        })
    }

    /// The epoch ticker, which every call into a plugin tells of itself.
    pub fn ticker(&self) -> Arc<Ticker> {
        self.ticker.clone()
    }

    /// Deadline ticks for a duration (at least one).
    pub fn ticks(d: Duration) -> u64 {
        (d.as_micros() / TICK.as_micros()).max(1) as u64 + 1
    }

    /// Compiles a component, or loads it from the cache (keyed by the bytes' hash and the
    /// engine's compatibility hash).
    ///
    /// # Errors
    /// Fails when the bytes are not a valid component.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        let cached = self.cfg.cache_dir.as_ref().map(|d| {
            let mut h = Sha256::new();
            h.update(bytes);
            let mut compat = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut compat);
            h.update(std::hash::Hasher::finish(&compat).to_le_bytes());
            let rewrite = if self.cfg.reexport {
                crate::reexport::VERSION
            } else {
                0
            };
            h.update(rewrite.to_le_bytes());
            let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            d.join(format!("{hex}.cwasm"))
        });
        if let Some(path) = &cached
            && let Some(c) = self.load_cached(path)
        {
            return Ok(c);
        }
        let original = || {
            Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile {
                name: name.into(),
                source: e,
            })
        };
        // The rewrite keeps the component's behaviour; should wasmtime still refuse it, the
        // original is compiled instead.
        // A bug in the rewrite must not take the daemon down with a plugin: a panic in it
        // counts as "nothing to rewrite".
        let rewritten = self
            .cfg
            .reexport
            .then(|| std::panic::catch_unwind(|| crate::reexport::rewrite(bytes)).ok())
            .flatten()
            .flatten();
        let c = match rewritten.map(|b| Component::new(&self.engine, b)) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                tracing::warn!(plugin = name, error = %format!("{e:#}"), "the call-path rewrite of this plugin does not compile; using the plugin as it is");
                original()?
            }
            None => original()?,
        };
        if let Some(path) = cached {
            // A cache that cannot be written only costs the next start a compile.
            if let Ok(bytes) = c.serialize()
                && path
                    .parent()
                    .is_some_and(|p| std::fs::create_dir_all(p).is_ok())
            {
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, bytes).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
        }
        Ok(c)
    }

    #[allow(unsafe_code)]
    fn load_cached(&self, path: &Path) -> Option<Component> {
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file was written by `Component::serialize` of an engine with the same
        // compatibility hash (it is part of the name), into wasp's own cache directory; wasmtime
        // also checks the header and refuses artifacts of another version or configuration.
        unsafe { Component::deserialize_file(&self.engine, path) }.ok()
    }

    /// Links a component once, so instances are cheap.
    ///
    /// # Errors
    /// Fails when the component imports something wasp does not provide, or does not export
    /// the balancer.
    pub fn prepare(&self, name: &str, c: &Component) -> Result<PluginPre<State>, LoadError> {
        let pre = self
            .linker
            .instantiate_pre(c)
            .map_err(|e| LoadError::Compile {
                name: name.into(),
                source: e,
            })?;
        PluginPre::new(pre).map_err(|e| LoadError::Compile {
            name: name.into(),
            source: e,
        })
    }

    /// A fresh Store for one instance of plugin `name`.
    pub fn store(&self, name: &str, stats: Arc<dyn StatsSource>) -> Store<State> {
        let limits = Limits {
            max_memory: self.cfg.memory_limit,
            memory: 0,
        };
        let state = State {
            wasi: {
                let mut b = wasmtime_wasi::WasiCtx::builder();
                // Some runtimes (Go's) expect argv[0]; the plugin's name grants nothing.
                b.arg(name);
                // For plugin authors: WASP_PLUGIN_STDERR=1 lets plugins write to wasp's stderr.
                if std::env::var_os("WASP_PLUGIN_STDERR").is_some_and(|v| v == "1") {
                    b.inherit_stderr();
                }
                b.build()
            },
            table: wasmtime::component::ResourceTable::new(),
            limits,
            plugin: name.into(),
            port: String::new(),
            port_id: 0,
            endpoints: 0,
            stats,
            start: self.started,
            log_budget: 0,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(Self::ticks(self.cfg.update_deadline));
        store
    }
}
