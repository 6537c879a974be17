//! [`Mount`]: comet's routes under their paths, written once for every
//! adapter. The tower layer serves one in front of an app; warp serves one
//! as a filter; an adapter of your own finds a request's endpoint with
//! [`Mount::find`] and answers with [`Endpoint::serve`].

use crate::{not_found, PublishRoute, ResponseFuture, SubscribeRoute, CLIENT_SCRIPT_NAME};
use comet_core::Hub;
use std::fmt;

/// Subscribe routes and publish routes at their paths, and the browser
/// client beside each subscribe route.
///
/// The rules, for every adapter alike:
///
/// - a subscribe route answers at its exact path, and serves the browser
///   client at `<path>/comet.js`; every other path below it that no comet
///   route serves gets the protocol's JSON 404, not the app (unless the
///   route is at `/`);
/// - a publish route answers at its path and every path below it: the rest
///   of the path names the channel (`POST /publish/room/lobby` publishes to
///   `room/lobby`), or the `channel` parameter does;
/// - where several match, a path of its own wins (a route's, or the client
///   beside one: [`Endpoint::Client`]), then the longest publish path, then
///   the longest subscribe path's 404.
///
/// ```
/// use comet_push::{protocol::Mount, PublishRoute, SubscribeRoute};
///
/// let mount = Mount::new()
///     .route("/events", SubscribeRoute::sse())
///     .publish("/publish", PublishRoute::new());
/// assert!(mount.find("/events").is_some());
/// assert!(mount.find("/events/comet.js").is_some());
/// assert!(mount.find("/publish/room/lobby").is_some());
/// assert!(mount.find("/app").is_none());
/// ```
#[derive(Clone, Default)]
pub struct Mount {
    routes: Vec<(String, Endpoint)>,
}

/// What a path under a [`Mount`] leads to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Endpoint {
    /// A subscribe route.
    Subscribe(SubscribeRoute),
    /// A publish route.
    Publish(PublishRoute),
    /// The browser client alone, with this route's CORS.
    Client(SubscribeRoute),
    /// A path under a subscribe route's mount that no route serves: the
    /// protocol's JSON 404.
    NotFound,
}

/// What a path under a mount that serves nothing gets.
static NOT_FOUND: Endpoint = Endpoint::NotFound;

impl Endpoint {
    /// Answers `request` to this endpoint mounted at `mount` (for publishing,
    /// the rest of the path names the channel; a subscribe body is never
    /// read). An endpoint with no mount (`""`) serves at any path.
    pub fn serve<B>(&self, hub: &Hub, mount: &str, request: http::Request<B>) -> ResponseFuture
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        match self {
            // `<route>/comet.js`: the browser client for this route.
            Endpoint::Client(route) => Box::pin(std::future::ready(route.serve_client(&parts))),
            Endpoint::Subscribe(route) => route.serve(hub, &parts),
            Endpoint::Publish(route) => route.serve(hub, mount, &parts, body),
            Endpoint::NotFound => Box::pin(std::future::ready(not_found(&parts))),
        }
    }
}

impl Mount {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `route` at `path` (an exact path such as `/comet/sse`; a later
    /// route for the same path replaces it), and the browser client at
    /// `path/comet.js`.
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`.
    pub fn route(mut self, path: &str, route: SubscribeRoute) -> Self {
        let path = self.insert(path, Endpoint::Subscribe(route.clone()));
        let client = format!("{}/{CLIENT_SCRIPT_NAME}", path.trim_end_matches('/'));
        // A route of its own at that path wins over the client.
        let taken = self
            .routes
            .iter()
            .any(|(p, e)| *p == client && !matches!(e, Endpoint::Client(_)));
        if !taken {
            self.insert(&client, Endpoint::Client(route));
        }
        self
    }

    /// Accepts publishing at `path` and below it.
    ///
    /// # Panics
    ///
    /// If `path` does not start with `/`.
    pub fn publish(mut self, path: &str, route: PublishRoute) -> Self {
        self.insert(path, Endpoint::Publish(route));
        self
    }

    /// The endpoint for a request's `path`, and the path it is mounted at;
    /// `None` for a path that is the app's.
    pub fn find(&self, path: &str) -> Option<(&str, &Endpoint)> {
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
        // A path is in the list once: a route, or the client beside one.
        found(&|mount, _| path == mount)
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

    /// Puts `endpoint` at `path` (in place of what was there); returns the
    /// path as kept.
    fn insert(&mut self, path: &str, endpoint: Endpoint) -> String {
        assert!(
            path.starts_with('/'),
            "comet route paths start with '/': {path:?}"
        );
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        self.routes.retain(|(p, _)| p != path);
        self.routes.push((path.to_owned(), endpoint));
        path.to_owned()
    }
}

impl fmt::Debug for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.routes.iter().map(|(path, endpoint)| (path, endpoint)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(mount: &Mount, path: &str) -> Option<(String, &'static str)> {
        mount.find(path).map(|(at, endpoint)| {
            let kind = match endpoint {
                Endpoint::Subscribe(_) => "subscribe",
                Endpoint::Publish(_) => "publish",
                Endpoint::Client(_) => "client",
                Endpoint::NotFound => "not found",
            };
            (at.to_owned(), kind)
        })
    }

    #[test]
    fn the_rules_every_adapter_shares() {
        let mount = Mount::new()
            .route("/events/", SubscribeRoute::sse())
            .route("/", SubscribeRoute::long_poll())
            .publish("/events/publish", PublishRoute::new());
        let at = |path: &str, kind: &str| Some((path.to_owned(), kind.to_owned()));
        let found = |path: &str| kind(&mount, path).map(|(p, k)| (p, k.to_owned()));
        assert_eq!(found("/events"), at("/events", "subscribe"));
        assert_eq!(found("/events/comet.js"), at("/events/comet.js", "client"));
        assert_eq!(found("/events/other"), at("/events", "not found"));
        assert_eq!(
            found("/events/publish/room/a"),
            at("/events/publish", "publish")
        );
        assert_eq!(found("/"), at("/", "subscribe"));
        assert_eq!(found("/comet.js"), at("/comet.js", "client"));
        // A route at `/` claims only `/` and its client: the rest is the app's.
        assert_eq!(found("/app"), None);
        // A route of its own at a client's path wins, whichever came first.
        let mount = Mount::new()
            .route("/x", SubscribeRoute::sse())
            .route("/x/comet.js", SubscribeRoute::long_poll());
        assert_eq!(
            kind(&mount, "/x/comet.js").map(|(_, k)| k),
            Some("subscribe")
        );
        let mount = Mount::new()
            .route("/x/comet.js", SubscribeRoute::long_poll())
            .route("/x", SubscribeRoute::sse());
        assert_eq!(
            kind(&mount, "/x/comet.js").map(|(_, k)| k),
            Some("subscribe")
        );
    }
}
