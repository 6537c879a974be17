//! Load and abuse: slow consumers (`stall`), subscribe-and-close `churn`,
//! `slowloris` clients, reconnect `storm`s, publish `flood`s and a long
//! `soak`. Each reports one JSON object of figures; `bench/abuse.sh` runs
//! them against the chat demo and `tests/` holds a small version of each.

use crate::{
    args::Options,
    client::{Publisher, Sender, Target},
    resume::{Resumer, Wire},
    stats::Received,
    Clock,
};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};
use std::{
    io::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::watch,
};

type Result<T> = std::result::Result<T, String>;

pub async fn run(options: &Options) -> Result<Value> {
    use crate::args::Scenario::*;
    match options.scenario {
        Stall => stall(options).await,
        Churn => churn(options).await,
        Slowloris => slowloris(options).await,
        Storm => storm(options).await,
        Flood => flood(options).await,
        Soak => soak(options).await,
        _ => Err("not an abuse scenario".into()),
    }
}

// ---- shared ------------------------------------------------------------------

/// A URL whose `{c}` names a channel number.
#[derive(Clone)]
struct Template {
    target: Arc<Target>,
    url: String,
}

impl Template {
    fn new(url: &str, allow_remote: bool) -> Result<Self> {
        let target = Target::parse(&url.replace("{c}", "0"), allow_remote)?;
        Ok(Self {
            target: Arc::new(target),
            url: url.to_owned(),
        })
    }

    /// The target for channel `c`.
    fn at(&self, c: usize, allow_remote: bool) -> Result<Arc<Target>> {
        if !self.url.contains("{c}") {
            return Ok(self.target.clone());
        }
        Target::parse(&self.url.replace("{c}", &c.to_string()), allow_remote).map(Arc::new)
    }

    /// The path (and query) for channel `c`.
    fn path(&self, c: usize) -> String {
        let url = self.url.replace("{c}", &c.to_string());
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        rest.find('/')
            .map_or_else(|| "/".into(), |i| rest[i..].to_owned())
    }

    /// The channel a subscribe URL names (`channel=`), for channel `c`.
    fn channel(&self, c: usize) -> Result<String> {
        let url = self.url.replace("{c}", &c.to_string());
        url.split(['?', '&'])
            .find_map(|part| part.strip_prefix("channel="))
            .map(str::to_owned)
            .ok_or_else(|| format!("no channel= in {}", self.url))
    }
}

fn sub(options: &Options) -> Result<Template> {
    Template::new(&options.sub_urls[0], options.allow_remote)
}

fn publish_url(options: &Options) -> Result<Template> {
    let url = options.pub_urls.first().ok_or("--pub-url is required")?;
    Template::new(url, options.allow_remote)
}

/// The resident memory of a process in bytes.
fn rss(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The kernel's memory for TCP buffers, in bytes (`/proc/net/sockstat`).
fn tcp_kernel_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "mem" {
            return words.next()?.parse::<u64>().ok().map(|pages| pages * 4096);
        }
    }
    None
}

/// A counter of `/proc/net/netstat` (`TcpExt` `ListenOverflows`, say).
pub fn netstat(group: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if names.starts_with(&format!("{group}:")) {
            let index = names.split_whitespace().position(|n| n == name)?;
            return values.split_whitespace().nth(index)?.parse().ok();
        }
    }
    None
}

/// The demo's `/stats`: subscribers, channels, fds.
async fn server_stats(options: &Options) -> Option<Value> {
    let url = options.extra.stats_url.as_ref()?;
    let target = Target::parse(url, options.allow_remote).ok()?;
    let mut sender: Sender<Empty<Bytes>> = Sender::connect(&target, false).await.ok()?;
    let request = sender
        .request(&target, target.path())
        .body(Empty::new())
        .ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), sender.send(request))
        .await
        .ok()?
        .ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// Waits (bounded) until the server's `/stats` satisfies `done`; the last read.
async fn stats_until(options: &Options, bound: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + bound;
    loop {
        let stats = server_stats(options).await.unwrap_or(Value::Null);
        if done(&stats) || Instant::now() >= until {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Samples the server's memory (and `/stats`) every `--sample-secs`,
/// appending rows to `--csv`; stopped by dropping the handle's stop sender.
struct Sampler {
    rows: Arc<Mutex<Vec<Value>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(options: &Options) -> Result<Self> {
        let rows = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let mut csv = match &options.extra.csv {
            Some(path) => {
                let mut file = std::fs::File::create(path).map_err(|e| format!("{path}: {e}"))?;
                writeln!(
                    file,
                    "seconds,rss_bytes,tcp_kernel_bytes,subscribers,channels,fds,published"
                )
                .map_err(|e| e.to_string())?;
                Some(file)
            }
            None => None,
        };
        let options = options.clone();
        let every = Duration::from_secs(options.extra.sample_secs);
        let task_rows = rows.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => return,
                }
                let stats = server_stats(&options).await.unwrap_or(Value::Null);
                let row = json!({
                    "seconds": started.elapsed().as_secs_f64().round(),
                    "rss": rss(options.pid),
                    "tcp_kernel": tcp_kernel_bytes(),
                    "subscribers": stats["subscribers"],
                    "channels": stats["channels"],
                    "fds": stats["fds"],
                    "published": stats["published"],
                });
                if let Some(file) = &mut csv {
                    let cell = |v: &Value| {
                        if v.is_null() {
                            String::new()
                        } else {
                            v.to_string()
                        }
                    };
                    let _ = writeln!(
                        file,
                        "{},{},{},{},{},{},{}",
                        row["seconds"],
                        cell(&row["rss"]),
                        cell(&row["tcp_kernel"]),
                        cell(&row["subscribers"]),
                        cell(&row["channels"]),
                        cell(&row["fds"]),
                        cell(&row["published"])
                    );
                    let _ = file.flush();
                }
                task_rows.lock().unwrap().push(row);
            }
        });
        Ok(Self { rows, stop, task })
    }

    async fn finish(self) -> Vec<Value> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let rows = self.rows.lock().unwrap();
        rows.clone()
    }
}

fn peak(rows: &[Value], key: &str) -> Option<u64> {
    rows.iter().filter_map(|r| r[key].as_u64()).max()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn latency_json(h: &Histogram<u64>) -> Value {
    json!({ "p50_ms": ms(h, 0.5), "p99_ms": ms(h, 0.99), "max_ms": ms(h, 1.0) })
}

fn wires(options: &Options) -> Result<Vec<Wire>> {
    options.extra.wires.iter().map(|w| Wire::parse(w)).collect()
}

/// A cheap per-task pseudo-random sequence (xorshift).
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Publishes at `rate` per second (0: flat out with `publishers` tasks) for
/// `duration`, message `seq` to channel `seq % channels`; returns the
/// number of publishes and their answers by status.
struct Published {
    count: u64,
    /// Sequence numbers the server refused (not stored).
    refused: Vec<u64>,
    statuses: std::collections::BTreeMap<u16, u64>,
    secs: f64,
}

async fn publish_for(
    options: &Options,
    template: &Template,
    clock: Clock,
    rate: u64,
    duration: Duration,
) -> Result<Published> {
    let next = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let tasks = options.publishers.max(1);
    let channels = options.extra.channels as u64;
    let started = Instant::now();
    let until = started + duration;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (next, refused, statuses) = (next.clone(), refused.clone(), statuses.clone());
        let template = template.clone();
        let pad = options.extra.payload_bytes;
        let http2 = options.http2;
        handles.push(tokio::spawn(async move {
            let mut publisher = Publisher::connect(template.target.clone(), http2)
                .await?
                .pad_to(pad);
            // At a rate, the tasks share it: each ticks at rate / tasks.
            let mut ticks = (rate > 0).then(|| {
                let period = Duration::from_secs_f64(tasks as f64 / rate as f64);
                tokio::time::interval_at(
                    tokio::time::Instant::now() + period.mul_f64(task as f64 / tasks as f64),
                    period,
                )
            });
            while Instant::now() < until {
                if let Some(ticks) = &mut ticks {
                    ticks.tick().await;
                }
                let seq = next.fetch_add(1, Ordering::Relaxed);
                let path = template.path((seq % channels) as usize);
                let status = publisher.post(&path, seq, &clock).await?;
                *statuses.lock().unwrap().entry(status.as_u16()).or_insert(0) += 1;
                if !status.is_success() {
                    refused.lock().unwrap().push(seq);
                }
            }
            Ok::<_, String>(())
        }));
    }
    for handle in handles {
        handle.await.map_err(|e| e.to_string())??;
    }
    let refused = std::mem::take(&mut *refused.lock().unwrap());
    let statuses = std::mem::take(&mut *statuses.lock().unwrap());
    Ok(Published {
        count: next.load(Ordering::Relaxed),
        refused,
        statuses,
        secs: started.elapsed().as_secs_f64(),
    })
}

impl Published {
    /// Messages stored on channel `c` of `channels`.
    fn stored_on(&self, c: u64, channels: u64) -> u64 {
        let all = self.count / channels + u64::from(c < self.count % channels);
        all - self.refused.iter().filter(|s| *s % channels == c).count() as u64
    }

    fn statuses_json(&self) -> Value {
        self.statuses
            .iter()
            .map(|(status, n)| (status.to_string(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Resuming subscribers: subscriber `i` on channel `i % channels` over
/// `wires[i % wires.len()]`, each started (head cursor) before this returns.
async fn resumers(
    options: &Options,
    count: usize,
    clock: Clock,
    progress: Arc<AtomicU64>,
) -> Result<Vec<Resumer>> {
    let template = sub(options)?;
    let wires = wires(options)?;
    let mut started = Vec::with_capacity(count);
    let mut pending = Vec::new();
    for i in 0..count {
        let c = i % options.extra.channels;
        let mut resumer = Resumer::new(
            template.target.clone(),
            template.channel(c)?,
            wires[i % wires.len()],
            Received::new(0, progress.clone()),
        );
        pending.push(tokio::spawn(async move {
            resumer.start(&clock).await.map(|()| resumer)
        }));
        if pending.len() == 256 {
            for task in pending.drain(..) {
                started.push(task.await.map_err(|e| e.to_string())??);
            }
        }
    }
    for task in pending {
        started.push(task.await.map_err(|e| e.to_string())??);
    }
    Ok(started)
}

/// Runs each resumer's sessions (each about `session` long, jittered)
/// until `stop`; hands them back with the sessions that failed.
fn follow(
    resumers: Vec<Resumer>,
    session: Duration,
    clock: Clock,
    stop: &watch::Receiver<bool>,
    failures: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Resumer>> {
    resumers
        .into_iter()
        .enumerate()
        .map(|(i, mut resumer)| {
            let mut stop = stop.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let mut jitter = Jitter::new(i as u64 + 1);
                loop {
                    let length = session.mul_f64(0.5 + jitter.next());
                    let until = tokio::time::Instant::now() + length;
                    tokio::select! {
                        ended = resumer.session(until, &clock) => {
                            if ended.is_err() {
                                if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                                    eprintln!("session failed: {ended:?}");
                                }
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        () = stopped(&mut stop) => return resumer,
                    }
                }
            })
        })
        .collect()
}

/// Resolves once `stop` says true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Over resumers: what they should have had (`stored_on` their channel),
/// what they had, and the gaps that owned up to the rest.
fn tally(
    resumers: &[Resumer],
    published: &Published,
    channels: usize,
    template: &Template,
) -> Value {
    let mut latency = histogram();
    let (mut expected, mut delivered, mut duplicated, mut lost, mut extra) = (0, 0, 0, 0, 0);
    let (mut gaps, mut gap_missed, mut unknown_gaps, mut sessions) = (0, 0, 0, 0);
    let names: Vec<String> = (0..channels)
        .map(|c| template.channel(c).unwrap_or_default())
        .collect();
    for r in resumers {
        let c = r.channel_index(&names);
        let want = published.stored_on(c as u64, channels as u64);
        expected += want;
        delivered += r.received.unique;
        duplicated += r.received.duplicates;
        // What neither arrived nor was owned up to by a gap.
        lost += want.saturating_sub(r.received.unique + r.gap_missed);
        extra += r.received.unique.saturating_sub(want);
        gaps += r.gaps;
        gap_missed += r.gap_missed;
        unknown_gaps += r.unknown_gaps;
        sessions += r.sessions;
        let _ = latency.add(&r.received.latency);
    }
    json!({
        "expected": expected, "delivered": delivered, "lost_silently": lost,
        "duplicated": duplicated, "unexpected": extra, "gaps": gaps,
        "gap_missed": gap_missed, "unknown_gaps": unknown_gaps,
        "sessions": sessions, "latency": latency_json(&latency),
    })
}

impl Resumer {
    fn channel_index(&self, names: &[String]) -> usize {
        names.iter().position(|n| *n == self.channel()).unwrap_or(0)
    }
}

/// Waits (bounded) until `progress` reaches `target`.
async fn drain(progress: &AtomicU64, target: u64, bound: Duration) {
    let until = Instant::now() + bound;
    while progress.load(Ordering::Relaxed) < target && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- stall -----------------------------------------------------------------

/// A raw SSE subscriber: connects, reads the response head, then reads
/// nothing until told to, so that its receive window fills.
struct Stalled {
    stream: TcpStream,
    /// Bytes read past the response head.
    rest: Vec<u8>,
}

async fn raw_connect(addr: SocketAddr, source: Option<std::net::IpAddr>) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// Sends `request` and reads up to the end of the response head; the
/// status and the bytes after the head.
async fn raw_request(stream: &mut TcpStream, request: &str) -> Result<(u16, Vec<u8>)> {
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = std::str::from_utf8(&buf[..end])
                .ok()
                .and_then(|head| head.split(' ').nth(1))
                .and_then(|code| code.parse().ok())
                .ok_or("no status line")?;
            return Ok((status, buf[end + 4..].to_vec()));
        }
    }
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
/// for `--duration`; the server's memory is sampled throughout. Then the
/// stalled ones read again: each must get every message, or a gap that
/// counts exactly what it skipped, or be disconnected (it would resume
/// with its cursor).
async fn stall(options: &Options) -> Result<Value> {
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
                tokio::spawn(async move {
                    let mut stream = raw_connect(addr, None).await?;
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
    let (stop, stopped) = watch::channel(false);
    let failures = Arc::new(AtomicU64::new(0));
    let tasks = follow(
        normal,
        Duration::from_secs(3600),
        clock,
        &stopped,
        failures.clone(),
    );
    let published = publish_for(
        options,
        &publish_url(options)?,
        clock,
        options.rate,
        options.duration,
    )
    .await?;
    drain(
        &progress,
        published.stored_on(0, 1) * options.subscribers as u64,
        options.drain,
    )
    .await;
    let _ = stop.send(true);
    let mut normal = Vec::new();
    for task in tasks {
        normal.push(task.await.map_err(|e| e.to_string())?);
    }
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
            reread(one, last, Duration::from_secs(5), &total).await;
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
        "subscribers": options.subscribers,
        "payload_bytes": options.extra.payload_bytes,
        "connect_secs": connect_secs,
        "published": published.count,
        "publish_statuses": published.statuses_json(),
        "publishes_per_s": published.count as f64 / published.secs,
        "normal": tally(&normal, &published, 1, &template),
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

// ---- soak --------------------------------------------------------------------

/// Mixed traffic for `--duration`: every transport, sessions of about
/// `--reconnect-secs`, publishes at `--rate` over `--channels`; memory
/// sampled every `--sample-secs`.
async fn soak(options: &Options) -> Result<Value> {
    let clock = Clock::new();
    let channels = options.extra.channels;
    let progress = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let subscribers = resumers(options, options.subscribers, clock, progress.clone()).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let sampler = Sampler::start(options)?;
    let (stop, stopped) = watch::channel(false);
    let failures = Arc::new(AtomicU64::new(0));
    let session = Duration::from_secs(options.extra.reconnect_secs);
    let tasks = follow(subscribers, session, clock, &stopped, failures.clone());
    let published = publish_for(
        options,
        &publish_url(options)?,
        clock,
        options.rate,
        options.duration,
    )
    .await?;
    // Everyone has everything, or the drain bound passes.
    let template = sub(options)?;
    let want: u64 = (0..options.subscribers)
        .map(|i| published.stored_on((i % channels) as u64, channels as u64))
        .sum();
    drain(&progress, want, options.drain).await;
    let _ = stop.send(true);
    let mut finished = Vec::with_capacity(tasks.len());
    for task in tasks {
        finished.push(task.await.map_err(|e| e.to_string())?);
    }
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
        "session_failures": failures.load(Ordering::Relaxed),
        "delivery": tally(&finished, &published, channels, &template),
        "rss_first": rows.first().and_then(|r| r["rss"].as_u64()),
        "rss_after_warmup": after.first(),
        "rss_max_after_warmup": after.iter().max(),
        "rss_last": rows.last().and_then(|r| r["rss"].as_u64()),
        "rss_growth_after_warmup_pct": growth,
        "samples": rows.len(),
    }))
}

async fn churn(_: &Options) -> Result<Value> {
    Err("todo".into())
}
async fn slowloris(_: &Options) -> Result<Value> {
    Err("todo".into())
}
async fn storm(_: &Options) -> Result<Value> {
    Err("todo".into())
}
async fn flood(_: &Options) -> Result<Value> {
    Err("todo".into())
}
