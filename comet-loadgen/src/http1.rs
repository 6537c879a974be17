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
//! fan-out rose from 65 to 76 ms, nchan's by 6% (pinned). HTTP/2 still
//! goes through hyper (client.rs).

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
    let mut decoder = Decoder::new(&head.framing);
    let mut now = clock.now_ns();
    loop {
        let ended = decoder.decode(&mut buf, &mut lines)?;
        if let Some(end) = lines.iter().rposition(|b| *b == b'\n') {
            stamps(&lines[..end], |seq, t| received.record(seq, t, now));
            lines.drain(..=end);
        }
        if ended {
            break;
        }
        buf.reserve(STREAM_READ);
        let read = connection.read_buf(&mut buf).await;
        if read.map_err(|e| format!("body: {e}"))? == 0 {
            break;
        }
        now = clock.now_ns();
    }
    // The answer ended: a last line without its line feed counts too.
    stamps(&lines, |seq, t| received.record(seq, t, now));
    Ok(())
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
    let mut decoder = Decoder::new(framing);
    while !decoder.decode(buf, body)? {
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return match framing {
                Framing::Close => Ok(()),
                _ => Err("the server closed in the middle of an answer".into()),
            };
        }
    }
    Ok(())
}

/// An answer's body, decoded as its bytes come, without I/O: what a read
/// brought is moved out at once, a chunk's part too, so that a stamp is
/// timed by the read that brought it.
struct Decoder {
    framing: Decoding,
}

enum Decoding {
    Length(usize),
    Close,
    /// Next: a chunk size line, `left` bytes of a chunk, or the line end
    /// after a chunk (after the last one: no trailers).
    ChunkSize,
    Chunk(usize),
    ChunkEnd {
        last: bool,
    },
}

impl Decoder {
    fn new(framing: &Framing) -> Self {
        let framing = match framing {
            Framing::Length(length) => Decoding::Length(*length),
            Framing::Chunked => Decoding::ChunkSize,
            Framing::Close => Decoding::Close,
        };
        Self { framing }
    }

    /// Moves what `buf` holds of the body into `out`; `true` once the
    /// body is whole (never, for a body that ends with the connection).
    fn decode(&mut self, buf: &mut BytesMut, out: &mut Vec<u8>) -> Result<bool, String> {
        loop {
            match &mut self.framing {
                Decoding::Close => {
                    out.extend_from_slice(buf);
                    buf.clear();
                    return Ok(false);
                }
                Decoding::Length(left) => {
                    let take = (*left).min(buf.len());
                    out.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    *left -= take;
                    return Ok(*left == 0);
                }
                Decoding::Chunk(left) => {
                    let take = (*left).min(buf.len());
                    out.extend_from_slice(&buf[..take]);
                    buf.advance(take);
                    *left -= take;
                    if *left > 0 {
                        return Ok(false);
                    }
                    self.framing = Decoding::ChunkEnd { last: false };
                }
                Decoding::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        let size = usize::try_from(size).map_err(|_| "a chunk too large")?;
                        self.framing = match size {
                            0 => Decoding::ChunkEnd { last: true },
                            size => Decoding::Chunk(size),
                        };
                    }
                    Ok(httparse::Status::Partial) => return Ok(false),
                    Err(_) => return Err("a malformed chunk size".into()),
                },
                Decoding::ChunkEnd { last } => {
                    if buf.len() < 2 {
                        return Ok(false);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk not ended by CRLF (or trailers, not taken)".into());
                    }
                    buf.advance(2);
                    if *last {
                        return Ok(true);
                    }
                    self.framing = Decoding::ChunkSize;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` to a decoder `step` bytes at a time; what came out,
    /// and whether the body ended.
    fn decode(framing: Framing, bytes: &[u8], step: usize) -> Result<(Vec<u8>, bool), String> {
        let (mut decoder, mut buf, mut out) = (Decoder::new(&framing), BytesMut::new(), Vec::new());
        for piece in bytes.chunks(step) {
            buf.extend_from_slice(piece);
            if decoder.decode(&mut buf, &mut out)? {
                assert!(buf.is_empty(), "nothing read past the body");
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    #[test]
    fn a_body_is_decoded_however_its_bytes_are_split() {
        let chunked = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\n";
        for step in [1, 2, 3, 7, chunked.len()] {
            assert_eq!(
                decode(Framing::Chunked, chunked, step).unwrap(),
                (b"hello!".to_vec(), true),
                "{step} bytes at a time"
            );
        }
        // A chunk's bytes come out as they are read, before the chunk ends.
        let (out, ended) = decode(Framing::Chunked, b"a\r\nhello", 100).unwrap();
        assert_eq!((out.as_slice(), ended), (&b"hello"[..], false));
        assert_eq!(
            decode(Framing::Length(5), b"hello", 2).unwrap(),
            (b"hello".to_vec(), true)
        );
        assert_eq!(
            decode(Framing::Close, b"hello", 2).unwrap(),
            (b"hello".to_vec(), false)
        );
        assert!(decode(Framing::Chunked, b"5\r\nhelloXY", 100).is_err());
        assert!(decode(Framing::Chunked, b"0\r\nTrailer: x\r\n\r\n", 100).is_err());
        assert!(decode(Framing::Chunked, b"zz\r\n", 100).is_err());
        // A size past any buffer is refused or waited for, never a panic.
        let huge = b"ffffffffffffffff\r\nhello";
        let _ = decode(Framing::Chunked, huge, 3);
    }

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
