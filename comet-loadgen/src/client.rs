//! hyper's connection-level client over tokio, for publishers (a few
//! keep-alive connections over HTTP/1.1, one each over HTTP/2) and HTTP/2
//! subscribers (h2c, prior knowledge: streams on a few shared connections).
//! HTTP/1.1 subscribers, one connection each, are http1.rs's.

use crate::{
    args::{Dialect, Transport},
    stats::Received,
    Clock,
};
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, client::conn, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{net::SocketAddr, sync::Arc};
use tokio::net::TcpStream;

/// Where a URL points, checked against the loopback-only default.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub uri: Uri,
    host: String,
}

impl Target {
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("only http:// URLs are supported: {url}"));
        }
        let authority = uri.authority().ok_or("URL has no host")?.clone();
        let port = authority.port_u16().unwrap_or(80);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(authority.host(), port))
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("cannot resolve {authority}"))?;
        if !addr.ip().is_loopback() && !allow_remote {
            return Err(format!(
                "{addr} is not a loopback address; pass --allow-remote to load it"
            ));
        }
        Ok(Self {
            addr,
            host: authority.to_string(),
            uri,
        })
    }

    /// The `Host` of requests to it.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn path(&self) -> &str {
        self.uri.path_and_query().map_or("/", |p| p.as_str())
    }
}

/// The generator's receive windows over HTTP/2: a stream may have 1 MiB in
/// flight and a connection 64 MiB, so that the generator's flow control never
/// paces the server (100 streams of a connection each get a full window).
/// The generator reads as data comes, so these hold little memory.
pub const H2_STREAM_WINDOW: u32 = 1024 * 1024;
pub const H2_CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

async fn tcp(target: &Target) -> Result<TokioIo<TcpStream>, String> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    stream.set_nodelay(true).ok();
    Ok(TokioIo::new(stream))
}

/// Opens an HTTP/2 connection (h2c, prior knowledge) with the generator's
/// windows; clones of the sender open streams on it.
pub async fn connect_http2<B>(target: &Target) -> Result<conn::http2::SendRequest<B>, String>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, connection) = conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .handshake(tcp(target).await?)
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A subscribers' HTTP/2 connection: each clone opens streams on it.
pub type Http2Sender = conn::http2::SendRequest<Empty<Bytes>>;

/// One connection's request sender, HTTP/1.1 or HTTP/2.
pub enum Sender<B> {
    Http1(conn::http1::SendRequest<B>),
    Http2(conn::http2::SendRequest<B>),
}

impl<B> Sender<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Opens a connection to `target`, HTTP/2 with prior knowledge or HTTP/1.1.
    pub async fn connect(target: &Target, http2: bool) -> Result<Self, String> {
        if http2 {
            return Ok(Sender::Http2(connect_http2(target).await?));
        }
        let (sender, connection) = conn::http1::handshake(tcp(target).await?)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Sender::Http1(sender))
    }

    pub fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }

    /// A request to `path` on `target`: over HTTP/1.1 with a `Host` header,
    /// over HTTP/2 with the absolute URI (hyper makes `:authority` of it).
    pub fn request(&self, target: &Target, path: &str) -> http::request::Builder {
        if self.is_http2() {
            let scheme = target.uri.scheme_str().unwrap_or("http");
            Request::builder().uri(format!("{scheme}://{}{path}", target.host))
        } else {
            Request::builder()
                .uri(path)
                .header(header::HOST, &target.host)
        }
    }

    async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::Http1(sender) => sender.ready().await,
            Sender::Http2(sender) => sender.ready().await,
        }
    }

    pub async fn send(&mut self, request: Request<B>) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }
}

/// Calls `found(seq, t)` for every `{"seq":N,"t":T}` stamp in `text`, also
/// where it arrives escaped inside a JSON string (`{\"seq\":N,\"t\":T}`:
/// a long poll's answer of a message an app published as text).
pub fn stamps(text: &[u8], mut found: impl FnMut(u64, u64)) {
    let number = |bytes: &[u8]| -> (u64, usize) {
        let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = bytes[..digits]
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        (value, digits)
    };
    let member = |rest: &[u8], name: &[u8]| -> Option<usize> {
        // `name":` or `name\":`, after the opening quote.
        let after = rest.strip_prefix(name)?;
        let after = after.strip_prefix(b"\\").unwrap_or(after);
        after.strip_prefix(b"\":")?;
        Some(rest.len() - after.len() + 2)
    };
    let mut rest = text;
    while let Some(i) = rest.windows(4).position(|w| w == b"\"seq") {
        rest = &rest[i + 1..];
        let Some(skip) = member(rest, b"seq") else {
            continue;
        };
        rest = &rest[skip..];
        let (seq, len) = number(rest);
        rest = &rest[len..];
        let Some(t_at) = rest.strip_prefix(b",").and_then(|r| {
            let r = r.strip_prefix(b"\\").unwrap_or(r);
            r.strip_prefix(b"\"")
        }) else {
            continue;
        };
        if len == 0 {
            continue;
        }
        if let Some(skip) = member(t_at, b"t") {
            let (t, t_len) = number(&t_at[skip..]);
            if t_len > 0 {
                found(seq, t);
            }
        }
    }
}

/// One subscriber: connects over HTTP/1.1 (or, given `via`, opens a stream
/// on that HTTP/2 connection), tells `connected`, then records every stamp it receives
/// until `stop` is set or the server ends the response. Over HTTP/1.1,
/// http1.rs does it.
pub async fn subscribe(
    target: Arc<Target>,
    via: Option<Http2Sender>,
    transport: Transport,
    dialect: Dialect,
    clock: Clock,
    connected: Arc<tokio::sync::Semaphore>,
    received: &mut Received,
) -> Result<(), String> {
    let Some(shared) = via else {
        return match transport {
            Transport::Poll => {
                crate::http1::follow(target, dialect, clock, connected, received).await
            }
            Transport::Sse => {
                crate::http1::stream(target, "text/event-stream", clock, connected, received).await
            }
            Transport::Stream => {
                let accept = "application/x-ndjson";
                crate::http1::stream(target, accept, clock, connected, received).await
            }
        };
    };
    let mut sender = Sender::Http2(shared);
    match transport {
        Transport::Sse | Transport::Stream => {
            let accept = if transport == Transport::Sse {
                "text/event-stream"
            } else {
                "application/x-ndjson"
            };
            let request = sender
                .request(&target, target.path())
                .header(header::ACCEPT, accept)
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            let response = sender
                .send(request)
                .await
                .map_err(|e| format!("request: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("subscribe answered {}", response.status()));
            }
            connected.add_permits(1);
            let mut body = response.into_body();
            // Stamps sit inside lines; keep a partial line for the next chunk.
            let mut carry: Vec<u8> = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("body: {e}"))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let now = clock.now_ns();
                carry.extend_from_slice(&data);
                if let Some(end) = carry.iter().rposition(|b| *b == b'\n') {
                    stamps(&carry[..end], |seq, t| received.record(seq, t, now));
                    carry.drain(..=end);
                }
            }
            Ok(())
        }
        Transport::Poll => {
            let mut etag: Option<http::HeaderValue> = None;
            let mut modified: Option<http::HeaderValue> = None;
            let mut first = true;
            loop {
                let mut path = target.path().to_owned();
                if first && dialect == Dialect::Comet {
                    // Ask for the head cursor at once: from then on nothing is missed.
                    path.push_str(if path.contains('?') {
                        "&timeout=0"
                    } else {
                        "?timeout=0"
                    });
                }
                let mut request = sender.request(&target, &path);
                if let Some(tag) = &etag {
                    request = request.header(header::IF_NONE_MATCH, tag);
                }
                if let Some(at) = &modified {
                    request = request.header(header::IF_MODIFIED_SINCE, at);
                }
                let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
                if first && dialect == Dialect::Raw {
                    // A raw server holds the first poll: count it as connected once sent.
                    connected.add_permits(1);
                }
                let response = match sender.send(request).await {
                    Ok(response) => response,
                    // The server closed a kept-alive connection: reconnect.
                    Err(_) => {
                        sender = Sender::connect(&target, sender.is_http2()).await?;
                        continue;
                    }
                };
                let status = response.status();
                etag = response.headers().get(header::ETAG).cloned().or(etag);
                modified = response
                    .headers()
                    .get(header::LAST_MODIFIED)
                    .cloned()
                    .or(modified);
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("body: {e}"))?
                    .to_bytes();
                let now = clock.now_ns();
                if first && dialect == Dialect::Comet {
                    connected.add_permits(1);
                }
                first = false;
                if status.is_success() {
                    stamps(&body, |seq, t| received.record(seq, t, now));
                } else if status != http::StatusCode::NOT_MODIFIED
                    && status != http::StatusCode::REQUEST_TIMEOUT
                {
                    return Err(format!("poll answered {status}"));
                }
                if received.done() {
                    return Ok(());
                }
            }
        }
    }
}

/// A publishing connection: POSTs stamped messages, reconnecting if the
/// server closes the connection.
pub struct Publisher {
    target: Arc<Target>,
    sender: Sender<Full<Bytes>>,
    /// Bodies are padded to this many bytes.
    pad: usize,
}

impl Publisher {
    pub async fn connect(target: Arc<Target>, http2: bool) -> Result<Self, String> {
        let sender = Sender::connect(&target, http2).await?;
        Ok(Self {
            target,
            sender,
            pad: 0,
        })
    }

    /// Pads every body to `bytes` (a `"pad"` member after the stamp).
    pub fn pad_to(mut self, bytes: usize) -> Self {
        self.pad = bytes;
        self
    }

    /// Publishes message `seq` stamped with the current time.
    pub async fn publish(&mut self, seq: u64, clock: &Clock) -> Result<(), String> {
        let path = self.target.path().to_owned();
        let status = self.post(&path, seq, clock).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("publish answered {status}"))
        }
    }

    /// POSTs message `seq` to `path` on the target; the answer's status.
    pub async fn post(
        &mut self,
        path: &str,
        seq: u64,
        clock: &Clock,
    ) -> Result<http::StatusCode, String> {
        for attempt in 0..2 {
            let mut body = format!("{{\"seq\":{seq},\"t\":{}", clock.now_ns());
            if self.pad > body.len() + 10 {
                let fill = self.pad - body.len() - 10;
                body.push_str(",\"pad\":\"");
                body.push_str(&"x".repeat(fill));
                body.push('"');
            }
            body.push('}');
            let request = self
                .sender
                .request(&self.target, path)
                .method(http::Method::POST)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let http2 = self.sender.is_http2();
            if self.sender.ready().await.is_err() && attempt == 0 {
                self.sender = Sender::connect(&self.target, http2).await?;
                continue;
            }
            match self.sender.send(request).await {
                Ok(response) => {
                    let status = response.status();
                    let _ = response.into_body().collect().await;
                    return Ok(status);
                }
                Err(_) if attempt == 0 => {
                    self.sender = Sender::connect(&self.target, http2).await?
                }
                Err(e) => return Err(format!("publish: {e}")),
            }
        }
        Err("publish failed twice".into())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_stamps_in_any_framing() {
        let mut found = vec![];
        let text = br#"data: {"seq":1,"t":20}
{"type":"message","channel":"b","data":{"seq":2,"t":30},"cursor":"x"}
{"cursor":"c","messages":[{"data":{"seq":3,"t":40}},{"data":{"seq":4,"t":5}}]}
"seq":9 "seq":x,"t":1 {"seq":7,"t":
{"data":"{\"seq\":5,\"t\":6}"}"#;
        super::stamps(text, |s, t| found.push((s, t)));
        assert_eq!(found, [(1, 20), (2, 30), (3, 40), (4, 5), (5, 6)]);
    }
}
