//! The chat demo reports comet's metrics through the `metrics` facade and
//! serves them at `/metrics` for Prometheus: scraped here after real traffic.
#![cfg(unix)]

use comet_test_support::*;

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test]
async fn the_chat_demo_serves_subscribers_publishes_deliveries_gaps_and_errors_at_metrics() {
    let (mut chat, lines) = Running::start("chat", &["--addr", "127.0.0.1:0"], 1);
    chat.base = lines[0]
        .strip_prefix("chat listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
        .to_owned();

    // Two SSE subscribers held open, one published message each receives.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let response = bounded(
            "subscribe",
            client().get(chat.url("/comet/sse?channel=room/m")).send(),
        )
        .await
        .unwrap();
        let mut events = SseReader::new(response);
        events.opened().await;
        streams.push(events);
    }
    let said = client()
        .post(chat.url("/rooms/m/messages"))
        .json(&serde_json::json!({"name": "ann", "text": "counted"}))
        .send();
    assert_eq!(bounded("publish", said).await.unwrap().status(), 201);
    for events in &mut streams {
        assert_eq!(events.next_event().await.event.as_deref(), Some("said"));
    }
    // A cursor from another epoch: one gap with an unknown count.
    let foreign = comet_push::Hub::new()
        .current_cursor(["room/m"])
        .await
        .unwrap();
    let gap = client()
        .get(chat.url(&format!(
            "/comet/poll?channel=room/m&timeout=0&cursor={foreign}"
        )))
        .send();
    assert_eq!(bounded("gap", gap).await.unwrap().status(), 200);
    // Two refusals with a code.
    for _ in 0..2 {
        let bad = client()
            .get(chat.url("/comet/poll?channel=room/m&cursor=!!"))
            .send();
        assert_eq!(bounded("bad cursor", bad).await.unwrap().status(), 400);
    }

    let page = bounded("scrape", client().get(chat.url("/metrics")).send())
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let value = |name: &str| sample(&page, name).unwrap_or_else(|| panic!("no {name} in\n{page}"));
    assert_eq!(value("comet_subscribers{transport=\"sse\"}"), 2.0);
    assert_eq!(value("comet_subscribers{transport=\"poll\"}"), 0.0);
    assert_eq!(value("comet_publishes_total"), 1.0);
    assert!(value("comet_publish_duration_seconds_count") >= 1.0);
    assert_eq!(value("comet_gaps_total{cause=\"reset\"}"), 1.0);
    assert_eq!(value("comet_errors_total{code=\"bad_cursor\"}"), 2.0);
    assert!(page.contains("# HELP comet_publishes_total Messages published."));
    // Deliveries are added when a subscription has caught up (or ends).
    drop(streams);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let page = bounded("scrape", client().get(chat.url("/metrics")).send())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let delivered = sample(&page, "comet_deliveries_total").unwrap_or(0.0);
        let held = sample(&page, "comet_subscribers{transport=\"sse\"}").unwrap_or(-1.0);
        // 2 messages, 1 gap and its long poll's nothing else.
        if delivered >= 3.0 && held == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries {delivered}, sse subscribers {held}:\n{page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
