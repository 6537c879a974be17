//! The Redis engine on a real Redis Cluster (issue #29): three primaries
//! and three replicas that each test starts itself (`redis-server
//! --cluster-enabled yes`, joined by `redis-cli --cluster create`). Channels
//! spread over every shard, a publish's pub/sub traffic stays in its shard
//! (`SPUBLISH`), and slots that move, failovers and a killed primary lose
//! nothing in silence. Nodes are hubs on engines of their own, as in
//! separate processes.

use comet_core::{HistoryPolicy, Hub, Identity, Start, Subscriber, Subscription};
use comet_redis::RedisEngine;
use comet_test_support::nodes::*;
use comet_test_support::redis_cluster::RedisCluster;
use comet_test_support::tool_tests;
use std::{collections::HashMap, time::Duration};

fn main() {
    comet_test_support::tool::run(tool_tests![[RedisServer, RedisCli];
        channels_spread_over_every_shard_and_cross_nodes_in_order,
        a_slot_migrated_while_published_to_loses_and_repeats_nothing,
        a_manual_failover_loses_nothing,
        a_killed_primary_fails_its_channels_alone_until_its_replica_takes_over,
        presence_orders_and_clears_cross_nodes_on_a_cluster,
        a_bad_cluster_url_says_why,
    ]);
}

/// A node on `cluster`.
fn cluster_node(cluster: &RedisCluster) -> (Hub, RedisEngine) {
    node_with(engine(cluster))
}

fn engine(cluster: &RedisCluster) -> comet_redis::RedisEngineBuilder {
    RedisEngine::builder(cluster.url())
        .timeout(Duration::from_secs(3))
        .mirror_idle(Duration::from_secs(30))
        .history(HistoryPolicy {
            max_messages: 1000,
            max_age: None,
        })
}

/// A node on `cluster` with presence on every channel.
fn presence_node(cluster: &RedisCluster) -> (Hub, RedisEngine) {
    let engine = engine(cluster).build().unwrap();
    let hub = Hub::builder()
        .presence(true)
        .engine(std::sync::Arc::new(engine.clone()))
        .build();
    (hub, engine)
}

/// The slot of `channel`'s keys, as Redis computes it.
async fn slot(cluster: &RedisCluster, channel: &str) -> u16 {
    let node = cluster.running().next().unwrap();
    let mut keyslot = redis::cmd("CLUSTER");
    keyslot
        .arg("KEYSLOT")
        .arg(format!("comet:{{{channel}}}:meta2"));
    node.ask(&keyslot).await.unwrap()
}

/// `CLUSTER INFO` of the node on `port`, as a map.
async fn cluster_info(cluster: &RedisCluster, port: u16) -> HashMap<String, u64> {
    let text: String = cluster
        .server(port)
        .ask(redis::cmd("CLUSTER").arg("INFO"))
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Publishes, or fails the test (the engine itself waits, within its
/// timeout, for a node that has just started to learn the cluster, and for
/// a slot that moves).
async fn publish(hub: &Hub, channel: &str, text: &str) {
    bounded("publish", hub.publish(channel, text.to_owned()))
        .await
        .unwrap_or_else(|error| panic!("publish {text} to {channel}: {error}"));
}

async fn subscribed(hub: &Hub, channel: &str) -> Subscription {
    bounded("subscribe", hub.subscribe([channel], Start::head()))
        .await
        .unwrap()
}

async fn channels_spread_over_every_shard_and_cross_nodes_in_order() {
    let cluster = RedisCluster::start().await;
    let (a, _) = cluster_node(&cluster);
    let (b, engine_b) = cluster_node(&cluster);
    let channels: Vec<String> = (0..24).map(|i| format!("room-{i}")).collect();
    let mut subs = Vec::new();
    for channel in &channels {
        subs.push(subscribed(&b, channel).await);
    }
    let before: Vec<_> = {
        let mut all = Vec::new();
        for node in &cluster.nodes {
            all.push(cluster_info(&cluster, node.port).await);
        }
        all
    };
    for round in 0..3 {
        for channel in &channels {
            publish(&a, channel, &round.to_string()).await;
        }
    }
    for sub in &mut subs {
        assert_eq!(take(sub, 3).await, ["1:0", "2:1", "3:2"]);
    }
    // Every primary serves some of them.
    let mut primaries = HashMap::new();
    for channel in &channels {
        let port = cluster.primary_of(slot(&cluster, channel).await).await;
        *primaries.entry(port).or_insert(0) += 1;
    }
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    // A message's pub/sub traffic stays in its shard: no node got a plain
    // PUBLISH over the cluster bus (which every node would), and only
    // replicas got sharded ones (from their own primary).
    for (node, before) in cluster.nodes.iter().zip(before) {
        let after = cluster_info(&cluster, node.port).await;
        let got = |name: &str| {
            after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
        };
        assert_eq!(
            got("cluster_stats_messages_publish_received"),
            0,
            "node {}",
            node.port
        );
        let primary = primaries.contains_key(&node.port);
        let sharded = got("cluster_stats_messages_publishshard_received");
        assert_eq!(
            sharded == 0,
            primary,
            "node {}: {sharded} sharded",
            node.port
        );
    }
    assert!(engine_b.stats().connected);
}

async fn a_slot_migrated_while_published_to_loses_and_repeats_nothing() {
    let cluster = RedisCluster::start().await;
    let (a, engine_a) = cluster_node(&cluster);
    let (b, _) = cluster_node(&cluster);
    let channel = "moving";
    let mut sub = subscribed(&b, channel).await;
    publish(&a, channel, "0").await;
    assert_eq!(next(&mut sub).await, "1:0");
    let slot = slot(&cluster, channel).await;
    let from = cluster.primary_of(slot).await;
    let to = cluster.nodes[..3]
        .iter()
        .map(|n| n.port)
        .find(|&p| p != from)
        .unwrap();
    // Published without a pause from before the slot starts to move until
    // well after it has.
    let redirected = engine_a.stats().redirects;
    let migrated = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (a, migrated) = (a.clone(), migrated.clone());
        tokio::spawn(async move {
            let mut n = 0;
            let mut after = 0;
            while after < 30 {
                n += 1;
                publish(&a, channel, &n.to_string()).await;
                if migrated.load(std::sync::atomic::Ordering::SeqCst) {
                    after += 1;
                }
            }
            n
        })
    };
    cluster.migrate(slot, from, to).await;
    migrated.store(true, std::sync::atomic::Ordering::SeqCst);
    let count = bounded("publishing", publisher).await.unwrap();
    assert_eq!(cluster.primary_of(slot).await, to, "the slot moved");
    assert!(
        engine_a.stats().redirects > redirected,
        "no publish met the move"
    );
    let items = take(&mut sub, count).await;
    let expected: Vec<String> = (1..=count).map(|n| format!("{}:{n}", n + 1)).collect();
    assert_eq!(items, expected);
    // And on, on the new primary, to a subscriber of either node.
    let mut fresh = subscribed(&a, channel).await;
    publish(&b, channel, "after").await;
    let after = format!("{}:after", count + 2);
    assert_eq!(next(&mut sub).await, after);
    assert_eq!(next(&mut fresh).await, after);
}

async fn a_manual_failover_loses_nothing() {
    let cluster = RedisCluster::start().await;
    let (a, _) = cluster_node(&cluster);
    let (b, engine_b) = cluster_node(&cluster);
    let channel = "steady";
    let mut sub = subscribed(&b, channel).await;
    for n in 1..=5 {
        publish(&a, channel, &n.to_string()).await;
    }
    let slot = slot(&cluster, channel).await;
    let primary = cluster.primary_of(slot).await;
    let replica = cluster.replica_of(primary).await;
    let () = cluster
        .server(replica)
        .ask(redis::cmd("CLUSTER").arg("FAILOVER"))
        .await
        .unwrap();
    cluster.settle().await;
    until("the replica takes over", || async {
        cluster.primary_of(slot).await == replica
    })
    .await;
    for n in 6..=10 {
        publish(&a, channel, &n.to_string()).await;
    }
    let items = take(&mut sub, 10).await;
    let expected: Vec<String> = (1..=10).map(|n| format!("{n}:{n}")).collect();
    assert_eq!(items, expected, "nothing lost, no gap");
    comet_test_support::eventually_within(Duration::from_secs(20), "node b reconnected", || {
        engine_b.stats().connected
    })
    .await;
}

/// Waits (within 20 s) until `condition`, which asks Redis, holds: the
/// cluster's own state can only be polled.
async fn until<F, Fut>(what: &str, condition: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_killed_primary_fails_its_channels_alone_until_its_replica_takes_over() {
    let mut cluster = RedisCluster::start().await;
    let (a, engine_a) = cluster_node(&cluster);
    let (b, engine_b) = cluster_node(&cluster);
    // Two channels on other shards than the doomed one's.
    let doomed = "doomed";
    let doomed_primary = cluster.primary_of(slot(&cluster, doomed).await).await;
    let mut others = Vec::new();
    for i in 0.. {
        let name = format!("other-{i}");
        if cluster.primary_of(slot(&cluster, &name).await).await != doomed_primary {
            others.push(name);
        }
        if others.len() == 2 {
            break;
        }
    }
    let mut doomed_sub = subscribed(&b, doomed).await;
    let mut other_subs = Vec::new();
    for name in &others {
        other_subs.push(subscribed(&b, name).await);
    }
    publish(&a, doomed, "before").await;
    assert_eq!(next(&mut doomed_sub).await, "1:before");
    let replica = cluster.replica_of(doomed_primary).await;
    cluster.node(doomed_primary).stop();
    // Until the replica takes over, the doomed channel's publishes fail
    // (503) within the timeout, while the other shards go on untouched.
    let mut refused = 0;
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while cluster.primary_of(slot(&cluster, doomed).await).await != replica {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica never took over"
        );
        match a.publish(doomed, "while down").await {
            Err(comet_core::PublishError::Engine(_)) => refused += 1,
            other => panic!("a publish on a dead shard: {other:?}"),
        }
        for (name, sub) in others.iter().zip(&mut other_subs) {
            n += 1;
            publish(&a, name, &format!("o{n}")).await;
            let got = next(sub).await;
            assert!(got.ends_with(&format!(":o{n}")), "{name}: {got}");
        }
    }
    assert!(
        refused > 0,
        "no publish was refused while the primary was down"
    );
    // The nodes learn of it soon (they ask the cluster again while a shard
    // is down) and move there.
    for engine in [&engine_a, &engine_b] {
        comet_test_support::eventually_within(
            Duration::from_secs(10),
            "back on every shard",
            || engine.stats().connected,
        )
        .await;
    }
    // Then it works again, with no restart of any node; the subscriber,
    // still connected, gets it (after one gap if writes were lost).
    publish(&a, doomed, "after").await;
    let got = next(&mut doomed_sub).await;
    let got = if got.starts_with("gap:") {
        next(&mut doomed_sub).await
    } else {
        got
    };
    assert!(got.ends_with(":after"), "{got}");
}

/// What is announced besides messages goes by sharded pub/sub too: join
/// and leave (the presence script), a cleared history (the new-epoch
/// script); orders to live subscriptions go by plain pub/sub, which the
/// cluster carries to every node.
async fn presence_orders_and_clears_cross_nodes_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let ((a, engine_a), (b, _)) = (presence_node(&cluster), presence_node(&cluster));
    let watcher = Subscriber::anonymous().presence_events(true);
    let mut watching = bounded("watch", b.subscribe_as(watcher, ["lobby"], Start::head()))
        .await
        .unwrap();
    assert!(next(&mut watching).await.starts_with("presence:"));
    let ann = Subscriber::from(Identity::new("ann").unwrap()).grace(Duration::from_millis(200));
    let mut ann = bounded("ann", a.subscribe_as(ann, ["lobby"], Start::head()))
        .await
        .unwrap();
    assert_eq!(next(&mut watching).await, "join:ann");
    publish(&a, "lobby", "one").await;
    assert_eq!(next(&mut watching).await, "1:one");
    assert_eq!(next(&mut ann).await, "1:one");
    // An order from node b ends ann's subscription on node a.
    bounded("disconnect", b.disconnect("ann")).await.unwrap();
    assert_eq!(next(&mut ann).await, "end:disconnected");
    drop(ann);
    assert_eq!(next(&mut watching).await, "leave:ann");
    // A clear of the history on node a (the engine's, without closing the
    // channel): node b's live subscriber gets the gap at once, with no
    // publish to reveal it.
    let lobby = comet_core::ChannelName::new("lobby").unwrap();
    bounded(
        "clear",
        comet_core::engine::Engine::clear(&engine_a, &lobby),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut watching).await, "gap:None");
    publish(&a, "lobby", "two").await;
    assert!(next(&mut watching).await.ends_with(":two"));
}

async fn a_bad_cluster_url_says_why() {
    for (url, why) in [
        ("redis+cluster://", "names no node"),
        ("redis+cluster://h:1/0", "no path"),
    ] {
        let error = RedisEngine::builder(url).build().unwrap_err();
        assert!(error.to_string().contains(why), "{url}: {error}");
    }
    let error = RedisEngine::sharded(["redis+cluster://h:1", "redis://h:2"])
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("stands alone"), "{error}");
}
