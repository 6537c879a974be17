//! [`StreamFormat`]: how a streaming transport frames what it sends, the
//! extension point for wire formats of your own.
//!
//! The built-in streaming transports (SSE, ndjson, forever frame) implement
//! this same trait; a route can serve any other implementation with
//! [`Route::format`](super::Route::format).

use crate::{ChannelName, Cursor, Item, Message};
use bytes::Bytes;
use http::HeaderValue;
use std::collections::VecDeque;

/// The chunks a format writes for one item, in order.
///
/// Push shared bytes (such as a per-message encoding from
/// [`Message::encoded_with`]) as their own chunk rather than copying them into
/// a per-subscriber buffer: the server writes chunks without copying.
#[derive(Debug, Default)]
pub struct Frames {
    /// The first chunk waiting, kept apart: most items are one shared chunk
    /// (an SSE message on a one-channel stream), and every held stream owns
    /// a `Frames`, so the usual case allocates nothing and idle streams
    /// hold no queue.
    first: Option<Bytes>,
    /// Chunks after `first`, in order.
    rest: VecDeque<Bytes>,
}

impl Frames {
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

    /// True when no chunk is waiting.
    pub fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    /// The chunks, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.first.iter().chain(self.rest.iter())
    }
}

/// A wire format for streaming subscriptions.
///
/// Only [`message`](Self::message) is required. The defaults send nothing
/// before the first item or on idle, nothing at the end, a JSON gap envelope
/// line for gaps, and `text/plain`.
///
/// ```
/// use comet_core::{protocol::{Frames, StreamFormat}, Cursor, Message};
///
/// /// `channel<TAB>text` lines, for `curl` users.
/// struct Lines;
///
/// impl StreamFormat for Lines {
///     fn message(&self, message: &Message, _cursor: &Cursor, out: &mut Frames) {
///         out.push(format!("{}\t{}\n", message.channel(), message.text().replace('\n', " ")));
///     }
/// }
/// ```
pub trait StreamFormat: Send + Sync + 'static {
    /// Encodes one message; `cursor` is the subscription's position after it.
    fn message(&self, message: &Message, cursor: &Cursor, out: &mut Frames);

    /// Encodes a gap: messages of `channel` that history no longer holds
    /// (`missed` is `None` when unknown). Default: the JSON gap envelope and a
    /// line feed.
    fn gap(&self, channel: &ChannelName, missed: Option<u64>, cursor: &Cursor, out: &mut Frames) {
        out.push(super::encode::gap_envelope(
            channel.as_str(),
            missed,
            cursor,
        ));
        out.push(Bytes::from_static(b"\n"));
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

    /// Encodes any item, dispatching to [`message`](Self::message) or
    /// [`gap`](Self::gap).
    fn item(&self, item: &Item, out: &mut Frames) {
        match item {
            Item::Message { message, cursor } => self.message(message, cursor, out),
            Item::Gap {
                channel,
                missed,
                cursor,
            } => self.gap(channel, *missed, cursor, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    fn drain(frames: &mut Frames) -> Vec<String> {
        std::iter::from_fn(|| frames.pop())
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn chunks_come_out_in_the_order_pushed_however_pushes_and_pops_interleave() {
        let mut frames = Frames::default();
        assert!(frames.is_empty());
        frames.push("a");
        frames.push("");
        frames.push("b");
        frames.push("c");
        let listed: Vec<_> = frames.iter().map(|b| b.to_vec()).collect();
        assert_eq!(listed, [b"a", b"b", b"c"]);
        assert_eq!(frames.pop().as_deref(), Some(&b"a"[..]));
        // The first slot is free again, but "b" and "c" are still ahead.
        frames.push("d");
        assert_eq!(drain(&mut frames), ["b", "c", "d"]);
        assert!(frames.is_empty());
        frames.push("e");
        assert!(!frames.is_empty());
        assert_eq!(drain(&mut frames), ["e"]);
    }
}
