//! The wire formats a route can speak, and how a request picks one.

use super::{ErrorCode, ProtocolError};
use http::{header, HeaderMap};
use std::fmt;

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
}
