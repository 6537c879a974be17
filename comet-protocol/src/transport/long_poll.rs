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
) -> (Vec<Item>, Cursor) {
    let mut items = Vec::new();
    let mut first = subscription.try_next();
    while let Some(item @ Item::Members { .. }) = first {
        items.push(item);
        first = subscription.try_next();
    }
    if let Some(item) = first {
        items.push(item);
    } else if !hold.is_zero() {
        if let Ok(Some(item)) = tokio::time::timeout(hold, subscription.next()).await {
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
    (items, cursor)
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

    #[test]
    fn an_empty_answer_is_the_cursor_and_no_messages() {
        let body = JsonLongPoll.answer(&[], &Cursor::default());
        assert_eq!(body, "{\"cursor\":\"AQ\",\"messages\":[]}");
    }
}
