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
//!
//! Behind Redis Sentinel, the URL names the sentinels and the service they
//! monitor, `redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster` (see
//! [`RedisEngine::builder`] for the whole form): the node asks the sentinels
//! where the primary is each time it connects, and moves its connections to
//! a new primary as soon as they announce one (`+switch-master`), so a
//! failover costs a reconnect and no restart ([`RedisStats::failovers`]
//! counts them).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod cursor_key;
mod keys;
mod node;
mod primary;
mod scripts;
mod wire;

use comet_core::engine::{
    Attachment, ChannelLog, CursorKey, Engine, EngineError, EngineFuture, PublishFuture, Resume,
    VOID_EPOCH,
};
use comet_core::{ChannelName, HistoryPolicy, IdempotencyKey, Payload, Position};
use cursor_key::SharedKey;
use keys::ChannelKeys;
use node::{Failure, Mirror, Refresh};
use wire::State;
use primary::{BadUrl, Primary};
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
use tokio::sync::{mpsc, oneshot, watch, Notify};

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
#[derive(Clone)]
pub struct RedisEngineBuilder {
    url: String,
    config: Config,
}

impl fmt::Debug for RedisEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngineBuilder")
            .field("url", &redacted(&self.url))
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

#[derive(Debug, Clone)]
struct Config {
    prefix: String,
    history: HistoryPolicy,
    timeout: Duration,
    mirror_idle: Duration,
    idle_ttl: Duration,
    idempotency_window: Duration,
    queue: usize,
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
    /// Whether the node's pub/sub connection is up (its mirrors are being
    /// loaded, or are current).
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
    /// Sentinel named (a `redis+sentinel://` URL; a failover).
    pub failovers: u64,
}

#[derive(Default)]
struct Counters {
    malformed: AtomicU64,
    refreshes: AtomicU64,
    epochs_renewed: AtomicU64,
    reconnects: AtomicU64,
    refused: AtomicU64,
    failed_reads: AtomicU64,
    failovers: AtomicU64,
}

/// The command connection: multiplexed (concurrent calls are pipelined),
/// with its generation and the primary it reaches.
#[derive(Clone)]
struct Commands {
    generation: u64,
    /// None until Sentinel first named the primary.
    connection: Option<(ConnectionManager, redis::Client)>,
}

/// What the engine handles and its task share.
struct Shared {
    config: Config,
    /// The URL it was built from, without a password (for `Debug`).
    url: String,
    /// Where the primary is: the node's task asks at each connect.
    primary: Primary,
    /// Commands and scripts. Replaced when Redis stops answering on it (a
    /// connection that died in silence would otherwise time out every call
    /// for good) or answers that it is no longer the primary, and when the
    /// node's task finds the primary elsewhere (see [`Shared::follow`]).
    commands: watch::Sender<Commands>,
    commands_config: redis::aio::ConnectionManagerConfig,
    scripts: scripts::Scripts,
    /// The server knows script flags (Redis 7 and later), as found at connect.
    script_flags: AtomicBool,
    /// The server may evict keys before they expire (a `maxmemory-policy`
    /// other than `noeviction`), as found at connect: a history may then end
    /// before its keys' TTL.
    evicting: AtomicBool,
    /// The key that tags cursors, as Redis holds it for every node; fixed
    /// once known (a node restores it where Redis lost it).
    cursor_key: SharedKey,
    /// The key before it, whose cursors still verify (see
    /// `Engine::previous_cursor_key`).
    previous_cursor_key: SharedKey,
    /// Asks the task to reconnect (a command found the server no longer the
    /// primary, or Sentinel announced another one): its pub/sub connection
    /// is likely on the old one too.
    reconnect: Notify,
    /// How many times a reconnect was asked for: the task acts on those
    /// asked since its connect began, not on a permit left from before.
    reconnects_asked: AtomicU64,
    mirrors: RwLock<HashMap<ChannelName, Arc<Mirror>>>,
    /// The pub/sub connection is up and every mirror is current.
    connected: AtomicBool,
    dropped: AtomicBool,
    /// A round of key TTL refreshes is under way (one at a time).
    touching: AtomicBool,
    /// A read of the cursor key is under way (one at a time).
    keying: AtomicBool,
    requests: mpsc::Sender<Refresh>,
    stats: Counters,
}

struct Handle {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    /// Listens for Sentinel's announcements of a new primary (behind
    /// Sentinel only).
    watch: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.dropped.store(true, Ordering::SeqCst);
        self.task.abort();
        if let Some(watch) = &self.watch {
            watch.abort();
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
            BuildErrorKind::Sentinel(_) | BuildErrorKind::Prefix(_) => None,
        }
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
    ///   sentinels are asked without a password.
    ///
    /// [`build`](RedisEngineBuilder::build) checks the URL.
    pub fn builder(url: impl Into<String>) -> RedisEngineBuilder {
        RedisEngineBuilder {
            url: url.into(),
            config: Config {
                prefix: DEFAULT_PREFIX.to_owned(),
                history: HistoryPolicy::default(),
                timeout: DEFAULT_TIMEOUT,
                mirror_idle: DEFAULT_MIRROR_IDLE,
                idle_ttl: comet_core::DEFAULT_IDLE_TTL,
                idempotency_window: comet_core::DEFAULT_IDEMPOTENCY_WINDOW,
                queue: DEFAULT_QUEUE,
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
            reconnects: stats.reconnects.load(Ordering::Relaxed),
            refused: stats.refused.load(Ordering::Relaxed),
            failed_reads: stats.failed_reads.load(Ordering::Relaxed),
            failovers: stats.failovers.load(Ordering::Relaxed),
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

    /// Builds the engine and starts its task; it connects in the background,
    /// so this succeeds whether or not Redis (or Sentinel) is up yet.
    ///
    /// # Errors
    ///
    /// A malformed URL (for a `redis+sentinel://` one the error says what
    /// is wrong with it), or a key prefix holding `{` or `}`.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn build(self) -> Result<RedisEngine, BuildError> {
        if self.config.prefix.contains(['{', '}']) {
            return Err(BuildError(BuildErrorKind::Prefix(self.config.prefix)));
        }
        let url_error = |error| BuildError(BuildErrorKind::Url(error));
        let primary = Primary::open(&self.url).map_err(|bad| BuildError(bad.into()))?;
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.timeout))
            // The engine's own timeout governs every call (see `invoke`).
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        // Behind Sentinel, the node's task opens it once the sentinels named
        // the primary.
        let connection = match &primary {
            Primary::Direct(client) => Some((
                ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())
                    .map_err(url_error)?,
                client.clone(),
            )),
            Primary::Sentinel(_) => None,
        };
        let (commands, _) = watch::channel(Commands {
            generation: 0,
            connection,
        });
        let (requests, receiver) = mpsc::channel(self.config.queue);
        let shared = Arc::new(Shared {
            url: redacted(&self.url),
            config: self.config,
            primary,
            commands,
            commands_config: manager,
            scripts: scripts::Scripts::new(),
            script_flags: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            cursor_key: SharedKey::default(),
            previous_cursor_key: SharedKey::default(),
            reconnect: Notify::new(),
            reconnects_asked: AtomicU64::new(0),
            mirrors: RwLock::default(),
            connected: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            touching: AtomicBool::new(false),
            keying: AtomicBool::new(false),
            requests,
            stats: Counters::default(),
        });
        let task = tokio::spawn(node::run(shared.clone(), receiver));
        let watch = matches!(shared.primary, Primary::Sentinel(_))
            .then(|| tokio::spawn(primary::watch(shared.clone())));
        Ok(RedisEngine {
            _handle: Arc::new(Handle {
                shared: shared.clone(),
                task,
                watch,
            }),
            shared,
        })
    }
}

/// The most entries one read returns, and about the most payload bytes: a
/// channel with a long history of large messages loads in pages, none of
/// which holds the command connection for long.
const PAGE_ENTRIES: usize = 256;
const PAGE_BYTES: usize = 256 << 10;

/// What a failed command says about the connection it ran on.
pub(crate) enum Verdict {
    /// The connection died (or never came up): a fresh one may well work
    /// at once, and what was not sent can be sent again.
    Dead,
    /// The server answered that it cannot take writes or commands now
    /// (`READONLY`: it is a replica now, as after a failover behind a
    /// stable address; `MASTERDOWN`; `LOADING`): the node must reach the
    /// primary again, on new connections.
    NotPrimary,
    /// The server refused this command alone (`OOM`, a script error about
    /// one channel's keys): the connection is fine.
    Refused,
}

pub(crate) fn verdict(error: &redis::RedisError) -> Verdict {
    // Redis 6 reports an error raised inside a script under the code `ERR`,
    // with the original code in the text.
    let not_primary = ["READONLY", "MASTERDOWN", "LOADING"];
    let quoted = |text: &str| {
        not_primary.iter().any(|code| {
            text.starts_with(code)
                || text.contains(&format!(" {code} "))
                || text.contains(&format!("-{code} "))
        })
    };
    match error.code() {
        Some(code) if not_primary.contains(&code) => Verdict::NotPrimary,
        Some(_) if error.detail().is_some_and(quoted) => Verdict::NotPrimary,
        Some(_) => Verdict::Refused,
        None if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_unrecoverable_error() =>
        {
            Verdict::Dead
        }
        None => Verdict::Refused,
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

    /// Asks the node's task to reconnect both connections.
    pub(crate) fn ask_reconnect(&self) {
        self.reconnects_asked.fetch_add(1, Ordering::SeqCst);
        self.reconnect.notify_one();
    }

    /// The command connection and its generation. Behind Sentinel, until
    /// the node's task first found the primary, waits for it (up to the
    /// timeout).
    async fn commands(&self) -> Result<(u64, ConnectionManager), Failure> {
        let current = |commands: &Commands| {
            commands
                .connection
                .as_ref()
                .map(|(connection, _)| (commands.generation, connection.clone()))
        };
        if let Some(found) = current(&self.commands.borrow()) {
            return Ok(found);
        }
        let mut changes = self.commands.subscribe();
        let known = async {
            let commands = changes.wait_for(|c| c.connection.is_some()).await;
            commands.ok().and_then(|commands| current(&commands))
        };
        match tokio::time::timeout(self.config.timeout, known).await {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(Failure::Backplane(
                "the redis engine has stopped".to_owned(),
            )),
            Err(_) => Err(Failure::Backplane(format!(
                "redis sentinel named no primary within {:?}",
                self.config.timeout
            ))),
        }
    }

    /// The command connection's generation.
    fn generation(&self) -> u64 {
        self.commands.borrow().generation
    }

    /// Where the command connection leads (none yet behind Sentinel before
    /// the node first connected).
    fn primary_address(&self) -> Option<redis::ConnectionAddr> {
        self.commands
            .borrow()
            .connection
            .as_ref()
            .map(|(_, client)| client.get_connection_info().addr().clone())
    }

    /// Runs the script `make(retry)` builds, with the engine's timeout.
    ///
    /// A command that failed because its connection had died (Redis
    /// restarted while the node was idle, say) or reached a server that is
    /// no longer the primary was not carried out: it is sent once more, at
    /// once, on a fresh connection, so that no request fails for a
    /// connection that died while Redis was away. `retry` tells the script
    /// it is that second attempt (the publish script then checks whether the
    /// first one landed after all).
    async fn invoke<'a>(
        &'a self,
        make: impl Fn(bool) -> redis::ScriptInvocation<'a>,
    ) -> Result<redis::Value, Failure> {
        let mut retry = false;
        loop {
            let (generation, mut connection) = self.commands().await?;
            let invocation = make(retry);
            let result = tokio::time::timeout(
                self.config.timeout,
                invocation.invoke_async::<redis::Value>(&mut connection),
            )
            .await;
            let error = match result {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
                Err(_) => {
                    // It may have been carried out: not sent again.
                    self.reconnect_commands(generation);
                    return Err(Failure::Backplane(format!(
                        "redis did not answer within {:?}",
                        self.config.timeout
                    )));
                }
            };
            match verdict(&error) {
                Verdict::Refused => return Err(Failure::Channel(format!("redis: {error}"))),
                Verdict::Dead => self.reconnect_commands(generation),
                Verdict::NotPrimary => {
                    self.reconnect_commands(generation);
                    // Its pub/sub connection is on that server too.
                    self.ask_reconnect();
                }
            }
            if retry {
                return Err(Failure::Backplane(format!("redis: {error}")));
            }
            retry = true;
        }
    }

    /// Opens a new command connection (lazily), to the same server, in
    /// place of the one of `generation`, unless another call did already.
    /// (Only the node's task asks where the primary is, at its next
    /// connect: failing calls never query Sentinel.)
    fn reconnect_commands(&self, generation: u64) {
        self.commands.send_if_modified(|commands| {
            let Some((_, client)) = &commands.connection else {
                return false;
            };
            if commands.generation != generation {
                return false;
            }
            match ConnectionManager::new_lazy_with_config(
                client.clone(),
                self.commands_config.clone(),
            ) {
                Ok(fresh) => {
                    commands.connection = Some((fresh, client.clone()));
                    commands.generation += 1;
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(error) => {
                    tracing::warn!(%error, "could not make a new redis connection");
                    false
                }
            }
        });
    }

    /// Moves the command connection to `primary` (the node's task just
    /// found it there) if it leads elsewhere: a new one, lazily, of the next
    /// generation.
    fn follow(&self, primary: &redis::Client) {
        let to = primary.get_connection_info().addr();
        self.commands.send_if_modified(|commands| {
            let from = commands
                .connection
                .as_ref()
                .map(|(_, client)| client.get_connection_info().addr());
            if from == Some(to) {
                return false;
            }
            match ConnectionManager::new_lazy_with_config(
                primary.clone(),
                self.commands_config.clone(),
            ) {
                Ok(fresh) => {
                    if let Some(from) = from {
                        tracing::warn!(%from, %to, "the primary moved: following it");
                        self.stats.failovers.fetch_add(1, Ordering::Relaxed);
                    }
                    commands.connection = Some((fresh, primary.clone()));
                    commands.generation += 1;
                    true
                }
                Err(error) => {
                    tracing::warn!(%error, "could not make a new redis connection");
                    false
                }
            }
        });
    }

    /// A channel's epoch, newest offset and (up to `max` of) its history:
    /// what follows `known` when Redis still has it all, else the newest.
    /// Read in pages (each one script call of bounded size); a page of
    /// another epoch than the first starts the read over.
    async fn read(
        &self,
        keys: &ChannelKeys,
        known: Option<Position>,
        max: usize,
    ) -> Result<State, Failure> {
        let mut state = self.read_page(keys, known, max).await?;
        // Up to the head the first page saw: what was published since comes
        // in announcements, so a busy channel cannot keep the read going.
        let target = state.last;
        for _ in 0..=max {
            let Some(newest) = state.entries.last() else {
                break;
            };
            if newest.offset >= target {
                break;
            }
            let after = Position::new(keys.channel(), state.epoch, newest.offset);
            let page = self.read_page(keys, Some(after), max).await?;
            if page.epoch != state.epoch {
                // A new epoch meanwhile: what was read says nothing of it.
                return self.read_page(keys, None, max).await;
            }
            // Stops after a page that does not follow on (the history moved
            // past the reader meanwhile: the mirror gets an exact gap for
            // the hole) or brings nothing up to the target.
            let follows = page
                .entries
                .first()
                .is_some_and(|first| first.offset == newest.offset + 1 && first.offset <= target);
            let before = state.entries.len();
            state.entries.extend(
                page.entries
                    .into_iter()
                    .filter(|entry| entry.offset <= target),
            );
            if !follows || state.entries.len() == before {
                break;
            }
        }
        Ok(state)
    }

    async fn read_page(
        &self,
        keys: &ChannelKeys,
        known: Option<Position>,
        max: usize,
    ) -> Result<State, Failure> {
        let known_epoch = known.map_or(String::new(), |p| p.epoch.to_string());
        let value = self
            .invoke(|_| {
                let mut invocation = self.scripts.read.key(&keys.meta);
                invocation
                    .key(&keys.log)
                    .arg(&known_epoch)
                    .arg(known.map_or(0, |p| p.offset))
                    .arg(max)
                    .arg(PAGE_ENTRIES)
                    .arg(PAGE_BYTES)
                    .arg(millis(self.config.idle_ttl));
                invocation
            })
            .await?;
        State::parse(value, &self.stats.malformed)
            .map_err(|reason| Failure::Channel(format!("channel state in Redis: {reason}")))
    }

    /// Moves a channel from `old` to a new epoch (if no node did already),
    /// and announces it to every node.
    async fn new_epoch(&self, keys: &ChannelKeys, old: u64) -> Result<(), Failure> {
        let new = comet_core::engine::random_epoch().to_string();
        let old = old.to_string();
        self.invoke(|_| {
            let mut invocation = self.scripts.new_epoch.key(&keys.meta);
            invocation
                .key(&keys.log)
                .arg(&old)
                .arg(&new)
                .arg(&keys.pubsub);
            invocation
        })
        .await
        .map(drop)
    }

    /// Learns the key that tags cursors from Redis, putting this node's
    /// back if Redis has none (the first node, or Redis lost its data: the
    /// node that knew it puts it back). A node whose key Redis no longer
    /// holds (another node put a fresh one first) takes Redis's, and keeps
    /// honouring its own as the previous one; so do the others, through
    /// Redis.
    async fn load_cursor_key(&self) -> Result<(), Failure> {
        let ours = self.cursor_key.get();
        let ours_hex = ours.map(cursor_key::hex).unwrap_or_default();
        let fresh_hex = cursor_key::hex(CursorKey::random());
        let name = format!("{}:cursor-key", self.config.prefix);
        let previous_name = format!("{name}:previous");
        let value = self
            .invoke(|_| {
                let mut invocation = self.scripts.cursor_key.key(&name);
                invocation
                    .key(&previous_name)
                    .arg(&ours_hex)
                    .arg(&fresh_hex);
                invocation
            })
            .await?;
        let text = |value: &redis::Value| {
            wire::bulk(value)
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .map(str::to_owned)
        };
        let (theirs, previous) = match &value {
            redis::Value::Array(parts) if parts.len() == 2 => (
                text(&parts[0]).as_deref().and_then(cursor_key::parse_key),
                text(&parts[1]).as_deref().and_then(cursor_key::parse_key),
            ),
            _ => (None, None),
        };
        let theirs =
            theirs.ok_or_else(|| Failure::Channel(format!("{name} does not hold a cursor key")))?;
        match ours {
            Some(ours) if ours != theirs => {
                tracing::warn!(
                    "redis holds another cursor key than this node's (redis lost it, and \
                     another node put a fresh one first): taking it, and honouring the old one"
                );
                self.previous_cursor_key.set(ours);
            }
            _ => {
                if let Some(previous) = previous {
                    self.previous_cursor_key.set(previous);
                }
            }
        }
        self.cursor_key.set(theirs);
        Ok(())
    }

    /// Loads the cursor key if this node does not know it yet (before its
    /// task first connected), so that no cursor goes out untagged.
    async fn ensure_cursor_key(&self) -> Result<(), EngineError> {
        if self.cursor_key.get().is_none() {
            self.load_cursor_key()
                .await
                .map_err(|failure| unavailable(failure.to_string()))?;
        }
        Ok(())
    }

    /// Keeps the keys of channels in use from expiring (best effort: a
    /// failure shows again at the next publish or read).
    async fn touch(&self, mirrors: &[Arc<Mirror>]) {
        let ttl = self.ttl_ms().max(millis(self.config.idle_ttl));
        for chunk in mirrors.chunks(256) {
            let touches = chunk.iter().map(|mirror| {
                self.invoke(move |_| {
                    let mut invocation = self.scripts.touch.key(&mirror.keys.meta);
                    invocation.key(&mirror.keys.log).arg(ttl);
                    invocation
                })
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
    fn attach(&self, channel: &ChannelName) -> (Arc<Mirror>, Attachment) {
        if let Some(mirror) = self.mirrors().get(channel) {
            return (mirror.clone(), mirror.log.attach());
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
        (mirror.clone(), mirror.log.attach())
    }

    /// Asks the task to bring `channel`'s mirror up to date (and, with an
    /// issued cursor ahead of it, to move the channel to a new epoch).
    async fn refresh(
        &self,
        channel: &ChannelName,
        resume: Option<Resume>,
    ) -> Result<(), EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .try_send(Refresh {
                channel: channel.clone(),
                resume,
                reply,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    unavailable("the node has too many channel loads waiting; retry later")
                }
                mpsc::error::TrySendError::Closed(_) => unavailable("the redis engine has stopped"),
            })?;
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
            // The hub tags the cursor of this publish with the shared key.
            shared.ensure_cursor_key().await?;
            let keys = ChannelKeys::new(&shared.config.prefix, &channel);
            let remembered = idempotency_key.as_ref().map(|key| keys.idempotency(key));
            let history = shared.config.history;
            let epoch = comet_core::engine::random_epoch().to_string();
            // Drawn once: a retry of this publish carries the same, so that
            // the script can tell whether the first attempt landed.
            let identity = comet_core::engine::random_epoch().max(1).to_string();
            let flags = shared.script_flags.load(Ordering::Relaxed);
            let reply = shared
                .invoke(|retry| {
                    let mut invocation = shared.scripts.publish(flags).key(&keys.meta);
                    invocation.key(&keys.log);
                    if let Some(remembered) = &remembered {
                        invocation.key(remembered);
                    }
                    invocation
                        .arg(&epoch)
                        .arg(wire::kind_code(payload.kind()))
                        .arg(payload.event_name().unwrap_or(""))
                        .arg(payload.data().as_ref())
                        .arg(history.max_messages)
                        .arg(history.max_age.map_or(0, |age| millis(age).max(1)))
                        .arg(shared.ttl_ms())
                        .arg(&keys.pubsub)
                        .arg(&identity)
                        .arg(millis(shared.config.idempotency_window).max(1))
                        .arg(if retry { "1" } else { "0" });
                    invocation
                })
                .await
                .map_err(|failure| unavailable(failure.to_string()))?;
            let redis::Value::Array(parts) = &reply else {
                return Err(unavailable("unexpected reply to the publish script"));
            };
            let numbers: Vec<u64> = parts.iter().filter_map(wire::integer).collect();
            let [epoch, offset, _time_ms, _repeated, identity] = numbers[..] else {
                return Err(unavailable("unexpected reply to the publish script"));
            };
            // Local subscribers get the message from the announcement, like
            // everyone else's: one writer per mirror keeps offsets in order,
            // and the message is built once per node, there.
            Ok(Position::new(&channel, epoch, offset).with_identity(identity))
        })
    }

    fn attach(&self, channel: &ChannelName, from: Option<Resume>) -> EngineFuture<Attachment> {
        let (mirror, attachment) = self.shared.attach(channel);
        let current = mirror.current.load(Ordering::SeqCst);
        let head = mirror.log.head();
        // A cursor from another epoch or ahead of this mirror may come from a
        // node further along: catch up with Redis before judging it. Only a
        // cursor a node issued is worth a read: a current mirror answers any
        // other one itself (with a gap), so that made-up cursors cost Redis
        // nothing.
        // An issued cursor that names another message at its offset than
        // the mirror holds proves lost writes: the task moves the channel to
        // a new epoch.
        let elsewhere =
            from.is_some_and(|r| r.position.epoch != head.epoch || r.position.offset > head.offset);
        let issued = from.is_some_and(|r| r.issued);
        let contradicted = from.is_some_and(|r| node::contradicts(&mirror.log, &r));
        if current && (!elsewhere || !issued) && !contradicted {
            return Box::pin(std::future::ready(Ok(attachment)));
        }
        let shared = self.shared.clone();
        let channel = channel.clone();
        let resume = from.filter(|r| r.issued);
        Box::pin(async move {
            shared.refresh(&channel, resume).await?;
            Ok(attachment)
        })
    }

    fn cursor_key(&self) -> Option<CursorKey> {
        self.shared.cursor_key.get()
    }

    fn previous_cursor_key(&self) -> Option<CursorKey> {
        self.shared.previous_cursor_key.get()
    }

    fn head(&self, channel: &ChannelName) -> EngineFuture<Position> {
        let shared = self.shared.clone();
        let channel = channel.clone();
        Box::pin(async move {
            shared.ensure_cursor_key().await?;
            let keys = ChannelKeys::new(&shared.config.prefix, &channel);
            let state = shared
                .read(&keys, None, 0)
                .await
                .map_err(|failure| unavailable(failure.to_string()))?;
            // A channel Redis has nothing of is in the void, as seen now.
            let identity = if state.epoch == VOID_EPOCH {
                state.now
            } else {
                state.newest
            };
            Ok(Position::new(&channel, state.epoch, state.last).with_identity(identity))
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
