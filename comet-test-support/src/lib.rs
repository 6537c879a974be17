//! What comet's tests share (unpublished): a real server on an ephemeral
//! loopback port for every adapter, and small clients that read what a
//! browser would (here); the runner for tests that need a tool and its
//! policy ([`tool`]); headless Chromium ([`browser`]); clients nobody here
//! wrote ([`clients`]); real `redis-server` and `redis-sentinel` processes
//! ([`redis_server`], [`sentinel`]); Redis engine nodes ([`nodes`]); and a
//! TCP proxy that cuts and slows connections ([`tcp_proxy`]).

pub mod browser;
pub mod clients;
pub mod nodes;
pub mod redis_cluster;
pub mod redis_server;
pub mod sentinel;
pub mod tcp_proxy;
pub mod tool;

use bytes::Bytes;
use comet_push::{
    protocol::{PublishRoute, SubscribeRoute},
    Hub,
};
use futures_util::StreamExt;
use std::{future::Future, net::SocketAddr, pin::Pin, time::Duration};
use tokio::time::timeout;
use warp::{Filter, Reply};

/// Every wait in the tests is bounded by this.
pub const BOUND: Duration = Duration::from_secs(10);

pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    within(BOUND, what, f).await
}

/// `f`, or a panic naming `what` after `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits until `condition` holds, checking every few milliseconds (for
/// counters, which offer nothing to await), for at most [`BOUND`].
pub async fn eventually(what: &str, condition: impl FnMut() -> bool) {
    eventually_within(BOUND, what, condition).await
}

/// [`eventually`], for at most `limit`.
pub async fn eventually_within(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    within(limit, what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// The workspace's root directory (where `tests/` and `comet-core/` are).
pub fn workspace_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("comet-test-support sits in the workspace")
}

/// A server running on 127.0.0.1, stopped when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// The server stacks the end-to-end suite runs against: every test of the
/// suite runs once per adapter (see `each_adapter!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    Axum,
    Warp,
}

/// A comet route at a path, in adapter-neutral terms.
pub enum Mount {
    Subscribe(&'static str, SubscribeRoute),
    Publish(&'static str, PublishRoute),
}

/// Runs `$name(Adapter::Axum)` and `$name(Adapter::Warp)` as separate tests.
#[macro_export]
macro_rules! each_adapter {
    ($($name:ident),* $(,)?) => {
        mod on_axum {
            $( #[tokio::test] async fn $name() { super::$name($crate::Adapter::Axum).await } )*
        }
        mod on_warp {
            $( #[tokio::test] async fn $name() { super::$name($crate::Adapter::Warp).await } )*
        }
    };
}

impl TestServer {
    /// The app under test on `adapter`: `GET /hello` of its own, plus `mounts`.
    pub async fn start(adapter: Adapter, hub: &Hub, mounts: Vec<Mount>) -> Self {
        match adapter {
            Adapter::Axum => Self::axum(axum_app(hub, mounts)).await,
            Adapter::Warp => Self::warp(warp_app(hub, mounts)).await,
        }
    }

    pub async fn axum(app: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, task }
    }

    pub async fn warp(filter: warp::filters::BoxedFilter<(warp::reply::Response,)>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(warp::serve(filter).incoming(listener).run());
        Self { addr, task }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The routes of `mounts`, by the rules every adapter shares.
fn comet_mount(mounts: Vec<Mount>) -> comet_push::protocol::Mount {
    mounts.into_iter().fold(
        comet_push::protocol::Mount::new(),
        |all, mount| match mount {
            Mount::Subscribe(path, route) => all.route(path, route),
            Mount::Publish(path, route) => all.publish(path, route),
        },
    )
}

pub fn axum_app(hub: &Hub, mounts: Vec<Mount>) -> axum::Router {
    let layer = comet_push::tower::CometLayer::from_mount(hub.clone(), comet_mount(mounts));
    axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|| async { "hello from the app" }),
        )
        .layer(layer)
}

pub fn warp_app(
    hub: &Hub,
    mounts: Vec<Mount>,
) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let hello = warp::path!("hello").map(|| "hello from the app".into_response());
    comet_warp::mount(hub.clone(), comet_mount(mounts))
        .or(hello)
        .unify()
        .boxed()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(BOUND)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// One SSE event as a browser's EventSource parses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads an SSE response: raw bytes for framing checks, events for the
/// rest, parsed line by line as the WHATWG spec says (a blank line ends an
/// event; one with no data dispatches nothing).
pub struct SseReader {
    stream: Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
    /// Every byte received so far.
    pub raw: Vec<u8>,
    /// Comment lines seen (heartbeats and the preamble).
    pub comments: usize,
    /// The last `retry:` seen.
    pub retry: Option<u64>,
    /// The event being read, and whether it has a data line yet.
    pending: SseEvent,
    has_data: bool,
    /// Blank lines that ended no event (an empty block, which some clients
    /// yield as an event anyway).
    pub empty_blocks: usize,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            stream: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            raw: Vec::new(),
            comments: 0,
            retry: None,
            pending: SseEvent::default(),
            has_data: false,
            empty_blocks: 0,
        }
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8(line[..line.len() - 1].to_vec()).unwrap();
            }
            let chunk = bounded("sse bytes", self.stream.next())
                .await
                .expect("stream ended")
                .unwrap();
            self.raw.extend_from_slice(&chunk);
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Waits for the preamble (a comment line), proving the subscription exists.
    pub async fn opened(&mut self) {
        while self.comments == 0 {
            assert!(self.step().await.is_none(), "an event before the preamble");
        }
    }

    /// Reads one line; returns the event it completes, if any.
    async fn step(&mut self) -> Option<SseEvent> {
        let line = self.line().await;
        if line.is_empty() {
            if !self.has_data {
                self.empty_blocks += 1;
                self.pending = SseEvent::default();
                return None;
            }
            self.has_data = false;
            return Some(std::mem::take(&mut self.pending));
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((&line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.pending.id = Some(value.to_owned()),
            "event" => self.pending.event = Some(value.to_owned()),
            "retry" => self.retry = Some(value.parse().unwrap()),
            "data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.has_data = true;
            }
            other => panic!("unexpected SSE field {other:?}"),
        }
        None
    }

    pub async fn next_event(&mut self) -> SseEvent {
        loop {
            if let Some(event) = self.step().await {
                return event;
            }
        }
    }

    /// Reads until the server ends the body; fails on a transport error.
    pub async fn until_end(&mut self) {
        bounded("sse end", async {
            while let Some(chunk) = self.stream.next().await {
                self.raw
                    .extend_from_slice(&chunk.expect("stream ended with an error"));
            }
        })
        .await
    }

    /// Waits for `n` more comment lines (heartbeats), and nothing else.
    pub async fn comments_after(&mut self, n: usize) {
        let target = self.comments + n;
        while self.comments < target {
            assert!(self.step().await.is_none(), "expected only heartbeats");
        }
    }
}

/// A long-poll answer.
#[derive(Debug)]
pub struct Poll {
    pub status: u16,
    pub etag: Option<String>,
    pub body: serde_json::Value,
}

impl Poll {
    pub fn cursor(&self) -> &str {
        self.body["cursor"].as_str().unwrap()
    }
    /// [`describe`] of each envelope.
    pub fn items(&self) -> Vec<String> {
        self.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(describe)
            .collect()
    }
}

/// An envelope as "channel:data", "channel:gap:N", "heartbeat", "end:reason"
/// (data as its text when a string, else as JSON).
pub fn describe(envelope: &serde_json::Value) -> String {
    let channel = || envelope["channel"].as_str().unwrap();
    match envelope["type"].as_str().unwrap() {
        "message" => match envelope["data"].as_str() {
            Some(text) => format!("{}:{text}", channel()),
            None => format!("{}:{}", channel(), envelope["data"]),
        },
        "gap" => format!("{}:gap:{}", channel(), envelope["missed"]),
        "heartbeat" => "heartbeat".into(),
        kind @ ("join" | "leave") => {
            format!(
                "{}:{kind}:{}",
                channel(),
                envelope["user"].as_str().unwrap()
            )
        }
        "presence" => {
            let mut users: Vec<&str> = envelope["presence"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["user"].as_str().unwrap())
                .collect();
            users.sort();
            format!("{}:presence:{}", channel(), users.join(","))
        }
        "end" => match envelope["channel"].as_str() {
            Some(channel) => format!("{channel}:end:{}", envelope["reason"].as_str().unwrap()),
            None => format!("end:{}", envelope["reason"].as_str().unwrap()),
        },
        "subscribed" => format!("{}:subscribed", channel()),
        other => panic!("unexpected envelope {other}"),
    }
}

/// GETs `url` and returns the body as text.
pub async fn get_text(url: String) -> String {
    let response = bounded("get", client().get(url).send()).await.unwrap();
    response.text().await.unwrap()
}

pub async fn poll(request: reqwest::RequestBuilder) -> Poll {
    let response = bounded("long poll", request.send()).await.unwrap();
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    if status == 200 {
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    let body = response.json().await.unwrap();
    Poll { status, etag, body }
}

/// Asserts a PROTOCOL.md error answer and returns its message.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().unwrap().to_owned();
    assert!(!message.is_empty());
    message
}

/// Reads a streaming body line by line (ndjson, forever frame).
pub struct LineReader {
    stream: Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buf: Vec<u8>,
    /// Every byte received so far.
    pub raw: Vec<u8>,
}

impl LineReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200, "stream status");
        Self {
            stream: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// Reads more bytes; false at the end of the body.
    async fn fill(&mut self) -> bool {
        match bounded("stream bytes", self.stream.next()).await {
            Some(chunk) => {
                let chunk = chunk.expect("stream failed");
                self.raw.extend_from_slice(&chunk);
                self.buf.extend_from_slice(&chunk);
                true
            }
            None => false,
        }
    }

    /// The next line without its LF, or `None` when the body ends.
    pub async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "body ended mid-line: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        }
    }

    /// Waits until at least `n` bytes have arrived.
    pub async fn at_least(&mut self, n: usize) {
        while self.raw.len() < n {
            assert!(
                self.fill().await,
                "body ended after {} bytes",
                self.raw.len()
            );
        }
    }

    /// Reads to the end of the body.
    pub async fn until_end(&mut self) -> Vec<String> {
        let mut lines = vec![];
        while let Some(line) = self.line().await {
            lines.push(line);
        }
        lines
    }
}

/// `cargo test --workspace` builds the examples next to the test binaries;
/// `cargo test --test chat_example` alone does not, so a missing or stale
/// binary is an error rather than a test of old code.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    let target = deps.parent().unwrap().parent().unwrap();
    let path = target.join("examples").join(name);
    let rebuild = "run `cargo test --workspace` (or `cargo build --example chat`) first";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {rebuild}", path.display()));
    // cargo's dep-info file lists exactly the sources the binary was built
    // from; any of this repository's that changed since means a stale binary.
    let root = workspace_root().to_str().unwrap();
    let dep_info = std::fs::read_to_string(path.with_extension("d"))
        .unwrap_or_else(|_| panic!("{} has no dep-info file: {rebuild}", path.display()));
    let sources = dep_info
        .lines()
        .next()
        .and_then(|line| line.split_once(": "))
        .map_or("", |(_, deps)| deps);
    for source in sources.split_whitespace().filter(|s| s.starts_with(root)) {
        let modified = std::fs::metadata(source).and_then(|m| m.modified());
        if modified.map_or(true, |modified| modified > built) {
            panic!("{} is older than {source}: {rebuild}", path.display());
        }
    }
    path
}

/// An example binary running in the background, killed when dropped.
pub struct Running {
    pub child: std::process::Child,
    /// The base URL that `url` prefixes.
    pub base: String,
}

impl Running {
    /// Starts `example` with `args` and returns it with the first `lines`
    /// lines of its standard output (where the examples say where they listen).
    pub fn start(example: &str, args: &[&str], lines: usize) -> (Self, Vec<String>) {
        Self::start_with_env(example, args, &[], lines)
    }

    /// [`start`](Self::start) with environment variables set.
    pub fn start_with_env(
        example: &str,
        args: &[&str],
        env: &[(&str, &str)],
        lines: usize,
    ) -> (Self, Vec<String>) {
        use std::io::BufRead;
        let mut child = std::process::Command::new(example_binary(example))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let read: Vec<String> = (0..lines)
            .map(|_| {
                let mut line = String::new();
                stdout.read_line(&mut line).unwrap();
                line.trim().to_owned()
            })
            .collect();
        (
            Self {
                child,
                base: String::new(),
            },
            read,
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
