//! End-to-end over real sockets: the ndjson stream, forever frame and JSONP
//! transports, publishing over HTTP, CORS, limits and graceful shutdown.

use comet::{
    engine::Engine,
    protocol::{Cors, PublishRoute, SubscribeRoute},
    HistoryPolicy, Hub, MemoryEngine, Payload,
};
use comet_test_support::*;
use serde_json::{json, Value};
use std::{sync::Arc, time::Duration};

const ORIGIN: &str = "https://www.example.com";

fn hub_on(engine: Arc<dyn Engine>) -> Hub {
    Hub::builder()
        .engine(engine)
        .max_payload_bytes(1024)
        .max_subscribers_per_channel(2)
        .max_subscribers(20)
        .build()
}

fn engine() -> Arc<dyn Engine> {
    Arc::new(MemoryEngine::with_policy_fn(
        Arc::new(|name: &comet::ChannelName| HistoryPolicy {
            max_messages: if name.as_str().starts_with("small/") {
                3
            } else {
                1000
            },
            max_age: None,
        }),
        comet::DEFAULT_IDLE_TTL,
    ))
}

fn mounts() -> Vec<Mount> {
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

async fn start(adapter: Adapter) -> (Hub, TestServer) {
    let hub = hub_on(engine());
    let server = TestServer::start(adapter, &hub, mounts()).await;
    (hub, server)
}

/// An SSE subscription whose preamble has arrived (so it is subscribed).
async fn open_sse(server: &TestServer, path: &str) -> SseReader {
    let mut reader = SseReader::new(get(server, path).await);
    reader.opened().await;
    reader
}

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    bounded(path, client().get(server.url(path)).send())
        .await
        .unwrap()
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

// ---- ndjson stream ----------------------------------------------------------

async fn stream_sends_one_envelope_per_line_and_resumes_by_cursor(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["s"]).await.unwrap();
    let response = get(&server, &format!("/stream?channel=s&cursor={cursor}")).await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let mut lines = LineReader::new(response);
    hub.publish("s", "one").await.unwrap();
    hub.publish("s", Payload::json(&json!({"two": 2})).unwrap().event("e"))
        .await
        .unwrap();
    let mut got = vec![];
    let mut last = Value::Null;
    while got.len() < 2 {
        let envelope = parse(&lines.line().await.unwrap());
        if envelope["type"] == "heartbeat" {
            continue;
        }
        got.push(describe(&envelope));
        last = envelope;
    }
    assert_eq!(got, ["s:one", "s:{\"two\":2}"]);
    assert_eq!(last["event"], "e");
    drop(lines);
    hub.publish("s", "three").await.unwrap();
    let resumed = get(
        &server,
        &format!(
            "/stream?channel=s&cursor={}",
            last["cursor"].as_str().unwrap()
        ),
    )
    .await;
    let mut lines = LineReader::new(resumed);
    let envelope = loop {
        let envelope = parse(&lines.line().await.unwrap());
        if envelope["type"] != "heartbeat" {
            break envelope;
        }
    };
    assert_eq!(describe(&envelope), "s:three");
}

async fn stream_reports_gaps_and_sends_heartbeat_envelopes_when_idle(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["small/s"]).await.unwrap();
    for i in 1..=5 {
        hub.publish("small/s", i.to_string()).await.unwrap();
    }
    let mut lines =
        LineReader::new(get(&server, &format!("/stream?channel=small/s&cursor={cursor}")).await);
    let mut got = vec![];
    for _ in 0..6 {
        got.push(describe(&parse(&lines.line().await.unwrap())));
    }
    assert_eq!(
        got,
        [
            "small/s:gap:2",
            "small/s:3",
            "small/s:4",
            "small/s:5",
            "heartbeat",
            "heartbeat"
        ]
    );
}

async fn stream_ends_after_its_byte_budget_and_resuming_loses_nothing(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["b"]).await.unwrap();
    let sent: Vec<String> = (0..12)
        .map(|i| format!("{i:03}-{}", "x".repeat(100)))
        .collect();
    for text in &sent {
        hub.publish("b", text.as_str()).await.unwrap();
    }
    let mut received = vec![];
    let mut cursor = cursor.encode();
    let mut connections = 0;
    while received.len() < sent.len() {
        connections += 1;
        assert!(connections < 20, "too many reconnects");
        let mut lines = LineReader::new(
            get(&server, &format!("/stream-small?channel=b&cursor={cursor}")).await,
        );
        // The server ends the body by itself once past its budget.
        let body = lines.until_end().await;
        assert!(
            lines.raw.len() < 600 + 400,
            "ended soon after the budget: {}",
            lines.raw.len()
        );
        for line in body {
            let envelope = parse(&line);
            if envelope["type"] == "message" {
                received.push(envelope["data"].as_str().unwrap().to_owned());
                cursor = envelope["cursor"].as_str().unwrap().to_owned();
            }
        }
        if received.len() == sent.len() {
            break;
        }
    }
    assert!(connections > 1, "the budget ended at least one stream");
    assert_eq!(received, sent, "in order, none lost, none twice");
}

// ---- forever frame ----------------------------------------------------------

async fn iframe_pads_its_first_chunk_and_calls_the_callback_per_item(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let response = get(&server, "/iframe?channel=f&callback=__comet_cb.receive").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let mut page = LineReader::new(response);
    // Before anything is published, the page already sent over 1 KiB.
    page.at_least(1025).await;
    let preamble = String::from_utf8(page.raw.clone()).unwrap();
    assert!(preamble.starts_with("<!doctype html>"));
    // Padding, then at once a heartbeat (the parent's sign that the frame
    // is live; an iframe shows none until its document ends) and no item.
    let padding = preamble.find("<script").expect("a heartbeat at once");
    assert!(padding > 1024, "the padding comes first");
    assert_eq!(
        &preamble[padding..],
        "<script>parent.__comet_cb.receive({\"type\":\"heartbeat\"});</script>\n"
    );
    // Idle: heartbeat calls keep the page alive.
    let heartbeat = loop {
        let line = page.line().await.unwrap();
        if line.starts_with("<script>") {
            break line;
        }
    };
    assert_eq!(
        heartbeat,
        "<script>parent.__comet_cb.receive({\"type\":\"heartbeat\"});</script>"
    );

    hub.publish("f", "hello").await.unwrap();
    let call = loop {
        let line = page.line().await.unwrap();
        if line.starts_with("<script>") && !line.contains("heartbeat") {
            break line;
        }
    };
    let json = call
        .strip_prefix("<script>parent.__comet_cb.receive(")
        .and_then(|s| s.strip_suffix(");</script>"))
        .unwrap_or_else(|| panic!("unexpected call {call}"));
    assert_eq!(describe(&parse(json)), "f:hello");
}

async fn iframe_and_jsonp_keep_hostile_payloads_inert(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let hostile = [
        "</script><script>alert(1)</script>",
        "<!-- <script>",
        "a\u{2028}b\u{2029}c",
        "&lt; & \"quotes\" \\ '",
        "</SCRIPT>",
    ];
    let cursor = hub.current_cursor(["h"]).await.unwrap();
    for text in hostile {
        hub.publish("h", text).await.unwrap();
    }
    hub.publish(
        "h",
        Payload::json(&json!({"k": "</script>\u{2028}"})).unwrap(),
    )
    .await
    .unwrap();

    let mut page = LineReader::new(
        get(
            &server,
            &format!("/iframe?channel=h&callback=cb&cursor={cursor}"),
        )
        .await,
    );
    let mut calls = vec![];
    while calls.len() < hostile.len() + 1 {
        let line = page.line().await.unwrap();
        // Items only: heartbeats (one comes at once) carry nothing.
        if line.starts_with("<script>")
            && line != "<script>parent.cb({\"type\":\"heartbeat\"});</script>"
        {
            calls.push(line);
        }
    }
    for (call, text) in calls.iter().zip(hostile) {
        let json = call
            .strip_prefix("<script>parent.cb(")
            .unwrap()
            .strip_suffix(");</script>")
            .unwrap();
        for raw in ["<", ">", "\u{2028}", "\u{2029}"] {
            assert!(!json.contains(raw), "{raw:?} appears raw in {json}");
        }
        assert_eq!(parse(json)["data"], text, "means the same after parsing");
    }
    assert_eq!(
        parse(
            calls[5]
                .strip_prefix("<script>parent.cb(")
                .unwrap()
                .strip_suffix(");</script>")
                .unwrap()
        )["data"],
        json!({"k": "</script>\u{2028}"})
    );

    let response = get(
        &server,
        &format!("/jsonp?channel=h&callback=cb&cursor={cursor}"),
    )
    .await;
    assert_eq!(
        response.headers()["content-type"],
        "application/javascript; charset=utf-8"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let script = response.text().await.unwrap();
    let json = script
        .strip_prefix("/**/cb(")
        .unwrap()
        .strip_suffix(");")
        .unwrap();
    for raw in ["<", ">", "\u{2028}", "\u{2029}"] {
        assert!(!json.contains(raw), "{raw:?} appears raw in JSONP");
    }
    let body = parse(json);
    let data: Vec<Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data.len(), 6);
    assert_eq!(data[0], hostile[0]);
}

async fn hostile_callbacks_are_refused(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    for path in ["/jsonp", "/iframe"] {
        for callback in [
            "alert(1)",
            "a;b",
            "%3C%2Fscript%3E",
            "x%0Ay",
            "a..b",
            "1abc",
            "",
            &"a".repeat(65),
        ] {
            let response = get(&server, &format!("{path}?channel=c&callback={callback}")).await;
            expect_error(response, 400, "bad_callback").await;
        }
        let missing = get(&server, &format!("{path}?channel=c")).await;
        expect_error(missing, 400, "bad_callback").await;
    }
}

async fn iframe_ends_after_its_byte_budget_and_resuming_loses_nothing(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut cursor = hub.current_cursor(["ib"]).await.unwrap().encode();
    for i in 0..10 {
        hub.publish("ib", format!("{i}-{}", "y".repeat(100)))
            .await
            .unwrap();
    }
    let mut received = vec![];
    for _ in 0..20 {
        let mut page = LineReader::new(
            get(
                &server,
                &format!("/iframe-small?channel=ib&callback=cb&cursor={cursor}"),
            )
            .await,
        );
        for line in page.until_end().await {
            if let Some(json) = line
                .strip_prefix("<script>parent.cb(")
                .and_then(|s| s.strip_suffix(");</script>"))
            {
                let envelope = parse(json);
                if envelope["type"] == "heartbeat" {
                    continue;
                }
                received.push(
                    envelope["data"]
                        .as_str()
                        .unwrap()
                        .split('-')
                        .next()
                        .unwrap()
                        .to_owned(),
                );
                cursor = envelope["cursor"].as_str().unwrap().to_owned();
            }
        }
        if received.len() >= 10 {
            break;
        }
    }
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(received, expected);
}

// ---- JSONP long poll ----------------------------------------------------------

async fn jsonp_holds_batches_and_resumes_by_cursor(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["j"]).await.unwrap();
    let url = server.url(&format!(
        "/jsonp?channel=j&callback=__comet_cb.cb&cursor={cursor}"
    ));
    let held = tokio::spawn(get_text(url));
    eventually("jsonp held", || hub.channel_subscriber_count("j") == 1).await;
    hub.publish("j", "first").await.unwrap();
    let script = bounded("jsonp answer", held).await.unwrap();
    let body = parse(
        script
            .strip_prefix("/**/__comet_cb.cb(")
            .unwrap()
            .strip_suffix(");")
            .unwrap(),
    );
    assert_eq!(describe(&body["messages"][0]), "j:first");
    hub.publish("j", "second").await.unwrap();
    let next = get(
        &server,
        &format!(
            "/jsonp?channel=j&callback=__comet_cb.cb&cursor={}",
            body["cursor"].as_str().unwrap()
        ),
    )
    .await;
    let script = next.text().await.unwrap();
    let body = parse(
        script
            .strip_prefix("/**/__comet_cb.cb(")
            .unwrap()
            .strip_suffix(");")
            .unwrap(),
    );
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(describe(&body["messages"][0]), "j:second");
}

// ---- publishing over HTTP -------------------------------------------------

fn publish(server: &TestServer, path: &str) -> reqwest::RequestBuilder {
    client()
        .post(server.url(path))
        .header("authorization", "Bearer ok")
}

async fn publish_answers_201_with_a_cursor_and_marks_json_and_text(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut sub = hub
        .subscribe(["room/p"], comet::Start::head())
        .await
        .unwrap();
    let text = bounded(
        "publish",
        publish(&server, "/publish/room/p")
            .header("comet-event", "said")
            .body("hi <b>")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(text.status(), 201);
    assert_eq!(text.headers()["content-type"], "application/json");
    let cursor: Value = text.json().await.unwrap();
    let json = publish(&server, "/publish?channel=room/p")
        .header("content-type", "application/json; charset=utf-8")
        .body("{\n  \"a\": [1, 2]\n}")
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 201);

    use futures_util::StreamExt;
    let first = bounded("first", sub.next()).await.unwrap();
    let message = first.message().unwrap();
    assert_eq!(
        (message.kind(), message.text(), message.event()),
        (comet::PayloadKind::Text, "hi <b>", Some("said"))
    );
    assert_eq!(
        first.cursor().encode(),
        cursor["cursor"].as_str().unwrap(),
        "the cursor of the published message"
    );
    let second = bounded("second", sub.next()).await.unwrap();
    let message = second.message().unwrap();
    assert_eq!(
        (message.kind(), message.text()),
        // PROTOCOL.md, "Payloads": the publisher's bytes, as they came.
        (comet::PayloadKind::Json, "{\n  \"a\": [1, 2]\n}")
    );

    // Subscribers see JSON as JSON and text as a string.
    let answer = poll(client().get(server.url("/poll?channel=room/p&since=oldest"))).await;
    let messages = answer.body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["data"], "hi <b>");
    assert_eq!(messages[1]["data"], json!({"a": [1, 2]}));
}

async fn publishing_is_refused_unless_authorized(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let closed = client()
        .post(server.url("/closed/x"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(closed, 403, "forbidden").await,
        "publishing is not enabled on this route"
    );
    let anonymous = client()
        .post(server.url("/publish/x"))
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(anonymous, 403, "forbidden").await;
    let readonly = publish(&server, "/publish/readonly/x")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(readonly, 403, "forbidden").await;
    assert_eq!(hub.stats().published, 0);
}

async fn publish_rejects_bad_requests_with_reasons(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    // Declared too large: refused before the body is read.
    let big = publish(&server, "/publish/x")
        .body("z".repeat(2000))
        .send()
        .await
        .unwrap();
    expect_error(big, 413, "payload_too_large").await;
    // Too large without a declared length (a chunked stream): refused while reading.
    let chunks = futures_util::stream::iter(
        (0..40).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'z'; 100]))),
    );
    let streamed = publish(&server, "/publish/x")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_error(streamed, 413, "payload_too_large").await;
    let not_json = publish(&server, "/publish/x")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    expect_error(not_json, 400, "bad_payload").await;
    let not_utf8 = publish(&server, "/publish/x")
        .body(vec![0xff, 0xfe])
        .send()
        .await
        .unwrap();
    expect_error(not_utf8, 400, "bad_payload").await;
    let bad_channel = publish(&server, "/publish/no%20spaces")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(bad_channel, 400, "bad_channel").await;
    let no_channel = publish(&server, "/publish").body("x").send().await.unwrap();
    expect_error(no_channel, 400, "no_channels").await;
    let bad_event = publish(&server, "/publish/x")
        .header("comet-event", "comet-gap")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(bad_event, 400, "bad_event").await;
    let wrong_method = client().get(server.url("/publish/x")).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "POST");
    expect_error(wrong_method, 405, "method_not_allowed").await;
    assert_eq!(hub.stats().published, 0, "nothing was published");
}

// ---- CORS -------------------------------------------------------------------

async fn cors_allows_listed_origins_with_credentials_and_never_a_star(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    hub.publish("c", "x").await.unwrap();
    let allowed = client()
        .get(server.url("/cors?channel=c&since=oldest&transport=poll"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "etag");
    assert!(h.get_all("vary").iter().any(|v| v == "origin"));

    let denied = client()
        .get(server.url("/cors?channel=c&since=oldest&transport=poll"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(denied
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(denied
        .headers()
        .get_all("vary")
        .iter()
        .any(|v| v == "origin"));

    // Errors carry CORS headers too, so a page can read why it was refused.
    let error = client()
        .get(server.url("/cors?channel=bad%20name"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(error.headers()["access-control-allow-origin"], ORIGIN);
    expect_error(error, 400, "bad_channel").await;

    let any = client()
        .get(server.url("/cors-any?channel=c&timeout=0"))
        .header("origin", "https://anyone.example")
        .send()
        .await
        .unwrap();
    assert_eq!(any.headers()["access-control-allow-origin"], "*");
    assert!(
        any.headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "never * with credentials"
    );
}

async fn cors_answers_preflights(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let preflight = |path: &str, origin: &str, method: &str| {
        client()
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "last-event-id, authorization",
            )
            .send()
    };
    let ok = preflight("/cors", ORIGIN, "GET").await.unwrap();
    assert_eq!(ok.status(), 204);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-methods"], "GET");
    assert_eq!(
        h["access-control-allow-headers"],
        "last-event-id, authorization"
    );
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");

    let evil = preflight("/cors", "https://evil.example", "GET")
        .await
        .unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    expect_error(evil, 403, "cors_denied").await;
    let wrong_method = preflight("/cors", ORIGIN, "DELETE").await.unwrap();
    expect_error(wrong_method, 403, "cors_denied").await;
    let publish = preflight("/publish/x", ORIGIN, "POST").await.unwrap();
    assert_eq!(publish.status(), 204);
    assert_eq!(publish.headers()["access-control-allow-methods"], "POST");
    // A route without CORS does not answer OPTIONS.
    let none = preflight("/poll", ORIGIN, "GET").await.unwrap();
    expect_error(none, 405, "method_not_allowed").await;
}

// ---- limits -----------------------------------------------------------------

async fn subscriber_limits_answer_429_and_disturb_no_one(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut first = open_sse(&server, "/sse?channel=full").await;
    let mut second = open_sse(&server, "/sse?channel=full").await;
    let third = get(&server, "/sse?channel=full").await;
    let message = expect_error(third, 429, "too_many_subscribers").await;
    assert!(message.contains("full"), "{message}");
    // Other channels are unaffected, and so are the two subscribers.
    let _other = open_sse(&server, "/sse?channel=other").await;
    hub.publish("full", "still delivered").await.unwrap();
    assert_eq!(first.next_event().await.data, "still delivered");
    assert_eq!(second.next_event().await.data, "still delivered");
    drop(first);
    eventually("slot freed", || hub.channel_subscriber_count("full") == 1).await;
    let _again = open_sse(&server, "/sse?channel=full").await;
}

async fn the_total_subscriber_limit_answers_429(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut held = vec![];
    for i in 0..20 {
        let reader = open_sse(&server, &format!("/sse?channel=t{i}")).await;
        held.push(reader);
    }
    assert_eq!(hub.subscriber_count(), 20);
    let over = get(&server, "/poll?channel=one-more&timeout=0").await;
    expect_error(over, 429, "too_many_subscribers").await;
}

async fn oversize_headers_answer_431(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let response = client()
        .get(server.url("/poll?channel=c&timeout=0"))
        .header("x-big", "b".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    expect_error(response, 431, "headers_too_large").await;
}

// ---- stats and shutdown -------------------------------------------------------

async fn stats_count_publishes_and_deliveries(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut a = open_sse(&server, "/sse?channel=st").await;
    let mut b = LineReader::new(get(&server, "/stream?channel=st").await);
    for i in 0..3 {
        hub.publish("st", i.to_string()).await.unwrap();
    }
    for _ in 0..3 {
        a.next_event().await;
    }
    let mut seen = 0;
    while seen < 3 {
        if parse(&b.line().await.unwrap())["type"] == "message" {
            seen += 1;
        }
    }
    let stats = hub.stats();
    assert_eq!((stats.published, stats.subscribers), (3, 2));
    eventually("deliveries counted", || hub.stats().delivered == 6).await;
}

async fn shutdown_answers_every_held_client_and_resuming_elsewhere_loses_nothing(adapter: Adapter) {
    // Two servers on one engine: the second plays the restarted node.
    let engine = engine();
    let unlimited = |engine| Hub::builder().engine(engine).build();
    let old = unlimited(engine.clone());
    let old_server = TestServer::start(adapter, &old, mounts()).await;

    let cursor = old.current_cursor(["d"]).await.unwrap().encode();
    let mut sse =
        SseReader::new(get(&old_server, &format!("/sse?channel=d&cursor={cursor}")).await);
    sse.opened().await;
    let mut stream =
        LineReader::new(get(&old_server, &format!("/stream?channel=d&cursor={cursor}")).await);
    old.publish("d", "before").await.unwrap();
    let seen = sse.next_event().await;
    assert_eq!(seen.data, "before");
    let url = old_server.url(&format!(
        "/poll?channel=d&cursor={}",
        seen.id.clone().unwrap()
    ));
    let held = tokio::spawn(poll(client().get(url)));
    let url = old_server.url(&format!(
        "/jsonp?channel=d&callback=cb&cursor={}",
        seen.id.clone().unwrap()
    ));
    let held_jsonp = tokio::spawn(get_text(url));
    eventually("all four held", || old.channel_subscriber_count("d") == 4).await;

    old.shutdown();
    let answer = bounded("poll answered", held).await.unwrap();
    assert_eq!(
        (answer.status, answer.cursor()),
        (200, seen.id.as_deref().unwrap())
    );
    assert!(answer.items().is_empty());
    let script = bounded("jsonp answered", held_jsonp).await.unwrap();
    assert!(script.starts_with("/**/cb({\"cursor\":"), "{script}");
    sse.until_end().await;
    let stream_lines = stream.until_end().await;
    let stream_cursor = stream_lines
        .iter()
        .rev()
        .map(|l| parse(l))
        .find(|e| e["type"] == "message")
        .unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // Published while draining: must reach every client that resumes.
    old.publish("d", "during shutdown").await.unwrap();
    expect_error(
        get(&old_server, "/poll?channel=d").await,
        503,
        "shutting_down",
    )
    .await;

    let new = unlimited(engine);
    let new_server = TestServer::start(adapter, &new, mounts()).await;
    let response = client()
        .get(new_server.url("/sse?channel=d"))
        .header("last-event-id", seen.id.unwrap())
        .send()
        .await
        .unwrap();
    let mut resumed = SseReader::new(response);
    assert_eq!(resumed.next_event().await.data, "during shutdown");
    let answer =
        poll(client().get(new_server.url(&format!("/poll?channel=d&cursor={}", answer.cursor()))))
            .await;
    assert_eq!(answer.items(), ["d:during shutdown"]);
    let answer =
        poll(client().get(new_server.url(&format!("/poll?channel=d&cursor={stream_cursor}"))))
            .await;
    assert_eq!(answer.items(), ["d:during shutdown"]);
}

/// `<route>/comet.js`: the browser client, revalidated by ETag, cached for
/// good at its versioned URL, with the route's CORS (module scripts from
/// another origin are fetched in CORS mode).
async fn the_client_script_is_served_beside_its_route(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let script = client()
        .get(server.url("/cors/comet.js"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    let h = script.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(script.text().await.unwrap(), comet::protocol::CLIENT_SCRIPT);

    let again = client()
        .get(server.url("/cors/comet.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let versioned = client()
        .get(server.url(&comet::protocol::client_script_url("/poll")))
        .send()
        .await
        .unwrap();
    assert_eq!(versioned.status(), 200);
    assert_eq!(
        versioned.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    // Only below a subscribe route; other paths are the app's.
    let elsewhere = client()
        .get(server.url("/nowhere/comet.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
}

each_adapter!(
    the_client_script_is_served_beside_its_route,
    stream_sends_one_envelope_per_line_and_resumes_by_cursor,
    stream_reports_gaps_and_sends_heartbeat_envelopes_when_idle,
    stream_ends_after_its_byte_budget_and_resuming_loses_nothing,
    iframe_pads_its_first_chunk_and_calls_the_callback_per_item,
    iframe_and_jsonp_keep_hostile_payloads_inert,
    hostile_callbacks_are_refused,
    iframe_ends_after_its_byte_budget_and_resuming_loses_nothing,
    jsonp_holds_batches_and_resumes_by_cursor,
    publish_answers_201_with_a_cursor_and_marks_json_and_text,
    publishing_is_refused_unless_authorized,
    publish_rejects_bad_requests_with_reasons,
    cors_allows_listed_origins_with_credentials_and_never_a_star,
    cors_answers_preflights,
    subscriber_limits_answer_429_and_disturb_no_one,
    the_total_subscriber_limit_answers_429,
    oversize_headers_answer_431,
    stats_count_publishes_and_deliveries,
    shutdown_answers_every_held_client_and_resuming_elsewhere_loses_nothing,
);
