//! `HubBuilder::max_channels`: a flood of distinct channel names holds at
//! most that many channels; idle ones make room again.

use comet_core::{Hub, PublishError, Start, SubscribeError};
use std::time::Duration;

fn limit_of(error: &PublishError) -> Option<usize> {
    match error {
        PublishError::ChannelLimit { max } => Some(*max),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn new_channels_past_the_limit_are_refused_until_idle_ones_expire() {
    let hub = Hub::builder()
        .max_channels(3)
        .idle_ttl(Duration::from_secs(5))
        .build();
    for i in 0..3 {
        hub.publish(&format!("c{i}"), "x").await.unwrap();
    }
    let refused = hub.publish("c3", "x").await.unwrap_err();
    assert_eq!(limit_of(&refused), Some(3));
    // Channels already held still take publishes and subscribers.
    hub.publish("c0", "y").await.unwrap();
    let _held = hub.subscribe(["c1"], Start::head()).await.unwrap();
    let refused = hub.subscribe(["c1", "new"], Start::head()).await;
    assert!(
        matches!(&refused, Err(SubscribeError::ChannelLimit { max: 3 })),
        "{refused:?}"
    );
    assert_eq!(hub.channel_count(), 3);
    assert_eq!(
        hub.local_subscribers(),
        1,
        "the refused subscribe gave its count back"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_channels_make_room_for_new_ones() {
    let hub = Hub::builder()
        .max_channels(2)
        .idle_ttl(Duration::from_secs(5))
        .build();
    // Channels with no history and no subscriber: idle once the TTL passes.
    hub.current_cursor(["a"]).await.unwrap();
    hub.current_cursor(["b"]).await.unwrap();
    assert!(limit_of(&hub.publish("c", "x").await.unwrap_err()).is_some());
    tokio::time::advance(Duration::from_secs(6)).await;
    hub.publish("c", "x").await.unwrap();
    assert_eq!(hub.channel_count(), 1, "a and b were swept to make room");
}
