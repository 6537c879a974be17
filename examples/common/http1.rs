//! Serves HTTP/1.1 only on hyper, with graceful shutdown: what the chat demo
//! serves plain HTTP with, and the accepting and draining its HTTP/2 shares.
//!
//! The README's quickstart serves with `comet_push::serve` instead, which
//! holds a connection for about 3.5 KB (hyper keeps two 8 KiB buffers per
//! connection: about 12.1 KB here, on the system allocator, and 21.2 KB
//! under `axum::serve`); the demo stays on hyper because its TLS and h2c
//! modes are hyper's, and `bench/compare.sh` measures it as the tuned
//! column beside the quickstart.
//! Browsers speak HTTP/2 only over TLS, so a plain-HTTP Comet server loses
//! nothing by speaking HTTP/1.1 alone; behind a TLS proxy, the proxy speaks
//! HTTP/2 to browsers and HTTP/1.1 to this.

use bytes::Bytes;
use hyper::{body::Incoming, service::Service};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use std::{error::Error, future::Future, net::SocketAddr, time::Duration};

/// How long connections get to finish once `shutdown` has resolved.
const DRAIN: Duration = Duration::from_secs(10);

/// How long a client may take to send a request's headers, from the first
/// byte of the request (or from accepting, for the first request) to the
/// blank line ending them; past it, hyper closes the connection. A client
/// that dribbles headers a byte at a time holds a connection for this long
/// at most. hyper's default with a timer is 30 s; `axum::serve` sets no
/// timer, so there a dribbling client holds its connection for ever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a connection buffers, reading or writing (hyper's default is
/// about 400 KiB). A subscriber that stops reading fills its socket, and
/// then hyper takes body frames into its write buffer up to this size
/// before it stops asking comet for more: with the default, 10,000 stalled
/// subscribers held about 5 GB of the server's memory. comet itself keeps
/// only a cursor for each; what the write buffer does not take stays in
/// the channel's history, and a subscriber that reads again gets it, or a
/// gap if history moved on. Room for the 16 KiB of headers and 8 KiB of
/// query comet accepts.
pub const MAX_BUF_SIZE: usize = 32 * 1024;

/// Accepts connections until `shutdown` resolves, serving each with the
/// service `service_for(peer)` makes, then lets open ones finish (idle
/// keep-alive connections close at once) for up to ten seconds.
pub async fn serve<S, B>(
    listener: tokio::net::TcpListener,
    mut service_for: impl FnMut(SocketAddr) -> S,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    // `COMET_HEADER_READ_TIMEOUT_MS` shortens it for tests.
    let header_read_timeout = std::env::var("COMET_HEADER_READ_TIMEOUT_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(HEADER_READ_TIMEOUT, Duration::from_millis);
    accept_until(listener, shutdown, |stream, peer, graceful| {
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(MAX_BUF_SIZE)
            // Frames are copied into the connection's write buffer, which
            // hyper allocates anyway, rather than queued beside it: a held
            // stream then holds no queue (about 0.4 KB less per connection),
            // and each frame goes out in one plain write (about 10% more
            // deliveries per second, 5% sooner to the last of 10,000).
            .writev(false)
            .serve_connection(TokioIo::new(stream), service_for(peer));
        // Spawned as it is: wrapping it in an `async` block to log its
        // error would double the task's size (the block keeps the future
        // both as a capture and as the value awaited), and every held
        // connection is one task.
        tokio::spawn(graceful.watch(connection));
    })
    .await
}

/// Accepts connections until `shutdown` resolves, handing each to
/// `on_connection`, then lets open ones finish (idle keep-alive connections
/// close at once, HTTP/2 ones get `GOAWAY`) for up to ten seconds.
pub async fn accept_until(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
    mut on_connection: impl FnMut(tokio::net::TcpStream, SocketAddr, &GracefulShutdown),
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, or the peer gave up before the
                // accept: a hiccup, not a reason to stop serving.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // No Nagle delay: a push is a small write the client never answers,
        // so the next one would wait for a delayed ACK (up to 40 ms on
        // Linux, 200 ms on Windows). It costs throughput on loopback
        // benchmarks (about 20% fewer deliveries per second), not latency.
        let _ = stream.set_nodelay(true);
        on_connection(stream, peer, &graceful);
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN:?}; stopping anyway");
    }
    Ok(())
}
