//! One copy of each name: equal strings met in different places share one allocation.
//!
//! A Service's name arrives with every read of its file and every watch event, and the
//! store, the files source, the resolver, the planner and the dataplane each key a map by
//! it. Without this each of those would hold its own copy (at 10,000 Services, 90,000
//! allocations of each part of a name).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// The pool, and its size after the last sweep.
struct Pool {
    names: HashSet<Arc<str>>,
    swept: usize,
}

static POOL: LazyLock<Mutex<Pool>> = LazyLock::new(|| {
    Mutex::new(Pool {
        names: HashSet::new(),
        swept: 0,
    })
});

/// The shared copy of `s`. The pool forgets a name once only the pool holds it, in a sweep
/// each time it has doubled since the last, so a churning cluster's names do not pile up.
pub fn intern(s: &str) -> Arc<str> {
    let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(a) = pool.names.get(s) {
        return a.clone();
    }
    if pool.names.len() >= 2 * pool.swept.max(1024) {
        // Only the pool can hand out a name whose count is one, and it holds the lock.
        pool.names.retain(|a| Arc::strong_count(a) > 1);
        pool.swept = pool.names.len();
    }
    let a: Arc<str> = Arc::from(s);
    pool.names.insert(a.clone());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_one_copy_and_dropped_ones_are_swept() {
        let a = intern("web-intern-test");
        let b = intern(&String::from("web-intern-test"));
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        // Enough new names to force sweeps: the pool stays bounded by what is alive.
        let alive: Vec<Arc<str>> = (0..5000).map(|i| intern(&format!("kept-{i}"))).collect();
        for i in 0..20_000 {
            intern(&format!("dropped-{i}"));
        }
        let len = POOL.lock().unwrap().names.len();
        assert!(len < 2 * (alive.len() + 2048), "{len} names pooled");
        assert!(!POOL.lock().unwrap().names.contains("web-intern-test"));
    }
}
