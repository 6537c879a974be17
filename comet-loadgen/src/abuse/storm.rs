//! `storm`: every subscriber drops and comes back at once with its cursor.

use super::{
    common::{histogram, ms, netstat, publish_range, publish_url, resumers, sub, tally, Published},
    Result,
};
use crate::{args::Options, Clock};
use serde_json::{json, Value};
use std::{
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, Instant},
};

/// `--subscribers` resuming subscribers (SSE and long poll by `--wires`)
/// over `--channels` get one message each, all drop, `--messages` more
/// are published to every channel, and all come back within `--spread-ms`
/// with their cursors: how long until every one had exactly what it
/// missed, and the kernel's listen-queue overflows meanwhile.
pub(super) async fn storm(options: &Options) -> Result<Value> {
    let clock = Clock::new();
    let channels = options.extra.channels as u64;
    let template = sub(options)?;
    let publish = publish_url(options)?;
    let progress = Arc::new(AtomicU64::new(0));
    let n = options.subscribers;
    let mut all = resumers(options, n, clock, progress.clone()).await?;
    // Everyone follows until it has the first message of its channel.
    for r in &mut all {
        r.want = 1;
    }
    let tasks: Vec<_> = all
        .into_iter()
        .map(|mut r| {
            tokio::spawn(async move {
                let until = tokio::time::Instant::now() + Duration::from_secs(30);
                while !r.done() && tokio::time::Instant::now() < until {
                    let _ = r.session(until, &clock).await;
                }
                r
            })
        })
        .collect();
    let first = publish_range(
        options,
        &publish,
        clock,
        0,
        Duration::from_secs(30),
        0..channels,
    )
    .await?;
    let mut all = Vec::with_capacity(n);
    for task in tasks {
        all.push(task.await.map_err(|e| e.to_string())?);
    }
    let missing_first = all.iter().filter(|r| !r.done()).count();
    // All dropped (their connections closed with their tasks); publish
    // while they are away.
    let away = options.messages.max(1);
    let second = publish_range(
        options,
        &publish,
        clock,
        0,
        Duration::from_secs(60),
        channels..channels * (1 + away),
    )
    .await?;
    let overflows = || netstat("TcpExt", "ListenOverflows").unwrap_or(0);
    let drops = || netstat("TcpExt", "ListenDrops").unwrap_or(0);
    let (overflows_before, drops_before) = (overflows(), drops());
    for r in &mut all {
        r.want = 1 + away;
    }
    let spread = Duration::from_millis(options.extra.spread_ms);
    let storm_start = Instant::now();
    let tasks: Vec<_> = all
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let delay = spread.mul_f64(i as f64 / n.max(1) as f64);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let own = Instant::now();
                let until = tokio::time::Instant::now() + Duration::from_secs(20);
                while !r.done() && tokio::time::Instant::now() < until {
                    let _ = r.session(until, &clock).await;
                }
                (r, storm_start.elapsed(), own.elapsed())
            })
        })
        .collect();
    let (mut back, mut resume) = (histogram(), histogram());
    let mut finished = Vec::with_capacity(n);
    let mut not_back = 0;
    for task in tasks {
        let (r, at, took) = task.await.map_err(|e| e.to_string())?;
        if r.done() {
            back.saturating_record(at.as_micros().max(1) as u64);
            resume.saturating_record(took.as_micros().max(1) as u64);
        } else {
            not_back += 1;
        }
        finished.push(r);
    }
    let published = Published {
        count: second.count,
        refused: [first.refused, second.refused].concat(),
        statuses: second.statuses,
        secs: second.secs,
    };
    Ok(json!({
        "scenario": "storm",
        "subscribers": n,
        "channels": channels,
        "wires": options.extra.wires,
        "spread_ms": options.extra.spread_ms,
        "missed_first_message": missing_first,
        "published_while_away": second.count - channels,
        "not_back": not_back,
        "all_back_ms": back.max() as f64 / 1000.0,
        "back_ms": { "p50": ms(&back, 0.5), "p99": ms(&back, 0.99), "max": ms(&back, 1.0) },
        "resume_ms": { "p50": ms(&resume, 0.5), "p99": ms(&resume, 0.99), "max": ms(&resume, 1.0) },
        "listen_overflows": overflows() - overflows_before,
        "listen_drops": drops() - drops_before,
        "delivery": tally(&finished, &published, channels as usize, &template),
    }))
}
