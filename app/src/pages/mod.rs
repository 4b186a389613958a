//! The pages. Each handler takes `Auth` (the session's user and workspace) and scopes every
//! query by `auth.workspace_id`; ids from the URL or a form are only ever used together with it.

pub mod chat;
pub mod login;
pub mod overview;
pub mod provider;
pub mod workspace;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;

use crate::error::AppError;
use crate::AppState;

pub async fn root() -> Redirect {
    Redirect::to("/data")
}

/// 200 when the database answers, else the 503 page (with `Retry-After`) within the
/// database deadline; while the database is known to be away, at once. Asked on a connection
/// of its own: a pool busy with slow pages is not a database that is away.
pub async fn health(State(state): State<AppState>) -> Response {
    match state.db.answers().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(error) => error.into_response(),
    }
}

/// The stylesheet: its URL carries its digest, so it may be cached for a year.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        crate::views::APP_CSS,
    )
        .into_response()
}

/// Browsers ask for it on every page; "no content" keeps a 404 out of their consoles.
pub async fn favicon() -> StatusCode {
    StatusCode::NO_CONTENT
}

pub async fn not_found() -> AppError {
    AppError::NotFound("There is no such page.".into())
}

pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// A urlencoded form, read strictly: the body's media type must say so (else 415), a body
/// over the limit is a 413 whether announced or streamed, and every name and value must
/// percent-decode to UTF-8 without NUL (else 400). `serde_urlencoded` alone would turn
/// `%FF` into U+FFFD without a word, and a NUL would reach PostgreSQL, which cannot store it.
pub struct ValidForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ValidForm<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|media| {
                media
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        if !is_form {
            return Err(AppError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    AppError::PayloadTooLarge
                } else {
                    AppError::BadRequest("The form could not be read.".into())
                }
            })?;
        check_form_bytes(&bytes)?;
        serde_urlencoded::from_bytes(&bytes)
            .map(ValidForm)
            .map_err(|error| AppError::BadRequest(format!("The form could not be read ({error}).")))
    }
}

/// Every name and value, `+` as a space and percent-decoded, is UTF-8 and has no NUL.
pub fn check_form_bytes(body: &[u8]) -> Result<(), AppError> {
    for pair in body.split(|b| *b == b'&').filter(|pair| !pair.is_empty()) {
        for part in pair.splitn(2, |b| *b == b'=') {
            let spaced: Vec<u8> = part
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            let decoded: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
            let text = std::str::from_utf8(&decoded)
                .map_err(|_| AppError::BadRequest("The form is not valid UTF-8 text.".into()))?;
            if text.contains('\0') {
                return Err(AppError::BadRequest(
                    "The form contains a NUL character, which Data Hub cannot store.".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The form field every post carries.
#[derive(Debug, serde::Deserialize)]
pub struct CsrfOnly {
    pub csrf: String,
}
