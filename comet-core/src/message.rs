//! A published message: stored once, shared by every subscriber through `Arc`.

use crate::{ChannelName, PayloadKind};
use bytes::Bytes;
use std::{
    fmt,
    sync::{Mutex, OnceLock},
};
use tokio::time::Instant;

/// One message in one channel's history.
///
/// Subscribers receive `Arc<Message>`: the payload is never copied per
/// subscriber. Each wire format's encoding of the message is computed the first
/// time any subscriber needs it and then shared.
pub struct Message {
    pub(crate) channel: ChannelName,
    pub(crate) epoch: u64,
    pub(crate) offset: u64,
    pub(crate) kind: PayloadKind,
    pub(crate) event: Option<Box<str>>,
    pub(crate) data: Bytes,
    pub(crate) published_at: Instant,
    /// Set by an engine that numbers messages elsewhere, to tell two
    /// messages apart that claim one position (0: none).
    identity: u64,
    encodings: [OnceLock<Bytes>; Encoding::COUNT],
    /// Encodings of formats outside the crate, by key; allocated on first use.
    custom: OnceLock<Mutex<Vec<(&'static str, Bytes)>>>,
}

/// The per-message encodings the built-in wire formats cache.
///
/// Every subscriber of a message shares one encoding per format; only the
/// cursor, which depends on the subscription, is written per subscriber.
/// Private to the crate, so that no other format can fill (and poison) an
/// encoding every subscriber shares; formats of your own cache with
/// [`Message::encoded_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// The SSE `event:` and `data:` lines of the message.
    SseEvent,
    /// The JSON envelope of the message, up to its `cursor` value.
    EnvelopePrefix,
    /// The same, escaped to be embedded in a `<script>` (forever frame, JSONP).
    ScriptSafeEnvelopePrefix,
    /// The whole SSE frame for one-channel subscriptions, whose cursor after
    /// a message is the same for every subscriber.
    SseOneChannelFrame,
    /// The whole one-line envelope and line feed for one-channel subscriptions.
    OneChannelEnvelopeLine,
    /// The envelope prefix on one line (ndjson): the same bytes as
    /// `EnvelopePrefix` unless the JSON payload has line breaks between its
    /// tokens, which are then written as spaces.
    OneLineEnvelopePrefix,
}

impl Encoding {
    const COUNT: usize = 6;
}

impl Message {
    /// Builds a message. Engines call this, with the kind, event and data of
    /// a [`Payload`](crate::Payload); applications publish through the
    /// [`Hub`](crate::Hub).
    ///
    /// `data` must be UTF-8, as every `Payload` is. Bytes that are not (an
    /// engine's bug) are repaired with U+FFFD rather than kept, so that
    /// [`text`](Self::text) is always the payload's text.
    pub fn new(
        channel: ChannelName,
        epoch: u64,
        offset: u64,
        kind: PayloadKind,
        event: Option<Box<str>>,
        data: Bytes,
    ) -> Self {
        let data = match std::str::from_utf8(&data) {
            Ok(_) => data,
            Err(error) => {
                tracing::warn!(%channel, offset, %error, "an engine stored a payload that is not UTF-8; repaired");
                Bytes::from(String::from_utf8_lossy(&data).into_owned())
            }
        };
        Self {
            channel,
            epoch,
            offset,
            kind,
            event,
            data,
            published_at: Instant::now(),
            identity: 0,
            encodings: Default::default(),
            custom: OnceLock::new(),
        }
    }

    /// Sets when it was published, for a message that was published before
    /// this process saw it (an engine loading history from its backplane), so
    /// that the history's maximum age counts from the publish.
    pub fn published_at_instant(mut self, at: Instant) -> Self {
        self.published_at = at;
        self
    }

    /// Gives it an identity: a value drawn once per publish, by an engine
    /// whose nodes mirror a shared history, so that they can tell the
    /// message they hold at a position from another one that the backplane
    /// (having lost writes) put at the same position later.
    pub fn with_identity(mut self, identity: u64) -> Self {
        self.identity = identity;
        self
    }

    /// Its identity, or 0 if its engine gave it none
    /// (see [`with_identity`](Self::with_identity)).
    pub fn identity(&self) -> u64 {
        self.identity
    }

    /// The channel it was published to.
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// Its offset in the channel: 1, 2, 3, ...
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The epoch of the channel history it belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// JSON or text.
    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    /// The event name its publisher gave, if any.
    pub fn event(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// The payload bytes, as published: UTF-8 text, or a JSON text.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The payload as text: the bytes as published, never replaced.
    pub fn text(&self) -> &str {
        // `new` keeps only UTF-8 (every `Payload` is; anything else is repaired there).
        std::str::from_utf8(&self.data).expect("Message::new keeps its data UTF-8")
    }

    /// When it was published (for the history's maximum age).
    pub fn published_at(&self) -> Instant {
        self.published_at
    }

    /// The message's encoding for one built-in wire format, computed by
    /// `encode` the first time it is asked for and shared by every later caller.
    pub(crate) fn encoded(
        &self,
        encoding: Encoding,
        encode: impl FnOnce(&Message) -> Bytes,
    ) -> Bytes {
        self.encodings[encoding as usize]
            .get_or_init(|| encode(self))
            .clone()
    }

    /// For wire formats of your own: the encoding under `key` is computed
    /// once and shared by every subscriber. Use one key per format (its name,
    /// say). These encodings are kept apart from the built-in formats' own,
    /// which no key reaches.
    pub fn encoded_with(&self, key: &'static str, encode: impl FnOnce(&Message) -> Bytes) -> Bytes {
        let cache = self.custom.get_or_init(Mutex::default);
        let find = |cache: &Vec<(&'static str, Bytes)>| {
            cache
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, b)| b.clone())
        };
        if let Some(bytes) = find(&cache.lock().unwrap_or_else(|e| e.into_inner())) {
            return bytes;
        }
        // Encoded outside the lock; if another subscriber raced us, keep theirs.
        let bytes = encode(self);
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        match find(&cache) {
            Some(existing) => existing,
            None => {
                cache.push((key, bytes.clone()));
                bytes
            }
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .field("offset", &self.offset)
            .field("kind", &self.kind)
            .field("event", &self.event)
            .field("data", &String::from_utf8_lossy(&self.data))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &'static [u8]) -> Message {
        let channel = ChannelName::new("c").unwrap();
        Message::new(
            channel,
            1,
            1,
            PayloadKind::Text,
            None,
            Bytes::from_static(data),
        )
    }

    #[test]
    fn text_is_the_payload_and_never_empty_for_bytes_that_are_not_utf8() {
        assert_eq!(message("héllo".as_bytes()).text(), "héllo");
        assert_eq!(message(b"").text(), "");
        let repaired = message(b"bad \xff byte");
        assert_eq!(repaired.text(), "bad \u{FFFD} byte");
        assert_eq!(repaired.data().as_ref(), "bad \u{FFFD} byte".as_bytes());
    }
}
