//! Walking the tree: every manifest below the directory, each directory once.
//!
//! Links are followed (a ConfigMap mount's visible names are links into `..data`), but a
//! directory reached a second time — a link loop such as `loop -> .`, or two links to one
//! place — is not walked again, so no file is read twice. An entry that cannot be read is
//! recorded and skipped; only the top directory itself failing is an error.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether a name is one an editor or a ConfigMap mount uses for something that is not a
/// manifest (swap files, backups, `..data`).
pub fn hidden(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.starts_with('#')
}

/// Whether `path` names a manifest by its file name: `.yaml`, `.yml` or `.json`, not hidden.
pub fn is_manifest(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !hidden(n) && [".yaml", ".yml", ".json"].iter().any(|e| n.ends_with(e)))
}

/// What one walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// The manifests, sorted.
    pub files: BTreeSet<PathBuf>,
    /// The directories walked, the top one included.
    pub dirs: BTreeSet<PathBuf>,
    /// Entries that could not be read, with why.
    pub unreadable: BTreeMap<PathBuf, io::Error>,
}

impl Walk {
    /// Walks the tree below `top`.
    ///
    /// # Errors
    /// Fails when `top` itself cannot be listed.
    pub fn run(top: &Path) -> io::Result<Self> {
        let mut w = Self::default();
        let meta = std::fs::metadata(top)?;
        let mut seen = HashSet::from([(meta.dev(), meta.ino())]);
        // Listing the top directory must work; below it, failures are recorded. A work list,
        // not recursion: the tree's depth is the user's.
        let mut todo = vec![(top.to_path_buf(), std::fs::read_dir(top)?)];
        while let Some((dir, entries)) = todo.pop() {
            w.dirs.insert(dir);
            for sub in w.entries(entries, &mut seen) {
                match std::fs::read_dir(&sub) {
                    Ok(entries) => todo.push((sub, entries)),
                    Err(e) => {
                        w.unreadable.insert(sub, e);
                    }
                }
            }
        }
        Ok(w)
    }

    /// Records the manifests among `entries`; returns the directories not seen before.
    fn entries(
        &mut self,
        entries: std::fs::ReadDir,
        seen: &mut HashSet<(u64, u64)>,
    ) -> Vec<PathBuf> {
        let mut subdirs = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(error = %e, "unreadable directory entry");
                    continue;
                }
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if hidden(name) {
                continue;
            }
            let path = entry.path();
            // Follow links: a ConfigMap mount's visible names are links into `..data`.
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                // A dangling link is not a manifest (and not an error: editors leave them).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.unreadable.insert(path, e);
                    continue;
                }
            };
            if meta.is_dir() {
                if seen.insert((meta.dev(), meta.ino())) {
                    subdirs.push(path);
                }
            } else if meta.is_file() && is_manifest(&path) {
                self.files.insert(path);
            }
        }
        subdirs
    }
}
