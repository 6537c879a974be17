//! A comet route's configuration: its transports and their options, and the
//! application's policies.

use super::{
    callback::{is_function_name, DEFAULT_CALLBACK_REGISTRY},
    transport::{
        poll::{DEFAULT_MAX_BATCH, DEFAULT_MAX_HOLD},
        sse::DEFAULT_RETRY,
        stream::DEFAULT_BYTE_BUDGET,
        Delivery,
    },
    AllowAll, Authorize, Cors, PollFormat, ProtocolError, QueryChannels, ResolveChannels,
    StreamFormat, SubscribeParams, Transport,
};
use crate::{ChannelName, Since};
use http::request::Parts;
use std::{fmt, sync::Arc, time::Duration};

/// Default interval of heartbeats on an idle stream (every streaming transport).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// How one comet route serves subscribers. Cheap to clone.
///
/// ```
/// use comet::{Route, Since, Transport};
/// use std::time::Duration;
///
/// let events = Route::sse().heartbeat(Duration::from_secs(20));
/// let poll = Route::long_poll().max_hold(Duration::from_secs(25));
/// let either = Route::new([Transport::Sse, Transport::Poll]).since(Since::Last(10));
/// ```
#[derive(Clone)]
pub struct Route {
    pub(crate) transports: Arc<[Transport]>,
    pub(crate) custom: Arc<[CustomTransport]>,
    pub(crate) heartbeat: Duration,
    pub(crate) max_hold: Duration,
    pub(crate) max_batch: usize,
    pub(crate) since: Since,
    pub(crate) retry: Duration,
    pub(crate) byte_budget: usize,
    pub(crate) cors: Option<Cors>,
    pub(crate) channels: Arc<dyn ResolveChannels>,
    pub(crate) authorize: Arc<dyn Authorize>,
    pub(crate) callback_registry: Arc<str>,
    pub(crate) cross_site_jsonp: bool,
}

impl Route {
    /// A route offering `transports`; the first is the default when a request
    /// neither names one nor asks for one by `Accept`.
    ///
    /// # Panics
    ///
    /// If `transports` is empty: a route must offer something.
    pub fn new(transports: impl IntoIterator<Item = Transport>) -> Self {
        let mut offered: Vec<Transport> = Vec::new();
        for t in transports {
            if !offered.contains(&t) {
                offered.push(t);
            }
        }
        assert!(
            !offered.is_empty(),
            "a comet route must offer at least one transport"
        );
        Self::offering(offered)
    }

    fn offering(transports: Vec<Transport>) -> Self {
        Self {
            transports: transports.into(),
            custom: Arc::from([]),
            heartbeat: DEFAULT_HEARTBEAT,
            max_hold: DEFAULT_MAX_HOLD,
            max_batch: DEFAULT_MAX_BATCH,
            since: Since::Head,
            retry: DEFAULT_RETRY,
            byte_budget: DEFAULT_BYTE_BUDGET,
            cors: None,
            channels: Arc::new(QueryChannels),
            authorize: Arc::new(AllowAll),
            callback_registry: Arc::from(DEFAULT_CALLBACK_REGISTRY),
            cross_site_jsonp: false,
        }
    }

    /// A Server-Sent Events route.
    pub fn sse() -> Self {
        Self::new([Transport::Sse])
    }

    /// A long-poll (JSON) route.
    pub fn long_poll() -> Self {
        Self::new([Transport::Poll])
    }

    /// A newline-delimited JSON streaming route.
    pub fn stream() -> Self {
        Self::new([Transport::Stream])
    }

    /// A forever-frame (hidden iframe) route.
    pub fn iframe() -> Self {
        Self::new([Transport::Iframe])
    }

    /// A JSONP long-poll route.
    pub fn jsonp() -> Self {
        Self::new([Transport::Jsonp])
    }

    /// A route offering every transport, SSE by default.
    pub fn all() -> Self {
        Self::new(Transport::ALL)
    }

    /// A route serving only a wire format of your own; see [`format`](Self::format).
    pub fn custom<F, S>(name: &str, make: F) -> Self
    where
        F: Fn(&Parts, &SubscribeParams) -> Result<S, ProtocolError> + Send + Sync + 'static,
        S: StreamFormat,
    {
        Self::offering(Vec::new()).format(name, make)
    }

    /// A route serving only a long-poll format of your own; see
    /// [`poll_format`](Self::poll_format).
    pub fn custom_poll<F, P>(name: &str, make: F) -> Self
    where
        F: Fn(&Parts, &SubscribeParams) -> Result<P, ProtocolError> + Send + Sync + 'static,
        P: PollFormat,
    {
        Self::offering(Vec::new()).poll_format(name, make)
    }

    /// Also offers a streaming wire format of your own, chosen by
    /// `transport=<name>` (or by default on a route offering nothing else).
    /// `make` builds the format for each request, so it can read the
    /// request's parameters (a callback name, say) or refuse it.
    ///
    /// ```
    /// use comet::{protocol::{Chunks, StreamFormat}, Cursor, Message, Route};
    ///
    /// struct Csv;
    /// impl StreamFormat for Csv {
    ///     fn message(&self, m: &Message, _: &Cursor, out: &mut Chunks) {
    ///         out.push(format!("{},{},{:?}\n", m.channel(), m.offset(), m.text()));
    ///     }
    /// }
    ///
    /// let route = Route::sse().format("csv", |_request, _params| Ok(Csv));
    /// ```
    ///
    /// # Panics
    ///
    /// If `name` is a built-in transport's name.
    pub fn format<F, S>(self, name: &str, make: F) -> Self
    where
        F: Fn(&Parts, &SubscribeParams) -> Result<S, ProtocolError> + Send + Sync + 'static,
        S: StreamFormat,
    {
        self.offer(
            name,
            Arc::new(move |request: &Parts, params: &SubscribeParams| {
                make(request, params).map(|format| Delivery::Stream {
                    format: Box::new(format),
                    byte_budget: None,
                })
            }),
        )
    }

    /// Also offers a long-poll wire format of your own, chosen by
    /// `transport=<name>` (or by default on a route offering nothing else).
    /// Requests are held, batched and resumed as for the built-in long poll
    /// (`timeout`, `If-None-Match`, [`max_hold`](Self::max_hold),
    /// [`max_batch`](Self::max_batch)); the format writes the answer's body.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use comet::{protocol::PollFormat, Cursor, Item, Route};
    /// use http::HeaderValue;
    ///
    /// /// The cursor, then one message text per line.
    /// struct Lines;
    /// impl PollFormat for Lines {
    ///     fn answer(&self, items: &[Item], cursor: &Cursor) -> Bytes {
    ///         let texts = items.iter().filter_map(Item::message).map(|m| m.text());
    ///         std::iter::once(cursor.encode()).chain(texts.map(str::to_owned))
    ///             .collect::<Vec<_>>().join("\n").into()
    ///     }
    ///     fn content_type(&self) -> HeaderValue {
    ///         HeaderValue::from_static("text/plain; charset=utf-8")
    ///     }
    /// }
    ///
    /// let route = Route::long_poll().poll_format("lines", |_request, _params| Ok(Lines));
    /// ```
    ///
    /// # Panics
    ///
    /// If `name` is a built-in transport's name.
    pub fn poll_format<F, P>(self, name: &str, make: F) -> Self
    where
        F: Fn(&Parts, &SubscribeParams) -> Result<P, ProtocolError> + Send + Sync + 'static,
        P: PollFormat,
    {
        self.offer(
            name,
            Arc::new(move |request: &Parts, params: &SubscribeParams| {
                make(request, params).map(|format| Delivery::Poll(Box::new(format)))
            }),
        )
    }

    fn offer(mut self, name: &str, make: MakeDelivery) -> Self {
        assert!(
            Transport::ALL.iter().all(|t| t.name() != name),
            "{name:?} is a built-in transport"
        );
        let mut custom: Vec<CustomTransport> = self
            .custom
            .iter()
            .filter(|f| &*f.name != name)
            .cloned()
            .collect();
        custom.push(CustomTransport {
            name: name.into(),
            make,
        });
        self.custom = custom.into();
        self
    }

    /// The built-in transports offered, the default first.
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
    /// use comet::{ProtocolError, Route};
    /// // GET /user-events: the user's own channel, from a header set by an
    /// // earlier authentication middleware.
    /// let route = Route::sse().channels(|request, _requested| {
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
    /// use comet::Route;
    /// let route = Route::sse().authorize(|request, channels| {
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

    /// Decides who may subscribe to what with any [`Authorize`] (which can
    /// give its own error, such as a 401 with a reason).
    pub fn authorizer(mut self, authorizer: impl Authorize) -> Self {
        self.authorize = Arc::new(authorizer);
        self
    }
}

/// Builds a custom transport's format for one request.
pub(crate) type MakeDelivery =
    Arc<dyn Fn(&Parts, &SubscribeParams) -> Result<Delivery, ProtocolError> + Send + Sync>;

/// A transport of the application's own, offered under `name`.
#[derive(Clone)]
pub(crate) struct CustomTransport {
    pub(crate) name: Arc<str>,
    pub(crate) make: MakeDelivery,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("transports", &self.transports)
            .field(
                "custom",
                &self.custom.iter().map(|f| &*f.name).collect::<Vec<_>>(),
            )
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
