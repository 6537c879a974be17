//! The node's tasks, one per shard (see `shard.rs`): each keeps the node's
//! view of the channels its shard holds that the node's subscribers use, a
//! mirror (a `ChannelLog`, see `mirror.rs`) per channel, fed from that
//! shard's Redis.
//!
//! A shard's task owns the node's one pub/sub connection to that shard:
//! one subscription per mirrored channel (`SUBSCRIBE`; on a Redis Cluster
//! `SSUBSCRIBE`, sent once per slot), however many local subscribers it
//! has. It alone writes to its channels' mirrors, in the order Redis
//! announced the messages, so a mirror never needs a lock of its own beyond
//! the log's. A shard that is down stops its own channels alone. Each task:
//!
//! - an announcement that follows the mirror's head is appended; one it
//!   already has is dropped; one after a hole, or of another epoch, makes the
//!   task read the channel's state from Redis and bring the mirror up to date
//!   (an exact gap, or one unknown gap for a new epoch);
//! - a new mirror is subscribed first, then loaded, so nothing published in
//!   between is missed (what both bring is deduplicated by offset);
//! - loads (reads of a channel from Redis, in pages) run beside the task, a
//!   bounded number at once, and the task applies each when it comes back:
//!   a long one holds up no other channel's announcements. What is
//!   announced for a channel while it loads is kept (up to a bound, else
//!   the channel is read again) and applied after the load, in order;
//! - a read that fails fails its channel alone (new subscribers get 503),
//!   which is read again after a jittered back-off while it has
//!   subscribers;
//! - when the pub/sub connection drops, the node stops vouching for its
//!   mirrors (new subscribers wait, or get 503, until it is back),
//!   reconnects with jittered back-off, subscribes again (a connect succeeds
//!   once `SUBSCRIBE` does) and reloads every mirror: subscribers that
//!   stayed connected get what was published meanwhile, or a gap;
//! - a mirror whose offsets Redis no longer has (Redis went back in the same
//!   epoch: a restored snapshot, a promoted replica that lagged), or holds
//!   with another message (told apart by the identity each publish draws),
//!   moves the channel to a new epoch, so no offset is ever served for two
//!   messages; so does a cursor a node issued that is ahead of Redis, since
//!   only lost writes explain it;
//! - a new epoch is announced, so every node learns of it at once (a clear
//!   of the channel's history too): a mirror that hears of an epoch it does
//!   not have stops answering new subscribers itself until it has read it,
//!   so that none resumes into the history that is gone;
//! - users' join and leave (announced by the presence script, see
//!   `presence.rs`) go to the mirror's log as they come: they take no
//!   offset, so no load waits for them;
//! - mirrors nobody has used for a while are dropped and unsubscribed;
//! - orders to live subscriptions (`Hub::disconnect` and the like, see
//!   `control.rs`) come on one more pub/sub channel, subscribed at every
//!   connect of the first shard's task, and go to every hub listening on
//!   this engine. An order sent
//!   while the connection is down is lost for this node.

use crate::{
    backplane::{jittered, unavailable, Backplane, Config, Counters, Failure},
    keys::{self, ChannelKeys},
    mirror::{contradicts, holds, Mirror, Mirrors, Refresh},
    primary::{self, Primary},
    pubsub,
    shard::{self, ShardMap},
    wire::{self, State},
};
use comet_core::engine::{ControlHandler, Extended};
use comet_core::engine::{EngineError, Resume};
use comet_core::{ChannelName, Message, PresenceEvent};
use futures_util::StreamExt;
use futures_util::{future::BoxFuture, stream::FuturesUnordered};
use std::sync::Mutex;
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};
use tokio::{
    sync::{mpsc, oneshot, Notify},
    task::JoinHandle,
    time::Instant,
};

/// How long a call a cluster sent elsewhere waits before it tries again.
const MOVED_RETRY: Duration = Duration::from_millis(25);

/// What the engine handles and its tasks share.
pub(crate) struct Shared {
    pub(crate) config: Arc<Config>,
    /// The URLs it was built from, without passwords (for `Debug`).
    pub(crate) url: String,
    /// The primaries that hold the channels, each with a task of its own:
    /// a fixed list, or (a Redis Cluster) each shard found so far. A shard
    /// is never removed, so its index stays its own.
    shards: RwLock<Vec<Arc<Shard>>>,
    /// Which of them holds each channel.
    pub(crate) map: ShardMap,
    /// The channels this node mirrors, whichever shard holds them.
    pub(crate) mirrors: Mirrors,
    pub(crate) dropped: AtomicBool,
    /// Who applies the orders heard on the control channel: one per hub
    /// built on this engine.
    pub(crate) listeners: RwLock<Vec<ControlHandler>>,
    /// A read of the cursor key is under way (one at a time).
    keying: AtomicBool,
    pub(crate) stats: Arc<Counters>,
    /// Every task of the engine's, stopped when it is dropped.
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Asks the cluster task (on a Redis Cluster) to learn the shards and
    /// slots again: a slot moved, or a shard's primary did.
    pub(crate) rethink: Notify,
}

/// One primary and this node's connections to it. The first shard also
/// holds what is the deployment's rather than a channel's: the cursor key
/// and the control channel.
pub(crate) struct Shard {
    /// Its place in the engine's shards.
    pub(crate) index: usize,
    /// Where the primary is: the shard's task asks at each connect.
    pub(crate) primary: Primary,
    /// Commands and scripts, on the command connection.
    pub(crate) backplane: Backplane,
    /// The pub/sub connection is up and every mirror of this shard is
    /// current.
    pub(crate) connected: AtomicBool,
    /// A round of key TTL refreshes is under way (one at a time).
    touching: AtomicBool,
    /// Requests to the shard's task.
    requests: mpsc::Sender<Refresh>,
}

impl Shared {
    /// What the tasks of a node on `map`'s shards share, with no shard yet
    /// (see [`Shared::add_shard`]).
    pub(crate) fn new(url: String, config: Config, map: ShardMap) -> Arc<Self> {
        let config = Arc::new(config);
        let stats = Arc::new(Counters::default());
        Arc::new(Self {
            mirrors: Mirrors::new(config.clone()),
            config,
            url,
            shards: RwLock::default(),
            map,
            dropped: AtomicBool::new(false),
            listeners: RwLock::default(),
            keying: AtomicBool::new(false),
            stats,
            tasks: Mutex::default(),
            rethink: Notify::new(),
        })
    }

    /// Adds a shard on `primary` and starts its task (and, behind Sentinel,
    /// the one that listens for a new primary); its index. Connects lazily.
    pub(crate) fn add_shard(
        self: &Arc<Self>,
        primary: Primary,
    ) -> Result<usize, redis::RedisError> {
        let direct = match &primary {
            Primary::Direct(client) => Some(client),
            Primary::Sentinel(_) | Primary::Cluster(_) => None,
        };
        let sharded = matches!(primary, Primary::Cluster(_));
        let backplane = Backplane::new(self.config.clone(), self.stats.clone(), direct, sharded)?;
        let (requests, receiver) = mpsc::channel(self.config.queue);
        let sentinel = matches!(primary, Primary::Sentinel(_));
        let index = {
            let mut shards = self.shards.write().unwrap_or_else(|e| e.into_inner());
            let index = shards.len();
            shards.push(Arc::new(Shard {
                index,
                primary,
                backplane,
                connected: AtomicBool::new(false),
                touching: AtomicBool::new(false),
                requests,
            }));
            index
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mut started = vec![tokio::spawn(run(self.clone(), index, receiver))];
        if sentinel {
            let shard = self.shard_at(index);
            started.push(tokio::spawn(async move {
                primary::watch(&shard.primary, &shard.backplane).await;
            }));
        }
        // The engine may have been dropped meanwhile (a cluster's shard
        // found as the last handle went): its tasks stop at once.
        if self.dropped.load(Ordering::SeqCst) {
            started.iter().for_each(JoinHandle::abort);
        }
        tasks.extend(started);
        Ok(index)
    }

    /// Shard `index`.
    pub(crate) fn shard_at(&self, index: usize) -> Arc<Shard> {
        self.shards.read().unwrap_or_else(|e| e.into_inner())[index].clone()
    }

    /// Runs `call` on the shard that holds `channel`. Where a cluster
    /// answers that the slot is elsewhere (or moving), learns where and
    /// tries again there, until the engine's timeout.
    pub(crate) async fn on_shard<T, F, Fut>(
        &self,
        channel: &ChannelName,
        call: F,
    ) -> Result<T, Failure>
    where
        F: Fn(Arc<Shard>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            let result = match self.shard(channel) {
                Ok(shard) => call(shard).await,
                Err(failure) => Err(failure),
            };
            match result {
                Err(Failure::Moved(why)) => {
                    self.stats.redirects.fetch_add(1, Ordering::Relaxed);
                    self.rethink.notify_one();
                    if Instant::now() >= deadline {
                        return Err(Failure::Backplane(why));
                    }
                    // The cluster task's next look (it waits for pokes to
                    // settle), or the migration's end.
                    tokio::time::sleep(MOVED_RETRY).await;
                }
                other => return other,
            }
        }
    }

    /// Shard `index`, if there is one yet.
    pub(crate) fn try_shard_at(&self, index: usize) -> Option<Arc<Shard>> {
        let shards = self.shards.read().unwrap_or_else(|e| e.into_inner());
        shards.get(index).cloned()
    }

    /// The shard that holds `channel`, if one is known to.
    pub(crate) fn shard(&self, channel: &ChannelName) -> Result<Arc<Shard>, Failure> {
        let index = self.map.shard_of(channel).ok_or_else(|| {
            Failure::Moved(format!("no known primary serves {channel}'s slot yet"))
        })?;
        let shards = self.shards.read().unwrap_or_else(|e| e.into_inner());
        shards
            .get(index)
            .cloned()
            .ok_or_else(|| Failure::Backplane("no primary is known yet".to_owned()))
    }

    /// The shard that carries orders: every node subscribes to them on its
    /// first shard's pub/sub connection (on a cluster, with plain
    /// `SUBSCRIBE`, which hears a `PUBLISH` sent to any node).
    pub(crate) fn first(&self) -> Result<Arc<Shard>, Failure> {
        self.try_shard_at(0)
            .ok_or_else(|| Failure::Backplane("no primary is known yet".to_owned()))
    }

    /// The shard that holds the cursor key: the first, or on a cluster the
    /// one that serves its slot.
    pub(crate) fn home(&self) -> Result<Arc<Shard>, Failure> {
        let index = match &self.map {
            ShardMap::Fixed(_) => Some(0),
            ShardMap::Slots(_) => self.map.shard_of_slot(shard::key_slot(&keys::cursor_key(
                &self.config.prefix,
                true,
            ))),
        };
        index
            .and_then(|index| self.try_shard_at(index))
            .ok_or_else(|| {
                Failure::Backplane("no known primary holds the cursor key yet".to_owned())
            })
    }

    /// Loads the cursor key if this node does not know it yet (before the
    /// task of its shard first connected), so that no cursor goes out
    /// untagged.
    pub(crate) async fn cursor_key_known(&self) -> Result<(), EngineError> {
        let home = self
            .home_soon()
            .await
            .map_err(|failure| unavailable(failure.to_string()))?;
        home.backplane.ensure_cursor_key().await
    }

    /// The shard that holds the cursor key, once known: on a cluster this
    /// node has not learned yet, it waits (within the timeout) until it
    /// has.
    async fn home_soon(&self) -> Result<Arc<Shard>, Failure> {
        let deadline = Instant::now() + self.config.timeout;
        loop {
            match self.home() {
                Ok(home) => return Ok(home),
                Err(failure) if Instant::now() >= deadline => return Err(failure),
                Err(_) => {
                    self.rethink.notify_one();
                    tokio::time::sleep(MOVED_RETRY).await;
                }
            }
        }
    }

    /// Whether shard `index` holds the cursor key.
    fn is_home(&self, index: usize) -> bool {
        self.home().is_ok_and(|home| home.index == index)
    }

    /// Whether every shard's pub/sub connection is up.
    pub(crate) fn connected(&self) -> bool {
        let shards = self.shards.read().unwrap_or_else(|e| e.into_inner());
        !shards.is_empty()
            && shards
                .iter()
                .all(|shard| shard.connected.load(Ordering::SeqCst))
    }

    /// Asks the task of the shard that holds `channel` to bring its mirror
    /// up to date (and, with an issued cursor ahead of it, to move the
    /// channel to a new epoch).
    pub(crate) async fn refresh(
        &self,
        mirror: &Mirror,
        resume: Option<Resume>,
    ) -> Result<(), EngineError> {
        let channel = mirror.log.name();
        // A cluster this node has not learned yet: it soon has.
        let deadline = Instant::now() + self.config.timeout;
        let shard = loop {
            match self.shard(channel) {
                Ok(shard) => break shard,
                Err(Failure::Moved(_)) if Instant::now() < deadline => {
                    self.rethink.notify_one();
                    tokio::time::sleep(MOVED_RETRY).await;
                }
                Err(failure) => return Err(unavailable(failure.to_string())),
            }
        };
        // A mirror made before the map knew its slot takes its shard now;
        // one that has a shard keeps it: only the cluster task moves a
        // mirror (with its flags), and asks its new shard to read it.
        let _ = mirror.shard.compare_exchange(
            usize::MAX,
            shard.index,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        let Some(shard) = self.try_shard_at(mirror.shard.load(Ordering::SeqCst)) else {
            return Err(unavailable("the channel's shard is not known yet"));
        };
        let (reply, answer) = oneshot::channel();
        shard
            .requests
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

/// The task of shard `index`: runs until the engine is dropped.
pub(crate) async fn run(shared: Arc<Shared>, index: usize, mut requests: mpsc::Receiver<Refresh>) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    let mut backoff = FIRST_BACKOFF;
    let shard = shared.shard_at(index);
    // Requests that came while the node was disconnected: answered by the
    // next attempt to connect, not by the failure of the one before it
    // (Redis may be back by then).
    let mut waiting: Vec<Refresh> = Vec::new();
    loop {
        let (mut node, stream) = match connect(&shared, index).await {
            Ok(connected) => connected,
            Err(failure) => {
                tracing::debug!(%failure, shard = index, "redis unreachable");
                if matches!(shard.primary, Primary::Cluster(_)) {
                    // A cluster's primary that is gone: its replica may
                    // have taken over.
                    shared.rethink.notify_one();
                }
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
        let connected_at = Instant::now();
        shard.connected.store(true, Ordering::SeqCst);
        tracing::debug!(shard = index, "redis pub/sub connected; mirrors current");
        let stop = match node.sync(std::mem::take(&mut waiting)).await {
            Ok(()) => node.serve(stream, &mut requests).await,
            Err(failure) => Stop::Failed(failure, node.abandon()),
        };
        shard.connected.store(false, Ordering::SeqCst);
        for mirror in shared.mirrors.read().values() {
            if mirror.shard.load(Ordering::SeqCst) == index {
                mirror.current.store(false, Ordering::SeqCst);
                mirror.subscribed.store(false, Ordering::SeqCst);
            }
        }
        match stop {
            Stop::EngineDropped => return,
            Stop::Failed(error, left) => {
                tracing::warn!(%error, shard = index, "redis pub/sub lost; reconnecting");
                waiting.extend(left);
            }
        }
        // A connection that fails as soon as it is made (a server that
        // takes connections and drops them) is not made again at once.
        if connected_at.elapsed() < Duration::from_secs(1) {
            if !wait_out(&shared, &mut requests, jittered(backoff), &mut waiting).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        } else {
            backoff = FIRST_BACKOFF;
        }
    }
}

/// Whether `epoch`, announced for `mirror`'s channel, is another than the
/// mirror has: then the history it holds is gone (renewed, or cleared), and
/// it stops answering new subscribers itself until it has read the new one.
fn moved(mirror: &Mirror, epoch: u64) -> bool {
    let moved = mirror.log.epoch() != epoch;
    if moved {
        mirror.current.store(false, Ordering::SeqCst);
    }
    moved
}

/// Finds shard `index`'s primary (behind Sentinel: asks the sentinels,
/// and moves the command connection there if it was elsewhere), learns
/// what the server is (a primary; whether it knows script flags; whether it
/// may evict keys) and, on the first shard, the cursor key, opens the
/// pub/sub connection on it, subscribes to every channel of the shard that
/// is mirrored and reloads their mirrors.
async fn connect(shared: &Arc<Shared>, index: usize) -> Result<(Node, pubsub::Stream), Failure> {
    let shard = shared.shard_at(index);
    // Reconnects asked for before this one began are done by it.
    let asked = shard.backplane.reconnects_asked.load(Ordering::SeqCst);
    let primary = shard.primary.resolve(shared.config.timeout).await?;
    shard.backplane.follow(&primary);
    shard.backplane.learn_server().await?;
    if shared.is_home(index) {
        shard.backplane.load_cursor_key().await?;
    }
    let sharded = shard.backplane.sharded_pubsub();
    let (sink, stream) = pubsub::open(&primary, sharded, shared.config.timeout).await?;
    let mut node = Node::new(shared.clone(), index, sink, asked);
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
    /// The connection failed; the requests that were waiting on loads are
    /// answered by the next attempt to connect.
    Failed(Failure, Vec<Refresh>),
}

/// The most channel loads in flight at once on the command connection
/// (pipelined there); more wait their turn.
const MAX_LOADS: usize = 32;
/// The most announcements kept for a channel while its load is under way;
/// past that they are dropped, and the channel read again after the load
/// (Redis has them).
const MAX_HEARD: usize = 1024;
/// Back-off of a channel whose load failed, before it is read again (while
/// it has subscribers): doubling from the first to the last, jittered.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// What a load does in Redis.
#[derive(Clone, Copy)]
enum Job {
    /// Read the channel's state (after `known`, what the mirror holds).
    Read { known: Option<comet_core::Position> },
    /// Move the channel from `epoch` to a new one, then read it afresh.
    Renew { epoch: u64 },
}

/// What a load brought back, for the task to apply.
struct Fetched {
    channel: ChannelName,
    mirror: Arc<Mirror>,
    job: Job,
    result: Result<State, Failure>,
}

/// Something announced for a channel while its load was under way.
enum Heard {
    Message(Arc<Message>),
    NewEpoch(u64),
}

/// A channel's load: under way, or waiting for a free slot.
struct Load {
    mirror: Arc<Mirror>,
    running: bool,
    /// Answered when this load is applied.
    waiters: Vec<Refresh>,
    /// Came while it ran, with a cursor to judge: answered after a read
    /// that began after them (their cursor may be further along).
    again: Vec<Refresh>,
    /// Announced meanwhile, applied after it, in order.
    heard: Vec<Heard>,
    /// The channel must be read again after this load.
    reload: bool,
}

/// A channel whose last load failed: its back-off, and when it is read
/// again (`None` while a load is under way).
struct Retry {
    at: Option<Instant>,
    backoff: Duration,
}

struct Node {
    shared: Arc<Shared>,
    /// The shard whose task this is.
    index: usize,
    shard: Arc<Shard>,
    sink: pubsub::Sink,
    /// The pub/sub channel of orders.
    control: String,
    /// Mirrors without subscribers, and since when.
    unused: HashMap<ChannelName, Instant>,
    /// When the keys of mirrored channels were last kept from expiring.
    touched: Instant,
    /// Loads under way or waiting, one per channel at most.
    loads: HashMap<ChannelName, Load>,
    /// Loads waiting for a slot, in order.
    queued: VecDeque<ChannelName>,
    /// The loads in flight: reads on the command connection, off this task,
    /// so that a long one holds up no other channel's announcements.
    running: FuturesUnordered<BoxFuture<'static, Fetched>>,
    /// Channels whose last load failed.
    retry: HashMap<ChannelName, Retry>,
    /// Reconnects asked for before this connection began.
    asked: u64,
}

impl Node {
    fn new(shared: Arc<Shared>, index: usize, sink: pubsub::Sink, asked: u64) -> Self {
        Self {
            asked,
            index,
            shard: shared.shard_at(index),
            control: keys::control(&shared.config.prefix),
            shared,
            sink,
            unused: HashMap::new(),
            touched: Instant::now(),
            loads: HashMap::new(),
            queued: VecDeque::new(),
            running: FuturesUnordered::new(),
            retry: HashMap::new(),
        }
    }

    async fn serve(
        &mut self,
        mut stream: pubsub::Stream,
        requests: &mut mpsc::Receiver<Refresh>,
    ) -> Stop {
        let mut sweep = tokio::time::interval(self.shared.config.sweep_every());
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_retry = self.retry.values().filter_map(|r| r.at).min();
            let retry_due = async {
                match next_retry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                heard = stream.next() => match heard {
                    Some(pubsub::Event::Message { channel, payload }) => {
                        self.announced(&channel, &payload);
                        Ok(())
                    }
                    Some(pubsub::Event::Unsubscribed(name)) => {
                        self.unsubscribed(&name);
                        Ok(())
                    }
                    None => Err(Failure::Backplane("the pub/sub connection closed".to_owned())),
                },
                Some(fetched) = self.running.next(), if !self.running.is_empty() => {
                    self.loaded(fetched);
                    Ok(())
                }
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
                () = retry_due => {
                    self.retry_due();
                    Ok(())
                }
                _ = sweep.tick() => self.sweep().await,
                () = self.shard.backplane.reconnect.notified() => {
                    if self.shard.backplane.reconnects_asked.load(Ordering::SeqCst) > self.asked {
                        Err(Failure::Backplane(
                            "redis is elsewhere now (it answered that it is no longer the \
                             primary, or Sentinel named another)"
                                .to_owned(),
                        ))
                    } else {
                        Ok(()) // a permit left from before this connection
                    }
                }
            };
            if let Err(error) = result {
                return Stop::Failed(error, self.abandon());
            }
        }
    }

    /// The connection failed: every load stops, and the requests that
    /// waited on them are handed back.
    fn abandon(&mut self) -> Vec<Refresh> {
        self.running.clear();
        self.queued.clear();
        self.loads
            .drain()
            .flat_map(|(_, load)| load.waiters.into_iter().chain(load.again))
            .collect()
    }

    /// An announcement from Redis.
    fn announced(&mut self, name: &str, payload: &[u8]) {
        if name == self.control {
            self.ordered(payload);
            return;
        }
        let prefix = &self.shared.config.prefix;
        let Some(channel) = keys::channel_of(prefix, name) else {
            return; // not a channel of ours
        };
        let heard = match wire::announcement(payload) {
            Ok(wire::Announcement::Message(numbered)) => {
                Heard::Message(numbered.into_message(channel.clone()))
            }
            Ok(wire::Announcement::NewEpoch(epoch)) => Heard::NewEpoch(epoch),
            Ok(wire::Announcement::Presence(events)) => {
                // No offset, no history: straight to the log, loaded or not.
                if let Some(mirror) = self.shared.mirrors.read().get(&channel) {
                    mirror
                        .log
                        .announce(events.into_iter().map(|(kind, identity)| {
                            PresenceEvent::new(channel.clone(), kind, identity)
                        }));
                }
                return;
            }
            Err(reason) => {
                self.shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%channel, reason, "ignored a message not in comet's format");
                return;
            }
        };
        let Some(mirror) = self.shared.mirrors.read().get(&channel).cloned() else {
            return; // unsubscribed meanwhile
        };
        if !self.ours(&mirror) {
            // Its slot moved to another shard, whose task reads it there.
            return;
        }
        if let Heard::NewEpoch(epoch) = &heard {
            moved(&mirror, *epoch);
        }
        if let Some(load) = self.loads.get_mut(&channel) {
            // Applied after the load, in order (Redis has them if dropped).
            if load.heard.len() < MAX_HEARD {
                load.heard.push(heard);
            } else {
                load.heard.clear();
                load.reload = true;
            }
            return;
        }
        if !mirror.current.load(Ordering::SeqCst) {
            // Its last read failed, or its epoch moved: read it whole (this
            // message included), unless it is waiting out its back-off.
            if self.retry.get(&channel).is_none_or(|r| r.at.is_none()) {
                self.load(mirror, None);
            }
            return;
        }
        if !self.hear(&mirror, heard) {
            self.load(mirror, None);
        }
    }

    /// Whether `mirror`'s channel is this shard's (a cluster may have moved
    /// its slot to another).
    fn ours(&self, mirror: &Mirror) -> bool {
        mirror.shard.load(Ordering::SeqCst) == self.index
    }

    /// Passes `request` to the task of the shard `mirror` moved to.
    fn hand_over(&self, mirror: &Mirror, request: Refresh) {
        let to = mirror.shard.load(Ordering::SeqCst);
        match self.shared.try_shard_at(to) {
            Some(shard) => {
                if let Err(error) = shard.requests.try_send(request) {
                    let request = match error {
                        mpsc::error::TrySendError::Full(request)
                        | mpsc::error::TrySendError::Closed(request) => request,
                    };
                    let _ = request
                        .reply
                        .send(Err("the channel moved to a shard that is busy".to_owned()));
                }
            }
            None => {
                let _ = request
                    .reply
                    .send(Err("the channel moved to no known shard".to_owned()));
            }
        }
    }

    /// Redis unsubscribed a channel unprompted (a cluster moved its slot
    /// away from this shard): the mirror stops vouching for itself, and the
    /// cluster task learns where the slot went (and moves the mirror
    /// there).
    fn unsubscribed(&mut self, name: &str) {
        let prefix = &self.shared.config.prefix;
        if let Some(channel) = keys::channel_of(prefix, name) {
            if let Some(mirror) = self.shared.mirrors.read().get(&channel) {
                if mirror.shard.load(Ordering::SeqCst) == self.index {
                    mirror.subscribed.store(false, Ordering::SeqCst);
                    mirror.current.store(false, Ordering::SeqCst);
                }
            }
        }
        self.shared.rethink.notify_one();
    }

    /// Applies what was announced to a current mirror; false when the
    /// channel must be read from Redis to make sense of it.
    fn hear(&self, mirror: &Mirror, heard: Heard) -> bool {
        match heard {
            // This node made it, and has it already; or another one did.
            Heard::NewEpoch(epoch) => !moved(mirror, epoch),
            Heard::Message(message) => match mirror.log.extend(message.clone()) {
                Extended::Appended => true,
                // Announced again after a read: the same message. Another
                // one under an offset already held means Redis lost writes.
                Extended::Duplicate => holds(&mirror.log, &message),
                Extended::OutOfOrder => false,
            },
        }
    }

    /// An order heard on the control channel: to every hub listening.
    fn ordered(&self, payload: &[u8]) {
        match wire::control(payload) {
            Ok(control) => {
                let listeners = self
                    .shared
                    .listeners
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                for listener in listeners.iter() {
                    listener(control.clone());
                }
            }
            Err(reason) => {
                self.shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason, "ignored an order not in comet's format");
            }
        }
    }

    /// Brings the mirrors that subscribers asked for up to date: new ones are
    /// subscribed (in one command) and loaded; the others are read again.
    async fn sync(&mut self, batch: Vec<Refresh>) -> Result<(), Failure> {
        let mut fresh = Vec::new();
        let mut wanted = Vec::new();
        for request in batch {
            // A subscriber that gave up waiting needs nothing any more.
            if request.reply.is_closed() {
                continue;
            }
            let Some(mirror) = self.shared.mirrors.read().get(&request.channel).cloned() else {
                // Dropped meanwhile: the subscriber that asked has gone.
                let _ = request.reply.send(Ok(()));
                continue;
            };
            if !self.ours(&mirror) {
                self.hand_over(&mirror, request);
                continue;
            }
            if !mirror.subscribed.swap(true, Ordering::SeqCst) {
                fresh.push(mirror.keys.pubsub.clone());
            }
            wanted.push((mirror, request));
        }
        if !fresh.is_empty() {
            match self.subscribe(fresh).await {
                Ok(()) => {}
                // A cluster moved some of these channels' slots: they wait
                // for the cluster task to move them; the connection is fine.
                Err(Failure::Moved(why)) => {
                    for (mirror, request) in wanted {
                        mirror.subscribed.store(false, Ordering::SeqCst);
                        let _ = request.reply.send(Err(why.clone()));
                    }
                    return Ok(());
                }
                Err(failure) => {
                    for (_, request) in wanted {
                        let _ = request.reply.send(Err(failure.to_string()));
                    }
                    return Err(failure);
                }
            }
        }
        for (mirror, request) in wanted {
            self.load(mirror, Some(request));
        }
        Ok(())
    }

    /// Loads `mirror`'s channel (for `request`, if any): joins its load if
    /// one is waiting, or follows the one under way.
    fn load(&mut self, mirror: Arc<Mirror>, request: Option<Refresh>) {
        let channel = mirror.log.name().clone();
        if let Some(load) = self.loads.get_mut(&channel) {
            let same = Arc::ptr_eq(&load.mirror, &mirror);
            if !load.running && !same {
                // The mirror was dropped and made again before its load
                // began: load the one in use.
                load.mirror = mirror;
            }
            match request {
                // A cursor to judge needs a read that began after it came;
                // a mirror made again needs a read of its own.
                Some(request) if load.running && (request.resume.is_some() || !same) => {
                    load.again.push(request);
                }
                Some(request) => load.waiters.push(request),
                None => load.reload |= load.running,
            }
            return;
        }
        if self.loads.len() >= self.shared.config.queue {
            // As many channels wait for a load as the node's queue holds.
            if let Some(request) = request {
                self.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                let _ = request.reply.send(Err(
                    "the node has too many channel loads waiting; retry later".to_owned(),
                ));
            } else {
                // Read at its next use instead.
                mirror.current.store(false, Ordering::SeqCst);
            }
            return;
        }
        // A subscriber asking does not wait out a failed load's back-off.
        if let Some(retry) = self.retry.get_mut(&channel) {
            retry.at = None;
        }
        self.loads.insert(
            channel.clone(),
            Load {
                mirror,
                running: false,
                waiters: request.into_iter().collect(),
                again: Vec::new(),
                heard: Vec::new(),
                reload: false,
            },
        );
        self.queued.push_back(channel);
        self.start_queued();
    }

    /// Starts waiting loads while there are free slots.
    fn start_queued(&mut self) {
        while self.running.len() < MAX_LOADS {
            let Some(channel) = self.queued.pop_front() else {
                return;
            };
            let Some(load) = self.loads.get_mut(&channel) else {
                continue;
            };
            // Nobody waits for it any more, and nobody uses the channel:
            // not worth a read.
            if load.mirror.log.subscriber_count() == 0
                && load.again.is_empty()
                && load.waiters.iter().all(|r| r.reply.is_closed())
            {
                self.loads.remove(&channel);
                continue;
            }
            load.running = true;
            let mirror = load.mirror.clone();
            let head = mirror.log.head();
            let known = mirror
                .current
                .load(Ordering::SeqCst)
                .then_some(head)
                // A mirror never loaded knows nothing yet, whatever it holds.
                .or_else(|| (head.offset > 0).then_some(head));
            self.run_job(channel, mirror, Job::Read { known });
        }
    }

    /// Runs `job` for `channel` off this task.
    fn run_job(&mut self, channel: ChannelName, mirror: Arc<Mirror>, job: Job) {
        let shared = self.shared.clone();
        let shard = self.shard.clone();
        self.running.push(Box::pin(async move {
            let max = mirror.log.policy().max_messages;
            let backplane = &shard.backplane;
            let result = match job {
                Job::Read { known } => backplane.read(&mirror.keys, known, max).await,
                Job::Renew { epoch } => {
                    match backplane.new_epoch(&mirror.keys, Some(epoch)).await {
                        Ok(()) => {
                            shared.stats.epochs_renewed.fetch_add(1, Ordering::Relaxed);
                            backplane.read(&mirror.keys, None, max).await
                        }
                        Err(failure) => Err(failure),
                    }
                }
            };
            Fetched {
                channel,
                mirror,
                job,
                result,
            }
        }));
    }

    /// A load came back: apply it to the mirror, then what was announced
    /// meanwhile, and answer who waited.
    fn loaded(&mut self, fetched: Fetched) {
        let Fetched {
            channel,
            mirror,
            job,
            result,
        } = fetched;
        let Some(mut load) = self.loads.remove(&channel) else {
            return;
        };
        if !self.ours(&mirror) {
            // Its slot moved while this shard read it: the new shard's task
            // reads it there (a read from here may be stale); whoever waited
            // waits for that one.
            for request in load.waiters.into_iter().chain(load.again) {
                self.hand_over(&mirror, request);
            }
            self.retry.remove(&channel);
            self.start_queued();
            return;
        }
        let kept = self
            .shared
            .mirrors
            .read()
            .get(&channel)
            .is_some_and(|m| Arc::ptr_eq(m, &mirror));
        if !kept {
            // Dropped meanwhile (no subscribers). If it was made again since,
            // whoever waits is waiting for the new one: it is loaded now.
            let waiting = load.waiters.into_iter().chain(load.again);
            let current = self.shared.mirrors.read().get(&channel).cloned();
            match current {
                Some(current) => {
                    self.load(current, None);
                    if let Some(next) = self.loads.get_mut(&channel) {
                        next.waiters.extend(waiting);
                    }
                }
                None => {
                    for request in waiting {
                        let _ = request.reply.send(Ok(()));
                    }
                }
            }
            self.start_queued();
            return;
        }
        let applied = result.and_then(|state| match job {
            Job::Read { .. } => mirror.apply(state, self.shard.backplane.shortest_life()),
            Job::Renew { .. } => mirror.apply_renewed(state).map(|()| None),
        });
        // An issued cursor ahead of what Redis has in its epoch, or naming
        // another message at its offset: Redis lost writes that a client
        // received. Those offsets will be (or were) assigned again, so the
        // channel moves to a new epoch.
        let renew = match &applied {
            Ok(Some(epoch)) => Some(*epoch),
            Ok(None) if matches!(job, Job::Read { .. }) => load
                .waiters
                .iter()
                .filter_map(|request| request.resume.as_ref())
                .any(|resume| contradicts(&mirror.log, resume))
                .then(|| {
                    tracing::warn!(
                        %channel,
                        "a cursor a node issued is ahead of redis, or names another message \
                         at its offset: redis lost writes"
                    );
                    mirror.log.epoch()
                }),
            _ => None,
        };
        if let Some(epoch) = renew {
            // Once, whichever node notices first; the same waiters.
            self.run_job(channel.clone(), mirror, Job::Renew { epoch });
            self.loads.insert(channel, load);
            return;
        }
        match applied {
            Ok(_) => {
                mirror.current.store(true, Ordering::SeqCst);
                self.shared.stats.refreshes.fetch_add(1, Ordering::Relaxed);
                for heard in load.heard.drain(..) {
                    if !self.hear(&mirror, heard) {
                        load.reload = true;
                    }
                }
                for request in load.waiters.drain(..) {
                    let _ = request.reply.send(Ok(()));
                }
            }
            Err(failure) => {
                // This channel's alone: its subscribers keep what they
                // have, new ones get 503, and it is read again after a
                // back-off while it has subscribers.
                mirror.current.store(false, Ordering::SeqCst);
                self.shared
                    .stats
                    .failed_reads
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%channel, %failure, "could not read a channel from redis");
                for request in load.waiters.drain(..).chain(load.again.drain(..)) {
                    let _ = request.reply.send(Err(failure.to_string()));
                }
                let backoff = self
                    .retry
                    .get(&channel)
                    .map_or(FIRST_RETRY, |r| (r.backoff * 2).min(LAST_RETRY));
                self.retry.insert(
                    channel.clone(),
                    Retry {
                        at: Some(Instant::now() + jittered(backoff)),
                        backoff,
                    },
                );
                self.start_queued();
                return;
            }
        }
        self.retry.remove(&channel);
        if load.reload || !load.again.is_empty() {
            let again = std::mem::take(&mut load.again);
            self.load(mirror.clone(), None);
            if let Some(next) = self.loads.get_mut(&channel) {
                next.waiters.extend(again);
            }
        }
        self.start_queued();
    }

    /// Reads again the channels whose back-off is over, while they have
    /// subscribers.
    fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<ChannelName> = self
            .retry
            .iter()
            .filter(|(_, retry)| retry.at.is_some_and(|at| at <= now))
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel in due {
            let mirror = self.shared.mirrors.read().get(&channel).cloned();
            match mirror {
                Some(mirror)
                    if self.ours(&mirror)
                        && mirror.log.subscriber_count() > 0
                        && mirror.subscribed.load(Ordering::SeqCst)
                        && !mirror.current.load(Ordering::SeqCst) =>
                {
                    self.load(mirror, None);
                }
                // Read at its next use instead.
                _ => {
                    self.retry.remove(&channel);
                }
            }
        }
    }

    async fn subscribe(&mut self, channels: Vec<String>) -> Result<(), Failure> {
        let timeout = self.shared.config.timeout;
        match tokio::time::timeout(timeout, self.sink.subscribe(channels)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) if pubsub::moved(&error) => {
                self.shared.rethink.notify_one();
                Err(Failure::Moved(error))
            }
            Ok(Err(error)) => Err(Failure::Backplane(format!("SUBSCRIBE failed: {error}"))),
            Err(_) => Err(Failure::Backplane("SUBSCRIBE timed out".to_owned())),
        }
    }

    /// After (re)connecting: subscribe to the orders (on the first shard)
    /// and every mirrored channel of this shard, then load their mirrors
    /// (off this task: a connect succeeds once SUBSCRIBE does).
    async fn resubscribe_all(&mut self) -> Result<(), Failure> {
        if self.index == 0 {
            let timeout = self.shared.config.timeout;
            let control = vec![self.control.clone()];
            match tokio::time::timeout(timeout, self.sink.subscribe_everywhere(control)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    return Err(Failure::Backplane(format!("SUBSCRIBE failed: {error}")))
                }
                Err(_) => return Err(Failure::Backplane("SUBSCRIBE timed out".to_owned())),
            }
        }
        let mirrors = self.mirrors();
        for chunk in mirrors.chunks(1000) {
            for mirror in chunk {
                mirror.subscribed.store(true, Ordering::SeqCst);
            }
            match self
                .subscribe(chunk.iter().map(|m| m.keys.pubsub.clone()).collect())
                .await
            {
                Ok(()) => {}
                // Slots that moved: the cluster task moves their mirrors.
                Err(Failure::Moved(_)) => {
                    for mirror in chunk {
                        mirror.subscribed.store(false, Ordering::SeqCst);
                    }
                }
                Err(failure) => return Err(failure),
            }
        }
        for mirror in mirrors {
            self.load(mirror, None);
        }
        Ok(())
    }

    /// The mirrors of this shard's channels.
    fn mirrors(&self) -> Vec<Arc<Mirror>> {
        let mirrors = self.shared.mirrors.read();
        let mine = mirrors
            .values()
            .filter(|m| m.shard.load(Ordering::SeqCst) == self.index);
        mine.cloned().collect()
    }

    /// Subscribes to, and reads, the channels of this shard that have
    /// subscribers but no subscription here: a cluster moved them here
    /// while this task's queue was full, or back before the map noticed.
    async fn adopt(&mut self) -> Result<(), Failure> {
        let mut strays = self.mirrors();
        strays.retain(|m| !m.subscribed.load(Ordering::SeqCst) && m.log.subscriber_count() > 0);
        for chunk in strays.chunks(1000) {
            match self
                .subscribe(chunk.iter().map(|m| m.keys.pubsub.clone()).collect())
                .await
            {
                Ok(()) => {
                    for mirror in chunk {
                        mirror.subscribed.store(true, Ordering::SeqCst);
                        self.load(mirror.clone(), None);
                    }
                }
                // Moved on again: the cluster task hands them on.
                Err(Failure::Moved(_)) => {}
                Err(failure) => return Err(failure),
            }
        }
        Ok(())
    }

    /// Drops mirrors unused for the configured while, and keeps the keys of
    /// the others from expiring.
    async fn sweep(&mut self) -> Result<(), Failure> {
        // A connection that a firewall or NAT dropped in silence delivers
        // nothing and reports nothing: ask for an answer now and then.
        match tokio::time::timeout(self.shared.config.timeout, self.sink.ping()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(Failure::Backplane(format!("PING failed: {error}"))),
            Err(_) => return Err(Failure::Backplane("PING timed out".to_owned())),
        }
        self.adopt().await?;
        let now = Instant::now();
        let keep = self.shared.config.mirror_idle;
        let mut dropped = Vec::new();
        {
            let mut mirrors = self.shared.mirrors.write();
            mirrors.retain(|name, mirror| {
                if mirror.shard.load(Ordering::SeqCst) != self.index
                    || mirror.log.subscriber_count() > 0
                {
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
        // Keys expire idle_ttl after their last use at the earliest: touching
        // them every quarter of it is enough.
        if now.duration_since(self.touched) >= self.shared.config.idle_ttl / 4
            && !self.shard.touching.swap(true, Ordering::SeqCst)
        {
            self.touched = now;
            let mut used = self.mirrors();
            used.retain(|m| m.log.subscriber_count() > 0);
            // On a task of its own: thousands of calls must not hold up
            // the announcements this task delivers.
            let shard = self.shard.clone();
            tokio::spawn(async move {
                let keys: Vec<&ChannelKeys> = used.iter().map(|mirror| &mirror.keys).collect();
                shard.backplane.touch(&keys).await;
                shard.touching.store(false, Ordering::SeqCst);
            });
        }
        // The cursor key again, now and then: a node that put a fresh one
        // into a Redis that lost the old one, and nodes that still tag with
        // the old one, converge on one key and honour the other.
        if self.shared.is_home(self.index) && !self.shared.keying.swap(true, Ordering::SeqCst) {
            let shard = self.shard.clone();
            let shared = self.shared.clone();
            tokio::spawn(async move {
                if let Err(failure) = shard.backplane.load_cursor_key().await {
                    tracing::debug!(%failure, "could not read the cursor key again");
                }
                shared.keying.store(false, Ordering::SeqCst);
            });
        }
        Ok(())
    }
}
