//! Command-line options: `comet-loadgen <scenario> [--option value]...`.

use std::{collections::HashMap, time::Duration};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Open subscribers, publish nothing, report the server's memory per connection.
    Idle,
    /// Publish `--messages` (default 1) to every subscriber; report when the last got it.
    Fanout,
    /// Publish as fast as the server takes for `--duration`; report deliveries per second.
    Throughput,
    /// Long-poll subscribers follow `--messages` (default 50) with their cursors.
    Follow,
    /// `--stalled` SSE subscribers stop reading while `--subscribers` read
    /// on, under `--rate` publishes of `--payload-bytes`; then the stalled
    /// ones read again and must find every message or a gap.
    Stall,
    /// `--cycles` subscribe-and-close cycles, SSE and long poll mixed.
    Churn,
    /// `--slow` connections dribble request headers (or, `--slow-body`,
    /// publish bodies) a byte a second while subscribers are measured.
    Slowloris,
    /// Resuming subscribers all drop and reconnect within `--spread-ms`.
    Storm,
    /// Publishers flat out, to one channel or `--channels` distinct ones.
    Flood,
    /// Mixed traffic for `--duration`: every transport, reconnects,
    /// publishes over `--channels`; memory sampled every `--sample-secs`.
    Soak,
}

impl Scenario {
    /// The scenarios of `abuse.rs`, which report a JSON object of their own.
    pub fn is_abuse(self) -> bool {
        matches!(
            self,
            Scenario::Stall
                | Scenario::Churn
                | Scenario::Slowloris
                | Scenario::Storm
                | Scenario::Flood
                | Scenario::Soak
        )
    }
}

/// Options of the abuse scenarios (`abuse.rs`).
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Padding that brings each published body to this many bytes.
    pub payload_bytes: usize,
    /// Channels: `{c}` in a URL is replaced by `0..channels`.
    pub channels: usize,
    /// Stall: subscribers that stop reading, and their receive buffer
    /// (`SO_RCVBUF`; 0: the kernel's default).
    pub stalled: usize,
    pub stall_rcvbuf: u32,
    /// Churn: subscribe-and-close cycles, and how many run at once.
    pub cycles: u64,
    pub concurrency: usize,
    /// Churn: loopback source addresses to spread connections over
    /// (127.0.0.1, 127.0.0.2, ...), against TIME_WAIT.
    pub sources: usize,
    /// Soak: each subscriber's sessions last about this long.
    pub reconnect_secs: u64,
    /// How often to sample the server's memory.
    pub sample_secs: u64,
    /// Write the samples here (CSV).
    pub csv: Option<String>,
    /// The demo's `/stats` URL (subscribers, channels, file descriptors).
    pub stats_url: Option<String>,
    /// Slowloris: connections that dribble, and whether they dribble a
    /// publish body (else request headers).
    pub slow: usize,
    pub slow_body: bool,
    /// Storm: the reconnects spread over this many milliseconds.
    pub spread_ms: u64,
    /// Transports of resuming subscribers (sse, stream, iframe, poll, jsonp).
    pub wires: Vec<String>,
}

/// How subscribers connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Sse,
    Stream,
    Poll,
}

/// How a server numbers and frames long polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// comet: the first poll asks `timeout=0` for the head cursor, then holds.
    Comet,
    /// Anything else: polls echo `ETag`/`Last-Modified` back (nchan does).
    Raw,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    /// Subscribe URLs: subscriber `i` uses the `i % n`th (one per node).
    pub sub_urls: Vec<String>,
    /// Publish URLs: publishes take turns over them (empty: none given).
    pub pub_urls: Vec<String>,
    pub transport: Transport,
    pub dialect: Dialect,
    pub subscribers: usize,
    pub messages: u64,
    /// Publishes per second; 0 means as fast as the server takes them.
    pub rate: u64,
    pub publishers: usize,
    pub duration: Duration,
    /// How long to wait for the last deliveries after the last publish.
    pub drain: Duration,
    /// Server process to measure: its memory per connection (idle), else
    /// its CPU time per message published.
    pub pid: Option<u32>,
    /// Allow targets other than loopback.
    pub allow_remote: bool,
    /// Print one JSON line instead of the report.
    pub json: bool,
    /// Speak HTTP/2 (h2c, prior knowledge) rather than HTTP/1.1.
    pub http2: bool,
    /// With `http2`: the connections the subscribers' streams are spread over.
    pub connections: usize,
    pub extra: Extra,
}

/// With `--http2` and no `--connections`: one connection per this many streams.
pub const STREAMS_PER_CONNECTION: usize = 100;

pub const USAGE: &str = "\
usage: comet-loadgen <idle|fanout|throughput|follow|stall|churn|slowloris|storm|flood|soak>
                     --sub-url URL [options]

  --sub-url URL        subscribe URL (SSE, ndjson stream or long-poll endpoint);
                       repeat it to split subscribers round-robin over several nodes
  --pub-url URL        publish URL (POST, body {\"seq\":N,\"t\":NANOS}); repeat it
                       to publish through several nodes in turn
  --transport T        sse (default), stream, poll (follow defaults to poll)
  --dialect D          comet (default) or raw (long polls echo ETag/Last-Modified)
  --subscribers N      subscribers to open (default 100)
  --messages M         messages to publish (fanout: 1, follow: 50; stall: this many
                       instead of for --duration)
  --rate R             publishes per second (default: 1 for fanout, else as fast as possible)
  --publishers P       concurrent publish connections (default 4)
  --duration SECS      throughput: how long to publish (default 5)
  --drain SECS         wait this long for the last deliveries (default 10)
  --pid PID            idle: report this process's memory per connection; else its
                       CPU time per message published
  --http2              speak HTTP/2 (h2c, prior knowledge): subscribers are streams
                       spread round-robin over --connections, publishers get one each
  --connections N      with --http2: subscriber connections (default: one per 100
                       subscribers); connection j goes to the (j % n)th --sub-url
  --allow-remote       allow non-loopback targets (default: loopback only)
  --json               print one JSON line

 abuse scenarios (stall, churn, slowloris, storm, flood, soak):
  --payload-bytes B    pad each published body to B bytes
  --channels N         {c} in --sub-url/--pub-url becomes 0..N (default 1)
  --stalled N          stall: SSE subscribers that stop reading (default 1000)
  --stall-rcvbuf B     stall: their receive buffer (SO_RCVBUF; default the kernel's)
  --cycles N           churn: subscribe-and-close cycles (default 10000)
  --concurrency N      churn: cycles at once (default 64)
  --sources N          churn: source addresses 127.0.0.1..N (default 1)
  --reconnect-secs S   soak: sessions last about S seconds (default 30)
  --sample-secs S      sample the server's memory every S seconds (default 1)
  --csv FILE           write the samples to FILE
  --stats-url URL      the server's /stats (subscribers, channels, fds)
  --slow N             slowloris: dribbling connections (default 1000)
  --slow-body          slowloris: dribble publish bodies, not headers
  --spread-ms MS       storm: reconnects spread over MS (default 1000)
  --wires LIST         resuming subscribers' transports, comma-separated
                       (default sse,stream,iframe,poll,jsonp)";

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let scenario = match args.next().as_deref() {
            Some("idle") => Scenario::Idle,
            Some("fanout") => Scenario::Fanout,
            Some("throughput") => Scenario::Throughput,
            Some("follow") => Scenario::Follow,
            Some("stall") => Scenario::Stall,
            Some("churn") => Scenario::Churn,
            Some("slowloris") => Scenario::Slowloris,
            Some("storm") => Scenario::Storm,
            Some("flood") => Scenario::Flood,
            Some("soak") => Scenario::Soak,
            Some(other) => return Err(format!("unknown scenario {other:?}")),
            None => return Err("no scenario".into()),
        };
        // Every value given, in order: a URL option may be repeated, any
        // other takes its last value.
        let mut flags: HashMap<String, Vec<String>> = HashMap::new();
        let mut switches = Vec::new();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected {arg:?}"))?;
            if matches!(name, "allow-remote" | "json" | "http2" | "slow-body") {
                switches.push(name.to_owned());
                continue;
            }
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            flags.entry(name.to_owned()).or_default().push(value);
        }
        let sub_urls = flags.remove("sub-url").unwrap_or_default();
        let pub_urls = flags.remove("pub-url").unwrap_or_default();
        let mut take = |name: &str| flags.remove(name).and_then(|mut values| values.pop());
        let number = |value: Option<String>, name: &str, default: u64| -> Result<u64, String> {
            value.map_or(Ok(default), |v| {
                v.parse().map_err(|_| format!("--{name} must be a number"))
            })
        };
        let options = Options {
            scenario,
            sub_urls: Some(sub_urls)
                .filter(|urls| !urls.is_empty())
                .ok_or("--sub-url is required")?,
            pub_urls,
            transport: match take("transport").as_deref() {
                None if scenario == Scenario::Follow => Transport::Poll,
                None | Some("sse") => Transport::Sse,
                Some("stream") => Transport::Stream,
                Some("poll") => Transport::Poll,
                Some(other) => return Err(format!("unknown transport {other:?}")),
            },
            dialect: match take("dialect").as_deref() {
                None | Some("comet") => Dialect::Comet,
                Some("raw") => Dialect::Raw,
                Some(other) => return Err(format!("unknown dialect {other:?}")),
            },
            subscribers: number(take("subscribers"), "subscribers", 100)? as usize,
            messages: number(
                take("messages"),
                "messages",
                match scenario {
                    Scenario::Fanout => 1,
                    Scenario::Follow => 50,
                    _ => 0,
                },
            )?,
            rate: number(
                take("rate"),
                "rate",
                if scenario == Scenario::Fanout { 1 } else { 0 },
            )?,
            publishers: number(take("publishers"), "publishers", 4)?.max(1) as usize,
            duration: Duration::from_secs(number(take("duration"), "duration", 5)?),
            drain: Duration::from_secs(number(take("drain"), "drain", 10)?),
            pid: take("pid")
                .map(|p| p.parse().map_err(|_| "--pid must be a number"))
                .transpose()?,
            allow_remote: switches.iter().any(|s| s == "allow-remote"),
            json: switches.iter().any(|s| s == "json"),
            http2: switches.iter().any(|s| s == "http2"),
            connections: 0,
            extra: Extra {
                payload_bytes: number(take("payload-bytes"), "payload-bytes", 0)? as usize,
                channels: number(take("channels"), "channels", 1)?.max(1) as usize,
                stalled: number(take("stalled"), "stalled", 1000)? as usize,
                stall_rcvbuf: number(take("stall-rcvbuf"), "stall-rcvbuf", 0)? as u32,
                cycles: number(take("cycles"), "cycles", 10_000)?,
                concurrency: number(take("concurrency"), "concurrency", 64)?.max(1) as usize,
                sources: number(take("sources"), "sources", 1)?.clamp(1, 250) as usize,
                reconnect_secs: number(take("reconnect-secs"), "reconnect-secs", 30)?.max(1),
                sample_secs: number(take("sample-secs"), "sample-secs", 1)?.max(1),
                csv: take("csv"),
                stats_url: take("stats-url"),
                slow: number(take("slow"), "slow", 1000)? as usize,
                slow_body: switches.iter().any(|s| s == "slow-body"),
                spread_ms: number(take("spread-ms"), "spread-ms", 1000)?,
                wires: take("wires")
                    .unwrap_or_else(|| "sse,stream,iframe,poll,jsonp".into())
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
            },
        };
        let subscribers = options.subscribers;
        let connections = take("connections");
        if connections.is_some() && !options.http2 {
            return Err("--connections needs --http2".into());
        }
        let options = Options {
            connections: (number(
                connections,
                "connections",
                subscribers.div_ceil(STREAMS_PER_CONNECTION) as u64,
            )? as usize)
                .clamp(1, subscribers.max(1)),
            ..options
        };
        if let Some(unknown) = flags.keys().next() {
            return Err(format!("unknown option --{unknown}"));
        }
        let publishes = !matches!(options.scenario, Scenario::Idle | Scenario::Churn);
        if publishes && options.pub_urls.is_empty() {
            return Err("--pub-url is required to publish".into());
        }
        Ok(options)
    }
}
