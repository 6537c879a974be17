//! The built-in transports, one module each, and how a request picks one.
//!
//! Each transport is an implementation of the traits a format of your own
//! implements ([`StreamFormat`], [`PollFormat`]): read `sse.rs`, `stream.rs`,
//! `iframe.rs`, `poll.rs` or `jsonp.rs` to see one whole, framing,
//! parameters, defaults and tests.

pub(crate) mod iframe;
pub(crate) mod jsonp;
pub(crate) mod poll;
pub(crate) mod sse;
pub(crate) mod stream;

use super::{ErrorCode, PollFormat, ProtocolError, StreamFormat};
use http::{header, HeaderMap};
use std::fmt;

/// How one request is answered: a format on a stream that stays open, or
/// one long-poll answer.
pub(crate) enum Delivery {
    /// A streaming format; the stream ends after `byte_budget` bytes, if set.
    Stream {
        format: Box<dyn StreamFormat>,
        byte_budget: Option<usize>,
    },
    /// A long-poll format.
    Poll(Box<dyn PollFormat>),
}

impl Delivery {
    /// True for long polls (they read `If-None-Match` as a cursor).
    pub(crate) fn is_long_poll(&self) -> bool {
        matches!(self, Delivery::Poll(_))
    }
}

/// A Comet technique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Server-Sent Events (`text/event-stream`): one response, many events.
    Sse,
    /// Newline-delimited JSON envelopes (`application/x-ndjson`), for
    /// `fetch` streaming.
    Stream,
    /// The hidden-iframe "forever frame" (`text/html`): one `<script>` call
    /// per item, for browsers with nothing better.
    Iframe,
    /// Long polling (`application/json`): held until something arrives or
    /// the timeout passes, then re-issued with the cursor.
    Poll,
    /// Long polling through a `<script>` tag (`application/javascript`).
    Jsonp,
}

impl Transport {
    /// The name used in `transport=`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Stream => "stream",
            Transport::Iframe => "iframe",
            Transport::Poll => "poll",
            Transport::Jsonp => "jsonp",
        }
    }

    /// True for transports that call a JavaScript function (`callback=`).
    pub fn needs_callback(self) -> bool {
        matches!(self, Transport::Iframe | Transport::Jsonp)
    }

    /// True for streaming transports a browser may buffer whole, which
    /// therefore end after the route's byte budget.
    pub fn has_byte_budget(self) -> bool {
        matches!(self, Transport::Stream | Transport::Iframe)
    }

    /// True for transports that hold one request per batch (they read
    /// `If-None-Match` as a cursor).
    pub fn is_long_poll(self) -> bool {
        matches!(self, Transport::Poll | Transport::Jsonp)
    }

    /// The Accept media type that selects this transport, if any.
    fn media_type(self) -> Option<&'static str> {
        match self {
            Transport::Sse => Some("text/event-stream"),
            Transport::Stream => Some("application/x-ndjson"),
            Transport::Iframe | Transport::Poll | Transport::Jsonp => None,
        }
    }

    /// Picks the transport for a request on a route offering `offered`
    /// (the first is the default): `transport=` if given, else by `Accept`.
    pub fn negotiate(
        offered: &[Transport],
        requested: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Transport, ProtocolError> {
        if let Some(name) = requested {
            let transport = Transport::ALL
                .into_iter()
                .find(|t| t.name() == name)
                .ok_or_else(|| {
                    ErrorCode::BadTransport.error(format!(
                        "unknown transport {name:?}; known are sse, stream, iframe, poll, jsonp"
                    ))
                })?;
            return match transport {
                t if offered.contains(&t) => Ok(t),
                _ => Err(ErrorCode::BadTransport.error(format!(
                    "transport {name:?} is not offered here; this route offers {}",
                    Names(offered)
                ))),
            };
        }
        let accept = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let accepted = |media: &str| {
            accept.split(',').any(|item| {
                item.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case(media)
            })
        };
        Ok(offered
            .iter()
            .copied()
            .find(|t| t.media_type().is_some_and(accepted))
            .unwrap_or(offered[0]))
    }
}

impl Transport {
    /// Every transport PROTOCOL.md defines.
    pub const ALL: [Transport; 5] = [
        Transport::Sse,
        Transport::Stream,
        Transport::Iframe,
        Transport::Poll,
        Transport::Jsonp,
    ];
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

struct Names<'a>(&'a [Transport]);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t.name())?;
        }
        Ok(())
    }
}

/// Test helpers shared by the transports' tests.
#[cfg(test)]
pub(crate) async fn test_item(payload: crate::Payload) -> crate::Item {
    use tokio_stream::StreamExt;
    let hub = crate::Hub::new();
    let mut sub = hub.subscribe(["chat"], crate::Start::head()).await.unwrap();
    hub.publish("chat", payload).await.unwrap();
    sub.next().await.unwrap()
}

/// What `format` writes for `item`, as text.
#[cfg(test)]
pub(crate) fn test_frame(format: &dyn StreamFormat, item: &crate::Item) -> String {
    let mut out = super::Chunks::default();
    format.item(item, &mut out);
    String::from_utf8(out.iter().flat_map(|b| b.to_vec()).collect()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn negotiation() {
        let both = [Transport::Poll, Transport::Sse];
        let none = HeaderMap::new();
        assert_eq!(
            Transport::negotiate(&both, None, &none),
            Ok(Transport::Poll)
        );
        assert_eq!(
            Transport::negotiate(&both, None, &accept("text/html, Text/Event-Stream;q=0.9")),
            Ok(Transport::Sse)
        );
        assert_eq!(
            Transport::negotiate(&both, Some("sse"), &none),
            Ok(Transport::Sse)
        );
        let err = Transport::negotiate(&[Transport::Sse], Some("poll"), &none).unwrap_err();
        assert_eq!(err.code(), "bad_transport");
        assert!(err.message().contains("offers sse"), "{err}");
        let err = Transport::negotiate(&both, Some("carrier-pigeon"), &none).unwrap_err();
        assert!(err.message().contains("unknown transport"), "{err}");
    }

    fn chunks(format: &dyn StreamFormat, item: &crate::Item) -> Vec<bytes::Bytes> {
        let mut out = crate::Chunks::default();
        format.item(item, &mut out);
        out.iter().cloned().collect()
    }

    #[tokio::test]
    async fn each_wire_format_encodes_a_message_once_for_every_subscriber() {
        use crate::envelope::{self, Json};
        use crate::{Hub, Start};
        use bytes::BytesMut;
        use tokio_stream::StreamExt;

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

        let sse = sse::Sse::new(std::time::Duration::ZERO);
        // `retry:` rides on the first event only: send it now.
        sse.item(&a, &mut crate::Chunks::default());
        for format in [&sse as &dyn StreamFormat, &stream::Ndjson] {
            // One channel: the whole frame, cursor included, is the same bytes.
            let (fa, fb) = (chunks(format, &a), chunks(format, &b));
            assert_eq!(fa.len(), 1);
            assert_eq!(fa[0].as_ptr(), fb[0].as_ptr(), "one frame for all");
        }
        // Several channels: the message's part is shared, the cursor is not.
        let formats: [(&dyn StreamFormat, usize); 3] = [
            (&sse, 1),
            (&stream::Ndjson, 0),
            (&iframe::Iframe::new("cb"), 1),
        ];
        for (format, shared) in formats {
            let (fc, fd) = (chunks(format, &c), chunks(format, &d));
            assert_eq!(
                fc[shared].as_ptr(),
                fd[shared].as_ptr(),
                "one encoding, shared"
            );
            assert_ne!(fc, fd, "each with its own cursor");
        }
        // The forever frame (a callback per request) shares its envelope prefix too.
        let (fa, fc) = (
            chunks(&iframe::Iframe::new("cb"), &a),
            chunks(&iframe::Iframe::new("other"), &c),
        );
        assert_eq!(fa[1].as_ptr(), fc[1].as_ptr());
        // The poll body copies the same cached prefix.
        let (mut pa, mut pc) = (BytesMut::new(), BytesMut::new());
        envelope::write(&mut pa, &a, Json::Plain);
        envelope::write(&mut pc, &c, Json::Plain);
        let prefix = a
            .message()
            .unwrap()
            .encoded(&crate::envelope::ENVELOPE_PREFIX, |_| {
                unreachable!("cached")
            });
        assert!(pa.starts_with(&prefix) && pc.starts_with(&prefix));
    }
}
