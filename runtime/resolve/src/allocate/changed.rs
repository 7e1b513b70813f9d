//! What assigning only the changed requests needs, for addresses and node ports alike: what
//! the Services outside the assignment hold, whether the changed claims are free, and who
//! waits, refused, for what.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use wasp_model::name::NamespacedName;

/// What Services outside an assignment hold (by address or port), and the Services whose
/// holdings do not count (those being assigned again, or gone).
pub(crate) type Outside<'a, K> = (
    &'a HashMap<K, NamespacedName>,
    &'a HashSet<&'a NamespacedName>,
);

/// Who holds `key` in `outside`, unless that Service is excluded.
pub(crate) fn outside_holder<'a, K: Hash + Eq>(
    outside: Option<Outside<'a, K>>,
    key: &K,
) -> Option<&'a NamespacedName> {
    let (held, excluded) = outside?;
    held.get(key).filter(|h| !excluded.contains(h))
}

/// Whether every claim (a key, by a Service) is on a key that nobody holds, or its claimant
/// does, or a Service that is gone (`excluded` and not `asking`), and no two Services claim
/// one key.
pub(crate) fn claims_free<'a, K: Hash + Eq>(
    holders: &HashMap<K, NamespacedName>,
    excluded: &HashSet<&NamespacedName>,
    asking: &HashSet<&NamespacedName>,
    claims: impl IntoIterator<Item = (K, &'a NamespacedName)>,
) -> bool {
    let mut claimed: HashMap<K, &NamespacedName> = HashMap::new();
    claims.into_iter().all(|(key, name)| {
        let free = holders
            .get(&key)
            .is_none_or(|h| h == name || (excluded.contains(h) && !asking.contains(h)));
        free && *claimed.entry(key).or_insert(name) == name
    })
}

/// The requests (`R`) the last assignment refused for want of a key (`K`): one that another
/// Service holds, or any free one. A change that frees what one of them waits for has to run
/// over every request, since the waiting one may get it.
#[derive(Debug, Clone)]
pub(crate) struct Waiting<R, K> {
    /// Each refused request, and the key it waits for (`None`: any).
    by: HashMap<R, Option<K>>,
    /// How many wait for each key.
    on: HashMap<K, usize>,
    /// How many wait for any key.
    any: usize,
}

impl<R, K> Default for Waiting<R, K> {
    fn default() -> Self {
        Self {
            by: HashMap::new(),
            on: HashMap::new(),
            any: 0,
        }
    }
}

impl<R: Hash + Eq, K: Hash + Eq + Clone> Waiting<R, K> {
    /// `r` waits for `key` (`None`: any free one).
    pub(crate) fn insert(&mut self, r: R, key: Option<K>) {
        match &key {
            Some(k) => *self.on.entry(k.clone()).or_default() += 1,
            None => self.any += 1,
        }
        if let Some(old) = self.by.insert(r, key) {
            self.release(old.as_ref());
        }
    }

    /// Forgets the requests `gone` says are gone.
    pub(crate) fn forget(&mut self, gone: impl Fn(&R) -> bool) {
        let mut released = Vec::new();
        self.by.retain(|r, key| {
            let keep = !gone(r);
            if !keep {
                released.push(key.take());
            }
            keep
        });
        for key in released {
            self.release(key.as_ref());
        }
    }

    /// One request fewer waits for `key`.
    fn release(&mut self, key: Option<&K>) {
        match key {
            Some(k) => {
                if let Some(n) = self.on.get_mut(k) {
                    *n -= 1;
                    if *n == 0 {
                        self.on.remove(k);
                    }
                }
            }
            None => self.any -= 1,
        }
    }

    /// Whether freeing `keys` could give one of them to a waiting request.
    pub(crate) fn wants<'k>(&self, mut keys: impl Iterator<Item = &'k K>) -> bool
    where
        K: 'k,
    {
        keys.any(|k| self.any > 0 || self.on.contains_key(k))
    }
}
