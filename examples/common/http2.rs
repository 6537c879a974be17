//! Serves HTTP/1.1 and HTTP/2 on one listener, with graceful shutdown: over
//! TLS, the protocol is chosen by ALPN (browsers speak HTTP/2 only there);
//! in the clear, HTTP/2 with prior knowledge (h2c) or HTTP/1.1, by the
//! connection's first bytes. What the chat demo uses with `--tls-*`, and
//! what the HTTP/2 tests serve with.
//!
//! Over HTTP/2 every comet stream of a page (one per `EventSource`, each
//! long poll) shares one connection, so the browser's six connections per
//! host stop mattering. Accepting and draining are `http1.rs`'s. A push
//! stream whose client stops reading stalls on the client's own window;
//! the others on its connection go on (`tests/http2.rs`).
//!
//! hyper runs each HTTP/2 stream as a future it hands to its executor. With
//! tokio's, every stream is a task of its own: a publish to 100 streams of
//! one connection wakes 100 tasks, and each hands its frame to the
//! connection's task through h2's shared state and wakes that too. Here the
//! executor is the connection's own task ([`ConnectionTask`]): its streams
//! are polled there, and what they send goes out in the connection's next
//! write. 100 SSE streams on one connection took 1.36 to 1.37 million
//! deliveries a second rather than 1.13 million: 0.83 to 0.85 of what 100
//! HTTP/1.1 connections took on one core (`bench/h2_throughput.sh --pin`,
//! bench/README.md).

use bytes::Bytes;
use futures_util::{stream::FuturesUnordered, task::AtomicWaker, FutureExt, StreamExt};
use hyper::{body::Incoming, service::Service};
use hyper_util::{
    rt::TokioIo,
    server::{conn::auto, graceful::Watcher},
};
use std::{
    error::Error,
    future::Future,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    pin::{pin, Pin},
    sync::{Arc, Mutex},
    task::Poll,
};
use tokio::io::{AsyncRead, AsyncWrite};

/// The receive window the server offers each stream: what a client may send
/// on one request (a publish: at most the hub's 64 KiB payload by default)
/// before the server reads it. HTTP/2 windows are the receiver's: what a
/// stalled push stream holds is set by the *client's* window (hyper polls a
/// response body only when that window has room), so one stalled
/// stream never holds up the others whatever these are. Neither window
/// allocates anything up front: 10,000 idle streams cost the same with h2's
/// 64 KiB defaults (`bench/compare_http2.sh`, the README's HTTP/2 section).
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// The connection's receive window: what a client may have in flight over
/// all its streams, and so the most unread request data one connection can
/// leave buffered in the server.
pub const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// TLS for the server: the protocols offered by ALPN are HTTP/2, then HTTP/1.1.
pub fn tls_acceptor(
    certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A certificate for `names` signed by itself, made now (browsers must be
/// told to accept it: Chromium's `--ignore-certificate-errors`, or a click).
pub fn self_signed(
    names: &[&str],
) -> Result<
    (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    rcgen::Error,
> {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names)?;
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    Ok((certified.cert.der().clone(), key.into()))
}

/// Reads a PEM certificate chain and private key.
pub fn load_pem(
    cert: &str,
    key: &str,
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    Box<dyn Error>,
> {
    use rustls::pki_types::pem::PemObject;
    let certificates = rustls::pki_types::CertificateDer::pem_file_iter(cert)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: {e}"))?;
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    Ok((certificates, key))
}

/// Accepts connections until `shutdown` resolves, serving each (after the
/// TLS handshake, with `tls`) with the service `service_for(peer)` makes,
/// then sends HTTP/2 connections `GOAWAY` and lets open ones finish for up
/// to ten seconds.
pub async fn serve<S, B>(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
    super::http1::accept_until(listener, shutdown, |stream, peer, graceful| {
        let service = service_for(peer);
        let (watcher, tls) = (graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => serve_one(watcher, stream, service).await,
                    Err(error) => tracing::debug!(%error, "TLS handshake failed"),
                },
                None => serve_one(watcher, stream, service).await,
            }
        });
    })
    .await
}

async fn serve_one<I, S, B>(watcher: Watcher, io: I, service: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let task = ConnectionTask::default();
    // The builder (its executor is this connection's) is dropped before
    // the connection runs, and the connection is pinned here, once: a held
    // connection keeps neither a builder nor a second copy of itself.
    let connection = pin!(watcher.watch({
        let mut builder = auto::Builder::new(task.clone());
        builder
            .http2()
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            // Long-held streams: a few hundred per connection is normal.
            .max_concurrent_streams(1000);
        builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned()
    }));
    if let Err(error) = task.run(connection).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// The executor of one connection: what hyper spawns for it (each HTTP/2
/// stream's future) runs in the connection's own task, beside the
/// connection, not as tasks of its own. The cost: one connection's streams
/// share one thread, so a handler that computes for long holds up its
/// neighbours (comet's streams and polls wait, they do not compute).
#[derive(Clone, Default)]
pub struct ConnectionTask(Arc<Spawned>);

#[derive(Default)]
struct Spawned {
    /// Futures spawned since the task last took them. Only the connection's
    /// own task spawns (hyper does it while polling the connection or a
    /// stream), so the lock is never contended.
    queue: Mutex<Vec<Pin<Box<dyn Future<Output = ()> + Send>>>>,
    /// The connection's task, woken when something is spawned.
    task: AtomicWaker,
}

impl<F> hyper::rt::Executor<F> for ConnectionTask
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        // A stream that panics ends alone, as a task of its own would, not
        // with every other stream of its connection.
        let future = async move {
            if AssertUnwindSafe(future).catch_unwind().await.is_err() {
                tracing::error!("an HTTP/2 stream's future panicked; its stream ends");
            }
        };
        self.0
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::pin(future));
        self.0.task.wake();
    }
}

impl ConnectionTask {
    /// Runs `connection` and what it spawns until the connection ends
    /// (hyper ends it once its streams are done or gone).
    pub async fn run<C: Future>(&self, mut connection: Pin<&mut C>) -> C::Output {
        // Whatever is still queued when this ends (the connection ended in
        // the poll that spawned it, or this future was dropped) is dropped
        // with it: a stream's future holds this executor, so one left in
        // the queue would keep itself and the queue alive for ever.
        let _drain = Drain(self);
        let mut streams = FuturesUnordered::new();
        std::future::poll_fn(|cx| {
            self.0.task.register(cx.waker());
            loop {
                streams.extend(self.take());
                // The streams first: what they send goes out in the
                // connection's next write, together. (`FuturesUnordered`
                // polls each ready stream once, then yields, so the
                // connection is not starved.)
                while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
                if let Poll::Ready(output) = connection.as_mut().poll(cx) {
                    return Poll::Ready(output);
                }
                // Polling the connection may have spawned streams.
                let spawned = self.take();
                if spawned.is_empty() {
                    return Poll::Pending;
                }
                streams.extend(spawned);
            }
        })
        .await
    }

    fn take(&self) -> Vec<Pin<Box<dyn Future<Output = ()> + Send>>> {
        std::mem::take(&mut *self.0.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Empties a connection's queue of spawned futures when dropped.
struct Drain<'a>(&'a ConnectionTask);

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        drop(self.0.take());
    }
}
