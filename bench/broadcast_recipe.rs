//! Bench only: the push server users would write by hand without comet,
//! axum's `Sse` over a `tokio::sync::broadcast` channel per channel name, for
//! `bench/compare.sh` to measure comet against. No history, no cursors, no
//! resume, no long polling: a lagging subscriber silently skips messages.
//!
//! `GET /sse?channel=NAME`, `POST /publish/NAME`; and `GET /hold`, a bare held
//! axum SSE connection that sends nothing (the baseline of comet's own
//! per-connection memory).

use axum::{
    extract::{Path, Query, State},
    response::sse::{Event, KeepAlive, Sse},
    routing::{get, post},
    Router,
};
use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};
use tokio::sync::broadcast;
use tokio_stream::{wrappers::BroadcastStream, Stream, StreamExt};

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<Arc<str>>>>>;

fn sender(channels: &Channels, name: &str) -> broadcast::Sender<Arc<str>> {
    let mut channels = channels.lock().unwrap();
    channels
        .entry(name.to_owned())
        .or_insert_with(|| broadcast::channel(1024).0)
        .clone()
}

async fn sse(
    State(channels): State<Channels>,
    Query(query): Query<HashMap<String, String>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let name = query.get("channel").cloned().unwrap_or_default();
    let stream = BroadcastStream::new(sender(&channels, &name).subscribe())
        .filter_map(|message| message.ok())
        .map(|data| Ok(Event::default().data(&*data)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn publish(
    State(channels): State<Channels>,
    Path(name): Path<String>,
    body: String,
) -> &'static str {
    let _ = sender(&channels, &name).send(Arc::from(body));
    "ok"
}

async fn hold() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(tokio_stream::pending())
}

#[tokio::main]
async fn main() {
    let addr = std::env::var("COMET_ADDR").unwrap_or_else(|_| "127.0.0.1:3200".into());
    let app = Router::new()
        .route("/sse", get(sse))
        .route("/publish/{channel}", post(publish))
        .route("/hold", get(hold))
        .with_state(Channels::default());
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    println!(
        "recipe listening on http://{}",
        listener.local_addr().unwrap()
    );
    axum::serve(listener, app).await.unwrap();
}
