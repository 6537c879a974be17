//! `flood`: publishers flat out, to one channel or to many.

use super::{
    common::{peak, publish_for, publish_url, resumers, rss, sub, tally, Following, Sampler},
    Result,
};
use crate::{args::Options, Clock};
use serde_json::{json, Value};
use std::{
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

/// `--publishers` flat out for `--duration` to `--channels` channels while
/// `--subscribers` resuming subscribers follow the first of them: the
/// server's memory and channels at their peak, the publishes' answers, and
/// whether every subscriber got every message or a gap owning up to it.
pub(super) async fn flood(options: &Options) -> Result<Value> {
    let clock = Clock::new();
    let channels = options.extra.channels;
    let template = sub(options)?;
    let sampler = Sampler::start(options)?;
    let rss_start = rss(options.pid);
    let progress = Arc::new(AtomicU64::new(0));
    let subs = resumers(options, options.subscribers, clock, progress.clone()).await?;
    let following = Following::start(subs, Duration::from_secs(3600), clock);
    let published =
        publish_for(options, &publish_url(options)?, clock, 0, options.duration).await?;
    // Each subscriber drains what it got; a subscriber that fell behind
    // history gets a gap, which the tally counts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owed = published.owed(options.subscribers, channels);
    let (finished, failures) = following.settle(&progress, owed, options.drain).await?;
    let rows = sampler.finish().await;
    let mut delivery = tally(&finished, &published, channels, &template);
    // A subscriber behind history gets a gap when it reads on: what it
    // neither got nor was told of is the loss that matters.
    delivery["session_failures"] = json!(failures);
    Ok(json!({
        "scenario": "flood",
        "channels": channels,
        "publishers": options.publishers,
        "seconds": published.secs,
        "published": published.count,
        "publishes_per_s": published.count as f64 / published.secs,
        "publish_statuses": published.statuses_json(),
        "rss_start": rss_start,
        "rss_peak": peak(&rows, "rss"),
        "channels_peak": peak(&rows, "channels"),
        "subscribers": options.subscribers,
        "delivery": delivery,
    }))
}
