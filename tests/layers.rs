//! End-to-end over real sockets: comet's routes inside the tower-http layers
//! an axum app already has (compression, timeouts, CORS, tracing), each
//! outside the `CometLayer` as `Router::layer` puts it.

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use comet_push::{
    protocol::{Cors, SubscribeRoute},
    Hub,
};
use comet_test_support::*;
use futures_util::StreamExt;
use serde_json::Value;
use std::{
    io::Write,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tower_http::{
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    timeout::{ResponseBodyTimeoutLayer, TimeoutLayer},
    trace::TraceLayer,
};

const ORIGIN: &str = "https://www.example.com";
/// How late a message may arrive after its publish, through any layer.
const PROMPT: Duration = Duration::from_millis(500);
/// The timeouts of the apps under test.
const LIMIT: Duration = Duration::from_secs(1);

/// Every transport on its own route, with the default heartbeat (15 s, so
/// none arrives during a test) but on `/beat`.
fn mounts() -> Vec<Mount> {
    vec![
        Mount::Subscribe("/sse", SubscribeRoute::sse()),
        Mount::Subscribe("/stream", SubscribeRoute::ndjson()),
        Mount::Subscribe("/iframe", SubscribeRoute::iframe()),
        Mount::Subscribe("/poll", SubscribeRoute::long_poll()),
        Mount::Subscribe("/jsonp", SubscribeRoute::jsonp()),
        Mount::Subscribe(
            "/beat",
            SubscribeRoute::ndjson().heartbeat(Duration::from_millis(250)),
        ),
        Mount::Subscribe(
            "/cors",
            SubscribeRoute::all().cors(Cors::allow_origins([ORIGIN]).allow_credentials(true)),
        ),
    ]
}

/// comet (and the app's `/hello`) inside `layer`.
async fn serve_inside<L>(layer: L) -> (Hub, TestServer)
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<axum::extract::Request> + Clone + Send + Sync + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Response:
        axum::response::IntoResponse + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Error:
        Into<std::convert::Infallible> + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
{
    let hub = Hub::new();
    let server = TestServer::axum(axum_app(&hub, mounts()).layer(layer)).await;
    (hub, server)
}

/// Decodes a body as its bytes arrive, as a browser does.
enum Decoder {
    Identity(Vec<u8>),
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
    Brotli(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
}

impl Decoder {
    fn for_encoding(encoding: Option<&str>) -> Self {
        match encoding {
            None => Self::Identity(vec![]),
            Some("gzip") => Self::Gzip(Box::new(flate2::write::GzDecoder::new(vec![]))),
            Some("br") => Self::Brotli(Box::new(brotli_decompressor::DecompressorWriter::new(
                vec![],
                4096,
            ))),
            Some(other) => panic!("unexpected content-encoding {other}"),
        }
    }

    /// The bytes `chunk` completes.
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let out = match self {
            Self::Identity(out) => {
                out.extend_from_slice(chunk);
                out
            }
            Self::Gzip(d) => {
                d.write_all(chunk).unwrap();
                d.flush().unwrap();
                d.get_mut()
            }
            Self::Brotli(d) => {
                d.write_all(chunk).unwrap();
                d.flush().unwrap();
                d.get_mut()
            }
        };
        std::mem::take(out)
    }
}

/// A response body read line by line after decoding.
struct Decoded {
    stream: Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    decoder: Decoder,
    buf: Vec<u8>,
    /// Every decoded byte so far.
    text: Vec<u8>,
}

/// The `Content-Encoding` of a response, if any.
fn encoding(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned())
}

impl Decoded {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        let decoder = Decoder::for_encoding(encoding(&response).as_deref());
        Self {
            stream: Box::pin(response.bytes_stream()),
            decoder,
            buf: vec![],
            text: vec![],
        }
    }

    /// The next decoded line; `Err` when the body ends, or fails, first.
    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => {
                    let decoded = self.decoder.push(&chunk);
                    self.text.extend_from_slice(&decoded);
                    self.buf.extend_from_slice(&decoded);
                }
                Some(Err(error)) => return Err(format!("failed: {error}")),
                None => return Err("ended".into()),
            }
        }
    }

    /// The next line that is not a heartbeat (of any transport).
    async fn item(&mut self) -> String {
        loop {
            let line = self.line().await.expect("the stream goes on");
            if !(line.is_empty() || line.starts_with(':') || line.contains("heartbeat")) {
                return line;
            }
        }
    }

    /// Reads the body to its end; whether it ended cleanly.
    async fn until_end(&mut self) -> Result<(), String> {
        loop {
            match self.line().await {
                Ok(_) => {}
                Err(end) if end == "ended" => return Ok(()),
                Err(failure) => return Err(failure),
            }
        }
    }
}

/// The channel and data of a stream item: an ndjson line, a forever-frame
/// call or an SSE `data:` line (SSE's channel is its `event:` line before).
fn parse(line: &str) -> Value {
    let json = match line.strip_prefix("<script>parent.cb(") {
        Some(call) => call.strip_suffix(");</script>").unwrap(),
        None => line,
    };
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A long-poll or JSONP answer's JSON.
fn poll_body(transport: &str, text: &str) -> Value {
    let json = match transport {
        "jsonp" => text
            .strip_prefix("/**/cb(")
            .and_then(|t| t.strip_suffix(");"))
            .unwrap_or_else(|| panic!("not a JSONP answer: {text}")),
        _ => text,
    };
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// A subscribe request's path: the channel, and a callback where the
/// transport takes one.
fn path(transport: &str, query: &str) -> String {
    match transport {
        "iframe" | "jsonp" => format!("/{transport}?{query}&callback=cb"),
        _ => format!("/{transport}?{query}"),
    }
}

/// Reads the next stream item of `transport` as "channel:data".
async fn next_item(transport: &str, body: &mut Decoded) -> String {
    match transport {
        "sse" => {
            let mut channel = String::new();
            loop {
                let line = body.item().await;
                if let Some(event) = line.strip_prefix("event: ") {
                    channel = event.to_owned();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    return format!("{channel}:{data}");
                }
            }
        }
        "iframe" => loop {
            // The page's padding and markup come before the calls.
            let line = body.item().await;
            if line.starts_with("<script>") {
                return describe(&parse(&line));
            }
        },
        _ => describe(&parse(&body.item().await)),
    }
}

fn gets(server: &TestServer, path: &str, accept: &str) -> reqwest::RequestBuilder {
    client()
        .get(server.url(path))
        .header("accept-encoding", accept)
}

/// Compression outside comet: ndjson, the forever frame, polls and JSONP are
/// compressed in both codecs, SSE is not (the layer's default predicate),
/// and every message of a stream arrives within 0.5 s of its publish: the
/// encoder flushes whenever comet's body waits for the next message.
#[tokio::test]
async fn compression_outside_comet_compresses_all_but_sse_and_delays_nothing() {
    let (hub, server) = serve_inside(CompressionLayer::new()).await;
    for accept in ["gzip", "br"] {
        for (transport, compressed) in [("sse", false), ("stream", true), ("iframe", true)] {
            let channel = format!("{transport}-{accept}");
            let response = bounded(
                "subscribe",
                gets(
                    &server,
                    &path(transport, &format!("channel={channel}")),
                    accept,
                )
                .send(),
            )
            .await
            .unwrap();
            let expected = compressed.then_some(accept.to_owned());
            assert_eq!(encoding(&response), expected, "{transport} with {accept}");
            assert!(response
                .headers()
                .get_all("cache-control")
                .iter()
                .any(|v| v.to_str().unwrap().contains("no-transform")));
            let mut body = Decoded::new(response);
            eventually("subscribed", || hub.local_subscriber_count(&channel) == 1).await;
            for i in 0..3 {
                hub.publish(&channel, format!("m{i}")).await.unwrap();
                let published = Instant::now();
                let item = within(PROMPT, "a message through the compressor", async {
                    next_item(transport, &mut body).await
                })
                .await;
                assert_eq!(item, format!("{channel}:m{i}"));
                assert!(published.elapsed() < PROMPT);
            }
            if transport == "iframe" {
                // The page's padding came through whole, decoded.
                assert!(body.text.starts_with(b"<!doctype html>"));
                assert!(body.text.len() > 1024);
            }
        }
        for transport in ["poll", "jsonp"] {
            let channel = format!("{transport}-{accept}");
            let cursor = hub.current_cursor([channel.as_str()]).await.unwrap();
            let held = tokio::spawn(
                gets(
                    &server,
                    &path(transport, &format!("channel={channel}&cursor={cursor}")),
                    accept,
                )
                .send(),
            );
            eventually("held", || hub.local_subscriber_count(&channel) == 1).await;
            hub.publish(&channel, "held").await.unwrap();
            let response = within(PROMPT, "the held poll's answer", held)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(encoding(&response).as_deref(), Some(accept), "{transport}");
            let mut decoder = Decoder::for_encoding(Some(accept));
            let text = decoder.push(&bounded("poll body", response.bytes()).await.unwrap());
            let body = poll_body(transport, std::str::from_utf8(&text).unwrap());
            let items: Vec<String> = body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(describe)
                .collect();
            assert_eq!(items, [format!("{channel}:held")]);
        }
    }
    // A client that asks for no encoding gets none.
    let plain = bounded(
        "plain",
        gets(&server, "/poll?channel=p&timeout=0", "identity").send(),
    )
    .await
    .unwrap();
    assert_eq!(encoding(&plain), None);
}

fn timeout_layer() -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, LIMIT)
}

/// `TimeoutLayer` times the response's head: a held long poll is cut at the
/// limit (408, no body, so no cursor), and the client resumes with the
/// cursor it had: nothing lost, nothing twice.
#[tokio::test]
async fn a_long_poll_cut_by_a_timeout_layer_resumes_with_nothing_lost() {
    let (hub, server) = serve_inside(timeout_layer()).await;
    let poll_from = |cursor: &str| {
        client().get(server.url(&format!("/poll?channel=t&cursor={cursor}&timeout=20")))
    };
    let start = hub.current_cursor(["t"]).await.unwrap().to_string();
    hub.publish("t", "before").await.unwrap();
    let first = poll(poll_from(&start)).await;
    assert_eq!(first.items(), ["t:before"]);
    let cursor = first.cursor().to_owned();

    // Held with nothing to answer: the layer cuts it, not comet's 20 s hold.
    let held = Instant::now();
    let cut = bounded("the cut", poll_from(&cursor).send()).await.unwrap();
    assert_eq!(cut.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(held.elapsed() >= LIMIT);
    assert!(cut.headers().get("etag").is_none());
    eventually("the cut poll left", || hub.local_subscriber_count("t") == 0).await;

    hub.publish("t", "after the cut").await.unwrap();
    let resumed = poll(poll_from(&cursor)).await;
    assert_eq!(resumed.items(), ["t:after the cut"]);
    let next = tokio::spawn(poll(poll_from(resumed.cursor())));
    eventually("held again", || hub.local_subscriber_count("t") == 1).await;
    hub.publish("t", "last").await.unwrap();
    assert_eq!(bounded("last", next).await.unwrap().items(), ["t:last"]);
}

/// `TimeoutLayer` does not cut a stream: its head is sent at once, and the
/// layer times nothing after it.
#[tokio::test]
async fn a_timeout_layer_leaves_a_stream_open_past_its_limit() {
    let (hub, server) = serve_inside(timeout_layer()).await;
    let response = bounded(
        "subscribe",
        gets(&server, "/stream?channel=s", "identity").send(),
    )
    .await
    .unwrap();
    let mut body = Decoded::new(response);
    eventually("subscribed", || hub.local_subscriber_count("s") == 1).await;
    // The limit passing is what is tested: nothing to await instead.
    tokio::time::sleep(LIMIT + Duration::from_millis(300)).await;
    hub.publish("s", "late").await.unwrap();
    let item = bounded("late", next_item("stream", &mut body)).await;
    assert_eq!(item, "s:late");
}

/// `ResponseBodyTimeoutLayer` cuts a body idle past its limit: a stream
/// whose heartbeat is longer is cut, and resumes with its last cursor with
/// nothing lost or twice; a heartbeat under the limit keeps it open.
#[tokio::test]
async fn a_stream_cut_by_a_body_timeout_resumes_with_nothing_lost() {
    let (hub, server) = serve_inside(ResponseBodyTimeoutLayer::new(LIMIT)).await;
    let stream_from =
        |cursor: &str| client().get(server.url(&format!("/stream?channel=b&cursor={cursor}")));
    let start = hub.current_cursor(["b"]).await.unwrap().to_string();
    hub.publish("b", "before").await.unwrap();
    let opened = Instant::now();
    let mut body = Decoded::new(
        bounded("subscribe", stream_from(&start).send())
            .await
            .unwrap(),
    );
    let first = parse(&bounded("before", body.item()).await);
    assert_eq!(describe(&first), "b:before");
    let cut = bounded("the cut", body.until_end()).await;
    assert!(cut.is_err(), "a body timeout is an error, not an end");
    assert!(opened.elapsed() >= LIMIT);
    eventually("the cut stream left", || {
        hub.local_subscriber_count("b") == 0
    })
    .await;

    hub.publish("b", "after the cut").await.unwrap();
    let cursor = first["cursor"].as_str().unwrap();
    let mut resumed = Decoded::new(bounded("resume", stream_from(cursor).send()).await.unwrap());
    assert_eq!(
        bounded("resumed", next_item("stream", &mut resumed)).await,
        "b:after the cut"
    );
    hub.publish("b", "last").await.unwrap();
    assert_eq!(
        bounded("last", next_item("stream", &mut resumed)).await,
        "b:last"
    );

    // A heartbeat every 250 ms: idle for longer than the limit, still open.
    let mut beating = Decoded::new(
        bounded(
            "subscribe",
            gets(&server, "/beat?channel=h", "identity").send(),
        )
        .await
        .unwrap(),
    );
    eventually("subscribed", || hub.local_subscriber_count("h") == 1).await;
    tokio::time::sleep(LIMIT + Duration::from_millis(300)).await;
    hub.publish("h", "still here").await.unwrap();
    assert_eq!(
        bounded("kept open", next_item("stream", &mut beating)).await,
        "h:still here"
    );
}

/// The CORS headers of one answer, each name's values in order.
fn cors_headers(headers: &reqwest::header::HeaderMap) -> Vec<(String, Vec<String>)> {
    [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-expose-headers",
    ]
    .iter()
    .map(|name| {
        let values = headers
            .get_all(*name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        (name.to_string(), values)
    })
    .collect()
}

/// What a browser would reject: a header given twice, or `*` with credentials.
fn assert_consistent(headers: &reqwest::header::HeaderMap) {
    for (name, values) in cors_headers(headers) {
        assert!(values.len() <= 1, "{name} given twice: {values:?}");
    }
    let star = headers
        .get("access-control-allow-origin")
        .is_some_and(|v| v == "*");
    let credentials = headers.get("access-control-allow-credentials").is_some();
    assert!(!(star && credentials), "* with credentials: {headers:?}");
}

async fn from_origin(server: &TestServer, method: Method, path: &str) -> reqwest::Response {
    let mut request = client()
        .request(method.clone(), server.url(path))
        .header("origin", ORIGIN);
    if method == Method::OPTIONS {
        request = request
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "last-event-id");
    }
    bounded("cors request", request.send()).await.unwrap()
}

/// A long poll of `/cors` from [`ORIGIN`], answered at once.
async fn cors_poll(server: &TestServer) -> reqwest::Response {
    let path = "/cors?channel=c&since=oldest&transport=poll";
    from_origin(server, Method::GET, path).await
}

/// The app's `CorsLayer` outside comet, with the policy of comet's route:
/// the layer answers every preflight itself (comet never sees them), and
/// on other requests its headers replace comet's of the same name. Same
/// policy, same headers: nothing a browser would reject.
#[tokio::test]
async fn an_outer_cors_layer_answers_preflights_and_agrees_with_comets_own() {
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list([ORIGIN.parse().unwrap()]))
        .allow_credentials(true)
        .allow_methods([Method::GET])
        .allow_headers([axum::http::HeaderName::from_static("last-event-id")]);
    let (hub, server) = serve_inside(layer).await;
    hub.publish("c", "x").await.unwrap();

    let poll = cors_poll(&server).await;
    assert_eq!(poll.status(), 200);
    assert_consistent(poll.headers());
    assert_eq!(poll.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(poll.headers()["access-control-allow-credentials"], "true");
    // comet's own, which the layer (exposing nothing) leaves.
    assert_eq!(poll.headers()["access-control-expose-headers"], "etag");

    let sse = from_origin(&server, Method::GET, "/cors?channel=c&transport=sse").await;
    assert_consistent(sse.headers());
    assert_eq!(sse.headers()["access-control-allow-origin"], ORIGIN);

    // comet answers a preflight 204 with `Access-Control-Max-Age: 600`; the
    // layer answers 200 without it: this is the layer's answer.
    let preflight = from_origin(&server, Method::OPTIONS, "/cors?channel=c").await;
    assert_eq!(preflight.status(), 200);
    assert!(preflight.headers().get("access-control-max-age").is_none());
    assert_consistent(preflight.headers());
    assert_eq!(preflight.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(preflight.headers()["access-control-allow-methods"], "GET");
}

/// The rule the README states, pinned: an outer layer's headers replace
/// comet's of the same name, comet's others stay. So a permissive layer
/// over a route with credentials gives `*` (the layer's) with credentials
/// (comet's), which browsers refuse: configure CORS in one place per route.
#[tokio::test]
async fn an_outer_cors_layer_replaces_comets_headers_of_the_same_name() {
    let (hub, server) = serve_inside(CorsLayer::permissive()).await;
    hub.publish("c", "x").await.unwrap();
    let poll = cors_poll(&server).await;
    let h = poll.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "*");
}

/// The app's `CorsLayer` on its own routes only (inside `CometLayer`):
/// comet answers its routes, preflights included, and the layer the app's.
#[tokio::test]
async fn a_cors_layer_inside_comet_leaves_comets_routes_to_comet() {
    let hub = Hub::new();
    let app = axum::Router::new()
        .route("/hello", axum::routing::get(|| async { "hello" }))
        .layer(CorsLayer::permissive())
        .layer(comet_push::tower::CometLayer::new(hub.clone()).route(
            "/cors",
            SubscribeRoute::all().cors(Cors::allow_origins([ORIGIN]).allow_credentials(true)),
        ));
    let server = TestServer::axum(app).await;
    hub.publish("c", "x").await.unwrap();

    let poll = cors_poll(&server).await;
    assert_consistent(poll.headers());
    assert_eq!(poll.headers()["access-control-allow-origin"], ORIGIN);
    let preflight = from_origin(&server, Method::OPTIONS, "/cors?channel=c").await;
    assert_eq!(preflight.status(), 204, "comet's answer");
    assert_consistent(preflight.headers());
    assert_eq!(
        preflight.headers()["access-control-allow-credentials"],
        "true"
    );

    let hello = from_origin(&server, Method::GET, "/hello").await;
    assert_eq!(hello.headers()["access-control-allow-origin"], "*");
}

/// `TraceLayer` outside comet: streams and polls work, every answer is
/// seen by `on_response`, every stream's clean end (on hub shutdown) by
/// `on_eos`, and every message by `on_body_chunk`.
#[tokio::test]
async fn a_trace_layer_sees_every_answer_and_every_streams_end() {
    let responses = Arc::new(AtomicUsize::new(0));
    let ends = Arc::new(AtomicUsize::new(0));
    let chunks = Arc::new(AtomicUsize::new(0));
    let layer = TraceLayer::new_for_http()
        .on_response({
            let responses = responses.clone();
            move |_: &axum::http::Response<_>, _: Duration, _: &tracing::Span| {
                responses.fetch_add(1, Ordering::SeqCst);
            }
        })
        .on_body_chunk({
            let chunks = chunks.clone();
            move |_: &Bytes, _: Duration, _: &tracing::Span| {
                chunks.fetch_add(1, Ordering::SeqCst);
            }
        })
        .on_eos({
            let ends = ends.clone();
            move |_: Option<&HeaderMap>, _: Duration, _: &tracing::Span| {
                ends.fetch_add(1, Ordering::SeqCst);
            }
        });
    let (hub, server) = serve_inside(layer).await;

    let mut streams = vec![];
    for transport in ["sse", "stream", "iframe"] {
        let response = bounded(
            "subscribe",
            gets(&server, &path(transport, "channel=tr"), "identity").send(),
        )
        .await
        .unwrap();
        streams.push((transport, Decoded::new(response)));
    }
    eventually("subscribed", || hub.local_subscriber_count("tr") == 3).await;
    let cursor = hub.current_cursor(["tr"]).await.unwrap();
    let held = tokio::spawn(poll(
        client().get(server.url(&format!("/poll?channel=tr&cursor={cursor}"))),
    ));
    eventually("held", || hub.local_subscriber_count("tr") == 4).await;
    let before = chunks.load(Ordering::SeqCst);
    hub.publish("tr", "traced").await.unwrap();
    for (transport, body) in &mut streams {
        assert_eq!(
            bounded("traced", next_item(transport, body)).await,
            "tr:traced"
        );
    }
    assert_eq!(bounded("poll", held).await.unwrap().items(), ["tr:traced"]);
    // One chunk per stream's message, and the poll's body.
    eventually("chunks seen", || {
        chunks.load(Ordering::SeqCst) >= before + 4
    })
    .await;
    assert_eq!(responses.load(Ordering::SeqCst), 4);

    hub.shutdown();
    for (_, body) in &mut streams {
        bounded("clean end", body.until_end()).await.unwrap();
    }
    // The poll's body was whole: hyper stops at its end without asking the
    // body again, which `on_eos` needs; the streams' ends are all seen.
    eventually("every stream's end seen", || {
        ends.load(Ordering::SeqCst) >= 3
    })
    .await;
}
