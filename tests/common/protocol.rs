//! The fixture of the protocol 1.1 tests (once tests/protocol_1_1.rs): a
//! plain hub, routes at `/comet/...` with no hold, a closed and an open
//! publish route, an engine whose publishes fail, and payload helpers.

use comet_push::{
    engine::{Attachment, ChannelLog, Engine, EngineFuture, PublishFuture, Resume},
    protocol::{Cors, PublishRoute, SubscribeRoute},
    ChannelName, Hub, IdempotencyKey, MemoryEngine, Payload, Position,
};
use comet_test_support::*;
use std::{sync::Arc, time::Duration};

pub const APP_ORIGIN: &str = "https://app.example";

pub fn mounts() -> Vec<Mount> {
    vec![
        Mount::Subscribe("/comet", SubscribeRoute::all().max_hold(Duration::ZERO)),
        Mount::Subscribe("/comet/sse", SubscribeRoute::sse()),
        Mount::Subscribe(
            "/comet/listed",
            SubscribeRoute::jsonp()
                .max_hold(Duration::ZERO)
                .cors(Cors::allow_origins([APP_ORIGIN])),
        ),
        Mount::Subscribe(
            "/comet/open-jsonp",
            SubscribeRoute::jsonp()
                .max_hold(Duration::ZERO)
                .allow_cross_site_jsonp(true),
        ),
        Mount::Subscribe(
            "/comet/own-registry",
            SubscribeRoute::all()
                .max_hold(Duration::ZERO)
                .callback_registry("app_cb"),
        ),
        // Signed in by a session an async lookup finds, or 401.
        Mount::Subscribe(
            "/comet/signed",
            SubscribeRoute::sse().authorize_async(|request, _| {
                let session = request.headers.contains_key("cookie");
                async move {
                    tokio::task::yield_now().await; // a session store, say
                    match session {
                        true => Ok(comet_push::protocol::Access::granted()),
                        false => Err(comet_push::protocol::ProtocolError::unauthorized(
                            "sign in first",
                        )),
                    }
                }
            }),
        ),
        Mount::Publish("/comet/publish", PublishRoute::new().authorize(|_, _| true)),
        Mount::Publish("/comet/closed", PublishRoute::new()),
    ]
}

/// An engine whose publishes fail, as one with an unreachable backplane.
pub struct Unreachable(pub MemoryEngine);

impl Engine for Unreachable {
    fn publish(&self, _: &ChannelName, _: Payload, _: Option<&IdempotencyKey>) -> PublishFuture {
        Box::pin(async { Err("the backplane is unreachable".into()) })
    }
    fn attach(&self, channel: &ChannelName, from: Option<Resume>) -> EngineFuture<Attachment> {
        self.0.attach(channel, from)
    }
    fn head(&self, channel: &ChannelName) -> EngineFuture<Position> {
        self.0.head(channel)
    }
    fn existing(&self, channel: &ChannelName) -> Option<Arc<ChannelLog>> {
        self.0.existing(channel)
    }
    fn channel_count(&self) -> usize {
        self.0.channel_count()
    }
    fn wake_all(&self) {
        self.0.wake_all()
    }
}

pub async fn start(adapter: Adapter) -> (Hub, TestServer) {
    let hub = Hub::new();
    let server = TestServer::start(adapter, &hub, mounts()).await;
    (hub, server)
}

pub async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    bounded("get", client().get(server.url(path)).send())
        .await
        .unwrap()
}

pub async fn post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let request = client()
        .post(server.url(path))
        .header("content-type", content_type)
        .body(body);
    bounded("post", request.send()).await.unwrap()
}

/// Payload bytes a re-serializing server would change (see also
/// tests/independent_clients.rs): a number past f64, duplicate and
/// unsorted keys, escapes, line breaks between tokens, raw U+2028, and text
/// that means something in HTML.
pub const JSON_BODY: &str = "{\"n\": 12345678901234567890123, \"z\": 1, \"a\": 2, \"z\": 3,\r\n \"e\": \"\\u00e9 \u{e9} \\\" \\\\ \\n </script> <!-- & \u{2028}\",\n \"f\": [1.0, -0.0, 1e300]}";

/// PROTOCOL.md, "Payloads": inside strings of a script, `<`, `>`, `&`,
/// U+2028 and U+2029 are `\uXXXX` escapes; nothing else changes.
pub fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}
