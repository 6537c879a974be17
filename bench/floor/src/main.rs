//! The floor: the least a tokio server can do to fan a message out over
//! HTTP/1.1, with none of comet's layers (no router, no cursors, no
//! history, one channel whatever the URL names). `bench/floor.sh` runs it
//! beside the quickstart and nginx + nchan, so that what comet's layers cost
//! can be told from what its design costs.
//!
//!     floor tasks [ADDR]    # a task per subscriber, woken by the publish
//!     floor direct [ADDR]   # the publish writes to every subscriber itself
//!
//! - `GET /sse...`: a stream of SSE frames (`id: N`, `data: BODY`), chunked;
//! - `GET /poll...`: a long poll in nchan's dialect (the answer's `Etag` is
//!   the message's number; a poll with `If-None-Match: N` gets message N + 1,
//!   at once or when it is published; `direct` answers polls as `tasks` does);
//! - `POST` (any path): publishes the body (201);
//! - any other `GET`: 200, empty (for a readiness check).
//!
//! `ADDR` defaults to 127.0.0.1:3300. Requests are taken to be well formed:
//! this is a yardstick for a load generator on loopback, not a server.

use bytes::Bytes;
use std::{
    io::Write,
    sync::{Arc, Mutex},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

/// The one channel.
#[derive(Default)]
struct Channel {
    /// Each message as the SSE chunk every subscriber gets (with its chunk
    /// framing), and its body for long polls: encoded once.
    messages: Mutex<Vec<(Bytes, Bytes)>>,
    /// Wakes every waiting subscriber task (`tasks`) and long poll.
    published: Notify,
    /// `direct`: every SSE subscriber's socket, written by the publish.
    sockets: Mutex<Vec<std::net::TcpStream>>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let direct = match args.next().as_deref() {
        Some("tasks") => false,
        Some("direct") => true,
        _ => {
            eprintln!("usage: floor tasks|direct [ADDR]");
            std::process::exit(2);
        }
    };
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:3300".into());
    let listener = TcpListener::bind(&addr).await?;
    let channel = Arc::new(Channel::default());
    loop {
        // Out of descriptors, say: the clients that connected are served.
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                eprintln!("accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        stream.set_nodelay(true)?;
        let channel = channel.clone();
        tokio::spawn(async move {
            let _ = serve(stream, channel, direct).await;
        });
    }
}

async fn serve(mut stream: TcpStream, channel: Arc<Channel>, direct: bool) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let Some(end) = read_head(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        let head = buf[..end].to_vec();
        buf.drain(..end);
        if head.starts_with(b"POST ") {
            let length = header_number(&head, b"content-length:").unwrap_or(0) as usize;
            while buf.len() < length {
                if read_more(&mut stream, &mut buf).await? == 0 {
                    return Ok(());
                }
            }
            let body: Vec<u8> = buf.drain(..length).collect();
            publish(&channel, &body, direct);
            stream
                .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                .await?;
        } else if head.starts_with(b"GET /sse") {
            return stream_sse(stream, channel, direct).await;
        } else if head.starts_with(b"GET /poll") {
            let after = header_number(&head, b"if-none-match:");
            answer_poll(&mut stream, &channel, after).await?;
        } else {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await?;
        }
    }
}

/// Stores the message, then hands it out: to the subscribers' sockets
/// (`direct`), and by waking every waiting task.
fn publish(channel: &Channel, body: &[u8], direct: bool) {
    let chunk = {
        let mut messages = channel.messages.lock().unwrap();
        let id = messages.len() + 1;
        let mut frame = format!("id: {id}\ndata: ").into_bytes();
        frame.extend_from_slice(body);
        frame.extend_from_slice(b"\n\n");
        let mut chunk = format!("{:x}\r\n", frame.len()).into_bytes();
        chunk.extend_from_slice(&frame);
        chunk.extend_from_slice(b"\r\n");
        let chunk = Bytes::from(chunk);
        messages.push((chunk.clone(), Bytes::copy_from_slice(body)));
        chunk
    };
    if direct {
        // A socket that does not take the whole chunk at once (full, or
        // gone) is dropped: a floor, not a server.
        channel
            .sockets
            .lock()
            .unwrap()
            .retain_mut(|socket| matches!(socket.write(&chunk), Ok(n) if n == chunk.len()));
    }
    channel.published.notify_waiters();
}

/// An SSE answer: in its own task until the client goes (`tasks`), or
/// handed to the publishes (`direct`).
async fn stream_sse(
    mut stream: TcpStream,
    channel: Arc<Channel>,
    direct: bool,
) -> std::io::Result<()> {
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await?;
    if direct {
        channel.sockets.lock().unwrap().push(stream.into_std()?);
        return Ok(());
    }
    let mut seen = channel.messages.lock().unwrap().len();
    loop {
        // Armed before the look at the messages: no publish is missed.
        let published = channel.published.notified();
        let mut published = std::pin::pin!(published);
        published.as_mut().enable();
        loop {
            let next = channel
                .messages
                .lock()
                .unwrap()
                .get(seen)
                .map(|m| m.0.clone());
            let Some(chunk) = next else { break };
            stream.write_all(&chunk).await?;
            seen += 1;
        }
        published.await;
    }
}

/// Answers one long poll: message `after + 1`, waiting for it if need be;
/// without `after`, the next message published.
async fn answer_poll(
    stream: &mut TcpStream,
    channel: &Channel,
    after: Option<u64>,
) -> std::io::Result<()> {
    let mut want = after.unwrap_or_else(|| channel.messages.lock().unwrap().len() as u64);
    let body = loop {
        let published = channel.published.notified();
        let mut published = std::pin::pin!(published);
        published.as_mut().enable();
        let (count, next) = {
            let messages = channel.messages.lock().unwrap();
            (
                messages.len() as u64,
                messages.get(want as usize).map(|m| m.1.clone()),
            )
        };
        if let Some(body) = next {
            break body;
        }
        // An Etag from ahead (another run's): the next message then.
        want = want.min(count);
        published.await;
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nEtag: {}\r\nContent-Length: {}\r\n\r\n",
        want + 1,
        body.len()
    );
    let mut answer = head.into_bytes();
    answer.extend_from_slice(&body);
    stream.write_all(&answer).await
}

/// Reads until `buf` holds a whole head; its length, or `None` once the
/// client closed.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(at + 4));
        }
        if read_more(stream, buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut scratch = [0; 1024];
    let n = stream.read(&mut scratch).await?;
    buf.extend_from_slice(&scratch[..n]);
    Ok(n)
}

/// The number a header (`name` in lower case, with its colon) starts with.
fn header_number(head: &[u8], name: &[u8]) -> Option<u64> {
    let at = head
        .windows(name.len())
        .position(|w| w.eq_ignore_ascii_case(name))?
        + name.len();
    let digits: Vec<u8> = head[at..]
        .iter()
        .skip_while(|c| **c == b' ' || **c == b'"')
        .take_while(|c| c.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}
