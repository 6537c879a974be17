//! What the chat demos share, whatever their web framework: the page, the
//! chat's message rules, who a subscriber is (presence), the listen address
//! and the shutdown signal.

use comet_push::{
    protocol::{
        token::{Claims, TokenSigner, Tokens, VerifyingKey},
        Cors, Mount, ProtocolError, SubscribeRoute,
    },
    Hub, Identity, Payload, PublishError, PublishRoute,
};
use std::{
    net::SocketAddr,
    time::{Duration, SystemTime},
};

/// The chat page (no build step); it speaks to any of the demos.
pub const PAGE: &str = include_str!("../assets/chat.html");

/// The page, telling it whether the server takes tokens (`--jwt-secret`):
/// then it gets them from `/token`, else it names itself with `user=`.
pub fn page(tokens: bool) -> String {
    let flag = if tokens { "on" } else { "off" };
    PAGE.replace(
        r#"<meta name="comet-tokens" content="off">"#,
        &format!(r#"<meta name="comet-tokens" content="{flag}">"#),
    )
}

/// `--jwt-secret SECRET` (or `COMET_JWT_SECRET`): the subscribe routes take
/// HS256 tokens alone, the identity from their `sub`; `/token` mints one.
#[derive(Clone)]
// Minted by the axum demo; the warp one refuses tokens.
#[allow(dead_code)]
pub struct DemoTokens {
    verify: Tokens,
    signer: std::sync::Arc<TokenSigner>,
    /// How long a minted token lasts (`COMET_TOKEN_TTL_SECS`, default 60).
    lifetime: Duration,
}

/// The key id the demo signs and verifies with.
const DEMO_KID: &str = "demo";

impl DemoTokens {
    fn new(secret: &str) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err("--jwt-secret needs 32 bytes or more".into());
        }
        let verifying = VerifyingKey::hs256(secret.as_bytes()).map_err(|e| e.to_string())?;
        let signer = TokenSigner::hs256(secret.as_bytes())
            .map_err(|e| e.to_string())?
            .kid(DEMO_KID);
        let lifetime = std::env::var("COMET_TOKEN_TTL_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&s| s > 0)
            .map_or(Duration::from_secs(60), Duration::from_secs);
        Ok(Self {
            verify: Tokens::new().key(DEMO_KID, verifying),
            signer: std::sync::Arc::new(signer),
            lifetime,
        })
    }

    /// A token for `user` (with `{"name": user}` as info) to read the chat
    /// rooms among `channels`; `None` for a name the chat would refuse or a
    /// channel that is no room. For the demo alone, as `user=` is: a real
    /// app mints for the user its session names, never for whoever asks.
    #[allow(dead_code)]
    pub fn mint(&self, user: &str, channels: &[String]) -> Option<String> {
        check("user", user, MAX_NAME).ok()?;
        if channels.is_empty() || channels.iter().any(|c| !c.starts_with("room/")) {
            return None;
        }
        let claims = Claims::new(channels.iter().cloned(), self.lifetime)
            .subject(user)
            .info(serde_json::json!({ "name": user }));
        self.signer.sign(&claims).ok()
    }
}

const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 2000;

/// Why a chat request was refused: a status code and a reason.
pub type Refusal = (u16, String);

/// Publishes "`name` said `text`" to the room; the answer is the cursor's JSON.
pub async fn say(hub: &Hub, room: &str, name: &str, text: &str) -> Result<String, Refusal> {
    let name = check("name", name, MAX_NAME)?;
    let text = check("text", text, MAX_TEXT)?;
    let payload = serde_json::json!({ "name": name, "text": text, "at": now_ms() });
    publish(hub, room, Payload::from(payload).event("said")).await
}

/// Publishes "`name` joined" to the room.
pub async fn join(hub: &Hub, room: &str, name: &str) -> Result<String, Refusal> {
    let name = check("name", name, MAX_NAME)?;
    let payload = serde_json::json!({ "name": name, "at": now_ms() });
    publish(hub, room, Payload::from(payload).event("joined")).await
}

async fn publish(hub: &Hub, room: &str, payload: Payload) -> Result<String, Refusal> {
    match hub.publish(&format!("room/{room}"), payload).await {
        Ok(cursor) => Ok(serde_json::json!({ "cursor": cursor }).to_string()),
        Err(PublishError::Engine(error)) => Err((503, error.to_string())),
        Err(error) => Err((400, error.to_string())),
    }
}

fn check<'a>(what: &str, value: &'a str, max: usize) -> Result<&'a str, Refusal> {
    let value = value.trim();
    if value.is_empty() || value.chars().count() > max {
        return Err((400, format!("{what} must be 1 to {max} characters")));
    }
    Ok(value)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Who a subscribe request is, for presence: the user its `user=` query
/// parameter names, with `{"name": user}` as info; anonymous without one
/// (or with a name the chat would refuse).
///
/// UNSAFE outside a demo: anyone can claim any name, and be listed under
/// it in every room. A real app takes the identity from its session (a
/// cookie an earlier middleware checked, in the request's extensions) or a
/// signed token, never from a parameter the client picks.
pub fn identify_from_query(
    request: &http::request::Parts,
) -> Result<Option<Identity>, ProtocolError> {
    let query = request.uri.query().unwrap_or("");
    let Some(user) = form_urlencoded::parse(query.as_bytes())
        .find_map(|(key, value)| (key == "user").then_some(value))
    else {
        return Ok(None);
    };
    let Ok(user) = check("user", &user, MAX_NAME) else {
        return Ok(None);
    };
    let identity = Identity::new(user)
        .and_then(|i| i.with_info(serde_json::json!({ "name": user })))
        .map_err(|e| ProtocolError::bad_request(e.to_string()))?;
    Ok(Some(identity))
}

/// `/comet`: every transport at one path, as the browser client uses it.
/// Pages of the origins in `COMET_CORS_ORIGINS` (comma-separated) may use
/// it too, with credentials; `COMET_HEARTBEAT_SECS` sets how often idle
/// streams carry a heartbeat (15 by default).
pub fn client_route(tokens: Option<&DemoTokens>) -> SubscribeRoute {
    let heartbeat = std::env::var("COMET_HEARTBEAT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(
            comet_push::protocol::DEFAULT_HEARTBEAT,
            std::time::Duration::from_secs,
        );
    let origins: Vec<String> = std::env::var("COMET_CORS_ORIGINS")
        .unwrap_or_default()
        .split(',')
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    let route = who(SubscribeRoute::all().heartbeat(heartbeat), tokens);
    if origins.is_empty() {
        return route;
    }
    route.cors(Cors::allow_origins(origins).allow_credentials(true))
}

/// The demo's comet routes, the same on every adapter: one path per
/// transport under `/comet`, every transport at `/comet` (with the browser
/// client at `/comet/comet.js`), and publishing at `/comet/publish/<channel>`
/// for [`may_publish`] (who may publish may also `GET` a channel's info
/// there: its cursor, subscribers and who is present; the same authorizer
/// decides both). Every subscribe route takes its identity from `user=`
/// ([`identify_from_query`]), or with `tokens` from a token alone. `peer`
/// finds the client's address in a request (each adapter keeps it in an
/// extension of its own).
pub fn mount(
    publish_token: Option<String>,
    tokens: Option<&DemoTokens>,
    peer: fn(&http::request::Parts) -> Option<SocketAddr>,
) -> Mount {
    let identified = [
        ("/comet/sse", SubscribeRoute::sse()),
        ("/comet/poll", SubscribeRoute::long_poll()),
        ("/comet/stream", SubscribeRoute::ndjson()),
        ("/comet/iframe", SubscribeRoute::iframe()),
        ("/comet/jsonp", SubscribeRoute::jsonp()),
    ];
    identified
        .into_iter()
        .fold(Mount::new(), |mount, (path, route)| {
            mount.route(path, who(route, tokens))
        })
        .route("/comet", client_route(tokens))
        .publish(
            "/comet/publish",
            // A publish (POST) and a channel-info request (GET) alike.
            PublishRoute::new().authorize(move |request, _channel| {
                may_publish(peer(request), &request.headers, publish_token.as_deref())
            }),
        )
}

/// Who may subscribe, and who they are: with `tokens`, a valid token for
/// the channels (else 401 or 403), its `sub` the identity; without, anyone,
/// named by `user=`.
fn who(route: SubscribeRoute, tokens: Option<&DemoTokens>) -> SubscribeRoute {
    match tokens {
        Some(tokens) => route.authorizer(tokens.verify.clone()),
        None => route.identify(identify_from_query),
    }
}

/// Publishing over HTTP is allowed from loopback clients, and from anyone
/// presenting `Authorization: Bearer <COMET_PUBLISH_TOKEN>` when it is set.
pub fn may_publish(
    peer: Option<SocketAddr>,
    headers: &http::HeaderMap,
    token: Option<&str>,
) -> bool {
    let loopback = peer.is_some_and(|peer| peer.ip().is_loopback());
    loopback || token.is_some_and(|token| bearer_is(headers, token))
}

/// `COMET_PUBLISH_TOKEN`, if set and not empty.
pub fn publish_token() -> Option<String> {
    std::env::var("COMET_PUBLISH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

/// True when the request carries `Authorization: Bearer <token>`; compared in
/// constant time so the token cannot be guessed byte by byte.
fn bearer_is(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The demos' command line: `[--addr HOST:PORT] [--redis URL]...
/// [--tls-self-signed | --tls-cert FILE --tls-key FILE] [--http2]
/// [--jwt-secret SECRET]`, with `COMET_ADDR`, `COMET_REDIS_URL` and
/// `COMET_JWT_SECRET` as defaults.
pub struct Options {
    /// Where to listen (default 127.0.0.1:3000).
    pub addr: SocketAddr,
    /// The Redis that several nodes share, if any (else the in-memory
    /// engine): `redis://...`, or `redis+sentinel://...` for the primary
    /// that Redis Sentinel names (see `RedisEngine::builder`). Several
    /// (`--redis` again, or spaces between them in `COMET_REDIS_URL`) are
    /// shards, each holding its share of the channels (see
    /// `RedisEngine::sharded`).
    pub redis: Vec<String>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN), and with what.
    pub tls: Option<Tls>,
    /// In the clear, serve HTTP/2 with prior knowledge (h2c) beside
    /// HTTP/1.1 (`--http2`; for load generators: browsers speak HTTP/2 only
    /// over TLS).
    pub h2c: bool,
    /// Subscribing takes tokens signed with this secret (`--jwt-secret`).
    pub tokens: Option<DemoTokens>,
}

/// Where the demo's TLS certificate comes from.
pub enum Tls {
    /// Made at start for `localhost` and 127.0.0.1.
    SelfSigned,
    /// PEM files: the certificate chain and the private key.
    // Read by the axum demo; the warp one refuses TLS.
    #[allow(dead_code)]
    Files { cert: String, key: String },
}

impl Options {
    /// Reads the command line and the environment.
    pub fn from_args() -> Result<Self, String> {
        const USAGE: &str = "usage: [--addr HOST:PORT] \
                             [--redis redis://HOST:PORT | \
                             --redis redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE]... \
                             [--tls-self-signed | --tls-cert FILE --tls-key FILE] [--http2] \
                             [--jwt-secret SECRET]";
        let mut args = std::env::args().skip(1);
        let mut addr = std::env::var("COMET_ADDR").ok();
        let (mut self_signed, mut cert, mut key, mut h2c) = (false, None, None, false);
        let mut redis: Vec<String> = std::env::var("COMET_REDIS_URL")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let mut from_args = false;
        let mut jwt_secret = std::env::var("COMET_JWT_SECRET")
            .ok()
            .filter(|s| !s.is_empty());
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or(format!("{name} needs a value; {USAGE}"))
            };
            match name.as_str() {
                "--addr" => addr = Some(value()?),
                "--redis" => {
                    // The command line's shards replace the environment's.
                    if !std::mem::replace(&mut from_args, true) {
                        redis.clear();
                    }
                    redis.push(value()?);
                }
                "--tls-self-signed" if inline.is_none() => self_signed = true,
                "--http2" if inline.is_none() => h2c = true,
                "--tls-cert" => cert = Some(value()?),
                "--tls-key" => key = Some(value()?),
                "--jwt-secret" => jwt_secret = Some(value()?),
                other => return Err(format!("unknown argument {other:?}; {USAGE}")),
            }
        }
        let tls = match (self_signed, cert, key) {
            (false, None, None) => None,
            (true, None, None) => Some(Tls::SelfSigned),
            (false, Some(cert), Some(key)) => Some(Tls::Files { cert, key }),
            _ => {
                return Err(format!(
                    "--tls-self-signed, or both --tls-cert and --tls-key; {USAGE}"
                ))
            }
        };
        let addr = addr.unwrap_or_else(|| "127.0.0.1:3000".to_owned());
        let addr = addr
            .parse()
            .map_err(|e| format!("bad address {addr:?}: {e}"))?;
        let tokens = jwt_secret.as_deref().map(DemoTokens::new).transpose()?;
        Ok(Self {
            addr,
            redis,
            tls,
            h2c,
            tokens,
        })
    }

    /// The hub: on the Redis engine with `--redis` (several nodes then share
    /// every room; with several, the rooms are spread over them), else in
    /// memory. Every channel has presence: the page
    /// lists who is in its room.
    ///
    /// Limits for load tests, from the environment: `COMET_MAX_CHANNELS`
    /// (channels held at once; past it a new channel is refused),
    /// `COMET_HISTORY` (messages each channel keeps, default 1,000) and
    /// `COMET_IDLE_TTL_SECS` (how long an unused empty channel is kept,
    /// default 60). On Redis, `COMET_PRESENCE_TTL_MS`: how long a node's
    /// share of presence lives unrefreshed (default 20 s), and so how soon
    /// the users of a node that died leave.
    pub fn hub(&self) -> Result<Hub, Box<dyn std::error::Error>> {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let mut builder = Hub::builder().presence(true);
        if let Some(max) = number("COMET_MAX_CHANNELS") {
            builder = builder.max_channels(max as usize);
        }
        if let Some(secs) = number("COMET_IDLE_TTL_SECS") {
            builder = builder.idle_ttl(std::time::Duration::from_secs(secs));
        }
        if let Some(max_messages) = number("COMET_HISTORY") {
            builder = builder.history(comet_push::HistoryPolicy {
                max_messages: max_messages as usize,
                ..comet_push::HistoryPolicy::default()
            });
        }
        if self.redis.is_empty() {
            return Ok(builder.build());
        }
        let mut engine = comet_redis::RedisEngine::sharded(&self.redis);
        if let Some(ms) = number("COMET_PRESENCE_TTL_MS") {
            engine = engine.presence_ttl(std::time::Duration::from_millis(ms));
        }
        let engine = engine.build()?;
        // The engine's Debug shows the URL without its password.
        tracing::info!(
            ?engine,
            "channels live in Redis, shared with every node on it"
        );
        Ok(builder.engine(std::sync::Arc::new(engine)).build())
    }

    /// Binds the address and says where it listens: stdout gets `chat
    /// listening on http://...` (or https; scripts and tests read it, for
    /// `--addr 127.0.0.1:0`), the log too.
    ///
    /// The listen backlog is [`BACKLOG`] (or `COMET_BACKLOG`), not the 128
    /// of `std`'s and tokio's `bind`: when every client of a restarted
    /// server comes back at once, a short accept queue overflows and the
    /// clients it drops wait out one-second SYN retransmits. Linux caps it
    /// at `net.core.somaxconn` (4,096 by default since 5.4).
    pub async fn listen(&self) -> Result<tokio::net::TcpListener, Box<dyn std::error::Error>> {
        let backlog = std::env::var("COMET_BACKLOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(BACKLOG);
        let socket = match self.addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted server rebinds at once.
        #[cfg(not(windows))]
        socket.set_reuseaddr(true)?;
        socket.bind(self.addr)?;
        let listener = socket.listen(backlog)?;
        let addr = listener.local_addr()?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        println!("chat listening on {scheme}://{addr}");
        tracing::info!(%addr, "chat listening");
        Ok(listener)
    }
}

/// The demos' listen backlog: room for every client of a busy node to
/// reconnect at once (see [`Options::listen`]).
pub const BACKLOG: u32 = 4096;

/// Logs to stderr (`RUST_LOG`, default info): stdout carries only the
/// "listening on" line that scripts and tests read.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// On Ctrl-C or SIGTERM, shuts the hub down and resolves: every stream ends
/// and every held poll is answered with its cursor, so the server stops
/// promptly and clients resume later (elsewhere, or after a restart).
pub async fn shut_down_on_signal(hub: Hub) {
    shutdown_signal().await;
    tracing::info!("shutting down: ending streams and held polls");
    hub.shutdown();
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
