//! End-to-end, over real sockets, on every adapter: PROTOCOL.md's SSE and
//! long-poll rules, errors, authorization, and the app's own routes.

use comet::{
    protocol::{ProtocolError, SubscribeRoute, Transport},
    tower::RouteService,
    HistoryPolicy, Hub, Payload,
};
use comet_test_support::*;
use std::time::Duration;

fn hub() -> Hub {
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
fn mounts() -> Vec<Mount> {
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

async fn start(adapter: Adapter) -> (Hub, TestServer) {
    let hub = hub();
    let server = TestServer::start(adapter, &hub, mounts()).await;
    (hub, server)
}

async fn sse(server: &TestServer, query: &str) -> SseReader {
    let response = bounded(
        "sse connect",
        client()
            .get(server.url(&format!("/comet/sse?{query}")))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-cache");
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut reader = SseReader::new(response);
    reader.opened().await;
    reader
}

async fn sse_receives_published_messages_in_order(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut events = sse(&server, "channel=chat").await;
    // PROTOCOL.md, "Streaming transports": `retry:` opens the first event.
    assert_eq!(events.retry, None);
    for i in 0..20 {
        hub.publish("chat", format!("m{i}")).await.unwrap();
    }
    hub.publish("chat", Payload::text("named").event("joined"))
        .await
        .unwrap();
    for i in 0..20 {
        let event = events.next_event().await;
        assert_eq!(events.retry, Some(2000));
        assert_eq!(
            (event.event.as_deref(), event.data.as_str()),
            (Some("chat"), &*format!("m{i}"))
        );
        assert!(event.id.is_some());
    }
    let event = events.next_event().await;
    assert_eq!(
        (event.event.as_deref(), event.data.as_str()),
        (Some("joined"), "named")
    );
}

async fn sse_reconnect_with_last_event_id_gets_exactly_what_it_missed(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut events = sse(&server, "channel=chat").await;
    hub.publish("chat", "1").await.unwrap();
    hub.publish("chat", "2").await.unwrap();
    let first = events.next_event().await;
    assert_eq!(first.data, "1");
    drop(events);
    hub.publish("chat", "3").await.unwrap();
    let response = client()
        .get(server.url("/comet/sse?channel=chat"))
        .header("last-event-id", first.id.unwrap())
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    assert_eq!(events.next_event().await.data, "2");
    assert_eq!(events.next_event().await.data, "3");
    hub.publish("chat", "4").await.unwrap();
    assert_eq!(
        events.next_event().await.data,
        "4",
        "nothing repeated, nothing skipped"
    );
}

async fn sse_eviction_shows_a_comet_gap_event(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["small/c"]).await.unwrap();
    for i in 1..=5 {
        hub.publish("small/c", i.to_string()).await.unwrap();
    }
    let mut events = sse(&server, &format!("channel=small/c&cursor={cursor}")).await;
    let gap = events.next_event().await;
    assert_eq!(gap.event.as_deref(), Some("comet-gap"));
    let envelope: serde_json::Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(envelope["type"], "gap");
    assert_eq!(envelope["channel"], "small/c");
    assert_eq!(envelope["missed"], 2);
    assert_eq!(envelope["cursor"].as_str(), gap.id.as_deref());
    let mut got = vec![];
    for _ in 0..3 {
        got.push(events.next_event().await.data);
    }
    assert_eq!(got, ["3", "4", "5"]);
}

async fn sse_bytes_follow_the_framing_rules(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut events = sse(&server, "channel=f").await;
    let preamble = events.raw.clone();
    assert_eq!(preamble, b": comet\n");
    let payloads = [
        "a\nb",
        "c\rd",
        "e\r\nf",
        "",
        "\n",
        "trailing\r\n",
        "data: fake\n\nevent: x",
    ];
    for p in payloads {
        hub.publish("f", p).await.unwrap();
    }
    hub.publish(
        "f",
        Payload::json(&serde_json::json!({"k": "v\nw"})).unwrap(),
    )
    .await
    .unwrap();
    let mut ids = vec![];
    for p in payloads {
        let event = events.next_event().await;
        // EventSource joins data lines with LF: CR and CRLF come back as LF.
        assert_eq!(
            event.data,
            p.replace("\r\n", "\n").replace('\r', "\n"),
            "payload {p:?}"
        );
        assert_eq!(event.event.as_deref(), Some("f"));
        ids.push(event.id.unwrap());
    }
    let json = events.next_event().await;
    ids.push(json.id.unwrap());
    let expected = format!(
        ": comet\n\
         retry: 2000\nid: {}\nevent: f\ndata: a\ndata: b\n\n\
         id: {}\nevent: f\ndata: c\ndata: d\n\n\
         id: {}\nevent: f\ndata: e\ndata: f\n\n\
         id: {}\nevent: f\ndata: \n\n\
         id: {}\nevent: f\ndata: \ndata: \n\n\
         id: {}\nevent: f\ndata: trailing\ndata: \n\n\
         id: {}\nevent: f\ndata: data: fake\ndata: \ndata: event: x\n\n\
         id: {}\nevent: f\ndata: {{\"k\":\"v\\nw\"}}\n\n",
        ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7]
    );
    assert_eq!(String::from_utf8(events.raw.clone()).unwrap(), expected);
    for id in ids {
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.~-".contains(&b)),
            "{id}"
        );
    }
}

async fn sse_heartbeats_on_idle(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let response = client()
        .get(server.url("/comet/sse-fast?channel=quiet"))
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    events.opened().await;
    events.comments_after(2).await;
    assert!(String::from_utf8_lossy(&events.raw).ends_with(": \n: \n"));
    assert_eq!(
        events.empty_blocks, 0,
        "no blank line a client could take for an event"
    );
}

async fn one_connection_carries_many_channels(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut events = sse(&server, "channel=a&channel=b&channel=c").await;
    hub.publish("b", "to b").await.unwrap();
    hub.publish("c", "to c").await.unwrap();
    hub.publish("a", "to a").await.unwrap();
    let mut got = vec![];
    let mut last_id = String::new();
    for _ in 0..3 {
        let e = events.next_event().await;
        got.push(format!("{}:{}", e.event.unwrap(), e.data));
        last_id = e.id.unwrap();
    }
    got.sort();
    assert_eq!(got, ["a:to a", "b:to b", "c:to c"]);
    // The last id covers every channel: resuming from it repeats nothing.
    drop(events);
    hub.publish("a", "later").await.unwrap();
    let response = client()
        .get(server.url("/comet/sse?channel=a&channel=b&channel=c"))
        .header("last-event-id", last_id)
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    assert_eq!(events.next_event().await.data, "later");
}

async fn long_poll_answers_at_once_when_messages_wait(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["chat"]).await.unwrap();
    hub.publish("chat", "1").await.unwrap();
    hub.publish("chat", Payload::json(&serde_json::json!({"n": 2})).unwrap())
        .await
        .unwrap();
    let answer =
        poll(client().get(server.url(&format!("/comet/poll?channel=chat&cursor={cursor}")))).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.items(), ["chat:1", "chat:{\"n\":2}"]);
    let messages = answer.body["messages"].as_array().unwrap();
    assert_eq!(
        messages[1]["data"],
        serde_json::json!({"n": 2}),
        "JSON payloads stay JSON"
    );
    assert_eq!(messages[1]["cursor"].as_str(), Some(answer.cursor()));
    assert_eq!(
        answer.etag.as_deref(),
        Some(&*format!("\"{}\"", answer.cursor()))
    );
}

async fn long_poll_over_several_channels_gives_each_message_its_own_cursor(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["a", "b"]).await.unwrap();
    for (channel, text) in [("a", "1"), ("b", "2"), ("a", "3")] {
        hub.publish(channel, text).await.unwrap();
    }
    let both = |cursor: &str| {
        client().get(server.url(&format!(
            "/comet/poll?channel=a&channel=b&cursor={cursor}&timeout=0"
        )))
    };
    // A one-channel subscriber reads first, so that every shared encoding
    // of these messages exists before the two-channel poll below.
    let alone = poll(client().get(server.url(&format!(
        "/comet/poll?channel=a&cursor={}&timeout=0",
        cursor.encode()
    ))))
    .await;
    assert_eq!(alone.items(), ["a:1", "a:3"]);
    assert_eq!(
        alone.body["messages"][1]["cursor"].as_str(),
        Some(alone.cursor())
    );
    let answer = poll(both(&cursor.encode())).await;
    let items = answer.items();
    assert_eq!(items.len(), 3, "{items:?}");
    let messages = answer.body["messages"].as_array().unwrap().clone();
    // Resuming from any message's cursor gives exactly the messages after
    // it, in both channels: the cursor is this subscription's, not the
    // one a one-channel subscriber of that message gets. (Order across
    // channels is the server's round robin, so compare as sets.)
    let sorted = |mut items: Vec<String>| {
        items.sort();
        items
    };
    for (i, message) in messages.iter().enumerate() {
        let resumed = poll(both(message["cursor"].as_str().unwrap())).await;
        assert_eq!(
            sorted(resumed.items()),
            sorted(items[i + 1..].to_vec()),
            "after message {i}"
        );
    }
    assert_eq!(messages[2]["cursor"].as_str(), Some(answer.cursor()));
}

async fn long_poll_holds_until_a_message_arrives(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["chat"]).await.unwrap();
    let url = server.url(&format!("/comet/poll?channel=chat&cursor={cursor}"));
    let held = tokio::spawn(poll(client().get(url)));
    eventually("poll subscribed", || {
        hub.channel_subscriber_count("chat") == 1
    })
    .await;
    assert!(!held.is_finished(), "a poll with nothing to say is held");
    hub.publish("chat", "wake").await.unwrap();
    let answer = bounded("held poll", held).await.unwrap();
    assert_eq!(answer.items(), ["chat:wake"]);
}

async fn long_poll_times_out_with_an_empty_batch_and_the_same_cursor(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["chat"]).await.unwrap().encode();
    let started = std::time::Instant::now();
    let answer = poll(client().get(server.url(&format!(
        "/comet/poll?channel=chat&cursor={cursor}&timeout=0.2"
    ))))
    .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.items(), Vec::<String>::new());
    assert_eq!(answer.cursor(), cursor);
    assert_eq!(answer.etag, Some(format!("\"{cursor}\"")));
    // timeout is clamped to the route's maximum (5 s), and 0 answers at once.
    let answer = poll(client().get(server.url(&format!(
        "/comet/poll?channel=chat&cursor={cursor}&timeout=0"
    ))))
    .await;
    assert_eq!(answer.items(), Vec::<String>::new());
}

async fn long_poll_resumes_by_cursor_and_by_if_none_match(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let start_cursor = hub.current_cursor(["chat"]).await.unwrap();
    for i in 1..=3 {
        hub.publish("chat", i.to_string()).await.unwrap();
    }
    let first =
        poll(client().get(server.url(&format!("/comet/poll?channel=chat&cursor={start_cursor}"))))
            .await;
    assert_eq!(first.items(), ["chat:1", "chat:2", "chat:3"]);
    hub.publish("chat", "4").await.unwrap();
    // By cursor parameter.
    let by_query = poll(client().get(server.url(&format!(
        "/comet/poll?channel=chat&cursor={}",
        first.cursor()
    ))))
    .await;
    assert_eq!(by_query.items(), ["chat:4"]);
    hub.publish("chat", "5").await.unwrap();
    // By If-None-Match, as a browser's HTTP cache would revalidate; it wins over the query.
    let by_etag = poll(
        client()
            .get(server.url(&format!(
                "/comet/poll?channel=chat&cursor={}",
                first.cursor()
            )))
            .header("if-none-match", by_query.etag.unwrap()),
    )
    .await;
    assert_eq!(by_etag.items(), ["chat:5"]);
}

async fn long_poll_reports_gaps(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["small/p"]).await.unwrap();
    for i in 1..=5 {
        hub.publish("small/p", i.to_string()).await.unwrap();
    }
    let answer =
        poll(client().get(server.url(&format!("/comet/poll?channel=small/p&cursor={cursor}"))))
            .await;
    assert_eq!(
        answer.items(),
        ["small/p:gap:2", "small/p:3", "small/p:4", "small/p:5"]
    );
}

async fn a_route_offering_several_transports_negotiates(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    hub.publish("n", "x").await.unwrap();
    // Default: the first offered (poll).
    let answer = poll(client().get(server.url("/comet/either?channel=n&since=oldest"))).await;
    assert_eq!(answer.items(), ["n:x"]);
    // Accept: text/event-stream picks SSE.
    let response = client()
        .get(server.url("/comet/either?channel=n&since=oldest"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(SseReader::new(response).next_event().await.data, "x");
    // transport= picks explicitly.
    let response = client()
        .get(server.url("/comet/either?channel=n&since=1&transport=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(SseReader::new(response).next_event().await.data, "x");
}

async fn authorization_is_checked_on_every_request(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let denied = client()
        .get(server.url("/private?channel=team/a&timeout=0"))
        .send()
        .await
        .unwrap();
    let message = expect_error(denied, 403, "forbidden").await;
    assert!(message.contains("not authorized"), "{message}");
    let wrong_channel = client()
        .get(server.url("/private?channel=other&timeout=0"))
        .header("authorization", "Bearer ok")
        .send()
        .await
        .unwrap();
    expect_error(wrong_channel, 403, "forbidden").await;
    hub.publish("team/a", "secret").await.unwrap();
    let allowed = poll(
        client()
            .get(server.url("/private?channel=team/a&since=oldest"))
            .header("authorization", "Bearer ok"),
    )
    .await;
    assert_eq!(allowed.items(), ["team/a:secret"]);
    assert_eq!(
        hub.subscriber_count(),
        0,
        "denied requests never subscribed"
    );
}

async fn channels_can_come_from_the_request_instead_of_the_query(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    hub.publish("user/ann", "for ann").await.unwrap();
    hub.publish("user/bob", "for bob").await.unwrap();
    let ann = poll(
        client()
            .get(server.url("/me?channel=user/bob&since=oldest"))
            .header("x-user", "ann"),
    )
    .await;
    assert_eq!(ann.items(), ["user/ann:for ann"]);
    let nobody = client()
        .get(server.url("/me?since=oldest"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(nobody, 403, "forbidden").await, "who are you?");
}

async fn bad_requests_get_clear_json_errors(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut bystander = sse(&server, "channel=bystander").await;
    let get = |q: &str| client().get(server.url(&format!("/comet/poll?{q}"))).send();
    let cases = [
        ("channel=chat&cursor=not-a-cursor!", 400, "bad_cursor"),
        ("channel=chat&cursor=AQE", 400, "bad_cursor"),
        ("channel=bad%20name", 400, "bad_channel"),
        ("channel=comet-internal", 400, "bad_channel"),
        ("", 400, "no_channels"),
        (
            "channel=a&channel=b&channel=c&channel=d&channel=e",
            429,
            "too_many_channels",
        ),
        ("channel=chat&transport=smoke-signals", 400, "bad_transport"),
        ("channel=chat&transport=sse", 400, "bad_transport"),
        ("channel=chat&since=later", 400, "bad_parameter"),
        ("channel=chat&timeout=soon", 400, "bad_parameter"),
    ];
    for (query, status, code) in cases {
        let response = bounded(query, get(query)).await.unwrap();
        let message = expect_error(response, status, code).await;
        println!("{query} -> {status} {code}: {message}");
    }
    let long = format!("channel=chat&x={}", "y".repeat(9000));
    expect_error(get(&long).await.unwrap(), 414, "uri_too_long").await;
    let bad_header = client()
        .get(server.url("/comet/sse?channel=chat"))
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    expect_error(bad_header, 400, "bad_cursor").await;
    let post = client()
        .post(server.url("/comet/sse?channel=chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    expect_error(post, 405, "method_not_allowed").await;

    // None of that disturbed a subscriber.
    hub.publish("bystander", "still here").await.unwrap();
    assert_eq!(bystander.next_event().await.data, "still here");
}

async fn the_apps_own_routes_still_work(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let response = client().get(server.url("/hello")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello from the app");
    let missing = client().get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_route_can_be_mounted_as_a_plain_service() {
    // Tower only: `RouteService` with axum's `route_service`.
    let hub = hub();
    let app = axum::Router::new().route_service(
        "/svc/sse",
        RouteService::new(hub.clone(), SubscribeRoute::sse()),
    );
    let server = TestServer::axum(app).await;
    let response = client()
        .get(server.url("/svc/sse?channel=svc"))
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    events.opened().await;
    hub.publish("svc", "via route_service").await.unwrap();
    assert_eq!(events.next_event().await.data, "via route_service");
}

async fn a_disconnected_sse_client_frees_its_subscription(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let response = client()
        .get(server.url("/comet/sse-fast?channel=gone"))
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    events.opened().await;
    assert_eq!(hub.channel_subscriber_count("gone"), 1);
    drop(events);
    eventually("SSE subscription freed", || hub.subscriber_count() == 0).await;
}

async fn a_disconnected_long_poll_frees_its_subscription(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let url = server.url("/comet/poll?channel=gone&timeout=5");
    let held = tokio::spawn(async move { client().get(url).send().await });
    eventually("poll subscribed", || {
        hub.channel_subscriber_count("gone") == 1
    })
    .await;
    held.abort();
    eventually("poll subscription freed", || hub.subscriber_count() == 0).await;
}

async fn shutdown_ends_streams_and_answers_held_polls_with_their_cursor(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut events = sse(&server, "channel=s").await;
    let cursor = hub.current_cursor(["s"]).await.unwrap().encode();
    let url = server.url(&format!("/comet/poll?channel=s&cursor={cursor}"));
    let held = tokio::spawn(poll(client().get(url)));
    eventually("both subscribed", || hub.channel_subscriber_count("s") == 2).await;
    hub.shutdown();
    let answer = bounded("held poll on shutdown", held).await.unwrap();
    assert_eq!((answer.status, answer.cursor()), (200, &*cursor));
    // The SSE stream ends cleanly: the body completes without an error.
    events.until_end().await;
    let refused = client()
        .get(server.url("/comet/poll?channel=s"))
        .send()
        .await
        .unwrap();
    expect_error(refused, 503, "shutting_down").await;
}

each_adapter!(
    sse_receives_published_messages_in_order,
    sse_reconnect_with_last_event_id_gets_exactly_what_it_missed,
    sse_eviction_shows_a_comet_gap_event,
    sse_bytes_follow_the_framing_rules,
    sse_heartbeats_on_idle,
    one_connection_carries_many_channels,
    long_poll_answers_at_once_when_messages_wait,
    long_poll_over_several_channels_gives_each_message_its_own_cursor,
    long_poll_holds_until_a_message_arrives,
    long_poll_times_out_with_an_empty_batch_and_the_same_cursor,
    long_poll_resumes_by_cursor_and_by_if_none_match,
    long_poll_reports_gaps,
    a_route_offering_several_transports_negotiates,
    authorization_is_checked_on_every_request,
    channels_can_come_from_the_request_instead_of_the_query,
    bad_requests_get_clear_json_errors,
    the_apps_own_routes_still_work,
    a_disconnected_sse_client_frees_its_subscription,
    a_disconnected_long_poll_frees_its_subscription,
    shutdown_ends_streams_and_answers_held_polls_with_their_cursor,
);
