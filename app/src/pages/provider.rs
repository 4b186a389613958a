//! `/data/<provider>`: the daily metrics chart, the insights list, connect and disconnect.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::context;
use serde::Serialize;

use super::{CsrfOnly, ValidForm};
use crate::chart::{self, DailyPoint};
use crate::error::{AppError, AppResult};
use crate::providers::{self, Provider};
use crate::session::Auth;
use crate::AppState;
use datahub_core::format::{money_in, thousands};

/// Spend and clicks per day, the 30 days ending at this provider's latest metric.
const DAILY_SQL: &str = r#"
    WITH latest AS (SELECT max("date") AS d FROM "MetricDaily" WHERE "workspaceId" = $1 AND "provider" = $2)
    SELECT to_char("date", 'YYYY-MM-DD'), sum("spend")::float8, sum("clicks")::int8
    FROM "MetricDaily", latest
    WHERE "workspaceId" = $1 AND "provider" = $2 AND "date" > latest.d - 30
    GROUP BY "date" ORDER BY "date""#;

const INSIGHTS_SQL: &str = r#"
    SELECT "title", "body", "severity", to_char("createdAt", 'YYYY-MM-DD')
    FROM "Insight" WHERE "workspaceId" = $1 AND "provider" = $2
    ORDER BY "createdAt" DESC, "id" LIMIT 20"#;

const CONNECTION_SQL: &str = r#"
    SELECT coalesce(bool_or("status" = 'CONNECTED'), false), max("accountName")
    FROM "Connection" WHERE "workspaceId" = $1 AND "provider" = $2"#;

#[derive(Serialize)]
struct InsightView {
    title: String,
    body: String,
    severity: String,
    /// What the severity asks of the reader, in words.
    meaning: &'static str,
    date: String,
}

/// What each severity asks of a marketer reading it.
pub fn severity_meaning(severity: &str) -> &'static str {
    match severity {
        "critical" => "Act now",
        "warning" => "Worth a look",
        _ => "For your information",
    }
}

fn known(slug: &str) -> AppResult<Provider> {
    providers::by_slug(slug).ok_or_else(|| {
        AppError::NotFound(
            "Data Hub does not know that provider. Pick one on the overview page.".into(),
        )
    })
}

pub async fn show(
    State(state): State<AppState>,
    auth: Auth,
    Path(slug): Path<String>,
) -> AppResult<Response> {
    let provider = known(&slug)?;
    let mut client = state.db.client().await?;
    let points: Vec<DailyPoint> = client
        .query(DAILY_SQL, &[&auth.workspace_id, &provider.slug])
        .await?
        .iter()
        .map(|r| DailyPoint::new(r.get(0), r.get(1), r.get(2)))
        .collect();
    let insights: Vec<InsightView> = client
        .query(INSIGHTS_SQL, &[&auth.workspace_id, &provider.slug])
        .await?
        .iter()
        .map(|r| InsightView {
            title: r.get(0),
            body: r.get(1),
            meaning: severity_meaning(&r.get::<_, String>(2)),
            severity: r.get(2),
            date: r.get(3),
        })
        .collect();
    let connection = client
        .query_one(CONNECTION_SQL, &[&auth.workspace_id, &provider.slug])
        .await?;
    let connected: bool = connection.get(0);
    let account: Option<String> = connection.get(1);
    let total_spend: f64 = points.iter().filter_map(|p| p.spend).sum();
    let total_clicks: i64 = points.iter().map(|p| p.clicks).sum();
    Ok(state
        .views
        .render(
            "provider.html",
            context! {
                auth => context! { user => auth.user_label, workspace => auth.workspace_name, csrf => auth.csrf_token },
                provider => context! { slug => provider.slug, name => provider.name },
                chart => chart::build(&points, &state.config.currency), insights, connected, account,
                total_spend => money_in(&state.config.currency, total_spend),
                total_clicks => thousands(total_clicks), days => points.len(),
                unrecorded => points.iter().filter(|p| p.spend.is_none()).count(),
            },
        )?
        .into_response())
}

pub async fn connect(
    State(state): State<AppState>,
    auth: Auth,
    Path(slug): Path<String>,
    ValidForm(form): ValidForm<CsrfOnly>,
) -> AppResult<Response> {
    let provider = known(&slug)?;
    auth.check_csrf(&form.csrf)?;
    let mut client = state.db.client().await?;
    let updated = client
        .execute(
            r#"UPDATE "Connection" SET "status" = 'CONNECTED', "connectedAt" = now(), "updatedAt" = now()
               WHERE "workspaceId" = $1 AND "provider" = $2"#,
            &[&auth.workspace_id, &provider.slug],
        )
        .await?;
    if updated == 0 {
        // The key is ("workspaceId", "userId", "provider"): a user connects a provider once per
        // workspace. ON CONFLICT names no key, so this also runs on a database that still has
        // the pre-tenancy key ("userId", "provider"); there that key refuses a second workspace,
        // told apart below from a concurrent connect of this same workspace, which is done.
        let inserted = client
            .execute(
                r#"INSERT INTO "Connection" ("id", "userId", "workspaceId", "provider", "status", "accountName", "connectedAt", "updatedAt")
                   VALUES (gen_random_uuid()::text, $1, $2, $3, 'CONNECTED', $4, now(), now())
                   ON CONFLICT DO NOTHING"#,
                &[
                    &auth.user_id,
                    &auth.workspace_id,
                    &provider.slug,
                    &format!("{} account", provider.name),
                ],
            )
            .await?;
        let connected_here = inserted > 0
            || client
                .query_opt(
                    r#"SELECT 1 FROM "Connection" WHERE "workspaceId" = $1 AND "provider" = $2"#,
                    &[&auth.workspace_id, &provider.slug],
                )
                .await?
                .is_some();
        if !connected_here {
            return Err(AppError::Conflict(format!(
                "{} is already connected in another of your workspaces, and this server's database allows one connection per user until its latest migrations are applied. Ask your administrator to apply them.",
                provider.name
            )));
        }
    }
    tracing::info!(workspace = %auth.workspace_id, provider = provider.slug, "connected");
    Ok(Redirect::to(&format!("/data/{}", provider.slug)).into_response())
}

pub async fn disconnect(
    State(state): State<AppState>,
    auth: Auth,
    Path(slug): Path<String>,
    ValidForm(form): ValidForm<CsrfOnly>,
) -> AppResult<Response> {
    let provider = known(&slug)?;
    auth.check_csrf(&form.csrf)?;
    let mut client = state.db.client().await?;
    client
        .execute(
            r#"UPDATE "Connection" SET "status" = 'DISCONNECTED', "updatedAt" = now()
               WHERE "workspaceId" = $1 AND "provider" = $2"#,
            &[&auth.workspace_id, &provider.slug],
        )
        .await?;
    tracing::info!(workspace = %auth.workspace_id, provider = provider.slug, "disconnected");
    Ok(Redirect::to(&format!("/data/{}", provider.slug)).into_response())
}
