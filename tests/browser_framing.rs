//! Same-origin method execution (SOME), in headless Chromium (PROTOCOL.md,
//! "Callbacks" and "Streaming transports"). The forever frame runs
//! `parent.<callback>(...)`; a page of another origin that frames a page of
//! the push host (named as it likes) and a forever frame beside it could
//! have the frame call a method of that page. Two defences, each shown
//! alone: callbacks name only registered functions, and the forever frame
//! may only be framed by pages of its own origin. A page of that origin
//! still receives.
//!
//! Chromium missing: reported as ignored, unless `COMET_BROWSER_TESTS=1`
//! (CI sets it).

use axum::{response::Html, routing::get, Router};
use comet_push::{protocol::SubscribeRoute, tower::CometLayer, Hub};
use comet_test_support::{browser::Browser, TestServer};

fn main() {
    comet_test_support::tool::run(vec![comet_test_support::tool_test!(
        a_page_of_another_origin_cannot_make_the_forever_frame_call_into_the_push_hosts_pages,
        [Chromium]
    )]);
}

/// A page of the push host's origin with a method worth calling, that says
/// when its body is removed or its method is called, and answers "status?".
const VICTIM: &str = r#"<!doctype html><html><head><title>victim</title></head><body><p>victim</p><script>
function victimFn() { parent.postMessage({ called: true }, "*"); }
new MutationObserver(() => { if (!document.body) parent.postMessage({ removed: true }, "*"); })
  .observe(document.documentElement, { childList: true });
addEventListener("message", (e) => {
  if (e.data === "status?") e.source.postMessage({ body: Boolean(document.body) }, "*");
});
</script></body></html>"#;

/// The attacker's page (another origin): once loaded, frames the victim as
/// `?name=`, then the forever frame `?frame=`; `window.outcome` resolves to
/// "removed", "called", or "intact" (asked once the forever frame has
/// loaded: a refused or blocked frame loads, a working one streams on).
const ATTACK: &str = r#"<!doctype html><html><head><title>attack</title></head><body><script>
window.outcome = new Promise((resolve) => {
  addEventListener("message", (e) => {
    if (e.data.removed) resolve("removed");
    else if (e.data.called) resolve("called");
    else if ("body" in e.data) resolve(e.data.body ? "intact" : "removed");
  });
  addEventListener("load", () => {
    const params = new URLSearchParams(location.search);
    const victim = document.createElement("iframe");
    victim.name = params.get("name");
    victim.src = params.get("victim");
    victim.onload = () => {
      const frame = document.createElement("iframe");
      frame.src = params.get("frame");
      frame.onload = () => victim.contentWindow.postMessage("status?", "*");
      document.body.append(frame);
    };
    document.body.append(victim);
  });
});
</script></body></html>"#;

/// A page of the push host's own origin that frames the forever frame with
/// a callback in the registry; `window.first` resolves to the first
/// envelope's type.
const OWN: &str = r#"<!doctype html><html><head><title>own</title></head><body><script>
window.first = new Promise((resolve) => {
  window.__comet_cb = { got: (envelope) => resolve(envelope.type) };
  addEventListener("load", () => {
    const frame = document.createElement("iframe");
    frame.src = "/comet?transport=iframe&channel=own&callback=__comet_cb.got";
    document.body.append(frame);
  });
});
</script></body></html>"#;

fn encode(url: &str) -> String {
    url.replace('%', "%25")
        .replace('&', "%26")
        .replace('?', "%3F")
        .replace('=', "%3D")
}

async fn a_page_of_another_origin_cannot_make_the_forever_frame_call_into_the_push_hosts_pages() {
    let Some(browser) = Browser::launch("forever-frame framing").await else {
        return;
    };
    let hub = Hub::new();
    let app = Router::new()
        .route("/victim", get(|| async { Html(VICTIM) }))
        .route("/attack", get(|| async { Html(ATTACK) }))
        .route("/own", get(|| async { Html(OWN) }))
        .layer(CometLayer::new(hub.clone()).route("/comet", SubscribeRoute::iframe()));
    let server = TestServer::axum(app).await;
    let port = server.addr.port();
    // The push host is 127.0.0.1:P; the attacker is localhost:P.
    let push = |path: &str| format!("http://127.0.0.1:{port}{path}");
    for (name, callback) in [
        // A dotted path through the named frame: refused as a callback.
        ("victim", "victim.document.body.remove"),
        // A callback the registry rule accepts, on a frame the attacker
        // named like the registry: the framing policy alone stops it.
        ("__comet_cb", "__comet_cb.victimFn"),
    ] {
        let frame = push(&format!(
            "/comet?transport=iframe&channel=some&callback={callback}"
        ));
        let attack = format!(
            "http://localhost:{port}/attack?name={name}&victim={}&frame={}",
            encode(&push("/victim")),
            encode(&frame)
        );
        let tab = browser.tab(&attack).await;
        assert_eq!(
            tab.eval("window.outcome").await,
            "intact",
            "callback {callback}: the page of the push host was reached"
        );
        tab.close().await;
    }
    // The push host's own pages still receive through the forever frame.
    let tab = browser.tab(&push("/own")).await;
    assert_eq!(tab.eval("window.first").await, "heartbeat");
    tab.close().await;
}
