//! Presence and occupancy shared by every node: the engine's
//! [`PresenceStore`].
//!
//! Each node has a random id, and writes its share of each channel to Redis
//! (see `keys.rs`): its subscriber count, whether its hub holds the channel
//! occupied, and its users' connections and info, each with an expiry time
//! (Redis's clock) one TTL ahead. A write is one call of the presence
//! script, which sweeps the shares that expired, applies the node's and, in
//! the same atomic step, finds what that changed across every node, so that
//! one call alone reports each transition (and so the app's hooks fire once
//! across the nodes); it announces join and leave on the channel's pub/sub
//! channel, where every node's task hands them to its mirror's log.
//!
//! The hub's tracker reports changes ([`PresenceStore::update`]); this
//! module keeps what it reported, per channel, and a task of its own writes
//! it all again every quarter TTL (with every mirrored channel's subscriber
//! count, and so sweeping every channel the node holds), and changed counts
//! at most every second. A node that stops writing (killed, or cut off from
//! Redis) has its share expire at most a TTL after its last write; the
//! next write of any node that holds the channel, at most a quarter TTL
//! later, sweeps it, announces its users' leave and reports what ended to
//! its own hub's observer: at most 1.25 TTL (25 s by default) plus one
//! engine timeout. If no node holds the channel any more, nobody is there
//! to tell: the next node to write the channel sweeps it then. A node whose
//! share expired while it was cut off writes it again once Redis answers:
//! its users join again.
//!
//! Writes of one channel's share by this node go one at a time, so Redis
//! applies them in the order their state was taken; a write whose outcome
//! is unknown (timed out) is repaired by the next refresh.

use crate::{
    backplane::{late, unavailable, Failure, ShareWrite, UserShare},
    keys::PresenceKeys,
    node::Shared,
    wire::{Found, Shares},
};
use comet_core::engine::{
    EngineFuture, NodeUpdate, Observer, PresenceStore, Transition, UserUpdate,
};
use comet_core::{ChannelName, Identity, Presence};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::Duration,
};

/// How often, at most, a node writes the subscriber counts that changed.
const COUNTS_EVERY: Duration = Duration::from_secs(1);
/// Channels written at once by a refresh (pipelined on the command
/// connection).
const CHUNK: usize = 256;

/// The engine's presence store; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store(Arc<Inner>);

struct Inner {
    shared: Arc<Shared>,
    /// This node's id in Redis: random, new for each engine.
    node: String,
    /// This node's share of each channel it has one in, as its hub last
    /// reported it.
    channels: Mutex<HashMap<ChannelName, Arc<Channel>>>,
    /// The subscriber count last written for each channel (none: 0).
    counts: Mutex<HashMap<ChannelName, usize>>,
    /// Told of transitions that no call of this node's hub caused.
    observers: RwLock<Vec<Observer>>,
}

/// One channel's share on this node.
#[derive(Default)]
struct Channel {
    /// Held while a write of this share is under way: one at a time, so
    /// that Redis applies them in the order their state was taken.
    writing: tokio::sync::Mutex<()>,
    share: Mutex<Share>,
}

/// What this node's hub holds of a channel.
#[derive(Default, Clone)]
struct Share {
    occupied: bool,
    /// Users present here (connections 0 in their grace window).
    users: HashMap<Arc<str>, (Identity, usize)>,
}

impl Share {
    fn is_empty(&self) -> bool {
        !self.occupied && self.users.is_empty()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// A store for the node of `shared`, with a fresh node id.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let (a, b) = (
            comet_core::engine::random_epoch(),
            comet_core::engine::random_epoch(),
        );
        Self(Arc::new(Inner {
            shared,
            node: format!("{a:016x}{b:016x}"),
            channels: Mutex::default(),
            counts: Mutex::default(),
            observers: RwLock::default(),
        }))
    }

    /// The task that refreshes this node's shares and writes changed
    /// counts; runs until aborted (the engine's handle does, when dropped).
    pub(crate) async fn run(self) {
        let inner = self.0;
        let every = (inner.shared.config.presence_ttl / 4).max(Duration::from_millis(10));
        let mut refresh = tokio::time::interval(every);
        let mut counts = tokio::time::interval(COUNTS_EVERY);
        for timer in [&mut refresh, &mut counts] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = refresh.tick() => inner.write_all(true).await,
                _ = counts.tick() => inner.write_all(false).await,
            }
        }
    }
}

impl Inner {
    fn keys(&self, channel: &ChannelName) -> PresenceKeys {
        PresenceKeys::new(&self.shared.config.prefix, channel)
    }

    /// The share of `channel`, made if needed.
    fn channel(&self, channel: &ChannelName) -> Arc<Channel> {
        lock(&self.channels)
            .entry(channel.clone())
            .or_default()
            .clone()
    }

    /// Hands the transitions found by expiry (or all, for a write no call
    /// of the hub asked for) to the observers; the rest, the caller's.
    fn sort(&self, channel: &ChannelName, found: Vec<Found>, all: bool) -> Vec<Transition> {
        let (observed, caused): (Vec<Found>, Vec<Found>) =
            found.into_iter().partition(|f| all || f.expired);
        if !observed.is_empty() {
            let observed: Vec<Transition> = observed.into_iter().map(|f| f.transition).collect();
            let observers = self.observers.read().unwrap_or_else(|e| e.into_inner());
            for observer in observers.iter() {
                observer(channel, &observed);
            }
        }
        caused.into_iter().map(|f| f.transition).collect()
    }

    /// Writes `write` for `channel` once the channel's previous write is
    /// done, all within the engine's timeout.
    async fn write(
        &self,
        channel: &ChannelName,
        entry: &Channel,
        write: impl FnOnce() -> (
            Option<bool>,
            Option<usize>,
            bool,
            Vec<(Identity, bool, usize)>,
        ),
    ) -> Result<Vec<Found>, Failure> {
        let timeout = self.shared.config.timeout;
        let written = async {
            let _writing = entry.writing.lock().await;
            let (occupied, count, refresh, users) = write();
            let write = ShareWrite {
                node: &self.node,
                occupied,
                count,
                refresh,
                users: users
                    .iter()
                    .map(|(identity, present, connections)| UserShare {
                        identity,
                        present: *present,
                        connections: *connections,
                    })
                    .collect(),
            };
            let keys = self.keys(channel);
            let write = &write;
            self.shared
                .on_shard(channel, |shard| {
                    let keys = &keys;
                    async move { shard.backplane.presence_write(keys, write).await }
                })
                .await
        };
        tokio::time::timeout(timeout, written)
            .await
            .unwrap_or_else(|_| Err(late(timeout)))
    }

    /// Writes one channel again from what this node holds: its whole share
    /// (`full`), or its subscriber count alone if it changed. Sweeps the
    /// channel's expired shares either way; true if it wrote.
    async fn write_channel(&self, channel: &ChannelName, full: bool) -> Result<bool, Failure> {
        let count = self
            .shared
            .mirrors
            .read()
            .get(channel)
            .map_or(0, |mirror| mirror.log.subscriber_count());
        let written = lock(&self.counts).get(channel).copied().unwrap_or(0);
        let found = if full {
            let entry = self.channel(channel);
            self.write(channel, &entry, || {
                let share = lock(&entry.share).clone();
                let users = share
                    .users
                    .into_values()
                    .map(|(identity, connections)| (identity, true, connections))
                    .collect();
                (Some(share.occupied), Some(count), true, users)
            })
            .await?
        } else if count != written {
            // The count alone: no share's order to keep.
            self.write(channel, &Channel::default(), || {
                (None, Some(count), false, Vec::new())
            })
            .await?
        } else {
            return Ok(false);
        };
        let mut counts = lock(&self.counts);
        if count == 0 {
            counts.remove(channel);
        } else {
            counts.insert(channel.clone(), count);
        }
        drop(counts);
        self.sort(channel, found, true);
        Ok(true)
    }

    /// Writes every channel this node mirrors or has a share in: whole
    /// (`full`, a refresh), or the counts that changed. Each shard's round
    /// stops at the first chunk its Redis did not answer (the next one
    /// tries again), and the shards are written side by side, so that one
    /// that is down holds up no other.
    async fn write_all(&self, full: bool) {
        let mut names: HashSet<ChannelName> = self.shared.mirrors.read().keys().cloned().collect();
        names.extend(lock(&self.channels).keys().cloned());
        names.extend(lock(&self.counts).keys().cloned());
        let mut sharded: HashMap<usize, Vec<ChannelName>> = HashMap::new();
        for name in names {
            let shard = self.shared.map.shard_of(&name).unwrap_or(usize::MAX);
            sharded.entry(shard).or_default().push(name);
        }
        let rounds = sharded.values().map(|names| async move {
            for chunk in names.chunks(CHUNK) {
                let writes = chunk.iter().map(|name| self.write_channel(name, full));
                let failed = futures_util::future::join_all(writes)
                    .await
                    .into_iter()
                    .filter_map(Result::err)
                    .find(|failure| matches!(failure, Failure::Backplane(_)));
                if let Some(failure) = failed {
                    tracing::debug!(%failure, "could not refresh presence");
                    break;
                }
            }
        });
        futures_util::future::join_all(rounds).await;
        // Shares with nothing left, that no write holds.
        lock(&self.channels)
            .retain(|_, entry| Arc::strong_count(entry) > 1 || !lock(&entry.share).is_empty());
    }
}

impl Store {
    /// Every node's live shares of `channel` (with the presence, listing
    /// at most `max` users, if `max` is given), as `pick` takes them.
    fn read<T: Send + 'static>(
        &self,
        channel: &ChannelName,
        max: Option<usize>,
        pick: fn(Shares) -> T,
    ) -> EngineFuture<T> {
        let inner = self.0.clone();
        let keys = inner.keys(channel);
        let channel = channel.clone();
        Box::pin(async move {
            let timeout = inner.shared.config.timeout;
            let read = inner.shared.on_shard(&channel, |shard| {
                let keys = &keys;
                async move { shard.backplane.presence_read(keys, max).await }
            });
            let shares = tokio::time::timeout(timeout, read)
                .await
                .unwrap_or_else(|_| Err(late(timeout)))
                .map_err(|failure| unavailable(failure.to_string()))?;
            Ok(pick(shares))
        })
    }
}

impl PresenceStore for Store {
    fn update(&self, channel: &ChannelName, update: NodeUpdate) -> EngineFuture<Vec<Transition>> {
        // Kept at once: whatever becomes of this write, the next refresh
        // writes it.
        let entry = self.0.channel(channel);
        let occupied = update.occupied;
        let mut users = Vec::with_capacity(update.users.len());
        {
            let mut share = lock(&entry.share);
            if let Some(occupied) = occupied {
                share.occupied = occupied;
            }
            for user in update.users {
                match user {
                    UserUpdate::Present {
                        identity,
                        connections,
                    } => {
                        share
                            .users
                            .insert(identity.user_arc().clone(), (identity.clone(), connections));
                        users.push((identity, true, connections));
                    }
                    UserUpdate::Gone(identity) => {
                        share.users.remove(identity.user());
                        users.push((identity, false, 0));
                    }
                }
            }
        }
        let inner = self.0.clone();
        let channel = channel.clone();
        Box::pin(async move {
            let found = inner
                .write(&channel, &entry, || (occupied, None, false, users))
                .await
                .map_err(|failure| unavailable(failure.to_string()))?;
            Ok(inner.sort(&channel, found, false))
        })
    }

    fn presence(&self, channel: &ChannelName, max: usize) -> EngineFuture<Presence> {
        self.read(channel, Some(max), |shares| {
            shares.presence.unwrap_or_default()
        })
    }

    fn subscriber_count(&self, channel: &ChannelName) -> EngineFuture<usize> {
        self.read(channel, None, |shares| shares.subscribers)
    }

    fn observe(&self, observer: Observer) {
        self.0
            .observers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(observer);
    }
}
