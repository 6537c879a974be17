//! Answering a subscribe request: the whole protocol, on `http` types.

use super::{encode, CometBody, ProtocolError, Route, SubscribeParams, Transport};
use crate::{ChannelName, Hub, Start, Subscription};
use bytes::{BufMut, BytesMut};
use http::{header, request::Parts, HeaderValue, Method, Response};
use std::{future::Future, pin::Pin, time::Duration};
use tokio_stream::StreamExt;

/// The future of a comet answer.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<CometBody>> + Send + 'static>>;

/// Answers a request to a comet route, whatever the server stack.
///
/// Everything a request can get wrong is answered here as PROTOCOL.md says
/// (a JSON error with a 4xx); adapters only route requests to it and hand the
/// body to their server. The work that needs the request's head happens before
/// this returns; the future only holds (long polls).
pub fn serve(hub: &Hub, route: &Route, request: &Parts) -> ResponseFuture {
    match subscribe(hub, route, request) {
        Err(error) => Box::pin(std::future::ready(error.into_response())),
        Ok((transport, subscription, params)) => match transport {
            Transport::Sse => Box::pin(std::future::ready(sse(route, subscription))),
            Transport::Poll => {
                let hold = params.timeout.unwrap_or(route.max_hold).min(route.max_hold);
                Box::pin(long_poll(subscription, hold, route.max_batch))
            }
        },
    }
}

/// Checks a request and subscribes it: method, parameters, transport, cursor,
/// channels, limits, authorization.
fn subscribe(
    hub: &Hub,
    route: &Route,
    request: &Parts,
) -> Result<(Transport, Subscription, SubscribeParams), ProtocolError> {
    if request.method != Method::GET {
        return Err(ProtocolError::method_not_allowed(&request.method));
    }
    let query = SubscribeParams::from_query(request.uri.query())?;
    let transport = Transport::negotiate(
        &route.transports,
        query.transport.as_deref(),
        &request.headers,
    )?;
    let mut params = SubscribeParams::from_request(request, Some(transport))?;
    let requested = std::mem::take(&mut params.channels);
    let channels = route.channels.resolve(request, requested)?;
    let names = channel_names(hub, channels)?;
    route.authorize.authorize(request, &names)?;
    let start = Start::from(params.since.unwrap_or(route.since)).with_cursor(params.cursor.clone());
    let subscription = hub.subscribe(names.iter().map(ChannelName::as_str), start)?;
    Ok((transport, subscription, params))
}

/// Validates names (400), de-duplicates, and applies the channel limit (429)
/// before the app's authorizer sees them.
fn channel_names(hub: &Hub, channels: Vec<String>) -> Result<Vec<ChannelName>, ProtocolError> {
    let mut names: Vec<ChannelName> = Vec::with_capacity(channels.len());
    for channel in channels {
        let name = ChannelName::new(&channel).map_err(|e| {
            ProtocolError::new(
                http::StatusCode::BAD_REQUEST,
                "bad_channel",
                format!("{e}: {channel:?}"),
            )
        })?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err(crate::SubscribeError::NoChannels.into());
    }
    let max = hub.max_channels_per_subscription();
    if names.len() > max {
        return Err(crate::SubscribeError::TooManyChannels { max }.into());
    }
    Ok(names)
}

fn sse(route: &Route, subscription: Subscription) -> Response<CometBody> {
    let preamble = encode::sse_preamble(route.retry.as_millis());
    let mut response = Response::new(CometBody::sse(subscription, preamble, route.heartbeat));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Answers at once when anything is after the cursor, else holds until
/// something is or `hold` passes. Dropping the future (the client left)
/// drops the subscription at once.
async fn long_poll(
    mut subscription: Subscription,
    hold: Duration,
    max_batch: usize,
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
        .map_or_else(|| subscription.cursor(), |item| item.cursor().clone())
        .encode();
    drop(subscription);

    let mut body = BytesMut::with_capacity(64 + items.len() * 128);
    body.put_slice(b"{\"cursor\":\"");
    body.put_slice(cursor.as_bytes());
    body.put_slice(b"\",\"messages\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        encode::envelope(&mut body, item);
    }
    body.put_slice(b"]}");

    let mut response = Response::new(CometBody::full(body.freeze()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A cursor is URL-safe ASCII, always a valid header value.
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{cursor}\"")) {
        headers.insert(header::ETAG, etag);
    }
    response
}
