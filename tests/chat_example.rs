//! The README's first command: the chat example, run as the real binary on an
//! ephemeral port, used the way its page uses it, then stopped with Ctrl-C.
#![cfg(unix)]

mod support;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};
use support::*;

/// `cargo test` builds the examples next to the test binaries.
fn example_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace`, which builds the examples",
        path.display()
    );
    path
}

struct Running {
    child: Child,
    base: String,
}

impl Running {
    fn start() -> Self {
        let mut child = Command::new(example_binary("chat"))
            .args(["--addr", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("chat listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_chat_demo_serves_its_page_relays_messages_and_stops_cleanly() {
    let mut chat = Running::start();
    let page = client().get(chat.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("EventSource") && html.contains("/comet/poll"));

    let response = client()
        .get(chat.url("/comet/sse?channel=room/lobby"))
        .send()
        .await
        .unwrap();
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
