//! A published message: stored once, shared by every subscriber through `Arc`.

use crate::{
    cursor::{Cursor, CursorKey},
    ChannelName, PayloadKind,
};
use bytes::Bytes;
use std::{
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex, OnceLock,
    },
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
    encodings: Encodings,
    /// The tag of the cursor every one-channel subscriber has after this
    /// message, with the key it is under and the channel key it names:
    /// computed by the first such subscriber, not by each (a keyed hash per
    /// delivery otherwise). 32 bytes a stored message.
    cursor_tag: OnceLock<(CursorKey, u64, u64)>,
    /// Which one-channel cursor the encodings made by
    /// [`encoded_after`](Self::encoded_after) carry (its channel key and
    /// tag): the first one's. 32 bytes a stored message.
    encoded_cursor: OnceLock<(u64, Option<u64>)>,
}

/// The encodings of one thing every subscriber shares (a message, a
/// presence event), one per [`EncodingSlot`].
#[derive(Default)]
pub(crate) struct Encodings {
    /// Encodings in the first slots, without a lock.
    inline: [OnceLock<Bytes>; INLINE_SLOTS],
    /// Encodings in later slots; allocated on first use.
    more: OnceLock<Mutex<Vec<(usize, Bytes)>>>,
}

impl Encodings {
    /// The encoding in `slot`, computed by `encode` the first time.
    pub(crate) fn get(&self, slot: &EncodingSlot, encode: impl FnOnce() -> Bytes) -> Bytes {
        if let Some(inline) = self.inline.get(slot.0) {
            return inline.get_or_init(encode).clone();
        }
        let more = self.more.get_or_init(Mutex::default);
        let find = |more: &Vec<(usize, Bytes)>| {
            more.iter()
                .find(|(s, _)| *s == slot.0)
                .map(|(_, b)| b.clone())
        };
        if let Some(bytes) = find(&more.lock().unwrap_or_else(|e| e.into_inner())) {
            return bytes;
        }
        // Encoded outside the lock; if another subscriber raced us, keep theirs.
        let bytes = encode();
        let mut more = more.lock().unwrap_or_else(|e| e.into_inner());
        match find(&more) {
            Some(existing) => existing,
            None => {
                more.push((slot.0, bytes.clone()));
                bytes
            }
        }
    }
}

/// Slots kept inline in every message, as many as the built-in wire formats
/// take (every stored message pays for each): other formats' encodings are
/// kept behind a lock.
const INLINE_SLOTS: usize = 7;

/// A place in every [`Message`] for one wire format's encoding of it.
///
/// The encoding is computed the first time any subscriber needs it
/// ([`Message::encoded`]) and shared by every later one: a message is
/// encoded once per wire format, whatever its fan-out. Each slot is distinct
/// from every other by construction, so no format can fill (and poison) an
/// encoding another format's subscribers share. Make one per format, once,
/// and keep it in a `static`:
///
/// ```
/// use comet_push::{EncodingSlot, Message};
/// use std::sync::LazyLock;
///
/// static LINE: LazyLock<EncodingSlot> = LazyLock::new(EncodingSlot::new);
///
/// fn line(message: &Message) -> bytes::Bytes {
///     message.encoded(&LINE, |m| format!("{}\n", m.text()).into())
/// }
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct EncodingSlot(usize);

impl EncodingSlot {
    /// A slot no other has. Make one per format, once, in a `static`:
    /// slots are never given back, and a message keeps the encodings of the
    /// first seven slots a process makes (the built-in formats', made with the
    /// first route) without a lock, later ones behind one.
    #[allow(clippy::new_without_default)] // each call makes another slot
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
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
            encodings: Encodings::default(),
            cursor_tag: OnceLock::new(),
            encoded_cursor: OnceLock::new(),
        }
    }

    /// The tag under `key` of the one-channel cursor just after this
    /// message, for the channel whose key is `channel`: `tag()` computes
    /// it the first time (and again under another key or channel), later
    /// calls read it.
    pub(crate) fn cursor_tag(
        &self,
        key: CursorKey,
        channel: u64,
        tag: impl FnOnce() -> u64,
    ) -> u64 {
        if let Some((kept, kept_channel, value)) = self.cursor_tag.get() {
            return if *kept == key && *kept_channel == channel {
                *value
            } else {
                tag()
            };
        }
        let value = tag();
        // Another subscriber may have kept it meanwhile: the same value.
        let _ = self.cursor_tag.set((key, channel, value));
        value
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

    /// The message's encoding in `slot` (one wire format's), computed by
    /// `encode` the first time it is asked for and shared by every later
    /// caller.
    pub fn encoded(&self, slot: &EncodingSlot, encode: impl FnOnce(&Message) -> Bytes) -> Bytes {
        self.encodings.get(slot, || encode(self))
    }

    /// The message's encoding in `slot` that holds `cursor`, a one-channel
    /// subscriber's cursor after it (an SSE frame with its `id:`, an
    /// envelope with its `cursor`): shared as [`encoded`](Self::encoded)
    /// shares, since every one-channel subscriber has the same cursor after
    /// a message. But only with the cursor the first such encoding held: a
    /// cursor is tagged under the engine's key, which can change while the
    /// message is in history (or be missing for a while, on a backplane),
    /// and an encoding holding another tag is made per caller instead. So
    /// is one for a cursor of several channels.
    pub fn encoded_after(
        &self,
        slot: &EncodingSlot,
        cursor: &Cursor,
        encode: impl FnOnce(&Message) -> Bytes,
    ) -> Bytes {
        match cursor.one_channel() {
            Some(held) if *self.encoded_cursor.get_or_init(|| held) == held => {
                self.encodings.get(slot, || encode(self))
            }
            _ => encode(self),
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
    use crate::Position;

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
    fn each_slot_holds_its_own_encoding_computed_once() {
        let m = message(b"x");
        let slots: Vec<EncodingSlot> = (0..INLINE_SLOTS + 3).map(|_| EncodingSlot::new()).collect();
        for (i, slot) in slots.iter().enumerate() {
            let mut calls = 0;
            for _ in 0..2 {
                let got = m.encoded(slot, |_| {
                    calls += 1;
                    Bytes::from(i.to_string())
                });
                assert_eq!(got, i.to_string().as_bytes());
            }
            assert_eq!(calls, 1, "slot {i}");
        }
    }

    /// An encoding holding the cursor after the message is shared with
    /// that cursor alone: under another key (or none), or of two
    /// channels, it is made per caller, and the shared one stays.
    #[test]
    fn an_encoding_with_a_cursor_is_shared_only_with_that_cursor() {
        let m = message(b"x");
        let slot = EncodingSlot::new();
        let position = Position {
            key: 7,
            epoch: 1,
            offset: 1,
            identity: 0,
        };
        let after = |key| Cursor::after_message(position, key, &m);
        let (first, other) = (
            after(Some(CursorKey::from_bytes([1; 16]))),
            after(Some(CursorKey::from_bytes([2; 16]))),
        );
        let encode = |cursor: &Cursor| m.encoded_after(&slot, cursor, |_| cursor.encode().into());
        let shared = encode(&first);
        assert_eq!(shared, first.encode().as_bytes());
        assert_eq!(encode(&first).as_ptr(), shared.as_ptr(), "shared");
        for cursor in [
            other,
            after(None),
            Cursor::from_positions([position, Position { key: 8, ..position }]),
        ] {
            let own = encode(&cursor);
            assert_eq!(own, cursor.encode().as_bytes(), "its own cursor");
            assert_ne!(own.as_ptr(), shared.as_ptr());
        }
        assert_eq!(encode(&first).as_ptr(), shared.as_ptr(), "still shared");
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
