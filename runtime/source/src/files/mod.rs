//! The files source: a watched directory of Kubernetes manifests.
//!
//! Every `.yaml`, `.yml` and `.json` file below the directory is read as a stream of documents
//! (each an object or a v1 List of objects). A changed file is re-read whole and its objects are
//! diffed against what it produced last time. Hidden entries (editors' swap files, the `..data`
//! folders of a mounted ConfigMap) are skipped; the visible links a ConfigMap mount makes are
//! followed.
//!
//! # Layout
//! - `yaml`: splitting a stream into documents and parsing each within [`Limits`].
//! - `kind`: a kind wasp reads, one it skips, or a typo.
//! - `strict`: unknown fields, as the API server's strict decoding reports them.
//! - `parse`: documents → objects, with errors naming file, document, object and field.
//! - `scan`: `FileSource`, the tree walk and the per-file diff.
//! - `watch`: inotify watches per directory, and re-reads of just what changed.

mod kind;
mod parse;
mod scan;
mod strict;
mod watch;
mod yaml;

pub use parse::{Parsed, parse_manifests};
pub use scan::FileSource;
pub use watch::{WatchConfig, WatchError, watch};
pub use yaml::Limits;
