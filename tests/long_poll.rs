//! End-to-end over real sockets, on every adapter: JSON long polling
//! (PROTOCOL.md, "Long polling"): answers, holds, timeouts, cursors,
//! `If-None-Match` and gaps.

mod common;

use comet_push::Payload;
use comet_test_support::*;
use common::basics;
use std::time::Duration;

async fn long_poll_answers_at_once_when_messages_wait(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
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
    let (hub, server) = basics::start(adapter).await;
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
    let (hub, server) = basics::start(adapter).await;
    let cursor = hub.current_cursor(["chat"]).await.unwrap();
    let url = server.url(&format!("/comet/poll?channel=chat&cursor={cursor}"));
    let held = tokio::spawn(poll(client().get(url)));
    eventually("poll subscribed", || {
        hub.local_subscriber_count("chat") == 1
    })
    .await;
    assert!(!held.is_finished(), "a poll with nothing to say is held");
    hub.publish("chat", "wake").await.unwrap();
    let answer = bounded("held poll", held).await.unwrap();
    assert_eq!(answer.items(), ["chat:wake"]);
}

async fn long_poll_times_out_with_an_empty_batch_and_the_same_cursor(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
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
    let (hub, server) = basics::start(adapter).await;
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
    let (hub, server) = basics::start(adapter).await;
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

each_adapter!(
    long_poll_answers_at_once_when_messages_wait,
    long_poll_over_several_channels_gives_each_message_its_own_cursor,
    long_poll_holds_until_a_message_arrives,
    long_poll_times_out_with_an_empty_batch_and_the_same_cursor,
    long_poll_resumes_by_cursor_and_by_if_none_match,
    long_poll_reports_gaps,
);
