//! The Redis engine against a real `redis-server` that each test starts on
//! its own port and stops: the memory engine's guarantees across nodes, its
//! scale properties, and every fault of the issue that asked for it.
//! Nodes are hubs on engines of their own, as in separate processes.

use comet_core::{Cursor, HistoryPolicy, Item, Start, Subscription};
use comet_test_support::nodes::*;
use comet_test_support::redis_server::RedisServer;
use comet_test_support::tcp_proxy::TcpProxy;
use comet_test_support::tool_tests;
use redis::AsyncCommands;
use std::{sync::Arc, time::Duration};
use tokio::time::{timeout, Instant};
use tokio_stream::StreamExt;

fn main() {
    comet_test_support::tool::run(tool_tests![[RedisServer];
        a_publish_on_any_node_reaches_every_subscriber_on_every_node_in_order_once,
        a_cursor_from_one_node_resumes_on_another_and_head_is_the_same_everywhere,
        payloads_cross_nodes_byte_for_byte,
        history_is_bounded_by_count_and_age_in_redis,
        one_redis_subscription_per_channel_per_node_and_unused_mirrors_are_dropped,
        a_flushed_script_cache_is_reloaded,
        keys_expire_when_unused_and_live_on_while_subscribed,
        keys_outlive_every_publish_by_their_ttl_though_refreshes_are_amortized,
        redis_down_at_publish_fails_within_the_timeout_and_the_route_answers_503,
        subscribers_stay_connected_through_an_outage_and_get_what_was_published_meanwhile,
        a_node_started_before_redis_answers_503_then_works_without_a_restart,
        a_killed_pubsub_connection_resubscribes_and_loses_nothing,
        redis_restarted_empty_is_one_gap_per_channel_then_new_messages,
        client_pause_makes_publishes_wait_or_fail_and_loses_nothing,
        foreign_messages_on_comet_channels_are_ignored_and_counted,
        redis_going_back_in_history_moves_the_channel_to_a_new_epoch,
        lost_writes_that_redis_has_since_overtaken_are_a_new_epoch,
        a_cursor_ahead_of_the_head_is_a_gap,
        redis_6s_numbering_and_redis_7s_continue_one_another_and_a_log_lost_alone_is_a_new_epoch,
    ]);
}

/// Nothing more arrives within a short while.
async fn quiet(sub: &mut Subscription) {
    if let Ok(item) = timeout(Duration::from_millis(300), sub.next()).await {
        panic!("expected nothing more, got {item:?}");
    }
}

async fn numsub(redis: &RedisServer, channel: &str) -> usize {
    let mut connection = redis.connection().await;
    let counts: Vec<(String, usize)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("comet:{{{channel}}}"))
        .query_async(&mut connection)
        .await
        .unwrap();
    counts[0].1
}

/// `CLIENT KILL TYPE pubsub`: every node's pub/sub connection drops.
async fn kill_pubsub_connections(connection: &mut redis::aio::MultiplexedConnection) {
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(connection)
        .await
        .unwrap();
}

async fn a_publish_on_any_node_reaches_every_subscriber_on_every_node_in_order_once() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let mut subs = Vec::new();
    for hub in [&a, &b, &a, &b] {
        subs.push(hub.subscribe(["chat"], Start::head()).await.unwrap());
    }
    // Concurrent publishers on both nodes: one order, the same for everyone.
    let mut publishers = Vec::new();
    for (i, hub) in [a.clone(), b.clone()].into_iter().enumerate() {
        publishers.push(tokio::spawn(async move {
            for n in 0..50 {
                hub.publish("chat", format!("{i}-{n}")).await.unwrap();
            }
        }));
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let first = take(&mut subs[0], 100).await;
    let offsets: Vec<u64> = first
        .iter()
        .map(|item| item.split(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(offsets, (1..=100).collect::<Vec<_>>());
    for sub in &mut subs[1..] {
        assert_eq!(take(sub, 100).await, first, "every node, the same order");
        quiet(sub).await;
    }
    // Each publisher's own messages stay in its order.
    for i in 0..2 {
        let own: Vec<&String> = first
            .iter()
            .filter(|m| m.contains(&format!(":{i}-")))
            .collect();
        let expected: Vec<String> = (0..50).map(|n| format!("{i}-{n}")).collect();
        let got: Vec<String> = own
            .iter()
            .map(|m| m.split(':').nth(1).unwrap().to_owned())
            .collect();
        assert_eq!(got, expected);
    }
}

/// Payloads cross nodes byte for byte: JSON as its publisher wrote it (line
/// breaks, key order, duplicate keys, big numbers), text, event names.
async fn payloads_cross_nodes_byte_for_byte() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let mut sub = b.subscribe(["bytes"], Start::head()).await.unwrap();
    let json = "{\n  \"z\": 1,\r\n  \"a\": 12345678901234567890123,\n  \"z\": \"\\u00e9\"\n}";
    let published = [
        comet_core::Payload::json_bytes(json.as_bytes().to_vec())
            .unwrap()
            .event("edited"),
        comet_core::Payload::text("line one\nline two\r\n\u{2028}é"),
    ];
    for payload in published.clone() {
        a.publish("bytes", payload).await.unwrap();
    }
    for payload in published {
        let Some(Item::Message { message, .. }) = bounded("item", sub.next()).await else {
            panic!("expected a message");
        };
        assert_eq!(message.data(), payload.data());
        assert_eq!(message.kind(), payload.kind());
        assert_eq!(message.event(), payload.event_name());
    }
}

async fn a_cursor_from_one_node_resumes_on_another_and_head_is_the_same_everywhere() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let head_a = a.current_cursor(["news", "sport"]).await.unwrap();
    let head_b = b.current_cursor(["news", "sport"]).await.unwrap();
    // The same place on every node (a channel never published to is in the
    // void, and each node's cursor names when it saw it so).
    for channel in ["news", "sport"] {
        let name = comet_core::ChannelName::new(channel).unwrap();
        let (at_a, at_b) = (head_a.position(&name), head_b.position(&name));
        assert_eq!(
            at_a.map(|p| (p.epoch, p.offset)),
            at_b.map(|p| (p.epoch, p.offset)),
            "head is the same on every node"
        );
    }
    a.publish("news", "one").await.unwrap();
    b.publish("sport", "two").await.unwrap();
    // A page rendered on node a subscribes on node b with a's cursor.
    let mut sub = b
        .subscribe(["news", "sport"], head_a.clone())
        .await
        .unwrap();
    let mut got = take(&mut sub, 2).await;
    got.sort();
    assert_eq!(got, ["1:one", "1:two"]);
    let cursor = sub.cursor().encode();
    a.publish("news", "three").await.unwrap();
    // ... and its cursor resumes on node a: exactly what followed.
    let mut resumed = a
        .subscribe(["news", "sport"], Cursor::decode(&cursor).unwrap())
        .await
        .unwrap();
    assert_eq!(next(&mut resumed).await, "2:three");
    quiet(&mut resumed).await;
    // A cursor published on one node, read on a node that has not seen the
    // message yet, still resumes after it (the node catches up first).
    let (c, _) = node(&redis.url());
    let mut warm = c.subscribe(["news"], Start::head()).await.unwrap();
    let cursor = a.publish("news", "four").await.unwrap();
    let mut after = c.subscribe(["news"], cursor).await.unwrap();
    assert_eq!(next(&mut warm).await, "3:four");
    a.publish("news", "five").await.unwrap();
    assert_eq!(next(&mut after).await, "4:five");
}

async fn history_is_bounded_by_count_and_age_in_redis() {
    let redis = RedisServer::start();
    let (hub, _) = node_with(builder(&redis.url()).history(HistoryPolicy {
        max_messages: 5,
        max_age: None,
    }));
    for n in 1..=12 {
        hub.publish("c", n.to_string()).await.unwrap();
    }
    let mut connection = redis.connection().await;
    let len: usize = connection.xlen("comet:{c}:log2").await.unwrap();
    assert_eq!(len, 5, "the stream holds the bound");
    let (other, _) = node(&redis.url());
    let mut sub = other.subscribe(["c"], Start::oldest()).await.unwrap();
    assert_eq!(
        take(&mut sub, 5).await,
        ["8:8", "9:9", "10:10", "11:11", "12:12"]
    );
    let mut from_start = other
        .subscribe(["c"], hub.current_cursor(["c"]).await.unwrap())
        .await
        .unwrap();
    quiet(&mut from_start).await;

    // Above 100, Redis trims whole stream nodes (up to about 100 more kept);
    // readers still get exactly the bound.
    let (big, _) = node_with(builder(&redis.url()).history(HistoryPolicy {
        max_messages: 150,
        max_age: None,
    }));
    for n in 1..=400 {
        big.publish("big", n.to_string()).await.unwrap();
    }
    let len: usize = connection.xlen("comet:{big}:log2").await.unwrap();
    assert!((150..=250).contains(&len), "{len} entries");
    let (reader, _) = node_with(builder(&redis.url()).history(HistoryPolicy {
        max_messages: 150,
        max_age: None,
    }));
    let mut all = reader.subscribe(["big"], Start::oldest()).await.unwrap();
    let items = take(&mut all, 150).await;
    assert_eq!(items[0], "251:251");
    assert_eq!(items[149], "400:400");
    quiet(&mut all).await;

    // By age: the old one expires in Redis (at the next publish) and in
    // every mirror (as it is read).
    let (aged, _) = node_with(builder(&redis.url()).history(HistoryPolicy {
        max_messages: 100,
        max_age: Some(Duration::from_millis(400)),
    }));
    let start = aged.current_cursor(["a"]).await.unwrap();
    aged.publish("a", "old").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    aged.publish("a", "new").await.unwrap();
    // Readers never see it: a gap of exactly one.
    let mut sub = aged.subscribe(["a"], start.clone()).await.unwrap();
    assert_eq!(take(&mut sub, 2).await, ["gap:Some(1)", "2:new"]);
    // Redis drops it too: the publish after it came an eighth of the
    // maximum age after the last trim (the first publish's), so it trimmed.
    let len: usize = connection.xlen("comet:{a}:log2").await.unwrap();
    assert_eq!(len, 1, "the expired entry is trimmed");
    // Publishes within an eighth of the maximum age of a trim trim nothing
    // (amortized): the age trim ran at the last one, and ages are recorded.
    let meta: Vec<Option<String>> = redis::cmd("HMGET")
        .arg("comet:{a}:meta2")
        .arg("x")
        .arg("a")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(meta.iter().all(Option::is_some), "{meta:?}");
    let ttl: i64 = connection.pttl("comet:{a}:meta2").await.unwrap();
    assert!(ttl > 0, "keys of a channel with a maximum age expire");
}

async fn one_redis_subscription_per_channel_per_node_and_unused_mirrors_are_dropped() {
    let redis = RedisServer::start();
    let (a, engine_a) = node(&redis.url());
    let (b, engine_b) = node(&redis.url());
    let mut subs = Vec::new();
    for i in 0..10_000 {
        let hub = if i % 2 == 0 { &a } else { &b };
        subs.push(hub.subscribe(["crowd"], Start::head()).await.unwrap());
    }
    assert_eq!(numsub(&redis, "crowd").await, 2, "one per node");
    a.publish("crowd", "all").await.unwrap();
    for sub in subs.iter_mut().step_by(997) {
        assert_eq!(next(sub).await, "1:all");
    }
    assert_eq!(engine_a.stats().mirrors, 1);
    // Stored once per node: every local subscriber shares one message (and
    // so its encodings).
    b.publish("crowd", "shared").await.unwrap();
    let mut shared = Vec::new();
    for sub in subs.iter_mut().skip(2).step_by(2).take(3) {
        loop {
            let Some(Item::Message { message, .. }) = bounded("item", sub.next()).await else {
                panic!("expected a message");
            };
            if message.offset() == 2 {
                shared.push(message);
                break;
            }
        }
    }
    assert!(Arc::ptr_eq(&shared[0], &shared[1]) && Arc::ptr_eq(&shared[1], &shared[2]));
    drop(subs);
    // Nobody uses the mirrors any more: both nodes drop them and unsubscribe.
    eventually("mirrors dropped", || {
        engine_a.stats().mirrors == 0 && engine_b.stats().mirrors == 0
    })
    .await;
    let deadline = Instant::now() + BOUND;
    while numsub(&redis, "crowd").await != 0 {
        assert!(Instant::now() < deadline, "still subscribed in Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And a mirror comes back, current, on the next subscribe.
    let mut sub = b.subscribe(["crowd"], Start::oldest()).await.unwrap();
    assert_eq!(next(&mut sub).await, "1:all");
}

async fn keys_expire_when_unused_and_live_on_while_subscribed() {
    let redis = RedisServer::start();
    let short = || {
        builder(&redis.url())
            .idle_ttl(Duration::from_millis(400))
            .history(HistoryPolicy {
                max_messages: 10,
                max_age: Some(Duration::from_millis(100)),
            })
    };
    let (hub, _) = node_with(short());
    let mut sub = hub.subscribe(["kept"], Start::head()).await.unwrap();
    hub.publish("kept", "1").await.unwrap();
    hub.publish("gone", "1").await.unwrap();
    assert_eq!(next(&mut sub).await, "1:1");
    let mut connection = redis.connection().await;
    let deadline = Instant::now() + BOUND;
    while connection
        .exists::<_, bool>("comet:{gone}:meta2")
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "an unused channel's keys stay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Well past the keys' own TTL, the subscribed channel keeps its epoch:
    // the next message follows on, with no gap.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(connection
        .exists::<_, bool>("comet:{kept}:meta2")
        .await
        .unwrap());
    hub.publish("kept", "2").await.unwrap();
    assert_eq!(next(&mut sub).await, "2:2");
}

/// A channel's keys live their whole TTL (max age + idle TTL, here 400 ms)
/// after each publish, including those that do not refresh it (the publish
/// script refreshes when a quarter of it has passed, to 5/4 of it). Checked
/// in Redis's own time: the newest entry's time plus the TTL is at or
/// before when the keys expire.
async fn keys_outlive_every_publish_by_their_ttl_though_refreshes_are_amortized() {
    let redis = RedisServer::start();
    let (hub, _) = node_with(
        builder(&redis.url())
            .idle_ttl(Duration::from_millis(200))
            .history(HistoryPolicy {
                max_messages: 100,
                max_age: Some(Duration::from_millis(200)),
            }),
    );
    let mut connection = redis.connection().await;
    let check = redis::Script::new(
        r"local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1][2]
          local published
          for i = 1, #newest, 2 do
            if newest[i] == 'h' then published = tonumber(string.match(newest[i + 1], '^(%d+)\n')) end
          end
          return {now + redis.call('PTTL', KEYS[1]) - published, now + redis.call('PTTL', KEYS[2]) - published}",
    );
    let lives = |connection: &mut redis::aio::MultiplexedConnection| {
        let mut connection = connection.clone();
        let check = check.clone();
        async move {
            let lives: Vec<i64> = check
                .key("comet:{kept}:meta2")
                .key("comet:{kept}:log2")
                .invoke_async(&mut connection)
                .await
                .unwrap();
            lives
        }
    };
    for n in 0..12 {
        hub.publish("kept", n.to_string()).await.unwrap();
        let lives = lives(&mut connection).await;
        // PTTL and TIME round to the millisecond: one of slack.
        assert!(
            lives.iter().all(|&life| life >= 399),
            "publish {n}: the keys expire {lives:?} ms after it, less than their TTL"
        );
        // Some publishes come after a refresh, some long enough after
        // one to need another.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // Cleared (a new epoch, the log dropped) just after a refresh: the next
    // publish makes the log again, with its TTL, however recent that was.
    tokio::time::sleep(Duration::from_millis(150)).await;
    hub.publish("kept", "refreshes").await.unwrap();
    hub.close_and_clear("kept").await.unwrap();
    hub.publish("kept", "after clearing").await.unwrap();
    let after = lives(&mut connection).await;
    assert!(
        after.iter().all(|&life| life >= 399),
        "after clearing: {after:?}"
    );
    // A node with a longer TTL (a restart with another configuration):
    // its publish gives the keys the longer one at once.
    let (longer, _) = node_with(
        builder(&redis.url())
            .idle_ttl(Duration::from_millis(2000))
            .history(HistoryPolicy {
                max_messages: 100,
                max_age: Some(Duration::from_millis(200)),
            }),
    );
    longer.publish("kept", "with a longer TTL").await.unwrap();
    let longer_lives = lives(&mut connection).await;
    assert!(
        longer_lives.iter().all(|&life| life >= 2199),
        "after a longer TTL: {longer_lives:?}"
    );
}

async fn a_flushed_script_cache_is_reloaded() {
    let redis = RedisServer::start();
    let (hub, _) = node(&redis.url());
    let mut sub = hub.subscribe(["s"], Start::head()).await.unwrap();
    hub.publish("s", "before").await.unwrap();
    let mut connection = redis.connection().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut connection)
        .await
        .unwrap();
    hub.publish("s", "after").await.unwrap();
    assert_eq!(take(&mut sub, 2).await, ["1:before", "2:after"]);
}

async fn redis_down_at_publish_fails_within_the_timeout_and_the_route_answers_503() {
    let mut redis = RedisServer::start();
    let (hub, _) = node(&redis.url());
    hub.publish("p", "up").await.unwrap();
    let app = axum::Router::new().layer(
        comet_tower::CometLayer::new(hub.clone())
            .publish(
                "/publish",
                comet_push::PublishRoute::new().authorize(|_, _| true),
            )
            .long_poll("/poll"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    redis.stop();

    let started = Instant::now();
    let error = bounded("publish fails", hub.publish("p", "down"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, comet_core::PublishError::Engine(_)),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let client = reqwest::Client::new();
    let started = Instant::now();
    let response = bounded(
        "publish route answers",
        client
            .post(format!("http://{addr}/publish/p"))
            .body("down")
            .send(),
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unavailable", "{body}");
    // A new subscriber is told the same, not held.
    let response = bounded(
        "subscribe answers",
        client
            .get(format!("http://{addr}/poll?channel=fresh"))
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 503);
    server.abort();
}

async fn subscribers_stay_connected_through_an_outage_and_get_what_was_published_meanwhile() {
    let redis = RedisServer::start();
    // Node a reaches Redis through a link the test can cut.
    let link = TcpProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let (a, engine_a) = node(&link.url());
    let (b, _) = node(&redis.url());
    let mut sub = a.subscribe(["o"], Start::head()).await.unwrap();
    b.publish("o", "1").await.unwrap();
    assert_eq!(next(&mut sub).await, "1:1");
    link.cut();
    eventually("a notices", || !engine_a.stats().connected).await;
    for n in 2..=4 {
        b.publish("o", n.to_string()).await.unwrap();
    }
    // Node a cannot vouch for its mirror meanwhile: new subscribers wait out.
    assert!(a.subscribe(["o"], Start::head()).await.is_err());
    link.restore();
    assert_eq!(take(&mut sub, 3).await, ["2:2", "3:3", "4:4"]);
    b.publish("o", "5").await.unwrap();
    assert_eq!(next(&mut sub).await, "5:5");
    quiet(&mut sub).await;

    // A link that dies in silence (no FIN, no RST) is noticed all the same.
    link.freeze();
    b.publish("o", "6").await.unwrap();
    assert_eq!(next(&mut sub).await, "6:6");
}

async fn a_node_started_before_redis_answers_503_then_works_without_a_restart() {
    let port = {
        let probe = RedisServer::start();
        probe.port
    }; // a port known to be free now
    let url = format!("redis://127.0.0.1:{port}");
    let (hub, engine) = node(&url);
    let started = Instant::now();
    assert!(bounded("publish", hub.publish("early", "x")).await.is_err());
    assert!(matches!(
        bounded("subscribe", hub.subscribe(["early"], Start::head())).await,
        Err(comet_core::SubscribeError::Unavailable { .. })
    ));
    assert!(bounded("head", hub.current_cursor(["early"]))
        .await
        .is_err());
    assert!(started.elapsed() < Duration::from_secs(7));
    assert_eq!(
        hub.local_subscribers(),
        0,
        "failed subscribes leave nothing counted"
    );
    let _redis = bounded("redis starts", async {
        loop {
            if let Some(redis) = RedisServer::start_on(port) {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    eventually("connected", || engine.stats().connected).await;
    let mut sub = bounded("subscribe", async {
        loop {
            match hub.subscribe(["early"], Start::head()).await {
                Ok(sub) => return sub,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    hub.publish("early", "works").await.unwrap();
    assert_eq!(next(&mut sub).await, "1:works");
}

async fn a_killed_pubsub_connection_resubscribes_and_loses_nothing() {
    let redis = RedisServer::start();
    // History holds all 200: the subscriber reads only once they are out.
    // Both nodes keep the same history (the publisher's trims Redis's).
    let (a, engine_a) = node_with(builder(&redis.url()).history(HistoryPolicy::default()));
    let (b, _) = node_with(builder(&redis.url()).history(HistoryPolicy::default()));
    let mut sub = a.subscribe(["k"], Start::head()).await.unwrap();
    let publisher = tokio::spawn({
        let b = b.clone();
        async move {
            for n in 1..=200 {
                b.publish("k", n.to_string()).await.unwrap();
                if n % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    });
    let mut connection = redis.connection().await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        kill_pubsub_connections(&mut connection).await;
    }
    publisher.await.unwrap();
    let expected: Vec<String> = (1..=200).map(|n| format!("{n}:{n}")).collect();
    let mut got = Vec::new();
    while got.len() < 200 {
        match timeout(BOUND, sub.next()).await {
            Ok(Some(Item::Message { message, .. })) => {
                got.push(format!("{}:{}", message.offset(), message.text()))
            }
            Ok(Some(Item::Gap { missed, .. })) => got.push(format!("gap:{missed:?}")),
            _ => panic!("after {} items: {got:?}; {:?}", got.len(), engine_a.stats()),
        }
    }
    assert_eq!(got, expected, "nothing lost, nothing twice");
    quiet(&mut sub).await;
    assert!(engine_a.stats().refreshes >= 2, "{:?}", engine_a.stats());
}

async fn redis_restarted_empty_is_one_gap_per_channel_then_new_messages() {
    let mut redis = RedisServer::start();
    let (a, engine_a) = node(&redis.url());
    let (b, engine_b) = node(&redis.url());
    let mut on_a = a.subscribe(["r1", "r2"], Start::head()).await.unwrap();
    let mut on_b = b.subscribe(["r1"], Start::head()).await.unwrap();
    a.publish("r1", "before").await.unwrap();
    a.publish("r2", "before").await.unwrap();
    let mut got = take(&mut on_a, 2).await;
    got.sort();
    assert_eq!(got, ["1:before", "1:before"]);
    assert_eq!(next(&mut on_b).await, "1:before");
    let cursor = on_b.cursor();

    redis.restart();
    eventually("both reconnected", || {
        engine_a.stats().connected && engine_b.stats().connected
    })
    .await;
    let mut gaps = take(&mut on_a, 2).await;
    gaps.sort();
    assert_eq!(gaps, ["gap:None", "gap:None"], "one gap per channel");
    assert_eq!(next(&mut on_b).await, "gap:None");
    b.publish("r1", "after").await.unwrap();
    assert_eq!(next(&mut on_a).await, "1:after");
    assert_eq!(next(&mut on_b).await, "1:after");
    quiet(&mut on_a).await;
    // A client resuming with a cursor from before gets one gap too.
    let mut resumed = b.subscribe(["r1"], cursor).await.unwrap();
    assert_eq!(take(&mut resumed, 2).await, ["gap:None", "1:after"]);
}

async fn client_pause_makes_publishes_wait_or_fail_and_loses_nothing() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let mut sub = a.subscribe(["w"], Start::head()).await.unwrap();
    let mut connection = redis.connection().await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    let started = Instant::now();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for n in 1..=5 {
        match bounded("publish", b.publish("w", n.to_string())).await {
            Ok(_) => accepted.push(n.to_string()),
            Err(error) => {
                assert!(matches!(error, comet_core::PublishError::Engine(_)));
                refused += 1;
            }
        }
    }
    assert!(refused >= 1, "a 3 s pause outlasts the 2 s timeout");
    assert!(started.elapsed() < Duration::from_secs(12));
    eventually("pause over", || started.elapsed() > Duration::from_secs(3)).await;
    b.publish("w", "last").await.unwrap();
    // Whatever was accepted is delivered, in order, with no gap and no
    // repeat; a refused publish may still have landed (its outcome was
    // unknown to the publisher), and then it is delivered like any other.
    let mut texts = Vec::new();
    loop {
        let item = next(&mut sub).await;
        assert!(!item.starts_with("gap"), "{item}");
        let (offset, text) = item.split_once(':').unwrap();
        assert_eq!(offset.parse::<usize>().unwrap(), texts.len() + 1);
        texts.push(text.to_owned());
        if text == "last" {
            break;
        }
    }
    for text in &accepted {
        assert!(texts.contains(text), "{text} lost: {texts:?}");
    }
}

async fn foreign_messages_on_comet_channels_are_ignored_and_counted() {
    let redis = RedisServer::start();
    let (hub, engine) = node(&redis.url());
    let mut sub = hub.subscribe(["f"], Start::head()).await.unwrap();
    let mut connection = redis.connection().await;
    for junk in [
        &b"hello"[..],
        b"c1\n1\n1\n1\nt\n\n\xff\xfe",
        b"c1\nnot-a-number\n1\n1\nt\n\nx",
        b"",
    ] {
        let _: i64 = connection.publish("comet:{f}", junk).await.unwrap();
    }
    hub.publish("f", "real").await.unwrap();
    assert_eq!(next(&mut sub).await, "1:real");
    eventually("counted", || engine.stats().malformed == 4).await;
    quiet(&mut sub).await;

    // A log that cannot be continued (written by something else: another
    // type, or entries ahead of the offsets) starts over in a new epoch.
    let _: () = connection
        .set("comet:{other}:log2", "a string")
        .await
        .unwrap();
    let mut other = hub.subscribe(["other"], Start::head()).await.unwrap();
    hub.publish("other", "1").await.unwrap();
    assert_eq!(next(&mut other).await, "1:1");
    let _: String = connection
        .xadd("comet:{other}:log2", "99-0", &[("junk", "x")])
        .await
        .unwrap();
    hub.publish("other", "2").await.unwrap();
    assert_eq!(take(&mut other, 2).await, ["gap:None", "1:2"]);

    // A meta key that holds something else is no state of comet's: the
    // channel is in the void, and the next publish starts it over (as a log
    // of another type does), in that channel alone.
    let _: () = connection
        .set("comet:{taken}:meta2", "not a hash")
        .await
        .unwrap();
    let mut taken = hub.subscribe(["taken"], Start::head()).await.unwrap();
    hub.publish("taken", "x").await.unwrap();
    assert_eq!(next(&mut taken).await, "1:x");
    assert!(engine.stats().connected, "the node stays connected");
    hub.publish("f", "still").await.unwrap();
    assert_eq!(next(&mut sub).await, "2:still");
    // A foreign entry in a channel's stream is left out: an exact gap.
    let _: String = connection
        .xadd("comet:{f}:log2", "0-3", &[("junk", "x")])
        .await
        .unwrap();
    hub.publish("f", "after").await.unwrap();
    assert_eq!(take(&mut sub, 2).await, ["gap:Some(1)", "4:after"]);
    assert_eq!(engine.stats().malformed, 5);
}

async fn redis_going_back_in_history_moves_the_channel_to_a_new_epoch() {
    let redis = RedisServer::start();
    let (a, engine_a) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let mut sub = a.subscribe(["g"], Start::head()).await.unwrap();
    for n in 1..=5 {
        b.publish("g", n.to_string()).await.unwrap();
    }
    assert_eq!(take(&mut sub, 5).await.len(), 5);
    let old_cursor = sub.cursor();
    // As a snapshot restored from before messages 4 and 5 would leave it:
    // the same epoch, offsets back at 3.
    let mut connection = redis.connection().await;
    roll_back(&mut connection, "g", 3).await;
    kill_pubsub_connections(&mut connection).await;
    // Node a notices on reconnecting: its subscribers get one unknown gap,
    // and none of the history kept under the old epoch (they may have it),
    // then new messages.
    assert_eq!(next(&mut sub).await, "gap:None");
    assert_eq!(engine_a.stats().epochs_renewed, 1);
    b.publish("g", "new").await.unwrap();
    assert_eq!(next(&mut sub).await, "4:new");
    quiet(&mut sub).await;
    // A client back with a cursor from before: one gap, never offset 4 twice,
    // nothing it had again.
    let mut resumed = b.subscribe(["g"], old_cursor).await.unwrap();
    assert_eq!(take(&mut resumed, 2).await, ["gap:None", "4:new"]);
    quiet(&mut resumed).await;

    // FLUSHALL: the next publish starts a new epoch; subscribers get a gap.
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    b.publish("g", "fresh").await.unwrap();
    assert_eq!(take(&mut sub, 2).await, ["gap:None", "1:fresh"]);
}

/// Lost writes that Redis has since overtaken (a replica promoted behind its
/// primary, then new publishes there): the same epoch, a head past the
/// mirror's, but another message at the mirror's offset. Still a new epoch,
/// and one gap, never a different message under an offset already served.
async fn lost_writes_that_redis_has_since_overtaken_are_a_new_epoch() {
    let redis = RedisServer::start();
    let link = TcpProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let (a, engine_a) = node(&link.url());
    let (b, _) = node(&redis.url());
    let mut sub = a.subscribe(["v"], Start::head()).await.unwrap();
    for n in 1..=5 {
        b.publish("v", n.to_string()).await.unwrap();
    }
    assert_eq!(take(&mut sub, 5).await.len(), 5);
    link.cut();
    eventually("a notices", || !engine_a.stats().connected).await;
    // What the promoted replica has: 1 to 3, and offsets back at 3.
    let mut connection = redis.connection().await;
    roll_back(&mut connection, "v", 3).await;
    for text in ["x", "y", "z"] {
        b.publish("v", text).await.unwrap(); // 4, 5 and 6, again
    }
    link.restore();
    assert_eq!(next(&mut sub).await, "gap:None");
    assert_eq!(engine_a.stats().epochs_renewed, 1);
    b.publish("v", "after").await.unwrap();
    assert_eq!(next(&mut sub).await, "7:after");
    quiet(&mut sub).await;
}

async fn a_cursor_ahead_of_the_head_is_a_gap() {
    let redis = RedisServer::start();
    let (hub, _) = node(&redis.url());
    hub.publish("h", "1").await.unwrap();
    let real = hub.current_cursor(["h"]).await.unwrap().encode();
    // The same epoch, offset 1 -> 9 (a forged cursor, or a history rolled back).
    let forged = {
        let cursor = Cursor::decode(&real).unwrap();
        let channel = comet_core::ChannelName::new("h").unwrap();
        let position = cursor.position(&channel).unwrap();
        comet_core::Position::new(&channel, position.epoch, 9)
    };
    let forged = Cursor::from(forged);
    let mut sub = hub.subscribe(["h"], forged).await.unwrap();
    assert_eq!(next(&mut sub).await, "gap:None");
    hub.publish("h", "2").await.unwrap();
    assert_eq!(next(&mut sub).await, "2:2");
}

/// Publishes `text` on `channel` as a node on Redis 6 does (the script
/// numbers entries from the meta hash's `last`, not with `XADD 0-*`).
async fn publish_as_redis_6(
    connection: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    text: &str,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let identity = comet_core::engine::random_epoch().max(1).to_string();
    let _: redis::Value = redis::Script::new(include_str!("../src/scripts/publish.lua"))
        .key(format!("comet:{{{channel}}}:meta2"))
        .key(format!("comet:{{{channel}}}:log2"))
        .arg(comet_core::engine::random_epoch().to_string())
        .arg(format!("{now}\n{identity}\nt\n"))
        .arg(text)
        .arg(100)
        .arg(0)
        .arg(0)
        .arg(format!("comet:{{{channel}}}"))
        .arg(&identity)
        .arg(300_000)
        .arg("0")
        .arg(&now)
        .arg("0")
        .arg("PUBLISH")
        .invoke_async(connection)
        .await
        .unwrap();
}

async fn redis_6s_numbering_and_redis_7s_continue_one_another_and_a_log_lost_alone_is_a_new_epoch()
{
    let redis = RedisServer::start();
    let (hub, _) = node(&redis.url());
    let mut sub = hub.subscribe(["six"], Start::head()).await.unwrap();
    let mut connection = redis.connection().await;
    for text in ["a", "b", "c"] {
        publish_as_redis_6(&mut connection, "six", text).await;
    }
    assert_eq!(take(&mut sub, 3).await, ["1:a", "2:b", "3:c"]);
    // Redis upgraded to 7: its numbering goes on from Redis 6's.
    hub.publish("six", "d").await.unwrap();
    hub.publish("six", "e").await.unwrap();
    assert_eq!(take(&mut sub, 2).await, ["4:d", "5:e"]);
    let last: Option<String> = connection.hget("comet:{six}:meta2", "last").await.unwrap();
    assert_eq!(last, None, "Redis 7 numbers entries itself");
    // And back (a replica of Redis 6 promoted, say): on from the log.
    publish_as_redis_6(&mut connection, "six", "f").await;
    assert_eq!(next(&mut sub).await, "6:f");
    hub.publish("six", "g").await.unwrap();
    assert_eq!(next(&mut sub).await, "7:g");
    // On Redis 7, a log lost alone (evicted) cannot say where its offsets
    // were: a new epoch, never an offset given twice.
    let _: () = connection.del("comet:{six}:log2").await.unwrap();
    hub.publish("six", "h").await.unwrap();
    assert_eq!(take(&mut sub, 2).await, ["gap:None", "1:h"]);
    // So on Redis 6, which has no `last` to go on from either.
    let _: () = connection.del("comet:{six}:log2").await.unwrap();
    publish_as_redis_6(&mut connection, "six", "i").await;
    assert_eq!(take(&mut sub, 2).await, ["gap:None", "1:i"]);
    quiet(&mut sub).await;
}
