//! Every failure a visitor can cause becomes a clear 4xx page and one calm log line; only our
//! own faults are 500s, logged as errors. A database that is away is a 503 with `Retry-After`,
//! logged once per outage by `db::Db`, not once per request. `error_pages` gives the refusals
//! the framework makes by itself (405, 413, 408, a bad path) the same page.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::AppState;

#[derive(Debug)]
pub enum AppError {
    /// No valid session: go to the login page.
    LoginRequired,
    BadRequest(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// 429 with `Retry-After` (whole seconds, rounded up). Not logged here: a flood would
    /// write one line per attempt; the sign-in throttle logs once per burst instead.
    TooManyRequests {
        message: String,
        retry_after: Duration,
    },
    /// 503 with `Retry-After`: the database is away.
    Unavailable,
    /// 503 with `Retry-After`: the database did not finish this request's work in time (a
    /// lock, a statement timeout, every pooled connection busy, a connection lost under a
    /// write). Logged by `db`, not here.
    Busy,
    Internal(anyhow::Error),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::LoginRequired => StatusCode::SEE_OTHER,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable | AppError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for AppError {
    fn from(error: E) -> Self {
        AppError::Internal(error.into())
    }
}

/// The page text for a status the app did not word itself.
pub fn default_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request could not be read. Reload the page and try again.",
        404 => "There is no such page.",
        405 => "This page does not accept that kind of request.",
        408 => "The request took too long to arrive. Please try again.",
        413 => "That was more than this form accepts.",
        415 | 422 => "The form could not be read. Reload the page and try again.",
        429 => "Too many attempts. Please wait a moment and try again.",
        431 => "The request's headers were larger than Data Hub accepts.",
        503 => "Data Hub cannot reach its database right now. Please try again in a few seconds.",
        s if s >= 500 => "Something went wrong on our side. Please try again.",
        _ => "The request was refused.",
    }
}

/// Seconds for `Retry-After`, rounded up (never 0 for a real wait).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Seconds a client should wait before retrying while the database is away.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 5;

/// Seconds a client should wait before retrying a request the database was too busy for.
pub const BUSY_RETRY_AFTER: u64 = 2;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (message, retry_after) = match self {
            AppError::LoginRequired => return Redirect::to("/login").into_response(),
            AppError::BadRequest(m)
            | AppError::Forbidden(m)
            | AppError::NotFound(m)
            | AppError::Conflict(m) => (m, None),
            AppError::TooManyRequests {
                message,
                retry_after,
            } => (message, Some(retry_after_secs(retry_after).max(1))),
            AppError::Unavailable => (
                default_message(status).to_string(),
                Some(UNAVAILABLE_RETRY_AFTER),
            ),
            AppError::Busy => (
                "Data Hub is busy right now. Please try again in a few seconds.".to_string(),
                Some(BUSY_RETRY_AFTER),
            ),
            AppError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                (default_message(status).to_string(), None)
            }
            other @ (AppError::MethodNotAllowed
            | AppError::PayloadTooLarge
            | AppError::UnsupportedMediaType) => {
                (default_message(other.status()).to_string(), None)
            }
        };
        let logged_reason = Refused(message.clone());
        let mut response = (status, crate::views::error_page(status, &message)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(logged_reason);
        response
    }
}

/// The reason of a refusal, for `error_pages` to log (sampled) once the response is made.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

pub type AppResult<T> = Result<T, AppError>;

/// Middleware: every refusal (4xx) is logged here, one line each up to the sampling budget
/// (`crate::repeats`); a 4xx or 5xx whose body is not HTML (so not ours: axum's 405,
/// tower-http's 413 and 408, a path the router could not decode) becomes the error page for
/// its status, keeping its other headers (`Allow`, `Retry-After`).
pub async fn error_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/html"));
    let refused = response.extensions().get::<Refused>().cloned();
    let logged = status.is_client_error() && (refused.is_some() || !is_html);
    if logged && state.db.repeats.admit("request refused", status.as_u16()) {
        let reason = refused.map_or_else(|| default_message(status).to_string(), |r| r.0);
        tracing::info!(status = status.as_u16(), %path, reason, "request refused");
    }
    if is_html {
        return response;
    }
    let (parts, _bare_body) = response.into_parts();
    let mut page = (
        status,
        crate::views::error_page(status, default_message(status)),
    )
        .into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            page.headers_mut().insert(name.clone(), value.clone());
        }
    }
    page
}
