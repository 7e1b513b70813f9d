//! What each Store holds, and the host imports a plugin may call.

use std::time::Instant;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::wasp::balancer::host::{self, Level};
use crate::bindings::wasp::balancer::types::{AllEndpointStats, EndpointStats};

/// Live per-endpoint statistics the host can give a plugin. Kernel modes have none and report
/// zeros; the userspace mode fills them in.
pub trait StatsSource: Send + Sync {
    /// Active connections and recent failures of endpoint `index` of the port being served.
    fn stats(&self, port: &str, index: u32) -> (u32, u32);
}

/// The memory cap, and what the instance uses (for the benchmarks' memory figure).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most linear memory, in bytes, one instance may have.
    pub max_memory: usize,
    /// The linear memory the instance has now, summed over its memories.
    pub memory: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory - current.min(self.memory) + desired;
        if total > self.max_memory {
            return Ok(false);
        }
        self.memory = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        16
    }
}

/// No live statistics.
#[derive(Debug, Default)]
pub struct NoStats;

impl StatsSource for NoStats {
    fn stats(&self, _: &str, _: u32) -> (u32, u32) {
        (0, 0)
    }
}

/// The data of one plugin instance's Store.
pub struct State {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: Limits,
    pub(crate) plugin: String,
    /// The service port being served by the current call, for logs and stats.
    pub(crate) port: String,
    pub(crate) port_id: u32,
    /// The endpoints of that port.
    pub(crate) endpoints: u32,
    pub(crate) stats: std::sync::Arc<dyn StatsSource>,
    pub(crate) start: Instant,
    /// Log lines this call may still write (a chatty plugin must not flood the log).
    pub(crate) log_budget: u32,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for State {
    fn log(&mut self, level: Level, message: String) {
        if self.log_budget == 0 {
            return;
        }
        self.log_budget -= 1;
        let message: String = message.chars().take(1024).collect();
        let (plugin, port) = (&self.plugin, &self.port);
        match level {
            Level::Trace => tracing::trace!(plugin, port, "{message}"),
            Level::Debug => tracing::debug!(plugin, port, "{message}"),
            Level::Info => tracing::info!(plugin, port, "{message}"),
            Level::Warn => tracing::warn!(plugin, port, "{message}"),
            Level::Error => tracing::error!(plugin, port, "{message}"),
        }
    }

    fn now_ms(&mut self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn stats(&mut self, index: u32) -> EndpointStats {
        let (active, failures) = self.stats.stats(&self.port, index);
        EndpointStats {
            active_connections: active,
            recent_failures: failures,
        }
    }

    fn all_stats(&mut self) -> AllEndpointStats {
        let (active_connections, recent_failures) = (0..self.endpoints)
            .map(|i| self.stats.stats(&self.port, i))
            .unzip();
        AllEndpointStats {
            active_connections,
            recent_failures,
        }
    }
}

impl crate::bindings::wasp::balancer::types::Host for State {}
