//! Real-time push for axum and other Tower apps: add one layer.
//!
//! [`CometLayer`] serves comet routes (Server-Sent Events, long polling) at
//! the paths you give it and passes every other request to your app
//! untouched. Your handlers publish with [`Hub::publish`](comet_core::Hub::publish);
//! browsers subscribe with `EventSource` or by polling, and resume with the
//! cursor of the last item they saw, losing nothing.
//!
//! ```
//! use axum::{extract::State, routing::post, Router};
//! use comet_push::{Hub, Payload, SubscribeRoute};
//! use comet_push::CometLayer;
//!
//! #[derive(serde::Deserialize)]
//! struct Say { room: String, text: String }
//!
//! async fn say(State(hub): State<Hub>, axum::Json(say): axum::Json<Say>) -> &'static str {
//!     let payload = Payload::json(&serde_json::json!({ "text": say.text })).unwrap();
//!     match hub.publish(&format!("room/{}", say.room), payload.event("said")).await {
//!         Ok(_) => "sent",
//!         Err(_) => "refused",
//!     }
//! }
//!
//! # fn main() {
//! let hub = Hub::new();
//! let app = Router::new()
//!     .route("/say", post(say))
//!     .with_state(hub.clone())
//!     .layer(
//!         CometLayer::new(hub.clone())
//!             // GET /events?channel=room/lobby  (text/event-stream)
//!             .sse("/events")
//!             // GET /poll?channel=room/lobby&cursor=...  (application/json)
//!             .long_poll("/poll")
//!             // Only rooms may be subscribed to, checked on every request.
//!             .route(
//!                 "/rooms",
//!                 SubscribeRoute::sse().authorize(|_request, channels| {
//!                     channels.iter().all(|c| c.as_str().starts_with("room/"))
//!                 }),
//!             ),
//!     );
//! # let _ = serve(app, hub); // built and checked here; served by `serve` below
//! # }
//! # async fn serve(app: Router, hub: Hub) {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let shutdown = hub.clone();
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         // Ends every stream and answers every held poll, so the server can stop.
//!         shutdown.shutdown();
//!     })
//!     .await
//!     .unwrap();
//! # }
//! ```
//!
//! The crate follows tower-http's anatomy: [`CometLayer`] (the layer),
//! [`Comet`] (the service), [`ResponseFuture`] and [`ResponseBody`]; and
//! [`RouteService`] mounts a single route with `Router::route_service`
//! (its future is [`route_service::ResponseFuture`]).
//! The protocol itself lives in [`comet_push::protocol`](comet_protocol), shared by every adapter.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod future;
mod layer;
pub mod route_service;
mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::CometLayer;
pub use route_service::RouteService;
pub use service::Comet;

pub use comet_core::Hub;
/// The protocol types a route is configured with, re-exported for convenience.
pub use comet_protocol::{Cors, ProtocolError, PublishRoute, SubscribeRoute, Transport};
