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

use bytes::Bytes;
use hyper::{body::Incoming, service::Service};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::Watcher},
};
use std::{error::Error, future::Future, net::SocketAddr, sync::Arc};
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        // Long-held streams: a few hundred per connection is normal.
        .max_concurrent_streams(1000);
    let builder = Arc::new(builder);
    super::http1::accept_until(listener, shutdown, |stream, peer, graceful| {
        let service = service_for(peer);
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => serve_one(&builder, watcher, stream, service).await,
                    Err(error) => tracing::debug!(%error, "TLS handshake failed"),
                },
                None => serve_one(&builder, watcher, stream, service).await,
            }
        });
    })
    .await
}

async fn serve_one<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    service: S,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}
