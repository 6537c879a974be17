//! Serves an axum app over HTTP/1.1 only, as `axum::serve` would otherwise.
//!
//! Why not `axum::serve`: it serves each connection with hyper-util's
//! HTTP/1-or-HTTP/2 connection, whose task is sized for HTTP/2 whenever
//! hyper-util's `http2` feature is on anywhere in the build (warp turns it
//! on). A held Comet connection then costs about 19 KB of server memory
//! instead of about 11 KB (`bench/compare.sh`, 10,000 idle SSE subscribers).
//! Browsers speak HTTP/2 only over TLS, so a plain-HTTP Comet server loses
//! nothing by speaking HTTP/1.1 alone; behind a TLS proxy, the proxy speaks
//! HTTP/2 to browsers and HTTP/1.1 to this.

use axum::{extract::ConnectInfo, Router};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown, service::TowerToHyperService};
use std::{future::Future, time::Duration};
use tower::ServiceExt;

/// How long connections get to finish once `shutdown` has resolved.
const DRAIN: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` resolves, then lets open ones finish
/// (idle keep-alive connections close at once) for up to ten seconds.
/// Handlers see the peer as `ConnectInfo<SocketAddr>`, as with
/// `into_make_service_with_connect_info`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
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
        let service = app
            .clone()
            .map_request(move |mut request: http::Request<_>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = hyper::server::conn::http1::Builder::new()
            // Frames are copied into the connection's write buffer, which
            // hyper allocates anyway, rather than queued beside it: a held
            // stream then holds no queue (about 0.4 KB less per connection),
            // and each frame goes out in one plain write (about 10% more
            // deliveries per second, 5% sooner to the last of 10,000).
            .writev(false)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        // Spawned as it is: wrapping it in an `async` block to log its
        // error would double the task's size (the block keeps the future
        // both as a capture and as the value awaited), and every held
        // connection is one task.
        tokio::spawn(graceful.watch(connection));
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
