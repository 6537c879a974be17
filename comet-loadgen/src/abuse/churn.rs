//! `churn`: subscribe-and-close cycles, SSE and long poll in turn.

use super::{
    common::{raw_connect, raw_request, rss, server_stats, stats_until, sub},
    Result,
};
use crate::{args::Options, client::Target};
use serde_json::{json, Value};
use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Reads one response with a `Content-Length` body after its head; its status.
async fn raw_exchange(stream: &mut TcpStream, request: &str) -> Result<u16> {
    let (status, mut body) = raw_request(stream, request).await?;
    // The head is gone; `Content-Length` was in it. Polls answer small
    // JSON: read until the stream has been quiet for a moment is not
    // needed, the answer ends with `}` (or `);` for JSONP).
    let mut chunk = [0u8; 4096];
    while !(body.ends_with(b"}") || body.ends_with(b");")) {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// One subscribe-and-close cycle, `k`th of the run: even ones open an SSE
/// stream, read its head and close; odd ones take a poll answered at once,
/// then leave a held poll and close.
async fn churn_cycle(
    target: &Target,
    route: &str,
    channel: &str,
    k: u64,
    sources: usize,
) -> Result<()> {
    let source = std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        127,
        0,
        0,
        1 + (k % sources as u64) as u8,
    ));
    let mut stream = raw_connect(target.addr, Some(source)).await?;
    let get = |query: &str| {
        format!(
            "GET {route}?channel={channel}&{query} HTTP/1.1\r\nHost: {}\r\n\r\n",
            target.addr
        )
    };
    if k % 2 == 0 {
        let (status, _) = raw_request(&mut stream, &get("transport=sse")).await?;
        if status != 200 {
            return Err(format!("SSE answered {status}"));
        }
    } else {
        let status = raw_exchange(&mut stream, &get("transport=poll&timeout=0")).await?;
        if status != 200 {
            return Err(format!("poll answered {status}"));
        }
        stream
            .write_all(get("transport=poll").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Runs cycles `range` with `--concurrency` at once; the failures.
async fn churn_cycles(options: &Options, range: std::ops::Range<u64>) -> Result<u64> {
    let template = sub(options)?;
    let route: Arc<str> = template.target.uri.path().into();
    let names: Arc<Vec<String>> = Arc::new(
        (0..options.extra.channels)
            .map(|c| template.channel(c))
            .collect::<Result<_>>()?,
    );
    let next = Arc::new(AtomicU64::new(range.start));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..options.extra.concurrency {
        let (next, failures, names, route) =
            (next.clone(), failures.clone(), names.clone(), route.clone());
        let target = template.target.clone();
        let sources = options.extra.sources;
        let end = range.end;
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= end {
                    return;
                }
                let channel = &names[(k / 2) as usize % names.len()];
                let cycle = churn_cycle(&target, &route, channel, k, sources);
                let failed = match tokio::time::timeout(Duration::from_secs(10), cycle).await {
                    Ok(Ok(())) => false,
                    Ok(Err(error)) => {
                        if failures.load(Ordering::Relaxed) < 3 {
                            eprintln!("cycle {k}: {error}");
                        }
                        true
                    }
                    Err(_) => true,
                };
                if failed {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())?;
    }
    Ok(failures.load(Ordering::Relaxed))
}

/// `--cycles` subscribe-and-close cycles over `--channels`, SSE and long
/// poll in turn, `--concurrency` at once: the server's memory, subscribers,
/// channels and file descriptors before (memory after a warm-up of 1%; file
/// descriptors in the cold process) and after.
pub(super) async fn churn(options: &Options) -> Result<Value> {
    let quiet = |s: &Value| s["subscribers"].as_u64() == Some(0);
    let cold = (rss(options.pid), server_stats(options).await);
    let cold_fds = cold.1.as_ref().and_then(|s| s["fds"].as_i64());
    let warm_cycles = (options.extra.cycles / 100).max(1);
    churn_cycles(options, 0..warm_cycles).await?;
    let warm_stats = stats_until(options, Duration::from_secs(10), quiet).await;
    let warm_rss = rss(options.pid);
    let started = Instant::now();
    let failures = churn_cycles(options, warm_cycles..options.extra.cycles).await?;
    let secs = started.elapsed().as_secs_f64();
    // Closed connections go a moment after their last subscriber: wait (up
    // to 20 s) until the descriptors are back to the cold count too, so
    // that only a leak is left in `fds_leaked`.
    let settled = |s: &Value| {
        quiet(s) && cold_fds.is_some_and(|cold| s["fds"].as_i64().is_some_and(|fds| fds <= cold))
    };
    let after = stats_until(options, Duration::from_secs(20), settled).await;
    let after_rss = rss(options.pid);
    // Idle channels go lazily, on the next subscribe or publish after the
    // TTL: probe once a second until only the probe's channel is left.
    let settle = Instant::now();
    let probe = sub(options)?;
    let probe_path = format!(
        "{}?channel=churn-probe&transport=poll&timeout=0",
        probe.target.uri.path()
    );
    let mut channels_left = after["channels"].as_u64();
    while settle.elapsed() < options.drain {
        if let Ok(mut stream) = raw_connect(probe.target.addr, None).await {
            let request = format!(
                "GET {probe_path} HTTP/1.1\r\nHost: {}\r\n\r\n",
                probe.target.addr
            );
            let _ = raw_exchange(&mut stream, &request).await;
        }
        channels_left = server_stats(options)
            .await
            .and_then(|s| s["channels"].as_u64());
        if channels_left.is_some_and(|c| c <= 1) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let growth = match (warm_rss, after_rss) {
        (Some(warm), Some(after)) if warm > 0 => Some((after as f64 / warm as f64 - 1.0) * 100.0),
        _ => None,
    };
    Ok(json!({
        "scenario": "churn",
        "cycles": options.extra.cycles,
        "concurrency": options.extra.concurrency,
        "failures": failures,
        "cycles_per_s": (options.extra.cycles - warm_cycles) as f64 / secs,
        "seconds": secs,
        "rss_cold": cold.0,
        "rss_after_warmup": warm_rss,
        "rss_after": after_rss,
        "rss_growth_pct": growth,
        "stats_cold": cold.1,
        "stats_after_warmup": warm_stats,
        "stats_after": after,
        // Against the cold process, once settled (above): a single sample
        // may catch a connection still closing, one fd either way.
        "fds_leaked": match (cold_fds, after["fds"].as_i64()) {
            (Some(cold), Some(after)) => Some(after - cold),
            _ => None,
        },
        "channels_after_idle_ttl": channels_left,
        "seconds_until_channels_gone": settle.elapsed().as_secs_f64(),
    }))
}
