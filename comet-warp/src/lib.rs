//! comet routes as [warp](https://docs.rs/warp) filters.
//!
//! Each filter answers a request the way PROTOCOL.md says, errors included,
//! using the protocol implementation shared with every adapter
//! ([`comet_push::protocol`](comet_protocol)); this crate only turns a warp request into an
//! `http::request::Parts` and the answer into a warp reply.
//!
//! [`mount`] serves a whole [`Mount`] (comet's routes at their paths, by the
//! same rules as the tower layer's) and rejects every other path, so the
//! app's own filters follow it with `or`:
//!
//! ```
//! use comet_push::{protocol::Mount, Hub, PublishRoute, SubscribeRoute};
//! use warp::Filter;
//!
//! let hub = Hub::new();
//! let comet = comet_push::warp::mount(
//!     hub.clone(),
//!     Mount::new()
//!         .route("/events", SubscribeRoute::sse())
//!         .route("/push", SubscribeRoute::all())
//!         // POST /publish/room/lobby publishes to `room/lobby`.
//!         .publish(
//!             "/publish",
//!             PublishRoute::new().authorize(|request, _| request.headers.contains_key("x-admin")),
//!         ),
//! );
//! let app = warp::path!("hello").map(|| "hello");
//! let routes = comet.or(app);
//! // warp::serve(routes).run(([127, 0, 0, 1], 3000)).await;
//! ```
//!
//! The single filters ([`route`], [`publish`], [`client`], [`not_found`])
//! compose after path filters of your own choosing instead. Because such a
//! filter answers every request it sees (a wrong method gets the protocol's
//! 405, not a warp rejection), put it after any filter of your own that
//! shares its path. On warp the client's address is in the request
//! extensions as [`RemoteAddr`], for policies that need it.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use bytes::{Buf, Bytes};
use comet_core::Hub;
use comet_protocol::{self as protocol, CometBody, Endpoint, Mount, PublishRoute, SubscribeRoute};
use futures_util::{Stream, StreamExt};
use http::request::Parts;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use std::{convert::Infallible, net::SocketAddr};
use warp::{filters::path::FullPath, reply::Reply, Filter};

/// The address of the client, in the extensions of the request parts that
/// policies see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// Serves `route`: a subscribe route with any transports and options.
pub fn route(
    hub: Hub,
    route: SubscribeRoute,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    request_parts().then(move |parts: Parts| {
        let answer = route.serve(&hub, &parts);
        async move { into_reply(answer.await) }
    })
}

/// Serves Server-Sent Events with default options.
pub fn sse(
    hub: Hub,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    route(hub, SubscribeRoute::sse())
}

/// Serves long polling (JSON) with default options.
pub fn long_poll(
    hub: Hub,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    route(hub, SubscribeRoute::long_poll())
}

/// Serves newline-delimited JSON (`transport=stream` on the wire) with
/// default options.
pub fn ndjson(
    hub: Hub,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    route(hub, SubscribeRoute::ndjson())
}

/// Serves the forever frame with default options.
pub fn iframe(
    hub: Hub,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    route(hub, SubscribeRoute::iframe())
}

/// Serves JSONP long polling with default options.
pub fn jsonp(
    hub: Hub,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    route(hub, SubscribeRoute::jsonp())
}

/// Serves the browser client, `comet.js`, with `route`'s CORS:
/// `warp::path!("push" / "comet.js").and(comet_push::warp::client(SubscribeRoute::all()))`.
pub fn client(
    route: SubscribeRoute,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    request_parts().map(move |parts: Parts| into_reply(route.serve_client(&parts)))
}

/// Answers every request with the protocol's JSON 404 (`not_found`): put it
/// last under a comet prefix, so that a path there that no comet filter
/// serves gets the protocol's error rather than warp's empty rejection:
/// `warp::path("comet").and(comet_push::warp::not_found())`.
pub fn not_found() -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    request_parts().map(|parts: Parts| into_reply(protocol::not_found(&parts)))
}

/// Accepts publishing: the path left unmatched by the filters before this one
/// names the channel (or the `channel` parameter does).
pub fn publish(
    hub: Hub,
    route: PublishRoute,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    request_parts().and(warp::path::tail()).and(body()).then(
        move |parts: Parts, tail: warp::path::Tail, body: RequestBody| {
            // The mount is the part of the path matched before this filter.
            let path = parts.uri.path();
            let mount = path.strip_suffix(tail.as_str()).unwrap_or(path).to_owned();
            let answer = route.serve(&hub, &mount, &parts, body);
            async move { into_reply(answer.await) }
        },
    )
}

/// Serves every route of `mount` at its path (the tower layer's rules; see
/// [`Mount`]) and rejects every other request, for the app's filters that
/// follow with `or`.
pub fn mount(
    hub: Hub,
    mount: Mount,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let mount = std::sync::Arc::new(mount);
    // Paths that are the app's are rejected before anything else is read:
    // the app's own filters still find the body there.
    let endpoint = warp::path::full().and_then(move |path: FullPath| {
        let found = mount
            .find(path.as_str())
            .map(|(at, endpoint)| (at.to_owned(), endpoint.clone()));
        async move { found.ok_or_else(warp::reject::not_found) }
    });
    endpoint.and(request_parts()).and(body()).then(
        move |(at, endpoint): (String, Endpoint), parts: Parts, body: RequestBody| {
            let answer = endpoint.serve(&hub, &at, http::Request::from_parts(parts, body));
            async move { into_reply(answer.await) }
        },
    )
}

/// The request's parts as `http` types: method, URI, headers, and the
/// client's address as [`RemoteAddr`].
fn request_parts() -> impl Filter<Extract = (Parts,), Error = Infallible> + Clone {
    let query = warp::query::raw()
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::addr::remote())
        .map(
            |method, path: FullPath, query: Option<String>, headers, remote: Option<SocketAddr>| {
                let uri = match query {
                    Some(query) => format!("{}?{query}", path.as_str()),
                    None => path.as_str().to_owned(),
                };
                let mut request = http::Request::new(());
                *request.method_mut() = method;
                // warp parsed this path and query from a valid URI already.
                *request.uri_mut() = uri.parse().unwrap_or_default();
                *request.headers_mut() = headers;
                if let Some(addr) = remote {
                    request.extensions_mut().insert(RemoteAddr(addr));
                }
                request.into_parts().0
            },
        )
}

/// The request body as an `http_body::Body`, read only if the publish route
/// accepts the request.
type RequestBody =
    StreamBody<std::pin::Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, warp::Error>> + Send>>>;

fn body() -> impl Filter<Extract = (RequestBody,), Error = Infallible> + Clone {
    warp::body::stream()
        .map(|stream| {
            let frames = StreamExt::map(stream, to_frame);
            StreamBody::new(Box::pin(frames) as std::pin::Pin<Box<dyn Stream<Item = _> + Send>>)
        })
        // The body can be taken once; a request without one publishes nothing.
        .or(warp::any().map(|| {
            StreamBody::new(Box::pin(futures_util::stream::empty())
                as std::pin::Pin<Box<dyn Stream<Item = _> + Send>>)
        }))
        .unify()
}

fn to_frame<B: Buf>(chunk: Result<B, warp::Error>) -> Result<Frame<Bytes>, warp::Error> {
    chunk.map(|mut buf| Frame::data(buf.copy_to_bytes(buf.remaining())))
}

/// Turns a comet answer into a warp reply. Complete bodies are sent as they
/// are (with a length); streams go through `warp::reply::stream`, which needs
/// a `Send + Sync` stream — `CometBody` is both, so no wrapper is needed.
fn into_reply(response: http::Response<CometBody>) -> warp::reply::Response {
    let (parts, body) = response.into_parts();
    let mut reply = match body.try_into_bytes() {
        Ok(bytes) => warp::reply::Response::new(bytes.into()),
        Err(stream) => warp::reply::stream(stream.into_data_stream()).into_response(),
    };
    *reply.status_mut() = parts.status;
    *reply.headers_mut() = parts.headers;
    reply
}
