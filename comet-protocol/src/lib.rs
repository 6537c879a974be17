//! The comet wire protocol (PROTOCOL.md), written once on the `http` crate's
//! types so that every server adapter stays thin. This crate is for people
//! who write adapters and transports (apps reach it as `comet_push::protocol`);
//! an app needs only the names at the root of the `comet` facade.
//!
//! An adapter finds a request's endpoint in a [`Mount`] (comet's routes at
//! their paths, by one set of rules) and calls [`Endpoint::serve`], or calls
//! [`SubscribeRoute::serve`], [`SubscribeRoute::serve_client`] or
//! [`PublishRoute::serve`] itself; the answer is an
//! `http::Response<CometBody>`, where [`CometBody`] is an `http_body::Body`
//! any hyper-based server can send.
//!
//! Where things are:
//!
//! - `mount.rs`: the mount rules, for every adapter.
//! - `subscribe.rs`: a subscribe request, checked, dispatched to its
//!   transport; `publish.rs`: `POST` a message; `client.rs`: `comet.js`.
//! - `transport.rs`: [`Transport`], the one shape of every transport (a
//!   name, maybe a media type, and how it makes its format for a request);
//!   `transport/`: one module per built-in transport ([`transport::sse`],
//!   [`transport::ndjson`], [`transport::iframe`],
//!   [`transport::long_poll`], [`transport::jsonp`]), each whole: its
//!   transport, framing, parameters, defaults and tests. Formats implement
//!   [`StreamFormat`] or [`LongPollFormat`] (`format.rs`), as a transport of
//!   your own does.
//! - `envelope.rs`: the JSON envelope, encoded once per message and shared;
//!   `callback.rs`: which callback names a page may be called with.
//! - `request.rs`: method and size limits, and body bounding, for every
//!   route; `cors.rs`: cross-origin access, for every route;
//!   `params.rs`: the query and cursor headers; `error.rs`: every error
//!   answer, from one table.
//! - `route.rs` and `policy.rs`: a route's configuration, and the
//!   application's say in who gets which channels.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

// The core's names the protocol speaks in.
use comet_core::{
    telemetry, ChannelName, ControlError, Cursor, CursorError, EndReason, Hub, IdempotencyKey,
    Identity, Item, Message, Payload, PayloadKind, Presence, PresenceEvent, PresenceKind,
    PublishError, QueryError, Since, Start, SubscribeError, Subscriber, Subscription,
};

mod body;
mod callback;
mod client;
mod cors;
mod envelope;
mod error;
mod format;
mod mount;
mod params;
mod policy;
mod publish;
mod request;
mod route;
mod subscribe;
#[cfg(feature = "jwt")]
pub mod token;
pub mod transport;

pub use body::CometBody;
pub use callback::{DEFAULT_CALLBACK_REGISTRY, MAX_CALLBACK_LEN};
pub use client::{
    client_script_url, client_version, CLIENT_SCRIPT, CLIENT_SCRIPT_NAME, CLIENT_TYPES,
};
pub use cors::Cors;
pub use error::{not_found, ErrorCode, ProtocolError};
pub use format::{Chunks, LongPollFormat, StreamFormat};
pub use mount::{Endpoint, Mount};
pub use params::SubscribeParams;
pub use policy::{
    Access, AllowAll, Anonymous, Authorization, Authorize, AuthorizeAsync, Identify, QueryChannels,
    ResolveChannels,
};
pub use publish::{
    AuthorizeControl, AuthorizePublish, AuthorizePublishAsync, PublishRoute, StaticKeys,
    MAX_BROADCAST_CHANNELS,
};
pub use request::{MAX_HEADER_BYTES, MAX_QUERY_LEN};
pub use route::{SubscribeRoute, DEFAULT_BYTE_BUDGET, DEFAULT_HEARTBEAT};
pub use subscribe::ResponseFuture;
pub use transport::Transport;
