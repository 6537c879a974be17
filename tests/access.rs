//! Access over HTTP, on one node: async authorization, tokens (401 and
//! 403), a live stream and a held poll ending at the token's expiry and
//! resuming with a new token, orders on the publish route (disconnect,
//! unsubscribe, subscribe, close with its history), and publishers by
//! static key or token. (Across nodes on Redis: `comet-redis/tests/control.rs`.)

use comet_push::{
    protocol::{
        token::{Claims, TokenSigner, Tokens, VerifyingKey},
        Access, ProtocolError, PublishRoute, StaticKeys, SubscribeRoute,
    },
    Control, Hub, Identity,
};
use comet_test_support::*;
use serde_json::Value;
use std::time::Duration;

const SECRET: &[u8] = b"a test secret of thirty-two bytes";
const SERVICE_KEY: &str = "the billing service's key";

fn signer() -> TokenSigner {
    TokenSigner::hs256(SECRET).unwrap().kid("k1")
}

fn token(claims: Claims) -> String {
    signer().sign(&claims).unwrap()
}

async fn start(adapter: Adapter) -> (Hub, TestServer) {
    let hub = Hub::new();
    let tokens = Tokens::new().key("k1", VerifyingKey::hs256(SECRET).unwrap());
    let mounts = vec![
        Mount::Subscribe(
            "/t",
            SubscribeRoute::all()
                .authorizer(tokens.clone())
                .max_hold(Duration::from_secs(10)),
        ),
        // Signed in by a session an async lookup finds: `x-session: <user>`.
        Mount::Subscribe(
            "/s",
            SubscribeRoute::all()
                .max_hold(Duration::from_secs(10))
                .authorize_async(|request, _| {
                    let session = request
                        .headers
                        .get("x-session")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    async move {
                        tokio::task::yield_now().await; // the session store
                        let user = session.ok_or_else(|| ProtocolError::unauthorized("sign in"))?;
                        let identity = Identity::new(user)
                            .map_err(|e| ProtocolError::bad_request(e.to_string()))?;
                        Ok(Access::granted().identity(identity))
                    }
                }),
        ),
        Mount::Publish(
            "/publish",
            PublishRoute::new()
                .authorizer(StaticKeys::new([SERVICE_KEY]))
                .control(StaticKeys::new([SERVICE_KEY])),
        ),
        Mount::Publish("/by-token", PublishRoute::new().authorizer(tokens)),
        // Orders allowed but the one that destroys history.
        Mount::Publish(
            "/no-clearing",
            PublishRoute::new()
                .authorizer(StaticKeys::new([SERVICE_KEY]))
                .control(|_: &http::request::Parts, control: &Control| {
                    !matches!(control, Control::Clear { .. })
                }),
        ),
    ];
    let server = TestServer::start(adapter, &hub, mounts).await;
    (hub, server)
}

async fn get(server: &TestServer, path: &str, session: Option<&str>) -> reqwest::Response {
    let mut request = client().get(server.url(path));
    if let Some(user) = session {
        request = request.header("x-session", user);
    }
    bounded("request", request.send()).await.unwrap()
}

async fn order(server: &TestServer, method: reqwest::Method, path: &str) -> u16 {
    let response = bounded(
        "order",
        client()
            .request(method, server.url(path))
            .bearer_auth(SERVICE_KEY)
            .send(),
    )
    .await
    .unwrap();
    response.status().as_u16()
}

/// Reads SSE events until one of `event` comes; returns its data as JSON.
async fn until_event(reader: &mut SseReader, event: &str) -> (Option<String>, Value) {
    bounded(event, async {
        loop {
            let next = reader.next_event().await;
            if next.event.as_deref() == Some(event) {
                return (next.id, serde_json::from_str(&next.data).unwrap());
            }
        }
    })
    .await
}

async fn tokens_are_checked_and_grant_what_they_say(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let good = token(Claims::new(["room/*"], Duration::from_secs(60)).subject("ann"));
    let ok = get(
        &server,
        &format!("/t?channel=room/1&token={good}&transport=poll&timeout=0"),
        None,
    )
    .await;
    assert_eq!(ok.status(), 200);
    // By header too.
    let ok = bounded(
        "bearer",
        client()
            .get(server.url("/t?channel=room/1&transport=poll&timeout=0"))
            .bearer_auth(&good)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let not_granted = get(&server, &format!("/t?channel=lobby&token={good}"), None).await;
    expect_error(not_granted, 403, "forbidden").await;
    let expired = token(Claims {
        exp: 1,
        ..Claims::new(["room/*"], Duration::ZERO)
    });
    let wrong_key = TokenSigner::hs256(b"not the secret, but 32 bytes long")
        .unwrap()
        .kid("k1")
        .sign(&Claims::new(["room/*"], Duration::from_secs(60)))
        .unwrap();
    for path in [
        "/t?channel=room/1".to_owned(),
        "/t?channel=room/1&token=not.a.token".to_owned(),
        format!("/t?channel=room/1&token={expired}"),
        format!("/t?channel=room/1&token={wrong_key}"),
    ] {
        let response = get(&server, &path, None).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{path}");
        expect_error(response, 401, "unauthorized").await;
    }
    // An async authorizer: refused without a session, then the session's user.
    expect_error(
        get(&server, "/s?channel=a", None).await,
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(
        get(
            &server,
            "/s?channel=a&transport=poll&timeout=0",
            Some("bob")
        )
        .await
        .status(),
        200
    );
}

async fn a_stream_ends_at_its_tokens_expiry_and_resumes_with_a_new_one(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let short = token(Claims::new(["news"], Duration::from_secs(2)).subject("ann"));
    let mut reader =
        SseReader::new(get(&server, &format!("/t?channel=news&token={short}"), None).await);
    reader.opened().await;
    hub.publish("news", "one").await.unwrap();
    let (id, end) = until_event(&mut reader, "comet-end").await;
    assert_eq!(end["reason"], "expired");
    assert_eq!(end["channel"], Value::Null);
    reader.until_end().await;
    // Published after the end: the new token's stream has it, from the cursor.
    hub.publish("news", "two").await.unwrap();
    let cursor = id.expect("the end carries the cursor as its id");
    assert_eq!(end["cursor"], cursor.as_str());
    let fresh = token(Claims::new(["news"], Duration::from_secs(60)).subject("ann"));
    let mut again = SseReader::new(
        get(
            &server,
            &format!("/t?channel=news&token={fresh}&cursor={cursor}"),
            None,
        )
        .await,
    );
    again.opened().await;
    let event = again.next_event().await;
    assert_eq!(event.data, "two", "nothing lost, nothing repeated");
}

async fn a_held_poll_is_answered_at_its_tokens_expiry(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let short = token(Claims::new(["news"], Duration::from_secs(2)));
    let started = std::time::Instant::now();
    let answer =
        poll(client().get(server.url(&format!("/t?channel=news&transport=poll&token={short}"))))
            .await;
    let held = started.elapsed();
    assert!(
        held < Duration::from_secs(4),
        "answered at the expiry, not the hold: {held:?}"
    );
    let items = answer.body["messages"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", answer.body);
    assert_eq!(items[0]["type"], "end");
    assert_eq!(items[0]["reason"], "expired");
}

async fn orders_reach_live_subscriptions(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    let mut ann = SseReader::new(get(&server, "/s?channel=a&channel=b", Some("ann")).await);
    let mut bob = SseReader::new(get(&server, "/s?channel=a", Some("bob")).await);
    ann.opened().await;
    bob.opened().await;

    // Unsubscribe: ann stops reading "b", reads "a" on.
    assert_eq!(
        order(
            &server,
            reqwest::Method::POST,
            "/publish/unsubscribe?user=ann&channel=b"
        )
        .await,
        204
    );
    let (_, end) = until_event(&mut ann, "comet-end").await;
    assert_eq!(
        (end["reason"].as_str(), end["channel"].as_str()),
        (Some("unsubscribed"), Some("b"))
    );
    hub.publish("b", "not for ann").await.unwrap();
    hub.publish("a", "for both").await.unwrap();
    assert_eq!(ann.next_event().await.data, "for both");
    assert_eq!(bob.next_event().await.data, "for both");

    // Subscribe: ann reads "c" too, and her cursor has it.
    assert_eq!(
        order(
            &server,
            reqwest::Method::POST,
            "/publish/subscribe?user=ann&channel=c"
        )
        .await,
        204
    );
    let (id, added) = until_event(&mut ann, "comet-subscribed").await;
    assert_eq!(added["channel"], "c");
    let cursor = comet_push::Cursor::decode(&id.unwrap()).unwrap();
    assert_eq!(cursor.len(), 2);
    assert!(cursor
        .position(&comet_push::ChannelName::new("c").unwrap())
        .is_some());
    hub.publish("c", "now ann's").await.unwrap();
    assert_eq!(ann.next_event().await.data, "now ann's");

    // Disconnect: ann's stream ends; bob's goes on.
    assert_eq!(
        order(
            &server,
            reqwest::Method::POST,
            "/publish/disconnect?user=ann"
        )
        .await,
        204
    );
    let (_, end) = until_event(&mut ann, "comet-end").await;
    assert_eq!(end["reason"], "disconnected");
    ann.until_end().await;
    hub.publish("a", "bob only").await.unwrap();
    assert_eq!(bob.next_event().await.data, "bob only");

    // Close and clear: bob's reading of "a" ends; a resume from before is a gap.
    let before = hub.current_cursor(["a"]).await.unwrap();
    assert_eq!(
        order(&server, reqwest::Method::DELETE, "/publish/a").await,
        204
    );
    let (_, end) = until_event(&mut bob, "comet-end").await;
    assert_eq!(
        (end["reason"].as_str(), end["channel"].as_str()),
        (Some("closed"), Some("a"))
    );
    let (_, end) = until_event(&mut bob, "comet-end").await;
    assert_eq!(
        (end["reason"].as_str(), end["channel"].as_str()),
        (Some("closed"), None)
    );
    hub.publish("a", "after").await.unwrap();
    let resumed = poll(
        client()
            .get(server.url(&format!("/s?channel=a&transport=poll&cursor={before}")))
            .header("x-session", "bob"),
    )
    .await;
    assert_eq!(resumed.items(), ["a:gap:null", "a:after"]);

    // Orders need the control key; a user is an identity's user.
    let refused = bounded(
        "order",
        client()
            .post(server.url("/publish/disconnect?user=ann"))
            .send(),
    )
    .await
    .unwrap();
    expect_error(refused, 401, "unauthorized").await;
    assert_eq!(
        order(&server, reqwest::Method::POST, "/publish/disconnect?user=").await,
        400
    );
    assert_eq!(
        order(
            &server,
            reqwest::Method::POST,
            "/publish/unsubscribe?user=ann"
        )
        .await,
        400
    );
}

async fn publishers_need_a_key_or_a_publisher_token(adapter: Adapter) {
    let (_hub, server) = start(adapter).await;
    let post = |path: &str, bearer: Option<String>| {
        let mut request = client().post(server.url(path)).body("x");
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send()
    };
    expect_error(
        bounded("p", post("/publish/a", None)).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        bounded("p", post("/publish/a", Some("a guess".into())))
            .await
            .unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(
        bounded("p", post("/publish/a", Some(SERVICE_KEY.into())))
            .await
            .unwrap()
            .status(),
        201
    );
    let reader = token(Claims::new(["a"], Duration::from_secs(60)));
    expect_error(
        bounded("p", post("/by-token/a", Some(reader)))
            .await
            .unwrap(),
        403,
        "forbidden",
    )
    .await;
    let publisher = token(Claims::new(["a"], Duration::from_secs(60)).publisher());
    assert_eq!(
        bounded("p", post("/by-token/a", Some(publisher)))
            .await
            .unwrap()
            .status(),
        201
    );
}

/// `DELETE` deletes history as well as closing: its authorizer is shown
/// that order (`Control::Clear`), not the `Close` that keeps history.
async fn an_authorizer_sees_a_delete_as_the_clearing_it_is(adapter: Adapter) {
    let (hub, server) = start(adapter).await;
    hub.publish("kept", "history").await.unwrap();
    assert_eq!(
        order(&server, reqwest::Method::DELETE, "/no-clearing/kept").await,
        403
    );
    let answer = poll(
        client()
            .get(server.url("/s?channel=kept&since=oldest&transport=poll"))
            .header("x-session", "ann"),
    )
    .await;
    assert_eq!(answer.items(), ["kept:history"], "nothing cleared");
    assert_eq!(
        order(
            &server,
            reqwest::Method::POST,
            "/no-clearing/disconnect?user=ann"
        )
        .await,
        204
    );
}

each_adapter!(
    an_authorizer_sees_a_delete_as_the_clearing_it_is,
    tokens_are_checked_and_grant_what_they_say,
    a_stream_ends_at_its_tokens_expiry_and_resumes_with_a_new_one,
    a_held_poll_is_answered_at_its_tokens_expiry,
    orders_reach_live_subscriptions,
    publishers_need_a_key_or_a_publisher_token,
);
