//! End-to-end over real sockets, on every adapter: graceful shutdown and
//! clients that disconnect.

mod common;

use comet_push::Hub;
use comet_test_support::*;
use common::{basics, transports};

async fn a_disconnected_sse_client_frees_its_subscription(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
    let response = client()
        .get(server.url("/comet/sse-fast?channel=gone"))
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    events.opened().await;
    assert_eq!(hub.local_subscriber_count("gone"), 1);
    drop(events);
    eventually("SSE subscription freed", || hub.local_subscribers() == 0).await;
}

async fn a_disconnected_long_poll_frees_its_subscription(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
    let url = server.url("/comet/poll?channel=gone&timeout=5");
    let held = tokio::spawn(async move { client().get(url).send().await });
    eventually("poll subscribed", || {
        hub.local_subscriber_count("gone") == 1
    })
    .await;
    held.abort();
    eventually("poll subscription freed", || hub.local_subscribers() == 0).await;
}

async fn shutdown_ends_streams_and_answers_held_polls_with_their_cursor(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
    let mut events = basics::sse(&server, "channel=s").await;
    let cursor = hub.current_cursor(["s"]).await.unwrap().encode();
    let url = server.url(&format!("/comet/poll?channel=s&cursor={cursor}"));
    let held = tokio::spawn(poll(client().get(url)));
    eventually("both subscribed", || hub.local_subscriber_count("s") == 2).await;
    hub.shutdown();
    let answer = bounded("held poll on shutdown", held).await.unwrap();
    assert_eq!((answer.status, answer.cursor()), (200, &*cursor));
    // Each says why it ends, and over what window to come back.
    assert_eq!(answer.items(), ["end:shutdown"]);
    let end = &answer.body["messages"][0];
    assert_eq!(end["cursor"], cursor.as_str());
    assert_eq!(end["reconnect_within"], 5000, "the default window");
    let event = events.next_event().await;
    assert_eq!(event.event.as_deref(), Some("comet-end"));
    assert_eq!(event.id.as_deref(), Some(&*cursor));
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        (&data["reason"], &data["reconnect_within"]),
        (&"shutdown".into(), &5000.into())
    );
    // Then the SSE stream ends cleanly: the body completes without an error.
    events.until_end().await;
    let refused = client()
        .get(server.url("/comet/poll?channel=s"))
        .send()
        .await
        .unwrap();
    expect_error(refused, 503, "shutting_down").await;
}

async fn shutdown_answers_every_held_client_and_resuming_elsewhere_loses_nothing(adapter: Adapter) {
    // Two servers on one engine: the second plays the restarted node.
    let engine = transports::engine();
    let unlimited = |engine| {
        Hub::builder()
            .engine(engine)
            .reconnect_window(std::time::Duration::from_millis(1500))
            .build()
    };
    let old = unlimited(engine.clone());
    let old_server = TestServer::start(adapter, &old, transports::mounts()).await;

    let cursor = old.current_cursor(["d"]).await.unwrap().encode();
    let mut sse = SseReader::new(
        transports::get(&old_server, &format!("/sse?channel=d&cursor={cursor}")).await,
    );
    sse.opened().await;
    let mut stream = LineReader::new(
        transports::get(&old_server, &format!("/stream?channel=d&cursor={cursor}")).await,
    );
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
    eventually("all four held", || old.local_subscriber_count("d") == 4).await;

    old.shutdown();
    let answer = bounded("poll answered", held).await.unwrap();
    assert_eq!(
        (answer.status, answer.cursor()),
        (200, seen.id.as_deref().unwrap())
    );
    assert_eq!(answer.items(), ["end:shutdown"], "the end, and no message");
    assert_eq!(answer.body["messages"][0]["reconnect_within"], 1500);
    let script = bounded("jsonp answered", held_jsonp).await.unwrap();
    assert!(script.starts_with("/**/cb({\"cursor\":"), "{script}");
    assert!(
        script.contains("\"reason\":\"shutdown\",\"cursor\":"),
        "{script}"
    );
    sse.until_end().await;
    let stream_lines = stream.until_end().await;
    let stream_cursor = stream_lines
        .iter()
        .rev()
        .map(|l| transports::parse(l))
        .find(|e| e["type"] == "message")
        .unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // Published while draining: must reach every client that resumes.
    old.publish("d", "during shutdown").await.unwrap();
    expect_error(
        transports::get(&old_server, "/poll?channel=d").await,
        503,
        "shutting_down",
    )
    .await;

    let new = unlimited(engine);
    let new_server = TestServer::start(adapter, &new, transports::mounts()).await;
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

each_adapter!(
    a_disconnected_sse_client_frees_its_subscription,
    a_disconnected_long_poll_frees_its_subscription,
    shutdown_ends_streams_and_answers_held_polls_with_their_cursor,
    shutdown_answers_every_held_client_and_resuming_elsewhere_loses_nothing,
);
