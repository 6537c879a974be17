//! A load generator for comet deployments and other push servers.
//!
//! Opens N subscribers (SSE, ndjson stream or long poll) with a raw HTTP/1.1
//! client (one connection each) or, with `--http2`, as HTTP/2 streams spread
//! over `--connections` h2c connections, publishes stamped messages (`{"seq":N,"t":NANOS}`) through an HTTP
//! publish URL, and reports deliveries, loss, duplicates, latency from publish
//! to receipt, deliveries per second, the time until the last subscriber has
//! the last message, and for idle runs the server's memory per connection.
//! Targets are loopback only unless `--allow-remote`; every phase is bounded.
//!
//! ```sh
//! cargo run --release -p comet-loadgen -- fanout \
//!     --sub-url 'http://127.0.0.1:3000/comet/sse?channel=bench' \
//!     --pub-url 'http://127.0.0.1:3000/comet/publish/bench' --subscribers 10000
//! ```

#![warn(missing_docs)]

mod abuse;
mod args;
mod client;
mod http1;
mod resume;
mod stats;

use args::{Dialect, Options, Scenario, Transport};
use client::{Publisher, Target};
use stats::{Latencies, Received, Report};
use std::collections::BTreeMap;
use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::sync::{watch, Semaphore};

/// Nanoseconds since the run began, shared by publishers and subscribers (one
/// process, so one clock).
#[derive(Clone, Copy)]
pub struct Clock {
    start: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the clock started: what messages are stamped with.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// The most subscribers connecting at once (keeps the server's accept queue short).
const CONNECTING_AT_ONCE: usize = 512;
const CONNECT_BOUND: Duration = Duration::from_secs(120);

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("{error}\n\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    if options.scenario.is_abuse() {
        match runtime.block_on(abuse::run(&options)) {
            Ok(report) if options.json => println!("{report}"),
            Ok(report) => println!("{report:#}"),
            Err(error) => {
                eprintln!("comet-loadgen: {error}");
                std::process::exit(1);
            }
        }
        runtime.shutdown_background();
        return;
    }
    match runtime.block_on(run(&options)) {
        Ok(report) if options.json => println!("{}", report.json()),
        Ok(report) => print!("{}", report.human()),
        Err(error) => {
            eprintln!("comet-loadgen: {error}");
            std::process::exit(1);
        }
    }
    // Subscriber connections may still be closing; do not wait for them.
    runtime.shutdown_background();
}

async fn run(options: &Options) -> Result<Report, String> {
    let targets = |urls: &[String]| {
        urls.iter()
            .map(|url| Target::parse(url, options.allow_remote).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
    };
    let sub_targets = targets(&options.sub_urls)?;
    let pub_targets = targets(&options.pub_urls)?;
    let clock = Clock {
        start: Instant::now(),
    };
    let mut report = Report {
        scenario: format!("{:?}", options.scenario).to_lowercase(),
        transport: format!("{:?}", options.transport).to_lowercase(),
        subscribers: options.subscribers,
        http2: options.http2,
        connections: if options.http2 {
            options.connections
        } else {
            options.subscribers
        },
        ..Report::default()
    };
    let rss_before = options.pid.map(rss_bytes).transpose()?;

    // Subscribe.
    let expected_each = match options.scenario {
        Scenario::Fanout | Scenario::Follow => options.messages,
        _ => 0,
    };
    let progress = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(Semaphore::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    // Over HTTP/2, connection `j` goes to the `j % n`th URL; subscriber `i`
    // opens a stream on connection `i % connections`, to that URL.
    let shared = if options.http2 {
        http2_connections(&sub_targets, options.connections).await?
    } else {
        Vec::new()
    };
    let mut subscribers = Vec::with_capacity(options.subscribers);
    let latencies = Latencies::default();
    for i in 0..options.subscribers {
        while i - connected.available_permits().min(i) - failed.load(Ordering::Relaxed).min(i)
            >= CONNECTING_AT_ONCE
        {
            if started.elapsed() > CONNECT_BOUND {
                return Err("subscribers did not connect in time".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (target, via) = match shared.get(i % shared.len().max(1)) {
            Some((target, sender)) => (target.clone(), Some(sender.clone())),
            None => (sub_targets[i % sub_targets.len()].clone(), None),
        };
        let (connected, failed, progress) = (connected.clone(), failed.clone(), progress.clone());
        let latencies = latencies.clone();
        let mut stopped = stopped.clone();
        let (transport, dialect) = (options.transport, options.dialect);
        subscribers.push(tokio::spawn(async move {
            let mut received = Received::new(expected_each, latencies, progress);
            let outcome = tokio::select! {
                outcome = client::subscribe(target, via, transport, dialect, clock, connected, &mut received) => outcome,
                _ = stopped.wait_for(|stop| *stop) => Ok(()),
            };
            if let Err(error) = &outcome {
                if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("subscriber failed: {error}");
                }
            }
            received
        }));
    }
    let all_connected = async {
        while connected.available_permits() + failed.load(Ordering::Relaxed) < options.subscribers {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let progress_printer = spawn_progress(options.subscribers, connected.clone(), progress.clone());
    tokio::time::timeout(CONNECT_BOUND, all_connected)
        .await
        .map_err(|_| {
            format!(
                "only {} of {} subscribers connected in time",
                connected.available_permits(),
                options.subscribers
            )
        })?;
    report.connect_secs = started.elapsed().as_secs_f64();
    report.connected = connected.available_permits();
    report.failed = failed.load(Ordering::Relaxed);
    if options.transport == Transport::Poll && options.dialect == Dialect::Raw {
        // A raw long poll is held only once the server has read it.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    if options.scenario == Scenario::Idle {
        if let (Some(pid), Some(before)) = (options.pid, rss_before) {
            tokio::time::sleep(Duration::from_secs(1)).await; // let the server settle
            let after = rss_bytes(pid)?;
            report.rss_per_connection =
                Some(after.saturating_sub(before) as f64 / report.connected.max(1) as f64);
        }
    } else {
        if pub_targets.is_empty() {
            return Err("--pub-url is required".into());
        }
        let cpu_before = options.pid.map(thread_cpu_ns).transpose()?;
        let publishing = Instant::now();
        let (first, last, published) = publish(options, &pub_targets, clock).await?;
        // Until the last publish was answered.
        report.publish_secs = publishing.elapsed().as_secs_f64();
        report.published = published;
        report.expected = published * report.connected as u64;
        // Drain: wait for every delivery, bounded.
        let deadline = Instant::now() + options.drain;
        while progress.load(Ordering::Relaxed) < report.expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Only when every message reached every subscriber: otherwise the
        // drain's idle wait and the lost work are in it too.
        if let (Some(pid), Some(before)) = (options.pid, cpu_before) {
            let after = thread_cpu_ns(pid)?;
            let delivered = progress.load(Ordering::Relaxed) >= report.expected;
            match cpu_spent_ns(&before, &after) {
                Some(spent) if delivered => {
                    report.server_cpu_ms_per_message =
                        Some(spent as f64 / 1e6 / published.max(1) as f64)
                }
                Some(_) => {}
                None => eprintln!("a server thread ended during the run: no CPU figure"),
            }
        }
        let _ = stop.send(true);
        let mut last_delivery = 0;
        // Per message: (published at, the last subscriber had it at).
        let mut completed: Vec<(u64, u64)> = Vec::new();
        for subscriber in subscribers {
            let received = subscriber.await.map_err(|e| e.to_string())?;
            report.delivered += received.unique;
            report.duplicated += received.duplicates;
            last_delivery = last_delivery.max(received.last_at);
            if completed.len() < received.arrivals.len() {
                completed.resize(received.arrivals.len(), (0, 0));
            }
            for (all, one) in completed.iter_mut().zip(&received.arrivals) {
                *all = (one.0.max(all.0), one.1.max(all.1));
            }
        }
        report.latency = Some(latencies.all());
        report.delivery_span = last_delivery.saturating_sub(first) as f64 / 1e9;
        if report.lost() == 0 && report.delivered > 0 {
            report.last_ms = Some(last_delivery.saturating_sub(last) as f64 / 1e6);
            report.median_all_ms = stats::median_completion_ms(&completed);
        }
    }
    progress_printer.abort();
    Ok(report)
}

/// Publishes as the scenario says, taking turns over the publish URLs;
/// returns (first publish ns, last publish ns, count).
async fn publish(
    options: &Options,
    targets: &[Arc<Target>],
    clock: Clock,
) -> Result<(u64, u64, u64), String> {
    let next = Arc::new(AtomicU64::new(0));
    let first = clock.now_ns();
    let last = Arc::new(AtomicU64::new(first));
    let until = match options.scenario {
        Scenario::Throughput => Some(Instant::now() + options.duration),
        _ => None,
    };
    let limit = if until.is_some() {
        u64::MAX
    } else {
        options.messages
    };
    // At a rate, one task publishes through every URL in turn (message
    // `seq` through the `seq % n`th); as fast as possible, each of the
    // `--publishers` tasks keeps to one URL, the tasks spread over them.
    let interval = (options.rate > 0).then(|| Duration::from_secs_f64(1.0 / options.rate as f64));
    let routes: Vec<Vec<Arc<Target>>> = if interval.is_some() {
        vec![targets.to_vec()]
    } else {
        (0..options.publishers)
            .map(|task| vec![targets[task % targets.len()].clone()])
            .collect()
    };
    let mut tasks = Vec::new();
    let http2 = options.http2;
    for route in routes {
        let (next, last) = (next.clone(), last.clone());
        tasks.push(tokio::spawn(async move {
            let mut publishers = Vec::with_capacity(route.len());
            for target in route {
                publishers.push(Publisher::connect(target, http2).await?);
            }
            let turns = publishers.len() as u64;
            let mut ticks = interval.map(tokio::time::interval);
            loop {
                if until.is_some_and(|until| Instant::now() >= until) {
                    return Ok::<_, String>(());
                }
                if let Some(ticks) = &mut ticks {
                    ticks.tick().await;
                }
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= limit {
                    return Ok(());
                }
                // The publish time is when the message is stamped and sent,
                // not when the server answers (some answer after delivering).
                last.fetch_max(clock.now_ns(), Ordering::Relaxed);
                publishers[(seq % turns) as usize]
                    .publish(seq, &clock)
                    .await?;
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    // With a message limit, each publisher took one number past the end;
    // with a deadline, none did.
    let published = next.load(Ordering::Relaxed).min(limit);
    Ok((first, last.load(Ordering::Relaxed), published))
}

/// Opens `count` HTTP/2 connections, connection `j` to the `j % n`th
/// target, at most `CONNECTING_AT_ONCE` at a time, bounded in time.
async fn http2_connections(
    targets: &[Arc<Target>],
    count: usize,
) -> Result<Vec<(Arc<Target>, client::Http2Sender)>, String> {
    let started = Instant::now();
    let mut connections = Vec::with_capacity(count);
    while connections.len() < count {
        let batch: Vec<_> = (connections.len()..count.min(connections.len() + CONNECTING_AT_ONCE))
            .map(|j| {
                let target = targets[j % targets.len()].clone();
                tokio::spawn(async move {
                    let sender = client::connect_http2(&target).await?;
                    Ok::<_, String>((target, sender))
                })
            })
            .collect();
        for task in batch {
            let left = CONNECT_BOUND.saturating_sub(started.elapsed());
            let joined = tokio::time::timeout(left, task)
                .await
                .map_err(|_| "HTTP/2 connections did not open in time".to_owned())?;
            connections.push(joined.map_err(|e| e.to_string())??);
        }
    }
    Ok(connections)
}

/// Prints progress to stderr every two seconds on long runs.
fn spawn_progress(
    total: usize,
    connected: Arc<Semaphore>,
    progress: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(2));
        ticks.tick().await;
        loop {
            ticks.tick().await;
            eprintln!(
                "... {}/{total} subscribers connected, {} deliveries",
                connected.available_permits(),
                progress.load(Ordering::Relaxed)
            );
        }
    })
}

/// The CPU time each of a process's threads has had, in nanoseconds, by
/// thread id: the first field of `/proc/PID/task/TID/schedstat` (the
/// process's own `schedstat` counts its first thread alone).
fn thread_cpu_ns(pid: u32) -> Result<BTreeMap<u64, u64>, String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("process {pid}: {e}"))?;
    let mut threads = BTreeMap::new();
    for task in tasks {
        let task = task.map_err(|e| e.to_string())?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that ended meanwhile is left out (see `cpu_spent_ns`).
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let ns = stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .ok_or_else(|| format!("thread {tid} of process {pid}: no CPU time"))?;
        threads.insert(tid, ns);
    }
    Ok(threads)
}

/// The CPU time a process's threads spent between two readings; `None` when
/// a thread of the first is gone from the second, as its time since then
/// went with it (what is reported would be too low).
fn cpu_spent_ns(before: &BTreeMap<u64, u64>, after: &BTreeMap<u64, u64>) -> Option<u64> {
    if before.keys().any(|tid| !after.contains_key(tid)) {
        return None;
    }
    Some(
        after
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
            .sum(),
    )
}

/// The resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("process {pid}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS for process {pid}"))
}

#[cfg(test)]
mod tests {
    use super::cpu_spent_ns;
    use std::collections::BTreeMap;

    #[test]
    fn cpu_spent_counts_new_threads_and_gives_up_on_gone_ones() {
        let before = BTreeMap::from([(1, 100), (2, 50)]);
        // Thread 3 started meanwhile: all of its time is in the window.
        let after = BTreeMap::from([(1, 130), (2, 50), (3, 20)]);
        assert_eq!(cpu_spent_ns(&before, &after), Some(50));
        // Thread 2 ended: its time went with it, so no figure.
        let after = BTreeMap::from([(1, 130)]);
        assert_eq!(cpu_spent_ns(&before, &after), None);
    }
}
