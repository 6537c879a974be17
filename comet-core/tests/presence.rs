//! Presence on one node, in the core: who counts, grace windows, hooks, the
//! listing bound and the bounded feed. Time is paused, so grace windows
//! pass when the test says.

use comet_push::{
    Hub, HubEvent, Identity, Item, PresenceKind, Start, Subscriber, Subscription, PRESENCE_FEED,
};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio_stream::StreamExt;

fn user(name: &str) -> Identity {
    Identity::new(name).unwrap()
}

fn recording_hub(log: Arc<Mutex<Vec<String>>>) -> Hub {
    Hub::builder()
        .presence_for(|name| name.as_str().starts_with("room"))
        .max_presence_listed(2)
        .on_event(move |event| {
            let line = match event {
                HubEvent::Subscribed(s) | HubEvent::Unsubscribed(s) => format!(
                    "{}:{}:{}",
                    if matches!(event, HubEvent::Subscribed(_)) {
                        "subscribed"
                    } else {
                        "unsubscribed"
                    },
                    s.identity().map_or("-", |i| i.user()),
                    s.channels()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join("+"),
                ),
                HubEvent::Occupied { channel } => format!("occupied:{channel}"),
                HubEvent::Vacated { channel } => format!("vacated:{channel}"),
                HubEvent::Joined { channel, identity } => {
                    format!("joined:{channel}:{}", identity.user())
                }
                HubEvent::Left { channel, identity } => {
                    format!("left:{channel}:{}", identity.user())
                }
                _ => return,
            };
            log.lock().unwrap().push(line);
        })
        .build()
}

async fn subscribe(hub: &Hub, who: Subscriber, channels: &[&str]) -> Subscription {
    hub.subscribe_as(who, channels, Start::head())
        .await
        .unwrap()
}

/// Lets the tracker's task run its batches (time is paused: this advances it).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(250)).await;
}

fn take(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test(start_paused = true)]
async fn anonymous_subscribers_occupy_channels_but_are_nobody() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let hub = recording_hub(log.clone());
    let sub = subscribe(&hub, Subscriber::anonymous(), &["room", "lobby"]).await;
    settle().await;
    let mut seen = take(&log);
    seen[1..].sort(); // channels are reported in no particular order
    assert_eq!(
        seen,
        ["subscribed:-:room+lobby", "occupied:lobby", "occupied:room"]
    );
    let presence = hub.presence("room").await.unwrap();
    assert_eq!((presence.users, presence.connections), (0, 0));
    assert_eq!(hub.subscriber_count("room").await.unwrap(), 1);
    assert!(
        hub.presence("lobby").await.is_err(),
        "lobby has no presence"
    );
    drop(sub);
    settle().await;
    assert_eq!(take(&log), ["unsubscribed:-:room+lobby"]);
    tokio::time::sleep(comet_push::DEFAULT_PRESENCE_GRACE).await;
    let mut vacated = take(&log);
    vacated.sort();
    assert_eq!(vacated, ["vacated:lobby", "vacated:room"]);
}

#[tokio::test(start_paused = true)]
async fn a_user_lingers_for_their_grace_window_and_a_new_connection_keeps_them() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let hub = recording_hub(log.clone());
    let grace = Duration::from_secs(10);
    let who = || Subscriber::from(user("ann")).grace(grace);
    let first = subscribe(&hub, who(), &["room"]).await;
    settle().await;
    drop(first);
    tokio::time::sleep(grace / 2).await;
    // Still there, with no connection, until the window ends...
    let listed = hub.presence("room").await.unwrap();
    assert_eq!(listed.members.len(), 1);
    assert_eq!(listed.members[0].connections, 0);
    // ... and a connection within it keeps the one presence.
    let second = subscribe(&hub, who(), &["room"]).await;
    tokio::time::sleep(grace * 2).await;
    assert_eq!(
        hub.presence("room").await.unwrap().members[0].connections,
        1
    );
    drop(second);
    tokio::time::sleep(grace + Duration::from_secs(1)).await;
    let events: Vec<String> = take(&log)
        .into_iter()
        .filter(|e| !e.starts_with("subscribed") && !e.starts_with("unsubscribed"))
        .collect();
    assert_eq!(
        events,
        [
            "occupied:room",
            "joined:room:ann",
            "left:room:ann",
            "vacated:room"
        ]
    );
    assert_eq!(hub.presence("room").await.unwrap().users, 0);
}

#[tokio::test(start_paused = true)]
async fn lists_are_bounded_and_carry_the_latest_info() {
    let hub = recording_hub(Arc::default());
    let mut subs = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        subs.push(subscribe(&hub, user(name).into(), &["room"]).await);
    }
    let renamed = user("a")
        .with_info(serde_json::json!({"name": "Ada"}))
        .unwrap();
    subs.push(subscribe(&hub, renamed.clone().into(), &["room"]).await);
    let presence = hub.presence("room").await.unwrap();
    assert_eq!((presence.users, presence.connections), (5, 6));
    assert_eq!(presence.members.len(), 2, "at most max_presence_listed");
    let info = hub.channel_info("room").await.unwrap();
    assert_eq!(info.subscribers, 6);
    // Who "a" is now: the info of their latest subscription.
    let unbounded = Hub::builder().presence(true).build();
    let _plain = subscribe(&unbounded, user("a").into(), &["room"]).await;
    let _renamed = subscribe(&unbounded, renamed.into(), &["room"]).await;
    let listed = unbounded.presence("room").await.unwrap();
    assert_eq!(listed.members[0].identity.info(), Some(r#"{"name":"Ada"}"#));
    let mut watcher = subscribe(
        &hub,
        Subscriber::anonymous().presence_events(true),
        &["room"],
    )
    .await;
    let Some(Item::Members { presence, .. }) = watcher.next().await else {
        panic!("a list first")
    };
    assert_eq!(presence.users, 5);
}

#[tokio::test(start_paused = true)]
async fn only_subscribers_that_ask_get_presence_items_and_a_slow_one_skips_the_oldest() {
    let hub = recording_hub(Arc::default());
    let mut asked = subscribe(
        &hub,
        Subscriber::anonymous().presence_events(true),
        &["room", "lobby"],
    )
    .await;
    let mut not_asked = subscribe(&hub, Subscriber::anonymous(), &["room"]).await;
    let mut users = Vec::new();
    for i in 0..PRESENCE_FEED + 44 {
        users.push(subscribe(&hub, user(&format!("u{i}")).into(), &["room"]).await);
        settle().await; // each its own batch
    }
    hub.publish("room", "after").await.unwrap();
    // A list for the channel with presence only, then the joins the feed
    // still holds (the first 44 fell out of it), then the message.
    let Some(Item::Members { channel, .. }) = asked.next().await else {
        panic!("a list first")
    };
    assert_eq!(channel.as_str(), "room");
    let mut joins = 0;
    loop {
        match asked.next().await.unwrap() {
            Item::Presence { event, .. } => {
                assert_eq!(event.kind(), PresenceKind::Join);
                joins += 1;
            }
            Item::Message { message, .. } => {
                assert_eq!(message.text(), "after");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(joins, PRESENCE_FEED);
    let first = not_asked.next().await.unwrap();
    assert_eq!(
        first.message().unwrap().text(),
        "after",
        "no presence items"
    );
}
