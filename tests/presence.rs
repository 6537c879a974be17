//! Presence over HTTP, on one node: who is on a channel, joins and leaves
//! in-band over every transport, several connections of one user, the
//! long-poll chain as one presence, hooks, and the channel-info route.
//! (Across nodes on Redis: `comet-redis/tests/presence.rs` and
//! `tests/redis_nodes.rs`.)

use comet_push::{
    protocol::{ProtocolError, PublishRoute, SubscribeRoute},
    Hub, HubEvent, Identity,
};
use comet_test_support::*;
use http::request::Parts;
use serde_json::Value;
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

const GRACE: Duration = Duration::from_millis(300);

/// The user a request names with `user=` (test only: an app takes it from
/// a session or a token), with its `name=` as info.
fn identify(request: &Parts) -> Result<Option<Identity>, ProtocolError> {
    let query = request.uri.query().unwrap_or("");
    let param = |key: &str| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let Some(user) = param("user") else {
        return Ok(None);
    };
    let mut identity =
        Identity::new(user).map_err(|e| ProtocolError::bad_request(e.to_string()))?;
    if let Some(name) = param("name") {
        identity = identity
            .with_info(serde_json::json!({ "name": name }))
            .map_err(|e| ProtocolError::bad_request(e.to_string()))?;
    }
    Ok(Some(identity))
}

fn hub_with_events(events: Arc<Mutex<Vec<String>>>) -> Hub {
    Hub::builder()
        .presence_for(|name| name.as_str().starts_with("room"))
        .on_event(move |event| {
            let line = match event {
                HubEvent::Occupied { channel } => format!("occupied:{channel}"),
                HubEvent::Vacated { channel } => format!("vacated:{channel}"),
                HubEvent::Joined { channel, identity } => {
                    format!("joined:{channel}:{}", identity.user())
                }
                HubEvent::Left { channel, identity } => {
                    format!("left:{channel}:{}", identity.user())
                }
                _ => return,
            };
            events.lock().unwrap().push(line);
        })
        .build()
}

async fn start(adapter: Adapter) -> (Hub, TestServer, Arc<Mutex<Vec<String>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let hub = hub_with_events(events.clone());
    let route = SubscribeRoute::all()
        .identify(identify)
        .presence_grace(GRACE)
        .max_hold(Duration::from_secs(3))
        .heartbeat(Duration::from_secs(30));
    let publish = PublishRoute::new().authorize(|request, _| {
        request
            .headers
            .get("authorization")
            .is_some_and(|v| v == "Bearer ok")
    });
    let server = TestServer::start(
        adapter,
        &hub,
        vec![
            Mount::Subscribe("/c", route),
            Mount::Publish("/publish", publish),
        ],
    )
    .await;
    (hub, server, events)
}

async fn get(server: &TestServer, path: &str) -> reqwest::Response {
    bounded("request", client().get(server.url(path)).send())
        .await
        .unwrap()
}

/// A subscriber's stream of presence items, whatever its transport, each
/// as [`describe`] writes it ("room:join:bob", "room:presence:a,b").
enum Watcher {
    Sse(SseReader),
    /// ndjson, or the forever frame (`true`): there every item must be a
    /// script call, never bare text in the HTML.
    Lines(LineReader, bool),
}

impl Watcher {
    async fn open(server: &TestServer, transport: &str, user: &str, channel: &str) -> Self {
        let callback = if transport == "iframe" {
            "&callback=__comet_cb.w"
        } else {
            ""
        };
        let path =
            format!("/c?transport={transport}&channel={channel}&user={user}&presence=1{callback}");
        let response = get(server, &path).await;
        assert_eq!(response.status(), 200, "{path}");
        match transport {
            "sse" => {
                let mut reader = SseReader::new(response);
                reader.opened().await;
                Watcher::Sse(reader)
            }
            _ => Watcher::Lines(LineReader::new(response), transport == "iframe"),
        }
    }

    /// The next presence item (messages and heartbeats are skipped).
    async fn next(&mut self) -> String {
        loop {
            let envelope = match self {
                Watcher::Sse(reader) => {
                    let event = reader.next_event().await;
                    match event.event.as_deref() {
                        Some("comet-join" | "comet-leave" | "comet-presence") => {}
                        _ => continue,
                    }
                    assert_eq!(event.id, None, "presence events take no id: {event:?}");
                    let mut value: Value = serde_json::from_str(&event.data).unwrap();
                    let kind = event.event.unwrap().trim_start_matches("comet-").to_owned();
                    value["type"] = Value::String(kind);
                    value
                }
                Watcher::Lines(reader, frame) => {
                    let line = reader.line().await.expect("stream ended");
                    let json = match line.strip_prefix("<script>parent.__comet_cb.w(") {
                        Some(call) => call.strip_suffix(");</script>").unwrap().to_owned(),
                        None if !*frame => line,
                        None if line.starts_with('{') => {
                            panic!("bare JSON in the frame's HTML: {line}")
                        }
                        None => continue, // the frame's preamble and padding
                    };
                    serde_json::from_str(&json).unwrap()
                }
            };
            match envelope["type"].as_str().unwrap() {
                "join" | "leave" | "presence" => return describe(&envelope),
                _ => continue,
            }
        }
    }

    /// Reads until `wanted` comes, failing on a join or leave of `user` that
    /// is not it: presence lists and the watcher's own events may come first.
    async fn until(&mut self, wanted: &str) {
        let user = wanted.rsplit(':').next().unwrap();
        bounded(wanted, async {
            loop {
                let item = self.next().await;
                if item == wanted {
                    return;
                }
                let about_user =
                    item.ends_with(&format!(":{user}")) && !item.contains(":presence:");
                assert!(!about_user, "{item} before {wanted}");
            }
        })
        .await
    }
}

async fn streams_hear_joins_and_leaves(adapter: Adapter) {
    let (_hub, server, _) = start(adapter).await;
    for transport in ["sse", "stream", "iframe"] {
        let channel = format!("room-{transport}");
        let mut watcher = Watcher::open(&server, transport, "watcher", &channel).await;
        // Who is there as it starts: the watcher alone.
        assert_eq!(watcher.next().await, format!("{channel}:presence:watcher"));
        let bob = get(&server, &format!("/c?channel={channel}&user=bob")).await;
        watcher.until(&format!("{channel}:join:bob")).await;
        drop(bob);
        watcher.until(&format!("{channel}:leave:bob")).await;
    }
}

async fn long_polls_carry_presence_lists_and_the_events_of_their_hold(adapter: Adapter) {
    let (hub, server, _) = start(adapter).await;
    for transport in ["poll", "jsonp"] {
        let channel = format!("room-{transport}");
        let ask = |cursor: Option<&str>| {
            let cursor = cursor.map_or(String::new(), |c| format!("&cursor={c}"));
            let callback = if transport == "jsonp" {
                "&callback=__comet_cb.w"
            } else {
                ""
            };
            format!("/c?transport={transport}&channel={channel}&user=watcher&presence=1{callback}{cursor}")
        };
        let answer = |text: String| -> Value {
            let json = match text.strip_prefix("/**/__comet_cb.w(") {
                Some(call) => call.strip_suffix(");").unwrap().to_owned(),
                None => text,
            };
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
        };
        let items = |body: &Value| -> Vec<String> {
            body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(describe)
                .collect()
        };
        // A bootstrap poll answers at once, with who is there.
        let first = answer(get_text(server.url(&format!("{}&timeout=0", ask(None)))).await);
        assert_eq!(items(&first), [format!("{channel}:presence:watcher")]);
        let cursor = first["cursor"].as_str().unwrap().to_owned();
        // A list alone does not end a hold: a join does.
        let held = tokio::spawn(get_text(server.url(&ask(Some(&cursor)))));
        eventually("poll held", || hub.local_subscriber_count(&channel) == 1).await;
        let bob = get(
            &server,
            &format!("/c?channel={channel}&user=bob&transport=sse"),
        )
        .await;
        let body = answer(bounded("held poll", held).await.unwrap());
        let got = items(&body);
        assert_eq!(got[0], format!("{channel}:presence:watcher"), "{got:?}");
        assert!(got.contains(&format!("{channel}:join:bob")), "{got:?}");
        assert_eq!(body["cursor"], cursor.as_str(), "presence takes no offset");
        drop(bob);
    }
}

async fn a_user_with_several_connections_is_one_presence(adapter: Adapter) {
    let (hub, server, events) = start(adapter).await;
    let mut watcher = Watcher::open(&server, "sse", "watcher", "room").await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(get(&server, "/c?channel=room&user=alice&name=Alice").await);
    }
    watcher.until("room:join:alice").await;
    eventually("three connections", || {
        hub.local_subscriber_count("room") == 4
    })
    .await;
    let alice = bounded("presence", hub.presence("room")).await.unwrap();
    let member = alice
        .members
        .iter()
        .find(|m| m.identity.user() == "alice")
        .unwrap();
    assert_eq!(member.connections, 3);
    assert_eq!(member.identity.info(), Some(r#"{"name":"Alice"}"#));
    assert_eq!((alice.users, alice.connections), (2, 4));
    // Two tabs close, and more than a grace window passes: still there.
    tabs.truncate(1);
    eventually("two closed", || hub.local_subscriber_count("room") == 2).await;
    tokio::time::sleep(GRACE * 3).await;
    let joined_once = |events: &[String]| {
        events.iter().filter(|e| *e == "joined:room:alice").count() == 1
            && !events.iter().any(|e| e == "left:room:alice")
    };
    assert!(joined_once(&events.lock().unwrap()), "{events:?}");
    // The last one closes: one leave, after the grace window.
    tabs.clear();
    watcher.until("room:leave:alice").await;
    eventually("the hook heard the leave", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e == "left:room:alice")
    })
    .await;
}

async fn a_chain_of_long_polls_is_one_presence(adapter: Adapter) {
    let (hub, server, events) = start(adapter).await;
    let mut cursor = String::new();
    // Six polls, each answered at once by a publish, back to back.
    for i in 0..6 {
        let path = format!("/c?transport=poll&channel=room&user=carol{cursor}");
        let held = tokio::spawn(poll(client().get(server.url(&path))));
        eventually("held", || hub.local_subscriber_count("room") == 1).await;
        hub.publish("room", format!("m{i}")).await.unwrap();
        let answer = bounded("poll", held).await.unwrap();
        cursor = format!("&cursor={}", answer.cursor());
    }
    // Well past a grace window since the first poll, within one since the
    // last: one join, no leave, the room never vacated.
    let seen = events.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|e| *e == "joined:room:carol").count(),
        1,
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| e.starts_with("left:") || e.starts_with("vacated:")),
        "{seen:?}"
    );
    eventually("carol left after her grace window", || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e == "left:room:carol")
    })
    .await;
    eventually("the room vacated", || {
        events.lock().unwrap().iter().any(|e| e == "vacated:room")
    })
    .await;
    let seen = events.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "occupied:room",
            "joined:room:carol",
            "left:room:carol",
            "vacated:room"
        ]
    );
}

async fn channel_info_answers_counts_cursor_and_who_is_there(adapter: Adapter) {
    let (hub, server, _) = start(adapter).await;
    let info = |channel: &str, key: Option<&str>| {
        let mut request = client().get(server.url(&format!("/publish/{channel}")));
        if let Some(key) = key {
            request = request.header("authorization", key);
        }
        request.send()
    };
    let _a = get(&server, "/c?channel=room&user=ann&name=Ann").await;
    let _b = get(&server, "/c?channel=room&user=ann&name=Ann").await;
    let _anonymous = get(&server, "/c?channel=room").await;
    let _other = get(&server, "/c?channel=lobby&user=ann").await;
    eventually("subscribed", || hub.local_subscriber_count("room") == 3).await;
    let cursor = hub.publish("room", "hi").await.unwrap();

    let response = bounded("info", info("room", Some("Bearer ok")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["channel"], "room");
    assert_eq!(body["cursor"], cursor.encode());
    assert_eq!(body["subscribers"], 3);
    assert_eq!(body["users"], 1);
    assert_eq!(body["connections"], 2);
    assert_eq!(
        body["presence"],
        serde_json::json!([{"user": "ann", "info": {"name": "Ann"}, "connections": 2}])
    );
    // A channel without presence: counts and cursor only.
    let body: Value = bounded("info", info("lobby", Some("Bearer ok")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["subscribers"], 1);
    assert!(
        body.get("presence").is_none() && body.get("users").is_none(),
        "{body}"
    );
    // Authorized as a publish is.
    let refused = bounded("info", info("room", None)).await.unwrap();
    expect_error(refused, 403, "forbidden").await;
    let bad = bounded("info", info("bad%20name", Some("Bearer ok")))
        .await
        .unwrap();
    expect_error(bad, 400, "bad_channel").await;
}

async fn presence_events_are_not_history_and_bad_parameters_are_refused(adapter: Adapter) {
    let (hub, server, _) = start(adapter).await;
    let mut watcher = Watcher::open(&server, "sse", "w", "room").await;
    let bob = get(&server, "/c?channel=room&user=bob").await;
    watcher.until("room:join:bob").await;
    drop(bob);
    watcher.until("room:leave:bob").await;
    hub.publish("room", "only this").await.unwrap();
    let everything =
        poll(client().get(server.url("/c?transport=poll&channel=room&since=oldest"))).await;
    assert_eq!(everything.items(), ["room:only this"]);
    for bad in ["presence=2", "presence=yes", "user="] {
        let response = get(&server, &format!("/c?channel=room&{bad}")).await;
        expect_error(response, 400, "bad_parameter").await;
    }
}

each_adapter!(
    streams_hear_joins_and_leaves,
    long_polls_carry_presence_lists_and_the_events_of_their_hold,
    a_user_with_several_connections_is_one_presence,
    a_chain_of_long_polls_is_one_presence,
    channel_info_answers_counts_cursor_and_who_is_there,
    presence_events_are_not_history_and_bad_parameters_are_refused,
);
