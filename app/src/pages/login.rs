//! Login and logout.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use minijinja::context;
use serde::Deserialize;

use super::{CsrfOnly, ValidForm};
use crate::error::AppResult;
use crate::session::{self, Auth};
use crate::AppState;

/// A real Argon2id hash of nothing anyone knows: unknown emails cost as much as wrong passwords.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Ww3bQf2pGqu2m/0Z0dIqEdydItpwDaJvXnJbn0pEzRw";

pub async fn form(State(state): State<AppState>) -> AppResult<Response> {
    Ok(state
        .views
        .render("login.html", context! { email => "", error => "" })?
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
}

pub async fn submit(
    State(state): State<AppState>,
    jar: CookieJar,
    ValidForm(login): ValidForm<LoginForm>,
) -> AppResult<Response> {
    let email = login.email.trim().to_lowercase();
    if email.is_empty()
        || login.password.is_empty()
        || email.len() > 320
        || login.password.len() > 1024
    {
        return refuse(&state, &email, "Enter your email and password.");
    }
    let client = state.pool.get().await?;
    let user = client
        .query_opt(
            r#"SELECT "id", "passwordHash" FROM "User" WHERE lower("email") = $1"#,
            &[&email],
        )
        .await?;
    let (user_id, stored) = match &user {
        Some(row) => (
            Some(row.get::<_, String>(0)),
            row.get::<_, Option<String>>(1)
                .unwrap_or_else(|| DUMMY_HASH.to_string()),
        ),
        None => (None, DUMMY_HASH.to_string()),
    };
    let password = login.password.clone();
    let matches =
        tokio::task::spawn_blocking(move || datahub_core::password::verify(&password, &stored))
            .await?;
    match (user_id, matches) {
        (Some(user_id), true) => {
            let cookie = session::create(&state, &user_id).await?;
            tracing::info!(user = %user_id, "signed in");
            Ok((jar.add(cookie), Redirect::to("/data")).into_response())
        }
        _ => {
            tracing::info!("sign-in refused: wrong email or password");
            refuse(&state, &email, "Wrong email or password.")
        }
    }
}

fn refuse(state: &AppState, email: &str, error: &str) -> AppResult<Response> {
    let page = state
        .views
        .render("login.html", context! { email, error })?;
    Ok((StatusCode::UNAUTHORIZED, page).into_response())
}

pub async fn logout(
    State(state): State<AppState>,
    auth: Auth,
    jar: CookieJar,
    ValidForm(form): ValidForm<CsrfOnly>,
) -> AppResult<Response> {
    auth.check_csrf(&form.csrf)?;
    let client = state.pool.get().await?;
    client
        .execute(
            r#"DELETE FROM "Session" WHERE "id" = $1"#,
            &[&auth.session_id],
        )
        .await?;
    Ok((
        jar.remove(session::removal_cookie()),
        Redirect::to("/login"),
    )
        .into_response())
}
