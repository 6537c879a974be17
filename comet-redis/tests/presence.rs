//! Presence and occupancy across nodes on the Redis engine, against a real
//! `redis-server` each test starts: join and leave in-band on every node,
//! once; one presence for a user on several nodes; lists and counts summed
//! over nodes; hooks that fire once across nodes; a node cut off from
//! Redis whose users leave within the bound, and join again when it is
//! back. Shares live 1 s here (a
//! refresh every 250 ms), grace windows 200 ms.

use comet_core::{Hub, HubEvent, Identity, Start, Subscriber, Subscription};
use comet_redis::RedisEngine;
use comet_test_support::nodes::{bounded, builder, next, take};
use comet_test_support::redis_server::RedisServer;
use comet_test_support::tcp_proxy::TcpProxy;
use comet_test_support::tool_tests;
use serde_json::json;
use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::{timeout, Instant};
use tokio_stream::StreamExt;

fn main() {
    comet_test_support::tool::run(tool_tests![[RedisServer];
        join_and_leave_reach_every_node_once_and_two_nodes_make_one_presence,
        presence_and_subscriber_counts_sum_every_node,
        the_presence_list_is_capped_and_its_counts_stay_whole,
        occupancy_and_user_hooks_fire_once_across_nodes,
        a_node_cut_off_from_redis_has_its_users_leave_within_the_bound_once,
    ]);
}

const TTL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_millis(200);

/// Every hub's app events, as `"<node> <event> [<user>]"`, shared by the
/// nodes of a test: an event there twice fired twice across the nodes.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

impl Events {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The events (ignoring which node) that end with `what`.
    fn count(&self, what: &str) -> usize {
        self.all().iter().filter(|e| e.ends_with(what)).count()
    }
}

/// A node named `name`: a hub with presence on every channel, on an engine
/// of its own on `url`, recording its events in `events`.
fn node(url: &str, name: &'static str, events: &Events, max_listed: usize) -> (Hub, RedisEngine) {
    let engine = builder(url)
        .presence_ttl(TTL)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let events = events.clone();
    let hub = Hub::builder()
        .presence(true)
        .max_presence_listed(max_listed)
        .engine(Arc::new(engine.clone()))
        .on_event(move |event| {
            let line = match event {
                HubEvent::Occupied { channel } => format!("{name} occupied {channel}"),
                HubEvent::Vacated { channel } => format!("{name} vacated {channel}"),
                HubEvent::Joined { channel, identity } => {
                    format!("{name} joined {channel} {}", identity.user())
                }
                HubEvent::Left { channel, identity } => {
                    format!("{name} left {channel} {}", identity.user())
                }
                _ => return,
            };
            events.0.lock().unwrap().push(line);
        })
        .build();
    (hub, engine)
}

fn user(id: &str) -> Identity {
    Identity::new(id).unwrap()
}

/// `user` subscribed to `channel` on `hub`, with a short grace window.
async fn present(hub: &Hub, user: Identity, channel: &str) -> Subscription {
    let subscriber = Subscriber::from(user).grace(GRACE);
    hub.subscribe_as(subscriber, [channel], Start::head())
        .await
        .unwrap()
}

/// An anonymous subscriber of `channel` on `hub` that gets join and leave,
/// past the list it starts with.
async fn watcher(hub: &Hub, channel: &str) -> Subscription {
    let subscriber = Subscriber::anonymous().presence_events(true).grace(GRACE);
    let mut sub = hub
        .subscribe_as(subscriber, [channel], Start::head())
        .await
        .unwrap();
    let list = next(&mut sub).await;
    assert!(list.starts_with("presence:"), "a list first, not {list}");
    sub
}

/// Nothing arrives on `sub` for `period`.
async fn quiet(sub: &mut Subscription, period: Duration) {
    if let Ok(item) = timeout(period, sub.next()).await {
        panic!("expected nothing more, got {item:?}");
    }
}

/// Polls `check` until it holds, within the tests' bound.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    bounded(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn join_and_leave_reach_every_node_once_and_two_nodes_make_one_presence() {
    let redis = RedisServer::start();
    let events = Events::default();
    let (a, _a) = node(&redis.url(), "A", &events, 100);
    let (b, _b) = node(&redis.url(), "B", &events, 100);
    let mut on_a = watcher(&a, "room").await;
    let mut on_b = watcher(&b, "room").await;

    let ann_a = present(&a, user("ann"), "room").await;
    assert_eq!(next(&mut on_a).await, "join:ann");
    assert_eq!(next(&mut on_b).await, "join:ann");
    // Ann on a second node too: still one presence, no second join.
    let ann_b = present(&b, user("ann"), "room").await;
    until("ann counted on both nodes", || async {
        a.presence("room").await.unwrap().connections == 2
    })
    .await;
    // Her first node's subscription ends and its grace passes: she is
    // still on the other one.
    drop(ann_a);
    quiet(&mut on_a, GRACE * 4).await;
    quiet(&mut on_b, Duration::from_millis(100)).await;
    assert_eq!(a.presence("room").await.unwrap().users, 1);
    // The last one: she leaves, once, on every node.
    drop(ann_b);
    assert_eq!(next(&mut on_a).await, "leave:ann");
    assert_eq!(next(&mut on_b).await, "leave:ann");
    quiet(&mut on_a, GRACE * 2).await;
    quiet(&mut on_b, Duration::from_millis(100)).await;
    assert_eq!(events.count("joined room ann"), 1, "{:?}", events.all());
    assert_eq!(events.count("left room ann"), 1, "{:?}", events.all());
    assert_eq!(a.presence("room").await.unwrap().users, 0);
}

async fn presence_and_subscriber_counts_sum_every_node() {
    let redis = RedisServer::start();
    let events = Events::default();
    let (a, _a) = node(&redis.url(), "A", &events, 100);
    let (b, _b) = node(&redis.url(), "B", &events, 100);
    let ann = user("ann").with_info(json!({"name": "Ann"})).unwrap();
    let _subs = [
        present(&a, ann.clone(), "room").await,
        present(&a, ann.clone(), "room").await,
        present(&b, ann.clone(), "room").await,
        present(&b, user("bob"), "room").await,
        watcher(&b, "room").await,
    ];
    for hub in [&a, &b] {
        until("both users, four connections", || async {
            let presence = hub.presence("room").await.unwrap();
            presence.users == 2 && presence.connections == 4
        })
        .await;
        let mut members = hub.presence("room").await.unwrap().members;
        members.sort_by(|x, y| x.identity.user().cmp(y.identity.user()));
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].identity, ann);
        assert_eq!(members[0].connections, 3);
        assert_eq!(members[1].identity, user("bob"));
        assert_eq!(members[1].connections, 1);
        // Counts reach Redis within a second.
        until("five subscribers on two nodes", || async {
            hub.subscriber_count("room").await.unwrap() == 5
        })
        .await;
        let info = hub.channel_info("room").await.unwrap();
        assert_eq!(info.presence.map(|p| p.users), Some(2));
    }
    assert_eq!(a.local_subscriber_count("room"), 2);
}

async fn the_presence_list_is_capped_and_its_counts_stay_whole() {
    let redis = RedisServer::start();
    let events = Events::default();
    let (a, _a) = node(&redis.url(), "A", &events, 2);
    let (b, _b) = node(&redis.url(), "B", &events, 100);
    let mut subs = Vec::new();
    for i in 0..5 {
        let hub = if i % 2 == 0 { &a } else { &b };
        subs.push(present(hub, user(&format!("u{i}")), "crowd").await);
    }
    until("five users on B", || async {
        b.presence("crowd").await.unwrap().members.len() == 5
    })
    .await;
    let capped = a.presence("crowd").await.unwrap();
    assert_eq!((capped.users, capped.connections), (5, 5));
    assert_eq!(capped.members.len(), 2);
}

async fn occupancy_and_user_hooks_fire_once_across_nodes() {
    let redis = RedisServer::start();
    let events = Events::default();
    let (a, _a) = node(&redis.url(), "A", &events, 100);
    let (b, _b) = node(&redis.url(), "B", &events, 100);
    let first = watcher(&a, "hall").await;
    until("occupied", || async { events.count("occupied hall") == 1 }).await;
    let second = watcher(&b, "hall").await;
    let ann_a = present(&a, user("ann"), "hall").await;
    let ann_b = present(&b, user("ann"), "hall").await;
    until("ann joined", || async {
        events.count("joined hall ann") == 1
    })
    .await;
    until("B's share counted", || async {
        a.subscriber_count("hall").await.unwrap() == 4
    })
    .await;
    drop((first, ann_a));
    drop((second, ann_b));
    until("vacated", || async { events.count("vacated hall") == 1 }).await;
    until("ann left", || async { events.count("left hall ann") == 1 }).await;
    // Past every grace window and a few refreshes: nothing more.
    tokio::time::sleep(TTL).await;
    let all = events.all();
    for what in [
        "occupied hall",
        "vacated hall",
        "joined hall ann",
        "left hall ann",
    ] {
        assert_eq!(events.count(what), 1, "{what}: {all:?}");
    }
    assert_eq!(all.len(), 4, "{all:?}");
}

async fn a_node_cut_off_from_redis_has_its_users_leave_within_the_bound_once() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let events = Events::default();
    let (a, _a) = node(&proxy.url(), "A", &events, 100);
    let (b, _b) = node(&redis.url(), "B", &events, 100);
    let mut on_b = watcher(&b, "room").await;
    let _ann = present(&a, user("ann"), "room").await;
    let _bob = present(&b, user("bob"), "room").await;
    let mut joins = take(&mut on_b, 2).await;
    joins.sort();
    assert_eq!(joins, ["join:ann", "join:bob"]);
    until("A's share counted", || async {
        b.subscriber_count("room").await.unwrap() == 3
    })
    .await;

    proxy.cut();
    let cut = Instant::now();
    // A stops refreshing: its share expires within a TTL, B sweeps it
    // within a quarter more (and a timeout, and delivery).
    assert_eq!(next(&mut on_b).await, "leave:ann");
    let took = cut.elapsed();
    let bound = TTL + TTL / 4 + TIMEOUT + Duration::from_millis(300);
    assert!(took <= bound, "ann left after {took:?}, bound {bound:?}");
    assert!(
        took >= TTL / 2,
        "ann left after {took:?}: before her share expired"
    );
    // The hook fires when the sweeping script's answer comes back, which
    // may be after its announcement (another connection).
    until("ann's leave reported", || async {
        events.count("left room ann") == 1
    })
    .await;
    let all = events.all();
    assert!(all.contains(&"B left room ann".to_owned()), "{all:?}");
    // Still occupied by B; bob stays.
    assert_eq!(events.count("vacated room"), 0, "{all:?}");
    let presence = b.presence("room").await.unwrap();
    assert_eq!(presence.users, 1);
    assert_eq!(presence.members[0].identity, user("bob"));
    assert_eq!(b.subscriber_count("room").await.unwrap(), 2);
    quiet(&mut on_b, TTL / 2).await;
    assert_eq!(events.count("left room ann"), 1, "{:?}", events.all());
    // Reads on the node cut off fail, within its timeout.
    let asked = Instant::now();
    assert!(a.presence("room").await.is_err());
    assert!(a.subscriber_count("room").await.is_err());
    let took = asked.elapsed();
    assert!(took <= TIMEOUT * 2 + Duration::from_millis(200), "{took:?}");

    // Back: A's next refresh writes its share again, and ann, still
    // subscribed there, joins again, reported once (by A, which found it).
    proxy.restore();
    assert_eq!(next(&mut on_b).await, "join:ann");
    until("ann joined again", || async {
        events.count("joined room ann") == 2
    })
    .await;
    assert!(events.all().contains(&"A joined room ann".to_owned()));
    quiet(&mut on_b, TTL / 2).await;
    assert_eq!(events.count("joined room ann"), 2, "{:?}", events.all());
}
