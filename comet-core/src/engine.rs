//! The engine: where channel history lives and how a publish reaches subscribers.
//!
//! Transports and subscriptions only ever see [`ChannelLog`]s, the local view
//! of a channel. An engine decides how those logs are found and fed: the
//! [`MemoryEngine`](crate::MemoryEngine) appends to them directly; an engine
//! shared by several nodes would append through its backplane and feed each
//! node's logs from it. Swapping engines touches no transport.

use crate::{ChannelLog, ChannelName, Message, Payload};
use std::{future::Future, pin::Pin, sync::Arc};

/// The future an engine's publish returns.
pub type PublishFuture =
    Pin<Box<dyn Future<Output = Result<Arc<Message>, EngineError>> + Send + 'static>>;

/// An engine failed to publish (a backplane was unreachable, say).
pub type EngineError = Box<dyn std::error::Error + Send + Sync>;

/// Where history lives and how publishes reach subscribers.
///
/// The [`Hub`](crate::Hub) validates names, payloads and limits before calling
/// an engine, so engines see only well-formed input.
pub trait Engine: Send + Sync + 'static {
    /// Appends `payload` to `channel` and wakes its subscribers; resolves to
    /// the stored message.
    fn publish(&self, channel: &ChannelName, payload: Payload) -> PublishFuture;

    /// The log of `channel`, created if needed, with one more subscriber
    /// counted. Counting happens here, atomically with the lookup, so that the
    /// engine never drops a log a subscription is about to hold.
    fn attach(&self, channel: &ChannelName) -> Arc<ChannelLog>;

    /// The log of `channel`, created if needed, without subscribing.
    fn log(&self, channel: &ChannelName) -> Arc<ChannelLog>;

    /// The log of `channel` if it exists.
    fn existing(&self, channel: &ChannelName) -> Option<Arc<ChannelLog>>;

    /// How many channels exist.
    fn channel_count(&self) -> usize;

    /// Wakes every waiter of every channel (used by shutdown, so that
    /// subscriptions notice it without holding a waiter of their own for it).
    fn wake_all(&self);
}
