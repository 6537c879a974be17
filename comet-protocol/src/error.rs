//! Error answers: `{"error":"<code>","message":"<what was wrong>"}` with a
//! 4xx/5xx, every one of them listed once, in [`ErrorCode`] (PROTOCOL.md's
//! error table is the same list).

use super::CometBody;
use http::{header, HeaderValue, Response, StatusCode};
use std::fmt;

/// Declares [`ErrorCode`] from one table: variant, status, code, meaning.
macro_rules! error_codes {
    ($($variant:ident = ($status:ident, $code:literal, $meaning:literal),)*) => {
        /// Every error the protocol answers with: its HTTP status, its stable
        /// code (the `error` member of the JSON body) and what it means. This
        /// is PROTOCOL.md's error table; a test holds the two to the same list.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(
                #[doc = $meaning]
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code, in the order of the spec's table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The HTTP status it is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            /// The stable machine-readable code (`bad_cursor`, ...).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// What it means, as the spec's table says it.
            pub fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    BadParameter = (BAD_REQUEST, "bad_parameter", "A query parameter or header is malformed, or given more than once."),
    BadCursor = (BAD_REQUEST, "bad_cursor", "The cursor is not one this server wrote, or its nodes' shared key changed since; start again without one (a gap of unknown size)."),
    BadChannel = (BAD_REQUEST, "bad_channel", "A channel name breaks the naming rules (characters, length, the reserved `comet-` prefix, or `error` and `open`)."),
    NoChannels = (BAD_REQUEST, "no_channels", "The request names no channel."),
    BadTransport = (BAD_REQUEST, "bad_transport", "The transport is unknown, or not offered by this route."),
    BadCallback = (BAD_REQUEST, "bad_callback", "The callback names no function registered for comet (one identifier, or one inside the route's registry object)."),
    BadEvent = (BAD_REQUEST, "bad_event", "An event name (`Comet-Event`) is empty, too long, holds a control character, or is reserved (`comet-*`, `error`, `open`)."),
    BadPayload = (BAD_REQUEST, "bad_payload", "A published body is not UTF-8 text, or is marked JSON and is not valid JSON (RFC 8259)."),
    Unauthorized = (UNAUTHORIZED, "unauthorized", "The request carries no valid credentials: a token is missing, malformed, signed with an unknown key, or expired; get a new one."),
    Forbidden = (FORBIDDEN, "forbidden", "The application does not authorize this request."),
    CorsDenied = (FORBIDDEN, "cors_denied", "A CORS preflight from an origin or for a method the route does not allow."),
    CrossSite = (FORBIDDEN, "cross_site", "A JSONP request from another site (`Sec-Fetch-Site: cross-site`, or an `Origin` or `Referer` outside the route's CORS list) on a route that does not allow it."),
    NotFound = (NOT_FOUND, "not_found", "No comet route at this path under a comet mount."),
    MethodNotAllowed = (METHOD_NOT_ALLOWED, "method_not_allowed", "The route does not take this method; `Allow` lists those it takes."),
    PayloadTooLarge = (PAYLOAD_TOO_LARGE, "payload_too_large", "A published body is larger than the hub's payload limit."),
    UriTooLong = (URI_TOO_LONG, "uri_too_long", "The query string is longer than 8 KiB."),
    TooManyChannels = (TOO_MANY_REQUESTS, "too_many_channels", "The request names more channels than one subscription may hold."),
    TooManySubscribers = (TOO_MANY_REQUESTS, "too_many_subscribers", "The server or the channel has as many subscribers as it allows."),
    ChannelLimit = (TOO_MANY_REQUESTS, "channel_limit", "The server holds as many channels as it allows; a request that would make another is refused until idle ones expire."),
    HeadersTooLarge = (REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", "The request's headers are larger than 16 KiB."),
    ShuttingDown = (SERVICE_UNAVAILABLE, "shutting_down", "The server is shutting down; resume from the last cursor on another or a restarted server."),
    Unavailable = (SERVICE_UNAVAILABLE, "unavailable", "A backplane the server needs, such as Redis, is unreachable; retry after `Retry-After`."),
}

impl ErrorCode {
    /// An error with this code and a reason for people.
    pub fn error(self, message: impl Into<String>) -> ProtocolError {
        ProtocolError::new(self.status(), self.as_str(), message)
    }
}

/// The answer to a request for a path under a comet mount that no comet
/// route serves: 404 `not_found`, JSON like every other error.
pub fn not_found(request: &http::request::Parts) -> Response<CometBody> {
    ErrorCode::NotFound
        .error(format!("no comet route at {}", request.uri.path()))
        .into_response()
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request the protocol refuses, with its status, a stable code and a
/// human-readable reason.
///
/// Policies (channel resolvers, authorizers) return these too, so an app's
/// refusals look like the protocol's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The `Allow` header of a 405.
    allow: Option<&'static str>,
    /// The `Retry-After` header (seconds) of a 503 `unavailable`.
    retry_after: Option<u32>,
}

impl ProtocolError {
    /// An error with any status and code: for an application's own
    /// refusals (a 401 with its reason, say). The protocol's own errors are
    /// [`ErrorCode`]s ([`ErrorCode::error`]).
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            allow: None,
            retry_after: None,
        }
    }

    /// 503 `unavailable`: something the server needs (the engine's backplane,
    /// such as Redis) cannot be reached; the client should retry after
    /// `retry_after_secs` (sent as `Retry-After`).
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u32) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..ErrorCode::Unavailable.error(message)
        }
    }

    /// 400 `bad_parameter`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ErrorCode::BadParameter.error(message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ErrorCode::Forbidden.error(message)
    }

    /// 401 `unauthorized`, with `WWW-Authenticate: Bearer`: the request's
    /// credentials are missing, invalid or expired.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ErrorCode::Unauthorized.error(message)
    }

    /// 405 `method_not_allowed`, naming the one method the route takes.
    pub(crate) fn method_not_allowed(method: &http::Method, allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..ErrorCode::MethodNotAllowed
                .error(format!("method {method} is not allowed here; use {allow}"))
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable machine-readable code (`bad_cursor`, `forbidden`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The protocol's [`ErrorCode`] of this error, or `None` for an
    /// application's own code.
    pub fn error_code(&self) -> Option<ErrorCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == self.code && c.status() == self.status)
    }

    /// The reason, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON body of this error.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "error": self.code, "message": self.message }).to_string()
    }

    /// The complete HTTP answer.
    pub fn into_response(self) -> Response<CometBody> {
        crate::telemetry::error(self.code);
        let mut response = Response::new(CometBody::full(self.to_json()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ProtocolError {}

/// The `Retry-After` of a 503 `unavailable`: a backplane that went away is
/// usually back (or failed over) within seconds.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 2;

impl From<crate::SubscribeError> for ProtocolError {
    fn from(error: crate::SubscribeError) -> Self {
        use crate::SubscribeError::*;
        let code = match &error {
            InvalidChannel(_) | DuplicateChannel(_) => ErrorCode::BadChannel,
            NoChannels => ErrorCode::NoChannels,
            TooManyChannels { .. } => ErrorCode::TooManyChannels,
            TooManySubscribers { .. } => ErrorCode::TooManySubscribers,
            ChannelLimit { .. } => ErrorCode::ChannelLimit,
            ShuttingDown => ErrorCode::ShuttingDown,
            ForgedCursor => ErrorCode::BadCursor,
            // The backplane's failure (or one the table does not know yet):
            // the server's, and worth a retry.
            _ => return Self::unavailable(error.to_string(), UNAVAILABLE_RETRY_AFTER_SECS),
        };
        code.error(error.to_string())
    }
}

impl From<crate::CursorError> for ProtocolError {
    fn from(error: crate::CursorError) -> Self {
        ErrorCode::BadCursor.error(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_errors_know_theirs() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert!(
                ErrorCode::ALL[..i]
                    .iter()
                    .all(|c| c.as_str() != code.as_str()),
                "{code} twice"
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
            assert!(!code.meaning().is_empty());
            let error = code.error("why");
            assert_eq!(error.error_code(), Some(*code));
            assert_eq!(
                (error.status(), error.code()),
                (code.status(), code.as_str())
            );
        }
        let own = ProtocolError::new(StatusCode::UNAUTHORIZED, "sign_in", "sign in first");
        assert_eq!(own.error_code(), None);
    }
}
