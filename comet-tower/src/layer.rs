//! [`CometLayer`]: the app's comet routes, mounted in front of its own.

use comet_core::Hub;
use comet_protocol::{Mount, PublishRoute, SubscribeRoute};
use std::{fmt, sync::Arc};

/// Serves comet routes at their paths and passes every other request to the
/// wrapped service untouched.
///
/// ```
/// use axum::{routing::get, Router};
/// use comet_push::{Hub, SubscribeRoute};
/// use comet_push::CometLayer;
/// use std::time::Duration;
///
/// let hub = Hub::new();
/// let app: Router = Router::new()
///     .route("/", get(|| async { "the app" }))
///     .layer(
///         CometLayer::new(hub.clone())
///             .sse("/events")
///             .long_poll("/poll")
///             .route("/push", SubscribeRoute::sse().heartbeat(Duration::from_secs(20))),
///     );
/// ```
#[derive(Clone)]
pub struct CometLayer {
    pub(crate) hub: Hub,
    pub(crate) mount: Arc<Mount>,
}

impl CometLayer {
    /// A layer with no routes yet, serving `hub`'s channels.
    pub fn new(hub: Hub) -> Self {
        Self::from_mount(hub, Mount::new())
    }

    /// A layer serving `mount`'s routes (the same rules on every adapter;
    /// see [`Mount`]).
    pub fn from_mount(hub: Hub, mount: Mount) -> Self {
        Self {
            hub,
            mount: Arc::new(mount),
        }
    }

    /// Serves `route` at `path` (an exact path such as `/comet/sse`; a later
    /// route for the same path replaces it), and the browser client at
    /// `path/comet.js`. Every other path below `path` that no comet route
    /// serves is answered with the protocol's JSON 404, not passed to the
    /// app (unless `path` is `/`).
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`.
    pub fn route(mut self, path: &str, route: SubscribeRoute) -> Self {
        let mount = Arc::make_mut(&mut self.mount);
        *mount = std::mem::take(mount).route(path, route);
        self
    }

    /// Accepts publishing at `path` and below it: `POST path/room/lobby`
    /// publishes to `room/lobby` (or `POST path?channel=...`).
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`.
    pub fn publish(mut self, path: &str, route: PublishRoute) -> Self {
        let mount = Arc::make_mut(&mut self.mount);
        *mount = std::mem::take(mount).publish(path, route);
        self
    }

    /// Serves Server-Sent Events at `path`, with default options.
    pub fn sse(self, path: &str) -> Self {
        self.route(path, SubscribeRoute::sse())
    }

    /// Serves long polling (JSON) at `path`, with default options.
    pub fn long_poll(self, path: &str) -> Self {
        self.route(path, SubscribeRoute::long_poll())
    }

    /// The hub whose channels are served.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

impl fmt::Debug for CometLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CometLayer")
            .field("hub", &self.hub)
            .field("mount", &self.mount)
            .finish()
    }
}
