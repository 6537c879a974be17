//! Cross-origin access, so a page on `www.example.com` can use a push host on
//! `push.example.com` (the classic way around the browser's per-host
//! connection limit).

use super::{CometBody, ErrorCode, ProtocolError};
use http::{header, request::Parts, HeaderMap, HeaderValue, Method, Response, StatusCode};
use std::{fmt, sync::Arc, time::Duration};

/// Which origins may use a route from a browser, and whether with credentials
/// (cookies, HTTP authentication).
///
/// ```
/// use comet_core::protocol::{Cors, Route};
/// let route = Route::sse().cors(
///     Cors::allow_origins(["https://www.example.com", "https://app.example.com"])
///         .allow_credentials(true),
/// );
/// ```
#[derive(Clone)]
pub struct Cors {
    origins: Origins,
    credentials: bool,
    max_age: Duration,
}

#[derive(Clone)]
enum Origins {
    Any,
    List(Arc<[HeaderValue]>),
}

impl Cors {
    /// Allows exactly these origins (`scheme://host[:port]`, compared without
    /// regard to ASCII case).
    ///
    /// # Panics
    ///
    /// On an origin that cannot be a header value, or on `*` (use
    /// [`Cors::any_origin`]).
    pub fn allow_origins<I>(origins: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let origins = origins
            .into_iter()
            .map(|o| {
                let o = o.as_ref();
                assert!(o != "*", "use Cors::any_origin() to allow every origin");
                HeaderValue::from_str(o).unwrap_or_else(|_| panic!("invalid origin {o:?}"))
            })
            .collect();
        Self {
            origins: Origins::List(origins),
            credentials: false,
            max_age: Duration::from_secs(600),
        }
    }

    /// Allows every origin, without credentials (`Access-Control-Allow-Origin: *`).
    pub fn any_origin() -> Self {
        Self {
            origins: Origins::Any,
            credentials: false,
            max_age: Duration::from_secs(600),
        }
    }

    /// Lets browsers send cookies and HTTP authentication cross-origin.
    ///
    /// # Panics
    ///
    /// With [`Cors::any_origin`]: `*` together with credentials would let any
    /// site act as the user, so it is refused as a configuration error.
    pub fn allow_credentials(mut self, allow: bool) -> Self {
        assert!(
            !(allow && matches!(self.origins, Origins::Any)),
            "credentials cannot be allowed for every origin: list the origins"
        );
        self.credentials = allow;
        self
    }

    /// How long browsers may cache a preflight answer (default 10 minutes).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::List(list) => list
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes())),
        }
    }

    /// The most headers [`decorate`](Self::decorate) adds, so answers can
    /// size their header maps once.
    pub(crate) const ANSWER_HEADERS: usize = 4;

    /// Adds the CORS headers to an answer for a request from `origin`
    /// (nothing for origins not allowed, so the browser withholds the answer).
    pub(crate) fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        let Some(origin) = origin.filter(|o| self.allows(o)) else {
            return;
        };
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("etag"),
        );
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        match self.origins {
            Origins::Any => HeaderValue::from_static("*"),
            Origins::List(_) => origin.clone(),
        }
    }

    /// Answers a preflight (`OPTIONS`) for a route accepting `method`.
    pub(crate) fn preflight(&self, request: &Parts, method: Method) -> Response<CometBody> {
        let origin = request.headers.get(header::ORIGIN);
        let requested = request.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        let refusal = match (origin, requested) {
            (None, _) | (_, None) => Some(ProtocolError::bad_request(
                "OPTIONS here answers CORS preflights: send Origin and Access-Control-Request-Method",
            )),
            (Some(origin), _) if !self.allows(origin) => Some(ErrorCode::CorsDenied.error(format!("origin {} may not use this route", String::from_utf8_lossy(origin.as_bytes())),
            )),
            (_, Some(m)) if m.as_bytes() != method.as_str().as_bytes() => Some(ErrorCode::CorsDenied.error(format!("this route accepts {method} only"),
            )),
            _ => None,
        };
        let mut response = match refusal {
            Some(error) => error.into_response(),
            None => {
                let mut response = Response::new(CometBody::empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                let headers = response.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_str(method.as_str()).expect("a method is a header value"),
                );
                if let Some(wanted) = request.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, wanted.clone());
                }
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from(self.max_age.as_secs()),
                );
                response
            }
        };
        let headers = response.headers_mut();
        headers.append(
            header::VARY,
            HeaderValue::from_static("access-control-request-method"),
        );
        headers.append(
            header::VARY,
            HeaderValue::from_static("access-control-request-headers"),
        );
        self.decorate(origin, headers);
        response
    }
}

/// PROTOCOL.md, "JSONP": a JSONP answer is a script that any page can
/// include with the user's cookies (cross-site script inclusion), so a
/// request from another site is refused: `Sec-Fetch-Site: cross-site`, or an
/// `Origin` (else `Referer`) that is neither the request's own host nor in
/// `cors`'s list. Requests that carry none of these (not from a browser
/// page) pass.
pub(crate) fn check_jsonp_site(request: &Parts, cors: Option<&Cors>) -> Result<(), ProtocolError> {
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

impl fmt::Debug for Cors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins: Vec<_> = match &self.origins {
            Origins::Any => vec!["*".to_owned()],
            Origins::List(list) => list
                .iter()
                .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
                .collect(),
        };
        f.debug_struct("Cors")
            .field("origins", &origins)
            .field("credentials", &self.credentials)
            .field("max_age", &self.max_age)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "credentials cannot be allowed for every origin")]
    fn star_with_credentials_is_a_configuration_error() {
        let _ = Cors::any_origin().allow_credentials(true);
    }

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
            check_jsonp_site(&jsonp_request(headers), cors).map_err(|e| e.code())
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

    #[test]
    fn origins_compare_without_case() {
        let cors = Cors::allow_origins(["https://Example.com"]);
        assert!(cors.allows(&HeaderValue::from_static("https://example.com")));
        assert!(!cors.allows(&HeaderValue::from_static("https://example.com.evil")));
        assert!(!cors.allows(&HeaderValue::from_static("null")));
    }
}
