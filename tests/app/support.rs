//! Two workspaces with data, an app served in-process, and a small HTTP client.

use std::time::Duration;

use datahub_tests::harness::{latest_migration, TestDb};
use xtask::db::Client;
use xtask::smoke::http::{self, Http};

pub const ALICE: &str = "alice@a.test";
pub const BOB: &str = "bob@b.test";
pub const PASSWORD: &str = "correct horse battery";

/// Alice is OWNER of workspace A, Bob of workspace B; each workspace has a connection, metrics,
/// an insight and chat messages that name it, so any leak shows up in a page. Every migration
/// of the repository is applied, as after a release.
pub fn two_workspaces() -> TestDb {
    two_workspaces_at(&latest_migration())
}

/// The same, with the repository's migrations applied up to and including `target`.
pub fn two_workspaces_at(target: &str) -> TestDb {
    let db = TestDb::migrated_to(target);
    let hash = datahub_core::password::hash(PASSWORD).unwrap();
    let mut client = db.client();
    client
        .execute(
            r#"INSERT INTO "User" ("id", "email", "name", "passwordHash") VALUES
               ('alice', $1, 'Alice', $3), ('bob', $2, 'Bob', $3)"#,
            &[&ALICE, &BOB, &hash],
        )
        .unwrap();
    client
        .batch_execute(
            r#"INSERT INTO "Workspace" ("id", "name", "slug") VALUES ('ws_a', 'Alpha Team', 'alpha'), ('ws_b', 'Bravo Team', 'bravo');
               INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role") VALUES
                 ('m_a', 'ws_a', 'alice', 'OWNER'), ('m_b', 'ws_b', 'bob', 'OWNER');
               INSERT INTO "Connection" ("id", "userId", "workspaceId", "provider", "status", "accountName") VALUES
                 ('conn_a', 'alice', 'ws_a', 'google-ads', 'CONNECTED', 'ALPHA-ACCOUNT'),
                 ('conn_b', 'bob', 'ws_b', 'google-ads', 'CONNECTED', 'BRAVO-ACCOUNT'),
                 ('conn_b_meta', 'bob', 'ws_b', 'meta-ads', 'CONNECTED', 'BRAVO-META');
               INSERT INTO "MetricDaily" ("id", "userId", "workspaceId", "provider", "date", "impressions", "clicks", "spend", "conversions")
                 SELECT 'md_a' || d, 'alice', 'ws_a', 'google-ads', date '2025-12-18' - d, 1000, 11, 10.00, 1 FROM generate_series(0, 9) d;
               INSERT INTO "MetricDaily" ("id", "userId", "workspaceId", "provider", "date", "impressions", "clicks", "spend", "conversions")
                 SELECT 'md_b' || d, 'bob', 'ws_b', 'google-ads', date '2025-12-18' - d, 99999, 777, 5555.55, 42 FROM generate_series(0, 9) d;
               INSERT INTO "Insight" ("id", "userId", "workspaceId", "provider", "title", "body") VALUES
                 ('ins_a', 'alice', 'ws_a', 'google-ads', 'ALPHA-INSIGHT', 'a'),
                 ('ins_b', 'bob', 'ws_b', 'google-ads', 'BRAVO-INSIGHT', 'b');
               INSERT INTO "ChatMessage" ("id", "userId", "workspaceId", "role", "content") VALUES
                 ('chat_a', 'alice', 'ws_a', 'user', 'ALPHA-CHAT'),
                 ('chat_b', 'bob', 'ws_b', 'user', 'BRAVO-CHAT');"#,
        )
        .unwrap();
    db
}

/// The app served in-process on a free port; stopped when dropped.
pub struct RunningApp {
    pub base: String,
    pub state: app::AppState,
    _runtime: tokio::runtime::Runtime,
}

pub fn start(db: &TestDb) -> RunningApp {
    start_with(db, app::Config::default(), app::Limits::default())
}

pub fn start_with(db: &TestDb, config: app::Config, limits: app::Limits) -> RunningApp {
    start_on(db.url(), config, limits)
}

/// The app against any database URL (a proxy in front of the test database, say).
pub fn start_on(url: &str, config: app::Config, limits: app::Limits) -> RunningApp {
    start_with_db_limits(url, config, limits, app::db::DbLimits::default())
}

/// The app with its own bounds on database waits (short deadlines, statement timeouts).
pub fn start_with_db_limits(
    url: &str,
    config: app::Config,
    limits: app::Limits,
    db_limits: app::db::DbLimits,
) -> RunningApp {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let database = runtime
        .block_on(async { app::Db::with_limits(url, db_limits) })
        .unwrap();
    let state = app::AppState::new(database, config);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = state.clone();
    runtime.spawn(async move {
        app::serve_with(listener, served, &limits, std::future::pending()).await
    });
    RunningApp {
        base,
        state,
        _runtime: runtime,
    }
}

impl RunningApp {
    /// `host:port`.
    pub fn address(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    /// Runs an async call on the app's own runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self._runtime.block_on(future)
    }
}

/// The real `app` binary on a free port, its log collected line by line: for what only the
/// log shows.
pub struct AppProcess {
    pub base: String,
    pub process: xtask::process::Running,
}

impl AppProcess {
    pub fn start(database_url: &str, env: &[(&str, &str)]) -> AppProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let mut all_env = vec![("DATABASE_URL", database_url), ("APP_LOG", "info")];
        all_env.extend_from_slice(env);
        let mut process = xtask::process::Running::spawn(
            datahub_tests::harness::app_bin(),
            &["--listen", address.as_str()],
            &all_env,
        )
        .unwrap();
        // Ready once it accepts connections (its log says so first).
        let mut waited = 0;
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                process.exited().is_none(),
                "the app exited: {:?}",
                process.log()
            );
            assert!(waited < 3000, "the app never listened: {:?}", process.log());
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
        AppProcess {
            base: format!("http://{address}"),
            process,
        }
    }

    /// The log lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.process
            .log()
            .into_iter()
            .filter(|line| line.contains(needle))
            .collect()
    }
}

pub struct Response {
    pub status: u16,
    pub location: String,
    pub cookie: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key == "set-cookie")
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// A signed-in (or not) visitor: the smoke test's HTTP client plus the session cookie.
pub struct Browser {
    base: String,
    http: Http,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(app: &RunningApp) -> Browser {
        Browser::at(&app.base)
    }

    pub fn at(base: &str) -> Browser {
        Browser {
            base: base.to_string(),
            http: Http::new(base)
                .unwrap()
                .with_timeout(Duration::from_secs(20)),
            cookie: None,
        }
    }

    pub fn signed_in(app: &RunningApp, email: &str) -> Browser {
        Browser::signed_in_at(&app.base, email)
    }

    pub fn signed_in_at(base: &str, email: &str) -> Browser {
        let mut browser = Browser::at(base);
        let response = browser.post("/login", &[("email", email), ("password", PASSWORD)]);
        assert_eq!(response.status, 303, "login of {email}: {}", response.body);
        browser.cookie = response.cookie;
        assert!(browser.cookie.is_some());
        browser
    }

    fn finish(response: anyhow::Result<http::Response>) -> Response {
        let response = response.unwrap_or_else(|e| panic!("request failed: {e:#}"));
        Response {
            status: response.status,
            location: response.location().to_string(),
            cookie: response.cookie(datahub_core::SESSION_COOKIE),
            headers: response.headers,
            body: response.body,
        }
    }

    pub fn get(&self, path: &str) -> Response {
        Browser::finish(self.http.get(path, self.cookie.as_deref()))
    }

    pub fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        Browser::finish(self.http.post_form(path, self.cookie.as_deref(), form))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> Response {
        self.post_bytes(path, &[], body.as_bytes())
    }

    /// A form post of raw bytes with extra headers (`Origin`, `Sec-Fetch-Site`, …).
    pub fn post_bytes(&self, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Response {
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(cookie) = &self.cookie {
            headers.push(("Cookie", cookie));
        }
        headers.extend_from_slice(extra);
        Browser::finish(self.http.request("POST", path, &headers, Some(body)))
    }

    /// A request with any method and extra headers.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(cookie) = &self.cookie {
            headers.push(("Cookie", cookie));
        }
        headers.extend_from_slice(extra);
        Browser::finish(self.http.request(method, path, &headers, body))
    }

    /// Sends only the headers of a form post announcing `length` bytes and returns the status
    /// the app answers with: an oversized body is refused before it is read.
    pub fn announce_body(&self, path: &str, length: usize) -> u16 {
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let cookie = self.cookie.as_deref().unwrap_or("");
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head[9..12]).parse().unwrap()
    }

    /// The CSRF token of this session, read from /data as a browser would.
    pub fn csrf(&self) -> String {
        http::csrf_of(&self.get("/data").body).expect("a CSRF field on /data")
    }
}

/// Everything in workspace B, as one digest: B's rows must never change through A's session.
pub fn workspace_digest(client: &mut Client, workspace: &str) -> String {
    client
        .query_one(
            r#"SELECT md5(coalesce(string_agg(d, '|' ORDER BY d), '')) FROM (
                 SELECT to_jsonb(t)::text AS d FROM "Connection" t WHERE "workspaceId" = $1
                 UNION ALL SELECT to_jsonb(t)::text FROM "MetricDaily" t WHERE "workspaceId" = $1
                 UNION ALL SELECT to_jsonb(t)::text FROM "Insight" t WHERE "workspaceId" = $1
                 UNION ALL SELECT to_jsonb(t)::text FROM "ChatMessage" t WHERE "workspaceId" = $1
               ) rows"#,
            &[&workspace],
        )
        .unwrap()
        .get(0)
}

/// `url` with one more query parameter.
pub fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

/// Waits until `sql` (one `int8`) counts `n`: a state seen in the server, not a sleep.
pub fn wait_for_count(client: &mut Client, sql: &str, n: i64) {
    for _ in 0..20_000 {
        if count(client, sql) == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("never counted {n}: {sql}");
}

pub fn count(client: &mut Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}

/// Sends `bytes` on a new connection to `address` and returns everything the server sends
/// until it closes the connection (`""` when it closes without answering).
pub fn exchange(address: &str, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the server closes the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The peak resident memory of process `pid` so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}
