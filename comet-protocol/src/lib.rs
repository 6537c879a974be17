//! The comet wire protocol (PROTOCOL.md), written once on the `http` crate's
//! types so that every server adapter stays thin. This module is for people
//! who write adapters and transports; an app needs only the names at the
//! crate's root.
//!
//! An adapter matches its routes' paths and calls [`serve`] (subscribe
//! routes), [`PublishRoute::serve`] or [`serve_client`] with the request; the
//! answer is an `http::Response<CometBody>`, where [`CometBody`] is an
//! `http_body::Body` any hyper-based server can send.
//!
//! Where things are:
//!
//! - `subscribe.rs`: a subscribe request, checked, dispatched to its
//!   transport; `publish.rs`: `POST` a message; `client.rs`: `comet.js`.
//! - `transport/`: one module per built-in transport (`sse`, `stream`,
//!   `iframe`, `poll`, `jsonp`), each an implementation of [`StreamFormat`]
//!   or [`PollFormat`] (`format.rs`), the traits a transport of your own
//!   implements too.
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
    telemetry, ChannelName, Cursor, CursorError, Hub, IdempotencyKey, Item, Message, Payload,
    PayloadKind, PublishError, Since, Start, SubscribeError, Subscription,
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
mod transport;

pub use body::CometBody;
pub use callback::{DEFAULT_CALLBACK_REGISTRY, MAX_CALLBACK_LEN};
pub use client::{
    client_script_url, client_version, serve_client, CLIENT_SCRIPT, CLIENT_SCRIPT_NAME,
    CLIENT_TYPES,
};
pub use cors::Cors;
pub use error::{not_found, ErrorCode, ProtocolError};
pub use format::{Chunks, PollFormat, StreamFormat};
pub use mount::{Endpoint, Mount};
pub use params::SubscribeParams;
pub use policy::{AllowAll, Authorize, QueryChannels, ResolveChannels};
pub use publish::{AuthorizePublish, PublishRoute};
pub use request::{MAX_HEADER_BYTES, MAX_QUERY_LEN};
pub use route::{Route, DEFAULT_HEARTBEAT};
pub use subscribe::{serve, ResponseFuture};
pub use transport::{
    poll::{DEFAULT_MAX_BATCH, DEFAULT_MAX_HOLD},
    sse::DEFAULT_RETRY,
    stream::DEFAULT_BYTE_BUDGET,
    Transport,
};
