//! The load generator, run as its real binary against comet on axum over
//! loopback: what it reports must add up.

use comet_push::{
    protocol::{PublishRoute, SubscribeRoute},
    tower::CometLayer,
    Hub,
};
use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Arc, Mutex,
    },
    time::Duration,
};

async fn server() -> String {
    serve(Hub::new(), Arc::default()).await
}

/// Serves `hub`'s routes on a new port; counts the requests each method makes
/// in `hits` (GET, POST).
async fn serve(hub: Hub, hits: Arc<[AtomicUsize; 2]>) -> String {
    let count = move |request: axum::extract::Request, next: axum::middleware::Next| {
        let hits = hits.clone();
        async move {
            hits[usize::from(request.method() == http::Method::POST)].fetch_add(1, SeqCst);
            next.run(request).await
        }
    };
    let app = axum::Router::new()
        .layer(
            CometLayer::new(hub)
                .sse("/sse")
                .route("/poll", SubscribeRoute::long_poll())
                .publish("/publish", PublishRoute::new().authorize(|_, _| true)),
        )
        .layer(axum::middleware::from_fn(count));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// Runs the load generator; returns (exit success, stdout, stderr).
async fn loadgen(args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_comet-loadgen"))
            .args(args)
            .output(),
    )
    .await
    .expect("loadgen timed out")
    .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        output.status.success(),
        text(output.stdout),
        text(output.stderr),
    )
}

fn field(json: &str, name: &str) -> String {
    let start = json
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + name.len()
        + 3;
    json[start..].split([',', '}']).next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_and_follow_count_every_delivery() {
    let base = server().await;
    let (ok, out, err) = loadgen(&[
        "fanout",
        "--sub-url",
        &format!("{base}/sse?channel=f"),
        "--pub-url",
        &format!("{base}/publish/f"),
        "--subscribers",
        "20",
        "--messages",
        "5",
        "--rate",
        "100",
        "--json",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        (field(&out, "expected"), field(&out, "delivered")),
        ("100".into(), "100".into()),
        "{out}"
    );
    assert_eq!(
        (field(&out, "lost"), field(&out, "duplicated")),
        ("0".into(), "0".into())
    );
    assert_ne!(field(&out, "last_ms"), "null");

    let (ok, out, err) = loadgen(&[
        "follow",
        "--sub-url",
        &format!("{base}/poll?channel=p"),
        "--pub-url",
        &format!("{base}/publish/p"),
        "--subscribers",
        "20",
        "--messages",
        "10",
        "--rate",
        "100",
        "--json",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(field(&out, "delivered"), "200", "{out}");
    assert_eq!(
        (field(&out, "lost"), field(&out, "duplicated")),
        ("0".into(), "0".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_urls_split_subscribers_and_publishes_over_the_nodes() {
    // Two "nodes" on one hub, as two nodes on one Redis share channels.
    let hub = Hub::new();
    let (hits_a, hits_b): (Arc<[AtomicUsize; 2]>, Arc<[AtomicUsize; 2]>) = Default::default();
    let a = serve(hub.clone(), hits_a.clone()).await;
    let b = serve(hub, hits_b.clone()).await;
    let (ok, out, err) = loadgen(&[
        "fanout",
        "--sub-url",
        &format!("{a}/sse?channel=n"),
        "--sub-url",
        &format!("{b}/sse?channel=n"),
        "--pub-url",
        &format!("{a}/publish/n"),
        "--pub-url",
        &format!("{b}/publish/n"),
        "--subscribers",
        "20",
        "--messages",
        "6",
        "--rate",
        "100",
        "--json",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        (field(&out, "delivered"), field(&out, "lost")),
        ("120".into(), "0".into()),
        "{out}"
    );
    assert!(field(&out, "median_all_ms").parse::<f64>().is_ok(), "{out}");
    // Half the subscribers and half the publishes on each node.
    for hits in [hits_a, hits_b] {
        assert_eq!((hits[0].load(SeqCst), hits[1].load(SeqCst)), (10, 3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_reports_memory_per_connection() {
    let base = server().await;
    let pid = std::process::id().to_string();
    let (ok, out, err) = loadgen(&[
        "idle",
        "--sub-url",
        &format!("{base}/sse?channel=i"),
        "--subscribers",
        "50",
        "--pid",
        &pid,
        "--json",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(field(&out, "connected"), "50");
    assert!(field(&out, "rss_per_conn").parse::<f64>().is_ok(), "{out}");
}

/// Every request a server took: (method, HTTP version, the peer's address).
type Seen = Arc<Mutex<Vec<(http::Method, http::Version, SocketAddr)>>>;

/// Serves comet's routes over HTTP/1.1 and h2c on a new port, recording
/// every request in `seen`.
async fn serve_recording(seen: Seen) -> String {
    let record = move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
                       request: axum::extract::Request,
                       next: axum::middleware::Next| {
        seen.lock()
            .unwrap()
            .push((request.method().clone(), request.version(), peer));
        next.run(request)
    };
    let app = axum::Router::new()
        .layer(
            CometLayer::new(Hub::new())
                .sse("/sse")
                .publish("/publish", PublishRoute::new().authorize(|_, _| true)),
        )
        .layer(axum::middleware::from_fn(record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_spreads_subscriber_streams_over_the_connections_asked_for() {
    let seen: Seen = Arc::default();
    let base = serve_recording(seen.clone()).await;
    let (ok, out, err) = loadgen(&[
        "fanout",
        "--http2",
        "--connections",
        "3",
        "--sub-url",
        &format!("{base}/sse?channel=h"),
        "--pub-url",
        &format!("{base}/publish/h"),
        "--subscribers",
        "30",
        "--messages",
        "5",
        "--rate",
        "100",
        "--publishers",
        "2",
        "--json",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        (field(&out, "delivered"), field(&out, "lost")),
        ("150".into(), "0".into()),
        "{out}"
    );
    assert_eq!(field(&out, "duplicated"), "0", "{out}");
    assert_eq!(
        (field(&out, "http2"), field(&out, "connections")),
        ("true".into(), "3".into())
    );
    let seen = seen.lock().unwrap();
    let connections = |method: http::Method| {
        let requests: Vec<_> = seen.iter().filter(|r| r.0 == method).collect();
        assert!(
            requests.iter().all(|r| r.1 == http::Version::HTTP_2),
            "{requests:?}"
        );
        let peers: HashSet<_> = requests.iter().map(|r| r.2).collect();
        (requests.len(), peers.len())
    };
    // 30 streams on 3 connections, 10 on each; the publishes on their own.
    assert_eq!(connections(http::Method::GET), (30, 3));
    assert_eq!(connections(http::Method::POST), (5, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_idle_and_throughput_run_with_the_default_connections() {
    let base = serve_recording(Arc::default()).await;
    let pid = std::process::id().to_string();
    let (ok, out, err) = loadgen(&[
        "idle",
        "--http2",
        "--sub-url",
        &format!("{base}/sse?channel=i"),
        "--subscribers",
        "150",
        "--pid",
        &pid,
        "--json",
    ])
    .await;
    assert!(ok, "{err}");
    // One connection per 100 streams, rounded up.
    assert_eq!(
        (field(&out, "connected"), field(&out, "connections")),
        ("150".into(), "2".into())
    );
    assert!(field(&out, "rss_per_conn").parse::<f64>().is_ok(), "{out}");
    let (ok, out, err) = loadgen(&[
        "throughput",
        "--http2",
        "--sub-url",
        &format!("{base}/sse?channel=t"),
        "--pub-url",
        &format!("{base}/publish/t"),
        "--subscribers",
        "20",
        "--duration",
        "1",
        "--json",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        (field(&out, "lost"), field(&out, "duplicated")),
        ("0".into(), "0".into()),
        "{out}"
    );
    assert!(field(&out, "deliveries_per_s").parse::<f64>().unwrap() > 0.0);
}

#[tokio::test]
async fn refuses_non_loopback_targets_and_bad_options() {
    let (ok, _, err) = loadgen(&["idle", "--sub-url", "http://192.0.2.1:80/sse"]).await;
    assert!(!ok && err.contains("not a loopback address"), "{err}");
    let (ok, _, err) = loadgen(&["fanout", "--sub-url", "http://127.0.0.1:1/x"]).await;
    assert!(!ok && err.contains("--pub-url is required"), "{err}");
    let (ok, _, err) = loadgen(&[
        "idle",
        "--sub-url",
        "http://127.0.0.1:1/x",
        "--connections",
        "2",
    ])
    .await;
    assert!(!ok && err.contains("--connections needs --http2"), "{err}");
    let (ok, _, err) = loadgen(&["sideways"]).await;
    assert!(!ok && err.contains("unknown scenario"), "{err}");
}

/// A raw long-poll server as nginx + nchan is one: each answer carries one
/// message with `Etag` and `Last-Modified`, which the next poll must echo
/// (`If-None-Match`, `If-Modified-Since`) to get the message after it.
/// Answers alternate between a length and a chunked body.
async fn raw_server() -> String {
    use axum::{body::Body, extract::State, http::HeaderMap, routing::get};
    #[derive(Default)]
    struct Channel {
        messages: Mutex<Vec<bytes::Bytes>>,
        published: tokio::sync::Notify,
    }
    async fn subscribe(
        State(channel): State<Arc<Channel>>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let after = match (header("if-none-match"), header("if-modified-since")) {
            (Some(etag), Some(modified)) if modified == "Tue, 08 Dec 2026 00:00:00 GMT" => {
                etag.parse::<usize>().expect("the ETag echoed")
            }
            (None, None) => channel.messages.lock().unwrap().len(),
            other => panic!("validators not echoed as sent: {other:?}"),
        };
        let message = loop {
            let published = channel.published.notified();
            if let Some(message) = channel.messages.lock().unwrap().get(after) {
                break message.clone();
            }
            published.await;
        };
        let body = if after % 2 == 0 {
            Body::from(message)
        } else {
            Body::from_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
                message,
            )]))
        };
        axum::response::Response::builder()
            .header("etag", (after + 1).to_string())
            .header("last-modified", "Tue, 08 Dec 2026 00:00:00 GMT")
            .body(body)
            .unwrap()
    }
    async fn publish(State(channel): State<Arc<Channel>>, body: bytes::Bytes) -> http::StatusCode {
        channel.messages.lock().unwrap().push(body);
        channel.published.notify_waiters();
        http::StatusCode::CREATED
    }
    let app = axum::Router::new()
        .route("/sub", get(subscribe))
        .route("/pub", axum::routing::post(publish))
        .with_state(Arc::new(Channel::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_in_the_raw_dialect_echoes_the_validators_and_reads_both_framings() {
    let base = raw_server().await;
    let (ok, out, err) = loadgen(&[
        "follow",
        "--dialect",
        "raw",
        "--sub-url",
        &format!("{base}/sub"),
        "--pub-url",
        &format!("{base}/pub"),
        "--subscribers",
        "10",
        "--messages",
        "6",
        "--rate",
        "20",
        "--json",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(field(&out, "delivered"), "60", "{out}");
    assert_eq!(
        (field(&out, "lost"), field(&out, "duplicated")),
        ("0".into(), "0".into())
    );
}
