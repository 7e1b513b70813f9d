//! `SourceEvent`: what a source sends the daemon.

use crate::batch::Batch;

/// One message from a source.
#[derive(Debug)]
pub enum SourceEvent {
    /// Objects to apply and delete.
    Batches(Vec<Batch>),
    /// The initial state is complete: rules may be programmed from now on.
    Synced,
    /// The source's health changed: `None` when healthy, else what is wrong. While a source is
    /// unhealthy its last state stays programmed.
    Health {
        /// The source (e.g. `kubernetes/Service`).
        source: String,
        /// What is wrong, or `None` once it works again.
        problem: Option<String>,
    },
}
