//! The mirrors: a [`ChannelLog`] per channel this node's subscribers use,
//! kept as Redis has it by the node's task (which alone writes to them).
//!
//! A subscriber attaches to its channel's mirror here, and asks the task to
//! bring it up to date (a [`Refresh`]) unless the mirror [answers] it as it
//! is. The task applies what a read of Redis brought ([`Mirror::apply`]),
//! and checks announcements against what a mirror holds ([`holds`]); an
//! issued cursor that [`contradicts`] a mirror proves that Redis lost
//! writes.
//!
//! [answers]: Mirror::answers

use crate::{
    backplane::{Config, Failure},
    keys::ChannelKeys,
    wire::State,
};
use comet_core::engine::{Attachment, ChannelLog, Resume, VOID_EPOCH};
use comet_core::{ChannelName, Message};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
};
use tokio::sync::oneshot;

/// A channel this node mirrors.
pub(crate) struct Mirror {
    pub(crate) log: Arc<ChannelLog>,
    pub(crate) keys: ChannelKeys,
    /// The shard that holds its channel, whose task alone writes to it
    /// (it changes where a Redis Cluster moves the channel's slot).
    pub(crate) shard: AtomicUsize,
    /// Loaded from Redis and kept current since (false until the first load,
    /// again while the pub/sub connection is down, and after a failed read).
    pub(crate) current: AtomicBool,
    /// Its pub/sub channel is subscribed on the current connection.
    pub(crate) subscribed: AtomicBool,
}

/// What a subscriber asks of the task: bring `channel`'s mirror up to date
/// (load it, or catch up with a cursor from further along).
pub(crate) struct Refresh {
    pub(crate) channel: ChannelName,
    /// Where the subscriber resumes, if a node issued its cursor.
    pub(crate) resume: Option<Resume>,
    pub(crate) reply: oneshot::Sender<Result<(), String>>,
}

/// The mirrors of one node.
pub(crate) struct Mirrors {
    config: Arc<Config>,
    mirrors: RwLock<HashMap<ChannelName, Arc<Mirror>>>,
}

impl Mirrors {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        Self {
            config,
            mirrors: RwLock::default(),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, HashMap<ChannelName, Arc<Mirror>>> {
        self.mirrors.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, HashMap<ChannelName, Arc<Mirror>>> {
        self.mirrors.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The mirror of `channel`, created if needed, with one more subscriber
    /// counted (under the map's lock, so that no sweep drops it meanwhile).
    /// A new mirror is tagged with `shard` (`usize::MAX` where none is
    /// known yet).
    pub(crate) fn attach(&self, channel: &ChannelName, shard: usize) -> (Arc<Mirror>, Attachment) {
        if let Some(mirror) = self.read().get(channel) {
            return (mirror.clone(), mirror.log.attach());
        }
        let mut mirrors = self.write();
        let mirror = mirrors.entry(channel.clone()).or_insert_with(|| {
            Arc::new(Mirror {
                log: Arc::new(ChannelLog::with_epoch(
                    channel.clone(),
                    self.config.history,
                    0,
                )),
                keys: ChannelKeys::new(&self.config.prefix, channel),
                shard: AtomicUsize::new(shard),
                current: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
            })
        });
        (mirror.clone(), mirror.log.attach())
    }
}

impl Mirror {
    /// Whether this mirror answers a subscriber resuming `from` as it is,
    /// with no read of Redis first.
    pub(crate) fn answers(&self, from: Option<Resume>) -> bool {
        let current = self.current.load(Ordering::SeqCst);
        let head = self.log.head();
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
        let contradicted = from.is_some_and(|r| contradicts(&self.log, &r));
        current && (!elsewhere || !issued) && !contradicted
    }

    /// Applies a read: `Some(epoch)` when the channel must move from
    /// `epoch` to a new one (Redis lost writes the mirror has).
    /// `shortest_life` is how long a history lives in Redis at the least
    /// (see `Backplane::shortest_life`).
    pub(crate) fn apply(
        &self,
        state: State,
        shortest_life: Option<u64>,
    ) -> Result<Option<u64>, Failure> {
        let head = self.log.head();
        let channel = self.log.name().clone();
        // Vouched for without a break: the mirror was current in the void
        // (every announcement since its last read reached it).
        let live_void = self
            .current
            .load(Ordering::SeqCst)
            .then(|| self.log.void_since())
            .flatten();
        if state.epoch == VOID_EPOCH {
            // Redis has nothing of the channel (never published to, or
            // expired), and the read made nothing either.
            self.log.saw_void(state.now.max(1), live_void.is_some());
            return Ok(None);
        }
        // Redis may have lost this mirror's newest message and given its
        // offset to another one since (a replica promoted behind its
        // primary, then new publishes): the same epoch, the head at or past
        // the mirror's, and a different message where the mirror's was.
        let diverged = state.at.is_some_and(|at| {
            at.epoch == head.epoch
                && at.offset == head.offset
                && !holds(&self.log, &at.into_message(channel.clone()))
        });
        let messages = state
            .entries
            .into_iter()
            .map(|n| n.into_message(channel.clone()));
        // Nothing of what Redis has now is taken in once it has diverged.
        let restarted = if diverged {
            false
        } else if state.born != 0 && state.epoch != head.epoch {
            // The channel's first epoch: readers who saw the void continue
            // into it if nothing can have come and gone since.
            let continues_from = continues_void_from(state.born, live_void, shortest_life);
            self.log
                .restart_from_void(state.epoch, state.last, messages, continues_from)
        } else {
            self.log.restart(state.epoch, state.last, messages)
        };
        if !restarted {
            // Redis lost writes that this mirror has: those offsets are (or
            // will be) assigned again, so the channel must move to a new
            // epoch, once, whichever node notices first.
            tracing::warn!(%channel, "redis went back in history: moving to a new epoch");
            return Ok(Some(state.epoch));
        }
        Ok(None)
    }

    /// Applies the read after a new epoch: readers get one gap of unknown
    /// size.
    pub(crate) fn apply_renewed(&self, state: State) -> Result<(), Failure> {
        if state.epoch == VOID_EPOCH {
            // Its keys went away meanwhile.
            self.log.saw_void(state.now.max(1), false);
            return Ok(());
        }
        let channel = self.log.name().clone();
        let messages = state
            .entries
            .into_iter()
            .map(|n| n.into_message(channel.clone()));
        if !self.log.restart(state.epoch, state.last, messages) {
            // Another node's new epoch cannot be behind this mirror's.
            return Err(Failure::Channel(
                "redis went back in history again while renewing the epoch".to_owned(),
            ));
        }
        Ok(())
    }
}

/// From when a reader's sight of the void (Redis's clock, ms) carries
/// on into a first epoch that began at `born`: nothing can have come and
/// gone in between when the mirror vouched for the void since without a
/// break (`live_since`), or when less than a history's shortest life
/// (`shortest_life`) separates the two.
///
/// A Redis that may evict keys before they expire (no `shortest_life`) can
/// end a history at any time: only the mirror's own vouching counts then.
fn continues_void_from(born: u64, live_since: Option<u64>, shortest_life: Option<u64>) -> u64 {
    let by_life = match shortest_life {
        None => u64::MAX,
        Some(life) => born.saturating_sub(life).saturating_add(1),
    };
    live_since.map_or(by_life, |since| since.min(by_life))
}

/// Whether a cursor position a node issued proves that `log`'s history lost
/// writes the cursor's holder received: it is in the log's epoch and ahead
/// of its head, or names another message than the log holds at its offset
/// (the lost offset was given to a new message since).
pub(crate) fn contradicts(log: &ChannelLog, resume: &Resume) -> bool {
    let position = resume.position;
    if !resume.issued || position.epoch != log.epoch() {
        return false;
    }
    if position.offset > log.head().offset {
        return true;
    }
    if position.identity == 0 || position.offset == 0 {
        return false;
    }
    let before = comet_core::Position::new(log.name(), position.epoch, position.offset - 1);
    match log.read_after(before) {
        comet_core::engine::Read::Message(held) if held.offset() == position.offset => {
            held.identity() != 0 && held.identity() != position.identity
        }
        _ => false,
    }
}

/// Whether `log` holds `message` at its offset (or cannot tell: it no
/// longer holds anything there). Messages that both carry an identity are
/// the same only if it is: another message with the same bytes under an
/// offset already served is still another message.
pub(crate) fn holds(log: &ChannelLog, message: &Message) -> bool {
    let before = comet_core::Position::new(log.name(), message.epoch(), message.offset() - 1);
    match log.read_after(before) {
        comet_core::engine::Read::Message(held) if held.offset() == message.offset() => {
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
