//! The Master Chat: a question and the assistant's answer, both stored in the workspace.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::ValidForm;
use crate::assistant;
use crate::error::{AppError, AppResult};
use crate::session::Auth;
use crate::AppState;

pub const MAX_MESSAGE_CHARS: usize = 2000;

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
    let mut client = state.pool.get().await?;
    let reply = assistant::reply(&client, &auth.workspace_id, message).await?;
    let transaction = client.transaction().await?;
    for (role, content, offset_ms) in [("user", message, 0), ("assistant", reply.as_str(), 1)] {
        transaction
            .execute(
                r#"INSERT INTO "ChatMessage" ("id", "userId", "workspaceId", "role", "content", "createdAt")
                   VALUES (gen_random_uuid()::text, $1, $2, $3::text::"ChatRole", $4, now() + make_interval(secs => $5::float8 / 1000))"#,
                &[
                    &auth.user_id,
                    &auth.workspace_id,
                    &role,
                    &content,
                    &f64::from(offset_ms),
                ],
            )
            .await?;
    }
    transaction.commit().await?;
    Ok(Redirect::to("/data#chat").into_response())
}
