//! Idempotent publishing: a publisher that did not learn whether a publish
//! landed (a timeout, a dropped connection, a 503) retries it with the same
//! key, and the engine answers the first one's position instead of storing
//! the message twice.

use crate::{ChannelName, Position};
use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::Mutex,
    time::Duration,
};
use tokio::time::Instant;

/// How long by default an engine remembers an idempotency key.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A publisher's name for one publish, the same on each of its retries
/// (the `Idempotency-Key` header on the publish route).
///
/// 1 to 128 visible ASCII characters (`!` to `~`): a UUID, a hash, an ID
/// from the publisher's own database. Keys are per channel: the same key on
/// two channels names two publishes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Box<str>);

/// Why a string is not an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidIdempotencyKey(&'static str);

impl fmt::Display for InvalidIdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid idempotency key: {}", self.0)
    }
}

impl std::error::Error for InvalidIdempotencyKey {}

impl IdempotencyKey {
    /// Checks `key`.
    pub fn new(key: &str) -> Result<Self, InvalidIdempotencyKey> {
        if key.is_empty() {
            return Err(InvalidIdempotencyKey("it is empty"));
        }
        if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(InvalidIdempotencyKey("it is longer than 128 bytes"));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidIdempotencyKey(
                "it holds a character outside visible ASCII",
            ));
        }
        Ok(Self(key.into()))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey").field(&self.0).finish()
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = InvalidIdempotencyKey;
    fn from_str(key: &str) -> Result<Self, Self::Err> {
        Self::new(key)
    }
}

/// The keys one process remembers (the in-memory engine's): key to
/// position, for a window, and at most `capacity` of them, the oldest
/// forgotten first, so that a flood of keys cannot grow memory for good.
pub(crate) struct Remembered {
    window: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    positions: HashMap<(ChannelName, IdempotencyKey), Position>,
    /// Keys in the order they were remembered, with when.
    order: VecDeque<(Instant, (ChannelName, IdempotencyKey))>,
}

impl Remembered {
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// The position remembered for `key` on `channel`, or
    /// else the one `publish` gives, remembered from now on. Both run under
    /// one lock, so that two racing retries store one message.
    pub(crate) fn get_or_publish(
        &self,
        channel: &ChannelName,
        key: &IdempotencyKey,
        publish: impl FnOnce() -> Position,
    ) -> Position {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        while let Some((at, _)) = inner.order.front() {
            if now.duration_since(*at) < self.window && inner.order.len() < self.capacity {
                break;
            }
            let (_, old) = inner.order.pop_front().expect("front exists");
            inner.positions.remove(&old);
        }
        let entry = (channel.clone(), key.clone());
        if let Some(position) = inner.positions.get(&entry) {
            return *position;
        }
        let position = publish();
        inner.positions.insert(entry.clone(), position);
        inner.order.push_back((now, entry));
        position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(IdempotencyKey::new("0f8fad5b-d9cb-469f-a165-70867728950e").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("a b").is_err());
        assert!(IdempotencyKey::new("é").is_err());
        assert!(IdempotencyKey::new("a\nb").is_err());
        assert!(IdempotencyKey::new(&"k".repeat(128)).is_ok());
        assert!(IdempotencyKey::new(&"k".repeat(129)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_remembered_for_its_window_and_within_capacity() {
        let remembered = Remembered::new(Duration::from_secs(60), 2);
        let key = |k: &str| IdempotencyKey::new(k).unwrap();
        let one = ChannelName::new("one").unwrap();
        let two = ChannelName::new("two").unwrap();
        let at = |offset| Position {
            key: 1,
            epoch: 1,
            offset,
            identity: 0,
        };
        assert_eq!(remembered.get_or_publish(&one, &key("a"), || at(1)), at(1));
        assert_eq!(remembered.get_or_publish(&one, &key("a"), || at(2)), at(1));
        // Another channel, another publish.
        assert_eq!(remembered.get_or_publish(&two, &key("a"), || at(3)), at(3));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(remembered.get_or_publish(&one, &key("a"), || at(4)), at(4));
        // Past its capacity the oldest key goes first.
        remembered.get_or_publish(&one, &key("b"), || at(5));
        remembered.get_or_publish(&one, &key("c"), || at(6));
        assert_eq!(remembered.get_or_publish(&one, &key("c"), || at(7)), at(6));
        assert_eq!(remembered.get_or_publish(&one, &key("a"), || at(8)), at(8));
    }
}
