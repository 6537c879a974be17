//! What every comet route checks of a request before anything else (its
//! method, the size of its head, and, for publishing, of its body), written
//! once for the subscribe, publish and client routes.

use super::{ErrorCode, ProtocolError};
use bytes::Bytes;
use http::{header, request::Parts, Method};
use http_body_util::{BodyExt, LengthLimitError, Limited};

/// The longest query string read (longer is a 414).
pub const MAX_QUERY_LEN: usize = 8 * 1024;

/// The most header bytes a request to any comet route may carry (more is a 431).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses a method other than `allowed` (405 with `Allow`), then a head
/// over the size limits: headers (431), then the query (414).
pub(crate) fn check(
    request: &Parts,
    allowed: &[Method],
    allow: &'static str,
) -> Result<(), ProtocolError> {
    if !allowed.contains(&request.method) {
        return Err(ProtocolError::method_not_allowed(&request.method, allow));
    }
    let header_bytes: usize = request
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(ErrorCode::HeadersTooLarge.error(format!(
            "request headers are {header_bytes} bytes, the limit is {MAX_HEADER_BYTES}"
        )));
    }
    check_query_len(request.uri.query().unwrap_or(""))
}

/// Refuses a query over [`MAX_QUERY_LEN`] (414).
pub(crate) fn check_query_len(query: &str) -> Result<(), ProtocolError> {
    if query.len() > MAX_QUERY_LEN {
        return Err(ErrorCode::UriTooLong.error(format!(
            "query is {} bytes long, the limit is {MAX_QUERY_LEN}",
            query.len()
        )));
    }
    Ok(())
}

/// Refuses a body that declares more than `max` bytes, before reading it.
pub(crate) fn check_declared_length(request: &Parts, max: usize) -> Result<(), ProtocolError> {
    let declared = request
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(len) if len > max as u64 => Err(body_too_large(max)),
        _ => Ok(()),
    }
}

/// Reads a body of at most `max` bytes; stops reading at the limit, so a
/// body that lies about its length (or has none) costs no more than `max`.
pub(crate) async fn read_body<B>(body: B, max: usize) -> Result<Bytes, ProtocolError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(body_too_large(max)),
        Err(error) => Err(ProtocolError::bad_request(format!(
            "could not read the body: {error}"
        ))),
    }
}

/// 413 `payload_too_large`.
pub(crate) fn body_too_large(max: usize) -> ProtocolError {
    ErrorCode::PayloadTooLarge.error(format!("the body is larger than {max} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, String)]) -> Parts {
        let mut builder = http::Request::get(uri);
        for (k, v) in headers {
            builder = builder.header(*k, v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn method_then_headers_then_query() {
        let get = [Method::GET];
        let code = |request: &Parts| check(request, &get, "GET").map_err(|e| e.status().as_u16());
        assert_eq!(code(&parts("/?a=1", &[])), Ok(()));
        let post = http::Request::post("/").body(()).unwrap().into_parts().0;
        assert_eq!(code(&post), Err(405));
        let big = "x".repeat(MAX_HEADER_BYTES);
        let long = format!("/?{}", "q".repeat(MAX_QUERY_LEN + 1));
        assert_eq!(code(&parts(&long, &[("x-big", big)])), Err(431));
        assert_eq!(code(&parts(&long, &[])), Err(414));
    }

    #[tokio::test]
    async fn bodies_are_bounded_whatever_they_declare() {
        let declared = parts("/", &[("content-length", "11".into())]);
        assert_eq!(
            check_declared_length(&declared, 10).unwrap_err().status(),
            413
        );
        assert!(check_declared_length(&declared, 11).is_ok());
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789A"));
        assert_eq!(read_body(body, 10).await.unwrap_err().status(), 413);
        let body = http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(read_body(body, 10).await.unwrap(), "0123456789");
    }
}
