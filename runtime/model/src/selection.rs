//! The Selection contract: how a service port's new connections spread over its endpoints.
//!
//! A planner (the built-in equal-weights default, or a WebAssembly plugin) returns one
//! `Selection` per service port; every dataplane mode realises it its own way (DESIGN.md).

use std::fmt;

use thiserror::Error;

use crate::name::ServicePortName;
use crate::state::ServicePortState;

/// The largest hashed table a planner may return.
pub const MAX_TABLE: usize = 1 << 20;

/// What a hashed selection hashes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashKey {
    /// The client's address.
    SourceIp,
    /// The client's address and port.
    SourceIpPort,
    /// The whole 5-tuple.
    FiveTuple,
}

/// How new connections of one service port spread over its endpoints.
///
/// Indices refer to positions in `ServicePortState::endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selection {
    /// Per-endpoint weights; 0 means never.
    Weighted(Vec<u32>),
    /// A table of slots, each an endpoint index, looked up by a hash of `key`.
    Hashed {
        /// What is hashed.
        key: HashKey,
        /// The slots.
        table: Vec<u32>,
    },
    /// A plugin picks per connection; kernel modes use `fallback` weights.
    PerConnection {
        /// The weights a kernel mode uses instead.
        fallback: Vec<u32>,
    },
}

/// Why a Selection cannot be realised.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectionError {
    /// The weight list's length differs from the endpoint count.
    #[error("{got} weights for {want} endpoints")]
    WeightCount {
        /// Weights returned.
        got: usize,
        /// Endpoints given.
        want: usize,
    },
    /// All weights are 0 while endpoints are ready.
    #[error("all weights are 0 while {0} endpoints are ready")]
    AllZero(usize),
    /// A hashed table is empty while endpoints are ready.
    #[error("empty hash table while {0} endpoints are ready")]
    EmptyTable(usize),
    /// A hashed table is larger than [`MAX_TABLE`].
    #[error("hash table of {0} slots is larger than the cap of {MAX_TABLE}")]
    TableTooLarge(usize),
    /// A slot names an endpoint that does not exist.
    #[error("slot {slot} names endpoint {index}, but there are {count} endpoints")]
    IndexOutOfRange {
        /// The slot.
        slot: usize,
        /// The index it holds.
        index: u32,
        /// The endpoint count.
        count: usize,
    },
}

impl Selection {
    /// Equal weights over `n` endpoints: the default selection.
    pub fn equal(n: usize) -> Self {
        Self::Weighted(vec![1; n])
    }

    /// Checks that this selection can be realised over `n` endpoints.
    ///
    /// # Errors
    /// Returns the first problem found.
    pub fn validate(&self, n: usize) -> Result<(), SelectionError> {
        match self {
            Self::Weighted(w) | Self::PerConnection { fallback: w } => {
                if w.len() != n {
                    return Err(SelectionError::WeightCount {
                        got: w.len(),
                        want: n,
                    });
                }
                if n > 0 && w.iter().all(|&x| x == 0) {
                    return Err(SelectionError::AllZero(n));
                }
            }
            Self::Hashed { table, .. } => {
                if table.len() > MAX_TABLE {
                    return Err(SelectionError::TableTooLarge(table.len()));
                }
                if n > 0 && table.is_empty() {
                    return Err(SelectionError::EmptyTable(n));
                }
                if let Some((slot, &index)) =
                    table.iter().enumerate().find(|&(_, &i)| i as usize >= n)
                {
                    return Err(SelectionError::IndexOutOfRange {
                        slot,
                        index,
                        count: n,
                    });
                }
            }
        }
        Ok(())
    }

    /// The weight each endpoint gets: the weights themselves, or the slot count per endpoint of
    /// a hashed table. Modes that cannot realise a table use this.
    pub fn weights(&self, n: usize) -> Vec<u32> {
        match self {
            Self::Weighted(w) | Self::PerConnection { fallback: w } => w.clone(),
            Self::Hashed { table, .. } => {
                let mut w = vec![0u32; n];
                for &i in table {
                    if let Some(x) = w.get_mut(i as usize) {
                        *x += 1;
                    }
                }
                w
            }
        }
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Weighted(w) => write!(f, "weighted{w:?}"),
            Self::Hashed { key, table } => write!(f, "hashed({key:?}, {} slots)", table.len()),
            Self::PerConnection { fallback } => write!(f, "per-connection(fallback {fallback:?})"),
        }
    }
}

/// Decides a Selection for each service port that changed.
pub trait Planner {
    /// Returns the selection for `port`'s current endpoints.
    fn plan(&mut self, name: &ServicePortName, port: &ServicePortState) -> Selection;

    /// Forgets a service port that no longer exists.
    fn forget(&mut self, _name: &ServicePortName) {}
}

/// The built-in default: equal weights over the endpoints.
#[derive(Debug, Default, Clone, Copy)]
pub struct EqualWeights;

impl Planner for EqualWeights {
    fn plan(&mut self, _name: &ServicePortName, port: &ServicePortState) -> Selection {
        Selection::equal(port.endpoints.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_catches_every_invalid_shape() {
        assert!(Selection::equal(3).validate(3).is_ok());
        assert!(Selection::equal(0).validate(0).is_ok());
        assert_eq!(
            Selection::Weighted(vec![1]).validate(2),
            Err(SelectionError::WeightCount { got: 1, want: 2 })
        );
        assert_eq!(
            Selection::Weighted(vec![0, 0]).validate(2),
            Err(SelectionError::AllZero(2))
        );
        let hashed = |table: Vec<u32>| Selection::Hashed {
            key: HashKey::SourceIp,
            table,
        };
        assert_eq!(
            hashed(vec![]).validate(1),
            Err(SelectionError::EmptyTable(1))
        );
        assert_eq!(
            hashed(vec![0, 2]).validate(2),
            Err(SelectionError::IndexOutOfRange {
                slot: 1,
                index: 2,
                count: 2
            })
        );
        assert!(hashed(vec![1, 0, 1]).validate(2).is_ok());
        assert_eq!(
            hashed(vec![0; MAX_TABLE + 1]).validate(1),
            Err(SelectionError::TableTooLarge(MAX_TABLE + 1))
        );
    }

    #[test]
    fn hashed_weights_count_slots() {
        let s = Selection::Hashed {
            key: HashKey::FiveTuple,
            table: vec![0, 1, 1, 2, 1],
        };
        assert_eq!(s.weights(4), vec![1, 3, 1, 0]);
    }
}
