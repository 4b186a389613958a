//! The Master Chat assistant: answers from the workspace's own metrics, for the provider the
//! question names or for all of them. Every query is scoped by `workspaceId`.

use datahub_core::format::{money_in, thousands};

use crate::db::DbClient;
use crate::error::AppResult;

use crate::providers::{self, Provider, PROVIDERS};

/// Totals of a 30-day window ending at the workspace's latest metric, and of the 30 days before.
const TOTALS_SQL: &str = r#"
    WITH latest AS (SELECT max("date") AS d FROM "MetricDaily" WHERE "workspaceId" = $1)
    SELECT "provider",
           sum("spend") FILTER (WHERE "date" > latest.d - 30)::float8,
           sum("clicks") FILTER (WHERE "date" > latest.d - 30)::int8,
           sum("conversions") FILTER (WHERE "date" > latest.d - 30)::int8,
           sum("spend") FILTER (WHERE "date" <= latest.d - 30)::float8,
           to_char(latest.d, 'YYYY-MM-DD')
    FROM "MetricDaily", latest
    WHERE "workspaceId" = $1 AND "date" > latest.d - 60
    GROUP BY "provider", latest.d
    ORDER BY "provider""#;

struct Totals {
    provider: String,
    spend: f64,
    clicks: i64,
    conversions: i64,
    previous_spend: f64,
    until: String,
}

/// The answer to `question`, every amount in `currency` and every number formatted as on the
/// cards and the chart.
pub async fn reply(
    client: &mut DbClient,
    workspace_id: &str,
    currency: &str,
    question: &str,
) -> AppResult<String> {
    let rows = client.query(TOTALS_SQL, &[&workspace_id]).await?;
    let totals: Vec<Totals> = rows
        .iter()
        .map(|r| Totals {
            provider: r.get(0),
            spend: r.get::<_, Option<f64>>(1).unwrap_or(0.0),
            clicks: r.get::<_, Option<i64>>(2).unwrap_or(0),
            conversions: r.get::<_, Option<i64>>(3).unwrap_or(0),
            previous_spend: r.get::<_, Option<f64>>(4).unwrap_or(0.0),
            until: r.get(5),
        })
        .collect();
    Ok(match providers::mentioned_in(question) {
        Some(provider) => about_provider(provider, &totals, currency),
        None => about_all(&totals, currency),
    })
}

fn about_provider(provider: Provider, totals: &[Totals], currency: &str) -> String {
    let Some(t) = totals.iter().find(|t| t.provider == provider.slug) else {
        return format!(
            "There are no {} metrics in this workspace yet. Connect {} on its page and the next sync brings them in.",
            provider.name, provider.name
        );
    };
    let per_conversion = if t.conversions > 0 {
        format!(
            ", {} per conversion",
            money_in(currency, t.spend / t.conversions as f64)
        )
    } else {
        String::new()
    };
    format!(
        "{}, 30 days to {}: spend {} ({}), {} clicks, {} conversions{}.",
        provider.name,
        t.until,
        money_in(currency, t.spend),
        trend(t.spend, t.previous_spend),
        thousands(t.clicks),
        thousands(t.conversions),
        per_conversion
    )
}

fn about_all(totals: &[Totals], currency: &str) -> String {
    if totals.is_empty() {
        return "This workspace has no metrics yet. Connect a provider to get started.".into();
    }
    let spend: f64 = totals.iter().map(|t| t.spend).sum();
    let previous: f64 = totals.iter().map(|t| t.previous_spend).sum();
    let clicks: i64 = totals.iter().map(|t| t.clicks).sum();
    let conversions: i64 = totals.iter().map(|t| t.conversions).sum();
    let best = totals.iter().max_by_key(|t| t.conversions).and_then(|t| {
        PROVIDERS
            .iter()
            .find(|p| p.slug == t.provider)
            .map(|p| (p.name, t.conversions))
    });
    let mut text = format!(
        "All providers, 30 days to {}: spend {} ({}), {} clicks, {} conversions.",
        totals[0].until,
        money_in(currency, spend),
        trend(spend, previous),
        thousands(clicks),
        thousands(conversions)
    );
    if let Some((name, n)) = best {
        text.push_str(&format!(" Most conversions: {name} ({}).", thousands(n)));
    }
    text
}

fn trend(current: f64, previous: f64) -> String {
    if previous <= 0.0 {
        return "no earlier period to compare".into();
    }
    let change = (current - previous) / previous * 100.0;
    format!("{change:+.1}% vs the 30 days before")
}
