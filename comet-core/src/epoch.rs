//! Random epochs without a random-number dependency.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// A fresh epoch: unpredictable across restarts and distinct within a process.
/// Engines that keep epochs elsewhere draw new ones here.
///
/// `RandomState` is seeded from the OS's randomness once per process and varied
/// per instance; mixing in the wall clock and a counter makes two channels (or
/// two incarnations of one channel) never share an epoch in practice.
pub fn random_epoch() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn epochs_differ() {
        let epochs: std::collections::HashSet<u64> =
            (0..1000).map(|_| super::random_epoch()).collect();
        assert_eq!(epochs.len(), 1000);
    }
}
