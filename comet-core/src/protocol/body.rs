//! The response body of every comet answer, as an `http_body::Body`.

use super::encode;
use crate::Subscription;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{sleep, Instant, Sleep};
use tokio_stream::Stream;

/// A comet response body: a complete one (long poll, errors) or a live stream
/// (SSE) that ends only when the client goes away.
///
/// Dropping it (the server does when the client disconnects) drops the
/// subscription at once.
pub struct CometBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Sse(Box<SseStream>),
}

struct SseStream {
    subscription: Subscription,
    heartbeat: Duration,
    idle: Pin<Box<Sleep>>,
    /// The second half of a frame whose first half was just sent.
    queued: Option<Bytes>,
}

impl CometBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Full(Some(bytes.into())).nonempty(),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// An SSE stream of `subscription`, opening with `preamble`.
    pub(crate) fn sse(subscription: Subscription, preamble: Bytes, heartbeat: Duration) -> Self {
        Self {
            kind: Kind::Sse(Box::new(SseStream {
                subscription,
                heartbeat,
                idle: Box::pin(sleep(heartbeat)),
                queued: Some(preamble),
            })),
        }
    }
}

impl Kind {
    fn nonempty(self) -> Self {
        match self {
            Kind::Full(Some(b)) if b.is_empty() => Kind::Full(None),
            other => other,
        }
    }
}

impl Body for CometBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Sse(stream) => stream.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Sse(_) => SizeHint::default(),
        }
    }
}

impl SseStream {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(bytes) = self.queued.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        match Pin::new(&mut self.subscription).poll_next(cx) {
            Poll::Ready(Some(item)) => {
                let (id, body) = encode::sse_frame(&item);
                self.queued = Some(body);
                self.idle.as_mut().reset(Instant::now() + self.heartbeat);
                return Poll::Ready(Some(Ok(Frame::data(id))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.idle.as_mut().reset(Instant::now() + self.heartbeat);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    encode::SSE_HEARTBEAT,
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl fmt::Debug for CometBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => f.debug_tuple("CometBody::Full").field(bytes).finish(),
            Kind::Sse(stream) => f
                .debug_tuple("CometBody::Sse")
                .field(&stream.subscription)
                .finish(),
        }
    }
}
