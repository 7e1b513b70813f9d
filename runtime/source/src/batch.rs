//! `Batch`: objects a source applies and deletes together, with the errors it met.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasp_model::NamespacedName;
use wasp_resolve::{ConfigError, Object, ObjectKind, ObjectStore, Origin};

/// What one source unit (a file, a watch) changed, all at once.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The unit the batch replaces: its errors replace that unit's earlier errors.
    pub scope: String,
    /// Objects to store (each is validated; an invalid one keeps its last good version).
    pub applies: Vec<(Object, Origin)>,
    /// Objects that are gone.
    pub deletes: Vec<(ObjectKind, NamespacedName)>,
    /// Errors met while reading the unit.
    pub errors: Vec<ConfigError>,
    /// Objects the unit still holds exactly as before, not read again: they are neither
    /// applied nor deleted, and their validation errors from before stand.
    pub unchanged: Unchanged,
}

type Key = (ObjectKind, NamespacedName);

/// A set of objects given as a sorted list shared with the source, less a few: a file of
/// 10,000 Services says which of them it did not read again without copying their names.
#[derive(Debug, Clone, Default)]
pub struct Unchanged {
    objects: Arc<[Key]>,
    except: Vec<Key>,
}

impl Unchanged {
    /// The objects in `objects`, which is sorted, and not in `except`.
    pub fn new(objects: Arc<[Key]>, mut except: Vec<Key>) -> Self {
        debug_assert!(objects.is_sorted(), "an Unchanged list must be sorted");
        except.sort_unstable();
        Self { objects, except }
    }

    /// Whether the set holds `key`.
    pub fn contains(&self, key: &Key) -> bool {
        self.objects.binary_search(key).is_ok() && self.except.binary_search(key).is_err()
    }

    /// How many objects the set holds.
    pub fn len(&self) -> usize {
        let excepted = self
            .except
            .iter()
            .filter(|k| self.objects.binary_search(k).is_ok());
        self.objects.len() - excepted.count()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<Key>> for Unchanged {
    fn from(mut keys: Vec<Key>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        Self::new(keys.into(), Vec::new())
    }
}

/// The current errors of every source unit.
#[derive(Debug, Clone, Default)]
pub struct ErrorLog {
    by_scope: BTreeMap<String, Vec<ConfigError>>,
}

impl ErrorLog {
    /// Every current error, ordered by scope.
    pub fn all(&self) -> impl Iterator<Item = &ConfigError> {
        self.by_scope.values().flatten()
    }

    /// The number of current errors.
    pub fn len(&self) -> usize {
        self.by_scope.values().map(Vec::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Batch {
    /// Applies the batch to `store`, replacing the scope's errors in `log` with the batch's own
    /// and any validation errors. Returns whether the store changed.
    pub fn apply_to(self, store: &mut ObjectStore, log: &mut ErrorLog) -> bool {
        let mut errors = self.errors;
        if let Some(old) = log.by_scope.get(&self.scope) {
            const KINDS: [ObjectKind; 5] = [
                ObjectKind::Service,
                ObjectKind::Endpoints,
                ObjectKind::EndpointSlice,
                ObjectKind::Pod,
                ObjectKind::Node,
            ];
            let stands = |e: &&ConfigError| {
                e.object.as_ref().is_some_and(|o| {
                    let kind = KINDS.into_iter().find(|k| k.to_string() == o.kind);
                    kind.is_some_and(|k| self.unchanged.contains(&(k, o.name.clone())))
                })
            };
            errors.extend(old.iter().filter(stands).cloned());
        }
        let mut changed = false;
        for (kind, key) in &self.deletes {
            changed |= store.delete(*kind, key);
        }
        for (obj, origin) in self.applies {
            match store.apply(obj, origin) {
                Ok(c) => changed |= c,
                Err(e) => errors.extend(e),
            }
        }
        for e in &errors {
            tracing::warn!(error = %e, "config error; the object keeps its last good version");
        }
        if errors.is_empty() {
            log.by_scope.remove(&self.scope);
        } else {
            log.by_scope.insert(self.scope, errors);
        }
        changed
    }
}
