//! Redis Sentinel (issue #23): nodes built from a `redis+sentinel://` URL
//! find the primary through Sentinel and follow a failover, against real
//! `redis-server` and `redis-sentinel` processes that each test starts on
//! its own ports. Nodes are hubs on engines of their own, as in separate
//! processes.

use comet_core::{ChannelName, Cursor, Position, PublishError, Start};
use comet_redis::RedisEngine;
use comet_test_support::nodes::*;
use comet_test_support::redis_server;
use comet_test_support::sentinel::SentinelServer;
use comet_test_support::tool_tests;
use redis::{aio::MultiplexedConnection, AsyncCommands};
use std::{future::Future, time::Duration};
use tokio::time::Instant;

fn main() {
    let mut tests = tool_tests![[RedisServer, RedisSentinel];
        publishes_follow_a_sentinel_failover_to_the_promoted_replica,
    ];
    // These start no process.
    tests.extend(tool_tests![[];
        a_malformed_sentinel_url_is_a_build_error,
        with_no_sentinel_answering_a_publish_fails_within_the_timeout,
    ]);
    comet_test_support::tool::run(tests);
}

/// The service the sentinel monitors.
const SERVICE: &str = "mymaster";

fn position(cursor: &Cursor, channel: &str) -> Position {
    cursor
        .position(&ChannelName::new(channel).unwrap())
        .expect("the cursor names the channel")
}

/// Polls `check` (every 20 ms, within [`BOUND`]) until it holds.
async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    bounded(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The primary's port as the sentinel names it.
async fn named_primary(sentinel: &mut MultiplexedConnection) -> u16 {
    let (_, port): (String, u16) = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(SERVICE)
        .query_async(sentinel)
        .await
        .unwrap();
    port
}

/// `ROLE`'s first word: `master` or `slave`.
async fn role(connection: &mut MultiplexedConnection) -> String {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(connection).await.unwrap();
    redis::from_redis_value(role[0].clone()).unwrap()
}

/// A primary, its replica and a sentinel watching them; two nodes built from
/// the `redis+sentinel://` URL. After `SENTINEL FAILOVER`, both nodes move
/// to the promoted replica as soon as Sentinel announces it: well before
/// Sentinel demotes the old primary (about ten seconds later), which until
/// then still takes writes, and would lose them. A publish then lands on the
/// new primary and reaches the other node's subscriber as the next offset of
/// the same epoch: no gap, nothing lost.
async fn publishes_follow_a_sentinel_failover_to_the_promoted_replica() {
    let (primary, replica, mut p, _) = redis_server::replicated().await;
    let sentinel = SentinelServer::start(SERVICE, primary.port);
    let mut s = sentinel.connection().await;

    let (a, engine_a) = node(&sentinel.url(SERVICE));
    let (b, engine_b) = node(&sentinel.url(SERVICE));
    let mut on_b = bounded("subscribe on b", b.subscribe(["sen"], Start::head()))
        .await
        .unwrap();
    let mut epoch = 0;
    for n in 1..=3 {
        let cursor = bounded("publish on a", a.publish("sen", n.to_string()))
            .await
            .unwrap();
        epoch = position(&cursor, "sen").epoch;
    }
    assert_eq!(take(&mut on_b, 3).await, ["1:1", "2:2", "3:3"]);
    // The replica has it all before the failover. WAIT counts the replicas
    // that acknowledged this connection's writes: one write here, after the
    // nodes' in the replication stream, makes it cover theirs too. Right
    // after its first sync a replica acknowledges once a second; WAIT is
    // asked again (each time under the connection's response timeout).
    let () = p.set("comet-test:written", 1).await.unwrap();
    until("the replica acknowledged every write (WAIT 1)", || {
        let mut p = p.clone();
        async move {
            let acknowledged: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(200)
                .query_async(&mut p)
                .await
                .unwrap();
            acknowledged == 1
        }
    })
    .await;

    // Accepted once the sentinel knows a replica it may promote (it learns
    // of the replica from the primary, just after starting).
    bounded("SENTINEL FAILOVER accepted", async {
        loop {
            let answer: redis::RedisResult<()> = redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(SERVICE)
                .query_async(&mut s)
                .await;
            match answer {
                Ok(()) => return,
                Err(error) if error.code() == Some("NOGOODSLAVE") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => panic!("SENTINEL FAILOVER: {error}"),
            }
        }
    })
    .await;
    let failover = Instant::now();
    until("the sentinel names the former replica", || {
        // A handle on the same multiplexed connection.
        let mut s = s.clone();
        async move { named_primary(&mut s).await == replica.port }
    })
    .await;
    let named = Instant::now();
    eventually("both nodes moved to the new primary", || {
        [&engine_a, &engine_b]
            .iter()
            .all(|engine| engine.stats().failovers == 1 && engine.stats().connected)
    })
    .await;
    let followed = named.elapsed();
    eprintln!(
        "sentinel named the new primary {:?} after FAILOVER; both nodes followed {followed:?} later",
        named - failover
    );
    assert!(
        followed < Duration::from_secs(5),
        "the nodes must follow Sentinel's announcement, not wait for the old primary to be \
         demoted; they took {followed:?}"
    );
    // Precondition: they moved on Sentinel's word, while the old primary
    // still took writes.
    assert_eq!(role(&mut p).await, "master");

    let cursor = bounded("publish after the failover", a.publish("sen", "after"))
        .await
        .unwrap();
    let after = position(&cursor, "sen");
    assert_eq!(
        (after.epoch, after.offset),
        (epoch, 4),
        "the publish must follow the last one in the same epoch"
    );
    // On the new primary (Sentinel closed every client connection there
    // when it promoted it).
    let mut r = replica.connection().await;
    let newest: redis::streams::StreamRangeReply = r
        .xrevrange_count("comet:{sen}:log2", "+", "-", 1)
        .await
        .unwrap();
    let newest = newest.ids.first().map(|entry| entry.id.as_str());
    assert_eq!(
        newest,
        Some("0-4"),
        "the new primary does not hold the publish"
    );
    let length: usize = r.xlen("comet:{sen}:log2").await.unwrap();
    assert_eq!(length, 4);
    // The other node's subscriber gets it next: no gap, nothing lost.
    assert_eq!(next(&mut on_b).await, "4:after");
    let mut oldest = bounded(
        "subscribe from the oldest",
        a.subscribe(["sen"], Start::oldest()),
    )
    .await
    .unwrap();
    assert_eq!(take(&mut oldest, 4).await, ["1:1", "2:2", "3:3", "4:after"]);
}

/// A `redis+sentinel://` URL the engine cannot use is refused when
/// building, saying why; a well-formed one builds (and connects in the
/// background).
async fn a_malformed_sentinel_url_is_a_build_error() {
    for (url, why) in [
        ("redis+sentinel://127.0.0.1:26379", "names no service"),
        ("redis+sentinel://127.0.0.1:26379/", "bad service name"),
        ("redis+sentinel:///mymaster", "names no sentinel"),
        ("redis+sentinel://127.0.0.1:x/mymaster", "bad address"),
        ("redis+sentinel://h:1,,h:2/mymaster", "bad address"),
        ("redis+sentinel://secret@h:1/mymaster", "[USER]:PASSWORD"),
        (
            "redis+sentinel://h:1/mymaster?db=one",
            "bad database number",
        ),
        ("redis+sentinel://h:1/mymaster?tls=yes", "unknown parameter"),
    ] {
        let error = RedisEngine::builder(url)
            .build()
            .expect_err(url)
            .to_string();
        assert!(
            error.starts_with("bad Redis Sentinel URL") && error.contains(why),
            "{url}: {error}"
        );
        assert!(
            !error.contains("secret"),
            "{url}: the error shows the password: {error}"
        );
    }
    for url in [
        "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster",
        "redis+sentinel://:pass@[::1],localhost:26380/mymaster?db=2",
    ] {
        let built = RedisEngine::builder(url).build();
        assert!(built.is_ok(), "{url}: {built:?}");
    }
}

/// Behind sentinels none of which answers, a publish fails within the
/// engine's timeout (503 on the publish route), as with Redis down.
async fn with_no_sentinel_answering_a_publish_fails_within_the_timeout() {
    let closed = redis_server::next_port();
    let url = format!("redis+sentinel://127.0.0.1:{closed}/{SERVICE}");
    let timeout = Duration::from_millis(300);
    let (hub, engine) = node_with(builder(&url).timeout(timeout));
    let started = Instant::now();
    let published = bounded("publish", hub.publish("nowhere", "x")).await;
    let took = started.elapsed();
    assert!(
        matches!(published, Err(PublishError::Engine(_))),
        "{published:?}"
    );
    assert!(
        took < timeout * 3,
        "the publish failed after {took:?}, with a timeout of {timeout:?}"
    );
    assert!(!engine.stats().connected);
}
