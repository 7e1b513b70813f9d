//! `Batch`: objects a source applies and deletes together, with the errors it met.

use std::collections::BTreeMap;

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
    pub unchanged: Vec<(ObjectKind, NamespacedName)>,
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
        if !self.unchanged.is_empty() && log.by_scope.contains_key(&self.scope) {
            let same: std::collections::HashSet<(String, &NamespacedName)> = self
                .unchanged
                .iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect();
            let stands = |e: &&ConfigError| {
                e.object
                    .as_ref()
                    .is_some_and(|o| same.contains(&(o.kind.clone(), &o.name)))
            };
            let old = log.by_scope.get(&self.scope).into_iter().flatten();
            errors.extend(old.filter(stands).cloned());
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
