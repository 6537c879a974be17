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
    /// Server process whose memory to report (idle scenario).
    pub pid: Option<u32>,
    /// Allow targets other than loopback.
    pub allow_remote: bool,
    /// Print one JSON line instead of the report.
    pub json: bool,
    /// Speak HTTP/2 (h2c, prior knowledge) rather than HTTP/1.1.
    pub http2: bool,
    /// With `http2`: the connections the subscribers' streams are spread over.
    pub connections: usize,
}

/// With `--http2` and no `--connections`: one connection per this many streams.
pub const STREAMS_PER_CONNECTION: usize = 100;

pub const USAGE: &str = "\
usage: comet-loadgen <idle|fanout|throughput|follow> --sub-url URL [options]

  --sub-url URL        subscribe URL (SSE, ndjson stream or long-poll endpoint);
                       repeat it to split subscribers round-robin over several nodes
  --pub-url URL        publish URL (POST, body {\"seq\":N,\"t\":NANOS}); repeat it
                       to publish through several nodes in turn
  --transport T        sse (default), stream, poll (follow defaults to poll)
  --dialect D          comet (default) or raw (long polls echo ETag/Last-Modified)
  --subscribers N      subscribers to open (default 100)
  --messages M         messages to publish (fanout: 1, follow: 50)
  --rate R             publishes per second (default: 1 for fanout, else as fast as possible)
  --publishers P       concurrent publish connections (default 4)
  --duration SECS      throughput: how long to publish (default 5)
  --drain SECS         wait this long for the last deliveries (default 10)
  --pid PID            idle: report this process's memory per connection
  --http2              speak HTTP/2 (h2c, prior knowledge): subscribers are streams
                       spread round-robin over --connections, publishers get one each
  --connections N      with --http2: subscriber connections (default: one per 100
                       subscribers); connection j goes to the (j % n)th --sub-url
  --allow-remote       allow non-loopback targets (default: loopback only)
  --json               print one JSON line";

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let scenario = match args.next().as_deref() {
            Some("idle") => Scenario::Idle,
            Some("fanout") => Scenario::Fanout,
            Some("throughput") => Scenario::Throughput,
            Some("follow") => Scenario::Follow,
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
            if matches!(name, "allow-remote" | "json" | "http2") {
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
        if options.scenario != Scenario::Idle && options.pub_urls.is_empty() {
            return Err("--pub-url is required to publish".into());
        }
        Ok(options)
    }
}
