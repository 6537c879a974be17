//! Answering a subscribe request: the whole protocol, on `http` types.

use super::{
    cors::check_jsonp_site,
    encode::{self, Json},
    params::check_request_size,
    CometBody, Cors, ErrorCode, ProtocolError, Route, StreamFormat, SubscribeParams, Transport,
};
use crate::{ChannelName, Hub, Start, Subscription};
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, request::Parts, HeaderMap, HeaderValue, Method, Response};
use std::{future::Future, pin::Pin, time::Duration};
use tokio_stream::StreamExt;
use tracing::Instrument;

/// The future of a comet answer.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<CometBody>> + Send + 'static>>;

/// Answers a request to a comet route, whatever the server stack.
///
/// Everything a request can get wrong is answered here as PROTOCOL.md says
/// (a JSON error with a 4xx); adapters only route requests to it and hand the
/// body to their server. The work that needs the request's head happens before
/// this returns; the future subscribes (which an engine with a backplane may
/// have to wait for) and holds long polls. `HEAD` is answered as `GET` would
/// be, without a body and without subscribing.
pub fn serve(hub: &Hub, route: &Route, request: &Parts) -> ResponseFuture {
    if request.method == Method::OPTIONS {
        if let Some(cors) = &route.cors {
            return Box::pin(std::future::ready(cors.preflight(request, Method::GET)));
        }
    }
    let origin = request.headers.get(header::ORIGIN).cloned();
    let cors = route.cors.clone();
    let decorate = move |mut response: Response<CometBody>| {
        if let Some(cors) = &cors {
            cors.decorate(origin.as_ref(), response.headers_mut());
        }
        response
    };
    let refuse = |error: ProtocolError| -> ResponseFuture {
        tracing::debug!(%error, "refused a subscribe request");
        Box::pin(std::future::ready(decorate(error.into_response())))
    };
    let checked = match check(hub, route, request) {
        Ok(checked) => checked,
        Err(error) => return refuse(error),
    };
    if request.method == Method::HEAD {
        return Box::pin(std::future::ready(decorate(checked.head(route))));
    }
    let Checked {
        transport,
        names,
        start,
        params,
    } = checked;
    let span = tracing::debug_span!(
        "comet.subscription",
        transport = match &transport {
            Chosen::Builtin(t) => t.name(),
            Chosen::Custom(_) => params.transport.as_deref().unwrap_or("custom"),
        },
        channels = ?names.iter().map(ChannelName::as_str).collect::<Vec<_>>(),
    );
    let hub = hub.clone();
    let holding = Holding::of(route);
    let answer = async move {
        match hub.subscribe_names(&names, start).await {
            Ok(subscription) => {
                tracing::debug!("subscribed");
                answer(
                    subscription,
                    transport,
                    params,
                    holding,
                    tracing::Span::current(),
                )
                .await
            }
            Err(error) => {
                let error = ProtocolError::from(error);
                tracing::debug!(%error, "refused a subscribe request");
                error.into_response()
            }
        }
    };
    Box::pin(async move { decorate(answer.await) }.instrument(span))
}

/// What answering a subscribed request needs of its route.
struct Holding {
    heartbeat: Duration,
    max_hold: Duration,
    max_batch: usize,
    retry: Duration,
    byte_budget: usize,
    cors_headers: usize,
}

impl Holding {
    fn of(route: &Route) -> Self {
        Self {
            heartbeat: route.heartbeat,
            max_hold: route.max_hold,
            max_batch: route.max_batch,
            retry: route.retry,
            byte_budget: route.byte_budget,
            cors_headers: cors_headers(route),
        }
    }
}

/// The answer to a subscribed request: a stream, or a held long poll.
async fn answer(
    subscription: Subscription,
    transport: Chosen,
    params: SubscribeParams,
    route: Holding,
    span: tracing::Span,
) -> Response<CometBody> {
    let framed = matches!(transport, Chosen::Builtin(Transport::Iframe));
    let (format, budget): (Box<dyn StreamFormat>, _) = match transport {
        Chosen::Custom(format) => (format, None),
        Chosen::Builtin(transport) => {
            let callback = params.callback.unwrap_or_default();
            let budget = transport.has_byte_budget().then_some(route.byte_budget);
            match transport {
                Transport::Sse => (Box::new(encode::Sse::new(route.retry.as_millis())), budget),
                Transport::Stream => (Box::new(encode::Ndjson), budget),
                Transport::Iframe => (Box::new(encode::Iframe::new(&callback)), budget),
                Transport::Poll | Transport::Jsonp => {
                    let hold = params.timeout.unwrap_or(route.max_hold).min(route.max_hold);
                    let jsonp = (transport == Transport::Jsonp).then_some(callback);
                    return long_poll(
                        subscription,
                        hold,
                        route.max_batch,
                        jsonp,
                        route.cors_headers,
                    )
                    .await;
                }
            }
        }
    };
    let content_type = format.content_type();
    let body = CometBody::stream(subscription, format, route.heartbeat, budget, span);
    let mut response = Response::new(body);
    *response.headers_mut() = stream_headers(content_type, framed, route.cors_headers);
    response
}

/// The headers of a streaming answer. hyper keeps a response's header map
/// for the connection's next request, so a held stream holds it for its whole
/// life: sized to what goes in (three headers, two more for the forever
/// frame, four more with CORS), not the default six.
fn stream_headers(content_type: HeaderValue, framed: bool, more: usize) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(3 + 2 * usize::from(framed) + more);
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if framed {
        // Only pages of the push host's own origin may frame it: a page of
        // another could otherwise have it call into a page it frames too.
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'self'"),
        );
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
    }
    headers
}

/// The headers of a long-poll answer (the `ETag` is added with the body).
fn poll_headers(jsonp: bool, more: usize) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(3 + usize::from(jsonp) + more);
    let content_type = if jsonp {
        "application/javascript; charset=utf-8"
    } else {
        "application/json"
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if jsonp {
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    headers
}

/// How many headers the route's CORS adds to an answer, at most.
fn cors_headers(route: &Route) -> usize {
    route.cors.as_ref().map_or(0, |_| Cors::ANSWER_HEADERS)
}

/// The transport a request gets.
enum Chosen {
    Builtin(Transport),
    /// A custom format, already built for this request.
    Custom(Box<dyn StreamFormat>),
}

/// `transport=` naming a custom format picks it; otherwise the built-in
/// negotiation, or the first custom format on a route with no built-in.
fn choose(
    route: &Route,
    request: &Parts,
    params: &SubscribeParams,
) -> Result<Chosen, ProtocolError> {
    let requested = params.transport.as_deref();
    let custom = match requested {
        Some(name) => route.formats.iter().find(|f| &*f.name == name),
        None if route.transports.is_empty() => route.formats.first(),
        None => None,
    };
    match custom {
        Some(format) => Ok(Chosen::Custom((format.make)(request, params)?)),
        None if route.transports.is_empty() => Err(ErrorCode::BadTransport.error(format!(
            "transport {:?} is not offered here; this route offers {}",
            requested.unwrap_or(""),
            route
                .formats
                .iter()
                .map(|f| &*f.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => Transport::negotiate(&route.transports, requested, &request.headers)
            .map(Chosen::Builtin),
    }
}

/// A request that passed every check; subscribing is what is left.
struct Checked {
    transport: Chosen,
    names: Vec<ChannelName>,
    start: Start,
    params: SubscribeParams,
}

impl Checked {
    /// The answer to `HEAD`: the headers `GET` would get, no body, no
    /// subscription.
    fn head(self, route: &Route) -> Response<CometBody> {
        let more = cors_headers(route);
        let headers = match &self.transport {
            Chosen::Builtin(t) if t.is_long_poll() => poll_headers(*t == Transport::Jsonp, more),
            Chosen::Builtin(Transport::Iframe) => {
                stream_headers(encode::Iframe::CONTENT_TYPE, true, more)
            }
            Chosen::Builtin(Transport::Sse) => {
                stream_headers(encode::Sse::new(0).content_type(), false, more)
            }
            Chosen::Builtin(_) => stream_headers(encode::Ndjson.content_type(), false, more),
            Chosen::Custom(format) => stream_headers(format.content_type(), false, more),
        };
        let mut response = Response::new(CometBody::empty());
        *response.headers_mut() = headers;
        response
    }
}

/// Checks a request: method, sizes, parameters, transport, cursor, callback,
/// cross-site JSONP, channels, authorization. Subscribing (and its limits)
/// comes after.
fn check(hub: &Hub, route: &Route, request: &Parts) -> Result<Checked, ProtocolError> {
    if request.method != Method::GET && request.method != Method::HEAD {
        return Err(ProtocolError::method_not_allowed(
            &request.method,
            "GET, HEAD",
        ));
    }
    check_request_size(request)?;
    let query = SubscribeParams::from_query(request.uri.query())?;
    let transport = choose(route, request, &query)?;
    let builtin = match &transport {
        Chosen::Builtin(t) => Some(*t),
        Chosen::Custom(_) => None,
    };
    let mut params = query.with_header_cursor(&request.headers, builtin)?;
    if builtin.is_some_and(Transport::needs_callback) {
        encode::validate_callback(
            params.callback.as_deref().unwrap_or(""),
            &route.callback_registry,
        )?;
    }
    if builtin == Some(Transport::Jsonp) && !route.cross_site_jsonp {
        check_jsonp_site(request, route.cors.as_ref())?;
    }
    let requested = std::mem::take(&mut params.channels);
    let channels = route.channels.resolve(request, requested)?;
    let names = hub.channel_names(&channels).map_err(|error| match error {
        // Quote the offending name: a request may carry many.
        crate::SubscribeError::InvalidChannel(reason) => {
            let name = channels.iter().find(|c| ChannelName::new(c).is_err());
            ErrorCode::BadChannel.error(format!("{reason}: {:?}", name.map_or("", String::as_str)))
        }
        other => other.into(),
    })?;
    route.authorize.authorize(request, &names)?;
    let start = Start::from(params.since.unwrap_or(route.since)).with_cursor(params.cursor.clone());
    Ok(Checked {
        transport,
        names,
        start,
        params,
    })
}

/// Answers at once when anything is after the cursor, else holds until
/// something is or `hold` passes (or the hub shuts down). Dropping the future
/// (the client left) drops the subscription at once. With a callback, answers
/// as JSONP. `more_headers` is how many headers the caller adds (CORS).
async fn long_poll(
    mut subscription: Subscription,
    hold: Duration,
    max_batch: usize,
    jsonp: Option<String>,
    more_headers: usize,
) -> Response<CometBody> {
    let mut items = Vec::new();
    if let Some(item) = subscription.try_next() {
        items.push(item);
    } else if !hold.is_zero() {
        if let Ok(Some(item)) = tokio::time::timeout(hold, subscription.next()).await {
            items.push(item);
        }
    }
    while items.len() < max_batch {
        match subscription.try_next() {
            Some(item) => items.push(item),
            None => break,
        }
    }
    let cursor = items
        .last()
        .map_or_else(|| subscription.cursor(), |item| item.cursor().clone());
    drop(subscription);
    tracing::debug!(items = items.len(), "answered a long poll");

    let json = if jsonp.is_some() {
        Json::ScriptSafe
    } else {
        Json::Plain
    };
    let mut body = BytesMut::with_capacity(64 + items.len() * 128);
    body.put_slice(b"{\"cursor\":\"");
    cursor.encode_into(&mut body);
    body.put_slice(b"\",\"messages\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        encode::envelope(&mut body, item, json);
    }
    body.put_slice(b"]}");

    let body: Bytes = match &jsonp {
        Some(callback) => encode::jsonp(callback, &body),
        None => body.freeze(),
    };
    let mut response = Response::new(CometBody::full(body));
    // Sized to what goes in, as for streams (hyper keeps the map for the
    // connection's next request).
    *response.headers_mut() = poll_headers(jsonp.is_some(), more_headers);
    // A cursor is URL-safe ASCII, always a valid header value. Built at its
    // exact size, the `Vec` becomes the value's `Bytes` without a copy.
    let mut etag = Vec::with_capacity(cursor.encoded_len() + 2);
    etag.push(b'"');
    cursor.encode_into(&mut etag);
    etag.push(b'"');
    if let Ok(etag) = HeaderValue::from_maybe_shared(Bytes::from(etag)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}
