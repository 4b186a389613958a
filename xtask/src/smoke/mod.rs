//! `cargo xtask smoke`: the release checklist's 5-minute smoke test, automated. Starts the app
//! against the database on a free port (or tests a running app at `--url`), signs in as a smoke
//! user in a smoke workspace of its own, runs each check as one line, and removes what it made.

mod app;
pub mod browser;
mod checks;
mod fixtures;
pub mod http;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::Result;
use pico_args::Arguments;
use serde_json::json;

use crate::app_build::AppBuild;
use crate::cli::{self, Globals};
use crate::db::{Connect, DatabaseUrl};
use crate::error::Outcome;
use crate::report::{self, Report, Style};
use fixtures::Fixtures;

pub(crate) const SUMMARY: &str = "the release checklist's smoke test against the app, automated";

pub(crate) const HELP: &str = "\
cargo xtask smoke [--url URL] [--app-bin PATH] [--browser] [--json]
Builds and starts the app on a free port against the database (or tests the app at --url,
which must use the same database), signs in as a smoke user in a smoke workspace of its own,
and checks /data, /data/google-ads, the chat, connect/disconnect and the app's log. Everything
it creates is removed afterwards. Exit 0 only when every check passes.
--browser: the same in headless Chromium or Google Chrome (CHROME and CHROMEDRIVER name them
when they are not on PATH), switching workspaces too; a console error or a Content-Security-Policy violation fails it, and each page
is saved as a PNG under target/xtask/smoke-browser/.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let browser = args.contains("--browser");
    let url = cli::text(&mut args, "--url")?;
    let app_bin: Option<PathBuf> = args
        .opt_value_from_str("--app-bin")
        .map_err(cli::parse_error)?;
    cli::finish(args, "smoke")?;
    if let Some(url) = &url {
        http::Http::new(url).map_err(|e| crate::error::usage(format!("`--url`: {e}")))?;
    }
    let database = globals.url()?;
    let mut client = database.connect()?;
    if let Some(missing) = browser.then(browser::missing).flatten() {
        return Err(crate::error::environment(format!(
            "`--browser` needs a browser and chromedriver: {missing}"
        )));
    }
    let options = SmokeOptions {
        url,
        app_bin,
        browser,
        // Each check's line is the report's own line, printed once, as it is checked; the
        // summary follows. With --json they are progress on stderr.
        lines_on_stdout: !json,
    };
    let report = smoke(&mut client, &database, &options)?;
    if json {
        return report::emit(&report, true);
    }
    print!("{}", report.summary(Style::default()));
    Ok(Outcome::from_ready(report.ok()))
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SmokeOptions {
    /// Test an app that is already running here instead of starting one.
    pub url: Option<String>,
    /// The app binary to start (default: `DATAHUB_APP_BIN`, else `cargo build -p app`).
    pub app_bin: Option<PathBuf>,
    /// Walk the checklist in headless Chromium too.
    pub browser: bool,
    /// Each check's line goes to stdout as the report's line (else to stderr, as progress).
    pub lines_on_stdout: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub(crate) struct SmokeReport {
    pub checks: Vec<Check>,
    pub duration: Duration,
}

impl SmokeReport {
    pub(crate) fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    /// The last line: how many checks passed, and what to do when one did not.
    fn summary(&self, style: Style) -> String {
        let n_ok = self.checks.iter().filter(|c| c.ok).count();
        format!(
            "smoke: {n_ok} of {} checks passed in {}{}\n",
            self.checks.len(),
            style.seconds(self.duration),
            if self.passed() {
                ""
            } else {
                "; fix what the failing check names, then run `cargo xtask smoke` again"
            }
        )
    }
}

fn check_line(check: &Check) -> String {
    format!(
        "{} {}: {}\n",
        if check.ok { "✅" } else { "❌" },
        check.name,
        check.detail
    )
}

impl Report for SmokeReport {
    fn render_with(&self, style: Style) -> String {
        let mut out: String = self.checks.iter().map(check_line).collect();
        out.push_str(&self.summary(style));
        out
    }

    fn to_json(&self) -> serde_json::Value {
        report::document(
            "smoke",
            json!({
                "passed": self.passed(),
                "seconds": self.duration.as_secs_f64(),
                "checks": self.checks.iter().map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
            }),
        )
    }

    fn ok(&self) -> bool {
        self.passed()
    }
}

#[derive(Default)]
struct Checks {
    checks: Vec<Check>,
    lines_on_stdout: bool,
}

impl Checks {
    /// Records a check; after SIGINT or SIGTERM every further check counts as not passed, so
    /// the run stops short, cleans up and says so.
    fn record(&mut self, name: &str, result: Result<String>) -> bool {
        let (ok, detail) = match (crate::interrupt::requested(), result) {
            (Some(signal), _) => (
                false,
                format!(
                    "not checked: interrupted by {}",
                    crate::interrupt::signal_name(signal)
                ),
            ),
            (None, Ok(detail)) => (true, detail),
            (None, Err(error)) => (false, format!("{error:#}")),
        };
        let check = Check {
            name: name.to_string(),
            ok,
            detail,
        };
        if self.lines_on_stdout {
            print!("{}", check_line(&check));
        } else {
            eprint!("{}", check_line(&check));
        }
        self.checks.push(check);
        ok
    }
}

pub(crate) fn smoke(
    client: &mut Client,
    url: &DatabaseUrl,
    options: &SmokeOptions,
) -> Result<SmokeReport> {
    let started = Instant::now();
    let mut checks = Checks {
        checks: Vec::new(),
        lines_on_stdout: options.lines_on_stdout,
    };
    checks.record("contract applied", checks::contract_applied(client));
    match Fixtures::create(client) {
        Ok(fixtures) => {
            checks.record("smoke user and workspace", Ok(fixtures.describe()));
            if let Err(error) = against_app(client, url, options, &fixtures, &mut checks) {
                checks.record("app", Err(error));
            }
            if let Err(error) = fixtures.remove(client) {
                checks.record("clean up", Err(error));
            }
        }
        Err(error) => {
            checks.record("smoke user and workspace", Err(error));
        }
    }
    Ok(SmokeReport {
        checks: checks.checks,
        duration: started.elapsed(),
    })
}

fn against_app(
    client: &mut Client,
    url: &DatabaseUrl,
    options: &SmokeOptions,
    fixtures: &Fixtures,
    checks: &mut Checks,
) -> Result<()> {
    let (http, started_app) = match &options.url {
        Some(base) => (http::Http::new(base)?, None),
        None => {
            let bin = match &options.app_bin {
                Some(bin) => bin.clone(),
                None => AppBuild::from_env(false).build()?.path,
            };
            let app = app::App::start(&bin, url)?;
            (app.http.clone(), Some(app))
        }
    };
    let cookie = checks::sign_in(&http, fixtures);
    let signed_in = checks.record(
        "sign in",
        cookie
            .as_ref()
            .map(|_| format!("`{}` signed in", fixtures.email))
            .map_err(|e| anyhow::anyhow!("{e:#}")),
    );
    if let (true, Ok(cookie)) = (signed_in, cookie) {
        checks.record("/data", checks::overview(&http, &cookie));
        checks.record("/data/google-ads", checks::provider_page(&http, &cookie));
        checks.record("chat", checks::chat(&http, &cookie, client, fixtures));
        checks.record(
            "connect and disconnect",
            checks::connect_and_disconnect(&http, &cookie),
        );
    }
    if options.browser && signed_in {
        let screenshots = crate::project::target_dir().join("xtask/smoke-browser");
        let base = http.base();
        let walked = browser::ChromeDriver::start().and_then(|driver| {
            let session = driver.session()?;
            browser::walk(
                &session,
                &browser::Walk {
                    base: &base,
                    email: &fixtures.email,
                    password: &fixtures.password,
                    other_workspace: fixtures::SECOND_WORKSPACE,
                    screenshots: &screenshots,
                },
            )
        });
        match walked {
            Ok(steps) => {
                for step in steps {
                    checks.record(&format!("browser: {}", step.name), Ok(step.detail));
                }
            }
            Err(error) => {
                checks.record("browser", Err(error));
            }
        }
    }
    if let Some(app) = started_app {
        checks.record("app log", checks::log(&app.stop()));
    }
    Ok(())
}
