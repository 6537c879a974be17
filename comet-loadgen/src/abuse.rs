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
        atomic::{AtomicU64, Ordering},
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
    publish_range(options, template, clock, rate, duration, 0..u64::MAX).await
}

/// Publishes through `--pub-url` at `--rate` for `--duration`.
async fn publish_as_told(options: &Options, clock: Clock) -> Result<Published> {
    let template = publish_url(options)?;
    publish_for(options, &template, clock, options.rate, options.duration).await
}

/// As [`publish_for`], numbering messages from `seqs.start` and stopping
/// before `seqs.end`.
async fn publish_range(
    options: &Options,
    template: &Template,
    clock: Clock,
    rate: u64,
    duration: Duration,
    seqs: std::ops::Range<u64>,
) -> Result<Published> {
    let next = Arc::new(AtomicU64::new(seqs.start));
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
                if seq >= seqs.end {
                    break;
                }
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
        count: next.load(Ordering::Relaxed).min(seqs.end),
        refused,
        statuses,
        secs: started.elapsed().as_secs_f64(),
    })
}

impl Published {
    /// Messages stored on channel `c` of `channels`.
    /// Messages owed to `subscribers` spread over `channels` (subscriber
    /// `i` follows channel `i % channels`).
    fn owed(&self, subscribers: usize, channels: usize) -> u64 {
        (0..subscribers)
            .map(|i| self.stored_on((i % channels) as u64, channels as u64))
            .sum()
    }

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

/// Resumers following their channels, each in sessions of about `session`
/// (jittered), until [`finish`](Self::finish).
struct Following {
    tasks: Vec<tokio::task::JoinHandle<Resumer>>,
    stop: watch::Sender<bool>,
    /// Sessions that failed (and were retried after 100 ms).
    failures: Arc<AtomicU64>,
}

impl Following {
    fn start(resumers: Vec<Resumer>, session: Duration, clock: Clock) -> Self {
        let (stop, receiver) = watch::channel(false);
        let failures = Arc::new(AtomicU64::new(0));
        let tasks = resumers
            .into_iter()
            .enumerate()
            .map(|(i, mut resumer)| {
                let mut stop = receiver.clone();
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
            .collect();
        Self {
            tasks,
            stop,
            failures,
        }
    }

    /// Stops every session; the resumers and the sessions that failed.
    /// Waits until `progress` reaches `owed` (or `bound` passes), then
    /// [`finish`](Self::finish)es.
    async fn settle(
        self,
        progress: &AtomicU64,
        owed: u64,
        bound: Duration,
    ) -> Result<(Vec<Resumer>, u64)> {
        drain(progress, owed, bound).await;
        self.finish().await
    }

    async fn finish(self) -> Result<(Vec<Resumer>, u64)> {
        let _ = self.stop.send(true);
        let mut resumers = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            resumers.push(task.await.map_err(|e| e.to_string())?);
        }
        Ok((resumers, self.failures.load(Ordering::Relaxed)))
    }
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
    let (mut latency, mut steady) = (histogram(), histogram());
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
        let _ = steady.add(&r.received.steady);
    }
    json!({
        "expected": expected, "delivered": delivered, "lost_silently": lost,
        "duplicated": duplicated, "unexpected": extra, "gaps": gaps,
        "gap_missed": gap_missed, "unknown_gaps": unknown_gaps,
        "sessions": sessions, "latency": latency_json(&latency),
        "latency_after_warmup": (!steady.is_empty()).then(|| latency_json(&steady)),
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
    raw_connect_with(addr, source, 0).await
}

/// [`raw_connect`] with a receive buffer of `rcvbuf` bytes (0: the kernel's).
async fn raw_connect_with(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    rcvbuf: u32,
) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if rcvbuf > 0 {
        socket
            .set_recv_buffer_size(rcvbuf)
            .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    }
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
    let mut normal = resumers(options, options.subscribers, clock, progress.clone()).await?;
    let connect_secs = connecting.elapsed().as_secs_f64();
    // Latency after the first sixth of the run (10 s of 60), once the
    // stalled subscribers' buffers have filled.
    let warm = clock.now_ns() + (options.duration / 6).as_nanos() as u64;
    for r in &mut normal {
        r.received.steady_from = warm;
    }
    let following = Following::start(normal, Duration::from_secs(3600), clock);
    let published = publish_as_told(options, clock).await?;
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

// ---- churn -----------------------------------------------------------------

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
async fn churn(options: &Options) -> Result<Value> {
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

// ---- slowloris -------------------------------------------------------------

/// `--slow` connections dribble a request a byte a second (headers, or
/// with `--slow-body` a publish body after complete headers) for
/// `--duration`, while `--subscribers` resuming subscribers take `--rate`
/// publishes: when the server closed the dribblers, and the subscribers'
/// latency.
async fn slowloris(options: &Options) -> Result<Value> {
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

// ---- storm -------------------------------------------------------------------

/// `--subscribers` resuming subscribers (SSE and long poll by `--wires`)
/// over `--channels` get one message each, all drop, `--messages` more
/// are published to every channel, and all come back within `--spread-ms`
/// with their cursors: how long until every one had exactly what it
/// missed, and the kernel's listen-queue overflows meanwhile.
async fn storm(options: &Options) -> Result<Value> {
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

// ---- flood -------------------------------------------------------------------

/// `--publishers` flat out for `--duration` to `--channels` channels while
/// `--subscribers` resuming subscribers follow the first of them: the
/// server's memory and channels at their peak, the publishes' answers, and
/// whether every subscriber got every message or a gap owning up to it.
async fn flood(options: &Options) -> Result<Value> {
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
