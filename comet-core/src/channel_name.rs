//! Channel names: validated once at the edge, then cheap to clone and compare.

use std::{borrow::Borrow, fmt, sync::Arc};

/// The longest channel name PROTOCOL.md allows.
pub const MAX_CHANNEL_NAME_LEN: usize = 128;

/// Names with this prefix are reserved for the protocol itself (`comet-gap`, ...).
pub const RESERVED_PREFIX: &str = "comet-";

/// Names that an `EventSource` dispatches as its own events (`onerror`,
/// `onopen`): refused as channel and event names, since SSE sends a message's
/// event name, or its channel, as the event type.
pub(crate) const EVENT_SOURCE_NAMES: [&str; 2] = ["error", "open"];

/// A valid channel name: 1 to 128 characters from `[A-Za-z0-9_.:@/-]`, not
/// starting with `comet-`, and neither `error` nor `open`.
///
/// It carries a stable 64-bit key (FNV-1a of the name) so a [`Cursor`](crate::Cursor)
/// can name a channel in 8 bytes instead of repeating the name, which keeps a
/// 32-channel cursor far below the protocol's 4 KiB limit.
#[derive(Clone)]
pub struct ChannelName {
    name: Arc<str>,
    key: u64,
}

impl ChannelName {
    /// Validates `name` against the protocol's rules.
    pub fn new(name: &str) -> Result<Self, InvalidChannelName> {
        validate(name)?;
        Ok(Self {
            key: channel_key(name),
            name: Arc::from(name),
        })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The stable key a cursor stores for this channel.
    pub(crate) fn key(&self) -> u64 {
        self.key
    }
}

fn validate(name: &str) -> Result<(), InvalidChannelName> {
    if name.is_empty() {
        return Err(InvalidChannelName::Empty);
    }
    if name.len() > MAX_CHANNEL_NAME_LEN {
        return Err(InvalidChannelName::TooLong { len: name.len() });
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(InvalidChannelName::BadCharacter(c));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(InvalidChannelName::Reserved);
    }
    if EVENT_SOURCE_NAMES.contains(&name) {
        return Err(InvalidChannelName::EventSourceName);
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '/' | '-')
}

/// FNV-1a, 64 bit: stable across processes, versions and nodes, which a
/// cursor handed to a browser needs; `std`'s hasher is randomly seeded.
fn channel_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl PartialEq for ChannelName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for ChannelName {}

impl std::hash::Hash for ChannelName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.name
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.name, f)
    }
}

impl TryFrom<&str> for ChannelName {
    type Error = InvalidChannelName;
    fn try_from(name: &str) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

impl std::str::FromStr for ChannelName {
    type Err = InvalidChannelName;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

/// Why a string is not a channel name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidChannelName {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_CHANNEL_NAME_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9_.:@/-]`.
    BadCharacter(char),
    /// The name starts with the reserved prefix `comet-`.
    Reserved,
    /// The name is `error` or `open`, which an `EventSource` would take for
    /// its own events.
    EventSourceName,
}

impl fmt::Display for InvalidChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("channel name is empty"),
            Self::TooLong { len } => write!(
                f,
                "channel name is {len} bytes long, the limit is {MAX_CHANNEL_NAME_LEN}"
            ),
            Self::BadCharacter(c) => write!(
                f,
                "channel name contains {c:?}; allowed are A-Z a-z 0-9 _ . : @ / -"
            ),
            Self::Reserved => write!(
                f,
                "channel names starting with {RESERVED_PREFIX:?} are reserved"
            ),
            Self::EventSourceName => f.write_str(
                "channel names \"error\" and \"open\" are refused: EventSource clients would take them for their own events",
            ),
        }
    }
}

impl std::error::Error for InvalidChannelName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_protocol_alphabet() {
        for name in [
            "chat",
            "a",
            "room/42",
            "user@example.com",
            "a.b:c_d-e",
            &"x".repeat(128),
        ] {
            assert_eq!(ChannelName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(ChannelName::new(""), Err(InvalidChannelName::Empty));
        assert_eq!(
            ChannelName::new(&"x".repeat(129)),
            Err(InvalidChannelName::TooLong { len: 129 })
        );
        for (name, c) in [
            ("a b", ' '),
            ("é", 'é'),
            ("a\nb", '\n'),
            ("a?b", '?'),
            ("a%20", '%'),
        ] {
            assert_eq!(
                ChannelName::new(name),
                Err(InvalidChannelName::BadCharacter(c))
            );
        }
        assert_eq!(
            ChannelName::new("comet-gap"),
            Err(InvalidChannelName::Reserved)
        );
        for name in EVENT_SOURCE_NAMES {
            assert_eq!(
                ChannelName::new(name),
                Err(InvalidChannelName::EventSourceName)
            );
        }
        assert!(ChannelName::new("errors").is_ok() && ChannelName::new("Open").is_ok());
        // Only the exact prefix is reserved.
        assert!(ChannelName::new("comet").is_ok());
        assert!(ChannelName::new("xcomet-").is_ok());
    }

    #[test]
    fn key_is_stable_across_processes() {
        // Pinned values: changing the hash would invalidate every cursor in the wild.
        assert_eq!(
            ChannelName::new("chat").unwrap().key(),
            0xf2a3_8d91_0b5b_348b
        );
        assert_ne!(
            ChannelName::new("a").unwrap().key(),
            ChannelName::new("b").unwrap().key()
        );
    }
}
