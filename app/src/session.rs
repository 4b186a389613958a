//! Sessions: a random token in an HttpOnly, SameSite=Lax cookie (Secure when the public URL is
//! https), stored only as its SHA-256 in `Session`, bound to a user and a current workspace the
//! user is a member of. Every form post carries the session's CSRF token.
//!
//! Lifetimes (OWASP Session Management Cheat Sheet): an idle timeout of 30 minutes ("15-30
//! minutes for low risk applications") and an absolute one of 8 hours (OWASP's "20 minutes of
//! inactivity, 8 hours absolute lifetime" defaults), with no schema change: `"expiresAt"` is
//! the idle deadline, slid forward at most once a minute and never past `"createdAt"` plus the
//! absolute lifetime. Signing in gives a new token and a new CSRF token, deletes the session
//! the browser came with, and keeps at most 10 sessions per user. Expired rows are deleted
//! every five minutes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use subtle::ConstantTimeEq;

use crate::db::Db;
use crate::error::{AppError, AppResult};
use crate::AppState;
use datahub_core::password::{random_token, sha256_hex};
use datahub_core::SESSION_COOKIE as COOKIE_NAME;

/// A session unused for this long is over.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session this old is over, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(8 * 60 * 60);
/// Sessions one user may hold at once (browsers, devices); signing in drops the oldest.
pub const MAX_PER_USER: i64 = 10;
/// `"expiresAt"` is rewritten only when it is this many seconds off where it should be (rows
/// written with a longer lifetime are brought in on their first use).
const TOUCH_SLACK_SECS: f64 = 60.0;

/// The signed-in user and the workspace every query of the request is scoped to.
#[derive(Debug, Clone)]
pub struct Auth {
    pub session_id: String,
    pub user_id: String,
    pub user_label: String,
    pub workspace_id: String,
    pub workspace_name: String,
    pub csrf_token: String,
}

/// The session of a token while it is alive by both clocks, with its workspace only while the
/// user is still a member of it, and whether its idle deadline is due to slide forward.
const SESSION_SQL: &str = r#"
    SELECT s."id", s."userId", coalesce(u."name", u."email"), m."workspaceId", w."name", s."csrfToken",
           abs(extract(epoch FROM least(now() + make_interval(secs => $2), s."createdAt" + make_interval(secs => $3)) - s."expiresAt")::float8) > $4 AS due
    FROM "Session" s
    JOIN "User" u ON u."id" = s."userId"
    LEFT JOIN "WorkspaceMember" m ON m."workspaceId" = s."currentWorkspaceId" AND m."userId" = s."userId"
    LEFT JOIN "Workspace" w ON w."id" = m."workspaceId"
    WHERE s."tokenHash" = $1 AND s."expiresAt" > now() AND s."createdAt" > now() - make_interval(secs => $3)"#;

/// Slides the idle deadline: a row lock on one session, at most once a minute per session.
const TOUCH_SQL: &str = r#"
    UPDATE "Session" SET "expiresAt" = least(now() + make_interval(secs => $2), "createdAt" + make_interval(secs => $3))
    WHERE "id" = $1"#;

/// The user's home workspace: earliest OWNER membership, else earliest membership.
pub const HOME_WORKSPACE_SQL: &str = r#"
    SELECT m."workspaceId", w."name" FROM "WorkspaceMember" m JOIN "Workspace" w ON w."id" = m."workspaceId"
    WHERE m."userId" = $1
    ORDER BY (m."role" = 'OWNER') DESC, m."createdAt", m."id"
    LIMIT 1"#;

/// Sign-in, as one statement (so one transaction): the session the browser came with is
/// deleted (no fixation, nothing stale left behind), the user's sessions beyond the newest
/// `MAX_PER_USER - 1` are deleted, and the new one starts in the home workspace. Row locks on
/// this user's sessions only.
const CREATE_SQL: &str = r#"
    WITH previous AS (DELETE FROM "Session" WHERE "tokenHash" = $5),
    oldest AS (
        DELETE FROM "Session" WHERE "userId" = $2 AND "id" NOT IN (
            SELECT "id" FROM "Session" WHERE "userId" = $2 ORDER BY "createdAt" DESC, "id" DESC LIMIT $6))
    INSERT INTO "Session" ("id", "tokenHash", "userId", "currentWorkspaceId", "csrfToken", "expiresAt", "createdAt")
    VALUES (gen_random_uuid()::text, $1, $2,
            (SELECT m."workspaceId" FROM "WorkspaceMember" m WHERE m."userId" = $2
             ORDER BY (m."role" = 'OWNER') DESC, m."createdAt", m."id" LIMIT 1),
            $3, now() + make_interval(secs => $4), now())"#;

/// Sessions over by either clock; row locks on those rows only.
const DELETE_EXPIRED_SQL: &str = r#"
    DELETE FROM "Session" WHERE "expiresAt" <= now() OR "createdAt" <= now() - make_interval(secs => $1)"#;

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Auth> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = jar.get(COOKIE_NAME).map(|c| c.value().to_string()) else {
            return Err(AppError::LoginRequired);
        };
        let mut client = state.db.client().await?;
        let (idle, absolute) = (IDLE.as_secs_f64(), ABSOLUTE.as_secs_f64());
        let Some(row) = client
            .query_opt(
                SESSION_SQL,
                &[
                    &sha256_hex(token.as_bytes()),
                    &idle,
                    &absolute,
                    &TOUCH_SLACK_SECS,
                ],
            )
            .await?
        else {
            return Err(AppError::LoginRequired);
        };
        let mut auth = Auth {
            session_id: row.get(0),
            user_id: row.get(1),
            user_label: row.get(2),
            workspace_id: row.get::<_, Option<String>>(3).unwrap_or_default(),
            workspace_name: row.get::<_, Option<String>>(4).unwrap_or_default(),
            csrf_token: row.get(5),
        };
        if row.get::<_, bool>(6) {
            client
                .execute(TOUCH_SQL, &[&auth.session_id, &idle, &absolute])
                .await?;
        }
        if auth.workspace_id.is_empty() {
            // The user left (or was removed from) the session's workspace: fall back to home.
            let Some(home) = client
                .query_opt(HOME_WORKSPACE_SQL, &[&auth.user_id])
                .await?
            else {
                return Err(AppError::Forbidden(
                    "Your account is not a member of any workspace. Ask a workspace owner to invite you.".into(),
                ));
            };
            auth.workspace_id = home.get(0);
            auth.workspace_name = home.get(1);
            client
                .execute(
                    r#"UPDATE "Session" SET "currentWorkspaceId" = $2 WHERE "id" = $1"#,
                    &[&auth.session_id, &auth.workspace_id],
                )
                .await?;
        }
        Ok(auth)
    }
}

impl Auth {
    /// Refuses a form post whose CSRF token is not this session's (a forged or stale form).
    pub fn check_csrf(&self, submitted: &str) -> AppResult<()> {
        let expected = self.csrf_token.as_bytes();
        if submitted.len() == expected.len() && bool::from(submitted.as_bytes().ct_eq(expected)) {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "This form has expired or did not come from Data Hub. Reload the page and try again.".into(),
            ))
        }
    }
}

/// Creates a session in the user's home workspace, ending the one the browser came with
/// (`previous_token`), and returns the cookie to set.
pub async fn create(
    state: &AppState,
    user_id: &str,
    previous_token: Option<&str>,
) -> AppResult<Cookie<'static>> {
    let mut client = state.db.client().await?;
    let token = random_token();
    let previous = previous_token
        .map(|token| sha256_hex(token.as_bytes()))
        .unwrap_or_default();
    client
        .execute(
            CREATE_SQL,
            &[
                &sha256_hex(token.as_bytes()),
                &user_id,
                &random_token(),
                &IDLE.as_secs_f64(),
                &previous,
                &(MAX_PER_USER - 1),
            ],
        )
        .await?;
    Ok(cookie(state, token))
}

/// The session cookie: no `Max-Age`, so it ends with the browser; the server's clocks decide
/// how long the session itself lives.
fn cookie(state: &AppState, token: String) -> Cookie<'static> {
    Cookie::build((COOKIE_NAME, token))
        .path("/")
        .http_only(true)
        .secure(state.config.https())
        .same_site(SameSite::Lax)
        .build()
}

pub fn removal_cookie() -> Cookie<'static> {
    Cookie::build((COOKIE_NAME, "")).path("/").build()
}

/// Deletes the sessions that are over by either clock; returns how many.
pub async fn delete_expired(db: &Arc<Db>) -> AppResult<u64> {
    let mut client = db.client().await?;
    client
        .execute(DELETE_EXPIRED_SQL, &[&ABSOLUTE.as_secs_f64()])
        .await
}

/// `delete_expired` now and then every `period`. An outage is logged by `Db`, once.
pub async fn delete_expired_every(db: Arc<Db>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        match delete_expired(&db).await {
            Ok(0) | Err(AppError::Unavailable | AppError::Busy) => {}
            Ok(n) => tracing::info!(sessions = n, "expired sessions deleted"),
            Err(error) => tracing::warn!(?error, "cannot delete expired sessions"),
        }
    }
}
