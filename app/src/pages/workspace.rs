//! The workspace switcher: only to a workspace the user is a member of.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::ValidForm;
use crate::error::{AppError, AppResult};
use crate::session::Auth;
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct SwitchForm {
    csrf: String,
    workspace_id: String,
}

pub async fn switch(
    State(state): State<AppState>,
    auth: Auth,
    ValidForm(form): ValidForm<SwitchForm>,
) -> AppResult<Response> {
    auth.check_csrf(&form.csrf)?;
    let mut client = state.db.client().await?;
    // The membership check and the switch are one statement: no window between them.
    let switched = client
        .execute(
            r#"UPDATE "Session" s SET "currentWorkspaceId" = m."workspaceId"
               FROM "WorkspaceMember" m
               WHERE s."id" = $1 AND m."userId" = s."userId" AND m."workspaceId" = $2"#,
            &[&auth.session_id, &form.workspace_id],
        )
        .await?;
    if switched == 0 {
        return Err(AppError::Forbidden(
            "You are not a member of that workspace.".into(),
        ));
    }
    Ok(Redirect::to("/data").into_response())
}
