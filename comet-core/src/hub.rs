//! The hub: the application's handle to publish and subscribe.

mod builder;
mod error;

pub use builder::{
    HubBuilder, DEFAULT_MAX_CHANNELS_PER_SUBSCRIPTION, DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_RECONNECT_WINDOW,
};
pub use error::{ControlError, PublishError, QueryError, SubscribeError};

use crate::{
    control::{Command, Control, EndReason},
    cursor::Provenance,
    engine::{Engine, Resume},
    payload::validate_event,
    presence::{ChannelInfo, Presence},
    subscription::SubscriberState,
    ChannelName, Cursor, IdempotencyKey, MemoryEngine, Payload, Since, Subscriber, Subscription,
};
use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

/// Publishes to and subscribes from named channels.
///
/// Cheap to clone (an `Arc`); clones share every channel. Put one in your
/// application's state and hand clones to the comet routes.
///
/// ```
/// # tokio_test_block_on(async {
/// use comet_push::{Hub, Item, Payload, Start};
/// use tokio_stream::StreamExt;
///
/// let hub = Hub::new();
/// let mut sub = hub.subscribe(["chat"], Start::head()).await.unwrap();
/// hub.publish("chat", Payload::text("hello").event("said")).await.unwrap();
///
/// let Some(Item::Message { message, cursor }) = sub.next().await else { unreachable!() };
/// assert_eq!((message.text(), message.event()), ("hello", Some("said")));
///
/// // A client that comes back with `cursor` gets exactly what it missed.
/// hub.publish("chat", "again").await.unwrap();
/// let mut resumed = hub.subscribe(["chat"], cursor).await.unwrap();
/// assert_eq!(resumed.next().await.unwrap().message().unwrap().text(), "again");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubShared>,
}

pub(crate) struct HubShared {
    engine: Arc<dyn Engine>,
    /// The engine when the hub made it (in memory): swept when the channel
    /// limit is reached, so that idle channels make room at once.
    memory: Option<Arc<MemoryEngine>>,
    max_channels: usize,
    max_held_channels: usize,
    max_payload: usize,
    max_subscribers: usize,
    max_channel_subscribers: usize,
    max_presence_listed: usize,
    /// Shared with every subscription.
    state: Arc<SubscriberState>,
    published: AtomicU64,
    /// When the hub was built, on tokio's clock.
    started: tokio::time::Instant,
    /// When the channel limit may next sweep, in ms after `started`.
    next_limit_sweep_ms: AtomicU64,
}

/// Counters for metrics; see [`Hub::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HubStats {
    /// Live subscriptions.
    pub subscribers: usize,
    /// Channels held.
    pub channels: usize,
    /// Messages published through this hub since it started.
    pub published: u64,
    /// Items (messages and gaps) handed to subscribers since it started.
    /// Each subscription adds its count when it has caught up or ends, so this
    /// is exact whenever subscribers are idle and may lag while they are busy.
    pub delivered: u64,
}

/// Where a new subscription starts.
///
/// A cursor positions every channel it names; channels it does not name start
/// by the [`Since`] policy (the head, unless told otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Start {
    cursor: Option<Cursor>,
    since: Since,
}

impl Start {
    /// Only messages published from now on.
    pub fn head() -> Self {
        Self::default()
    }

    /// Every message still in history.
    pub fn oldest() -> Self {
        Since::Oldest.into()
    }

    /// The last `n` messages of each channel, then new ones.
    pub fn last(n: u64) -> Self {
        Since::Last(n).into()
    }

    /// Right after `cursor`.
    pub fn cursor(cursor: Cursor) -> Self {
        cursor.into()
    }

    /// Resume from `cursor` for the channels it names (none if `None`).
    pub fn with_cursor(mut self, cursor: Option<Cursor>) -> Self {
        self.cursor = cursor;
        self
    }

    /// Sets where channels that the cursor does not name start.
    pub fn since(mut self, since: Since) -> Self {
        self.since = since;
        self
    }
}

impl From<Since> for Start {
    fn from(since: Since) -> Self {
        Self {
            cursor: None,
            since,
        }
    }
}

impl From<Cursor> for Start {
    fn from(cursor: Cursor) -> Self {
        Self {
            cursor: Some(cursor),
            since: Since::Head,
        }
    }
}

impl Hub {
    /// A hub with the in-memory engine and default limits.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures a hub.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// Publishes `payload` to `channel`; resolves to a cursor just after the
    /// new message (a one-channel cursor: subscribing with it delivers what
    /// comes next).
    pub async fn publish(
        &self,
        channel: &str,
        payload: impl Into<Payload>,
    ) -> Result<Cursor, PublishError> {
        self.publish_with_key(channel, payload.into(), None).await
    }

    /// Publishes as [`publish`](Self::publish) does, once per `key`: a
    /// publish that repeats a key the engine remembers for this channel
    /// stores nothing and resolves to the first one's cursor. The in-memory
    /// engine remembers a key for
    /// [`DEFAULT_IDEMPOTENCY_WINDOW`](crate::DEFAULT_IDEMPOTENCY_WINDOW), and
    /// at most 100,000 keys at once (the oldest are forgotten first); the
    /// Redis engine for its `idempotency_window`. A key is forgotten when its
    /// channel moves to a new epoch (its history was lost).
    ///
    /// Retry with the same key whenever a publish failed without saying
    /// whether it landed (a timeout, [`PublishError::Engine`]).
    pub async fn publish_idempotent(
        &self,
        channel: &str,
        payload: impl Into<Payload>,
        key: &IdempotencyKey,
    ) -> Result<Cursor, PublishError> {
        self.publish_with_key(channel, payload.into(), Some(key))
            .await
    }

    pub(crate) async fn publish_with_key(
        &self,
        channel: &str,
        mut payload: Payload,
        key: Option<&IdempotencyKey>,
    ) -> Result<Cursor, PublishError> {
        let channel = ChannelName::new(channel).map_err(PublishError::InvalidChannel)?;
        // History keeps the payload's bytes alone: a body read over HTTP is
        // a slice of the connection's read buffer, and keeping the slice
        // would keep the whole buffer: kilobytes a message for bodies of a
        // few dozen bytes (`bench/MEASUREMENTS.md` has what a flood found).
        payload.data = bytes::Bytes::copy_from_slice(&payload.data);
        if payload.data.len() > self.shared.max_payload {
            return Err(PublishError::PayloadTooLarge {
                size: payload.data.len(),
                max: self.shared.max_payload,
            });
        }
        if let Some(event) = &payload.event {
            validate_event(event).map_err(PublishError::InvalidEvent)?;
        }
        self.check_channel_limit(std::slice::from_ref(&channel))
            .map_err(|max| PublishError::ChannelLimit { max })?;
        let timer = crate::telemetry::PublishTimer::start();
        let position = self
            .shared
            .engine
            .publish(&channel, payload, key)
            .await
            .map_err(PublishError::Engine)?;
        timer.published();
        self.shared.published.fetch_add(1, Ordering::Relaxed);
        Ok(self.signed(Cursor::from(position)))
    }

    /// Subscribes to `channels` (duplicates are ignored) from `start`.
    ///
    /// Positions are fixed when this resolves: a message published after it
    /// is delivered even if the stream is first polled later. With the
    /// in-memory engine it resolves at once; an engine with a backplane may
    /// first load the channels' state from it, and fails with
    /// [`SubscribeError::Unavailable`] when it cannot.
    pub async fn subscribe<I>(
        &self,
        channels: I,
        start: impl Into<Start>,
    ) -> Result<Subscription, SubscribeError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let names = self.channel_names(channels)?;
        self.subscribe_names(Subscriber::anonymous(), &names, start.into())
            .await
    }

    /// Subscribes as [`subscribe`](Self::subscribe) does, as `subscriber`:
    /// an identity that presence counts on the channels that have it
    /// ([`HubBuilder::presence_for`]), join and leave events if asked for,
    /// and a grace window.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use comet_push::{Hub, Identity, Item, PresenceKind, Start, Subscriber};
    /// use tokio_stream::StreamExt;
    ///
    /// let hub = Hub::builder().presence(true).build();
    /// let watcher = Subscriber::from(Identity::new("ann").unwrap()).presence_events(true);
    /// let mut ann = hub.subscribe_as(watcher, ["room"], Start::head()).await.unwrap();
    /// let bob = Subscriber::from(Identity::new("bob").unwrap());
    /// let _bob = hub.subscribe_as(bob, ["room"], Start::head()).await.unwrap();
    ///
    /// // First, who was there when ann subscribed: ann herself.
    /// let Some(Item::Members { presence, .. }) = ann.next().await else { unreachable!() };
    /// assert_eq!(presence.members[0].identity.user(), "ann");
    /// // Then each join, as it happens.
    /// let mut joined = Vec::new();
    /// while joined.len() < 2 {
    ///     let event = ann.next().await.unwrap().presence().unwrap().clone();
    ///     assert_eq!(event.kind(), PresenceKind::Join);
    ///     joined.push(event.identity().user().to_owned());
    /// }
    /// joined.sort();
    /// assert_eq!(joined, ["ann", "bob"]);
    /// assert_eq!(hub.presence("room").await.unwrap().users, 2);
    /// # });
    /// ```
    pub async fn subscribe_as<I>(
        &self,
        subscriber: impl Into<Subscriber>,
        channels: I,
        start: impl Into<Start>,
    ) -> Result<Subscription, SubscribeError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let names = self.channel_names(channels)?;
        self.subscribe_names(subscriber.into(), &names, start.into())
            .await
    }

    /// Subscribes as [`subscribe_as`](Self::subscribe_as) does, to channels
    /// already named: what [`channel_names`](Self::channel_names) gave. A
    /// server that checks a request's channels before it answers (to refuse
    /// a bad name at once, or to authorize the names) subscribes with them,
    /// without checking and copying each name again.
    ///
    /// The names must hold what `channel_names` makes sure of, else this
    /// fails: [`SubscribeError::NoChannels`] with none,
    /// [`SubscribeError::DuplicateChannel`] with one named twice (two names
    /// a cursor cannot tell apart are one channel), and
    /// [`SubscribeError::TooManyChannels`] with more than
    /// [`max_channels_per_subscription`](Self::max_channels_per_subscription).
    /// Beyond that it fails as `subscribe_as` does. It takes a [`Subscriber`]
    /// and a [`Start`] as they are, without `Into`: a server subscribes
    /// with this per request, and converting them in the future would hold
    /// each twice in it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use comet_push::{Hub, Start, Subscriber};
    ///
    /// let hub = Hub::new();
    /// let names = hub.channel_names(["news", "sport"]).unwrap();
    /// let subscription = hub
    ///     .subscribe_names(Subscriber::anonymous(), &names, Start::head())
    ///     .await
    ///     .unwrap();
    /// assert_eq!(subscription.channels().count(), 2);
    /// # });
    /// ```
    pub async fn subscribe_names(
        &self,
        subscriber: Subscriber,
        names: &[ChannelName],
        start: Start,
    ) -> Result<Subscription, SubscribeError> {
        // What `channel_names` makes sure of, checked again without a copy:
        // each check is a few comparisons for the usual one or two names.
        if names.is_empty() {
            return Err(SubscribeError::NoChannels);
        }
        if names.len() > self.shared.max_channels {
            return Err(SubscribeError::TooManyChannels {
                max: self.shared.max_channels,
            });
        }
        let twice = |(i, name): &(usize, &ChannelName)| {
            names[..*i].iter().any(|other| other.key() == name.key())
        };
        if let Some((_, name)) = names.iter().enumerate().find(twice) {
            return Err(SubscribeError::DuplicateChannel(name.clone()));
        }
        if self.is_shutting_down() {
            return Err(SubscribeError::ShuttingDown);
        }
        self.check_channel_limit(names)
            .map_err(|max| SubscribeError::ChannelLimit { max })?;
        // Counted first, then checked, so racing subscribes cannot overshoot.
        let total = self
            .shared
            .state
            .subscribers
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if total > self.shared.max_subscribers {
            self.shared
                .state
                .subscribers
                .fetch_sub(1, Ordering::Relaxed);
            return Err(SubscribeError::TooManySubscribers {
                channel: None,
                max: self.shared.max_subscribers,
            });
        }
        // Undo the counting if attaching fails or the future is dropped: the
        // hub's here, each channel's by its attachment (dropped first).
        let counted = CountedOnHub(Some(&self.shared.state));
        let mut attached = Vec::with_capacity(names.len());
        // A cursor with a wrong tag was made up or altered: refused, so that
        // nobody can pass one off as proof that history lost writes.
        let issued = match &start.cursor {
            Some(cursor) => match cursor
                .provenance(self.shared.engine.cursor_key())
                .or_else(|| cursor.provenance(self.shared.engine.previous_cursor_key()))
            {
                Provenance::Issued => true,
                Provenance::Unverified => false,
                Provenance::Forged => return Err(SubscribeError::ForgedCursor),
            },
            None => false,
        };
        // Every channel at once: an engine with a backplane answers a
        // subscription of many channels in the time of its slowest.
        let from = |name: &ChannelName| start.cursor.as_ref().and_then(|c| c.position(name));
        let attach = |name: &ChannelName| {
            let resume = from(name).map(|position| Resume { position, issued });
            self.shared.engine.attach(name, resume)
        };
        // One channel, the usual case, is awaited alone: `join_all` would
        // allocate twice more for it.
        let results = match names {
            [name] => vec![attach(name).await],
            names => join_all(names.iter().map(attach).collect()).await,
        };
        let mut refusal = None;
        for (name, result) in names.iter().zip(results) {
            match result {
                Ok(attachment) => {
                    let log = attachment.log();
                    if log.subscriber_count() > self.shared.max_channel_subscribers {
                        refusal.get_or_insert(SubscribeError::TooManySubscribers {
                            channel: Some(name.clone()),
                            max: self.shared.max_channel_subscribers,
                        });
                    }
                    let position = log.start(from(name), start.since);
                    attached.push((attachment, position));
                }
                Err(error) => {
                    refusal.get_or_insert(SubscribeError::Unavailable {
                        reason: error.to_string(),
                    });
                }
            }
        }
        if let Some(refusal) = refusal {
            return Err(refusal); // `attached` and `counted` give every count back
        }
        counted.complete();
        let channels = attached
            .into_iter()
            .map(|(attachment, position)| {
                let first = attachment.was_first();
                (attachment.keep(), position, first)
            })
            .collect();
        self.shared.state.tracker.start();
        let mut subscription = Subscription::new(self.shared.state.clone(), channels, subscriber);
        // Read after the subscription marked where its events begin: a
        // change between the two is in both, and a list is a set.
        let asked = subscription.presence_channels();
        if !asked.is_empty() {
            let lists = join_all(
                asked
                    .iter()
                    .map(|name| Box::pin(self.presence_of(name)))
                    .collect(),
            )
            .await;
            let mut members = Vec::with_capacity(asked.len());
            for (name, list) in asked.into_iter().zip(lists) {
                let list = list.map_err(|error| SubscribeError::Unavailable {
                    reason: error.to_string(),
                })?;
                members.push((name, Arc::new(list)));
            }
            subscription.set_members(members);
        }
        Ok(subscription)
    }

    /// Refuses when `names` would add channels past [`HubBuilder::max_channels`].
    /// Idle channels are swept first (at most once a second), so they make
    /// room. Racing creations may overshoot the limit by their number.
    fn check_channel_limit(&self, names: &[ChannelName]) -> Result<(), usize> {
        let max = self.shared.max_held_channels;
        if max == usize::MAX {
            return Ok(());
        }
        let new = || {
            names
                .iter()
                .filter(|name| self.shared.engine.existing(name).is_none())
                .count()
        };
        let fits = |new: usize| new == 0 || self.shared.engine.channel_count() + new <= max;
        if fits(new()) {
            return Ok(());
        }
        if let Some(memory) = &self.shared.memory {
            let now = self.shared.started.elapsed().as_millis() as u64;
            let due = self.shared.next_limit_sweep_ms.load(Ordering::Relaxed);
            if now >= due
                && self
                    .shared
                    .next_limit_sweep_ms
                    .compare_exchange(due, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                memory.sweep();
                if fits(new()) {
                    return Ok(());
                }
            }
        }
        Err(max)
    }

    /// The cursor of `channels` as they are now: at each channel's head, its
    /// newest message.
    ///
    /// Render a page with the state as of now, embed this cursor, and let the
    /// page subscribe with it: nothing published in between is lost.
    pub async fn current_cursor<I>(&self, channels: I) -> Result<Cursor, SubscribeError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let names = self.channel_names(channels)?;
        let heads = join_all(
            names
                .iter()
                .map(|name| self.shared.engine.head(name))
                .collect(),
        );
        let mut positions = Vec::with_capacity(names.len());
        for head in heads.await {
            let head = head.map_err(|error| SubscribeError::Unavailable {
                reason: error.to_string(),
            })?;
            positions.push(head);
        }
        Ok(self.signed(Cursor::from_positions(positions)))
    }

    /// `cursor`, tagged with the engine's key (see [`CursorKey`](crate::engine::CursorKey)).
    fn signed(&self, cursor: Cursor) -> Cursor {
        cursor.signed(self.shared.engine.cursor_key())
    }

    /// Ends every live subscription of `user`, on every node, with an
    /// [`Item::Ended`](crate::Item::Ended) saying
    /// [`EndReason::Disconnected`](crate::EndReason::Disconnected) (a user
    /// who logged out, or lost access). Only identified subscriptions have
    /// a user. It does not stop them subscribing again: refuse that where
    /// you authorize.
    pub async fn disconnect(&self, user: &str) -> Result<(), ControlError> {
        let user = user_id(user)?;
        self.order(Control::Disconnect { user }).await
    }

    /// Takes `channel` out of every live subscription of `user`, on every
    /// node: each gets an [`Item::Ended`](crate::Item::Ended) for that
    /// channel ([`EndReason::Unsubscribed`](crate::EndReason::Unsubscribed))
    /// and reads its other channels on; one that read only it ends.
    pub async fn unsubscribe(&self, user: &str, channel: &str) -> Result<(), ControlError> {
        let user = user_id(user)?;
        let channel = ChannelName::new(channel).map_err(ControlError::InvalidChannel)?;
        self.order(Control::Unsubscribe { user, channel }).await
    }

    /// Adds `channel` to every live subscription of `user`, on every node,
    /// from its head now: each gets an [`Item::Added`](crate::Item::Added)
    /// whose cursor includes it, so that a client resumes it too.
    pub async fn subscribe_user(&self, user: &str, channel: &str) -> Result<(), ControlError> {
        let user = user_id(user)?;
        let channel = ChannelName::new(channel).map_err(ControlError::InvalidChannel)?;
        self.order(Control::Subscribe { user, channel }).await
    }

    /// Ends every live subscription's reading of `channel`, on every node
    /// (each gets an [`Item::Ended`](crate::Item::Ended) saying
    /// [`EndReason::Closed`](crate::EndReason::Closed)); its history stays,
    /// and later subscriptions read it as before.
    pub async fn close(&self, channel: &str) -> Result<(), ControlError> {
        let channel = ChannelName::new(channel).map_err(ControlError::InvalidChannel)?;
        self.order(Control::Close { channel }).await
    }

    /// Closes `channel` as [`close`](Self::close) does, after deleting its
    /// history: its next message starts a new epoch, so a client that
    /// resumes from before gets a gap.
    pub async fn close_and_clear(&self, channel: &str) -> Result<(), ControlError> {
        let name = ChannelName::new(channel).map_err(ControlError::InvalidChannel)?;
        self.shared
            .engine
            .clear(&name)
            .await
            .map_err(|e| ControlError::Unavailable {
                reason: e.to_string(),
            })?;
        self.order(Control::Close { channel: name }).await
    }

    /// Sends `control` to every node's subscriptions (this one's alone
    /// without a bus).
    async fn order(&self, control: Control) -> Result<(), ControlError> {
        match self.shared.engine.control_bus() {
            Some(bus) => bus
                .send(control)
                .await
                .map_err(|e| ControlError::Unavailable {
                    reason: e.to_string(),
                }),
            None => {
                apply(&self.shared.state, &self.shared.engine, control);
                Ok(())
            }
        }
    }

    /// Begins shutdown: every subscription's stream ends (after the item it
    /// may be handing out) with an [`Item::Ended`](crate::Item::Ended) for
    /// [`EndReason::Shutdown`](crate::EndReason::Shutdown), held long polls
    /// answer at once with it and their cursor, and new subscriptions are
    /// refused. History stays readable, so a client
    /// that resumes elsewhere with its cursor loses nothing retained there.
    /// Publishing still works, for the last messages of a draining server.
    pub fn shutdown(&self) {
        self.shared
            .state
            .shutting_down
            .store(true, Ordering::SeqCst);
        self.shared.engine.wake_all();
    }

    /// True once [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.state.shutting_down.load(Ordering::SeqCst)
    }

    /// Counters for metrics: subscribers, channels, messages published and
    /// items delivered.
    pub fn stats(&self) -> HubStats {
        HubStats {
            subscribers: self.local_subscribers(),
            channels: self.channel_count(),
            published: self.shared.published.load(Ordering::Relaxed),
            delivered: self.shared.state.delivered.load(Ordering::Relaxed),
        }
    }

    /// Live subscriptions on this hub.
    pub fn local_subscribers(&self) -> usize {
        self.shared.state.subscribers.load(Ordering::Relaxed)
    }

    /// Live subscriptions including `channel`, on this node.
    pub fn local_subscriber_count(&self, channel: &str) -> usize {
        ChannelName::new(channel)
            .ok()
            .and_then(|name| self.shared.engine.existing(&name))
            .map_or(0, |log| log.subscriber_count())
    }

    /// Live subscriptions including `channel`, on every node that shares
    /// the engine. An engine shared by several nodes counts each node's
    /// share as of its last refresh (the Redis engine: at most a second old).
    pub async fn subscriber_count(&self, channel: &str) -> Result<usize, QueryError> {
        let name = ChannelName::new(channel).map_err(QueryError::InvalidChannel)?;
        self.count_subscribers(&name).await
    }

    async fn count_subscribers(&self, name: &ChannelName) -> Result<usize, QueryError> {
        match self.shared.state.tracker.store() {
            Some(store) => store
                .subscriber_count(name)
                .await
                .map_err(QueryError::unavailable),
            None => Ok(self
                .shared
                .engine
                .existing(name)
                .map_or(0, |log| log.subscriber_count())),
        }
    }

    /// The users on `channel`, on every node, with their info and their
    /// connections; at most [`HubBuilder::max_presence_listed`] are listed.
    /// A user whose subscriptions all ended stays for their grace window.
    ///
    /// Fails with [`QueryError::NoPresence`] for a channel without presence
    /// ([`HubBuilder::presence_for`]).
    pub async fn presence(&self, channel: &str) -> Result<Presence, QueryError> {
        let name = ChannelName::new(channel).map_err(QueryError::InvalidChannel)?;
        self.presence_of(&name).await
    }

    async fn presence_of(&self, name: &ChannelName) -> Result<Presence, QueryError> {
        let tracker = &self.shared.state.tracker;
        if !tracker.has_presence(name) {
            return Err(QueryError::NoPresence(name.clone()));
        }
        let max = self.shared.max_presence_listed;
        match tracker.store() {
            Some(store) => store
                .presence(name, max)
                .await
                .map_err(QueryError::unavailable),
            None => Ok(tracker.local_presence(name, max)),
        }
    }

    /// What `channel` looks like on every node: its head cursor, its
    /// subscribers and, if it has presence, who is there. The publish
    /// route answers `GET <publish>/<channel>` with it.
    pub async fn channel_info(&self, channel: &str) -> Result<ChannelInfo, QueryError> {
        let name = ChannelName::new(channel).map_err(QueryError::InvalidChannel)?;
        let head = self.shared.engine.head(&name);
        let (head, subscribers) = (head.await, self.count_subscribers(&name).await);
        let cursor = self.signed(Cursor::from_positions([
            head.map_err(QueryError::unavailable)?
        ]));
        let presence = match self.presence_of(&name).await {
            Ok(presence) => Some(presence),
            Err(QueryError::NoPresence(_)) => None,
            Err(error) => return Err(error),
        };
        Ok(ChannelInfo {
            channel: name,
            cursor,
            subscribers: subscribers?,
            presence,
        })
    }

    /// Channels currently held (with history, subscribers or recent use).
    pub fn channel_count(&self) -> usize {
        self.shared.engine.channel_count()
    }

    /// The most channels one subscription may name.
    pub fn max_channels_per_subscription(&self) -> usize {
        self.shared.max_channels
    }

    /// The largest payload accepted, in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.shared.max_payload
    }

    /// The channels `channels` name, checked as [`subscribe`](Self::subscribe)
    /// checks them: valid names, duplicates dropped (two names a cursor
    /// cannot tell apart are one channel), at least one and at most
    /// [`max_channels_per_subscription`](Self::max_channels_per_subscription).
    pub fn channel_names<I>(&self, channels: I) -> Result<Vec<ChannelName>, SubscribeError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut names: Vec<ChannelName> = Vec::new();
        for channel in channels {
            let name =
                ChannelName::new(channel.as_ref()).map_err(SubscribeError::InvalidChannel)?;
            if names.iter().any(|n| n.key() == name.key()) {
                continue;
            }
            if names.len() == self.shared.max_channels {
                return Err(SubscribeError::TooManyChannels {
                    max: self.shared.max_channels,
                });
            }
            names.push(name);
        }
        if names.is_empty() {
            return Err(SubscribeError::NoChannels);
        }
        Ok(names)
    }
}

/// A user id as an identity would have it.
fn user_id(user: &str) -> Result<Arc<str>, ControlError> {
    crate::Identity::new(user)
        .map(|identity| identity.user_arc().clone())
        .map_err(ControlError::InvalidUser)
}

/// Applies `control` to this node's subscriptions.
pub(crate) fn apply(state: &SubscriberState, engine: &Arc<dyn Engine>, control: Control) {
    match control {
        Control::Disconnect { user } => state
            .registry
            .tell(&user, || Command::End(EndReason::Disconnected)),
        Control::Unsubscribe { user, channel } => state.registry.tell(&user, || {
            Command::Remove(channel.clone(), EndReason::Unsubscribed)
        }),
        Control::Close { channel } | Control::Clear { channel } => {
            if let Some(log) = engine.existing(&channel) {
                log.close();
            }
        }
        Control::Subscribe { user, channel } => {
            let inboxes = state.registry.of(&user);
            if inboxes.is_empty() {
                return;
            }
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                tracing::warn!(%channel, "no runtime to add a channel to live subscriptions");
                return;
            };
            let engine = engine.clone();
            runtime.spawn(async move {
                for inbox in inboxes {
                    match engine.attach(&channel, None).await {
                        Ok(attachment) => {
                            let first = attachment.was_first();
                            let log = attachment.keep();
                            let position = log.start(None, Since::Head);
                            inbox.push(Command::Add(log, position, first));
                        }
                        Err(error) => {
                            tracing::warn!(%channel, %error, "could not add a channel to a live subscription");
                        }
                    }
                }
            });
        }
    }
}

/// Awaits every future at once, in order of the input.
pub(crate) async fn join_all<F>(mut futures: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Unpin,
{
    let mut done: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, slot) in futures.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match std::pin::Pin::new(&mut *future).poll(cx) {
                    std::task::Poll::Ready(output) => *slot = Some(output),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// One subscriber counted on the hub by a subscribe in progress: given back
/// if the subscribe fails or is dropped before it completes.
struct CountedOnHub<'a>(Option<&'a SubscriberState>);

impl CountedOnHub<'_> {
    /// The subscription takes the count over.
    fn complete(mut self) {
        self.0 = None;
    }
}

impl Drop for CountedOnHub<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0 {
            state.subscribers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("channels", &self.channel_count())
            .field("subscribers", &self.local_subscribers())
            .finish_non_exhaustive()
    }
}
