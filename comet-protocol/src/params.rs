//! A subscribe request's parameters, read from the query and headers.

use super::{request::check_query_len, ErrorCode, ProtocolError, Transport};
use crate::{Cursor, Since};
use http::{header, request::Parts, HeaderMap, HeaderName};
use std::time::Duration;

/// The parameters of PROTOCOL.md's "Requests" table, parsed and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeParams {
    /// `channel`, repeated, in order (not yet validated as names: a route's
    /// resolver may rewrite them first).
    pub channels: Vec<String>,
    /// `cursor` or `last_event_id` from the query.
    pub cursor: Option<Cursor>,
    /// `since`.
    pub since: Option<Since>,
    /// `timeout`, in seconds.
    pub timeout: Option<Duration>,
    /// `callback`.
    pub callback: Option<String>,
    /// `transport`, as given.
    pub transport: Option<String>,
    /// `presence=1`: who is on each channel with presence, then joins and leaves.
    pub presence: bool,
}

impl SubscribeParams {
    /// Parses the query string of `parts`.
    pub fn from_query(query: Option<&str>) -> Result<Self, ProtocolError> {
        let query = query.unwrap_or("");
        check_query_len(query)?;
        let mut params = Self::default();
        let mut cursor: Option<(String, String)> = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let once = |slot: &mut Option<String>, value: String| match slot {
                Some(_) => Err(ProtocolError::bad_request(format!(
                    "parameter {key} is given more than once"
                ))),
                None => {
                    *slot = Some(value);
                    Ok(())
                }
            };
            match &*key {
                "channel" => params.channels.push(value.into_owned()),
                "cursor" | "last_event_id" => {
                    if let Some((first, _)) = &cursor {
                        return Err(ProtocolError::bad_request(format!(
                            "cursor given twice (as {first} and {key})"
                        )));
                    }
                    cursor = Some((key.clone().into_owned(), value.into_owned()));
                }
                "since" => {
                    if params.since.is_some() {
                        return Err(ProtocolError::bad_request(
                            "parameter since is given more than once",
                        ));
                    }
                    params.since = Some(parse_since(&value)?);
                }
                "timeout" => {
                    if params.timeout.is_some() {
                        return Err(ProtocolError::bad_request(
                            "parameter timeout is given more than once",
                        ));
                    }
                    params.timeout = Some(parse_timeout(&value)?);
                }
                "presence" => {
                    params.presence = match &*value {
                        "1" => true,
                        "0" => false,
                        _ => {
                            return Err(ProtocolError::bad_request(format!(
                                "presence is 1 or 0, not {value:?}"
                            )))
                        }
                    }
                }
                "callback" => once(&mut params.callback, value.into_owned())?,
                "transport" => once(&mut params.transport, value.into_owned())?,
                // Unknown parameters are the app's business (cache busters, ...).
                _ => {}
            }
        }
        if let Some((_, token)) = cursor {
            params.cursor = Some(Cursor::decode(&token)?);
        }
        Ok(params)
    }

    /// Parses the query, then applies PROTOCOL.md's cursor precedence:
    /// `Last-Event-ID`, then `If-None-Match` (long polls only), then the query.
    pub fn from_request(
        parts: &Parts,
        transport: Option<&Transport>,
    ) -> Result<Self, ProtocolError> {
        Self::from_query(parts.uri.query())?.with_header_cursor(&parts.headers, transport)
    }

    /// Applies the cursor headers to parameters already read from the query
    /// (for callers that needed the query first, to pick the transport).
    pub fn with_header_cursor(
        self,
        headers: &HeaderMap,
        transport: Option<&Transport>,
    ) -> Result<Self, ProtocolError> {
        self.with_header_cursor_for(headers, transport.is_some_and(Transport::is_long_poll))
    }

    /// [`with_header_cursor`](Self::with_header_cursor) for any format: only
    /// long polls read `If-None-Match`.
    pub(crate) fn with_header_cursor_for(
        mut self,
        headers: &HeaderMap,
        long_poll: bool,
    ) -> Result<Self, ProtocolError> {
        if let Some(cursor) = header_cursor(headers, long_poll)? {
            self.cursor = Some(cursor);
        }
        Ok(self)
    }
}

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

fn header_cursor(headers: &HeaderMap, long_poll: bool) -> Result<Option<Cursor>, ProtocolError> {
    let text = |name: &HeaderName| -> Result<Option<&str>, ProtocolError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::trim)
                    .map_err(|_| ErrorCode::BadCursor.error(format!("{name} is not ASCII")))
            })
            .transpose()
    };
    if let Some(id) = text(&LAST_EVENT_ID)?.filter(|s| !s.is_empty()) {
        return Ok(Some(Cursor::decode(id)?));
    }
    if long_poll {
        if let Some(tag) = text(&header::IF_NONE_MATCH)? {
            // The first entity tag, weak or strong, without its quotes; `*` names none.
            let first = tag.split(',').next().unwrap_or("").trim();
            let first = first.strip_prefix("W/").unwrap_or(first);
            let first = first.trim_matches('"');
            if !first.is_empty() && first != "*" {
                return Ok(Some(Cursor::decode(first)?));
            }
        }
    }
    Ok(None)
}

fn parse_since(value: &str) -> Result<Since, ProtocolError> {
    match value {
        "head" => Ok(Since::Head),
        "oldest" => Ok(Since::Oldest),
        n => n.parse::<u64>().map(Since::Last).map_err(|_| {
            ProtocolError::bad_request(format!(
                "since must be head, oldest or a count, not {value:?}"
            ))
        }),
    }
}

fn parse_timeout(value: &str) -> Result<Duration, ProtocolError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
        .ok_or_else(|| {
            ProtocolError::bad_request(format!(
                "timeout must be a number of seconds, not {value:?}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::get(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn reads_the_table() {
        let c = Cursor::default().encode();
        let p = SubscribeParams::from_query(Some(&format!(
            "channel=a&channel=b%2Fc&cursor={c}&since=5&timeout=2.5&callback=cb&transport=poll&x=1"
        )))
        .unwrap();
        assert_eq!(p.channels, ["a", "b/c"]);
        assert_eq!(p.cursor, Some(Cursor::default()));
        assert_eq!(p.since, Some(Since::Last(5)));
        assert_eq!(p.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(p.callback.as_deref(), Some("cb"));
        assert_eq!(p.transport.as_deref(), Some("poll"));
        assert_eq!(
            SubscribeParams::from_query(None).unwrap(),
            SubscribeParams::default()
        );
    }

    #[test]
    fn bad_parameters_are_400s_with_reasons() {
        for (query, code) in [
            ("since=yesterday", "bad_parameter"),
            ("timeout=-1", "bad_parameter"),
            ("timeout=NaN", "bad_parameter"),
            ("cursor=!!", "bad_cursor"),
            ("cursor=AQ&last_event_id=AQ", "bad_parameter"),
            ("callback=a&callback=b", "bad_parameter"),
        ] {
            let err = SubscribeParams::from_query(Some(query)).unwrap_err();
            assert_eq!((err.status().as_u16(), err.code()), (400, code), "{query}");
        }
        let long = "x".repeat(crate::MAX_QUERY_LEN + 1);
        assert_eq!(
            SubscribeParams::from_query(Some(&long))
                .unwrap_err()
                .status(),
            414
        );
    }

    #[tokio::test]
    async fn cursor_precedence() {
        let a = crate::Hub::new().current_cursor(["a"]).await.unwrap();
        let b = crate::Hub::new().current_cursor(["b"]).await.unwrap();
        let c = crate::Hub::new().current_cursor(["c"]).await.unwrap();
        let uri = format!("/?cursor={c}");
        let etag = format!("\"{b}\"");
        let all = parts(
            &uri,
            &[("last-event-id", &a.encode()), ("if-none-match", &etag)],
        );
        let cursor = |p: &Parts, t: Transport| {
            SubscribeParams::from_request(p, Some(&t))
                .unwrap()
                .cursor
                .unwrap()
        };
        assert_eq!(cursor(&all, Transport::long_poll()), a);
        let no_id = parts(&uri, &[("if-none-match", &format!("W/{etag}, \"x\""))]);
        assert_eq!(cursor(&no_id, Transport::long_poll()), b);
        assert_eq!(
            cursor(&no_id, Transport::sse()),
            c,
            "If-None-Match is for long polls"
        );
        let star = parts(&uri, &[("if-none-match", "*")]);
        assert_eq!(cursor(&star, Transport::long_poll()), c);
        let bad = parts("/", &[("last-event-id", "garbage!")]);
        assert_eq!(
            SubscribeParams::from_request(&bad, None)
                .unwrap_err()
                .code(),
            "bad_cursor"
        );
    }
}
