//! Login and logout. A sign-in attempt goes through, in order: the form; the throttle (per
//! account and per client address: 429 with `Retry-After`, no database work, no hash); a
//! hashing permit (none free: 429 at once, except that a browser with a device cookie has a
//! permit reserved for it and may wait for it briefly); the user's row, read on a connection that goes
//! back to the pool before the hash; the hash, off the async runtime; then the session.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use datahub_core::password::{self, Verdict, DUMMY_HASH};
use minijinja::context;
use serde::Deserialize;

use super::{CsrfOnly, ValidForm};
use crate::error::{AppError, AppResult};
use crate::session::{self, Auth};
use crate::throttle::{self, DEVICE_DAYS};
use crate::AppState;

/// The cookie that tells the throttle this browser signed in to an account before.
pub const DEVICE_COOKIE: &str = "datahub_device";

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

const USER_SQL: &str = r#"SELECT "id", "passwordHash" FROM "User" WHERE lower("email") = $1"#;
const REHASH_SQL: &str = r#"UPDATE "User" SET "passwordHash" = $2 WHERE "id" = $1"#;

pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
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
    let forwarded_for = headers
        .get("x-forwarded-for")
        .and_then(|value| value.to_str().ok());
    let client = throttle::client_key(throttle::client_ip(
        peer.ip(),
        forwarded_for,
        &state.config.trusted_proxies,
    ));
    let account = throttle::account_pseudonym(&state.config.pseudonym_key, &email);
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let trusted_device = jar.get(DEVICE_COOKIE).is_some_and(|cookie| {
        throttle::device_cookie_valid(
            &state.config.pseudonym_key,
            cookie.value(),
            &account,
            now_unix,
        )
    });

    let throttled = state
        .throttle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(&account, &client, trusted_device, Instant::now());
    if let Err(refusal) = throttled {
        return Err(AppError::TooManyRequests {
            message: format!(
                "Too many failed sign-ins. Try again in {} seconds.",
                crate::error::retry_after_secs(refusal.retry_after)
            ),
            retry_after: refusal.retry_after,
        });
    }
    let permit = if trusted_device {
        state.hasher.reserve_trusted().await
    } else {
        state.hasher.try_reserve()
    };
    let Some(permit) = permit else {
        return Err(AppError::TooManyRequests {
            message: "Data Hub is busy signing people in. Try again in a second.".into(),
            retry_after: Duration::from_secs(1),
        });
    };
    // The connection goes back to the pool before the hash: a flood of sign-ins holds no
    // connection a signed-in user's page needs.
    let user = {
        let mut db = state.db.client().await?;
        db.query_opt(USER_SQL, &[&email]).await?
    };
    let (user_id, stored) = match &user {
        Some(row) => (
            Some(row.get::<_, String>(0)),
            row.get::<_, Option<String>>(1)
                .unwrap_or_else(|| DUMMY_HASH.to_string()),
        ),
        None => (None, DUMMY_HASH.to_string()),
    };
    let password = login.password;
    let wants_rehash = user_id.is_some() && password::needs_rehash(&stored);
    let (verdict, rehashed) = state
        .hasher
        .run(permit, move |memory| {
            let verdict = password::verify_in(memory, &password, &stored);
            let rehashed = (verdict == Verdict::Match && wants_rehash)
                .then(|| password::hash_in(memory, &password).ok())
                .flatten();
            (verdict, rehashed)
        })
        .await?;
    match (user_id, verdict) {
        (Some(user_id), Verdict::Match) => {
            state
                .throttle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .success(&account);
            if let Some(rehashed) = rehashed {
                let mut db = state.db.client().await?;
                db.execute(REHASH_SQL, &[&user_id, &rehashed]).await?;
            }
            let previous = jar
                .get(datahub_core::SESSION_COOKIE)
                .map(|c| c.value().to_string());
            let cookie = session::create(&state, &user_id, previous.as_deref()).await?;
            tracing::info!(user = %user_id, %client, "signed in");
            let device = Cookie::build((
                DEVICE_COOKIE,
                throttle::device_cookie(
                    &state.config.pseudonym_key,
                    &account,
                    now_unix + DEVICE_DAYS * 86_400,
                ),
            ))
            .path("/login")
            .http_only(true)
            .secure(state.config.https())
            .same_site(SameSite::Strict)
            .max_age(cookie::time::Duration::days(DEVICE_DAYS as i64))
            .build();
            Ok((jar.add(cookie).add(device), Redirect::to("/data")).into_response())
        }
        _ => {
            let starts_burst = state
                .throttle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failure(&account, &client, Instant::now());
            if starts_burst && state.db.repeats.admit("sign-in failures started", 401) {
                // One line per burst (a spray of fresh emails is sampled); the minute sweep
                // logs a summary when it ends.
                tracing::warn!(%account, %client, "sign-in failures started");
            }
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
    let mut client = state.db.client().await?;
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
