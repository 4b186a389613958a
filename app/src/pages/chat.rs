//! The Master Chat: a question and the assistant's answer, both stored in the workspace.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::ValidForm;
use crate::assistant;
use crate::error::{AppError, AppResult};
use crate::session::Auth;
use crate::AppState;

/// Counted in characters (not bytes); `MAX_BODY_BYTES` holds this many once urlencoded.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// The question and the answer as one statement (so both or neither), the answer a
/// millisecond later so the order is kept.
const INSERT_EXCHANGE_SQL: &str = r#"
    INSERT INTO "ChatMessage" ("id", "userId", "workspaceId", "role", "content", "createdAt")
    VALUES (gen_random_uuid()::text, $1, $2, 'user', $3, now()),
           (gen_random_uuid()::text, $1, $2, 'assistant', $4, now() + interval '1 millisecond')"#;

#[derive(Debug, Deserialize)]
pub struct ChatForm {
    csrf: String,
    message: String,
}

pub async fn send(
    State(state): State<AppState>,
    auth: Auth,
    ValidForm(form): ValidForm<ChatForm>,
) -> AppResult<Response> {
    auth.check_csrf(&form.csrf)?;
    let message = form.message.trim();
    if message.is_empty() {
        return Err(AppError::BadRequest(
            "Type a question for the assistant first.".into(),
        ));
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(AppError::BadRequest(format!(
            "Messages are limited to {MAX_MESSAGE_CHARS} characters."
        )));
    }
    let mut client = state.db.client().await?;
    let reply = assistant::reply(
        &mut client,
        &auth.workspace_id,
        &state.config.currency,
        message,
    )
    .await?;
    client
        .execute(
            INSERT_EXCHANGE_SQL,
            &[&auth.user_id, &auth.workspace_id, &message, &reply],
        )
        .await?;
    Ok(Redirect::to("/data#chat").into_response())
}
