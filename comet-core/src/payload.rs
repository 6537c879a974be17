//! What a publisher hands the hub: UTF-8 text or JSON, with an optional event name.

use bytes::Bytes;
use serde::Serialize;
use std::fmt;

/// Whether a payload's bytes are JSON (sent as a JSON value) or plain text
/// (sent as a JSON string in envelopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// A JSON text (RFC 8259), kept as its publisher wrote it.
    Json,
    /// UTF-8 text.
    Text,
}

/// A message body before it is published.
///
/// Build one with [`Payload::text`], [`Payload::json`] or
/// [`Payload::json_bytes`]; `From` covers `String`, `&str` and
/// `serde_json::Value`. The event name is checked when the payload is
/// published, so the builder stays infallible.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    pub(crate) kind: PayloadKind,
    pub(crate) data: Bytes,
    pub(crate) event: Option<String>,
}

impl Payload {
    /// A plain-text payload.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            kind: PayloadKind::Text,
            data: Bytes::from(text.into()),
            event: None,
        }
    }

    /// A JSON payload serialized from any `Serialize` value.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Self {
            kind: PayloadKind::Json,
            data: Bytes::from(serde_json::to_vec(value)?),
            event: None,
        })
    }

    /// A plain-text payload from bytes that must be UTF-8 (an HTTP body,
    /// say), kept without a copy.
    pub fn text_bytes(bytes: impl Into<Bytes>) -> Result<Self, std::str::Utf8Error> {
        let bytes = bytes.into();
        std::str::from_utf8(&bytes)?;
        Ok(Self {
            kind: PayloadKind::Text,
            data: bytes,
            event: None,
        })
    }

    /// A JSON payload from bytes that claim to be JSON (an HTTP body, say).
    ///
    /// The bytes must be UTF-8 and one valid JSON text (RFC 8259), else this
    /// is an `Err`. They are kept byte for byte: every transport delivers
    /// exactly what was published (PROTOCOL.md, "Payloads").
    pub fn json_bytes(bytes: impl Into<Bytes>) -> Result<Self, serde_json::Error> {
        let bytes = bytes.into();
        validate_json(&bytes)?;
        Ok(Self {
            kind: PayloadKind::Json,
            data: bytes,
            event: None,
        })
    }

    /// Names the event this message is (SSE `event:`; envelope `"event"`).
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// JSON or text.
    pub fn kind(&self) -> PayloadKind {
        self.kind
    }

    /// The encoded body.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The event name, if one was set.
    pub fn event_name(&self) -> Option<&str> {
        self.event.as_deref()
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Payload::text(text)
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Payload::text(text)
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Payload {
            kind: PayloadKind::Json,
            // Serializing a `Value` to a Vec cannot fail.
            data: Bytes::from(value.to_string()),
            event: None,
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("kind", &self.kind)
            .field("data", &String::from_utf8_lossy(&self.data))
            .field("event", &self.event)
            .finish()
    }
}

/// Checks that `bytes` are UTF-8 and one JSON text. serde_json alone does
/// not check the UTF-8 of strings it skips, so that comes first.
fn validate_json(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| <serde_json::Error as serde::de::Error>::custom(format!("not UTF-8: {e}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map(drop)
}

/// The longest event name accepted.
pub const MAX_EVENT_NAME_LEN: usize = 128;

/// Checks an event name: non-empty, at most 128 bytes, no CR/LF/NUL (they would
/// break SSE framing), not in the reserved `comet-` namespace (a publisher
/// must not be able to forge a `comet-gap`), and neither `error` nor `open`,
/// which an `EventSource` would take for its own events.
///
/// The hub checks every event name it publishes; an engine that reads
/// messages written elsewhere (a backplane others can write to) checks them
/// with this too.
pub fn validate_event(event: &str) -> Result<(), String> {
    if event.is_empty() {
        return Err("event name is empty".into());
    }
    if event.len() > MAX_EVENT_NAME_LEN {
        return Err(format!(
            "event name is {} bytes long, the limit is {MAX_EVENT_NAME_LEN}",
            event.len()
        ));
    }
    if event.chars().any(|c| c.is_control()) {
        return Err("event name contains a control character".into());
    }
    if event.starts_with(crate::channel_name::RESERVED_PREFIX) {
        return Err("event names starting with \"comet-\" are reserved".into());
    }
    if crate::channel_name::EVENT_SOURCE_NAMES.contains(&event) {
        return Err(format!(
            "event name {event:?} is refused: EventSource clients would take it for their own {event:?} event"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bytes_are_validated_and_kept_byte_for_byte() {
        assert!(Payload::json_bytes(&b"{nope"[..]).is_err());
        assert!(Payload::json_bytes(&b""[..]).is_err());
        for kept in [
            &b"{\n  \"a\": [1,\r\n 2]\n}"[..],
            b"{ \"a\" : 1 }",
            br#"{"z":1,"a":2,"z":3}"#,
            b"12345678901234567890123",
            br#"["\u00e9\n\"", "\ud83d\ude00", 1e400]"#,
            b" true ",
        ] {
            let p = Payload::json_bytes(kept).unwrap();
            assert_eq!(&p.data[..], kept);
            assert_eq!(p.kind(), PayloadKind::Json);
        }
    }

    #[test]
    fn json_bytes_refuse_what_is_not_rfc_8259_json() {
        for bad in [
            &b"\"\xff\""[..],
            b"{\"k\":\"\xc3\x28\"}",
            b"[\"\xed\xa0\x80\"]",
            b"\"tab\there\"",
            b"\"line\nbreak\"",
            b"{\"a\":1,}",
            b"NaN",
            b"[1] [2]",
            b"'single'",
            b"\"\\x41\"",
        ] {
            assert!(
                Payload::json_bytes(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn text_bytes_must_be_utf8() {
        assert!(Payload::text_bytes(&b"caf\xc3\xa9"[..]).is_ok());
        assert!(Payload::text_bytes(&b"caf\xe9"[..]).is_err());
    }

    #[test]
    fn constructors() {
        let p = Payload::json(&serde_json::json!({"x": "a\nb"})).unwrap();
        assert_eq!(&p.data[..], br#"{"x":"a\nb"}"#);
        let p = Payload::from("hi").event("joined");
        assert_eq!(
            (p.kind(), p.event_name()),
            (PayloadKind::Text, Some("joined"))
        );
        let p = Payload::from(serde_json::json!([1]));
        assert_eq!((p.kind(), &p.data[..]), (PayloadKind::Json, &b"[1]"[..]));
    }

    #[test]
    fn event_names() {
        assert!(validate_event("joined").is_ok());
        assert!(validate_event("").is_err());
        assert!(validate_event("a\nb").is_err());
        assert!(validate_event("a\rb").is_err());
        assert!(validate_event("comet-gap").is_err());
        assert!(validate_event("error").is_err());
        assert!(validate_event("open").is_err());
        assert!(validate_event("message").is_ok());
        assert!(validate_event("Error").is_ok());
        assert!(validate_event(&"e".repeat(129)).is_err());
    }
}
