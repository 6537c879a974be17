//! Transport-agnostic channels, bounded history and cursors for Comet push.
//!
//! A [`Hub`] holds named channels. Each keeps a bounded history of
//! [`Message`]s numbered 1, 2, 3, ... within a random *epoch*. A [`Cursor`]
//! names a position in every channel of a subscription, so a client that
//! reconnects with the last cursor it saw gets exactly what it missed, or an
//! explicit [`Item::Gap`] when history no longer holds it. Nothing here knows
//! about HTTP or a web framework; the wire protocol on top, written once on
//! the `http` crate's types for every adapter, is the `comet-protocol` crate
//! (`comet_push::protocol`).
//!
//! # Why it is built this way
//!
//! - **One copy per message.** A message is stored once (`Arc<Message>`, body
//!   in `Bytes`) and each wire format encodes it once, caching it in the message;
//!   every subscriber shares both.
//! - **No queue per subscriber.** A [`Subscription`] is a position in each
//!   channel plus a waiter. Publishing appends to the channel's history and
//!   wakes waiters; each subscriber reads the shared history at its own pace.
//!   A subscriber that falls behind the history bound gets a gap, never
//!   unbounded buffering.
//! - **No lost wake-ups, cancel-safe.** A subscription arms its waiter before
//!   it reads the history, and moves its position only when it hands out an
//!   item, so dropping a pending `next()` loses nothing.
//! - **Pluggable engine.** Where history lives and how publishes fan out is an
//!   [`Engine`](engine::Engine) ([`engine`] has what engine authors need); the [`MemoryEngine`] is the default, and an engine shared by
//!   several nodes can replace it without touching any transport.
//!
//! ```
//! use comet_push::{Hub, HistoryPolicy, Item, Start};
//! use tokio_stream::StreamExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let hub = Hub::builder()
//!     .history(HistoryPolicy { max_messages: 2, max_age: None })
//!     .build();
//! let page_cursor = hub.current_cursor(["news"]).await.unwrap(); // rendered into a page
//! for text in ["a", "b", "c"] {
//!     hub.publish("news", text).await.unwrap();
//! }
//! // The page subscribes with its cursor: "a" fell out of history, so it is
//! // told exactly how much it missed before it gets the rest.
//! let mut sub = hub.subscribe(["news"], page_cursor).await.unwrap();
//! assert!(matches!(sub.next().await, Some(Item::Gap { missed: Some(1), .. })));
//! assert_eq!(sub.next().await.unwrap().message().unwrap().text(), "b");
//! assert_eq!(sub.next().await.unwrap().message().unwrap().text(), "c");
//! # });
//! ```
//!
//! Any server stack can serve subscriptions through `comet-protocol`, and a
//! [`Subscription`] can be driven by hand for transports that are not HTTP
//! at all. See the wire protocol (`PROTOCOL.md`) for how cursors
//! and gaps look to clients.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod channel_log;
mod channel_name;
mod control;
mod cursor;
pub mod engine;
mod epoch;
mod hub;
mod idempotency;
mod identity;
mod memory_engine;
mod message;
mod payload;
mod presence;
mod subscription;
pub mod telemetry;

pub use channel_log::{HistoryPolicy, Since, PRESENCE_FEED};
pub use channel_name::{ChannelName, InvalidChannelName, MAX_CHANNEL_NAME_LEN};
pub use control::{Control, EndReason};
pub use cursor::{Cursor, CursorError, Position, MAX_CURSOR_LEN};
pub use hub::{
    ControlError, Hub, HubBuilder, HubStats, PublishError, QueryError, Start, SubscribeError,
    DEFAULT_MAX_CHANNELS_PER_SUBSCRIPTION, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_RECONNECT_WINDOW,
};
pub use idempotency::{
    IdempotencyKey, InvalidIdempotencyKey, DEFAULT_IDEMPOTENCY_WINDOW, MAX_IDEMPOTENCY_KEY_LEN,
};
pub use identity::{Identity, InvalidIdentity, MAX_INFO_BYTES, MAX_USER_LEN};
pub use memory_engine::{HistoryPolicyFn, MemoryEngine, DEFAULT_IDLE_TTL};
pub use message::{EncodingSlot, Message};
pub use payload::{validate_event, Payload, PayloadKind, MAX_EVENT_NAME_LEN};
pub use presence::{
    ChannelInfo, HubEvent, Member, Presence, PresenceEvent, PresenceFn, PresenceKind, COALESCE,
    DEFAULT_MAX_PRESENCE_LISTED, DEFAULT_PRESENCE_GRACE,
};
pub use subscription::{Item, Subscriber, Subscription};
