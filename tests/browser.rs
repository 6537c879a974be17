//! The browser client, `comet.js`, in a real browser (headless Chromium over
//! the DevTools protocol) against the chat example: every transport forced
//! in turn, network drops, server restarts, gaps, fallback when transports
//! are blocked, one connection shared by two tabs, a push host on another
//! origin, the demo page's own panel and controls, and its presence list
//! (on one node, and on two Redis nodes behind a round-robin proxy); and,
//! on a server of the test's own, a token function that keeps the client
//! subscribed across its tokens' expiries.
//!
//! Chromium missing: these tests are reported as ignored
//! (`comet_test_support::tool`), unless `COMET_BROWSER_TESTS=1`, where a missing browser
//! fails them (CI sets it).
//! The same for `redis-server` and `COMET_REDIS_TESTS=1`, for the case of
//! two nodes on Redis.

use comet_test_support::{
    browser::{Browser, Proxy, Tab},
    client, Running,
};
use serde_json::{json, Value};
use std::{net::SocketAddr, time::Duration};
use tokio::sync::{Semaphore, SemaphorePermit};

fn main() {
    comet_test_support::tool::run(vec![
        comet_test_support::tool_test!(sse_survives_drops_restarts_and_reports_gaps, [Chromium]),
        comet_test_support::tool_test!(stream_survives_drops_restarts_and_reports_gaps, [Chromium]),
        comet_test_support::tool_test!(poll_survives_drops_restarts_and_reports_gaps, [Chromium]),
        comet_test_support::tool_test!(jsonp_survives_drops_restarts_and_reports_gaps, [Chromium]),
        comet_test_support::tool_test!(iframe_survives_drops_restarts_and_reports_gaps, [Chromium]),
        comet_test_support::tool_test!(
            falls_back_in_order_and_returns_to_the_better_transport,
            [Chromium]
        ),
        comet_test_support::tool_test!(two_chat_tabs_share_one_connection, [Chromium]),
        comet_test_support::tool_test!(
            the_chat_demo_joins_at_once_and_its_controls_show_resume_and_fallback,
            [Chromium]
        ),
        comet_test_support::tool_test!(
            a_push_host_on_another_origin_works_with_credentials,
            [Chromium]
        ),
        comet_test_support::tool_test!(
            comet_js_across_two_redis_nodes_behind_a_round_robin_proxy,
            [Chromium, RedisServer]
        ),
        comet_test_support::tool_test!(
            ten_event_sources_are_live_at_once_over_http2_and_six_over_http1,
            [Chromium]
        ),
        comet_test_support::tool_test!(
            two_chat_users_in_one_room_see_each_other_come_and_go,
            [Chromium]
        ),
        comet_test_support::tool_test!(
            chat_users_on_two_redis_nodes_see_each_other_come_and_go,
            [Chromium, RedisServer]
        ),
        comet_test_support::tool_test!(
            a_token_function_keeps_every_transport_subscribed_across_expiries,
            [Chromium]
        ),
        comet_test_support::tool_test!(
            a_page_frozen_or_offline_while_its_connection_died_resumes_at_once_when_back,
            [Chromium]
        ),
        comet_test_support::tool_test!(
            the_chat_demo_on_tokens_keeps_its_page_subscribed_across_expiries,
            [Chromium]
        ),
    ]);
}

/// Two cores: at most two browsers at a time keeps every bound honest.
static BROWSERS: Semaphore = Semaphore::const_new(2);

async fn browser_slot() -> SemaphorePermit<'static> {
    BROWSERS.acquire().await.unwrap()
}

/// The chat example, listening on an ephemeral loopback port.
struct Chat {
    running: Running,
    addr: SocketAddr,
}

impl Chat {
    fn start(env: &[(&str, &str)]) -> Self {
        let (mut running, lines) =
            Running::start_with_env("chat", &["--addr", "127.0.0.1:0"], env, 1);
        running.base = lines[0]
            .strip_prefix("chat listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
            .to_owned();
        let addr = running.base.trim_start_matches("http://").parse().unwrap();
        Self { running, addr }
    }

    /// What `GET /comet/publish/<channel>` answers: the channel's info.
    async fn info(&self, channel: &str) -> Value {
        let url = self.running.url(&format!("/comet/publish/{channel}"));
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "channel info of {channel}");
        response.json().await.unwrap()
    }

    /// Publishes `{"n": n}` for each n, in order, straight to the server.
    async fn publish(&self, channel: &str, numbers: impl IntoIterator<Item = u64>) {
        let client = client();
        let url = self.running.url(&format!("/comet/publish/{channel}"));
        for n in numbers {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(json!({ "n": n }).to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201, "publishing {n}");
        }
    }
}

/// Test hooks in the page: `T.start(url, options)` makes a client that
/// records what it receives; `T.until(fn)` resolves when `fn()` is truthy,
/// checked whenever the client reports something (no polling).
const HARNESS: &str = r#"(async (script) => {
  const { Comet } = await import(script);
  const T = window.T = { Comet, got: [], gaps: [], states: [], errors: [], checks: [], mark: 0 };
  T.wake = () => { T.checks = T.checks.filter((check) => !check()); };
  T.until = (what) => new Promise((resolve) => {
    const check = () => { const v = what(); if (v) resolve(v); return Boolean(v); };
    if (!check()) T.checks.push(check);
  });
  T.start = (url, options) => {
    const c = T.c = new Comet(url, options);
    c.on("message", (m) => { T.got.push(m.json().n); T.wake(); });
    c.on("gap", (g) => { T.gaps.push(g); T.wake(); });
    c.on("state", (s) => { T.states.push(`${s.state}:${s.transport}`); T.wake(); });
    c.on("error", (e) => { T.errors.push(e); T.wake(); });
    return true;
  };
  T.since = (state) => T.states.slice(T.mark).some((s) => s.startsWith(state));
  return true;
})"#;

async fn harness(tab: &Tab<'_>, script: &str) {
    let loaded = tab
        .eval(&format!("{HARNESS}({})", Value::from(script)))
        .await;
    assert_eq!(loaded, true);
    tab.diagnose_with(
        "JSON.stringify({ state: T.c?.state, transport: T.c?.transport, got: T.got.length, \
         last: T.got.slice(-3), gaps: T.gaps, states: T.states.slice(-12), errors: T.errors, \
         frames: [...document.querySelectorAll('iframe')].map((f) => f.contentDocument?.readyState + ' ' + f.contentDocument?.URL) })",
    );
}

async fn start(tab: &Tab<'_>, url: &str, options: Value) {
    tab.eval(&format!("T.start({}, {options})", Value::from(url)))
        .await;
}

async fn received(tab: &Tab<'_>) -> Vec<u64> {
    serde_json::from_value(tab.eval("T.got").await).unwrap()
}

/// Waits until the client has `n` messages, then checks they are exactly
/// `expected`: nothing lost, nothing twice, in order.
async fn expect_messages(tab: &Tab<'_>, expected: impl IntoIterator<Item = u64>) {
    let expected: Vec<u64> = expected.into_iter().collect();
    tab.eval(&format!(
        "T.until(() => T.got.length >= {})",
        expected.len()
    ))
    .await;
    assert_eq!(received(tab).await, expected);
}

/// One transport, forced: receives; survives a network drop and a server
/// restart (a new process, so every channel has a new epoch) without loss
/// or duplication; reports the restart and an overflowed history as gaps.
async fn transport_survives(transport: &str) {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch(transport).await else {
        return;
    };
    // Heartbeats every second, so a dead forever frame is noticed in 3.
    let env = [("COMET_HEARTBEAT_SECS", "1")];
    let chat = Chat::start(&env);
    let proxy = Proxy::start(chat.addr).await;
    let tab = browser.tab(&proxy.url("/")).await;
    harness(&tab, &proxy.url("/comet/comet.js")).await;
    let channel = format!("test/{transport}");
    start(
        &tab,
        &proxy.url("/comet"),
        json!({ "channels": [channel], "transports": [transport], "share": false,
                "minDelay": 50, "maxDelay": 500, "heartbeatTimeout": 3000 }),
    )
    .await;
    tab.eval("T.until(() => T.c.state === 'open')").await;
    assert_eq!(tab.eval("T.c.transport").await, transport);

    chat.publish(&channel, 1..=3).await;
    expect_messages(&tab, 1..=3).await;

    // A network drop: every connection cut at once, then messages. (A held
    // poll cut before its answer is retried by the browser by itself.)
    tab.eval("T.mark = T.states.length").await;
    proxy.cut_and_await_reconnect().await;
    if ["sse", "stream", "iframe"].contains(&transport) {
        tab.eval("T.until(() => T.since('reconnecting'))").await;
    }
    chat.publish(&channel, 4..=6).await;
    expect_messages(&tab, 1..=6).await;
    tab.eval("T.until(() => T.c.state === 'open')").await;

    // A restart: the process dies, another takes its place; the old cursor
    // names an epoch that is gone, so a gap (missed: unknown), then all
    // that the new server has.
    drop(chat);
    let chat = Chat::start(&env);
    proxy.retarget(chat.addr);
    proxy.cut();
    chat.publish(&channel, 7..=9).await;
    expect_messages(&tab, 1..=9).await;
    let gaps = tab.eval("T.gaps").await;
    assert_eq!(gaps.as_array().unwrap().len(), 1, "{gaps}");
    assert_eq!(gaps[0]["channel"], channel.as_str());
    assert_eq!(gaps[0]["missed"], Value::Null);

    // History holds 1,000: 1,010 published while the client cannot reach
    // the server are a gap of exactly 10, then the 1,000 still held.
    proxy.suspend();
    chat.publish(&channel, 10..=1019).await;
    proxy.resume();
    tab.eval_within(
        Duration::from_secs(30),
        "T.until(() => T.gaps.length >= 2 && T.got.length >= 1009)",
    )
    .await;
    let gaps = tab.eval("T.gaps").await;
    assert_eq!(gaps[1]["missed"], 10, "{gaps}");
    let got = received(&tab).await;
    let expected: Vec<u64> = (1..=9).chain(20..=1019).collect();
    assert_eq!(got.len(), expected.len(), "count");
    assert!(got == expected, "lost or repeated messages after the gap");
    assert_eq!(tab.eval("T.errors.length").await, 0);
}

async fn sse_survives_drops_restarts_and_reports_gaps() {
    transport_survives("sse").await;
}

async fn stream_survives_drops_restarts_and_reports_gaps() {
    transport_survives("stream").await;
}

async fn poll_survives_drops_restarts_and_reports_gaps() {
    transport_survives("poll").await;
}

async fn jsonp_survives_drops_restarts_and_reports_gaps() {
    transport_survives("jsonp").await;
}

async fn iframe_survives_drops_restarts_and_reports_gaps() {
    transport_survives("iframe").await;
}

/// Blocked transports are left for the next in order, by failures that
/// happened; when the better one works again the client returns to it.
async fn falls_back_in_order_and_returns_to_the_better_transport() {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("fallback").await else {
        return;
    };
    let chat = Chat::start(&[]);
    let proxy = Proxy::start(chat.addr).await;
    let tab = browser.tab(&proxy.url("/")).await;
    harness(&tab, &proxy.url("/comet/comet.js")).await;
    tab.block(&["*transport=sse*"]).await;
    start(
        &tab,
        &proxy.url("/comet"),
        json!({ "channels": ["fallback"], "share": false, "minDelay": 50, "maxDelay": 400,
                "upgradeAfter": 300 }),
    )
    .await;
    tab.eval("T.until(() => T.c.state === 'open')").await;
    assert_eq!(tab.eval("T.c.transport").await, "stream");
    assert!(
        !tab.requests_to("transport=sse").is_empty(),
        "SSE was never tried"
    );
    chat.publish("fallback", 1..=3).await;
    expect_messages(&tab, 1..=3).await;

    // Everything fetch can do is blocked too: script tags are what's left.
    tab.block(&["*transport=sse*", "*transport=stream*", "*transport=poll*"])
        .await;
    proxy.cut();
    tab.eval_within(
        Duration::from_secs(30),
        "T.until(() => T.c.state === 'open' && T.c.transport === 'jsonp')",
    )
    .await;
    chat.publish("fallback", 4..=6).await;
    expect_messages(&tab, 1..=6).await;

    // Unblocked: the client tries the better transport again and stays.
    tab.block(&[]).await;
    tab.eval_within(
        Duration::from_secs(30),
        "T.until(() => T.c.state === 'open' && T.c.transport === 'sse')",
    )
    .await;
    chat.publish("fallback", 7..=9).await;
    expect_messages(&tab, 1..=9).await;
    assert_eq!(tab.eval("T.gaps.length").await, 0);
}

/// Resolves when the chat page shows a line containing `text`.
fn shows(text: &str) -> String {
    format!(
        r#"new Promise((resolve) => {{
  const has = () => [...document.querySelectorAll('#log li')].filter((li) => li.textContent.includes({t})).length;
  if (has()) return resolve(has());
  chat.comet.on('message', () => {{ if (has()) resolve(has()); }});
}})"#,
        t = Value::from(text)
    )
}

const OPEN: &str = "new Promise((resolve) => chat.comet.state === 'open' ? resolve(true) : chat.comet.on('open', () => resolve(true)))";

/// The chat page in two tabs of one user holds one comet connection; when
/// the tab that holds it closes, the other takes over without losing a
/// message.
async fn two_chat_tabs_share_one_connection() {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("two tabs").await else {
        return;
    };
    let chat = Chat::start(&[]);
    let first = browser
        .tab(&chat.running.url("/?room=shared&name=ann"))
        .await;
    first.eval(OPEN).await;
    first.eval(&shows("ann joined")).await;
    say(&chat, "shared", "carl", "before the second tab").await;
    first.eval(&shows("before the second tab")).await;
    // Tabs share a connection when their comet URLs are the same, query
    // included: the page's carries its user, so a second tab of ann's.
    let second = browser
        .tab(&chat.running.url("/?room=shared&name=ann"))
        .await;
    second.eval(OPEN).await;
    // The late tab gets the recent history from the tab that leads.
    second.eval(&shows("before the second tab")).await;
    second.eval(&shows("ann joined")).await;
    assert_eq!(first.eval("chat.comet.leader").await, true);
    assert_eq!(second.eval("chat.comet.leader").await, false);

    second
        .eval("document.getElementById('text').value = 'hello from bob'; document.getElementById('say').requestSubmit(); true")
        .await;
    assert_eq!(first.eval(&shows("hello from bob")).await, 1);
    assert_eq!(second.eval(&shows("hello from bob")).await, 1);
    assert!(!first.requests_to("/comet?").is_empty());
    assert_eq!(
        second.requests_to("/comet?"),
        Vec::<String>::new(),
        "the second tab opened a comet connection of its own"
    );

    // The leading tab closes: the other opens the connection and resumes.
    first.close().await;
    second
        .eval("new Promise((resolve) => chat.comet.leader && chat.comet.state === 'open' ? resolve(true) : chat.comet.on('open', () => chat.comet.leader && resolve(true)))")
        .await;
    say(&chat, "shared", "carl", "still here?").await;
    assert_eq!(second.eval(&shows("still here?")).await, 1);
    assert!(!second.requests_to("/comet?").is_empty());
    assert_eq!(second.eval(&shows("hello from bob")).await, 1, "repeated");
}

/// Resolves when `condition` (JavaScript) holds on the chat page, checked
/// whenever its client reports something (after the page's own listeners).
fn chat_until(condition: &str) -> String {
    format!(
        r#"new Promise((resolve) => {{
  const check = () => {{ if ({condition}) {{ resolve(true); return true; }} return false; }};
  if (!check()) for (const e of ['state', 'message', 'cursor', 'reconnect', 'transport', 'gap']) chat.comet.on(e, check);
}})"#
    )
}

/// The text of the chat page's element `id`.
async fn text_of(tab: &Tab<'_>, id: &str) -> String {
    let text = tab
        .eval(&format!(
            "document.getElementById({}).textContent",
            Value::from(id)
        ))
        .await;
    text.as_str().unwrap().to_owned()
}

/// The lines of the chat page's event log that contain `part`.
async fn events_with(tab: &Tab<'_>, part: &str) -> Vec<String> {
    let lines = tab
        .eval("[...document.querySelectorAll('#events li')].map((li) => li.textContent)")
        .await;
    let lines: Vec<String> = serde_json::from_value(lines).unwrap();
    lines.into_iter().filter(|l| l.contains(part)).collect()
}

/// Says `text` as `name` in the chat room `room`.
async fn say(chat: &Chat, room: &str, name: &str, text: &str) {
    let said = client()
        .post(chat.running.url(&format!("/rooms/{room}/messages")))
        .json(&json!({ "name": name, "text": text }))
        .send()
        .await
        .unwrap();
    assert_eq!(said.status(), 201);
}

/// The chat demo as a newcomer sees it: in the lobby at once, under a
/// generated name, with its history; the panel shows the transport, the
/// cursor, reconnects, fallbacks and gaps as they happen, and its controls
/// force a transport, drop the connection and restart from an old cursor.
async fn the_chat_demo_joins_at_once_and_its_controls_show_resume_and_fallback() {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("chat demo").await else {
        return;
    };
    let chat = Chat::start(&[]);
    let proxy = Proxy::start(chat.addr).await;
    say(&chat, "lobby", "ann", "before you came").await;
    let tab = browser.tab(&proxy.url("/")).await;
    tab.diagnose_with("document.querySelector('aside').innerText");
    tab.eval(OPEN).await;
    let name = tab.eval("document.getElementById('name').value").await;
    let name = name.as_str().unwrap().to_owned();
    assert!(
        name.len() > 3 && name.contains('-'),
        "a generated name: {name}"
    );
    tab.eval(&shows("before you came")).await;
    tab.eval(&shows(&format!("{name} joined"))).await;
    assert_eq!(text_of(&tab, "transport").await, "sse");
    assert_eq!(text_of(&tab, "state").await, "open");
    tab.eval(&chat_until(
        "document.getElementById('cursor').textContent === chat.comet.cursor",
    ))
    .await;

    // Force long polling: the client switches at once, from its cursor.
    tab.eval("const f = document.getElementById('force'); f.value = 'poll'; f.dispatchEvent(new Event('change')); true")
        .await;
    tab.eval(&chat_until(
        "chat.comet.state === 'open' && chat.comet.transport === 'poll'",
    ))
    .await;
    assert_eq!(text_of(&tab, "transport").await, "poll");
    assert_eq!(events_with(&tab, "forced: sse → poll").await.len(), 1);

    // Drop the connection: it comes back by itself and misses nothing.
    tab.eval("document.getElementById('drop').click(), true")
        .await;
    tab.eval(&chat_until(
        "document.getElementById('reconnects').textContent === '1' && chat.comet.state === 'open'",
    ))
    .await;
    assert_eq!(
        events_with(&tab, "dropped: reconnecting over poll")
            .await
            .len(),
        1
    );
    say(&chat, "lobby", "ann", "after the drop").await;
    assert_eq!(tab.eval(&shows("after the drop")).await, 1);

    // Restart from the first message's cursor: what came after it arrives
    // again, marked so; the message itself does not.
    tab.eval("[...document.querySelectorAll('#log li')].find((li) => li.textContent.includes('before you came')).querySelector('.from').click(), true")
        .await;
    tab.eval(&chat_until(
        "document.querySelectorAll('#log li.again').length >= 2",
    ))
    .await;
    let again = tab
        .eval("[...document.querySelectorAll('#log li.again')].map((li) => li.textContent)")
        .await;
    let again: Vec<String> = serde_json::from_value(again).unwrap();
    assert_eq!(again.len(), 2, "{again:?}");
    assert!(again[0].contains(&format!("{name} joined")), "{again:?}");
    assert!(again[1].contains("after the drop"), "{again:?}");
    assert_eq!(tab.eval(&shows("before you came")).await, 1);

    // A server restart: a new epoch, so a gap with an unknown count.
    drop(chat);
    let chat = Chat::start(&[]);
    proxy.retarget(chat.addr);
    proxy.cut();
    tab.eval(&chat_until(
        "document.getElementById('gaps').textContent === '1' && chat.comet.state === 'open'",
    ))
    .await;
    assert_eq!(
        events_with(&tab, "gap: unknown number of messages lost in room/lobby")
            .await
            .len(),
        1
    );
    tab.close().await;

    // A newcomer whose network blocks SSE sees the fallback to streaming.
    let tab = browser.tab("about:blank").await;
    tab.block(&["*transport=sse*"]).await;
    tab.navigate(&proxy.url("/")).await;
    tab.diagnose_with("document.querySelector('aside').innerText");
    tab.eval(&chat_until(
        "chat.comet.state === 'open' && chat.comet.transport === 'stream'",
    ))
    .await;
    assert_eq!(text_of(&tab, "fallbacks").await, "1");
    assert_eq!(events_with(&tab, "fallback: sse → stream").await.len(), 1);
    tab.eval(&shows("joined")).await;
}

/// A page of one origin receives from a push host on another, with
/// credentials, over SSE and over fetch.
async fn a_push_host_on_another_origin_works_with_credentials() {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("cross-origin").await else {
        return;
    };
    // The page is served as localhost:P, the push host is 127.0.0.1:P.
    let proxy = Proxy::start("127.0.0.1:9".parse().unwrap()).await;
    let page_origin = format!("http://localhost:{}", proxy.addr.port());
    let chat = Chat::start(&[("COMET_CORS_ORIGINS", &page_origin)]);
    proxy.retarget(chat.addr);
    let tab = browser.tab(&format!("{page_origin}/")).await;
    harness(&tab, &proxy.url("/comet/comet.js")).await;
    for (n, transport) in ["sse", "stream", "poll"].into_iter().enumerate() {
        let channel = format!("cross/{transport}");
        start(
            &tab,
            &proxy.url("/comet"),
            json!({ "channels": [channel], "transports": [transport], "share": false,
                    "withCredentials": true }),
        )
        .await;
        tab.eval("T.until(() => T.c.state === 'open')").await;
        let n = n as u64 * 2;
        chat.publish(&channel, [n + 1, n + 2]).await;
        tab.eval(&format!("T.until(() => T.got.length >= {})", n + 2))
            .await;
        tab.eval("T.c.close(), true").await;
    }
    assert_eq!(received(&tab).await, (1..=6).collect::<Vec<_>>());
}

/// Two chat nodes on one Redis behind a round-robin proxy (no stickiness):
/// the page, its script and every connection of `comet.js` go to either
/// node, and a cut sends the client to the other one. It receives exactly
/// what both nodes publish, in order, with no gap.
async fn comet_js_across_two_redis_nodes_behind_a_round_robin_proxy() {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("redis nodes").await else {
        return;
    };
    let redis = comet_test_support::redis_server::RedisServer::start();
    let env = [
        ("COMET_REDIS_URL", redis.url()),
        ("COMET_HEARTBEAT_SECS", "1".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let nodes = [Chat::start(&env), Chat::start(&env)];
    let proxy = comet_test_support::tcp_proxy::TcpProxy::round_robin(
        nodes.iter().map(|n| n.addr).collect(),
    )
    .await;
    let url = |path: &str| format!("http://{}{path}", proxy.addr);
    let tab = browser.tab(&url("/")).await;
    harness(&tab, &url("/comet/comet.js")).await;
    let channel = "test/redis";
    start(
        &tab,
        &url("/comet"),
        json!({ "channels": [channel], "share": false,
                "minDelay": 50, "maxDelay": 500, "heartbeatTimeout": 3000 }),
    )
    .await;
    tab.eval("T.until(() => T.c.state === 'open')").await;
    for n in 1..=4 {
        nodes[n as usize % 2].publish(channel, [n]).await;
    }
    expect_messages(&tab, 1..=4).await;
    tab.eval("T.mark = T.states.length").await;
    proxy.reset();
    tab.eval("T.until(() => T.since('reconnecting'))").await;
    for n in 5..=8 {
        nodes[n as usize % 2].publish(channel, [n]).await;
    }
    expect_messages(&tab, 1..=8).await;
    assert_eq!(tab.eval("T.gaps.length").await, 0);
    assert_eq!(tab.eval("T.errors.length").await, 0);
}

/// The problem comet works around, and HTTP/2's fix, side by side: a page
/// opens ten EventSources (no tab sharing, no comet.js). Over HTTP/1.1 the
/// browser keeps six connections per host, so the seventh waits until one
/// closes; over HTTP/2 (the demo with `--tls-self-signed`) all ten share
/// one connection and are live at once.
async fn ten_event_sources_are_live_at_once_over_http2_and_six_over_http1() {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("http2").await else {
        return;
    };
    const OPEN_TEN: &str = r#"(() => {
      window.opened = 0;
      window.sources = [];
      for (let i = 0; i < 10; i++) {
        const source = new EventSource(`/comet/sse?channel=h2/${i}`);
        source.onopen = () => { window.opened++; };
        window.sources.push(source);
      }
      return true;
    })()"#;
    for tls in [true, false] {
        let args: &[&str] = if tls {
            &["--addr", "127.0.0.1:0", "--tls-self-signed"]
        } else {
            &["--addr", "127.0.0.1:0"]
        };
        let (mut chat, lines) = Running::start("chat", args, 1);
        chat.base = lines[0]
            .strip_prefix("chat listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
            .to_owned();
        let tab = browser.tab(&chat.url("/")).await;
        let protocol = tab
            .eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
            .await;
        assert_eq!(protocol, if tls { "h2" } else { "http/1.1" });
        assert_eq!(tab.eval(OPEN_TEN).await, true);
        if tls {
            tab.eval("new Promise((r) => { const t = setInterval(() => { if (window.opened === 10) { clearInterval(t); r(true); } }, 20); })")
                .await;
            assert_eq!(
                tab.eval("window.sources.filter((s) => s.readyState === 1).length")
                    .await,
                10
            );
        } else {
            tab.eval("new Promise((r) => { const t = setInterval(() => { if (window.opened === 6) { clearInterval(t); r(true); } }, 20); })")
                .await;
            // A while later, still six: the others wait for a connection.
            tab.eval("new Promise((r) => setTimeout(() => r(true), 1500))")
                .await;
            let states = tab.eval("window.sources.map((s) => s.readyState)").await;
            let states: Vec<u64> = serde_json::from_value(states).unwrap();
            assert_eq!(states.iter().filter(|s| **s == 1).count(), 6, "{states:?}");
            assert_eq!(states.iter().filter(|s| **s == 0).count(), 4, "{states:?}");
            // Closing one frees its connection: the seventh opens.
            tab.eval("window.sources.find((s) => s.readyState === 1).close(); true")
                .await;
            tab.eval("new Promise((r) => { const t = setInterval(() => { if (window.opened === 7) { clearInterval(t); r(true); } }, 20); })")
                .await;
        }
        tab.close().await;
    }
}

/// Resolves when `condition` (JavaScript) holds on the chat page, checked
/// whenever its presence set changes (after the page has shown it).
fn presence_until(condition: &str) -> String {
    format!(
        r#"new Promise((resolve) => {{
  const check = () => {{ if ({condition}) {{ resolve(true); return true; }} return false; }};
  if (!check()) chat.here.on('change', check);
}})"#
    )
}

/// The chat page's "who is here" list is exactly `users`.
fn lists(users: &[&str]) -> String {
    format!(
        "[...document.querySelectorAll('#present li')].map((li) => li.dataset.user).join() === {}",
        Value::from(users.join(","))
    )
}

/// The users a channel-info answer lists, sorted.
fn listed(info: &Value) -> Vec<String> {
    let mut users: Vec<String> = info["presence"]
        .as_array()
        .unwrap_or_else(|| panic!("no presence in {info}"))
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect();
    users.sort();
    users
}

/// Two chat pages, two users, in one room: `ann` first, then `bob`. Each
/// page opens at `url(path)`. Checks that each lists both, with the room's
/// count, then closes bob's page and waits, within `leave_within` (the
/// server's grace windows and a margin), for ann's to lose him. `nodes`
/// are asked for the channel's info (as a publisher may) while both are
/// there. `exact`: the page's count of connections is exact (on one node;
/// across nodes a list may come before a node has written its own
/// connection, and only the next list would count it).
async fn users_come_and_go(
    browser: &Browser,
    url: impl Fn(&str) -> String,
    nodes: &[&Chat],
    leave_within: Duration,
    after_close: impl Fn(),
    exact: bool,
) {
    let room = "presence";
    let occupancy = |users: &str, connections: &str| {
        let shown = "document.getElementById('occupancy').textContent";
        match exact {
            true => format!("{shown} === '({users}, {connections})'"),
            false => format!("{shown}.startsWith('({users}, ')"),
        }
    };
    let ann = browser.tab(&url(&format!("/?room={room}&name=ann"))).await;
    ann.diagnose_with("document.querySelector('aside').innerText");
    ann.eval(OPEN).await;
    ann.eval(&presence_until(&lists(&["ann"]))).await;
    let bob = browser.tab(&url(&format!("/?room={room}&name=bob"))).await;
    bob.diagnose_with("document.querySelector('aside').innerText");
    bob.eval(OPEN).await;
    assert_eq!(
        bob.eval("chat.comet.leader").await,
        true,
        "ann's tab is another user's: no sharing"
    );
    bob.eval(&presence_until(&lists(&["ann", "bob"]))).await;
    ann.eval(&presence_until(&lists(&["ann", "bob"]))).await;
    for tab in [&ann, &bob] {
        tab.eval(&presence_until(&occupancy("2 users", "2 connections")))
            .await;
        assert_eq!(
            tab.eval("document.querySelector('#present .you').dataset.user")
                .await,
            tab.eval("document.getElementById('name').value").await
        );
    }
    assert_eq!(events_with(&ann, "presence: bob came").await.len(), 1);
    assert_eq!(text_of(&bob, "present").await, "annbob");
    // Every node answers the same, whichever one each page is on.
    let channel = format!("room/{room}");
    for node in nodes {
        let info = node.info(&channel).await;
        assert_eq!(listed(&info), ["ann", "bob"], "{info}");
        assert_eq!(info["users"], 2, "{info}");
        for member in info["presence"].as_array().unwrap() {
            assert_eq!(member["info"], json!({ "name": member["user"] }), "{info}");
        }
    }

    // Bob goes: after his connections end and their grace, he leaves.
    bob.close().await;
    after_close();
    ann.eval_within(leave_within, &presence_until(&lists(&["ann"])))
        .await;
    assert_eq!(events_with(&ann, "presence: bob left").await.len(), 1);
    assert_eq!(
        ann.eval(&occupancy("1 user", "1 connection")).await,
        true,
        "{}",
        text_of(&ann, "occupancy").await
    );
    ann.close().await;
}

/// The chat demo's presence: two users' pages in one room list each other
/// with the room's count, and one sees the other leave after their page
/// closes (and the grace window). Their comet URLs name their users, so
/// the two tabs do not share a connection.
async fn two_chat_users_in_one_room_see_each_other_come_and_go() {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("presence").await else {
        return;
    };
    let chat = Chat::start(&[]);
    // One node: bob's stream ends last, so its 5 s grace is his.
    let leave_within = Duration::from_secs(20);
    users_come_and_go(
        &browser,
        |path| chat.running.url(path),
        &[&chat],
        leave_within,
        || {},
        true,
    )
    .await;
}

/// The same across two chat nodes on one Redis behind a round-robin proxy:
/// each page's connections land on either node, and each node's presence
/// is the room's on every node (the Redis engine's presence store).
async fn chat_users_on_two_redis_nodes_see_each_other_come_and_go() {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("redis presence").await else {
        return;
    };
    let redis = comet_test_support::redis_server::RedisServer::start();
    let env = [("COMET_REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let nodes = [Chat::start(&env), Chat::start(&env)];
    let proxy = comet_test_support::tcp_proxy::TcpProxy::round_robin(
        nodes.iter().map(|n| n.addr).collect(),
    )
    .await;
    // Each node keeps a user for the grace of their last subscription
    // there: bob's first request, the poll that gives his stream its
    // cursor, may have been on the node his stream is not on, where he
    // stays the route's longest hold (30 s) plus 5 s after it.
    let leave_within = Duration::from_secs(50);
    users_come_and_go(
        &browser,
        |path| format!("http://{}{path}", proxy.addr),
        &[&nodes[0], &nodes[1]],
        leave_within,
        // The proxy holds a connection to a node open, once its client
        // has gone, until it is cut: cut them all (ann reconnects, and her
        // new list is diffed against what she had).
        || proxy.reset(),
        false,
    )
    .await;
}

/// A route that takes tokens (PROTOCOL.md, "Access") and a page whose
/// comet.js gets them from the app's token endpoint, which mints them for
/// 2 s: on every transport, messages published every 150 ms before, across
/// and after at least one expiry reach the page exactly once, in order, and
/// the page asked for a token more than once.
async fn a_token_function_keeps_every_transport_subscribed_across_expiries() {
    use axum::{response::Html, routing::get, Router};
    use comet_push::{
        protocol::{
            token::{Claims, TokenSigner, Tokens, VerifyingKey},
            SubscribeRoute,
        },
        tower::CometLayer,
        Hub, Payload,
    };
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("tokens").await else {
        return;
    };
    const SECRET: &[u8] = b"the browser test's 32-byte secret";
    let signer = TokenSigner::hs256(SECRET).unwrap().kid("k1");
    let tokens = Tokens::new().key("k1", VerifyingKey::hs256(SECRET).unwrap());
    let minted = Arc::new(AtomicUsize::new(0));
    let hub = Hub::new();
    let app = Router::new()
        .route(
            "/",
            get(|| async { Html("<!doctype html><title>tokens</title>") }),
        )
        .route(
            "/token",
            get({
                let minted = minted.clone();
                move || async move {
                    minted.fetch_add(1, Ordering::SeqCst);
                    let claims = Claims::new(["tokens/*"], Duration::from_secs(2)).subject("ann");
                    signer.sign(&claims).unwrap()
                }
            }),
        )
        .layer(
            CometLayer::new(hub.clone()).route(
                "/comet",
                SubscribeRoute::all()
                    .authorizer(tokens)
                    .max_hold(Duration::from_secs(10)),
            ),
        );
    let server = comet_test_support::TestServer::axum(app).await;
    let tab = browser.tab(&server.url("/")).await;
    harness(&tab, "/comet/comet.js").await;
    for transport in ["sse", "stream", "poll", "jsonp", "iframe"] {
        let channel = format!("tokens/{transport}");
        let before = minted.load(Ordering::SeqCst);
        tab.eval(&format!(
            "T.got = [], T.start('/comet', {{ channels: [{channel:?}], transports: [{transport:?}], \
             share: false, minDelay: 50, maxDelay: 500, \
             token: () => fetch('/token').then((r) => r.text()) }})"
        ))
        .await;
        tab.eval("T.until(() => T.c.state === 'open')").await;
        for n in 1..=16 {
            let payload = Payload::json_bytes(json!({ "n": n }).to_string()).unwrap();
            hub.publish(&channel, payload).await.unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        expect_messages(&tab, 1..=16).await;
        let asked = minted.load(Ordering::SeqCst) - before;
        assert!(asked > 1, "{transport}: one token for 2.4 s of 2-s tokens");
        assert_eq!(tab.eval("T.gaps.length").await, 0, "{transport}");
        assert_eq!(tab.eval("T.errors").await, json!([]), "{transport}");
        tab.eval("T.c.close(), true").await;
    }
    tab.close().await;
}

/// The device's comings and goings, as Chromium makes them (DevTools'
/// `Page.setWebLifecycleState` and `Network.emulateNetworkConditions`),
/// while the connection dies in silence (a proxy that stops passing bytes
/// but closes nothing, as a phone's radio does to a frozen page's socket):
/// when the page is back, it reconnects from its cursor at once and loses
/// nothing, where before it waited for `heartbeatTimeout` (45 s) or, over
/// SSE, for ever.
async fn a_page_frozen_or_offline_while_its_connection_died_resumes_at_once_when_back() {
    use axum::{response::Html, routing::get, Router};
    use comet_push::{
        protocol::{Cors, SubscribeRoute},
        tower::CometLayer,
        Hub, Payload,
    };
    use comet_test_support::tcp_proxy::TcpProxy;

    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("lifecycle").await else {
        return;
    };
    let hub = Hub::new();
    let app = Router::new()
        .route(
            "/",
            get(|| async { Html("<!doctype html><title>lifecycle</title>") }),
        )
        .layer(
            CometLayer::new(hub.clone())
                .route("/comet", SubscribeRoute::all().cors(Cors::any_origin())),
        );
    let server = comet_test_support::TestServer::axum(app).await;
    // The push host is the proxy (another origin): the page's own
    // connections, idle in the browser's pool, are not the ones that die.
    let proxy = TcpProxy::start(server.addr).await;
    let url = |path: &str| format!("http://{}{path}", proxy.addr);
    let tab = browser.tab(&server.url("/")).await;
    harness(&tab, "/comet/comet.js").await;
    let publish = |n: u64| {
        let hub = hub.clone();
        async move {
            let payload = Payload::json_bytes(json!({ "n": n }).to_string()).unwrap();
            hub.publish("life", payload).await.unwrap();
        }
    };
    // Within this, the page is back: far below the 45-s watchdog, which
    // SSE does not even have (EventSource hides heartbeats).
    const BACK: Duration = Duration::from_secs(4);

    // Frozen (a background tab on a phone) longer than staleAfter.
    start(
        &tab,
        &url("/comet"),
        json!({ "channels": ["life"], "transports": ["sse"], "share": false,
                "staleAfter": 1000, "minDelay": 50, "maxDelay": 500 }),
    )
    .await;
    tab.eval("T.until(() => T.c.state === 'open')").await;
    publish(1).await;
    expect_messages(&tab, 1..=1).await;
    tab.call("Page.setWebLifecycleState", json!({ "state": "frozen" }))
        .await;
    proxy.freeze();
    publish(2).await;
    // Away longer than staleAfter: a time the scenario needs, not a wait
    // for an event.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tab.call("Page.setWebLifecycleState", json!({ "state": "active" }))
        .await;
    tab.eval_within(BACK, "T.until(() => T.got.length >= 2)")
        .await;
    assert_eq!(received(&tab).await, [1, 2]);

    // Offline (a tunnel, a lift), the link dead meanwhile; a slow back-off,
    // so that only the `online` event can bring it back in time.
    tab.eval("T.c.close(), T.got = [], true").await;
    start(
        &tab,
        &url("/comet"),
        json!({ "channels": ["life"], "transports": ["sse"], "share": false,
                "since": 1, "minDelay": 20000, "maxDelay": 30000 }),
    )
    .await;
    expect_messages(&tab, 2..=2).await;
    tab.eval("T.until(() => T.c.state === 'open')").await;
    let conditions = |offline: bool| json!({ "offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1 });
    tab.call("Network.emulateNetworkConditions", conditions(true))
        .await;
    tab.eval("T.until(() => !navigator.onLine)").await;
    proxy.freeze();
    publish(3).await;
    tab.call("Network.emulateNetworkConditions", conditions(false))
        .await;
    tab.eval_within(BACK, "T.until(() => T.got.length >= 2)")
        .await;
    assert_eq!(received(&tab).await, [2, 3]);
    assert_eq!(tab.eval("T.gaps.length").await, 0);
    tab.close().await;
}

/// The chat demo with `--jwt-secret` (2-s tokens): the page gets its tokens
/// from `/token`, is present under its name (the token's `sub`), and keeps
/// every message across several expiries.
async fn the_chat_demo_on_tokens_keeps_its_page_subscribed_across_expiries() {
    let _slot = browser_slot().await;
    let Some(browser) = Browser::launch("chat on tokens").await else {
        return;
    };
    let chat = Chat::start(&[
        ("COMET_JWT_SECRET", "the demo's secret of 32 bytes, or more"),
        ("COMET_TOKEN_TTL_SECS", "2"),
    ]);
    let tab = browser.tab(&chat.running.url("/?room=tokens")).await;
    tab.eval(OPEN).await;
    let name = tab.eval("document.getElementById('name').value").await;
    let name = name.as_str().unwrap().to_owned();
    let info = chat.info("room/tokens").await;
    assert_eq!(info["presence"][0]["user"], name.as_str(), "{info}");
    for n in 1..=12 {
        say(&chat, "tokens", "bot", &format!("message {n}")).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tab.eval(&shows("message 12")).await;
    let shown = tab
        .eval("[...document.querySelectorAll('#log li')].filter((li) => li.textContent.includes('message ')).length")
        .await;
    assert_eq!(shown, 12, "every message once, across the tokens' expiries");
    assert!(
        tab.requests_to("/token?").len() > 2,
        "a new token as each expired"
    );
    tab.close().await;
}
