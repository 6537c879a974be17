//! Any publish request (channel in the path or query, `Content-Type`, `Comet-Event`,
//! `Content-Length` and body from the input) is answered 201, 200 (one
//! publish to several channels) or 4xx, never a panic or a 5xx; a 201
//! stored the body byte for byte, a 200 stored it (or a batch's `data`)
//! once on each channel it gives a cursor for, and nowhere else.
#![no_main]

use bytes::Bytes;
use comet_core::{Hub, Item, Start};
use comet_protocol::PublishRoute;
use http_body_util::Full;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tokio_stream::StreamExt;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // path NUL content-type NUL event NUL content-length NUL body
    let mut fields = data.splitn(5, |b| *b == 0);
    let mut next = || fields.next().unwrap_or_default();
    let (path, content_type, event, length, body) = (next(), next(), next(), next(), next());
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let Ok(uri) = http::Uri::builder()
        .path_and_query(format!("/publish/{}", path.trim_start_matches('/')))
        .build()
    else {
        return;
    };
    let mut request = http::Request::post(uri);
    for (name, value) in [
        ("content-type", content_type),
        ("comet-event", event),
        ("content-length", length),
    ] {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            if !value.is_empty() {
                request = request.header(name, value);
            }
        }
    }
    let Ok(request) = request.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let hub = Hub::builder().max_payload_bytes(1024).build();
    let route = PublishRoute::new().authorize(|_, _| true);
    let body = Bytes::copy_from_slice(body);
    runtime().block_on(async {
        let response = route
            .serve(&hub, "/publish", &parts, Full::new(body.clone()))
            .await;
        let status = response.status();
        assert!(
            status == 201 || status == 200 || status.is_client_error(),
            "{status}"
        );
        if status == 200 {
            let answer = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
            let results = answer["channels"].as_array().expect("a list of channels");
            let mut stored = 0;
            for result in results {
                let channel = result["channel"].as_str().expect("each names its channel");
                if result.get("cursor").is_none() {
                    let code = result["status"].as_u64().expect("else a status");
                    assert!((400..500).contains(&code), "{result}");
                    continue;
                }
                stored += 1;
                let mut sub = hub.subscribe([channel], Start::oldest()).await.unwrap();
                let Some(Item::Message { message, .. }) = sub.next().await else {
                    panic!("no message on {channel} after a cursor for it")
                };
                // channel= repeated: the body; a batch: its `data`.
                let query = parts.uri.query().unwrap_or("");
                if form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "channel") {
                    assert_eq!(message.data(), &body);
                }
            }
            assert_eq!(hub.stats().published, stored);
            return;
        }
        if status == 201 {
            assert_eq!(hub.stats().published, 1);
            // The one channel that now holds a message: the rest of the
            // path, else the `channel` parameter (PROTOCOL.md, "Publishing").
            let rest = parts
                .uri
                .path()
                .trim_start_matches("/publish")
                .trim_start_matches('/');
            let channel = if rest.is_empty() {
                let query = parts.uri.query().unwrap_or("");
                form_urlencoded::parse(query.as_bytes())
                    .find(|(key, _)| key == "channel")
                    .map(|(_, value)| value.into_owned())
                    .expect("a 201 without a channel in the path names one in the query")
            } else {
                percent_encoding::percent_decode_str(rest)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            };
            let mut sub = hub
                .subscribe([channel.as_str()], Start::oldest())
                .await
                .unwrap();
            let Some(Item::Message { message, .. }) = sub.next().await else {
                panic!("no message after a 201")
            };
            assert_eq!(message.data(), &body);
        }
    });
});
