//! Headers on every response (OWASP HTTP Security Response Headers Cheat Sheet) and the refusal
//! of cross-site state changes (OWASP CSRF Cheat Sheet: Fetch Metadata, with Origin and then
//! Referer as the fallback), both applied outside the routes so 404s, 405s and 413s get them.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::AppState;

/// The pages use no script, one same-origin stylesheet, inline SVG (not a style) and
/// same-origin forms; nothing may frame them.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Two years, as OWASP recommends; no `preload` (that binds every subdomain for good and
/// needs a deliberate submission).
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=63072000; includeSubDomains";

pub async fn headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    // Not `no-referrer`: with it, browsers send `Origin: null` on same-origin form posts,
    // which the cross-site check would then have to refuse.
    set(header::REFERRER_POLICY, "strict-origin-when-cross-origin");
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    // Every page is personal or transient (signed-in pages, the login form with the email
    // typed, error pages); the stylesheet sets its own caching before this runs.
    set(header::CACHE_CONTROL, "no-store");
    if state.config.https() {
        set(header::STRICT_TRANSPORT_SECURITY, STRICT_TRANSPORT_SECURITY);
    }
    response
}

/// Refuses a POST (or any method but GET, HEAD, OPTIONS) that a browser says comes from
/// another site, before any handler or extractor runs: a 403 page and one log line.
pub async fn same_origin_only(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    match cross_site(request.headers(), state.config.public_url.as_deref()) {
        None => next.run(request).await,
        Some(why) => {
            if state.db.repeats.admit("cross-site request refused", 403) {
                tracing::warn!(method = %request.method(), path = request.uri().path(), why, "cross-site request refused");
            }
            AppError::Forbidden(
                "This form did not come from Data Hub. Open Data Hub and try again.".into(),
            )
            .into_response()
        }
    }
}

/// Why a request is cross-site, or `None` when it is not (or the client sends none of the
/// headers browsers send: curl, scripts; the session's CSRF token still guards those forms).
/// `public_origin` is the configured public URL; without one, the request's `Host` with
/// either scheme is ours.
pub fn cross_site(headers: &HeaderMap, public_origin: Option<&str>) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => None,
            // same-site: a sibling subdomain is not us either.
            _ => Some("Sec-Fetch-Site is not same-origin"),
        };
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let ours = |origin: &str| match public_origin {
        Some(expected) => origin.eq_ignore_ascii_case(expected),
        None => origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| !host.is_empty() && rest.eq_ignore_ascii_case(host)),
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        // `null` (sandboxed frames, data: URLs) is never ours.
        return match origin.to_str() {
            Ok(origin) if ours(origin) => None,
            _ => Some("Origin is foreign"),
        };
    }
    if let Some(referer) = headers.get(header::REFERER) {
        let referer = referer.to_str().unwrap_or("");
        let origin: String = referer.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        return if ours(&origin) {
            None
        } else {
            Some("Referer is foreign")
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn fetch_metadata_then_origin_then_referer() {
        let host = ("host", "127.0.0.1:3000");
        assert_eq!(cross_site(&with(&[host]), None), None);
        assert_eq!(
            cross_site(&with(&[host, ("sec-fetch-site", "same-origin")]), None),
            None
        );
        assert!(cross_site(&with(&[host, ("sec-fetch-site", "cross-site")]), None).is_some());
        assert!(cross_site(&with(&[host, ("sec-fetch-site", "same-site")]), None).is_some());
        assert_eq!(
            cross_site(&with(&[host, ("origin", "http://127.0.0.1:3000")]), None),
            None
        );
        assert!(cross_site(&with(&[host, ("origin", "null")]), None).is_some());
        assert!(cross_site(&with(&[host, ("origin", "https://evil.test")]), None).is_some());
        assert!(cross_site(&with(&[host, ("referer", "https://evil.test/page")]), None).is_some());
        assert_eq!(
            cross_site(
                &with(&[host, ("referer", "http://127.0.0.1:3000/data")]),
                None
            ),
            None
        );
        let public = Some("https://hub.example.com");
        assert_eq!(
            cross_site(
                &with(&[host, ("origin", "https://hub.example.com")]),
                public
            ),
            None
        );
        assert!(cross_site(&with(&[host, ("origin", "http://127.0.0.1:3000")]), public).is_some());
    }
}
