//! One channel's bounded history and its wake-up signal.
//!
//! Every subscriber reads the same `VecDeque<Arc<Message>>` at its own
//! offset: there is no queue per subscriber, so an idle subscriber costs a
//! position and a waiter, and a slow one can never make the hub hold more than
//! the history bound. A subscriber whose position has been evicted is told so
//! with a gap instead.

use crate::{epoch::VOID_EPOCH, message::Message, ChannelName, Payload, Position, PresenceEvent};
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    time::Duration,
};
use tokio::{
    sync::{futures::OwnedNotified, Notify},
    time::Instant,
};

/// How much history a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// The most messages kept (at least 1).
    pub max_messages: usize,
    /// Messages older than this are dropped; `None` keeps them until evicted
    /// by count.
    pub max_age: Option<Duration>,
}

impl Default for HistoryPolicy {
    /// 1,000 messages, 15 minutes: enough for a client to ride out a network
    /// drop or a redeploy without a gap.
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_age: Some(Duration::from_secs(15 * 60)),
        }
    }
}

/// Where a subscription without a cursor position starts in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Since {
    /// Only messages published after subscribing.
    #[default]
    Head,
    /// Every message the history still holds.
    Oldest,
    /// The last `n` messages (fewer if history holds fewer).
    Last(u64),
}

/// One subscriber counted on a channel's log ([`ChannelLog::attach`]), and
/// counted off again ([`ChannelLog::detach`]) when dropped, unless kept.
///
/// [`Engine::attach`](crate::engine::Engine::attach) hands one out, so that
/// the count goes back by itself wherever attaching does not complete: an
/// engine's load that fails, a subscribe refused or dropped half-way.
#[must_use = "dropping an attachment detaches its log at once"]
pub struct Attachment(Option<Arc<ChannelLog>>, bool);

impl Attachment {
    /// The log had no other subscriber when this one was counted.
    pub fn was_first(&self) -> bool {
        self.1
    }

    /// The attached log.
    pub fn log(&self) -> &Arc<ChannelLog> {
        self.0
            .as_ref()
            .expect("an attachment holds its log until kept")
    }

    /// Keeps the count: whoever holds the log now detaches it when done.
    pub fn keep(mut self) -> Arc<ChannelLog> {
        self.0
            .take()
            .expect("an attachment holds its log until kept")
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Some(log) = &self.0 {
            log.detach();
        }
    }
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Attachment")
            .field(&self.log().name())
            .finish()
    }
}

/// What reading after a position found.
#[derive(Debug)]
pub enum Read {
    /// The next message.
    Message(Arc<Message>),
    /// Messages after the position are gone; continue from `resume`.
    Gap {
        /// How many were lost, or `None` when unknown (another epoch).
        missed: Option<u64>,
        /// The position to continue from: just before the oldest retained.
        resume: Position,
    },
    /// Nothing after the position yet.
    Nothing,
}

/// A channel's history, its epoch, its subscribers and its wake-up signal.
///
/// Engines create and feed these; subscriptions read them. An engine that
/// numbers messages itself (the in-memory one) feeds a log with
/// [`append`](Self::append); an engine that mirrors history kept elsewhere
/// (a backplane shared by several nodes) feeds it with
/// [`extend`](Self::extend) and starts it over with [`restart`](Self::restart)
/// when that history began anew, which gives every reader one gap.
#[derive(Debug)]
pub struct ChannelLog {
    name: ChannelName,
    /// A copy of `LogState::epoch`, stored (under the write lock) before
    /// waiters are woken, for the lock-free fast path of caught-up readers.
    epoch: AtomicU64,
    policy: HistoryPolicy,
    state: RwLock<LogState>,
    notify: Arc<Notify>,
    subscribers: AtomicUsize,
    /// A copy of `LogState::last_offset`, stored (under the write lock) before
    /// waiters are woken: readers that are caught up learn so without locking.
    published: AtomicU64,
    /// When the log was created: `last_active` counts from here, on the same
    /// clock as every later instant of this log (tokio's, so paused-time tests
    /// see it advance).
    created: Instant,
    /// When the channel last had a publish, a subscriber leave, or a look
    /// (nanoseconds after `created`); atomic so that leaving takes no lock.
    last_active: AtomicU64,
    /// Recent join and leave events, for subscribers that asked for them.
    presence: RwLock<PresenceFeed>,
    /// A copy of `PresenceFeed::next`, stored (under its lock) before
    /// waiters are woken: readers with nothing new learn so without locking.
    announced: AtomicU64,
    /// How many times the channel was closed: a subscription that saw fewer
    /// when it started reading stops reading it.
    closings: AtomicU32,
}

/// The join and leave events a channel keeps for readers that are behind:
/// a reader more than this many behind skips the oldest (presence is a
/// live view; the client's list can be fetched again).
pub const PRESENCE_FEED: usize = 256;

#[derive(Debug, Default)]
struct PresenceFeed {
    events: VecDeque<Arc<PresenceEvent>>,
    /// The number of the next event (events are numbered from 0, per log).
    next: u64,
}

/// Channels with more subscribers than this are woken from a spawned task,
/// so a publish costs the same whatever the fan-out (PROTOCOL: publish cost
/// stays flat); smaller ones are woken inline, one task hop sooner.
const INLINE_WAKE_LIMIT: usize = 32;

#[derive(Debug)]
struct LogState {
    epoch: u64,
    messages: VecDeque<Arc<Message>>,
    /// The offset of the last message ever published in this epoch.
    last_offset: u64,
    /// In [`VOID_EPOCH`]: since when, and until when, the engine vouches
    /// that the channel had no history (engine clock, ms; 0: never said).
    void_since: u64,
    void_last: u64,
    /// In the channel's first epoch: readers at the void position whose
    /// time is at least this continue at its offset 0 (`u64::MAX`: none do).
    continues_void_from: u64,
}

impl LogState {
    fn empty(epoch: u64) -> Self {
        Self {
            epoch,
            messages: VecDeque::new(),
            last_offset: 0,
            void_since: 0,
            void_last: 0,
            continues_void_from: u64::MAX,
        }
    }

    /// The position at `offset` of this epoch, naming the identity of the
    /// message there if it is still held (in the void, when the engine last
    /// saw it so).
    fn position(&self, name: &ChannelName, offset: u64) -> Position {
        if self.epoch == VOID_EPOCH && offset == 0 {
            return Position::new(name, VOID_EPOCH, 0).with_identity(self.void_last);
        }
        let oldest_before = self.last_offset - self.messages.len() as u64;
        let identity = offset
            .checked_sub(oldest_before + 1)
            .and_then(|index| self.messages.get(index as usize))
            .map_or(0, |message| message.identity());
        Position::new(name, self.epoch, offset).with_identity(identity)
    }

    /// A reader at the void position continues at offset 0 of the first
    /// epoch when it saw the void late enough that nothing can have come and
    /// gone since (see [`ChannelLog::restart_from_void`]).
    fn continuing(&self, position: Position) -> Position {
        if position.epoch == VOID_EPOCH
            && position.offset == 0
            && self.epoch != VOID_EPOCH
            && position.identity != 0
            && position.identity >= self.continues_void_from
        {
            Position {
                epoch: self.epoch,
                identity: 0,
                ..position
            }
        } else {
            position
        }
    }
}

/// What [`ChannelLog::extend`] did with a message numbered elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extended {
    /// It was the next one: appended, and readers woken.
    Appended,
    /// The log already had it (same epoch, offset at or before the head).
    Duplicate,
    /// It does not follow the head (messages are missing before it, or it
    /// belongs to another epoch): nothing changed; the engine must fetch
    /// what is missing, or [`restart`](ChannelLog::restart) the log.
    OutOfOrder,
}

impl ChannelLog {
    /// A fresh history with a new random epoch.
    pub fn new(name: ChannelName, policy: HistoryPolicy) -> Self {
        Self::with_epoch(name, policy, crate::epoch::random_epoch())
    }

    /// An empty history in `epoch` (an engine that keeps epochs elsewhere
    /// creates its logs so, then [`restart`](Self::restart)s them with what it
    /// loaded).
    pub fn with_epoch(name: ChannelName, policy: HistoryPolicy, epoch: u64) -> Self {
        Self {
            name,
            epoch: AtomicU64::new(epoch),
            policy: HistoryPolicy {
                max_messages: policy.max_messages.max(1),
                ..policy
            },
            state: RwLock::new(LogState::empty(epoch)),
            notify: Arc::new(Notify::new()),
            subscribers: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            created: Instant::now(),
            last_active: AtomicU64::new(0),
            presence: RwLock::default(),
            announced: AtomicU64::new(0),
            closings: AtomicU32::new(0),
        }
    }

    /// Ends every current subscription's reading of this channel (each
    /// gets an end item saying it was closed); later subscriptions read it
    /// as before.
    pub fn close(&self) {
        self.closings.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// How many times the channel was closed.
    pub(crate) fn closings(&self) -> u32 {
        self.closings.load(Ordering::Acquire)
    }

    /// Delivers join and leave events to the subscribers that asked for
    /// them (not to history: they take no offset). Engines call this with
    /// what their [`PresenceStore`](crate::engine::PresenceStore) carried;
    /// the in-memory one, with what its node saw.
    pub fn announce(&self, events: impl IntoIterator<Item = PresenceEvent>) {
        {
            let mut feed = self.presence.write().unwrap_or_else(|e| e.into_inner());
            for event in events {
                feed.events.push_back(Arc::new(event));
                feed.next += 1;
                if feed.events.len() > PRESENCE_FEED {
                    feed.events.pop_front();
                }
            }
            self.announced.store(feed.next, Ordering::Release);
        }
        self.wake_waiters();
    }

    /// The number of the next presence event: a new reader starts here.
    pub(crate) fn presence_mark(&self) -> u64 {
        self.announced.load(Ordering::Acquire)
    }

    /// The presence event numbered `seen` (or the oldest kept, if that one
    /// is gone), and the number after it; `None` when there is none yet.
    pub(crate) fn presence_after(&self, seen: u64) -> Option<(Arc<PresenceEvent>, u64)> {
        if seen >= self.announced.load(Ordering::Acquire) {
            return None;
        }
        let feed = self.presence.read().unwrap_or_else(|e| e.into_inner());
        let oldest = feed.next - feed.events.len() as u64;
        let at = seen.max(oldest);
        let event = feed.events.get((at - oldest) as usize)?.clone();
        Some((event, at + 1))
    }

    /// The channel's name.
    pub fn name(&self) -> &ChannelName {
        &self.name
    }

    /// The epoch of this history.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The history policy it keeps.
    pub fn policy(&self) -> HistoryPolicy {
        self.policy
    }

    /// Subscriptions currently attached.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Appends a message (with its next offset) and wakes every waiter.
    /// The payload's event name must already be validated.
    pub fn append(&self, payload: Payload) -> Arc<Message> {
        let message = {
            let mut state = self.write();
            let offset = state.last_offset + 1;
            let message = Arc::new(Message::new(
                self.name.clone(),
                state.epoch,
                offset,
                payload.kind,
                payload.event.map(String::into_boxed_str),
                payload.data,
            ));
            self.push(&mut state, message.clone());
            message
        };
        self.wake_waiters();
        message
    }

    /// Appends a message numbered elsewhere, if it is the next one: the
    /// engine's backplane assigned its epoch and offset. Readers are woken
    /// when it is appended.
    pub fn extend(&self, message: Arc<Message>) -> Extended {
        {
            let mut state = self.write();
            if message.epoch != state.epoch || message.offset > state.last_offset + 1 {
                return Extended::OutOfOrder;
            }
            if message.offset <= state.last_offset {
                return Extended::Duplicate;
            }
            self.push(&mut state, message);
        }
        self.wake_waiters();
        Extended::Appended
    }

    /// Starts the history over as `epoch`, whose newest offset is
    /// `last_offset`, holding `history` (the newest messages of that epoch, in
    /// order, ending at `last_offset`; older or other-epoch ones are skipped).
    ///
    /// Readers positioned in another epoch get one gap of unknown size and
    /// continue from the oldest message held, as after a restart. Calling it
    /// with the epoch the log has and a later `last_offset` brings a mirror up
    /// to date instead: readers get the new messages, or an exact gap for
    /// those not in `history`. A `last_offset` behind the head in the same
    /// epoch is refused (`false`): offsets must never be reused; the engine
    /// has to move to a new epoch.
    #[must_use = "a refused restart means the engine must move to a new epoch"]
    pub fn restart(
        &self,
        epoch: u64,
        last_offset: u64,
        history: impl IntoIterator<Item = Arc<Message>>,
    ) -> bool {
        self.restart_continuing(epoch, last_offset, history, None)
    }

    /// [`restart`](Self::restart)s the history as `epoch`, the channel's
    /// first since it had none ([`VOID_EPOCH`]), and lets readers at the
    /// void position continue at its offset 0 (with its messages from the
    /// first, or an exact gap where they are gone) if the time they name is
    /// `continues_from` or later: the engine vouches that the channel had no
    /// other history from then until this epoch began. Readers that saw the
    /// void earlier get one gap of unknown size, as for any other epoch.
    #[must_use = "a refused restart means the engine must move to a new epoch"]
    pub fn restart_from_void(
        &self,
        epoch: u64,
        last_offset: u64,
        history: impl IntoIterator<Item = Arc<Message>>,
        continues_from: u64,
    ) -> bool {
        self.restart_continuing(epoch, last_offset, history, Some(continues_from))
    }

    /// The engine found the channel with no history ([`VOID_EPOCH`]) at
    /// `at` (milliseconds on the engine's clock, not 0): the log starts over
    /// empty in that epoch if it was elsewhere (its readers get one gap of
    /// unknown size), and positions at its head name `at` from now on.
    ///
    /// `continuous`: the engine vouches that the channel had no history
    /// since it last said so (it would have heard of any). Otherwise the
    /// readers from before may have missed a whole history since; they get
    /// a gap when the first epoch begins unless its start shows otherwise.
    pub fn saw_void(&self, at: u64, continuous: bool) {
        {
            let mut state = self.write();
            if state.epoch != VOID_EPOCH || state.last_offset != 0 {
                *state = LogState::empty(VOID_EPOCH);
                self.epoch.store(VOID_EPOCH, Ordering::Release);
                self.published.store(0, Ordering::Release);
            }
            if !continuous || state.void_since == 0 {
                state.void_since = at;
            }
            state.void_last = state.void_last.max(at);
        }
        self.notify.notify_waiters();
    }

    /// Since when the engine has vouched, without a break, that the channel
    /// has no history ([`saw_void`](Self::saw_void)); `None` when the log is
    /// not in [`VOID_EPOCH`] or was never told.
    pub fn void_since(&self) -> Option<u64> {
        let state = self.read();
        (state.epoch == VOID_EPOCH && state.void_since != 0).then_some(state.void_since)
    }

    fn restart_continuing(
        &self,
        epoch: u64,
        last_offset: u64,
        history: impl IntoIterator<Item = Arc<Message>>,
        continues_from: Option<u64>,
    ) -> bool {
        {
            let mut state = self.write();
            if epoch == state.epoch && last_offset < state.last_offset {
                return false;
            }
            if epoch != state.epoch {
                *state = LogState::empty(epoch);
            }
            if let Some(from) = continues_from {
                state.continues_void_from = from.max(1);
            }
            for message in history {
                if message.epoch != epoch
                    || message.offset > last_offset
                    || message.offset <= state.last_offset
                {
                    continue;
                }
                if message.offset != state.last_offset + 1 {
                    // A hole before it: what the log held no longer leads up
                    // to it, so readers get an exact gap from here.
                    state.messages.clear();
                    state.last_offset = message.offset - 1;
                }
                self.push(&mut state, message);
            }
            if state.last_offset < last_offset {
                state.messages.clear();
                state.last_offset = last_offset;
            }
            self.epoch.store(epoch, Ordering::Release);
            self.published.store(state.last_offset, Ordering::Release);
        }
        self.notify.notify_waiters();
        true
    }

    /// Appends `message` (the next offset of the log's epoch) and trims.
    fn push(&self, state: &mut LogState, message: Arc<Message>) {
        state.last_offset = message.offset;
        self.published.store(message.offset, Ordering::Release);
        self.last_active
            .store(self.stamp(message.published_at), Ordering::Relaxed);
        let published_at = message.published_at;
        state.messages.push_back(message);
        while state.messages.len() > self.policy.max_messages {
            state.messages.pop_front();
        }
        self.trim_expired(state, published_at);
    }

    fn wake_waiters(&self) {
        if self.subscriber_count() > INLINE_WAKE_LIMIT {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // Waiters armed before the append are woken all the same,
                // just by another task.
                let notify = self.notify.clone();
                runtime.spawn(async move { notify.notify_waiters() });
                return;
            }
        }
        self.notify.notify_waiters();
    }

    /// The position of the newest message (offset 0 before the first).
    pub fn head(&self) -> Position {
        let state = self.read();
        state.position(&self.name, state.last_offset)
    }

    /// Where a subscription starts: at `from` if given, else by `since`.
    ///
    /// A position in another epoch, or ahead of the head (a forged cursor, or
    /// one from a history that was rolled back), is kept as is: the first read
    /// reports it as a gap of unknown size, never as a silent jump.
    pub fn start(&self, from: Option<Position>, since: Since) -> Position {
        if let Some(position) = from {
            return position;
        }
        let state = self.live_state();
        let offset = match since {
            Since::Head => state.last_offset,
            Since::Oldest => state.last_offset - state.messages.len() as u64,
            Since::Last(n) => state.last_offset - (state.messages.len() as u64).min(n),
        };
        state.position(&self.name, offset)
    }

    /// The message after `position`, a gap, or nothing yet.
    pub fn read_after(&self, position: Position) -> Read {
        // Fast path for a caught-up reader: no lock. A publish or restart that
        // these loads miss comes after the reader's waiter was armed, so it
        // wakes it.
        if position.offset == self.published.load(Ordering::Acquire)
            && position.epoch == self.epoch.load(Ordering::Acquire)
        {
            return Read::Nothing;
        }
        let state = self.live_state();
        let position = state.continuing(position);
        let retained = state.messages.len() as u64;
        let oldest_before = state.last_offset - retained;
        if position.epoch != state.epoch {
            return Read::Gap {
                missed: None,
                // In the void, naming when the engine saw it so.
                resume: state.position(&self.name, oldest_before),
            };
        }
        if position.offset > state.last_offset {
            // Ahead of the head: what the reader saw is not this history.
            return Read::Gap {
                missed: None,
                resume: state.position(&self.name, state.last_offset),
            };
        }
        if position.offset == state.last_offset {
            return Read::Nothing;
        }
        if position.offset < oldest_before {
            return Read::Gap {
                missed: Some(oldest_before - position.offset),
                resume: Position::new(&self.name, state.epoch, oldest_before),
            };
        }
        let index = (position.offset - oldest_before) as usize;
        Read::Message(state.messages[index].clone())
    }

    /// Wakes every waiter without appending (they re-check and find nothing
    /// new unless something else changed, such as a shutdown).
    pub fn wake(&self) {
        self.notify.notify_waiters();
    }

    /// A waiter that completes on the next append after this call, even if it
    /// is first polled later: create it *before* reading to lose no wake-up.
    pub fn waiter(&self) -> OwnedNotified {
        self.notify.clone().notified_owned()
    }

    /// Counts one more subscriber, until the [`Attachment`] is dropped or
    /// kept. Engines call this from
    /// [`Engine::attach`](crate::engine::Engine::attach), under the same lock that
    /// finds the log, so that no sweep drops a log being attached.
    pub fn attach(self: &Arc<Self>) -> Attachment {
        let before = self.subscribers.fetch_add(1, Ordering::Relaxed);
        Attachment(Some(self.clone()), before == 0)
    }

    /// Counts one subscriber less (a subscription dropping does this, and an
    /// [`Attachment`] that is dropped unkept); true if it was the last.
    pub fn detach(&self) -> bool {
        let before = self.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.touch();
        before == 1
    }

    /// Nanoseconds from the log's creation to `at`.
    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.created).as_nanos() as u64
    }

    /// Marks the channel as recently used, postponing its removal when idle.
    pub fn touch(&self) {
        self.last_active
            .store(self.stamp(Instant::now()), Ordering::Relaxed);
    }

    /// True when nothing refers to it: no subscribers, no history, and no
    /// activity for `idle_ttl`. Such a channel may be dropped; its next use
    /// starts a new epoch.
    pub fn is_idle(&self, now: Instant, idle_ttl: Duration) -> bool {
        if self.subscriber_count() > 0 {
            return false;
        }
        let mut state = self.write();
        self.trim_expired(&mut state, now);
        let last_active = self.last_active.load(Ordering::Relaxed);
        state.messages.is_empty()
            && Duration::from_nanos(self.stamp(now).saturating_sub(last_active)) >= idle_ttl
    }

    /// A read guard over a history with no expired message at its front.
    fn live_state(&self) -> RwLockReadGuard<'_, LogState> {
        let state = self.read();
        let Some(max_age) = self.policy.max_age else {
            return state;
        };
        match state.messages.front() {
            Some(m) if expired(m, max_age, Instant::now()) => {
                drop(state);
                self.trim_expired(&mut self.write(), Instant::now());
                self.read()
            }
            _ => state,
        }
    }

    fn trim_expired(&self, state: &mut LogState, now: Instant) {
        if let Some(max_age) = self.policy.max_age {
            while state
                .messages
                .front()
                .is_some_and(|m| expired(m, max_age, now))
            {
                state.messages.pop_front();
            }
        }
    }

    // A panic while holding the lock cannot leave `LogState` half-updated
    // (every mutation is a single push/pop/assignment), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `message` is older than `max_age` (never, for ages past `Instant`'s range).
fn expired(message: &Message, max_age: Duration, now: Instant) -> bool {
    message
        .published_at
        .checked_add(max_age)
        .is_some_and(|deadline| deadline <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_messages: usize) -> ChannelLog {
        ChannelLog::new(
            ChannelName::new("c").unwrap(),
            HistoryPolicy {
                max_messages,
                max_age: None,
            },
        )
    }

    fn offsets_after(log: &ChannelLog, mut at: Position) -> Vec<String> {
        let mut out = vec![];
        loop {
            match log.read_after(at) {
                Read::Message(m) => {
                    out.push(m.offset().to_string());
                    // As a subscription does.
                    at.epoch = m.epoch();
                    at.offset = m.offset();
                    at.identity = m.identity();
                }
                Read::Gap { missed, resume } => {
                    out.push(format!("gap:{missed:?}"));
                    at = resume;
                }
                Read::Nothing => return out,
            }
        }
    }

    #[test]
    fn offsets_count_from_one_and_history_is_bounded() {
        let log = log(3);
        for i in 1..=5 {
            assert_eq!(log.append(Payload::text(i.to_string())).offset(), i);
        }
        assert_eq!(log.head().offset, 5);
        // Messages 1 and 2 are gone: a gap of exactly what was missed.
        let at = Position::new(log.name(), log.epoch(), 1);
        assert_eq!(offsets_after(&log, at), ["gap:Some(1)", "3", "4", "5"]);
        let at = Position::new(log.name(), log.epoch(), 2);
        assert_eq!(offsets_after(&log, at), ["3", "4", "5"]);
        let at = Position::new(log.name(), log.epoch(), 0);
        assert_eq!(offsets_after(&log, at), ["gap:Some(2)", "3", "4", "5"]);
    }

    #[test]
    fn another_epoch_is_an_unknown_gap_then_the_oldest() {
        let log = log(10);
        log.append(Payload::text("a"));
        let at = Position::new(log.name(), log.epoch().wrapping_add(1), 1);
        assert_eq!(offsets_after(&log, at), ["gap:None", "1"]);
    }

    #[test]
    fn start_policies() {
        let log = log(3);
        let none = log.start(None, Since::Oldest);
        assert_eq!(none.offset, 0, "empty history starts at 0");
        for _ in 0..5 {
            log.append(Payload::text("x"));
        }
        assert_eq!(log.start(None, Since::Head).offset, 5);
        assert_eq!(log.start(None, Since::Oldest).offset, 2);
        assert_eq!(log.start(None, Since::Last(1)).offset, 4);
        assert_eq!(log.start(None, Since::Last(99)).offset, 2);
        // Ahead of the head (forged, or from a history rolled back): kept, so
        // that the first read reports a gap rather than skipping in silence.
        let forged = Position::new(log.name(), log.epoch(), 1_000);
        assert_eq!(log.start(Some(forged), Since::Head), forged);
        assert_eq!(offsets_after(&log, forged), ["gap:None"]);
        log.append(Payload::text("x"));
        let at = Position::new(log.name(), log.epoch(), 5);
        assert_eq!(offsets_after(&log, at), ["6"], "resumes at the head");
        let other = Position::new(log.name(), 42, 3);
        assert_eq!(log.start(Some(other), Since::Head), other);
    }

    fn numbered(log: &ChannelLog, epoch: u64, offset: u64) -> Arc<Message> {
        Arc::new(Message::new(
            log.name().clone(),
            epoch,
            offset,
            crate::PayloadKind::Text,
            None,
            bytes::Bytes::from(offset.to_string()),
        ))
    }

    #[test]
    fn extend_takes_only_the_next_message_of_its_epoch() {
        let log =
            ChannelLog::with_epoch(ChannelName::new("c").unwrap(), HistoryPolicy::default(), 7);
        assert_eq!(log.extend(numbered(&log, 7, 1)), Extended::Appended);
        assert_eq!(log.extend(numbered(&log, 7, 1)), Extended::Duplicate);
        assert_eq!(log.extend(numbered(&log, 7, 3)), Extended::OutOfOrder);
        assert_eq!(log.extend(numbered(&log, 8, 2)), Extended::OutOfOrder);
        assert_eq!(log.extend(numbered(&log, 7, 2)), Extended::Appended);
        let at = Position::new(log.name(), 7, 0);
        assert_eq!(offsets_after(&log, at), ["1", "2"]);
    }

    #[test]
    fn restart_in_a_new_epoch_is_one_unknown_gap_for_every_reader() {
        let log =
            ChannelLog::with_epoch(ChannelName::new("c").unwrap(), HistoryPolicy::default(), 7);
        for offset in 1..=3 {
            log.extend(numbered(&log, 7, offset));
        }
        let reader = Position::new(log.name(), 7, 3);
        assert!(log.restart(9, 5, (4..=5).map(|o| numbered(&log, 9, o))));
        assert_eq!(log.epoch(), 9);
        assert_eq!(offsets_after(&log, reader), ["gap:None", "4", "5"]);
        // The same epoch going back would reuse offsets: refused.
        assert!(!log.restart(9, 2, []));
        assert_eq!(log.head().offset, 5);
    }

    #[test]
    fn readers_of_the_void_continue_into_the_first_epoch_when_nothing_came_between() {
        let name = ChannelName::new("c").unwrap();
        let fresh = || {
            let log = ChannelLog::with_epoch(name.clone(), HistoryPolicy::default(), VOID_EPOCH);
            log.saw_void(1_000, true);
            log
        };
        let log = fresh();
        let at = log.head();
        assert_eq!((at.epoch, at.offset, at.identity), (VOID_EPOCH, 0, 1_000));
        assert_eq!(log.void_since(), Some(1_000));
        assert!(offsets_after(&log, at).is_empty());
        // Seen since the void at 1,000 was vouched for: no gap.
        assert!(log.restart_from_void(9, 2, (1..=2).map(|o| numbered(&log, 9, o)), 1_000));
        assert_eq!(offsets_after(&log, at), ["1", "2"]);
        // The first messages are gone: an exact gap for them.
        let log = fresh();
        assert!(log.restart_from_void(9, 5, (4..=5).map(|o| numbered(&log, 9, o)), 500));
        assert_eq!(offsets_after(&log, at), ["gap:Some(3)", "4", "5"]);
        // Seen before the engine can vouch for: one gap of unknown size.
        let log = fresh();
        assert!(log.restart_from_void(9, 2, (1..=2).map(|o| numbered(&log, 9, o)), 1_001));
        assert_eq!(offsets_after(&log, at), ["gap:None", "1", "2"]);
        // A void position that names no time (an untagged cursor) never
        // continues; nor does one in an epoch not begun from the void.
        let log = fresh();
        assert!(log.restart_from_void(9, 1, [numbered(&log, 9, 1)], 0));
        let untimed = Position::new(&name, VOID_EPOCH, 0);
        assert_eq!(offsets_after(&log, untimed), ["gap:None", "1"]);
        let log = fresh();
        assert!(log.restart(9, 1, [numbered(&log, 9, 1)]));
        assert_eq!(offsets_after(&log, at), ["gap:None", "1"]);
        // A channel whose history went away: its readers get a gap and
        // stand in the void, at the time it was seen so.
        let reader = Position::new(&name, 9, 1);
        log.saw_void(2_000, false);
        assert_eq!(log.epoch(), VOID_EPOCH);
        assert_eq!(offsets_after(&log, reader), ["gap:None"]);
        assert_eq!(log.head().identity, 2_000);
        // Without a break the void's start stays; after one it moves.
        log.saw_void(3_000, true);
        assert_eq!(log.void_since(), Some(2_000));
        assert_eq!(log.head().identity, 3_000);
        log.saw_void(4_000, false);
        assert_eq!(log.void_since(), Some(4_000));
    }

    #[test]
    fn restart_in_the_same_epoch_catches_up_with_an_exact_gap_for_a_hole() {
        let log =
            ChannelLog::with_epoch(ChannelName::new("c").unwrap(), HistoryPolicy::default(), 7);
        log.extend(numbered(&log, 7, 1));
        let reader = Position::new(log.name(), 7, 1);
        // 2 and 3 follow on; 5 and 6 come after a hole (4 is gone).
        assert!(log.restart(7, 3, (2..=3).map(|o| numbered(&log, 7, o))));
        assert_eq!(offsets_after(&log, reader), ["2", "3"]);
        assert!(log.restart(7, 6, (5..=6).map(|o| numbered(&log, 7, o))));
        let at = Position::new(log.name(), 7, 3);
        assert_eq!(offsets_after(&log, at), ["gap:Some(1)", "5", "6"]);
        // Nothing retained up to the head: readers are told what they missed.
        assert!(log.restart(7, 9, []));
        assert_eq!(offsets_after(&log, at), ["gap:Some(6)"]);
    }

    #[tokio::test(start_paused = true)]
    async fn max_age_expires_messages_into_a_gap() {
        let log = ChannelLog::new(
            ChannelName::new("c").unwrap(),
            HistoryPolicy {
                max_messages: 10,
                max_age: Some(Duration::from_secs(60)),
            },
        );
        log.append(Payload::text("old"));
        tokio::time::advance(Duration::from_secs(61)).await;
        log.append(Payload::text("new"));
        let at = Position::new(log.name(), log.epoch(), 0);
        assert_eq!(offsets_after(&log, at), ["gap:Some(1)", "2"]);
        tokio::time::advance(Duration::from_secs(61)).await;
        // Expired without any publish: readers still see it gone.
        let at = Position::new(log.name(), log.epoch(), 0);
        assert_eq!(offsets_after(&log, at), ["gap:Some(2)"]);
        assert_eq!(log.start(None, Since::Oldest).offset, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idleness() {
        let log = Arc::new(log(10));
        let ttl = Duration::from_secs(5);
        assert!(!log.is_idle(Instant::now(), ttl), "just created");
        tokio::time::advance(ttl).await;
        assert!(log.is_idle(Instant::now(), ttl));
        let attached = log.attach();
        assert!(!log.is_idle(Instant::now() + ttl, ttl), "has a subscriber");
        drop(attached);
        log.append(Payload::text("x"));
        assert!(!log.is_idle(Instant::now() + ttl * 100, ttl), "has history");
    }
}
