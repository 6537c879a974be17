//! The comet wire protocol (PROTOCOL.md), written once on the `http` crate's
//! types so that every server adapter stays thin.
//!
//! An adapter matches its routes' paths and calls [`serve`] with the request's
//! head; the answer is an `http::Response<CometBody>`, where [`CometBody`] is
//! an `http_body::Body` any hyper-based server can send. Request parameters,
//! cursor precedence, transport negotiation, error bodies, headers, SSE
//! framing and long-poll holding and batching all live here.

mod body;
mod encode;
mod error;
mod params;
mod policy;
mod route;
mod serve;
mod transport;

pub use body::CometBody;
pub use error::ProtocolError;
pub use params::{SubscribeParams, MAX_QUERY_LEN};
pub use policy::{AllowAll, Authorize, QueryChannels, ResolveChannels};
pub use route::{Route, DEFAULT_HEARTBEAT, DEFAULT_MAX_BATCH, DEFAULT_MAX_HOLD};
pub use serve::{serve, ResponseFuture};
pub use transport::Transport;
