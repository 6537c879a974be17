//! `soak`: long mixed traffic, memory sampled throughout.

use super::{
    common::{publish_as_told, resumers, sub, tally, Following, Sampler},
    Result,
};
use crate::{args::Options, Clock};
use serde_json::{json, Value};
use std::{
    sync::{atomic::AtomicU64, Arc},
    time::{Duration, Instant},
};

/// Mixed traffic for `--duration`: every transport, sessions of about
/// `--reconnect-secs`, publishes at `--rate` over `--channels`; memory
/// sampled every `--sample-secs`.
pub(super) async fn soak(options: &Options) -> Result<Value> {
    let clock = Clock::new();
    let channels = options.extra.channels;
    let progress = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let subscribers = resumers(options, options.subscribers, clock, progress.clone()).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let sampler = Sampler::start(options)?;
    let session = Duration::from_secs(options.extra.reconnect_secs);
    let following = Following::start(subscribers, session, clock);
    let published = publish_as_told(options, clock).await?;
    // Everyone has everything, or the drain bound passes.
    let template = sub(options)?;
    let owed = published.owed(options.subscribers, channels);
    let (finished, failures) = following.settle(&progress, owed, options.drain).await?;
    let rows = sampler.finish().await;
    // Warm-up: the first fifth of the run, at most five minutes.
    let warm = (options.duration.as_secs() / 5).min(300) as f64;
    let after: Vec<u64> = rows
        .iter()
        .filter(|r| r["seconds"].as_f64().unwrap_or(0.0) >= warm)
        .filter_map(|r| r["rss"].as_u64())
        .collect();
    let growth = match (after.first(), after.iter().max()) {
        (Some(first), Some(max)) if *first > 0 => Some((*max as f64 / *first as f64 - 1.0) * 100.0),
        _ => None,
    };
    Ok(json!({
        "scenario": "soak",
        "subscribers": options.subscribers,
        "channels": channels,
        "wires": options.extra.wires,
        "seconds": options.duration.as_secs(),
        "connect_secs": connect_secs,
        "published": published.count,
        "publish_statuses": published.statuses_json(),
        "session_failures": failures,
        "delivery": tally(&finished, &published, channels, &template),
        "rss_first": rows.first().and_then(|r| r["rss"].as_u64()),
        "rss_after_warmup": after.first(),
        "rss_max_after_warmup": after.iter().max(),
        "rss_last": rows.last().and_then(|r| r["rss"].as_u64()),
        "rss_growth_after_warmup_pct": growth,
        "samples": rows.len(),
    }))
}
