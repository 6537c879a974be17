//! The hub's contract (PROTOCOL.md "Channels, messages, cursors"), end to end
//! through the public API.

use comet_core::{
    ChannelName, Cursor, EndReason, HistoryPolicy, Hub, Item, Payload, PublishError, Since, Start,
    SubscribeError, Subscriber, Subscription, DEFAULT_RECONNECT_WINDOW,
};
use std::{future::Future, time::Duration};
use tokio::time::timeout;
use tokio_stream::StreamExt;

const BOUND: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(BOUND, f).await.expect("timed out")
}

fn small_hub(max_messages: usize) -> Hub {
    Hub::builder()
        .history(HistoryPolicy {
            max_messages,
            max_age: None,
        })
        .build()
}

/// Describes the next `n` items as strings: "chan:text" or "chan:gap:N".
async fn take(sub: &mut Subscription, n: usize) -> (Vec<String>, Cursor) {
    let mut out = vec![];
    let mut cursor = sub.cursor();
    for _ in 0..n {
        let item = bounded(sub.next()).await.expect("stream ended");
        cursor = item.cursor().clone();
        out.push(describe(&item));
    }
    (out, cursor)
}

fn describe(item: &Item) -> String {
    match item {
        Item::Message { message, .. } => format!("{}:{}", message.channel(), message.text()),
        Item::Gap {
            channel, missed, ..
        } => match missed {
            Some(n) => format!("{channel}:gap:{n}"),
            None => format!("{channel}:gap:?"),
        },
        other => format!("{other:?}"),
    }
}

fn assert_idle(sub: &mut Subscription) {
    assert!(sub.try_next().is_none(), "expected nothing more");
}

#[tokio::test]
async fn head_subscription_sees_only_new_messages_in_order() {
    let hub = Hub::new();
    hub.publish("chat", "before").await.unwrap();
    let mut sub = hub.subscribe(["chat"], Start::head()).await.unwrap();
    for i in 0..5 {
        hub.publish("chat", format!("m{i}")).await.unwrap();
    }
    let (got, _) = take(&mut sub, 5).await;
    assert_eq!(got, ["chat:m0", "chat:m1", "chat:m2", "chat:m3", "chat:m4"]);
    assert_idle(&mut sub);
}

#[tokio::test]
async fn resume_delivers_exactly_the_missed_messages() {
    let hub = Hub::new();
    let mut sub = hub.subscribe(["chat"], Start::head()).await.unwrap();
    hub.publish("chat", "1").await.unwrap();
    hub.publish("chat", "2").await.unwrap();
    let (_, cursor) = take(&mut sub, 1).await;
    drop(sub);
    hub.publish("chat", "3").await.unwrap();
    // Resuming via the encoded token, as a client would.
    let token = cursor.encode();
    let mut resumed = hub
        .subscribe(["chat"], Cursor::decode(&token).unwrap())
        .await
        .unwrap();
    let (got, _) = take(&mut resumed, 2).await;
    assert_eq!(got, ["chat:2", "chat:3"]);
    assert_idle(&mut resumed);
}

#[tokio::test]
async fn eviction_yields_a_gap_then_the_oldest_retained() {
    let hub = small_hub(3);
    let mut sub = hub.subscribe(["chat"], Start::head()).await.unwrap();
    hub.publish("chat", "1").await.unwrap();
    let (_, cursor) = take(&mut sub, 1).await;
    for i in 2..=7 {
        hub.publish("chat", i.to_string()).await.unwrap();
    }
    let mut resumed = hub.subscribe(["chat"], cursor).await.unwrap();
    let (got, _) = take(&mut resumed, 4).await;
    assert_eq!(got, ["chat:gap:3", "chat:5", "chat:6", "chat:7"]);
    // The live subscriber that fell behind gets the same gap, not a queue.
    let (got, _) = take(&mut sub, 4).await;
    assert_eq!(got, ["chat:gap:3", "chat:5", "chat:6", "chat:7"]);
}

#[tokio::test]
async fn a_restarted_hub_is_another_epoch_and_yields_an_unknown_gap() {
    let hub = Hub::new();
    hub.publish("chat", "old").await.unwrap();
    let cursor = hub.current_cursor(["chat"]).await.unwrap();
    // A restart: same channel names, new history.
    let restarted = Hub::new();
    restarted.publish("chat", "new").await.unwrap();
    let mut sub = restarted.subscribe(["chat"], cursor).await.unwrap();
    let (got, _) = take(&mut sub, 2).await;
    assert_eq!(got, ["chat:gap:?", "chat:new"]);
}

#[tokio::test]
async fn head_cursor_loses_nothing_between_render_and_subscribe() {
    let hub = Hub::new();
    hub.publish("room", "rendered").await.unwrap();
    let page_cursor = hub.current_cursor(["room"]).await.unwrap();
    hub.publish("room", "after render").await.unwrap();
    let mut sub = hub.subscribe(["room"], page_cursor).await.unwrap();
    let (got, _) = take(&mut sub, 1).await;
    assert_eq!(got, ["room:after render"]);
    assert_idle(&mut sub);
}

#[tokio::test]
async fn since_policies_and_cursor_ignoring_other_channels() {
    let hub = Hub::new();
    for i in 1..=3 {
        hub.publish("a", format!("a{i}")).await.unwrap();
        hub.publish("b", format!("b{i}")).await.unwrap();
    }
    let mut all = hub.subscribe(["a"], Start::oldest()).await.unwrap();
    assert_eq!(take(&mut all, 3).await.0, ["a:a1", "a:a2", "a:a3"]);
    let mut last = hub.subscribe(["a"], Start::last(1)).await.unwrap();
    assert_eq!(take(&mut last, 1).await.0, ["a:a3"]);
    assert_idle(&mut last);

    // A cursor naming "b" and "x" (not asked for) is fine; "a" starts by `since`.
    let cursor = hub.current_cursor(["b", "x"]).await.unwrap();
    hub.publish("b", "b4").await.unwrap();
    let start = Start::cursor(cursor).since(Since::Last(1));
    let mut sub = hub.subscribe(["a", "b"], start).await.unwrap();
    let (mut got, cursor) = take(&mut sub, 2).await;
    got.sort();
    assert_eq!(got, ["a:a3", "b:b4"]);
    assert_eq!(
        cursor.len(),
        2,
        "the cursor covers exactly the subscribed channels"
    );
}

#[tokio::test]
async fn one_subscription_carries_many_channels_with_a_cursor_for_all() {
    let hub = Hub::new();
    let mut sub = hub.subscribe(["a", "b", "c"], Start::head()).await.unwrap();
    for ch in ["a", "b", "c", "a"] {
        hub.publish(ch, ch).await.unwrap();
    }
    let (_, cursor) = take(&mut sub, 2).await;
    drop(sub);
    let mut resumed = hub.subscribe(["a", "b", "c"], cursor).await.unwrap();
    let (got, _) = take(&mut resumed, 2).await;
    let mut all = got.clone();
    all.sort();
    assert_eq!(all.len(), 2);
    assert_idle(&mut resumed);
}

#[tokio::test]
async fn a_busy_channel_does_not_starve_others() {
    let hub = Hub::new();
    let mut sub = hub
        .subscribe(["busy", "quiet"], Start::head())
        .await
        .unwrap();
    for i in 0..100 {
        hub.publish("busy", i.to_string()).await.unwrap();
    }
    hub.publish("quiet", "hello").await.unwrap();
    let (got, _) = take(&mut sub, 4).await;
    assert!(got.contains(&"quiet:hello".to_string()), "{got:?}");
}

#[tokio::test]
async fn a_cancelled_wait_loses_nothing() {
    let hub = Hub::new();
    let mut sub = hub.subscribe(["chat"], Start::head()).await.unwrap();
    for round in 0..50 {
        // Start waiting, then abandon the wait before anything arrives.
        assert!(timeout(Duration::from_millis(1), sub.next()).await.is_err());
        hub.publish("chat", round.to_string()).await.unwrap();
        let (got, _) = take(&mut sub, 1).await;
        assert_eq!(got, [format!("chat:{round}")]);
    }
}

#[tokio::test]
async fn a_publish_between_subscribe_and_first_poll_is_delivered() {
    let hub = Hub::new();
    let mut sub = hub.subscribe(["chat"], Start::head()).await.unwrap();
    hub.publish("chat", "early").await.unwrap();
    assert_eq!(take(&mut sub, 1).await.0, ["chat:early"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_every_subscriber_gets_every_message_in_order() {
    const CHANNELS: usize = 4;
    const PUBLISHERS_PER_CHANNEL: usize = 2;
    const PER_PUBLISHER: usize = 500;
    const SUBSCRIBERS: usize = 40;
    let hub = small_hub(10_000);
    let channels: Vec<String> = (0..CHANNELS).map(|c| format!("ch{c}")).collect();

    let mut readers = vec![];
    for s in 0..SUBSCRIBERS {
        // Each subscriber takes a different subset (1 to 4 channels).
        let mine: Vec<String> = channels.iter().take(1 + s % CHANNELS).cloned().collect();
        let mut sub = hub.subscribe(&mine, Start::head()).await.unwrap();
        let expected = mine.len() * PUBLISHERS_PER_CHANNEL * PER_PUBLISHER;
        readers.push(tokio::spawn(async move {
            // Per channel, per publisher: the last sequence number seen.
            let mut last = std::collections::HashMap::<(String, usize), i64>::new();
            let mut last_offset = std::collections::HashMap::<String, u64>::new();
            for _ in 0..expected {
                let item = sub.next().await.unwrap();
                let Item::Message { message, .. } = item else {
                    panic!("unexpected gap: {item:?}")
                };
                let ch = message.channel().to_string();
                let prev = last_offset
                    .insert(ch.clone(), message.offset())
                    .unwrap_or(0);
                assert_eq!(message.offset(), prev + 1, "channel order, none twice");
                let (p, seq) = message.text().split_once(':').unwrap();
                let key = (ch, p.parse().unwrap());
                let seq: i64 = seq.parse().unwrap();
                let before = last.insert(key, seq).unwrap_or(-1);
                assert_eq!(seq, before + 1, "publisher order");
            }
            assert!(sub.try_next().is_none());
            expected
        }));
    }
    let mut publishers = vec![];
    for ch in &channels {
        for p in 0..PUBLISHERS_PER_CHANNEL {
            let (hub, ch) = (hub.clone(), ch.clone());
            publishers.push(tokio::spawn(async move {
                for seq in 0..PER_PUBLISHER {
                    hub.publish(&ch, format!("{p}:{seq}")).await.unwrap();
                    if seq % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
    }
    bounded(async {
        for p in publishers {
            p.await.unwrap();
        }
        let mut delivered = 0;
        for r in readers {
            delivered += r.await.unwrap();
        }
        assert!(delivered > 0);
    })
    .await;
}

#[tokio::test]
async fn subscriber_counts_follow_drops() {
    let hub = Hub::new();
    let a = hub.subscribe(["x", "y"], Start::head()).await.unwrap();
    let b = hub.subscribe(["x"], Start::head()).await.unwrap();
    assert_eq!(hub.local_subscribers(), 2);
    assert_eq!(hub.local_subscriber_count("x"), 2);
    assert_eq!(hub.local_subscriber_count("y"), 1);
    drop(a);
    assert_eq!(hub.local_subscribers(), 1);
    assert_eq!(hub.local_subscriber_count("y"), 0);
    drop(b);
    assert_eq!(hub.local_subscribers(), 0);
    assert_eq!(hub.local_subscriber_count("nope"), 0);
}

/// Names checked already are taken as they are, but what `channel_names`
/// makes sure of is checked again: none twice, some, not too many.
#[tokio::test]
async fn names_given_checked_are_held_to_what_channel_names_makes_sure_of() {
    let hub = Hub::builder().max_channels_per_subscription(2).build();
    let name = |n: &str| ChannelName::new(n).unwrap();
    let mut both = hub
        .subscribe_names(
            Subscriber::anonymous(),
            &[name("a"), name("b")],
            Start::head(),
        )
        .await
        .unwrap();
    hub.publish("b", "to b").await.unwrap();
    let item = timeout(Duration::from_secs(5), both.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.message().unwrap().text(), "to b");
    assert_eq!(
        hub.subscribe_names(
            Subscriber::anonymous(),
            &[name("a"), name("a")],
            Start::head()
        )
        .await
        .unwrap_err(),
        SubscribeError::DuplicateChannel(name("a"))
    );
    assert_eq!(
        hub.subscribe_names(Subscriber::anonymous(), &[], Start::head())
            .await
            .unwrap_err(),
        SubscribeError::NoChannels
    );
    let three = [name("a"), name("b"), name("c")];
    assert_eq!(
        hub.subscribe_names(Subscriber::anonymous(), &three, Start::head())
            .await
            .unwrap_err(),
        SubscribeError::TooManyChannels { max: 2 }
    );
    assert_eq!(hub.local_subscribers(), 1, "only the good one counted");
}

#[tokio::test]
async fn limits_are_clear_errors() {
    let hub = Hub::builder()
        .max_channels_per_subscription(2)
        .max_payload_bytes(8)
        .build();
    assert!(matches!(
        hub.subscribe(["a", "b", "c"], Start::head()).await,
        Err(SubscribeError::TooManyChannels { max: 2 })
    ));
    // Duplicates are one channel.
    assert!(hub
        .subscribe(["a", "a", "b", "b"], Start::head())
        .await
        .is_ok());
    assert_eq!(
        hub.subscribe(Vec::<String>::new(), Start::head())
            .await
            .unwrap_err(),
        SubscribeError::NoChannels
    );
    let err = hub
        .subscribe(["bad name"], Start::head())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "channel name contains ' '; allowed are A-Z a-z 0-9 _ . : @ / -"
    );
    assert!(matches!(
        hub.subscribe(["comet-x"], Start::head()).await,
        Err(SubscribeError::InvalidChannel(_))
    ));

    let err = hub.publish("a", "123456789").await.unwrap_err();
    assert!(matches!(
        err,
        PublishError::PayloadTooLarge { size: 9, max: 8 }
    ));
    assert_eq!(err.to_string(), "payload is 9 bytes, the limit is 8");
    assert!(matches!(
        hub.publish("a", Payload::text("x").event("a\nb")).await,
        Err(PublishError::InvalidEvent(_))
    ));
    assert!(matches!(
        hub.publish("a", Payload::text("x").event("comet-gap"))
            .await,
        Err(PublishError::InvalidEvent(_))
    ));
    assert!(matches!(
        hub.publish("", "x").await,
        Err(PublishError::InvalidChannel(_))
    ));
}

#[tokio::test]
async fn per_channel_history_policy() {
    let hub = Hub::builder()
        .history(HistoryPolicy {
            max_messages: 100,
            max_age: None,
        })
        .history_for(|name| HistoryPolicy {
            max_messages: if name.as_str().starts_with("tiny/") {
                1
            } else {
                100
            },
            max_age: None,
        })
        .build();
    for i in 0..3 {
        hub.publish("tiny/x", i.to_string()).await.unwrap();
        hub.publish("big", i.to_string()).await.unwrap();
    }
    let mut tiny = hub.subscribe(["tiny/x"], Start::oldest()).await.unwrap();
    assert_eq!(take(&mut tiny, 1).await.0, ["tiny/x:2"]);
    let mut big = hub.subscribe(["big"], Start::oldest()).await.unwrap();
    assert_eq!(take(&mut big, 3).await.0, ["big:0", "big:1", "big:2"]);
}

#[tokio::test]
async fn messages_are_shared_not_copied() {
    let hub = Hub::new();
    let mut a = hub.subscribe(["c"], Start::head()).await.unwrap();
    let mut b = hub.subscribe(["c"], Start::head()).await.unwrap();
    hub.publish("c", Payload::json(&serde_json::json!({"k": 1})).unwrap())
        .await
        .unwrap();
    let ma = bounded(a.next()).await.unwrap().message().unwrap().clone();
    let mb = bounded(b.next()).await.unwrap().message().unwrap().clone();
    assert!(std::sync::Arc::ptr_eq(&ma, &mb));
    assert_eq!(ma.data().as_ptr(), mb.data().as_ptr());
}

#[tokio::test]
async fn shutdown_ends_streams_and_refuses_new_subscriptions() {
    let hub = Hub::new();
    let mut idle = hub.subscribe(["a"], Start::head()).await.unwrap();
    let mut other = hub.subscribe(["b"], Start::head()).await.unwrap();
    let waiting = tokio::spawn(async move {
        let last = idle.next().await;
        (last, idle.next().await.is_none())
    });
    // Let the waiter register, then shut down: it must wake and end, after
    // an end that says why and when to come back.
    tokio::task::yield_now().await;
    hub.shutdown();
    let shutdown = EndReason::Shutdown {
        reconnect_within: DEFAULT_RECONNECT_WINDOW,
    };
    let (last, ended) = bounded(waiting).await.unwrap();
    assert!(
        matches!(last, Some(Item::Ended { channel: None, reason, .. }) if reason == shutdown),
        "{last:?}"
    );
    assert!(ended, "a waiting stream ends");
    assert!(
        matches!(bounded(other.next()).await, Some(Item::Ended { reason, .. }) if reason == shutdown),
        "a stream polled after shutdown ends so too"
    );
    assert!(bounded(other.next()).await.is_none());
    assert_eq!(
        hub.subscribe(["a"], Start::head()).await.unwrap_err(),
        SubscribeError::ShuttingDown
    );
    // History stays: a draining server can still publish, and it is retained.
    hub.publish("a", "last words").await.unwrap();
    assert_eq!(
        hub.current_cursor(["a"])
            .await
            .unwrap()
            .position(&"a".parse().unwrap())
            .unwrap()
            .offset,
        1
    );
}

#[tokio::test]
async fn a_subscription_keeps_its_hubs_engine_alive_after_the_hub_is_dropped() {
    // An engine with a backplane stops feeding its logs when the last
    // reference to it goes; a live subscription must be one.
    let engine = std::sync::Arc::new(comet_core::MemoryEngine::default());
    let hub = Hub::builder().engine(engine.clone()).build();
    let mut sub = hub.subscribe(["kept"], Start::head()).await.unwrap();
    drop(hub);
    assert!(
        std::sync::Arc::strong_count(&engine) > 1,
        "only the test holds the engine"
    );
    let other = Hub::builder().engine(engine.clone()).build();
    other.publish("kept", "still here").await.unwrap();
    let item = bounded(sub.next()).await.unwrap();
    assert_eq!(item.message().unwrap().text(), "still here");
    drop(sub);
    drop(other);
    assert_eq!(std::sync::Arc::strong_count(&engine), 1, "and then let go");
}
