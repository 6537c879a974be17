//! End-to-end over real sockets, on every adapter: routes and mounting:
//! negotiation, authorization, channel resolvers, a route as a plain
//! service, the app's own routes, the client script beside its route, and
//! stats.

mod common;

use comet_push::{protocol::SubscribeRoute, tower::RouteService};
use comet_test_support::*;
use common::{
    basics,
    transports::{self, ORIGIN},
};

async fn a_route_offering_several_transports_negotiates(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
    hub.publish("n", "x").await.unwrap();
    // Default: the first offered (poll).
    let answer = poll(client().get(server.url("/comet/either?channel=n&since=oldest"))).await;
    assert_eq!(answer.items(), ["n:x"]);
    // Accept: text/event-stream picks SSE.
    let response = client()
        .get(server.url("/comet/either?channel=n&since=oldest"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(SseReader::new(response).next_event().await.data, "x");
    // transport= picks explicitly.
    let response = client()
        .get(server.url("/comet/either?channel=n&since=1&transport=sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(SseReader::new(response).next_event().await.data, "x");
}

async fn authorization_is_checked_on_every_request(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
    let denied = client()
        .get(server.url("/private?channel=team/a&timeout=0"))
        .send()
        .await
        .unwrap();
    let message = expect_error(denied, 403, "forbidden").await;
    assert!(message.contains("not authorized"), "{message}");
    let wrong_channel = client()
        .get(server.url("/private?channel=other&timeout=0"))
        .header("authorization", "Bearer ok")
        .send()
        .await
        .unwrap();
    expect_error(wrong_channel, 403, "forbidden").await;
    hub.publish("team/a", "secret").await.unwrap();
    let allowed = poll(
        client()
            .get(server.url("/private?channel=team/a&since=oldest"))
            .header("authorization", "Bearer ok"),
    )
    .await;
    assert_eq!(allowed.items(), ["team/a:secret"]);
    assert_eq!(
        hub.local_subscribers(),
        0,
        "denied requests never subscribed"
    );
}

async fn channels_can_come_from_the_request_instead_of_the_query(adapter: Adapter) {
    let (hub, server) = basics::start(adapter).await;
    hub.publish("user/ann", "for ann").await.unwrap();
    hub.publish("user/bob", "for bob").await.unwrap();
    let ann = poll(
        client()
            .get(server.url("/me?channel=user/bob&since=oldest"))
            .header("x-user", "ann"),
    )
    .await;
    assert_eq!(ann.items(), ["user/ann:for ann"]);
    let nobody = client()
        .get(server.url("/me?since=oldest"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_error(nobody, 403, "forbidden").await, "who are you?");
}

async fn the_apps_own_routes_still_work(adapter: Adapter) {
    let (_hub, server) = basics::start(adapter).await;
    let response = client().get(server.url("/hello")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello from the app");
    let missing = client().get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_route_can_be_mounted_as_a_plain_service() {
    // Tower only: `RouteService` with axum's `route_service`.
    let hub = basics::hub();
    let app = axum::Router::new().route_service(
        "/svc/sse",
        RouteService::new(hub.clone(), SubscribeRoute::sse()),
    );
    let server = TestServer::axum(app).await;
    let response = client()
        .get(server.url("/svc/sse?channel=svc"))
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    events.opened().await;
    hub.publish("svc", "via route_service").await.unwrap();
    assert_eq!(events.next_event().await.data, "via route_service");
}

/// `<route>/comet.js`: the browser client, revalidated by ETag, cached for
/// good at its versioned URL, with the route's CORS (module scripts from
/// another origin are fetched in CORS mode).
async fn the_client_script_is_served_beside_its_route(adapter: Adapter) {
    let (_hub, server) = transports::start(adapter).await;
    let script = client()
        .get(server.url("/cors/comet.js"))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    let h = script.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    let etag = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        script.text().await.unwrap(),
        comet_push::protocol::CLIENT_SCRIPT
    );

    let again = client()
        .get(server.url("/cors/comet.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let versioned = client()
        .get(server.url(&comet_push::protocol::client_script_url("/poll")))
        .send()
        .await
        .unwrap();
    assert_eq!(versioned.status(), 200);
    assert_eq!(
        versioned.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    // Only below a subscribe route; other paths are the app's.
    let elsewhere = client()
        .get(server.url("/nowhere/comet.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
}

async fn stats_count_publishes_and_deliveries(adapter: Adapter) {
    let (hub, server) = transports::start(adapter).await;
    let mut a = transports::open_sse(&server, "/sse?channel=st").await;
    let mut b = LineReader::new(transports::get(&server, "/stream?channel=st").await);
    for i in 0..3 {
        hub.publish("st", i.to_string()).await.unwrap();
    }
    for _ in 0..3 {
        a.next_event().await;
    }
    let mut seen = 0;
    while seen < 3 {
        if transports::parse(&b.line().await.unwrap())["type"] == "message" {
            seen += 1;
        }
    }
    let stats = hub.stats();
    assert_eq!((stats.published, stats.subscribers), (3, 2));
    eventually("deliveries counted", || hub.stats().delivered == 6).await;
}

each_adapter!(
    a_route_offering_several_transports_negotiates,
    authorization_is_checked_on_every_request,
    channels_can_come_from_the_request_instead_of_the_query,
    the_apps_own_routes_still_work,
    the_client_script_is_served_beside_its_route,
    stats_count_publishes_and_deliveries,
);
