//! What every Redis engine test does: bounded waits, nodes (hubs on engines
//! of their own, as in separate processes), reading what a subscription
//! delivers as text, and leaving a channel in Redis as a lost write would.

use comet_core::{HistoryPolicy, Hub, Item, Subscription};
use comet_redis::RedisEngine;
use redis::{aio::MultiplexedConnection, AsyncCommands};
use std::{future::Future, sync::Arc, time::Duration};
use tokio_stream::StreamExt;

/// The longest any one wait of a test may take.
pub const BOUND: Duration = Duration::from_secs(15);

/// `f`, or a panic naming `what` after [`BOUND`].
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    crate::within(BOUND, what, f).await
}

/// Waits (within [`BOUND`]) until `condition` holds.
pub async fn eventually(what: &str, condition: impl FnMut() -> bool) {
    crate::eventually_within(BOUND, what, condition).await
}

/// The tests' engine: mirrors dropped after 300 ms unused, 100 messages kept.
pub fn builder(url: &str) -> comet_redis::RedisEngineBuilder {
    RedisEngine::builder(url)
        .mirror_idle(Duration::from_millis(300))
        .history(HistoryPolicy {
            max_messages: 100,
            max_age: None,
        })
}

/// A node: a hub on an engine of its own.
pub fn node(url: &str) -> (Hub, RedisEngine) {
    node_with(builder(url))
}

/// A node on an engine built by `builder`.
pub fn node_with(builder: comet_redis::RedisEngineBuilder) -> (Hub, RedisEngine) {
    let engine = builder.build().unwrap();
    let hub = Hub::builder().engine(Arc::new(engine.clone())).build();
    (hub, engine)
}

/// An item as `"<offset>:<text>"`, `"gap:<missed>"`, `"join:<user>"`,
/// `"presence:<users>"`, `"end:<reason>[:<channel>]"` or `"added:<channel>"`.
pub fn show(item: Item) -> String {
    match item {
        Item::Message { message, .. } => format!("{}:{}", message.offset(), message.text()),
        Item::Gap { missed, .. } => format!("gap:{missed:?}"),
        Item::Presence { event, .. } => {
            format!("{}:{}", event.kind().as_str(), event.identity().user())
        }
        Item::Members { presence, .. } => {
            let mut users: Vec<&str> = presence.members.iter().map(|m| m.identity.user()).collect();
            users.sort();
            format!("presence:{}", users.join(","))
        }
        Item::Ended {
            channel, reason, ..
        } => match channel {
            Some(channel) => format!("end:{reason}:{channel}"),
            None => format!("end:{reason}"),
        },
        Item::Added { channel, .. } => format!("added:{channel}"),
        other => format!("{other:?}"),
    }
}

/// What a subscription delivers next, as [`show`] writes it.
pub async fn next(sub: &mut Subscription) -> String {
    show(
        bounded("next item", sub.next())
            .await
            .expect("stream ended"),
    )
}

/// The next `n` items.
pub async fn take(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(next(sub).await);
    }
    items
}

/// Leaves `channel` in Redis as a snapshot taken at offset `to` would: the
/// same epoch, history and offsets up to `to` only (entries after it
/// deleted, and the log's last ID set back to `0-<to>`).
pub async fn roll_back(connection: &mut MultiplexedConnection, channel: &str, to: u64) {
    let log = format!("comet:{{{channel}}}:log2");
    let after: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&log)
        .arg(format!("(0-{to}"))
        .arg("+")
        .query_async(connection)
        .await
        .unwrap();
    for (id, _) in after {
        let _: i64 = connection.xdel(&log, &[id]).await.unwrap();
    }
    let () = redis::cmd("XSETID")
        .arg(&log)
        .arg(format!("0-{to}"))
        .query_async(connection)
        .await
        .unwrap();
}
