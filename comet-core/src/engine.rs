//! The engine: where channel history lives and how a publish reaches subscribers.
//!
//! Transports and subscriptions only ever see [`ChannelLog`]s, the local view
//! of a channel. An engine decides how those logs are found and fed: the
//! [`MemoryEngine`](crate::MemoryEngine) appends to them directly; an engine
//! shared by several nodes (the Redis engine of `comet-redis`) appends through
//! its backplane and feeds each node's logs from it. Swapping engines touches
//! no transport.
//!
//! This module holds what engine authors need and apps do not: the trait,
//! the channel log it hands out, epochs and the key that tags cursors. An
//! app picks an engine ([`MemoryEngine`](crate::MemoryEngine), the default, or
//! another crate's) and passes it to
//! [`HubBuilder::engine`](crate::HubBuilder::engine).

pub use crate::channel_log::{Attachment, ChannelLog, Extended, Read};
pub use crate::control::{Control, ControlBus, ControlHandler};
pub use crate::cursor::CursorKey;
pub use crate::epoch::{random_epoch, VOID_EPOCH};
pub use crate::presence::{NodeUpdate, Observer, PresenceStore, Transition, UserUpdate};

use crate::{ChannelName, IdempotencyKey, Payload, Position};
use std::{future::Future, pin::Pin, sync::Arc};

/// The future an engine's publish returns: where the stored message stands
/// (its channel's epoch and its offset), which is all the publisher gets back.
/// Subscribers get the message itself from the channel's log, so an engine
/// that feeds logs from a backplane builds it once, there.
pub type PublishFuture = EngineFuture<Position>;

/// The future of an engine operation that may need its backplane.
pub type EngineFuture<T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send + 'static>>;

/// An engine failed (a backplane was unreachable, say). The hub reports it
/// as [`PublishError::Engine`](crate::PublishError::Engine) or
/// [`SubscribeError::Unavailable`](crate::SubscribeError::Unavailable), and
/// the protocol answers 503 `unavailable`.
pub type EngineError = Box<dyn std::error::Error + Send + Sync>;

/// Where history lives and how publishes reach subscribers.
///
/// The [`Hub`](crate::Hub) validates names, payloads and limits before calling
/// an engine, so engines see only well-formed input. Implement it to keep
/// history somewhere else; every transport and adapter works unchanged.
pub trait Engine: Send + Sync + 'static {
    /// Appends `payload` to `channel` and wakes its subscribers; resolves to
    /// the stored message's position.
    ///
    /// With an idempotency key, an engine remembers key to position for a
    /// while (per channel): a publish that repeats a key it remembers stores
    /// nothing and resolves to the first one's position, so that a publisher
    /// may retry one whose outcome it did not learn.
    fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> PublishFuture;

    /// The log of `channel`, created if needed, with one more subscriber
    /// counted ([`ChannelLog::attach`]). Counting happens with the lookup, so
    /// that the engine never drops a log a subscription is about to hold; the
    /// [`Attachment`] gives the count back if the future or its caller drops
    /// it before the subscription takes it over.
    ///
    /// `from` is where the subscriber resumes, if it has a cursor: an engine
    /// whose logs mirror a shared history must bring the log up to date with
    /// it first when it names another epoch or an offset ahead of the log (it
    /// may come from another node that is further along). A position that a
    /// node issued ([`Resume::issued`]) and that is ahead of the shared history
    /// in its epoch proves that the history lost writes: the engine must move
    /// the channel to a new epoch before it answers, so that the offsets the
    /// client saw are never served again with other content.
    fn attach(&self, channel: &ChannelName, from: Option<Resume>) -> EngineFuture<Attachment>;

    /// The position of the newest message of `channel`, the same on every
    /// node that shares the history. An engine that keeps histories
    /// elsewhere need not create anything for a channel never published to:
    /// it may answer offset 0 of [`VOID_EPOCH`], naming
    /// when it saw the channel so (see [`ChannelLog::saw_void`]).
    fn head(&self, channel: &ChannelName) -> EngineFuture<Position>;

    /// The log of `channel` if this node holds it.
    fn existing(&self, channel: &ChannelName) -> Option<Arc<ChannelLog>>;

    /// How many channels this node holds.
    fn channel_count(&self) -> usize;

    /// Wakes every waiter of every channel (used by shutdown, so that
    /// subscriptions notice it without holding a waiter of their own for it).
    fn wake_all(&self);

    /// The key that tags the cursors this engine's nodes issue, shared by all
    /// of them, if the engine has one (yet): without one, cursors go untagged
    /// and every resume is taken as unverified.
    fn cursor_key(&self) -> Option<CursorKey> {
        None
    }

    /// The key the nodes shared before [`cursor_key`](Self::cursor_key), if
    /// it changed (its holder in the backplane lost it, say): cursors tagged
    /// under it still count as issued, so that a key change refuses none of
    /// the cursors out there. New cursors are tagged under the current key.
    fn previous_cursor_key(&self) -> Option<CursorKey> {
        None
    }

    /// Where this engine's nodes share presence and occupancy, if they are
    /// several. Without one (the default), the hub's node is taken to be
    /// the only one: what it sees is everyone's.
    fn presence_store(&self) -> Option<Arc<dyn PresenceStore>> {
        None
    }

    /// How this engine's nodes carry orders to each other's live
    /// subscriptions ([`Hub::disconnect`](crate::Hub::disconnect) and the
    /// like), if they are several. Without one (the default), orders reach
    /// this hub's subscriptions alone.
    fn control_bus(&self) -> Option<Arc<dyn ControlBus>> {
        None
    }

    /// Deletes the history of `channel`: its next message starts a new
    /// epoch, so that a client resuming from before gets a gap, never the
    /// old offsets with other content. The default refuses: an engine that
    /// can, says so.
    fn clear(&self, channel: &ChannelName) -> EngineFuture<()> {
        let _ = channel;
        Box::pin(std::future::ready(Err(
            "this engine cannot clear a channel's history".into(),
        )))
    }
}

/// Where a subscriber resumes in one channel, as its cursor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The position the cursor names.
    pub position: Position,
    /// A node of this engine issued the cursor (its tag checked out under
    /// [`Engine::cursor_key`]); false for untagged cursors.
    pub issued: bool,
}
