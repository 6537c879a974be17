//! Orders to live subscriptions across nodes on the Redis engine, against a
//! real `redis-server` each test starts: two nodes (hubs on engines of
//! their own, as in two processes) on one Redis, an order sent from either
//! applied on both; a channel's history cleared so that resumers get a gap;
//! an order that cannot reach Redis failing within the engine's timeout.

use comet_core::{
    ControlError, Hub, IdempotencyKey, Identity, Item, Start, Subscriber, Subscription,
};
use comet_redis::RedisEngine;
use comet_test_support::nodes::{bounded, builder, next, node_with, show, take};
use comet_test_support::redis_server::RedisServer;
use comet_test_support::tcp_proxy::TcpProxy;
use comet_test_support::tool_tests;
use std::time::Duration;
use tokio::time::{timeout, Instant};
use tokio_stream::StreamExt;

fn main() {
    comet_test_support::tool::run(tool_tests![[RedisServer];
        disconnect_ends_a_users_subscriptions_on_every_node,
        unsubscribe_takes_one_channel_out_on_every_node,
        subscribe_user_adds_a_channel_on_every_node,
        close_ends_every_reading_of_a_channel_on_every_node,
        close_and_clear_gives_resumers_a_gap_then_only_new_messages,
        a_cut_off_node_fails_orders_within_the_timeout_and_hears_them_again_once_back,
    ]);
}

const TIMEOUT: Duration = Duration::from_millis(500);

/// A node on `url`, with the tests' timeout.
fn node(url: &str) -> (Hub, RedisEngine) {
    node_with(builder(url).timeout(TIMEOUT))
}

/// `user`'s subscription to `channels` on `hub`, from their head.
async fn as_user(hub: &Hub, user: &str, channels: &[&str]) -> Subscription {
    let subscriber = Subscriber::from(Identity::new(user).unwrap());
    hub.subscribe_as(subscriber, channels.iter().copied(), Start::head())
        .await
        .unwrap()
}

/// An anonymous subscription to `channels` on `hub`, from their head.
async fn anonymous(hub: &Hub, channels: &[&str]) -> Subscription {
    hub.subscribe(channels.iter().copied(), Start::head())
        .await
        .unwrap()
}

/// The stream ends after what it delivered.
async fn ends(sub: &mut Subscription) {
    if let Some(item) = bounded("the stream's end", sub.next()).await {
        panic!("expected the end, got {}", show(item));
    }
}

/// Nothing arrives on `sub` for a while.
async fn quiet(sub: &mut Subscription) {
    if let Ok(item) = timeout(Duration::from_millis(300), sub.next()).await {
        panic!("expected nothing, got {:?}", item.map(show));
    }
}

async fn disconnect_ends_a_users_subscriptions_on_every_node() {
    let redis = RedisServer::start();
    let (a, _a) = node(&redis.url());
    let (b, _b) = node(&redis.url());
    let mut ann_a = as_user(&a, "ann", &["room"]).await;
    let mut ann_b = as_user(&b, "ann", &["room", "news"]).await;
    let mut bob_a = as_user(&a, "bob", &["room"]).await;
    let mut bob_b = as_user(&b, "bob", &["room"]).await;

    // Sent from A, applied on both nodes.
    a.disconnect("ann").await.unwrap();
    for ann in [&mut ann_a, &mut ann_b] {
        let item = bounded("ann's end", ann.next()).await.expect("an end");
        assert!(
            matches!(
                item,
                Item::Ended {
                    channel: None,
                    reason: comet_core::EndReason::Disconnected,
                    ..
                }
            ),
            "{}",
            show(item)
        );
        ends(ann).await;
    }
    // Bob reads on.
    a.publish("room", "still here").await.unwrap();
    assert_eq!(next(&mut bob_a).await, "1:still here");
    assert_eq!(next(&mut bob_b).await, "1:still here");
    // Sent from B, and an order for nobody: no harm.
    b.disconnect("carol").await.unwrap();
    b.disconnect("bob").await.unwrap();
    assert_eq!(next(&mut bob_a).await, "end:disconnected");
    assert_eq!(next(&mut bob_b).await, "end:disconnected");
    ends(&mut bob_a).await;
}

async fn unsubscribe_takes_one_channel_out_on_every_node() {
    let redis = RedisServer::start();
    let (a, _a) = node(&redis.url());
    let (b, _b) = node(&redis.url());
    let mut ann_a = as_user(&a, "ann", &["room", "news"]).await;
    let mut ann_b = as_user(&b, "ann", &["room", "news"]).await;
    let mut bob_b = as_user(&b, "bob", &["room", "news"]).await;

    b.unsubscribe("ann", "room").await.unwrap();
    assert_eq!(next(&mut ann_a).await, "end:unsubscribed:room");
    assert_eq!(next(&mut ann_b).await, "end:unsubscribed:room");
    // Room's message first: ann no longer reads it, bob does.
    a.publish("room", "r").await.unwrap();
    a.publish("news", "n").await.unwrap();
    for ann in [&mut ann_a, &mut ann_b] {
        let item = bounded("news", ann.next()).await.expect("news");
        assert_eq!(show(item.clone()), "1:n");
        let cursor = item.cursor();
        assert_eq!(cursor.len(), 1, "news alone");
    }
    let mut both = take(&mut bob_b, 2).await;
    both.sort();
    assert_eq!(both, ["1:n", "1:r"]);
    // Her last channel out: the subscription ends.
    a.unsubscribe("ann", "news").await.unwrap();
    for ann in [&mut ann_a, &mut ann_b] {
        assert_eq!(next(ann).await, "end:unsubscribed:news");
        assert_eq!(next(ann).await, "end:unsubscribed");
        ends(ann).await;
    }
}

async fn subscribe_user_adds_a_channel_on_every_node() {
    let redis = RedisServer::start();
    let (a, _a) = node(&redis.url());
    let (b, _b) = node(&redis.url());
    let mut ann_a = as_user(&a, "ann", &["room"]).await;
    let mut ann_b = as_user(&b, "ann", &["room"]).await;
    let mut bob_a = as_user(&a, "bob", &["room"]).await;
    // Before the order: not for ann.
    a.publish("news", "before").await.unwrap();

    a.subscribe_user("ann", "news").await.unwrap();
    let news = comet_core::ChannelName::new("news").unwrap();
    for ann in [&mut ann_a, &mut ann_b] {
        let item = bounded("added", ann.next()).await.expect("added");
        assert_eq!(show(item.clone()), "added:news");
        assert!(item.cursor().position(&news).is_some(), "the cursor has it");
    }
    a.publish("news", "after").await.unwrap();
    for ann in [&mut ann_a, &mut ann_b] {
        let item = bounded("news", ann.next()).await.expect("news");
        assert_eq!(show(item.clone()), "2:after");
        assert_eq!(item.cursor().position(&news).map(|p| p.offset), Some(2));
        assert_eq!(item.cursor().len(), 2, "room and news");
    }
    // Room goes on too, and bob was not subscribed to news.
    b.publish("room", "r").await.unwrap();
    assert_eq!(next(&mut ann_a).await, "1:r");
    let item = bounded("room", ann_b.next()).await.expect("room");
    assert_eq!(show(item.clone()), "1:r");
    assert_eq!(next(&mut bob_a).await, "1:r");
    quiet(&mut bob_a).await;
    // The cursor resumes both channels, on the other node.
    let mut resumed = a
        .subscribe(["room", "news"], Start::cursor(item.cursor().clone()))
        .await
        .unwrap();
    b.publish("news", "later").await.unwrap();
    assert_eq!(next(&mut resumed).await, "3:later");
}

async fn close_ends_every_reading_of_a_channel_on_every_node() {
    let redis = RedisServer::start();
    let (a, _a) = node(&redis.url());
    let (b, _b) = node(&redis.url());
    let mut anon_a = anonymous(&a, &["room"]).await;
    let mut anon_b = anonymous(&b, &["room", "news"]).await;
    let mut ann_b = as_user(&b, "ann", &["room"]).await;
    a.publish("room", "kept").await.unwrap();
    assert_eq!(next(&mut anon_a).await, "1:kept");
    assert_eq!(next(&mut anon_b).await, "1:kept");
    assert_eq!(next(&mut ann_b).await, "1:kept");

    b.close("room").await.unwrap();
    assert_eq!(next(&mut anon_a).await, "end:closed:room");
    assert_eq!(next(&mut anon_a).await, "end:closed");
    ends(&mut anon_a).await;
    assert_eq!(next(&mut ann_b).await, "end:closed:room");
    assert_eq!(next(&mut ann_b).await, "end:closed");
    ends(&mut ann_b).await;
    // Its other channel goes on.
    assert_eq!(next(&mut anon_b).await, "end:closed:room");
    a.publish("room", "unread").await.unwrap();
    a.publish("news", "n").await.unwrap();
    assert_eq!(next(&mut anon_b).await, "1:n");
    // History stays: a later subscription reads it as before.
    let mut later = a.subscribe(["room"], Start::oldest()).await.unwrap();
    assert_eq!(take(&mut later, 2).await, ["1:kept", "2:unread"]);
}

async fn close_and_clear_gives_resumers_a_gap_then_only_new_messages() {
    let redis = RedisServer::start();
    let (a, _a) = node(&redis.url());
    let (b, _b) = node(&redis.url());
    let mut reader_a = anonymous(&a, &["room"]).await;
    let mut reader_b = anonymous(&b, &["room"]).await;
    let key = IdempotencyKey::new("once").unwrap();
    let first = a.publish("room", "one").await.unwrap();
    a.publish("room", "two").await.unwrap();
    let last = a.publish_idempotent("room", "three", &key).await.unwrap();
    assert_eq!(take(&mut reader_b, 3).await, ["1:one", "2:two", "3:three"]);
    assert_eq!(take(&mut reader_a, 3).await, ["1:one", "2:two", "3:three"]);

    b.close_and_clear("room").await.unwrap();
    // The close comes after the new epoch on each node's pub/sub
    // connection: once a node ended its readers, its mirror knows. A live
    // reader may be told of the new epoch first (its node read it before
    // the close arrived): a gap, never an old offset again.
    for reader in [&mut reader_a, &mut reader_b] {
        let mut item = next(reader).await;
        if item == "gap:None" {
            item = next(reader).await;
        }
        assert_eq!(item, "end:closed:room");
        assert_eq!(next(reader).await, "end:closed");
        ends(reader).await;
    }
    let mut resumers = Vec::new();
    for (hub, cursor) in [(&a, &first), (&b, &first), (&a, &last), (&b, &last)] {
        let mut resumer = hub
            .subscribe(["room"], Start::cursor(cursor.clone()))
            .await
            .unwrap();
        assert_eq!(next(&mut resumer).await, "gap:None", "a new epoch");
        resumers.push(resumer);
    }
    // The idempotency key of the old epoch answers no publish now.
    let again = a.publish_idempotent("room", "new", &key).await.unwrap();
    assert_ne!(again, last, "stored anew");
    let room = comet_core::ChannelName::new("room").unwrap();
    let (new, old) = (
        again.position(&room).unwrap(),
        last.position(&room).unwrap(),
    );
    assert_ne!(new.epoch, old.epoch);
    for resumer in &mut resumers {
        let item = bounded("the new message", resumer.next())
            .await
            .expect("a message");
        let Item::Message { message, .. } = &item else {
            panic!("expected the new message, got {}", show(item));
        };
        assert_eq!(message.text(), "new");
        assert_eq!(message.epoch(), new.epoch);
    }
    // History holds the new message alone.
    let mut oldest = b.subscribe(["room"], Start::oldest()).await.unwrap();
    let item = bounded("history", oldest.next()).await.expect("a message");
    assert!(
        matches!(&item, Item::Message { message, .. } if message.text() == "new"),
        "{}",
        show(item)
    );
    quiet(&mut oldest).await;
}

async fn a_cut_off_node_fails_orders_within_the_timeout_and_hears_them_again_once_back() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let (a, engine_a) = node(&proxy.url());
    let (b, _b) = node(&redis.url());
    let mut ann_a = as_user(&a, "ann", &["room"]).await;
    let mut bob_a = as_user(&a, "bob", &["room"]).await;
    let mut ann_b = as_user(&b, "ann", &["room"]).await;

    proxy.cut();
    type Order<'a> =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ControlError>> + Send + 'a>>;
    let orders: [(&str, Order); 3] = [
        ("disconnect", Box::pin(a.disconnect("ann"))),
        ("close", Box::pin(a.close("room"))),
        ("close_and_clear", Box::pin(a.close_and_clear("room"))),
    ];
    for (what, order) in orders {
        let asked = Instant::now();
        let result = bounded(what, order).await;
        let took = asked.elapsed();
        assert!(
            matches!(result, Err(ControlError::Unavailable { .. })),
            "{what}: {result:?}"
        );
        assert!(
            took <= TIMEOUT + Duration::from_millis(250),
            "{what} took {took:?}"
        );
    }
    // Nothing reached B.
    quiet(&mut ann_b).await;
    // B's orders go out, but not to A while its pub/sub connection is
    // down: that one is lost for A (as documented).
    b.disconnect("bob").await.unwrap();

    // Back: A subscribes to the orders again when it reconnects.
    proxy.restore();
    comet_test_support::nodes::eventually("A reconnected", || engine_a.stats().connected).await;
    b.disconnect("ann").await.unwrap();
    for ann in [&mut ann_a, &mut ann_b] {
        assert_eq!(next(ann).await, "end:disconnected");
        ends(ann).await;
    }
    // Bob's order came while A was cut off: bob reads on there.
    b.publish("room", "after").await.unwrap();
    assert_eq!(next(&mut bob_a).await, "1:after");
    // A's own orders go out again.
    a.disconnect("bob").await.unwrap();
    assert_eq!(next(&mut bob_a).await, "end:disconnected");
}
