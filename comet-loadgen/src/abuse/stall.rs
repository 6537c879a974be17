//! `stall`: SSE subscribers that stop reading, beside ones that read on.

use super::{
    common::{
        peak, publish_as_told, publish_range, publish_url, raw_connect_with, raw_request, resumers,
        rss, sub, tally, Following, Sampler,
    },
    Result,
};
use crate::{args::Options, client::Target, Clock};
use serde_json::{json, Value};
use std::{
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::{io::AsyncReadExt, net::TcpStream};

/// A raw SSE subscriber: connects, reads the response head, then reads
/// nothing until told to, so that its receive window fills.
struct Stalled {
    stream: TcpStream,
    /// Bytes read past the response head.
    rest: Vec<u8>,
}

fn get_request(target: &Target, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{extra}\r\n",
        target.addr
    )
}

/// What a stalled subscriber found when it read again.
#[derive(Default)]
struct Reread {
    complete: u64,
    dropped: u64,
    stuck: u64,
    messages: u64,
    gaps: u64,
    gap_missed: u64,
    /// Subscribers whose gaps did not add up to what they missed.
    inexact_gaps: u64,
    /// Messages skipped with no gap before them.
    lost_silently: u64,
    duplicated: u64,
}

/// Reads a stalled subscriber's stream until it has message `last`, the
/// stream ends, or `idle` passes without a byte; then checks that the
/// messages it never got are exactly those its gaps said it missed
/// (counted as a set: publishers racing may store messages out of `seq`
/// order).
async fn reread(mut stalled: Stalled, last: u64, idle: Duration, into: &Mutex<Reread>) {
    let mut lines = crate::resume::Lines::default();
    lines.push(&stalled.rest);
    let mut event = crate::resume::SseEvent::default();
    let mut seen = vec![0u64; (last / 64 + 1) as usize];
    let mut r = Reread::default();
    let (mut unique, mut max_seen) = (0u64, None::<u64>);
    let mut chunk = vec![0u8; 64 * 1024];
    let outcome = loop {
        while let Some(line) = lines.next() {
            let Some(done) = event.line(&line) else {
                continue;
            };
            let data: Value = serde_json::from_str(&done.data).unwrap_or(Value::Null);
            if done.event.as_deref() == Some("comet-gap") {
                r.gaps += 1;
                r.gap_missed += data["missed"].as_u64().unwrap_or(0);
                continue;
            }
            let Some(seq) = data["seq"].as_u64().filter(|s| *s <= last) else {
                continue;
            };
            r.messages += 1;
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if seen[word] & bit != 0 {
                r.duplicated += 1;
            } else {
                seen[word] |= bit;
                unique += 1;
                max_seen = max_seen.max(Some(seq));
            }
        }
        // Everything is accounted for: received, or owned up to by a gap.
        if unique + r.gap_missed > last {
            break "complete";
        }
        match tokio::time::timeout(idle, stalled.stream.read(&mut chunk)).await {
            Err(_) => break "stuck",
            Ok(Ok(0) | Err(_)) => break "dropped",
            Ok(Ok(n)) => lines.push(&chunk[..n]),
        }
    };
    // Messages it should have had by now: all, or (dropped) those up to
    // the newest it got.
    let should = match outcome {
        "complete" => last + 1,
        _ => max_seen.map_or(0, |m| m + 1),
    };
    let missing = should.saturating_sub(unique);
    r.lost_silently = missing.saturating_sub(r.gap_missed);
    if outcome == "complete" && missing != r.gap_missed {
        r.inexact_gaps += 1;
    }
    match outcome {
        "complete" => r.complete += 1,
        "dropped" => r.dropped += 1,
        _ => r.stuck += 1,
    }
    let mut total = into.lock().unwrap();
    total.complete += r.complete;
    total.dropped += r.dropped;
    total.stuck += r.stuck;
    total.messages += r.messages;
    total.gaps += r.gaps;
    total.gap_missed += r.gap_missed;
    total.inexact_gaps += r.inexact_gaps;
    total.lost_silently += r.lost_silently;
    total.duplicated += r.duplicated;
}

/// `--stalled` SSE subscribers stop reading while `--subscribers` resuming
/// SSE subscribers read on, under `--rate` publishes of `--payload-bytes`
/// for `--duration` (or `--messages` of them, however long that takes);
/// the server's memory is sampled throughout. Then the
/// stalled ones read again: each must get every message, or a gap that
/// counts exactly what it skipped, or be disconnected (it would resume
/// with its cursor).
pub(super) async fn stall(options: &Options) -> Result<Value> {
    let clock = Clock::new();
    let template = sub(options)?;
    let target = template.target.clone();
    let rss_start = rss(options.pid);
    let sampler = Sampler::start(options)?;
    let connecting = Instant::now();
    let path = format!(
        "{}?channel={}&transport=sse",
        target.uri.path(),
        template.channel(0)?
    );
    let request = get_request(&target, &path, "");
    let mut stalled = Vec::with_capacity(options.extra.stalled);
    while stalled.len() < options.extra.stalled {
        let batch = (options.extra.stalled - stalled.len()).min(512);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let request = request.clone();
                let addr = target.addr;
                let rcvbuf = options.extra.stall_rcvbuf;
                tokio::spawn(async move {
                    let mut stream = raw_connect_with(addr, None, rcvbuf).await?;
                    let (status, rest) = raw_request(&mut stream, &request).await?;
                    if status != 200 {
                        return Err(format!("stalled subscriber answered {status}"));
                    }
                    Ok::<_, String>(Stalled { stream, rest })
                })
            })
            .collect();
        for task in tasks {
            stalled.push(task.await.map_err(|e| e.to_string())??);
        }
    }
    let rss_stalled = rss(options.pid);
    let progress = Arc::new(AtomicU64::new(0));
    let normal = resumers(options, options.subscribers, clock, progress.clone()).await?;
    let connect_secs = connecting.elapsed().as_secs_f64();
    // Latency after the first sixth of the run (10 s of 60), once the
    // stalled subscribers' buffers have filled.
    let warm = clock.now_ns() + (options.duration / 6).as_nanos() as u64;
    for r in &normal {
        r.received.latencies().steady_from(warm);
    }
    let following = Following::start(normal, Duration::from_secs(3600), clock);
    // `--messages`: that many, however long they take (history must move
    // past the stalled, whatever the machine's speed); else for `--duration`.
    let published = if options.messages > 0 {
        let template = publish_url(options)?;
        let forever = Duration::from_secs(24 * 3600);
        publish_range(
            options,
            &template,
            clock,
            options.rate,
            forever,
            0..options.messages,
        )
        .await?
    } else {
        publish_as_told(options, clock).await?
    };
    let owed = published.owed(options.subscribers, 1);
    let (normal, failures) = following.settle(&progress, owed, options.drain).await?;
    let rows = sampler.finish().await;
    let rss_peak = peak(&rows, "rss");
    // The stalled read again, a few hundred at a time.
    let rereading = Instant::now();
    let last = published.count.saturating_sub(1);
    let total = Arc::new(Mutex::new(Reread::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let mut readers = Vec::new();
    for one in stalled {
        let (total, gate) = (total.clone(), gate.clone());
        readers.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            reread(one, last, Duration::from_secs(20), &total).await;
        }));
    }
    for reader in readers {
        let _ = reader.await;
    }
    let r = std::mem::take(&mut *total.lock().unwrap());
    let per_stalled = match (rss_peak, rss_start) {
        (Some(peak), Some(start)) if options.extra.stalled > 0 => {
            Some(peak.saturating_sub(start) as f64 / options.extra.stalled as f64)
        }
        _ => None,
    };
    Ok(json!({
        "scenario": "stall",
        "stalled": options.extra.stalled,
        "stall_rcvbuf": options.extra.stall_rcvbuf,
        "subscribers": options.subscribers,
        "payload_bytes": options.extra.payload_bytes,
        "connect_secs": connect_secs,
        "published": published.count,
        "publish_statuses": published.statuses_json(),
        "publishes_per_s": published.count as f64 / published.secs,
        "normal": tally(&normal, &published, 1, &template),
        "session_failures": failures,
        "rss_start": rss_start,
        "rss_with_stalled_connected": rss_stalled,
        "rss_peak": rss_peak,
        "rss_peak_bytes_per_stalled": per_stalled,
        "tcp_kernel_peak": peak(&rows, "tcp_kernel"),
        "reread_secs": rereading.elapsed().as_secs_f64(),
        "stalled_reread": {
            "complete": r.complete, "dropped": r.dropped, "stuck": r.stuck,
            "messages": r.messages, "gaps": r.gaps, "gap_missed": r.gap_missed,
            "inexact_gaps": r.inexact_gaps, "lost_silently": r.lost_silently,
            "duplicated": r.duplicated,
        },
    }))
}
