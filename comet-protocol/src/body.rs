//! The response body of every comet answer, as an `http_body::Body`.

use super::{Chunks, StreamFormat};
use crate::{telemetry::SubscriberGauge, Subscription};
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
    Stream(Box<Traced>),
}

/// A stream and its subscription's span, side by side so that the span can be
/// entered on every poll while the state is borrowed mutably (no clone).
struct Traced {
    span: tracing::Span,
    /// Counts the stream in `comet_subscribers` while it lives.
    _gauge: SubscriberGauge,
    state: StreamState,
}

struct StreamState {
    subscription: Subscription,
    format: Box<dyn StreamFormat>,
    heartbeat: Duration,
    idle: Pin<Box<Sleep>>,
    /// Chunks of frames already encoded, not yet handed to the server.
    queued: Chunks,
    /// Bytes after which the stream ends (at a frame boundary).
    budget: Option<usize>,
    sent: usize,
    /// Set once the stream is ending: only `queued` (the close frame) is left.
    ending: bool,
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

    /// The whole body, if it is a complete one (not a stream), so adapters
    /// can send it with a length.
    pub fn try_into_bytes(self) -> Result<Bytes, Self> {
        match self.kind {
            Kind::Full(bytes) => Ok(bytes.unwrap_or_default()),
            kind => Err(Self { kind }),
        }
    }

    pub(crate) fn stream(
        subscription: Subscription,
        format: Box<dyn StreamFormat>,
        heartbeat: Duration,
        budget: Option<usize>,
        span: tracing::Span,
        gauge: SubscriberGauge,
    ) -> Self {
        let mut queued = Chunks::default();
        if let Some(preamble) = format.preamble() {
            queued.push(preamble);
        }
        Self {
            kind: Kind::Stream(Box::new(Traced {
                span,
                _gauge: gauge,
                state: StreamState {
                    subscription,
                    format,
                    heartbeat,
                    idle: Box::pin(sleep(heartbeat)),
                    queued,
                    budget,
                    sent: 0,
                    ending: false,
                },
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
            Kind::Stream(traced) => {
                let Traced { span, state, .. } = &mut **traced;
                let _entered = span.enter();
                state.poll_frame(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
            }
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
        loop {
            if let Some(bytes) = self.queued.pop() {
                self.sent += bytes.len();
                return Poll::Ready(Some(bytes));
            }
            if self.ending {
                return Poll::Ready(None);
            }
            if self.budget.is_some_and(|budget| self.sent >= budget) {
                tracing::debug!(sent = self.sent, "byte budget reached; ending the stream");
                self.end();
                continue;
            }
            match Pin::new(&mut self.subscription).poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    self.format.item(&item, &mut self.queued);
                    self.idle.as_mut().reset(Instant::now() + self.heartbeat);
                    continue;
                }
                Poll::Ready(None) => {
                    tracing::debug!("hub shutting down; ending the stream");
                    self.end();
                    continue;
                }
                Poll::Pending => {}
            }
            return match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    self.idle.as_mut().reset(Instant::now() + self.heartbeat);
                    match self.format.heartbeat() {
                        Some(heartbeat) => {
                            self.sent += heartbeat.len();
                            Poll::Ready(Some(heartbeat))
                        }
                        // No heartbeat: loop to poll the reset timer, which
                        // registers this task for its next deadline.
                        None => continue,
                    }
                }
                Poll::Pending => Poll::Pending,
            };
        }
    }

    fn end(&mut self) {
        self.ending = true;
        if let Some(close) = self.format.close() {
            self.queued.push(close);
        }
    }
}

// warp's reply bodies must be `Sync`; keep `CometBody` so.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CometBody>();
};

impl fmt::Debug for CometBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(bytes) => f.debug_tuple("CometBody::Full").field(bytes).finish(),
            Kind::Stream(stream) => f
                .debug_tuple("CometBody::Stream")
                .field(&stream.state.subscription)
                .finish(),
        }
    }
}
