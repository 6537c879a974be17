//! Why a publish or a subscription failed.

use crate::{engine::EngineError, ChannelName, InvalidChannelName};
use std::fmt;

/// Why a publish failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The channel name breaks the protocol's rules.
    InvalidChannel(InvalidChannelName),
    /// The event name is unusable; the text says why.
    InvalidEvent(String),
    /// The payload is larger than the hub allows.
    PayloadTooLarge {
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// Publishing would make a channel past the hub's limit
    /// ([`HubBuilder::max_channels`](super::HubBuilder::max_channels)); retry later.
    ChannelLimit {
        /// The limit.
        max: usize,
    },
    /// The engine could not store it.
    Engine(EngineError),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidChannel(e) => e.fmt(f),
            Self::InvalidEvent(reason) => f.write_str(reason),
            Self::PayloadTooLarge { size, max } => {
                write!(f, "payload is {size} bytes, the limit is {max}")
            }
            Self::ChannelLimit { max } => channel_limit(f, *max),
            Self::Engine(e) => write!(f, "engine failed to publish: {e}"),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidChannel(e) => Some(e),
            Self::Engine(e) => Some(&**e),
            _ => None,
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// A channel name breaks the protocol's rules.
    InvalidChannel(InvalidChannelName),
    /// No channel was named.
    NoChannels,
    /// A channel was named twice in names given already checked
    /// ([`Hub::subscribe_names`](super::Hub::subscribe_names));
    /// [`Hub::channel_names`](super::Hub::channel_names) drops duplicates.
    DuplicateChannel(ChannelName),
    /// More distinct channels than the hub allows in one subscription.
    TooManyChannels {
        /// The limit.
        max: usize,
    },
    /// A subscriber limit was reached.
    TooManySubscribers {
        /// The channel whose limit was reached, or `None` for the hub's.
        channel: Option<ChannelName>,
        /// The limit.
        max: usize,
    },
    /// The subscription would make a channel past the hub's limit
    /// ([`HubBuilder::max_channels`](super::HubBuilder::max_channels)); retry later.
    ChannelLimit {
        /// The limit.
        max: usize,
    },
    /// The hub is shutting down.
    ShuttingDown,
    /// The engine could not reach what it needs (its backplane is down, say);
    /// retry later.
    Unavailable {
        /// What failed.
        reason: String,
    },
    /// The cursor's tag does not match its positions: no node of this
    /// engine issued it (see [`CursorKey`](crate::engine::CursorKey)).
    ForgedCursor,
}

impl fmt::Display for SubscribeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidChannel(e) => e.fmt(f),
            Self::NoChannels => f.write_str("no channel named"),
            Self::DuplicateChannel(channel) => write!(f, "channel {channel} is named twice"),
            Self::TooManyChannels { max } => {
                write!(f, "too many channels: at most {max} per subscription")
            }
            Self::TooManySubscribers { channel: None, max } => {
                write!(
                    f,
                    "the server holds its maximum of {max} subscribers; retry later"
                )
            }
            Self::TooManySubscribers {
                channel: Some(channel),
                max,
            } => write!(
                f,
                "channel {channel} has its maximum of {max} subscribers; retry later"
            ),
            Self::ChannelLimit { max } => channel_limit(f, *max),
            Self::ShuttingDown => {
                f.write_str("the server is shutting down; reconnect with your cursor")
            }
            Self::Unavailable { reason } => {
                write!(
                    f,
                    "the channel engine is unavailable ({reason}); retry later"
                )
            }
            Self::ForgedCursor => {
                f.write_str("cursor was not issued by this server: pass back a cursor it sent")
            }
        }
    }
}

impl std::error::Error for SubscribeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidChannel(e) => Some(e),
            _ => None,
        }
    }
}

fn channel_limit(f: &mut fmt::Formatter<'_>, max: usize) -> fmt::Result {
    write!(
        f,
        "the server holds its maximum of {max} channels; retry later"
    )
}

/// Why a question about a channel ([`Hub::presence`](super::Hub::presence),
/// [`Hub::subscriber_count`](super::Hub::subscriber_count),
/// [`Hub::channel_info`](super::Hub::channel_info)) has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryError {
    /// The channel name breaks the protocol's rules.
    InvalidChannel(InvalidChannelName),
    /// The channel has no presence ([`HubBuilder::presence_for`](super::HubBuilder::presence_for)).
    NoPresence(ChannelName),
    /// The engine could not answer (its backplane is unreachable, say).
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl QueryError {
    pub(crate) fn unavailable(error: EngineError) -> Self {
        Self::Unavailable {
            reason: error.to_string(),
        }
    }
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidChannel(e) => e.fmt(f),
            Self::NoPresence(channel) => write!(f, "channel {channel:?} has no presence"),
            Self::Unavailable { reason } => write!(f, "the engine could not answer: {reason}"),
        }
    }
}

impl std::error::Error for QueryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidChannel(e) => Some(e),
            _ => None,
        }
    }
}

/// Why an order to live subscriptions ([`Hub::disconnect`](super::Hub::disconnect)
/// and the like) was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// The channel name breaks the protocol's rules.
    InvalidChannel(InvalidChannelName),
    /// The user id is not one an identity can have.
    InvalidUser(crate::InvalidIdentity),
    /// The engine could not carry it to every node (its backplane is
    /// unreachable, say), or cannot do it at all (clear a history).
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidChannel(e) => e.fmt(f),
            Self::InvalidUser(e) => e.fmt(f),
            Self::Unavailable { reason } => write!(f, "the engine could not do it: {reason}"),
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidChannel(e) => Some(e),
            Self::InvalidUser(e) => Some(e),
            Self::Unavailable { .. } => None,
        }
    }
}
