//! End-to-end over real sockets, on every adapter: publishing over HTTP
//! (PROTOCOL.md, "Publishing"): answers, authorization, refusals, payload
//! validation and idempotency keys.

mod common;

use comet_push::Payload;
use comet_test_support::*;
use common::{protocol, transports};
use serde_json::{json, Value};

async fn publish_answers_201_with_a_cursor_and_marks_json_and_text(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let mut sub = hub
        .subscribe(["room/p"], comet_push::Start::head())
        .await
        .unwrap();
    let text = bounded(
        "publish",
        transports::publish(&server, "/publish/room/p")
            .header("comet-event", "said")
            .body("hi <b>")
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(text.status(), 201);
    assert_eq!(text.headers()["content-type"], "application/json");
    let cursor: Value = text.json().await.unwrap();
    let json = transports::publish(&server, "/publish?channel=room/p")
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
        (comet_push::PayloadKind::Text, "hi <b>", Some("said"))
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
        (comet_push::PayloadKind::Json, "{\n  \"a\": [1, 2]\n}")
    );

    // Subscribers see JSON as JSON and text as a string.
    let answer = poll(client().get(server.url("/poll?channel=room/p&since=oldest"))).await;
    let messages = answer.body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["data"], "hi <b>");
    assert_eq!(messages[1]["data"], json!({"a": [1, 2]}));
}

async fn publishing_is_refused_unless_authorized(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
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
    let readonly = transports::publish(&server, "/publish/readonly/x")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(readonly, 403, "forbidden").await;
    assert_eq!(hub.stats().published, 0);
}

async fn publish_rejects_bad_requests_with_reasons(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    // Declared too large: refused before the body is read.
    let big = transports::publish(&server, "/publish/x")
        .body("z".repeat(2000))
        .send()
        .await
        .unwrap();
    expect_error(big, 413, "payload_too_large").await;
    // Too large without a declared length (a chunked stream): refused while reading.
    let chunks = futures_util::stream::iter(
        (0..40).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'z'; 100]))),
    );
    let streamed = transports::publish(&server, "/publish/x")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_error(streamed, 413, "payload_too_large").await;
    let not_json = transports::publish(&server, "/publish/x")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    expect_error(not_json, 400, "bad_payload").await;
    let not_utf8 = transports::publish(&server, "/publish/x")
        .body(vec![0xff, 0xfe])
        .send()
        .await
        .unwrap();
    expect_error(not_utf8, 400, "bad_payload").await;
    let bad_channel = transports::publish(&server, "/publish/no%20spaces")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(bad_channel, 400, "bad_channel").await;
    let no_channel = transports::publish(&server, "/publish")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(no_channel, 400, "no_channels").await;
    let bad_event = transports::publish(&server, "/publish/x")
        .header("comet-event", "comet-gap")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(bad_event, 400, "bad_event").await;
    let wrong_method = client().put(server.url("/publish/x")).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET, POST, DELETE");
    expect_error(wrong_method, 405, "method_not_allowed").await;
    assert_eq!(hub.stats().published, 0, "nothing was published");
}

/// PROTOCOL.md, "Payloads": every payload UTF-8, JSON valid per RFC 8259.
async fn payloads_that_are_not_utf8_or_not_json_are_refused(adapter: Adapter) {
    let (hub, server) = protocol::start(adapter).await;
    for (content_type, body) in [
        ("application/json", &b"{\"k\":\"\xff\xfe\"}"[..]),
        ("application/json", b"[\"\xc3\x28\"]"),
        ("application/json", b"\"\xed\xa0\x80\""),
        ("application/json", b"{\"a\":1,}"),
        ("application/json", b"\"raw\ttab\""),
        ("application/json", b"NaN"),
        ("application/json", b"{} {}"),
        ("application/vnd.x+json", b"{\"k\":\"\xff\"}"),
        ("text/plain", b"caf\xe9"),
    ] {
        let response =
            protocol::post(&server, "/comet/publish/p", content_type, body.to_vec()).await;
        let message = expect_error(response, 400, "bad_payload").await;
        assert!(!message.is_empty(), "{body:?}");
    }
    let answer =
        poll(client().get(server.url("/comet?transport=poll&channel=p&since=oldest"))).await;
    assert_eq!(
        answer.items(),
        Vec::<String>::new(),
        "nothing was published"
    );
    assert!(Payload::json_bytes(&b"{\"k\":\"\xff\"}"[..]).is_err());
    assert!(Payload::text_bytes(&b"\xff"[..]).is_err());
    drop(hub);
}

/// PROTOCOL.md, "Requests": `HEAD` as `GET`, without a body or a subscription.
/// PROTOCOL.md, "Publishing over HTTP" (1.3): a publish retried with its
/// `Idempotency-Key` answers the first cursor and stores nothing; another
/// key is another publish; a malformed or repeated header is 400
/// `bad_parameter`, and stores nothing either.
async fn a_publish_retried_with_its_idempotency_key_is_stored_once(adapter: Adapter) {
    let (_hub, server) = protocol::start(adapter).await;
    let publish = |key: Vec<&'static str>| {
        let mut request = client()
            .post(server.url("/comet/publish/idem"))
            .header("content-type", "text/plain")
            .body("paid");
        for key in key {
            request = request.header("idempotency-key", key);
        }
        async move { bounded("publish", request.send()).await.unwrap() }
    };
    let cursor = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        body["cursor"].as_str().unwrap().to_owned()
    };
    let first = cursor(publish(vec!["order-42"]).await).await;
    let retried = cursor(publish(vec!["order-42"]).await).await;
    assert_eq!(first, retried, "the retry answers the first cursor");
    let other = cursor(publish(vec!["order-43"]).await).await;
    assert_ne!(other, first);
    for bad in [vec!["has space"], vec![""], vec!["a", "b"]] {
        expect_error(publish(bad).await, 400, "bad_parameter").await;
    }
    let answer =
        poll(client().get(server.url("/comet?transport=poll&channel=idem&since=oldest"))).await;
    assert_eq!(
        answer.items(),
        ["idem:paid", "idem:paid"],
        "two keys, two messages"
    );
}

/// POSTs a JSON batch to the publish route itself.
async fn batch(server: &TestServer, body: impl Into<reqwest::Body>) -> reqwest::Response {
    let request = transports::publish(server, "/publish")
        .header("content-type", "application/json")
        .body(body);
    bounded("batch", request.send()).await.unwrap()
}

/// One publish to many channels (PROTOCOL.md, "Publishing over HTTP"):
/// several `channel=`, or a JSON batch; each channel its own offset, or
/// its own error.
async fn one_publish_reaches_many_channels_each_with_its_own_offset_or_error(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    hub.publish("fan/b", "earlier").await.unwrap();
    let answer = bounded(
        "broadcast",
        transports::publish(
            &server,
            "/publish?channel=fan/a&channel=fan/b&channel=readonly/c&channel=fan/a",
        )
        .header("comet-event", "said")
        .body("hello")
        .send(),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.unwrap();
    let results = body["channels"].as_array().unwrap();
    assert_eq!(results.len(), 3, "each channel once: {body}");
    assert_eq!(results[0]["channel"], "fan/a");
    assert_eq!(results[1]["channel"], "fan/b");
    assert_eq!(
        (
            &results[2]["channel"],
            &results[2]["status"],
            &results[2]["error"]
        ),
        (&json!("readonly/c"), &json!(403), &json!("forbidden"))
    );
    assert!(results[2].get("cursor").is_none());
    // Each cursor names its own channel's message, at its own offset.
    for (channel, before) in [("fan/a", vec![]), ("fan/b", vec!["fan/b:earlier"])] {
        let answer = poll(
            client().get(server.url(&format!("/poll?channel={channel}&since=oldest&timeout=0"))),
        )
        .await;
        let mut expected = before;
        let said = format!("{channel}:hello");
        expected.push(&said);
        assert_eq!(answer.items(), expected);
        let result = results.iter().find(|r| r["channel"] == channel).unwrap();
        assert_eq!(answer.cursor(), result["cursor"].as_str().unwrap());
        assert_eq!(
            answer.body["messages"].as_array().unwrap().last().unwrap()["event"],
            "said"
        );
    }
    let a = results[0]["cursor"].as_str().unwrap();
    let b = results[1]["cursor"].as_str().unwrap();
    assert_ne!(a, b);

    // A JSON batch: the payload's bytes as sent, an event.
    let kept = r#"{"channels": ["fan/a", "fan/b"], "data": {"n": 1,  "kept": "as sent"}, "event": "json"}"#;
    let answer = transports::publish(&server, "/publish")
        .header("content-type", "application/json")
        .header("idempotency-key", "batch-1")
        .body(kept)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let first: Value = answer.json().await.unwrap();
    assert_eq!(first["channels"].as_array().unwrap().len(), 2);
    // Retried with its key: stored once, the same cursors.
    let again = transports::publish(&server, "/publish")
        .header("content-type", "application/json")
        .header("idempotency-key", "batch-1")
        .body(kept)
        .send()
        .await
        .unwrap();
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let answer =
        poll(client().get(server.url(&format!("/poll?channel=fan/a&cursor={a}&timeout=0")))).await;
    let messages = answer.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "once");
    assert_eq!(messages[0]["data"], json!({ "n": 1, "kept": "as sent" }));
    assert_eq!(messages[0]["event"], "json");

    // Refused on every channel: refused as a whole, not a list of refusals.
    let refused = transports::publish(&server, "/publish?channel=readonly/x&channel=readonly/y")
        .body("no")
        .send()
        .await
        .unwrap();
    expect_error(refused, 403, "forbidden").await;
    let readonly = r#"{"channels": ["readonly/x"], "data": 1}"#;
    let refused = batch(&server, readonly).await;
    expect_error(refused, 403, "forbidden").await;

    // Malformed batches and too many channels: 400, nothing published.
    for (body, code) in [
        (r#"{"channels": [], "data": 1}"#, "no_channels"),
        (r#"{"channels": ["fan/a"]}"#, "bad_payload"),
        (
            r#"{"channels": ["fan/a"], "data": 1, "extra": 2}"#,
            "bad_payload",
        ),
        (r#"{"channels": ["no spaces"], "data": 1}"#, "bad_channel"),
        (r#"[1, 2]"#, "bad_payload"),
    ] {
        let answer = batch(&server, body).await;
        expect_error(answer, 400, code).await;
    }
    let many: Vec<String> = (0..=comet_push::protocol::MAX_BROADCAST_CHANNELS)
        .map(|n| format!("\"m/{n}\""))
        .collect();
    let answer = batch(
        &server,
        format!(r#"{{"channels": [{}], "data": 1}}"#, many.join(",")),
    )
    .await;
    expect_error(answer, 400, "bad_parameter").await;
    // A payload past the limit is refused as a whole.
    let big = "x".repeat(hub.max_payload_bytes());
    let answer = batch(
        &server,
        format!(r#"{{"channels": ["fan/a", "fan/b"], "data": "{big}"}}"#),
    )
    .await;
    assert_eq!(answer.status(), 413);
    // Text with no channel named is no batch.
    let answer = transports::publish(&server, "/publish")
        .body("where to?")
        .send()
        .await
        .unwrap();
    expect_error(answer, 400, "no_channels").await;
    assert_eq!(hub.local_subscriber_count("m/0"), 0);
}

each_adapter!(
    one_publish_reaches_many_channels_each_with_its_own_offset_or_error,
    publish_answers_201_with_a_cursor_and_marks_json_and_text,
    publishing_is_refused_unless_authorized,
    publish_rejects_bad_requests_with_reasons,
    payloads_that_are_not_utf8_or_not_json_are_refused,
    a_publish_retried_with_its_idempotency_key_is_stored_once,
);
