//! The seed's 5-minute smoke test, one check per item: what a person would click and look at.

use crate::db::Client;
use anyhow::{bail, Context, Result};

use super::fixtures::{Fixtures, EXPECTED_CLICKS, INSIGHT_TITLE};
use super::http::{csrf_of, Http, Response};
use crate::report::thousands;
use crate::tenancy::{self, Column, CONTRACT};
use datahub_core::providers::PROVIDERS;

/// The contract is applied: `workspaceId` is NOT NULL on every table.
pub(crate) fn contract_applied(client: &mut Client) -> Result<String> {
    let missing: Vec<String> = tenancy::columns(client)?
        .into_iter()
        .filter(|(_, column)| *column != Column::NotNull)
        .map(|(table, _)| table)
        .collect();
    if missing.is_empty() {
        Ok("workspaceId is NOT NULL on all 4 Data Hub tables".into())
    } else {
        bail!(
            "`workspaceId` is not NOT NULL on {}: run `cargo xtask migrate deploy` (contract `{CONTRACT}`)",
            missing.join(", ")
        )
    }
}

/// Signs in as the run's user; returns the session cookie (`name=value`).
pub(crate) fn sign_in(http: &Http, fixtures: &Fixtures) -> Result<String> {
    let page = http.post_form(
        "/login",
        None,
        &[("email", &fixtures.email), ("password", &fixtures.password)],
    )?;
    match (page.status, page.cookie(datahub_core::SESSION_COOKIE)) {
        (303, Some(cookie)) => Ok(cookie),
        (status, _) => {
            bail!("POST /login answered {status}, not a redirect with a session cookie")
        }
    }
}

fn expect_ok(page: &Response, path: &str) -> Result<()> {
    if page.status != 200 {
        bail!("GET {path} answered {} (expected 200)", page.status);
    }
    Ok(())
}

pub(crate) fn overview(http: &Http, cookie: &str) -> Result<String> {
    let page = http.get("/data", Some(cookie))?;
    expect_ok(&page, "/data")?;
    let missing: Vec<&str> = PROVIDERS
        .iter()
        .map(|p| p.slug)
        .filter(|slug| !page.body.contains(&format!("data-provider=\"{slug}\"")))
        .collect();
    if !missing.is_empty() {
        bail!("provider cards missing: {}", missing.join(", "));
    }
    let clicks = thousands(EXPECTED_CLICKS);
    if !page
        .body
        .contains(&format!("<div class=\"value\">{clicks}</div>"))
    {
        bail!("the Google Ads card does not show the workspace's {clicks} clicks");
    }
    Ok(format!(
        "{} provider cards, Google Ads card shows {clicks} clicks",
        PROVIDERS.len()
    ))
}

pub(crate) fn provider_page(http: &Http, cookie: &str) -> Result<String> {
    let page = http.get("/data/google-ads", Some(cookie))?;
    expect_ok(&page, "/data/google-ads")?;
    let bars = page.body.matches("<rect ").count();
    if !page.body.contains("<svg") || bars == 0 {
        bail!("no metrics chart on the page");
    }
    if !page.body.contains(INSIGHT_TITLE) {
        bail!("the insights list does not show the workspace's insight");
    }
    Ok(format!("chart with {bars} daily bars, insights listed"))
}

pub(crate) fn chat(
    http: &Http,
    cookie: &str,
    client: &mut Client,
    fixtures: &Fixtures,
) -> Result<String> {
    let page = http.get("/data", Some(cookie))?;
    let csrf = csrf_of(&page.body)?;
    let sent = http.post_form(
        "/chat",
        Some(cookie),
        &[("csrf", &csrf), ("message", "Show me my Google Ads data")],
    )?;
    if sent.status != 303 {
        bail!("POST /chat answered {}", sent.status);
    }
    let reply: String = client
        .query_opt(
            r#"SELECT "content" FROM "ChatMessage" WHERE "workspaceId" = $1 AND "role" = 'assistant'
               ORDER BY "createdAt" DESC LIMIT 1"#,
            &[&fixtures.workspace_id],
        )
        .context("cannot read the assistant's reply")?
        .map(|row| row.get(0))
        .context("no assistant reply was stored")?;
    // The page escapes HTML; the part of the reply before any character it would escape
    // appears as it is.
    let visible: &str = reply
        .split(['<', '>', '&', '"', '\''])
        .next()
        .unwrap_or_default();
    let page = http.get("/data", Some(cookie))?;
    if visible.is_empty() || !page.body.contains(visible) {
        bail!("the assistant's reply is not shown on /data");
    }
    Ok(format!("assistant replied: \"{reply}\""))
}

pub(crate) fn connect_and_disconnect(http: &Http, cookie: &str) -> Result<String> {
    let path = "/data/tiktok-ads";
    let status_of = |body: &str| -> &'static str {
        if body.contains("id=\"connection-status\">Connected") {
            "Connected"
        } else {
            "Not connected"
        }
    };
    let page = http.get(path, Some(cookie))?;
    expect_ok(&page, path)?;
    let csrf = csrf_of(&page.body)?;
    for (action, expected) in [("connect", "Connected"), ("disconnect", "Not connected")] {
        let posted = http.post_form(
            &format!("{path}/{action}"),
            Some(cookie),
            &[("csrf", &csrf)],
        )?;
        if posted.status != 303 || posted.location() != path {
            bail!(
                "POST {path}/{action} answered {} (expected a redirect to {path})",
                posted.status
            );
        }
        let page = http.get(path, Some(cookie))?;
        if status_of(&page.body) != expected {
            bail!(
                "after {action} the status is `{}`, expected `{expected}`",
                status_of(&page.body)
            );
        }
    }
    Ok("TikTok Ads: Connected, then Not connected".into())
}

/// The app's log: no errors, no constraint violations, nothing about `workspaceId`.
pub(crate) fn log(lines: &[String]) -> Result<String> {
    let bad: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains("ERROR")
                || l.contains("violates")
                || l.contains("workspaceId")
                || l.contains("panicked")
        })
        .collect();
    match bad.first() {
        None => Ok(format!(
            "{} lines, no errors, no constraint violations, nothing about workspaceId",
            lines.len()
        )),
        Some(first) => bail!(
            "{} problem line(s) in the app log, first: {first}",
            bad.len()
        ),
    }
}
