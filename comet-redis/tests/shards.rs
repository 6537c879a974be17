//! The Redis engine over several independent primaries (issue #29): each
//! channel lives on one shard, every node agrees which, a publish costs its
//! own shard alone, and a shard that is down fails its own channels alone.
//! Real `redis-server` processes on ports of their own; nodes are hubs on
//! engines of their own, as in separate processes.

use comet_core::{Cursor, HistoryPolicy, Start};
use comet_redis::RedisEngine;
use comet_test_support::nodes::*;
use comet_test_support::redis_server::RedisServer;
use comet_test_support::tool_tests;
use redis::AsyncCommands;
use std::time::Duration;

fn main() {
    comet_test_support::tool::run(tool_tests![[RedisServer];
        channels_spread_over_every_shard_and_cross_nodes_in_order,
        a_shard_that_is_down_fails_its_own_channels_alone_and_recovers_without_a_restart,
        an_empty_list_of_shards_is_refused,
    ]);
}

/// A node on `servers`, sharded in that order.
fn sharded_node(servers: &[&RedisServer]) -> (comet_core::Hub, RedisEngine) {
    node_with(
        RedisEngine::sharded(servers.iter().map(|server| server.url()))
            .mirror_idle(Duration::from_millis(300))
            .timeout(Duration::from_millis(800))
            .history(HistoryPolicy {
                max_messages: 100,
                max_age: None,
            }),
    )
}

/// Which of `servers` holds `channel`'s keys (exactly one must).
async fn holder(servers: &[&RedisServer], channel: &str) -> usize {
    let mut found = Vec::new();
    for (index, server) in servers.iter().enumerate() {
        let mut connection = server.connection().await;
        let exists: bool = connection
            .exists(format!("comet:{{{channel}}}:meta2"))
            .await
            .unwrap();
        if exists {
            found.push(index);
        }
    }
    assert_eq!(found.len(), 1, "{channel} is on {found:?}");
    found[0]
}

async fn channels_spread_over_every_shard_and_cross_nodes_in_order() {
    let servers = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let servers: Vec<&RedisServer> = servers.iter().collect();
    let (a, _) = sharded_node(&servers);
    let (b, engine_b) = sharded_node(&servers);
    let channels: Vec<String> = (0..30).map(|i| format!("room-{i}")).collect();
    let mut subs = Vec::new();
    for channel in &channels {
        subs.push(
            bounded("subscribe", b.subscribe([channel.as_str()], Start::head()))
                .await
                .unwrap(),
        );
    }
    for round in 0..3 {
        for channel in &channels {
            bounded("publish", a.publish(channel.as_str(), format!("{round}")))
                .await
                .unwrap();
        }
    }
    for sub in &mut subs {
        assert_eq!(take(sub, 3).await, ["1:0", "2:1", "3:2"]);
    }
    // Each channel's keys are on one shard, and every shard has some.
    let mut per_shard = [0; 3];
    for channel in &channels {
        per_shard[holder(&servers, channel).await] += 1;
    }
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
    // Each node holds one pub/sub connection per shard, subscribed there
    // to that shard's channels alone.
    for (index, server) in servers.iter().enumerate() {
        let mut connection = server.connection().await;
        let subscribed: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg("comet:{*}")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(subscribed.len(), per_shard[index], "shard {index}");
    }
    // The cursor key is one across shards: a cursor of node b resumes on a.
    let cursor = subs[0].cursor().encode();
    a.publish(channels[0].as_str(), "after").await.unwrap();
    let mut resumed = a
        .subscribe([channels[0].as_str()], Cursor::decode(&cursor).unwrap())
        .await
        .unwrap();
    assert_eq!(next(&mut resumed).await, "4:after");
    assert!(engine_b.stats().connected);
}

async fn a_shard_that_is_down_fails_its_own_channels_alone_and_recovers_without_a_restart() {
    let mut owned = [
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    ];
    let (a, engine_a, b, mut subs, on, names) = {
        let servers: Vec<&RedisServer> = owned.iter().collect();
        let (a, engine_a) = sharded_node(&servers);
        let (b, _) = sharded_node(&servers);
        let names: Vec<String> = (0..12).map(|i| format!("s-{i}")).collect();
        let mut on = Vec::new();
        let mut subs = Vec::new();
        for name in &names {
            a.publish(name.as_str(), "first").await.unwrap();
            on.push(holder(&servers, name).await);
            let sub = bounded("subscribe", b.subscribe([name.as_str()], Start::head()))
                .await
                .unwrap();
            subs.push(sub);
        }
        assert!(
            on.contains(&1),
            "some channel is on the second shard: {on:?}"
        );
        (a, engine_a, b, subs, on, names)
    };
    owned[1].stop();
    for (i, name) in names.iter().enumerate() {
        let published = bounded("publish", a.publish(name.as_str(), "during")).await;
        if on[i] == 1 {
            // Its shard is down: refused within the engine's timeout.
            assert!(
                matches!(published, Err(comet_core::PublishError::Engine(_))),
                "{name}: {published:?}"
            );
        } else {
            // The others go on, and their subscribers get every message.
            published.unwrap();
            assert_eq!(next(&mut subs[i]).await, "2:during");
            // New subscribers too.
            let mut fresh = bounded("subscribe", b.subscribe([name.as_str()], Start::head()))
                .await
                .unwrap();
            a.publish(name.as_str(), "fresh").await.unwrap();
            assert_eq!(next(&mut fresh).await, "3:fresh");
            assert_eq!(next(&mut subs[i]).await, "3:fresh");
        }
    }
    // Back (empty, as after a crash): its channels work again with no
    // restart of any node, and their subscribers, still connected, get one
    // gap for the history that was lost, then what is new.
    eventually("node a sees the shard down", || !engine_a.stats().connected).await;
    owned[1].restart();
    eventually("node a is back on every shard", || {
        engine_a.stats().connected
    })
    .await;
    for (i, name) in names.iter().enumerate().filter(|(i, _)| on[*i] == 1) {
        bounded("publish", a.publish(name.as_str(), "back"))
            .await
            .unwrap();
        let items = take(&mut subs[i], 2).await;
        assert!(items[0].starts_with("gap:"), "{name}: {items:?}");
        assert_eq!(items[1], "1:back", "{name}");
    }
}

async fn an_empty_list_of_shards_is_refused() {
    let error = RedisEngine::sharded(Vec::<String>::new())
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("at least one"), "{error}");
    let error = RedisEngine::sharded(["redis://127.0.0.1:1", "redis+sentinel://"])
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("Sentinel"), "{error}");
}
