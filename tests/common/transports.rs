//! The fixture of the transport tests (once tests/transports.rs): a hub
//! with payload and subscriber limits, routes for every transport, CORS
//! and publishing, and request helpers.

use comet_push::{
    engine::Engine,
    protocol::{Cors, PublishRoute, SubscribeRoute},
    HistoryPolicy, Hub, MemoryEngine,
};
use comet_test_support::*;
use serde_json::Value;
use std::{sync::Arc, time::Duration};

pub const ORIGIN: &str = "https://www.example.com";

pub fn hub_on(engine: Arc<dyn Engine>) -> Hub {
    Hub::builder()
        .engine(engine)
        .max_payload_bytes(1024)
        .max_subscribers_per_channel(2)
        .max_subscribers(20)
        .build()
}

pub fn engine() -> Arc<dyn Engine> {
    Arc::new(MemoryEngine::with_policy_fn(
        Arc::new(|name: &comet_push::ChannelName| HistoryPolicy {
            max_messages: if name.as_str().starts_with("small/") {
                3
            } else {
                1000
            },
            max_age: None,
        }),
        comet_push::DEFAULT_IDLE_TTL,
    ))
}

pub fn mounts() -> Vec<Mount> {
    let fast = Duration::from_millis(50);
    vec![
        Mount::Subscribe("/stream", SubscribeRoute::ndjson().heartbeat(fast)),
        Mount::Subscribe("/stream-small", SubscribeRoute::ndjson().byte_budget(600)),
        Mount::Subscribe("/iframe", SubscribeRoute::iframe().heartbeat(fast)),
        Mount::Subscribe("/iframe-small", SubscribeRoute::iframe().byte_budget(1500)),
        Mount::Subscribe(
            "/jsonp",
            SubscribeRoute::jsonp().max_hold(Duration::from_secs(5)),
        ),
        Mount::Subscribe("/sse", SubscribeRoute::sse()),
        Mount::Subscribe("/poll", SubscribeRoute::long_poll()),
        Mount::Subscribe(
            "/cors",
            SubscribeRoute::all().cors(Cors::allow_origins([ORIGIN]).allow_credentials(true)),
        ),
        Mount::Subscribe(
            "/cors-any",
            SubscribeRoute::long_poll().cors(Cors::any_origin()),
        ),
        Mount::Publish(
            "/publish",
            PublishRoute::new()
                .authorize(|request, channel| {
                    request
                        .headers
                        .get("authorization")
                        .is_some_and(|v| v == "Bearer ok")
                        && !channel.as_str().starts_with("readonly/")
                })
                .cors(Cors::allow_origins([ORIGIN])),
        ),
        Mount::Publish("/closed", PublishRoute::new()),
    ]
}

pub async fn start(adapter: Adapter) -> (Hub, TestServer) {
    let hub = hub_on(engine());
    let server = TestServer::start(adapter, &hub, mounts()).await;
    (hub, server)
}

/// An SSE subscription whose preamble has arrived (so it is subscribed).
pub async fn open_sse(server: &TestServer, path: &str) -> SseReader {
    let mut reader = SseReader::new(get(server, path).await);
    reader.opened().await;
    reader
}

pub async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    bounded(path, client().get(server.url(path)).send())
        .await
        .unwrap()
}

pub fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

pub fn publish(server: &TestServer, path: &str) -> reqwest::RequestBuilder {
    client()
        .post(server.url(path))
        .header("authorization", "Bearer ok")
}
