//! A subscriber that resumes, as `comet.js` does: it keeps the cursor of the
//! last item it read and reconnects with it, over any transport of a comet
//! route that offers them all (`SubscribeRoute::all()`, the demo's `/comet`). It
//! counts every message (by its stamp), every gap and what the gap says was
//! missed, so that a scenario can tell a loss the server owned up to from
//! one it kept quiet about.

use crate::{
    client::{Sender, Target},
    stats::Received,
    Clock,
};
use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, Empty};
use std::sync::Arc;
use tokio::time::Instant;

/// A comet transport, as `transport=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Sse,
    Stream,
    Iframe,
    Poll,
    Jsonp,
}

impl Wire {
    pub fn parse(name: &str) -> Result<Self, String> {
        Ok(match name {
            "sse" => Wire::Sse,
            "stream" => Wire::Stream,
            "iframe" => Wire::Iframe,
            "poll" => Wire::Poll,
            "jsonp" => Wire::Jsonp,
            other => return Err(format!("unknown transport {other:?}")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Wire::Sse => "sse",
            Wire::Stream => "stream",
            Wire::Iframe => "iframe",
            Wire::Poll => "poll",
            Wire::Jsonp => "jsonp",
        }
    }

    fn polls(self) -> bool {
        matches!(self, Wire::Poll | Wire::Jsonp)
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server ended the response (a stream's byte budget, shutdown).
    ByServer,
    /// The session's time was up: the client dropped the connection.
    ByClient,
}

/// One resuming subscriber of one channel.
pub struct Resumer {
    target: Arc<Target>,
    channel: String,
    pub wire: Wire,
    /// The cursor after the last item read.
    pub cursor: Option<String>,
    /// Gaps received, the messages they said were missed, and gaps that
    /// could not say (`missed: null`).
    pub gaps: u64,
    pub gap_missed: u64,
    pub unknown_gaps: u64,
    pub sessions: u64,
    pub received: Received,
    /// Sessions end once this many messages were received and gaps
    /// counted (0: never).
    pub want: u64,
}

impl Resumer {
    pub fn new(target: Arc<Target>, channel: String, wire: Wire, received: Received) -> Self {
        Self {
            target,
            channel,
            wire,
            cursor: None,
            gaps: 0,
            gap_missed: 0,
            unknown_gaps: 0,
            sessions: 0,
            received,
            want: 0,
        }
    }

    /// True once it has what it wants (see [`want`](Self::want)).
    pub fn done(&self) -> bool {
        self.want > 0 && self.received.unique + self.gap_missed >= self.want
    }

    /// The channel it follows.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The request path: the route's, with channel, transport and cursor.
    fn path(&self, wire: Wire, hold: bool) -> String {
        let route = self.target.uri.path();
        let mut path = format!("{route}?channel={}&transport={}", self.channel, wire.name());
        if matches!(wire, Wire::Iframe | Wire::Jsonp) {
            path.push_str("&callback=cb");
        }
        if wire.polls() && !hold {
            path.push_str("&timeout=0");
        }
        if let Some(cursor) = &self.cursor {
            path.push_str("&cursor=");
            path.push_str(cursor);
        }
        path
    }

    /// Takes the head cursor with one poll answered at once (as `comet.js`
    /// does before its first stream): from then on nothing is missed, even
    /// if the first session drops before any message.
    pub async fn start(&mut self, clock: &Clock) -> Result<(), String> {
        let mut sender = Sender::connect(&self.target, false).await?;
        let path = self.path(Wire::Poll, false);
        self.poll_once(&mut sender, &path, clock).await
    }

    /// One connection: reads until the server ends the response or, at
    /// `until`, drops it. Long polls poll again on the same connection.
    pub async fn session(&mut self, until: Instant, clock: &Clock) -> Result<Ended, String> {
        self.sessions += 1;
        match tokio::time::timeout_at(until, self.read(clock)).await {
            Ok(result) => result.map(|()| Ended::ByServer),
            Err(_) => Ok(Ended::ByClient),
        }
    }

    async fn read(&mut self, clock: &Clock) -> Result<(), String> {
        let mut sender: Sender<Empty<Bytes>> = Sender::connect(&self.target, false).await?;
        if self.wire.polls() {
            while !self.done() {
                let path = self.path(self.wire, true);
                self.poll_once(&mut sender, &path, clock).await?;
            }
            return Ok(());
        }
        let mut request = sender.request(&self.target, &self.path(self.wire, true));
        if self.wire == Wire::Sse {
            // SSE resumes with Last-Event-ID, as EventSource does.
            if let Some(cursor) = &self.cursor {
                request = request.header("last-event-id", cursor.as_str());
            }
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let response = sender
            .send(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("subscribe answered {}", response.status()));
        }
        let mut body = response.into_body();
        let mut lines = Lines::default();
        let mut event = SseEvent::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let now = clock.now_ns();
            lines.push(&data);
            while let Some(line) = lines.next() {
                match self.wire {
                    Wire::Sse => {
                        if let Some(done) = event.line(&line) {
                            self.sse_event(done, now);
                        }
                    }
                    Wire::Stream => self.envelope_text(&line, now),
                    Wire::Poll | Wire::Jsonp => {}
                    Wire::Iframe => {
                        // `<script>parent.cb(<envelope>);</script>`
                        if let Some(inner) = line
                            .strip_prefix("<script>parent.cb(")
                            .and_then(|rest| rest.strip_suffix(");</script>"))
                        {
                            self.envelope_text(inner, now);
                        }
                    }
                }
            }
            if self.done() {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn poll_once(
        &mut self,
        sender: &mut Sender<Empty<Bytes>>,
        path: &str,
        clock: &Clock,
    ) -> Result<(), String> {
        let request = sender
            .request(&self.target, path)
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send(request)
            .await
            .map_err(|e| format!("poll: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("poll body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("poll answered {status}"));
        }
        let now = clock.now_ns();
        let text = String::from_utf8_lossy(&body);
        // JSONP: `/**/cb(<answer>);`
        let json = text
            .strip_prefix("/**/cb(")
            .and_then(|rest| rest.strip_suffix(");"))
            .unwrap_or(&text);
        let answer: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("poll answer: {e}: {json}"))?;
        for envelope in answer["messages"].as_array().into_iter().flatten() {
            self.envelope(envelope, now);
        }
        if let Some(cursor) = answer["cursor"].as_str() {
            self.cursor = Some(cursor.to_owned());
        }
        Ok(())
    }

    fn envelope_text(&mut self, text: &str, now: u64) {
        if let Ok(envelope) = serde_json::from_str::<serde_json::Value>(text) {
            self.envelope(&envelope, now);
        }
    }

    fn envelope(&mut self, envelope: &serde_json::Value, now: u64) {
        match envelope["type"].as_str() {
            Some("message") => self.stamp(&envelope["data"], now),
            Some("gap") => self.gap(envelope),
            _ => return,
        }
        if let Some(cursor) = envelope["cursor"].as_str() {
            self.cursor = Some(cursor.to_owned());
        }
    }

    fn sse_event(&mut self, event: SseEvent, now: u64) {
        if event.event.as_deref() == Some("comet-gap") {
            if let Ok(gap) = serde_json::from_str::<serde_json::Value>(&event.data) {
                self.gap(&gap);
            }
        } else if let Ok(data) = serde_json::from_str::<serde_json::Value>(&event.data) {
            self.stamp(&data, now);
        }
        if let Some(id) = event.id {
            self.cursor = Some(id);
        }
    }

    fn stamp(&mut self, data: &serde_json::Value, now: u64) {
        if let (Some(seq), Some(t)) = (data["seq"].as_u64(), data["t"].as_u64()) {
            self.received.record(seq, t, now);
        }
    }

    fn gap(&mut self, gap: &serde_json::Value) {
        self.gaps += 1;
        match gap["missed"].as_u64() {
            Some(missed) => self.gap_missed += missed,
            None => self.unknown_gaps += 1,
        }
    }
}

/// Splits bytes into lines (without their `\n` or `\r\n`).
#[derive(Default)]
pub struct Lines {
    buf: Vec<u8>,
    /// Where the next line starts.
    start: usize,
}

impl Lines {
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    pub fn next(&mut self) -> Option<String> {
        let rest = &self.buf[self.start..];
        let end = rest.iter().position(|b| *b == b'\n')?;
        let mut line = &rest[..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let line = String::from_utf8_lossy(line).into_owned();
        self.start += end + 1;
        Some(line)
    }
}

/// An SSE event being read.
#[derive(Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    has_data: bool,
}

impl SseEvent {
    /// Takes one line; a blank line hands back the event it ends.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(self);
            return event.has_data.then_some(event);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_end_at_blank_lines() {
        let mut event = SseEvent::default();
        assert!(event.line(": comet").is_none());
        assert!(event.line("retry: 1000").is_none());
        assert!(event.line("id: c1").is_none());
        assert!(event.line("event: comet-gap").is_none());
        assert!(event.line("data: {\"missed\":3}").is_none());
        let done = event.line("").unwrap();
        assert_eq!(
            (
                done.id.as_deref(),
                done.event.as_deref(),
                done.data.as_str()
            ),
            (Some("c1"), Some("comet-gap"), "{\"missed\":3}")
        );
        assert!(event.line("").is_none(), "a blank line alone is no event");
    }
}
