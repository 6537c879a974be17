//! Real-time server push over plain HTTP (Comet) for existing Rust web apps:
//! Server-Sent Events, streaming and long polling, with cursors that resume
//! exactly after a reconnect.
//!
//! An app needs the names at this crate's root: a [`Hub`] to publish to,
//! [`SubscribeRoute`]s that browsers subscribe through, and, with the default `tower`
//! feature, the [`CometLayer`] that serves them in front of an axum app.
//!
//! ```
//! use axum::{extract::State, routing::post, Router};
//! use comet_push::{CometLayer, Hub, Payload, SubscribeRoute};
//!
//! async fn say(State(hub): State<Hub>, text: String) -> &'static str {
//!     match hub.publish("news", Payload::text(text)).await {
//!         Ok(_) => "sent",
//!         Err(_) => "refused",
//!     }
//! }
//!
//! let hub = Hub::new();
//! let app: Router = Router::new()
//!     .route("/say", post(say))
//!     .with_state(hub.clone())
//!     // GET /events?channel=news: text/event-stream, resumable by Last-Event-ID.
//!     .layer(CometLayer::new(hub).route("/events", SubscribeRoute::sse()));
//! ```
//!
//! # Features
//!
//! - `tower` (default): [`CometLayer`] and [`RouteService`], for axum and
//!   any tower-based server.
//! - `serve`: `comet_push::serve()`, an HTTP/1.1 server whose held connections cost
//!   a few KB (`axum::serve`'s cost about 20), in `comet_push::serve`.
//! - `warp`: the same routes as warp filters, in `comet_push::warp`.
//! - `redis`: the Redis engine, in `comet_push::redis`, for several
//!   nodes that serve one set of channels (needs Rust 1.88).
//! - `jwt`: tokens (JWT) for subscribers and publishers, in
//!   `comet_push::protocol::token` (needs Rust 1.88).
//! - `full`: all of the above.
//! - `bench-runtime`: jemalloc for the demos that the benchmark scripts run
//!   (not for apps: pick your allocator yourself).
//!
//! [`protocol`] is for people who write adapters or transports of their own.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use comet_core::*;

/// The wire protocol, for people who write adapters or transports of their
/// own.
pub use comet_protocol as protocol;

pub use comet_protocol::{
    Access, Authorize, AuthorizePublish, Cors, Identify, ProtocolError, PublishRoute,
    ResolveChannels, StaticKeys, SubscribeRoute, Transport,
};

#[cfg(feature = "tower")]
pub use comet_tower::{CometLayer, RouteService};

/// The Tower layer's crate (feature `tower`): the service, its future and
/// body types, beside [`CometLayer`] and [`RouteService`].
#[cfg(feature = "tower")]
pub use comet_tower as tower;

/// An HTTP/1.1 server made for push (feature `serve`): [`serve()`] and its
/// limits; held connections cost a few KB.
#[cfg(feature = "serve")]
pub mod serve {
    pub use comet_serve::*;
}

#[cfg(feature = "serve")]
pub use comet_serve::serve;

/// warp filters (feature `warp`).
#[cfg(feature = "warp")]
pub use comet_warp as warp;

/// The Redis engine (feature `redis`).
#[cfg(feature = "redis")]
pub use comet_redis as redis;

/// The README's Rust snippets, compiled and run as doc tests. They use the
/// `warp` and `redis` features, which `cargo test --workspace` turns on (the
/// adapter crates' doc examples use the facade with them); `cargo test -p
/// comet` alone runs them with `--features full`.
#[cfg(all(doctest, feature = "warp", feature = "redis"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
