//! [`CometLayer`]: the app's comet routes, mounted in front of its own.

use crate::Comet;
use comet_core::{
    protocol::{self, PublishRoute, Route},
    Hub,
};
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

/// Paths and their routes.
#[derive(Clone, Default)]
pub(crate) struct Routes {
    routes: Vec<(String, Endpoint)>,
}

#[derive(Clone, Debug)]
pub(crate) enum Endpoint {
    Subscribe(Route),
    Publish(PublishRoute),
    /// The browser client alone, with this route's CORS.
    Client(Route),
}

impl Endpoint {
    /// Answers `request` to this endpoint mounted at `mount` (for publishing,
    /// the rest of the path names the channel; a subscribe body is never read).
    pub(crate) fn serve<B>(
        &self,
        hub: &Hub,
        mount: &str,
        request: http::Request<B>,
    ) -> protocol::ResponseFuture
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (head, body) = request.into_parts();
        match self {
            // `<route>/comet.js`: the browser client for this route.
            Endpoint::Client(route) => {
                Box::pin(std::future::ready(protocol::serve_client(route, &head)))
            }
            // The layer also matches `<mount>/comet.js` (see `Routes::find`);
            // a `CometService` (no mount) serves its route at any path.
            Endpoint::Subscribe(route) if !mount.is_empty() && head.uri.path() != mount => {
                Box::pin(std::future::ready(protocol::serve_client(route, &head)))
            }
            Endpoint::Subscribe(route) => protocol::serve(hub, route, &head),
            Endpoint::Publish(route) => route.serve(hub, mount, &head, body),
        }
    }
}

impl Routes {
    /// The route for `path` and its mount path: subscribe routes match
    /// exactly, and serve the browser client at `<path>/comet.js`; publish
    /// routes also match any path below theirs (the rest names the channel).
    pub(crate) fn find(&self, path: &str) -> Option<(&str, &Endpoint)> {
        self.routes
            .iter()
            .find(|(mount, endpoint)| {
                let below = path
                    .strip_prefix(mount.trim_end_matches('/'))
                    .and_then(|rest| rest.strip_prefix('/'));
                path == mount
                    || match endpoint {
                        Endpoint::Publish(_) => below.is_some(),
                        Endpoint::Subscribe(_) => below == Some(protocol::CLIENT_SCRIPT_NAME),
                        Endpoint::Client(_) => false,
                    }
            })
            .map(|(mount, endpoint)| (mount.as_str(), endpoint))
    }

    fn insert(&mut self, path: &str, endpoint: Endpoint) {
        assert!(
            path.starts_with('/'),
            "comet route paths start with '/': {path:?}"
        );
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        self.routes.retain(|(p, _)| p != path);
        self.routes.push((path.to_owned(), endpoint));
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
        Arc::make_mut(&mut self.routes).insert(path, Endpoint::Subscribe(route));
        self
    }

    /// Accepts publishing at `path` and below it: `POST path/room/lobby`
    /// publishes to `room/lobby` (or `POST path?channel=...`).
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`.
    pub fn publish(mut self, path: &str, route: PublishRoute) -> Self {
        Arc::make_mut(&mut self.routes).insert(path, Endpoint::Publish(route));
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
