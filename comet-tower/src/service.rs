//! [`Comet`]: the service [`CometLayer`](crate::CometLayer) wraps around the app.

use crate::{layer::CometLayer, ResponseBody, ResponseFuture};
use http::{Request, Response};
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Answers requests to comet routes; forwards the rest to `S`.
#[derive(Clone, Debug)]
pub struct Comet<S> {
    inner: S,
    layer: CometLayer,
}

impl<S> Comet<S> {
    /// Wraps `inner` with the routes of `layer`.
    pub fn new(inner: S, layer: CometLayer) -> Self {
        Self { inner, layer }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Here rather than beside [`CometLayer`], so that the layer's module needs
/// nothing of the service's.
impl<S> Layer<S> for CometLayer {
    type Service = Comet<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Comet::new(inner, self.clone())
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Comet<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    // Publishing reads the body.
    ReqBody: http_body::Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.layer.mount.find(request.uri().path()) {
            Some((mount, endpoint)) => {
                ResponseFuture::comet(endpoint.serve(&self.layer.hub, mount, request))
            }
            None => ResponseFuture::inner(self.inner.call(request)),
        }
    }
}
