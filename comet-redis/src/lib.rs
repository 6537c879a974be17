//! A Redis engine for comet: several nodes behind any load balancer serve
//! one set of channels, with no sticky sessions.
//!
//! Every channel's epoch, offsets and bounded history live in Redis; a Lua
//! script assigns each message its offset, appends it to the channel's
//! stream, trims it and announces it on the channel's pub/sub channel, in one
//! round trip. Each node mirrors, in memory, the channels its own subscribers
//! use, fed from one pub/sub subscription per channel, so fan-out stays local
//! and each message is still stored and encoded once per node. A cursor from
//! one node resumes on any other; a Redis that lost data means a new epoch,
//! and so one explicit gap for every resuming client, never an offset served
//! twice or skipped in silence.
//!
//! ```
//! use comet_push::{HistoryPolicy, Hub};
//! use comet_push::redis::RedisEngine;
//! use std::{sync::Arc, time::Duration};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Connects in the background: building never waits for Redis.
//!     let engine = RedisEngine::builder("redis://127.0.0.1:6379")
//!         .history(HistoryPolicy::default())
//!         .timeout(Duration::from_millis(500))
//!         .build()?;
//!     let hub = Hub::builder().engine(Arc::new(engine)).build();
//!     // With no Redis there, this fails within the timeout: nothing hangs.
//!     match hub.publish("chat", "hello from any node").await {
//!         Ok(position) => println!("published at {position:?}"),
//!         Err(error) => println!("not published: {error}"),
//!     }
//!     Ok(())
//! }
//! ```
//!
//! When Redis cannot be reached, publishing fails within the engine's
//! timeout (`PublishError::Engine`, a 503 `unavailable` on the publish route)
//! and new subscriptions are refused the same way, while subscribers already
//! connected stay connected and, once Redis is back, get what was published
//! meanwhile or a gap. A node started before Redis works as soon as Redis
//! answers.
//!
//! Behind Redis Sentinel, the URL names the sentinels and the service they
//! monitor, `redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster` (see
//! [`RedisEngine::builder`] for the whole form): the node asks the sentinels
//! where the primary is each time it connects, and moves its connections to
//! a new primary as soon as they announce one (`+switch-master`), so a
//! failover costs a reconnect and no restart ([`RedisStats::failovers`]
//! counts them).
//!
//! Past one Redis, [`RedisEngine::sharded`] spreads the channels over
//! several independent primaries (each in either form above), and a
//! `redis+cluster://` URL puts them on a Redis Cluster: each channel lives
//! on one shard, a publish costs that one alone (its announcement stays
//! there too, by sharded pub/sub on a cluster), and one that is down fails
//! its own channels alone.
//!
//! Presence and occupancy ([`Hub::presence`](comet_core::Hub::presence),
//! [`Hub::subscriber_count`](comet_core::Hub::subscriber_count), join and
//! leave events, and the hooks of
//! [`HubBuilder::on_event`](comet_core::HubBuilder::on_event)) count every
//! node: each writes its share of a channel to Redis with an expiry
//! ([`RedisEngineBuilder::presence_ttl`], 20 s by default) and refreshes
//! it every quarter of that, so that a node that dies, or loses Redis, has
//! its users leave, and its subscribers stop counting, within 1.25 TTL
//! (25 s by default) plus the engine's timeout, as long as another node
//! holds the channel. Hooks fire once across the nodes: Occupied, Vacated,
//! Joined and Left on the node whose write caused them, or that found them
//! expired. A node's subscriber count reaches Redis within a second.
//! Presence is a live view: join and leave announced while a node's pub/sub
//! connection is down do not reach its subscribers (the list,
//! `Hub::presence`, is right again at once), and a Redis that lost its data
//! hears every user join again at the nodes' next refresh. Give each hub
//! an engine of its own: hubs sharing one engine share its node's shares.
//!
//! Orders to live subscriptions ([`Hub::disconnect`](comet_core::Hub::disconnect),
//! `unsubscribe`, `subscribe_user`, `close`) reach every node: each is
//! published on one pub/sub channel, `<prefix>:control`, within the engine's
//! timeout (an error when Redis cannot be reached), and every node applies
//! it to its own subscriptions. Pub/sub keeps nothing: a node whose pub/sub
//! connection is down when an order goes out (cut off from Redis, say, or
//! reconnecting) never gets it, so its subscriptions carry on
//! as if it had not been sent; send it again if that matters, or refuse the
//! user where you authorize (a disconnected user's next subscribe).
//! [`Hub::close_and_clear`](comet_core::Hub::close_and_clear) deletes the
//! channel's history at once: it moves to a new epoch, so clients that
//! resume from before get one gap and then only what is published after.
//!
//! Inside (for contributors), modules depend one way: `lib.rs`, this API,
//! on `cluster` (learning a Redis Cluster's shards and slots, and moving
//! channels whose slot moved), on `presence`, the presence store (every node's share of each channel,
//! refreshed by a task of its own), and on `control`, the control bus
//! (orders published to every node, heard by the first shard's task, and
//! clearing a channel); they on `node`, a task per shard (connect, serve,
//! loads, retries, sweep, join and leave handed to mirrors, and orders
//! handed to the hubs that listen); it on `mirror` (a `ChannelLog` per
//! channel in use, and what a read does to it), `primary` (one address, or
//! the one Sentinel names) and `shard` (which shard holds a channel); they
//! on `pubsub` (a shard's pub/sub connection, comet's own on a cluster) and
//! `backplane` (commands and scripts on one shard's command connection);
//! and that on `wire` (Redis's replies, announcements and orders), `keys`,
//! `scripts` and `cursor_key`. No module imports one that imports it.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod backplane;
mod cluster;
mod control;
mod cursor_key;
mod keys;
mod mirror;
mod node;
mod presence;
mod primary;
mod pubsub;
mod scripts;
mod shard;
mod wire;

use backplane::Config;
use comet_core::engine::{
    Attachment, ChannelLog, ControlBus, CursorKey, Engine, EngineFuture, PresenceStore,
    PublishFuture, Resume,
};
use comet_core::{ChannelName, HistoryPolicy, IdempotencyKey, Payload, Position};
use node::Shared;
use primary::{BadUrl, Primary};
use shard::ShardMap;
use std::{
    fmt,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

/// How long a backplane operation may take by default (a publish, or
/// loading a channel for a new subscriber) before it fails with 503.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long by default a node keeps mirroring a channel nobody here uses.
pub const DEFAULT_MIRROR_IDLE: Duration = Duration::from_secs(10);
/// The default prefix of every Redis key and pub/sub channel comet uses.
pub const DEFAULT_PREFIX: &str = "comet";
/// How many requests for channel loads may wait for the node's task before
/// new subscribers are refused (503) rather than queued.
pub const DEFAULT_QUEUE: usize = 4096;
/// How long a node's share of presence and subscriber counts lives in Redis
/// by default unless the node refreshes it (it does every quarter of it).
pub const DEFAULT_PRESENCE_TTL: Duration = Duration::from_secs(20);

/// The engine; hand it to [`HubBuilder::engine`](comet_core::HubBuilder::engine).
///
/// Cheap to clone; clones share the node's mirrors and connections. Dropping
/// the last one stops its background task.
#[derive(Clone)]
pub struct RedisEngine {
    shared: Arc<Shared>,
    presence: presence::Store,
    /// Stops the task when the last handle goes.
    _handle: Arc<Handle>,
}

/// Configures a [`RedisEngine`].
#[must_use]
#[derive(Clone)]
pub struct RedisEngineBuilder {
    /// One per shard, in the shard map's order.
    urls: Vec<String>,
    config: Config,
}

impl fmt::Debug for RedisEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngineBuilder")
            .field(
                "urls",
                &self
                    .urls
                    .iter()
                    .map(|url| redacted(url))
                    .collect::<Vec<_>>(),
            )
            .field("config", &self.config)
            .finish()
    }
}

/// `url` without the password it may hold, for logs.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Counters of the engine's own events, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedisStats {
    /// Whether the node's pub/sub connections are up, one per shard (its
    /// mirrors are being loaded, or are current).
    pub connected: bool,
    /// Channels this node mirrors.
    pub mirrors: usize,
    /// Messages on comet's pub/sub channels, and entries in its streams,
    /// that were not in comet's format (written by something else), ignored.
    pub malformed: u64,
    /// Times a mirror was read again from Redis (loaded, caught up after a
    /// hole or a reconnect).
    pub refreshes: u64,
    /// Times this node moved a channel to a new epoch because Redis had gone
    /// back in its history.
    pub epochs_renewed: u64,
    /// Times the node opened new connections to Redis because the ones it
    /// had failed (died, or reached a server that is no longer the primary).
    pub reconnects: u64,
    /// Requests refused at once because the node's queue was full.
    pub refused: u64,
    /// Times a channel's read failed (it alone; read again after a back-off
    /// while it has subscribers).
    pub failed_reads: u64,
    /// Times the node moved its connections to a new primary that Redis
    /// Sentinel named (a `redis+sentinel://` URL; a failover), or that a
    /// Redis Cluster named for one of its shards.
    pub failovers: u64,
    /// Times a Redis Cluster answered that a channel's slot is served
    /// elsewhere, or is moving (`MOVED`, `ASK`, `TRYAGAIN`), or not served
    /// (`CLUSTERDOWN`): the node learned where it went and tried there.
    pub redirects: u64,
}

/// Stops the engine's tasks when the last handle goes.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.dropped.store(true, Ordering::SeqCst);
        let tasks = self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for task in tasks.iter() {
            task.abort();
        }
    }
}

/// Why the engine could not be built.
#[derive(Debug)]
pub struct BuildError(BuildErrorKind);

#[derive(Debug)]
enum BuildErrorKind {
    /// The `redis` crate refused the URL.
    Url(redis::RedisError),
    /// A `redis+sentinel://` URL is malformed: why (never with the
    /// password).
    Sentinel(String),
    /// The key prefix holds a brace.
    Prefix(String),
    /// A sharded engine was given no URL.
    NoShards,
    /// A `redis+cluster://` URL is malformed (why, never with the
    /// password), or is not alone.
    Cluster(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            BuildErrorKind::Url(error) => write!(f, "bad Redis URL: {error}"),
            BuildErrorKind::Sentinel(reason) => write!(
                f,
                "bad Redis Sentinel URL: {reason}; expected \
                 redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[?db=N]"
            ),
            BuildErrorKind::Prefix(prefix) => write!(
                f,
                "bad key prefix {prefix:?}: it may not hold `{{` or `}}`, which would move \
                 the hash tag that keeps a channel's keys in one Cluster slot"
            ),
            BuildErrorKind::NoShards => write!(f, "a sharded engine needs at least one Redis URL"),
            BuildErrorKind::Cluster(reason) => write!(
                f,
                "bad Redis Cluster URL: {reason}; expected \
                 redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]"
            ),
        }
    }
}

impl From<BadUrl> for BuildErrorKind {
    fn from(bad: BadUrl) -> Self {
        match bad {
            BadUrl::Redis(error) => Self::Url(error),
            BadUrl::Sentinel(reason) => Self::Sentinel(reason),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            BuildErrorKind::Url(error) => Some(error),
            BuildErrorKind::Sentinel(_)
            | BuildErrorKind::Prefix(_)
            | BuildErrorKind::NoShards
            | BuildErrorKind::Cluster(_) => None,
        }
    }
}

impl RedisEngine {
    /// Configures an engine on the Redis at `url`, one of:
    ///
    /// - `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (or another form the
    ///   `redis` crate takes): a primary at one address, or behind one that
    ///   follows it (a DNS name, a virtual IP);
    /// - `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[?db=N]`:
    ///   the primary that Redis Sentinel names for `SERVICE` (the name in
    ///   the sentinels' `sentinel monitor`), for example
    ///   `redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster`. The
    ///   sentinels listed (port 26379 where none is given; an IPv6 address
    ///   in brackets) are asked where the primary is each time the node
    ///   connects, and when they announce a new one (`+switch-master`, after
    ///   a failover) the node moves its connections there at once. The user,
    ///   password (percent-encoded) and database are the primary's; the
    ///   sentinels are asked without a password;
    /// - `redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]`:
    ///   a Redis Cluster, whose shards the node learns from the nodes listed
    ///   (port 6379 where none is given) with `CLUSTER SHARDS`, at start and
    ///   whenever a slot or a primary moves. Each channel lives on the
    ///   primary that serves its hash slot; announcements go by sharded
    ///   pub/sub (`SPUBLISH`, `SSUBSCRIBE`; plain pub/sub on Redis 6); a
    ///   slot that moves takes its channels' subscriptions with it, and a
    ///   failover moves the shard's connections to the promoted replica.
    ///   The user and password are every node's; TLS is not supported.
    ///
    /// [`build`](RedisEngineBuilder::build) checks the URL.
    pub fn builder(url: impl Into<String>) -> RedisEngineBuilder {
        Self::sharded([url])
    }

    /// Configures an engine whose channels are spread over several
    /// independent Redis primaries (shards), one URL each in any form
    /// [`builder`](Self::builder) takes (a shard may be behind Sentinel).
    ///
    /// Each channel lives on one shard, picked from its name by jump
    /// consistent hashing over its Redis Cluster hash slot, so every node
    /// that lists the same URLs in the same order agrees where each channel
    /// is, with no coordination. A publish costs its own shard alone, and a
    /// node holds one pub/sub connection per shard. The first shard also
    /// holds the cursor key and carries the orders to live subscriptions
    /// (`Hub::disconnect` and the like).
    ///
    /// A shard that is down fails its own channels alone (503), while the
    /// others go on; but a node that starts while the first shard is down
    /// publishes nowhere until it is back, as the first shard holds the key
    /// that tags cursors, which a node reads once. Adding a shard at the
    /// end of the list moves about one channel in `n + 1` to it: each moved
    /// channel starts over there, and its subscribers get one gap. Every
    /// node must list the same shards, in the same order. Removing a shard
    /// moves its channels back where they were: delete what they left there
    /// first (or wait out its keys' TTL), or a client away the whole time
    /// may resume from the old keys and miss, with no gap, what the removed
    /// shard held.
    ///
    /// ```
    /// use comet_push::redis::RedisEngine;
    ///
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let engine = RedisEngine::sharded([
    ///     "redis://10.0.0.1:6379",
    ///     "redis://10.0.0.2:6379",
    ///     "redis://10.0.0.3:6379",
    /// ])
    /// .build()?;
    /// # drop(engine); Ok(()) }
    /// ```
    ///
    /// [`build`](RedisEngineBuilder::build) checks every URL, and refuses
    /// an empty list.
    pub fn sharded<U: Into<String>>(urls: impl IntoIterator<Item = U>) -> RedisEngineBuilder {
        RedisEngineBuilder {
            urls: urls.into_iter().map(Into::into).collect(),
            config: Config {
                prefix: DEFAULT_PREFIX.to_owned(),
                history: HistoryPolicy::default(),
                timeout: DEFAULT_TIMEOUT,
                mirror_idle: DEFAULT_MIRROR_IDLE,
                idle_ttl: comet_core::DEFAULT_IDLE_TTL,
                idempotency_window: comet_core::DEFAULT_IDEMPOTENCY_WINDOW,
                queue: DEFAULT_QUEUE,
                presence_ttl: DEFAULT_PRESENCE_TTL,
            },
        }
    }

    /// The engine's counters.
    pub fn stats(&self) -> RedisStats {
        let stats = &self.shared.stats;
        RedisStats {
            connected: self.shared.connected(),
            mirrors: self.shared.mirrors.read().len(),
            malformed: stats.malformed.load(Ordering::Relaxed),
            refreshes: stats.refreshes.load(Ordering::Relaxed),
            epochs_renewed: stats.epochs_renewed.load(Ordering::Relaxed),
            reconnects: stats.reconnects.load(Ordering::Relaxed),
            refused: stats.refused.load(Ordering::Relaxed),
            failed_reads: stats.failed_reads.load(Ordering::Relaxed),
            failovers: stats.failovers.load(Ordering::Relaxed),
            redirects: stats.redirects.load(Ordering::Relaxed),
        }
    }
}

impl RedisEngineBuilder {
    /// The history every channel keeps, in Redis and in each node's mirror
    /// (default: 1,000 messages, 15 minutes). Every node must use the same.
    pub fn history(mut self, policy: HistoryPolicy) -> Self {
        self.config.history = HistoryPolicy {
            max_messages: policy.max_messages.max(1),
            ..policy
        };
        self
    }

    /// The prefix of every key and pub/sub channel (default `comet`), to
    /// share one Redis between applications. It may not hold `{` or `}`
    /// ([`build`](Self::build) refuses it).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// How long a publish, or loading a channel for a new subscriber, may
    /// wait for Redis before it fails (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// How long a node keeps mirroring (and stays subscribed to) a channel
    /// after its last local subscriber left (default 10 s), so that clients
    /// that reconnect find it warm.
    pub fn mirror_idle(mut self, idle: Duration) -> Self {
        self.config.mirror_idle = idle;
        self
    }

    /// How long an unused channel's keys outlive its history in Redis
    /// (default 60 s, as the in-memory engine's idle TTL).
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.config.idle_ttl = ttl;
        self
    }

    /// How long a publish's idempotency key is remembered (default 5
    /// minutes), in Redis beside the channel's keys.
    pub fn idempotency_window(mut self, window: Duration) -> Self {
        self.config.idempotency_window = window;
        self
    }

    /// How many channel loads may wait for the node's task (default 4,096);
    /// past that, new subscribers are refused with 503 at once rather than
    /// queued without bound.
    pub fn queue(mut self, requests: usize) -> Self {
        self.config.queue = requests.max(1);
        self
    }

    /// How long a node's share of each channel's presence and subscriber
    /// count lives in Redis unless the node refreshes it (default 20 s; the
    /// node refreshes it every quarter of that). A node that dies, or is cut
    /// off from Redis, has its users leave (reported once, by another node
    /// that holds the channel) and stops counting in subscriber counts
    /// within 1.25 times this, plus the engine's [`timeout`](Self::timeout).
    /// Shorter means a quicker leave and more writes to Redis. Every node
    /// must use the same.
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.config.presence_ttl = ttl.max(Duration::from_millis(40));
        self
    }

    /// Builds the engine and starts its tasks; it connects in the
    /// background, so this succeeds whether or not Redis (or Sentinel) is
    /// up yet.
    ///
    /// # Errors
    ///
    /// A malformed URL (for a `redis+sentinel://` one the error says what
    /// is wrong with it), a key prefix holding `{` or `}`, or no URL.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn build(self) -> Result<RedisEngine, BuildError> {
        if self.config.prefix.contains(['{', '}']) {
            return Err(BuildError(BuildErrorKind::Prefix(self.config.prefix)));
        }
        if self.urls.is_empty() {
            return Err(BuildError(BuildErrorKind::NoShards));
        }
        if self.urls.iter().any(|url| cluster::is_cluster_url(url)) {
            return self.build_cluster();
        }
        let primaries = self
            .urls
            .iter()
            .map(|url| Primary::open(url).map_err(|bad| BuildError(bad.into())))
            .collect::<Result<Vec<_>, _>>()?;
        let url = self
            .urls
            .iter()
            .map(|url| redacted(url))
            .collect::<Vec<_>>();
        let shared = Shared::new(url.join(" "), self.config, ShardMap::fixed(primaries.len()));
        for primary in primaries {
            shared
                .add_shard(primary)
                .map_err(|error| BuildError(BuildErrorKind::Url(error)))?;
        }
        let presence = presence::Store::new(shared.clone());
        shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tokio::spawn(presence.clone().run()));
        Ok(RedisEngine {
            _handle: Arc::new(Handle {
                shared: shared.clone(),
            }),
            shared,
            presence,
        })
    }
}

impl RedisEngineBuilder {
    /// Builds the engine on the Redis Cluster its one URL names.
    fn build_cluster(self) -> Result<RedisEngine, BuildError> {
        let [url] = &self.urls[..] else {
            return Err(BuildError(BuildErrorKind::Cluster(
                "a cluster URL stands alone: the cluster says where its shards are".to_owned(),
            )));
        };
        let cluster =
            cluster::Cluster::open(url).map_err(|why| BuildError(BuildErrorKind::Cluster(why)))?;
        let shared = Shared::new(redacted(url), self.config, ShardMap::slots());
        let presence = presence::Store::new(shared.clone());
        {
            let mut tasks = shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.push(tokio::spawn(cluster::run(
                shared.clone(),
                Arc::new(cluster),
            )));
            tasks.push(tokio::spawn(presence.clone().run()));
        }
        Ok(RedisEngine {
            _handle: Arc::new(Handle {
                shared: shared.clone(),
            }),
            shared,
            presence,
        })
    }
}

impl Engine for RedisEngine {
    fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> PublishFuture {
        let shared = self.shared.clone();
        let channel = channel.clone();
        let idempotency_key = idempotency_key.cloned();
        Box::pin(async move {
            let failed = |failure: backplane::Failure| backplane::unavailable(failure.to_string());
            // The hub tags the cursor of this publish with the shared key.
            shared.cursor_key_known().await?;
            shared
                .on_shard(&channel, |shard| {
                    let payload = payload.clone();
                    let channel = &channel;
                    let key = idempotency_key.as_ref();
                    async move { shard.backplane.publish(channel, payload, key).await }
                })
                .await
                .map_err(failed)
        })
    }

    fn attach(&self, channel: &ChannelName, from: Option<Resume>) -> EngineFuture<Attachment> {
        let shard = self.shared.map.shard_of(channel).unwrap_or(usize::MAX);
        let (mirror, attachment) = self.shared.mirrors.attach(channel, shard);
        if mirror.answers(from) {
            return Box::pin(std::future::ready(Ok(attachment)));
        }
        let shared = self.shared.clone();
        let resume = from.filter(|r| r.issued);
        Box::pin(async move {
            shared.refresh(&mirror, resume).await?;
            Ok(attachment)
        })
    }

    fn cursor_key(&self) -> Option<CursorKey> {
        self.shared.home().ok()?.backplane.cursor_key.get()
    }

    fn previous_cursor_key(&self) -> Option<CursorKey> {
        self.shared.home().ok()?.backplane.previous_cursor_key.get()
    }

    fn head(&self, channel: &ChannelName) -> EngineFuture<Position> {
        let shared = self.shared.clone();
        let channel = channel.clone();
        Box::pin(async move {
            let failed = |failure: backplane::Failure| backplane::unavailable(failure.to_string());
            shared.cursor_key_known().await?;
            shared
                .on_shard(&channel, |shard| {
                    let channel = &channel;
                    async move { shard.backplane.head(channel).await }
                })
                .await
                .map_err(failed)
        })
    }

    fn existing(&self, channel: &ChannelName) -> Option<Arc<ChannelLog>> {
        self.shared
            .mirrors
            .read()
            .get(channel)
            .map(|m| m.log.clone())
    }

    fn channel_count(&self) -> usize {
        self.shared.mirrors.read().len()
    }

    fn wake_all(&self) {
        for mirror in self.shared.mirrors.read().values() {
            mirror.log.wake();
        }
    }

    fn presence_store(&self) -> Option<Arc<dyn PresenceStore>> {
        Some(Arc::new(self.presence.clone()))
    }

    fn control_bus(&self) -> Option<Arc<dyn ControlBus>> {
        Some(Arc::new(control::Bus(self.shared.clone())))
    }

    fn clear(&self, channel: &ChannelName) -> EngineFuture<()> {
        Box::pin(control::clear(self.shared.clone(), channel.clone()))
    }
}

impl fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngine")
            .field("url", &self.shared.url)
            .field("prefix", &self.shared.config.prefix)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_logged_without_their_password() {
        assert_eq!(redacted("redis://:secret@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(
            redacted("redis+sentinel://u:p@a:1,b:2/mymaster"),
            "redis+sentinel://***@a:1,b:2/mymaster"
        );
        assert_eq!(redacted("redis://h:6379"), "redis://h:6379");
        assert_eq!(redacted("redis://h/0?x=a@b"), "redis://h/0?x=a@b");
        let builder = RedisEngine::builder("redis://:secret@h:6379");
        assert!(!format!("{builder:?}").contains("secret"));
    }
}
