//! SSE as clients nobody here wrote read it (PROTOCOL.md, "Payloads",
//! "Streaming transports", "Event types"): the npm `eventsource` package
//! under Node, and Python's httpx-sse, run by `comet_test_support::clients`.
//!
//! A missing client: reported as ignored, unless `COMET_CLIENT_TESTS=1`
//! (CI sets it), where it fails.

use comet::{
    protocol::{PublishRoute, SubscribeRoute},
    Hub, Payload,
};
use comet_test_support::{
    bounded, client,
    clients::{node_eventsource, python_httpx_sse},
    eventually, expect_error, Adapter, Mount, SseReader, TestServer,
};
use serde_json::Value;
use std::time::Duration;

fn main() {
    comet_test_support::tool::run(vec![
        comet_test_support::tool_test!(
            npm_eventsource_gets_every_payload_as_published_and_no_open_or_error_from_a_message,
            [NodeEventSource]
        ),
        comet_test_support::tool_test!(
            httpx_sse_yields_exactly_the_messages_not_the_opening_or_heartbeats,
            [HttpxSse]
        ),
    ]);
}

/// JSON a re-serializing server would change: a number past f64, duplicate
/// and unsorted keys, escapes, line breaks between tokens, raw U+2028 and
/// text that means something in HTML.
const JSON_BODIES: [&str; 3] = [
    "{\"n\": 12345678901234567890123, \"z\": 1, \"a\": 2, \"z\": 3}",
    "{\n  \"b\": [1.0, -0.0, 1e300],\r\n  \"a\": \"\\u00e9 \u{e9} \\\" \\\\ \\n \\u2028 </script>\"\r}",
    "[\"\u{2028}raw\", \"<!--\", \"&amp;\", {}]",
];

/// What an SSE client gives as `data`: the lines joined with LF.
fn sse_data(body: &str) -> String {
    body.replace("\r\n", "\n").replace('\r', "\n")
}

async fn server(hub: &Hub) -> TestServer {
    TestServer::start(
        Adapter::Axum,
        hub,
        vec![
            Mount::Subscribe("/comet/sse", SubscribeRoute::sse()),
            Mount::Subscribe(
                "/comet/sse-fast",
                SubscribeRoute::sse().heartbeat(Duration::from_millis(20)),
            ),
            Mount::Publish("/comet/publish", PublishRoute::new().authorize(|_, _| true)),
        ],
    )
    .await
}

async fn publish(
    server: &TestServer,
    channel: &str,
    json: bool,
    event: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut request = client()
        .post(server.url(&format!("/comet/publish/{channel}")))
        .header(
            "content-type",
            if json {
                "application/json"
            } else {
                "text/plain"
            },
        )
        .body(body.to_owned());
    if let Some(event) = event {
        request = request.header("comet-event", event);
    }
    bounded("publish", request.send()).await.unwrap()
}

async fn npm_eventsource_gets_every_payload_as_published_and_no_open_or_error_from_a_message() {
    let hub = Hub::new();
    let server = server(&hub).await;
    let url = server.url("/comet/sse?channel=room");
    let Some(mut source) = node_eventsource("npm eventsource", &url, &["room", "said"]) else {
        return;
    };
    assert_eq!(source.next().await["kind"], "open");

    // PROTOCOL.md, "Event types": names an EventSource takes for its own
    // are refused. Published first, checked after the client has had
    // everything: had any gone out, the client would show it.
    let mut refusals = Vec::new();
    for (channel, event, code) in [
        ("room", Some("error"), "bad_event"),
        ("room", Some("open"), "bad_event"),
        ("error", None, "bad_channel"),
        ("open", None, "bad_channel"),
    ] {
        refusals.push((publish(&server, channel, false, event, "x").await, code));
    }
    let mut expected = Vec::new();
    for body in JSON_BODIES {
        assert_eq!(
            publish(&server, "room", true, None, body).await.status(),
            201
        );
        expected.push(("room".to_owned(), sse_data(body)));
    }
    for (event, body) in [
        (Some("said"), "line\r\nbreaks\rand\nmore"),
        (Some("message"), "default type"),
        (None, "end"),
    ] {
        assert_eq!(
            publish(&server, "room", false, event, body).await.status(),
            201
        );
        expected.push((event.unwrap_or("room").to_owned(), sse_data(body)));
    }

    let seen = source.until(|line| line["data"] == "end").await;
    let stray: Vec<&Value> = seen.iter().filter(|l| l["kind"] != "event").collect();
    assert!(
        stray.is_empty(),
        "open or error events from messages: {stray:?}"
    );
    let got: Vec<(String, String)> = seen
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_owned(),
                l["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert!(seen.iter().all(|l| !l["id"].as_str().unwrap().is_empty()));
    for (refused, code) in refusals {
        expect_error(refused, 400, code).await;
    }
    source.finish().await;
}

async fn httpx_sse_yields_exactly_the_messages_not_the_opening_or_heartbeats() {
    let hub = Hub::new();
    let server = server(&hub).await;
    let url = server.url("/comet/sse-fast?channel=hb");
    let Some(mut source) = python_httpx_sse("httpx-sse", &url) else {
        return;
    };
    assert_eq!(source.next().await["kind"], "opened");
    eventually("httpx-sse subscribed", || {
        hub.local_subscriber_count("hb") == 1
    })
    .await;
    // A reader of the raw bytes on the same route, to know when heartbeats
    // have gone by (every 20 ms on both streams).
    let response = bounded("observer", client().get(&url).send())
        .await
        .unwrap();
    let mut observer = SseReader::new(response);
    observer.opened().await;

    hub.publish("hb", Payload::text("first\r\nmessage"))
        .await
        .unwrap();
    // PROTOCOL.md, "Streaming transports": nothing before the first message
    // is an event, and `retry:` comes with it.
    let first = source.next().await;
    assert_eq!(first["data"], "first\nmessage", "{first}");
    assert_eq!(first["event"], "hb");
    assert_eq!(first["retry"], 2000);
    observer.next_event().await;
    observer.comments_after(5).await;
    hub.publish("hb", "end").await.unwrap();
    let next = source.next().await;
    assert_eq!(
        next["data"], "end",
        "heartbeats were yielded as events: {next}"
    );
    source.finish().await;
}
