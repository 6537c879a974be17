//! [`RouteService`]: one comet route as a plain service, for `route_service`.

use comet_core::Hub;
use comet_protocol::{self as protocol, CometBody, Endpoint, PublishRoute, SubscribeRoute};
use http::{Request, Response};
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};
use tower_service::Service;

/// Serves one comet route wherever the app mounts it.
///
/// ```
/// use axum::Router;
/// use comet_push::{Hub, PublishRoute, SubscribeRoute};
/// use comet_push::RouteService;
///
/// let hub = Hub::new();
/// let publish = PublishRoute::new().authorize(|request, _| request.headers.contains_key("x-admin"));
/// let app: Router = Router::new()
///     .route_service("/events", RouteService::new(hub.clone(), SubscribeRoute::sse()))
///     .route_service("/publish/{*channel}", RouteService::publish(hub.clone(), "/publish", publish));
/// ```
#[derive(Clone, Debug)]
pub struct RouteService {
    hub: Hub,
    /// Where the service is mounted (publishing reads the channel below it).
    mount: String,
    endpoint: Endpoint,
}

impl RouteService {
    /// Serves the subscribe route `route` from `hub`.
    pub fn new(hub: Hub, route: SubscribeRoute) -> Self {
        Self {
            hub,
            mount: String::new(),
            endpoint: Endpoint::Subscribe(route),
        }
    }

    /// Serves the browser client, `comet.js`, with `route`'s CORS (the
    /// layer serves it at `<route>/comet.js` by itself).
    pub fn client(hub: Hub, route: SubscribeRoute) -> Self {
        Self {
            hub,
            mount: String::new(),
            endpoint: Endpoint::Client(route),
        }
    }

    /// Serves publishing to `hub`, mounted at `mount`: the rest of a
    /// request's path after `mount` names the channel.
    pub fn publish(hub: Hub, mount: &str, route: PublishRoute) -> Self {
        Self {
            hub,
            mount: mount.to_owned(),
            endpoint: Endpoint::Publish(route),
        }
    }
}

impl<B> Service<Request<B>> for RouteService
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<CometBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        ResponseFuture {
            future: self.endpoint.serve(&self.hub, &self.mount, request),
        }
    }
}

/// The response future of [`RouteService`]: it never fails.
pub struct ResponseFuture {
    future: protocol::ResponseFuture,
}

impl Future for ResponseFuture {
    type Output = Result<Response<CometBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(ready!(self.future.as_mut().poll(cx))))
    }
}
