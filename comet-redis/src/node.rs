//! One node's view of the channels its subscribers use: a mirror (a
//! [`ChannelLog`]) per channel, fed from Redis by one task.
//!
//! The task owns the node's one pub/sub connection: one `SUBSCRIBE` per
//! mirrored channel, however many local subscribers it has. It alone writes
//! to mirrors, in the order Redis announced the messages, so a mirror never
//! needs a lock of its own beyond the log's:
//!
//! - an announcement that follows the mirror's head is appended; one it
//!   already has is dropped; one after a hole, or of another epoch, makes the
//!   task read the channel's state from Redis and bring the mirror up to date
//!   (an exact gap, or one unknown gap for a new epoch);
//! - a new mirror is subscribed first, then loaded, so nothing published in
//!   between is missed (what both bring is deduplicated by offset);
//! - when the pub/sub connection drops, the node stops vouching for its
//!   mirrors (new subscribers get 503 until it is back), reconnects with
//!   back-off, subscribes again and reloads every mirror: subscribers that
//!   stayed connected get what was published meanwhile, or a gap;
//! - a mirror whose offsets Redis no longer has (Redis went back in the same
//!   epoch: a restored snapshot, a promoted replica that lagged), or holds
//!   with another message (told apart by the identity each publish draws),
//!   moves the channel to a new epoch, so no offset is ever served for two
//!   messages; so does a cursor a node issued that is ahead of Redis, since
//!   only lost writes explain it;
//! - a new epoch is announced, so every node learns of it at once;
//! - mirrors nobody has used for a while are dropped and unsubscribed.

use crate::{
    keys::{self, ChannelKeys},
    wire, Shared,
};
use comet_core::{ChannelLog, ChannelName, Extended, Message, Resume};
use futures_util::StreamExt;
use redis::{aio::PubSubSink, Value};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

/// A channel this node mirrors.
pub(crate) struct Mirror {
    pub(crate) log: Arc<ChannelLog>,
    pub(crate) keys: ChannelKeys,
    /// Loaded from Redis and kept current since (false until the first load,
    /// again while the pub/sub connection is down, and after a failed read).
    pub(crate) current: std::sync::atomic::AtomicBool,
    /// Its pub/sub channel is subscribed on the current connection.
    pub(crate) subscribed: std::sync::atomic::AtomicBool,
}

/// What a subscriber asks of the task: bring `channel`'s mirror up to date
/// (load it, or catch up with a cursor from further along).
pub(crate) struct Refresh {
    pub(crate) channel: ChannelName,
    /// Where the subscriber resumes, if a node issued its cursor.
    pub(crate) resume: Option<Resume>,
    pub(crate) reply: oneshot::Sender<Result<(), String>>,
}

/// Why the task could not do something; either way it becomes a 503.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// Redis did not answer (the connection is down, or timed out). On the
    /// pub/sub connection, or while connecting, the task reconnects and
    /// reloads every mirror; in a channel's read it fails that channel alone
    /// (the command connection is replaced, see `Shared::invoke`).
    Backplane(String),
    /// Redis answered, but not what one channel needs (its keys hold
    /// something else, a script failed on them): that channel alone fails,
    /// and is read again at its next use.
    Channel(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Backplane(reason) | Self::Channel(reason) => f.write_str(reason),
        }
    }
}

/// A random part of `backoff` (from half to all of it), so that nodes that
/// lost Redis together do not all come back in the same instant.
pub(crate) fn jittered(backoff: Duration) -> Duration {
    let spread = comet_core::random_epoch() % 1024;
    backoff / 2 + backoff / 2 * spread as u32 / 1024
}

/// The task: runs until the engine is dropped.
pub(crate) async fn run(shared: Arc<Shared>, mut requests: mpsc::Receiver<Refresh>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    let mut backoff = FIRST_BACKOFF;
    // Requests that came while the node was disconnected: answered by the
    // next attempt to connect, not by the failure of the one before it
    // (Redis may be back by then).
    let mut waiting: Vec<Refresh> = Vec::new();
    loop {
        let (mut node, stream) = match connect(&shared).await {
            Ok(connected) => connected,
            Err(failure) => {
                tracing::debug!(%failure, "redis unreachable");
                for request in waiting.drain(..) {
                    let _ = request
                        .reply
                        .send(Err(format!("redis is unreachable: {failure}")));
                }
                let wait = jittered(backoff);
                if !wait_out(&shared, &mut requests, wait, &mut waiting).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = FIRST_BACKOFF;
        shared.connected.store(true, Ordering::SeqCst);
        tracing::debug!("redis pub/sub connected; mirrors current");
        let stop = match node.sync(std::mem::take(&mut waiting)).await {
            Ok(()) => node.serve(stream, &mut requests).await,
            Err(failure) => Stop::Failed(failure),
        };
        shared.connected.store(false, Ordering::SeqCst);
        for mirror in shared.mirrors().values() {
            mirror.current.store(false, Ordering::SeqCst);
            mirror.subscribed.store(false, Ordering::SeqCst);
        }
        match stop {
            Stop::EngineDropped => return,
            Stop::Failed(error) => tracing::warn!(%error, "redis pub/sub lost; reconnecting"),
        }
    }
}

/// Finds the primary (behind Sentinel: asks the sentinels, and moves the
/// command connection there if it was elsewhere), learns what the server is
/// (a primary; whether it knows script flags) and the cursor key, opens the
/// pub/sub connection on it, subscribes to every mirrored channel and
/// reloads every mirror.
async fn connect(shared: &Arc<Shared>) -> Result<(Node, redis::aio::PubSubStream), Failure> {
    let primary = shared.primary.resolve(shared.config.timeout).await?;
    shared.follow(&primary);
    // On the command connection: one that died while Redis was away is
    // replaced, and asked again at once; one that died in silence (timed
    // out) is replaced for the next attempt.
    let mut info = None;
    for _ in 0..2 {
        let (generation, mut commands) = shared.commands().await?;
        let answer = tokio::time::timeout(
            shared.config.timeout,
            redis::cmd("INFO").query_async::<String>(&mut commands),
        )
        .await;
        match answer {
            Ok(Ok(answer)) => {
                info = Some(answer);
                break;
            }
            Ok(Err(error)) => {
                shared.reconnect_commands(generation);
                if !matches!(crate::verdict(&error), crate::Verdict::Dead) {
                    return Err(Failure::Backplane(format!("INFO failed: {error}")));
                }
            }
            Err(_) => {
                shared.reconnect_commands(generation);
                return Err(Failure::Backplane("INFO timed out".to_owned()));
            }
        }
    }
    let info = info.ok_or_else(|| Failure::Backplane("INFO failed twice".to_owned()))?;
    // A replica (the old primary, behind an address that has not moved
    // yet) answers all of this, then READONLY to every publish: not a
    // connection to keep.
    if info.lines().any(|line| line.trim() == "role:slave") {
        shared.reconnect_commands(shared.generation());
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
    shared.script_flags.store(major >= 7, Ordering::Relaxed);
    shared.load_cursor_key().await?;
    let pubsub = tokio::time::timeout(shared.config.timeout, primary.get_async_pubsub())
        .await
        .map_err(|_| Failure::Backplane("connecting timed out".to_owned()))?
        .map_err(|error| Failure::Backplane(error.to_string()))?;
    let (sink, stream) = pubsub.split();
    let mut node = Node {
        shared: shared.clone(),
        sink,
        unused: HashMap::new(),
        touched: Instant::now(),
    };
    node.resubscribe_all().await?;
    Ok((node, stream))
}

/// Waits `backoff` while disconnected, keeping the requests that come in
/// `waiting` (dropping those whose subscriber gave up). False when the
/// engine is gone.
async fn wait_out(
    shared: &Shared,
    requests: &mut mpsc::Receiver<Refresh>,
    backoff: Duration,
    waiting: &mut Vec<Refresh>,
) -> bool {
    let deadline = tokio::time::sleep(backoff);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return !shared.dropped.load(Ordering::SeqCst),
            request = requests.recv() => match request {
                Some(request) => {
                    if waiting.len() >= shared.config.queue {
                        waiting.retain(|r| !r.reply.is_closed());
                    }
                    if waiting.len() >= shared.config.queue {
                        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                        let _ = request.reply.send(Err(
                            "redis is unreachable and the node's queue is full".to_owned(),
                        ));
                    } else {
                        waiting.push(request);
                    }
                }
                None => return false,
            },
        }
    }
}

enum Stop {
    EngineDropped,
    Failed(Failure),
}

struct Node {
    shared: Arc<Shared>,
    sink: PubSubSink,
    /// Mirrors without subscribers, and since when.
    unused: HashMap<ChannelName, Instant>,
    /// When the keys of mirrored channels were last kept from expiring.
    touched: Instant,
}

impl Node {
    async fn serve(
        &mut self,
        mut stream: redis::aio::PubSubStream,
        requests: &mut mpsc::Receiver<Refresh>,
    ) -> Stop {
        let mut sweep = tokio::time::interval(self.shared.config.sweep_every());
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let result = tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.announced(&message).await,
                    None => Err(Failure::Backplane("the pub/sub connection closed".to_owned())),
                },
                request = requests.recv() => match request {
                    Some(first) => {
                        let mut batch = vec![first];
                        while let Ok(more) = requests.try_recv() {
                            batch.push(more);
                        }
                        self.sync(batch).await
                    }
                    None => return Stop::EngineDropped,
                },
                _ = sweep.tick() => self.sweep().await,
                () = self.shared.reconnect.notified() => Err(Failure::Backplane(
                    "redis answered that it is no longer the primary".to_owned(),
                )),
            };
            if let Err(error) = result {
                return Stop::Failed(error);
            }
        }
    }

    /// An announcement from Redis.
    async fn announced(&mut self, message: &redis::Msg) -> Result<(), Failure> {
        let prefix = &self.shared.config.prefix;
        let Some(channel) = keys::channel_of(prefix, message.get_channel_name()) else {
            return Ok(()); // not a channel of ours
        };
        let numbered = match wire::announcement(message.get_payload_bytes()) {
            Ok(wire::Announcement::Message(numbered)) => numbered,
            Ok(wire::Announcement::NewEpoch(epoch)) => {
                let Some(mirror) = self.shared.mirrors().get(&channel).cloned() else {
                    return Ok(());
                };
                if mirror.log.epoch() == epoch {
                    return Ok(()); // this node made it, and has it already
                }
                // A failed read is this channel's alone (see `refresh`).
                let _ = self.refresh(&mirror).await;
                return Ok(());
            }
            Err(reason) => {
                self.shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%channel, reason, "ignored a message not in comet's format");
                return Ok(());
            }
        };
        let Some(mirror) = self.shared.mirrors().get(&channel).cloned() else {
            return Ok(()); // unsubscribed meanwhile
        };
        if !mirror.current.load(Ordering::SeqCst) {
            // Its last read failed: read it whole (this message included).
            let _ = self.refresh(&mirror).await;
            return Ok(());
        }
        let message = numbered.into_message(channel);
        match mirror.log.extend(message.clone()) {
            Extended::Appended => {}
            // Announced again after a refresh: the same message. Another
            // one under an offset already held means Redis lost writes.
            Extended::Duplicate if holds(&mirror.log, &message) => {}
            Extended::Duplicate | Extended::OutOfOrder => {
                let _ = self.refresh(&mirror).await;
            }
        }
        Ok(())
    }

    /// Brings the mirrors that subscribers asked for up to date: new ones are
    /// subscribed (in one command) and loaded; the others are read again.
    async fn sync(&mut self, batch: Vec<Refresh>) -> Result<(), Failure> {
        let mut fresh = Vec::new();
        let mut wanted: Vec<Arc<Mirror>> = Vec::new();
        let mut index: HashMap<ChannelName, usize> = HashMap::new();
        // A subscriber that gave up waiting needs nothing any more.
        let mut batch: Vec<Refresh> = batch
            .into_iter()
            .filter(|request| !request.reply.is_closed())
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        for request in &batch {
            if index.contains_key(&request.channel) {
                continue;
            }
            let Some(mirror) = self.shared.mirrors().get(&request.channel).cloned() else {
                continue; // dropped meanwhile: the subscriber that asked has gone
            };
            if !mirror.subscribed.swap(true, Ordering::SeqCst) {
                fresh.push(mirror.keys.pubsub.clone());
            }
            index.insert(request.channel.clone(), wanted.len());
            wanted.push(mirror);
        }
        if !fresh.is_empty() {
            if let Err(failure) = self.subscribe(fresh).await {
                for request in batch {
                    let _ = request.reply.send(Err(failure.to_string()));
                }
                return Err(failure);
            }
        }
        let mut results = self.refresh_all(&wanted).await;
        // An issued cursor ahead of what Redis has in its epoch: Redis lost
        // writes that a client received. Those offsets will be (or were)
        // assigned again, so the channel moves to a new epoch.
        for request in &mut batch {
            let Some(resume) = request.resume.take() else {
                continue;
            };
            let Some(&i) = index.get(&request.channel) else {
                continue;
            };
            let mirror = &wanted[i];
            let head = mirror.log.head();
            if results[i].is_ok()
                && resume.position.epoch == head.epoch
                && resume.position.offset > head.offset
            {
                tracing::warn!(
                    channel = %request.channel,
                    "a cursor a node issued is ahead of redis: redis lost writes"
                );
                results[i] = self.renew(mirror, head.epoch).await;
            }
        }
        for request in batch {
            let result = match index.get(&request.channel).map(|&i| &results[i]) {
                Some(Err(failure)) => Err(failure.to_string()),
                Some(Ok(())) | None => Ok(()),
            };
            let _ = request.reply.send(result);
        }
        Ok(())
    }

    async fn subscribe(&mut self, channels: Vec<String>) -> Result<(), Failure> {
        let timeout = self.shared.config.timeout;
        match tokio::time::timeout(timeout, self.sink.subscribe(channels)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Failure::Backplane(format!("SUBSCRIBE failed: {error}"))),
            Err(_) => Err(Failure::Backplane("SUBSCRIBE timed out".to_owned())),
        }
    }

    /// After (re)connecting: subscribe to every mirrored channel, then load
    /// every mirror.
    async fn resubscribe_all(&mut self) -> Result<(), Failure> {
        let mirrors: Vec<Arc<Mirror>> = self.shared.mirrors().values().cloned().collect();
        for chunk in mirrors.chunks(1000) {
            for mirror in chunk {
                mirror.subscribed.store(true, Ordering::SeqCst);
            }
            self.subscribe(chunk.iter().map(|m| m.keys.pubsub.clone()).collect())
                .await?;
        }
        // What fails to load fails its channel alone, read again later: a
        // connect succeeds once SUBSCRIBE does.
        self.refresh_all(&mirrors).await;
        Ok(())
    }

    /// Refreshes `mirrors`, concurrently on the multiplexed connection (so
    /// pipelined on the wire); one result each.
    async fn refresh_all(&self, mirrors: &[Arc<Mirror>]) -> Vec<Result<(), Failure>> {
        let mut results = Vec::with_capacity(mirrors.len());
        for chunk in mirrors.chunks(256) {
            results.extend(
                futures_util::future::join_all(chunk.iter().map(|m| self.refresh(m))).await,
            );
        }
        results
    }

    /// Reads `mirror`'s channel from Redis and brings the mirror up to date.
    ///
    /// A failure is this channel's alone, whatever failed: the mirror is no
    /// longer current (its subscribers keep what they have, new ones get
    /// 503), and it is read again at its next announcement or sweep while it
    /// has subscribers. The pub/sub connection and every other mirror are
    /// untouched (the command connection was replaced if it had died).
    async fn refresh(&self, mirror: &Mirror) -> Result<(), Failure> {
        let result = self.read_into(mirror).await;
        if let Err(failure) = &result {
            mirror.current.store(false, Ordering::SeqCst);
            let channel = mirror.log.name();
            tracing::warn!(%channel, %failure, "could not read a channel from redis");
        }
        result
    }

    async fn read_into(&self, mirror: &Mirror) -> Result<(), Failure> {
        let shared = &self.shared;
        let head = mirror.log.head();
        let known = mirror
            .current
            .load(Ordering::SeqCst)
            .then_some(head)
            // A mirror never loaded knows nothing yet, whatever it holds.
            .or_else(|| (head.offset > 0).then_some(head));
        let state = shared
            .read(&mirror.keys, known, mirror.log.policy().max_messages)
            .await?;
        let channel = mirror.log.name().clone();
        // Redis may have lost this mirror's newest message and given its
        // offset to another one since (a replica promoted behind its
        // primary, then new publishes): the same epoch, the head at or past
        // the mirror's, and a different message where the mirror's was.
        let diverged = state.at.is_some_and(|at| {
            at.epoch == head.epoch
                && at.offset == head.offset
                && !holds(&mirror.log, &at.into_message(channel.clone()))
        });
        let messages = state
            .entries
            .into_iter()
            .map(|n| n.into_message(channel.clone()));
        if diverged || !mirror.log.restart(state.epoch, state.last, messages) {
            // Redis lost writes that this mirror has: those offsets are (or
            // will be) assigned again, so the channel must move to a new
            // epoch, once, whichever node notices first.
            tracing::warn!(%channel, "redis went back in history: moving to a new epoch");
            return self.renew(mirror, state.epoch).await;
        }
        mirror.current.store(true, Ordering::SeqCst);
        shared.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Moves `mirror`'s channel from `epoch` to a new one (if no node did
    /// already) and loads it afresh: readers get one gap of unknown size.
    async fn renew(&self, mirror: &Mirror, epoch: u64) -> Result<(), Failure> {
        let shared = &self.shared;
        let channel = mirror.log.name().clone();
        shared.new_epoch(&mirror.keys, epoch).await?;
        shared.stats.epochs_renewed.fetch_add(1, Ordering::Relaxed);
        let state = shared
            .read(&mirror.keys, None, mirror.log.policy().max_messages)
            .await?;
        let messages = state
            .entries
            .into_iter()
            .map(|n| n.into_message(channel.clone()));
        if !mirror.log.restart(state.epoch, state.last, messages) {
            // Another node's new epoch cannot be behind this mirror's.
            mirror.current.store(false, Ordering::SeqCst);
            return Err(Failure::Channel(
                "redis went back in history again while renewing the epoch".to_owned(),
            ));
        }
        mirror.current.store(true, Ordering::SeqCst);
        shared.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drops mirrors unused for the configured while, and keeps the keys of
    /// the others from expiring.
    async fn sweep(&mut self) -> Result<(), Failure> {
        // A connection that a firewall or NAT dropped in silence delivers
        // nothing and reports nothing: ask for an answer now and then.
        match tokio::time::timeout(self.shared.config.timeout, self.sink.ping::<Value>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(Failure::Backplane(format!("PING failed: {error}"))),
            Err(_) => return Err(Failure::Backplane("PING timed out".to_owned())),
        }
        let now = Instant::now();
        let keep = self.shared.config.mirror_idle;
        let mut dropped = Vec::new();
        {
            let mut mirrors = self.shared.mirrors_mut();
            mirrors.retain(|name, mirror| {
                if mirror.log.subscriber_count() > 0 {
                    self.unused.remove(name);
                    return true;
                }
                let since = *self.unused.entry(name.clone()).or_insert(now);
                if now.duration_since(since) < keep {
                    return true;
                }
                self.unused.remove(name);
                mirror.log.wake();
                dropped.push(mirror.keys.pubsub.clone());
                false
            });
        }
        if !dropped.is_empty() {
            tracing::debug!(count = dropped.len(), "dropped unused mirrors");
            let timeout = self.shared.config.timeout;
            match tokio::time::timeout(timeout, self.sink.unsubscribe(dropped)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(Failure::Backplane(format!("UNSUBSCRIBE failed: {error}")))
                }
                Err(_) => return Err(Failure::Backplane("UNSUBSCRIBE timed out".to_owned())),
            }
        }
        // Mirrors whose last read failed, and that subscribers still use,
        // are read again: a few a sweep, and none after one fails, so that a
        // Redis that is struggling is not asked for everything at once and
        // the announcements this task delivers wait for one timeout at most.
        let stale: Vec<Arc<Mirror>> = self
            .shared
            .mirrors()
            .values()
            .filter(|m| {
                m.log.subscriber_count() > 0
                    && m.subscribed.load(Ordering::SeqCst)
                    && !m.current.load(Ordering::SeqCst)
            })
            .take(4)
            .cloned()
            .collect();
        for mirror in stale {
            if self.refresh(&mirror).await.is_err() {
                break;
            }
        }
        // Keys expire idle_ttl after their last use at the earliest: touching
        // them every quarter of it is enough.
        let touching = &self.shared.touching;
        if now.duration_since(self.touched) >= self.shared.config.idle_ttl / 4
            && !touching.swap(true, Ordering::SeqCst)
        {
            self.touched = now;
            let used: Vec<Arc<Mirror>> = self
                .shared
                .mirrors()
                .values()
                .filter(|m| m.log.subscriber_count() > 0)
                .cloned()
                .collect();
            // On a task of its own: thousands of calls must not hold up
            // the announcements this task delivers.
            let shared = self.shared.clone();
            tokio::spawn(async move {
                shared.touch(&used).await;
                shared.touching.store(false, Ordering::SeqCst);
            });
        }
        Ok(())
    }
}

/// A channel's state as Redis has it.
pub(crate) struct State {
    pub(crate) epoch: u64,
    pub(crate) last: u64,
    pub(crate) entries: Vec<wire::Numbered>,
    /// The entry at the reader's own offset, when asked for and still held.
    pub(crate) at: Option<wire::Numbered>,
}

impl State {
    /// Reads the read script's answer. An entry that is not comet's
    /// (written by something else) is left out and counted in `unreadable`:
    /// readers get an exact gap where it was.
    pub(crate) fn parse(value: Value, unreadable: &AtomicU64) -> Result<Self, Failure> {
        let bad = |reason: &str| Failure::Channel(format!("channel state in Redis: {reason}"));
        let Value::Array(parts) = value else {
            return Err(bad("unexpected reply to the read script"));
        };
        let [epoch, last, Value::Array(entries), Value::Array(at)] = parts.as_slice() else {
            return Err(bad("unexpected reply to the read script"));
        };
        let epoch = wire::integer(epoch).ok_or_else(|| bad("the epoch is not a number"))?;
        let last = wire::integer(last).ok_or_else(|| bad("the offset is not a number"))?;
        let entries = entries
            .iter()
            .filter_map(|entry| match wire::entry(epoch, entry) {
                Ok(entry) if entry.offset <= last => Some(entry),
                Ok(_) | Err(_) => {
                    unreadable.fetch_add(1, Ordering::Relaxed);
                    None
                }
            })
            .collect();
        let at = at.first().and_then(|entry| wire::entry(epoch, entry).ok());
        Ok(Self {
            epoch,
            last,
            entries,
            at,
        })
    }
}

/// Whether `log` holds `message` at its offset (or cannot tell: it no
/// longer holds anything there). Messages that both carry an identity are
/// the same only if it is: another message with the same bytes under an
/// offset already served is still another message.
fn holds(log: &ChannelLog, message: &Message) -> bool {
    let before = comet_core::Position::new(log.name(), message.epoch(), message.offset() - 1);
    match log.read_after(before) {
        comet_core::Read::Message(held) if held.offset() == message.offset() => {
            if held.identity() != 0 && message.identity() != 0 {
                return held.identity() == message.identity();
            }
            held.data() == message.data()
                && held.kind() == message.kind()
                && held.event() == message.event()
        }
        _ => true,
    }
}
