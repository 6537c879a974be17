//! Changing live subscriptions from the server: ending a user's
//! subscriptions, taking a channel out of them or adding one, closing a
//! channel, and the end a token's expiry brings.
//!
//! An order ([`Control`]) goes to every node that shares the engine: through
//! the engine's [`ControlBus`] where it has one (Redis: pub/sub), else to
//! this hub alone. Each node applies it to its own subscriptions: a user's
//! are found in a registry of inboxes (identified subscriptions only), a
//! channel's through its log. A subscription reads its inbox when it is
//! next polled, and tells its client why with an [`Item::Ended`]
//! (or [`Item::Added`]), so that a client never reconnects blindly into a
//! refusal.
//!
//! [`Item::Ended`]: crate::Item::Ended
//! [`Item::Added`]: crate::Item::Added

use crate::{
    engine::{ChannelLog, EngineFuture},
    ChannelName, Position,
};
use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};
use tokio::sync::Notify;

/// Why a subscription, or one channel of it, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// Its access expired (a token's `exp`): the client should get a new
    /// token, then resume with its cursor; nothing is lost.
    Expired,
    /// The app disconnected its user ([`Hub::disconnect`](crate::Hub::disconnect)).
    Disconnected,
    /// The app closed the channel ([`Hub::close`](crate::Hub::close)).
    Closed,
    /// The app took the channel out of its user's subscriptions
    /// ([`Hub::unsubscribe`](crate::Hub::unsubscribe)).
    Unsubscribed,
    /// The server is shutting down ([`Hub::shutdown`](crate::Hub::shutdown)):
    /// the client should resume with its cursor elsewhere (another node,
    /// or this one restarted) after a random delay within
    /// `reconnect_within`, so that a node's clients do not all reach the
    /// others at once; nothing is lost.
    Shutdown {
        /// The window to spread the reconnects over
        /// ([`HubBuilder::reconnect_window`](crate::HubBuilder::reconnect_window)).
        reconnect_within: Duration,
    },
}

impl EndReason {
    /// `expired`, `disconnected`, `closed`, `unsubscribed` or `shutdown`,
    /// as the wire names them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Disconnected => "disconnected",
            Self::Closed => "closed",
            Self::Unsubscribed => "unsubscribed",
            Self::Shutdown { .. } => "shutdown",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An order to every node's live subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Control {
    /// End every subscription of `user`.
    Disconnect {
        /// The user id.
        user: Arc<str>,
    },
    /// Take `channel` out of every subscription of `user`.
    Unsubscribe {
        /// The user id.
        user: Arc<str>,
        /// The channel.
        channel: ChannelName,
    },
    /// Add `channel`, from its head, to every subscription of `user`.
    Subscribe {
        /// The user id.
        user: Arc<str>,
        /// The channel.
        channel: ChannelName,
    },
    /// End every subscription's reading of `channel`.
    Close {
        /// The channel.
        channel: ChannelName,
    },
    /// Close `channel` as [`Close`](Self::Close) does, after deleting its
    /// history ([`Hub::close_and_clear`](crate::Hub::close_and_clear); over
    /// HTTP, `DELETE <publish>/<channel>`). Apart from `Close`, so that an
    /// authorizer that allows closing does not allow destroying history:
    /// nodes hear only the `Close` that follows the clearing.
    Clear {
        /// The channel.
        channel: ChannelName,
    },
}

/// Applies the orders a [`ControlBus`] hears (each node's hub registers one).
pub type ControlHandler = Arc<dyn Fn(Control) + Send + Sync>;

/// How an engine shared by several nodes carries [`Control`] orders to every
/// one of them ([`Engine::control_bus`](crate::engine::Engine::control_bus)).
pub trait ControlBus: Send + Sync + 'static {
    /// Sends `control` to every node, this one included; resolves once it
    /// is on its way to all of them.
    fn send(&self, control: Control) -> EngineFuture<()>;

    /// Calls `handler` with every order heard, from any node.
    fn listen(&self, handler: ControlHandler);
}

/// What a node asks of one live subscription.
pub(crate) enum Command {
    /// End the whole subscription.
    End(EndReason),
    /// Stop reading one channel.
    Remove(ChannelName, EndReason),
    /// Read one more channel from `position` (counted on the log already;
    /// `first`: its first subscriber).
    Add(Arc<ChannelLog>, Position, bool),
}

/// An identified subscription's orders, waiting for its next poll.
#[derive(Default)]
pub(crate) struct Inbox {
    commands: Mutex<Vec<Command>>,
    /// Set with each command: a subscription reading items checks this,
    /// not the lock.
    waiting: AtomicBool,
    pub(crate) notify: Arc<Notify>,
}

impl Inbox {
    pub(crate) fn push(&self, command: Command) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(command);
        self.waiting.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// The commands waiting, oldest first (none, without locking, when
    /// there are none).
    pub(crate) fn take(&self) -> Vec<Command> {
        if !self.waiting.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.commands.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Inbox {
    /// Channels added for a subscription that is gone before it read them
    /// give their counts back.
    fn drop(&mut self) {
        let commands = self.commands.get_mut().unwrap_or_else(|e| e.into_inner());
        for command in commands.drain(..) {
            if let Command::Add(log, ..) = command {
                log.detach();
            }
        }
    }
}

/// The inboxes of this node's identified subscriptions, by user.
#[derive(Default)]
pub(crate) struct Registry {
    users: Mutex<HashMap<Arc<str>, Vec<Weak<Inbox>>>>,
}

impl Registry {
    /// A new inbox for a subscription of `user`.
    pub(crate) fn register(&self, user: &Arc<str>) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox::default());
        self.lock()
            .entry(user.clone())
            .or_default()
            .push(Arc::downgrade(&inbox));
        inbox
    }

    /// Forgets `inbox` (its subscription is dropped).
    pub(crate) fn unregister(&self, user: &str, inbox: &Arc<Inbox>) {
        let mut users = self.lock();
        if let Some(inboxes) = users.get_mut(user) {
            inboxes
                .retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(inbox)));
            if inboxes.is_empty() {
                users.remove(user);
            }
        }
    }

    /// The live inboxes of `user`.
    pub(crate) fn of(&self, user: &str) -> Vec<Arc<Inbox>> {
        self.lock()
            .get(user)
            .map(|inboxes| inboxes.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    }

    /// Sends `command` (made afresh for each) to every subscription of `user`.
    pub(crate) fn tell(&self, user: &str, command: impl Fn() -> Command) {
        for inbox in self.of(user) {
            inbox.push(command());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Weak<Inbox>>>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}
