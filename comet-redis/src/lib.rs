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
//! use comet::{HistoryPolicy, Hub};
//! use comet::redis::RedisEngine;
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

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod keys;
mod node;
mod scripts;
mod wire;

use comet_core::{
    ChannelLog, ChannelName, Engine, EngineError, EngineFuture, HistoryPolicy, Payload, Position,
    PublishFuture,
};
use keys::ChannelKeys;
use node::{Failure, Mirror, Refresh, State};
use redis::aio::ConnectionManager;
use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    time::Duration,
};
use tokio::sync::{mpsc, oneshot};

/// How long a backplane operation may take by default (a publish, or
/// loading a channel for a new subscriber) before it fails with 503.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long by default a node keeps mirroring a channel nobody here uses.
pub const DEFAULT_MIRROR_IDLE: Duration = Duration::from_secs(10);
/// The default prefix of every Redis key and pub/sub channel comet uses.
pub const DEFAULT_PREFIX: &str = "comet";

/// The engine; hand it to [`HubBuilder::engine`](comet_core::HubBuilder::engine).
///
/// Cheap to clone; clones share the node's mirrors and connections. Dropping
/// the last one stops its background task.
#[derive(Clone)]
pub struct RedisEngine {
    shared: Arc<Shared>,
    /// Stops the task when the last handle goes.
    _handle: Arc<Handle>,
}

/// Configures a [`RedisEngine`].
#[must_use]
#[derive(Debug, Clone)]
pub struct RedisEngineBuilder {
    url: String,
    config: Config,
}

#[derive(Debug, Clone)]
struct Config {
    prefix: String,
    history: HistoryPolicy,
    timeout: Duration,
    mirror_idle: Duration,
    idle_ttl: Duration,
}

impl Config {
    /// How often the task looks for unused mirrors and refreshes key TTLs.
    fn sweep_every(&self) -> Duration {
        (self.mirror_idle / 2)
            .min(self.idle_ttl / 4)
            .max(Duration::from_millis(100))
    }

    /// How long a channel's keys live after its last publish (none without a
    /// maximum age: the history is then kept until evicted by count, as the
    /// in-memory engine keeps it).
    fn key_ttl(&self) -> Option<Duration> {
        self.history
            .max_age
            .map(|age| age.saturating_add(self.idle_ttl))
    }
}

/// Counters of the engine's own events, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RedisStats {
    /// Whether the node's pub/sub connection is up and its mirrors current.
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
}

#[derive(Default)]
struct Counters {
    malformed: AtomicU64,
    refreshes: AtomicU64,
    epochs_renewed: AtomicU64,
}

/// What the engine handles and its task share.
struct Shared {
    config: Config,
    client: redis::Client,
    /// Commands and scripts (multiplexed: concurrent calls are pipelined).
    /// Replaced when Redis stops answering on it, since a connection that
    /// died in silence would otherwise time out every call for good.
    commands: RwLock<ConnectionManager>,
    commands_config: redis::aio::ConnectionManagerConfig,
    scripts: scripts::Scripts,
    mirrors: RwLock<HashMap<ChannelName, Arc<Mirror>>>,
    /// The pub/sub connection is up and every mirror is current.
    connected: AtomicBool,
    dropped: AtomicBool,
    /// A round of key TTL refreshes is under way (one at a time).
    touching: AtomicBool,
    requests: mpsc::UnboundedSender<Refresh>,
    stats: Counters,
}

struct Handle {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.dropped.store(true, Ordering::SeqCst);
        self.task.abort();
    }
}

/// Why the engine could not be built.
#[derive(Debug)]
pub struct BuildError(redis::RedisError);

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad Redis URL: {}", self.0)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A backplane failure, as the hub reports it.
#[derive(Debug)]
struct Unavailable(String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Milliseconds, saturating (Redis takes at most `i64::MAX`).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .min(i64::MAX as u64)
}

fn unavailable(reason: impl Into<String>) -> EngineError {
    Box::new(Unavailable(reason.into()))
}

impl RedisEngine {
    /// Configures an engine on the Redis at `url` (`redis://host:port/db`;
    /// see the `redis` crate for the URL forms).
    pub fn builder(url: impl Into<String>) -> RedisEngineBuilder {
        RedisEngineBuilder {
            url: url.into(),
            config: Config {
                prefix: DEFAULT_PREFIX.to_owned(),
                history: HistoryPolicy::default(),
                timeout: DEFAULT_TIMEOUT,
                mirror_idle: DEFAULT_MIRROR_IDLE,
                idle_ttl: comet_core::DEFAULT_IDLE_TTL,
            },
        }
    }

    /// The engine's counters.
    pub fn stats(&self) -> RedisStats {
        let stats = &self.shared.stats;
        RedisStats {
            connected: self.shared.connected.load(Ordering::SeqCst),
            mirrors: self.shared.mirrors().len(),
            malformed: stats.malformed.load(Ordering::Relaxed),
            refreshes: stats.refreshes.load(Ordering::Relaxed),
            epochs_renewed: stats.epochs_renewed.load(Ordering::Relaxed),
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
    /// share one Redis between applications.
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

    /// Builds the engine and starts its task; it connects in the background,
    /// so this succeeds whether or not Redis is up yet.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn build(self) -> Result<RedisEngine, BuildError> {
        let client = redis::Client::open(self.url.as_str()).map_err(BuildError)?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.timeout))
            // The engine's own timeout governs every call (see `invoke`).
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())
            .map_err(BuildError)?;
        let (requests, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            config: self.config,
            client,
            commands: RwLock::new(commands),
            commands_config: manager,
            scripts: scripts::Scripts::new(),
            mirrors: RwLock::default(),
            connected: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            touching: AtomicBool::new(false),
            requests,
            stats: Counters::default(),
        });
        let task = tokio::spawn(node::run(shared.clone(), receiver));
        Ok(RedisEngine {
            _handle: Arc::new(Handle {
                shared: shared.clone(),
                task,
            }),
            shared,
        })
    }
}

impl Shared {
    fn mirrors(&self) -> RwLockReadGuard<'_, HashMap<ChannelName, Arc<Mirror>>> {
        self.mirrors.read().unwrap_or_else(|e| e.into_inner())
    }

    fn mirrors_mut(&self) -> RwLockWriteGuard<'_, HashMap<ChannelName, Arc<Mirror>>> {
        self.mirrors.write().unwrap_or_else(|e| e.into_inner())
    }

    fn ttl_ms(&self) -> u64 {
        self.config
            .key_ttl()
            .map_or(0, |ttl| ttl.as_millis() as u64)
    }

    /// Runs a script with the engine's timeout.
    async fn invoke(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<redis::Value, Failure> {
        let mut connection = self
            .commands
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match tokio::time::timeout(
            self.config.timeout,
            invocation.invoke_async::<redis::Value>(&mut connection),
        )
        .await
        {
            Ok(Ok(value)) => Ok(value),
            // Redis answered, with an error about this channel's keys (or a
            // passing state such as LOADING): the connection is fine.
            Ok(Err(error)) if error.code().is_some() => {
                Err(Failure::Channel(format!("redis: {error}")))
            }
            Ok(Err(error)) => {
                self.reconnect_commands();
                Err(Failure::Backplane(format!("redis: {error}")))
            }
            Err(_) => {
                self.reconnect_commands();
                Err(Failure::Backplane(format!(
                    "redis did not answer within {:?}",
                    self.config.timeout
                )))
            }
        }
    }

    /// Opens a new command connection (lazily) in place of the current one.
    fn reconnect_commands(&self) {
        match ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            self.commands_config.clone(),
        ) {
            Ok(fresh) => *self.commands.write().unwrap_or_else(|e| e.into_inner()) = fresh,
            Err(error) => tracing::warn!(%error, "could not make a new redis connection"),
        }
    }

    /// A channel's epoch, newest offset and (up to `max` of) its history:
    /// what follows `known` when Redis still has it all, else the newest.
    async fn read(
        &self,
        keys: &ChannelKeys,
        known: Option<Position>,
        max: usize,
    ) -> Result<State, Failure> {
        let mut invocation = self.scripts.read.key(&keys.meta);
        invocation
            .key(&keys.log)
            .arg(comet_core::random_epoch().to_string())
            .arg(known.map_or(String::new(), |p| p.epoch.to_string()))
            .arg(known.map_or(0, |p| p.offset))
            .arg(max)
            .arg(millis(self.config.idle_ttl));
        State::parse(self.invoke(invocation).await?, &self.stats.malformed)
    }

    /// Moves a channel from `old` to a new epoch (if no node did already).
    async fn new_epoch(&self, keys: &ChannelKeys, old: u64) -> Result<(), Failure> {
        let mut invocation = self.scripts.new_epoch.key(&keys.meta);
        invocation
            .key(&keys.log)
            .arg(old.to_string())
            .arg(comet_core::random_epoch().to_string());
        self.invoke(invocation).await.map(drop)
    }

    /// Keeps the keys of channels in use from expiring (best effort: a
    /// failure shows again at the next publish or read).
    async fn touch(&self, mirrors: &[Arc<Mirror>]) {
        let ttl = self.ttl_ms().max(millis(self.config.idle_ttl));
        for chunk in mirrors.chunks(256) {
            let touches = chunk.iter().map(|mirror| async move {
                let mut invocation = self.scripts.touch.key(&mirror.keys.meta);
                invocation.key(&mirror.keys.log).arg(ttl);
                self.invoke(invocation).await
            });
            for result in futures_util::future::join_all(touches).await {
                if let Err(error) = result {
                    tracing::debug!(%error, "could not refresh key TTLs");
                    return;
                }
            }
        }
    }

    /// The mirror of `channel`, created if needed, with one more subscriber
    /// counted (under the map's lock, so that no sweep drops it meanwhile).
    fn attach(&self, channel: &ChannelName) -> Arc<Mirror> {
        if let Some(mirror) = self.mirrors().get(channel) {
            mirror.log.attach();
            return mirror.clone();
        }
        let mut mirrors = self.mirrors_mut();
        let mirror = mirrors.entry(channel.clone()).or_insert_with(|| {
            Arc::new(Mirror {
                log: Arc::new(ChannelLog::with_epoch(
                    channel.clone(),
                    self.config.history,
                    0,
                )),
                keys: ChannelKeys::new(&self.config.prefix, channel),
                current: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
            })
        });
        mirror.log.attach();
        mirror.clone()
    }

    /// Asks the task to bring `channel`'s mirror up to date.
    async fn refresh(&self, channel: &ChannelName) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Refresh {
                channel: channel.clone(),
                reply,
            })
            .map_err(|_| unavailable("the redis engine has stopped"))?;
        match tokio::time::timeout(self.config.timeout, answer).await {
            Ok(Ok(result)) => result.map_err(unavailable),
            Ok(Err(_)) => Err(unavailable("the redis engine has stopped")),
            Err(_) => Err(unavailable(format!(
                "redis did not answer within {:?}",
                self.config.timeout
            ))),
        }
    }
}

/// Gives a subscriber count back if attaching does not complete.
struct Counted(Option<Arc<ChannelLog>>);

impl Counted {
    fn keep(mut self) -> Arc<ChannelLog> {
        self.0.take().expect("kept once")
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if let Some(log) = &self.0 {
            log.detach();
        }
    }
}

impl Engine for RedisEngine {
    fn publish(&self, channel: &ChannelName, payload: Payload) -> PublishFuture {
        let shared = self.shared.clone();
        let channel = channel.clone();
        Box::pin(async move {
            let keys = ChannelKeys::new(&shared.config.prefix, &channel);
            let history = shared.config.history;
            let mut invocation = shared.scripts.publish.key(&keys.meta);
            invocation
                .key(&keys.log)
                .arg(comet_core::random_epoch().to_string())
                .arg(wire::kind_code(payload.kind()))
                .arg(payload.event_name().unwrap_or(""))
                .arg(payload.data().as_ref())
                .arg(history.max_messages)
                .arg(history.max_age.map_or(0, |age| millis(age).max(1)))
                .arg(shared.ttl_ms())
                .arg(&keys.pubsub);
            let reply = shared
                .invoke(invocation)
                .await
                .map_err(|failure| unavailable(failure.to_string()))?;
            let redis::Value::Array(parts) = &reply else {
                return Err(unavailable("unexpected reply to the publish script"));
            };
            let numbers: Vec<u64> = parts.iter().filter_map(wire::integer).collect();
            let [epoch, offset, _time_ms] = numbers[..] else {
                return Err(unavailable("unexpected reply to the publish script"));
            };
            // Local subscribers get the message from the announcement, like
            // everyone else's: one writer per mirror keeps offsets in order,
            // and the message is built once per node, there.
            Ok(Position::new(&channel, epoch, offset))
        })
    }

    fn attach(
        &self,
        channel: &ChannelName,
        from: Option<Position>,
    ) -> EngineFuture<Arc<ChannelLog>> {
        let mirror = self.shared.attach(channel);
        let counted = Counted(Some(mirror.log.clone()));
        let current = mirror.current.load(Ordering::SeqCst);
        let head = mirror.log.head();
        // A cursor from another epoch or ahead of this mirror may come from a
        // node further along: catch up with Redis before judging it.
        let behind = from.is_some_and(|p| p.epoch != head.epoch || p.offset > head.offset);
        if current && !behind {
            return Box::pin(std::future::ready(Ok(counted.keep())));
        }
        let shared = self.shared.clone();
        let channel = channel.clone();
        Box::pin(async move {
            shared.refresh(&channel).await?;
            Ok(counted.keep())
        })
    }

    fn head(&self, channel: &ChannelName) -> EngineFuture<Position> {
        let shared = self.shared.clone();
        let channel = channel.clone();
        Box::pin(async move {
            let keys = ChannelKeys::new(&shared.config.prefix, &channel);
            let state = shared
                .read(&keys, None, 0)
                .await
                .map_err(|failure| unavailable(failure.to_string()))?;
            Ok(Position::new(&channel, state.epoch, state.last))
        })
    }

    fn existing(&self, channel: &ChannelName) -> Option<Arc<ChannelLog>> {
        self.shared.mirrors().get(channel).map(|m| m.log.clone())
    }

    fn channel_count(&self) -> usize {
        self.shared.mirrors().len()
    }

    fn wake_all(&self) {
        for mirror in self.shared.mirrors().values() {
            mirror.log.wake();
        }
    }
}

impl fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngine")
            .field("prefix", &self.shared.config.prefix)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
