//! End-to-end over real sockets, on every adapter: Server-Sent Events
//! (PROTOCOL.md, "Streaming transports"): order, resuming by `Last-Event-ID`,
//! gaps, framing, heartbeats, several channels on one connection, and the
//! opening of a stream.

mod common;

use comet_push::Payload;
use comet_test_support::*;
use common::{basics, protocol};

async fn sse_receives_published_messages_in_order(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
    let mut events = basics::sse(&server, "channel=chat").await;
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
    let (hub, server) = basics::start(adapter).await;
    let mut events = basics::sse(&server, "channel=chat").await;
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
    let (hub, server) = basics::start(adapter).await;
    let cursor = hub.current_cursor(["small/c"]).await.unwrap();
    for i in 1..=5 {
        hub.publish("small/c", i.to_string()).await.unwrap();
    }
    let mut events = basics::sse(&server, &format!("channel=small/c&cursor={cursor}")).await;
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
    let (hub, server) = basics::start(adapter).await;
    let mut events = basics::sse(&server, "channel=f").await;
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
    let (_hub, server) = basics::start(adapter).await;
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
    let (hub, server) = basics::start(adapter).await;
    let mut events = basics::sse(&server, "channel=a&channel=b&channel=c").await;
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

/// PROTOCOL.md, "Streaming transports": nothing a client could take for an
/// event before the first message; `retry:` comes with it.
async fn sse_opens_with_a_lone_comment_and_retry_rides_on_the_first_event(adapter: Adapter) {
    let (hub, server) = protocol::start(adapter).await;
    let response = protocol::get(&server, "/comet/sse?channel=o").await;
    let mut events = SseReader::new(response);
    events.opened().await;
    assert_eq!(events.raw, b": comet\n");
    hub.publish("o", "first").await.unwrap();
    let first = events.next_event().await;
    assert_eq!(first.data, "first");
    assert_eq!(events.retry, Some(2000));
    assert_eq!(events.empty_blocks, 0);
    let raw = String::from_utf8(events.raw.clone()).unwrap();
    assert!(raw.starts_with(": comet\nretry: 2000\nid: "), "{raw}");
}

each_adapter!(
    sse_receives_published_messages_in_order,
    sse_reconnect_with_last_event_id_gets_exactly_what_it_missed,
    sse_eviction_shows_a_comet_gap_event,
    sse_bytes_follow_the_framing_rules,
    sse_heartbeats_on_idle,
    one_connection_carries_many_channels,
    sse_opens_with_a_lone_comment_and_retry_rides_on_the_first_event,
);
