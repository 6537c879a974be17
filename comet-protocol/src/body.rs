//! The response body of every comet answer, as an `http_body::Body`.

use super::{Chunks, StreamFormat};
use crate::{telemetry::SubscriberGauge, Subscription};
use bytes::{Bytes, BytesMut};
use comet_core::Item;
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
    /// Fires at the latest when a heartbeat may be due; when it fires, the
    /// stream sends one if nothing went out for `heartbeat` since
    /// `last_item`, else waits again until then. So an item costs no timer
    /// reset and no clock read (a reset per item was about 5% of the CPU
    /// of 100 subscribers under a flood of publishes).
    idle: Pin<Box<Sleep>>,
    /// When the last item went out: a message's publish time (at most the
    /// moment it was written), or, for other items, the clock's.
    last_item: Instant,
    /// Chunks of frames already encoded, not yet handed to the server.
    queued: Chunks,
    /// Bytes after which the stream ends (at a frame boundary).
    budget: Option<usize>,
    sent: usize,
    /// Set once the stream is ending: only `queued` (the close frame) is left.
    ending: bool,
    /// The last two messages were published within [`GATHER_GAP`] of each
    /// other: more are likely on their way.
    busy: bool,
    /// This frame already let the scheduler go round once (see `poll_frame`).
    gathered: bool,
}

/// Messages published closer together than this make a stream busy: a
/// frame with something ready waits for one turn of the scheduler first,
/// so that what the publishers add meanwhile goes out in the same write.
const GATHER_GAP: Duration = Duration::from_millis(1);

/// The most bytes one coalesced frame gathers (see `poll_frame`): HTTP/2's
/// default largest DATA frame.
const COALESCED_FRAME: usize = 16 * 1024;

/// The biggest chunk copied into a joined frame: bigger ones are shared
/// messages, sent as they are.
const JOINED_CHUNK: usize = 1024;

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
                    last_item: Instant::now(),
                    queued,
                    budget,
                    sent: 0,
                    ending: false,
                    busy: false,
                    gathered: false,
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
    /// The next frame: the next chunk, and the small ones ready at once
    /// after it (the rest of an item, items published meanwhile), joined up
    /// to [`COALESCED_FRAME`] bytes. Each frame costs the server: over
    /// HTTP/2 a DATA frame through the connection's shared state and flow
    /// control, over HTTP/1.1 a chunk's framing. Measured with
    /// `bench/h2_throughput.sh` (100 SSE streams, 8 publishers): HTTP/2 0.59M
    /// to 0.70M deliveries a second, HTTP/1.1 0.90M to 0.96M. Only chunks of
    /// [`JOINED_CHUNK`] bytes or fewer are copied into a frame: a bigger one,
    /// a message shared by every subscriber, goes out as it is, in a frame of
    /// its own.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        // A busy stream with something ready lets the scheduler go round
        // once (this task goes to the back of the queue): what publishers add
        // meanwhile joins this frame, one write instead of several. 100
        // subscribers under 8 publishers took 2.1 million deliveries a second
        // rather than 1.6 million, for 46 µs of server CPU per publish
        // rather than 61 (bench/README.md). A message after a pause (a
        // fan-out, a chat) goes out at once.
        if self.busy && !self.gathered && !self.ending && !self.over_budget() {
            if self.queued.is_empty() {
                // Reading it tells whether it too came close on the last.
                self.read_ready(cx);
            }
            // Only a chunk small enough to be joined waits: a big one goes
            // out in a frame of its own anyway, and a waiting chunk is held
            // for as long as the server does not poll again (a stalled
            // client's, for ever).
            let joinable = self
                .queued
                .front_len()
                .is_some_and(|len| len <= JOINED_CHUNK);
            if self.busy && joinable {
                self.gathered = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        self.gathered = false;
        let first = match self.poll_chunk(cx) {
            Poll::Ready(Some(first)) => first,
            other => return other,
        };
        if first.len() > JOINED_CHUNK {
            return Poll::Ready(Some(first));
        }
        let mut len = first.len();
        let mut joined = Vec::new();
        while let Some(next) = self.ready_chunk(cx, COALESCED_FRAME - len) {
            len += next.len();
            joined.push(next);
        }
        if joined.is_empty() {
            return Poll::Ready(Some(first));
        }
        // One allocation of the frame's exact size: ten thousand streams
        // may each be joining a few small messages at once.
        let mut frame = BytesMut::with_capacity(len);
        frame.extend_from_slice(&first);
        for chunk in &joined {
            frame.extend_from_slice(chunk);
        }
        Poll::Ready(Some(frame.freeze()))
    }

    /// A chunk to join, if one is ready now (queued, or of an item the
    /// subscription has ready), of [`JOINED_CHUNK`] bytes or fewer and at
    /// most `room`; else `None`, and a chunk too big stays queued for the
    /// next frame. `None` at the byte budget or the end too (`poll_chunk`
    /// deals with them).
    fn ready_chunk(&mut self, cx: &mut Context<'_>, room: usize) -> Option<Bytes> {
        loop {
            if let Some(len) = self.queued.front_len() {
                if len > JOINED_CHUNK.min(room) {
                    return None;
                }
                self.sent += len;
                return self.queued.pop();
            }
            if self.ending || self.over_budget() || !self.read_ready(cx) {
                return None;
            }
        }
    }

    /// Queues what the subscription has ready now, encoded: its next item,
    /// or (the hub shutting down) the stream's close. False when it has
    /// nothing yet (this task is then woken when it has).
    fn read_ready(&mut self, cx: &mut Context<'_>) -> bool {
        match Pin::new(&mut self.subscription).poll_next(cx) {
            Poll::Ready(Some(item)) => {
                self.format.item(&item, &mut self.queued);
                // A message from history was published long ago: never
                // earlier than what went out before it.
                self.last_item = match &item {
                    Item::Message { message, .. } => {
                        let at = message.published_at();
                        self.busy = at.saturating_duration_since(self.last_item) < GATHER_GAP;
                        self.last_item.max(at)
                    }
                    _ => Instant::now(),
                };
                true
            }
            Poll::Ready(None) => {
                tracing::debug!("hub shutting down; ending the stream");
                self.end();
                true
            }
            Poll::Pending => false,
        }
    }

    fn over_budget(&self) -> bool {
        self.budget.is_some_and(|budget| self.sent >= budget)
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if let Some(bytes) = self.queued.pop() {
                self.sent += bytes.len();
                return Poll::Ready(Some(bytes));
            }
            if self.ending {
                return Poll::Ready(None);
            }
            if self.over_budget() {
                tracing::debug!(sent = self.sent, "byte budget reached; ending the stream");
                self.end();
                continue;
            }
            if self.read_ready(cx) {
                continue;
            }
            return match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let now = Instant::now();
                    let due = self.last_item + self.heartbeat;
                    if due > now {
                        // Items went out since: wait until the stream has
                        // been silent for a whole heartbeat.
                        self.idle.as_mut().reset(due);
                        continue;
                    }
                    self.idle.as_mut().reset(now + self.heartbeat);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{transport::sse::Sse, Hub, Start};
    use std::future::poll_fn;

    /// The next frame's bytes as text, or `None` if none is ready now.
    async fn ready_frame(body: &mut CometBody) -> Option<String> {
        let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                Some(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap())
            }
            Poll::Ready(other) => panic!("the stream ended: {:?}", other.is_some()),
            Poll::Pending => None,
        }
    }

    /// An SSE stream of `channel` from its head (heartbeat every 10 s),
    /// with what it sends first already read.
    async fn sse_body(hub: &Hub, channel: &str) -> CometBody {
        let subscription = hub.subscribe([channel], Start::head()).await.unwrap();
        let mut body = CometBody::stream(
            subscription,
            Box::new(Sse::new(Duration::from_secs(2))),
            Duration::from_secs(10),
            None,
            tracing::Span::none(),
            SubscriberGauge::new("sse"),
        );
        while ready_frame(&mut body).await.is_some() {}
        body
    }

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_comes_after_a_whole_interval_of_silence() {
        let hub = Hub::new();
        let mut body = sse_body(&hub, "quiet").await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        hub.publish("quiet", "news").await.unwrap();
        let frame = ready_frame(&mut body).await.expect("the message");
        assert!(frame.contains("data: news"), "{frame}");
        // 10 s after the start, but only 4 s after the message: silence.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(ready_frame(&mut body).await, None);
        // 10 s after the message.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(ready_frame(&mut body).await.as_deref(), Some(": \n"));
        // And every 10 s of silence after that.
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(ready_frame(&mut body).await, None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(ready_frame(&mut body).await.as_deref(), Some(": \n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stream_sends_a_message_too_big_to_join_at_once() {
        let hub = Hub::new();
        let mut body = sse_body(&hub, "big").await;
        let big = "x".repeat(2 * JOINED_CHUNK);
        tokio::time::sleep(Duration::from_secs(1)).await;
        for data in ["one", "two"] {
            hub.publish("big", data).await.unwrap();
            assert!(ready_frame(&mut body).await.is_some(), "a frame at once");
        }
        // Busy now, but a chunk too big to join does not wait: a waiting
        // chunk is held for as long as the server does not poll again.
        hub.publish("big", big.as_str()).await.unwrap();
        let frame = ready_frame(&mut body)
            .await
            .expect("the big message at once");
        assert!(frame.contains(&big), "{}", frame.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stream_waits_a_turn_and_sends_what_came_meanwhile_with_it() {
        let hub = Hub::new();
        let mut body = sse_body(&hub, "busy").await;
        // After a pause, a message goes out at once, and so does the next:
        // one message close on another's heels does not make a burst yet.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for data in ["one", "two"] {
            hub.publish("busy", data).await.unwrap();
            let frame = ready_frame(&mut body).await.expect("a frame at once");
            assert!(frame.contains(&format!("data: {data}\n")), "{frame}");
        }
        // Now busy: the next waits one turn of the scheduler...
        hub.publish("busy", "three").await.unwrap();
        assert_eq!(
            ready_frame(&mut body).await,
            None,
            "a busy stream waits a turn"
        );
        // ...and what was published meanwhile goes out in the same frame.
        hub.publish("busy", "four").await.unwrap();
        let frame = ready_frame(&mut body).await.expect("the gathered frame");
        assert!(
            frame.contains("data: three\n") && frame.contains("data: four\n"),
            "{frame}"
        );
        // After a pause, at once again.
        tokio::time::sleep(Duration::from_secs(1)).await;
        hub.publish("busy", "five").await.unwrap();
        let frame = ready_frame(&mut body).await.expect("a frame at once");
        assert!(frame.contains("data: five\n"), "{frame}");
    }
}
