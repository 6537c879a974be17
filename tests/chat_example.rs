//! The README's first command: the chat example (and its warp twin), run as
//! the real binary on an ephemeral port, used the way its page uses it, then
//! stopped with Ctrl-C.
#![cfg(unix)]

use comet_test_support::*;
use std::process::Command;

#[tokio::test]
async fn the_axum_chat_demo_serves_its_page_relays_messages_and_stops_cleanly() {
    chat_demo("chat").await;
}

#[tokio::test]
async fn the_warp_chat_demo_serves_its_page_relays_messages_and_stops_cleanly() {
    chat_demo("warp_chat").await;
}

/// `--jwt-secret` (here `COMET_JWT_SECRET`): subscribing takes a token
/// alone, whose `sub` is the identity; `/token` mints one for the page,
/// which expires (`COMET_TOKEN_TTL_SECS`) with an end that says so.
#[tokio::test]
async fn the_chat_demo_with_a_jwt_secret_takes_tokens_alone() {
    let env = [
        ("COMET_JWT_SECRET", "the demo's secret of 32 bytes, or more"),
        ("COMET_TOKEN_TTL_SECS", "2"),
    ];
    let (mut chat, lines) = Running::start_with_env("chat", &["--addr", "127.0.0.1:0"], &env, 1);
    chat.base = lines[0]
        .strip_prefix("chat listening on ")
        .unwrap()
        .to_owned();
    let get = |path: &str| client().get(chat.url(path)).send();
    let html = get("/").await.unwrap().text().await.unwrap();
    assert!(html.contains(r#"<meta name="comet-tokens" content="on">"#));
    // No token, or one from elsewhere: 401, on every subscribe route.
    for path in [
        "/comet?channel=room/a",
        "/comet/sse?channel=room/a",
        "/comet/poll?channel=room/a",
    ] {
        expect_error(get(path).await.unwrap(), 401, "unauthorized").await;
    }
    let forged = comet_push::protocol::token::TokenSigner::hs256(&[7; 32])
        .unwrap()
        .kid("demo")
        .sign(&comet_push::protocol::token::Claims::new(
            ["room/a"],
            std::time::Duration::from_secs(60),
        ))
        .unwrap();
    let path = format!("/comet/sse?channel=room/a&token={forged}");
    expect_error(get(&path).await.unwrap(), 401, "unauthorized").await;
    // Minted for a chat name and rooms only.
    assert_eq!(
        get("/token?user=ann&channel=secret")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(get("/token?channel=room/a").await.unwrap().status(), 400);
    let token = get("/token?user=ann&channel=room/a").await.unwrap();
    assert_eq!(token.status(), 200);
    let token = token.text().await.unwrap();
    // It grants what it names, and nothing else.
    let path = format!("/comet/sse?channel=room/b&token={token}");
    expect_error(get(&path).await.unwrap(), 403, "forbidden").await;
    let path = format!("/comet/sse?channel=room/a&presence=1&token={token}");
    let mut events = SseReader::new(get(&path).await.unwrap());
    events.opened().await;
    // The token's subject is who is present.
    let info: serde_json::Value = get("/comet/publish/room/a")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        info["presence"],
        serde_json::json!([{ "user": "ann", "info": { "name": "ann" }, "connections": 1 }]),
        "{info}"
    );
    // Two seconds on, the stream ends for the token's expiry.
    let end = loop {
        let event = events.next_event().await;
        if event.event.as_deref() == Some("comet-end") {
            break event;
        }
    };
    let end: serde_json::Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(end["reason"], "expired", "{end}");
}

/// Without `--jwt-secret`, no token route: the page names itself.
#[tokio::test]
async fn the_chat_demo_without_a_jwt_secret_mints_no_tokens() {
    let (mut chat, lines) = Running::start("chat", &["--addr", "127.0.0.1:0"], 1);
    chat.base = lines[0]
        .strip_prefix("chat listening on ")
        .unwrap()
        .to_owned();
    let html = client()
        .get(chat.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"<meta name="comet-tokens" content="off">"#));
    let token = client()
        .get(chat.url("/token?user=ann&channel=room/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 404);
}

/// One scenario for both demos: they serve the same page and routes.
async fn chat_demo(example: &str) {
    let (mut chat, lines) = Running::start(example, &["--addr", "127.0.0.1:0"], 1);
    chat.base = lines[0]
        .strip_prefix("chat listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
        .to_owned();
    let get = |path: &str| client().get(chat.url(path)).send();
    let page = get("/").await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    // The page receives through the browser client, which the demo serves
    // beside the route it uses (the browser tests drive it for real).
    assert!(html.contains(r#"import { Comet } from "/comet/comet.js""#));
    let script = get("/comet/comet.js").await.unwrap();
    assert_eq!(script.status(), 200);
    assert_eq!(
        script.text().await.unwrap(),
        comet_push::protocol::CLIENT_SCRIPT
    );

    let response = get("/comet/sse?channel=room/lobby").await.unwrap();
    let mut events = SseReader::new(response);
    events.opened().await;

    let post =
        |path: &str, body: serde_json::Value| client().post(chat.url(path)).json(&body).send();
    let joined = post("/rooms/lobby/join", serde_json::json!({"name": "ann"}))
        .await
        .unwrap();
    assert_eq!(joined.status(), 201);
    let said = post(
        "/rooms/lobby/messages",
        serde_json::json!({"name": "ann", "text": "hi <b>all</b>"}),
    )
    .await
    .unwrap();
    assert_eq!(said.status(), 201);

    let event = events.next_event().await;
    assert_eq!(event.event.as_deref(), Some("joined"));
    let event = events.next_event().await;
    assert_eq!(event.event.as_deref(), Some("said"));
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        (data["name"].as_str(), data["text"].as_str()),
        (Some("ann"), Some("hi <b>all</b>"))
    );

    // The long-poll fallback sees the same room.
    let answer = poll(client().get(chat.url("/comet/poll?channel=room/lobby&since=oldest"))).await;
    assert_eq!(answer.body["messages"].as_array().unwrap().len(), 2);

    // Every reference route is mounted: publish over HTTP from loopback,
    // read it back through the stream, forever-frame and JSONP routes.
    let published = client()
        .post(chat.url("/comet/publish/room/lobby"))
        .header("content-type", "application/json")
        .body(r#"{"name":"bot","text":"via http"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 201);
    let event = events.next_event().await;
    assert!(event.data.contains("via http"), "{event:?}");
    for path in [
        "/comet/stream?channel=room/lobby&since=1",
        "/comet/iframe?channel=room/lobby&since=1&callback=cb",
    ] {
        let mut body = LineReader::new(get(path).await.unwrap());
        while !body.line().await.unwrap().contains("via http") {}
    }
    let jsonp = get("/comet/jsonp?channel=room/lobby&since=1&callback=cb")
        .await
        .unwrap();
    assert!(jsonp.text().await.unwrap().contains("via http"));

    // Presence: the demo knows a subscriber by its `user=` (the demo alone
    // may: anyone can claim any name), with its name as info; the room's
    // info, which whoever may publish may GET, lists it.
    let watcher = get("/comet/stream?channel=room/lobby&presence=1&user=ann+b%C3%A9")
        .await
        .unwrap();
    let mut watcher = LineReader::new(watcher);
    let member =
        serde_json::json!({ "user": "ann bé", "info": { "name": "ann bé" }, "connections": 1 });
    let list: serde_json::Value = serde_json::from_str(&watcher.line().await.unwrap()).unwrap();
    assert_eq!(list["type"], "presence", "{list}");
    assert_eq!(list["presence"], serde_json::json!([member]), "{list}");
    let info = get("/comet/publish/room/lobby").await.unwrap();
    assert_eq!(info.status(), 200);
    let info: serde_json::Value = info.json().await.unwrap();
    assert_eq!(info["users"], 1, "{info}");
    assert_eq!(info["presence"], serde_json::json!([member]), "{info}");
    drop(watcher);

    // Bad input is refused with a reason.
    let empty = post(
        "/rooms/lobby/messages",
        serde_json::json!({"name": "ann", "text": "  "}),
    )
    .await
    .unwrap();
    assert_eq!(empty.status(), 400);
    let bad_room = post(
        "/rooms/no%20spaces/join",
        serde_json::json!({"name": "ann"}),
    )
    .await
    .unwrap();
    assert_eq!(bad_room.status(), 400);

    // Ctrl-C: the open SSE stream ends cleanly and the process exits 0.
    let pid = chat.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    events.until_end().await;
    let status = bounded("chat exit", async {
        loop {
            if let Some(status) = chat.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(status.success(), "{status}");
}
