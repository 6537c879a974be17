//! Two chat demo nodes on one `redis-server`, behind a round-robin TCP proxy
//! (each new connection goes to the next node: no stickiness). SSE, ndjson
//! and long-poll subscribers go through it while messages are published
//! alternately on both nodes and every connection is cut several times:
//! each subscriber must end with exactly 1..N, in order.
//!
//! Like every Redis test, these are reported as ignored where there is no
//! `redis-server`, and fail with `COMET_REDIS_TESTS=1` (CI).
#![cfg(unix)]

use comet_test_support::redis_cluster::RedisCluster;
use comet_test_support::redis_server::RedisServer;
use comet_test_support::tcp_proxy::TcpProxy;
use comet_test_support::{client, Running};
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;

const CHANNEL: &str = "room/e2e";
const MESSAGES: usize = 60;
/// A whole scenario is bounded by this.
const SCENARIO: Duration = Duration::from_secs(60);

fn main() {
    comet_test_support::tool::run(vec![
        comet_test_support::tool::ToolTest::new(
            "every_subscriber_gets_exactly_1_to_n_through_a_round_robin_proxy_across_cuts",
            &[comet_test_support::tool::Tool::RedisServer],
            || Box::pin(across_nodes()),
        ),
        comet_test_support::tool::ToolTest::new(
            "the_users_of_a_node_killed_with_sigkill_leave_on_the_other_within_the_bound",
            &[comet_test_support::tool::Tool::RedisServer],
            || Box::pin(a_node_killed()),
        ),
        comet_test_support::tool::ToolTest::new(
            "the_demo_spreads_its_rooms_over_every_redis_given_and_they_cross_nodes",
            &[comet_test_support::tool::Tool::RedisServer],
            || Box::pin(sharded()),
        ),
        comet_test_support::tool::ToolTest::new(
            "the_demo_runs_on_a_redis_cluster",
            &[
                comet_test_support::tool::Tool::RedisServer,
                comet_test_support::tool::Tool::RedisCli,
            ],
            || Box::pin(on_a_cluster()),
        ),
    ]);
}

/// A demo node on `redis`; its base URL.
fn node(redis: &RedisServer) -> (Running, String) {
    node_with(redis, &[])
}

/// A demo node on `redis` with `env`; its base URL.
fn node_with(redis: &RedisServer, env: &[(&str, &str)]) -> (Running, String) {
    node_on(&[redis], env)
}

/// A demo node on `shards` (`--redis` once each) with `env`; its base URL.
fn node_on(shards: &[&RedisServer], env: &[(&str, &str)]) -> (Running, String) {
    let urls: Vec<String> = shards.iter().map(|redis| redis.url()).collect();
    node_at(&urls, env)
}

/// A demo node given `urls` (`--redis` once each) with `env`; its base URL.
fn node_at(urls: &[String], env: &[(&str, &str)]) -> (Running, String) {
    let mut args = vec!["--addr", "127.0.0.1:0"];
    for url in urls {
        args.extend(["--redis", url.as_str()]);
    }
    let (node, lines) = Running::start_with_env("chat", &args, env, 1);
    let base = lines[0]
        .strip_prefix("chat listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
        .to_owned();
    (node, base)
}

/// The JSON a GET of `url` answers.
async fn get_json(url: String) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Two demo nodes, each given the same two Redis servers: each room lives
/// on one of them, and a message published on one node reaches a long poll
/// on the other whichever it is.
async fn sharded() {
    let (first, second) = (RedisServer::start(), RedisServer::start());
    let (_a, a) = node_on(&[&first, &second], &[]);
    let (_b, b) = node_on(&[&first, &second], &[]);
    rooms_cross(&a, &b).await;
    // Both servers hold rooms.
    for redis in [&first, &second] {
        let mut connection = redis.connection().await;
        let rooms: Vec<String> =
            redis::AsyncCommands::keys(&mut connection, "comet:{room/shard-*}:meta2")
                .await
                .unwrap();
        assert!(
            !rooms.is_empty(),
            "redis on port {} holds no room",
            redis.port
        );
    }
}

/// Two demo nodes on a Redis Cluster (`--redis redis+cluster://...`).
async fn on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let (_a, a) = node_at(&[cluster.url()], &[]);
    let (_b, b) = node_at(&[cluster.url()], &[]);
    rooms_cross(&a, &b).await;
    let mut holders = 0;
    for redis in &cluster.nodes[..3] {
        let mut connection = redis.connection().await;
        let rooms: Vec<String> =
            redis::AsyncCommands::keys(&mut connection, "comet:{room/shard-*}:meta2")
                .await
                .unwrap();
        holders += usize::from(!rooms.is_empty());
    }
    assert!(holders >= 2, "the rooms are on {holders} primary");
}

/// A message on each of eight rooms, published on node `a`, reaches a long
/// poll on node `b`.
async fn rooms_cross(a: &str, b: &str) {
    let poll = |base: &str, room: &str, cursor: &str, timeout: u32| {
        client().get(format!(
            "{base}/comet/poll?channel={room}&cursor={cursor}&timeout={timeout}"
        ))
    };
    for i in 0..8 {
        let room = format!("room/shard-{i}");
        let head = get_json(format!("{b}/comet/poll?channel={room}&timeout=0")).await;
        let cursor = head["cursor"].as_str().unwrap().to_owned();
        let waiting = tokio::spawn(poll(b, &room, &cursor, 10).send());
        let response = client()
            .post(format!("{a}/comet/publish/{room}"))
            .body(format!("m{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "publish to {room}");
        let answer: Value = tokio::time::timeout(SCENARIO, waiting)
            .await
            .expect("the poll is answered")
            .unwrap()
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut got = Vec::new();
        for envelope in answer["messages"].as_array().unwrap() {
            record(envelope, &mut got);
        }
        assert_eq!(got, [format!("m{i}")], "{room}");
    }
}

async fn across_nodes() {
    let redis = RedisServer::start();
    let (_a, a) = node(&redis);
    let (_b, b) = node(&redis);
    let addr = |base: &str| base.strip_prefix("http://").unwrap().parse().unwrap();
    let proxy = TcpProxy::round_robin(vec![addr(&a), addr(&b)]).await;
    let front = format!("http://{}", proxy.addr);

    // Every subscriber starts from the same cursor, taken on one node.
    let start = client()
        .get(format!("{a}/comet/poll?channel={CHANNEL}&timeout=0"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut subscribers = Vec::new();
    for (i, kind) in ["sse", "stream", "poll", "sse", "stream", "poll"]
        .iter()
        .enumerate()
    {
        let front = front.clone();
        let start = start.clone();
        let kind = *kind;
        subscribers.push((
            format!("{kind}#{i}"),
            tokio::spawn(async move {
                match kind {
                    "sse" => sse(&front, start).await,
                    "stream" => ndjson(&front, start).await,
                    _ => long_poll(&front, start).await,
                }
            }),
        ));
    }
    // Published alternately on both nodes, with every connection through
    // the proxy cut four times along the way.
    for n in 1..=MESSAGES {
        let node = if n % 2 == 0 { &a } else { &b };
        let response = client()
            .post(format!("{node}/comet/publish/{CHANNEL}"))
            .body(format!("m{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "publish {n}");
        if n % (MESSAGES / 4) == 0 {
            proxy.reset();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let expected: Vec<String> = (1..=MESSAGES).map(|n| format!("m{n}")).collect();
    for (name, subscriber) in subscribers {
        let got = tokio::time::timeout(SCENARIO, subscriber)
            .await
            .unwrap_or_else(|_| panic!("{name} did not finish"))
            .unwrap();
        assert_eq!(got, expected, "{name}");
    }
    assert!(
        proxy.accepted.load(std::sync::atomic::Ordering::SeqCst) > 6,
        "reconnected"
    );
}

/// The presence of a node's users lives in Redis, refreshed by the node:
/// a node killed with SIGKILL refreshes nothing more, and its users leave
/// on every other node within 1.25 × the TTL and an engine timeout (2 s),
/// with a `leave` in-band and out of the channel's info.
async fn a_node_killed() {
    const TTL_MS: u64 = 1000;
    let redis = RedisServer::start();
    let ttl = ("COMET_PRESENCE_TTL_MS", "1000");
    let (mut doomed, a) = node_with(&redis, &[ttl]);
    let (_b, b) = node_with(&redis, &[ttl]);
    let channel = "room/kill";
    let watcher = client()
        .get(format!(
            "{b}/comet/stream?channel={channel}&user=watcher&presence=1"
        ))
        .send()
        .await
        .unwrap();
    let mut watcher = comet_test_support::LineReader::new(watcher);
    // Until `kind` of `user` comes; the envelopes' other items are skipped.
    async fn until(watcher: &mut comet_test_support::LineReader, kind: &str, user: &str) {
        comet_test_support::bounded(kind, async {
            loop {
                let line = watcher.line().await.expect("the watcher's stream ended");
                let envelope: Value = serde_json::from_str(&line).unwrap();
                if envelope["type"] == kind && envelope["user"] == user {
                    return;
                }
            }
        })
        .await
    }
    let _ann = client()
        .get(format!("{a}/comet/stream?channel={channel}&user=ann"))
        .send()
        .await
        .unwrap();
    until(&mut watcher, "join", "ann").await;

    doomed.child.kill().unwrap(); // SIGKILL: nothing is said to Redis
    doomed.child.wait().unwrap();
    let killed = std::time::Instant::now();
    until(&mut watcher, "leave", "ann").await;
    let took = killed.elapsed();
    let bound = Duration::from_millis(TTL_MS * 5 / 4) + Duration::from_secs(2);
    assert!(
        took <= bound + Duration::from_millis(500),
        "ann left {took:?} after the kill, past {bound:?}"
    );
    let info = get_json(format!("{b}/comet/publish/{channel}")).await;
    let users: Vec<&str> = info["presence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["watcher"], "{info}");
    assert_eq!(info["subscribers"], 1, "{info}");
}

/// Records an envelope's message or gap; returns its cursor.
fn record(envelope: &Value, got: &mut Vec<String>) -> Option<String> {
    match envelope["type"].as_str() {
        Some("message") => got.push(envelope["data"].as_str().unwrap().to_owned()),
        Some("gap") => got.push(format!("gap {}", envelope["missed"])),
        _ => return None,
    }
    envelope["cursor"].as_str().map(str::to_owned)
}

/// Reads a streaming response line by line (without the line feed) until
/// it ends or breaks, or `enough` says so.
async fn each_line(
    response: reqwest::Response,
    mut on_line: impl FnMut(String),
    enough: impl Fn() -> bool,
) {
    let mut bytes = response.bytes_stream();
    let mut buf = Vec::new();
    while let Some(Ok(chunk)) = bytes.next().await {
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            on_line(String::from_utf8(line[..i].to_vec()).unwrap());
        }
        if enough() {
            return;
        }
    }
}

/// Sends `request` (through the proxy); `None`, after a short pause, when
/// it failed, to be tried again.
async fn open(request: reqwest::RequestBuilder) -> Option<reqwest::Response> {
    match request.send().await.and_then(|r| r.error_for_status()) {
        Ok(response) => Some(response),
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// An EventSource's behaviour: reconnect with `Last-Event-ID` after any
/// error or end, through the proxy (so to either node).
async fn sse(front: &str, start: String) -> Vec<String> {
    let got = std::sync::Mutex::new(Vec::new());
    let mut last = start;
    while got.lock().unwrap().len() < MESSAGES {
        let request = client()
            .get(format!("{front}/comet/sse?channel={CHANNEL}"))
            .header("last-event-id", &last);
        let Some(response) = open(request).await else {
            continue;
        };
        let (mut id, mut event, mut data) = (None, None, None::<String>);
        let on_line = |line: String| {
            if line.is_empty() {
                if let Some(data) = data.take() {
                    let mut got = got.lock().unwrap();
                    if event.as_deref() == Some("comet-gap") {
                        got.push(format!("gap {data}"));
                    } else {
                        got.push(data);
                    }
                    if let Some(id) = id.take() {
                        last = id;
                    }
                }
                event = None;
            } else if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("event: ") {
                event = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = Some(value.to_owned());
            }
        };
        each_line(response, on_line, || got.lock().unwrap().len() >= MESSAGES).await;
    }
    got.into_inner().unwrap()
}

/// The ndjson stream, resumed by `cursor=` after any end.
async fn ndjson(front: &str, start: String) -> Vec<String> {
    let got = std::sync::Mutex::new(Vec::new());
    let mut last = start;
    while got.lock().unwrap().len() < MESSAGES {
        let request = client().get(format!(
            "{front}/comet/stream?channel={CHANNEL}&cursor={last}"
        ));
        let Some(response) = open(request).await else {
            continue;
        };
        let on_line = |line: String| {
            let envelope: Value = serde_json::from_str(&line).unwrap();
            if let Some(cursor) = record(&envelope, &mut got.lock().unwrap()) {
                last = cursor;
            }
        };
        each_line(response, on_line, || got.lock().unwrap().len() >= MESSAGES).await;
    }
    got.into_inner().unwrap()
}

/// Long polls, each re-issued with the answer's cursor, each through the
/// proxy (so alternately to either node).
async fn long_poll(front: &str, start: String) -> Vec<String> {
    let mut got = Vec::new();
    let mut last = start;
    while got.len() < MESSAGES {
        let request = client().get(format!(
            "{front}/comet/poll?channel={CHANNEL}&cursor={last}&timeout=5"
        ));
        let Some(answer) = open(request).await else {
            continue;
        };
        let Ok(body) = answer.json::<Value>().await else {
            continue; // cut mid-answer: ask again from the same cursor
        };
        for envelope in body["messages"].as_array().unwrap() {
            record(envelope, &mut got);
        }
        last = body["cursor"].as_str().unwrap().to_owned();
    }
    got
}
