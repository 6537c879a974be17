//! The fixture of the SSE and long-poll tests (once tests/sse_and_poll.rs):
//! a hub with small histories under `small/` and at most 4 channels a
//! subscription, and routes at `/comet/...`, `/private` and `/me`.

use comet_push::{
    protocol::{ProtocolError, SubscribeRoute, Transport},
    HistoryPolicy, Hub,
};
use comet_test_support::*;
use std::time::Duration;

pub fn hub() -> Hub {
    Hub::builder()
        .history_for(|name| HistoryPolicy {
            max_messages: if name.as_str().starts_with("small/") {
                3
            } else {
                1000
            },
            max_age: None,
        })
        .max_channels_per_subscription(4)
        .build()
}

/// The comet routes under test, mounted the same way on every adapter.
pub fn mounts() -> Vec<Mount> {
    vec![
        Mount::Subscribe("/comet/sse", SubscribeRoute::sse()),
        Mount::Subscribe(
            "/comet/sse-fast",
            SubscribeRoute::sse().heartbeat(Duration::from_millis(50)),
        ),
        Mount::Subscribe(
            "/comet/poll",
            SubscribeRoute::long_poll().max_hold(Duration::from_secs(5)),
        ),
        Mount::Subscribe(
            "/comet/either",
            SubscribeRoute::new([Transport::long_poll(), Transport::sse()]),
        ),
        Mount::Subscribe(
            "/private",
            SubscribeRoute::long_poll().authorize(|request, channels| {
                request
                    .headers
                    .get("authorization")
                    .is_some_and(|v| v == "Bearer ok")
                    && channels.iter().all(|c| c.as_str().starts_with("team/"))
            }),
        ),
        Mount::Subscribe(
            "/me",
            SubscribeRoute::long_poll().channels(|request, _| {
                let user = request.headers.get("x-user").and_then(|v| v.to_str().ok());
                let user = user.ok_or_else(|| ProtocolError::forbidden("who are you?"))?;
                Ok(vec![format!("user/{user}")])
            }),
        ),
    ]
}

pub async fn start(adapter: Adapter) -> (Hub, TestServer) {
    let hub = hub();
    let server = TestServer::start(adapter, &hub, mounts()).await;
    (hub, server)
}

pub async fn sse(server: &TestServer, query: &str) -> SseReader {
    let response = bounded(
        "sse connect",
        client()
            .get(server.url(&format!("/comet/sse?{query}")))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(
        response.headers()["cache-control"],
        "no-cache, no-transform"
    );
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut reader = SseReader::new(response);
    reader.opened().await;
    reader
}
