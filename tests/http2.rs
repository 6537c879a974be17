//! comet over HTTP/2: every stream on one connection, as browsers use it
//! over TLS. Served by `examples/common/http2.rs` (hyper-util's HTTP/1+2
//! builder), in the clear with prior knowledge (h2c) and over TLS with ALPN
//! (a certificate made at test time), on both adapters; the client is
//! hyper's own HTTP/2 client, one connection per test.

#[allow(dead_code)]
#[path = "../examples/common/http1.rs"]
mod http1;
#[allow(dead_code)]
#[path = "../examples/common/http2.rs"]
mod http2;

use bytes::Bytes;
use comet_push::{protocol::SubscribeRoute, Hub, MemoryEngine};
use comet_test_support::{bounded, each_adapter, eventually, Adapter, Mount};
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, client::conn::http2::SendRequest, Request, Response};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use serde_json::Value;
use std::{net::SocketAddr, sync::Arc};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

fn mounts() -> Vec<Mount> {
    vec![
        Mount::Subscribe("/sse", SubscribeRoute::sse()),
        Mount::Subscribe("/poll", SubscribeRoute::long_poll()),
    ]
}

/// A server of `hub` on HTTP/1.1 and HTTP/2; stopping it shuts the hub down
/// first, as the demo does.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(adapter: Adapter, hub: &Hub, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = {
            let hub = hub.clone();
            async move {
                let _ = stopped.await;
                hub.shutdown();
            }
        };
        let task = match adapter {
            Adapter::Axum => {
                let app = comet_test_support::axum_app(hub, mounts());
                tokio::spawn(http2::serve(
                    listener,
                    tls,
                    move |_| TowerToHyperService::new(app.clone()),
                    shutdown,
                ))
            }
            Adapter::Warp => {
                let service = warp::service(comet_test_support::warp_app(hub, mounts()));
                tokio::spawn(http2::serve(
                    listener,
                    tls,
                    move |_| TowerToHyperService::new(service.clone()),
                    shutdown,
                ))
            }
        };
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Begins a graceful shutdown; resolves when the server has stopped.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        bounded("server stops", &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/2 connection.
struct Client {
    sender: SendRequest<Empty<Bytes>>,
    connection: JoinHandle<Result<(), hyper::Error>>,
    base: String,
}

impl Client {
    async fn connect(addr: SocketAddr, tls: Option<&Tls>, stream_window: u32) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .initial_stream_window_size(stream_window)
            .initial_connection_window_size(16 * 1024 * 1024);
        let (sender, connection, base) = match tls {
            None => {
                let (sender, connection) = builder.handshake(TokioIo::new(tcp)).await.unwrap();
                (sender, tokio::spawn(connection), format!("http://{addr}"))
            }
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let stream = tls.connector.connect(name, tcp).await.unwrap();
                assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN");
                let (sender, connection) = builder.handshake(TokioIo::new(stream)).await.unwrap();
                (
                    sender,
                    tokio::spawn(connection),
                    format!("https://localhost:{}", addr.port()),
                )
            }
        };
        Self {
            sender,
            connection,
            base,
        }
    }

    async fn get(&self, path: &str) -> Response<Incoming> {
        let request = Request::get(format!("{}{path}", self.base))
            .body(Empty::new())
            .unwrap();
        bounded("response head", self.sender.clone().send_request(request))
            .await
            .unwrap()
    }
}

/// Reads an SSE body as it arrives.
struct Events {
    body: Incoming,
    buf: Vec<u8>,
}

impl Events {
    async fn open(client: &Client, path: &str) -> Self {
        let response = client.get(path).await;
        assert_eq!(response.status(), 200);
        Self {
            body: response.into_body(),
            buf: Vec::new(),
        }
    }

    /// The next event's (id, data).
    async fn next(&mut self) -> (String, String) {
        let (mut id, mut data) = (String::new(), None::<String>);
        loop {
            while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8(line[..i].to_vec()).unwrap();
                if line.is_empty() {
                    if let Some(data) = data.take() {
                        return (id, data);
                    }
                } else if let Some(value) = line.strip_prefix("id: ") {
                    id = value.to_owned();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data = Some(value.to_owned());
                }
            }
            let frame = bounded("sse frame", self.body.frame())
                .await
                .expect("stream ended")
                .unwrap();
            if let Ok(bytes) = frame.into_data() {
                self.buf.extend_from_slice(&bytes);
            }
        }
    }
}

/// A held long poll's answer: its cursor and its messages' data (an end as
/// `end:<reason>`).
async fn poll_answer(response: Response<Incoming>) -> (String, Vec<String>) {
    assert_eq!(response.status(), 200);
    let body = bounded("poll body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let data = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m["type"].as_str() {
            Some("end") => format!("end:{}", m["reason"].as_str().unwrap()),
            _ => m["data"].as_str().unwrap().to_owned(),
        })
        .collect();
    (body["cursor"].as_str().unwrap().to_owned(), data)
}

/// TLS for both ends: a certificate for `localhost` made now.
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
}

fn tls() -> Tls {
    let (cert, key) = http2::self_signed(&["localhost"]).unwrap();
    let acceptor = http2::tls_acceptor(vec![cert.clone()], key).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Tls {
        acceptor,
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
    }
}

each_adapter!(
    streams_and_polls_share_one_connection_in_the_clear,
    streams_and_polls_share_one_connection_over_tls,
    a_reset_stream_frees_its_subscription,
    a_stalled_stream_does_not_hold_up_the_others,
    graceful_shutdown_sends_goaway_and_clients_resume_without_loss,
    what_is_ready_goes_in_one_data_frame,
);

/// Over HTTP/2 each DATA frame passes the connection's shared state and
/// flow control: a stream hands over what is ready at once in one frame
/// (here 50 messages of history, about 3 KB), not a frame each.
async fn what_is_ready_goes_in_one_data_frame(adapter: Adapter) {
    let hub = Hub::new();
    let server = Server::start(adapter, &hub, None).await;
    let client = Client::connect(server.addr, None, 1024 * 1024).await;
    let start = hub.current_cursor(["f"]).await.unwrap().encode();
    for n in 0..50 {
        hub.publish("f", format!("message {n}")).await.unwrap();
    }
    let response = client.get(&format!("/sse?channel=f&cursor={start}")).await;
    let mut body = response.into_body();
    let (mut frames, mut text) = (0, String::new());
    while text.matches("data: ").count() < 50 {
        let frame = bounded("data frame", body.frame())
            .await
            .expect("stream ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            frames += 1;
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    assert!(text.contains("data: message 49\n"), "{text}");
    assert!(
        frames <= 3,
        "50 messages ready at once came in {frames} DATA frames"
    );
}

async fn streams_and_polls_share_one_connection_in_the_clear(adapter: Adapter) {
    one_connection(adapter, None).await;
}

async fn streams_and_polls_share_one_connection_over_tls(adapter: Adapter) {
    one_connection(adapter, Some(tls())).await;
}

/// 100 SSE streams and 100 held long polls on one connection; one publish
/// reaches all of them.
async fn one_connection(adapter: Adapter, tls: Option<Tls>) {
    let hub = Hub::new();
    let server = Server::start(adapter, &hub, tls.as_ref().map(|t| t.acceptor.clone())).await;
    let client = Client::connect(server.addr, tls.as_ref(), 1024 * 1024).await;
    let start = hub.current_cursor(["c"]).await.unwrap().encode();
    let mut streams = Vec::new();
    for _ in 0..100 {
        streams.push(Events::open(&client, "/sse?channel=c").await);
    }
    let mut polls = Vec::new();
    for _ in 0..100 {
        let request = Request::get(format!(
            "{}/poll?channel=c&cursor={start}&timeout=10",
            client.base
        ))
        .body(Empty::new())
        .unwrap();
        let sender = client.sender.clone();
        polls.push(tokio::spawn(async move {
            let mut sender = sender;
            poll_answer(sender.send_request(request).await.unwrap()).await
        }));
    }
    eventually("200 subscribers", || hub.local_subscriber_count("c") == 200).await;
    hub.publish("c", "to all").await.unwrap();
    for stream in &mut streams {
        assert_eq!(stream.next().await.1, "to all");
    }
    for poll in polls {
        let (_, data) = bounded("poll answered", poll).await.unwrap();
        assert_eq!(data, ["to all"]);
    }
    assert!(
        !client.connection.is_finished(),
        "one connection throughout"
    );
}

/// A stream the client resets (`RST_STREAM`) is unsubscribed at once, and
/// the connection goes on.
async fn a_reset_stream_frees_its_subscription(adapter: Adapter) {
    let hub = Hub::new();
    let server = Server::start(adapter, &hub, None).await;
    let client = Client::connect(server.addr, None, 1024 * 1024).await;
    let kept = Events::open(&client, "/sse?channel=r").await;
    let reset = Events::open(&client, "/sse?channel=r").await;
    eventually("two subscribers", || hub.local_subscriber_count("r") == 2).await;
    drop(reset); // hyper's client resets a stream whose body is dropped
    eventually("the reset one is gone", || {
        hub.local_subscriber_count("r") == 1
    })
    .await;
    let mut kept = kept;
    hub.publish("r", "still here").await.unwrap();
    assert_eq!(kept.next().await.1, "still here");
    assert_eq!(hub.local_subscribers(), 1);
}

/// A stream whose client stopped reading fills its window (the client's
/// stream window is 64 KiB here); the others on the connection go on.
async fn a_stalled_stream_does_not_hold_up_the_others(adapter: Adapter) {
    let hub = Hub::new();
    let server = Server::start(adapter, &hub, None).await;
    let client = Client::connect(server.addr, None, 64 * 1024).await;
    let stalled = Events::open(&client, "/sse?channel=stalled").await;
    let mut live = Events::open(&client, "/sse?channel=live").await;
    eventually("both subscribed", || hub.local_subscribers() == 2).await;
    let big = "x".repeat(8 * 1024);
    for _ in 0..40 {
        hub.publish("stalled", big.as_str()).await.unwrap();
    }
    // 320 KiB for a stream that may have 64 KiB in flight: it is stalled.
    for n in 0..20 {
        hub.publish("live", format!("live {n}")).await.unwrap();
        assert_eq!(live.next().await.1, format!("live {n}"));
    }
    assert_eq!(hub.local_subscriber_count("stalled"), 1);
    drop(stalled);
}

/// Shutting down answers every held poll and ends every stream, then sends
/// `GOAWAY`: the client's connection closes cleanly, and clients that
/// resume elsewhere with their cursors lose nothing.
async fn graceful_shutdown_sends_goaway_and_clients_resume_without_loss(adapter: Adapter) {
    let engine = Arc::new(MemoryEngine::default());
    let old = Hub::builder().engine(engine.clone()).build();
    let server = Server::start(adapter, &old, None).await;
    let client = Client::connect(server.addr, None, 1024 * 1024).await;
    let start = old.current_cursor(["g"]).await.unwrap().encode();
    let mut stream = Events::open(&client, &format!("/sse?channel=g&cursor={start}")).await;
    old.publish("g", "before").await.unwrap();
    let (seen, data) = stream.next().await;
    assert_eq!(data, "before");
    let held = {
        let request = Request::get(format!(
            "{}/poll?channel=g&cursor={seen}&timeout=30",
            client.base
        ))
        .body(Empty::new())
        .unwrap();
        let mut sender = client.sender.clone();
        tokio::spawn(async move { poll_answer(sender.send_request(request).await.unwrap()).await })
    };
    eventually("stream and poll held", || {
        old.local_subscriber_count("g") == 2
    })
    .await;
    server.stop().await;
    let (cursor, data) = bounded("poll answered", held).await.unwrap();
    assert_eq!(
        data,
        ["end:shutdown"],
        "answered at shutdown, with its cursor"
    );
    assert_eq!(cursor, seen);
    let Client { connection, .. } = client;
    bounded("the connection closes", connection)
        .await
        .unwrap()
        .expect("closed by GOAWAY, not torn down");
    old.publish("g", "during shutdown").await.unwrap();

    let new = Hub::builder().engine(engine).build();
    let server = Server::start(adapter, &new, None).await;
    let client = Client::connect(server.addr, None, 1024 * 1024).await;
    let mut resumed = Events::open(&client, &format!("/sse?channel=g&cursor={seen}")).await;
    assert_eq!(resumed.next().await.1, "during shutdown");
    let held = client
        .get(&format!("/poll?channel=g&cursor={cursor}&timeout=5"))
        .await;
    assert_eq!(poll_answer(held).await.1, ["during shutdown"]);
}

#[tokio::test]
async fn http_1_1_still_works_on_the_same_listener() {
    let hub = Hub::new();
    let server = Server::start(Adapter::Axum, &hub, None).await;
    let response = comet_test_support::client()
        .get(format!("http://{}/poll?channel=h&timeout=0", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
}

/// A request whose handler panics ends alone: its stream is reset, and the
/// other streams of its connection go on (each connection's streams run in
/// its own task: `http2::ConnectionTask`).
#[tokio::test]
async fn a_stream_that_panics_ends_alone() {
    let hub = Hub::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = comet_test_support::axum_app(&hub, mounts()).route(
        "/panic",
        axum::routing::get(|| async {
            if std::hint::black_box(true) {
                panic!("a handler that panics, on purpose");
            }
            "never"
        }),
    );
    let server = tokio::spawn(http2::serve(
        listener,
        None,
        move |_| TowerToHyperService::new(app.clone()),
        std::future::pending(),
    ));
    let client = Client::connect(addr, None, 64 * 1024).await;
    let mut events = Events::open(&client, "/sse?channel=p").await;
    hub.publish("p", "before").await.unwrap();
    assert_eq!(events.next().await.1, "before");
    let request = Request::get(format!("{}/panic", client.base))
        .body(Empty::new())
        .unwrap();
    let answer = bounded(
        "the panicking request",
        client.sender.clone().send_request(request),
    )
    .await;
    assert!(answer.is_err(), "the panicking stream is reset");
    hub.publish("p", "after").await.unwrap();
    assert_eq!(events.next().await.1, "after");
    assert!(
        !client.connection.is_finished(),
        "the connection is still up"
    );
    server.abort();
}
