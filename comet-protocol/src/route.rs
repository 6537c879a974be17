//! A comet route's configuration: its transports and their options, and the
//! application's policies.

use super::{
    callback::{is_function_name, DEFAULT_CALLBACK_REGISTRY},
    transport::{
        long_poll::{DEFAULT_MAX_BATCH, DEFAULT_MAX_HOLD},
        sse::DEFAULT_RETRY,
    },
    AllowAll, Anonymous, Authorize, Cors, Identify, ProtocolError, QueryChannels, ResolveChannels,
    Transport,
};
use crate::{ChannelName, Since};
use http::request::Parts;
use std::{fmt, sync::Arc, time::Duration};

/// Default bytes after which a stream a browser buffers whole (ndjson,
/// forever frame) ends, for the client to resume with its cursor; see
/// [`SubscribeRoute::byte_budget`].
pub const DEFAULT_BYTE_BUDGET: usize = 256 * 1024;

/// Default interval of heartbeats on an idle stream (every streaming transport).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// How one comet route serves subscribers. Cheap to clone.
///
/// ```
/// use comet_push::{protocol::Transport, SubscribeRoute, Since};
/// use std::time::Duration;
///
/// let events = SubscribeRoute::sse().heartbeat(Duration::from_secs(20));
/// let poll = SubscribeRoute::long_poll().max_hold(Duration::from_secs(25));
/// let either = SubscribeRoute::new([Transport::sse(), Transport::long_poll()]).since(Since::Last(10));
/// ```
#[derive(Clone)]
pub struct SubscribeRoute {
    pub(crate) transports: Arc<[Transport]>,
    pub(crate) heartbeat: Duration,
    pub(crate) max_hold: Duration,
    pub(crate) max_batch: usize,
    pub(crate) since: Since,
    pub(crate) retry: Duration,
    pub(crate) byte_budget: usize,
    pub(crate) cors: Option<Cors>,
    pub(crate) channels: Arc<dyn ResolveChannels>,
    pub(crate) authorize: Arc<dyn Authorize>,
    pub(crate) identify: Arc<dyn Identify>,
    pub(crate) presence_grace: Option<Duration>,
    pub(crate) callback_registry: Arc<str>,
    pub(crate) cross_site_jsonp: bool,
}

impl SubscribeRoute {
    /// A route offering `transports` (built in, or your own: see
    /// [`Transport`]); the first is the default when a request neither
    /// names one nor asks for one by `Accept`. A name given twice is
    /// offered once, by the last transport of that name, in the place of
    /// the first.
    ///
    /// # Panics
    ///
    /// If `transports` is empty: a route must offer something.
    pub fn new(transports: impl IntoIterator<Item = Transport>) -> Self {
        // The built-in formats' encoding slots are made before any of the
        // app's (made when first used, while serving), so that theirs are
        // among the slots every message keeps without a lock.
        crate::envelope::reserve_slots();
        crate::transport::sse::reserve_slots();
        crate::transport::long_poll::reserve_slots();
        let mut offered: Vec<Transport> = Vec::new();
        for t in transports {
            match offered.iter_mut().find(|o| **o == t) {
                Some(earlier) => *earlier = t,
                None => offered.push(t),
            }
        }
        assert!(
            !offered.is_empty(),
            "a comet route must offer at least one transport"
        );
        Self {
            transports: offered.into(),
            heartbeat: DEFAULT_HEARTBEAT,
            max_hold: DEFAULT_MAX_HOLD,
            max_batch: DEFAULT_MAX_BATCH,
            since: Since::Head,
            retry: DEFAULT_RETRY,
            byte_budget: DEFAULT_BYTE_BUDGET,
            cors: None,
            channels: Arc::new(QueryChannels),
            authorize: Arc::new(AllowAll),
            identify: Arc::new(Anonymous),
            presence_grace: None,
            callback_registry: Arc::from(DEFAULT_CALLBACK_REGISTRY),
            cross_site_jsonp: false,
        }
    }

    /// A Server-Sent Events route.
    pub fn sse() -> Self {
        Self::new([Transport::sse()])
    }

    /// A long-poll (JSON) route.
    pub fn long_poll() -> Self {
        Self::new([Transport::long_poll()])
    }

    /// A newline-delimited JSON streaming route.
    pub fn ndjson() -> Self {
        Self::new([Transport::ndjson()])
    }

    /// A forever-frame (hidden iframe) route.
    pub fn iframe() -> Self {
        Self::new([Transport::iframe()])
    }

    /// A JSONP long-poll route.
    pub fn jsonp() -> Self {
        Self::new([Transport::jsonp()])
    }

    /// A route offering every built-in transport, SSE by default.
    pub fn all() -> Self {
        Self::new(Transport::all())
    }

    /// The transports offered, the default first.
    pub fn transports(&self) -> &[Transport] {
        &self.transports
    }

    /// Interval of heartbeats on an idle stream (default 15 s), so proxies
    /// keep it open and dead clients are found.
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.max(Duration::from_millis(1));
        self
    }

    /// The longest a long poll is held (default 30 s); a request's `timeout`
    /// is clamped to it, and a request without one is held this long.
    pub fn max_hold(mut self, max: Duration) -> Self {
        self.max_hold = max;
        self
    }

    /// The most items one long-poll answer carries (default 100); the rest
    /// come with the next poll.
    pub fn max_batch(mut self, max: usize) -> Self {
        self.max_batch = max.max(1);
        self
    }

    /// Where subscriptions start when the request has no cursor position for
    /// a channel and no `since` (default: the head).
    pub fn since(mut self, since: Since) -> Self {
        self.since = since;
        self
    }

    /// Bytes after which an ndjson or forever-frame stream ends (default 256
    /// KiB): browsers keep those responses whole in memory, so they must be
    /// renewed; the client resumes with its last cursor and loses nothing.
    pub fn byte_budget(mut self, bytes: usize) -> Self {
        self.byte_budget = bytes;
        self
    }

    /// Serves cross-origin requests as `cors` allows (default: none).
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = Some(cors);
        self
    }

    /// The reconnection delay SSE clients are told (`retry:`; default 2 s).
    pub fn retry(mut self, delay: Duration) -> Self {
        self.retry = delay;
        self
    }

    /// The name of the global object whose functions JSONP and forever-frame
    /// callbacks may name (default `__comet_cb`, the one `comet.js` uses):
    /// `callback=` is one identifier, or `<registry>.<identifier>`.
    /// `comet.js` registers its callbacks in `__comet_cb`, so a route with
    /// another registry serves JSONP and forever frames to clients of your
    /// own only (the client's other transports are unaffected).
    ///
    /// # Panics
    ///
    /// If `name` is not an ASCII JavaScript identifier, or names prototype
    /// machinery (`__proto__`, `constructor`, ...).
    pub fn callback_registry(mut self, name: &str) -> Self {
        assert!(
            is_function_name(name),
            "a callback registry is an ASCII JavaScript identifier: {name:?}"
        );
        self.callback_registry = Arc::from(name);
        self
    }

    /// Answers JSONP requests from other sites too (default: refused with
    /// 403 `cross_site`). A JSONP answer is a script any page can include
    /// with the user's cookies, so only opt in on a route whose channels
    /// need no authorization; pages of origins in the route's [`Cors`] list
    /// are never refused.
    pub fn allow_cross_site_jsonp(mut self, allow: bool) -> Self {
        self.cross_site_jsonp = allow;
        self
    }

    /// Resolves a request's channels with a closure given the request's parts
    /// and its `channel` parameters (the default keeps the parameters).
    ///
    /// ```
    /// use comet_push::{ProtocolError, SubscribeRoute};
    /// // GET /user-events: the user's own channel, from a header set by an
    /// // earlier authentication middleware.
    /// let route = SubscribeRoute::sse().channels(|request, _requested| {
    ///     let user = request.headers.get("x-user").and_then(|v| v.to_str().ok());
    ///     let user = user.ok_or_else(|| ProtocolError::forbidden("sign in first"))?;
    ///     Ok(vec![format!("user/{user}")])
    /// });
    /// ```
    pub fn channels<F>(self, resolve: F) -> Self
    where
        F: Fn(&Parts, Vec<String>) -> Result<Vec<String>, ProtocolError> + Send + Sync + 'static,
    {
        self.channel_resolver(resolve)
    }

    /// Resolves a request's channels with any [`ResolveChannels`].
    pub fn channel_resolver(mut self, resolver: impl ResolveChannels) -> Self {
        self.channels = Arc::new(resolver);
        self
    }

    /// Allows a subscription when the closure returns true for the request's
    /// head and its (validated) channels; refuses it with a 403 otherwise.
    /// Checked on every request, long polls included. Default: allow all.
    ///
    /// ```
    /// use comet_push::SubscribeRoute;
    /// let route = SubscribeRoute::sse().authorize(|request, channels| {
    ///     let signed_in = request.headers.contains_key("authorization");
    ///     channels.iter().all(|c| c.as_str().starts_with("public/") || signed_in)
    /// });
    /// ```
    pub fn authorize<F>(self, allow: F) -> Self
    where
        F: Fn(&Parts, &[ChannelName]) -> bool + Send + Sync + 'static,
    {
        self.authorizer(allow)
    }

    /// Decides who may subscribe to what with an async closure: it gets the
    /// request's head and channels and returns a future of the
    /// [`Access`](crate::Access) it grants (an identity, an expiry) or a
    /// refusal. The future cannot borrow the request: take what it needs
    /// first. Checked on every request, long polls included.
    ///
    /// ```
    /// use comet_push::{protocol::Access, Identity, ProtocolError, SubscribeRoute};
    ///
    /// async fn session_user(cookie: Option<String>) -> Option<String> {
    ///     cookie.map(|c| c.trim_start_matches("sid=").to_owned()) // a store, really
    /// }
    ///
    /// let route = SubscribeRoute::sse().authorize_async(|request, _channels| {
    ///     let cookie = request.headers.get("cookie").and_then(|v| v.to_str().ok()).map(str::to_owned);
    ///     async move {
    ///         let user = session_user(cookie).await.ok_or_else(|| ProtocolError::unauthorized("sign in first"))?;
    ///         let identity = Identity::new(user).map_err(|e| ProtocolError::bad_request(e.to_string()))?;
    ///         Ok(Access::granted().identity(identity))
    ///     }
    /// });
    /// ```
    pub fn authorize_async<F, Fut>(self, authorize: F) -> Self
    where
        F: Fn(&Parts, &[ChannelName]) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<crate::Access, ProtocolError>> + Send + 'static,
    {
        self.authorizer(crate::AuthorizeAsync(authorize))
    }

    /// Decides who may subscribe to what with any [`Authorize`] (which can
    /// give its own error, such as a 401 with a reason, and what it grants).
    pub fn authorizer(mut self, authorizer: impl Authorize) -> Self {
        self.authorize = Arc::new(authorizer);
        self
    }

    /// Tells who each subscription belongs to, from the request's head (a
    /// session an earlier middleware put in its extensions, a verified
    /// token): presence lists them and announces their joins and leaves on
    /// the channels that have it. `Ok(None)` subscribes anonymously; an
    /// error refuses the request. Runs after authorization, on every
    /// request, long polls included. Default: everyone is anonymous.
    ///
    /// ```
    /// use comet_push::{Identity, SubscribeRoute};
    ///
    /// #[derive(Clone)]
    /// struct Session { user_id: String, name: String }
    ///
    /// let route = SubscribeRoute::sse().identify(|request| {
    ///     let Some(session) = request.extensions.get::<Session>() else {
    ///         return Ok(None);
    ///     };
    ///     let identity = Identity::new(session.user_id.as_str())
    ///         .and_then(|i| i.with_info(serde_json::json!({ "name": session.name })))
    ///         .map_err(|e| comet_push::ProtocolError::bad_request(e.to_string()))?;
    ///     Ok(Some(identity))
    /// });
    /// ```
    pub fn identify<F>(self, identify: F) -> Self
    where
        F: Fn(&Parts) -> Result<Option<crate::Identity>, ProtocolError> + Send + Sync + 'static,
    {
        self.identifier(identify)
    }

    /// Tells who each subscription belongs to with any [`Identify`].
    pub fn identifier(mut self, identifier: impl Identify) -> Self {
        self.identify = Arc::new(identifier);
        self
    }

    /// How long a user stays present (and a channel occupied) after a
    /// subscription of this route ends. Default: for a long poll, its hold
    /// (the `timeout` it asked for, at most the route's longest) plus 5 s,
    /// so that a chain of polls is one presence; for streams, 5 s, time to
    /// reconnect.
    pub fn presence_grace(mut self, grace: Duration) -> Self {
        self.presence_grace = Some(grace);
        self
    }

    /// The grace window of a subscription: a long poll's is its `hold`
    /// and more (the next poll comes after the answer); a stream's has no
    /// hold.
    pub(crate) fn grace_for(&self, hold: Option<Duration>) -> Duration {
        self.presence_grace
            .unwrap_or(hold.unwrap_or_default() + comet_core::DEFAULT_PRESENCE_GRACE)
    }
}

impl fmt::Debug for SubscribeRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeRoute")
            .field("transports", &self.transports)
            .field("heartbeat", &self.heartbeat)
            .field("max_hold", &self.max_hold)
            .field("max_batch", &self.max_batch)
            .field("since", &self.since)
            .field("byte_budget", &self.byte_budget)
            .field("cors", &self.cors)
            .field("callback_registry", &self.callback_registry)
            .field("cross_site_jsonp", &self.cross_site_jsonp)
            .finish_non_exhaustive()
    }
}
