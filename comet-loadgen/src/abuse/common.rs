//! What the scenarios share: URL templates, the server's memory and
//! `/stats`, the sampler, histograms, publishing at a rate, resuming
//! subscribers and their tally, and raw sockets.

use super::Result;
use crate::{
    args::Options,
    client::{Publisher, Sender, Target},
    resume::{Resumer, Wire},
    stats::{Latencies, Received},
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

/// A URL whose `{c}` names a channel number.
#[derive(Clone)]
pub(super) struct Template {
    pub(super) target: Arc<Target>,
    url: String,
}

impl Template {
    pub(super) fn new(url: &str, allow_remote: bool) -> Result<Self> {
        let target = Target::parse(&url.replace("{c}", "0"), allow_remote)?;
        Ok(Self {
            target: Arc::new(target),
            url: url.to_owned(),
        })
    }

    /// The path (and query) for channel `c`.
    pub(super) fn path(&self, c: usize) -> String {
        let url = self.url.replace("{c}", &c.to_string());
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        rest.find('/')
            .map_or_else(|| "/".into(), |i| rest[i..].to_owned())
    }

    /// The channel a subscribe URL names (`channel=`), for channel `c`.
    pub(super) fn channel(&self, c: usize) -> Result<String> {
        let url = self.url.replace("{c}", &c.to_string());
        url.split(['?', '&'])
            .find_map(|part| part.strip_prefix("channel="))
            .map(str::to_owned)
            .ok_or_else(|| format!("no channel= in {}", self.url))
    }
}

pub(super) fn sub(options: &Options) -> Result<Template> {
    Template::new(&options.sub_urls[0], options.allow_remote)
}

pub(super) fn publish_url(options: &Options) -> Result<Template> {
    let url = options.pub_urls.first().ok_or("--pub-url is required")?;
    Template::new(url, options.allow_remote)
}

/// The resident memory of a process in bytes.
pub(super) fn rss(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The kernel's memory for TCP buffers, in bytes (`/proc/net/sockstat`).
pub(super) fn tcp_kernel_bytes() -> Option<u64> {
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
pub(super) fn netstat(group: &str, name: &str) -> Option<u64> {
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
pub(super) async fn server_stats(options: &Options) -> Option<Value> {
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
pub(super) async fn stats_until(
    options: &Options,
    bound: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
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
pub(super) struct Sampler {
    rows: Arc<Mutex<Vec<Value>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(super) fn start(options: &Options) -> Result<Self> {
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

    pub(super) async fn finish(self) -> Vec<Value> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let rows = self.rows.lock().unwrap();
        rows.clone()
    }
}

pub(super) fn peak(rows: &[Value], key: &str) -> Option<u64> {
    rows.iter().filter_map(|r| r[key].as_u64()).max()
}

pub(super) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

pub(super) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

pub(super) fn latency_json(h: &Histogram<u64>) -> Value {
    json!({ "p50_ms": ms(h, 0.5), "p99_ms": ms(h, 0.99), "max_ms": ms(h, 1.0) })
}

pub(super) fn wires(options: &Options) -> Result<Vec<Wire>> {
    options.extra.wires.iter().map(|w| Wire::parse(w)).collect()
}

/// A cheap per-task pseudo-random sequence (xorshift).
pub(super) struct Jitter(u64);

impl Jitter {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub(super) fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Publishes at `rate` per second (0: flat out with `publishers` tasks) for
/// `duration`, message `seq` to channel `seq % channels`; returns the
/// number of publishes and their answers by status.
pub(super) struct Published {
    pub(super) count: u64,
    /// Sequence numbers the server refused (not stored).
    pub(super) refused: Vec<u64>,
    pub(super) statuses: std::collections::BTreeMap<u16, u64>,
    pub(super) secs: f64,
}

pub(super) async fn publish_for(
    options: &Options,
    template: &Template,
    clock: Clock,
    rate: u64,
    duration: Duration,
) -> Result<Published> {
    publish_range(options, template, clock, rate, duration, 0..u64::MAX).await
}

/// Publishes through `--pub-url` at `--rate` for `--duration`.
pub(super) async fn publish_as_told(options: &Options, clock: Clock) -> Result<Published> {
    let template = publish_url(options)?;
    publish_for(options, &template, clock, options.rate, options.duration).await
}

/// As [`publish_for`], numbering messages from `seqs.start` and stopping
/// before `seqs.end`.
pub(super) async fn publish_range(
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
    pub(super) fn owed(&self, subscribers: usize, channels: usize) -> u64 {
        (0..subscribers)
            .map(|i| self.stored_on((i % channels) as u64, channels as u64))
            .sum()
    }

    pub(super) fn stored_on(&self, c: u64, channels: u64) -> u64 {
        let all = self.count / channels + u64::from(c < self.count % channels);
        all - self.refused.iter().filter(|s| *s % channels == c).count() as u64
    }

    pub(super) fn statuses_json(&self) -> Value {
        self.statuses
            .iter()
            .map(|(status, n)| (status.to_string(), json!(n)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// Resuming subscribers: subscriber `i` on channel `i % channels` over
/// `wires[i % wires.len()]`, each started (head cursor) before this returns.
/// They record their latencies into one record, shared.
pub(super) async fn resumers(
    options: &Options,
    count: usize,
    clock: Clock,
    progress: Arc<AtomicU64>,
) -> Result<Vec<Resumer>> {
    let template = sub(options)?;
    let wires = wires(options)?;
    let mut started = Vec::with_capacity(count);
    let mut pending = Vec::new();
    let latencies = Latencies::default();
    for i in 0..count {
        let c = i % options.extra.channels;
        let mut resumer = Resumer::new(
            template.target.clone(),
            template.channel(c)?,
            wires[i % wires.len()],
            Received::new(0, latencies.clone(), progress.clone()),
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
pub(super) struct Following {
    tasks: Vec<tokio::task::JoinHandle<Resumer>>,
    stop: watch::Sender<bool>,
    /// Sessions that failed (and were retried after 100 ms).
    failures: Arc<AtomicU64>,
}

impl Following {
    pub(super) fn start(resumers: Vec<Resumer>, session: Duration, clock: Clock) -> Self {
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
    pub(super) async fn settle(
        self,
        progress: &AtomicU64,
        owed: u64,
        bound: Duration,
    ) -> Result<(Vec<Resumer>, u64)> {
        drain(progress, owed, bound).await;
        self.finish().await
    }

    pub(super) async fn finish(self) -> Result<(Vec<Resumer>, u64)> {
        let _ = self.stop.send(true);
        let mut resumers = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            resumers.push(task.await.map_err(|e| e.to_string())?);
        }
        Ok((resumers, self.failures.load(Ordering::Relaxed)))
    }
}

/// Resolves once `stop` says true (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Over resumers: what they should have had (`stored_on` their channel),
/// what they had, and the gaps that owned up to the rest. The latencies
/// are those of every resumer that shares a record with one of these
/// (`resumers` makes one record per call): pass them all.
pub(super) fn tally(
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
    let mut recorded: Vec<&Latencies> = Vec::new();
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
        // Resumers share their record: each record is added once.
        let latencies = r.received.latencies();
        if !recorded.iter().any(|seen| seen.same(latencies)) {
            recorded.push(latencies);
            let _ = latency.add(latencies.all());
            let _ = steady.add(latencies.steady());
        }
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
    pub(super) fn channel_index(&self, names: &[String]) -> usize {
        names.iter().position(|n| *n == self.channel()).unwrap_or(0)
    }
}

/// Waits (bounded) until `progress` reaches `target`.
pub(super) async fn drain(progress: &AtomicU64, target: u64, bound: Duration) {
    let until = Instant::now() + bound;
    while progress.load(Ordering::Relaxed) < target && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) async fn raw_connect(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
) -> Result<TcpStream> {
    raw_connect_with(addr, source, 0).await
}

/// [`raw_connect`] with a receive buffer of `rcvbuf` bytes (0: the kernel's).
pub(super) async fn raw_connect_with(
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
pub(super) async fn raw_request(stream: &mut TcpStream, request: &str) -> Result<(u16, Vec<u8>)> {
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
