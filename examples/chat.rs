//! A small chat on axum with comet: the page joins the lobby at once, under
//! a generated name, with its recent history, and shows what comet does.
//!
//! The page receives through the comet browser client (`/comet/comet.js`),
//! which picks the best transport that works and shares one connection
//! between the tabs of one user (one name). Beside the chat, a panel shows the transport, the cursor,
//! reconnects, fallbacks and gaps as they happen, with controls to force a
//! transport, drop the connection, or restart from an older message's
//! cursor (`?transport=poll`, or sse, stream, jsonp, iframe, in the page's
//! URL forces one from the start; `?name=` and `?room=` pick those). Messages are posted to an ordinary axum
//! handler that calls `hub.publish`.
//!
//! Every room has presence: the page lists who is in it, live, and the
//! room's users and connections on every node. Who a subscriber is comes
//! from a `user=` parameter the page adds to its comet URL (its name, with
//! `{"name": ..}` as info; `common::identify_from_query`). That is for the
//! demo alone and unsafe anywhere else: anyone can claim any name. A real
//! app takes the identity from its session or a signed token
//! (`SubscribeRoute::identify`). `GET /comet/publish/room/<room>` answers
//! the room's cursor, subscribers and presence to whoever may publish. `COMET_CORS_ORIGINS` (comma-separated)
//! lets pages of other origins use `/comet`, with credentials.
//!
//! The app also mounts the project's reference comet routes at fixed paths,
//! so clients and benchmarks can be pointed at it: `/comet` (every
//! transport), `/comet/sse`,
//! `/comet/poll`, `/comet/stream`, `/comet/iframe`, `/comet/jsonp`, and
//! `POST /comet/publish/{channel}`. Publishing is allowed from loopback
//! clients, and from anyone presenting `Authorization: Bearer <token>` when
//! `COMET_PUBLISH_TOKEN=<token>` is set. `examples/warp_chat.rs` is the same
//! app on warp.
//!
//! With `--jwt-secret SECRET` (or `COMET_JWT_SECRET`, 32 bytes or more) the
//! subscribe routes take HS256 tokens alone (401 without one), and the
//! identity is the token's `sub`; `GET /token?user=NAME&channel=room/..`
//! mints a token for the page, valid 60 s (`COMET_TOKEN_TTL_SECS`), which
//! comet.js renews as it expires. That route believes the name it is given,
//! as `user=` does: a real app mints for the user its session names.
//!
//! With `--redis URL` (or `COMET_REDIS_URL`) the rooms live in Redis, so
//! several demo nodes behind any load balancer share them; a
//! `redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE` URL finds the primary
//! through Redis Sentinel and follows its failovers; `--redis` given several
//! times spreads the rooms over that many Redis shards. With
//! `--tls-self-signed` (or `--tls-cert FILE --tls-key FILE`) it serves
//! HTTPS, and browsers speak HTTP/2 to it.
//!
//! ```sh
//! cargo run --example chat                    # http://127.0.0.1:3000
//! cargo run --example chat -- --addr 0.0.0.0:8080
//! COMET_ADDR=127.0.0.1:4000 cargo run --example chat
//! cargo run --example chat -- --addr 127.0.0.1:3001 --redis redis://127.0.0.1:6379
//! cargo run --example chat -- --redis redis+sentinel://127.0.0.1:26379/mymaster
//! cargo run --example chat -- --redis redis://127.0.0.1:6379 --redis redis://127.0.0.1:6380
//! cargo run --example chat -- --tls-self-signed   # https://localhost:3000, HTTP/2
//! cargo run --example chat -- --http2             # h2c beside HTTP/1.1, for load tools
//! cargo run --example chat -- --jwt-secret "$(head -c 32 /dev/urandom | base64)"
//! ```

mod common;
#[path = "common/http1.rs"]
mod http1;
#[path = "common/http2.rs"]
mod http2;
#[path = "../bench/runtime.rs"]
mod runtime;

use axum::{
    extract::{ConnectInfo, Path, RawQuery, State},
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use comet_push::{tower::CometLayer, Hub};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use std::net::SocketAddr;
use tower::ServiceExt;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    runtime::runtime()?.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging();
    let options = common::Options::from_args()?;
    let listener = options.listen().await?;
    let hub = options.hub()?;
    let metrics = PrometheusBuilder::new().install_recorder()?;
    comet_push::telemetry::describe();
    let app = app(
        hub.clone(),
        common::publish_token(),
        options.tokens.clone(),
        metrics,
    );
    // Like `axum::serve(listener, app.into_make_service_with_connect_info())`
    // with graceful shutdown, but HTTP/1.1 only: a held connection then
    // costs about 11 KB rather than 19 KB (see http1.rs).
    let service_for = |peer: SocketAddr| {
        TowerToHyperService::new(
            app.clone()
                .map_request(move |mut request: http::Request<_>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                }),
        )
    };
    let shutdown = common::shut_down_on_signal(hub);
    match &options.tls {
        None if options.h2c => http2::serve(listener, None, service_for, shutdown).await?,
        None => http1::serve(listener, service_for, shutdown).await?,
        // Over TLS, browsers speak HTTP/2: every stream of a page on one
        // connection (see http2.rs).
        Some(tls) => {
            let (certificates, key) = match tls {
                common::Tls::SelfSigned => {
                    let (cert, key) = http2::self_signed(&["localhost", "127.0.0.1"])?;
                    (vec![cert], key)
                }
                common::Tls::Files { cert, key } => http2::load_pem(cert, key)?,
            };
            let acceptor = http2::tls_acceptor(certificates, key)?;
            http2::serve(listener, Some(acceptor), service_for, shutdown).await?
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The whole app: the page, the chat API, the reference comet routes, and
/// comet's metrics for Prometheus at `/metrics`.
fn app(
    hub: Hub,
    publish_token: Option<String>,
    tokens: Option<common::DemoTokens>,
    metrics: PrometheusHandle,
) -> Router {
    let comet = CometLayer::from_mount(
        hub.clone(),
        common::mount(publish_token, tokens.as_ref(), |request| {
            let peer = request.extensions.get::<ConnectInfo<SocketAddr>>();
            peer.map(|c| c.0)
        }),
    );
    let page = common::page(tokens.is_some());
    let token_route = match tokens {
        Some(tokens) => get(move |query: RawQuery| async move { mint(&tokens, query) }),
        None => get(|| async { StatusCode::NOT_FOUND }),
    };
    Router::new()
        .route("/", get(move || async move { Html(page) }))
        .route("/token", token_route)
        .route("/rooms/{room}/messages", post(say))
        .route("/rooms/{room}/join", post(join))
        .route("/stats", get(stats))
        .route(
            "/metrics",
            get(move || async move {
                metrics.run_upkeep();
                metrics.render()
            }),
        )
        .with_state(hub)
        .layer(comet)
        .layer(axum::middleware::from_fn(publish_deadline))
}

/// `GET /token?user=NAME&channel=room/..`: a short-lived token for the
/// page (`--jwt-secret`); 400 for a name or channel the chat refuses.
fn mint(tokens: &common::DemoTokens, RawQuery(query): RawQuery) -> Response {
    let (mut user, mut channels) = (String::new(), Vec::new());
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "user" => user = value.into_owned(),
            "channel" => channels.push(value.into_owned()),
            _ => {}
        }
    }
    match tokens.mint(&user, &channels) {
        Some(token) => ([(http::header::CACHE_CONTROL, "no-store")], token).into_response(),
        None => (StatusCode::BAD_REQUEST, "a chat name, and room/ channels").into_response(),
    }
}

/// How long a publish may take, reading its body included. hyper times out
/// only the reading of headers (see `http1.rs`); a client that dribbles a
/// body a byte a second would hold its connection for as long as it likes.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Answers a publish that is not done within [`PUBLISH_TIMEOUT`] with 408
/// (and hyper closes the connection, whose body was not read to the end).
async fn publish_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() != http::Method::POST || !request.uri().path().starts_with("/comet/publish")
    {
        return next.run(request).await;
    }
    // `COMET_PUBLISH_TIMEOUT_MS` shortens it for tests.
    let limit = std::env::var("COMET_PUBLISH_TIMEOUT_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(PUBLISH_TIMEOUT, std::time::Duration::from_millis);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(serde_json::json!({
                "error": "request_timeout",
                "message": "the request body did not arrive in time",
            })),
        )
            .into_response(),
    }
}

/// `GET /stats`: the hub's counters and the process's open file descriptors,
/// for loopback clients (the load scenarios read it).
async fn stats(State(hub): State<Hub>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if !peer.ip().is_loopback() {
        return StatusCode::FORBIDDEN.into_response();
    }
    let stats = hub.stats();
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count());
    Json(serde_json::json!({
        "subscribers": stats.subscribers,
        "channels": stats.channels,
        "published": stats.published,
        "delivered": stats.delivered,
        "fds": fds,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct Said {
    name: String,
    text: String,
}

#[derive(Deserialize)]
struct Joined {
    name: String,
}

async fn say(State(hub): State<Hub>, Path(room): Path<String>, Json(said): Json<Said>) -> Response {
    answer(common::say(&hub, &room, &said.name, &said.text).await)
}

async fn join(
    State(hub): State<Hub>,
    Path(room): Path<String>,
    Json(joined): Json<Joined>,
) -> Response {
    answer(common::join(&hub, &room, &joined.name).await)
}

fn answer(result: Result<String, common::Refusal>) -> Response {
    match result {
        Ok(json) => (
            StatusCode::CREATED,
            [("content-type", "application/json")],
            json,
        )
            .into_response(),
        Err((status, reason)) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            reason,
        )
            .into_response(),
    }
}
