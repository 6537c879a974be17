//! End-to-end over real sockets, on every adapter: CORS on subscribe and
//! publish routes, and preflights.

mod common;

use comet_test_support::*;
use common::transports::{self, ORIGIN};

async fn cors_allows_listed_origins_with_credentials_and_never_a_star(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    hub.publish("c", "x").await.unwrap();
    let allowed = client()
        .get(server.url("/cors?channel=c&since=oldest&transport=poll"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    let h = allowed.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "etag");
    assert!(h.get_all("vary").iter().any(|v| v == "origin"));

    let denied = client()
        .get(server.url("/cors?channel=c&since=oldest&transport=poll"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(denied
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(denied
        .headers()
        .get_all("vary")
        .iter()
        .any(|v| v == "origin"));

    // Errors carry CORS headers too, so a page can read why it was refused.
    let error = client()
        .get(server.url("/cors?channel=bad%20name"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(error.headers()["access-control-allow-origin"], ORIGIN);
    expect_error(error, 400, "bad_channel").await;

    let any = client()
        .get(server.url("/cors-any?channel=c&timeout=0"))
        .header("origin", "https://anyone.example")
        .send()
        .await
        .unwrap();
    assert_eq!(any.headers()["access-control-allow-origin"], "*");
    assert!(
        any.headers()
            .get("access-control-allow-credentials")
            .is_none(),
        "never * with credentials"
    );
}

async fn cors_answers_preflights(adapter: Adapter) {
    let (_hub, server) = transports::start(adapter).await;
    let preflight = |path: &str, origin: &str, method: &str| {
        client()
            .request(reqwest::Method::OPTIONS, server.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "last-event-id, authorization",
            )
            .send()
    };
    let ok = preflight("/cors", ORIGIN, "GET").await.unwrap();
    assert_eq!(ok.status(), 204);
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-methods"], "GET");
    assert_eq!(
        h["access-control-allow-headers"],
        "last-event-id, authorization"
    );
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");

    let evil = preflight("/cors", "https://evil.example", "GET")
        .await
        .unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
    expect_error(evil, 403, "cors_denied").await;
    let wrong_method = preflight("/cors", ORIGIN, "DELETE").await.unwrap();
    expect_error(wrong_method, 403, "cors_denied").await;
    let publish = preflight("/publish/x", ORIGIN, "POST").await.unwrap();
    assert_eq!(publish.status(), 204);
    assert_eq!(
        publish.headers()["access-control-allow-methods"],
        "GET, POST, DELETE"
    );
    // A route without CORS does not answer OPTIONS.
    let none = preflight("/poll", ORIGIN, "GET").await.unwrap();
    expect_error(none, 405, "method_not_allowed").await;
}

each_adapter!(
    cors_allows_listed_origins_with_credentials_and_never_a_star,
    cors_answers_preflights,
);
