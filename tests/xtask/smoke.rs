//! `smoke` against the real app binary: passes on a released database and leaves it as it was;
//! fails, naming the check, when the contract is missing or a provider page is broken.

use datahub_tests::harness::{app_bin, run_xtask, text, TestDb};
use xtask::seed::{seed_pre_tenancy, SeedSize};
use xtask::smoke::http::Http;
use xtask::tenancy::{CONTRACT, EXPAND, INIT};

use crate::support::data_digest;

fn released() -> TestDb {
    let db = TestDb::migrated_to(INIT);
    seed_pre_tenancy(
        &mut db.client(),
        SeedSize {
            users: 20,
            days: 40,
            providers_per_user: 3,
        },
    )
    .unwrap();
    db.deploy_to(EXPAND);
    let backfill = run_xtask(&["backfill"], Some(db.url()));
    assert_eq!(
        backfill.status.code(),
        Some(0),
        "{}",
        text(&backfill.stderr)
    );
    db.deploy_to(CONTRACT);
    db
}

#[test]
fn passes_on_a_released_database_and_leaves_it_as_found() {
    let db = released();
    let mut client = db.client();
    let before = data_digest(&mut client);
    let output = run_xtask(&["smoke"], Some(db.url()));
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    for check in [
        "contract applied",
        "sign in",
        "/data",
        "/data/google-ads",
        "chat",
        "connect and disconnect",
        "app log",
    ] {
        assert!(
            stdout.contains(&format!("✅ {check}: ")),
            "`{check}` missing from:\n{stdout}"
        );
    }
    assert!(stdout.contains("smoke: 8 of 8 checks passed"), "{stdout}");
    let all = format!("{stdout}{}", text(&output.stderr));
    for line in stdout.lines() {
        assert_eq!(
            all.matches(line).count(),
            1,
            "`{line}` printed twice:\n{all}"
        );
    }
    assert_eq!(
        data_digest(&mut client),
        before,
        "smoke must leave the data as it found it"
    );
    let leftovers: i64 = client
        .query_one(
            r#"SELECT (SELECT count(*) FROM "User" WHERE "id" LIKE 'datahub_smoke%')
                    + (SELECT count(*) FROM "Workspace" WHERE "id" LIKE 'datahub_smoke%')
                    + (SELECT count(*) FROM "Session")"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
}

#[test]
fn fails_naming_the_contract_when_it_is_not_applied() {
    let db = TestDb::migrated_to(INIT);
    seed_pre_tenancy(
        &mut db.client(),
        SeedSize {
            users: 8,
            days: 5,
            providers_per_user: 2,
        },
    )
    .unwrap();
    db.deploy_to(EXPAND);
    let output = run_xtask(&["smoke"], Some(db.url()));
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("❌ contract applied: `workspaceId` is not NOT NULL on Connection, MetricDaily, Insight, ChatMessage"), "{stdout}");
}

#[test]
fn fails_naming_a_broken_provider_page() {
    let db = released();
    // Break the provider page on purpose: its insights list orders by this column.
    db.client()
        .batch_execute(r#"ALTER TABLE "Insight" DROP COLUMN "createdAt""#)
        .unwrap();
    let output = run_xtask(&["smoke"], Some(db.url()));
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("❌ /data/google-ads: GET /data/google-ads answered 500"),
        "{stdout}"
    );
    assert!(stdout.contains("❌ app log:"), "{stdout}");
    assert!(
        stdout.contains("✅ /data: "),
        "the overview itself still works: {stdout}"
    );
}

/// `smoke --url` tests an app someone else started, against the same database.
#[test]
fn tests_a_running_app_at_its_url() {
    let db = released();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut app = std::process::Command::new(app_bin())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", db.url())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = Http::new(&base).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http.get("/healthz", None).map(|r| r.status).ok() != Some(200) {
        assert!(
            std::time::Instant::now() < deadline,
            "the app did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = run_xtask(&["smoke", "--url", &base, "--json"], Some(db.url()));
    app.kill().unwrap();
    app.wait().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    crate::json_schemas::assert_conforms("smoke", &doc);
    assert_eq!(doc["passed"], true);
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "contract applied",
            "smoke user and workspace",
            "sign in",
            "/data",
            "/data/google-ads",
            "chat",
            "connect and disconnect"
        ],
        "no app log check: smoke did not start this app"
    );

    let bad = run_xtask(&["smoke", "--url", "https://example.com"], Some(db.url()));
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("`--url`"),
        "{}",
        text(&bad.stderr)
    );
}

/// `smoke --browser` walks the checklist in headless Chromium too (Debian's `chromium` and
/// `chromium-driver`, which `.ci/run` installs), and still leaves nothing behind.
#[test]
fn walks_the_checklist_in_a_browser_with_browser() {
    let db = released();
    let output = run_xtask(&["smoke", "--browser", "--json"], Some(db.url()));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let browser: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .filter(|name| name.starts_with("browser"))
        .collect();
    assert_eq!(
        browser,
        [
            "browser: login page",
            "browser: sign in and /data",
            "browser: provider page",
            "browser: chat",
            "browser: connect",
            "browser: disconnect",
            "browser: switch workspace"
        ]
    );
    let leftovers: i64 = db
        .client()
        .query_one(
            r#"SELECT (SELECT count(*) FROM "User" WHERE "id" LIKE 'datahub_smoke%')
                    + (SELECT count(*) FROM "Workspace" WHERE "id" LIKE 'datahub_smoke%')"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leftovers, 0);
}
