//! Long polling through a `<script>` tag (`application/javascript`): the
//! poll answer, script-safe, as the argument of a registered callback. Any
//! page can include a script with the user's cookies, so JSONP from another
//! site is refused unless the route allows it.

use crate::{
    callback,
    envelope::Json,
    transport::{long_poll, Format, Transport},
    Cors, Cursor, ErrorCode, Item, LongPollFormat, ProtocolError,
};
use bytes::{BufMut, Bytes, BytesMut};
use http::{header, request::Parts, HeaderName, HeaderValue};

/// JSONP: its callback must name a function in the route's registry, and a
/// request from another site is refused unless the route allows it.
pub(crate) fn transport() -> Transport {
    Transport::built_in("jsonp", None, true, |request, params, route| {
        let jsonp = Jsonp::for_request(
            request,
            params.callback.as_deref(),
            &route.callback_registry,
            route.cross_site_jsonp,
            route.cors.as_ref(),
        )?;
        Ok(Format::LongPoll(Box::new(jsonp)))
    })
}

/// `/**/<callback>(<poll answer>);`
pub(crate) struct Jsonp {
    callback: String,
}

/// A script must never be read as anything else.
static SCRIPT_HEADERS: [(HeaderName, HeaderValue); 1] = [(
    header::X_CONTENT_TYPE_OPTIONS,
    HeaderValue::from_static("nosniff"),
)];

impl Jsonp {
    /// Checks the request's callback against `registry`, then, unless
    /// `cross_site` is allowed, that the request comes from the push host's
    /// own site or an origin in `cors`.
    pub(crate) fn for_request(
        request: &Parts,
        callback: Option<&str>,
        registry: &str,
        cross_site: bool,
        cors: Option<&Cors>,
    ) -> Result<Self, ProtocolError> {
        let callback = callback::checked(callback, registry)?;
        if !cross_site {
            check_site(request, cors)?;
        }
        Ok(Self { callback })
    }
}

impl LongPollFormat for Jsonp {
    /// The comment guards against content sniffing of the first bytes.
    fn answer(&self, items: &[Item], cursor: &Cursor) -> Bytes {
        let json = long_poll::batch(items, cursor, Json::ScriptSafe);
        let mut out = BytesMut::with_capacity(json.len() + self.callback.len() + 8);
        out.put_slice(b"/**/");
        out.put_slice(self.callback.as_bytes());
        out.put_u8(b'(');
        out.put_slice(&json);
        out.put_slice(b");");
        out.freeze()
    }

    fn content_type(&self) -> HeaderValue {
        HeaderValue::from_static("application/javascript; charset=utf-8")
    }

    fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &SCRIPT_HEADERS
    }
}

/// PROTOCOL.md, "JSONP": a JSONP answer is a script that any page can
/// include with the user's cookies (cross-site script inclusion), so a
/// request from another site is refused: `Sec-Fetch-Site: cross-site`, or an
/// `Origin` (else `Referer`) that is neither the request's own host nor in
/// `cors`'s list. Requests that carry none of these (not from a browser
/// page) pass.
fn check_site(request: &Parts, cors: Option<&Cors>) -> Result<(), ProtocolError> {
    let headers = &request.headers;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri.authority().map(|a| a.as_str()));
    let from = headers
        .get(header::ORIGIN)
        .map(|o| (o.clone(), "Origin"))
        .or_else(|| {
            let referer = headers.get(header::REFERER)?;
            let origin =
                referer_origin(referer).unwrap_or_else(|| HeaderValue::from_static("null"));
            Some((origin, "Referer"))
        });
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    let listed = |origin: &HeaderValue| cors.is_some_and(|c| c.allows(origin));
    let own = |origin: &HeaderValue| {
        let authority = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, authority)| authority);
        authority.is_some_and(|a| host.is_some_and(|h| a.eq_ignore_ascii_case(h)))
    };
    let refused = match &from {
        Some((origin, _)) if listed(origin) => false,
        Some((origin, _)) => cross_site || !own(origin),
        None => cross_site,
    };
    if !refused {
        return Ok(());
    }
    let whence = match &from {
        Some((origin, name)) => format!("{name} {}", String::from_utf8_lossy(origin.as_bytes())),
        None => "Sec-Fetch-Site: cross-site".to_owned(),
    };
    Err(ErrorCode::CrossSite.error(format!(
        "JSONP from another site ({whence}) is refused on this route; list the page's origin in the route's CORS"
    )))
}

/// `scheme://authority` of a `Referer` URL.
fn referer_origin(referer: &HeaderValue) -> Option<HeaderValue> {
    let uri: http::Uri = referer.to_str().ok()?.parse().ok()?;
    let origin = format!("{}://{}", uri.scheme_str()?, uri.authority()?.as_str());
    HeaderValue::from_str(&origin).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonp_request(headers: &[(&str, &str)]) -> Parts {
        let mut request =
            http::Request::get("/comet?transport=jsonp").header("host", "push.example:80");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn jsonp_from_another_site_is_refused_unless_listed() {
        let cors = Cors::allow_origins(["https://app.example"]);
        let check = |headers: &[(&str, &str)], cors: Option<&Cors>| {
            check_site(&jsonp_request(headers), cors).map_err(|e| e.code())
        };
        for passes in [
            &[][..],
            &[("sec-fetch-site", "same-origin")],
            &[("referer", "http://push.example:80/page?x=1")],
            &[("origin", "http://PUSH.example:80")],
            &[
                ("sec-fetch-site", "cross-site"),
                ("referer", "https://app.example/chat"),
            ],
        ] {
            assert_eq!(check(passes, Some(&cors)), Ok(()), "{passes:?}");
        }
        for refused in [
            &[("sec-fetch-site", "cross-site")][..],
            &[("referer", "https://evil.example/")],
            &[("origin", "null")],
            &[("referer", "not a url")],
            &[
                ("sec-fetch-site", "same-site"),
                ("referer", "https://other.example/"),
            ],
            &[
                ("sec-fetch-site", "cross-site"),
                ("referer", "http://push.example:80/"),
            ],
        ] {
            assert_eq!(
                check(refused, Some(&cors)),
                Err("cross_site"),
                "{refused:?}"
            );
        }
        assert_eq!(
            check(&[("referer", "https://app.example/chat")], None),
            Err("cross_site")
        );
        // A policy that allows any origin lets every site in.
        assert_eq!(
            check(
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://any.example")
                ],
                Some(&Cors::any_origin())
            ),
            Ok(())
        );
    }
}
