//! HTTP/1.1 heads: a request's, parsed by `httparse` into `http` types that
//! point into the bytes read (no copy of a header value), and a response's,
//! written with the framing this server chose (RFC 9112).

use bytes::{Bytes, BytesMut};
use comet_protocol::{ErrorCode, ProtocolError};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use std::{cell::RefCell, time::SystemTime};

/// The most header fields a request may carry.
pub(crate) const MAX_HEADERS: usize = 100;

/// A request's head, and how its body and the connection go on.
pub(crate) struct Head {
    pub(crate) request: Request<()>,
    pub(crate) body: BodyLength,
    /// The client takes the connection on after this exchange.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before its body.
    pub(crate) expects_continue: bool,
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLength {
    Empty,
    Length(u64),
    Chunked,
}

/// Parses a head from the start of `buf`: `Ok(None)` while it is incomplete
/// (and within `max_head` bytes), else the head, taken off `buf`.
pub(crate) fn parse(buf: &mut BytesMut, max_head: usize) -> Result<Option<Head>, ProtocolError> {
    let len = {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > max_head => {
                return Err(too_large(max_head))
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(malformed(error)),
        }
    };
    if len > max_head {
        return Err(too_large(max_head));
    }
    // Parsed again from the frozen bytes, so that the URI and every header
    // value can share them (a few hundred nanoseconds, against a copy of
    // each value).
    let bytes = buf.split_to(len).freeze();
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(&bytes).map_err(malformed)?;
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| ErrorCode::BadParameter.error("malformed request: bad method"))?;
    let path = parsed.path.unwrap_or_default();
    let uri = Uri::from_maybe_shared(bytes.slice_ref(path.as_bytes())).map_err(|error| {
        ErrorCode::BadParameter.error(format!("malformed request target: {error}"))
    })?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| {
            ErrorCode::BadParameter.error(format!("malformed header name {:?}", field.name))
        })?;
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(field.value))
            .map_err(|_| ErrorCode::BadParameter.error(format!("malformed value of {name}")))?;
        map.append(name, value);
    }
    let hosts = map.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        // RFC 9112 section 3.2: a front proxy and this server must not
        // disagree on which host a request is for.
        return Err(
            ErrorCode::BadParameter.error("an HTTP/1.1 request carries exactly one Host field")
        );
    }
    let body = body_length(&map, version)?;
    let keep_alive = keeps_alive(&map, version);
    let expects_continue = version == Version::HTTP_11
        && map
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Ok(Some(Head {
        request,
        body,
        keep_alive,
        expects_continue,
    }))
}

fn too_large(max_head: usize) -> ProtocolError {
    ErrorCode::HeadersTooLarge.error(format!(
        "the request's head is larger than {} KiB, or has more than {MAX_HEADERS} fields",
        max_head / 1024
    ))
}

fn malformed(error: httparse::Error) -> ProtocolError {
    if error == httparse::Error::TooManyHeaders {
        return ErrorCode::HeadersTooLarge.error(format!(
            "the request has more than {MAX_HEADERS} header fields"
        ));
    }
    ErrorCode::BadParameter.error(format!("malformed HTTP/1.1 request: {error}"))
}

/// The body's framing (RFC 9112 section 6.3): a request with both
/// `Transfer-Encoding` and `Content-Length`, or lengths that disagree, is
/// refused, as are transfer codings other than `chunked`, so that no proxy
/// in front can read the body's end elsewhere than this server does.
fn body_length(headers: &HeaderMap, version: Version) -> Result<BodyLength, ProtocolError> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_some() {
        let chunked = version == Version::HTTP_11
            && codings.count() == 1
            && headers[header::TRANSFER_ENCODING]
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
        if !chunked {
            return Err(ErrorCode::BadParameter
                .error("the only transfer coding taken is `chunked`, alone, over HTTP/1.1"));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(ErrorCode::BadParameter
                .error("a request has Transfer-Encoding or Content-Length, not both"));
        }
        return Ok(BodyLength::Chunked);
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let parsed =
                (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                    .then(|| part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
                    .ok_or_else(|| ErrorCode::BadParameter.error("malformed Content-Length"))?;
            if length.is_some_and(|known| known != parsed) {
                return Err(ErrorCode::BadParameter.error("Content-Length values disagree"));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        None | Some(0) => BodyLength::Empty,
        Some(n) => BodyLength::Length(n),
    })
}

/// Whether the connection stays open after this exchange: HTTP/1.1 unless
/// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
fn keeps_alive(headers: &HeaderMap, version: Version) -> bool {
    if version == Version::HTTP_10 {
        connection_has(headers, b"keep-alive")
    } else {
        !connection_has(headers, b"close")
    }
}

/// Whether the `Connection` fields of a request or a response name `token`.
pub(crate) fn connection_has(headers: &HeaderMap, token: &[u8]) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// How a response's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body is written: `HEAD`, 1xx, 204, 304. The app's own
    /// `Content-Length` (a `HEAD`'s) goes out as it is.
    None,
    /// `Content-Length`, known before the first byte.
    Length(u64),
    /// `Transfer-Encoding: chunked`: a stream, to an HTTP/1.1 client.
    Chunked,
    /// Until the connection closes: a stream, to an HTTP/1.0 client.
    Close,
}

/// Writes a response's head: the status line, the app's fields (less those
/// that frame the body or the connection, which this server sets), then
/// `Date`, the framing and `Connection` as chosen.
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    framing: Framing,
    keep_alive: bool,
    http10: bool,
) {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in &parts.headers {
        // A `HEAD`'s or a 304's `Content-Length` tells of the body not sent;
        // a 1xx or a 204 has none to tell of (RFC 9110 section 8.6).
        let no_length = status.is_informational() || status == http::StatusCode::NO_CONTENT;
        let framing_field = name == header::TRANSFER_ENCODING
            || (name == header::CONTENT_LENGTH && (framing != Framing::None || no_length));
        if framing_field || name == header::CONNECTION {
            continue;
        }
        has_date |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        DATE.with(|date| out.extend_from_slice(date.borrow_mut().now()));
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(length, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, written at the end of `buf`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Reads a chunk's size line at the start of `buf`: `Ok(None)` while it is
/// incomplete, else its length and the chunk's size. Strict, where
/// `httparse::parse_chunk_size` is lenient (it takes a line without digits
/// as size 0, and a bare LF inside an extension): 1 to 16 hex digits, then
/// extensions (`;` after optional spaces, visible ASCII, spaces and tabs)
/// if any, then CRLF. A proxy in front that reads the body's end elsewhere
/// could smuggle a request past it.
pub(crate) fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, ProtocolError> {
    let malformed = || ErrorCode::BadParameter.error("malformed chunk size line");
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > 16 || (digits == 0 && !buf.is_empty()) {
        return Err(malformed());
    }
    let Some(cr) = buf[digits..].iter().position(|&b| b == b'\r') else {
        if buf[digits..]
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Ok(None);
        }
        return Err(malformed());
    };
    let extensions = &buf[digits..digits + cr];
    let visible = extensions
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
    let starts_right = extensions.is_empty() || extensions.trim_ascii_start().starts_with(b";");
    if digits == 0 || !visible || !starts_right {
        return Err(malformed());
    }
    match buf.get(digits + cr + 1) {
        None => Ok(None),
        Some(b'\n') => {
            let size = buf[..digits].iter().fold(0u64, |size, &digit| {
                size << 4 | u64::from((digit as char).to_digit(16).unwrap_or(0))
            });
            Ok(Some((digits + cr + 2, size)))
        }
        Some(_) => Err(malformed()),
    }
}

/// A chunk's size line (`1a2b\r\n`), written at the start of `buf`.
pub(crate) fn chunk_size_line(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.max(1).leading_zeros()).div_ceil(4) as usize;
    for i in 0..digits {
        buf[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

thread_local! {
    /// `Date` is formatted once a second per worker thread, not per response.
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { second: 0, text: Bytes::new() }) };
}

struct CachedDate {
    second: u64,
    text: Bytes,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = Bytes::from(httpdate::fmt_http_date(now));
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text`, with a `Host` field added after its request line if
    /// it has none (most tests are about something else).
    fn head(text: &str) -> Result<Option<Head>, ProtocolError> {
        let text = match text.split_once("\r\n") {
            Some((line, rest)) if !text.to_ascii_lowercase().contains("\r\nhost:") => {
                format!("{line}\r\nHost: t\r\n{rest}")
            }
            _ => text.to_owned(),
        };
        raw(&text)
    }

    fn raw(text: &str) -> Result<Option<Head>, ProtocolError> {
        parse(&mut BytesMut::from(text), 8 * 1024)
    }

    #[test]
    fn a_request_head_shares_its_bytes_and_says_how_its_body_goes() {
        let mut buf = BytesMut::from(
            "POST /say?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Custom: v\r\n\r\nhello",
        );
        let head = parse(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri().path(), "/say");
        assert_eq!(head.request.uri().query(), Some("x=1"));
        assert_eq!(head.request.headers()["x-custom"], "v");
        assert_eq!(head.body, BodyLength::Length(5));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn an_incomplete_head_waits_and_an_oversized_one_is_refused() {
        assert!(head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(
            head(&long).err().unwrap().error_code(),
            Some(ErrorCode::HeadersTooLarge)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(
            head(&many).err().unwrap().error_code(),
            Some(ErrorCode::HeadersTooLarge)
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1a\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
        ] {
            let error = head(text).err().unwrap_or_else(|| panic!("took {text:?}"));
            assert_eq!(
                error.error_code(),
                Some(ErrorCode::BadParameter),
                "{text:?}"
            );
        }
        let same = head("POST / HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(same.body, BodyLength::Length(2));
        let chunked = head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(chunked.body, BodyLength::Chunked);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let alive = |text: &str| head(text).unwrap().unwrap().keep_alive;
        assert!(alive("GET / HTTP/1.1\r\n\r\n"));
        assert!(!alive(
            "GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(!alive("GET / HTTP/1.0\r\n\r\n"));
        assert!(alive("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn a_response_head_replaces_the_apps_framing_fields() {
        let (mut parts, ()) = http::Response::builder()
            .status(201)
            .header("content-length", "99")
            .header("transfer-encoding", "gzip")
            .header("connection", "upgrade")
            .header("x-a", "b")
            .body(())
            .unwrap()
            .into_parts();
        let mut out = Vec::new();
        write_response(&mut out, &parts, Framing::Length(12), true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 201 Created\r\nx-a: b\r\ndate: "),
            "{text}"
        );
        assert!(
            text.ends_with("GMT\r\ncontent-length: 12\r\n\r\n"),
            "{text}"
        );
        parts.headers.remove("transfer-encoding");
        let mut out = Vec::new();
        write_response(&mut out, &parts, Framing::None, false, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("content-length: 99\r\n"), "{text}");
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
    }

    #[test]
    fn chunk_size_lines_are_read_strictly() {
        assert_eq!(chunk_size(b"1a\r\nxx").unwrap(), Some((4, 26)));
        assert_eq!(chunk_size(b"5;name=v; x=\"y\"\r\n").unwrap(), Some((17, 5)));
        assert_eq!(chunk_size(b"5 ;ext\r\n").unwrap(), Some((8, 5)));
        assert_eq!(chunk_size(b"0\r\n").unwrap(), Some((3, 0)));
        for partial in [&b""[..], b"1", b"1a", b"1a\r", b"5;ext"] {
            assert_eq!(chunk_size(partial).unwrap(), None, "{partial:?}");
        }
        for bad in [
            &b"\r\n"[..],
            b" \r\n",
            b";x\r\n",
            b"2;\nxx\r\n",
            b"2\n",
            b"2\rx",
            b"2 \r\n",
            b"2x\r\n",
            b"2;\x01\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"G",
        ] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_http11_request_has_exactly_one_host() {
        for text in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            let error = raw(text).err().unwrap_or_else(|| panic!("took {text:?}"));
            assert_eq!(
                error.error_code(),
                Some(ErrorCode::BadParameter),
                "{text:?}"
            );
        }
        assert!(raw("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
        assert!(raw("GET / HTTP/1.1\r\nhost: a\r\n\r\n").unwrap().is_some());
    }

    proptest::proptest! {
        /// Hostile bytes are refused or taken, never a panic; a head taken
        /// is taken off the buffer.
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(_)) = parse(&mut buf, 256) {
                proptest::prop_assert!(buf.len() < bytes.len());
            }
            let _ = chunk_size(&bytes);
        }

        /// What this server writes as a size line, it reads back.
        #[test]
        fn size_lines_round_trip(len in 0usize..(1 << 40), extension in "(;[a-z]{1,5}(=[a-z0-9]{1,5})?){0,3}") {
            let mut line = [0; 18];
            let mut written = chunk_size_line(len, &mut line).to_vec();
            written.truncate(written.len() - 2);
            written.extend_from_slice(extension.as_bytes());
            written.extend_from_slice(b"\r\n");
            proptest::prop_assert_eq!(chunk_size(&written).unwrap(), Some((written.len(), len as u64)));
        }
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        let mut buf = [0; 18];
        assert_eq!(chunk_size_line(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_size_line(255, &mut buf), b"ff\r\n");
        assert_eq!(chunk_size_line(4096, &mut buf), b"1000\r\n");
        assert_eq!(
            chunk_size_line(usize::MAX, &mut buf).len(),
            2 * std::mem::size_of::<usize>() + 2
        );
    }
}
