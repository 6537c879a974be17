//! The node's pub/sub connection to one shard, as the node's task sees it:
//! subscribe, unsubscribe, ping, and a stream of what Redis announces.
//!
//! On one Redis (or a static list of them) it is the `redis` crate's
//! `PubSub` with `SUBSCRIBE`. On a Redis Cluster it is comet's own, for
//! sharded pub/sub (`SSUBSCRIBE`), which the crate's connection cannot hold
//! safely: there Redis may unsubscribe a channel unprompted (its slot moved
//! to another shard), and a connection that takes every `sunsubscribe` for
//! the confirmation of a command it sent would answer the wrong command.
//! Here a `sunsubscribe` is a confirmation only for a channel this
//! connection asked to leave; any other is an event, which makes the node
//! learn where the slot went. Replies are parsed by the `redis` crate's
//! parser; `SSUBSCRIBE` is sent once per slot (one naming channels of
//! several slots fails with `CROSSSLOT`).

use crate::backplane::Failure;
use crate::shard;
use futures_util::{stream::BoxStream, StreamExt};
use redis::Value;
use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    io::Read,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::tcp::OwnedWriteHalf,
    sync::{mpsc, Notify},
    task::JoinHandle,
};

/// What Redis announced.
pub(crate) enum Event {
    /// A message on `channel`.
    Message { channel: String, payload: Vec<u8> },
    /// Redis unsubscribed `channel` unprompted: its slot moved.
    Unsubscribed(String),
}

/// The sending half: subscribe, unsubscribe, ping.
pub(crate) enum Sink {
    Plain(redis::aio::PubSubSink),
    Sharded(Sharded),
}

/// What Redis announces, as a stream that ends when the connection does.
pub(crate) type Stream = BoxStream<'static, Event>;

/// Opens the pub/sub connection on `client`: comet's own, sharded, on a
/// cluster.
pub(crate) async fn open(
    client: &redis::Client,
    sharded: bool,
    timeout: Duration,
) -> Result<(Sink, Stream), Failure> {
    let connecting = async {
        if sharded {
            let (sink, stream) = Sharded::connect(client).await?;
            Ok::<_, Failure>((Sink::Sharded(sink), stream))
        } else {
            let pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|error| Failure::Backplane(error.to_string()))?;
            let (sink, stream) = pubsub.split();
            let stream = stream
                .map(|message| Event::Message {
                    channel: message.get_channel_name().to_owned(),
                    payload: message.get_payload_bytes().to_vec(),
                })
                .boxed();
            Ok((Sink::Plain(sink), stream))
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| Failure::Backplane("connecting timed out".to_owned()))?
}

impl Sink {
    /// Subscribes to channels (`SSUBSCRIBE` where sharded).
    pub(crate) async fn subscribe(&mut self, channels: Vec<String>) -> Result<(), String> {
        match self {
            Self::Plain(sink) => sink.subscribe(channels).await.map_err(|e| e.to_string()),
            Self::Sharded(sink) => sink.command(Kind::Join, "SSUBSCRIBE", channels).await,
        }
    }

    /// Subscribes to channels with plain `SUBSCRIBE` (on a cluster, a
    /// channel every node hears, whatever node a publish reaches).
    pub(crate) async fn subscribe_everywhere(
        &mut self,
        channels: Vec<String>,
    ) -> Result<(), String> {
        match self {
            Self::Plain(sink) => sink.subscribe(channels).await.map_err(|e| e.to_string()),
            Self::Sharded(sink) => sink.command(Kind::JoinPlain, "SUBSCRIBE", channels).await,
        }
    }

    /// Unsubscribes from channels.
    pub(crate) async fn unsubscribe(&mut self, channels: Vec<String>) -> Result<(), String> {
        match self {
            Self::Plain(sink) => sink.unsubscribe(channels).await.map_err(|e| e.to_string()),
            Self::Sharded(sink) => sink.command(Kind::Leave, "SUNSUBSCRIBE", channels).await,
        }
    }

    /// Asks for an answer, to find a connection that died in silence.
    pub(crate) async fn ping(&mut self) -> Result<(), String> {
        match self {
            Self::Plain(sink) => sink
                .ping::<Value>()
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Self::Sharded(sink) => sink.command(Kind::Ping, "PING", Vec::new()).await,
        }
    }
}

/// What a command waits to hear confirmed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Join,
    JoinPlain,
    Leave,
    Ping,
}

/// The replies a command waits for, counted by the reader. Redis answers
/// in order, each command with one confirmation per channel it names, or
/// with one error.
#[derive(Default)]
struct Waiting {
    /// Confirmations still to come for each command sent, oldest first.
    commands: VecDeque<usize>,
    /// Errors Redis answered instead.
    failed: Vec<String>,
    /// The connection ended.
    closed: Option<String>,
    /// Channels this connection asked to leave, whose `sunsubscribe` is a
    /// confirmation rather than news.
    leaving: HashSet<String>,
}

/// comet's own sharded pub/sub connection (the sending half).
pub(crate) struct Sharded {
    writer: OwnedWriteHalf,
    waiting: Arc<(Mutex<Waiting>, Notify)>,
    reader: JoinHandle<()>,
}

impl Drop for Sharded {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock(waiting: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    waiting.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sharded {
    async fn connect(client: &redis::Client) -> Result<(Self, Stream), Failure> {
        let info = client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(Failure::Backplane(
                "a Redis Cluster over TLS or a Unix socket is not supported".to_owned(),
            ));
        };
        let socket = tokio::net::TcpStream::connect((host.as_str(), *port))
            .await
            .map_err(|error| Failure::Backplane(format!("connecting failed: {error}")))?;
        let _ = socket.set_nodelay(true);
        let (mut read, mut writer) = socket.into_split();
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            auth.arg(password);
            writer
                .write_all(&auth.get_packed_command())
                .await
                .map_err(|error| Failure::Backplane(format!("AUTH failed: {error}")))?;
            let mut frames = Frames::default();
            match frames.next(&mut read).await {
                Ok(Value::Okay) => {}
                Ok(other) => return Err(Failure::Backplane(format!("AUTH failed: {other:?}"))),
                Err(error) => return Err(Failure::Backplane(format!("AUTH failed: {error}"))),
            }
        }
        let waiting = Arc::new((Mutex::new(Waiting::default()), Notify::new()));
        let (events, heard) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(read, waiting.clone(), events));
        let stream = futures_util::stream::unfold(heard, |mut heard| async move {
            heard.recv().await.map(|item| (item, heard))
        })
        .boxed();
        Ok((
            Self {
                writer,
                waiting,
                reader,
            },
            stream,
        ))
    }

    /// Sends `name` for `channels` (one command per slot for the sharded
    /// ones) and waits for every reply; the errors Redis answered, joined.
    async fn command(
        &mut self,
        kind: Kind,
        name: &str,
        channels: Vec<String>,
    ) -> Result<(), String> {
        let mut commands = Vec::new();
        if kind == Kind::Ping {
            commands.push((redis::cmd("PING"), 1));
        } else {
            let mut groups: BTreeMap<u16, Vec<&String>> = BTreeMap::new();
            for channel in &channels {
                let slot = if kind == Kind::JoinPlain {
                    0
                } else {
                    shard::key_slot(channel)
                };
                groups.entry(slot).or_default().push(channel);
            }
            for group in groups.values() {
                let mut command = redis::cmd(name);
                command.arg(group);
                commands.push((command, group.len()));
            }
        }
        if commands.is_empty() {
            return Ok(());
        }
        {
            let mut waiting = lock(&self.waiting.0);
            if let Some(closed) = &waiting.closed {
                return Err(format!("{name} failed: {closed}"));
            }
            waiting.commands = commands.iter().map(|(_, replies)| *replies).collect();
            waiting.failed.clear();
            if kind == Kind::Leave {
                waiting.leaving.extend(channels.iter().cloned());
            }
        }
        let mut bytes = Vec::new();
        for (command, _) in &commands {
            bytes.extend_from_slice(&command.get_packed_command());
        }
        self.writer
            .write_all(&bytes)
            .await
            .map_err(|error| format!("{name} failed: {error}"))?;
        loop {
            let notified = self.waiting.1.notified();
            {
                let waiting = lock(&self.waiting.0);
                if let Some(closed) = &waiting.closed {
                    return Err(format!("{name} failed: {closed}"));
                }
                if waiting.commands.is_empty() {
                    if waiting.failed.is_empty() {
                        return Ok(());
                    }
                    return Err(format!("{name} failed: {}", waiting.failed.join("; ")));
                }
                drop(waiting);
            }
            notified.await;
        }
    }
}

/// Reads what Redis sends until the connection ends: confirmations to the
/// waiting command, the rest to the stream.
async fn read_loop(
    mut read: tokio::net::tcp::OwnedReadHalf,
    waiting: Arc<(Mutex<Waiting>, Notify)>,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut frames = Frames::default();
    loop {
        let value = match frames.next(&mut read).await {
            Ok(value) => value,
            Err(error) => {
                tracing::debug!(%error, "sharded pub/sub connection ended");
                lock(&waiting.0).closed = Some(error);
                waiting.1.notify_one();
                return; // the stream ends with the sender
            }
        };
        let confirmed = match &value {
            Value::Array(parts) | Value::Push { data: parts, .. } => {
                let text = |index: usize| match parts.get(index) {
                    Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                    Some(Value::SimpleString(text)) => text.clone(),
                    _ => String::new(),
                };
                match text(0).to_ascii_lowercase().as_str() {
                    "smessage" | "message" => {
                        let payload = match parts.get(2) {
                            Some(Value::BulkString(bytes)) => bytes.clone(),
                            _ => Vec::new(),
                        };
                        let _ = events.send(Event::Message {
                            channel: text(1),
                            payload,
                        });
                        false
                    }
                    "sunsubscribe" => {
                        let channel = text(1);
                        if lock(&waiting.0).leaving.remove(&channel) {
                            true
                        } else {
                            let _ = events.send(Event::Unsubscribed(channel));
                            false
                        }
                    }
                    "ssubscribe" | "subscribe" | "unsubscribe" | "pong" => true,
                    _ => false,
                }
            }
            Value::SimpleString(text) if text.eq_ignore_ascii_case("pong") => true,
            Value::ServerError(error) => {
                // The whole command failed: none of its confirmations come.
                let mut state = lock(&waiting.0);
                state.commands.pop_front();
                state.failed.push(format!("{error:?}"));
                drop(state);
                waiting.1.notify_one();
                false
            }
            _ => false,
        };
        if confirmed {
            let mut state = lock(&waiting.0);
            if let Some(left) = state.commands.front_mut() {
                *left -= 1;
                if *left == 0 {
                    state.commands.pop_front();
                }
            }
            drop(state);
            waiting.1.notify_one();
        }
    }
}

/// Whole RESP values out of a byte stream, parsed by the `redis` crate's
/// parser, which keeps the bytes it read past a value, and a value cut
/// short, for the next call.
#[derive(Default)]
struct Frames {
    parser: redis::Parser,
    /// Read from the socket, not yet handed to the parser.
    fresh: Vec<u8>,
}

impl Frames {
    async fn next(&mut self, read: &mut (impl AsyncReadExt + Unpin)) -> Result<Value, String> {
        loop {
            let mut reader = Partial {
                bytes: &self.fresh,
                at: 0,
            };
            let parsed = self.parser.parse_value(&mut reader);
            let handed = reader.at;
            self.fresh.drain(..handed);
            match parsed {
                Ok(value) => return Ok(value),
                // Not a whole value yet (the bytes ran out): read on.
                Err(error) if is_short(&error) => {}
                Err(error) => return Err(format!("unreadable reply: {error}")),
            }
            let mut chunk = [0_u8; 16 * 1024];
            let count = read
                .read(&mut chunk)
                .await
                .map_err(|error| format!("read failed: {error}"))?;
            if count == 0 {
                return Err("the connection closed".to_owned());
            }
            self.fresh.extend_from_slice(&chunk[..count]);
        }
    }
}

/// Whether a subscribe failed because the shard no longer serves a
/// channel's slot (it moved, or is moving).
pub(crate) fn moved(error: &str) -> bool {
    ["MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"]
        .iter()
        .any(|code| error.contains(code))
}

/// Whether a parse stopped only for want of bytes.
fn is_short(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Io
}

/// Hands the parser the bytes read, then says there are no more for now.
struct Partial<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Read for Partial<'_> {
    fn read(&mut self, into: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.bytes[self.at..];
        if rest.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(into.len());
        into[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    /// The parser gets bytes as a socket gives them: values cut anywhere,
    /// several in one read.
    #[tokio::test]
    async fn values_are_read_whole_however_the_bytes_come() {
        let wire = b"*3\r\n$8\r\nsmessage\r\n$5\r\nroom1\r\n$12\r\nhello\r\nthere\r\n\
                     *3\r\n$12\r\nsunsubscribe\r\n$5\r\nroom2\r\n:0\r\n+PONG\r\n";
        let expected = [
            Value::Array(vec![
                bulk("smessage"),
                bulk("room1"),
                bulk("hello\r\nthere"),
            ]),
            Value::Array(vec![bulk("sunsubscribe"), bulk("room2"), Value::Int(0)]),
            Value::SimpleString("PONG".to_owned()),
        ];
        for size in [1, 2, 3, 7, 64, wire.len()] {
            let (mut client, mut server) = tokio::io::duplex(4096);
            let chunks: Vec<Vec<u8>> = wire.chunks(size).map(<[u8]>::to_vec).collect();
            let writer = tokio::spawn(async move {
                for chunk in chunks {
                    server.write_all(&chunk).await.unwrap();
                    server.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
                server
            });
            let mut frames = Frames::default();
            for value in &expected {
                assert_eq!(
                    &frames.next(&mut client).await.unwrap(),
                    value,
                    "chunks of {size}"
                );
            }
            drop(writer.await.unwrap());
            assert!(frames.next(&mut client).await.is_err(), "closed");
        }
    }
}
