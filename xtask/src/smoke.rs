//! `cargo xtask smoke`: the release checklist's 5-minute smoke test, automated. Starts the app
//! against the database on a free port (or tests a running app at `--url`), signs in as a smoke
//! user in a smoke workspace of its own, runs each check as one line, and removes what it made.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postgres::Client;
use serde_json::json;

use crate::app_build::AppBuild;
use crate::db::DatabaseUrl;
use crate::error::environment;
use crate::migrations::CONTRACT;
use crate::seed::PROVIDERS;
use crate::tables::{columns, Column};

const SMOKE_USER: &str = "datahub_smoke_user";
const SMOKE_EMAIL: &str = "smoke@datahub.invalid";
const SMOKE_WORKSPACE: &str = "datahub_smoke_workspace";

#[derive(Debug, Clone, Default)]
pub struct SmokeOptions {
    /// Test an app that is already running here instead of starting one.
    pub url: Option<String>,
    /// The app binary to start (default: `DATAHUB_APP_BIN`, else `cargo build -p app`).
    pub app_bin: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct SmokeReport {
    pub checks: Vec<Check>,
    pub duration: Duration,
}

impl SmokeReport {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&format!(
                "{} {}: {}\n",
                if check.ok { "✅" } else { "❌" },
                check.name,
                check.detail
            ));
        }
        let n_ok = self.checks.iter().filter(|c| c.ok).count();
        out.push_str(&format!(
            "smoke: {n_ok} of {} checks passed in {:.1} s{}\n",
            self.checks.len(),
            self.duration.as_secs_f64(),
            if self.passed() {
                String::new()
            } else {
                ". Fix what the failing check names, then run `cargo xtask smoke` again".to_string()
            }
        ));
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "passed": self.passed(),
            "seconds": self.duration.as_secs_f64(),
            "checks": self.checks.iter().map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
        })
    }
}

struct Checks(Vec<Check>);

impl Checks {
    fn record(&mut self, name: &str, result: Result<String>) -> bool {
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(error) => (false, format!("{error:#}")),
        };
        eprintln!("{} {name}: {detail}", if ok { "✅" } else { "❌" });
        self.0.push(Check {
            name: name.to_string(),
            ok,
            detail,
        });
        ok
    }
}

pub fn smoke(
    client: &mut Client,
    url: &DatabaseUrl,
    options: &SmokeOptions,
) -> Result<SmokeReport> {
    let started = Instant::now();
    let mut checks = Checks(Vec::new());
    checks.record("contract applied", contract_applied(client));
    let password = crate::password::random();
    let fixtures = create_fixtures(client, &password);
    let fixtures_ok = checks.record("smoke user and workspace", fixtures);
    if fixtures_ok {
        let run = run_against_app(client, url, options, &password, &mut checks);
        if let Err(error) = run {
            checks.record("app", Err(error));
        }
    }
    if let Err(error) = remove_fixtures(client) {
        checks.record("clean up", Err(error));
    }
    Ok(SmokeReport {
        checks: checks.0,
        duration: started.elapsed(),
    })
}

fn contract_applied(client: &mut Client) -> Result<String> {
    let missing: Vec<String> = columns(client)?
        .into_iter()
        .filter(|(_, column)| *column != Column::NotNull)
        .map(|(table, _)| table)
        .collect();
    if missing.is_empty() {
        Ok("workspaceId is NOT NULL on all 4 Data Hub tables".into())
    } else {
        anyhow::bail!(
            "workspaceId is not NOT NULL on {}; run `cargo xtask migrate deploy` (contract `{CONTRACT}`)",
            missing.join(", ")
        )
    }
}

fn create_fixtures(client: &mut Client, password: &str) -> Result<String> {
    let hash = crate::password::hash(password)?;
    let mut tx = client.transaction()?;
    tx.execute(
        r#"INSERT INTO "User" ("id", "email", "name", "passwordHash") VALUES ($1, $2, 'Smoke test', $3)
           ON CONFLICT ("id") DO UPDATE SET "passwordHash" = EXCLUDED."passwordHash""#,
        &[&SMOKE_USER, &SMOKE_EMAIL, &hash],
    )?;
    tx.execute(
        r#"INSERT INTO "Workspace" ("id", "name", "slug") VALUES ($1, 'Smoke test', 'datahub-smoke') ON CONFLICT DO NOTHING"#,
        &[&SMOKE_WORKSPACE],
    )?;
    tx.execute(
        r#"INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role") VALUES ($1, $2, $3, 'OWNER') ON CONFLICT DO NOTHING"#,
        &[&"datahub_smoke_member", &SMOKE_WORKSPACE, &SMOKE_USER],
    )?;
    tx.execute(
        r#"INSERT INTO "MetricDaily" ("id", "userId", "workspaceId", "provider", "date", "impressions", "clicks", "spend", "conversions")
           SELECT 'datahub_smoke_metric_' || d, $1, $2, 'google-ads', current_date - d, 1000 + d * 10, 50 + d, 25.5 + d, d % 4
           FROM generate_series(0, 13) d ON CONFLICT DO NOTHING"#,
        &[&SMOKE_USER, &SMOKE_WORKSPACE],
    )?;
    tx.execute(
        r#"INSERT INTO "Insight" ("id", "userId", "workspaceId", "provider", "title", "body", "severity")
           VALUES ('datahub_smoke_insight', $1, $2, 'google-ads', 'Smoke insight: spend steady', 'Seeded by cargo xtask smoke.', 'info')
           ON CONFLICT DO NOTHING"#,
        &[&SMOKE_USER, &SMOKE_WORKSPACE],
    )?;
    tx.commit()?;
    Ok(format!(
        "`{SMOKE_EMAIL}` in workspace `{SMOKE_WORKSPACE}` with 14 days of Google Ads metrics"
    ))
}

/// Everything the smoke test made hangs off its user and workspace: deleting both cascades.
fn remove_fixtures(client: &mut Client) -> Result<()> {
    client.execute(
        r#"DELETE FROM "Workspace" WHERE "id" = $1"#,
        &[&SMOKE_WORKSPACE],
    )?;
    client.execute(r#"DELETE FROM "User" WHERE "id" = $1"#, &[&SMOKE_USER])?;
    Ok(())
}

struct RunningApp {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_against_app(
    client: &mut Client,
    url: &DatabaseUrl,
    options: &SmokeOptions,
    password: &str,
    checks: &mut Checks,
) -> Result<()> {
    let (base, app) = match &options.url {
        Some(base) => (base.trim_end_matches('/').to_string(), None),
        None => {
            let app = start_app(url, options)?;
            (app.0, Some(app.1))
        }
    };
    let http = Http::new(&base);
    let cookie = match http.login(password) {
        Ok(cookie) => {
            checks.record("sign in", Ok(format!("`{SMOKE_EMAIL}` signed in")));
            cookie
        }
        Err(error) => {
            checks.record("sign in", Err(error));
            return Ok(());
        }
    };
    checks.record("/data", check_overview(&http, &cookie));
    checks.record("/data/google-ads", check_provider_page(&http, &cookie));
    checks.record("chat", check_chat(&http, &cookie, client));
    checks.record("connect and disconnect", check_connect(&http, &cookie));
    if let Some(app) = app {
        // Give the app a moment to flush its last log lines.
        std::thread::sleep(Duration::from_millis(100));
        checks.record("app log", check_log(&app.log.lock().unwrap()));
    }
    Ok(())
}

fn start_app(url: &DatabaseUrl, options: &SmokeOptions) -> Result<(String, RunningApp)> {
    let bin = match &options.app_bin {
        Some(bin) => bin.clone(),
        None => AppBuild::from_env(false).build()?.path,
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}");
    let mut child = Command::new(&bin)
        .args(["--listen", &address])
        .env("DATABASE_URL", url.raw())
        .env("APP_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| environment(format!("cannot start the app `{}`: {e}", bin.display())))?;
    let log = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }
    let app = RunningApp { child, log };
    let base = format!("http://{address}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = ureq::get(&format!("{base}/healthz"))
            .timeout(Duration::from_secs(2))
            .call()
        {
            if response.status() == 200 {
                break;
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the app did not answer /healthz within 30 s; its log:\n{}",
                app.log.lock().unwrap().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((base, app))
}

struct Http {
    base: String,
    agent: ureq::Agent,
}

struct Page {
    status: u16,
    location: String,
    cookies: Vec<String>,
    body: String,
}

impl Http {
    fn new(base: &str) -> Http {
        Http {
            base: base.to_string(),
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(15))
                .build(),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        form: Option<&[(&str, &str)]>,
    ) -> Result<Page> {
        let mut request = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(cookie) = cookie {
            request = request.set("Cookie", cookie);
        }
        let result = match form {
            Some(form) => request.send_form(form),
            None => request.call(),
        };
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(error) => return Err(anyhow::anyhow!("{method} {path}: {error}")),
        };
        Ok(Page {
            status: response.status(),
            location: response.header("location").unwrap_or("").to_string(),
            cookies: response
                .all("set-cookie")
                .iter()
                .map(|c| c.to_string())
                .collect(),
            body: response.into_string().unwrap_or_default(),
        })
    }

    fn get(&self, path: &str, cookie: &str) -> Result<Page> {
        self.send("GET", path, Some(cookie), None)
    }

    fn login(&self, password: &str) -> Result<String> {
        let page = self.send(
            "POST",
            "/login",
            None,
            Some(&[("email", SMOKE_EMAIL), ("password", password)]),
        )?;
        let cookie = page
            .cookies
            .iter()
            .find_map(|c| {
                c.split(';')
                    .next()
                    .filter(|kv| kv.starts_with("datahub_session="))
            })
            .map(str::to_string);
        match (page.status, cookie) {
            (303, Some(cookie)) => Ok(cookie),
            (status, _) => {
                anyhow::bail!("POST /login answered {status}, not a redirect with a session cookie")
            }
        }
    }
}

fn expect_ok(page: &Page, path: &str) -> Result<()> {
    if page.status != 200 {
        anyhow::bail!("GET {path} answered {} (expected 200)", page.status);
    }
    Ok(())
}

fn csrf_of(body: &str) -> Result<String> {
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).context("no CSRF token on the page")? + marker.len();
    let end = body[start..].find('"').context("unterminated CSRF token")?;
    Ok(body[start..start + end].to_string())
}

fn check_overview(http: &Http, cookie: &str) -> Result<String> {
    let page = http.get("/data", cookie)?;
    expect_ok(&page, "/data")?;
    let missing: Vec<&str> = PROVIDERS
        .iter()
        .copied()
        .filter(|slug| !page.body.contains(&format!("data-provider=\"{slug}\"")))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!("provider cards missing: {}", missing.join(", "));
    }
    // The smoke workspace's Google Ads clicks over 14 days: sum of 50 + d for d in 0..14.
    let expected_clicks = (0..14).map(|d| 50 + d).sum::<i32>().to_string();
    if !page
        .body
        .contains(&format!("<div class=\"value\">{expected_clicks}</div>"))
    {
        anyhow::bail!("the Google Ads card does not show the workspace's {expected_clicks} clicks");
    }
    Ok(format!(
        "{} provider cards, Google Ads card shows {expected_clicks} clicks",
        PROVIDERS.len()
    ))
}

fn check_provider_page(http: &Http, cookie: &str) -> Result<String> {
    let page = http.get("/data/google-ads", cookie)?;
    expect_ok(&page, "/data/google-ads")?;
    let bars = page.body.matches("<rect ").count();
    if !page.body.contains("<svg") || bars == 0 {
        anyhow::bail!("no metrics chart on the page");
    }
    if !page.body.contains("Smoke insight: spend steady") {
        anyhow::bail!("the insights list does not show the workspace's insight");
    }
    Ok(format!("chart with {bars} daily bars, insights listed"))
}

fn check_chat(http: &Http, cookie: &str, client: &mut Client) -> Result<String> {
    let page = http.get("/data", cookie)?;
    let csrf = csrf_of(&page.body)?;
    let sent = http.send(
        "POST",
        "/chat",
        Some(cookie),
        Some(&[("csrf", &csrf), ("message", "Show me my Google Ads data")]),
    )?;
    if sent.status != 303 {
        anyhow::bail!("POST /chat answered {}", sent.status);
    }
    let reply: Option<String> = client
        .query_opt(
            r#"SELECT "content" FROM "ChatMessage" WHERE "workspaceId" = $1 AND "role" = 'assistant'
               ORDER BY "createdAt" DESC LIMIT 1"#,
            &[&SMOKE_WORKSPACE],
        )?
        .map(|r| r.get(0));
    let reply = reply.context("no assistant reply was stored")?;
    let page = http.get("/data", cookie)?;
    if !page.body.contains(&escape_html(&reply)) {
        anyhow::bail!("the assistant's reply is not shown on /data");
    }
    Ok(format!("assistant replied: \"{reply}\""))
}

fn check_connect(http: &Http, cookie: &str) -> Result<String> {
    let path = "/data/tiktok-ads";
    let status_of = |body: &str| -> &'static str {
        if body.contains("id=\"connection-status\">Connected") {
            "Connected"
        } else {
            "Not connected"
        }
    };
    let page = http.get(path, cookie)?;
    expect_ok(&page, path)?;
    let csrf = csrf_of(&page.body)?;
    for (action, expected) in [("connect", "Connected"), ("disconnect", "Not connected")] {
        let posted = http.send(
            "POST",
            &format!("{path}/{action}"),
            Some(cookie),
            Some(&[("csrf", &csrf)]),
        )?;
        if posted.status != 303 || posted.location != path {
            anyhow::bail!(
                "POST {path}/{action} answered {} (expected a redirect to {path})",
                posted.status
            );
        }
        let page = http.get(path, cookie)?;
        if status_of(&page.body) != expected {
            anyhow::bail!(
                "after {action} the status is `{}`, expected `{expected}`",
                status_of(&page.body)
            );
        }
    }
    Ok("TikTok Ads: Connected, then Not connected".into())
}

fn check_log(lines: &[String]) -> Result<String> {
    let bad: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains("ERROR")
                || l.contains("violates")
                || l.contains("workspaceId")
                || l.contains("panicked")
        })
        .collect();
    if bad.is_empty() {
        Ok(format!(
            "{} lines, no errors, no constraint violations, nothing about workspaceId",
            lines.len()
        ))
    } else {
        anyhow::bail!(
            "{} problem line(s) in the app log, first: {}",
            bad.len(),
            bad[0]
        )
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}
