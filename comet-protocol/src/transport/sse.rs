//! Server-Sent Events (`text/event-stream`): one response, many events, read
//! by the browser's `EventSource`, which resumes by itself with the last
//! `id:` as `Last-Event-ID`.

use crate::{
    envelope,
    transport::{Format, Transport},
    ChannelName, Chunks, Cursor, EndReason, Message, Presence, PresenceEvent, PresenceKind,
    StreamFormat,
};
use bytes::{BufMut, Bytes, BytesMut};
use comet_core::EncodingSlot;
use http::HeaderValue;
use std::sync::LazyLock;
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

/// Makes SSE's encoding slots now (see [`crate::SubscribeRoute::new`]).
pub(crate) fn reserve_slots() {
    LazyLock::force(&SSE_EVENT);
    LazyLock::force(&SSE_ONE_CHANNEL_FRAME);
}

/// The SSE `event:` and `data:` lines of a message.
pub(crate) static SSE_EVENT: LazyLock<EncodingSlot> = LazyLock::new(EncodingSlot::new);
/// The whole SSE frame for one-channel subscriptions, whose cursor after a message is the same for every subscriber.
pub(crate) static SSE_ONE_CHANNEL_FRAME: LazyLock<EncodingSlot> = LazyLock::new(EncodingSlot::new);

/// The default reconnection delay SSE clients are told (`retry:`); see
/// [`SubscribeRoute::retry`](crate::SubscribeRoute::retry).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(2);

/// Server-Sent Events, picked by `Accept: text/event-stream` too.
pub(crate) fn transport() -> Transport {
    Transport::built_in(
        "sse",
        Some("text/event-stream"),
        false,
        |_request, _params, route| {
            Ok(Format::Stream {
                format: Box::new(Sse::new(route.retry)),
                byte_budget: None,
            })
        },
    )
}

/// `event: <name>` and `data: <json>` (one line: JSON without line breaks).
fn control_event(name: &[u8], data: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(data.len() + name.len() + 16);
    frame.put_slice(b"event: ");
    frame.put_slice(name);
    frame.put_slice(b"\ndata: ");
    frame.put_slice(data);
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// Server-Sent Events.
pub(crate) struct Sse {
    retry_ms: u128,
    /// Set once `retry:` has gone out, with the first event.
    retry_sent: AtomicBool,
}

impl Sse {
    pub(crate) fn new(retry: Duration) -> Self {
        Self {
            retry_ms: retry.as_millis(),
            retry_sent: AtomicBool::new(false),
        }
    }

    /// `retry:` opens the first event's block, never a block of its own:
    /// some clients (httpx-sse) yield a block with no data as an event.
    fn retry_once(&self, out: &mut Chunks) {
        if !self.retry_sent.swap(true, Ordering::Relaxed) {
            out.push(format!("retry: {}\n", self.retry_ms));
        }
    }
}

impl StreamFormat for Sse {
    /// The subscriber's `id:` line, then the event and data lines (shared by
    /// every subscriber of the message).
    fn message(&self, message: &Message, cursor: &Cursor, out: &mut Chunks) {
        self.retry_once(out);
        if cursor.len() == 1 {
            // Every one-channel subscriber has this very cursor after this
            // message: the whole frame is shared, nothing is per subscriber.
            out.push(
                message.encoded_after(&SSE_ONE_CHANNEL_FRAME, cursor, |message| {
                    let mut frame = id_line(cursor);
                    frame.extend_from_slice(&message.encoded(&SSE_EVENT, encode_event));
                    frame.into()
                }),
            );
        } else {
            out.push(id_line(cursor));
            out.push(message.encoded(&SSE_EVENT, encode_event));
        }
    }

    /// A `comet-gap` event carrying the gap envelope.
    fn gap(&self, channel: &ChannelName, missed: Option<u64>, cursor: &Cursor, out: &mut Chunks) {
        self.retry_once(out);
        out.push(id_line(cursor));
        out.push(control_event(
            b"comet-gap",
            &envelope::gap(channel, missed, cursor),
        ));
    }

    /// A `comet-join` or `comet-leave` event, with no `id:` (it takes no
    /// offset: the stream's `Last-Event-ID` stays the cursor), shared by
    /// every subscriber.
    fn presence(&self, event: &PresenceEvent, _cursor: &Cursor, out: &mut Chunks) {
        self.retry_once(out);
        out.push(event.encoded(&SSE_EVENT, |event| {
            let mut frame = BytesMut::with_capacity(96);
            frame.put_slice(match event.kind() {
                PresenceKind::Join => b"event: comet-join\ndata: {\"channel\":",
                PresenceKind::Leave => b"event: comet-leave\ndata: {\"channel\":",
            });
            envelope::push_json_string(&mut frame, event.channel().as_str());
            frame.put_slice(b",");
            envelope::push_member(&mut frame, event);
            frame.put_slice(b"}\n\n");
            frame.freeze()
        }));
    }

    /// A `comet-presence` event with the presence envelope, no `id:`.
    fn members(
        &self,
        channel: &ChannelName,
        presence: &Presence,
        _cursor: &Cursor,
        out: &mut Chunks,
    ) {
        self.retry_once(out);
        out.push(control_event(
            b"comet-presence",
            &envelope::members(channel, presence, envelope::Json::Plain),
        ));
    }

    /// A `comet-end` event with the end envelope, and the cursor as `id:`
    /// (after an expiry, a client resumes from it with a new token).
    fn ended(
        &self,
        channel: Option<&ChannelName>,
        reason: EndReason,
        cursor: &Cursor,
        out: &mut Chunks,
    ) {
        self.retry_once(out);
        out.push(id_line(cursor));
        out.push(control_event(
            b"comet-end",
            &envelope::ended(channel, reason, cursor),
        ));
    }

    /// A `comet-subscribed` event, and the cursor (with the new channel) as `id:`.
    fn added(&self, channel: &ChannelName, cursor: &Cursor, out: &mut Chunks) {
        self.retry_once(out);
        out.push(id_line(cursor));
        out.push(control_event(
            b"comet-subscribed",
            &envelope::added(channel, cursor),
        ));
    }

    /// A comment line alone (it flushes proxies that wait for a first
    /// byte): no blank line, so no client can take it for an empty event.
    fn preamble(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b": comet\n"))
    }

    /// A comment line alone, for the same reason: a blank line after it
    /// would be an empty event to clients that keep the last `id` (httpx-sse).
    fn heartbeat(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b": \n"))
    }

    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("text/event-stream")
    }
}

/// `id: <cursor>` and a line feed, in one allocation (once per subscriber
/// per message: the SSE hot path), sized exactly.
fn id_line(cursor: &Cursor) -> Vec<u8> {
    let mut line = Vec::with_capacity(4 + cursor.encoded_len() + 1);
    line.extend_from_slice(b"id: ");
    cursor.encode_into(&mut line);
    line.push(b'\n');
    line
}

/// `event:` (the message's event, else its channel) and one `data:` line per
/// line of the payload: CR, LF and CRLF all end a line in SSE, so each is a
/// line break here and none can end the event early.
fn encode_event(message: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(message.data().len() + 64);
    out.put_slice(b"event: ");
    out.put_slice(
        message
            .event()
            .unwrap_or(message.channel().as_str())
            .as_bytes(),
    );
    out.put_slice(b"\n");
    for line in lines(message.text()) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_slice(b"\n");
    }
    out.put_slice(b"\n");
    out.freeze()
}

/// Splits on CRLF, CR or LF; an empty text is one empty line.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(current)
            }
            Some(i) => {
                let skip = if current[i..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[i + skip..]);
                Some(&current[..i])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{test_frame as frame, test_item as item};
    use crate::{Item, Payload};

    fn sse(item: &Item) -> String {
        frame(&Sse::new(Duration::ZERO), item)
    }

    #[test]
    fn lines_end_at_cr_lf_or_crlf() {
        let split = |s| lines(s).collect::<Vec<_>>();
        assert_eq!(split(""), [""]);
        assert_eq!(split("a"), ["a"]);
        assert_eq!(split("a\nb\rc\r\nd"), ["a", "b", "c", "d"]);
        assert_eq!(split("a\n"), ["a", ""]);
        assert_eq!(split("\r\n\r\n"), ["", "", ""]);
        assert_eq!(split("\n\r"), ["", "", ""]);
    }

    #[tokio::test]
    async fn sse_frames() {
        let it = item(Payload::text("one\ntwo\r\nthree\rfour")).await;
        let id = it.cursor().encode();
        assert_eq!(
            sse(&it),
            format!("retry: 0\nid: {id}\nevent: chat\ndata: one\ndata: two\ndata: three\ndata: four\n\n")
        );
        // `retry:` rides on the first event only.
        let format = Sse::new(Duration::from_millis(1500));
        assert!(frame(&format, &it).starts_with("retry: 1500\nid: "));
        assert!(frame(&format, &it).starts_with("id: "));
        assert_eq!(format.preamble().unwrap(), ": comet\n");
        assert_eq!(format.heartbeat().unwrap(), ": \n");
        let it = item(Payload::text("").event("ping")).await;
        assert_eq!(
            sse(&it),
            format!("retry: 0\nid: {}\nevent: ping\ndata: \n\n", it.cursor())
        );
        let it = item(Payload::json(&serde_json::json!({"a": "x\ny"})).unwrap()).await;
        assert_eq!(
            sse(&it),
            format!(
                "retry: 0\nid: {}\nevent: chat\ndata: {{\"a\":\"x\\ny\"}}\n\n",
                it.cursor()
            )
        );
    }
}
