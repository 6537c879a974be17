//! [`CometLayer`]: the app's comet routes, mounted in front of its own.

use comet_core::Hub;
use comet_protocol::{self as protocol, PublishRoute, Route};
use std::{fmt, sync::Arc};

/// Serves comet routes at their paths and passes every other request to the
/// wrapped service untouched.
///
/// ```
/// use axum::{routing::get, Router};
/// use comet::{Hub, Route};
/// use comet::CometLayer;
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
    /// A path under a subscribe route's mount that no route serves: the
    /// protocol's JSON 404.
    NotFound,
}

/// What a path under a mount that serves nothing gets.
static NOT_FOUND: Endpoint = Endpoint::NotFound;

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
        let (parts, body) = request.into_parts();
        match self {
            // `<route>/comet.js`: the browser client for this route.
            Endpoint::Client(route) => {
                Box::pin(std::future::ready(protocol::serve_client(route, &parts)))
            }
            // The layer also matches `<mount>/comet.js` (see `Routes::find`);
            // a `RouteService` (no mount) serves its route at any path.
            Endpoint::Subscribe(route) if !mount.is_empty() && parts.uri.path() != mount => {
                Box::pin(std::future::ready(protocol::serve_client(route, &parts)))
            }
            Endpoint::Subscribe(route) => protocol::serve(hub, route, &parts),
            Endpoint::Publish(route) => route.serve(hub, mount, &parts, body),
            Endpoint::NotFound => Box::pin(std::future::ready(protocol::not_found(&parts))),
        }
    }
}

impl Routes {
    /// The route for `path` and its mount path, most specific first: a
    /// route's own path; `<subscribe route>/comet.js` (the browser client);
    /// any path below a publish route (the rest names the channel); then any
    /// other path below a subscribe route, which the layer answers with the
    /// protocol's JSON 404 (a route at `/` claims only `/` and `/comet.js`).
    pub(crate) fn find(&self, path: &str) -> Option<(&str, &Endpoint)> {
        let below = |mount: &str| {
            path.strip_prefix(mount.trim_end_matches('/'))
                .and_then(|rest| rest.strip_prefix('/'))
        };
        let found = |pick: &dyn Fn(&str, &Endpoint) -> bool| {
            self.routes
                .iter()
                .filter(|(mount, endpoint)| pick(mount, endpoint))
                // The longest mount is the most specific.
                .max_by_key(|(mount, _)| mount.len())
                .map(|(mount, endpoint)| (mount.as_str(), endpoint))
        };
        found(&|mount, _| path == mount)
            .or_else(|| {
                found(&|mount, endpoint| {
                    matches!(endpoint, Endpoint::Subscribe(_))
                        && below(mount) == Some(protocol::CLIENT_SCRIPT_NAME)
                })
            })
            .or_else(|| {
                found(&|mount, endpoint| {
                    matches!(endpoint, Endpoint::Publish(_)) && below(mount).is_some()
                })
            })
            .or_else(|| {
                found(&|mount, endpoint| {
                    matches!(endpoint, Endpoint::Subscribe(_))
                        && mount != "/"
                        && below(mount).is_some()
                })
                .map(|(mount, _)| (mount, &NOT_FOUND))
            })
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
    /// route for the same path replaces it), and the browser client at
    /// `path/comet.js`. Every other path below `path` that no comet route
    /// serves is answered with the protocol's JSON 404, not passed to the
    /// app (unless `path` is `/`).
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

impl fmt::Debug for CometLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CometLayer")
            .field("hub", &self.hub)
            .field("routes", &self.routes.routes)
            .finish()
    }
}
