//! The live web viewer on the query API's port: `GET /` answers a browser with the viewer page
//! and anything else (curl, scripts, `Accept: application/json`) with the service info JSON;
//! `GET /viewer/{asset}` serves the page's script, style sheet and icon, embedded in the binary
//! (no CDN: clusters are often offline). The page itself only calls the API's own endpoints
//! (`/logs`, `/stats`, `/alerts`), with URLs relative to the page, so it also works behind a
//! path prefix (`kubectl proxy`, an ingress).
//!
//! Easy to get wrong: caching. The page names each asset with its content hash
//! (`viewer/app.js?v=<hash>`), so a URL with the current hash may be cached for good while the
//! page itself is always revalidated; after an upgrade the page names the new hashes and the
//! browser never mixes an old script with a new page.

use std::path::Path;
use std::sync::LazyLock;

use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// What the query API serves, for the service info (`GET /` as JSON).
pub const ENDPOINTS: [(&str, &str); 9] = [
    (
        "/",
        "this service info as JSON; the live web viewer for a browser",
    ),
    (
        "/logs",
        "records as NDJSON or text: source, stream, container, pod, namespace, tail, since, \
         until, follow, grep, level, category, fields, timestamps, format; selector (and \
         selector_namespace) asks every pod a label selector finds",
    ),
    (
        "/logs/{source}",
        "the last records of one source as a JSON array: limit",
    ),
    (
        "/sources",
        "per source: records, bytes, first and last time, category",
    ),
    (
        "/stats",
        "per source, level and category; rates over 1 min; the forwarder's lag",
    ),
    ("/alerts", "alerts firing now and the latest resolved"),
    ("/healthz", "200 while the forwarder runs"),
    ("/metrics", "Prometheus text or OpenMetrics"),
    (
        "/viewer/{asset}",
        "the web viewer's script, style sheet and icon",
    ),
];

/// The page's content security policy: everything from this server, nothing inline, no
/// frames. `data:` images are for nothing but the browser's own placeholder icons.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// A URL that names the asset's current hash may be kept this long (a year, the usual maximum).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// The content hash, hex: the `v=` of its URL and its ETag.
    hash: String,
}

impl Asset {
    fn new(name: &'static str, content_type: &'static str, bytes: &'static [u8]) -> Self {
        Self {
            name,
            content_type,
            bytes,
            hash: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes)),
        }
    }

    fn etag(&self) -> String {
        format!("\"{}\"", self.hash)
    }

    /// The asset's URL relative to the page, with its version.
    fn url(&self) -> String {
        format!("viewer/{}?v={}", self.name, self.hash)
    }
}

/// The assets the page loads, hashed once.
static ASSETS: LazyLock<[Asset; 3]> = LazyLock::new(|| {
    [
        Asset::new(
            "app.js",
            "text/javascript; charset=utf-8",
            include_bytes!("../assets/viewer/app.js"),
        ),
        Asset::new(
            "style.css",
            "text/css; charset=utf-8",
            include_bytes!("../assets/viewer/style.css"),
        ),
        Asset::new(
            "favicon.svg",
            "image/svg+xml",
            include_bytes!("../assets/viewer/favicon.svg"),
        ),
    ]
});

/// The page with each `{{name}}` replaced by that asset's versioned URL.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    let mut page = include_str!("../assets/viewer/index.html").to_owned();
    for asset in ASSETS.iter() {
        page = page.replace(&format!("{{{{{}}}}}", asset.name), &asset.url());
    }
    page = page.replace("{{version}}", env!("CARGO_PKG_VERSION"));
    page
});

/// `GET /`: the viewer page when the client asks for HTML (a browser), else the service info.
pub fn index(headers: &HeaderMap, journal_dir: &Path) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let mut response = if wants_html(accept) {
        let mut page = (StatusCode::OK, PAGE.as_str()).into_response();
        let h = page.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        page
    } else {
        axum::Json(service_info(journal_dir)).into_response()
    };
    // Caches must keep the page and the JSON apart.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    response
}

/// The service info document: name, version, endpoints, the journal it reads.
pub fn service_info(journal_dir: &Path) -> Value {
    json!({
        "name": "log-forwarder",
        "version": env!("CARGO_PKG_VERSION"),
        "description": "read-only query API over the processed journal",
        "journal_dir": journal_dir.display().to_string(),
        "viewer": "/",
        "endpoints": ENDPOINTS
            .iter()
            .map(|(path, what)| json!({ "path": path, "description": what }))
            .collect::<Vec<_>>(),
    })
}

/// Whether an `Accept` header asks for HTML rather than JSON. A browser names `text/html`; a
/// client that names neither (no header, `*/*`: curl, fetch) gets the JSON it always got, and
/// a client that names both gets the one with the higher `q` (HTML on a tie if it names
/// `text/html` itself rather than through a wildcard).
pub fn wants_html(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let html = quality(accept, "text", "html");
    let json = quality(accept, "application", "json");
    match (html, json) {
        (Some(html), Some(json)) => {
            html.q > 0.0 && (html.q > json.q || (html.q == json.q && html.exact))
        }
        (Some(html), None) => html.q > 0.0,
        (None, _) => false,
    }
}

/// How an `Accept` header rates one media type: the `q` of its most specific range.
#[derive(Debug, Clone, Copy)]
struct Rating {
    q: f32,
    /// Named as `type/subtype`, not only through a wildcard.
    exact: bool,
}

/// The rating of `kind/sub` in `accept`, by the most specific range that covers it (RFC 9110,
/// 12.5.1): `text/html` over `text/*` over `*/*`. `None` when no range covers it.
fn quality(accept: &str, kind: &str, sub: &str) -> Option<Rating> {
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let Some((t, s)) = media.split_once('/') else {
            continue;
        };
        let specificity = match (t.trim(), s.trim()) {
            (t, s) if t.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(sub) => 2,
            (t, "*") if t.eq_ignore_ascii_case(kind) => 1,
            ("*", "*") => 0,
            _ => continue,
        };
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map(|(specificity, q)| Rating {
        q,
        exact: specificity == 2,
    })
}

/// `GET /viewer/{asset}`: an embedded file, with its ETag; cached for good when the URL names
/// its current hash (`?v=`), else revalidated.
pub async fn asset(
    UrlPath(name): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    asset_response(&name, query.as_deref(), &headers)
}

fn asset_response(name: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        let known: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "error": format!("no viewer asset {name:?} (known: {})", known.join(", ")),
                "status": 404,
            })),
        )
            .into_response();
    };
    let versioned = query
        .unwrap_or("")
        .split('&')
        .any(|p| p.strip_prefix("v=") == Some(asset.hash.as_str()));
    let etag = asset.etag();
    let cache = if versioned { IMMUTABLE } else { "no-cache" };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (StatusCode::OK, asset.bytes).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        r
    };
    let h = response.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("a hex hash in quotes is a valid header value"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
                          image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
    const FIREFOX: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    #[test]
    fn browsers_get_the_page_and_programs_get_json() {
        for accept in [CHROME, FIREFOX, "text/html", "TEXT/HTML; q=0.5", "text/*"] {
            assert!(wants_html(Some(accept)), "{accept}");
        }
        for accept in [
            None,
            Some("*/*"),
            Some("application/json"),
            Some("application/json, text/plain, */*"),
            Some("text/html;q=0.5, application/json"),
            Some("text/html;q=0, */*"),
            Some("application/*"),
            Some(""),
            Some("garbage"),
        ] {
            assert!(!wants_html(accept), "{accept:?}");
        }
        // Both named with the same q: HTML, since the client named it; a wildcard loses to a
        // named type at the same q.
        assert!(wants_html(Some("application/json, text/html")));
        assert!(!wants_html(Some("text/*, application/json")));
        // The most specific range decides, whatever the order.
        assert!(!wants_html(Some("text/*;q=1, text/html;q=0")));
    }

    #[test]
    fn the_index_answers_html_or_json_by_accept() {
        let dir = Path::new("/processed-logs");
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(CHROME));
        let page = index(&headers, dir);
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(
            page.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(page.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(page.headers()[header::VARY], "accept");

        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let info = index(&headers, dir);
        assert_eq!(info.headers()[header::CONTENT_TYPE], "application/json");
        let body = service_info(dir);
        assert_eq!(body["name"], "log-forwarder");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(body["journal_dir"], "/processed-logs");
        let paths: Vec<&str> = body["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        for path in ["/", "/logs", "/sources", "/stats", "/alerts", "/metrics"] {
            assert!(paths.contains(&path), "{path} in {paths:?}");
        }
    }

    #[test]
    fn the_page_names_every_asset_by_its_hash_and_nothing_outside() {
        for asset in ASSETS.iter() {
            assert!(PAGE.contains(&asset.url()), "{} in the page", asset.name);
        }
        assert!(!PAGE.contains("{{"), "an unreplaced placeholder");
        // Embedded, relative, offline: no URL leaves the server.
        for page in [PAGE.as_str(), std::str::from_utf8(ASSETS[0].bytes).unwrap()] {
            assert!(!page.contains("http://") && !page.contains("https://"));
            assert!(!page.contains("src=\"/") && !page.contains("href=\"/"));
        }
    }

    #[test]
    fn assets_have_their_content_type_etag_and_cache_policy() {
        let none = HeaderMap::new();
        for (name, content_type) in [
            ("app.js", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("favicon.svg", "image/svg+xml"),
        ] {
            let asset = ASSETS.iter().find(|a| a.name == name).unwrap();
            let plain = asset_response(name, None, &none);
            assert_eq!(plain.status(), StatusCode::OK);
            assert_eq!(plain.headers()[header::CONTENT_TYPE], content_type);
            assert_eq!(plain.headers()[header::CACHE_CONTROL], "no-cache");
            assert_eq!(plain.headers()[header::ETAG], asset.etag().as_str());

            let query = format!("v={}", asset.hash);
            let versioned = asset_response(name, Some(&query), &none);
            assert_eq!(versioned.headers()[header::CACHE_CONTROL], IMMUTABLE);
            let stale = asset_response(name, Some("v=0123"), &none);
            assert_eq!(stale.headers()[header::CACHE_CONTROL], "no-cache");

            let mut revalidate = HeaderMap::new();
            revalidate.insert(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(&format!("\"x\", {}", asset.etag())).unwrap(),
            );
            let not_modified = asset_response(name, None, &revalidate);
            assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
            assert_eq!(not_modified.headers()[header::ETAG], asset.etag().as_str());
        }
        assert_eq!(
            asset_response("secret.txt", None, &none).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            asset_response("../lib.rs", None, &none).status(),
            StatusCode::NOT_FOUND
        );
    }
}
