//! The backplane: what a node asks of Redis on its command connection, one
//! script (or command) at a time, with the engine's timeout. A publish, a
//! channel's read (in pages) and head, a move to a new epoch (or a clear),
//! the cursor key, key TTL refreshes, presence writes and reads, and the
//! `PUBLISH` of an order all go through [`Backplane::call`] (scripts by way
//! of [`Backplane::invoke`]), which tells a dead connection, or a server that
//! is no longer the primary, from a command Redis refused ([`verdict`]),
//! and sends a command that was not carried out once more on a fresh
//! connection.
//!
//! Beside it: the engine's configuration and counters, and the failures
//! every part reports, since all of them read or count here.

use crate::{
    cursor_key::{self, SharedKey},
    keys::{self, ChannelKeys, PresenceKeys},
    scripts::Scripts,
    wire::{self, Found, Shares, State},
};
use comet_core::engine::{CursorKey, EngineError, VOID_EPOCH};
use comet_core::{ChannelName, HistoryPolicy, IdempotencyKey, Payload, Position};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::sync::{watch, Notify};

/// The engine's settings, as its builder made them.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) prefix: String,
    pub(crate) history: HistoryPolicy,
    pub(crate) timeout: Duration,
    pub(crate) mirror_idle: Duration,
    pub(crate) idle_ttl: Duration,
    pub(crate) idempotency_window: Duration,
    pub(crate) queue: usize,
    /// How long a node's share of presence and subscriber counts lives in
    /// Redis unless the node refreshes it.
    pub(crate) presence_ttl: Duration,
}

impl Config {
    /// How often the task looks for unused mirrors and refreshes key TTLs.
    pub(crate) fn sweep_every(&self) -> Duration {
        (self.mirror_idle / 2)
            .min(self.idle_ttl / 4)
            .max(Duration::from_millis(100))
    }

    /// How long a channel's keys live after its last publish (none without a
    /// maximum age: the history is then kept until evicted by count, as the
    /// in-memory engine keeps it).
    pub(crate) fn key_ttl(&self) -> Option<Duration> {
        self.history
            .max_age
            .map(|age| age.saturating_add(self.idle_ttl))
    }
}

/// The engine's counters (see `RedisStats`), shared by its parts.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) redirects: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) epochs_renewed: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) failed_reads: AtomicU64,
    pub(crate) failovers: AtomicU64,
}

/// Why the task could not do something; either way it becomes a 503.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Redis did not answer (the connection is down, or timed out). On the
    /// pub/sub connection, or while connecting, the task reconnects and
    /// reloads every mirror; in a channel's read it fails that channel alone
    /// (the command connection is replaced, see `Backplane::invoke`).
    Backplane(String),
    /// Redis answered, but not what one channel needs (its keys hold
    /// something else, a script failed on them): that channel alone fails,
    /// and is read again at its next use.
    Channel(String),
    /// A Redis Cluster serves the channel's slot elsewhere now, or is
    /// moving it (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`): nothing was
    /// carried out; the node learns where the slot is, and tries there.
    Moved(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Backplane(reason) | Self::Channel(reason) | Self::Moved(reason) => {
                f.write_str(reason)
            }
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

pub(crate) fn unavailable(reason: impl Into<String>) -> EngineError {
    Box::new(Unavailable(reason.into()))
}

/// A call that took longer than the engine's timeout in all (a retry
/// included, or waiting for something before it).
pub(crate) fn late(timeout: Duration) -> Failure {
    Failure::Backplane(format!("redis did not answer within {timeout:?}"))
}

/// Milliseconds, saturating (Redis takes at most `i64::MAX`).
/// This node's clock, Unix ms: a message's publish time.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .min(i64::MAX as u64)
}

/// A random part of `backoff` (from half to all of it), so that nodes that
/// lost Redis together do not all come back in the same instant.
pub(crate) fn jittered(backoff: Duration) -> Duration {
    let spread = comet_core::engine::random_epoch() % 1024;
    backoff / 2 + backoff / 2 * spread as u32 / 1024
}

/// The most entries one read returns, and about the most payload bytes: a
/// channel with a long history of large messages loads in pages, none of
/// which holds the command connection for long.
const PAGE_ENTRIES: usize = 256;
const PAGE_BYTES: usize = 256 << 10;

/// What a failed command says about the connection it ran on.
enum Verdict {
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
    /// A cluster node serves the command's slot elsewhere, or is moving
    /// it, or the cluster is down: not carried out, and the connection is
    /// fine.
    Elsewhere,
}

fn verdict(error: &redis::RedisError) -> Verdict {
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
        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN") => Verdict::Elsewhere,
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

/// The command connection: multiplexed (concurrent calls are pipelined),
/// with its generation and the primary it reaches.
#[derive(Clone)]
struct Commands {
    generation: u64,
    /// None until Sentinel first named the primary.
    connection: Option<(ConnectionManager, redis::Client)>,
}

/// What [`Backplane::call`] sends: a script, or one plain command.
enum Call<'a> {
    Script(redis::ScriptInvocation<'a>),
    Command(redis::Cmd),
}

impl Call<'_> {
    async fn send(&self, connection: &mut ConnectionManager) -> redis::RedisResult<redis::Value> {
        match self {
            Self::Script(invocation) => invocation.invoke_async(connection).await,
            Self::Command(command) => command.query_async(connection).await,
        }
    }
}

/// The command connection and what the commands on it need.
pub(crate) struct Backplane {
    pub(crate) config: Arc<Config>,
    stats: Arc<Counters>,
    /// Commands and scripts. Replaced when Redis stops answering on it (a
    /// connection that died in silence would otherwise time out every call
    /// for good) or answers that it is no longer the primary, and when the
    /// node's task finds the primary elsewhere (see [`Backplane::follow`]).
    commands: watch::Sender<Commands>,
    commands_config: ConnectionManagerConfig,
    scripts: Scripts,
    /// The server knows script flags (Redis 7 and later), as found at connect.
    script_flags: AtomicBool,
    /// `INFO` has answered since the command connection was made: the
    /// flags above are the server's, not a guess.
    learned: AtomicBool,
    /// On a Redis Cluster: announce with `SPUBLISH`, and name the cursor
    /// key's two keys with one hash tag.
    sharded: bool,
    /// The server may evict keys before they expire (a `maxmemory-policy`
    /// other than `noeviction`), as found at connect: a history may then end
    /// before its keys' TTL.
    evicting: AtomicBool,
    /// The key that tags cursors, as Redis holds it for every node; fixed
    /// once known (a node restores it where Redis lost it).
    pub(crate) cursor_key: SharedKey,
    /// The key before it, whose cursors still verify (see
    /// `Engine::previous_cursor_key`).
    pub(crate) previous_cursor_key: SharedKey,
    /// Asks the task to reconnect (a command found the server no longer the
    /// primary, or Sentinel announced another one): its pub/sub connection
    /// is likely on the old one too.
    pub(crate) reconnect: Notify,
    /// How many times a reconnect was asked for: the task acts on those
    /// asked since its connect began, not on a permit left from before.
    pub(crate) reconnects_asked: AtomicU64,
}

impl Backplane {
    /// A backplane on `direct`, the primary's one address, or (behind
    /// Sentinel, `None`) on none until the node's task finds the primary.
    /// Connects lazily.
    pub(crate) fn new(
        config: Arc<Config>,
        stats: Arc<Counters>,
        direct: Option<&redis::Client>,
        sharded: bool,
    ) -> Result<Self, redis::RedisError> {
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            // The engine's own timeout governs every call (see `invoke`).
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        // Behind Sentinel, the node's task opens it once the sentinels named
        // the primary.
        let connection = match direct {
            Some(client) => Some((
                ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())?,
                client.clone(),
            )),
            None => None,
        };
        let (commands, _) = watch::channel(Commands {
            generation: 0,
            connection,
        });
        Ok(Self {
            config,
            stats,
            commands,
            commands_config: manager,
            scripts: Scripts::new(),
            script_flags: AtomicBool::new(false),
            learned: AtomicBool::new(false),
            sharded,
            evicting: AtomicBool::new(false),
            cursor_key: SharedKey::default(),
            previous_cursor_key: SharedKey::default(),
            reconnect: Notify::new(),
            reconnects_asked: AtomicU64::new(0),
        })
    }

    fn ttl_ms(&self) -> u64 {
        self.config
            .key_ttl()
            .map_or(0, |ttl| ttl.as_millis() as u64)
    }

    /// The shortest life of a channel's history in Redis, from its first
    /// publish (ms): a channel's keys live at least their TTL after it;
    /// where they never expire, only a lost Redis ends a history, and the
    /// idle TTL bounds how long is trusted. None when the server may evict
    /// keys before they expire (a `maxmemory-policy` other than
    /// `noeviction`): a history may then end at any time.
    pub(crate) fn shortest_life(&self) -> Option<u64> {
        let config = &self.config;
        (!self.evicting.load(Ordering::Relaxed))
            .then(|| millis(config.key_ttl().unwrap_or(config.idle_ttl)))
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
    pub(crate) fn primary_address(&self) -> Option<redis::ConnectionAddr> {
        self.commands
            .borrow()
            .connection
            .as_ref()
            .map(|(_, client)| client.get_connection_info().addr().clone())
    }

    /// Runs the script `make(retry)` builds, with the engine's timeout (see
    /// [`call`](Self::call)).
    async fn invoke<'a>(
        &'a self,
        make: impl Fn(bool) -> redis::ScriptInvocation<'a>,
    ) -> Result<redis::Value, Failure> {
        self.call(|retry| Call::Script(make(retry))).await
    }

    /// Sends `make(retry)`, a script or a command, with the engine's timeout.
    ///
    /// A command that failed because its connection had died (Redis
    /// restarted while the node was idle, say) or reached a server that is
    /// no longer the primary was not carried out: it is sent once more, at
    /// once, on a fresh connection, so that no request fails for a
    /// connection that died while Redis was away. `retry` tells the script
    /// it is that second attempt (the publish script then checks whether the
    /// first one landed after all).
    async fn call<'a>(&'a self, make: impl Fn(bool) -> Call<'a>) -> Result<redis::Value, Failure> {
        let mut retry = false;
        loop {
            let (generation, mut connection) = self.commands().await?;
            let call = make(retry);
            let result =
                tokio::time::timeout(self.config.timeout, call.send(&mut connection)).await;
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
                // Nothing was carried out: the caller learns where the slot
                // went and tries there.
                Verdict::Elsewhere if !retry => {
                    return Err(Failure::Moved(format!("redis: {error}")))
                }
                // The first attempt, on a connection that died, may have
                // been: not sent again anywhere.
                Verdict::Elsewhere => return Err(Failure::Backplane(format!("redis: {error}"))),
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
    pub(crate) fn follow(&self, primary: &redis::Client) {
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
                    // Another server, maybe another version.
                    self.learned.store(false, Ordering::SeqCst);
                    true
                }
                Err(error) => {
                    tracing::warn!(%error, "could not make a new redis connection");
                    false
                }
            }
        });
    }

    /// Whether announcements go by sharded pub/sub: on a Redis Cluster
    /// whose servers have it (Redis 7; on Redis 6, plain `PUBLISH`, which
    /// a cluster copies to every node).
    pub(crate) fn sharded_pubsub(&self) -> bool {
        self.sharded && self.script_flags.load(Ordering::Relaxed)
    }

    /// The command the scripts announce with on a channel's pub/sub
    /// channel.
    fn announce(&self) -> &'static str {
        if self.sharded_pubsub() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Learns what the server is first if it is not known yet (a call
    /// before the shard's task connected): a script must not pick Redis 6's
    /// numbering or plain `PUBLISH` for a server that has neither.
    async fn know_server(&self) -> Result<(), Failure> {
        if self.learned.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.learn_server().await
    }

    /// Learns what the server is, with `INFO`: a primary (a replica is
    /// refused, and the command connection replaced), whether it knows
    /// script flags, and whether it may evict keys.
    pub(crate) async fn learn_server(&self) -> Result<(), Failure> {
        // On the command connection: one that died while Redis was away is
        // replaced, and asked again at once; one that died in silence (timed
        // out) is replaced for the next attempt.
        let mut info = None;
        for _ in 0..2 {
            let (generation, mut commands) = self.commands().await?;
            let answer = tokio::time::timeout(
                self.config.timeout,
                redis::cmd("INFO").query_async::<String>(&mut commands),
            )
            .await;
            match answer {
                Ok(Ok(answer)) => {
                    info = Some(answer);
                    break;
                }
                Ok(Err(error)) => {
                    self.reconnect_commands(generation);
                    if !matches!(verdict(&error), Verdict::Dead) {
                        return Err(Failure::Backplane(format!("INFO failed: {error}")));
                    }
                }
                Err(_) => {
                    self.reconnect_commands(generation);
                    return Err(Failure::Backplane("INFO timed out".to_owned()));
                }
            }
        }
        let info = info.ok_or_else(|| Failure::Backplane("INFO failed twice".to_owned()))?;
        // A replica (the old primary, behind an address that has not moved
        // yet) answers all of this, then READONLY to every publish: not a
        // connection to keep.
        if info.lines().any(|line| line.trim() == "role:slave") {
            self.reconnect_commands(self.generation());
            return Err(Failure::Backplane(
                "redis is a replica, not the primary".to_owned(),
            ));
        }
        let major = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .and_then(|version| version.split('.').next())
            .and_then(|major| major.trim().parse::<u32>().ok())
            .unwrap_or(0);
        self.script_flags.store(major >= 7, Ordering::Relaxed);
        self.learned.store(true, Ordering::SeqCst);
        let policy = info
            .lines()
            .find_map(|line| line.strip_prefix("maxmemory_policy:"))
            .map(str::trim);
        self.evicting
            .store(policy.is_some_and(|p| p != "noeviction"), Ordering::Relaxed);
        Ok(())
    }

    /// Publishes `payload` on `channel` with the publish script (append,
    /// trim, announce), once per idempotency key: where it landed.
    pub(crate) async fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<Position, Failure> {
        self.know_server().await?;
        let keys = ChannelKeys::new(&self.config.prefix, channel);
        let remembered = idempotency_key.map(|key| keys.idempotency(key));
        let history = self.config.history;
        let epoch = comet_core::engine::random_epoch().to_string();
        // Drawn once: a retry of this publish carries the same, so that
        // the script can tell whether the first attempt landed.
        let identity = comet_core::engine::random_epoch().max(1).to_string();
        let flags = self.script_flags.load(Ordering::Relaxed);
        let now = now_ms();
        let header = wire::header(now, &identity, payload.kind(), payload.event_name());
        let reply = self
            .invoke(|retry| {
                let mut invocation = self.scripts.publish.for_server(flags).key(&keys.meta);
                invocation.key(&keys.log);
                if let Some(remembered) = &remembered {
                    invocation.key(remembered);
                }
                invocation
                    .arg(&epoch)
                    .arg(&header)
                    .arg(payload.data().as_ref())
                    .arg(history.max_messages)
                    .arg(history.max_age.map_or(0, |age| millis(age).max(1)))
                    .arg(self.ttl_ms())
                    .arg(&keys.pubsub)
                    .arg(&identity)
                    .arg(millis(self.config.idempotency_window).max(1))
                    .arg(if retry { "1" } else { "0" })
                    .arg(now)
                    // Redis 7 numbers stream entries itself, as it knows
                    // script flags.
                    .arg(if flags { "1" } else { "0" })
                    .arg(self.announce());
                invocation
            })
            .await?;
        let unexpected = || Failure::Channel("unexpected reply to the publish script".to_owned());
        let redis::Value::Array(parts) = &reply else {
            return Err(unexpected());
        };
        let numbers: Vec<u64> = parts.iter().filter_map(wire::integer).collect();
        let [epoch, offset, _time_ms, _repeated, identity] = numbers[..] else {
            return Err(unexpected());
        };
        // Local subscribers get the message from the announcement, like
        // everyone else's: one writer per mirror keeps offsets in order,
        // and the message is built once per node, there.
        Ok(Position::new(channel, epoch, offset).with_identity(identity))
    }

    /// Where `channel` is in Redis now: its epoch and newest offset.
    pub(crate) async fn head(&self, channel: &ChannelName) -> Result<Position, Failure> {
        let keys = ChannelKeys::new(&self.config.prefix, channel);
        let state = self.read(&keys, None, 0).await?;
        // A channel Redis has nothing of is in the void, as seen now.
        let identity = if state.epoch == VOID_EPOCH {
            state.now
        } else {
            state.newest
        };
        Ok(Position::new(channel, state.epoch, state.last).with_identity(identity))
    }

    /// A channel's epoch, newest offset and (up to `max` of) its history:
    /// what follows `known` when Redis still has it all, else the newest.
    /// Read in pages (each one script call of bounded size); a page of
    /// another epoch than the first starts the read over.
    pub(crate) async fn read(
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
    /// or from whatever epoch it has with `None` (a clear: nothing to do for
    /// a channel in the void), and announces it to every node.
    pub(crate) async fn new_epoch(
        &self,
        keys: &ChannelKeys,
        old: Option<u64>,
    ) -> Result<(), Failure> {
        self.know_server().await?;
        let new = comet_core::engine::random_epoch().to_string();
        let old = old.map_or(String::new(), |old| old.to_string());
        self.invoke(|_| {
            let mut invocation = self.scripts.new_epoch.key(&keys.meta);
            invocation
                .key(&keys.log)
                .arg(&old)
                .arg(&new)
                .arg(&keys.pubsub)
                .arg(self.announce());
            invocation
        })
        .await
        .map(drop)
    }

    /// Publishes `order` (see `wire::control_message`) on the control
    /// channel, to every node's task.
    pub(crate) async fn send_order(&self, order: &str) -> Result<(), Failure> {
        let mut command = redis::cmd("PUBLISH");
        command.arg(keys::control(&self.config.prefix)).arg(order);
        self.call(|_| Call::Command(command.clone()))
            .await
            .map(drop)
    }

    /// Learns the key that tags cursors from Redis, putting this node's
    /// back if Redis has none (the first node, or Redis lost its data: the
    /// node that knew it puts it back). A node whose key Redis no longer
    /// holds (another node put a fresh one first) takes Redis's, and keeps
    /// honouring its own as the previous one; so do the others, through
    /// Redis.
    pub(crate) async fn load_cursor_key(&self) -> Result<(), Failure> {
        let ours = self.cursor_key.get();
        let ours_hex = ours.map(cursor_key::hex).unwrap_or_default();
        let fresh_hex = cursor_key::hex(CursorKey::random());
        let name = keys::cursor_key(&self.config.prefix, self.sharded);
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
    /// task first connected), so that no cursor goes out untagged. On the
    /// first shard's backplane: it alone holds the key.
    pub(crate) async fn ensure_cursor_key(&self) -> Result<(), EngineError> {
        if self.cursor_key.get().is_none() {
            self.load_cursor_key()
                .await
                .map_err(|failure| unavailable(failure.to_string()))?;
        }
        Ok(())
    }

    /// Keeps the keys of channels in use from expiring (best effort: a
    /// failure shows again at the next publish or read).
    pub(crate) async fn touch(&self, channels: &[&ChannelKeys]) {
        let ttl = self.ttl_ms().max(millis(self.config.idle_ttl));
        for chunk in channels.chunks(256) {
            let touches = chunk.iter().map(|keys| {
                self.invoke(move |_| {
                    let mut invocation = self.scripts.touch.key(&keys.meta);
                    invocation.key(&keys.log).arg(ttl);
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

    /// Writes this node's share of a channel's presence and occupancy with
    /// the presence script, sweeping expired shares first: what that
    /// changed across every node.
    pub(crate) async fn presence_write(
        &self,
        keys: &PresenceKeys,
        write: &ShareWrite<'_>,
    ) -> Result<Vec<Found>, Failure> {
        self.know_server().await?;
        let flags = self.script_flags.load(Ordering::Relaxed);
        let ttl = millis(self.config.presence_ttl).max(1);
        let value = self
            .invoke(|_| {
                let mut invocation = self.scripts.presence.for_server(flags).prepare_invoke();
                for key in keys.all() {
                    invocation.key(key);
                }
                invocation
                    .arg(write.node)
                    .arg(ttl)
                    .arg(&keys.pubsub)
                    .arg(match write.occupied {
                        Some(true) => "1",
                        Some(false) => "0",
                        None => "",
                    })
                    .arg(write.count.map_or(String::new(), |n| n.to_string()))
                    .arg(if write.refresh { "1" } else { "0" })
                    .arg(self.announce());
                for user in &write.users {
                    invocation
                        .arg(if user.present { "p" } else { "g" })
                        .arg(user.identity.user())
                        .arg(user.connections)
                        .arg(user.identity.info().unwrap_or(""));
                }
                invocation
            })
            .await?;
        wire::transitions(&value)
            .map_err(|reason| Failure::Channel(format!("presence in Redis: {reason}")))
    }

    /// Every node's live shares of a channel: the subscriber count and, when
    /// `max` is given, the presence, listing at most `max` users.
    pub(crate) async fn presence_read(
        &self,
        keys: &PresenceKeys,
        max: Option<usize>,
    ) -> Result<Shares, Failure> {
        let max = max.map_or(-1, |max| i64::try_from(max).unwrap_or(i64::MAX));
        let value = self
            .invoke(|_| {
                let mut invocation = self.scripts.presence_read.prepare_invoke();
                for key in keys.all() {
                    invocation.key(key);
                }
                invocation.arg(max);
                invocation
            })
            .await?;
        Shares::parse(&value, &self.stats.malformed)
            .map_err(|reason| Failure::Channel(format!("presence in Redis: {reason}")))
    }
}

/// What a node writes of its share of one channel (see `presence.lua`).
pub(crate) struct ShareWrite<'a> {
    /// The node's id.
    pub(crate) node: &'a str,
    /// Whether it holds the channel occupied, if that changed (or on a
    /// refresh).
    pub(crate) occupied: Option<bool>,
    /// Its live subscriptions, if they are to be written.
    pub(crate) count: Option<usize>,
    /// A periodic refresh: users listed are all of the node's, and their
    /// info is written only where Redis has none (another node's newer one
    /// stays).
    pub(crate) refresh: bool,
    pub(crate) users: Vec<UserShare<'a>>,
}

/// One user's share on this node.
pub(crate) struct UserShare<'a> {
    pub(crate) identity: &'a comet_core::Identity,
    /// False: gone from this node.
    pub(crate) present: bool,
    pub(crate) connections: usize,
}
