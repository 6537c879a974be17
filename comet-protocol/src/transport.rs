//! Transports: the ways a route answers subscribe requests, built in or an
//! application's own, all of one shape: a [`Transport`] has a name
//! (`transport=`), maybe a media type that picks it by `Accept`, and makes
//! its format ([`StreamFormat`] or [`LongPollFormat`]) for each request.
//!
//! Each built-in transport is one module, whole (framing, parameters,
//! defaults, tests): [`sse`], [`ndjson`], [`iframe`], [`long_poll`] (which
//! also holds long polls for every long-poll format) and [`jsonp`].

pub mod iframe;
pub mod jsonp;
pub mod long_poll;
pub mod ndjson;
pub mod sse;

use super::{
    ErrorCode, LongPollFormat, ProtocolError, StreamFormat, SubscribeParams, SubscribeRoute,
};
use http::{header, request::Parts, HeaderMap};
use std::{borrow::Cow, fmt, sync::Arc};

/// A format made for one request: a stream that stays open, or the answer of
/// one long poll.
pub(crate) enum Format {
    /// A streaming format; the stream ends after `byte_budget` bytes, if set.
    Stream {
        format: Box<dyn StreamFormat>,
        byte_budget: Option<usize>,
    },
    /// A long-poll format.
    LongPoll(Box<dyn LongPollFormat>),
}

/// How a transport makes its format for one request on a route.
pub(crate) trait MakeFormat:
    Fn(&Parts, &SubscribeParams, &SubscribeRoute) -> Result<Format, ProtocolError>
    + Send
    + Sync
    + 'static
{
}

impl<F> MakeFormat for F where
    F: Fn(&Parts, &SubscribeParams, &SubscribeRoute) -> Result<Format, ProtocolError>
        + Send
        + Sync
        + 'static
{
}

/// Makes a transport's format for one request on a route.
type Make = dyn Fn(&Parts, &SubscribeParams, &SubscribeRoute) -> Result<Format, ProtocolError>
    + Send
    + Sync;

/// One way a route answers subscribe requests: a name (`transport=`), the
/// media type that picks it by `Accept` (if any), and how it makes its
/// format for each request. Cheap to clone; two transports are the same when
/// their names are.
///
/// The built-in ones: [`sse`](Self::sse), [`ndjson`](Self::ndjson),
/// [`iframe`](Self::iframe), [`long_poll`](Self::long_poll) and
/// [`jsonp`](Self::jsonp). An application's own:
/// [`custom_stream`](Self::custom_stream) and [`custom_long_poll`](Self::custom_long_poll).
///
/// ```
/// use comet_push::{protocol::{Chunks, StreamFormat, Transport}, Cursor, Message, SubscribeRoute};
///
/// /// `channel<TAB>text` lines, for `curl` users.
/// struct Lines;
/// impl StreamFormat for Lines {
///     fn message(&self, m: &Message, _: &Cursor, out: &mut Chunks) {
///         out.push(format!("{}\t{}\n", m.channel(), m.text().replace('\n', " ")));
///     }
/// }
///
/// let route = SubscribeRoute::new([
///     Transport::sse(),
///     Transport::long_poll(),
///     Transport::custom_stream("lines", |_request, _params| Ok(Lines)),
/// ]);
/// ```
#[derive(Clone)]
pub struct Transport(Arc<Offer>);

struct Offer {
    name: Cow<'static, str>,
    media_type: Option<Cow<'static, str>>,
    long_poll: bool,
    make: Arc<Make>,
}

/// The names of the built-in transports, which an application's own may not
/// take.
const BUILT_IN: [&str; 5] = ["sse", "stream", "iframe", "poll", "jsonp"];

impl Transport {
    /// A built-in transport: `name` is one of [`BUILT_IN`].
    pub(crate) fn built_in(
        name: &'static str,
        media_type: Option<&'static str>,
        long_poll: bool,
        make: impl MakeFormat,
    ) -> Self {
        Self::offer(
            Cow::Borrowed(name),
            media_type.map(Cow::Borrowed),
            long_poll,
            Arc::new(make),
        )
    }

    fn offer(
        name: Cow<'static, str>,
        media_type: Option<Cow<'static, str>>,
        long_poll: bool,
        make: Arc<Make>,
    ) -> Self {
        Self(Arc::new(Offer {
            name,
            media_type,
            long_poll,
            make,
        }))
    }

    /// Server-Sent Events (`text/event-stream`, `transport=sse`): one
    /// response, many events. See [its module](self::sse).
    pub fn sse() -> Self {
        sse::transport()
    }

    /// Newline-delimited JSON envelopes (`application/x-ndjson`,
    /// `transport=stream`), for `fetch` streaming. See [its module](self::ndjson).
    pub fn ndjson() -> Self {
        ndjson::transport()
    }

    /// The hidden-iframe "forever frame" (`text/html`, `transport=iframe`):
    /// one `<script>` call per item, for browsers with nothing better. See
    /// [its module](self::iframe).
    pub fn iframe() -> Self {
        iframe::transport()
    }

    /// Long polling (`application/json`, `transport=poll`): held until
    /// something arrives or the timeout passes, then re-issued with the
    /// cursor. See [its module](self::long_poll).
    pub fn long_poll() -> Self {
        long_poll::transport()
    }

    /// Long polling through a `<script>` tag (`application/javascript`,
    /// `transport=jsonp`). See [its module](self::jsonp).
    pub fn jsonp() -> Self {
        jsonp::transport()
    }

    /// Every built-in transport, SSE first.
    pub fn all() -> [Self; 5] {
        [
            Self::sse(),
            Self::ndjson(),
            Self::iframe(),
            Self::long_poll(),
            Self::jsonp(),
        ]
    }

    /// A streaming transport of your own, chosen by `transport=<name>` (or
    /// by default when it is the route's first). `make` builds its format
    /// for each request, so it can read the request's parameters (the
    /// cursor from `Last-Event-ID` or `If-None-Match` included, already
    /// checked) or refuse it.
    ///
    /// # Panics
    ///
    /// If `name` is a built-in transport's.
    pub fn custom_stream<F, S>(name: &str, make: F) -> Self
    where
        F: Fn(&Parts, &SubscribeParams) -> Result<S, ProtocolError> + Send + Sync + 'static,
        S: StreamFormat,
    {
        Self::own(name, false, move |request, params, _route| {
            make(request, params).map(|format| Format::Stream {
                format: Box::new(format),
                byte_budget: None,
            })
        })
    }

    /// A long-poll transport of your own, chosen by `transport=<name>` (or
    /// by default when it is the route's first). Requests are held, batched
    /// and resumed as for the built-in long poll (`timeout`, `If-None-Match`,
    /// [`SubscribeRoute::max_hold`], [`SubscribeRoute::max_batch`]); the format writes the
    /// answer's body.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use comet_push::{protocol::{LongPollFormat, Transport}, Cursor, Item, SubscribeRoute};
    /// use http::HeaderValue;
    ///
    /// /// The cursor, then one message text per line.
    /// struct Lines;
    /// impl LongPollFormat for Lines {
    ///     fn answer(&self, items: &[Item], cursor: &Cursor) -> Bytes {
    ///         let texts = items.iter().filter_map(Item::message).map(|m| m.text());
    ///         std::iter::once(cursor.encode()).chain(texts.map(str::to_owned))
    ///             .collect::<Vec<_>>().join("\n").into()
    ///     }
    ///     fn content_type(&self) -> HeaderValue {
    ///         HeaderValue::from_static("text/plain; charset=utf-8")
    ///     }
    /// }
    ///
    /// let route = SubscribeRoute::new([Transport::custom_long_poll("lines", |_request, _params| Ok(Lines))]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `name` is a built-in transport's.
    pub fn custom_long_poll<F, P>(name: &str, make: F) -> Self
    where
        F: Fn(&Parts, &SubscribeParams) -> Result<P, ProtocolError> + Send + Sync + 'static,
        P: LongPollFormat,
    {
        Self::own(name, true, move |request, params, _route| {
            make(request, params).map(|format| Format::LongPoll(Box::new(format)))
        })
    }

    fn own(name: &str, long_poll: bool, make: impl MakeFormat) -> Self {
        assert!(
            !BUILT_IN.contains(&name),
            "{name:?} is a built-in transport"
        );
        Self::offer(Cow::Owned(name.to_owned()), None, long_poll, Arc::new(make))
    }

    /// The same transport, also picked by requests that `Accept`
    /// `media_type` (and name no transport).
    pub fn media_type(self, media_type: &str) -> Self {
        Self::offer(
            self.0.name.clone(),
            Some(Cow::Owned(media_type.to_owned())),
            self.0.long_poll,
            self.0.make.clone(),
        )
    }

    /// The name requests give in `transport=`.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// True for transports that answer once per request, held until
    /// something arrives (they read `If-None-Match` as a cursor).
    pub fn is_long_poll(&self) -> bool {
        self.0.long_poll
    }

    /// Makes this transport's format for one request on `route`.
    pub(crate) fn make(
        &self,
        request: &Parts,
        params: &SubscribeParams,
        route: &SubscribeRoute,
    ) -> Result<Format, ProtocolError> {
        (self.0.make)(request, params, route)
    }

    /// Picks the transport for a request on a route offering `offered`
    /// (the first is the default): `transport=` if given, else by `Accept`.
    pub fn negotiate<'a>(
        offered: &'a [Transport],
        requested: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<&'a Transport, ProtocolError> {
        if let Some(name) = requested {
            return offered.iter().find(|t| t.name() == name).ok_or_else(|| {
                let why = if BUILT_IN.contains(&name) {
                    format!("transport {name:?} is not offered here")
                } else {
                    format!("unknown transport {name:?}")
                };
                ErrorCode::BadTransport
                    .error(format!("{why}; this route offers {}", Names(offered)))
            });
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
            .find(|t| t.0.media_type.as_deref().is_some_and(accepted))
            .unwrap_or(&offered[0]))
    }
}

impl PartialEq for Transport {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Transport {}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Transport").field(&self.name()).finish()
    }
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
        let both = [Transport::long_poll(), Transport::sse()];
        let none = HeaderMap::new();
        let name = |t: Result<&Transport, ProtocolError>| t.map(|t| t.name().to_owned());
        assert_eq!(
            name(Transport::negotiate(&both, None, &none)),
            Ok("poll".into())
        );
        assert_eq!(
            name(Transport::negotiate(
                &both,
                None,
                &accept("text/html, Text/Event-Stream;q=0.9")
            )),
            Ok("sse".into())
        );
        assert_eq!(
            name(Transport::negotiate(&both, Some("sse"), &none)),
            Ok("sse".into())
        );
        let err = Transport::negotiate(&[Transport::sse()], Some("poll"), &none).unwrap_err();
        assert_eq!(err.code(), "bad_transport");
        assert!(err.message().contains("offers sse"), "{err}");
        let err = Transport::negotiate(&both, Some("carrier-pigeon"), &none).unwrap_err();
        assert!(err.message().contains("unknown transport"), "{err}");
        // An application's own is picked by name, and by its media type.
        let own = [
            Transport::sse(),
            Transport::custom_stream("lines", |_, _| Ok(crate::transport::ndjson::Ndjson))
                .media_type("text/x-lines"),
        ];
        assert_eq!(
            name(Transport::negotiate(&own, Some("lines"), &none)),
            Ok("lines".into())
        );
        assert_eq!(
            name(Transport::negotiate(&own, None, &accept("text/x-lines"))),
            Ok("lines".into())
        );
    }

    #[test]
    #[should_panic(expected = "built-in")]
    fn an_own_transport_may_not_take_a_built_in_name() {
        let _ = Transport::custom_stream("sse", |_, _| Ok(crate::transport::ndjson::Ndjson));
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
        for format in [&sse as &dyn StreamFormat, &ndjson::Ndjson] {
            // One channel: the whole frame, cursor included, is the same bytes.
            let (fa, fb) = (chunks(format, &a), chunks(format, &b));
            assert_eq!(fa.len(), 1);
            assert_eq!(fa[0].as_ptr(), fb[0].as_ptr(), "one frame for all");
        }
        // Several channels: the message's part is shared, the cursor is not.
        let formats: [(&dyn StreamFormat, usize); 3] = [
            (&sse, 1),
            (&ndjson::Ndjson, 0),
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
