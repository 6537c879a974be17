//! Three ways past the built-in adapters, each a few dozen lines, sharing one hub:
//!
//! 1. **A wire format of your own** on axum: `GET /text?channel=news` streams
//!    `channel<TAB>text` lines, readable with plain `curl -N`.
//! 2. **A hyper-only server** (no framework): `SubscribeRoute::serve` answers every
//!    comet request, so an adapter is a `service_fn`.
//! 3. **A non-HTTP transport**: a TCP line protocol driving a `Subscription`
//!    directly. Send `SUB <channel> [cursor]`; receive `<cursor> <text>`
//!    lines, and reconnect with the last cursor to lose nothing.
//!
//! Publish with `POST /say?channel=news` (body: the text) on the axum server.
//!
//! ```sh
//! cargo run --example custom_transport
//! curl -N 'http://127.0.0.1:3001/text?channel=news'
//! curl -d 'hello' 'http://127.0.0.1:3001/say?channel=news'
//! ```

use axum::{extract::Query, routing::post, Router};
use comet_push::{
    protocol::{Chunks, StreamFormat, Transport},
    CometLayer, Cursor, EncodingSlot, Hub, Item, Message, Start, SubscribeRoute,
};
use hyper_util::rt::TokioIo;
use std::{collections::HashMap, sync::LazyLock, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};
use tokio_stream::StreamExt;

/// 1. `channel<TAB>text` lines; a blank line as heartbeat.
struct TextLines;

/// Where each message keeps its line, encoded once for every subscriber.
static TEXT_LINE: LazyLock<EncodingSlot> = LazyLock::new(EncodingSlot::new);

impl StreamFormat for TextLines {
    fn message(&self, message: &Message, _cursor: &Cursor, out: &mut Chunks) {
        // Each message's line is encoded once and shared by every subscriber.
        out.push(message.encoded(&TEXT_LINE, |m| {
            format!("{}\t{}\n", m.channel(), m.text().replace(['\r', '\n'], " ")).into()
        }));
    }

    fn heartbeat(&self) -> Option<bytes::Bytes> {
        Some(bytes::Bytes::from_static(b"\n"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Ports 3001 to 3003, or any free ones with `--ephemeral` (tests use it).
    let ephemeral = std::env::args().any(|arg| arg == "--ephemeral");
    let port = |fixed: u16| if ephemeral { 0 } else { fixed };
    let hub = Hub::new();

    let axum_listener = TcpListener::bind(("127.0.0.1", port(3001))).await?;
    let hyper_listener = TcpListener::bind(("127.0.0.1", port(3002))).await?;
    let tcp_listener = TcpListener::bind(("127.0.0.1", port(3003))).await?;
    println!("axum listening on http://{}", axum_listener.local_addr()?);
    println!("hyper listening on http://{}", hyper_listener.local_addr()?);
    println!("tcp listening on {}", tcp_listener.local_addr()?);

    let text_route =
        SubscribeRoute::new([Transport::custom_stream("text", |_request, _params| {
            Ok(TextLines)
        })])
        .heartbeat(Duration::from_secs(15));
    let publish_hub = hub.clone();
    let app = Router::new()
        .route(
            "/say",
            post(
                move |Query(q): Query<HashMap<String, String>>, body: String| async move {
                    let channel = q.get("channel").map_or("news", String::as_str);
                    match publish_hub.publish(channel, body).await {
                        Ok(cursor) => (http::StatusCode::CREATED, cursor.to_string()),
                        Err(e) => (http::StatusCode::BAD_REQUEST, e.to_string()),
                    }
                },
            ),
        )
        .layer(CometLayer::new(hub.clone()).route("/text", text_route));
    tokio::spawn(async move { axum::serve(axum_listener, app).await });
    tokio::spawn(serve_hyper(hyper_listener, hub.clone()));
    serve_lines(tcp_listener, hub).await
}

/// 2. A comet adapter for hyper alone: SSE at every path.
async fn serve_hyper(listener: TcpListener, hub: Hub) -> std::io::Result<()> {
    let route = SubscribeRoute::sse();
    loop {
        let (stream, _) = listener.accept().await?;
        let (hub, route) = (hub.clone(), route.clone());
        let service =
            hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let (parts, _body) = request.into_parts();
                let answer = route.serve(&hub, &parts);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service),
        );
    }
}

/// 3. A line protocol over TCP, straight on the hub.
async fn serve_lines(listener: TcpListener, hub: Hub) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let (stream, _) = listener.accept().await?;
        let hub = hub.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let Ok(Some(line)) = lines.next_line().await else {
                return;
            };
            let mut words = line.split_whitespace();
            let (Some("SUB"), Some(channel)) = (words.next(), words.next()) else {
                let _ = write
                    .write_all(b"ERR usage: SUB <channel> [cursor]\n")
                    .await;
                return;
            };
            let start = match words.next().map(Cursor::decode) {
                None => Start::head(),
                Some(Ok(cursor)) => Start::cursor(cursor),
                Some(Err(e)) => {
                    let _ = write.write_all(format!("ERR {e}\n").as_bytes()).await;
                    return;
                }
            };
            let mut subscription = match hub.subscribe([channel], start).await {
                Ok(subscription) => subscription,
                Err(e) => {
                    let _ = write.write_all(format!("ERR {e}\n").as_bytes()).await;
                    return;
                }
            };
            let _ = write
                .write_all(format!("OK {}\n", subscription.cursor()).as_bytes())
                .await;
            while let Some(item) = subscription.next().await {
                let line = match &item {
                    Item::Message { message, cursor } => {
                        format!("{cursor} {}\n", message.text().replace('\n', " "))
                    }
                    Item::Gap { missed, cursor, .. } => format!("{cursor} GAP {missed:?}\n"),
                    _ => continue, // presence events: this protocol asks for none
                };
                if write.write_all(line.as_bytes()).await.is_err() {
                    return; // Client gone: dropping the subscription unsubscribes.
                }
            }
        });
    }
}
