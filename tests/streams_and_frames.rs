//! End-to-end over real sockets, on every adapter: the ndjson stream, the
//! forever frame and JSONP; payloads byte for byte and script-safe,
//! callbacks, framing policy and cross-site JSONP.

mod common;

use comet_push::Payload;
use comet_test_support::*;
use common::{
    protocol::{self, APP_ORIGIN, JSON_BODY},
    transports,
};
use serde_json::{json, Value};

async fn stream_sends_one_envelope_per_line_and_resumes_by_cursor(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let cursor = hub.current_cursor(["s"]).await.unwrap();
    let response = transports::get(&server, &format!("/stream?channel=s&cursor={cursor}")).await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(
        response.headers()["cache-control"],
        "no-cache, no-transform"
    );
    let mut lines = LineReader::new(response);
    hub.publish("s", "one").await.unwrap();
    hub.publish("s", Payload::json(&json!({"two": 2})).unwrap().event("e"))
        .await
        .unwrap();
    let mut got = vec![];
    let mut last = Value::Null;
    while got.len() < 2 {
        let envelope = transports::parse(&lines.line().await.unwrap());
        if envelope["type"] == "heartbeat" {
            continue;
        }
        got.push(describe(&envelope));
        last = envelope;
    }
    assert_eq!(got, ["s:one", "s:{\"two\":2}"]);
    assert_eq!(last["event"], "e");
    drop(lines);
    hub.publish("s", "three").await.unwrap();
    let resumed = transports::get(
        &server,
        &format!(
            "/stream?channel=s&cursor={}",
            last["cursor"].as_str().unwrap()
        ),
    )
    .await;
    let mut lines = LineReader::new(resumed);
    let envelope = loop {
        let envelope = transports::parse(&lines.line().await.unwrap());
        if envelope["type"] != "heartbeat" {
            break envelope;
        }
    };
    assert_eq!(describe(&envelope), "s:three");
}

async fn stream_reports_gaps_and_sends_heartbeat_envelopes_when_idle(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let cursor = hub.current_cursor(["small/s"]).await.unwrap();
    for i in 1..=5 {
        hub.publish("small/s", i.to_string()).await.unwrap();
    }
    let mut lines = LineReader::new(
        transports::get(&server, &format!("/stream?channel=small/s&cursor={cursor}")).await,
    );
    let mut got = vec![];
    for _ in 0..6 {
        got.push(describe(&transports::parse(&lines.line().await.unwrap())));
    }
    assert_eq!(
        got,
        [
            "small/s:gap:2",
            "small/s:3",
            "small/s:4",
            "small/s:5",
            "heartbeat",
            "heartbeat"
        ]
    );
}

async fn stream_ends_after_its_byte_budget_and_resuming_loses_nothing(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let cursor = hub.current_cursor(["b"]).await.unwrap();
    let sent: Vec<String> = (0..12)
        .map(|i| format!("{i:03}-{}", "x".repeat(100)))
        .collect();
    for text in &sent {
        hub.publish("b", text.as_str()).await.unwrap();
    }
    let mut received = vec![];
    let mut cursor = cursor.encode();
    let mut connections = 0;
    while received.len() < sent.len() {
        connections += 1;
        assert!(connections < 20, "too many reconnects");
        let mut lines = LineReader::new(
            transports::get(&server, &format!("/stream-small?channel=b&cursor={cursor}")).await,
        );
        // The server ends the body by itself once past its budget.
        let body = lines.until_end().await;
        assert!(
            lines.raw.len() < 600 + 400,
            "ended soon after the budget: {}",
            lines.raw.len()
        );
        for line in body {
            let envelope = transports::parse(&line);
            if envelope["type"] == "message" {
                received.push(envelope["data"].as_str().unwrap().to_owned());
                cursor = envelope["cursor"].as_str().unwrap().to_owned();
            }
        }
        if received.len() == sent.len() {
            break;
        }
    }
    assert!(connections > 1, "the budget ended at least one stream");
    assert_eq!(received, sent, "in order, none lost, none twice");
}

async fn iframe_pads_its_first_chunk_and_calls_the_callback_per_item(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let response = transports::get(&server, "/iframe?channel=f&callback=__comet_cb.receive").await;
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let mut page = LineReader::new(response);
    // Before anything is published, the page already sent over 1 KiB.
    page.at_least(1025).await;
    let preamble = String::from_utf8(page.raw.clone()).unwrap();
    assert!(preamble.starts_with("<!doctype html>"));
    // Padding, then at once a heartbeat (the parent's sign that the frame
    // is live; an iframe shows none until its document ends) and no item.
    let padding = preamble.find("<script").expect("a heartbeat at once");
    assert!(padding > 1024, "the padding comes first");
    assert_eq!(
        &preamble[padding..],
        "<script>parent.__comet_cb.receive({\"type\":\"heartbeat\"});</script>\n"
    );
    // Idle: heartbeat calls keep the page alive.
    let heartbeat = loop {
        let line = page.line().await.unwrap();
        if line.starts_with("<script>") {
            break line;
        }
    };
    assert_eq!(
        heartbeat,
        "<script>parent.__comet_cb.receive({\"type\":\"heartbeat\"});</script>"
    );

    hub.publish("f", "hello").await.unwrap();
    let call = loop {
        let line = page.line().await.unwrap();
        if line.starts_with("<script>") && !line.contains("heartbeat") {
            break line;
        }
    };
    let json = call
        .strip_prefix("<script>parent.__comet_cb.receive(")
        .and_then(|s| s.strip_suffix(");</script>"))
        .unwrap_or_else(|| panic!("unexpected call {call}"));
    assert_eq!(describe(&transports::parse(json)), "f:hello");
}

async fn iframe_and_jsonp_keep_hostile_payloads_inert(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let hostile = [
        "</script><script>alert(1)</script>",
        "<!-- <script>",
        "a\u{2028}b\u{2029}c",
        "&lt; & \"quotes\" \\ '",
        "</SCRIPT>",
    ];
    let cursor = hub.current_cursor(["h"]).await.unwrap();
    for text in hostile {
        hub.publish("h", text).await.unwrap();
    }
    hub.publish(
        "h",
        Payload::json(&json!({"k": "</script>\u{2028}"})).unwrap(),
    )
    .await
    .unwrap();

    let mut page = LineReader::new(
        transports::get(
            &server,
            &format!("/iframe?channel=h&callback=cb&cursor={cursor}"),
        )
        .await,
    );
    let mut calls = vec![];
    while calls.len() < hostile.len() + 1 {
        let line = page.line().await.unwrap();
        // Items only: heartbeats (one comes at once) carry nothing.
        if line.starts_with("<script>")
            && line != "<script>parent.cb({\"type\":\"heartbeat\"});</script>"
        {
            calls.push(line);
        }
    }
    for (call, text) in calls.iter().zip(hostile) {
        let json = call
            .strip_prefix("<script>parent.cb(")
            .unwrap()
            .strip_suffix(");</script>")
            .unwrap();
        for raw in ["<", ">", "\u{2028}", "\u{2029}"] {
            assert!(!json.contains(raw), "{raw:?} appears raw in {json}");
        }
        assert_eq!(
            transports::parse(json)["data"],
            text,
            "means the same after parsing"
        );
    }
    assert_eq!(
        transports::parse(
            calls[5]
                .strip_prefix("<script>parent.cb(")
                .unwrap()
                .strip_suffix(");</script>")
                .unwrap()
        )["data"],
        json!({"k": "</script>\u{2028}"})
    );

    let response = transports::get(
        &server,
        &format!("/jsonp?channel=h&callback=cb&cursor={cursor}"),
    )
    .await;
    assert_eq!(
        response.headers()["content-type"],
        "application/javascript; charset=utf-8"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let script = response.text().await.unwrap();
    let json = script
        .strip_prefix("/**/cb(")
        .unwrap()
        .strip_suffix(");")
        .unwrap();
    for raw in ["<", ">", "\u{2028}", "\u{2029}"] {
        assert!(!json.contains(raw), "{raw:?} appears raw in JSONP");
    }
    let body = transports::parse(json);
    let data: Vec<Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data.len(), 6);
    assert_eq!(data[0], hostile[0]);
}

async fn hostile_callbacks_are_refused(adapter: Adapter) {
    let (_hub, server) = transports::start(adapter).await;
    for path in ["/jsonp", "/iframe"] {
        for callback in [
            "alert(1)",
            "a;b",
            "%3C%2Fscript%3E",
            "x%0Ay",
            "a..b",
            "1abc",
            "",
            &"a".repeat(65),
        ] {
            let response =
                transports::get(&server, &format!("{path}?channel=c&callback={callback}")).await;
            expect_error(response, 400, "bad_callback").await;
        }
        let missing = transports::get(&server, &format!("{path}?channel=c")).await;
        expect_error(missing, 400, "bad_callback").await;
    }
}

async fn iframe_ends_after_its_byte_budget_and_resuming_loses_nothing(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let mut cursor = hub.current_cursor(["ib"]).await.unwrap().encode();
    for i in 0..10 {
        hub.publish("ib", format!("{i}-{}", "y".repeat(100)))
            .await
            .unwrap();
    }
    let mut received = vec![];
    for _ in 0..20 {
        let mut page = LineReader::new(
            transports::get(
                &server,
                &format!("/iframe-small?channel=ib&callback=cb&cursor={cursor}"),
            )
            .await,
        );
        for line in page.until_end().await {
            if let Some(json) = line
                .strip_prefix("<script>parent.cb(")
                .and_then(|s| s.strip_suffix(");</script>"))
            {
                let envelope = transports::parse(json);
                if envelope["type"] == "heartbeat" {
                    continue;
                }
                received.push(
                    envelope["data"]
                        .as_str()
                        .unwrap()
                        .split('-')
                        .next()
                        .unwrap()
                        .to_owned(),
                );
                cursor = envelope["cursor"].as_str().unwrap().to_owned();
            }
        }
        if received.len() >= 10 {
            break;
        }
    }
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(received, expected);
}

async fn jsonp_holds_batches_and_resumes_by_cursor(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let cursor = hub.current_cursor(["j"]).await.unwrap();
    let url = server.url(&format!(
        "/jsonp?channel=j&callback=__comet_cb.cb&cursor={cursor}"
    ));
    let held = tokio::spawn(get_text(url));
    eventually("jsonp held", || hub.local_subscriber_count("j") == 1).await;
    hub.publish("j", "first").await.unwrap();
    let script = bounded("jsonp answer", held).await.unwrap();
    let body = transports::parse(
        script
            .strip_prefix("/**/__comet_cb.cb(")
            .unwrap()
            .strip_suffix(");")
            .unwrap(),
    );
    assert_eq!(describe(&body["messages"][0]), "j:first");
    hub.publish("j", "second").await.unwrap();
    let next = transports::get(
        &server,
        &format!(
            "/jsonp?channel=j&callback=__comet_cb.cb&cursor={}",
            body["cursor"].as_str().unwrap()
        ),
    )
    .await;
    let script = next.text().await.unwrap();
    let body = transports::parse(
        script
            .strip_prefix("/**/__comet_cb.cb(")
            .unwrap()
            .strip_suffix(");")
            .unwrap(),
    );
    assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(describe(&body["messages"][0]), "j:second");
}

/// PROTOCOL.md, "Payloads": the publisher's bytes on every transport, with
/// only what each framing needs.
async fn json_is_delivered_byte_for_byte_on_every_transport(adapter: Adapter) {
    let (hub, server) = protocol::start(adapter).await;
    let cursor = hub.current_cursor(["exact"]).await.unwrap();
    let published = protocol::post(
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
    let poll_body = protocol::get(&server, &query("poll"))
        .await
        .text()
        .await
        .unwrap();
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
    let script = protocol::get(&server, &query("jsonp"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        script.contains(&format!("\"data\":{},", protocol::script_safe(JSON_BODY))),
        "{script}"
    );
    let mut page = LineReader::new(protocol::get(&server, &query("iframe")).await);
    let expected = format!("\"data\":{},", protocol::script_safe(JSON_BODY));
    bounded("iframe message", async {
        while !String::from_utf8_lossy(&page.raw).contains(&expected) {
            page.line().await.expect("the frame ended");
        }
    })
    .await;

    // ndjson: one line per envelope, so line breaks between tokens are spaces.
    let mut lines = LineReader::new(protocol::get(&server, &query("stream")).await);
    let line = lines.line().await.unwrap();
    let one_line = JSON_BODY.replace(['\r', '\n'], " ");
    assert!(line.contains(&format!("\"data\":{one_line},")), "{line}");

    // SSE: one data: line per line of it.
    let response = protocol::get(
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
        .subscribe(["exact"], comet_push::Start::cursor(cursor))
        .await
        .unwrap();
    use futures_util::StreamExt;
    let item = bounded("hub", sub.next()).await.unwrap();
    assert_eq!(item.message().unwrap().text(), JSON_BODY);
}

/// PROTOCOL.md, "Callbacks".
async fn callbacks_name_only_functions_registered_for_comet(adapter: Adapter) {
    let (_hub, server) = protocol::start(adapter).await;
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
            let response = protocol::get(
                &server,
                &format!("/comet?transport={transport}&channel=c&callback={refused}"),
            )
            .await;
            expect_error(response, 400, "bad_callback").await;
        }
        for accepted in ["cb", "__comet_cb.p1"] {
            let response = protocol::get(
                &server,
                &format!("/comet?transport={transport}&channel=c&callback={accepted}"),
            )
            .await;
            assert_eq!(response.status(), 200, "{transport} {accepted}");
        }
        // A route with a registry of its own.
        let own = protocol::get(
            &server,
            &format!("/comet/own-registry?transport={transport}&channel=c&callback=app_cb.x"),
        )
        .await;
        assert_eq!(own.status(), 200);
        let other = protocol::get(
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
    let (_hub, server) = protocol::start(adapter).await;
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
    let (_hub, server) = protocol::start(adapter).await;
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

each_adapter!(
    stream_sends_one_envelope_per_line_and_resumes_by_cursor,
    stream_reports_gaps_and_sends_heartbeat_envelopes_when_idle,
    stream_ends_after_its_byte_budget_and_resuming_loses_nothing,
    iframe_pads_its_first_chunk_and_calls_the_callback_per_item,
    iframe_and_jsonp_keep_hostile_payloads_inert,
    hostile_callbacks_are_refused,
    iframe_ends_after_its_byte_budget_and_resuming_loses_nothing,
    jsonp_holds_batches_and_resumes_by_cursor,
    json_is_delivered_byte_for_byte_on_every_transport,
    callbacks_name_only_functions_registered_for_comet,
    the_forever_frame_may_be_framed_only_by_its_own_origin,
    cross_site_jsonp_is_refused_unless_listed_or_allowed,
);
