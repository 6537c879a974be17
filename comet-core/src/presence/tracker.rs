//! This node's view of who is subscribed where: users and their live
//! subscriptions on channels with presence, and which channels are
//! occupied, each lingering for a grace window after its last subscription.
//!
//! Subscriptions tell the tracker when they start and end (only those that
//! can change something: a channel's first or last subscriber, or a user on
//! a channel with presence). A task, started with the first change, ends
//! grace windows when they pass and reports each channel's changes in one
//! batch at most every [`COALESCE`], to the engine's store, or, without
//! one, straight to the channel's subscribers and the app's hook.

use super::{
    Hook, HubEvent, Member, NodeUpdate, Presence, PresenceEvent, PresenceFn, PresenceKind,
    PresenceStore, Transition, UserUpdate, COALESCE,
};
use crate::{
    engine::{ChannelLog, Engine},
    ChannelName, Identity,
};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};
use tokio::{sync::Notify, time::Instant};

pub(crate) struct Tracker {
    state: Mutex<State>,
    /// Wakes the task: a grace window or a batch to send.
    wake: Arc<Notify>,
    presence: Option<PresenceFn>,
    hook: Option<Hook>,
    engine: Arc<dyn Engine>,
    store: Option<Arc<dyn PresenceStore>>,
    running: AtomicBool,
}

#[derive(Default)]
struct State {
    channels: HashMap<ChannelName, Node>,
    /// Grace windows, by when they end.
    due: BTreeMap<Instant, Vec<ChannelName>>,
    /// Channels with changes not yet reported.
    dirty: HashSet<ChannelName>,
}

/// One channel, on this node.
#[derive(Default)]
struct Node {
    occupied: bool,
    /// What the store (or the hook) was last told.
    reported_occupied: bool,
    /// When it is vacated, if it stays without subscribers until then.
    lingers_until: Option<Instant>,
    users: HashMap<Arc<str>, User>,
}

struct User {
    identity: Identity,
    live: usize,
    /// When they leave, if no subscription of theirs comes back first.
    lingers_until: Option<Instant>,
    gone: bool,
    /// Connections last reported; `None` before their join is.
    reported: Option<usize>,
}

impl Tracker {
    pub(crate) fn new(
        engine: Arc<dyn Engine>,
        presence: Option<PresenceFn>,
        hook: Option<Hook>,
    ) -> Arc<Self> {
        let store = engine.presence_store();
        let tracker = Arc::new(Self {
            state: Mutex::default(),
            wake: Arc::new(Notify::new()),
            presence,
            hook,
            engine,
            store,
            running: AtomicBool::new(false),
        });
        if let (Some(store), Some(hook)) = (&tracker.store, &tracker.hook) {
            let hook = hook.clone();
            store.observe(Arc::new(move |channel, transitions| {
                fire(&hook, channel, transitions)
            }));
        }
        tracker
    }

    /// Whether `channel` has presence.
    pub(crate) fn has_presence(&self, channel: &ChannelName) -> bool {
        self.presence.as_ref().is_some_and(|on| on(channel))
    }

    /// The app's hook, if any.
    pub(crate) fn hook(&self) -> Option<&Hook> {
        self.hook.as_ref()
    }

    /// A subscription started on `log`: counted on the log already.
    /// `first`: the log had no subscriber before it; `identity`: the user,
    /// when the channel has presence.
    pub(crate) fn attached(&self, log: &ChannelLog, first: bool, identity: Option<&Identity>) {
        if !first && identity.is_none() {
            return;
        }
        let mut state = self.lock();
        let name = log.name();
        let node = match state.channels.get_mut(name) {
            Some(node) => node,
            None => state.channels.entry(name.clone()).or_default(),
        };
        let mut changed = false;
        // The count decides, not the caller's view of it: attaches and
        // detaches of other tasks may reach here in another order.
        if log.subscriber_count() > 0 {
            node.lingers_until = None;
            if !node.occupied {
                node.occupied = true;
                changed = true;
            }
        }
        if let Some(identity) = identity {
            let user = node
                .users
                .entry(identity.user_arc().clone())
                .or_insert_with(|| User {
                    identity: identity.clone(),
                    live: 0,
                    lingers_until: None,
                    gone: false,
                    reported: None,
                });
            user.live += 1;
            user.lingers_until = None;
            user.gone = false;
            if user.identity != *identity {
                user.identity = identity.clone(); // newer info
            }
            changed = true;
        }
        if changed {
            state.dirty.insert(name.clone());
            drop(state);
            self.kick();
        }
    }

    /// A subscription on `log` ended: no longer counted on it. `last`: it
    /// was the log's last subscriber; `grace`: how long it lingers.
    pub(crate) fn released(
        &self,
        log: &ChannelLog,
        last: bool,
        identity: Option<&Identity>,
        grace: Duration,
    ) {
        if !last && identity.is_none() {
            return;
        }
        let now = Instant::now();
        let until = now + grace;
        let mut state = self.lock();
        let name = log.name();
        let Some(node) = state.channels.get_mut(name) else {
            return;
        };
        let mut schedule = false;
        if node.occupied && log.subscriber_count() == 0 {
            node.lingers_until = Some(node.lingers_until.map_or(until, |u| u.max(until)));
            schedule = true;
        }
        let mut changed = false;
        if let Some(user) = identity.and_then(|i| node.users.get_mut(i.user())) {
            user.live = user.live.saturating_sub(1);
            if user.live == 0 {
                user.lingers_until = Some(until);
                schedule = true;
            }
            changed = true;
        }
        if schedule {
            state.due.entry(until).or_default().push(name.clone());
        }
        if changed {
            state.dirty.insert(name.clone());
        }
        drop(state);
        if schedule || changed {
            self.kick();
        }
    }

    /// The users this node has on `channel`, listing at most `max`.
    pub(crate) fn local_presence(&self, channel: &ChannelName, max: usize) -> Presence {
        let state = self.lock();
        let members = state
            .channels
            .get(channel)
            .map(|node| {
                node.users
                    .values()
                    .filter(|u| !u.gone)
                    .map(|u| Member {
                        identity: u.identity.clone(),
                        connections: u.live,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Presence::from_members(members, max)
    }

    /// The engine's presence store, if it has one.
    pub(crate) fn store(&self) -> Option<&Arc<dyn PresenceStore>> {
        self.store.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the task, starting it if it is not running.
    fn kick(self: &Tracker) {
        self.wake.notify_one();
    }

    /// Starts the task once (from a subscribe, so inside a runtime).
    pub(crate) fn start(self: &Arc<Self>) {
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.running.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(run(Arc::downgrade(self), self.wake.clone()));
    }

    /// Ends the grace windows due by `now`.
    fn expire(&self, now: Instant) {
        let mut state = self.lock();
        let later = state.due.split_off(&(now + Duration::from_nanos(1)));
        let due = std::mem::replace(&mut state.due, later);
        for name in due.into_values().flatten() {
            let Some(node) = state.channels.get_mut(&name) else {
                continue;
            };
            let mut changed = false;
            if node.lingers_until.is_some_and(|u| u <= now) {
                let empty = self
                    .engine
                    .existing(&name)
                    .map_or(true, |log| log.subscriber_count() == 0);
                node.lingers_until = None;
                if empty && node.occupied {
                    node.occupied = false;
                    changed = true;
                }
            }
            for user in node.users.values_mut() {
                if user.live == 0 && user.lingers_until.is_some_and(|u| u <= now) {
                    user.lingers_until = None;
                    user.gone = true;
                    changed = true;
                }
            }
            if changed {
                state.dirty.insert(name);
            }
        }
    }

    /// What changed on this node since the last report, per channel; drops
    /// what is left with nothing to report.
    /// With each, what it changed on this node alone.
    fn take_updates(&self) -> Vec<(ChannelName, NodeUpdate, Vec<Transition>)> {
        let mut state = self.lock();
        let dirty = std::mem::take(&mut state.dirty);
        let mut updates = Vec::with_capacity(dirty.len());
        for name in dirty {
            let Some(node) = state.channels.get_mut(&name) else {
                continue;
            };
            let mut update = NodeUpdate::default();
            let mut here = Vec::new();
            if node.occupied != node.reported_occupied {
                node.reported_occupied = node.occupied;
                update.occupied = Some(node.occupied);
                if node.occupied {
                    here.push(Transition::Occupied); // before its users join
                }
            }
            node.users.retain(|_, user| {
                if user.gone {
                    if user.reported.is_some() {
                        update.users.push(UserUpdate::Gone(user.identity.clone()));
                        here.push(Transition::Left(user.identity.clone()));
                    }
                    return false;
                }
                if user.reported != Some(user.live) {
                    if user.reported.is_none() {
                        here.push(Transition::Joined(user.identity.clone()));
                    }
                    user.reported = Some(user.live);
                    update.users.push(UserUpdate::Present {
                        identity: user.identity.clone(),
                        connections: user.live,
                    });
                }
                true
            });
            if update.occupied == Some(false) {
                here.push(Transition::Vacated); // after its users leave
            }
            let settled = !node.occupied
                && !node.reported_occupied
                && node.users.is_empty()
                && node.lingers_until.is_none();
            if settled {
                state.channels.remove(&name);
            }
            if update.occupied.is_some() || !update.users.is_empty() {
                updates.push((name, update, here));
            }
        }
        updates
    }

    /// Reports `updates`: to the store, which answers what they changed
    /// across nodes, or (one node) as they are.
    async fn report(&self, updates: Vec<(ChannelName, NodeUpdate, Vec<Transition>)>) {
        match &self.store {
            Some(store) => {
                let futures: Vec<_> = updates
                    .into_iter()
                    .map(|(name, update, _)| {
                        let future = store.update(&name, update);
                        Box::pin(async move { (name, future.await) })
                    })
                    .collect();
                for (name, result) in crate::hub::join_all(futures).await {
                    match result {
                        Ok(transitions) => {
                            if let Some(hook) = &self.hook {
                                fire(hook, &name, &transitions);
                            }
                        }
                        Err(error) => {
                            // The store expires this node's share if it
                            // stays unreachable; the next change reports
                            // the state as it is then.
                            tracing::warn!(channel = %name, %error, "could not report presence");
                        }
                    }
                }
            }
            None => {
                for (name, _, transitions) in updates {
                    if transitions.is_empty() {
                        continue;
                    }
                    if let Some(log) = self.engine.existing(&name) {
                        log.announce(transitions.iter().filter_map(|t| match t {
                            Transition::Joined(identity) => Some(PresenceEvent::new(
                                name.clone(),
                                PresenceKind::Join,
                                identity.clone(),
                            )),
                            Transition::Left(identity) => Some(PresenceEvent::new(
                                name.clone(),
                                PresenceKind::Leave,
                                identity.clone(),
                            )),
                            _ => None,
                        }));
                    }
                    if let Some(hook) = &self.hook {
                        fire(hook, &name, &transitions);
                    }
                }
            }
        }
    }

    /// When the task must next act: the first grace window's end, or the
    /// next batch if one waits.
    fn next_due(&self, batch_at: Instant) -> Option<Instant> {
        let state = self.lock();
        let grace = state.due.keys().next().copied();
        let batch = (!state.dirty.is_empty()).then_some(batch_at);
        match (grace, batch) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Calls the app's hook once per transition.
pub(crate) fn fire(hook: &Hook, channel: &ChannelName, transitions: &[Transition]) {
    for transition in transitions {
        let event = match transition {
            Transition::Occupied => HubEvent::Occupied { channel },
            Transition::Vacated => HubEvent::Vacated { channel },
            Transition::Joined(identity) => HubEvent::Joined { channel, identity },
            Transition::Left(identity) => HubEvent::Left { channel, identity },
        };
        hook(&event);
    }
}

impl Drop for Tracker {
    /// The batching task waits on `wake` with nothing due: told, it finds
    /// the tracker gone and ends, rather than wait for ever.
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// The tracker's task: ends grace windows and sends batches, until the hub
/// is gone.
async fn run(tracker: Weak<Tracker>, wake: Arc<Notify>) {
    let mut batch_at = Instant::now();
    loop {
        let next = match tracker.upgrade() {
            Some(tracker) => tracker.next_due(batch_at),
            None => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
        let Some(tracker) = tracker.upgrade() else {
            return;
        };
        let now = Instant::now();
        tracker.expire(now);
        if now >= batch_at {
            let updates = tracker.take_updates();
            if !updates.is_empty() {
                tracker.report(updates).await;
                batch_at = Instant::now() + COALESCE;
            }
        }
    }
}
