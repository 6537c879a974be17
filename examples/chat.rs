//! A small chat on axum with comet: pick a name and a room, and talk.
//!
//! The page receives over Server-Sent Events and falls back to long polling
//! (add `?transport=poll` to the page's URL to force it). Messages are posted
//! to an ordinary axum handler that calls `hub.publish`.
//!
//! The app also mounts the project's reference comet routes at fixed paths,
//! so clients and benchmarks can be pointed at it: `/comet/sse`,
//! `/comet/poll`, `/comet/stream`, `/comet/iframe`, `/comet/jsonp`, and
//! `POST /comet/publish/{channel}`. Publishing is allowed from loopback
//! clients, and from anyone presenting `Authorization: Bearer <token>` when
//! `COMET_PUBLISH_TOKEN=<token>` is set.
//!
//! ```sh
//! cargo run --example chat                    # http://127.0.0.1:3000
//! cargo run --example chat -- --addr 0.0.0.0:8080
//! COMET_ADDR=127.0.0.1:4000 cargo run --example chat
//! ```

use axum::{
    extract::{ConnectInfo, Path, State},
    http::StatusCode,
    response::{Html, IntoResponse},
    routing::{get, post},
    Json, Router,
};
use comet::{
    protocol::{PublishRoute, Route},
    tower::CometLayer,
    Hub, Payload, PublishError,
};
use serde::Deserialize;
use std::{net::SocketAddr, time::SystemTime};
use tracing_subscriber::EnvFilter;

const PAGE: &str = include_str!("assets/chat.html");
const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 2000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let addr = listen_addr()?;
    let hub = Hub::new();
    let token = std::env::var("COMET_PUBLISH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let app = app(hub.clone(), token);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    // Tests and scripts read this line for the port (`--addr 127.0.0.1:0`).
    println!("chat listening on http://{}", listener.local_addr()?);
    tracing::info!(addr = %listener.local_addr()?, "chat listening");
    // Connection info lets the publish route tell loopback clients apart.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: ending streams and held polls");
        // Ends every SSE stream and answers every held poll with its
        // cursor, so the server stops promptly and clients resume later.
        hub.shutdown();
    })
    .await?;
    tracing::info!("stopped");
    Ok(())
}

/// The whole app: the page, the chat API, and the reference comet routes.
fn app(hub: Hub, publish_token: Option<String>) -> Router {
    let comet = CometLayer::new(hub.clone())
        .sse("/comet/sse")
        .long_poll("/comet/poll")
        .route("/comet/stream", Route::stream())
        .route("/comet/iframe", Route::iframe())
        .route("/comet/jsonp", Route::jsonp())
        .publish(
            "/comet/publish",
            PublishRoute::new().authorize(move |request, _channel| {
                let loopback = request
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
                loopback
                    || publish_token
                        .as_deref()
                        .is_some_and(|token| bearer_is(request, token))
            }),
        );
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/rooms/{room}/messages", post(say))
        .route("/rooms/{room}/join", post(join))
        .with_state(hub)
        .layer(comet)
}

/// True when the request carries `Authorization: Bearer <token>`; compared in
/// constant time so the token cannot be guessed byte by byte.
fn bearer_is(request: &axum::http::request::Parts, token: &str) -> bool {
    let Some(given) = request
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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

async fn say(
    State(hub): State<Hub>,
    Path(room): Path<String>,
    Json(said): Json<Said>,
) -> impl IntoResponse {
    let name = check("name", &said.name, MAX_NAME)?;
    let text = check("text", &said.text, MAX_TEXT)?;
    let payload = Payload::json(&serde_json::json!({ "name": name, "text": text, "at": now_ms() }))
        .expect("a JSON object serializes");
    publish(&hub, &room, payload.event("said")).await
}

async fn join(
    State(hub): State<Hub>,
    Path(room): Path<String>,
    Json(joined): Json<Joined>,
) -> impl IntoResponse {
    let name = check("name", &joined.name, MAX_NAME)?;
    let payload = Payload::json(&serde_json::json!({ "name": name, "at": now_ms() }))
        .expect("a JSON object serializes");
    publish(&hub, &room, payload.event("joined")).await
}

async fn publish(
    hub: &Hub,
    room: &str,
    payload: Payload,
) -> Result<impl IntoResponse, (StatusCode, String)> {
    match hub.publish(&format!("room/{room}"), payload).await {
        Ok(cursor) => Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({ "cursor": cursor })),
        )),
        Err(PublishError::Engine(error)) => {
            Err((StatusCode::SERVICE_UNAVAILABLE, error.to_string()))
        }
        Err(error) => Err((StatusCode::BAD_REQUEST, error.to_string())),
    }
}

fn check<'a>(what: &str, value: &'a str, max: usize) -> Result<&'a str, (StatusCode, String)> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("{what} must be 1 to {max} characters"),
        ));
    }
    Ok(value)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `--addr HOST:PORT`, else `COMET_ADDR`, else 127.0.0.1:3000.
fn listen_addr() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = std::env::var("COMET_ADDR").ok();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = Some(args.next().ok_or("--addr needs HOST:PORT")?),
            other => match other.strip_prefix("--addr=") {
                Some(value) => addr = Some(value.to_owned()),
                None => {
                    return Err(format!(
                        "unknown argument {other:?}; usage: chat [--addr HOST:PORT]"
                    ))
                }
            },
        }
    }
    let addr = addr.unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    addr.parse()
        .map_err(|e| format!("bad address {addr:?}: {e}"))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
