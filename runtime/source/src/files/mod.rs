//! The files source: a watched directory of Kubernetes manifests.
//!
//! Every `.yaml`, `.yml` and `.json` file below the directory is read as a stream of documents
//! (each an object or a v1 List of objects). A changed file is re-read whole and its objects are
//! diffed against what it produced last time. Hidden entries (editors' swap files, the `..data`
//! folders of a mounted ConfigMap) are skipped; the visible links a ConfigMap mount makes are
//! followed.

mod parse;
mod scan;
mod watch;

pub use parse::{Parsed, parse_manifests};
pub use scan::FileSource;
pub use watch::{WatchError, watch};
