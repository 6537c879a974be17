//! End-to-end over real sockets, on every adapter: the error table walked
//! request by request, the JSON 404 under a mount, header and query limits,
//! subscriber limits, bad requests, reserved names and `HEAD`; and the spec
//! in the repository, whose error table is the code.

mod common;

use comet_push::{
    protocol::{ErrorCode, MAX_HEADER_BYTES, MAX_QUERY_LEN},
    HistoryPolicy, Hub, MemoryEngine, Payload,
};
use comet_test_support::*;
use common::{basics, protocol, transports};
use std::sync::Arc;

async fn bad_requests_get_clear_json_errors(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
    let mut bystander = basics::sse(&server, "channel=bystander").await;
    let get = |q: &str| client().get(server.url(&format!("/comet/poll?{q}"))).send();
    let cases = [
        ("channel=chat&cursor=not-a-cursor!", 400, "bad_cursor"),
        ("channel=chat&cursor=AQE", 400, "bad_cursor"),
        ("channel=bad%20name", 400, "bad_channel"),
        ("channel=comet-internal", 400, "bad_channel"),
        ("", 400, "no_channels"),
        (
            "channel=a&channel=b&channel=c&channel=d&channel=e",
            429,
            "too_many_channels",
        ),
        ("channel=chat&transport=smoke-signals", 400, "bad_transport"),
        ("channel=chat&transport=sse", 400, "bad_transport"),
        ("channel=chat&since=later", 400, "bad_parameter"),
        ("channel=chat&timeout=soon", 400, "bad_parameter"),
    ];
    for (query, status, code) in cases {
        let response = bounded(query, get(query)).await.unwrap();
        let message = expect_error(response, status, code).await;
        println!("{query} -> {status} {code}: {message}");
    }
    let long = format!("channel=chat&x={}", "y".repeat(9000));
    expect_error(get(&long).await.unwrap(), 414, "uri_too_long").await;
    let bad_header = client()
        .get(server.url("/comet/sse?channel=chat"))
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    expect_error(bad_header, 400, "bad_cursor").await;
    let post = client()
        .post(server.url("/comet/sse?channel=chat"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    expect_error(post, 405, "method_not_allowed").await;

    // None of that disturbed a subscriber.
    hub.publish("bystander", "still here").await.unwrap();
    assert_eq!(bystander.next_event().await.data, "still here");
}

async fn subscriber_limits_answer_429_and_disturb_no_one(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let mut first = transports::open_sse(&server, "/sse?channel=full").await;
    let mut second = transports::open_sse(&server, "/sse?channel=full").await;
    let third = transports::get(&server, "/sse?channel=full").await;
    let message = expect_error(third, 429, "too_many_subscribers").await;
    assert!(message.contains("full"), "{message}");
    // Other channels are unaffected, and so are the two subscribers.
    let _other = transports::open_sse(&server, "/sse?channel=other").await;
    hub.publish("full", "still delivered").await.unwrap();
    assert_eq!(first.next_event().await.data, "still delivered");
    assert_eq!(second.next_event().await.data, "still delivered");
    drop(first);
    eventually("slot freed", || hub.local_subscriber_count("full") == 1).await;
    let _again = transports::open_sse(&server, "/sse?channel=full").await;
}

async fn the_total_subscriber_limit_answers_429(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let mut held = vec![];
    for i in 0..20 {
        let reader = transports::open_sse(&server, &format!("/sse?channel=t{i}")).await;
        held.push(reader);
    }
    assert_eq!(hub.local_subscribers(), 20);
    let over = transports::get(&server, "/poll?channel=one-more&timeout=0").await;
    expect_error(over, 429, "too_many_subscribers").await;
}

async fn oversize_headers_answer_431(adapter: Adapter) {
    let (_hub, server) = transports::start(adapter).await;
    let response = client()
        .get(server.url("/poll?channel=c&timeout=0"))
        .header("x-big", "b".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    expect_error(response, 431, "headers_too_large").await;
}

/// PROTOCOL.md, "Requests": a path under a comet mount is the protocol's.
async fn unknown_paths_under_a_comet_mount_get_a_json_404(adapter: Adapter) {
    let (_hub, server) = protocol::start(adapter).await;
    for path in ["/comet/nope", "/comet/sse/extra", "/comet/a/b/c?channel=x"] {
        let response = protocol::get(&server, path).await;
        let message = expect_error(response, 404, "not_found").await;
        assert!(
            message.contains(path.split('?').next().unwrap()),
            "{message}"
        );
    }
    let post = protocol::post(&server, "/comet/nope", "text/plain", b"x".to_vec()).await;
    expect_error(post, 404, "not_found").await;
    // Outside comet's mounts, the app's own answers.
    assert_eq!(get_text(server.url("/hello")).await, "hello from the app");
    let elsewhere = protocol::get(&server, "/elsewhere/nope").await;
    assert_eq!(elsewhere.status(), 404);
    assert_ne!(
        elsewhere
            .headers()
            .get("content-type")
            .map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
}

/// PROTOCOL.md, "Requests": publishing has the subscribe routes' limits.
async fn publishing_has_the_same_header_and_query_limits(adapter: Adapter) {
    let (_hub, server) = protocol::start(adapter).await;
    let big = "x".repeat(MAX_HEADER_BYTES + 4 * 1024);
    for path in [
        "/comet/publish/limits",
        "/comet?channel=limits&transport=poll",
    ] {
        let request = client().request(
            if path.contains("publish") {
                reqwest::Method::POST
            } else {
                reqwest::Method::GET
            },
            server.url(path),
        );
        let response = bounded("headers", request.header("x-big", &big).body("x").send())
            .await
            .unwrap();
        expect_error(response, 431, "headers_too_large").await;
    }
    let long = format!(
        "/comet/publish/limits?pad={}",
        "q".repeat(MAX_QUERY_LEN + 1024)
    );
    let response = protocol::post(&server, &long, "text/plain", b"x".to_vec()).await;
    expect_error(response, 414, "uri_too_long").await;
    let answer =
        poll(client().get(server.url("/comet?transport=poll&channel=limits&since=oldest"))).await;
    assert_eq!(
        answer.items(),
        Vec::<String>::new(),
        "nothing was published"
    );
}

async fn head_is_answered_as_get_without_a_body_or_a_subscription(adapter: Adapter) {
    let (hub, server) = protocol::start(adapter).await;
    for (transport, content_type) in [
        ("sse", "text/event-stream"),
        ("stream", "application/x-ndjson"),
        ("iframe", "text/html; charset=utf-8"),
        ("poll", "application/json"),
        ("jsonp", "application/javascript; charset=utf-8"),
    ] {
        let url = server.url(&format!(
            "/comet?transport={transport}&channel=h&callback=cb"
        ));
        let response = bounded("head", client().head(url).send()).await.unwrap();
        assert_eq!(response.status(), 200, "{transport}");
        assert_eq!(response.headers()["content-type"], content_type);
        assert!(response.bytes().await.unwrap().is_empty());
        assert_eq!(
            hub.local_subscribers(),
            0,
            "HEAD subscribed over {transport}"
        );
    }
    // Refused as GET would be.
    let bad = bounded(
        "head",
        client().head(server.url("/comet?channel=a%20b")).send(),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    // The client script.
    let script = bounded("head", client().head(server.url("/comet/comet.js")).send())
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.bytes().await.unwrap().is_empty());
    assert_eq!(hub.stats().subscribers, 0);
}

/// PROTOCOL.md, "Errors": every code of the table, provoked over a socket,
/// answered with its status and code.
async fn every_error_code_of_the_table_is_answered_over_a_socket(adapter: Adapter) {
    let hub = Hub::builder()
        .engine(Arc::new(protocol::Unreachable(MemoryEngine::new(
            HistoryPolicy::default(),
            comet_push::DEFAULT_IDLE_TTL,
        ))))
        .max_subscribers_per_channel(1)
        .build();
    let server = TestServer::start(adapter, &hub, protocol::mounts()).await;
    // One subscriber holds the one place of channel "full".
    let full = protocol::get(&server, "/comet/sse?channel=full").await;
    let mut full = SseReader::new(full);
    full.opened().await;
    let c = client();
    let url = |path: &str| server.url(path);
    for &code in ErrorCode::ALL {
        let request = match code {
            ErrorCode::BadParameter => c.get(url("/comet?channel=a&since=yesterday")),
            ErrorCode::BadCursor => c.get(url("/comet?channel=a&cursor=!!")),
            ErrorCode::BadChannel => c.get(url("/comet?channel=a%20b")),
            ErrorCode::NoChannels => c.get(url("/comet")),
            ErrorCode::BadTransport => c.get(url("/comet?channel=a&transport=pigeon")),
            ErrorCode::BadCallback => c.get(url(
                "/comet?channel=a&transport=jsonp&callback=document.write",
            )),
            ErrorCode::BadEvent => c
                .post(url("/comet/publish/a"))
                .header("comet-event", "error")
                .body("x"),
            ErrorCode::BadPayload => c
                .post(url("/comet/publish/a"))
                .header("content-type", "application/json")
                .body("{"),
            ErrorCode::Unauthorized => c.get(url("/comet/signed?channel=a")),
            ErrorCode::Forbidden => c.post(url("/comet/closed/a")).body("x"),
            ErrorCode::CorsDenied => c
                .request(reqwest::Method::OPTIONS, url("/comet/listed?channel=a"))
                .header("origin", "https://evil.example")
                .header("access-control-request-method", "GET"),
            ErrorCode::CrossSite => c
                .get(url("/comet?channel=a&transport=jsonp&callback=cb"))
                .header("sec-fetch-site", "cross-site"),
            ErrorCode::NotFound => c.get(url("/comet/no/such/route")),
            ErrorCode::MethodNotAllowed => c.delete(url("/comet?channel=a")),
            ErrorCode::PayloadTooLarge => {
                c.post(url("/comet/publish/a")).body(vec![b'x'; 65 * 1024])
            }
            ErrorCode::UriTooLong => c.get(url(&format!(
                "/comet?channel=a&pad={}",
                "p".repeat(9 * 1024)
            ))),
            ErrorCode::TooManyChannels => {
                let channels: String = (0..33).map(|i| format!("&channel=c{i}")).collect();
                c.get(url(&format!("/comet?transport=poll{channels}")))
            }
            ErrorCode::TooManySubscribers => c.get(url("/comet/sse?channel=full")),
            ErrorCode::HeadersTooLarge => c
                .get(url("/comet?channel=a"))
                .header("x-big", "b".repeat(20 * 1024)),
            ErrorCode::ShuttingDown => continue, // below: it ends the hub
            ErrorCode::ChannelLimit => continue, // below: a hub with a bound
            ErrorCode::Unavailable => c.post(url("/comet/publish/a")).body("x"),
            other => panic!("{other:?} has no request here: add one"),
        };
        let response = bounded("error", request.send()).await.unwrap();
        assert_eq!(response.status(), code.status(), "{code}");
        if response.headers().contains_key("content-type") {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"], code.as_str(), "{code}: {body}");
        }
    }
    hub.shutdown();
    let response = protocol::get(&server, "/comet?channel=a&transport=poll").await;
    expect_error(response, 503, ErrorCode::ShuttingDown.as_str()).await;
    assert!(ErrorCode::ALL.contains(&ErrorCode::ShuttingDown));

    // A hub that holds one channel: a subscribe or a publish that would
    // make a second is refused with 429, and the held one still works.
    let bounded_hub = Hub::builder().max_channels(1).build();
    let server = TestServer::start(adapter, &bounded_hub, protocol::mounts()).await;
    let held = protocol::get(&server, "/comet/sse?channel=one").await;
    let mut held = SseReader::new(held);
    held.opened().await;
    let second = protocol::get(&server, "/comet?channel=two&transport=poll").await;
    expect_error(second, 429, ErrorCode::ChannelLimit.as_str()).await;
    let publish = c.post(server.url("/comet/publish/three")).body("x").send();
    let publish = bounded("publish", publish).await.unwrap();
    expect_error(publish, 429, ErrorCode::ChannelLimit.as_str()).await;
    let publish = c.post(server.url("/comet/publish/one")).body("x").send();
    assert_eq!(bounded("publish", publish).await.unwrap().status(), 201);
    assert_eq!(held.next_event().await.data, "x");
}

/// PROTOCOL.md, "Event types": `error` and `open` are refused.
async fn error_and_open_are_refused_as_channel_and_event_names(adapter: Adapter) {
    let (hub, server) = protocol::start(adapter).await;
    for name in ["error", "open"] {
        let response = protocol::post(
            &server,
            &format!("/comet/publish/{name}"),
            "text/plain",
            b"x".to_vec(),
        )
        .await;
        expect_error(response, 400, "bad_channel").await;
        let response = client()
            .post(server.url("/comet/publish/room"))
            .header("comet-event", name)
            .body("x")
            .send()
            .await
            .unwrap();
        expect_error(response, 400, "bad_event").await;
        let response = protocol::get(&server, &format!("/comet/sse?channel={name}")).await;
        expect_error(response, 400, "bad_channel").await;
        assert!(hub.publish(name, "x").await.is_err());
        assert!(hub
            .publish("room", Payload::text("x").event(name))
            .await
            .is_err());
    }
    // Not a prefix, not another case, and `message` stays allowed.
    for (channel, event) in [
        ("errors", None),
        ("Open", None),
        ("room", Some("message")),
        ("room", Some("Error")),
    ] {
        let mut request = client()
            .post(server.url(&format!("/comet/publish/{channel}")))
            .body("x");
        if let Some(event) = event {
            request = request.header("comet-event", event);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            201,
            "{channel} {event:?}"
        );
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The spec is in the repository, at version 1.4 with a changelog that
/// keeps 1.3's, 1.2's and 1.1's entries, the README links it, and its error table is exactly
/// `ErrorCode`.
#[test]
fn the_spec_is_in_the_repository_and_its_error_table_is_the_code() {
    let spec = read("PROTOCOL.md");
    assert!(spec.starts_with("# The comet wire protocol, version 1.4\n"));
    let changelog = &spec[spec.find("## Changelog").expect("a changelog")..];
    assert!(
        changelog.contains("**1.4**")
            && changelog.contains("**1.3**")
            && changelog.contains("**1.2**")
            && changelog.contains("**1.1**")
    );
    assert!(
        read("README.md").contains("](PROTOCOL.md)"),
        "the README links PROTOCOL.md"
    );
    assert!(read("comet-protocol/client/comet.js")
        .starts_with("// comet.js: the browser client for the comet wire protocol, version 1.4."));

    let errors = &spec[spec.find("## Errors").unwrap()..];
    let errors = &errors[..errors[3..].find("\n## ").unwrap()];
    let rows: Vec<(u16, String, String)> = errors
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| status") && !l.starts_with("| ---"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (
                cells[0].parse().unwrap(),
                cells[1].trim_matches('`').to_owned(),
                cells[2].to_owned(),
            )
        })
        .collect();
    let code: Vec<(u16, String, String)> = ErrorCode::ALL
        .iter()
        .map(|c| {
            (
                c.status().as_u16(),
                c.as_str().to_owned(),
                c.meaning().to_owned(),
            )
        })
        .collect();
    assert_eq!(rows, code, "PROTOCOL.md's error table and ErrorCode differ");
    for status in [400, 403, 404, 405, 413, 414, 429, 431, 503] {
        assert!(rows.iter().any(|r| r.0 == status), "{status} missing");
    }
}

each_adapter!(
    bad_requests_get_clear_json_errors,
    subscriber_limits_answer_429_and_disturb_no_one,
    the_total_subscriber_limit_answers_429,
    oversize_headers_answer_431,
    unknown_paths_under_a_comet_mount_get_a_json_404,
    publishing_has_the_same_header_and_query_limits,
    head_is_answered_as_get_without_a_body_or_a_subscription,
    every_error_code_of_the_table_is_answered_over_a_socket,
    error_and_open_are_refused_as_channel_and_event_names,
);
