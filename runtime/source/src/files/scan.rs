//! `FileSource`: reads the directory and turns what changed into batches.
//!
//! A full [`FileSource::rescan`] walks the tree (at start and on the periodic resync); the
//! watch asks for [`FileSource::refresh`] of just the paths that changed. Either way a file
//! is re-read only when its bytes changed, and its objects are diffed against what it produced
//! last time. A path that cannot be read is a config error of its own; the rest of the tree
//! keeps working.

mod walk;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Read};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use wasp_model::{NamespacedName, ObjectRef};
use wasp_resolve::{ConfigError, Object, ObjectKind, Origin};

use super::parse::{self, DocMemo, Parsed, Split, parse_manifests, parse_split};
use super::yaml::Limits;
use crate::batch::{Batch, Unchanged};
use walk::Walk;
pub use walk::is_manifest;

type Key = (ObjectKind, NamespacedName);

#[derive(Debug, Default)]
struct FileRecord {
    /// The content hash last read; `None` forces a re-read on the next scan.
    hash: Option<u128>,
    /// The objects this file owns, sorted (a set of two keys would take a B-tree node of
    /// eleven), and shared with the batch that lists the unchanged ones.
    objects: Arc<[Key]>,
    /// Its documents at the last read, so unchanged ones are not decoded again.
    docs: Vec<DocMemo>,
}

/// The files source: the directory, and what each file produced last time.
#[derive(Debug)]
pub struct FileSource {
    dir: PathBuf,
    limits: Limits,
    files: BTreeMap<PathBuf, FileRecord>,
    /// The file that owns each object (the objects of one file share its path).
    owners: HashMap<Key, Arc<Path>>,
    /// The creation time given to each object that states none, kept while it exists.
    created: HashMap<Key, Time>,
    /// The directories of the last walk, for the watch.
    dirs: BTreeSet<PathBuf>,
    /// Paths that could not be read at the last walk; each is an error scope.
    unreadable: BTreeSet<PathBuf>,
    /// The buffer files are read into, kept between reads: a fresh one for a file of
    /// 10,000 Services is a thousand page faults on every edit.
    buf: Vec<u8>,
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

fn path_error(path: &Path, message: String) -> Batch {
    let scope = display(path);
    Batch {
        errors: vec![ConfigError {
            origin: Origin {
                source: scope.as_str().into(),
                document: None,
            },
            object: None,
            field: String::new(),
            message,
        }],
        scope,
        ..Batch::default()
    }
}

impl FileSource {
    /// A source over `dir` with the default limits; nothing is read until
    /// [`FileSource::rescan`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_limits(dir, Limits::default())
    }

    /// A source over `dir` whose files are held to `limits`.
    pub fn with_limits(dir: impl Into<PathBuf>, limits: Limits) -> Self {
        Self {
            dir: dir.into(),
            limits,
            files: BTreeMap::new(),
            owners: HashMap::new(),
            created: HashMap::new(),
            dirs: BTreeSet::new(),
            unreadable: BTreeSet::new(),
            buf: Vec::new(),
        }
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directories the last walk went through (symlinked ones by the path that reached
    /// them first), for the watch.
    pub fn dirs(&self) -> &BTreeSet<PathBuf> {
        &self.dirs
    }

    /// What a change at `path` asks to re-read: the path itself; the directory holding a
    /// ConfigMap mount's `..data` or timestamped folder when the change is in one of those
    /// (the visible links then point at new files); nothing for other hidden names (an
    /// editor's swap or temporary file) or paths outside the directory.
    pub fn target(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.dir).ok()?;
        let mut at = self.dir.clone();
        for c in rel.components() {
            let name = c.as_os_str().to_str()?;
            if name.starts_with("..") {
                return Some(at);
            }
            if walk::hidden(name) {
                return None;
            }
            at.push(name);
        }
        Some(at)
    }

    /// Walks the whole tree and returns one batch per file that was added, changed or
    /// removed, and per path that became unreadable or readable again.
    ///
    /// # Errors
    /// Fails only when the directory itself cannot be listed.
    pub fn rescan(&mut self) -> io::Result<Vec<Batch>> {
        let walk = Walk::run(&self.dir)?;
        let dir = self.dir.clone();
        let mut batches = self.apply_walk(&walk, &dir);
        self.dirs = walk.dirs;
        batches.extend(self.retry_conflicts(&batches));
        Ok(batches)
    }

    /// Re-reads what changed at `paths` (files, or directories whose subtree is walked again),
    /// without walking the rest of the tree.
    pub fn refresh(&mut self, paths: &BTreeSet<PathBuf>) -> Vec<Batch> {
        let mut batches = Vec::new();
        for path in paths {
            if !path.starts_with(&self.dir) {
                continue;
            }
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {
                    let Ok(walk) = Walk::run(path) else {
                        batches.push(path_error(path, "cannot read the directory".into()));
                        continue;
                    };
                    batches.extend(self.apply_walk(&walk, path));
                    self.dirs
                        .retain(|d| !d.starts_with(path) || walk.dirs.contains(d));
                    self.dirs.extend(walk.dirs);
                }
                Ok(_) if is_manifest(path) && self.target(path).as_ref() == Some(path) => {
                    batches.extend(self.read(path));
                }
                Ok(_) => {}
                Err(_) => {
                    // Gone: the file, or every file below the directory (an atomic rename's
                    // temporary name lands here on every edit).
                    let gone: Vec<PathBuf> = self.below(path).cloned().collect();
                    for p in gone {
                        batches.push(self.remove(&p));
                    }
                    self.dirs.retain(|d| !d.starts_with(path));
                }
            }
        }
        batches.extend(self.retry_conflicts(&batches));
        batches
    }

    /// The known files at or below `path`. Paths sort by component, so those below `path`
    /// follow it: a range of the map, not a test of every file.
    fn below<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = &'a PathBuf> + 'a {
        self.files
            .range::<Path, _>((Bound::Included(path), Bound::Unbounded))
            .map(|(p, _)| p)
            .take_while(move |p| p.starts_with(path))
    }

    /// Applies a walk of the directory `root`, which holds every file it found.
    fn apply_walk(&mut self, walk: &Walk, root: &Path) -> Vec<Batch> {
        let within = |p: &Path| p.starts_with(root);
        let mut batches = Vec::new();
        let gone: Vec<PathBuf> = self
            .below(root)
            .filter(|p| !walk.files.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            batches.push(self.remove(&path));
        }
        for path in &walk.files {
            batches.extend(self.read(path));
        }
        // Unreadable paths are errors of their own; one readable again clears its error.
        let now: BTreeSet<PathBuf> = walk.unreadable.keys().cloned().collect();
        for p in self
            .unreadable
            .iter()
            .filter(|p| within(p) && !now.contains(*p))
        {
            batches.push(Batch {
                scope: display(p),
                ..Batch::default()
            });
        }
        for (p, e) in &walk.unreadable {
            batches.push(path_error(p, format!("cannot read: {e}")));
        }
        self.unreadable.retain(|p| !within(p));
        self.unreadable.extend(now);
        batches
    }

    /// An object another file gave up may be defined in a file that conflicted: re-read those
    /// now rather than at the next event.
    fn retry_conflicts(&mut self, batches: &[Batch]) -> Vec<Batch> {
        if batches.iter().all(|b| b.deletes.is_empty()) {
            return Vec::new();
        }
        let conflicted: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(_, r)| r.hash.is_none())
            .map(|(p, _)| p.clone())
            .collect();
        conflicted.iter().filter_map(|p| self.read(p)).collect()
    }

    /// Whether the file at `path` owns the object at `key`.
    fn owns(&self, key: &Key, path: &Path) -> bool {
        self.owners.get(key).is_some_and(|o| **o == *path)
    }

    /// Makes `path` the owner of `key`.
    fn claim(&mut self, key: &Key, path: &Arc<Path>) {
        if !self.owns(key, path) {
            self.owners.insert(key.clone(), Arc::clone(path));
        }
    }

    fn remove(&mut self, path: &Path) -> Batch {
        let rec = self.files.remove(path).unwrap_or_default();
        let mut deletes = Vec::new();
        for key in rec.objects.iter() {
            if self.owns(key, path) {
                self.owners.remove(key);
                self.created.remove(key);
                deletes.push(key.clone());
            }
        }
        Batch {
            scope: display(path),
            deletes,
            ..Batch::default()
        }
    }

    /// Reads the file's bytes into `bytes`, at most the size limit.
    fn bytes(&self, path: &Path, bytes: &mut Vec<u8>) -> Result<SystemTime, String> {
        let f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
        let meta = f.metadata().map_err(|e| format!("cannot read: {e}"))?;
        let too_big = |n: u64| {
            format!(
                "{n} bytes, more than the limit of {} (limits.fileBytes)",
                self.limits.file_bytes
            )
        };
        if meta.len() > self.limits.file_bytes {
            return Err(too_big(meta.len()));
        }
        bytes.clear();
        bytes.reserve(meta.len() as usize);
        f.take(self.limits.file_bytes + 1)
            .read_to_end(bytes)
            .map_err(|e| format!("cannot read: {e}"))?;
        if bytes.len() as u64 > self.limits.file_bytes {
            return Err(too_big(bytes.len() as u64));
        }
        Ok(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH))
    }

    fn read(&mut self, path: &Path) -> Option<Batch> {
        let mut bytes = std::mem::take(&mut self.buf);
        let batch = match self.bytes(path, &mut bytes) {
            Ok(modified) => self.ingest(path, &bytes, modified),
            // The file's objects keep their last good versions.
            Err(message) => Some(path_error(path, message)),
        };
        self.buf = bytes;
        batch
    }

    /// Takes `bytes` as the new content of the file at `path` (modified at `modified`), as a
    /// read of it would: the batch that brings the store from what the file held to what it
    /// holds now, or `None` when the content did not change. The fuzz harness feeds it.
    pub fn ingest(&mut self, path: &Path, bytes: &[u8], modified: SystemTime) -> Option<Batch> {
        let scope = display(path);
        let split = parse::split(bytes, &self.limits);
        let rec = self.files.entry(path.to_path_buf()).or_default();
        if rec.hash == Some(split.hash) {
            return None;
        }
        rec.hash = Some(split.hash);
        let previous = std::mem::take(&mut rec.docs);
        let before = std::mem::take(&mut rec.objects);
        // Whether the file's objects were exactly what its documents gave (each decoded
        // cleanly, and the keys of different documents never overlap, or one of them would
        // have been a duplicate): then what this read drops is among what the replaced
        // documents gave, and nothing needs a set of all the file's keys. At 10,000 Services
        // in one file, building and probing that set was half of a change's time.
        let exact = previous.iter().all(|m| m.keys.is_some())
            && previous
                .iter()
                .filter_map(|m| m.keys.as_ref())
                .map(Vec::len)
                .sum::<usize>()
                == before.len();
        let Parsed {
            objects,
            kept,
            mut errors,
            keep_all,
            mut docs,
            unchanged,
            replaced,
        } = self.parse(&scope, split, bytes, previous, exact.then_some(&*before));
        // Ownership is recorded for what is new to this file only: the keys of unchanged
        // documents are this file's already (a document whose object another file held is
        // never remembered as unchanged), and at 10,000 Services in one file looking each
        // of them up again was a tenth of a change's time.
        let shared: Arc<Path> = Arc::from(path);
        // What this read gives besides the unchanged documents' objects (`parse` made sure
        // that no decoded object is one of those).
        let mut fresh: BTreeSet<Key> = BTreeSet::new();
        for key in kept {
            self.claim(&key, &shared);
            fresh.insert(key);
        }
        let mut applies = Vec::new();
        let mut conflicted = false;
        for (mut obj, origin) in objects {
            let key = (obj.kind(), obj.key());
            let owner = self.owners.get(&key).filter(|_| !self.owns(&key, path));
            let duplicate = owner.cloned().map(|o| display(&o)).or_else(|| {
                fresh
                    .contains(&key)
                    .then(|| format!("{scope}, an earlier document"))
            });
            if let Some(other) = duplicate {
                conflicted = true;
                // Not owned: the document must be read again next time.
                if let Some(d) = origin.document.and_then(|d| docs.get_mut(d)) {
                    d.keys = None;
                }
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
            self.stamp(&key, &mut obj, modified);
            self.claim(&key, &shared);
            fresh.insert(key);
            applies.push((obj, origin));
        }
        let (objects, deletes, unchanged) = match replaced.filter(|_| exact) {
            Some(replaced) => Self::update(before, fresh, replaced, keep_all),
            None => {
                let unchanged: Vec<Key> = unchanged
                    .iter()
                    .filter_map(|&i| docs[i].keys.as_ref())
                    .flatten()
                    .cloned()
                    .collect();
                let (objects, deletes) = Self::rebuild(&before, fresh, &unchanged, keep_all);
                (objects, deletes, unchanged.into())
            }
        };
        for key in &deletes {
            self.owners.remove(key);
            self.created.remove(key);
        }
        let rec = self.files.entry(path.to_path_buf()).or_default();
        rec.docs = docs;
        rec.objects = objects;
        if conflicted {
            // Re-read on every scan, so the object is taken over once the other file lets go.
            rec.hash = None;
        }
        Some(Batch {
            scope,
            applies,
            deletes,
            errors,
            unchanged,
        })
    }

    /// The file's objects after a read, those it no longer gives and those it did not read
    /// again, when `before` was exactly what its documents gave: `replaced` (what the
    /// documents not reused gave) that is not in `fresh` (what the documents read gave) is
    /// gone; `fresh` that is new joins; the rest of `before` is unchanged.
    fn update(
        before: Arc<[Key]>,
        fresh: BTreeSet<Key>,
        mut replaced: Vec<Key>,
        keep_all: bool,
    ) -> (Arc<[Key]>, Vec<Key>, Unchanged) {
        replaced.sort_unstable();
        let deletes: Vec<Key> = if keep_all {
            // A document that could not be identified may be any of the file's objects.
            Vec::new()
        } else {
            let gone = replaced.iter().filter(|k| !fresh.contains(k));
            gone.cloned().collect()
        };
        let added: Vec<Key> = fresh
            .into_iter()
            .filter(|k| before.binary_search(k).is_err())
            .collect();
        let objects = if deletes.is_empty() && added.is_empty() {
            Arc::clone(&before)
        } else {
            let mut objects: Vec<Key> = before
                .iter()
                .filter(|k| deletes.binary_search(k).is_err())
                .cloned()
                .collect();
            objects.extend(added);
            // A sorted run and a short one: the stable sort merges them in linear time.
            objects.sort();
            objects.into()
        };
        (objects, deletes, Unchanged::new(before, replaced))
    }

    /// As [`FileSource::update`], from the whole set of what the file gives now: `fresh`, the
    /// `unchanged` documents' objects, and with `keep_all` everything it held `before`.
    fn rebuild(
        before: &[Key],
        mut fresh: BTreeSet<Key>,
        unchanged: &[Key],
        keep_all: bool,
    ) -> (Arc<[Key]>, Vec<Key>) {
        fresh.extend(unchanged.iter().cloned());
        if keep_all {
            fresh.extend(before.iter().cloned());
        }
        let deletes = before
            .iter()
            .filter(|k| !fresh.contains(k))
            .cloned()
            .collect();
        (fresh.into_iter().collect::<Vec<_>>().into(), deletes)
    }

    /// Parses the file, reusing the documents that did not change since `previous`; the
    /// whole file again when a changed document names an object an unchanged one names, so
    /// which of them wins is decided as on any read. `exact` is the file's objects when
    /// they were exactly what `previous` gave.
    fn parse(
        &self,
        scope: &str,
        split: Split<'_>,
        bytes: &[u8],
        previous: Vec<DocMemo>,
        exact: Option<&[Key]>,
    ) -> Parsed {
        let parsed = parse_split(scope, split, &self.limits, previous);
        if parsed.unchanged.is_empty() {
            return parsed;
        }
        let names_unchanged = match (exact, &parsed.replaced) {
            // The unchanged documents' objects are the file's, less what the others gave.
            (Some(objects), Some(replaced)) => {
                let mut replaced: Vec<&Key> = replaced.iter().collect();
                replaced.sort_unstable();
                parsed.objects.iter().any(|(o, _)| {
                    let key = (o.kind(), o.key());
                    objects.binary_search(&key).is_ok() && replaced.binary_search(&&key).is_err()
                })
            }
            _ => {
                let unchanged: HashSet<&Key> = (parsed.unchanged.iter())
                    .filter_map(|&i| parsed.docs[i].keys.as_ref())
                    .flatten()
                    .collect();
                parsed
                    .objects
                    .iter()
                    .any(|(o, _)| unchanged.contains(&(o.kind(), o.key())))
            }
        };
        if names_unchanged {
            // Everything is read again: nothing is known to be unchanged.
            let mut all = parse_manifests(scope, bytes, &self.limits);
            all.replaced = None;
            return all;
        }
        parsed
    }

    /// Gives an object that states no `creationTimestamp` one, as the API server does at
    /// creation: the file's modification time when it is first seen, the same ever after.
    /// Conflicts over an explicit cluster IP go to the older Service (`wasp_resolve::allocate`),
    /// so across a restart the Service whose file is older keeps the address.
    fn stamp(&mut self, key: &Key, obj: &mut Object, modified: SystemTime) {
        if obj.meta().creation_timestamp.is_some() {
            return;
        }
        let t = self.created.entry(key.clone()).or_insert_with(|| {
            Time(k8s_openapi::jiff::Timestamp::try_from(modified).unwrap_or_default())
        });
        obj.set_creation_timestamp(t.clone());
    }
}

#[cfg(test)]
mod tests;
