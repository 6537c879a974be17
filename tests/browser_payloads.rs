//! comet.js in headless Chromium hands a JSON payload over as published
//! (PROTOCOL.md, "Payloads"): `message.data` is the publisher's text over
//! SSE, fetch streaming and polling, big numbers and duplicate keys
//! included; JSONP and the forever frame hand over the parsed value.
//!
//! Chromium missing: reported as ignored, unless `COMET_BROWSER_TESTS=1`
//! (CI sets it).

use axum::{response::Html, routing::get, Router};
use comet_push::{protocol::SubscribeRoute, tower::CometLayer, Hub, Payload};
use comet_test_support::{browser::Browser, TestServer};
use serde_json::Value;

fn main() {
    comet_test_support::tool::run(vec![comet_test_support::tool_test!(
        comet_js_hands_json_over_as_published,
        [Chromium]
    )]);
}

/// What JSON.parse and JSON.stringify would change: a number past f64,
/// duplicate and unsorted keys, integer-like keys (which JavaScript orders
/// first), escapes.
const BODY: &str = r#"{"n": 12345678901234567890123, "z": 1, "b": 2, "z": 3, "10": "ten", "e": "\u00e9 \" \\ \n </script>", "f": [1.0, -0.0]}"#;

const HARNESS: &str = r#"(async () => {
  const { Comet } = await import("/comet/comet.js");
  window.T = {
    run: (transport, body) => new Promise((resolve) => {
      const c = new Comet("/comet", { channels: [`p-${transport}`], transports: [transport], share: false });
      const value = JSON.stringify(JSON.parse(body));
      T.message = new Promise((got) => c.on("message", (m) => {
        got({ data: m.data, sameValue: JSON.stringify(m.json()) === value });
        c.close();
      }));
      c.on("open", () => resolve(c.transport));
    }),
  };
  return true;
})()"#;

async fn comet_js_hands_json_over_as_published() {
    let Some(browser) = Browser::launch("comet.js payloads").await else {
        return;
    };
    let hub = Hub::new();
    let app = Router::new()
        .route(
            "/",
            get(|| async { Html("<!doctype html><title>payloads</title>") }),
        )
        .layer(CometLayer::new(hub.clone()).route("/comet", SubscribeRoute::all()));
    let server = TestServer::axum(app).await;
    let tab = browser.tab(&server.url("/")).await;
    assert_eq!(tab.eval(HARNESS).await, true);
    for transport in ["sse", "stream", "poll", "jsonp", "iframe"] {
        let run = format!("T.run({transport:?}, {})", Value::from(BODY));
        assert_eq!(tab.eval(&run).await, transport);
        hub.publish(
            &format!("p-{transport}"),
            Payload::json_bytes(BODY).unwrap(),
        )
        .await
        .unwrap();
        let got = tab.eval("T.message").await;
        if ["sse", "stream", "poll"].contains(&transport) {
            assert_eq!(got["data"], BODY, "{transport}");
        }
        assert_eq!(got["sameValue"], true, "{transport}: {got}");
    }
    tab.close().await;
}
