//! Two workspaces with data, an app served in-process, and a small HTTP client.

use std::time::Duration;

use datahub_tests::harness::{latest_migration, TestDb};
use postgres::Client;
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
    _runtime: tokio::runtime::Runtime,
}

pub fn start(db: &TestDb) -> RunningApp {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = app::db::pool(db.url()).unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(app::serve(listener, app::AppState::new(pool)));
    RunningApp {
        base,
        _runtime: runtime,
    }
}

pub struct Response {
    pub status: u16,
    pub location: String,
    pub cookie: Option<String>,
    pub body: String,
}

/// A signed-in (or not) visitor: the smoke test's HTTP client plus the session cookie.
pub struct Browser {
    base: String,
    http: Http,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(app: &RunningApp) -> Browser {
        Browser {
            base: app.base.clone(),
            http: Http::new(&app.base)
                .unwrap()
                .with_timeout(Duration::from_secs(20)),
            cookie: None,
        }
    }

    pub fn signed_in(app: &RunningApp, email: &str) -> Browser {
        let mut browser = Browser::new(app);
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
        let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
        if let Some(cookie) = &self.cookie {
            headers.push(("Cookie", cookie));
        }
        Browser::finish(
            self.http
                .request("POST", path, &headers, Some(body.as_bytes())),
        )
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

pub fn count(client: &mut Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).unwrap().get(0)
}
