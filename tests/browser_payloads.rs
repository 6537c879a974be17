//! comet.js in headless Chromium hands a JSON payload over as published
//! (PROTOCOL.md, "Payloads"): `message.data` is the publisher's text over
//! SSE, fetch streaming and polling, big numbers and duplicate keys
//! included; JSONP and the forever frame hand over the parsed value. Presence (user
//! ids and info anyone may choose) is inert on every transport: a list and
//! a join whose user and info are HTML and script reach comet.js intact,
//! and run nothing.
//!
//! Chromium missing: reported as ignored, unless `COMET_BROWSER_TESTS=1`
//! (CI sets it).

use axum::{response::Html, routing::get, Router};
use comet_push::{protocol::SubscribeRoute, tower::CometLayer, Hub, Payload};
use comet_test_support::{browser::Browser, TestServer};
use serde_json::Value;

fn main() {
    comet_test_support::tool::run(vec![
        comet_test_support::tool_test!(comet_js_hands_json_over_as_published, [Chromium]),
        comet_test_support::tool_test!(hostile_presence_runs_nothing_on_any_transport, [Chromium]),
    ]);
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

/// A user id and info made to break out of a script, a comment and JSON in
/// HTML; each sets `top.pwned` if it ever runs.
const EVIL_USER: &str = "</script><img src=x onerror=top.pwned=1><script>top.pwned=2</script>";
const EVIL_NAME: &str = "<!--<script>top.pwned=3</script>--> \u{2028}\u{2029} ]]> ${top.pwned=4}";

const PRESENCE_HARNESS: &str = r#"(async () => {
  const { Comet } = await import("/comet/comet.js");
  window.P = {
    watch: (transport) => {
      const c = P.c = new Comet("/comet", { channels: ["room"], transports: [transport], share: false });
      P.here = c.presence("room");
      return true;
    },
    // Resolves with what the live set has of `user`, once it has them.
    seen: (user) => new Promise((resolve) => {
      const check = () => {
        const m = P.here.get(user);
        if (!m) return false;
        resolve(JSON.stringify({ user: m.user, name: m.info?.name }));
        return true;
      };
      if (!check()) P.here.on("change", check);
    }),
  };
  return true;
})()"#;

/// The JSON text a page handed back, parsed.
fn parsed(text: Value) -> Value {
    serde_json::from_str(text.as_str().unwrap()).unwrap()
}

async fn hostile_presence_runs_nothing_on_any_transport() {
    use comet_push::{Identity, Start};
    let Some(browser) = Browser::launch("hostile-presence").await else {
        return;
    };
    let hub = Hub::builder().presence_for(|_| true).build();
    let app = Router::new()
        .route(
            "/",
            get(|| async { Html("<!doctype html><title>presence</title>") }),
        )
        .layer(CometLayer::new(hub.clone()).route("/comet", SubscribeRoute::all()));
    let server = TestServer::axum(app).await;
    let evil = |suffix: &str| {
        Identity::new(format!("{EVIL_USER}{suffix}"))
            .unwrap()
            .with_info(serde_json::json!({ "name": EVIL_NAME }))
            .unwrap()
    };
    let expected = |user: &str| serde_json::json!({ "user": user, "name": EVIL_NAME });
    // Present before the page looks: in the list it gets first.
    let _listed = hub
        .subscribe_as(evil(""), ["room"], Start::head())
        .await
        .unwrap();
    let tab = browser.tab(&server.url("/")).await;
    assert_eq!(tab.eval(PRESENCE_HARNESS).await, true);
    let mut joined = Vec::new();
    for transport in ["sse", "stream", "poll", "jsonp", "iframe"] {
        tab.eval(&format!("P.watch({transport:?})")).await;
        let seen = parsed(tab.eval(&format!("P.seen({EVIL_USER:?})")).await);
        assert_eq!(seen, expected(EVIL_USER), "{transport}: the list");
        // One more joins while the page watches: a join, in-band.
        let user = format!("{EVIL_USER}{transport}");
        joined.push(
            hub.subscribe_as(evil(transport), ["room"], Start::head())
                .await
                .unwrap(),
        );
        let seen = parsed(tab.eval(&format!("P.seen({user:?})")).await);
        assert_eq!(seen, expected(&user), "{transport}: a join");
        assert_eq!(
            tab.eval("String(window.pwned)").await,
            "undefined",
            "{transport}: nothing ran"
        );
        tab.eval("P.c.close(), true").await;
    }
    tab.close().await;
}
