//! `FileSource`: scans a directory and turns what changed into batches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasp_model::{ConfigError, NamespacedName, ObjectKind, ObjectRef, Origin};

use super::parse::parse_manifests;
use crate::batch::Batch;

type Key = (ObjectKind, NamespacedName);

#[derive(Debug, Default)]
struct FileRecord {
    /// The content hash last read; `None` forces a re-read on the next scan.
    hash: Option<[u8; 32]>,
    /// The objects this file owns.
    objects: BTreeSet<Key>,
}

/// The files source: the directory, and what each file produced last time.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileRecord>,
    owners: HashMap<Key, PathBuf>,
}

impl FileSource {
    /// A source over `dir`; nothing is read until [`FileSource::rescan`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            files: BTreeMap::new(),
            owners: HashMap::new(),
        }
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every file that changed since the last scan and returns one batch per file that
    /// was added, changed or removed.
    ///
    /// # Errors
    /// Fails only when the directory itself cannot be listed.
    pub fn rescan(&mut self) -> io::Result<Vec<Batch>> {
        let mut present = Vec::new();
        list(&self.dir, &mut present)?;
        present.sort();
        let mut batches = Vec::new();
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| present.binary_search(p).is_err())
            .cloned()
            .collect();
        for path in gone {
            batches.push(self.remove(&path));
        }
        for path in &present {
            if let Some(b) = self.read(path) {
                batches.push(b);
            }
        }
        // An object another file gave up may be defined in a file that conflicted: re-read
        // those now rather than at the next event.
        if batches.iter().any(|b| !b.deletes.is_empty()) {
            let conflicted: Vec<PathBuf> = self
                .files
                .iter()
                .filter(|(_, r)| r.hash.is_none())
                .map(|(p, _)| p.clone())
                .collect();
            for path in conflicted {
                if let Some(b) = self.read(&path) {
                    batches.push(b);
                }
            }
        }
        Ok(batches)
    }

    fn remove(&mut self, path: &Path) -> Batch {
        let rec = self.files.remove(path).unwrap_or_default();
        let mut deletes = Vec::new();
        for key in rec.objects {
            if self.owners.get(&key).map(PathBuf::as_path) == Some(path) {
                self.owners.remove(&key);
                deletes.push(key);
            }
        }
        Batch {
            scope: display(path),
            deletes,
            ..Batch::default()
        }
    }

    fn read(&mut self, path: &Path) -> Option<Batch> {
        let scope = display(path);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                let message = format!("cannot read: {e}");
                let error = ConfigError {
                    origin: Origin {
                        source: scope.clone(),
                        document: None,
                    },
                    object: None,
                    field: String::new(),
                    message,
                };
                return Some(Batch {
                    scope,
                    errors: vec![error],
                    ..Batch::default()
                });
            }
        };
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        let rec = self.files.entry(path.to_path_buf()).or_default();
        if rec.hash == Some(hash) {
            return None;
        }
        rec.hash = Some(hash);
        let parsed = parse_manifests(&scope, &bytes);
        if parsed.unreadable {
            return Some(Batch {
                scope,
                errors: parsed.errors,
                ..Batch::default()
            });
        }
        let mut errors = parsed.errors;
        let mut mine: BTreeSet<Key> = parsed.kept.into_iter().collect();
        let mut applies = Vec::new();
        let mut conflicted = false;
        for (obj, origin) in parsed.objects {
            let key = (obj.kind(), obj.key());
            let owner = self.owners.get(&key).filter(|o| o.as_path() != path);
            let duplicate = owner.cloned().map(|o| display(&o)).or_else(|| {
                mine.contains(&key)
                    .then(|| format!("{scope}, an earlier document"))
            });
            if let Some(other) = duplicate {
                conflicted = true;
                let object = ObjectRef {
                    kind: key.0.to_string(),
                    name: key.1,
                };
                errors.push(ConfigError::field(
                    &origin,
                    &object,
                    "metadata.name",
                    format!("Duplicate value: already defined in {other}"),
                ));
                continue;
            }
            mine.insert(key);
            applies.push((obj, origin));
        }
        let rec = self.files.entry(path.to_path_buf()).or_default();
        let old = std::mem::replace(&mut rec.objects, mine.clone());
        if conflicted {
            // Re-read on every scan, so the object is taken over once the other file lets go.
            rec.hash = None;
        }
        let deletes: Vec<Key> = old.difference(&mine).cloned().collect();
        for key in &deletes {
            self.owners.remove(key);
        }
        for key in mine {
            self.owners.insert(key, path.to_path_buf());
        }
        Some(Batch {
            scope,
            applies,
            deletes,
            errors,
        })
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Whether a name is one an editor or a ConfigMap mount uses for something that is not a
/// manifest (swap files, backups, `..data`).
fn hidden(name: &str) -> bool {
    name.starts_with('.') || name.ends_with('~') || name.starts_with('#')
}

fn list(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if hidden(name) {
            continue;
        }
        let path = entry.path();
        // Follow links: a ConfigMap mount's visible names are links into `..data`.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            list(&path, out)?;
        } else if meta.is_file()
            && [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext))
        {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
