//! End-to-end over real sockets, on every adapter: what protocol 1.1
//! changed (PROTOCOL.md, "Changelog"). Payloads byte for byte, callbacks
//! that name only registered functions, cross-site JSONP, the forever
//! frame's framing policy, one error table walked request by request,
//! `HEAD`, the JSON 404 under a mount, and the spec in the repository.

use comet::{
    engine::{Attachment, ChannelLog, Engine, EngineFuture, PublishFuture, Resume},
    protocol::{Cors, ErrorCode, PublishRoute, SubscribeRoute, MAX_HEADER_BYTES, MAX_QUERY_LEN},
    ChannelName, HistoryPolicy, Hub, IdempotencyKey, MemoryEngine, Payload, Position,
};
use comet_test_support::*;
use std::{sync::Arc, time::Duration};

const APP_ORIGIN: &str = "https://app.example";

fn mounts() -> Vec<Mount> {
    vec![
        Mount::Subscribe("/comet", SubscribeRoute::all().max_hold(Duration::ZERO)),
        Mount::Subscribe("/comet/sse", SubscribeRoute::sse()),
        Mount::Subscribe(
            "/comet/listed",
            SubscribeRoute::jsonp()
                .max_hold(Duration::ZERO)
                .cors(Cors::allow_origins([APP_ORIGIN])),
        ),
        Mount::Subscribe(
            "/comet/open-jsonp",
            SubscribeRoute::jsonp()
                .max_hold(Duration::ZERO)
                .allow_cross_site_jsonp(true),
        ),
        Mount::Subscribe(
            "/comet/own-registry",
            SubscribeRoute::all()
                .max_hold(Duration::ZERO)
                .callback_registry("app_cb"),
        ),
        Mount::Publish("/comet/publish", PublishRoute::new().authorize(|_, _| true)),
        Mount::Publish("/comet/closed", PublishRoute::new()),
    ]
}

/// An engine whose publishes fail, as one with an unreachable backplane.
struct Unreachable(MemoryEngine);

impl Engine for Unreachable {
    fn publish(&self, _: &ChannelName, _: Payload, _: Option<&IdempotencyKey>) -> PublishFuture {
        Box::pin(async { Err("the backplane is unreachable".into()) })
    }
    fn attach(&self, channel: &ChannelName, from: Option<Resume>) -> EngineFuture<Attachment> {
        self.0.attach(channel, from)
    }
    fn head(&self, channel: &ChannelName) -> EngineFuture<Position> {
        self.0.head(channel)
    }
    fn existing(&self, channel: &ChannelName) -> Option<Arc<ChannelLog>> {
        self.0.existing(channel)
    }
    fn channel_count(&self) -> usize {
        self.0.channel_count()
    }
    fn wake_all(&self) {
        self.0.wake_all()
    }
}

async fn start(adapter: Adapter) -> (Hub, TestServer) {
    let hub = Hub::new();
    let server = TestServer::start(adapter, &hub, mounts()).await;
    (hub, server)
}

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    bounded("get", client().get(server.url(path)).send())
        .await
        .unwrap()
}

async fn post(
    server: &TestServer,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let request = client()
        .post(server.url(path))
        .header("content-type", content_type)
        .body(body);
    bounded("post", request.send()).await.unwrap()
}

/// Payload bytes a re-serializing server would change (see also
/// tests/independent_clients.rs): a number past f64, duplicate and
/// unsorted keys, escapes, line breaks between tokens, raw U+2028, and text
/// that means something in HTML.
const JSON_BODY: &str = "{\"n\": 12345678901234567890123, \"z\": 1, \"a\": 2, \"z\": 3,\r\n \"e\": \"\\u00e9 \u{e9} \\\" \\\\ \\n </script> <!-- & \u{2028}\",\n \"f\": [1.0, -0.0, 1e300]}";

/// PROTOCOL.md, "Payloads": inside strings of a script, `<`, `>`, `&`,
/// U+2028 and U+2029 are `\uXXXX` escapes; nothing else changes.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

// ---- 1. invalid JSON is refused ---------------------------------------------

/// PROTOCOL.md, "Payloads": every payload UTF-8, JSON valid per RFC 8259.
async fn payloads_that_are_not_utf8_or_not_json_are_refused(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    for (content_type, body) in [
        ("application/json", &b"{\"k\":\"\xff\xfe\"}"[..]),
        ("application/json", b"[\"\xc3\x28\"]"),
        ("application/json", b"\"\xed\xa0\x80\""),
        ("application/json", b"{\"a\":1,}"),
        ("application/json", b"\"raw\ttab\""),
        ("application/json", b"NaN"),
        ("application/json", b"{} {}"),
        ("application/vnd.x+json", b"{\"k\":\"\xff\"}"),
        ("text/plain", b"caf\xe9"),
    ] {
        let response = post(&server, "/comet/publish/p", content_type, body.to_vec()).await;
        let message = expect_error(response, 400, "bad_payload").await;
        assert!(!message.is_empty(), "{body:?}");
    }
    let answer =
        poll(client().get(server.url("/comet?transport=poll&channel=p&since=oldest"))).await;
    assert_eq!(
        answer.items(),
        Vec::<String>::new(),
        "nothing was published"
    );
    assert!(Payload::json_bytes(&b"{\"k\":\"\xff\"}"[..]).is_err());
    assert!(Payload::text_bytes(&b"\xff"[..]).is_err());
    drop(hub);
}

// ---- 2. JSON byte for byte ------------------------------------------------------

/// PROTOCOL.md, "Payloads": the publisher's bytes on every transport, with
/// only what each framing needs.
async fn json_is_delivered_byte_for_byte_on_every_transport(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let cursor = hub.current_cursor(["exact"]).await.unwrap();
    let published = post(
        &server,
        "/comet/publish/exact",
        "application/json",
        JSON_BODY.into(),
    )
    .await;
    assert_eq!(published.status(), 201);
    let query = |transport: &str| {
        format!("/comet?transport={transport}&channel=exact&cursor={cursor}&callback=__comet_cb.p1")
    };

    // Poll: the bytes as they came.
    let poll_body = get(&server, &query("poll")).await.text().await.unwrap();
    assert!(
        poll_body.contains(&format!("\"data\":{JSON_BODY},")),
        "{poll_body}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&poll_body).unwrap();
    assert_eq!(
        parsed["messages"][0]["data"]["e"],
        "\u{e9} \u{e9} \" \\ \n </script> <!-- & \u{2028}"
    );

    // JSONP and the forever frame: script-safe escapes inside strings only.
    let script = get(&server, &query("jsonp")).await.text().await.unwrap();
    assert!(
        script.contains(&format!("\"data\":{},", script_safe(JSON_BODY))),
        "{script}"
    );
    let mut page = LineReader::new(get(&server, &query("iframe")).await);
    let expected = format!("\"data\":{},", script_safe(JSON_BODY));
    bounded("iframe message", async {
        while !String::from_utf8_lossy(&page.raw).contains(&expected) {
            page.line().await.expect("the frame ended");
        }
    })
    .await;

    // ndjson: one line per envelope, so line breaks between tokens are spaces.
    let mut lines = LineReader::new(get(&server, &query("stream")).await);
    let line = lines.line().await.unwrap();
    let one_line = JSON_BODY.replace(['\r', '\n'], " ");
    assert!(line.contains(&format!("\"data\":{one_line},")), "{line}");

    // SSE: one data: line per line of it.
    let response = get(
        &server,
        &format!("/comet/sse?channel=exact&cursor={cursor}"),
    )
    .await;
    let mut events = SseReader::new(response);
    let event = events.next_event().await;
    assert_eq!(event.data, JSON_BODY.replace("\r\n", "\n"));
    let raw = String::from_utf8(events.raw.clone()).unwrap();
    assert!(
        raw.contains(
            "data: {\"n\": 12345678901234567890123, \"z\": 1, \"a\": 2, \"z\": 3,\ndata:  \"e\""
        ),
        "{raw}"
    );

    // The hub's own view: the same bytes.
    let mut sub = hub
        .subscribe(["exact"], comet::Start::cursor(cursor))
        .await
        .unwrap();
    use futures_util::StreamExt;
    let item = bounded("hub", sub.next()).await.unwrap();
    assert_eq!(item.message().unwrap().text(), JSON_BODY);
}

// ---- 3. callbacks, framing, cross-site JSONP ------------------------------------

/// PROTOCOL.md, "Callbacks".
async fn callbacks_name_only_functions_registered_for_comet(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    for transport in ["jsonp", "iframe"] {
        for refused in [
            "__proto__",
            "constructor",
            "prototype",
            "constructor.constructor",
            "victim.document.body.remove",
            "document.write",
            "location.reload",
            "parent.close",
            "__comet_cb.__proto__",
            "__comet_cb.constructor",
            "__comet_cb.p1.x",
            "other.p1",
        ] {
            let response = get(
                &server,
                &format!("/comet?transport={transport}&channel=c&callback={refused}"),
            )
            .await;
            expect_error(response, 400, "bad_callback").await;
        }
        for accepted in ["cb", "__comet_cb.p1"] {
            let response = get(
                &server,
                &format!("/comet?transport={transport}&channel=c&callback={accepted}"),
            )
            .await;
            assert_eq!(response.status(), 200, "{transport} {accepted}");
        }
        // A route with a registry of its own.
        let own = get(
            &server,
            &format!("/comet/own-registry?transport={transport}&channel=c&callback=app_cb.x"),
        )
        .await;
        assert_eq!(own.status(), 200);
        let other = get(
            &server,
            &format!("/comet/own-registry?transport={transport}&channel=c&callback=__comet_cb.x"),
        )
        .await;
        expect_error(other, 400, "bad_callback").await;
    }
}

/// PROTOCOL.md, "Streaming transports": only the push host's own pages may
/// frame the forever frame.
async fn the_forever_frame_may_be_framed_only_by_its_own_origin(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let response = bounded(
            "iframe",
            client()
                .request(
                    method.clone(),
                    server.url("/comet?transport=iframe&channel=c&callback=__comet_cb.f1"),
                )
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(
            headers["content-security-policy"], "frame-ancestors 'self'",
            "{method}"
        );
        assert_eq!(headers["x-frame-options"], "SAMEORIGIN", "{method}");
    }
}

/// PROTOCOL.md, "Long polling": JSONP from another site is refused.
async fn cross_site_jsonp_is_refused_unless_listed_or_allowed(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let own = format!("http://{}/page", server.addr);
    let jsonp = |path: &str, headers: &[(&str, &str)]| {
        let mut request =
            client().get(server.url(&format!("{path}?channel=c&callback=cb&transport=jsonp")));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        bounded("jsonp", request.send())
    };
    for headers in [
        &[("sec-fetch-site", "cross-site")][..],
        &[
            ("sec-fetch-site", "cross-site"),
            ("referer", "https://evil.example/x"),
        ],
        &[("referer", "https://evil.example/x")],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("referer", APP_ORIGIN)],
    ] {
        let refused = jsonp("/comet", headers).await.unwrap();
        expect_error(refused, 403, "cross_site").await;
    }
    for (path, headers) in [
        ("/comet", &[][..]),
        (
            "/comet",
            &[("sec-fetch-site", "same-origin"), ("referer", own.as_str())],
        ),
        (
            "/comet/listed",
            &[
                ("sec-fetch-site", "cross-site"),
                ("referer", "https://app.example/chat"),
            ],
        ),
        ("/comet/listed", &[("origin", APP_ORIGIN)]),
        (
            "/comet/open-jsonp",
            &[
                ("sec-fetch-site", "cross-site"),
                ("referer", "https://evil.example/"),
            ],
        ),
    ] {
        let answered = jsonp(path, headers).await.unwrap();
        assert_eq!(answered.status(), 200, "{path} {headers:?}");
        assert!(answered.text().await.unwrap().starts_with("/**/cb("));
    }
    let listed_elsewhere = jsonp("/comet/listed", &[("referer", "https://evil.example/")])
        .await
        .unwrap();
    expect_error(listed_elsewhere, 403, "cross_site").await;
}

// ---- 4. one error table -------------------------------------------------------------

/// PROTOCOL.md, "Requests": a path under a comet mount is the protocol's.
async fn unknown_paths_under_a_comet_mount_get_a_json_404(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    for path in ["/comet/nope", "/comet/sse/extra", "/comet/a/b/c?channel=x"] {
        let response = get(&server, path).await;
        let message = expect_error(response, 404, "not_found").await;
        assert!(
            message.contains(path.split('?').next().unwrap()),
            "{message}"
        );
    }
    let post = post(&server, "/comet/nope", "text/plain", b"x".to_vec()).await;
    expect_error(post, 404, "not_found").await;
    // Outside comet's mounts, the app's own answers.
    assert_eq!(get_text(server.url("/hello")).await, "hello from the app");
    let elsewhere = get(&server, "/elsewhere/nope").await;
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
    let (_hub, server) = start(adapter).await;
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
    let response = post(&server, &long, "text/plain", b"x".to_vec()).await;
    expect_error(response, 414, "uri_too_long").await;
    let answer =
        poll(client().get(server.url("/comet?transport=poll&channel=limits&since=oldest"))).await;
    assert_eq!(
        answer.items(),
        Vec::<String>::new(),
        "nothing was published"
    );
}

/// PROTOCOL.md, "Requests": `HEAD` as `GET`, without a body or a subscription.
/// PROTOCOL.md, "Publishing over HTTP" (1.3): a publish retried with its
/// `Idempotency-Key` answers the first cursor and stores nothing; another
/// key is another publish; a malformed or repeated header is 400
/// `bad_parameter`, and stores nothing either.
async fn a_publish_retried_with_its_idempotency_key_is_stored_once(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let publish = |key: Vec<&'static str>| {
        let mut request = client()
            .post(server.url("/comet/publish/idem"))
            .header("content-type", "text/plain")
            .body("paid");
        for key in key {
            request = request.header("idempotency-key", key);
        }
        async move { bounded("publish", request.send()).await.unwrap() }
    };
    let cursor = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.unwrap();
        body["cursor"].as_str().unwrap().to_owned()
    };
    let first = cursor(publish(vec!["order-42"]).await).await;
    let retried = cursor(publish(vec!["order-42"]).await).await;
    assert_eq!(first, retried, "the retry answers the first cursor");
    let other = cursor(publish(vec!["order-43"]).await).await;
    assert_ne!(other, first);
    for bad in [vec!["has space"], vec![""], vec!["a", "b"]] {
        expect_error(publish(bad).await, 400, "bad_parameter").await;
    }
    let answer =
        poll(client().get(server.url("/comet?transport=poll&channel=idem&since=oldest"))).await;
    assert_eq!(
        answer.items(),
        ["idem:paid", "idem:paid"],
        "two keys, two messages"
    );
}

async fn head_is_answered_as_get_without_a_body_or_a_subscription(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
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
            hub.subscriber_count(),
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
        .engine(Arc::new(Unreachable(MemoryEngine::new(
            HistoryPolicy::default(),
            comet::DEFAULT_IDLE_TTL,
        ))))
        .max_subscribers_per_channel(1)
        .build();
    let server = TestServer::start(adapter, &hub, mounts()).await;
    // One subscriber holds the one place of channel "full".
    let full = get(&server, "/comet/sse?channel=full").await;
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
    let response = get(&server, "/comet?channel=a&transport=poll").await;
    expect_error(response, 503, ErrorCode::ShuttingDown.as_str()).await;
    assert!(ErrorCode::ALL.contains(&ErrorCode::ShuttingDown));

    // A hub that holds one channel: a subscribe or a publish that would
    // make a second is refused with 429, and the held one still works.
    let bounded_hub = Hub::builder().max_channels(1).build();
    let server = TestServer::start(adapter, &bounded_hub, mounts()).await;
    let held = get(&server, "/comet/sse?channel=one").await;
    let mut held = SseReader::new(held);
    held.opened().await;
    let second = get(&server, "/comet?channel=two&transport=poll").await;
    expect_error(second, 429, ErrorCode::ChannelLimit.as_str()).await;
    let publish = c.post(server.url("/comet/publish/three")).body("x").send();
    let publish = bounded("publish", publish).await.unwrap();
    expect_error(publish, 429, ErrorCode::ChannelLimit.as_str()).await;
    let publish = c.post(server.url("/comet/publish/one")).body("x").send();
    assert_eq!(bounded("publish", publish).await.unwrap().status(), 201);
    assert_eq!(held.next_event().await.data, "x");
}

// ---- 5. event names that break EventSource ----------------------------------------

/// PROTOCOL.md, "Event types": `error` and `open` are refused.
async fn error_and_open_are_refused_as_channel_and_event_names(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    for name in ["error", "open"] {
        let response = post(
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
        let response = get(&server, &format!("/comet/sse?channel={name}")).await;
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

// ---- 6. the opening of an SSE stream ------------------------------------------------

/// PROTOCOL.md, "Streaming transports": nothing a client could take for an
/// event before the first message; `retry:` comes with it.
async fn sse_opens_with_a_lone_comment_and_retry_rides_on_the_first_event(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let response = get(&server, "/comet/sse?channel=o").await;
    let mut events = SseReader::new(response);
    events.opened().await;
    assert_eq!(events.raw, b": comet\n");
    hub.publish("o", "first").await.unwrap();
    let first = events.next_event().await;
    assert_eq!(first.data, "first");
    assert_eq!(events.retry, Some(2000));
    assert_eq!(events.empty_blocks, 0);
    let raw = String::from_utf8(events.raw.clone()).unwrap();
    assert!(raw.starts_with(": comet\nretry: 2000\nid: "), "{raw}");
}

// ---- 7. the spec in the repository --------------------------------------------------

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The spec is in the repository, at version 1.3 with a changelog that
/// keeps 1.2's and 1.1's entries, the README links it, and its error table is exactly
/// `ErrorCode`.
#[test]
fn the_spec_is_in_the_repository_and_its_error_table_is_the_code() {
    let spec = read("PROTOCOL.md");
    assert!(spec.starts_with("# The comet wire protocol, version 1.3\n"));
    let changelog = &spec[spec.find("## Changelog").expect("a changelog")..];
    assert!(
        changelog.contains("**1.3**")
            && changelog.contains("**1.2**")
            && changelog.contains("**1.1**")
    );
    assert!(
        read("README.md").contains("](PROTOCOL.md)"),
        "the README links PROTOCOL.md"
    );
    assert!(read("comet-protocol/client/comet.js")
        .starts_with("// comet.js: the browser client for the comet wire protocol, version 1.3."));

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
    payloads_that_are_not_utf8_or_not_json_are_refused,
    json_is_delivered_byte_for_byte_on_every_transport,
    callbacks_name_only_functions_registered_for_comet,
    the_forever_frame_may_be_framed_only_by_its_own_origin,
    cross_site_jsonp_is_refused_unless_listed_or_allowed,
    unknown_paths_under_a_comet_mount_get_a_json_404,
    publishing_has_the_same_header_and_query_limits,
    a_publish_retried_with_its_idempotency_key_is_stored_once,
    head_is_answered_as_get_without_a_body_or_a_subscription,
    every_error_code_of_the_table_is_answered_over_a_socket,
    error_and_open_are_refused_as_channel_and_event_names,
    sse_opens_with_a_lone_comment_and_retry_rides_on_the_first_event,
);
