//! Orders to live subscriptions on one node, in the core: expiry,
//! disconnect, unsubscribe, subscribe, close; counts given back.

use comet_push::{EndReason, Hub, Identity, Item, Start, Subscriber, Subscription};
use std::time::{Duration, SystemTime};
use tokio_stream::StreamExt;

fn as_user(name: &str) -> Subscriber {
    Subscriber::from(Identity::new(name).unwrap())
}

async fn next(sub: &mut Subscription) -> Option<Item> {
    tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .expect("an item or the end in time")
}

fn ended(item: Option<Item>) -> (Option<String>, EndReason) {
    match item {
        Some(Item::Ended {
            channel, reason, ..
        }) => (channel.map(|c| c.as_str().to_owned()), reason),
        other => panic!("expected an end, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_subscription_ends_at_its_expiry_with_a_cursor_to_resume_from() {
    let hub = Hub::new();
    let expires = SystemTime::now() + Duration::from_secs(30);
    let mut sub = hub
        .subscribe_as(
            as_user("ann").expires_at(Some(expires)),
            ["a"],
            Start::head(),
        )
        .await
        .unwrap();
    hub.publish("a", "before").await.unwrap();
    assert_eq!(
        next(&mut sub).await.unwrap().message().unwrap().text(),
        "before"
    );
    let Some(Item::Ended {
        reason,
        cursor,
        channel,
    }) = next(&mut sub).await
    else {
        panic!("an end")
    };
    assert_eq!((reason, channel), (EndReason::Expired, None));
    assert!(next(&mut sub).await.is_none(), "then the stream ends");
    hub.publish("a", "after").await.unwrap();
    let mut resumed = hub.subscribe(["a"], cursor).await.unwrap();
    assert_eq!(
        next(&mut resumed).await.unwrap().message().unwrap().text(),
        "after"
    );
}

#[tokio::test]
async fn orders_reach_a_users_subscriptions_only() {
    let hub = Hub::new();
    let mut ann = hub
        .subscribe_as(as_user("ann"), ["a", "b"], Start::head())
        .await
        .unwrap();
    let mut ann_too = hub
        .subscribe_as(as_user("ann"), ["b"], Start::head())
        .await
        .unwrap();
    let mut anonymous = hub.subscribe(["b"], Start::head()).await.unwrap();

    hub.unsubscribe("ann", "b").await.unwrap();
    assert_eq!(
        ended(next(&mut ann).await),
        (Some("b".into()), EndReason::Unsubscribed)
    );
    // Her other connection read only "b": it ends as a whole.
    assert_eq!(
        ended(next(&mut ann_too).await),
        (Some("b".into()), EndReason::Unsubscribed)
    );
    assert_eq!(
        ended(next(&mut ann_too).await),
        (None, EndReason::Unsubscribed)
    );
    assert!(next(&mut ann_too).await.is_none());
    assert_eq!(
        hub.local_subscriber_count("b"),
        1,
        "ann's counts on b given back"
    );

    hub.subscribe_user("ann", "c").await.unwrap();
    let Some(Item::Added { channel, cursor }) = next(&mut ann).await else {
        panic!("an added channel")
    };
    assert_eq!(channel.as_str(), "c");
    assert_eq!(cursor.len(), 2);
    hub.publish("b", "not ann's").await.unwrap();
    hub.publish("c", "ann's").await.unwrap();
    assert_eq!(
        next(&mut ann).await.unwrap().message().unwrap().text(),
        "ann's"
    );
    assert_eq!(
        next(&mut anonymous)
            .await
            .unwrap()
            .message()
            .unwrap()
            .text(),
        "not ann's"
    );

    hub.disconnect("ann").await.unwrap();
    assert_eq!(ended(next(&mut ann).await), (None, EndReason::Disconnected));
    assert!(next(&mut ann).await.is_none());
    drop(ann);
    assert_eq!(hub.local_subscriber_count("c"), 0);
    assert_eq!(hub.local_subscriber_count("a"), 0);
    assert!(hub.disconnect("").await.is_err(), "not a user id");
}

#[tokio::test]
async fn closing_a_channel_ends_its_readers_and_clearing_it_starts_a_new_epoch() {
    let hub = Hub::new();
    hub.publish("a", "old").await.unwrap();
    let before = hub.current_cursor(["a"]).await.unwrap();
    let mut reader = hub.subscribe(["a", "b"], Start::head()).await.unwrap();
    hub.close("a").await.unwrap();
    assert_eq!(
        ended(next(&mut reader).await),
        (Some("a".into()), EndReason::Closed)
    );
    hub.publish("b", "b goes on").await.unwrap();
    assert_eq!(
        next(&mut reader).await.unwrap().message().unwrap().text(),
        "b goes on"
    );
    // Closed, not cleared: later readers have the history.
    let mut later = hub.subscribe(["a"], Start::oldest()).await.unwrap();
    assert_eq!(
        next(&mut later).await.unwrap().message().unwrap().text(),
        "old"
    );

    hub.close_and_clear("a").await.unwrap();
    assert_eq!(
        ended(next(&mut later).await),
        (Some("a".into()), EndReason::Closed)
    );
    assert_eq!(ended(next(&mut later).await), (None, EndReason::Closed));
    hub.publish("a", "new").await.unwrap();
    let mut resumed = hub.subscribe(["a"], before).await.unwrap();
    assert!(matches!(
        next(&mut resumed).await,
        Some(Item::Gap { missed: None, .. })
    ));
    assert_eq!(
        next(&mut resumed).await.unwrap().message().unwrap().text(),
        "new"
    );
}

/// A channel added after an end, both waiting for a subscription that was
/// not reading (a slow client): the end is its last item, and the added
/// channel gives back the count it took (before, it was counted for ever,
/// and never vacated).
#[tokio::test]
async fn a_channel_added_after_an_end_gives_its_count_back() {
    let hub = Hub::new();
    let mut sub = hub
        .subscribe_as(as_user("ann"), ["a"], Start::head())
        .await
        .unwrap();
    hub.disconnect("ann").await.unwrap();
    hub.subscribe_user("ann", "b").await.unwrap();
    // The added channel is counted once the spawned attach ran.
    tokio::time::timeout(Duration::from_secs(10), async {
        while hub.local_subscriber_count("b") == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the channel added in time");
    assert_eq!(ended(next(&mut sub).await), (None, EndReason::Disconnected));
    assert!(next(&mut sub).await.is_none(), "nothing after the end");
    assert_eq!(hub.local_subscriber_count("b"), 0, "the count given back");
    drop(sub);
    assert_eq!(hub.local_subscriber_count("a"), 0);
}
