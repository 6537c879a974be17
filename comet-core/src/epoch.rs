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
///
/// Never [`VOID_EPOCH`]: that one names a channel with no history yet.
pub fn random_epoch() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.finish().max(VOID_EPOCH + 1)
}

/// The epoch of a channel that has no history yet where its engine keeps
/// histories (a Redis engine reads a channel without creating its keys).
///
/// A position at offset 0 of it names, as its identity, when the engine
/// last saw the channel so (in milliseconds of the engine's clock): a reader
/// there continues into the channel's first epoch without a gap when nothing
/// can have come and gone in between (see [`ChannelLog::saw_void`] and
/// [`ChannelLog::restart_from_void`]).
///
/// [`ChannelLog::saw_void`]: crate::engine::ChannelLog::saw_void
/// [`ChannelLog::restart_from_void`]: crate::engine::ChannelLog::restart_from_void
pub const VOID_EPOCH: u64 = 0;

#[cfg(test)]
mod tests {
    #[test]
    fn epochs_differ() {
        let epochs: std::collections::HashSet<u64> =
            (0..1000).map(|_| super::random_epoch()).collect();
        assert_eq!(epochs.len(), 1000);
    }
}
