//! Issue #17 in miniature: each load-and-abuse scenario of `comet-loadgen`
//! (`bench/abuse.sh` runs them full size) run small against the chat demo
//! binary, with the property it holds asserted. Seconds each, on loopback.
#![cfg(target_os = "linux")]

use comet_test_support::*;
use serde_json::Value;
use std::{process::Command, time::Duration};

/// The load generator, built beside the test binaries by `cargo test
/// --workspace` (it is a binary of the workspace's `comet-loadgen`).
fn loadgen_binary() -> std::path::PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("comet-loadgen");
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace` (or `cargo build -p comet-loadgen`) first",
        path.display()
    );
    path
}

/// The chat demo with `env`, on an ephemeral port; its pid and base URL.
fn demo(env: &[(&str, &str)]) -> (Running, u32) {
    let (mut chat, lines) = Running::start_with_env("chat", &["--addr", "127.0.0.1:0"], env, 1);
    chat.base = lines[0]
        .strip_prefix("chat listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
        .to_owned();
    let pid = chat.child.id();
    (chat, pid)
}

/// Runs the generator against `chat` (its pid and `/stats` given); the
/// JSON report. `{B}` in an argument is the demo's base URL.
async fn loadgen(chat: &Running, pid: u32, args: &[&str]) -> Value {
    let args: Vec<String> = args.iter().map(|a| a.replace("{B}", &chat.base)).collect();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(loadgen_binary())
            .args(&args)
            .args([
                "--pid",
                &pid.to_string(),
                "--stats-url",
                &chat.url("/stats"),
                "--json",
            ])
            .output(),
    )
    .await
    .expect("the load generator timed out")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

fn n(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no {pointer} in {report}"))
}

/// Nothing lost in silence, nothing twice, in a delivery tally.
fn exact(report: &Value, at: &str) {
    for (what, want) in [
        ("lost_silently", 0.0),
        ("duplicated", 0.0),
        ("unexpected", 0.0),
    ] {
        assert_eq!(n(report, &format!("{at}/{what}")), want, "{what}: {report}");
    }
}

/// 1. Slow consumers: subscribers that stop reading cost the server a
/// bounded amount each (hyper's write buffer is capped; comet keeps a
/// cursor), the others keep receiving, and a stalled one that reads again
/// gets every message or a gap counting exactly what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_cost_a_bounded_amount_and_lose_nothing_in_silence() {
    let (chat, pid) = demo(&[("COMET_HISTORY", "100")]);
    // 2,000 messages of 16 KiB: 32 MB each, more than loopback's socket
    // buffers hold, so history moves past the stalled subscribers.
    let report = loadgen(
        &chat,
        pid,
        &[
            "stall",
            "--sub-url",
            "{B}/comet?channel=stall",
            "--pub-url",
            "{B}/comet/publish/stall",
            "--stalled",
            "100",
            "--subscribers",
            "5",
            "--publishers",
            "1",
            "--rate",
            "1000",
            "--payload-bytes",
            "16384",
            // All 2,000, however long a loaded machine takes: fewer would
            // fit in the socket buffers, and history would not move past.
            "--messages",
            "2000",
            "--duration",
            "2",
            "--drain",
            "5",
            "--wires",
            "sse",
        ],
    )
    .await;
    exact(&report, "/normal");
    assert_eq!(n(&report, "/normal/gaps"), 0.0, "{report}");
    let reread = "/stalled_reread";
    let back = n(&report, &format!("{reread}/complete")) + n(&report, &format!("{reread}/dropped"));
    assert_eq!(back, 100.0, "{report}");
    for what in ["stuck", "lost_silently", "inexact_gaps", "duplicated"] {
        assert_eq!(
            n(&report, &format!("{reread}/{what}")),
            0.0,
            "{what}: {report}"
        );
    }
    assert!(
        n(&report, &format!("{reread}/gaps")) > 0.0,
        "history moved past them: {report}"
    );
    // What publishing added, per stalled subscriber: history (100 messages
    // of 16 KiB in all) and hyper's write buffer, capped at 32 KiB by the
    // demo (about 400 KiB with hyper's default).
    let each = (n(&report, "/rss_peak") - n(&report, "/rss_with_stalled_connected")) / 100.0;
    assert!(
        each < 150_000.0,
        "{each:.0} bytes per stalled subscriber: {report}"
    );
}

/// 2. Churn: subscribe-and-close cycles leave no subscriber, no file
/// descriptor and, once the idle TTL has passed, no channel behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_no_subscriber_descriptor_or_channel_behind() {
    let (chat, pid) = demo(&[("COMET_IDLE_TTL_SECS", "1")]);
    let report = loadgen(
        &chat,
        pid,
        &[
            "churn",
            "--sub-url",
            "{B}/comet?channel=churn{c}",
            "--channels",
            "20",
            "--cycles",
            "3000",
            "--concurrency",
            "32",
            "--sources",
            "4",
            "--drain",
            "8",
        ],
    )
    .await;
    assert_eq!(n(&report, "/failures"), 0.0, "{report}");
    assert_eq!(n(&report, "/stats_after/subscribers"), 0.0, "{report}");
    assert_eq!(n(&report, "/fds_leaked"), 0.0, "{report}");
    assert!(
        n(&report, "/channels_after_idle_ttl") <= 1.0,
        "only the probe's: {report}"
    );
}

/// 3. Slow clients: headers dribbled a byte a second are cut off after the
/// header read timeout, publish bodies after the publish timeout, and real
/// subscribers lose nothing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dribbling_clients_are_cut_off_and_subscribers_are_served() {
    let env = [
        ("COMET_HEADER_READ_TIMEOUT_MS", "1000"),
        ("COMET_PUBLISH_TIMEOUT_MS", "1000"),
    ];
    let (chat, pid) = demo(&env);
    for body in [false, true] {
        let mut args = vec![
            "slowloris",
            "--sub-url",
            "{B}/comet?channel=slow{c}",
            "--pub-url",
            "{B}/comet/publish/slow{c}",
            "--slow",
            "50",
            "--subscribers",
            "5",
            "--rate",
            "50",
            "--duration",
            "4",
            "--wires",
            "sse",
        ];
        if body {
            args.push("--slow-body");
        }
        let report = loadgen(&chat, pid, &args).await;
        exact(&report, "/normal");
        assert_eq!(n(&report, "/slow_closed_by_server"), 50.0, "{report}");
        let max = n(&report, "/slow_closed_after_s/max");
        assert!(max < 2.5, "closed after {max} s: {report}");
        if body {
            assert_eq!(n(&report, "/slow_answered"), 50.0, "a 408 each: {report}");
        }
    }
}

/// 4a. Reconnect storms: every client drops and comes back within 300 ms,
/// and each has exactly what it missed, with no listen-queue overflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_resumes_everyone_exactly() {
    let (chat, pid) = demo(&[]);
    let report = loadgen(
        &chat,
        pid,
        &[
            "storm",
            "--sub-url",
            "{B}/comet?channel=storm{c}",
            "--pub-url",
            "{B}/comet/publish/storm{c}",
            "--subscribers",
            "600",
            "--channels",
            "20",
            "--spread-ms",
            "300",
            "--messages",
            "2",
            "--wires",
            "sse,poll",
        ],
    )
    .await;
    exact(&report, "/delivery");
    assert_eq!(n(&report, "/not_back"), 0.0, "{report}");
    assert_eq!(n(&report, "/delivery/gaps"), 0.0, "{report}");
    assert!(n(&report, "/all_back_ms") < 2000.0, "{report}");
}

/// 4b. The demo's listen backlog holds a thousand connections that arrive
/// while it accepts none (stopped): with the default of 128, all but about
/// 129 would wait out SYN retransmits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_backlog_holds_a_thousand_simultaneous_connects() {
    let (chat, pid) = demo(&[]);
    let addr: std::net::SocketAddr = chat.base.trim_start_matches("http://").parse().unwrap();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let connects: Vec<_> = (0..1000)
        .map(|_| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_millis(900),
                tokio::net::TcpStream::connect(addr),
            ))
        })
        .collect();
    let mut connected = Vec::new();
    let mut timed_out = 0;
    for connect in connects {
        match connect.await.unwrap() {
            Ok(stream) => connected.push(stream.unwrap()),
            Err(_) => timed_out += 1,
        }
    }
    signal("-CONT");
    assert_eq!(
        timed_out, 0,
        "{timed_out} of 1,000 connects waited for a SYN retransmit"
    );
    // And the demo serves them once it runs again.
    drop(connected);
    let page = bounded("page", client().get(chat.url("/stats")).send())
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
}

/// 5. Publish floods: flat out to one channel, every subscriber gets every
/// message or a gap counting it; to many, the channel limit holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_floods_are_delivered_exactly_and_the_channel_limit_holds() {
    let (chat, pid) = demo(&[("COMET_MAX_CHANNELS", "50")]);
    let one = loadgen(
        &chat,
        pid,
        &[
            "flood",
            "--sub-url",
            "{B}/comet?channel=one{c}",
            "--pub-url",
            "{B}/comet/publish/one{c}",
            "--channels",
            "1",
            "--subscribers",
            "6",
            "--publishers",
            "4",
            "--duration",
            "2",
            "--wires",
            "sse,stream,poll",
        ],
    )
    .await;
    exact(&one, "/delivery");
    assert_eq!(
        n(&one, "/publish_statuses/201"),
        n(&one, "/published"),
        "{one}"
    );
    let many = loadgen(
        &chat,
        pid,
        &[
            "flood",
            "--sub-url",
            "{B}/comet?channel=many{c}",
            "--pub-url",
            "{B}/comet/publish/many{c}",
            "--channels",
            "500",
            "--subscribers",
            "6",
            "--publishers",
            "4",
            "--duration",
            "2",
            "--wires",
            "sse,stream,poll",
        ],
    )
    .await;
    exact(&many, "/delivery");
    // The one channel of the first flood, and at most 50 in all (racing
    // creations may pass it by the publishers' number).
    assert!(n(&many, "/channels_peak") <= 54.0, "{many}");
    let statuses = many["publish_statuses"].as_object().unwrap();
    // Past the channel limit: 429 `channel_limit`, and nothing else.
    let refused = statuses.get("429").and_then(|v| v.as_f64()).unwrap_or(0.0);
    assert!(refused > 0.0, "{many}");
    assert!(
        statuses
            .keys()
            .all(|s| ["201", "429"].contains(&s.as_str())),
        "{many}"
    );
}

/// 6. Soak, in miniature: every transport, sessions of about a second,
/// publishes over ten channels: nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_with_reconnects_loses_and_repeats_nothing() {
    let (chat, pid) = demo(&[]);
    let report = loadgen(
        &chat,
        pid,
        &[
            "soak",
            "--sub-url",
            "{B}/comet?channel=soak{c}",
            "--pub-url",
            "{B}/comet/publish/soak{c}",
            "--subscribers",
            "50",
            "--channels",
            "10",
            "--rate",
            "200",
            "--duration",
            "6",
            "--reconnect-secs",
            "1",
            "--drain",
            "10",
        ],
    )
    .await;
    exact(&report, "/delivery");
    assert_eq!(n(&report, "/delivery/gaps"), 0.0, "{report}");
    assert_eq!(n(&report, "/session_failures"), 0.0, "{report}");
    assert!(
        n(&report, "/delivery/sessions") > 100.0,
        "they reconnected: {report}"
    );
}
