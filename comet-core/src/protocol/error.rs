//! Error answers: `{"error":"<code>","message":"<what was wrong>"}` with a 4xx/5xx.

use super::CometBody;
use http::{header, HeaderValue, Response, StatusCode};
use std::fmt;

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
    /// An error with any status and code.
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
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// 400 `bad_parameter`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_parameter", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 405 `method_not_allowed`, naming the one method the route takes.
    pub(crate) fn method_not_allowed(method: &http::Method, allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("method {method} is not allowed here; use {allow}"),
            )
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
        let (status, code) = match &error {
            InvalidChannel(_) => (StatusCode::BAD_REQUEST, "bad_channel"),
            NoChannels => (StatusCode::BAD_REQUEST, "no_channels"),
            TooManyChannels { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_channels"),
            TooManySubscribers { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_subscribers"),
            ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            Unavailable { .. } => {
                return Self::unavailable(error.to_string(), UNAVAILABLE_RETRY_AFTER_SECS)
            }
        };
        Self::new(status, code, error.to_string())
    }
}

impl From<crate::CursorError> for ProtocolError {
    fn from(error: crate::CursorError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_cursor", error.to_string())
    }
}
