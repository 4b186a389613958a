//! `/data`: a card per provider with status and 30-day headline metrics, the Master Chat, and
//! the workspace switcher.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::Serialize;

use crate::db::DbClient;
use crate::error::AppResult;
use crate::providers::PROVIDERS;
use crate::session::Auth;
use crate::AppState;
use datahub_core::format::{money_in, thousands};

/// Headline metrics of the 30 days ending at the workspace's latest metric.
const CARD_METRICS_SQL: &str = r#"
    WITH latest AS (SELECT max("date") AS d FROM "MetricDaily" WHERE "workspaceId" = $1)
    SELECT "provider", sum("impressions")::int8, sum("clicks")::int8, sum("spend")::float8,
           sum("conversions")::int8, to_char(max(latest.d), 'YYYY-MM-DD')
    FROM "MetricDaily", latest
    WHERE "workspaceId" = $1 AND "date" > latest.d - 30
    GROUP BY "provider""#;

pub const CONNECTIONS_SQL: &str = r#"
    SELECT "provider", bool_or("status" = 'CONNECTED'), max("accountName")
    FROM "Connection" WHERE "workspaceId" = $1
    GROUP BY "provider""#;

/// Newest first: the page stacks them bottom-up, so the latest message sits by the input.
const CHAT_SQL: &str = r#"
    SELECT "role"::text, "content", to_char("createdAt", 'YYYY-MM-DD HH24:MI')
    FROM "ChatMessage" WHERE "workspaceId" = $1
    ORDER BY "createdAt" DESC, "id" DESC LIMIT 20"#;

pub const MEMBERSHIPS_SQL: &str = r#"
    SELECT w."id", w."name", m."role"::text FROM "WorkspaceMember" m
    JOIN "Workspace" w ON w."id" = m."workspaceId"
    WHERE m."userId" = $1 ORDER BY w."name", w."id""#;

#[derive(Serialize)]
struct Card {
    slug: &'static str,
    name: &'static str,
    connected: bool,
    account: Option<String>,
    impressions: Option<String>,
    clicks: Option<String>,
    spend: Option<String>,
    conversions: Option<String>,
    has_metrics: bool,
}

#[derive(Serialize)]
struct Message {
    role: String,
    content: String,
    at: String,
}

#[derive(Serialize)]
pub struct Membership {
    pub id: String,
    pub name: String,
    pub role: String,
}

pub async fn show(State(state): State<AppState>, auth: Auth) -> AppResult<Response> {
    let mut client = state.db.client().await?;
    let metrics = client
        .query(CARD_METRICS_SQL, &[&auth.workspace_id])
        .await?;
    let connections = client.query(CONNECTIONS_SQL, &[&auth.workspace_id]).await?;
    let mut until = None;
    let cards: Vec<Card> = PROVIDERS
        .iter()
        .map(|p| {
            let metric = metrics.iter().find(|r| r.get::<_, String>(0) == p.slug);
            let connection = connections.iter().find(|r| r.get::<_, String>(0) == p.slug);
            if let Some(m) = metric {
                until = m.get::<_, Option<String>>(5);
            }
            Card {
                slug: p.slug,
                name: p.name,
                connected: connection.map(|c| c.get::<_, bool>(1)).unwrap_or(false),
                account: connection.and_then(|c| c.get(2)),
                // No row is no data, shown as such; a row's zero is a zero.
                impressions: metric.map(|m| thousands(m.get(1))),
                clicks: metric.map(|m| thousands(m.get(2))),
                spend: metric.map(|m| money_in(&state.config.currency, m.get::<_, f64>(3))),
                conversions: metric.map(|m| thousands(m.get(4))),
                has_metrics: metric.is_some(),
            }
        })
        .collect();
    let messages: Vec<Message> = client
        .query(CHAT_SQL, &[&auth.workspace_id])
        .await?
        .iter()
        .map(|r| Message {
            role: r.get(0),
            content: r.get(1),
            at: r.get(2),
        })
        .collect();
    let memberships = memberships(&mut client, &auth.user_id).await?;
    Ok(state
        .views
        .render(
            "overview.html",
            context! {
                auth => context! { user => auth.user_label, workspace => auth.workspace_name,
                                   workspace_id => auth.workspace_id, csrf => auth.csrf_token },
                memberships, cards, messages, until, currency => state.config.currency,
            },
        )?
        .into_response())
}

pub async fn memberships(client: &mut DbClient, user_id: &str) -> AppResult<Vec<Membership>> {
    Ok(client
        .query(MEMBERSHIPS_SQL, &[&user_id])
        .await?
        .iter()
        .map(|r| Membership {
            id: r.get(0),
            name: r.get(1),
            role: r.get(2),
        })
        .collect())
}
