//! `examples/custom_transport.rs`: a wire format of the app's own on axum, a
//! hyper-only server on the shared protocol, and a TCP line protocol driving
//! a subscription directly, all on one hub, run as the real binary.
#![cfg(unix)]

use comet_test_support::*;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    net::{tcp::OwnedReadHalf, TcpStream},
};

struct Servers {
    _running: Running,
    axum: String,
    hyper: String,
    tcp: String,
}

fn start() -> Servers {
    let (running, lines) = Running::start("custom_transport", &["--ephemeral"], 3);
    let after = |prefix: &str, line: &str| {
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?} in {line:?}"))
            .to_owned()
    };
    Servers {
        axum: after("axum listening on ", &lines[0]),
        hyper: after("hyper listening on ", &lines[1]),
        tcp: after("tcp listening on ", &lines[2]),
        _running: running,
    }
}

/// Connects to the line protocol and sends `command`; returns the rest of the
/// lines and the first one (`OK <cursor>` or `ERR <reason>`).
async fn tcp_subscribe(addr: &str, command: &str) -> (Lines<BufReader<OwnedReadHalf>>, String) {
    let stream = bounded("tcp connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{command}\n").as_bytes())
        .await
        .unwrap();
    let mut lines = BufReader::new(read).lines();
    let first = bounded("tcp answer", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    (lines, first)
}

async fn say(servers: &Servers, text: &str) {
    let response = client()
        .post(format!("{}/say?channel=news", servers.axum))
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn one_hub_three_transports_of_the_apps_own() {
    let servers = start();

    // 1. The custom format on axum.
    let response = client()
        .get(format!("{}/text?channel=news", servers.axum))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let mut text = LineReader::new(response);
    // 2. SSE from the hyper-only server.
    let response = client()
        .get(format!("{}/events?channel=news", servers.hyper))
        .send()
        .await
        .unwrap();
    let mut sse = SseReader::new(response);
    sse.opened().await;
    // 3. The TCP line protocol.
    let (mut tcp, ok) = tcp_subscribe(&servers.tcp, "SUB news").await;
    assert!(ok.starts_with("OK "), "{ok}");
    // No preamble to wait for: a comet route subscribes before it sends the
    // response head, so all three are subscribed once their heads arrived.

    say(&servers, "hello\nworld").await;
    assert_eq!(sse.next_event().await.data, "hello\nworld");
    let line = bounded("tcp line", tcp.next_line()).await.unwrap().unwrap();
    let (cursor, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, "hello world");
    assert_eq!(text.line().await.unwrap(), "news\thello world");

    // Resuming over TCP with the cursor gets exactly what was missed.
    drop(tcp);
    say(&servers, "second").await;
    let (mut resumed, ok) = tcp_subscribe(&servers.tcp, &format!("SUB news {cursor}")).await;
    assert!(ok.starts_with("OK "), "{ok}");
    let line = bounded("tcp resumed", resumed.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(line.ends_with(" second"), "{line}");
}

#[tokio::test]
async fn bad_input_gets_clear_errors_on_every_transport() {
    let servers = start();
    let (_, err) = tcp_subscribe(&servers.tcp, "SUB news not-a-cursor!").await;
    assert!(err.starts_with("ERR cursor is malformed"), "{err}");
    let (_, err) = tcp_subscribe(&servers.tcp, "HELLO").await;
    assert!(err.starts_with("ERR usage"), "{err}");
    let response = client()
        .get(format!("{}/text?channel=bad%20name", servers.axum))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "bad_channel").await;
    let response = client()
        .get(format!("{}/text?channel=news&transport=sse", servers.axum))
        .send()
        .await
        .unwrap();
    let message = expect_error(response, 400, "bad_transport").await;
    assert!(message.contains("offers text"), "{message}");
    let response = client()
        .get(format!("{}/events?cursor=x!", servers.hyper))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "bad_cursor").await;
}
