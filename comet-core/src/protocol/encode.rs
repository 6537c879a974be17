//! Wire encodings of items: JSON envelopes, and the framing of each streaming
//! transport.
//!
//! The part of an encoding that depends only on the message is built once per
//! message and wire format ([`Message::encoded`]) and shared as `Bytes` by
//! every subscriber; only the cursor, which depends on the subscription, is
//! written per subscriber. A frame is therefore a few chunks: shared bytes and
//! a short per-subscriber tail.

use super::{ErrorCode, Frames, ProtocolError, StreamFormat};
use crate::{ChannelName, Cursor, Encoding, Item, Message, PayloadKind};
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether JSON must be safe to embed in a `<script>` (forever frame, JSONP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Json {
    Plain,
    ScriptSafe,
}

/// `{"type":"message","channel":..,"data":..,"event":..,"cursor":"` — the
/// envelope up to its cursor value.
fn envelope_head(message: &Message) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + message.data().len());
    out.put_slice(b"{\"type\":\"message\",\"channel\":");
    push_json_string(&mut out, message.channel().as_str());
    out.put_slice(b",\"data\":");
    match message.kind() {
        // The publisher's bytes, validated when published, as they came.
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

/// Rewrites JSON so that it can sit inside a `<script>` element or be
/// evaluated as JavaScript: `<`, `>`, `&`, U+2028 and U+2029 become `\uXXXX`
/// escapes, so no `</script>`, `<!--` or line terminator appears raw. JSON
/// has these characters only inside strings, where the escapes mean the same.
fn script_safe(json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + 16);
    let mut rest = json;
    while let Some(i) = rest
        .iter()
        .position(|b| matches!(b, b'<' | b'>' | b'&' | 0xE2))
    {
        out.put_slice(&rest[..i]);
        match rest[i] {
            b'<' => out.put_slice(b"\\u003c"),
            b'>' => out.put_slice(b"\\u003e"),
            b'&' => out.put_slice(b"\\u0026"),
            _ if rest[i..].starts_with("\u{2028}".as_bytes()) => {
                out.put_slice(b"\\u2028");
                rest = &rest[i + 3..];
                continue;
            }
            _ if rest[i..].starts_with("\u{2029}".as_bytes()) => {
                out.put_slice(b"\\u2029");
                rest = &rest[i + 3..];
                continue;
            }
            other => out.put_u8(other),
        }
        rest = &rest[i + 1..];
    }
    out.put_slice(rest);
    out.freeze()
}

fn head(message: &Message, json: Json) -> Bytes {
    match json {
        Json::Plain => message.encoded(Encoding::EnvelopeHead, envelope_head),
        Json::ScriptSafe => message.encoded(Encoding::ScriptEnvelopeHead, |m| {
            script_safe(&m.encoded(Encoding::EnvelopeHead, envelope_head))
        }),
    }
}

/// The envelope head on one line, for ndjson. A JSON payload may hold CR and
/// LF only as whitespace between tokens (raw in a string they are invalid
/// JSON), and the head's other parts are escaped JSON strings, so writing
/// each as a space keeps every token byte for byte. Without line breaks (the
/// usual case) this is the very `Bytes` of the plain head.
fn line_head(message: &Message) -> Bytes {
    message.encoded(Encoding::NdjsonEnvelopeHead, |m| {
        let head = head(m, Json::Plain);
        if m.kind() != PayloadKind::Json || !m.data().iter().any(|b| matches!(b, b'\r' | b'\n')) {
            return head;
        }
        head.iter()
            .map(|&b| if matches!(b, b'\r' | b'\n') { b' ' } else { b })
            .collect::<Vec<u8>>()
            .into()
    })
}

/// True when the ndjson line of `message` holds its plain envelope as is.
fn line_is_plain(message: &Message) -> bool {
    line_head(message).as_ptr() == head(message, Json::Plain).as_ptr()
}

/// The envelope of a gap (rare: encoded per subscriber).
pub(crate) fn gap_envelope(channel: &str, missed: Option<u64>, cursor: &Cursor) -> Bytes {
    let mut out = BytesMut::with_capacity(96);
    out.put_slice(b"{\"type\":\"gap\",\"channel\":");
    push_json_string(&mut out, channel);
    out.put_slice(b",\"missed\":");
    match missed {
        Some(n) => out.put_slice(n.to_string().as_bytes()),
        None => out.put_slice(b"null"),
    }
    out.put_slice(b",\"cursor\":\"");
    cursor.encode_into(&mut out);
    out.put_slice(b"\"}");
    out.freeze()
}

/// The end of a message envelope after its shared head: the cursor, the
/// closing `"}`, then `suffix`. Sized exactly: a `Vec` that is full becomes
/// `Bytes` without a second allocation.
fn cursor_tail(cursor: &Cursor, suffix: &[u8]) -> Bytes {
    let mut tail = Vec::with_capacity(cursor.encoded_len() + 2 + suffix.len());
    cursor.encode_into(&mut tail);
    tail.extend_from_slice(b"\"}");
    tail.extend_from_slice(suffix);
    tail.into()
}

/// Appends the complete JSON envelope of `item` to `out`. Channel names and
/// cursors hold only script-safe characters, so a gap needs no escaping.
pub(crate) fn envelope(out: &mut BytesMut, item: &Item, json: Json) {
    match item {
        // Every one-channel subscriber has the same envelope after a
        // message: it is the ndjson transport's shared line, less its "\n"
        // (when that line is the plain envelope: no line breaks to respace).
        Item::Message { message, cursor }
            if json == Json::Plain && cursor.len() == 1 && line_is_plain(message) =>
        {
            let line = ndjson_line_one_channel(message, cursor);
            out.put_slice(&line[..line.len() - 1]);
        }
        Item::Message { message, cursor } => {
            out.put_slice(&head(message, json));
            cursor.encode_into(out);
            out.put_slice(b"\"}");
        }
        Item::Gap {
            channel,
            missed,
            cursor,
        } => out.put_slice(&gap_envelope(channel.as_str(), *missed, cursor)),
    }
}

/// The heartbeat envelope.
const HEARTBEAT_ENVELOPE: &str = "{\"type\":\"heartbeat\"}";

/// Server-Sent Events.
pub(crate) struct Sse {
    retry_ms: u128,
    /// Set once `retry:` has gone out, with the first event.
    retry_sent: AtomicBool,
}

impl Sse {
    pub(crate) fn new(retry_ms: u128) -> Self {
        Self {
            retry_ms,
            retry_sent: AtomicBool::new(false),
        }
    }

    /// `retry:` opens the first event's block, never a block of its own:
    /// some clients (httpx-sse) yield a block with no data as an event.
    fn retry_once(&self, out: &mut Frames) {
        if !self.retry_sent.swap(true, Ordering::Relaxed) {
            out.push(format!("retry: {}\n", self.retry_ms));
        }
    }
}

impl StreamFormat for Sse {
    /// The subscriber's `id:` line, then the event and data lines (shared by
    /// every subscriber of the message).
    fn message(&self, message: &Message, cursor: &Cursor, out: &mut Frames) {
        self.retry_once(out);
        let body = message.encoded(Encoding::SseBody, sse_message_body);
        if cursor.len() == 1 {
            // Every one-channel subscriber has this very cursor after this
            // message: the whole frame is shared, nothing is per subscriber.
            out.push(message.encoded(Encoding::SseFrameOneChannel, |_| {
                let mut frame = id_line(cursor);
                frame.extend_from_slice(&body);
                frame.into()
            }));
        } else {
            out.push(id_line(cursor));
            out.push(body);
        }
    }

    /// A `comet-gap` event carrying the gap envelope.
    fn gap(&self, channel: &ChannelName, missed: Option<u64>, cursor: &Cursor, out: &mut Frames) {
        self.retry_once(out);
        out.push(id_line(cursor));
        let data = gap_envelope(channel.as_str(), missed, cursor);
        let mut frame = BytesMut::with_capacity(data.len() + 32);
        frame.put_slice(b"event: comet-gap\ndata: ");
        frame.put_slice(&data);
        frame.put_slice(b"\n\n");
        out.push(frame.freeze());
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
/// per message: the SSE hot path), sized exactly as in [`cursor_tail`].
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

/// Newline-delimited JSON envelopes.
pub(crate) struct Ndjson;

/// The whole ndjson line of `message` for a one-channel subscription
/// (`cursor` is its position after the message): the same for every such
/// subscriber, so encoded once per message and shared, as for SSE.
fn ndjson_line_one_channel(message: &Message, cursor: &Cursor) -> Bytes {
    message.encoded(Encoding::NdjsonLineOneChannel, |message| {
        let head = line_head(message);
        [head.as_ref(), &cursor_tail(cursor, b"\n")].concat().into()
    })
}

impl StreamFormat for Ndjson {
    fn message(&self, message: &Message, cursor: &Cursor, out: &mut Frames) {
        if cursor.len() == 1 {
            out.push(ndjson_line_one_channel(message, cursor));
        } else {
            out.push(line_head(message));
            out.push(cursor_tail(cursor, b"\n"));
        }
    }

    fn heartbeat(&self) -> Option<Bytes> {
        Some(Bytes::from_static(b"{\"type\":\"heartbeat\"}\n"))
    }

    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("application/x-ndjson")
    }
}

/// The forever frame: an HTML page that calls `parent.<callback>(envelope)`
/// once per item.
pub(crate) struct Iframe {
    /// `<script>parent.<callback>(`
    call: Bytes,
}

/// Browsers render a streamed page only after its first kilobyte or so.
const IFRAME_PADDING: usize = 1024;

impl Iframe {
    /// The forever frame's content type.
    pub(crate) const CONTENT_TYPE: HeaderValue =
        HeaderValue::from_static("text/html; charset=utf-8");

    /// `callback` must have passed [`validate_callback`].
    pub(crate) fn new(callback: &str) -> Self {
        Self {
            call: Bytes::from(format!("<script>parent.{callback}(")),
        }
    }
}

impl StreamFormat for Iframe {
    fn message(&self, message: &Message, cursor: &Cursor, out: &mut Frames) {
        out.push(self.call.clone());
        out.push(head(message, Json::ScriptSafe));
        out.push(cursor_tail(cursor, b");</script>\n"));
    }

    fn gap(&self, channel: &ChannelName, missed: Option<u64>, cursor: &Cursor, out: &mut Frames) {
        // Channel names and cursors hold only script-safe characters.
        out.push(self.call.clone());
        out.push(gap_envelope(channel.as_str(), missed, cursor));
        out.push(Bytes::from_static(b");</script>\n"));
    }

    fn preamble(&self) -> Option<Bytes> {
        let mut out = BytesMut::with_capacity(IFRAME_PADDING + 128);
        out.put_slice(b"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>comet</title></head><body>\n<!--");
        out.put_bytes(b' ', IFRAME_PADDING);
        out.put_slice(b"-->\n");
        // A heartbeat at once tells the parent page that the frame is live:
        // an iframe gives no other sign until its document ends.
        out.put_slice(&self.call);
        out.put_slice(HEARTBEAT_ENVELOPE.as_bytes());
        out.put_slice(b");</script>\n");
        Some(out.freeze())
    }

    fn heartbeat(&self) -> Option<Bytes> {
        let mut out = BytesMut::with_capacity(self.call.len() + 48);
        out.put_slice(&self.call);
        out.put_slice(HEARTBEAT_ENVELOPE.as_bytes());
        out.put_slice(b");</script>\n");
        Some(out.freeze())
    }

    fn content_type(&self) -> HeaderValue {
        Self::CONTENT_TYPE
    }
}

/// The longest callback name accepted.
pub const MAX_CALLBACK_LEN: usize = 64;

/// The registry object `comet.js` keeps its callbacks in, and the default of
/// [`Route::callback_registry`](super::Route::callback_registry).
pub const DEFAULT_CALLBACK_REGISTRY: &str = "__comet_cb";

/// Names that reach an object's prototype chain or its constructor (and so
/// `Function`) rather than a function registered for comet.
const PROTOTYPE_NAMES: [&str; 12] = [
    "__proto__",
    "constructor",
    "prototype",
    "__defineGetter__",
    "__defineSetter__",
    "__lookupGetter__",
    "__lookupSetter__",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toString",
    "valueOf",
];

/// An ASCII JavaScript identifier (`[A-Za-z_$][A-Za-z0-9_$]*`).
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// An identifier that names no prototype machinery.
pub(crate) fn is_function_name(name: &str) -> bool {
    is_identifier(name) && !PROTOTYPE_NAMES.contains(&name)
}

/// PROTOCOL.md: a callback names a function registered for comet: one
/// identifier (`cb`), or one identifier inside the route's registry object
/// (`__comet_cb.p1`), at most 64 characters. Any other path (`document.write`,
/// `victim.document.body.remove`) could call a method of the page.
pub(crate) fn validate_callback(callback: &str, registry: &str) -> Result<(), ProtocolError> {
    let valid = callback.len() <= MAX_CALLBACK_LEN
        && match callback.split_once('.') {
            None => is_function_name(callback),
            Some((object, name)) => object == registry && is_function_name(name),
        };
    if valid {
        Ok(())
    } else {
        Err(ErrorCode::BadCallback.error(format!(
            "callback must be one identifier or {registry}.<identifier>, at most {MAX_CALLBACK_LEN} characters, naming no prototype property"
        )))
    }
}

/// `/**/<callback>(<json>);` — the comment guards against content sniffing
/// of the response's first bytes.
pub(crate) fn jsonp(callback: &str, json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + callback.len() + 8);
    out.put_slice(b"/**/");
    out.put_slice(callback.as_bytes());
    out.put_u8(b'(');
    out.put_slice(json);
    out.put_slice(b");");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Hub, Payload, Start};
    use tokio_stream::StreamExt;

    async fn item(payload: Payload) -> Item {
        let hub = Hub::new();
        let mut sub = hub.subscribe(["chat"], Start::head()).await.unwrap();
        hub.publish("chat", payload).await.unwrap();
        sub.next().await.unwrap()
    }

    fn frame(format: &dyn StreamFormat, item: &Item) -> String {
        let mut out = Frames::default();
        format.item(item, &mut out);
        String::from_utf8(out.iter().flat_map(|b| b.to_vec()).collect()).unwrap()
    }

    fn sse(item: &Item) -> String {
        frame(&Sse::new(0), item)
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
            format!("retry: 0\nid: {id}\nevent: chat\ndata: one\ndata: two\ndata: three\ndata: four\n\n")
        );
        // `retry:` rides on the first event only.
        let format = Sse::new(1500);
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

    #[tokio::test]
    async fn envelopes() {
        let it = item(Payload::text("hi \"there\"").event("said")).await;
        let mut out = BytesMut::new();
        envelope(&mut out, &it, Json::Plain);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "message", "channel": "chat", "data": "hi \"there\"",
                "event": "said", "cursor": it.cursor().encode()})
        );
        let it = item(Payload::json(&serde_json::json!([1, {"b": null}])).unwrap()).await;
        let mut out = BytesMut::new();
        envelope(&mut out, &it, Json::Plain);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["data"], serde_json::json!([1, {"b": null}]));
        assert!(value.get("event").is_none());
        assert_eq!(
            frame(&Ndjson, &it),
            format!("{}\n", String::from_utf8(out.to_vec()).unwrap())
        );
    }

    #[test]
    fn gap_envelope_shapes() {
        let out = gap_envelope("c", None, &Cursor::default());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type":"gap","channel":"c","missed":null,"cursor":"AQ"})
        );
    }

    #[tokio::test]
    async fn script_safe_json_is_inert_and_means_the_same() {
        let hostile = "</script><script>alert(1)</script><!-- & \u{2028}\u{2029} é";
        let it = item(Payload::json(&serde_json::json!({ "x": hostile })).unwrap()).await;
        let html = frame(&Iframe::new("cb"), &it);
        let inner = html
            .strip_prefix("<script>parent.cb(")
            .and_then(|s| s.strip_suffix(");</script>\n"))
            .unwrap();
        for raw in ["<", ">", "&", "\u{2028}", "\u{2029}"] {
            assert!(!inner.contains(raw), "{raw:?} raw in {inner}");
        }
        let value: serde_json::Value = serde_json::from_str(inner).unwrap();
        assert_eq!(value["data"]["x"], hostile);
        assert!(inner.contains('é'), "other text stays as it is");
    }

    fn chunks(format: &dyn StreamFormat, item: &Item) -> Vec<Bytes> {
        let mut out = Frames::default();
        format.item(item, &mut out);
        out.iter().cloned().collect()
    }

    #[tokio::test]
    async fn each_wire_format_encodes_a_message_once_for_every_subscriber() {
        let hub = Hub::new();
        // One-channel subscribers (same cursor after a message) and
        // several-channel ones (each with its own cursor).
        let mut one = [
            hub.subscribe(["x"], Start::head()).await.unwrap(),
            hub.subscribe(["x"], Start::head()).await.unwrap(),
        ];
        let mut many = [
            hub.subscribe(["x", "y"], Start::head()).await.unwrap(),
            hub.subscribe(["x", "z"], Start::head()).await.unwrap(),
        ];
        hub.publish("x", "shared").await.unwrap();
        let (a, b) = (one[0].next().await.unwrap(), one[1].next().await.unwrap());
        let (c, d) = (many[0].next().await.unwrap(), many[1].next().await.unwrap());
        assert_eq!(a.cursor(), b.cursor());
        assert_ne!(c.cursor(), d.cursor());

        let sse = Sse::new(0);
        sse.retry_once(&mut Frames::default());
        for format in [&sse as &dyn StreamFormat, &Ndjson] {
            // One channel: the whole frame, cursor included, is the same bytes.
            let (fa, fb) = (chunks(format, &a), chunks(format, &b));
            assert_eq!(fa.len(), 1);
            assert_eq!(fa[0].as_ptr(), fb[0].as_ptr(), "one frame for all");
        }
        // Several channels: the message's part is shared, the cursor is not.
        let formats: [(&dyn StreamFormat, usize); 3] =
            [(&sse, 1), (&Ndjson, 0), (&Iframe::new("cb"), 1)];
        for (format, shared) in formats {
            let (fc, fd) = (chunks(format, &c), chunks(format, &d));
            assert_eq!(
                fc[shared].as_ptr(),
                fd[shared].as_ptr(),
                "one encoding, shared"
            );
            assert_ne!(fc, fd, "each with its own cursor");
        }
        // The forever frame (a callback per request) shares its envelope head too.
        let (fa, fc) = (
            chunks(&Iframe::new("cb"), &a),
            chunks(&Iframe::new("other"), &c),
        );
        assert_eq!(fa[1].as_ptr(), fc[1].as_ptr());
        // The poll body copies the same cached head.
        let (mut pa, mut pc) = (BytesMut::new(), BytesMut::new());
        envelope(&mut pa, &a, Json::Plain);
        envelope(&mut pc, &c, Json::Plain);
        let head = a
            .message()
            .unwrap()
            .encoded(Encoding::EnvelopeHead, |_| unreachable!("cached"));
        assert!(pa.starts_with(&head) && pc.starts_with(&head));
    }

    #[test]
    fn iframe_preamble_is_over_a_kilobyte() {
        assert!(Iframe::new("cb").preamble().unwrap().len() > 1024);
    }

    #[test]
    fn callbacks_name_only_registered_functions() {
        let registry = DEFAULT_CALLBACK_REGISTRY;
        for ok in [
            "cb",
            "$",
            "_x1",
            "jQuery123_456",
            "__comet_cb.p1",
            "__comet_cb.f12",
            &"a".repeat(64),
        ] {
            assert!(validate_callback(ok, registry).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "1a",
            "a..b",
            "a.",
            ".a",
            "a-b",
            "alert(1)",
            "a;b",
            "a b",
            "<x>",
            "é",
            "a.b.c",
            "document.write",
            "location.reload",
            "victim.document.body.remove",
            "constructor.constructor",
            "__proto__",
            "constructor",
            "prototype",
            "__comet_cb.__proto__",
            "__comet_cb.constructor",
            "__comet_cb.p1.x",
            "other_cb.p1",
            &"a".repeat(65),
        ] {
            assert_eq!(
                validate_callback(bad, registry).unwrap_err().code(),
                "bad_callback",
                "{bad}"
            );
        }
        assert!(validate_callback("app_cb.x", "app_cb").is_ok());
        assert!(validate_callback("__comet_cb.x", "app_cb").is_err());
    }
}
