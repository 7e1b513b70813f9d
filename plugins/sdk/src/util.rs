//! Helpers every built-in shares: weights from config and endpoint keys.

use wasp_balancer_algo::weights::{self, EndpointKeys};

use crate::{Snapshot, ip, string};

/// The weight of each endpoint from `pairs` (see `wasp_balancer_algo::weights`).
pub fn weights_for(pairs: &[(String, u32)], s: &Snapshot) -> Vec<u32> {
    let keys: Vec<EndpointKeys<'_>> = s
        .endpoints
        .iter()
        .map(|e| EndpointKeys {
            address: ip(&e.address),
            target: string(s, e.target),
            zone: string(s, e.zone),
        })
        .collect();
    weights::resolve(pairs, &keys)
}

/// Values by the host's small, dense ids (`service.id`): the host reuses the ids of dropped
/// balancers, so a vector indexed by id serves `pick` without hashing. An id past
/// [`ById::DENSE`] (a host that does not reuse ids) goes to a map instead.
#[derive(Debug)]
pub struct ById<T> {
    dense: Vec<Option<T>>,
    sparse: std::collections::HashMap<u32, T>,
}

impl<T> Default for ById<T> {
    fn default() -> Self {
        Self {
            dense: Vec::new(),
            sparse: std::collections::HashMap::new(),
        }
    }
}

impl<T> ById<T> {
    /// Ids below this are kept in the vector.
    pub const DENSE: u32 = 1 << 16;

    /// Sets the value of `id`.
    pub fn insert(&mut self, id: u32, v: T) {
        if id < Self::DENSE {
            let i = id as usize;
            if self.dense.len() <= i {
                self.dense.resize_with(i + 1, || None);
            }
            self.dense[i] = Some(v);
        } else {
            self.sparse.insert(id, v);
        }
    }

    /// The value of `id`.
    #[inline]
    pub fn get(&self, id: u32) -> Option<&T> {
        if id < Self::DENSE {
            self.dense.get(id as usize)?.as_ref()
        } else {
            self.sparse.get(&id)
        }
    }

    /// Removes the value of `id`.
    pub fn remove(&mut self, id: u32) -> Option<T> {
        if id < Self::DENSE {
            self.dense.get_mut(id as usize)?.take()
        } else {
            self.sparse.remove(&id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ById;

    #[test]
    fn by_id_keeps_dense_and_sparse_ids_apart() {
        let mut b = ById::default();
        b.insert(3, "three");
        b.insert(ById::<&str>::DENSE + 7, "far");
        assert_eq!(b.get(3), Some(&"three"));
        assert_eq!(b.get(2), None);
        assert_eq!(b.get(1000), None);
        assert_eq!(b.get(ById::<&str>::DENSE + 7), Some(&"far"));
        b.insert(3, "again");
        assert_eq!(b.remove(3), Some("again"));
        assert_eq!(b.get(3), None);
        assert_eq!(b.remove(ById::<&str>::DENSE + 7), Some("far"));
        assert_eq!(b.get(ById::<&str>::DENSE + 7), None);
    }
}
