//! Orders to live subscriptions on every node, and clearing a channel's
//! history: the engine's [`ControlBus`] and [`Engine::clear`].
//!
//! An order ([`Control`]) is published on one pub/sub channel for every
//! node, `<prefix>:control` (see `keys.rs`), in the form `wire.rs`
//! describes, through the command connection and within the engine's
//! timeout. Every node's task subscribes to it at each connect (after a
//! reconnect or a failover too) and hands each order it hears, its own
//! included, to every hub that listens on the engine ([`ControlBus::listen`];
//! several hubs may share one engine). Pub/sub keeps nothing: an order
//! published while a node's pub/sub connection is down never reaches that
//! node's subscriptions, and an order whose `PUBLISH` timed out may or may
//! not have gone out.
//!
//! A clear moves the channel to a new epoch with no history, at once and
//! atomically (the new-epoch script, unconditional), and announces it on the
//! channel's pub/sub channel like any new epoch: every node's mirror reads
//! the new state, readers from before get one gap, and the next publish
//! continues the new epoch. Idempotency keys remembered for the old epoch
//! stay until they expire but answer no publish (the publish script honours
//! one only in the epoch it names), so no retry is told that an old offset
//! holds its message.
//!
//! [`Engine::clear`]: comet_core::engine::Engine::clear

use crate::{
    backplane::{late, unavailable, Failure},
    keys::ChannelKeys,
    node::Shared,
    wire,
};
use comet_core::engine::{Control, ControlBus, ControlHandler, EngineError, EngineFuture};
use comet_core::ChannelName;
use std::{future::Future, sync::Arc};

/// The engine's control bus; cheap to make (the listeners live in
/// [`Shared`]).
pub(crate) struct Bus(pub(crate) Arc<Shared>);

impl ControlBus for Bus {
    fn send(&self, control: Control) -> EngineFuture<()> {
        let shared = self.0.clone();
        Box::pin(async move {
            let order = wire::control_message(&control).ok_or_else(|| {
                unavailable("this version of the redis engine cannot carry that order")
            })?;
            bounded(&shared, async {
                shared.first()?.backplane.send_order(&order).await
            })
            .await
        })
    }

    fn listen(&self, handler: ControlHandler) {
        self.0
            .listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(handler);
    }
}

/// Clears `channel`'s history (see the module's doc).
pub(crate) async fn clear(shared: Arc<Shared>, channel: ChannelName) -> Result<(), EngineError> {
    let keys = ChannelKeys::new(&shared.config.prefix, &channel);
    let clearing = shared.on_shard(&channel, |shard| {
        let keys = &keys;
        async move { shard.backplane.new_epoch(keys, None).await }
    });
    bounded(&shared, clearing).await
}

/// `call`, within the engine's timeout in all (a retry included).
async fn bounded(
    shared: &Shared,
    call: impl Future<Output = Result<(), Failure>>,
) -> Result<(), EngineError> {
    let timeout = shared.config.timeout;
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(late(timeout)))
        .map_err(|failure| unavailable(failure.to_string()))
}
