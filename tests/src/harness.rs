//! Each test gets its own fresh database on a real PostgreSQL server, dropped afterwards.
//!
//! With `DATABASE_URL` set, databases are created on that server (the role needs CREATEDB) and
//! only the ones created here are ever dropped. Without it, the first test of a binary starts a
//! throwaway cluster (initdb in a temp dir, a free port, as `postgres` when running as root)
//! that a watchdog removes when the test binary exits. Tests never skip for lack of a server.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use postgres::Client;
use xtask::cluster::TempCluster;
use xtask::db::DatabaseUrl;
use xtask::migrate::{self, DeployOptions};
use xtask::migrations::{self, Migration};

struct Server {
    /// Kept alive for the whole test binary; the watchdog stops it after the process exits.
    _cluster: Option<TempCluster>,
    /// A URL on the server whose database part we replace per test.
    base_url: String,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
/// CREATE DATABASE copies template1; doing it one at a time avoids "source database is being
/// accessed by other users" when tests start together.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

fn server() -> &'static Server {
    SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => Server {
            _cluster: None,
            base_url: url,
        },
        _ => {
            let cluster = TempCluster::start().unwrap_or_else(|error| {
                panic!("cannot start a throwaway PostgreSQL for the tests: {error:#}")
            });
            let base_url = cluster.url("postgres");
            Server {
                _cluster: Some(cluster),
                base_url,
            }
        }
    })
}

/// `url` with its database replaced by `database` (query parameters kept).
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let without_db = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    format!("{without_db}/{database}{query}")
}

/// A database of its own for one test, dropped (WITH FORCE) when the value is dropped.
pub struct TestDb {
    pub name: String,
    url: String,
    admin_url: String,
}

impl TestDb {
    /// An empty database.
    pub fn new() -> TestDb {
        let server = server();
        let name = format!(
            "datahub_test_{}_{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        let admin_url = server.base_url.clone();
        {
            let _guard = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let mut admin = connect(&admin_url);
            admin
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .unwrap_or_else(|e| panic!("cannot create test database `{name}`: {e}"));
        }
        let url = url_with_database(&server.base_url, &name);
        TestDb {
            name,
            url,
            admin_url,
        }
    }

    /// A database with the repository's migrations deployed up to and including `name`.
    pub fn migrated_to(name: &str) -> TestDb {
        let db = TestDb::new();
        db.deploy_to(name);
        db
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn database_url(&self) -> DatabaseUrl {
        DatabaseUrl::parse(&self.url).expect("test URLs parse")
    }

    pub fn client(&self) -> Client {
        connect(&self.url)
    }

    /// Deploys the repository's migrations up to and including `name`; panics on failure.
    pub fn deploy_to(&self, name: &str) {
        let url = self.database_url();
        let mut client = url.connect().expect("connect to the test database");
        let options = DeployOptions {
            to: Some(name.to_string()),
            ..DeployOptions::default()
        };
        migrate::deploy(&mut client, &url, &repo_migrations(), &options)
            .unwrap_or_else(|e| panic!("deploy to `{name}` failed: {e:#}"));
    }
}

impl Default for TestDb {
    fn default() -> Self {
        TestDb::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // FORCE ends connections a failed test left open; a drop error must not hide the test's.
        if let Ok(mut admin) = Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn connect(url: &str) -> Client {
    DatabaseUrl::parse(url)
        .and_then(|u| u.connect())
        .unwrap_or_else(|e| panic!("cannot connect to the test server: {e:#}"))
}

/// The repository's migrations folder, read fresh.
pub fn repo_migrations() -> Vec<Migration> {
    migrations::read_dir(&migrations::default_dir()).expect("the repository's migrations read")
}

/// Copies the repository's migrations into a temp folder a test may edit.
pub fn copy_of_migrations(dir: &std::path::Path) {
    let source = migrations::default_dir();
    std::fs::copy(
        source.join("migration_lock.toml"),
        dir.join("migration_lock.toml"),
    )
    .expect("copy migration_lock.toml");
    for migration in repo_migrations() {
        let target = dir.join(&migration.name);
        std::fs::create_dir_all(&target).expect("create migration dir");
        std::fs::copy(
            migration.path.join("migration.sql"),
            target.join("migration.sql"),
        )
        .expect("copy migration.sql");
    }
}

/// The `xtask` binary that `cargo test --workspace` built next to this test binary.
pub fn xtask_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let bin = dir.join("xtask");
    assert!(
        bin.is_file(),
        "`{}` does not exist: run the tests with `cargo test --workspace` (or `cargo build -p xtask` first)",
        bin.display()
    );
    bin
}

/// The `app` binary that `cargo test --workspace` built next to this test binary.
pub fn app_bin() -> PathBuf {
    let bin = xtask_bin().with_file_name("app");
    assert!(
        bin.is_file(),
        "`{}` does not exist: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Runs the real `xtask` binary with `DATABASE_URL` set to `database_url` (or unset).
pub fn run_xtask(args: &[&str], database_url: Option<&str>) -> Output {
    let mut command = Command::new(xtask_bin());
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env("DATAHUB_APP_BIN", app_bin());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    command.output().expect("run the xtask binary")
}

/// Filters that keep snapshots stable: timestamps, UUIDs, durations, ports, database names.
pub fn snapshot_filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?",
            "[timestamp]",
        ),
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[uuid]",
        ),
        // A runbook report's duration cell is fixed-width; keep the table's shape.
        (r"\| +\d+\.\d\d s ", "| [duration] "),
        (r"\b\d+(\.\d+)? ?(ms|s)\b", "[duration]"),
        (r"127\.0\.0\.1:\d+", "[host:port]"),
        (r"datahub_test_\d+_\d+", "[database]"),
    ]
}

/// Text of a process's stdout and stderr.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
