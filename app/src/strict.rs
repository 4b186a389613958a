//! HTTP/1.1 as RFC 9112 asks, whatever the bytes' arrival: a request must carry exactly one
//! `Host` (else 400, section 3.2), and its head (request line and fields) must fit in
//! `MAX_HEAD_BYTES` (else 431). hyper bounds the head only while it is still arriving (its
//! read buffer); a head that comes in one large write is parsed whole, so the size is counted
//! again here, on what was parsed.

use axum::extract::Request;
use axum::http::{header, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The largest request head served: 64 KiB, as hyper's read buffer.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The size of a request head as sent: `METHOD SP target SP HTTP/1.1 CRLF`, then
/// `name: value CRLF` per field, then CRLF.
pub fn head_bytes(request: &Request) -> usize {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(1, |target| target.as_str().len())
        + 12;
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

pub async fn strict_http(request: Request, next: Next) -> Response {
    if head_bytes(&request) > MAX_HEAD_BYTES {
        return StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.into_response();
    }
    let hosts = request.headers().get_all(header::HOST).iter().count();
    let needs_host = request.version() >= Version::HTTP_11;
    if hosts > 1 || (needs_host && hosts == 0) {
        return StatusCode::BAD_REQUEST.into_response();
    }
    next.run(request).await
}
