//! A subscription: a `Stream` of items across one or more channels.
//!
//! It holds, per channel, a position and one armed waiter — no queue. Each
//! poll reads the shared history after its positions; when nothing is there it
//! waits on waiters that were armed *before* that read, so a publish landing
//! between the read and the wait still wakes it. Positions move only when an
//! item is returned, so dropping a pending `next()` loses nothing.

use crate::{
    engine::{ChannelLog, Read},
    ChannelName, Cursor, Message, Position,
};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};
use tokio::sync::futures::OwnedNotified;
use tokio_stream::Stream;

/// One thing a subscription delivers.
#[derive(Debug, Clone)]
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
}

impl Item {
    /// The subscription's position after this item: resuming from it loses
    /// nothing and repeats nothing.
    pub fn cursor(&self) -> &Cursor {
        match self {
            Item::Message { cursor, .. } | Item::Gap { cursor, .. } => cursor,
        }
    }

    /// The channel this item belongs to.
    pub fn channel(&self) -> &ChannelName {
        match self {
            Item::Message { message, .. } => message.channel(),
            Item::Gap { channel, .. } => channel,
        }
    }

    /// The message, if this is one.
    pub fn message(&self) -> Option<&Arc<Message>> {
        match self {
            Item::Message { message, .. } => Some(message),
            Item::Gap { .. } => None,
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
    /// The hub's engine, kept alive while a subscription lives (an engine
    /// with a backplane stops feeding its logs when dropped); it also holds
    /// the key that tags cursors.
    pub(crate) engine: Arc<dyn crate::engine::Engine>,
}

/// A live subscription to one or more channels; see [`Hub::subscribe`](crate::Hub::subscribe).
///
/// The stream ends only when the hub shuts down. Dropping it unsubscribes.
pub struct Subscription {
    channels: Box<[Subscribed]>,
    /// Round-robin start, so a busy channel cannot starve the others.
    next: usize,
    /// Items handed out but not yet added to the hub's counter (added in
    /// batches, so fan-out does not contend on one shared counter).
    delivered: u64,
    state: Arc<SubscriberState>,
}

struct Subscribed {
    log: Arc<ChannelLog>,
    position: Position,
    /// The position is one this node can vouch for: the log's own, or a
    /// cursor's that is not ahead of the log. One ahead (from an untagged
    /// cursor, say) is vouched for once a read moves it; until then the
    /// subscription's cursors go untagged, so that nobody can have a node
    /// tag a made-up position and pass it off as proof of lost writes.
    vouched: bool,
    waiter: Pin<Box<OwnedNotified>>,
}

impl Subscription {
    /// `hub.subscribers` already counts this subscription, and each log its channel.
    pub(crate) fn new(
        state: Arc<SubscriberState>,
        channels: Vec<(Arc<ChannelLog>, Position)>,
    ) -> Self {
        let channels = channels
            .into_iter()
            .map(|(log, position)| Subscribed {
                // Armed now, before the first read.
                waiter: Box::pin(log.waiter()),
                vouched: position.epoch != log.epoch() || position.offset <= log.head().offset,
                log,
                position,
            })
            .collect();
        Self {
            channels,
            next: 0,
            delivered: 0,
            state,
        }
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
        let n = self.channels.len();
        for i in 0..n {
            let index = (self.next + i) % n;
            let subscribed = &mut self.channels[index];
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
            let cursor = self.cursor();
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
            // Every waiter was armed before these checks; shutdown wakes them all.
            if this
                .state
                .shutting_down
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return Poll::Ready(None);
            }
            if let Some(item) = this.try_next() {
                return Poll::Ready(Some(item));
            }
            let mut woken = false;
            for subscribed in this.channels.iter_mut() {
                if subscribed.waiter.as_mut().poll(cx).is_ready() {
                    // Re-arm before the next read.
                    subscribed.waiter.set(subscribed.log.waiter());
                    woken = true;
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
        for subscribed in self.channels.iter() {
            subscribed.log.detach();
        }
        self.state.subscribers.fetch_sub(1, Ordering::Relaxed);
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
