//! The pages. Each handler takes `Auth` (the session's user and workspace) and scopes every
//! query by `auth.workspace_id`; ids from the URL or a form are only ever used together with it.

pub mod chat;
pub mod login;
pub mod overview;
pub mod provider;
pub mod workspace;

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;

use crate::error::AppError;
use crate::AppState;

pub async fn root() -> Redirect {
    Redirect::to("/data")
}

/// 200 when the database answers, else 503.
pub async fn health(State(state): State<AppState>) -> Response {
    let ok = match state.pool.get().await {
        Ok(client) => client.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    };
    if ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        tracing::warn!("health check: the database does not answer");
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
    }
}

pub async fn not_found() -> AppError {
    AppError::NotFound("There is no such page.".into())
}

/// A urlencoded form whose problems (missing fields, bad encoding, too large) are a 400 page.
pub struct ValidForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ValidForm<T> {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        match axum::Form::<T>::from_request(request, state).await {
            Ok(axum::Form(value)) => Ok(ValidForm(value)),
            Err(rejection) => Err(AppError::BadRequest(format!(
                "The form could not be read ({}).",
                rejection.body_text()
            ))),
        }
    }
}

/// The form field every post carries.
#[derive(Debug, serde::Deserialize)]
pub struct CsrfOnly {
    pub csrf: String,
}
