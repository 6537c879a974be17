//! Answering a subscribe request: check it, pick its transport, subscribe,
//! and hand the subscription to the transport's format. Everything a
//! transport does of its own is in its module under `transport/`.

use super::{
    callback,
    cors::PendingCors,
    request,
    route::CustomTransport,
    transport::{
        iframe::Iframe, jsonp::Jsonp, poll, poll::Poll, sse::Sse, stream::Ndjson, Delivery,
    },
    CometBody, Cors, ErrorCode, PollFormat, ProtocolError, Route, StreamFormat, SubscribeParams,
    Transport,
};
use crate::{telemetry::SubscriberGauge, ChannelName, Hub, Start, Subscription};
use bytes::Bytes;
use http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Method, Response};
use std::{borrow::Cow, future::Future, pin::Pin, time::Duration};
use tracing::Instrument;

/// The future of a comet answer.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<CometBody>> + Send + 'static>>;

/// Answers a request to a comet route, whatever the server stack.
///
/// Everything a request can get wrong is answered here as PROTOCOL.md says
/// (a JSON error with a 4xx); adapters only route requests to it and hand the
/// body to their server. Every check of the request's parts happens before
/// this returns; the future subscribes (which an engine with a backplane may
/// have to wait for) and holds long polls. `HEAD` is answered as `GET` would
/// be, without a body and without subscribing.
pub fn serve(hub: &Hub, route: &Route, request: &Parts) -> ResponseFuture {
    if let Some(preflight) = PendingCors::preflight(route.cors.as_ref(), request, Method::GET) {
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
        let response = subscribe.headers_only(route);
        return Box::pin(std::future::ready(cors.apply(response)));
    }
    let span = tracing::debug_span!(
        "comet.subscription",
        transport = &*subscribe.transport_name,
        channels = ?subscribe.names.iter().map(ChannelName::as_str).collect::<Vec<_>>(),
    );
    let hub = hub.clone();
    let holding = Holding::of(route);
    let answer = async move {
        let SubscribeRequest {
            delivery,
            transport_name,
            names,
            start,
            timeout,
        } = subscribe;
        match hub.subscribe(&names, start).await {
            Ok(subscription) => {
                tracing::debug!("subscribed");
                let gauge = SubscriberGauge::new(&transport_name);
                answer(subscription, delivery, timeout, holding, gauge).await
            }
            Err(error) => {
                let error = ProtocolError::from(error);
                tracing::debug!(%error, "refused a subscribe request");
                error.into_response()
            }
        }
    };
    Box::pin(async move { cors.apply(answer.await) }.instrument(span))
}

/// What answering a subscribed request needs of its route.
struct Holding {
    heartbeat: Duration,
    max_hold: Duration,
    max_batch: usize,
    cors_headers: usize,
}

impl Holding {
    fn of(route: &Route) -> Self {
        Self {
            heartbeat: route.heartbeat,
            max_hold: route.max_hold,
            max_batch: route.max_batch,
            cors_headers: cors_headers(route),
        }
    }
}

/// The answer to a subscribed request: a stream, or a held long poll.
async fn answer(
    subscription: Subscription,
    delivery: Delivery,
    timeout: Option<Duration>,
    route: Holding,
    gauge: SubscriberGauge,
) -> Response<CometBody> {
    match delivery {
        Delivery::Stream {
            format,
            byte_budget,
        } => {
            let headers = stream_headers(&*format, route.cors_headers);
            let span = tracing::Span::current();
            let body = CometBody::stream(
                subscription,
                format,
                route.heartbeat,
                byte_budget,
                span,
                gauge,
            );
            let mut response = Response::new(body);
            *response.headers_mut() = headers;
            response
        }
        Delivery::Poll(format) => {
            let hold = poll::hold_time(timeout, route.max_hold);
            let (items, cursor) = poll::hold(subscription, hold, route.max_batch).await;
            drop(gauge);
            tracing::debug!(items = items.len(), "answered a long poll");
            let mut response = Response::new(CometBody::full(format.answer(&items, &cursor)));
            *response.headers_mut() = poll_headers(&*format, route.cors_headers);
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
            response
        }
    }
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
fn poll_headers(format: &dyn PollFormat, cors: usize) -> HeaderMap {
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
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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
fn cors_headers(route: &Route) -> usize {
    route.cors.as_ref().map_or(0, |_| Cors::ANSWER_HEADERS)
}

/// A transport a route offers: built in, or the application's own.
enum OfferedTransport<'r> {
    Builtin(Transport),
    Custom(&'r CustomTransport),
}

impl OfferedTransport<'_> {
    /// `transport=` naming a custom transport picks it; otherwise the
    /// built-in negotiation, or the first custom transport on a route with
    /// no built-in.
    fn negotiate<'r>(
        route: &'r Route,
        request: &Parts,
        requested: Option<&str>,
    ) -> Result<OfferedTransport<'r>, ProtocolError> {
        let custom = match requested {
            Some(name) => route.custom.iter().find(|f| &*f.name == name),
            None if route.transports.is_empty() => route.custom.first(),
            None => None,
        };
        match custom {
            Some(custom) => Ok(OfferedTransport::Custom(custom)),
            None if route.transports.is_empty() => Err(ErrorCode::BadTransport.error(format!(
                "transport {:?} is not offered here; this route offers {}",
                requested.unwrap_or(""),
                route
                    .custom
                    .iter()
                    .map(|f| &*f.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            None => Transport::negotiate(&route.transports, requested, &request.headers)
                .map(OfferedTransport::Builtin),
        }
    }
}

/// Builds a built-in transport's format for one request, checking the
/// parameters it reads (the callback; for JSONP, the requesting site).
fn builtin_delivery(
    transport: Transport,
    route: &Route,
    request: &Parts,
    params: &SubscribeParams,
) -> Result<Delivery, ProtocolError> {
    let stream = |format: Box<dyn StreamFormat>| Delivery::Stream {
        format,
        byte_budget: transport.has_byte_budget().then_some(route.byte_budget),
    };
    let callback = params.callback.as_deref();
    Ok(match transport {
        Transport::Sse => stream(Box::new(Sse::new(route.retry))),
        Transport::Stream => stream(Box::new(Ndjson)),
        Transport::Iframe => stream(Box::new(Iframe::new(&callback::checked(
            callback,
            &route.callback_registry,
        )?))),
        Transport::Poll => Delivery::Poll(Box::new(Poll)),
        Transport::Jsonp => Delivery::Poll(Box::new(Jsonp::for_request(
            request,
            callback,
            &route.callback_registry,
            route.cross_site_jsonp,
            route.cors.as_ref(),
        )?)),
    })
}

/// A subscribe request that passed every check; subscribing is what is left.
struct SubscribeRequest {
    delivery: Delivery,
    /// For traces: the transport's name.
    transport_name: Cow<'static, str>,
    names: Vec<ChannelName>,
    start: Start,
    timeout: Option<Duration>,
}

impl SubscribeRequest {
    /// Checks a request: method, sizes, parameters, transport, cursor,
    /// callback, cross-site JSONP, channels, authorization. Subscribing (and
    /// its limits) comes after.
    fn check(hub: &Hub, route: &Route, request: &Parts) -> Result<Self, ProtocolError> {
        request::check(request, &[Method::GET, Method::HEAD], "GET, HEAD")?;
        let query = SubscribeParams::from_query(request.uri.query())?;
        let offered = OfferedTransport::negotiate(route, request, query.transport.as_deref())?;
        let (delivery, transport_name, mut params) = match offered {
            OfferedTransport::Custom(custom) => {
                let delivery = (custom.make)(request, &query)?;
                let params =
                    query.with_header_cursor_for(&request.headers, delivery.is_long_poll())?;
                (delivery, Cow::Owned(custom.name.to_string()), params)
            }
            OfferedTransport::Builtin(transport) => {
                let params = query.with_header_cursor(&request.headers, Some(transport))?;
                let delivery = builtin_delivery(transport, route, request, &params)?;
                (delivery, Cow::Borrowed(transport.name()), params)
            }
        };
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
        route.authorize.authorize(request, &names)?;
        let start =
            Start::from(params.since.unwrap_or(route.since)).with_cursor(params.cursor.clone());
        Ok(Self {
            delivery,
            transport_name,
            names,
            start,
            timeout: params.timeout,
        })
    }

    /// The answer to `HEAD`: the headers `GET` would get, no body, no
    /// subscription.
    fn headers_only(self, route: &Route) -> Response<CometBody> {
        let cors = cors_headers(route);
        let headers = match &self.delivery {
            Delivery::Stream { format, .. } => stream_headers(&**format, cors),
            Delivery::Poll(format) => poll_headers(&**format, cors),
        };
        let mut response = Response::new(CometBody::empty());
        *response.headers_mut() = headers;
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cursor, Item};

    /// A long-poll format of an app's own: the cursor, then one text a line.
    struct Lines;

    impl PollFormat for Lines {
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

    async fn get(hub: &Hub, route: &Route, uri: &str, etag: Option<&str>) -> Response<CometBody> {
        let mut request = http::Request::get(uri);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let parts = request.body(()).unwrap().into_parts().0;
        tokio::time::timeout(Duration::from_secs(5), serve(hub, route, &parts))
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
        let route = Route::custom_poll("lines", |_, _| Ok(Lines)).max_hold(Duration::from_secs(3));
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
}
