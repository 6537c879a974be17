//! Wire encodings of items: the JSON envelope and SSE frames.
//!
//! The part of an encoding that depends only on the message is built once per
//! message ([`Message::encoded`]) and shared as `Bytes`; only the cursor, which
//! depends on the subscription, is written per subscriber.

use crate::{Cursor, Encoding, Item, Message, PayloadKind};
use bytes::{BufMut, Bytes, BytesMut};

/// `{"type":"message","channel":..,"data":..,"event":..,"cursor":"` — the
/// envelope up to its cursor value.
fn envelope_head(message: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + message.data().len());
    out.put_slice(b"{\"type\":\"message\",\"channel\":");
    push_json_string(&mut out, message.channel().as_str());
    out.put_slice(b",\"data\":");
    match message.kind() {
        PayloadKind::Json => out.put_slice(message.data()),
        PayloadKind::Text => push_json_string(&mut out, message.text()),
    }
    if let Some(event) = message.event() {
        out.put_slice(b",\"event\":");
        push_json_string(&mut out, event);
    }
    out.put_slice(b",\"cursor\":\"");
    out.freeze()
}

fn push_json_string(out: &mut BytesMut, text: &str) {
    // Writing a string to a growable buffer cannot fail.
    let _ = serde_json::to_writer(out.writer(), text);
}

/// The envelope of a gap.
fn gap_envelope(out: &mut BytesMut, channel: &str, missed: Option<u64>, cursor: &Cursor) {
    out.put_slice(b"{\"type\":\"gap\",\"channel\":");
    push_json_string(out, channel);
    out.put_slice(b",\"missed\":");
    match missed {
        Some(n) => out.put_slice(n.to_string().as_bytes()),
        None => out.put_slice(b"null"),
    }
    out.put_slice(b",\"cursor\":\"");
    out.put_slice(cursor.encode().as_bytes());
    out.put_slice(b"\"}");
}

/// Appends the complete JSON envelope of `item` to `out`.
pub(crate) fn envelope(out: &mut BytesMut, item: &Item) {
    match item {
        Item::Message { message, cursor } => {
            out.put_slice(&message.encoded(Encoding::EnvelopeHead, envelope_head));
            out.put_slice(cursor.encode().as_bytes());
            out.put_slice(b"\"}");
        }
        Item::Gap {
            channel,
            missed,
            cursor,
        } => gap_envelope(out, channel.as_str(), *missed, cursor),
    }
}

/// The SSE preamble: a comment line (which also flushes proxies that wait for
/// a first byte) and the client's reconnection delay.
pub(crate) fn sse_preamble(retry_ms: u128) -> Bytes {
    Bytes::from(format!(": comet\nretry: {retry_ms}\n\n"))
}

/// An SSE heartbeat: a comment line.
pub(crate) const SSE_HEARTBEAT: &[u8] = b": \n\n";

/// The SSE frame of `item` as two chunks: the subscriber's `id:` line, and the
/// event and data lines (shared by every subscriber for a message).
pub(crate) fn sse_frame(item: &Item) -> (Bytes, Bytes) {
    let id = Bytes::from(format!("id: {}\n", item.cursor()));
    let body = match item {
        Item::Message { message, .. } => message.encoded(Encoding::SseBody, sse_message_body),
        Item::Gap { .. } => {
            let mut data = BytesMut::new();
            envelope(&mut data, item);
            let mut out = BytesMut::with_capacity(data.len() + 32);
            out.put_slice(b"event: comet-gap\ndata: ");
            out.put_slice(&data);
            out.put_slice(b"\n\n");
            out.freeze()
        }
    };
    (id, body)
}

/// `event:` (the message's event, else its channel) and one `data:` line per
/// line of the payload: CR, LF and CRLF all end a line in SSE, so each is a
/// line break here and none can end the event early.
fn sse_message_body(message: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(message.data().len() + 64);
    out.put_slice(b"event: ");
    out.put_slice(
        message
            .event()
            .unwrap_or(message.channel().as_str())
            .as_bytes(),
    );
    out.put_slice(b"\n");
    for line in sse_lines(message.text()) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_slice(b"\n");
    }
    out.put_slice(b"\n");
    out.freeze()
}

/// Splits on CRLF, CR or LF; an empty text is one empty line.
fn sse_lines(text: &str) -> impl Iterator<Item = &str> {
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
    use crate::{Hub, Payload, Start};
    use tokio_stream::StreamExt;

    async fn item(payload: Payload) -> Item {
        let hub = Hub::new();
        let mut sub = hub.subscribe(["chat"], Start::head()).unwrap();
        hub.publish("chat", payload).await.unwrap();
        sub.next().await.unwrap()
    }

    fn sse(item: &Item) -> String {
        let (id, body) = sse_frame(item);
        String::from_utf8([id, body].concat()).unwrap()
    }

    #[test]
    fn lines() {
        let split = |s| sse_lines(s).collect::<Vec<_>>();
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
            format!("id: {id}\nevent: chat\ndata: one\ndata: two\ndata: three\ndata: four\n\n")
        );
        let it = item(Payload::text("").event("ping")).await;
        assert_eq!(
            sse(&it),
            format!("id: {}\nevent: ping\ndata: \n\n", it.cursor())
        );
        let it = item(Payload::json(&serde_json::json!({"a": "x\ny"})).unwrap()).await;
        assert_eq!(
            sse(&it),
            format!(
                "id: {}\nevent: chat\ndata: {{\"a\":\"x\\ny\"}}\n\n",
                it.cursor()
            )
        );
    }

    #[tokio::test]
    async fn envelopes() {
        let it = item(Payload::text("hi \"there\"").event("said")).await;
        let mut out = BytesMut::new();
        envelope(&mut out, &it);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "message", "channel": "chat", "data": "hi \"there\"",
                "event": "said", "cursor": it.cursor().encode()})
        );
        let it = item(Payload::json(&serde_json::json!([1, {"b": null}])).unwrap()).await;
        let mut out = BytesMut::new();
        envelope(&mut out, &it);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["data"], serde_json::json!([1, {"b": null}]));
        assert!(value.get("event").is_none());
    }

    #[test]
    fn gap_envelope_shapes() {
        let cursor = Cursor::default();
        let mut out = BytesMut::new();
        gap_envelope(&mut out, "c", None, &cursor);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type":"gap","channel":"c","missed":null,"cursor":"AQ"})
        );
    }
}
