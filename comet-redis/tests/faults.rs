//! Faults of the Redis engine (issue #23), written test-first: each test
//! states what the engine must do when Redis runs out of memory, fails over,
//! loses writes, is slow, or comes back, against a real `redis-server` that
//! it starts on its own port. Nodes are hubs on engines of their own, as in
//! separate processes. Where a test checks several things it gathers every
//! violation (see [`Findings`]) and reports them together.

use comet_core::{ChannelName, Cursor, HistoryPolicy, Hub, Position, Start, Subscription};
use comet_redis::RedisEngine;
use comet_test_support::redis_server::RedisServer;
use comet_test_support::tcp_proxy::TcpProxy;
use comet_test_support::{nodes::*, tool_tests};
use redis::{aio::MultiplexedConnection, AsyncCommands};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};
use tokio::time::{timeout, Instant};
use tokio_stream::StreamExt;

fn main() {
    comet_test_support::tool::run(tool_tests![[RedisServer];
            a_publish_past_maxmemory_fails_and_leaves_history_and_epoch_untouched,
            publishes_work_again_after_a_failover_behind_the_same_address,
            a_mirror_tells_a_republished_identical_message_from_the_one_it_has,
            an_issued_cursor_ahead_of_redis_moves_the_channel_to_a_new_epoch,
            a_cursor_with_a_wrong_tag_is_refused,
            an_untagged_cursor_cannot_be_laundered_into_an_issued_one,
            a_cursor_key_redis_lost_and_replaced_still_verifies_everywhere,
            a_publish_with_an_idempotency_key_is_stored_once,
            a_publish_whose_reply_was_lost_is_stored_once,
            a_heavy_subscribe_leaves_the_node_connected_and_other_channels_flowing,
            a_long_load_holds_up_no_other_channels_announcements,
            a_mirror_dropped_and_made_again_during_its_load_is_loaded,
            a_channel_whose_read_failed_is_read_again_while_it_has_subscribers,
            a_new_epoch_reaches_other_nodes_without_a_publish,
            a_prefix_with_a_brace_is_refused,
            the_first_request_after_redis_comes_back_succeeds,
            a_cursor_past_lost_writes_whose_offsets_were_reassigned_resumes_with_a_gap,
            reading_a_channel_never_published_to_creates_no_key,
            a_cursor_from_before_the_first_publish_resumes_without_a_gap_unless_a_history_came_and_went,
    ]);
}

// ---------------------------------------------------------------------------
// Harness beyond comet_test_support::nodes.

/// Whatever arrives until nothing has for `quiet` (at most `BOUND` in all).
async fn drain(sub: &mut Subscription, quiet: Duration) -> Vec<String> {
    let deadline = Instant::now() + BOUND;
    let mut items = Vec::new();
    while Instant::now() < deadline {
        match timeout(quiet, sub.next()).await {
            Ok(Some(item)) => items.push(show(item)),
            Ok(None) | Err(_) => break,
        }
    }
    items
}

/// Items up to and including the message `text` (at most `BOUND`).
async fn until_text(sub: &mut Subscription, text: &str) -> Vec<String> {
    let suffix = format!(":{text}");
    let mut items = Vec::new();
    loop {
        let item = next(sub).await;
        let done = item.ends_with(&suffix);
        items.push(item);
        if done {
            return items;
        }
    }
}

/// `INFO <section>` as a map.
async fn info(connection: &mut MultiplexedConnection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO")
        .arg(section)
        .query_async(connection)
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// Whether `key` holds nodes' presence shares (subscriber counts,
/// occupancy, users), which every channel with subscribers has while it has
/// them (and which expire on their own): not history.
fn presence_key(key: &str) -> bool {
    [":nodes", ":users", ":shares", ":info"]
        .iter()
        .any(|suffix| key.ends_with(suffix))
}

/// How many keys Redis holds, presence shares left out.
async fn dbsize(connection: &mut MultiplexedConnection) -> usize {
    let keys: Vec<String> = connection.keys("*").await.unwrap();
    keys.iter().filter(|key| !presence_key(key)).count()
}

/// The first five keys Redis holds, presence shares left out.
async fn keys(connection: &mut MultiplexedConnection) -> Vec<String> {
    let mut keys: Vec<String> = connection.keys("*").await.unwrap();
    keys.retain(|key| !presence_key(key));
    keys.sort();
    keys.truncate(5);
    keys
}

async fn meta_epoch(connection: &mut MultiplexedConnection, channel: &str) -> Option<u64> {
    connection
        .hget(format!("comet:{{{channel}}}:meta2"), "epoch")
        .await
        .unwrap()
}

async fn xlen(connection: &mut MultiplexedConnection, channel: &str) -> usize {
    connection
        .xlen(format!("comet:{{{channel}}}:log2"))
        .await
        .unwrap()
}

fn addr(redis: &RedisServer) -> SocketAddr {
    format!("127.0.0.1:{}", redis.port).parse().unwrap()
}

fn position(cursor: &Cursor, channel: &str) -> Position {
    cursor
        .position(&ChannelName::new(channel).unwrap())
        .expect("the cursor names the channel")
}

/// A cursor at `offset` of `epoch` in `channel`.
fn cursor_at(channel: &str, epoch: u64, offset: u64) -> Cursor {
    Cursor::from(Position::new(
        &ChannelName::new(channel).unwrap(),
        epoch,
        offset,
    ))
}

/// Violations of what a test holds, gathered so that one run reports all of
/// them (and what was observed), not only the first.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, holds: bool, violation: impl FnOnce() -> String) {
        if !holds {
            self.0.push(violation());
        }
    }

    fn assert_none(self) {
        assert!(self.0.is_empty(), "\n  - {}\n", self.0.join("\n  - "));
    }
}

// ---------------------------------------------------------------------------
// 1. Out of memory.

/// Redis out of memory (`maxmemory` below what it uses, `noeviction`): a
/// publish fails (an engine error, a 503 on the publish route) and changes
/// nothing: the history, its length and the epoch stay, no subscriber gets
/// anything, fresh readers get exactly what was there; once memory is back,
/// the next publish continues the same epoch at the next offset.
async fn a_publish_past_maxmemory_fails_and_leaves_history_and_epoch_untouched() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let mut sub = b.subscribe(["oom"], Start::head()).await.unwrap();
    let mut epoch = 0;
    for n in 1..=5 {
        epoch = position(&a.publish("oom", n.to_string()).await.unwrap(), "oom").epoch;
    }
    assert_eq!(take(&mut sub, 5).await, ["1:1", "2:2", "3:3", "4:4", "5:5"]);
    let mut connection = redis.connection().await;
    assert_eq!(meta_epoch(&mut connection, "oom").await, Some(epoch));
    assert_eq!(xlen(&mut connection, "oom").await, 5);

    let app = axum::Router::new().layer(comet_tower::CometLayer::new(a.clone()).publish(
        "/publish",
        comet_push::PublishRoute::new().authorize(|_, _| true),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let used: u64 = info(&mut connection, "memory").await["used_memory"]
        .parse()
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used * 9 / 10)
        .query_async(&mut connection)
        .await
        .unwrap();
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(policy[1], "noeviction");
    // Redis itself now refuses a plain write: the precondition holds.
    let refused: redis::RedisResult<()> = connection.set("probe", "x").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.code() == Some("OOM")),
        "{refused:?}"
    );

    let mut found = Findings::default();
    let published = bounded("publish", a.publish("oom", "during")).await;
    found.check(
        matches!(published, Err(comet_core::PublishError::Engine(_))),
        || format!("a publish out of memory must fail with an engine error; got {published:?}"),
    );
    let response = bounded(
        "publish route",
        reqwest::Client::new()
            .post(format!("http://{http}/publish/oom"))
            .body("during-http")
            .send(),
    )
    .await
    .unwrap();
    found.check(response.status() == 503, || {
        format!(
            "the publish route must answer 503 out of memory; got {}",
            response.status()
        )
    });
    // One publish to several channels, stored on none: a 503 to retry, not
    // a 200 listing the failures.
    let response = bounded(
        "broadcast",
        reqwest::Client::new()
            .post(format!("http://{http}/publish?channel=oom&channel=oom2"))
            .body("during-broadcast")
            .send(),
    )
    .await
    .unwrap();
    found.check(response.status() == 503, || {
        format!(
            "a broadcast stored nowhere must answer 503 out of memory; got {}",
            response.status()
        )
    });
    let delivered = drain(&mut sub, Duration::from_millis(500)).await;
    found.check(delivered.is_empty(), || {
        format!("a subscriber must get nothing from a failed publish; got {delivered:?}")
    });
    let now_epoch = meta_epoch(&mut connection, "oom").await;
    found.check(now_epoch == Some(epoch), || {
        format!("the epoch must stay {epoch}; it is {now_epoch:?}")
    });
    let len = xlen(&mut connection, "oom").await;
    found.check(len == 5, || {
        format!("the stream must keep its 5 entries; XLEN is {len}")
    });
    let (c, _) = node(&redis.url());
    let mut oldest = c.subscribe(["oom"], Start::oldest()).await.unwrap();
    let got = drain(&mut oldest, Duration::from_millis(500)).await;
    found.check(got == ["1:1", "2:2", "3:3", "4:4", "5:5"], || {
        format!("a fresh subscriber from the oldest must get 1 to 5; got {got:?}")
    });
    let (d, _) = node(&redis.url());
    let mut from_two = d
        .subscribe(["oom"], cursor_at("oom", epoch, 2))
        .await
        .unwrap();
    let got = drain(&mut from_two, Duration::from_millis(500)).await;
    found.check(got == ["3:3", "4:4", "5:5"], || {
        format!("a cursor at offset 2 must resume with 3, 4, 5 and no gap; got {got:?}")
    });

    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut connection)
        .await
        .unwrap();
    let after = a.publish("oom", "6").await.map(|c| position(&c, "oom"));
    found.check(
        after
            .as_ref()
            .is_ok_and(|p| (p.epoch, p.offset) == (epoch, 6)),
        || {
            format!(
                "with memory back, a publish must land at offset 6 of epoch {epoch}; got {after:?}"
            )
        },
    );
    server.abort();
    found.assert_none();
}

// ---------------------------------------------------------------------------
// 2. Failover behind a stable address.

/// Waits until `replica` has everything `primary` has.
async fn caught_up(primary: &mut MultiplexedConnection, replica: &mut MultiplexedConnection) {
    bounded("replica caught up", async {
        loop {
            let r = info(replica, "replication").await;
            let p = info(primary, "replication").await;
            if r.get("master_link_status").map(String::as_str) == Some("up")
                && r.get("slave_repl_offset") == p.get("master_repl_offset")
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Keeps publishing `text-<n>` on `hub` until one is accepted, for `within`;
/// the last error if none was.
async fn publish_until_accepted(hub: &Hub, text: &str, within: Duration) -> Result<String, String> {
    let deadline = Instant::now() + within;
    let mut n = 0;
    loop {
        n += 1;
        let attempt = format!("{text}-{n}");
        match timeout(within, hub.publish("fo", attempt.as_str())).await {
            Ok(Ok(_)) => return Ok(attempt),
            Ok(Err(error)) if Instant::now() >= deadline => {
                return Err(format!("after {n} attempts: {error}"))
            }
            Err(_) => return Err(format!("a publish hung for {within:?}")),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A failover behind the address the nodes use (a DNS name or a virtual IP
/// moved to the promoted replica; here a proxy that sends new connections
/// there, while those already open stay with the demoted primary): within
/// a few seconds, publishes through every node succeed again without a
/// restart, subscribers on every node get them, and nothing published
/// before the failover is lost.
async fn publishes_work_again_after_a_failover_behind_the_same_address() {
    let (primary, replica, mut p, mut r) = comet_test_support::redis_server::replicated().await;
    caught_up(&mut p, &mut r).await;
    let link = TcpProxy::start(addr(&primary)).await;
    let (a, _) = node(&link.url());
    let (b, _) = node(&link.url());
    let mut on_a = a.subscribe(["fo"], Start::head()).await.unwrap();
    let mut on_b = b.subscribe(["fo"], Start::head()).await.unwrap();
    for n in 1..=3 {
        a.publish("fo", n.to_string()).await.unwrap();
    }
    assert_eq!(take(&mut on_a, 3).await, ["1:1", "2:2", "3:3"]);
    assert_eq!(take(&mut on_b, 3).await, ["1:1", "2:2", "3:3"]);
    caught_up(&mut p, &mut r).await;

    // The failover: the replica is promoted, the old primary follows it, and
    // the address leads to the new primary.
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut r)
        .await
        .unwrap();
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(replica.port)
        .query_async(&mut p)
        .await
        .unwrap();
    link.retarget(addr(&replica));
    // Precondition: the old primary now refuses writes.
    let refused: redis::RedisResult<()> = p.set("probe", "x").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.code() == Some("READONLY")),
        "{refused:?}"
    );

    let within = Duration::from_secs(10);
    let (accepted_a, accepted_b) = tokio::join!(
        publish_until_accepted(&a, "a", within),
        publish_until_accepted(&b, "b", within)
    );
    assert!(
        accepted_a.is_ok() && accepted_b.is_ok(),
        "publishes must succeed again within {within:?} of the failover; node a: {accepted_a:?}; node b: {accepted_b:?}"
    );
    a.publish("fo", "after").await.unwrap();
    // Every subscriber gets what followed, with no gap and nothing lost.
    for (name, sub) in [("a", &mut on_a), ("b", &mut on_b)] {
        let items = until_text(sub, "after").await;
        let offsets: Vec<u64> = items
            .iter()
            .map(|item| item.split(':').next().unwrap().parse().unwrap_or(0))
            .collect();
        let expected: Vec<u64> = (4..4 + items.len() as u64).collect();
        assert_eq!(offsets, expected, "node {name}'s subscriber got {items:?}");
    }
    let mut fresh = a.subscribe(["fo"], Start::oldest()).await.unwrap();
    assert_eq!(take(&mut fresh, 3).await, ["1:1", "2:2", "3:3"]);
}

// ---------------------------------------------------------------------------
// 3. Lost writes whose offsets were given again.

/// A client saw messages 1 to 10; Redis then lost 9 and 10 (a promoted
/// replica that lagged) while no node mirrored the channel, and gave their
/// offsets to two new messages. Resuming with the client's cursor must be a
/// gap (it cannot have the new 9 and 10, and had others under those
/// offsets), then the new messages; never silence.
async fn a_cursor_past_lost_writes_whose_offsets_were_reassigned_resumes_with_a_gap() {
    let redis = RedisServer::start();
    let (a, engine_a) = node(&redis.url());
    let (b, engine_b) = node(&redis.url());
    let mut sub = b.subscribe(["lw"], Start::head()).await.unwrap();
    for n in 1..=10 {
        a.publish("lw", n.to_string()).await.unwrap();
    }
    let seen = take(&mut sub, 10).await;
    assert_eq!(seen.last().map(String::as_str), Some("10:10"));
    let cursor = sub.cursor();
    let epoch = position(&cursor, "lw").epoch;
    drop(sub);
    eventually("no node mirrors the channel", || {
        engine_a.stats().mirrors == 0 && engine_b.stats().mirrors == 0
    })
    .await;

    let mut connection = redis.connection().await;
    roll_back(&mut connection, "lw", 8).await;
    let nine = a.publish("lw", "9'").await.unwrap();
    a.publish("lw", "10'").await.unwrap();
    // Precondition: the lost offsets were given again, in the same epoch.
    assert_eq!(
        (position(&nine, "lw").epoch, position(&nine, "lw").offset),
        (epoch, 9)
    );

    let mut resumed = b.subscribe(["lw"], cursor).await.unwrap();
    a.publish("lw", "11").await.unwrap();
    let got = drain(&mut resumed, Duration::from_millis(500)).await;
    assert_eq!(
        got.first().map(String::as_str),
        Some("gap:None"),
        "a client whose 9 and 10 were lost must get a gap first; got {got:?}"
    );
    assert_eq!(got.last().map(String::as_str), Some("11:11"), "{got:?}");
}

/// A node mirroring a channel holds message 5 = "same". Redis loses it (back
/// at 4, same epoch) and another node publishes the identical text, which
/// Redis numbers 5 again; the mirror hears it announced as a duplicate of
/// what it holds. Identical bytes are not the same message: the channel must
/// move to a new epoch and the node's subscribers get a gap.
async fn a_mirror_tells_a_republished_identical_message_from_the_one_it_has() {
    let redis = RedisServer::start();
    let (a, engine_a) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let mut sub = a.subscribe(["id"], Start::head()).await.unwrap();
    for text in ["1", "2", "3", "4", "same"] {
        b.publish("id", text).await.unwrap();
    }
    assert_eq!(
        take(&mut sub, 5).await,
        ["1:1", "2:2", "3:3", "4:4", "5:same"]
    );
    let mut connection = redis.connection().await;
    roll_back(&mut connection, "id", 4).await;
    // Not for synchronisation: so that not even the publish time (in ms) is
    // the same, only the bytes.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let again = b.publish("id", "same").await.unwrap();
    assert_eq!(
        position(&again, "id").offset,
        5,
        "precondition: offset 5 again"
    );
    b.publish("id", "6").await.unwrap();
    let got = drain(&mut sub, Duration::from_millis(500)).await;
    assert_eq!(
        got.first().map(String::as_str),
        Some("gap:None"),
        "the mirror took another message under offset 5 for its own; subscribers got {got:?}; {:?}",
        engine_a.stats()
    );
    assert_eq!(engine_a.stats().epochs_renewed, 1);
}

// ---------------------------------------------------------------------------
// 4. A heavy load on one node.

/// Writes `count` entries of `size` bytes into `channel` as comet's publish
/// script would (in one script run, so setting up is quick).
async fn fill(connection: &mut MultiplexedConnection, channel: &str, count: u64, size: usize) {
    const FILL: &str = r#"
local big = string.rep('x', tonumber(ARGV[2]))
local now = redis.call('TIME')[1] .. '000'
for i = 1, tonumber(ARGV[1]) do
  redis.call('XADD', KEYS[2], '0-' .. i, 'h', now .. '\n0\nt\n', 'd', big)
end
redis.call('HSET', KEYS[1], 'epoch', ARGV[3])
return 0
"#;
    let () = redis::cmd("EVAL")
        .arg(FILL)
        .arg(2)
        .arg(format!("comet:{{{channel}}}:meta2"))
        .arg(format!("comet:{{{channel}}}:log2"))
        .arg(count)
        .arg(size)
        .arg(comet_core::engine::random_epoch().to_string())
        .query_async(connection)
        .await
        .unwrap();
}

/// A node loads a channel with a long history over a slow link (Redis's
/// answer takes seconds to arrive), while another channel it mirrors keeps
/// being published to. Loads run beside the node's task, never in it: each
/// announcement of the other channel is delivered as it comes, not after
/// the load.
async fn a_long_load_holds_up_no_other_channels_announcements() {
    const RATE: u64 = 2 << 20; // bytes a second
    let redis = RedisServer::start();
    let mut connection = redis.connection().await;
    fill(&mut connection, "long", 64, 64 * 1024).await; // 4 MiB: about 2 s
    let (a, _, link) = behind_a_link(&redis).await;
    let (b, _) = node(&redis.url());
    let mut small = a.subscribe(["small"], Start::head()).await.unwrap();
    b.publish("small", "0").await.unwrap();
    assert_eq!(next(&mut small).await, "1:0");

    link.throttle(RATE);
    let loading = tokio::spawn({
        let a = a.clone();
        async move {
            let started = Instant::now();
            let sub = a.subscribe(["long"], Start::head()).await;
            (sub.map(|_| ()), started.elapsed())
        }
    });
    let mut latencies = Vec::new();
    for n in 1..=8 {
        let sent = Instant::now();
        b.publish("small", n.to_string()).await.unwrap();
        assert_eq!(next(&mut small).await, format!("{}:{n}", n + 1));
        latencies.push(sent.elapsed());
        if loading.is_finished() {
            break;
        }
    }
    let (subscribed, took) = bounded("the long load", loading).await.unwrap();
    assert!(subscribed.is_ok(), "{subscribed:?}");
    // Precondition: the load did take long.
    assert!(
        took >= Duration::from_secs(1),
        "the load took only {took:?}"
    );
    let worst = latencies.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_millis(400),
        "another channel's messages waited for the load ({took:?}): {latencies:?}"
    );
}

/// A subscriber gives up while its channel loads over a slow link; the
/// unused mirror is dropped, and another subscriber makes it again while the
/// first load still runs. The new mirror must be loaded for the new
/// subscriber (not answered by the old load, which filled the dropped one):
/// subscribed at the head, it gets what is published next, with no gap and
/// no replay of the history.
async fn a_mirror_dropped_and_made_again_during_its_load_is_loaded() {
    let redis = RedisServer::start();
    let mut connection = redis.connection().await;
    fill(&mut connection, "again", 32, 64 * 1024).await; // 2 MiB: about 1 s
    let (a, engine, link) = behind_a_link(&redis).await;
    let (b, _) = node(&redis.url());
    eventually("connected", || engine.stats().connected).await;
    link.throttle(2 << 20);
    // Gives up at once; its load goes on.
    let gave_up = timeout(
        Duration::from_millis(50),
        a.subscribe(["again"], Start::head()),
    )
    .await;
    assert!(gave_up.is_err(), "precondition: the load takes longer");
    eventually("the unused mirror is dropped", || {
        engine.stats().mirrors == 0
    })
    .await;
    let mut sub = bounded("subscribed", a.subscribe(["again"], Start::head()))
        .await
        .unwrap();
    link.throttle(0);
    b.publish("again", "next").await.unwrap();
    assert_eq!(next(&mut sub).await, "33:next");
}

/// A channel whose read fails (here its log key holds something else) fails
/// alone: the node stays connected, and reads it again, after a back-off,
/// for as long as it has subscribers; what Redis holds once the keys are
/// mended reaches them with no announcement at all. A meta key that holds
/// something else is no state of comet's: the next publish starts over.
async fn a_channel_whose_read_failed_is_read_again_while_it_has_subscribers() {
    let redis = RedisServer::start();
    let (a, engine) = node(&redis.url());
    let mut sub = a.subscribe(["mend"], Start::head()).await.unwrap();
    a.publish("mend", "1").await.unwrap();
    assert_eq!(next(&mut sub).await, "1:1");
    let mut connection = redis.connection().await;
    let _: () = connection.del("comet:{mend}:log2").await.unwrap();
    let _: () = connection
        .set("comet:{mend}:log2", "not a stream")
        .await
        .unwrap();
    // An announcement after a hole: the node must read the channel, and
    // the read fails.
    let _: i64 = connection
        .publish("comet:{mend}", "c2\n1\n5\n0\n0\nt\n\nlost")
        .await
        .unwrap();
    eventually("the read failed", || engine.stats().failed_reads >= 1).await;
    // Mended without a word on pub/sub: another epoch, three messages.
    let _: () = connection.del("comet:{mend}:meta2").await.unwrap();
    let _: () = connection.del("comet:{mend}:log2").await.unwrap();
    fill(&mut connection, "mend", 3, 1).await;
    assert_eq!(take(&mut sub, 4).await, ["gap:None", "1:x", "2:x", "3:x"]);
    assert!(engine.stats().connected);

    let _: () = connection
        .set("comet:{mend}:meta2", "not a hash")
        .await
        .unwrap();
    a.publish("mend", "over").await.unwrap();
    assert_eq!(take(&mut sub, 2).await, ["gap:None", "1:over"]);
}

/// A node that reaches `redis` through a link a test can slow down, with a
/// long history and time to spare for each call.
async fn behind_a_link(redis: &RedisServer) -> (Hub, RedisEngine, TcpProxy) {
    let link = TcpProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let history = HistoryPolicy {
        max_messages: 1000,
        max_age: None,
    };
    let (hub, engine) = node_with(
        builder(&link.url())
            .history(history)
            .timeout(Duration::from_secs(10)),
    );
    (hub, engine, link)
}

/// Whether the node is connected, without a break for `hold`, from some
/// time within `within` from now; and how often it was seen dropping.
async fn stays_connected(engine: &RedisEngine, within: Duration, hold: Duration) -> (bool, usize) {
    let deadline = Instant::now() + within + hold;
    let mut since: Option<Instant> = None;
    let mut drops = 0;
    loop {
        let now = Instant::now();
        if engine.stats().connected {
            if now.duration_since(*since.get_or_insert(now)) >= hold {
                return (true, drops);
            }
        } else if since.take().is_some() {
            drops += 1;
        }
        if now >= deadline {
            return (false, drops);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One subscribe to many channels with long histories of large messages, on
/// a node whose timeout is short: that subscribe may succeed or fail (for
/// those channels), but the node stays connected and its other subscribers
/// keep getting what is published meanwhile, promptly and with no gap.
/// (40 channels of 100 entries of 64 KiB: 256 MiB, which a debug build here
/// loads in about 2 s given the time, so never within 500 ms.)
async fn a_heavy_subscribe_leaves_the_node_connected_and_other_channels_flowing() {
    const CHANNELS: usize = 40;
    const ENTRIES: u64 = 100;
    const SIZE: usize = 64 * 1024;
    const LATENCY: Duration = Duration::from_secs(3);
    let redis = RedisServer::start();
    let mut connection = redis.connection().await;
    let heavy: Vec<String> = (0..CHANNELS).map(|n| format!("heavy{n}")).collect();
    for channel in &heavy {
        fill(&mut connection, channel, ENTRIES, SIZE).await;
    }
    let history = HistoryPolicy {
        max_messages: 1000,
        max_age: None,
    };
    let engine = builder(&redis.url())
        .history(history)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let a = Hub::builder()
        .engine(Arc::new(engine.clone()))
        .max_channels_per_subscription(64)
        .build();
    // The publisher, on a node of its own with time to spare.
    let (b, _) = node_with(builder(&redis.url()).timeout(Duration::from_secs(10)));
    let mut small = a.subscribe(["small"], Start::head()).await.unwrap();
    b.publish("small", "0").await.unwrap();
    assert_eq!(next(&mut small).await, "1:0");

    // Published (text, when accepted) and delivered (item, when received).
    let published: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let delivered: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = tokio::spawn({
        let (published, stop) = (published.clone(), stop.clone());
        async move {
            let mut refused = Vec::new();
            for n in 1.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match b.publish("small", n.to_string()).await {
                    Ok(cursor) => published.lock().unwrap().push((
                        format!("{}:{n}", position(&cursor, "small").offset),
                        Instant::now(),
                    )),
                    Err(error) => refused.push(format!("{n}: {error}")),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            refused
        }
    });
    let receiver = tokio::spawn({
        let delivered = delivered.clone();
        async move {
            while let Some(item) = small.next().await {
                delivered.lock().unwrap().push((show(item), Instant::now()));
            }
        }
    });

    let started = Instant::now();
    let subscribed = timeout(Duration::from_secs(30), a.subscribe(&heavy, Start::head())).await;
    let took = started.elapsed();
    let mut found = Findings::default();
    found.check(subscribed.is_ok(), || {
        "the heavy subscribe did not answer within 30 s".to_owned()
    });
    let outcome = match &subscribed {
        Ok(Ok(_)) => "succeeded".to_owned(),
        Ok(Err(error)) => format!("failed: {error}"),
        Err(_) => "hung".to_owned(),
    };
    // Settling: within a few seconds the node is connected, and then stays
    // so for a while.
    let (settled, drops) =
        stays_connected(&engine, Duration::from_secs(5), Duration::from_secs(3)).await;
    found.check(settled, || {
        format!(
            "the node must be connected within 5 s of the heavy subscribe ({outcome} after \
             {took:?}) and stay so for 3 s; it dropped {drops} times; {:?}",
            engine.stats()
        )
    });
    stop.store(true, Ordering::SeqCst);
    let refused = bounded("publisher stops", publisher).await.unwrap();
    found.check(refused.is_empty(), || {
        format!("publishes on the other node failed: {refused:?}")
    });
    // Every message published is delivered within LATENCY of its publish.
    let last = published.lock().unwrap().last().map(|(_, at)| *at);
    if let Some(last) = last {
        let wait_until = last + LATENCY;
        while Instant::now() < wait_until
            && delivered.lock().unwrap().len() < published.lock().unwrap().len()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    receiver.abort();
    let published = published.lock().unwrap().clone();
    let delivered: HashMap<String, Instant> = delivered.lock().unwrap().iter().cloned().collect();
    let gaps: Vec<&String> = delivered
        .keys()
        .filter(|item| item.starts_with("gap"))
        .collect();
    found.check(gaps.is_empty(), || {
        format!("the small channel got gaps: {gaps:?}")
    });
    let late: Vec<String> = published
        .iter()
        .filter_map(|(item, at)| match delivered.get(item) {
            Some(got) if *got - *at <= LATENCY => None,
            Some(got) => Some(format!("{item} after {:?}", *got - *at)),
            None => Some(format!("{item} never")),
        })
        .collect();
    found.check(late.is_empty(), || {
        format!(
            "{} of {} messages on the small channel came later than {LATENCY:?} or never: {}{}",
            late.len(),
            published.len(),
            late.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if late.len() > 5 { ", ..." } else { "" }
        )
    });
    found.assert_none();
}

// ---------------------------------------------------------------------------
// 5. Reads write nothing.

/// Subscribing to a channel nobody published to, or asking its head, leaves
/// Redis as it was: no key. Neither does a flood of subscribes with made-up
/// cursors to unknown channels (each would otherwise leave a key behind).
async fn reading_a_channel_never_published_to_creates_no_key() {
    let redis = RedisServer::start();
    let (hub, engine) = node(&redis.url());
    let mut connection = redis.connection().await;
    // The one key of the deployment (not of any channel): the cursor key,
    // made by the node when it connects.
    eventually("connected", || engine.stats().connected).await;
    assert_eq!(keys(&mut connection).await, ["comet:cursor-key"]);
    let mut found = Findings::default();

    let sub = hub.subscribe(["never"], Start::head()).await.unwrap();
    let size = dbsize(&mut connection).await;
    found.check(size == 1, || {
        format!("subscribing at the head made {} key(s)", size - 1)
    });
    drop(sub);
    let before = dbsize(&mut connection).await;
    hub.current_cursor(["unheard"]).await.unwrap();
    let size = dbsize(&mut connection).await;
    found.check(size == before, || {
        format!("current_cursor made {} key(s)", size - before)
    });
    let before = dbsize(&mut connection).await;
    for n in 0..200u64 {
        let channel = format!("unknown{n}");
        let cursor = cursor_at(&channel, comet_core::engine::random_epoch(), 1 + n % 50);
        drop(hub.subscribe([&channel], cursor).await.unwrap());
    }
    let size = dbsize(&mut connection).await;
    found.check(size == before, || {
        format!(
            "200 subscribes with made-up cursors made {} key(s)",
            size - before
        )
    });
    let some = keys(&mut connection).await;
    found.check(some == ["comet:cursor-key"], || format!("keys: {some:?}"));
    found.assert_none();
}

/// A channel Redis has nothing of is in the void: its cursor names when a
/// node saw it so. Resumed on another node after the first publishes (no
/// node mirrored it meanwhile), it continues into the channel's first epoch
/// with nothing skipped and no gap. If a whole history came and went since
/// (its keys expired, a later publish began another), the holder is told
/// with a gap rather than silently skipping the history it never saw.
async fn a_cursor_from_before_the_first_publish_resumes_without_a_gap_unless_a_history_came_and_went(
) {
    let redis = RedisServer::start();
    // Keys that never expire: the engine trusts a sight of the void for its
    // idle TTL.
    let life = Duration::from_millis(300);
    let (a, _) = node_with(builder(&redis.url()).idle_ttl(life));
    let (b, engine_b) = node_with(builder(&redis.url()).idle_ttl(life));
    let void = b.current_cursor(["v"]).await.unwrap();
    assert_eq!(position(&void, "v").epoch, comet_core::engine::VOID_EPOCH);
    a.publish("v", "1").await.unwrap();
    a.publish("v", "2").await.unwrap();
    let mut resumed = b.subscribe(["v"], void).await.unwrap();
    assert_eq!(take(&mut resumed, 2).await, ["1:1", "2:2"]);
    a.publish("v", "3").await.unwrap();
    assert_eq!(next(&mut resumed).await, "3:3");
    drop(resumed);
    eventually("b mirrors nothing", || engine_b.stats().mirrors == 0).await;

    // Seen in the void, then a history that went away (as keys that
    // expired), then another one begun longer than the idle TTL later.
    let mut connection = redis.connection().await;
    let void = b.current_cursor(["w"]).await.unwrap();
    a.publish("w", "gone").await.unwrap();
    let _: () = connection
        .del(&["comet:{w}:meta2", "comet:{w}:log2"])
        .await
        .unwrap();
    // Not for synchronisation: Redis's clock must move past the trusted
    // window.
    tokio::time::sleep(life * 2).await;
    a.publish("w", "new").await.unwrap();
    let mut resumed = b.subscribe(["w"], void).await.unwrap();
    assert_eq!(
        take(&mut resumed, 2).await,
        ["gap:None", "1:new"],
        "the history the holder never saw is a gap, not skipped in silence"
    );
}

// ---------------------------------------------------------------------------
// 6. New epochs are announced; prefixes are checked.

/// Two nodes mirror a channel; one of them moves it to a new epoch (it found
/// Redis behind its mirror on reloading). The other node's subscribers get
/// their gap promptly, without waiting for the next publish.
async fn a_new_epoch_reaches_other_nodes_without_a_publish() {
    let redis = RedisServer::start();
    // Node a reaches Redis through a link the test can reset, so that it
    // alone reloads.
    let link = TcpProxy::start(addr(&redis)).await;
    let (a, engine_a) = node(&link.url());
    let (b, engine_b) = node(&redis.url());
    let mut on_a = a.subscribe(["ne"], Start::head()).await.unwrap();
    let mut on_b = b.subscribe(["ne"], Start::head()).await.unwrap();
    for n in 1..=5 {
        b.publish("ne", n.to_string()).await.unwrap();
    }
    assert_eq!(take(&mut on_a, 5).await.len(), 5);
    assert_eq!(take(&mut on_b, 5).await.len(), 5);
    let mut connection = redis.connection().await;
    roll_back(&mut connection, "ne", 3).await;
    link.reset();
    // Node a reloads, finds Redis behind its mirror and moves the channel.
    assert_eq!(next(&mut on_a).await, "gap:None");
    assert_eq!(engine_a.stats().epochs_renewed, 1);
    let moved = meta_epoch(&mut connection, "ne").await;
    let got = timeout(Duration::from_secs(2), on_b.next())
        .await
        .map(|item| item.map(show));
    assert_eq!(
        engine_b.stats().epochs_renewed,
        0,
        "precondition: node b did not renew the epoch itself"
    );
    assert!(
        matches!(&got, Ok(Some(item)) if item == "gap:None"),
        "node b's subscriber must get a gap within 2 s of node a moving the channel to epoch \
         {moved:?}, with no publish; got {got:?}"
    );
}

/// A key prefix holding `{` or `}` would put the hash tag in the prefix (all
/// channels in one Cluster slot) or break it: refused when building.
async fn a_prefix_with_a_brace_is_refused() {
    for prefix in ["a{b", "a}b", "{app}"] {
        let built = RedisEngine::builder("redis://127.0.0.1:1")
            .prefix(prefix)
            .build();
        assert!(
            built.is_err(),
            "the prefix {prefix:?} must be refused; it was accepted"
        );
    }
}

// ---------------------------------------------------------------------------
// 7. Redis back after a restart.

/// Nodes that used Redis before it restarted: once it answers again (before
/// they noticed anything), the first publish, the first head and the first
/// subscribe on each node succeed; none answers 503 for a connection that
/// died while Redis was away.
async fn the_first_request_after_redis_comes_back_succeeds() {
    let mut redis = RedisServer::start();
    let (a, _) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let (c, engine_c) = node(&redis.url());
    a.publish("back", "before").await.unwrap();
    b.current_cursor(["back"]).await.unwrap();
    drop(c.subscribe(["warm"], Start::head()).await.unwrap());
    eventually("c's mirror dropped", || engine_c.stats().mirrors == 0).await;

    // Returns once the new Redis answers PING.
    tokio::task::block_in_place(|| redis.restart());
    let published = bounded("publish", a.publish("back", "after")).await;
    let head = bounded("head", b.current_cursor(["back"])).await;
    let subscribed = bounded("subscribe", c.subscribe(["back"], Start::head())).await;

    let mut found = Findings::default();
    found.check(published.is_ok(), || {
        format!(
            "the first publish on node a failed: {:?}",
            published.as_ref().err()
        )
    });
    found.check(head.is_ok(), || {
        format!(
            "the first current_cursor on node b failed: {:?}",
            head.as_ref().err()
        )
    });
    found.check(subscribed.is_ok(), || {
        format!(
            "the first subscribe on node c failed: {:?}",
            subscribed.as_ref().err()
        )
    });
    found.assert_none();
}

/// Lost writes that a client received, and that nothing has overwritten yet:
/// the client's cursor (issued by a node, so its tag checks out) is ahead of
/// Redis in the same epoch. Only lost writes explain that, so the channel
/// moves to a new epoch: the client gets one gap, and the offsets it saw are
/// never served again with other content, to anyone.
async fn an_issued_cursor_ahead_of_redis_moves_the_channel_to_a_new_epoch() {
    let redis = RedisServer::start();
    let (a, engine_a) = node(&redis.url());
    let (b, engine_b) = node(&redis.url());
    let mut sub = b.subscribe(["ahead"], Start::head()).await.unwrap();
    for n in 1..=10 {
        a.publish("ahead", n.to_string()).await.unwrap();
    }
    assert_eq!(take(&mut sub, 10).await.last().unwrap(), "10:10");
    let cursor = sub.cursor();
    let epoch = position(&cursor, "ahead").epoch;
    drop(sub);
    eventually("no node mirrors the channel", || {
        engine_a.stats().mirrors == 0 && engine_b.stats().mirrors == 0
    })
    .await;
    let mut connection = redis.connection().await;
    roll_back(&mut connection, "ahead", 8).await;

    // A made-up cursor just as far ahead (untagged, as anyone can write one)
    // is a gap for its holder alone: the channel stays in its epoch.
    let made_up = cursor_at("ahead", epoch, 10);
    let mut forged = a.subscribe(["ahead"], made_up).await.unwrap();
    assert_eq!(next(&mut forged).await, "gap:None");
    assert_eq!(meta_epoch(&mut connection, "ahead").await, Some(epoch));
    drop(forged);

    let mut resumed = b.subscribe(["ahead"], cursor).await.unwrap();
    assert_eq!(next(&mut resumed).await, "gap:None");
    let renewed = meta_epoch(&mut connection, "ahead").await.unwrap();
    assert_ne!(renewed, epoch, "the channel moved to a new epoch");
    assert_eq!(engine_b.stats().epochs_renewed, 1);
    let nine = a.publish("ahead", "9'").await.unwrap();
    assert_eq!(
        position(&nine, "ahead").epoch,
        renewed,
        "never (E, 9) again"
    );
    assert_eq!(next(&mut resumed).await, "9:9'");
}

/// An untagged cursor is taken as unverified: a position it names ahead of
/// the head is a gap for its holder alone. A node never tags such a
/// position for it either (say in the cursor of an item of another channel
/// of the same subscription), or the holder could present it again as one
/// a node issued and move the channel to a new epoch, a gap for everyone.
async fn an_untagged_cursor_cannot_be_laundered_into_an_issued_one() {
    let redis = RedisServer::start();
    let (a, engine) = node(&redis.url());
    let mut connection = redis.connection().await;
    a.publish("first", "1").await.unwrap();
    let head = a.publish("victim", "1").await.unwrap();
    let epoch = position(&head, "victim").epoch;
    // `first` in an old epoch (a gap comes first), `victim` far ahead.
    let made_up: Cursor = [
        Position::new(&ChannelName::new("first").unwrap(), 7, 3),
        Position::new(&ChannelName::new("victim").unwrap(), epoch, 1_000_000),
    ]
    .into_iter()
    .collect();
    let mut sub = a.subscribe(["first", "victim"], made_up).await.unwrap();
    let Some(comet_core::Item::Gap { cursor, .. }) = bounded("an item", sub.next()).await else {
        panic!("a gap first");
    };
    drop(sub);
    // Presented again, its positions are still unverified: no new epoch.
    let mut again = a.subscribe(["first", "victim"], cursor).await.unwrap();
    let _ = drain(&mut again, Duration::from_millis(200)).await;
    assert_eq!(meta_epoch(&mut connection, "victim").await, Some(epoch));
    assert_eq!(engine.stats().epochs_renewed, 0);
}

/// Redis loses the cursor key (it restarted without persistence) and a new
/// node puts a fresh one first. The nodes converge on the new key and keep
/// honouring the old one: cursors issued before still verify on every node.
async fn a_cursor_key_redis_lost_and_replaced_still_verifies_everywhere() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis.url());
    let old = a.publish("k", "1").await.unwrap();
    let mut connection = redis.connection().await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut connection)
        .await
        .unwrap();
    let (b, _) = node(&redis.url());
    b.publish("k", "2").await.unwrap(); // b puts a fresh key
    bounded("b honours a's old key", async {
        loop {
            match b.subscribe(["k"], old.clone()).await {
                Ok(_) => break,
                Err(comet_core::SubscribeError::ForgedCursor) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(error) => panic!("{error}"),
            }
        }
    })
    .await;
    // And a's cursors from now on verify on b.
    bounded("a tags with the new key", async {
        loop {
            let fresh = a.publish("k", "3").await.unwrap();
            a.publish("k", "4").await.unwrap();
            let mut sub = b.subscribe(["k"], fresh).await.unwrap();
            if next(&mut sub).await.ends_with(":4") {
                break;
            }
        }
    })
    .await;
}

/// A cursor whose tag does not match its positions was not issued by any
/// node: refused (400 `bad_cursor` over HTTP), before any read of Redis.
async fn a_cursor_with_a_wrong_tag_is_refused() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let issued = a.publish("tag", "1").await.unwrap();
    let token = issued.encode();
    // Version 3: a version byte, one 32-byte entry (the channel's key,
    // epoch, offset and the message's identity), an 8-byte tag.
    assert_eq!(token.len(), 55);
    // Issued on a, verified on b: the nodes share the key through Redis.
    let mut sub = b
        .subscribe(["tag"], Cursor::decode(&token).unwrap())
        .await
        .unwrap();
    a.publish("tag", "2").await.unwrap();
    assert_eq!(next(&mut sub).await, "2:2");
    // The same token with its offset moved and the old tag kept.
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
    let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    raw[24] = raw[24].wrapping_add(7);
    let altered = Cursor::decode(&URL_SAFE_NO_PAD.encode(&raw)).unwrap();
    let refused = b.subscribe(["tag"], altered).await.err();
    assert!(
        matches!(refused, Some(comet_core::SubscribeError::ForgedCursor)),
        "{refused:?}"
    );
    let mut connection = redis.connection().await;
    assert_eq!(
        keys(&mut connection).await.len(),
        3,
        "meta, log and the cursor key: nothing made for the refused cursor"
    );
}

/// A publish reaches Redis and is stored, but its reply is lost with the
/// connection. The node sends it again once, at once, on a fresh connection
/// (the app sees no error), and the script finds the first attempt by the
/// publish's identity among the newest entries: stored once, not twice.
async fn a_publish_whose_reply_was_lost_is_stored_once() {
    let redis = RedisServer::start();
    let link = TcpProxy::start(addr(&redis)).await;
    // Default timings: the node's pub/sub connection is quiet for seconds
    // after it connects, so the reply lost is the publish's.
    let engine = RedisEngine::builder(link.url()).build().unwrap();
    let hub = Hub::builder().engine(Arc::new(engine.clone())).build();
    eventually("connected", || engine.stats().connected).await;
    hub.publish("once", "0").await.unwrap();
    let reconnects = engine.stats().reconnects;
    link.lose_next_reply();
    let cursor = bounded("the publish", hub.publish("once", "1"))
        .await
        .unwrap();
    assert!(
        engine.stats().reconnects > reconnects,
        "precondition: the reply was lost and the connection replaced; {:?}",
        engine.stats()
    );
    assert_eq!(position(&cursor, "once").offset, 2);
    let mut connection = redis.connection().await;
    let length: usize = connection.xlen("comet:{once}:log2").await.unwrap();
    assert_eq!(length, 2, "the retried publish was stored twice");
}

/// A publish retried with the same idempotency key is stored once: the
/// retry answers the first cursor, on any node, and subscribers get one
/// message. Another key, or another channel, is another publish.
async fn a_publish_with_an_idempotency_key_is_stored_once() {
    let redis = RedisServer::start();
    let (a, _) = node(&redis.url());
    let (b, _) = node(&redis.url());
    let mut sub = a.subscribe(["once", "twice"], Start::head()).await.unwrap();
    let key = comet_core::IdempotencyKey::new("order-42").unwrap();
    let first = a.publish_idempotent("once", "paid", &key).await.unwrap();
    let again = b.publish_idempotent("once", "paid", &key).await.unwrap();
    assert_eq!(position(&first, "once"), position(&again, "once"));
    let other = a.publish_idempotent("twice", "paid", &key).await.unwrap();
    assert_eq!(position(&other, "twice").offset, 1);
    let fresh = comet_core::IdempotencyKey::new("order-43").unwrap();
    let next_one = b.publish_idempotent("once", "paid", &fresh).await.unwrap();
    assert_eq!(position(&next_one, "once").offset, 2);
    let mut got = take(&mut sub, 3).await;
    got.sort();
    assert_eq!(got, ["1:paid", "1:paid", "2:paid"]);
    assert!(drain(&mut sub, Duration::from_millis(300)).await.is_empty());
    let mut connection = redis.connection().await;
    assert_eq!(xlen(&mut connection, "once").await, 2);
    // Remembered for the window: the key expires in Redis.
    let ttl: i64 = redis::cmd("PTTL")
        .arg("comet:{once}:idem:order-42")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 5 * 60 * 1000, "{ttl}");
}
