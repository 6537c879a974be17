//! `slowloris`: connections that dribble their request a byte a second.

use super::{
    common::{
        histogram, peak, publish_as_told, publish_url, raw_connect, resumers, sub, tally,
        Following, Sampler,
    },
    Result,
};
use crate::{args::Options, Clock};
use serde_json::{json, Value};
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `--slow` connections dribble a request a byte a second (headers, or
/// with `--slow-body` a publish body after complete headers) for
/// `--duration`, while `--subscribers` resuming subscribers take `--rate`
/// publishes: when the server closed the dribblers, and the subscribers'
/// latency.
pub(super) async fn slowloris(options: &Options) -> Result<Value> {
    let clock = Clock::new();
    let template = sub(options)?;
    let target = template.target.clone();
    let sampler = Sampler::start(options)?;
    let progress = Arc::new(AtomicU64::new(0));
    let normal = resumers(options, options.subscribers, clock, progress.clone()).await?;
    let following = Following::start(normal, Duration::from_secs(3600), clock);
    // The dribblers: each sends its request a byte a second.
    let start = Instant::now();
    let until = start + options.duration;
    let request = if options.extra.slow_body {
        let publish = publish_url(options)?;
        format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n",
            publish.path(0),
            target.addr
        )
    } else {
        format!(
            "GET {}?channel=slow&transport=sse HTTP/1.1\r\nHost: {}\r\nX-Slow: {}",
            target.uri.path(),
            target.addr,
            "s".repeat(1000)
        )
    };
    let closed_after = Arc::new(Mutex::new(histogram()));
    let refused = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let mut dribblers = Vec::new();
    for i in 0..options.extra.slow {
        let (closed_after, refused, answered) =
            (closed_after.clone(), refused.clone(), answered.clone());
        let request = request.clone();
        let body_mode = options.extra.slow_body;
        let addr = target.addr;
        dribblers.push(tokio::spawn(async move {
            let source = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, 1 + (i % 200) as u8));
            let Ok(mut stream) = raw_connect(addr, Some(source)).await else {
                refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let opened = Instant::now();
            // Publish bodies: the headers at once, then the body slowly.
            let (head, slow) = if body_mode {
                (request.as_bytes(), &b"x".repeat(1000)[..])
            } else {
                (&b""[..], request.as_bytes())
            };
            if stream.write_all(head).await.is_err() {
                return;
            }
            let slow = slow.to_vec();
            let mut buf = [0u8; 1024];
            let mut sent = 0;
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => {
                        match read {
                            Ok(0) | Err(_) => {
                                let _ = closed_after.lock().unwrap().record(opened.elapsed().as_millis().max(1) as u64 * 1000);
                                return;
                            }
                            Ok(_) => { answered.fetch_add(1, Ordering::Relaxed); }
                        }
                    }
                    _ = ticks.tick() => {
                        if Instant::now() >= until {
                            return;
                        }
                        if sent < slow.len() {
                            if stream.write_all(&slow[sent..sent + 1]).await.is_err() {
                                let _ = closed_after.lock().unwrap().record(opened.elapsed().as_millis().max(1) as u64 * 1000);
                                return;
                            }
                            sent += 1;
                        }
                    }
                }
            }
        }));
    }
    let published = publish_as_told(options, clock).await?;
    let owed = published.owed(options.subscribers, options.extra.channels);
    let (normal, failures) = following.settle(&progress, owed, options.drain).await?;
    for dribbler in dribblers {
        let _ = dribbler.await;
    }
    let rows = sampler.finish().await;
    let closed = closed_after.lock().unwrap().clone();
    Ok(json!({
        "scenario": if options.extra.slow_body { "slowloris-body" } else { "slowloris-headers" },
        "slow": options.extra.slow,
        "subscribers": options.subscribers,
        "seconds": options.duration.as_secs(),
        "slow_not_connected": refused.load(Ordering::Relaxed),
        "slow_closed_by_server": closed.len(),
        "slow_answered": answered.load(Ordering::Relaxed),
        "slow_closed_after_s": {
            "min": closed.min() as f64 / 1e6, "p50": closed.value_at_quantile(0.5) as f64 / 1e6,
            "max": closed.max() as f64 / 1e6,
        },
        "published": published.count,
        "publish_statuses": published.statuses_json(),
        "normal": tally(&normal, &published, options.extra.channels, &template),
        "session_failures": failures,
        "rss_peak": peak(&rows, "rss"),
        "fds_peak": peak(&rows, "fds"),
    }))
}
