//! Where the primary is: one fixed address, or whichever server Redis
//! Sentinel names as the primary of a service.
//!
//! The node's task asks where the primary is each time it connects (see
//! `node::connect`) and moves its command and pub/sub connections there.
//! Behind Sentinel it asks the sentinels again every time, since a failover
//! moves the primary; between connects, a task of its own (see [`watch`])
//! listens for the sentinels' `+switch-master` announcements, because after
//! `SENTINEL FAILOVER` the demoted primary keeps taking writes (which it
//! then loses) for about ten seconds, until Sentinel reconfigures it and
//! closes its clients' connections.

use crate::backplane::{jittered, Backplane, Failure};
use futures_util::StreamExt;
use redis::{
    sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType},
    ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
};
use std::{sync::Arc, time::Duration};

/// The scheme of a Sentinel URL.
const SCHEME: &str = "redis+sentinel://";
/// A sentinel's port when the URL names none.
const SENTINEL_PORT: u16 = 26379;
/// Where sentinels announce that a service has a new primary.
const SWITCH_MASTER: &str = "+switch-master";

/// Where the primary is.
pub(crate) enum Primary {
    /// At one address (`redis://`), or behind one that moves with it.
    Direct(redis::Client),
    /// Wherever the sentinels say (`redis+sentinel://`).
    Sentinel(Sentinel),
    /// One shard of a Redis Cluster (`redis+cluster://`): wherever the
    /// cluster last said (see `cluster.rs`, which fills it in).
    Cluster(Arc<ClusterPrimary>),
}

/// The primary of one shard of a Redis Cluster, as last learned.
#[derive(Default)]
pub(crate) struct ClusterPrimary {
    client: std::sync::Mutex<Option<redis::Client>>,
}

impl ClusterPrimary {
    /// The primary the cluster names now.
    pub(crate) fn get(&self) -> Option<redis::Client> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Names the primary; whether it moved.
    pub(crate) fn set(&self, client: redis::Client) -> bool {
        let mut held = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let moved = held.as_ref().is_none_or(|old| {
            old.get_connection_info().addr() != client.get_connection_info().addr()
        });
        *held = Some(client);
        moved
    }
}

/// Why a URL names no primary.
pub(crate) enum BadUrl {
    /// The `redis` crate refused it.
    Redis(redis::RedisError),
    /// A `redis+sentinel://` URL is malformed: why (never with the
    /// password).
    Sentinel(String),
}

/// A service the sentinels monitor.
pub(crate) struct Sentinel {
    /// The primary's name in the sentinels' `sentinel monitor`.
    service: String,
    /// The sentinels, in the URL's order.
    sentinels: Vec<ConnectionInfo>,
    /// Asks them where the primary is, one question at a time.
    client: tokio::sync::Mutex<SentinelClient>,
}

impl Primary {
    /// Reads `url`: `redis+sentinel://…` (see [`parse_sentinel_url`]), or
    /// any URL the `redis` crate takes.
    pub(crate) fn open(url: &str) -> Result<Self, BadUrl> {
        if !is_sentinel_url(url) {
            return redis::Client::open(url)
                .map(Self::Direct)
                .map_err(BadUrl::Redis);
        }
        let parsed = parse_sentinel_url(url).map_err(BadUrl::Sentinel)?;
        let mut primary = RedisConnectionInfo::default().set_db(parsed.db);
        if let Some(username) = &parsed.username {
            primary = primary.set_username(username);
        }
        if let Some(password) = &parsed.password {
            primary = primary.set_password(password);
        }
        let sentinels = parsed
            .sentinels
            .into_iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host, port).into_connection_info())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| BadUrl::Sentinel(error.to_string()))?;
        let client = SentinelClient::build(
            sentinels.clone(),
            parsed.service.clone(),
            Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(primary)),
            SentinelServerType::Master,
        )
        .map_err(|error| BadUrl::Sentinel(error.to_string()))?;
        Ok(Self::Sentinel(Sentinel {
            service: parsed.service,
            sentinels,
            client: tokio::sync::Mutex::new(client),
        }))
    }

    /// The primary's client now: the fixed one, or the one the sentinels
    /// name (asked again each time; the server named must answer `ROLE` as
    /// a primary), within `timeout`.
    pub(crate) async fn resolve(&self, timeout: Duration) -> Result<redis::Client, Failure> {
        let sentinel = match self {
            Self::Direct(client) => return Ok(client.clone()),
            Self::Cluster(shard) => {
                return shard.get().ok_or_else(|| {
                    Failure::Backplane("the cluster names no primary for this shard yet".to_owned())
                })
            }
            Self::Sentinel(sentinel) => sentinel,
        };
        let asked = async { sentinel.client.lock().await.async_get_client().await };
        match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(error)) => Err(Failure::Backplane(format!(
                "no sentinel named a primary for {:?}: {error}",
                sentinel.service
            ))),
            Err(_) => Err(Failure::Backplane(format!(
                "the sentinels named no primary for {:?} within {timeout:?}",
                sentinel.service
            ))),
        }
    }
}

/// Whether `url` is a Sentinel URL (its scheme, in any case).
fn is_sentinel_url(url: &str) -> bool {
    url.get(..SCHEME.len())
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case(SCHEME))
}

/// What a Sentinel URL says.
#[derive(Debug, PartialEq, Eq)]
struct SentinelUrl {
    sentinels: Vec<(String, u16)>,
    service: String,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

/// Reads `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[?db=N]`:
/// the sentinels (port 26379 where none is given; an IPv6 address in
/// brackets), the service's name, and the user, password (percent-encoded)
/// and database for the primary. The reason it is malformed otherwise.
fn parse_sentinel_url(url: &str) -> Result<SentinelUrl, String> {
    let rest = url
        .get(SCHEME.len()..)
        .filter(|_| is_sentinel_url(url))
        .ok_or_else(|| format!("it does not start with {SCHEME}"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, query),
        None => (rest, ""),
    };
    let (authority, service) = rest.split_once('/').ok_or_else(|| {
        "it names no service (the name the sentinels monitor) after the addresses".to_owned()
    })?;
    if service.is_empty() || service.contains(['/', '#']) {
        return Err(format!(
            "bad service name {service:?}: one name, as in the sentinels' `sentinel monitor`"
        ));
    }
    let Servers {
        addresses: sentinels,
        username,
        password,
    } = servers(authority, SENTINEL_PORT).map_err(|why| why.replace("{what}", "sentinel"))?;
    let mut db = 0;
    for parameter in query.split('&').filter(|p| !p.is_empty()) {
        match parameter.split_once('=') {
            Some(("db", number)) => {
                db = number
                    .parse::<i64>()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or_else(|| format!("bad database number {number:?}"))?;
            }
            _ => return Err(format!("unknown parameter {parameter:?} (only db=N)")),
        }
    }
    Ok(SentinelUrl {
        sentinels,
        service: service.to_owned(),
        username,
        password,
        db,
    })
}

/// What a URL's authority with several servers says.
pub(crate) struct Servers {
    pub(crate) addresses: Vec<(String, u16)>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

/// Reads `[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]` (user and
/// password percent-encoded, `port` where none is given). An error naming
/// no server says `it names no {what}`, for the caller to name them.
pub(crate) fn servers(authority: &str, port: u16) -> Result<Servers, String> {
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(userinfo) => {
            let (user, password) = userinfo
                .split_once(':')
                .ok_or("the part before `@` must be [USER]:PASSWORD")?;
            let user = percent_decoded(user)?;
            (
                (!user.is_empty()).then_some(user),
                Some(percent_decoded(password)?),
            )
        }
    };
    if hosts.is_empty() {
        return Err("it names no {what}".to_owned());
    }
    let addresses = hosts
        .split(',')
        .map(|address| host_port(address, port))
        .collect::<Result<_, _>>()?;
    Ok(Servers {
        addresses,
        username,
        password,
    })
}

/// `HOST[:PORT]` or `[IPV6][:PORT]`, `port` where none is given.
fn host_port(address: &str, default: u16) -> Result<(String, u16), String> {
    let bad = || format!("bad address {address:?}: HOST:PORT, or [IPV6]:PORT");
    let (host, port) = match address.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, None),
                after => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        }
        None => match address.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        },
    };
    let port = match port {
        None => default,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(bad)?,
    };
    if host.is_empty() || host.contains(['/', '@', '[', ']']) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// `text` with its `%XX` escapes decoded.
fn percent_decoded(text: &str) -> Result<String, String> {
    let bad = || "a bad %-escape before `@`".to_owned();
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad());
            }
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "the part before `@` is not UTF-8".to_owned())
}

/// The engine's Sentinel watch (a task of its own, behind Sentinel only):
/// subscribed to `+switch-master` on one sentinel at a time, it tells the
/// node's task to reconnect when the sentinels name a primary other than
/// the one the node uses. Each time it subscribes it also asks where the
/// primary is, in case it moved while nobody was listening. Runs until the
/// engine is dropped (the task is aborted).
pub(crate) async fn watch(primary: &Primary, backplane: &Backplane) {
    let Primary::Sentinel(sentinel) = primary else {
        return;
    };
    let timeout = backplane.config.timeout;
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    let mut backoff = FIRST_BACKOFF;
    loop {
        match subscribe(sentinel, timeout).await {
            Ok((mut sink, mut stream)) => {
                backoff = FIRST_BACKOFF;
                // Announcements from here on are heard; one made before is
                // found by asking.
                if let Ok(client) = primary.resolve(timeout).await {
                    moved_to(backplane, client.get_connection_info().addr());
                }
                let mut ping = tokio::time::interval(backplane.config.sweep_every());
                ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        message = stream.next() => match message {
                            Some(message) => {
                                if let Some(to) = switched(&message, &sentinel.service) {
                                    tracing::info!(%to, "sentinel announced a new primary");
                                    moved_to(backplane, &to);
                                }
                            }
                            None => break,
                        },
                        _ = ping.tick() => {
                            // A connection dropped in silence would miss
                            // every announcement.
                            let answer = tokio::time::timeout(timeout, sink.ping::<redis::Value>());
                            if !matches!(answer.await, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tracing::warn!("lost the sentinel's announcements; subscribing again");
            }
            Err(error) => tracing::debug!(%error, "no sentinel to watch"),
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Subscribes to `+switch-master` on the first sentinel that takes it,
/// each within `timeout`.
async fn subscribe(
    sentinel: &Sentinel,
    timeout: Duration,
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), String> {
    let mut last = String::from("no sentinel");
    for info in &sentinel.sentinels {
        let attempt = async {
            let mut pubsub = redis::Client::open(info.clone())?
                .get_async_pubsub()
                .await?;
            pubsub.subscribe(SWITCH_MASTER).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(pubsub)) => return Ok(pubsub.split()),
            Ok(Err(error)) => last = format!("{}: {error}", info.addr()),
            Err(_) => last = format!("{}: no answer within {timeout:?}", info.addr()),
        }
    }
    Err(last)
}

/// The new primary a `+switch-master` message names for `service`
/// (`<service> <old ip> <old port> <new ip> <new port>`).
fn switched(message: &redis::Msg, service: &str) -> Option<ConnectionAddr> {
    let text: String = message.get_payload().ok()?;
    let words: Vec<&str> = text.split(' ').collect();
    match words[..] {
        [name, _, _, ip, port] if name == service => {
            Some(ConnectionAddr::Tcp(ip.to_owned(), port.parse().ok()?))
        }
        _ => None,
    }
}

/// Tells the node's task to reconnect (and so ask the sentinels where the
/// primary is) if its connections are on another server than `to`.
fn moved_to(backplane: &Backplane, to: &ConnectionAddr) {
    if backplane.primary_address().is_some_and(|at| at != *to) {
        backplane.ask_reconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinels(list: &[(&str, u16)]) -> Vec<(String, u16)> {
        list.iter().map(|(h, p)| ((*h).to_owned(), *p)).collect()
    }

    #[test]
    fn sentinel_urls_are_read() {
        assert_eq!(
            parse_sentinel_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster"),
            Ok(SentinelUrl {
                sentinels: sentinels(&[("10.0.0.1", 26379), ("10.0.0.2", 26380)]),
                service: "mymaster".to_owned(),
                username: None,
                password: None,
                db: 0,
            })
        );
        assert_eq!(
            parse_sentinel_url("REDIS+SENTINEL://:p%40ss%2Fw@sentinel,[::1]:5000/svc?db=3"),
            Ok(SentinelUrl {
                sentinels: sentinels(&[("sentinel", 26379), ("::1", 5000)]),
                service: "svc".to_owned(),
                username: None,
                password: Some("p@ss/w".to_owned()),
                db: 3,
            })
        );
        let with_user = parse_sentinel_url("redis+sentinel://app:secret@h:1/s").unwrap();
        assert_eq!(with_user.username.as_deref(), Some("app"));
        assert_eq!(with_user.password.as_deref(), Some("secret"));
    }

    #[test]
    fn malformed_sentinel_urls_say_why() {
        for (url, reason) in [
            ("redis+sentinel://h:1", "names no service"),
            ("redis+sentinel://h:1/", "bad service name"),
            ("redis+sentinel://h:1/a/b", "bad service name"),
            ("redis+sentinel:///s", "names no sentinel"),
            ("redis+sentinel://:pw@/s", "names no sentinel"),
            ("redis+sentinel://h:x/s", "bad address \"h:x\""),
            ("redis+sentinel://h:0/s", "bad address"),
            ("redis+sentinel://h:70000/s", "bad address"),
            ("redis+sentinel://a:1,,b:2/s", "bad address \"\""),
            ("redis+sentinel://::1:5000/s", "bad address"),
            ("redis+sentinel://[::1/s", "bad address"),
            ("redis+sentinel://pw@h:1/s", "[USER]:PASSWORD"),
            ("redis+sentinel://:p%zz@h:1/s", "%-escape"),
            ("redis+sentinel://h:1/s?db=x", "bad database number"),
            ("redis+sentinel://h:1/s?db=-1", "bad database number"),
            ("redis+sentinel://h:1/s?timeout=1", "unknown parameter"),
        ] {
            let error = parse_sentinel_url(url).expect_err(url);
            assert!(error.contains(reason), "{url}: {error}");
            assert!(
                !error.contains("pw"),
                "{url}: the password is shown: {error}"
            );
        }
    }
}
