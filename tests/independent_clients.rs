//! SSE as clients nobody here wrote read it (PROTOCOL.md, "Payloads",
//! "Streaming transports", "Event types", presence's events): the npm
//! `eventsource` package under Node, and Python's httpx-sse, run by
//! `comet_test_support::clients`.
//!
//! A missing client: reported as ignored, unless `COMET_CLIENT_TESTS=1`
//! (CI sets it), where it fails.

use comet_push::{
    protocol::{ProtocolError, PublishRoute, SubscribeRoute},
    Hub, Identity, Payload,
};
use comet_test_support::{
    bounded, client,
    clients::{node_eventsource, python_httpx_sse, ClientProcess},
    eventually, expect_error, Adapter, Mount, SseReader, TestServer,
};
use http::request::Parts;
use serde_json::{json, Value};
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
        comet_test_support::tool_test!(
            npm_eventsource_gets_presence_joins_and_leaves_as_events_without_an_id,
            [NodeEventSource]
        ),
        comet_test_support::tool_test!(
            httpx_sse_yields_presence_joins_and_leaves_and_keeps_its_last_event_id,
            [HttpxSse]
        ),
        comet_test_support::tool_test!(
            npm_eventsource_with_its_token_in_the_query_resumes_after_expiry_losing_nothing,
            [NodeEventSource]
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

/// Test only: the user a request names with `user=`, with `{"name": user}`
/// as info (an app takes it from a session or a signed token).
fn identify(request: &Parts) -> Result<Option<Identity>, ProtocolError> {
    let query = request.uri.query().unwrap_or("");
    let Some(user) = query.split('&').find_map(|pair| pair.strip_prefix("user=")) else {
        return Ok(None);
    };
    Identity::new(user)
        .and_then(|i| i.with_info(json!({ "name": user })))
        .map(Some)
        .map_err(|e| ProtocolError::bad_request(e.to_string()))
}

/// A hub whose channels have presence, its SSE route at `/comet/presence`
/// (identity from `user=`, a short grace) and its publish route.
async fn presence_server() -> (Hub, TestServer) {
    let hub = Hub::builder().presence(true).build();
    let route = SubscribeRoute::sse()
        .identify(identify)
        .presence_grace(Duration::from_millis(200));
    let server = TestServer::start(
        Adapter::Axum,
        &hub,
        vec![
            Mount::Subscribe("/comet/presence", route),
            Mount::Publish("/comet/publish", PublishRoute::new().authorize(|_, _| true)),
        ],
    )
    .await;
    (hub, server)
}

/// What a client printed of one event: its type, its data, and the last
/// event id it reports with it. `kind` is the client's name for the type.
fn event(line: &Value, kind: &str) -> (String, String, String) {
    assert_eq!(line["kind"], "event", "{line}");
    let text = |v: &Value| v.as_str().unwrap_or_else(|| panic!("{line}")).to_owned();
    (text(&line[kind]), text(&line["data"]), text(&line["id"]))
}

/// A presence event's data, parsed.
fn data(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// How a client reports the id of an event that has no `id:` field.
#[derive(Clone, Copy)]
enum NoId {
    /// As the last event id, unchanged (the SSE spec's `lastEventId`;
    /// httpx-sse's `ServerSentEvent.id`).
    LastId,
    /// As "" (the npm package's `MessageEvent.lastEventId` is the event's
    /// own; the id it resumes from changes only with an `id:` field).
    Empty,
}

impl NoId {
    /// The id such an event is reported with, after `last_id`.
    fn after(self, last_id: &str) -> &str {
        match self {
            NoId::LastId => last_id,
            NoId::Empty => "",
        }
    }
}

/// A watcher's events, but its own join: the server may send it after the
/// list that already names the watcher (set semantics), wherever it comes.
/// Its id too must be that of an event without one, after `last_id`.
async fn next_but_own_join(
    watcher: &mut ClientProcess,
    kind: &str,
    no_id: NoId,
    last_id: &str,
) -> (String, String, String) {
    loop {
        let (type_, text, id) = event(&watcher.next().await, kind);
        if type_ == "comet-join" && data(&text)["user"] == "watcher" {
            assert_eq!(id, no_id.after(last_id), "the watcher's join had an id");
            continue;
        }
        return (type_, text, id);
    }
}

/// The watcher's next event is bob's `wanted` (`comet-join` or
/// `comet-leave`), with bob's info and no id of its own.
async fn expect_bob(
    watcher: &mut ClientProcess,
    kind: &str,
    no_id: NoId,
    last_id: &str,
    wanted: &str,
) {
    let (type_, text, id) = next_but_own_join(watcher, kind, no_id, last_id).await;
    assert_eq!(type_, wanted);
    assert_eq!(
        data(&text),
        json!({ "channel": "room", "user": "bob", "info": { "name": "bob" } })
    );
    assert_eq!(id, no_id.after(last_id), "{wanted} had an id");
}

/// Presence as a parser nobody here wrote reads it: the list first, then a
/// message, bob's join and leave, and a last message. The presence events
/// carry no id: the client reports them without one of their own (`no_id`),
/// and the next message has its own, after the first's.
async fn presence_scenario(
    server: &TestServer,
    watcher: &mut ClientProcess,
    kind: &str,
    no_id: NoId,
) {
    // Who is there as it starts: the watcher, with its info.
    let (type_, list, id) = next_but_own_join(watcher, kind, no_id, "").await;
    assert_eq!(type_, "comet-presence");
    assert_eq!(id, "", "no message yet, no id");
    assert_eq!(
        data(&list),
        json!({ "type": "presence", "channel": "room", "users": 1, "connections": 1,
                "presence": [{ "user": "watcher", "info": { "name": "watcher" }, "connections": 1 }] })
    );
    let published = publish(server, "room", false, None, "first").await;
    assert_eq!(published.status(), 201);
    let (type_, text, first_id) = next_but_own_join(watcher, kind, no_id, "").await;
    assert_eq!((type_.as_str(), text.as_str()), ("room", "first"));
    assert!(!first_id.is_empty());

    let response = bounded(
        "bob",
        client()
            .get(server.url("/comet/presence?channel=room&user=bob"))
            .send(),
    )
    .await
    .unwrap();
    let mut bob = SseReader::new(response);
    bob.opened().await;
    expect_bob(watcher, kind, no_id, &first_id, "comet-join").await;
    drop(bob);
    expect_bob(watcher, kind, no_id, &first_id, "comet-leave").await;

    assert_eq!(
        publish(server, "room", false, None, "end").await.status(),
        201
    );
    let (type_, text, end_id) = next_but_own_join(watcher, kind, no_id, &first_id).await;
    assert_eq!((type_.as_str(), text.as_str()), ("room", "end"));
    assert!(!end_id.is_empty() && end_id != first_id);
}

async fn npm_eventsource_gets_presence_joins_and_leaves_as_events_without_an_id() {
    let (_hub, server) = presence_server().await;
    let url = server.url("/comet/presence?channel=room&presence=1&user=watcher");
    let types = ["room", "comet-presence", "comet-join", "comet-leave"];
    let Some(mut watcher) = node_eventsource("npm eventsource presence", &url, &types) else {
        return;
    };
    assert_eq!(watcher.next().await["kind"], "open");
    presence_scenario(&server, &mut watcher, "type", NoId::Empty).await;
    watcher.finish().await;
}

async fn httpx_sse_yields_presence_joins_and_leaves_and_keeps_its_last_event_id() {
    let (_hub, server) = presence_server().await;
    let url = server.url("/comet/presence?channel=room&presence=1&user=watcher");
    let Some(mut watcher) = python_httpx_sse("httpx-sse presence", &url) else {
        return;
    };
    assert_eq!(watcher.next().await["kind"], "opened");
    presence_scenario(&server, &mut watcher, "event", NoId::LastId).await;
    watcher.finish().await;
}

/// A client on another origin cannot send cookies or headers through an
/// `EventSource`: its token rides in the query (PROTOCOL.md, "Access").
/// The npm `eventsource` package with a 2-s token: refused without one,
/// then messages until the expiry's `comet-end`, and with a fresh token and
/// the end's cursor, what came meanwhile, nothing twice.
async fn npm_eventsource_with_its_token_in_the_query_resumes_after_expiry_losing_nothing() {
    use comet_push::protocol::{
        token::{Claims, TokenSigner, Tokens, VerifyingKey},
        Cors,
    };
    const SECRET: &[u8] = b"an independent client's 32 bytes";
    let hub = Hub::new();
    let tokens = Tokens::new().key("k1", VerifyingKey::hs256(SECRET).unwrap());
    let route = SubscribeRoute::sse()
        .authorizer(tokens)
        .cors(Cors::any_origin());
    let server = TestServer::start(Adapter::Axum, &hub, vec![Mount::Subscribe("/t", route)]).await;
    let token = |seconds| {
        let claims = Claims::new(["news/*"], Duration::from_secs(seconds)).subject("reader");
        TokenSigner::hs256(SECRET)
            .unwrap()
            .kid("k1")
            .sign(&claims)
            .unwrap()
    };
    let types = ["news/a", "comet-end"];

    let url = server.url("/t?channel=news/a");
    let Some(mut refused) = node_eventsource("npm eventsource token", &url, &types) else {
        return;
    };
    let error = refused.next().await;
    assert_eq!(error["kind"], "error", "{error}");
    assert!(
        error["message"].as_str().unwrap_or("").contains("401"),
        "{error}"
    );
    refused.finish().await;

    let url = server.url(&format!("/t?channel=news/a&token={}", token(2)));
    let mut reader = node_eventsource("npm eventsource token", &url, &types).unwrap();
    assert_eq!(reader.next().await["kind"], "open");
    for n in 1..=2 {
        hub.publish("news/a", Payload::json(&json!({ "n": n })).unwrap())
            .await
            .unwrap();
    }
    let seen = reader.until(|line| line["type"] == "comet-end").await;
    let data: Vec<&str> = seen
        .iter()
        .filter(|l| l["type"] == "news/a")
        .map(|l| l["data"].as_str().unwrap())
        .collect();
    assert_eq!(data, [r#"{"n":1}"#, r#"{"n":2}"#]);
    let end = seen.last().unwrap();
    let envelope: Value = serde_json::from_str(end["data"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["reason"], "expired", "{end}");
    let cursor = end["id"].as_str().unwrap().to_owned();
    assert_eq!(
        envelope["cursor"],
        cursor.as_str(),
        "the id is the cursor to resume from"
    );
    reader.finish().await;

    // Published while the client gets its new token.
    hub.publish("news/a", Payload::json(&json!({ "n": 3 })).unwrap())
        .await
        .unwrap();
    let url = server.url(&format!(
        "/t?channel=news/a&token={}&cursor={cursor}",
        token(60)
    ));
    let mut resumed = node_eventsource("npm eventsource token", &url, &types).unwrap();
    assert_eq!(resumed.next().await["kind"], "open");
    let next = resumed.next().await;
    assert_eq!(
        (&next["type"], &next["data"]),
        (&json!("news/a"), &json!(r#"{"n":3}"#)),
        "{next}"
    );
    resumed.finish().await;
}
