//! The comet wire protocol (PROTOCOL.md), written once on the `http` crate's
//! types so that every server adapter stays thin.
//!
//! An adapter matches its routes' paths and calls [`serve`] (subscribe
//! routes) or [`PublishRoute::serve`] with the request; the answer is an
//! `http::Response<CometBody>`, where [`CometBody`] is an `http_body::Body`
//! any hyper-based server can send. Request parameters, cursor precedence,
//! transport negotiation, error bodies, headers, CORS, every transport's
//! framing, long-poll holding and batching, and publishing all live here.

mod body;
mod client;
mod cors;
mod encode;
mod error;
mod format;
mod params;
mod policy;
mod publish;
mod route;
mod serve;
mod transport;

pub use body::CometBody;
pub use client::{
    client_script_url, client_version, serve_client, CLIENT_SCRIPT, CLIENT_SCRIPT_NAME,
    CLIENT_TYPES,
};
pub use cors::Cors;
pub use encode::{DEFAULT_CALLBACK_REGISTRY, MAX_CALLBACK_LEN};
pub use error::{not_found, ErrorCode, ProtocolError};
pub use format::{Frames, StreamFormat};
pub use params::{SubscribeParams, MAX_HEADER_BYTES, MAX_QUERY_LEN};
pub use policy::{AllowAll, Authorize, QueryChannels, ResolveChannels};
pub use publish::{AuthorizePublish, PublishRoute};
pub use route::{
    Route, DEFAULT_BYTE_BUDGET, DEFAULT_HEARTBEAT, DEFAULT_MAX_BATCH, DEFAULT_MAX_HOLD,
};
pub use serve::{serve, ResponseFuture};
pub use transport::Transport;
