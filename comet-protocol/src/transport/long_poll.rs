//! Long polling (`application/json`): a request is held until something
//! arrives after its cursor or its hold ends, answered with a batch and the
//! cursor to poll with next, and re-issued. This module also holds a long
//! poll for every poll format, built-in or your own.

use crate::{
    envelope::{self, Json},
    transport::{Format, Transport},
    Cursor, Item, LongPollFormat, Message, Subscription,
};
use bytes::{BufMut, Bytes, BytesMut};
use comet_core::EncodingSlot;
use http::HeaderValue;
use std::{sync::LazyLock, time::Duration};
use tokio_stream::StreamExt;

/// Makes the long poll's encoding slot now (see [`crate::SubscribeRoute::new`]).
pub(crate) fn reserve_slots() {
    LazyLock::force(&ONE_CHANNEL_ANSWER);
}

/// The whole JSON answer of a one-channel poll answered with one message:
/// the cursor after a message is the same for every one-channel subscriber,
/// so every such answer is these bytes, shared.
static ONE_CHANNEL_ANSWER: LazyLock<EncodingSlot> = LazyLock::new(EncodingSlot::new);

/// The one message of `items`, when `cursor` is the one-channel cursor
/// after it: an answer every one-channel poll it answers alone shares.
fn shared<'a>(items: &'a [Item], cursor: &Cursor) -> Option<&'a Message> {
    match items {
        [Item::Message {
            message,
            cursor: after,
        }] if after.len() == 1 && after == cursor => Some(message),
        _ => None,
    }
}

/// Default longest hold of a long poll; see
/// [`SubscribeRoute::max_hold`](crate::SubscribeRoute::max_hold).
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(30);

/// Default most items in one long-poll answer; see
/// [`SubscribeRoute::max_batch`](crate::SubscribeRoute::max_batch).
pub const DEFAULT_MAX_BATCH: usize = 100;

/// The built-in long poll: held as every long poll is (see [`hold`]), its
/// answer the JSON below.
pub(crate) fn transport() -> Transport {
    Transport::built_in("poll", None, true, |_request, _params, _route| {
        Ok(Format::LongPoll(Box::new(JsonLongPoll)))
    })
}

/// `{"cursor":"..","messages":[envelope, ...]}`.
pub(crate) struct JsonLongPoll;

impl LongPollFormat for JsonLongPoll {
    fn answer(&self, items: &[Item], cursor: &Cursor) -> Bytes {
        match shared(items, cursor) {
            Some(message) => message.encoded_after(&ONE_CHANNEL_ANSWER, cursor, |_| {
                batch(items, cursor, Json::Plain).freeze()
            }),
            None => batch(items, cursor, Json::Plain).freeze(),
        }
    }

    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("application/json")
    }
}

/// The JSON body of a long-poll answer.
pub(crate) fn batch(items: &[Item], cursor: &Cursor, json: Json) -> BytesMut {
    let mut body = BytesMut::with_capacity(64 + items.len() * 128);
    body.put_slice(b"{\"cursor\":\"");
    cursor.encode_into(&mut body);
    body.put_slice(b"\",\"messages\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        envelope::write(&mut body, item, json);
    }
    body.put_slice(b"]}");
    body
}

/// How long a request is held: its `timeout`, clamped to the route's maximum.
pub(crate) fn hold_time(requested: Option<Duration>, max_hold: Duration) -> Duration {
    requested.unwrap_or(max_hold).min(max_hold)
}

/// Takes what is after the cursor at once, else waits until something is or
/// `hold` passes (or the hub shuts down), then up to `max_batch` items in
/// all. Returns them and the cursor the next poll resumes from. Dropping the
/// future (the client left) drops the subscription at once.
///
/// Presence lists (`presence=1`) come first and do not end the hold: every
/// poll carries them, and answering at once for them would turn the chain
/// of polls into a loop.
pub(crate) async fn hold(
    mut subscription: Subscription,
    hold: Duration,
    max_batch: usize,
) -> (Batch, Cursor) {
    let mut items = Vec::new();
    let mut first = subscription.try_next();
    while let Some(item @ Item::Members { .. }) = first {
        items.push(item);
        first = subscription.try_next();
    }
    if first.is_none() && !hold.is_zero() {
        if let Ok(Some(item)) = tokio::time::timeout(hold, subscription.next()).await {
            first = Some(item);
        }
    }
    if let Some(item) = first {
        if items.is_empty() {
            // The usual answer, one item and nothing behind it: no `Vec`.
            let second = if max_batch > 1 {
                subscription.try_next()
            } else {
                None
            };
            let Some(second) = second else {
                let cursor = item.cursor().clone();
                return (Batch::One(item), cursor);
            };
            items.extend([item, second]);
        } else {
            items.push(item);
        }
    }
    while items.len() < max_batch {
        match subscription.try_next() {
            Some(item) => items.push(item),
            None => break,
        }
    }
    let cursor = items
        .last()
        .map_or_else(|| subscription.cursor(), |item| item.cursor().clone());
    (Batch::Many(items), cursor)
}

/// The items of one answer: most carry one, which needs no `Vec`.
pub(crate) enum Batch {
    One(Item),
    Many(Vec<Item>),
}

impl Batch {
    /// Its items, in order.
    pub(crate) fn as_slice(&self) -> &[Item] {
        match self {
            Batch::One(item) => std::slice::from_ref(item),
            Batch::Many(items) => items,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_held_for_its_timeout_at_most_the_routes_maximum() {
        let max = Duration::from_secs(30);
        assert_eq!(hold_time(None, max), max);
        assert_eq!(
            hold_time(Some(Duration::from_secs(5)), max),
            Duration::from_secs(5)
        );
        assert_eq!(hold_time(Some(Duration::from_secs(90)), max), max);
    }

    #[tokio::test]
    async fn a_hold_takes_what_is_there_up_to_the_batch_and_resumes_after_it() {
        let hub = crate::Hub::new();
        for text in ["one", "two", "three"] {
            hub.publish("c", comet_core::Payload::text(text))
                .await
                .unwrap();
        }
        let texts = |batch: &Batch| -> Vec<String> {
            batch
                .as_slice()
                .iter()
                .map(|item| match item {
                    Item::Message { message, .. } => message.text().to_owned(),
                    other => panic!("not a message: {other:?}"),
                })
                .collect()
        };
        let subscribe = |start: crate::Start| {
            let hub = hub.clone();
            async move { hub.subscribe(["c"], start).await.unwrap() }
        };
        let hold_time = Duration::from_millis(10);
        // One at most: the second stays for the next poll.
        let (batch, cursor) = hold(subscribe(crate::Start::oldest()).await, hold_time, 1).await;
        assert_eq!(texts(&batch), ["one"]);
        let (batch, cursor) = hold(subscribe(cursor.into()).await, hold_time, 1).await;
        assert_eq!(texts(&batch), ["two"]);
        // Two at most, one there: the one alone, and its cursor.
        let (batch, cursor) = hold(subscribe(cursor.into()).await, hold_time, 2).await;
        assert_eq!(texts(&batch), ["three"]);
        // Two at most, three there: two.
        let (batch, _) = hold(subscribe(crate::Start::oldest()).await, hold_time, 2).await;
        assert_eq!(texts(&batch), ["one", "two"]);
        // More allowed than there are: all of them.
        let (batch, _) = hold(subscribe(crate::Start::oldest()).await, hold_time, 5).await;
        assert_eq!(texts(&batch), ["one", "two", "three"]);
        // Nothing after the cursor: none, and the same cursor, once held.
        let (batch, after) = hold(subscribe(cursor.clone().into()).await, hold_time, 5).await;
        assert!(batch.as_slice().is_empty());
        assert_eq!(after, cursor);
    }

    #[tokio::test]
    async fn a_message_published_during_the_hold_is_the_answer() {
        let hub = crate::Hub::new();
        let subscription = hub.subscribe(["c"], crate::Start::head()).await.unwrap();
        let held = tokio::spawn(hold(subscription, Duration::from_secs(10), 5));
        // A second subscriber from the same place, to show where the next
        // poll resumes.
        let next_poll = hub.subscribe(["c"], crate::Start::head()).await.unwrap();
        let mut next_poll = std::pin::pin!(next_poll);
        // On this single-threaded runtime, the held task runs to its wait
        // before this one goes on: the message is published during the hold,
        // and it ends the hold, alone.
        tokio::task::yield_now().await;
        hub.publish("c", comet_core::Payload::text("late"))
            .await
            .unwrap();
        let (batch, cursor) = tokio::time::timeout(Duration::from_secs(5), held)
            .await
            .expect("answered when the message came")
            .unwrap();
        match batch.as_slice() {
            [Item::Message {
                message,
                cursor: after,
            }] => {
                assert_eq!(message.text(), "late");
                assert_eq!(after, &cursor);
            }
            other => panic!("not the one message: {other:?}"),
        }
        let next = futures_util::StreamExt::next(&mut next_poll).await.unwrap();
        assert_eq!(next.cursor(), &cursor, "the next poll resumes after it");
    }

    #[test]
    fn an_empty_answer_is_the_cursor_and_no_messages() {
        let body = JsonLongPoll.answer(&[], &Cursor::default());
        assert_eq!(body, "{\"cursor\":\"AQ\",\"messages\":[]}");
    }
}
