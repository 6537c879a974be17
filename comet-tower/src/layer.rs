//! [`CometLayer`]: the app's comet routes, mounted in front of its own.

use crate::Comet;
use comet_core::{protocol::Route, Hub};
use std::{fmt, sync::Arc};
use tower_layer::Layer;

/// Serves comet routes at their paths and passes every other request to the
/// wrapped service untouched.
///
/// ```
/// use axum::{routing::get, Router};
/// use comet_core::{protocol::Route, Hub};
/// use comet_tower::CometLayer;
/// use std::time::Duration;
///
/// let hub = Hub::new();
/// let app: Router = Router::new()
///     .route("/", get(|| async { "the app" }))
///     .layer(
///         CometLayer::new(hub.clone())
///             .sse("/events")
///             .long_poll("/poll")
///             .route("/push", Route::sse().heartbeat(Duration::from_secs(20))),
///     );
/// ```
#[derive(Clone)]
pub struct CometLayer {
    pub(crate) hub: Hub,
    pub(crate) routes: Arc<Routes>,
}

/// Paths and their routes, matched exactly.
#[derive(Clone, Default)]
pub(crate) struct Routes {
    routes: Vec<(String, Route)>,
}

impl Routes {
    pub(crate) fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|(p, _)| p == path).map(|(_, r)| r)
    }
}

impl CometLayer {
    /// A layer with no routes yet, serving `hub`'s channels.
    pub fn new(hub: Hub) -> Self {
        Self {
            hub,
            routes: Arc::default(),
        }
    }

    /// Serves `route` at `path` (an exact path such as `/comet/sse`; a later
    /// route for the same path replaces it).
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`.
    pub fn route(mut self, path: &str, route: Route) -> Self {
        assert!(
            path.starts_with('/'),
            "comet route paths start with '/': {path:?}"
        );
        let routes = Arc::make_mut(&mut self.routes);
        routes.routes.retain(|(p, _)| p != path);
        routes.routes.push((path.to_owned(), route));
        self
    }

    /// Serves Server-Sent Events at `path`, with default options.
    pub fn sse(self, path: &str) -> Self {
        self.route(path, Route::sse())
    }

    /// Serves long polling (JSON) at `path`, with default options.
    pub fn long_poll(self, path: &str) -> Self {
        self.route(path, Route::long_poll())
    }

    /// The hub whose channels are served.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

impl<S> Layer<S> for CometLayer {
    type Service = Comet<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Comet::new(inner, self.clone())
    }
}

impl fmt::Debug for CometLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CometLayer")
            .field("hub", &self.hub)
            .field("routes", &self.routes.routes)
            .finish()
    }
}
