//! One HTTP/1.1 connection, start to end, in one task: read a head (and a
//! body), call the app, write its answer, and again while the client keeps
//! the connection. Requests on a connection are answered in order.
//!
//! What a held answer costs is what this file keeps between two frames: the
//! socket, the app's body and a few words. No read buffer (it is dropped
//! once a request is read, and made again for the next; the request's URI
//! and header values share its bytes, so an app that keeps them keeps
//! those), no write buffer (a frame goes out with its framing in one
//! write: a small one joined on the stack, a big one as a vector of parts,
//! straight from the bytes comet encoded once for every subscriber).

use crate::{
    head::{self, BodyLength, Framing, Head},
    owed::{Held, Owed, Waiting},
    Body, Config,
};
use bytes::{Buf, Bytes, BytesMut};
use comet_protocol::{ErrorCode, ProtocolError};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use std::{
    future::{poll_fn, Future},
    io::{self, IoSlice},
    net::SocketAddr,
    pin::pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::watch,
    time::{timeout, timeout_at, Instant},
};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a read of a head starts with: enough for most requests (a few
/// hundred bytes of headers and cookies), and small enough for the
/// allocators' per-thread caches (glibc's takes up to 1,032 bytes); more is
/// added as needed.
const READ_SIZE: usize = 1024;

/// How long a refused client gets to stop sending before the connection
/// closes, and how much of what it sends is read and dropped meanwhile:
/// closing with unread bytes makes the kernel answer with a reset, which
/// can cost the client the error answer it was just sent.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// Serves `stream` until the client closes it, a request asks to close, the
/// server shuts down (between requests), or something fails.
pub(crate) async fn serve<S, B>(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut service: S,
    config: Arc<Config>,
    mut shutdown: watch::Receiver<()>,
) where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut buf = BytesMut::new();
    loop {
        // A request may wait on answers owed twice, 20 ms at most in all
        // (owed.rs).
        let mut waiting = Waiting::default();
        if buf.is_empty() {
            // Nothing read yet: while answers are owed, the next request is
            // not read, nor even looked for. Each client answered by a
            // publish sends its next poll at once, and reading those would
            // take turns with the answers still owed (13.1 ms rather than
            // 9.4 to the last of 1,000, pinned); and a read right after an
            // answer, before the client sent again, would be a system call
            // for nothing.
            config.owed.settled(&mut waiting).await;
        }
        let head = match read_head(&mut stream, &mut buf, &config, &mut shutdown).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(error) => return refuse(stream, error).await,
        };
        let Head {
            request,
            body,
            mut keep_alive,
            expects_continue,
        } = head;
        let read = timeout(
            config.body_timeout,
            read_body(&mut stream, &mut buf, body, expects_continue, &config),
        );
        let bytes = match read.await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(Some(error))) => return refuse(stream, error).await,
            Ok(Err(None)) | Err(_) => return,
        };
        if buf.is_empty() {
            // The answer may be held for hours: it holds no read buffer.
            buf = BytesMut::new();
        }
        let mut request = request.map(|()| Body::new(bytes));
        if let Some(info) = &config.connect_info {
            info(peer, request.extensions_mut());
        }
        let head_request = request.method() == Method::HEAD;
        let http10 = request.version() == Version::HTTP_10;
        // Answers owed to woken held requests go out before this one is served.
        config.owed.settled(&mut waiting).await;
        let Some(response) = call(&mut service, request, &stream, &config.owed).await else {
            return;
        };
        // A 1xx is no final answer: the client would wait for one, so the
        // connection ends after it.
        keep_alive &= !closes(&response)
            && !response.status().is_informational()
            && !matches!(shutdown.has_changed(), Ok(true) | Err(_));
        let written = write(
            &mut stream,
            response,
            head_request,
            http10,
            keep_alive,
            config.write_timeout,
        );
        match written.await {
            Ok(true) if keep_alive => {}
            // Answered whole, and the exchange asked to close.
            Ok(true) => return close(stream).await,
            // The client went away, or the answer broke off: nothing to
            // say to it, so no orderly close either.
            Ok(false) | Err(_) => return,
        }
    }
}

/// Reads until a whole head is in `buf`, and parses it. `Ok(None)`: the
/// client closed, stayed idle past the idle timeout, took longer than the
/// header timeout from its head's first byte, or the server is shutting
/// down while the connection is idle.
async fn read_head(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    config: &Config,
    shutdown: &mut watch::Receiver<()>,
) -> Result<Option<Head>, ProtocolError> {
    let mut deadline = None;
    loop {
        if !buf.is_empty() {
            if let Some(head) = head::parse(buf, config.max_head_size)? {
                return Ok(Some(head));
            }
        }
        let idle = buf.is_empty();
        let until = if idle {
            Instant::now() + config.idle_timeout
        } else {
            *deadline.get_or_insert_with(|| Instant::now() + config.header_timeout)
        };
        buf.reserve(READ_SIZE);
        let read = tokio::select! {
            // The read first: a request is usually there already, and
            // looking at the shutdown first would register a wait on it
            // only to take it down again.
            biased;
            read = timeout_at(until, stream.read_buf(buf)) => read,
            _ = shutdown.changed(), if idle => return Ok(None),
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Ok(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads a request's body whole (at most the configured size, else 413).
/// `Err(None)`: the connection failed or closed mid-body.
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    length: BodyLength,
    expects_continue: bool,
    config: &Config,
) -> Result<Bytes, Option<ProtocolError>> {
    let too_large = || {
        Some(ErrorCode::PayloadTooLarge.error(format!(
            "the request's body is larger than the server takes ({} bytes)",
            config.max_body_size
        )))
    };
    if length == BodyLength::Empty {
        return Ok(Bytes::new());
    }
    if let BodyLength::Length(n) = length {
        if n > config.max_body_size as u64 {
            return Err(too_large());
        }
    }
    if expects_continue && buf.is_empty() {
        write_parts(
            stream,
            &[b"HTTP/1.1 100 Continue\r\n\r\n"],
            config.write_timeout,
        )
        .await
        .map_err(|_| None)?;
    }
    match length {
        BodyLength::Empty => Ok(Bytes::new()),
        BodyLength::Length(n) => {
            let n = n as usize;
            fill(stream, buf, n).await?;
            Ok(buf.split_to(n).freeze())
        }
        BodyLength::Chunked => {
            let mut body = BytesMut::new();
            loop {
                let (used, size) = match head::chunk_size(buf).map_err(Some)? {
                    Some(found) => found,
                    None if buf.len() < 1024 => {
                        fill(stream, buf, buf.len() + 1).await?;
                        continue;
                    }
                    None => {
                        return Err(Some(
                            ErrorCode::BadParameter.error("a chunk size line is too long"),
                        ))
                    }
                };
                if size == 0 {
                    // No trailers: a request's are rare, and skipping them
                    // loosely is how a request gets smuggled past a proxy.
                    fill(stream, buf, used + 2).await?;
                    if &buf[used..used + 2] != b"\r\n" {
                        return Err(Some(
                            ErrorCode::BadParameter
                                .error("a chunked body's trailer fields are not taken"),
                        ));
                    }
                    buf.advance(used + 2);
                    return Ok(body.freeze());
                }
                if size > (config.max_body_size - body.len()) as u64 {
                    return Err(too_large());
                }
                let end = used + size as usize;
                fill(stream, buf, end + 2).await?;
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(Some(
                        ErrorCode::BadParameter.error("malformed chunked body"),
                    ));
                }
                body.extend_from_slice(&buf[used..end]);
                buf.advance(end + 2);
            }
        }
    }
}

/// Reads until `buf` holds at least `n` bytes.
async fn fill(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    n: usize,
) -> Result<(), Option<ProtocolError>> {
    while buf.len() < n {
        // In steps: a head that claims a large body reserves no more than
        // this before the body's bytes come.
        buf.reserve((n - buf.len()).clamp(READ_SIZE, 64 * 1024));
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Calls the app, and drops its future if the client goes away before it
/// answers (a long poll's waiter, a subscriber count, a presence). While
/// it is held, its wake-ups count as answers owed (owed.rs).
async fn call<S, B>(
    service: &mut S,
    request: Request<Body>,
    stream: &TcpStream,
    owed: &Arc<Owed>,
) -> Option<Response<B>>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    if let Err(error) = poll_fn(|cx| service.poll_ready(cx)).await {
        tracing::debug!(error = %error.into(), "the app's service failed");
        return None;
    }
    let mut future = pin!(service.call(request));
    let mut watching = true;
    let mut held: Option<Held> = None;
    let answered = poll_fn(|cx| {
        let held = match &mut held {
            Some(held) if held.wakes(cx.waker()) => held,
            held => held.insert(Held::new(owed.clone(), cx.waker())),
        };
        if let Poll::Ready(answer) = future
            .as_mut()
            .poll(&mut Context::from_waker(held.polling()))
        {
            return Poll::Ready(Some(answer));
        }
        // Watched while the answer waits, and only then: an answer ready
        // goes out without a look at the socket (a cold line per poll,
        // and the poll that answers a woken long poll is on the clock).
        if watching && gone(stream, cx, &mut watching) {
            return Poll::Ready(None);
        }
        Poll::Pending
    });
    match answered.await? {
        Ok(response) => Some(response),
        Err(error) => {
            tracing::debug!(error = %error.into(), "the app's service failed");
            None
        }
    }
}

/// Whether the client has closed its side (or reset): what a held answer
/// watches, without reading (so without a buffer). Bytes that arrive
/// instead (a pipelined request) stop the watch until the answer is done.
fn gone(stream: &TcpStream, cx: &mut Context<'_>, watching: &mut bool) -> bool {
    let mut probe = [0; 1];
    match stream.poll_peek(cx, &mut ReadBuf::new(&mut probe)) {
        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => true,
        Poll::Ready(Ok(_)) => {
            *watching = false;
            false
        }
        Poll::Pending => false,
    }
}

/// Whether the app asked to close the connection after its answer.
fn closes<B>(response: &Response<B>) -> bool {
    head::connection_has(response.headers(), b"close")
}

/// Writes an answer: its head, then its body's frames as they come, each
/// in one write with its framing (the head goes out with the first frame
/// when that is ready at once, as a full body's is). `Ok(true)` when the
/// answer went out whole and the connection can take another request.
async fn write<B>(
    stream: &mut TcpStream,
    response: Response<B>,
    head_request: bool,
    http10: bool,
    keep_alive: bool,
    timeout: Duration,
) -> io::Result<bool>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let mut body = pin!(body);
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::None
    } else if let Some(length) = body.size_hint().exact() {
        Framing::Length(length)
    } else if http10 {
        Framing::Close
    } else {
        Framing::Chunked
    };
    let keep_alive = keep_alive && framing != Framing::Close;
    let mut head = Vec::with_capacity(256);
    head::write_response(&mut head, &parts, framing, keep_alive, http10);
    drop(parts);
    if framing == Framing::None {
        write_parts(stream, &[&head], timeout).await?;
        return Ok(true);
    }
    let mut head = Some(head);
    let mut written = 0;
    let mut watching = true;
    loop {
        let next = if head.is_some() {
            // The first frame: with the head if it is ready now.
            let polled = poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx).map(Next::from)));
            match polled.await {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    write_parts(stream, &[&head.take().unwrap_or_default()], timeout).await?;
                    continue;
                }
            }
        } else {
            // The body first: a frame ready now goes out without a look at
            // the socket (a gone client fails the write instead), so the
            // watch is registered once a message, when the body waits.
            let next = poll_fn(|cx| {
                if let Poll::Ready(polled) = body.as_mut().poll_frame(cx) {
                    return Poll::Ready(Next::from(polled));
                }
                if watching && gone(stream, cx, &mut watching) {
                    return Poll::Ready(Next::Gone);
                }
                Poll::Pending
            });
            next.await
        };
        let head_bytes = head.take().unwrap_or_default();
        let data = match next {
            Next::Data(data) => data,
            Next::End => {
                let end: &[u8] = match framing {
                    Framing::Chunked => b"0\r\n\r\n",
                    _ => b"",
                };
                write_parts(stream, &[&head_bytes, end], timeout).await?;
                return Ok(match framing {
                    Framing::Length(length) => written == length,
                    _ => true,
                });
            }
            Next::Failed | Next::Gone => return Ok(false),
        };
        if data.is_empty() {
            // An empty chunk would end a chunked body.
            write_parts(stream, &[&head_bytes], timeout).await?;
            continue;
        }
        match framing {
            Framing::Chunked => {
                let mut line = [0; 18];
                let line = head::chunk_size_line(data.len(), &mut line);
                write_parts(stream, &[&head_bytes, line, &data, b"\r\n"], timeout).await?;
            }
            Framing::Length(length) => {
                let room = usize::try_from(length - written).unwrap_or(usize::MAX);
                let take = room.min(data.len());
                write_parts(stream, &[&head_bytes, &data[..take]], timeout).await?;
                written += take as u64;
                if take < data.len() {
                    tracing::debug!("the answer's body is longer than its length");
                    return Ok(false);
                }
            }
            Framing::Close | Framing::None => {
                write_parts(stream, &[&head_bytes, &data], timeout).await?
            }
        }
    }
}

/// What an answer's body gave: its error is logged where it is polled, so
/// it need not be `Send`.
enum Next {
    Data(Bytes),
    End,
    Failed,
    /// The client went away.
    Gone,
}

impl<E: Into<BoxError>> From<Option<Result<http_body::Frame<Bytes>, E>>> for Next {
    fn from(polled: Option<Result<http_body::Frame<Bytes>, E>>) -> Self {
        match polled {
            None => Next::End,
            // Trailers: HTTP/1.1 clients rarely want them; dropped.
            Some(Ok(frame)) => Next::Data(frame.into_data().unwrap_or_default()),
            Some(Err(error)) => {
                tracing::debug!(error = %error.into(), "the answer's body failed");
                Next::Failed
            }
        }
    }
}

/// Writes `parts` whole, in one `send` when the socket takes it
/// (the usual case: no timer, no wait), else what is left part by part,
/// for at most `timeout`: a client that stops reading holds its
/// connection, task and subscription that long, not for ever.
async fn write_parts(stream: &mut TcpStream, parts: &[&[u8]], timeout: Duration) -> io::Result<()> {
    let total: usize = parts.iter().map(|part| part.len()).sum();
    if total == 0 {
        return Ok(());
    }
    // `send`, not `write`: a socket's `write` goes through the file layer
    // first (position lock, permission and fsnotify hooks), and with 10,000
    // subscribers each write finds those structures cold. A message to
    // 10,000 SSE subscribers cost the server 65 ms of CPU instead of 73
    // (pinned; the closing note of #27).
    //
    // Straight to the socket, without tokio's readiness first: a socket
    // almost always has room, and the readiness is one more cold line per
    // write (per subscriber, in a fan-out). When it has none, the rest goes
    // through tokio's `write_all`, which meets the same `EWOULDBLOCK`
    // itself, clears the readiness and waits for room.
    let sent = send(socket2::SockRef::from(&*stream), parts, total);
    let mut done = match sent {
        Ok(done) => done,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            0
        }
        Err(error) => return Err(error),
    };
    if done == total {
        return Ok(());
    }
    // The socket did not take it all (a slow client, a big answer): the
    // rest waits for room, boxed, so that this future stays a few words
    // for the common case (and the state of the connection's task, which
    // holds it, stays compact: fewer cold lines per message written).
    let rest = async move {
        for part in parts {
            if done >= part.len() {
                done -= part.len();
                continue;
            }
            stream.write_all(&part[done..]).await?;
            done = 0;
        }
        Ok(())
    };
    Box::pin(tokio::time::timeout(timeout, rest))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// What is joined into one buffer for one `send`: a frame's parts (its
/// chunk size line, its bytes, its line end) when the frame is small, as
/// most are. One buffer spares the kernel the copy and checks of a vector
/// of parts (`sendmsg`), a per-write cost a fan-out pays per subscriber.
const JOINED_WRITE: usize = 1024;

/// The flags of every `send`: a peer that reset the connection fails the
/// write (`EPIPE`) without a `SIGPIPE`, whatever the process does with that
/// signal, as the standard library's and mio's writes do on Linux. (Rust
/// programs ignore `SIGPIPE` unless they ask otherwise.)
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0;

/// Sends what it can of `parts` (`total` bytes in all) in one system call.
fn send(socket: socket2::SockRef<'_>, parts: &[&[u8]], total: usize) -> io::Result<usize> {
    let mut filled = parts.iter().filter(|part| !part.is_empty());
    match (filled.next(), filled.next()) {
        (Some(only), None) => return socket.send_with_flags(only, SEND_FLAGS),
        (Some(_), Some(_)) if total <= JOINED_WRITE => {
            let mut joined = [0; JOINED_WRITE];
            let mut at = 0;
            for part in parts {
                joined[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            return socket.send_with_flags(&joined[..at], SEND_FLAGS);
        }
        _ => {}
    }
    let mut slices = [IoSlice::new(&[]); 4];
    for (slice, part) in slices.iter_mut().zip(parts) {
        *slice = IoSlice::new(part);
    }
    socket.send_vectored_with_flags(&slices[..parts.len().min(4)], SEND_FLAGS)
}

/// Answers a request this server refuses (malformed, too large), from the
/// protocol's one error table, then closes.
async fn refuse(mut stream: TcpStream, error: ProtocolError) {
    tracing::debug!(%error, "refused a request");
    if write(
        &mut stream,
        error.into_response(),
        false,
        false,
        false,
        LINGER,
    )
    .await
    .is_ok()
    {
        close(stream).await;
    }
}

/// Closes the connection after its last answer: a FIN first, then what
/// the client still sends is read and dropped for a moment, so that the
/// kernel does not reset the connection under the answer.
async fn close(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut scratch = vec![0; 4096];
    let mut left = LINGER_BYTES;
    let _ = timeout(LINGER, async {
        while let Ok(n @ 1..) = stream.read(&mut scratch).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}
