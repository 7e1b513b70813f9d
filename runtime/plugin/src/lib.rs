//! wasp's WebAssembly plugin host: runs `wasp:balancer` components under wasmtime and turns
//! their decisions into `Selection`s, sandboxed.
//!
//! Every call runs under an epoch deadline, with memory capped; plugins get a deny-all WASI
//! (no files, network or environment). A trap, a timeout or an invalid selection puts that
//! service port on the default selection at once; a trapped instance is re-created with
//! backoff and its ports' last snapshots replayed; after repeated failures the plugin is
//! disabled. The daemon never goes down with a plugin.
//!
//! # Layout
//! - [`bindings`]: the host side of the WIT contract (`plugins/wit`).
//! - [`engine`]: the wasmtime engine, the epoch ticker, compilation and its on-disk cache.
//! - [`state`]: what each Store holds, and the host imports (log, clock, stats).
//! - [`convert`]: model types ↔ WIT types.
//! - [`instance`]: one live instance of a plugin and its per-port balancer resources.
//! - [`reexport`]: a rewrite of each plugin that makes every call cheaper on wasmtime 48.
//! - [`planner`]: `PluginPlanner`, the `Planner` the daemon uses: fallback, backoff, reload.
//! - [`builtin`]: the embedded built-in plugins.

pub mod bindings;
pub mod builtin;
pub mod convert;
pub mod engine;
pub mod instance;
pub mod planner;
pub mod state;

pub use wasp_reexport as reexport;

pub use engine::{EngineConfig, PluginEngine};
pub use planner::{PickHandle, PluginPlanner, PluginSource, PluginStats};
