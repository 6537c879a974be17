//! Answering a subscribe request: check it, pick its transport, subscribe,
//! and hand the subscription to the transport's format. Everything a
//! transport does of its own is in its module under `transport/`.

use super::{
    cors::PendingCors,
    request,
    transport::{long_poll, Format},
    CometBody, Cors, ErrorCode, LongPollFormat, ProtocolError, StreamFormat, SubscribeParams,
    SubscribeRoute, Transport,
};
use crate::{telemetry::SubscriberGauge, ChannelName, Hub, Start, Subscriber, Subscription};
use bytes::Bytes;
use http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Method, Response};
use std::{future::Future, pin::Pin, time::Duration};
use tracing::Instrument;

/// The future of a comet answer.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<CometBody>> + Send + 'static>>;

impl SubscribeRoute {
    /// Answers a subscribe request to this route, whatever the server stack.
    ///
    /// Everything a request can get wrong is answered here as PROTOCOL.md says
    /// (a JSON error with a 4xx); adapters only route requests to it and hand the
    /// body to their server. Every check of the request's parts happens before
    /// this returns; the future subscribes (which an engine with a backplane may
    /// have to wait for) and holds long polls. `HEAD` is answered as `GET` would
    /// be, without a body and without subscribing.
    pub fn serve(&self, hub: &Hub, request: &Parts) -> ResponseFuture {
        let route = self;
        if let Some(preflight) =
            PendingCors::preflight(route.cors.as_ref(), request, &[Method::GET])
        {
            return Box::pin(std::future::ready(preflight));
        }
        let cors = PendingCors::for_request(route.cors.as_ref(), request);
        let subscribe = match SubscribeRequest::check(hub, route, request) {
            Ok(subscribe) => subscribe,
            Err(error) => {
                tracing::debug!(%error, "refused a subscribe request");
                return Box::pin(std::future::ready(cors.apply(error.into_response())));
            }
        };
        if request.method == Method::HEAD {
            let cors_headers = cors_headers(route);
            return Box::pin(async move {
                let response = match subscribe.authorization.await {
                    Ok(_) => headers_only(&subscribe.format, cors_headers),
                    Err(error) => error.into_response(),
                };
                cors.apply(response)
            });
        }
        let span = tracing::debug_span!(
            "comet.subscription",
            transport = subscribe.transport.name(),
            channels = ?subscribe.names.iter().map(ChannelName::as_str).collect::<Vec<_>>(),
        );
        let hub = hub.clone();
        let limits = RouteLimits::of(route);
        Box::pin(Answering::Subscribing(Box::pin(
            subscribe.answer(hub, limits, cors).instrument(span),
        )))
    }
}

/// A subscribe request's answer: subscribing, then, for a long poll,
/// holding. Each its own box, so that the subscribing future (the
/// authorization's, the engine's attach, the request's checked parts: most
/// of 1.6 KB) is freed once subscribed, and a held poll keeps only what
/// holding needs. When a publish answers a thousand held polls, each answer
/// touches that and no more (fewer cold lines), and frees no large block.
enum Answering {
    Subscribing(Pin<Box<dyn Future<Output = Subscribed> + Send>>),
    Holding(ResponseFuture),
}

/// What subscribing leads to.
enum Subscribed {
    /// An answer now: a stream, or a refusal.
    Answer(Response<CometBody>),
    /// A long poll to hold.
    Hold(ResponseFuture),
}

impl Future for Answering {
    type Output = Response<CometBody>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        loop {
            match &mut *self {
                Answering::Subscribing(subscribing) => {
                    match std::task::ready!(subscribing.as_mut().poll(cx)) {
                        Subscribed::Answer(response) => return std::task::Poll::Ready(response),
                        Subscribed::Hold(holding) => *self = Answering::Holding(holding),
                    }
                }
                Answering::Holding(holding) => return holding.as_mut().poll(cx),
            }
        }
    }
}

impl SubscribeRequest {
    /// Authorizes and subscribes: the part of a request that waits before
    /// it is answered or held. Nothing is passed on by value to a future of
    /// its own before it is boxed, as each would hold a copy of what it was
    /// given beside the caller's (1,976 bytes, not 1,480).
    async fn answer(self, hub: Hub, limits: RouteLimits, cors: PendingCors) -> Subscribed {
        let SubscribeRequest {
            format,
            transport,
            names,
            start,
            timeout,
            subscriber,
            authorization,
        } = self;
        let access = match authorization.await {
            Ok(access) => access,
            Err(error) => {
                tracing::debug!(%error, "refused a subscribe request");
                return Subscribed::Answer(cors.apply(error.into_response()));
            }
        };
        let identity = access.identity.or(subscriber.identity_ref().cloned());
        let subscriber = subscriber.identity(identity).expires_at(access.expires);
        let subscription = match hub.subscribe_names(subscriber, &names, start).await {
            Ok(subscription) => subscription,
            Err(error) => {
                let error = ProtocolError::from(error);
                tracing::debug!(%error, "refused a subscribe request");
                return Subscribed::Answer(cors.apply(error.into_response()));
            }
        };
        tracing::debug!("subscribed");
        let gauge = SubscriberGauge::new(transport.name());
        match format {
            Format::Stream {
                format,
                byte_budget,
            } => {
                let headers = stream_headers(&*format, limits.cors_headers);
                let span = tracing::Span::current();
                let body = CometBody::stream(
                    subscription,
                    format,
                    limits.heartbeat,
                    byte_budget,
                    span,
                    gauge,
                );
                let mut response = Response::new(body);
                *response.headers_mut() = headers;
                Subscribed::Answer(cors.apply(response))
            }
            Format::LongPoll(format) => {
                let held = answer_long_poll(subscription, format, timeout, limits, gauge, cors);
                Subscribed::Hold(Box::pin(held.instrument(tracing::Span::current())))
            }
        }
    }
}

/// What answering a subscribed request needs of its route.
struct RouteLimits {
    heartbeat: Duration,
    max_hold: Duration,
    max_batch: usize,
    cors_headers: usize,
}

impl RouteLimits {
    fn of(route: &SubscribeRoute) -> Self {
        Self {
            heartbeat: route.heartbeat,
            max_hold: route.max_hold,
            max_batch: route.max_batch,
            cors_headers: cors_headers(route),
        }
    }
}

/// Holds a long poll and answers it.
async fn answer_long_poll(
    subscription: Subscription,
    format: Box<dyn LongPollFormat>,
    timeout: Option<Duration>,
    limits: RouteLimits,
    gauge: SubscriberGauge,
    cors: PendingCors,
) -> Response<CometBody> {
    let hold = long_poll::hold_time(timeout, limits.max_hold);
    let (items, cursor) = long_poll::hold(subscription, hold, limits.max_batch).await;
    drop(gauge);
    let items = items.as_slice();
    tracing::debug!(items = items.len(), "answered a long poll");
    let mut response = Response::new(CometBody::full(format.answer(items, &cursor)));
    *response.headers_mut() = poll_headers(&*format, limits.cors_headers);
    // A cursor is URL-safe ASCII, always a valid header value. Built
    // at its exact size, the `Vec` becomes the value's `Bytes`
    // without a copy.
    let mut etag = Vec::with_capacity(cursor.encoded_len() + 2);
    etag.push(b'"');
    cursor.encode_into(&mut etag);
    etag.push(b'"');
    if let Ok(etag) = HeaderValue::from_maybe_shared(Bytes::from(etag)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    cors.apply(response)
}

/// The headers of a streaming answer. hyper keeps a response's header map
/// for the connection's next request, so a held stream holds it for its whole
/// life: sized to what goes in (three headers, the format's own, four more
/// with CORS), not the default six.
fn stream_headers(format: &dyn StreamFormat, cors: usize) -> HeaderMap {
    answer_headers(
        format.content_type(),
        format.headers(),
        Answer::Stream,
        cors,
    )
}

/// The headers of a long-poll answer (the `ETag` is added with the body).
fn poll_headers(format: &dyn LongPollFormat, cors: usize) -> HeaderMap {
    answer_headers(format.content_type(), format.headers(), Answer::Poll, cors)
}

#[derive(PartialEq)]
enum Answer {
    Stream,
    Poll,
}

fn answer_headers(
    content_type: HeaderValue,
    own: &[(HeaderName, HeaderValue)],
    answer: Answer,
    cors: usize,
) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(3 + own.len() + cors);
    headers.insert(header::CONTENT_TYPE, content_type);
    if answer == Answer::Stream {
        // `no-transform`: a proxy that recompresses or rewrites a body
        // holds a stream's bytes until it has enough to work on, and its
        // messages with them. A long poll's answer is whole: a transform
        // delays none of it, and `no-store` keeps it out of every cache.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-transform"),
        );
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    } else {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    for (name, value) in own {
        headers.insert(name.clone(), value.clone());
    }
    headers
}

/// How many headers the route's CORS adds to an answer, at most.
fn cors_headers(route: &SubscribeRoute) -> usize {
    route.cors.as_ref().map_or(0, |_| Cors::ANSWER_HEADERS)
}

/// A subscribe request that passed every check; subscribing is what is left.
struct SubscribeRequest {
    format: Format,
    /// For traces and the subscriber gauge: its name.
    transport: Transport,
    names: Vec<ChannelName>,
    start: Start,
    timeout: Option<Duration>,
    /// Its identity from the route's `Identify`; the authorization may give another.
    subscriber: Subscriber,
    /// The route's answer, which may take a while.
    authorization: crate::Authorization,
}

impl SubscribeRequest {
    /// Checks a request: method, sizes, parameters, transport, cursor,
    /// callback, cross-site JSONP, channels, authorization. Subscribing (and
    /// its limits) comes after.
    fn check(hub: &Hub, route: &SubscribeRoute, request: &Parts) -> Result<Self, ProtocolError> {
        request::check(request, &[Method::GET, Method::HEAD], "GET, HEAD")?;
        let query = SubscribeParams::from_query(request.uri.query())?;
        let transport = Transport::negotiate(
            &route.transports,
            query.transport.as_deref(),
            &request.headers,
        )?;
        let mut params = query.with_header_cursor(&request.headers, Some(transport))?;
        let format = transport.make(request, &params, route)?;
        let transport = transport.clone(); // an `Arc`: no copy of its name
        let requested = std::mem::take(&mut params.channels);
        let channels = route.channels.resolve(request, requested)?;
        let names = hub.channel_names(&channels).map_err(|error| match error {
            // Quote the offending name: a request may carry many.
            crate::SubscribeError::InvalidChannel(reason) => {
                let name = channels.iter().find(|c| ChannelName::new(c).is_err());
                ErrorCode::BadChannel
                    .error(format!("{reason}: {:?}", name.map_or("", String::as_str)))
            }
            other => other.into(),
        })?;
        let authorization = route.authorize.authorize(request, &names);
        let identity = route.identify.identify(request)?;
        let start =
            Start::from(params.since.unwrap_or(route.since)).with_cursor(params.cursor.clone());
        let hold = matches!(format, Format::LongPoll(_))
            .then(|| long_poll::hold_time(params.timeout, route.max_hold));
        let subscriber = Subscriber::anonymous()
            .identity(identity)
            .presence_events(params.presence)
            .grace(route.grace_for(hold));
        Ok(Self {
            format,
            transport,
            names,
            start,
            timeout: params.timeout,
            subscriber,
            authorization,
        })
    }
}

/// The answer to `HEAD`: the headers `GET` would get, no body, no
/// subscription.
fn headers_only(format: &Format, cors: usize) -> Response<CometBody> {
    let headers = match format {
        Format::Stream { format, .. } => stream_headers(&**format, cors),
        Format::LongPoll(format) => poll_headers(&**format, cors),
    };
    let mut response = Response::new(CometBody::empty());
    *response.headers_mut() = headers;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cursor, Item};

    /// A long-poll format of an app's own: the cursor, then one text a line.
    struct Lines;

    impl LongPollFormat for Lines {
        fn answer(&self, items: &[Item], cursor: &Cursor) -> Bytes {
            let texts = items.iter().filter_map(Item::message).map(|m| m.text());
            std::iter::once(cursor.encode())
                .chain(texts.map(str::to_owned))
                .collect::<Vec<_>>()
                .join("\n")
                .into()
        }

        fn content_type(&self) -> HeaderValue {
            HeaderValue::from_static("text/plain; charset=utf-8")
        }

        fn headers(&self) -> &[(HeaderName, HeaderValue)] {
            static OWN: [(HeaderName, HeaderValue); 1] = [(
                HeaderName::from_static("x-format"),
                HeaderValue::from_static("lines"),
            )];
            &OWN
        }
    }

    async fn get(
        hub: &Hub,
        route: &SubscribeRoute,
        uri: &str,
        etag: Option<&str>,
    ) -> Response<CometBody> {
        let mut request = http::Request::get(uri);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let parts = request.body(()).unwrap().into_parts().0;
        tokio::time::timeout(Duration::from_secs(5), route.serve(hub, &parts))
            .await
            .expect("answered in time")
    }

    fn text(response: Response<CometBody>) -> String {
        let body = response.into_body().try_into_bytes().ok().unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_poll_format_of_your_own_is_held_and_resumed_like_the_built_in_one() {
        let hub = Hub::new();
        let route = SubscribeRoute::new([Transport::custom_long_poll("lines", |_, _| Ok(Lines))])
            .max_hold(Duration::from_secs(3));
        // A bootstrap poll (timeout=0) answers at once with the cursor alone.
        let first = get(&hub, &route, "/c?channel=a&timeout=0", None).await;
        assert_eq!(first.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(first.headers()["x-format"], "lines");
        assert_eq!(first.headers()["cache-control"], "no-store");
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let cursor = text(first);
        assert_eq!(etag, format!("\"{cursor}\""));
        // Resuming by If-None-Match, as with the built-in long poll: what
        // was published since the cursor comes at once.
        hub.publish("a", "one").await.unwrap();
        let resumed = get(&hub, &route, "/c?channel=a&transport=lines", Some(&etag)).await;
        let etag = resumed.headers()["etag"].to_str().unwrap().to_owned();
        let body = text(resumed);
        assert_eq!(body.lines().skip(1).collect::<Vec<_>>(), ["one"]);
        // Nothing after the cursor: held until a publish.
        let held = tokio::spawn({
            let (hub, route) = (hub.clone(), route.clone());
            async move { text(get(&hub, &route, "/c?channel=a&transport=lines", Some(&etag)).await) }
        });
        hub.publish("a", "two").await.unwrap();
        let body = held.await.unwrap();
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[1..], ["two"]);
        assert_ne!(lines[0], cursor, "the cursor moved on");
    }

    /// Every one-channel poll answered with one message gets the same
    /// answer, encoded once and shared; a poll of two channels, whose
    /// cursor is its own, gets one of its own.
    #[tokio::test]
    async fn a_one_channel_answer_is_encoded_once_and_shared() {
        let hub = Hub::new();
        let route = SubscribeRoute::long_poll();
        let held = |uri: &'static str| {
            let (hub, route) = (hub.clone(), route.clone());
            tokio::spawn(async move { get(&hub, &route, uri, None).await })
        };
        let (one, other, both) = (
            held("/p?channel=a"),
            held("/p?channel=a"),
            held("/p?channel=a&channel=b"),
        );
        let subscribed = async {
            while hub.local_subscriber_count("a") < 3 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), subscribed)
            .await
            .expect("the three polls subscribed in time");
        hub.publish("a", "hello").await.unwrap();
        let mut answers = Vec::new();
        for poll in [one, other, both] {
            let response = poll.await.unwrap();
            let etag = response.headers()["etag"].clone();
            let body = response.into_body().try_into_bytes().ok().unwrap();
            answers.push((etag, body));
        }
        let (one, other, both) = (&answers[0], &answers[1], &answers[2]);
        assert_eq!(one.1.as_ptr(), other.1.as_ptr(), "one encoding, shared");
        assert_ne!(one.1.as_ptr(), both.1.as_ptr());
        for (etag, body) in &answers {
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(json["messages"][0]["data"], "hello");
            assert_eq!(
                etag.to_str().unwrap(),
                format!("\"{}\"", json["cursor"].as_str().unwrap())
            );
            assert_eq!(json["cursor"], json["messages"][0]["cursor"]);
        }
        assert_ne!(one.0, both.0, "two channels: a cursor of its own");
    }

    /// A stream joins what is ready into one frame, but a big message goes
    /// out as it is: every subscriber's frame is the one shared encoding, not
    /// a copy each (a stream of two channels writes its id apart, first).
    #[tokio::test]
    async fn a_big_message_is_sent_shared_not_copied_into_a_joined_frame() {
        use http_body_util::BodyExt;
        let hub = Hub::new();
        let route = SubscribeRoute::sse();
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let response = get(&hub, &route, "/sse?channel=a&channel=b", None).await;
            bodies.push(response.into_body());
        }
        let big = "x".repeat(4096);
        hub.publish("a", big.as_str()).await.unwrap();
        let mut frames = Vec::new();
        for body in &mut bodies {
            let frame = loop {
                let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                    .await
                    .expect("a frame in time")
                    .unwrap()
                    .unwrap()
                    .into_data()
                    .unwrap();
                if frame.len() >= 4096 {
                    break frame;
                }
            };
            frames.push(frame);
        }
        assert!(
            std::str::from_utf8(&frames[0]).unwrap().contains(&big),
            "the message's frame"
        );
        assert_eq!(
            frames[0].as_ptr(),
            frames[1].as_ptr(),
            "one encoding, shared"
        );
    }
}
