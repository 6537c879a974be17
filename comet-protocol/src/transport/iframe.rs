//! The hidden-iframe "forever frame" (`text/html`): a page that calls
//! `parent.<callback>(envelope)` once per item, for browsers with nothing
//! better. The envelopes are script-safe, and only pages of the push host's
//! own origin may frame it.

use crate::{
    callback,
    envelope::{self, Json},
    transport::{Format, Transport},
    Chunks, Cursor, Message, StreamFormat,
};
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue};

/// The forever frame: its callback (`callback=`) must name a function in
/// the route's registry. Browsers keep the page whole, so it ends after the
/// route's byte budget.
pub(crate) fn transport() -> Transport {
    Transport::built_in("iframe", None, false, |_request, params, route| {
        let callback = callback::checked(params.callback.as_deref(), &route.callback_registry)?;
        Ok(Format::Stream {
            format: Box::new(Iframe::new(&callback)),
            byte_budget: Some(route.byte_budget),
        })
    })
}

/// The forever frame.
pub(crate) struct Iframe {
    /// `<script>parent.<callback>(`
    call: Bytes,
}

/// Browsers render a streamed page only after its first kilobyte or so.
const PADDING: usize = 1024;

/// Only pages of the push host's own origin may frame it: a page of another
/// could otherwise have it call into a page it frames too.
static FRAME_HEADERS: [(HeaderName, HeaderValue); 2] = [
    (
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'self'"),
    ),
    (
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    ),
];

impl Iframe {
    /// `callback` must have passed [`callback::validate`](crate::callback::validate).
    pub(crate) fn new(callback: &str) -> Self {
        Self {
            call: Bytes::from(format!("<script>parent.{callback}(")),
        }
    }

    fn call(&self, envelope: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(self.call.len() + envelope.len() + 12);
        out.put_slice(&self.call);
        out.put_slice(envelope);
        out.put_slice(b");</script>\n");
        out.freeze()
    }
}

impl StreamFormat for Iframe {
    fn message(&self, message: &Message, cursor: &Cursor, out: &mut Chunks) {
        out.push(self.call.clone());
        out.push(envelope::prefix(message, Json::ScriptSafe));
        out.push(envelope::cursor_tail(cursor, b");</script>\n"));
    }

    // Every item is a call, never bare text: the page is HTML, and a user
    // id or `info` (presence) is anyone's to choose, so script-safe JSON.
    fn envelope(&self, envelope: Bytes, out: &mut Chunks) {
        out.push(self.call(&envelope));
    }

    fn script_safe(&self) -> bool {
        true
    }

    fn preamble(&self) -> Option<Bytes> {
        let mut out = BytesMut::with_capacity(PADDING + 128);
        out.put_slice(b"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>comet</title></head><body>\n<!--");
        out.put_bytes(b' ', PADDING);
        out.put_slice(b"-->\n");
        // A heartbeat at once tells the parent page that the frame is live:
        // an iframe gives no other sign until its document ends.
        out.put_slice(&self.call(envelope::HEARTBEAT.as_bytes()));
        Some(out.freeze())
    }

    fn heartbeat(&self) -> Option<Bytes> {
        Some(self.call(envelope::HEARTBEAT.as_bytes()))
    }

    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("text/html; charset=utf-8")
    }

    fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &FRAME_HEADERS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{test_frame as frame, test_item as item};
    use crate::Payload;

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

    #[test]
    fn preamble_is_over_a_kilobyte() {
        assert!(Iframe::new("cb").preamble().unwrap().len() > 1024);
    }
}
