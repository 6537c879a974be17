//! The response body of every comet answer, as an `http_body::Body`.

use super::encode::Framing;
use crate::Subscription;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::{
    collections::VecDeque,
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{sleep, Instant, Sleep};
use tokio_stream::Stream;

/// A comet response body: a complete one (long polls, errors) or a live
/// stream (SSE, ndjson, forever frame).
///
/// A stream ends when the hub shuts down or, for transports a browser buffers
/// whole, after the route's byte budget; the client then resumes with its
/// last cursor. Dropping the body (the server does when the client
/// disconnects) drops the subscription at once.
pub struct CometBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Stream(Box<StreamState>),
}

struct StreamState {
    subscription: Subscription,
    framing: Box<dyn Framing>,
    heartbeat: Duration,
    idle: Pin<Box<Sleep>>,
    /// Chunks of frames already encoded, not yet handed to the server.
    queued: VecDeque<Bytes>,
    /// Bytes after which the stream ends (at a frame boundary).
    budget: Option<usize>,
    sent: usize,
    span: tracing::Span,
}

impl CometBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes: Bytes = bytes.into();
        Self {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    pub(crate) fn stream(
        subscription: Subscription,
        framing: Box<dyn Framing>,
        heartbeat: Duration,
        budget: Option<usize>,
        span: tracing::Span,
    ) -> Self {
        let mut queued = VecDeque::with_capacity(4);
        let preamble = framing.preamble();
        if !preamble.is_empty() {
            queued.push_back(preamble);
        }
        Self {
            kind: Kind::Stream(Box::new(StreamState {
                subscription,
                framing,
                heartbeat,
                idle: Box::pin(sleep(heartbeat)),
                queued,
                budget,
                sent: 0,
                span,
            })),
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
            Kind::Stream(stream) => stream.poll_frame(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}

impl StreamState {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let _entered = self.span.enter();
        if let Some(bytes) = self.queued.pop_front() {
            self.sent += bytes.len();
            return Poll::Ready(Some(bytes));
        }
        if self.budget.is_some_and(|budget| self.sent >= budget) {
            tracing::debug!(sent = self.sent, "byte budget reached; ending the stream");
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.subscription).poll_next(cx) {
            Poll::Ready(Some(item)) => {
                self.framing.item(&item, &mut self.queued);
                self.idle.as_mut().reset(Instant::now() + self.heartbeat);
                let bytes = self.queued.pop_front().unwrap_or_default();
                self.sent += bytes.len();
                return Poll::Ready(Some(bytes));
            }
            Poll::Ready(None) => {
                tracing::debug!("hub shutting down; ending the stream");
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.idle.as_mut().reset(Instant::now() + self.heartbeat);
                let heartbeat = self.framing.heartbeat();
                self.sent += heartbeat.len();
                Poll::Ready(Some(heartbeat))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl fmt::Debug for CometBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => f.debug_tuple("CometBody::Full").field(bytes).finish(),
            Kind::Stream(stream) => f
                .debug_tuple("CometBody::Stream")
                .field(&stream.subscription)
                .finish(),
        }
    }
}
