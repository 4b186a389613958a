//! The smoke test in a real browser: headless Chromium (or Google Chrome), driven over W3C
//! WebDriver by `chromedriver`, signs in, opens `/data` and a provider page, posts a chat message, connects
//! and disconnects, and switches workspaces. Any console error or Content-Security-Policy
//! violation fails the step; each page is saved as a PNG for a person to look at. The tests
//! (`tests/app/browser.rs`) and `cargo xtask smoke --browser` both walk through here.
//!
//! The WebDriver client is a dozen endpoints over `std::net::TcpStream` (JSON bodies, plain
//! HTTP/1.1 to 127.0.0.1): no HTTP client crate. chromedriver runs in a process group of its
//! own, killed whole at the end: killing chromedriver alone leaves Chromium running.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

/// The environment variables that name the browser and its WebDriver, when they are not where
/// they are looked for.
pub const CHROME_ENV: &str = "CHROME";
pub const CHROMEDRIVER_ENV: &str = "CHROMEDRIVER";
/// Debian's Chromium (also a link to a Chromium build on GitHub's Ubuntu runners), then the
/// names Google Chrome and Chromium go by on PATH.
const CHROMIUM: &str = "/usr/bin/chromium";
const BROWSERS: [&str; 5] = [
    "chromium",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
    "chromium-browser",
];
const CHROMEDRIVER: &str = "chromedriver";
const INSTALL: &str = "install them with `cargo xtask test --install-only` (Debian's `chromium chromium-driver`), or name them with `CHROME=PATH` and `CHROMEDRIVER=PATH`";

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The browser: `CHROME` when set, else Chromium or Google Chrome where they are installed.
pub fn chrome() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CHROME_ENV) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    if Path::new(CHROMIUM).is_file() {
        return Some(PathBuf::from(CHROMIUM));
    }
    BROWSERS.iter().find_map(|name| find_on_path(name))
}

/// The WebDriver: `CHROMEDRIVER` when set, else `chromedriver` on PATH.
pub fn chromedriver() -> Option<PathBuf> {
    match std::env::var_os(CHROMEDRIVER_ENV) {
        Some(path) => Some(PathBuf::from(path)).filter(|path| path.is_file()),
        None => find_on_path(CHROMEDRIVER),
    }
}

/// Whether a browser and chromedriver are installed here.
pub fn installed() -> bool {
    chrome().is_some() && chromedriver().is_some()
}

/// What is missing, as one line that says how to get it; `None` when both are there.
pub fn missing() -> Option<String> {
    let describe = |variable: &str, looked_for: String| match std::env::var_os(variable) {
        Some(path) => format!(
            "`{}` (from `{variable}`) does not exist",
            Path::new(&path).display()
        ),
        None => format!("no {looked_for}"),
    };
    let mut problems = Vec::new();
    if chrome().is_none() {
        problems.push(describe(
            CHROME_ENV,
            format!("browser (`{CHROMIUM}` or {} on PATH)", BROWSERS.join(", ")),
        ));
    }
    if chromedriver().is_none() {
        problems.push(describe(
            CHROMEDRIVER_ENV,
            format!("`{CHROMEDRIVER}` on PATH"),
        ));
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!("{}: {INSTALL}", problems.join(" and ")))
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// chromedriver on a free local port; it and its Chromium are killed when this is dropped.
pub struct ChromeDriver {
    child: Child,
    base: String,
    profile: PathBuf,
    chrome: PathBuf,
    chromedriver: PathBuf,
}

impl ChromeDriver {
    pub fn start() -> Result<ChromeDriver> {
        if let Some(missing) = missing() {
            bail!("{missing}");
        }
        let (Some(chrome), Some(chromedriver)) = (chrome(), chromedriver()) else {
            bail!("the browser or chromedriver is missing: {INSTALL}");
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .context("cannot find a free local port for chromedriver")?
            .port();
        let child = Command::new(&chromedriver)
            // Chromium inherits the group, so killing the group ends it too.
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start `{}`; {INSTALL}", chromedriver.display()))?;
        let profile = std::env::temp_dir().join(format!(
            "datahub-chromium-{}-{}",
            std::process::id(),
            &datahub_core::password::random_token()[..12]
        ));
        let driver = ChromeDriver {
            child,
            base: format!("127.0.0.1:{port}"),
            profile,
            chrome,
            chromedriver,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = call(&driver.base, "GET", "/status", None) {
                if status["ready"] == true {
                    return Ok(driver);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "`{}` did not become ready within 20 s",
                    driver.chromedriver.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A headless Chromium with a fresh profile and its console log recorded.
    pub fn session(&self) -> Result<Session> {
        std::fs::create_dir_all(&self.profile)
            .with_context(|| format!("cannot create `{}`", self.profile.display()))?;
        // Without the background-networking flags Chromium tries Google's hosts, which this
        // kind of machine refuses; --no-sandbox because CI runs as root.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .chain([format!("--user-data-dir={}", self.profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": self.chrome, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let value = call(&self.base, "POST", "/session", Some(capabilities))
            .context("cannot start a Chromium session")?;
        let id = value["sessionId"]
            .as_str()
            .with_context(|| format!("no session id in chromedriver's answer `{value}`"))?;
        let session = Session {
            base: self.base.clone(),
            prefix: format!("/session/{id}"),
        };
        // Records `securitypolicyviolation` events of every page from now on, before the
        // page's own content runs (the page's CSP does not apply to this script).
        session.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": "Page.addScriptToEvaluateOnNewDocument", "params": { "source": CSP_RECORDER } })),
        )?;
        Ok(session)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        // SAFETY: kill only sends a signal to the process group we started.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        // SAFETY: signal 0 only asks whether the group still exists.
        while Instant::now() < deadline && unsafe { libc::kill(group, 0) } == 0 {
            let _ = self.child.try_wait();
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

const CSP_RECORDER: &str = "window.__csp = []; document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.effectiveDirective + ' blocked ' + e.blockedURI + ' at line ' + e.lineNumber));";

/// One browser session.
pub struct Session {
    base: String,
    prefix: String,
}

#[derive(Debug, Clone)]
pub struct Element(String);

impl Session {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        call(&self.base, method, &format!("{}{path}", self.prefix), body)
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    pub fn current_url(&self) -> Result<String> {
        Ok(self
            .cmd("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Waits (at most 30 s) until the page at a URL whose path ends with `suffix` has loaded:
    /// a click that submits a form returns before the next page is there.
    pub fn wait_for(&self, suffix: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let url = self.current_url()?;
            let path = url.split('#').next().unwrap_or_default();
            // Between two pages the script may fail: that is "not yet".
            let ready = self.execute("return document.readyState").ok();
            if path.ends_with(suffix) && ready.is_some_and(|state| state == "complete") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the browser is still at `{url}`, not at `…{suffix}`, after 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn find(&self, css: &str) -> Result<Element> {
        let value = self
            .cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .with_context(|| format!("no `{css}` on the page"))?;
        Ok(Element(
            value[ELEMENT]
                .as_str()
                .with_context(|| format!("no element in `{value}`"))?
                .to_string(),
        ))
    }

    pub fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let element = self.find(css)?;
        self.cmd(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    pub fn click(&self, css: &str) -> Result<()> {
        let element = self.find(css)?;
        self.cmd(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .map(drop)
    }

    pub fn text(&self, css: &str) -> Result<String> {
        let element = self.find(css)?;
        Ok(self
            .cmd("GET", &format!("/element/{}/text", element.0), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Runs `script` as a function body and returns its value.
    pub fn execute(&self, script: &str) -> Result<Value> {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let encoded = self.cmd("GET", "/screenshot", None)?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .context("the screenshot is not base64")
    }

    /// The console errors and CSP violations since the last call: SEVERE browser-log entries
    /// (console.error, failed loads, the browser's own CSP reports) and the violations the
    /// recorder saw on the current page.
    pub fn problems(&self) -> Result<Vec<String>> {
        let log = self.cmd("POST", "/se/log", Some(json!({ "type": "browser" })))?;
        let mut problems: Vec<String> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| {
                format!(
                    "console ({}): {}",
                    entry["source"].as_str().unwrap_or_default(),
                    entry["message"].as_str().unwrap_or_default()
                )
            })
            .collect();
        let violations = self.execute("return window.__csp || [];")?;
        problems.extend(
            violations
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| format!("CSP violation: {}", v.as_str().unwrap_or_default())),
        );
        Ok(problems)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = call(&self.base, "DELETE", &self.prefix, None);
    }
}

/// One WebDriver call. chromedriver keeps the connection open whatever the request says, so
/// the answer is read by its `Content-Length`, never to the end of the stream.
fn call(authority: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
    let what = format!("WebDriver {method} {path}");
    let mut stream =
        TcpStream::connect(authority).with_context(|| format!("{what}: cannot connect"))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .with_context(|| format!("{what}: cannot send"))?;
    let mut raw = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    let (head_end, length) = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .with_context(|| format!("{what}: no Content-Length in the answer"))?;
            break (end + 4, length);
        }
        let n = stream
            .read(&mut buffer)
            .with_context(|| format!("{what}: no answer"))?;
        if n == 0 {
            bail!("{what}: the connection closed before an answer");
        }
        raw.extend_from_slice(&buffer[..n]);
    };
    while raw.len() < head_end + length {
        let n = stream
            .read(&mut buffer)
            .with_context(|| format!("{what}: the answer was cut short"))?;
        if n == 0 {
            bail!("{what}: the answer was cut short");
        }
        raw.extend_from_slice(&buffer[..n]);
    }
    let answer: Value = serde_json::from_slice(&raw[head_end..head_end + length])
        .with_context(|| format!("{what}: the answer is not JSON"))?;
    let value = answer["value"].clone();
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        let message = value["message"].as_str().unwrap_or_default();
        bail!(
            "{what}: {error}: {}",
            message.lines().next().unwrap_or_default()
        );
    }
    Ok(value)
}

/// What the walk needs: the app, a user with two workspaces, and where to put the pictures.
pub struct Walk<'a> {
    pub base: &'a str,
    pub email: &'a str,
    pub password: &'a str,
    /// The name of the user's other workspace (the switcher's target).
    pub other_workspace: &'a str,
    pub screenshots: &'a Path,
}

/// A step of the walk that passed, and what it saw.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: &'static str,
    pub detail: String,
    pub screenshot: PathBuf,
}

/// Walks the checklist in one browser session; stops at the first failing step. Each step's
/// page must show no console error and no CSP violation.
pub fn walk(session: &Session, walk: &Walk) -> Result<Vec<Step>> {
    std::fs::create_dir_all(walk.screenshots)
        .with_context(|| format!("cannot create `{}`", walk.screenshots.display()))?;
    let mut steps = Vec::new();
    let mut step = |name: &'static str, file: &str, detail: String| -> Result<()> {
        let problems = session.problems()?;
        if !problems.is_empty() {
            bail!("{name}: {}", problems.join("; "));
        }
        let screenshot = walk.screenshots.join(file);
        std::fs::write(&screenshot, session.screenshot()?)
            .with_context(|| format!("cannot write `{}`", screenshot.display()))?;
        steps.push(Step {
            name,
            detail,
            screenshot,
        });
        Ok(())
    };

    session.goto(&format!("{}/login", walk.base))?;
    session.wait_for("/login")?;
    step("login page", "login.png", "the sign-in form".into())?;

    session.type_into("input[name=email]", walk.email)?;
    session.type_into("input[name=password]", walk.password)?;
    session.click("form[action='/login'] button")?;
    session.wait_for("/data")?;
    let cards = session.execute("return document.querySelectorAll('.provider-card').length")?;
    let accent = session
        .execute("return getComputedStyle(document.querySelector('header .brand')).color")?;
    if accent != "rgb(59, 91, 219)" {
        bail!("/data: the stylesheet does not apply (the brand is {accent})");
    }
    step(
        "sign in and /data",
        "data.png",
        format!("{cards} provider cards, styled"),
    )?;

    session.goto(&format!("{}/data/google-ads", walk.base))?;
    session.wait_for("/data/google-ads")?;
    let bars = session.execute("return document.querySelectorAll('#metrics-chart rect').length")?;
    step(
        "provider page",
        "provider.png",
        format!("Google Ads chart with {bars} bars"),
    )?;

    session.goto(&format!("{}/data", walk.base))?;
    session.wait_for("/data")?;
    let before = session.execute("return document.querySelectorAll('.bubble.assistant').length")?;
    session.type_into("input[name=message]", "How did Google Ads do?")?;
    session.click("form.chat-form button")?;
    wait_until(session, "an assistant reply", &format!(
        "return document.readyState == 'complete' && document.querySelectorAll('.bubble.assistant').length > {before}"
    ))?;
    let reply = session.text(".bubble.assistant")?;
    step(
        "chat",
        "chat.png",
        format!(
            "assistant replied: {}",
            reply.lines().next().unwrap_or_default()
        ),
    )?;

    session.goto(&format!("{}/data/tiktok-ads", walk.base))?;
    session.wait_for("/data/tiktok-ads")?;
    for (action, expected, file) in [
        ("connect", "Connected", "connected.png"),
        ("disconnect", "Not connected", "disconnected.png"),
    ] {
        session.click(&format!("form[action$='/{action}'] button"))?;
        wait_until(
            session,
            expected,
            &format!("return document.readyState == 'complete' && document.querySelector('#connection-status').textContent == '{expected}'"),
        )?;
        step(
            if action == "connect" {
                "connect"
            } else {
                "disconnect"
            },
            file,
            format!("TikTok Ads: {expected}"),
        )?;
    }

    session.goto(&format!("{}/data", walk.base))?;
    session.wait_for("/data")?;
    session.click("select[name=workspace_id] option:not([selected])")?;
    session.click("form[action='/workspace'] button")?;
    wait_until(
        session,
        walk.other_workspace,
        &format!(
            "return document.readyState == 'complete' && document.querySelector('main h1').textContent == {}",
            Value::from(walk.other_workspace)
        ),
    )?;
    step(
        "switch workspace",
        "switched.png",
        format!("now in {}", walk.other_workspace),
    )?;
    Ok(steps)
}

/// Polls `script` (at most 30 s) until it returns true.
fn wait_until(session: &Session, what: &str, script: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    // A script may fail while the next page replaces the current one: that is "not yet".
    while !session.execute(script).is_ok_and(|done| done == true) {
        if Instant::now() > deadline {
            bail!(
                "`{what}` did not appear within 30 s (the page is `{}`)",
                session.current_url()?
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
