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
/// use comet_push::{Cors, SubscribeRoute};
/// let route = SubscribeRoute::sse().cors(
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

    pub(crate) fn allows(&self, origin: &HeaderValue) -> bool {
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
    fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
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
    fn preflight(&self, request: &Parts, methods: &[Method]) -> Response<CometBody> {
        let listed = methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let origin = request.headers.get(header::ORIGIN);
        let requested = request.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        let refusal = match (origin, requested) {
            (None, _) | (_, None) => Some(ProtocolError::bad_request(
                "OPTIONS here answers CORS preflights: send Origin and Access-Control-Request-Method",
            )),
            (Some(origin), _) if !self.allows(origin) => Some(ErrorCode::CorsDenied.error(format!("origin {} may not use this route", String::from_utf8_lossy(origin.as_bytes())),
            )),
            (_, Some(m)) if !methods.iter().any(|method| m.as_bytes() == method.as_str().as_bytes()) => Some(ErrorCode::CorsDenied.error(format!("this route accepts {listed} only"),
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
                    HeaderValue::from_str(&listed).expect("methods are a header value"),
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
        for varies in [
            "access-control-request-method",
            "access-control-request-headers",
        ] {
            headers.append(header::VARY, HeaderValue::from_static(varies));
        }
        self.decorate(origin, headers);
        response
    }
}

/// The CORS owed to one request to a comet route (subscribe, publish or
/// client script), the one place each route's CORS is handled: a preflight
/// is answered at once; any other request's answer gets the headers.
pub(crate) struct PendingCors {
    cors: Option<(Cors, Option<HeaderValue>)>,
}

impl PendingCors {
    /// The answer to a preflight for `method`, if the request is one and
    /// the route has CORS (routes without CORS answer `OPTIONS` as any other
    /// method they do not allow).
    pub(crate) fn preflight(
        cors: Option<&Cors>,
        request: &Parts,
        methods: &[Method],
    ) -> Option<Response<CometBody>> {
        let cors = cors?;
        (request.method == Method::OPTIONS).then(|| cors.preflight(request, methods))
    }

    /// What the answer to `request` owes to `cors`.
    pub(crate) fn for_request(cors: Option<&Cors>, request: &Parts) -> Self {
        Self {
            cors: cors.map(|cors| (cors.clone(), request.headers.get(header::ORIGIN).cloned())),
        }
    }

    /// Adds the CORS headers to `response`.
    pub(crate) fn apply(&self, mut response: Response<CometBody>) -> Response<CometBody> {
        if let Some((cors, origin)) = &self.cors {
            cors.decorate(origin.as_ref(), response.headers_mut());
        }
        response
    }
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

    #[test]
    fn origins_compare_without_case() {
        let cors = Cors::allow_origins(["https://Example.com"]);
        assert!(cors.allows(&HeaderValue::from_static("https://example.com")));
        assert!(!cors.allows(&HeaderValue::from_static("https://example.com.evil")));
        assert!(!cors.allows(&HeaderValue::from_static("null")));
    }
}
