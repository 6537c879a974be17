//! The two traits every transport implements, built-in or your own:
//! [`StreamFormat`] frames items on a response that stays open, and
//! [`LongPollFormat`] writes the one answer of a long poll. A transport of
//! your own makes one for each request ([`Transport::custom_stream`],
//! [`Transport::custom_long_poll`]); the built-in transports
//! (`transport/sse.rs`, `ndjson.rs`, `iframe.rs`, `long_poll.rs`, `jsonp.rs`)
//! make theirs the same way.
//!
//! [`Transport::custom_stream`]: crate::Transport::custom_stream
//! [`Transport::custom_long_poll`]: crate::Transport::custom_long_poll

use crate::{ChannelName, Cursor, EndReason, Item, Message, Presence, PresenceEvent};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::collections::VecDeque;

/// The chunks a [`StreamFormat`] writes for one item, in order.
///
/// Push shared bytes (such as a per-message encoding from
/// [`Message::encoded`] in an [`EncodingSlot`](comet_core::EncodingSlot)) as their own chunk rather than copying them into
/// a per-subscriber buffer: the server writes chunks without copying.
#[derive(Debug, Default)]
pub struct Chunks {
    /// The first chunk waiting, kept apart: most items are one shared chunk
    /// (an SSE message on a one-channel stream), and every held stream owns
    /// a `Chunks`, so the usual case allocates nothing and idle streams
    /// hold no queue.
    first: Option<Bytes>,
    /// Chunks after `first`, in order.
    rest: VecDeque<Bytes>,
}

impl Chunks {
    /// Appends a chunk (empty chunks are skipped).
    pub fn push(&mut self, chunk: impl Into<Bytes>) {
        let chunk = chunk.into();
        if chunk.is_empty() {
            return;
        }
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    /// The length of the chunk `pop` would give.
    pub(crate) fn front_len(&self) -> Option<usize> {
        self.first
            .as_ref()
            .or_else(|| self.rest.front())
            .map(Bytes::len)
    }

    /// True when no chunk is waiting.
    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    /// The chunks, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.first.iter().chain(self.rest.iter())
    }
}

/// The JSON a format's envelopes need (see [`StreamFormat::script_safe`]).
fn json<F: StreamFormat + ?Sized>(format: &F) -> super::envelope::Json {
    if format.script_safe() {
        super::envelope::Json::ScriptSafe
    } else {
        super::envelope::Json::Plain
    }
}

/// A wire format for streaming subscriptions: one response, many items.
///
/// Only [`message`](Self::message) is required. The defaults send nothing
/// before the first item or on idle, nothing at the end, a JSON gap envelope
/// line for gaps, and `text/plain`.
///
/// ```
/// use comet_push::{protocol::{Chunks, StreamFormat}, Cursor, Message};
///
/// /// `channel<TAB>text` lines, for `curl` users.
/// struct Lines;
///
/// impl StreamFormat for Lines {
///     fn message(&self, message: &Message, _cursor: &Cursor, out: &mut Chunks) {
///         out.push(format!("{}\t{}\n", message.channel(), message.text().replace('\n', " ")));
///     }
/// }
/// ```
pub trait StreamFormat: Send + Sync + 'static {
    /// Encodes one message; `cursor` is the subscription's position after it.
    fn message(&self, message: &Message, cursor: &Cursor, out: &mut Chunks);

    /// Puts an envelope other than a message (a gap, presence, an end, a
    /// channel added) on the wire: every default below goes through here.
    /// Default: the envelope and a line feed. A format read as HTML or
    /// script wraps it here, and says so with
    /// [`script_safe`](Self::script_safe), so that no kind of item can
    /// reach its page bare.
    fn envelope(&self, envelope: Bytes, out: &mut Chunks) {
        out.push(envelope);
        out.push(Bytes::from_static(b"\n"));
    }

    /// True when envelopes must be inert in HTML and script: `</script>`,
    /// `<!--`, U+2028 and U+2029 escaped in what users choose (presence's
    /// user ids and info). Default: false.
    fn script_safe(&self) -> bool {
        false
    }

    /// Encodes a gap: messages of `channel` that history no longer holds
    /// (`missed` is `None` when unknown). Default: the JSON gap envelope, through
    /// [`envelope`](Self::envelope).
    fn gap(&self, channel: &ChannelName, missed: Option<u64>, cursor: &Cursor, out: &mut Chunks) {
        self.envelope(super::envelope::gap(channel, missed, cursor), out);
    }

    /// Encodes a join or leave (only subscribers that asked for them get
    /// any; `cursor` is their position, which the event does not move).
    /// Default: the JSON presence envelope, through [`envelope`](Self::envelope).
    fn presence(&self, event: &PresenceEvent, cursor: &Cursor, out: &mut Chunks) {
        let _ = cursor;
        self.envelope(super::envelope::presence(event, json(self)), out);
    }

    /// Encodes who is on `channel` as the subscription starts (only for
    /// subscribers that asked for presence events). Default: the JSON
    /// presence envelope, through [`envelope`](Self::envelope).
    fn members(
        &self,
        channel: &ChannelName,
        presence: &Presence,
        cursor: &Cursor,
        out: &mut Chunks,
    ) {
        let _ = cursor;
        self.envelope(super::envelope::members(channel, presence, json(self)), out);
    }

    /// Encodes an end: the server stopped the subscription's reading of
    /// `channel`, or of everything (`None`; the stream's last item, before
    /// [`close`](Self::close)). Default: the JSON end envelope, through
    /// [`envelope`](Self::envelope).
    fn ended(
        &self,
        channel: Option<&ChannelName>,
        reason: EndReason,
        cursor: &Cursor,
        out: &mut Chunks,
    ) {
        self.envelope(super::envelope::ended(channel, reason, cursor), out);
    }

    /// Encodes a channel the server added to the subscription. Default: the
    /// JSON `subscribed` envelope, through [`envelope`](Self::envelope).
    fn added(&self, channel: &ChannelName, cursor: &Cursor, out: &mut Chunks) {
        self.envelope(super::envelope::added(channel, cursor), out);
    }

    /// The first bytes of the response. Default: none.
    fn preamble(&self) -> Option<Bytes> {
        None
    }

    /// What an idle stream sends to stay open. Default: nothing (the stream
    /// then only finds a dead client when it next has something to send).
    fn heartbeat(&self) -> Option<Bytes> {
        None
    }

    /// The last bytes of a stream that ends (shutdown, byte budget). Default: none.
    fn close(&self) -> Option<Bytes> {
        None
    }

    /// The response's `Content-Type`. Default: `text/plain; charset=utf-8`.
    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("text/plain; charset=utf-8")
    }

    /// Headers the response carries besides `Content-Type`, `Cache-Control`,
    /// `X-Accel-Buffering` and CORS. They are inserted after those, so a
    /// header of the same name replaces comet's. Default: none.
    fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &[]
    }

    /// Encodes any item, dispatching to [`message`](Self::message),
    /// [`gap`](Self::gap) or [`presence`](Self::presence).
    fn item(&self, item: &Item, out: &mut Chunks) {
        match item {
            Item::Message { message, cursor } => self.message(message, cursor, out),
            Item::Gap {
                channel,
                missed,
                cursor,
            } => self.gap(channel, *missed, cursor, out),
            Item::Presence { event, cursor } => self.presence(event, cursor, out),
            Item::Members {
                channel,
                presence,
                cursor,
            } => self.members(channel, presence, cursor, out),
            Item::Ended {
                channel,
                reason,
                cursor,
            } => self.ended(channel.as_ref(), *reason, cursor, out),
            Item::Added { channel, cursor } => self.added(channel, cursor, out),
            _ => {} // a kind this version does not know: nothing on the wire
        }
    }
}

/// A wire format for long polls: one answer per request, carrying what was
/// waiting after the request's cursor (nothing when the hold timed out) and
/// the cursor to poll with next.
///
/// The server holds the request, batches the items, and sends the cursor as
/// the answer's `ETag` too; a format only writes the body.
///
/// ```
/// use bytes::Bytes;
/// use comet_push::{protocol::LongPollFormat, Cursor, Item};
/// use http::HeaderValue;
///
/// /// One `channel<TAB>text` line per message, then the cursor.
/// struct TextPoll;
///
/// impl LongPollFormat for TextPoll {
///     fn answer(&self, items: &[Item], cursor: &Cursor) -> Bytes {
///         let mut body = String::new();
///         for message in items.iter().filter_map(Item::message) {
///             body += &format!("{}\t{}\n", message.channel(), message.text());
///         }
///         body += &format!("cursor\t{cursor}\n");
///         body.into()
///     }
///
///     fn content_type(&self) -> HeaderValue {
///         HeaderValue::from_static("text/plain; charset=utf-8")
///     }
/// }
/// ```
pub trait LongPollFormat: Send + Sync + 'static {
    /// The answer's body: `items` (possibly none), then `cursor`, where the
    /// next poll resumes.
    fn answer(&self, items: &[Item], cursor: &Cursor) -> Bytes;

    /// The answer's `Content-Type`.
    fn content_type(&self) -> HeaderValue;

    /// Headers the answer carries besides `Content-Type`, `Cache-Control`,
    /// `ETag` and CORS. They are inserted after `Content-Type` and
    /// `Cache-Control` (and so replace a header of the same name), and
    /// before the `ETag`, which is always the cursor. Default: none.
    fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::Chunks;

    fn drain(chunks: &mut Chunks) -> Vec<String> {
        std::iter::from_fn(|| chunks.pop())
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn chunks_come_out_in_the_order_pushed_however_pushes_and_pops_interleave() {
        let mut chunks = Chunks::default();
        assert!(chunks.is_empty());
        chunks.push("a");
        chunks.push("");
        chunks.push("b");
        chunks.push("c");
        let listed: Vec<_> = chunks.iter().map(|b| b.to_vec()).collect();
        assert_eq!(listed, [b"a", b"b", b"c"]);
        assert_eq!(chunks.pop().as_deref(), Some(&b"a"[..]));
        // The first slot is free again, but "b" and "c" are still ahead.
        chunks.push("d");
        assert_eq!(drain(&mut chunks), ["b", "c", "d"]);
        assert!(chunks.is_empty());
        chunks.push("e");
        assert!(!chunks.is_empty());
        assert_eq!(drain(&mut chunks), ["e"]);
    }
}
