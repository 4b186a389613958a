//! Sessions: a random token in an HttpOnly, SameSite=Lax cookie, stored only as its SHA-256 in
//! `Session`, bound to a user and a current workspace the user is a member of. Every form post
//! carries the session's CSRF token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use subtle::ConstantTimeEq;

use crate::error::{AppError, AppResult};
use crate::AppState;
use datahub_core::password::{random_token, sha256_hex};
use datahub_core::SESSION_COOKIE as COOKIE_NAME;
const SESSION_DAYS: i64 = 14;

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

/// The session of a token, with its workspace only while the user is still a member of it.
const SESSION_SQL: &str = r#"
    SELECT s."id", s."userId", coalesce(u."name", u."email"), m."workspaceId", w."name", s."csrfToken"
    FROM "Session" s
    JOIN "User" u ON u."id" = s."userId"
    LEFT JOIN "WorkspaceMember" m ON m."workspaceId" = s."currentWorkspaceId" AND m."userId" = s."userId"
    LEFT JOIN "Workspace" w ON w."id" = m."workspaceId"
    WHERE s."tokenHash" = $1 AND s."expiresAt" > now()"#;

/// The user's home workspace: earliest OWNER membership, else earliest membership.
pub const HOME_WORKSPACE_SQL: &str = r#"
    SELECT m."workspaceId", w."name" FROM "WorkspaceMember" m JOIN "Workspace" w ON w."id" = m."workspaceId"
    WHERE m."userId" = $1
    ORDER BY (m."role" = 'OWNER') DESC, m."createdAt", m."id"
    LIMIT 1"#;

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> AppResult<Auth> {
        let jar = CookieJar::from_headers(&parts.headers);
        let Some(token) = jar.get(COOKIE_NAME).map(|c| c.value().to_string()) else {
            return Err(AppError::LoginRequired);
        };
        let client = state.pool.get().await?;
        let Some(row) = client
            .query_opt(SESSION_SQL, &[&sha256_hex(token.as_bytes())])
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

/// Creates a session in the user's home workspace and returns the cookie to set.
pub async fn create(state: &AppState, user_id: &str) -> AppResult<Cookie<'static>> {
    let client = state.pool.get().await?;
    let home: Option<String> = client
        .query_opt(HOME_WORKSPACE_SQL, &[&user_id])
        .await?
        .map(|row| row.get(0));
    let token = random_token();
    client
        .execute(
            r#"INSERT INTO "Session" ("id", "tokenHash", "userId", "currentWorkspaceId", "csrfToken", "expiresAt")
               VALUES (gen_random_uuid()::text, $1, $2, $3, $4, now() + make_interval(days => $5::int))"#,
            &[
                &sha256_hex(token.as_bytes()),
                &user_id,
                &home,
                &random_token(),
                &(SESSION_DAYS as i32),
            ],
        )
        .await?;
    Ok(Cookie::build((COOKIE_NAME, token))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::days(SESSION_DAYS))
        .build())
}

pub fn removal_cookie() -> Cookie<'static> {
    Cookie::build((COOKIE_NAME, "")).path("/").build()
}
