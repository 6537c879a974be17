//! The browser client, `comet.js`, served beside the routes it speaks to.
//!
//! The script is compiled into the crate, so the client a server hands out
//! always speaks that server's protocol. It is written as ES modules
//! (`comet-protocol/client/*.js`, unit-tested with `node --test`) and served as
//! one file that `build.rs` makes of them: one request, one URL to version,
//! nothing to mount per module. Its URL without a version is
//! revalidated by ETag on every load (a 304 when unchanged); with
//! `?v=<CLIENT_VERSION>`, as [`client_script_url`] writes it, it is cached
//! for a year, since another version has another URL.

use super::{cors::PendingCors, request, CometBody, SubscribeRoute};
use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Method, Response, StatusCode};
use std::sync::OnceLock;

/// The client: a dependency-free ES module, `comet-protocol/client/comet.js`
/// with the modules it imports, built into one file by `build.rs`.
pub const CLIENT_SCRIPT: &str = include_str!(concat!(env!("OUT_DIR"), "/comet.js"));

/// Its TypeScript declarations (`comet-protocol/client/comet.d.ts`).
pub const CLIENT_TYPES: &str = include_str!("../client/comet.d.ts");

/// The file name the client is served as, below a subscribe route's path.
pub const CLIENT_SCRIPT_NAME: &str = "comet.js";

/// A fingerprint of [`CLIENT_SCRIPT`] (16 hex digits): its ETag and the `v`
/// that makes its URL cacheable for good.
pub fn client_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        // FNV-1a, 64 bit: a fingerprint, not a defence.
        let hash = CLIENT_SCRIPT
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        format!("{hash:016x}")
    })
}

/// The client's URL below a route mounted at `mount`, versioned so that
/// browsers cache it for a year: `/comet` gives `/comet/comet.js?v=...`.
pub fn client_script_url(mount: &str) -> String {
    format!(
        "{}/{CLIENT_SCRIPT_NAME}?v={}",
        mount.trim_end_matches('/'),
        client_version()
    )
}

impl SubscribeRoute {
    /// Answers a request for the browser client, `comet.js`, with this
    /// route's CORS (a module script from another origin is fetched in CORS
    /// mode).
    pub fn serve_client(&self, request: &Parts) -> Response<CometBody> {
        let cors = self.cors.as_ref();
        PendingCors::preflight(cors, request, &[Method::GET])
            .unwrap_or_else(|| PendingCors::for_request(cors, request).apply(answer(request)))
    }
}

fn answer(request: &Parts) -> Response<CometBody> {
    if let Err(error) = request::check(request, &[Method::GET, Method::HEAD], "GET, HEAD") {
        return error.into_response();
    }
    let etag = format!("\"{}\"", client_version());
    let versioned = request
        .uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == format!("v={}", client_version())));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let unchanged = request
        .headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let (status, body) = if unchanged {
        (StatusCode::NOT_MODIFIED, CometBody::empty())
    } else if request.method == Method::HEAD {
        (StatusCode::OK, CometBody::empty())
    } else {
        (
            StatusCode::OK,
            CometBody::full(Bytes::from_static(CLIENT_SCRIPT.as_bytes())),
        )
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if status == StatusCode::OK {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        );
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(CLIENT_SCRIPT.len()),
        );
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str, if_none_match: Option<&str>) -> Response<CometBody> {
        let mut request = http::Request::get(uri);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        SubscribeRoute::all().serve_client(&request.body(()).unwrap().into_parts().0)
    }

    #[test]
    fn serves_the_script_with_an_etag_and_revalidation() {
        let response = get("/comet/comet.js", None);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(
            response.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(etag, format!("\"{}\"", client_version()));
        let body = response.into_body().try_into_bytes().ok().unwrap();
        assert_eq!(body, CLIENT_SCRIPT.as_bytes());

        let again = get("/comet/comet.js", Some(&etag));
        assert_eq!(again.status(), 304);
        assert!(again.into_body().try_into_bytes().ok().unwrap().is_empty());
        assert_eq!(get("/comet/comet.js", Some("\"other\"")).status(), 200);
    }

    #[test]
    fn a_versioned_url_is_cached_for_good() {
        let url = client_script_url("/comet/");
        assert!(url.starts_with("/comet/comet.js?v="), "{url}");
        let response = get(&url, None);
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        // Another version's URL is not this script's: revalidate it.
        let stale = get("/comet/comet.js?v=0000000000000000", None);
        assert_eq!(stale.headers()["cache-control"], "no-cache");
    }

    #[test]
    fn the_served_client_is_one_module_with_nothing_left_to_fetch() {
        // What build.rs makes of the modules, checked without Node: no
        // import is left, nothing points at a sibling module, and the
        // entry's one export list is the client's API.
        for line in CLIENT_SCRIPT.lines() {
            assert!(!line.trim_start().starts_with("import"), "{line}");
            assert!(!line.contains("from \"./"), "{line}");
        }
        let exports: Vec<&str> = CLIENT_SCRIPT
            .lines()
            .filter(|l| l.starts_with("export"))
            .collect();
        assert_eq!(exports, ["export { Comet, CometMessage, CometPresence };"]);
        assert!(CLIENT_SCRIPT.contains("class Comet "), "the API is in");
    }

    #[test]
    fn other_methods_are_refused() {
        let request = http::Request::post("/comet/comet.js").body(()).unwrap();
        let response = SubscribeRoute::all().serve_client(&request.into_parts().0);
        assert_eq!(response.status(), 405);
    }
}
