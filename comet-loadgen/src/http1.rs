//! Subscribers over HTTP/1.1, written and read here with `httparse` rather
//! than through hyper's client: long polls ([`follow`]) and streams, SSE or
//! ndjson ([`stream`]), one task per subscriber and one read per delivery.
//!
//! hyper's client costs a connection task, a channel and two task wake-ups
//! per request or frame. Through it, the generator spent about as much CPU
//! per message as the servers it measured, pinned: 13.7 ms per message of
//! 1,000 long polls (comet 15, nchan 13.5), 61 ms per message to 10,000
//! SSE subscribers (comet 65). It measured itself, and unevenly: on
//! loopback a server's send runs the reader's receive path and, when the
//! reader sleeps in `epoll_wait`, wakes it, all on the server's CPU. A
//! generator that could not keep up with comet never slept, so comet's
//! sends skipped the wake-ups that nchan's, slower, always paid. With this
//! reader the generator keeps up with both: comet's CPU per message of the
//! fan-out rose from 65 to 76 ms, nchan's did not move. HTTP/2 still goes
//! through hyper (client.rs).

use crate::{
    args::Dialect,
    client::{stamps, Target},
    stats::Received,
    Clock,
};
use bytes::{Buf, BytesMut};
use std::{io::Write, sync::Arc};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};

/// The most header lines an answer may have.
const MAX_HEADERS: usize = 32;

/// What an answer's head says.
#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    etag: Option<Vec<u8>>,
    modified: Option<Vec<u8>>,
    framing: Framing,
    /// The server closes the connection after this answer.
    close: bool,
}

/// How an answer's body ends.
#[derive(Debug, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// One subscriber's long polls, as `client::subscribe` makes them over
/// HTTP/1.1: the first with `timeout=0` (comet) or counted once sent (raw),
/// then each with the last answer's `ETag` (and, raw, `Last-Modified`),
/// recording every stamp until `received` has them all. A connection the
/// server closes is opened again.
pub async fn follow(
    target: Arc<Target>,
    dialect: Dialect,
    clock: Clock,
    connected: Arc<Semaphore>,
    received: &mut Received,
) -> Result<(), String> {
    let mut stream: Option<TcpStream> = None;
    let mut buf = BytesMut::with_capacity(4096);
    let mut request = Vec::with_capacity(256);
    let mut body = Vec::new();
    let (mut etag, mut modified): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    let mut first = true;
    let mut counted = false;
    loop {
        // A kept-alive connection the server closed is opened again; a
        // new one closed before it answers is the server refusing.
        let fresh = stream.is_none();
        let connection = match &mut stream {
            Some(connection) => connection,
            None => {
                buf.clear();
                stream.insert(connect(&target).await?)
            }
        };
        request.clear();
        let path = target.path();
        let _ = write!(request, "GET {path}");
        if first && dialect == Dialect::Comet {
            // Ask for the head cursor at once: from then on nothing is missed.
            request.extend_from_slice(if path.contains('?') {
                b"&timeout=0"
            } else {
                b"?timeout=0"
            });
        }
        let _ = write!(request, " HTTP/1.1\r\nHost: {}\r\n", target.host());
        for (name, value) in [("If-None-Match", &etag), ("If-Modified-Since", &modified)] {
            if let Some(value) = value {
                request.extend_from_slice(name.as_bytes());
                request.extend_from_slice(b": ");
                request.extend_from_slice(value);
                request.extend_from_slice(b"\r\n");
            }
        }
        request.extend_from_slice(b"\r\n");
        if first && dialect == Dialect::Raw && !counted {
            // A raw server holds the first poll: count it as connected once sent.
            connected.add_permits(1);
            counted = true;
        }
        let head = match connection.write_all(&request).await {
            Ok(()) => read_head(connection, &mut buf).await?,
            Err(_) => None,
        };
        let Some(head) = head else {
            if fresh {
                return Err("the server closed a new connection without an answer".into());
            }
            stream = None;
            continue;
        };
        read_body(connection, &mut buf, &head.framing, &mut body).await?;
        let now = clock.now_ns();
        etag = head.etag.or(etag);
        modified = head.modified.or(modified);
        if first && dialect == Dialect::Comet {
            connected.add_permits(1);
        }
        first = false;
        if (200..300).contains(&head.status) {
            stamps(&body, |seq, t| received.record(seq, t, now));
        } else if head.status != 304 && head.status != 408 {
            return Err(format!("poll answered {}", head.status));
        }
        if received.done() {
            return Ok(());
        }
        if head.close || head.framing == Framing::Close {
            stream = None;
        }
    }
}

/// One stream subscriber (`accept` picks SSE or ndjson): one request, then
/// every stamp in the answer's body, timed when the bytes holding it are
/// read, until the server ends the answer.
pub async fn stream(
    target: Arc<Target>,
    accept: &str,
    clock: Clock,
    connected: Arc<Semaphore>,
    received: &mut Received,
) -> Result<(), String> {
    let mut connection = connect(&target).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n\r\n",
        target.path(),
        target.host()
    );
    connection
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("request: {e}"))?;
    let mut buf = BytesMut::with_capacity(STREAM_READ);
    let head = read_head(&mut connection, &mut buf)
        .await?
        .ok_or("the server closed without an answer")?;
    if !(200..300).contains(&head.status) {
        return Err(format!("subscribe answered {}", head.status));
    }
    connected.add_permits(1);
    // Stamps sit inside lines: a partial line waits for the next read.
    let mut lines = Vec::new();
    let mut left = match head.framing {
        Framing::Length(length) => Some(length),
        _ => None,
    };
    let mut now = clock.now_ns();
    loop {
        match head.framing {
            Framing::Chunked => loop {
                let (used, size) = match httparse::parse_chunk_size(&buf) {
                    Ok(httparse::Status::Complete(found)) => found,
                    Ok(httparse::Status::Partial) => break,
                    Err(_) => return Err("a malformed chunk size".into()),
                };
                let size = usize::try_from(size).map_err(|_| "a chunk too large")?;
                if buf.len() < used + size + 2 {
                    break;
                }
                if &buf[used + size..used + size + 2] != b"\r\n" {
                    return Err("a chunk not ended by CRLF".into());
                }
                if size == 0 {
                    return Ok(());
                }
                lines.extend_from_slice(&buf[used..used + size]);
                buf.advance(used + size + 2);
            },
            _ => {
                let take = left.map_or(buf.len(), |left| left.min(buf.len()));
                lines.extend_from_slice(&buf[..take]);
                buf.advance(take);
                if let Some(left) = &mut left {
                    *left -= take;
                    if *left == 0 {
                        return Ok(());
                    }
                }
            }
        }
        if let Some(end) = lines.iter().rposition(|b| *b == b'\n') {
            stamps(&lines[..end], |seq, t| received.record(seq, t, now));
            lines.drain(..=end);
        }
        buf.reserve(STREAM_READ);
        if connection
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("body: {e}"))?
            == 0
        {
            return Ok(());
        }
        now = clock.now_ns();
    }
}

/// What a stream subscriber reads at once, at least.
const STREAM_READ: usize = 4096;

async fn connect(target: &Target) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect {}: {e}", target.addr))?;
    stream.set_nodelay(true).ok();
    Ok(stream)
}

/// Reads an answer's head (skipping any 1xx). `Ok(None)`: the server closed
/// the connection before answering, as it may a kept-alive one.
async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Option<Head>, String> {
    loop {
        if !buf.is_empty() {
            if let Some((used, head)) = parse_head(buf)? {
                buf.advance(used);
                if (100..200).contains(&head.status) {
                    continue;
                }
                return Ok(Some(head));
            }
        }
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return match buf.is_empty() {
                true => Ok(None),
                false => Err("the server closed in the middle of an answer's head".into()),
            };
        }
    }
}

/// The head at the start of `bytes` and its length, if it is all there.
fn parse_head(bytes: &[u8]) -> Result<Option<(usize, Head)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let used = match response.parse(bytes) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("a malformed answer: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let mut head = Head {
        status,
        etag: None,
        modified: None,
        framing: Framing::Close,
        close: response.version == Some(0),
    };
    let mut length = None;
    for header in response.headers.iter() {
        let value = header.value;
        if header.name.eq_ignore_ascii_case("etag") {
            head.etag = Some(value.to_vec());
        } else if header.name.eq_ignore_ascii_case("last-modified") {
            head.modified = Some(value.to_vec());
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(value).unwrap_or("");
            length = Some(
                text.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("a bad content-length: {text:?}"))?,
            );
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding is chunked, or the body ends with the connection.
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                head.framing = Framing::Chunked;
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            let mut options = value.split(|b| *b == b',').map(<[u8]>::trim_ascii);
            if options.any(|option| option.eq_ignore_ascii_case(b"close")) {
                head.close = true;
            }
        }
    }
    if status == 204 || status == 304 || (100..200).contains(&status) {
        head.framing = Framing::Length(0);
    } else if head.framing != Framing::Chunked {
        if let Some(length) = length {
            head.framing = Framing::Length(length);
        }
    }
    Ok(Some((used, head)))
}

/// Reads an answer's body into `body` (emptied first).
async fn read_body(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    framing: &Framing,
    body: &mut Vec<u8>,
) -> Result<(), String> {
    body.clear();
    match framing {
        Framing::Length(length) => {
            fill(stream, buf, *length).await?;
            body.extend_from_slice(&buf[..*length]);
            buf.advance(*length);
        }
        Framing::Chunked => loop {
            let (used, size) = match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete(found)) => found,
                Ok(httparse::Status::Partial) => {
                    fill(stream, buf, buf.len() + 1).await?;
                    continue;
                }
                Err(_) => return Err("a malformed chunk size".into()),
            };
            let size = usize::try_from(size).map_err(|_| "a chunk too large")?;
            // The chunk, then its CRLF (after the last chunk: no trailers,
            // which servers of long polls do not send).
            fill(stream, buf, used + size + 2).await?;
            if &buf[used + size..used + size + 2] != b"\r\n" {
                return Err("a chunk not ended by CRLF (or trailers, not taken)".into());
            }
            body.extend_from_slice(&buf[used..used + size]);
            buf.advance(used + size + 2);
            if size == 0 {
                return Ok(());
            }
        },
        Framing::Close => {
            while stream.read_buf(buf).await.map_err(|e| e.to_string())? > 0 {}
            body.extend_from_slice(buf);
            buf.clear();
        }
    }
    Ok(())
}

/// Reads until `buf` holds `n` bytes.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut, n: usize) -> Result<(), String> {
    while buf.len() < n {
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the server closed in the middle of an answer".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_gives_its_status_validators_and_framing() {
        let text = b"HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nLast-Modified: Tue, 08 Dec 2026 00:30:25 GMT\r\nContent-Length: 15\r\n\r\nhello";
        let (used, head) = parse_head(text).unwrap().unwrap();
        assert_eq!(&text[used..], b"hello");
        assert_eq!(head.status, 200);
        assert_eq!(head.etag.as_deref(), Some(&b"\"abc\""[..]));
        assert_eq!(
            head.modified.as_deref(),
            Some(&b"Tue, 08 Dec 2026 00:30:25 GMT"[..])
        );
        assert_eq!(head.framing, Framing::Length(15));
        assert!(!head.close);
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nconnection: keep-alive, Close\r\n\r\n";
        let head = parse_head(chunked).unwrap().unwrap().1;
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.close);
        let not_modified = b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n";
        assert_eq!(
            parse_head(not_modified).unwrap().unwrap().1.framing,
            Framing::Length(0)
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nETag").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_head(b"SMTP 220\r\n\r\n").is_err());
    }
}
