//! [`CometService`]: one comet route as a plain service, for `route_service`.

use comet_core::{
    protocol::{self, CometBody, Route},
    Hub,
};
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
/// use comet_core::{protocol::Route, Hub};
/// use comet_tower::CometService;
///
/// let hub = Hub::new();
/// let app: Router = Router::new()
///     .route_service("/events", CometService::new(hub.clone(), Route::sse()));
/// ```
#[derive(Clone, Debug)]
pub struct CometService {
    hub: Hub,
    route: Route,
}

impl CometService {
    /// Serves `route` from `hub`.
    pub fn new(hub: Hub, route: Route) -> Self {
        Self { hub, route }
    }
}

impl<B> Service<Request<B>> for CometService {
    type Response = Response<CometBody>;
    type Error = Infallible;
    type Future = ServeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ServeFuture {
        let (parts, _body) = request.into_parts();
        ServeFuture {
            future: protocol::serve(&self.hub, &self.route, &parts),
        }
    }
}

/// The response future of [`CometService`]: it never fails.
pub struct ServeFuture {
    future: protocol::ResponseFuture,
}

impl Future for ServeFuture {
    type Output = Result<Response<CometBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(ready!(self.future.as_mut().poll(cx))))
    }
}
