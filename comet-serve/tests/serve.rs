//! `comet_push::serve` over real sockets: comet's transports read by an
//! independent client (reqwest, on hyper), and hostile or unusual HTTP/1.1
//! written byte by byte.

use axum::{
    extract::{ConnectInfo, Path, State},
    http::StatusCode,
    routing::{get, post},
    Router,
};
use comet_push::{CometLayer, Hub, HubEvent, Payload};
use futures_util::StreamExt;
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, oneshot},
    time::timeout,
};

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

async fn say(State(hub): State<Hub>, Path(channel): Path<String>, text: String) -> StatusCode {
    match hub.publish(&channel, Payload::text(text)).await {
        Ok(_) => StatusCode::CREATED,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

struct Server {
    address: SocketAddr,
    hub: Hub,
    /// One `()` each time a subscription ends.
    ended: mpsc::UnboundedReceiver<()>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// The quickstart's app on `comet_push::serve`, with `limits` applied.
async fn start(
    limits: impl FnOnce(comet_push::serve::Serve<Router>) -> comet_push::serve::Serve<Router>,
) -> Server {
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let hub = Hub::builder()
        .on_event(move |event| {
            if let HubEvent::Unsubscribed(_) = event {
                let _ = ended_tx.send(());
            }
        })
        .build();
    let app = Router::new()
        .route("/say/{channel}", post(say))
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/close",
            get(|| async { ([("connection", "close")], "bye") }),
        )
        .with_state(hub.clone())
        .layer(
            CometLayer::new(hub.clone())
                .sse("/events")
                .long_poll("/poll"),
        );
    let listener = comet_push::serve::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown_hub = hub.clone();
    let served = tokio::spawn(
        limits(comet_push::serve(listener, app).connect_info(ConnectInfo))
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
                shutdown_hub.shutdown();
            })
            .into_future(),
    );
    Server {
        address,
        hub,
        ended,
        stop: Some(stop),
        served,
    }
}

use std::future::IntoFuture;

/// Writes `request` on a fresh connection.
async fn send(address: SocketAddr, request: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    stream
}

/// Writes `request` on a fresh connection and reads until the server
/// closes it.
async fn exchange(address: SocketAddr, request: &[u8]) -> String {
    read_to_close(&mut send(address, request).await).await
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8(answer).unwrap()
}

/// Reads until `text` has arrived on `stream`.
async fn read_until(stream: &mut TcpStream, text: &str) -> String {
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !String::from_utf8_lossy(&answer).contains(text) {
        let n = timeout(BOUND, stream.read(&mut buf))
            .await
            .expect("in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before {text:?}: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn sse_arrives_whole_at_an_independent_client_and_a_client_that_leaves_is_unsubscribed() {
    let mut server = start(|serve| serve).await;
    let url = format!("http://{}/events?channel=news", server.address);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(response.headers().contains_key("date"));
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    for i in 0..3 {
        server
            .hub
            .publish("news", Payload::text(format!("m{i}")))
            .await
            .unwrap();
        while !seen.contains(&format!("data: m{i}\n\n")) {
            let chunk = timeout(BOUND, body.next())
                .await
                .expect("in time")
                .unwrap()
                .unwrap();
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
    drop(body);
    timeout(BOUND, server.ended.recv())
        .await
        .expect("the subscription ends when its client goes away");
    assert_eq!(server.hub.subscriber_count("news").await.unwrap(), 0);
}

#[tokio::test]
async fn a_held_long_poll_is_dropped_when_its_client_goes_away() {
    let mut server = start(|serve| serve).await;
    let stream = send(
        server.address,
        b"GET /poll?channel=quiet HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    // Held: the subscription exists, and nothing was answered.
    timeout(BOUND, async {
        while server.hub.subscriber_count("quiet").await.unwrap() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the poll subscribes");
    drop(stream);
    timeout(BOUND, server.ended.recv())
        .await
        .expect("the poll's subscription ends when its client goes away");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let server = start(|serve| serve).await;
    let answer = exchange(
        server.address,
        b"POST /say/p HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\none\
          GET /hello HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["201", "200", "200"], "{answer}");
    assert!(
        answer.ends_with("connection: close\r\n\r\nhello"),
        "{answer}"
    );
}

#[tokio::test]
async fn chunked_bodies_and_bodies_after_100_continue_are_read_whole() {
    let server = start(|serve| serve).await;
    let mut watcher = send(
        server.address,
        b"GET /events?channel=c HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    read_until(&mut watcher, ": comet").await;

    let answer = exchange(
        server.address,
        b"POST /say/c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
    read_until(&mut watcher, "data: hello world\n\n").await;

    let mut stream = send(server.address, b"POST /say/c HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\nconnection: close\r\n\r\n").await;
    let go_ahead = read_until(&mut stream, "\r\n\r\n").await;
    assert_eq!(go_ahead, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"again").await.unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");
    read_until(&mut watcher, "data: again\n\n").await;
}

#[tokio::test]
async fn hostile_requests_get_the_protocols_json_errors_and_a_closed_connection() {
    let server = start(|serve| serve.max_body_size(16).max_head_size(4096)).await;
    let huge_field = format!(
        "GET /hello HTTP/1.1\r\nhost: x\r\nx: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let chunked = |body: &str| {
        format!("POST /say/x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{body}")
    };
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (huge_field.into_bytes(), "431", "headers_too_large"),
        (b"GET /hello HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n".to_vec(), "400", "bad_parameter"),
        (b"GARBAGE\x01 / HTTP/1.1\r\n\r\n".to_vec(), "400", "bad_parameter"),
        (b"GET /hello HTTP/1.1\r\n\r\n".to_vec(), "400", "bad_parameter"),
        (b"GET /hello HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".to_vec(), "400", "bad_parameter"),
        (
            b"POST /say/x HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            "400",
            "bad_parameter",
        ),
        // A size line without digits, a bare LF in an extension, trailers:
        // each read another way by some proxy (request smuggling).
        (chunked("\r\n\r\n").into_bytes(), "400", "bad_parameter"),
        (chunked("2;\nxx\r\n0\r\n\r\n").into_bytes(), "400", "bad_parameter"),
        (chunked("0\r\n\nGET /hello HTTP/1.1\r\n\r\n").into_bytes(), "400", "bad_parameter"),
        (chunked("1\r\nx\r\n0\r\nx: y\r\n\r\n").into_bytes(), "400", "bad_parameter"),
        (b"POST /say/x HTTP/1.1\r\nhost: x\r\ncontent-length: 17\r\n\r\n".to_vec(), "413", "payload_too_large"),
        (chunked("11\r\n").into_bytes(), "413", "payload_too_large"),
    ];
    for (request, status, code) in cases {
        let answer = exchange(server.address, &request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer}"
        );
        assert!(
            answer.contains("content-type: application/json\r\n"),
            "{answer}"
        );
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], code, "{answer}");
    }
    // The server is still well.
    let answer = exchange(
        server.address,
        b"GET /hello HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.ends_with("\r\n\r\nhello"), "{answer}");
}

#[tokio::test]
async fn http10_streams_end_with_the_connection_and_head_answers_have_no_body() {
    let server = start(|serve| serve).await;
    let mut stream = send(server.address, b"GET /events?channel=old HTTP/1.0\r\n\r\n").await;
    let head = read_until(&mut stream, ": comet").await;
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("connection: close\r\n"), "{head}");
    server
        .hub
        .publish("old", Payload::text("plain"))
        .await
        .unwrap();
    read_until(&mut stream, "data: plain\n\n").await;

    let answer = exchange(
        server.address,
        b"HEAD /hello HTTP/1.1\r\nhost: x\r\n\r\nGET /close HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answer}");
    assert!(
        answer.ends_with("\r\n\r\nbye"),
        "the app's `connection: close` closes: {answer}"
    );
    assert!(
        !answer.contains("hello"),
        "a HEAD answer has no body: {answer}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_let_go_after_the_write_timeout() {
    let mut server = start(|serve| serve.write_timeout(Duration::from_millis(300))).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(server.address).await.unwrap();
    stream
        .write_all(b"GET /events?channel=flood HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read_until(&mut stream, ": comet").await;
    // From here on the client reads nothing: the sockets' buffers fill,
    // and the frame the server could not write waits its 300 ms.
    let big = "x".repeat(32 * 1024);
    timeout(BOUND, async {
        loop {
            server
                .hub
                .publish("flood", Payload::text(big.clone()))
                .await
                .unwrap();
            tokio::task::yield_now().await;
            if server.ended.try_recv().is_ok() {
                return;
            }
        }
    })
    .await
    .expect("the stalled subscriber's connection closes, and its subscription ends");
    drop(stream);
}

#[tokio::test]
async fn the_apps_connect_info_is_the_clients_address() {
    let server = start(|serve| serve).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let me = stream.local_addr().unwrap();
    stream
        .write_all(b"GET /peer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;
    assert!(answer.ends_with(&format!("\r\n\r\n{me}")), "{answer}");
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_the_header_timeout() {
    let server = start(|serve| serve.header_timeout(Duration::from_millis(300))).await;
    let mut stream = send(server.address, b"GET /hello HTTP/1.1\r\n").await;
    let started = std::time::Instant::now();
    let answer = read_to_close(&mut stream).await;
    assert_eq!(answer, "");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn graceful_shutdown_closes_idle_connections_ends_streams_and_returns() {
    let mut server = start(|serve| serve).await;
    let mut idle = send(server.address, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
    read_until(&mut idle, "hello").await;
    let mut streaming = send(
        server.address,
        b"GET /events?channel=s HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    read_until(&mut streaming, ": comet").await;

    server.stop.take().unwrap().send(()).unwrap();
    assert_eq!(read_to_close(&mut idle).await, "");
    let rest = read_to_close(&mut streaming).await;
    assert!(
        rest.contains("shutdown"),
        "the stream ends with its reason: {rest}"
    );
    assert!(
        rest.ends_with("0\r\n\r\n"),
        "and a whole chunked body: {rest}"
    );
    timeout(BOUND, server.served)
        .await
        .expect("serve returns once its connections are gone")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(server.address).await.is_err());
}
