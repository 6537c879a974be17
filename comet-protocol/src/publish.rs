//! Publishing over HTTP: `POST` a payload to a channel, get its cursor.

use super::{
    cors::PendingCors, error::UNAVAILABLE_RETRY_AFTER_SECS, request, Authorization, CometBody,
    Cors, ErrorCode, ProtocolError, ResponseFuture,
};
use crate::{ChannelName, ControlError, Hub, IdempotencyKey, Payload, PublishError, QueryError};
use bytes::Bytes;
use comet_core::engine::Control;
use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use std::{fmt, future::Future, sync::Arc};

/// Decides whether a request may publish to a channel (or read its info):
/// at once, or after awaiting, as [`Authorize`](crate::Authorize) does.
pub trait AuthorizePublish: Send + Sync + 'static {
    /// `Ok` to allow; an error (usually [`ProtocolError::forbidden`] or
    /// [`ProtocolError::unauthorized`]) to refuse.
    fn authorize(&self, request: &Parts, channel: &ChannelName) -> Authorization<()>;
}

impl<F> AuthorizePublish for F
where
    F: Fn(&Parts, &ChannelName) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, request: &Parts, channel: &ChannelName) -> Authorization<()> {
        Authorization::ready(if self(request, channel) {
            Ok(())
        } else {
            Err(ProtocolError::forbidden(
                "not authorized to publish to this channel",
            ))
        })
    }
}

/// An async closure as an [`AuthorizePublish`]; see
/// [`PublishRoute::authorize_async`].
#[derive(Clone)]
pub struct AuthorizePublishAsync<F>(F);

impl<F, Fut> AuthorizePublish for AuthorizePublishAsync<F>
where
    F: Fn(&Parts, &ChannelName) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProtocolError>> + Send + 'static,
{
    fn authorize(&self, request: &Parts, channel: &ChannelName) -> Authorization<()> {
        Authorization::later((self.0)(request, channel))
    }
}

/// Decides whether a request may give an order to live subscriptions
/// (close a channel, disconnect a user, ...) on the publish route.
pub trait AuthorizeControl: Send + Sync + 'static {
    /// `Ok` to allow; an error to refuse.
    fn authorize(&self, request: &Parts, control: &Control) -> Authorization<()>;
}

impl<F> AuthorizeControl for F
where
    F: Fn(&Parts, &Control) -> bool + Send + Sync + 'static,
{
    fn authorize(&self, request: &Parts, control: &Control) -> Authorization<()> {
        Authorization::ready(if self(request, control) {
            Ok(())
        } else {
            Err(ProtocolError::forbidden(
                "not authorized to give this order",
            ))
        })
    }
}

/// Services that present one of a few static keys as
/// `Authorization: Bearer <key>`: for a publish route's publishers
/// ([`PublishRoute::authorizer`]) and orders ([`PublishRoute::control`]).
/// A missing or unknown key is a 401. Keys are compared in constant time.
///
/// ```
/// use comet_push::protocol::{PublishRoute, StaticKeys};
/// let keys = StaticKeys::new(["key-of-the-billing-service", "key-of-the-chat-bot"]);
/// let route = PublishRoute::new().authorizer(keys.clone()).control(keys);
/// ```
#[derive(Clone)]
pub struct StaticKeys(Arc<[String]>);

impl StaticKeys {
    /// Accepts any of `keys`.
    pub fn new<I>(keys: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self(keys.into_iter().map(Into::into).collect())
    }

    fn check(&self, request: &Parts) -> Result<(), ProtocolError> {
        let presented = request
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ProtocolError::unauthorized("a key is needed (Authorization: Bearer)")
            })?;
        // Every key is compared, each in time independent of where it differs.
        let known = self.0.iter().fold(false, |found, key| {
            found | same(key.as_bytes(), presented.as_bytes())
        });
        if known {
            Ok(())
        } else {
            Err(ProtocolError::unauthorized(
                "the key is not one this server knows",
            ))
        }
    }
}

/// Equality of two byte strings in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticKeys({} keys)", self.0.len())
    }
}

impl AuthorizePublish for StaticKeys {
    fn authorize(&self, request: &Parts, _: &ChannelName) -> Authorization<()> {
        Authorization::ready(self.check(request))
    }
}

impl AuthorizeControl for StaticKeys {
    fn authorize(&self, request: &Parts, _: &Control) -> Authorization<()> {
        Authorization::ready(self.check(request))
    }
}

/// A route that accepts `POST` with the payload as body.
///
/// The channel is the rest of the path after the route's own path
/// (`/comet/publish/room/lobby` publishes to `room/lobby`), or the `channel`
/// parameter. `Content-Type: application/json` (or any `+json` type) marks
/// JSON, anything else text; a `Comet-Event` header names the event. The
/// answer is `201 {"cursor":"..."}`.
///
/// `GET` on the same path answers what the channel looks like on every
/// node, authorized as a publish is: `200 {"channel":..,"cursor":..,
/// "subscribers":..}`, plus `"users"`, `"connections"` and `"presence"`
/// (who is there) when the channel has presence (see [`Hub::channel_info`]).
///
/// An `Idempotency-Key` header makes a retry safe: a publish that repeats a
/// key the engine remembers for the channel stores nothing and answers the
/// first one's cursor (see [`Hub::publish_idempotent`]).
///
/// Publishing is refused (403) until an authorizer is set: an open publish
/// endpoint would let anyone write to every channel.
///
/// ```
/// use comet_push::PublishRoute;
/// let route = PublishRoute::new().authorize(|request, _channel| {
///     request.headers.get("authorization").is_some_and(|v| v == "Bearer secret")
/// });
/// ```
#[derive(Clone, Default)]
pub struct PublishRoute {
    authorize: Option<Arc<dyn AuthorizePublish>>,
    control: Option<Arc<dyn AuthorizeControl>>,
    cors: Option<Cors>,
}

const COMET_EVENT: &str = "comet-event";
const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl PublishRoute {
    /// A publish route that refuses everyone until [`authorize`](Self::authorize) is set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows a publish when the closure returns true for the request's parts
    /// and the channel; refuses it with a 403 otherwise.
    pub fn authorize<F>(self, allow: F) -> Self
    where
        F: Fn(&Parts, &ChannelName) -> bool + Send + Sync + 'static,
    {
        self.authorizer(allow)
    }

    /// Decides who may publish with an async closure (a lookup in a key
    /// store, say): the future of `Ok(())` allows.
    pub fn authorize_async<F, Fut>(self, authorize: F) -> Self
    where
        F: Fn(&Parts, &ChannelName) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ProtocolError>> + Send + 'static,
    {
        self.authorizer(AuthorizePublishAsync(authorize))
    }

    /// Decides who may publish with any [`AuthorizePublish`] ([`StaticKeys`],
    /// or tokens with the `jwt` feature).
    pub fn authorizer(mut self, authorizer: impl AuthorizePublish) -> Self {
        self.authorize = Some(Arc::new(authorizer));
        self
    }

    /// Takes orders to live subscriptions, from those `authorizer` allows
    /// (refused with 403 until set):
    ///
    /// - `DELETE <route>/<channel>` closes the channel and clears its
    ///   history ([`Hub::close_and_clear`]);
    /// - `POST <route>/disconnect?user=<id>` ends the user's subscriptions
    ///   ([`Hub::disconnect`]);
    /// - `POST <route>/unsubscribe?user=<id>&channel=<name>` and
    ///   `POST <route>/subscribe?user=<id>&channel=<name>` take a channel
    ///   out of, or add one to, the user's subscriptions
    ///   ([`Hub::unsubscribe`], [`Hub::subscribe_user`]).
    ///
    /// Each answers 204 once the order is on its way to every node. (A
    /// `POST` to `disconnect`, `unsubscribe` or `subscribe` with a `user`
    /// parameter is an order; publish to channels of those names with
    /// `?channel=`.)
    pub fn control(mut self, authorizer: impl AuthorizeControl) -> Self {
        self.control = Some(Arc::new(authorizer));
        self
    }

    /// Serves cross-origin requests for these origins.
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = Some(cors);
        self
    }

    /// Answers a publish request. `mount` is the route's own path: the rest of
    /// the request's path names the channel (else `channel=`, once or more).
    /// The body is read only after the request is authorized, and never past
    /// the hub's payload limit; a JSON batch, which names its channels in
    /// its body, is read first (within the payload limit and its channel
    /// list's), and each of its channels is then authorized.
    pub fn serve<B>(&self, hub: &Hub, mount: &str, request: &Parts, body: B) -> ResponseFuture
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Some(preflight) = PendingCors::preflight(
            self.cors.as_ref(),
            request,
            &[Method::GET, Method::POST, Method::DELETE],
        ) {
            return Box::pin(std::future::ready(preflight));
        }
        let cors = PendingCors::for_request(self.cors.as_ref(), request);
        if request.method == Method::GET {
            let checked = self.check_info(mount, request);
            let hub = hub.clone();
            return Box::pin(async move {
                let response = match checked {
                    Err(error) => error.into_response(),
                    Ok((channel, authorization)) => match authorization.await {
                        Err(error) => error.into_response(),
                        Ok(()) => match channel_info(&hub, &channel).await {
                            Ok(response) => response,
                            Err(error) => error.into_response(),
                        },
                    },
                };
                cors.apply(response)
            });
        }
        if let Some(order) = self.order(mount, request) {
            let hub = hub.clone();
            return Box::pin(async move {
                let response = match order {
                    Err(error) => error.into_response(),
                    Ok((control, authorization)) => match authorization.await {
                        Err(error) => error.into_response(),
                        Ok(()) => match give(&hub, control).await {
                            Ok(response) => response,
                            Err(error) => error.into_response(),
                        },
                    },
                };
                cors.apply(response)
            });
        }
        let checked = self.check(hub, mount, request);
        let hub = hub.clone();
        Box::pin(async move {
            let response = match checked {
                Err(error) => error.into_response(),
                Ok(publish) => match publish.run(&hub, body).await {
                    Ok(response) => response,
                    Err(error) => error.into_response(),
                },
            };
            cors.apply(response)
        })
    }

    /// Checks a channel-info request: authorized as a publish to the channel.
    fn check_info(
        &self,
        mount: &str,
        request: &Parts,
    ) -> Result<(ChannelName, Authorization<()>), ProtocolError> {
        request::check(request, METHODS, ALLOW)?;
        let channel = channel(mount, request)?;
        let authorization = self.authorized(request, &channel)?;
        Ok((channel, authorization))
    }

    fn authorized(
        &self,
        request: &Parts,
        channel: &ChannelName,
    ) -> Result<Authorization<()>, ProtocolError> {
        Ok(self.authorized_by()?.authorize(request, channel))
    }

    /// The publish authorizer; refused when the route has none.
    fn authorized_by(&self) -> Result<&Arc<dyn AuthorizePublish>, ProtocolError> {
        self.authorize
            .as_ref()
            .ok_or_else(|| ProtocolError::forbidden("publishing is not enabled on this route"))
    }

    fn clone_authorizer(&self) -> Arc<dyn AuthorizePublish> {
        self.authorize.clone().expect("checked by authorized_by")
    }

    /// The order a request gives, if it is one (`DELETE`, or `POST` to
    /// `disconnect`, `unsubscribe` or `subscribe` with a `user`), checked,
    /// with its authorization.
    fn order(
        &self,
        mount: &str,
        request: &Parts,
    ) -> Option<Result<(Control, Authorization<()>), ProtocolError>> {
        let verb = request
            .uri
            .path()
            .strip_prefix(mount.trim_end_matches('/'))
            .map(|rest| rest.trim_matches('/'))
            .unwrap_or("");
        let param = |key: &str| {
            form_urlencoded::parse(request.uri.query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        let is_order = request.method == Method::DELETE
            || (request.method == Method::POST
                && matches!(verb, "disconnect" | "unsubscribe" | "subscribe")
                && param("user").is_some());
        if !is_order {
            return None;
        }
        Some((|| {
            request::check(request, METHODS, ALLOW)?;
            let control = if request.method == Method::DELETE {
                Control::Clear {
                    channel: channel(mount, request)?,
                }
            } else {
                let user = param("user").unwrap_or_default();
                let user = comet_core::Identity::new(user)
                    .map_err(|e| ErrorCode::BadParameter.error(format!("user: {e}")))?
                    .user_arc()
                    .clone();
                let channel = || -> Result<ChannelName, ProtocolError> {
                    let name = param("channel").ok_or_else(|| {
                        ErrorCode::NoChannels.error("name the channel with channel=")
                    })?;
                    ChannelName::new(&name)
                        .map_err(|e| ErrorCode::BadChannel.error(format!("{e}: {name:?}")))
                };
                match verb {
                    "disconnect" => Control::Disconnect { user },
                    "unsubscribe" => Control::Unsubscribe {
                        user,
                        channel: channel()?,
                    },
                    _ => Control::Subscribe {
                        user,
                        channel: channel()?,
                    },
                }
            };
            let authorize = self
                .control
                .as_ref()
                .ok_or_else(|| ProtocolError::forbidden("orders are not enabled on this route"))?;
            let authorization = authorize.authorize(request, &control);
            Ok((control, authorization))
        })())
    }

    fn check(
        &self,
        hub: &Hub,
        mount: &str,
        request: &Parts,
    ) -> Result<PublishRequest, ProtocolError> {
        request::check(request, METHODS, ALLOW)?;
        let target = match targets(mount, request)? {
            Some(channels) => {
                let authorizations = channels
                    .iter()
                    .map(|channel| self.authorized(request, channel))
                    .collect::<Result<Vec<_>, _>>()?;
                Target::Channels(channels.into_iter().zip(authorizations).collect())
            }
            None => {
                // Channels come in the body: the route must publish at all.
                self.authorized_by()?;
                Target::Batch(self.clone_authorizer(), Box::new(request.clone()))
            }
        };

        let max = hub.max_payload_bytes();
        let body_max = match target {
            Target::Channels(_) => max,
            Target::Batch(..) => max + MAX_BATCH_OVERHEAD,
        };
        request::check_declared_length(request, body_max)?;
        let json = request
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|media| {
                let media = media.trim().to_ascii_lowercase();
                media == "application/json" || media.ends_with("+json")
            })
            .unwrap_or(false);
        let event = request
            .headers
            .get(COMET_EVENT)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| ErrorCode::BadEvent.error("Comet-Event must be visible ASCII"))
            })
            .transpose()?;
        let mut keys = request.headers.get_all(IDEMPOTENCY_KEY).iter();
        let idempotency_key = match (keys.next(), keys.next()) {
            (None, _) => None,
            (Some(_), Some(_)) => {
                return Err(ErrorCode::BadParameter.error("Idempotency-Key given more than once"))
            }
            (Some(value), None) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|key| IdempotencyKey::new(key).ok())
                    .ok_or_else(|| {
                        ErrorCode::BadParameter
                            .error("Idempotency-Key must be 1 to 128 visible ASCII characters")
                    })?,
            ),
        };
        if matches!(target, Target::Batch(..)) && !json {
            return Err(ErrorCode::NoChannels.error(
                "name the channel in the path or with channel=, or send a JSON batch \
                 ({\"channels\":[..],\"data\":..})",
            ));
        }
        Ok(PublishRequest {
            target,
            json,
            event,
            idempotency_key,
            max: body_max,
            payload_max: max,
        })
    }
}

/// A publish request that passed every check of its parts; its body is
/// what is left.
struct PublishRequest {
    target: Target,
    json: bool,
    event: Option<String>,
    idempotency_key: Option<IdempotencyKey>,
    /// The most the body may hold.
    max: usize,
    /// The most a payload may hold.
    payload_max: usize,
}

/// Where a publish goes.
enum Target {
    /// Channels the request names (path, or `channel=` once or more), each
    /// with its authorization, awaited before the body is read.
    Channels(Vec<(ChannelName, Authorization<()>)>),
    /// A JSON batch (`{"channels":[..],"data":..}`): the channels are in
    /// the body, authorized once it is read (bounded), with the request's
    /// head.
    Batch(Arc<dyn AuthorizePublish>, Box<Parts>),
}

/// The most channels one request publishes to.
pub const MAX_BROADCAST_CHANNELS: usize = 1000;

/// What a batch body may hold beyond the payload: its channel list (every
/// name at its longest, quoted, with a comma) and the rest of the object.
const MAX_BATCH_OVERHEAD: usize =
    MAX_BROADCAST_CHANNELS * (comet_core::MAX_CHANNEL_NAME_LEN + 3) + 4096;

/// A batch: one payload to many channels.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    channels: Vec<String>,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
    event: Option<String>,
}

impl PublishRequest {
    async fn run<B>(self, hub: &Hub, body: B) -> Result<Response<CometBody>, ProtocolError>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (channels, payload) = match self.target {
            Target::Channels(mut channels) if channels.len() == 1 => {
                let (channel, authorization) = channels.pop().expect("one");
                authorization.await?;
                let bytes = request::read_body(body, self.max).await?;
                let payload = payload(bytes, self.json, self.event)?;
                let cursor = publish(hub, &channel, payload, self.idempotency_key.as_ref()).await?;
                return Ok(json_response(
                    StatusCode::CREATED,
                    serde_json::json!({ "cursor": cursor }).to_string(),
                ));
            }
            Target::Channels(channels) => {
                let mut allowed = Vec::with_capacity(channels.len());
                for (channel, authorization) in channels {
                    allowed.push((channel, authorization.await));
                }
                refused_everywhere(&allowed)?;
                let bytes = request::read_body(body, self.max).await?;
                (allowed, payload(bytes, self.json, self.event)?)
            }
            Target::Batch(authorize, request) => {
                let bytes = request::read_body(body, self.max).await?;
                let batch: Batch<'_> = serde_json::from_slice(&bytes).map_err(|e| {
                    ErrorCode::BadPayload.error(format!(
                        "a batch is {{\"channels\":[..],\"data\":..,\"event\":..}}: {e}"
                    ))
                })?;
                let names = broadcast_channels(batch.channels)?;
                let mut allowed = Vec::with_capacity(names.len());
                for channel in names {
                    let authorized = authorize.authorize(&request, &channel).await;
                    allowed.push((channel, authorized));
                }
                refused_everywhere(&allowed)?;
                let data = bytes.slice_ref(batch.data.get().as_bytes());
                if data.len() > self.payload_max {
                    return Err(request::body_too_large(self.payload_max));
                }
                let event = batch.event.or(self.event);
                (allowed, payload(data, true, event)?)
            }
        };
        // Each channel its own offset, or its own error.
        let mut results = Vec::with_capacity(channels.len());
        let mut stored = false;
        let mut unavailable = None;
        for (channel, authorized) in channels {
            let published = match authorized {
                Ok(()) => {
                    publish(
                        hub,
                        &channel,
                        payload.clone(),
                        self.idempotency_key.as_ref(),
                    )
                    .await
                }
                Err(error) => Err(error),
            };
            results.push(match published {
                Ok(cursor) => {
                    stored = true;
                    serde_json::json!({ "channel": channel.as_str(), "cursor": cursor })
                }
                Err(error) => {
                    if error.status() == StatusCode::SERVICE_UNAVAILABLE {
                        unavailable.get_or_insert_with(|| error.clone());
                    }
                    serde_json::json!({
                    "channel": channel.as_str(),
                    "status": error.status().as_u16(),
                    "error": error.code(),
                    "message": error.message(),
                    })
                }
            });
        }
        // Stored nowhere, for the server's own failure: a 503 the publisher
        // retries (with its Idempotency-Key), not a 200 it would not.
        if let (false, Some(error)) = (stored, unavailable) {
            return Err(error);
        }
        Ok(json_response(
            StatusCode::OK,
            serde_json::json!({ "channels": results }).to_string(),
        ))
    }
}

/// The body as a payload: JSON as the content type says, else text.
fn payload(bytes: Bytes, json: bool, event: Option<String>) -> Result<Payload, ProtocolError> {
    let payload = if json {
        Payload::json_bytes(bytes).map_err(|e| {
            ErrorCode::BadPayload.error(format!("body is not valid JSON (RFC 8259): {e}"))
        })?
    } else {
        Payload::text_bytes(bytes)
            .map_err(|e| ErrorCode::BadPayload.error(format!("a text body must be UTF-8: {e}")))?
    };
    Ok(match event {
        Some(event) => payload.event(event),
        None => payload,
    })
}

/// Publishes to one channel; the hub's refusals as the error table says.
async fn publish(
    hub: &Hub,
    channel: &ChannelName,
    payload: Payload,
    idempotency_key: Option<&IdempotencyKey>,
) -> Result<comet_core::Cursor, ProtocolError> {
    let published = match idempotency_key {
        Some(key) => hub.publish_idempotent(channel.as_str(), payload, key).await,
        None => hub.publish(channel.as_str(), payload).await,
    };
    published.map_err(|e| match e {
        PublishError::PayloadTooLarge { max, .. } => request::body_too_large(max),
        e @ PublishError::ChannelLimit { .. } => ErrorCode::ChannelLimit.error(e.to_string()),
        PublishError::InvalidEvent(reason) => ErrorCode::BadEvent.error(reason),
        PublishError::InvalidChannel(e) => ErrorCode::BadChannel.error(e.to_string()),
        // The engine's failure (or one the table does not know yet): the
        // server's, and worth a retry.
        e => ProtocolError::unavailable(
            format!("could not publish: {e}"),
            UNAVAILABLE_RETRY_AFTER_SECS,
        ),
    })
}

/// A broadcast every channel of which was refused is refused as a whole
/// (a publisher without credentials gets its 401, not a list of them).
fn refused_everywhere(
    channels: &[(ChannelName, Result<(), ProtocolError>)],
) -> Result<(), ProtocolError> {
    match channels.iter().find(|(_, allowed)| allowed.is_ok()) {
        Some(_) => Ok(()),
        None => Err(channels
            .first()
            .and_then(|(_, refused)| refused.clone().err())
            .unwrap_or_else(|| ErrorCode::NoChannels.error("no channels"))),
    }
}

/// A JSON answer with `status`, never cached.
fn json_response(status: StatusCode, body: impl Into<Bytes>) -> Response<CometBody> {
    let mut response = Response::new(CometBody::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The methods a publish route takes.
const METHODS: &[Method] = &[Method::GET, Method::POST, Method::DELETE];
const ALLOW: &str = "GET, POST, DELETE";

/// Gives `control` to every node: 204 once it is on its way.
async fn give(hub: &Hub, control: Control) -> Result<Response<CometBody>, ProtocolError> {
    let given = match control {
        Control::Clear { channel } => hub.close_and_clear(channel.as_str()).await,
        Control::Close { channel } => hub.close(channel.as_str()).await,
        Control::Disconnect { user } => hub.disconnect(&user).await,
        Control::Unsubscribe { user, channel } => hub.unsubscribe(&user, channel.as_str()).await,
        Control::Subscribe { user, channel } => hub.subscribe_user(&user, channel.as_str()).await,
        _ => {
            return Err(ProtocolError::bad_request(
                "an order this server does not know",
            ))
        }
    };
    given.map_err(|e| match e {
        ControlError::InvalidChannel(e) => ErrorCode::BadChannel.error(e.to_string()),
        ControlError::InvalidUser(e) => ErrorCode::BadParameter.error(e.to_string()),
        e => ProtocolError::unavailable(
            format!("could not give the order: {e}"),
            UNAVAILABLE_RETRY_AFTER_SECS,
        ),
    })?;
    let mut response = Response::new(CometBody::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

/// The answer to a channel-info request.
async fn channel_info(
    hub: &Hub,
    channel: &ChannelName,
) -> Result<Response<CometBody>, ProtocolError> {
    let info = hub
        .channel_info(channel.as_str())
        .await
        .map_err(|e| match e {
            QueryError::InvalidChannel(e) => ErrorCode::BadChannel.error(e.to_string()),
            e => ProtocolError::unavailable(
                format!("could not read the channel: {e}"),
                UNAVAILABLE_RETRY_AFTER_SECS,
            ),
        })?;
    Ok(json_response(
        StatusCode::OK,
        crate::envelope::channel_info(&info),
    ))
}

/// The channels a publish names: the path after `mount`, else every
/// `channel` parameter; `None` when it names none (a JSON batch names them
/// in its body).
fn targets(mount: &str, request: &Parts) -> Result<Option<Vec<ChannelName>>, ProtocolError> {
    if has_path_channel(mount, request) {
        return channel(mount, request).map(|c| Some(vec![c]));
    }
    let names: Vec<String> = form_urlencoded::parse(request.uri.query().unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "channel")
        .map(|(_, v)| v.into_owned())
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    broadcast_channels(names).map(Some)
}

fn has_path_channel(mount: &str, request: &Parts) -> bool {
    request
        .uri
        .path()
        .strip_prefix(mount.trim_end_matches('/'))
        .is_some_and(|rest| !rest.trim_start_matches('/').is_empty())
}

/// The channels of a broadcast: valid, each once, 1 to MAX_BROADCAST_CHANNELS.
fn broadcast_channels(names: Vec<String>) -> Result<Vec<ChannelName>, ProtocolError> {
    if names.is_empty() {
        return Err(ErrorCode::NoChannels.error("a batch names its channels"));
    }
    if names.len() > MAX_BROADCAST_CHANNELS {
        return Err(ErrorCode::BadParameter.error(format!(
            "at most {MAX_BROADCAST_CHANNELS} channels a publish"
        )));
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(names.len());
    for name in names {
        let channel = ChannelName::new(&name)
            .map_err(|e| ErrorCode::BadChannel.error(format!("{e}: {name:?}")))?;
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    Ok(channels)
}

/// The channel: the path after `mount`, else the `channel` parameter.
fn channel(mount: &str, request: &Parts) -> Result<ChannelName, ProtocolError> {
    let rest = request
        .uri
        .path()
        .strip_prefix(mount.trim_end_matches('/'))
        .map(|rest| rest.trim_start_matches('/'))
        .filter(|rest| !rest.is_empty());
    let name = match rest {
        Some(rest) => percent_encoding::percent_decode_str(rest)
            .decode_utf8()
            .map_err(|_| ErrorCode::BadChannel.error("channel is not UTF-8"))?
            .into_owned(),
        None => {
            let mut channels = form_urlencoded::parse(request.uri.query().unwrap_or("").as_bytes())
                .filter(|(k, _)| k == "channel")
                .map(|(_, v)| v.into_owned());
            match (channels.next(), channels.next()) {
                (Some(channel), None) => channel,
                (None, _) => {
                    return Err(ErrorCode::NoChannels
                        .error("name the channel in the path or with channel="))
                }
                (Some(_), Some(_)) => {
                    return Err(ProtocolError::bad_request(
                        "publish to one channel at a time",
                    ))
                }
            }
        }
    };
    ChannelName::new(&name).map_err(|e| ErrorCode::BadChannel.error(format!("{e}: {name:?}")))
}

impl fmt::Debug for PublishRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishRoute")
            .field("enabled", &self.authorize.is_some())
            .field("cors", &self.cors)
            .finish()
    }
}
