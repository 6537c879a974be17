//! A subscription: a `Stream` of items across one or more channels.
//!
//! It holds, per channel, a position and one armed waiter — no queue. Each
//! poll reads the shared history after its positions; when nothing is there it
//! waits on waiters that were armed *before* that read, so a publish landing
//! between the read and the wait still wakes it. Positions move only when an
//! item is returned, so dropping a pending `next()` loses nothing.

use crate::{
    control::{Command, EndReason, Inbox, Registry},
    engine::{ChannelLog, Read},
    presence::{tracker::Tracker, HubEvent, DEFAULT_PRESENCE_GRACE},
    ChannelName, Cursor, Identity, Message, Position, Presence, PresenceEvent,
};
use std::collections::VecDeque;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;

/// One thing a subscription delivers.
///
/// More kinds may come (a match needs a `_` arm): a format that meets one
/// it does not know can skip it, as a client skips an envelope type it
/// does not know.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Item {
    /// A message, in its channel's order.
    Message {
        /// The message, shared with every other subscriber.
        message: Arc<Message>,
        /// The subscription's position after this message.
        cursor: Cursor,
    },
    /// Messages of `channel` that history no longer holds. The next items of
    /// that channel continue from the oldest retained message.
    Gap {
        /// The channel with the gap.
        channel: ChannelName,
        /// How many messages were missed; `None` when unknown (the channel's
        /// history began anew: another epoch).
        missed: Option<u64>,
        /// The subscription's position after this gap.
        cursor: Cursor,
    },
    /// A user joined or left a channel with presence; only for
    /// subscriptions that asked ([`Subscriber::presence_events`]). Not in
    /// history, no offset of its own.
    Presence {
        /// The event, shared with every other subscriber.
        event: Arc<PresenceEvent>,
        /// The subscription's position, which a presence event leaves as it was.
        cursor: Cursor,
    },
    /// Who is on a channel with presence when the subscription starts: the
    /// first item for each such channel of a subscription that asked for
    /// presence events, before any join or leave. A client sets its list
    /// from it (a reconnect's list replaces the old one), then keeps it by
    /// the events.
    Members {
        /// The channel.
        channel: ChannelName,
        /// Who is there, across every node.
        presence: Arc<Presence>,
        /// The subscription's position, which this leaves as it was.
        cursor: Cursor,
    },
    /// The server stopped the subscription's reading of `channel`, or, with
    /// no channel, the whole subscription: the stream ends after it. The
    /// reason tells a client whether to come back (after renewing an
    /// expired token) or not.
    Ended {
        /// The channel it no longer reads, or `None`: all of them.
        channel: Option<ChannelName>,
        /// Why.
        reason: EndReason,
        /// The position in the channels it still reads (after an expiry:
        /// all of them, to resume from with a new token).
        cursor: Cursor,
    },
    /// The server added `channel` to the subscription
    /// ([`Hub::subscribe_user`](crate::Hub::subscribe_user)), from its head.
    Added {
        /// The channel.
        channel: ChannelName,
        /// The position, the new channel included.
        cursor: Cursor,
    },
}

/// Who subscribes, and how: an identity (or none), whether they get join
/// and leave events, and how long they stay present after their
/// subscription ends. See [`Hub::subscribe_as`](crate::Hub::subscribe_as).
///
/// ```
/// use comet_push::{Identity, Subscriber};
/// use std::time::Duration;
/// let alice = Identity::new("alice").unwrap();
/// let subscriber = Subscriber::from(alice)
///     .presence_events(true)
///     .grace(Duration::from_secs(35));
/// ```
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub(crate) identity: Option<Identity>,
    pub(crate) presence_events: bool,
    pub(crate) grace: Duration,
    pub(crate) expires: Option<std::time::SystemTime>,
}

impl Default for Subscriber {
    fn default() -> Self {
        Self {
            identity: None,
            presence_events: false,
            grace: DEFAULT_PRESENCE_GRACE,
            expires: None,
        }
    }
}

impl Subscriber {
    /// Nobody in particular: counted as a subscriber, never as a user.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Subscribes as `identity` (or anonymously).
    pub fn identity(mut self, identity: Option<Identity>) -> Self {
        self.identity = identity;
        self
    }

    /// Delivers join and leave events of the channels that have presence
    /// ([`Item::Presence`]); default: no.
    pub fn presence_events(mut self, on: bool) -> Self {
        self.presence_events = on;
        self
    }

    /// How long the user stays present (and the channels occupied) after
    /// the subscription ends, so that a reconnect or the next long poll
    /// finds them still there (default: [`DEFAULT_PRESENCE_GRACE`]).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Ends the subscription at `at` (a token's `exp`) with an
    /// [`Item::Ended`] whose reason is [`EndReason::Expired`]; a time
    /// already past ends it at once.
    pub fn expires_at(mut self, at: Option<std::time::SystemTime>) -> Self {
        self.expires = at;
        self
    }

    /// The identity, if any.
    pub fn identity_ref(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }
}

impl From<Identity> for Subscriber {
    fn from(identity: Identity) -> Self {
        Self::default().identity(Some(identity))
    }
}

impl Item {
    /// The subscription's position after this item: resuming from it loses
    /// nothing and repeats nothing.
    pub fn cursor(&self) -> &Cursor {
        match self {
            Item::Message { cursor, .. }
            | Item::Gap { cursor, .. }
            | Item::Presence { cursor, .. }
            | Item::Members { cursor, .. }
            | Item::Ended { cursor, .. }
            | Item::Added { cursor, .. } => cursor,
        }
    }

    /// The channel this item belongs to (`None` for the end of a whole
    /// subscription).
    pub fn channel(&self) -> Option<&ChannelName> {
        match self {
            Item::Message { message, .. } => Some(message.channel()),
            Item::Gap { channel, .. }
            | Item::Members { channel, .. }
            | Item::Added { channel, .. } => Some(channel),
            Item::Presence { event, .. } => Some(event.channel()),
            Item::Ended { channel, .. } => channel.as_ref(),
        }
    }

    /// The message, if this is one.
    pub fn message(&self) -> Option<&Arc<Message>> {
        match self {
            Item::Message { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The presence event, if this is one.
    pub fn presence(&self) -> Option<&Arc<PresenceEvent>> {
        match self {
            Item::Presence { event, .. } => Some(event),
            _ => None,
        }
    }
}

/// The part of the hub every subscription shares (its counters, the
/// shutdown flag, and the engine it keeps alive): kept apart from the hub,
/// so that a subscription needs nothing else of it.
pub(crate) struct SubscriberState {
    /// Live subscriptions.
    pub(crate) subscribers: AtomicUsize,
    /// Items handed out, added by each subscription when it catches up or ends.
    pub(crate) delivered: AtomicU64,
    /// Set by [`Hub::shutdown`](crate::Hub::shutdown): every stream ends.
    pub(crate) shutting_down: AtomicBool,
    /// What the end at shutdown suggests clients spread their reconnects over.
    pub(crate) reconnect_window: Duration,
    /// The hub's engine, kept alive while a subscription lives (an engine
    /// with a backplane stops feeding its logs when dropped); it also holds
    /// the key that tags cursors.
    pub(crate) engine: Arc<dyn crate::engine::Engine>,
    /// Who is where, on this node.
    pub(crate) tracker: Arc<Tracker>,
    /// The inboxes of this node's identified subscriptions.
    pub(crate) registry: Registry,
}

/// A live subscription to one or more channels; see [`Hub::subscribe`](crate::Hub::subscribe).
///
/// The stream ends only when the hub shuts down. Dropping it unsubscribes.
pub struct Subscription {
    channels: Vec<Subscribed>,
    /// Round-robin start, so a busy channel cannot starve the others.
    next: usize,
    /// Items handed out but not yet added to the hub's counter (added in
    /// batches, so fan-out does not contend on one shared counter).
    delivered: u64,
    state: Arc<SubscriberState>,
    /// Who subscribed, and who was on each channel as it started: boxed,
    /// so that an anonymous subscription without presence pays a pointer.
    about: Option<Box<About>>,
    /// How long they linger after this ends, in milliseconds.
    grace_ms: u32,
    /// They asked for join and leave events.
    presence_events: bool,
}

/// What only some subscriptions have.
#[derive(Default)]
struct About {
    identity: Option<Identity>,
    /// Who was on each channel with presence when it started, not yet
    /// handed out, last first.
    members: Vec<ChannelPresence>,
    /// Where the server's orders for an identified subscription arrive.
    inbox: Option<Arc<Inbox>>,
    /// Armed before the inbox is read, as the logs' waiters are.
    inbox_waiter: Option<Pin<Box<OwnedNotified>>>,
    /// When access expires.
    expiry: Option<Pin<Box<Sleep>>>,
    /// Items made by orders, not yet handed out.
    pending: VecDeque<Item>,
    /// The subscription ended: nothing after `pending`.
    ended: bool,
}

/// A channel and who was on it.
pub(crate) type ChannelPresence = (ChannelName, Arc<Presence>);

struct Subscribed {
    log: Arc<ChannelLog>,
    position: Position,
    /// The position is one this node can vouch for: the log's own, or a
    /// cursor's that is not ahead of the log. One ahead (from an untagged
    /// cursor, say) is vouched for once a read moves it; until then the
    /// subscription's cursors go untagged, so that nobody can have a node
    /// tag a made-up position and pass it off as proof of lost writes.
    vouched: bool,
    /// The channel has presence and the subscriber an identity: the
    /// tracker counts them there.
    tracked: bool,
    /// The number of the next presence event to hand out.
    presence_seen: u64,
    /// The log's closings when this started reading it.
    closings: u32,
    waiter: Pin<Box<OwnedNotified>>,
}

impl Subscription {
    /// `hub.subscribers` already counts this subscription, and each log its channel.
    /// `first`: the subscription is the log's first subscriber.
    pub(crate) fn new(
        state: Arc<SubscriberState>,
        channels: Vec<(Arc<ChannelLog>, Position, bool)>,
        subscriber: Subscriber,
    ) -> Self {
        let tracker = &state.tracker;
        let channels = channels
            .into_iter()
            .map(|(log, position, first)| {
                let tracked = subscriber.identity.is_some() && tracker.has_presence(log.name());
                let identity = subscriber.identity.as_ref().filter(|_| tracked);
                tracker.attached(&log, first, identity);
                Subscribed::new(log, position, tracked)
            })
            .collect();
        let mut about = None;
        if let Some(identity) = subscriber.identity {
            let inbox = state.registry.register(identity.user_arc());
            about = Some(Box::new(About {
                inbox_waiter: Some(Box::pin(inbox.notify.clone().notified_owned())),
                inbox: Some(inbox),
                identity: Some(identity),
                ..About::default()
            }));
        }
        if let Some(at) = subscriber.expires {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO);
            let about = about.get_or_insert_with(Box::default);
            about.expiry = Some(Box::pin(tokio::time::sleep(left)));
        }
        let subscription = Self {
            channels,
            next: 0,
            delivered: 0,
            state,
            about,
            grace_ms: subscriber.grace.as_millis().min(u32::MAX as u128) as u32,
            presence_events: subscriber.presence_events,
        };
        if let Some(hook) = subscription.state.tracker.hook() {
            hook(&HubEvent::Subscribed(&subscription));
        }
        subscription
    }

    /// Applies the server's orders and the expiry; true if that made items.
    fn take_orders(&mut self) -> bool {
        let mut made = false;
        // Closed channels, the only order that reaches anonymous ones too.
        let mut i = 0;
        while i < self.channels.len() {
            if self.channels[i].log.closings() != self.channels[i].closings {
                let name = self.channels[i].log.name().clone();
                self.remove(&name, EndReason::Closed);
                made = true;
            } else {
                i += 1;
            }
        }
        let Some(about) = self.about.as_mut() else {
            return made;
        };
        if about.ended {
            return made;
        }
        if about
            .expiry
            .as_ref()
            .is_some_and(|sleep| sleep.deadline() <= Instant::now())
        {
            about.expiry = None;
            self.end(EndReason::Expired);
            return true;
        }
        let mut commands = about
            .inbox
            .as_ref()
            .map(|i| i.take())
            .unwrap_or_default()
            .into_iter();
        for command in commands.by_ref() {
            made = true;
            match command {
                Command::End(reason) => self.end(reason),
                Command::Remove(channel, reason) => {
                    if self.channels.iter().any(|c| c.log.name() == &channel) {
                        self.remove(&channel, reason);
                    }
                }
                Command::Add(log, position, first) => self.add(log, position, first),
            }
            // An end (ordered, or the last channel removed) is the last item.
            if self.about.as_ref().is_some_and(|a| a.ended) {
                break;
            }
        }
        // What came after the end is dropped; a channel added for it gives
        // back the count it took.
        for command in commands {
            if let Command::Add(log, ..) = command {
                log.detach();
            }
        }
        made
    }

    /// Ends the whole subscription with `reason`.
    fn end(&mut self, reason: EndReason) {
        let cursor = self.cursor();
        let about = self.about.get_or_insert_with(Box::default);
        if about.ended {
            return;
        }
        about.pending.push_back(Item::Ended {
            channel: None,
            reason,
            cursor,
        });
        about.ended = true;
        // No more orders: channels added for it meanwhile give their counts
        // back when the inbox goes.
        if let (Some(inbox), Some(identity)) = (about.inbox.take(), &about.identity) {
            self.state.registry.unregister(identity.user(), &inbox);
        }
        about.inbox_waiter = None;
    }

    /// Stops reading `channel`; ends the subscription if it was the last.
    fn remove(&mut self, channel: &ChannelName, reason: EndReason) {
        let Some(index) = self.channels.iter().position(|c| c.log.name() == channel) else {
            return;
        };
        let removed = self.channels.remove(index);
        self.next = 0;
        let last = removed.log.detach();
        let identity = self.identity().filter(|_| removed.tracked);
        let grace = Duration::from_millis(self.grace_ms.into());
        self.state
            .tracker
            .released(&removed.log, last, identity, grace);
        let cursor = self.cursor();
        let empty = self.channels.is_empty();
        let about = self.about.get_or_insert_with(Box::default);
        about.pending.push_back(Item::Ended {
            channel: Some(channel.clone()),
            reason,
            cursor,
        });
        if empty {
            self.end(reason);
        }
    }

    /// Starts reading `log` from `position` (already counted on it).
    fn add(&mut self, log: Arc<ChannelLog>, position: Position, first: bool) {
        if self.channels.iter().any(|c| c.log.name() == log.name()) {
            log.detach();
            return;
        }
        let tracker = &self.state.tracker;
        let tracked = self.identity().is_some() && tracker.has_presence(log.name());
        tracker.attached(&log, first, self.identity().filter(|_| tracked));
        let channel = log.name().clone();
        self.channels.push(Subscribed::new(log, position, tracked));
        let cursor = self.cursor();
        self.about
            .get_or_insert_with(Box::default)
            .pending
            .push_back(Item::Added { channel, cursor });
    }

    fn is_ended(&self) -> bool {
        self.about
            .as_ref()
            .is_some_and(|a| a.ended && a.pending.is_empty())
    }

    /// Hands out `members` (each channel's presence as it started) first.
    pub(crate) fn set_members(&mut self, mut members: Vec<ChannelPresence>) {
        members.reverse();
        self.about.get_or_insert_with(Box::default).members = members;
    }

    /// The channels whose presence events it asked for (those with presence).
    pub(crate) fn presence_channels(&self) -> Vec<ChannelName> {
        if !self.presence_events {
            return Vec::new();
        }
        self.channels
            .iter()
            .map(|c| c.log.name())
            .filter(|name| self.state.tracker.has_presence(name))
            .cloned()
            .collect()
    }

    /// Who subscribed, if anyone in particular.
    pub fn identity(&self) -> Option<&Identity> {
        self.about.as_ref()?.identity.as_ref()
    }

    /// The position after everything delivered so far, in every channel.
    pub fn cursor(&self) -> Cursor {
        let vouched = self.channels.iter().all(|c| c.vouched);
        Cursor::from_positions(self.channels.iter().map(|c| c.position))
            .signed(self.state.engine.cursor_key().filter(|_| vouched))
    }

    /// The channels subscribed to, in request order.
    pub fn channels(&self) -> impl ExactSizeIterator<Item = &ChannelName> {
        self.channels.iter().map(|c| c.log.name())
    }

    /// Returns the next item if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<Item> {
        if let Some(about) = self.about.as_mut() {
            if let Some(item) = about.pending.pop_front() {
                return Some(item);
            }
            if about.ended {
                return None;
            }
        }
        if self.take_orders() {
            return self.try_next();
        }
        if let Some((channel, presence)) = self.about.as_mut().and_then(|a| a.members.pop()) {
            return Some(Item::Members {
                channel,
                presence,
                cursor: self.cursor(),
            });
        }
        let n = self.channels.len();
        for i in 0..n {
            let index = (self.next + i) % n;
            let subscribed = &mut self.channels[index];
            if self.presence_events {
                if let Some((event, next)) = subscribed.log.presence_after(subscribed.presence_seen)
                {
                    subscribed.presence_seen = next;
                    self.next = (index + 1) % n;
                    self.delivered += 1;
                    return Some(Item::Presence {
                        event,
                        cursor: self.cursor(),
                    });
                }
            }
            let item = match subscribed.log.read_after(subscribed.position) {
                Read::Nothing => continue,
                Read::Message(message) => {
                    // The epoch too: a reader at the void position continues
                    // into the channel's first epoch.
                    subscribed.position.epoch = message.epoch();
                    subscribed.position.offset = message.offset();
                    subscribed.position.identity = message.identity();
                    subscribed.vouched = true;
                    ItemKind::Message(message)
                }
                Read::Gap { missed, resume } => {
                    subscribed.position = resume;
                    subscribed.vouched = true;
                    crate::telemetry::gap(missed);
                    ItemKind::Gap(missed)
                }
            };
            self.next = (index + 1) % n;
            self.delivered += 1;
            let cursor = match &item {
                // One channel, just read: vouched for, the message's cursor.
                ItemKind::Message(message) if n == 1 => Cursor::after_message(
                    self.channels[index].position,
                    self.state.engine.cursor_key(),
                    message,
                ),
                _ => self.cursor(),
            };
            return Some(match item {
                ItemKind::Message(message) => Item::Message { message, cursor },
                ItemKind::Gap(missed) => Item::Gap {
                    channel: self.channels[index].log.name().clone(),
                    missed,
                    cursor,
                },
            });
        }
        self.flush_delivered();
        None
    }

    fn flush_delivered(&mut self) {
        if self.delivered > 0 {
            let delivered = std::mem::take(&mut self.delivered);
            self.state.delivered.fetch_add(delivered, Ordering::Relaxed);
            crate::telemetry::delivered(delivered);
        }
    }
}

enum ItemKind {
    Message(Arc<Message>),
    Gap(Option<u64>),
}

impl Stream for Subscription {
    type Item = Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = self.get_mut();
        loop {
            // Every waiter was armed before these checks; shutdown wakes them
            // all. Each ends with an end that says so (after what orders
            // made before it), and no more messages.
            if this
                .state
                .shutting_down
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                this.end(EndReason::Shutdown {
                    reconnect_within: this.state.reconnect_window,
                });
                return Poll::Ready(this.about.as_mut().and_then(|a| a.pending.pop_front()));
            }
            if let Some(item) = this.try_next() {
                return Poll::Ready(Some(item));
            }
            if this.is_ended() {
                return Poll::Ready(None);
            }
            let mut woken = false;
            for subscribed in this.channels.iter_mut() {
                if subscribed.waiter.as_mut().poll(cx).is_ready() {
                    // Re-arm before the next read.
                    subscribed.waiter.set(subscribed.log.waiter());
                    woken = true;
                }
            }
            if let Some(about) = this.about.as_mut() {
                if let (Some(waiter), Some(inbox)) = (&mut about.inbox_waiter, &about.inbox) {
                    if waiter.as_mut().poll(cx).is_ready() {
                        waiter.set(inbox.notify.clone().notified_owned());
                        woken = true;
                    }
                }
                if let Some(expiry) = &mut about.expiry {
                    woken |= expiry.as_mut().poll(cx).is_ready();
                }
            }
            if !woken {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.flush_delivered();
        let tracker = &self.state.tracker;
        let grace = Duration::from_millis(self.grace_ms.into());
        for subscribed in self.channels.iter() {
            let last = subscribed.log.detach();
            let identity = self.identity().filter(|_| subscribed.tracked);
            tracker.released(&subscribed.log, last, identity, grace);
        }
        self.state.subscribers.fetch_sub(1, Ordering::Relaxed);
        if let Some(about) = &self.about {
            if let (Some(inbox), Some(identity)) = (&about.inbox, &about.identity) {
                self.state.registry.unregister(identity.user(), inbox);
            }
        }
        if let Some(hook) = tracker.hook() {
            hook(&HubEvent::Unsubscribed(self));
        }
    }
}

impl Subscribed {
    fn new(log: Arc<ChannelLog>, position: Position, tracked: bool) -> Self {
        Self {
            // Armed now, before the first read.
            waiter: Box::pin(log.waiter()),
            vouched: position.epoch != log.epoch() || position.offset <= log.head().offset,
            tracked,
            presence_seen: log.presence_mark(),
            closings: log.closings(),
            log,
            position,
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("channels", &self.channels().collect::<Vec<_>>())
            .field("cursor", &self.cursor())
            .finish()
    }
}
