//! An HTTP/1.1 server made for push, for comet and any tower service: what
//! `axum::serve` does, with a held connection costing a few KB rather than
//! about 20.
//!
//! ```no_run
//! use axum::Router;
//! use comet_push::{CometLayer, Hub};
//!
//! # async fn run() -> std::io::Result<()> {
//! let hub = Hub::new();
//! let app = Router::new().layer(CometLayer::new(hub.clone()).sse("/events"));
//! let listener = comet_push::serve::bind("127.0.0.1:3000").await?;
//! comet_push::serve(listener, app)
//!     .with_graceful_shutdown(async move {
//!         let _ = tokio::signal::ctrl_c().await;
//!         hub.shutdown();
//!     })
//!     .await
//! # }
//! ```
//!
//! **Why its own server.** A push server's connections spend nearly all
//! their life holding an answer open. hyper keeps an 8 KiB read buffer and
//! an 8 KiB write buffer on every connection for its whole life, and
//! `axum::serve` adds its HTTP/2 detection: about 21 KB a held connection
//! on the system allocator, twice what nginx + nchan holds. Here a held
//! answer keeps the socket, the app's body and a few words: no read buffer
//! (it is given back once a request is read), no write buffer (each frame
//! goes out in one write, joined on the stack when small, straight from the
//! bytes comet encoded once for every subscriber). The README's performance section has the
//! figures.
//!
//! **What it is not.** HTTP/1.1 (and 1.0) alone, in the clear: browsers
//! speak HTTP/2 only over TLS, so put a TLS proxy in front (it speaks
//! HTTP/2 to browsers and HTTP/1.1 to this), or serve with hyper. A
//! request's body is read whole before the app is called, up to
//! [`Serve::max_body_size`] (1 MiB by default, 413 past it): a push
//! server's requests are subscribes and publishes; serve large uploads
//! elsewhere. There are no upgrades (WebSocket).
//!
//! What every connection gets: requests answered in order (pipelining
//! included), keep-alive, `Expect: 100-continue`, `HEAD`, a header timeout
//! against clients that send their head a byte at a time, an idle timeout,
//! caps on heads and bodies answered with the protocol's JSON errors
//! (400 `bad_parameter`, 413 `payload_too_large`, 431
//! `headers_too_large`), whatever a proxy in front could read another way
//! refused (both `Transfer-Encoding` and `Content-Length`, lengths that
//! disagree, codings other than `chunked`, loose chunk size lines, trailer
//! fields, an HTTP/1.1 request without exactly one `Host`),
//! an app's future dropped when its client goes away before the answer,
//! and `TCP_NODELAY` (a push is a small write nobody answers, which Nagle's
//! algorithm would hold for a delayed ACK).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod connection;
mod head;
mod owed;

pub use body::Body;

use bytes::Bytes;
use http::{Request, Response};
use std::{
    fmt,
    future::{Future, IntoFuture},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    time::Duration,
};
use tokio::{
    net::{TcpListener, TcpSocket, ToSocketAddrs},
    sync::watch,
};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How many connections may wait to be accepted, with [`bind`]: a burst of
/// reconnecting clients after a restart comes all at once (tokio's own
/// `bind` allows 1,024).
pub const BACKLOG: u32 = 4096;

/// Binds a listener for [`serve`] with a backlog of [`BACKLOG`], trying each
/// address `address` resolves to.
pub async fn bind(address: impl ToSocketAddrs) -> io::Result<TcpListener> {
    let mut last = None;
    for address in tokio::net::lookup_host(address).await? {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        #[cfg(not(windows))]
        socket.set_reuseaddr(true)?;
        match socket.bind(address).and_then(|()| socket.listen(BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// Serves `service` (an axum `Router`, or any tower service of
/// `Request<`[`Body`]`>`) on every connection `listener` accepts, until the
/// returned future is dropped, or, with
/// [`with_graceful_shutdown`](Serve::with_graceful_shutdown), until a signal.
/// Await it; set limits first if the defaults do not suit.
pub fn serve<S>(listener: TcpListener, service: S) -> Serve<S> {
    Serve {
        listener,
        service,
        config: Config::default(),
    }
}

/// What [`Serve::connect_info`] puts in each request's extensions.
type ConnectInfo = Arc<dyn Fn(SocketAddr, &mut http::Extensions) + Send + Sync>;

/// The limits every connection is served with.
#[derive(Clone)]
pub(crate) struct Config {
    header_timeout: Duration,
    idle_timeout: Duration,
    body_timeout: Duration,
    write_timeout: Duration,
    drain_timeout: Duration,
    max_head_size: usize,
    max_body_size: usize,
    connect_info: Option<ConnectInfo>,
    owed: Arc<owed::Owed>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("max_head_size", &self.max_head_size)
            .field("max_body_size", &self.max_body_size)
            .field("connect_info", &self.connect_info.is_some())
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            max_head_size: 32 * 1024,
            max_body_size: 1024 * 1024,
            connect_info: None,
            owed: Arc::default(),
        }
    }
}

/// The server [`serve`] returns: await it (or call
/// [`with_graceful_shutdown`](Self::with_graceful_shutdown) first).
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve<S> {
    listener: TcpListener,
    service: S,
    config: Config,
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S> Serve<S> {
    /// Stops accepting when `signal` resolves, closes idle connections at
    /// once and each other one after the answer it is writing, and waits
    /// for them for up to [`drain_timeout`](Self::drain_timeout); then it
    /// returns, and connections still open end with the runtime. Comet's
    /// streams and polls end at `hub.shutdown()`, so call it in `signal`.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<S, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }

    /// How long a client may take to send a request's head, from its first
    /// byte to its blank line (10 s): a client that dribbles its head a byte
    /// at a time holds a connection for this long at most. Past it, the
    /// connection closes.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_timeout = timeout;
        self
    }

    /// How long a connection may sit between requests before it is closed
    /// (75 s, as nginx's `keepalive_timeout`).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// How long a client may take to send a request's body once its head is
    /// read (30 s). Past it, the connection closes.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.config.body_timeout = timeout;
        self
    }

    /// How long the rest of one frame may take to go out once the socket
    /// stops taking it at once (60 s; a frame is at most comet's 16 KiB of
    /// joined messages, or one large message): past it, the connection
    /// closes, and its subscription with it, so a client that stopped
    /// reading holds nothing for ever. A frame the socket takes at once,
    /// the usual case, sets no timer. A client that comes back resumes
    /// from its cursor.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// How long a graceful shutdown waits for open connections (10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// The largest request head taken, request line and fields (32 KiB,
    /// room for comet's 16 KiB of fields and 8 KiB of query); past it, 431
    /// `headers_too_large`. A head has at most 100 fields.
    pub fn max_head_size(mut self, bytes: usize) -> Self {
        self.config.max_head_size = bytes;
        self
    }

    /// The largest request body taken (1 MiB); past it, 413
    /// `payload_too_large`. The hub's own payload limit (64 KiB by
    /// default) is checked after, by comet's publish route.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.config.max_body_size = bytes;
        self
    }

    /// Puts `info(peer)` in every request's extensions, `peer` being the
    /// client's address: with axum, `.connect_info(axum::extract::ConnectInfo)`
    /// makes the `ConnectInfo<SocketAddr>` extractor work, as
    /// `into_make_service_with_connect_info` does under `axum::serve`.
    pub fn connect_info<T, F>(mut self, info: F) -> Self
    where
        F: Fn(SocketAddr) -> T + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
    {
        self.config.connect_info = Some(Arc::new(move |peer, extensions| {
            extensions.insert(info(peer));
        }));
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// A [`Serve`] that stops on a signal: await it.
#[must_use = "a server does nothing until it is awaited"]
pub struct WithGracefulShutdown<S, F> {
    serve: Serve<S>,
    signal: F,
}

impl<S, F> fmt::Debug for WithGracefulShutdown<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        self.with_graceful_shutdown(std::future::pending())
            .into_future()
    }
}

impl<S, B, F> IntoFuture for WithGracefulShutdown<S, F>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self.serve, self.signal))
    }
}

/// Accepts until `signal`, then drains.
async fn run<S, B>(serve: Serve<S>, signal: impl Future<Output = ()>) -> io::Result<()>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Serve {
        listener,
        service,
        config,
    } = serve;
    let config = Arc::new(config);
    let (draining, watched) = watch::channel(());
    let mut signal = std::pin::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, or a peer that gave up before the
                // accept: a hiccup, not a reason to stop serving.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection::serve(
            stream,
            peer,
            service.clone(),
            config.clone(),
            watched.clone(),
        ));
    }
    drop(listener);
    drop(watched);
    let _ = draining.send(());
    if tokio::time::timeout(config.drain_timeout, draining.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {:?}; stopping anyway",
            config.drain_timeout
        );
    }
    Ok(())
}
