//! The JSON envelope (PROTOCOL.md, "Envelopes"), in every shape a built-in
//! transport writes it: whole (long poll), on one line (ndjson), and safe to
//! embed in a `<script>` (forever frame, JSONP).
//!
//! The part of an envelope that depends only on the message is built once per
//! message and shape, cached in the message, and shared as `Bytes` by every
//! subscriber; only the cursor, which depends on the subscription, is written
//! per subscriber. The cache is private to this crate's formats: a format of
//! your own caches in its own [`EncodingSlot`](comet_core::EncodingSlot) and cannot
//! reach these.

use crate::{ChannelName, Cursor, EndReason, Item, Message, PayloadKind, Presence, PresenceEvent};
use bytes::{BufMut, Bytes, BytesMut};
use comet_core::EncodingSlot;
use std::sync::LazyLock;

/// Makes the envelope's encoding slots now (see [`crate::SubscribeRoute::new`]).
pub(crate) fn reserve_slots() {
    for slot in [
        &ENVELOPE_PREFIX,
        &SCRIPT_SAFE_ENVELOPE_PREFIX,
        &ONE_LINE_ENVELOPE_PREFIX,
        &ONE_CHANNEL_ENVELOPE_LINE,
    ] {
        LazyLock::force(slot);
    }
}

/// The JSON envelope of a message, up to its `cursor` value.
pub(crate) static ENVELOPE_PREFIX: LazyLock<EncodingSlot> = LazyLock::new(EncodingSlot::new);
/// The same, escaped to be embedded in a `<script>` (forever frame, JSONP).
pub(crate) static SCRIPT_SAFE_ENVELOPE_PREFIX: LazyLock<EncodingSlot> =
    LazyLock::new(EncodingSlot::new);
/// The envelope prefix on one line (ndjson): the same bytes as the prefix unless the JSON payload has line breaks between its tokens, which are then written as spaces.
pub(crate) static ONE_LINE_ENVELOPE_PREFIX: LazyLock<EncodingSlot> =
    LazyLock::new(EncodingSlot::new);
/// The whole one-line envelope and line feed for one-channel subscriptions, whose cursor after a message is the same for every subscriber.
pub(crate) static ONE_CHANNEL_ENVELOPE_LINE: LazyLock<EncodingSlot> =
    LazyLock::new(EncodingSlot::new);

/// Whether JSON must be safe to embed in a `<script>` (forever frame, JSONP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Json {
    Plain,
    ScriptSafe,
}

/// The heartbeat envelope.
pub(crate) const HEARTBEAT: &str = "{\"type\":\"heartbeat\"}";

/// `{"type":"message","channel":..,"data":..,"event":..,"cursor":"` — the
/// envelope up to its cursor value, shared by every subscriber.
pub(crate) fn prefix(message: &Message, json: Json) -> Bytes {
    match json {
        Json::Plain => message.encoded(&ENVELOPE_PREFIX, encode_prefix),
        Json::ScriptSafe => message.encoded(&SCRIPT_SAFE_ENVELOPE_PREFIX, |m| {
            script_safe(&m.encoded(&ENVELOPE_PREFIX, encode_prefix))
        }),
    }
}

fn encode_prefix(message: &Message) -> Bytes {
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

pub(crate) fn push_json_string(out: &mut BytesMut, text: &str) {
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

/// The envelope prefix on one line, for ndjson. A JSON payload may hold CR
/// and LF only as whitespace between tokens (raw in a string they are invalid
/// JSON), and the prefix's other parts are escaped JSON strings, so writing
/// each as a space keeps every token byte for byte. Without line breaks (the
/// usual case) this is the very `Bytes` of the plain prefix.
pub(crate) fn one_line_prefix(message: &Message) -> Bytes {
    message.encoded(&ONE_LINE_ENVELOPE_PREFIX, |m| {
        let prefix = prefix(m, Json::Plain);
        if m.kind() != PayloadKind::Json || !m.data().iter().any(|b| matches!(b, b'\r' | b'\n')) {
            return prefix;
        }
        prefix
            .iter()
            .map(|&b| if matches!(b, b'\r' | b'\n') { b' ' } else { b })
            .collect::<Vec<u8>>()
            .into()
    })
}

/// True when the one-line envelope of `message` is its plain envelope as is.
fn one_line_is_plain(message: &Message) -> bool {
    one_line_prefix(message).as_ptr() == prefix(message, Json::Plain).as_ptr()
}

/// The whole one-line envelope of `message` and a line feed, for a
/// one-channel subscription (`cursor` is its position after the message):
/// the same for every such subscriber, so encoded once per message and shared.
pub(crate) fn one_channel_line(message: &Message, cursor: &Cursor) -> Bytes {
    message.encoded_after(&ONE_CHANNEL_ENVELOPE_LINE, cursor, |message| {
        let prefix = one_line_prefix(message);
        [prefix.as_ref(), &cursor_tail(cursor, b"\n")]
            .concat()
            .into()
    })
}

/// The envelope of a gap (rare: encoded per subscriber). Channel names and
/// cursors hold only script-safe characters, so it needs no escaping.
pub(crate) fn gap(channel: &ChannelName, missed: Option<u64>, cursor: &Cursor) -> Bytes {
    let mut out = BytesMut::with_capacity(96);
    out.put_slice(b"{\"type\":\"gap\",\"channel\":");
    push_json_string(&mut out, channel.as_str());
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

/// The envelope of a join or leave, `{"type":"join"|"leave","channel":..,
/// "user":..,"info":..}` (`info` is `null` when the user has none), shared
/// by every subscriber. A presence event keeps its encodings in the slots
/// the same formats use for messages: they are its own, not a message's.
pub(crate) fn presence(event: &PresenceEvent, json: Json) -> Bytes {
    match json {
        Json::Plain => event.encoded(&ENVELOPE_PREFIX, encode_presence),
        Json::ScriptSafe => event.encoded(&SCRIPT_SAFE_ENVELOPE_PREFIX, |e| {
            script_safe(&e.encoded(&ENVELOPE_PREFIX, encode_presence))
        }),
    }
}

fn encode_presence(event: &PresenceEvent) -> Bytes {
    let mut out = BytesMut::with_capacity(64);
    out.put_slice(b"{\"type\":\"");
    out.put_slice(event.kind().as_str().as_bytes());
    out.put_slice(b"\",\"channel\":");
    push_json_string(&mut out, event.channel().as_str());
    out.put_slice(b",");
    push_member(&mut out, event);
    out.put_slice(b"}");
    out.freeze()
}

/// The envelope of a presence list, `{"type":"presence","channel":..,
/// "users":..,"connections":..,"presence":[{"user":..,"info":..,
/// "connections":..},..]}`: once per subscription and channel, so encoded
/// for each.
pub(crate) fn members(channel: &ChannelName, presence: &Presence, json: Json) -> Bytes {
    let mut out = BytesMut::with_capacity(96 + 64 * presence.members.len());
    out.put_slice(b"{\"type\":\"presence\",\"channel\":");
    push_json_string(&mut out, channel.as_str());
    out.put_slice(b",");
    push_presence(&mut out, presence);
    out.put_slice(b"}");
    match json {
        Json::Plain => out.freeze(),
        Json::ScriptSafe => script_safe(&out),
    }
}

/// The envelope of an end: `{"type":"end","channel":..|null,"reason":..,
/// "cursor":..}`, and for a shutdown `"reconnect_within":<ms>` (per
/// subscriber: rare).
pub(crate) fn ended(channel: Option<&ChannelName>, reason: EndReason, cursor: &Cursor) -> Bytes {
    let mut out = BytesMut::with_capacity(96);
    out.put_slice(b"{\"type\":\"end\",\"channel\":");
    match channel {
        Some(channel) => push_json_string(&mut out, channel.as_str()),
        None => out.put_slice(b"null"),
    }
    out.put_slice(b",\"reason\":\"");
    out.put_slice(reason.as_str().as_bytes());
    out.put_slice(b"\",\"cursor\":\"");
    cursor.encode_into(&mut out);
    out.put_slice(b"\"");
    if let EndReason::Shutdown { reconnect_within } = reason {
        out.put_slice(b",\"reconnect_within\":");
        out.put_slice(reconnect_within.as_millis().to_string().as_bytes());
    }
    out.put_slice(b"}");
    out.freeze()
}

/// The envelope of a channel the server added: `{"type":"subscribed",
/// "channel":..,"cursor":..}`.
pub(crate) fn added(channel: &ChannelName, cursor: &Cursor) -> Bytes {
    let mut out = BytesMut::with_capacity(96);
    out.put_slice(b"{\"type\":\"subscribed\",\"channel\":");
    push_json_string(&mut out, channel.as_str());
    out.put_slice(b",\"cursor\":\"");
    cursor.encode_into(&mut out);
    out.put_slice(b"\"}");
    out.freeze()
}

/// The body of a channel-info answer: `{"channel":..,"cursor":..,
/// "subscribers":..}`, with the presence fields when the channel has it.
pub(crate) fn channel_info(info: &comet_core::ChannelInfo) -> Bytes {
    let mut out = BytesMut::with_capacity(128);
    out.put_slice(b"{\"channel\":");
    push_json_string(&mut out, info.channel.as_str());
    out.put_slice(b",\"cursor\":\"");
    info.cursor.encode_into(&mut out);
    out.put_slice(format!("\",\"subscribers\":{}", info.subscribers).as_bytes());
    if let Some(presence) = &info.presence {
        out.put_slice(b",");
        push_presence(&mut out, presence);
    }
    out.put_slice(b"}");
    out.freeze()
}

/// `"users":..,"connections":..,"presence":[..]` of a presence list, as
/// the channel-info answer has it too.
pub(crate) fn push_presence(out: &mut BytesMut, presence: &Presence) {
    out.put_slice(
        format!(
            "\"users\":{},\"connections\":{},\"presence\":[",
            presence.users, presence.connections
        )
        .as_bytes(),
    );
    for (i, member) in presence.members.iter().enumerate() {
        if i > 0 {
            out.put_slice(b",");
        }
        out.put_slice(b"{\"user\":");
        push_json_string(out, member.identity.user());
        out.put_slice(b",\"info\":");
        out.put_slice(member.identity.info().unwrap_or("null").as_bytes());
        out.put_slice(format!(",\"connections\":{}}}", member.connections).as_bytes());
    }
    out.put_slice(b"]");
}

/// `"user":..,"info":..` of a presence event (info is compact JSON: one line).
pub(crate) fn push_member(out: &mut BytesMut, event: &PresenceEvent) {
    out.put_slice(b"\"user\":");
    push_json_string(out, event.identity().user());
    out.put_slice(b",\"info\":");
    out.put_slice(event.identity().info().unwrap_or("null").as_bytes());
}

/// The end of a message envelope after its shared prefix: the cursor, the
/// closing `"}`, then `suffix`. Sized exactly: a `Vec` that is full becomes
/// `Bytes` without a second allocation.
pub(crate) fn cursor_tail(cursor: &Cursor, suffix: &[u8]) -> Bytes {
    let mut tail = Vec::with_capacity(cursor.encoded_len() + 2 + suffix.len());
    cursor.encode_into(&mut tail);
    tail.extend_from_slice(b"\"}");
    tail.extend_from_slice(suffix);
    tail.into()
}

/// Appends the complete envelope of `item` to `out`.
pub(crate) fn write(out: &mut BytesMut, item: &Item, json: Json) {
    match item {
        // Every one-channel subscriber has the same envelope after a
        // message: it is the shared one-channel line, less its "\n" (when
        // that line is the plain envelope: no line breaks to respace).
        Item::Message { message, cursor }
            if json == Json::Plain && cursor.len() == 1 && one_line_is_plain(message) =>
        {
            let line = one_channel_line(message, cursor);
            out.put_slice(&line[..line.len() - 1]);
        }
        Item::Message { message, cursor } => {
            out.put_slice(&prefix(message, json));
            cursor.encode_into(out);
            out.put_slice(b"\"}");
        }
        Item::Gap {
            channel,
            missed,
            cursor,
        } => out.put_slice(&gap(channel, *missed, cursor)),
        Item::Presence { event, .. } => out.put_slice(&presence(event, json)),
        Item::Members {
            channel, presence, ..
        } => out.put_slice(&members(channel, presence, json)),
        // Channel names and cursors are script-safe as they are.
        Item::Ended {
            channel,
            reason,
            cursor,
        } => out.put_slice(&ended(channel.as_ref(), *reason, cursor)),
        Item::Added { channel, cursor } => out.put_slice(&added(channel, cursor)),
        _ => {} // a kind this version does not know: nothing on the wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::test_item as item;
    use crate::Payload;

    #[tokio::test]
    async fn envelopes() {
        let it = item(Payload::text("hi \"there\"").event("said")).await;
        let mut out = BytesMut::new();
        write(&mut out, &it, Json::Plain);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type": "message", "channel": "chat", "data": "hi \"there\"",
                "event": "said", "cursor": it.cursor().encode()})
        );
        let it = item(Payload::json(&serde_json::json!([1, {"b": null}])).unwrap()).await;
        let mut out = BytesMut::new();
        write(&mut out, &it, Json::Plain);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["data"], serde_json::json!([1, {"b": null}]));
        assert!(value.get("event").is_none());
    }

    #[test]
    fn gap_envelope_shapes() {
        let channel = ChannelName::new("c").unwrap();
        let out = gap(&channel, None, &Cursor::default());
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"type":"gap","channel":"c","missed":null,"cursor":"AQ"})
        );
    }
}
