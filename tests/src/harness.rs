//! Each test gets its own database on a real PostgreSQL server, copied from a template that is
//! migrated once per test binary and migration target, and dropped afterwards.
//!
//! With `TEST_DATABASE_URL` set, databases are created on that server (the role needs
//! CREATEDB) and only ones this harness names `datahub_test_*` / `datahub_tpl_*` (and the
//! `datahub_shadow_*` ones of `migrate plan`) are ever dropped: its own, and those a crashed
//! run left behind (their creator process is gone). It never reads `DATABASE_URL`, which
//! people point at real servers. Without it, each test binary starts a throwaway cluster
//! (initdb in a temp dir, a free port, as `postgres` when running as root) that a watchdog
//! removes when the binary exits. Tests never skip for lack of a server. The `xtask` and
//! `app` binaries the tests spawn are built once, here.
//!
//! A test that needs what a shared server cannot give (a streaming standby whose replay it
//! pauses, `pg_stat_statements` loaded at start) starts an `OwnCluster`, whatever
//! `TEST_DATABASE_URL` says.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use xtask::cluster::{ClusterOptions, TempCluster, STANDBY_NAME};
use xtask::db::Client;
use xtask::db::{self, Connect, DatabaseUrl};
use xtask::migrate::{self, DeployOptions};
use xtask::migrations::{self, Migration};

/// The variable that names a server for the tests (never `DATABASE_URL`).
pub const TEST_DATABASE_URL: &str = "TEST_DATABASE_URL";

struct Server {
    /// Kept alive for the whole test binary; the watchdog stops it after the process exits.
    cluster: Option<TempCluster>,
    /// A URL on the server whose database part we replace per database.
    base_url: String,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
/// `CREATE DATABASE … TEMPLATE` needs the template free of other connections, and creating
/// one database at a time avoids "source database is being accessed by other users".
static CREATE_LOCK: Mutex<()> = Mutex::new(());
/// The template database of each migration target, built on first use.
static TEMPLATES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        let server = match std::env::var(TEST_DATABASE_URL) {
            Ok(url) if !url.trim().is_empty() => Server {
                cluster: None,
                base_url: url,
            },
            _ => {
                let cluster =
                    TempCluster::start_watched_by(&binaries().xtask).unwrap_or_else(|error| {
                        panic!("cannot start a throwaway PostgreSQL for the tests: {error:#}")
                    });
                let base_url = cluster.url("postgres");
                Server {
                    cluster: Some(cluster),
                    base_url,
                }
            }
        };
        sweep_leftovers(&server.base_url);
        server
    })
}

/// Drops the databases of earlier test runs whose process is gone (a crash, a kill -9).
fn sweep_leftovers(base_url: &str) {
    let mut admin = connect(base_url);
    let names: Vec<String> = admin
        .query(
            "SELECT datname::text FROM pg_database
             WHERE datname LIKE 'datahub\\_test\\_%' OR datname LIKE 'datahub\\_tpl\\_%'
                OR datname LIKE 'datahub\\_shadow\\_%'",
            &[],
        )
        .expect("list leftover test databases")
        .iter()
        .map(|row| row.get(0))
        .collect();
    for name in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                db::quote_ident(&name)
            ));
        }
    }
}

/// A superuser URL on the test server (its `postgres` database), for commands that create
/// databases of their own there (`migrate plan --shadow-url`). It holds a password: hand it
/// to processes only.
pub fn server_url() -> String {
    server().base_url.clone()
}

/// The self-signed certificate of the harness's own cluster (none for `TEST_DATABASE_URL`).
pub fn server_certificate() -> Option<PathBuf> {
    server().cluster.as_ref().and_then(TempCluster::certificate)
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

fn next_name(kind: &str) -> String {
    format!(
        "datahub_{kind}_{}_{}",
        std::process::id(),
        NEXT_ID.fetch_add(1, Ordering::SeqCst)
    )
}

fn create_database(name: &str, template: Option<&str>) {
    let _guard = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut admin = connect(&server().base_url);
    let sql = match template {
        Some(template) => format!(
            "CREATE DATABASE {} TEMPLATE {}",
            db::quote_ident(name),
            db::quote_ident(template)
        ),
        None => format!("CREATE DATABASE {}", db::quote_ident(name)),
    };
    admin
        .batch_execute(&sql)
        .unwrap_or_else(|e| panic!("cannot create the test database `{name}`: {e}"));
}

/// The template database migrated up to and including `target`, built on first use.
fn template(target: &str) -> String {
    let templates = TEMPLATES.get_or_init(Default::default);
    let mut templates = templates.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(name) = templates.get(target) {
        return name.clone();
    }
    let name = next_name("tpl");
    create_database(&name, None);
    let url = database_url(&url_with_database(&server().base_url, &name));
    let mut client = url.connect().expect("connect to a new template database");
    let options = DeployOptions {
        to: Some(target.to_string()),
        ..DeployOptions::default()
    };
    migrate::deploy(&mut client, &url, &repo_migrations(), &options)
        .unwrap_or_else(|e| panic!("deploy to `{target}` failed: {e:#}"));
    drop(client);
    templates.insert(target.to_string(), name.clone());
    name
}

/// A database of its own for one test, dropped (WITH FORCE) when the value is dropped.
pub struct TestDb {
    pub name: String,
    url: String,
    /// The server's maintenance database, from which this one is dropped.
    admin_url: String,
}

impl TestDb {
    /// An empty database.
    pub fn new() -> TestDb {
        let name = next_name("test");
        create_database(&name, None);
        TestDb {
            url: url_with_database(&server().base_url, &name),
            admin_url: server().base_url.clone(),
            name,
        }
    }

    /// A database with the repository's migrations deployed up to and including `target`: a
    /// copy of that target's template.
    pub fn migrated_to(target: &str) -> TestDb {
        let template = template(target);
        let name = next_name("test");
        create_database(&name, Some(&template));
        TestDb {
            url: url_with_database(&server().base_url, &name),
            admin_url: server().base_url.clone(),
            name,
        }
    }

    /// The superuser URL of this database (with a password: hand it to processes only).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn database_url(&self) -> DatabaseUrl {
        database_url(&self.url)
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
        if let Ok(mut admin) = database_url(&self.admin_url).connect() {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                db::quote_ident(&self.name)
            ));
        }
    }
}

/// A throwaway cluster of one test's own, with or without `TEST_DATABASE_URL`: one the test may
/// restart (every other test shares the server of [`TestDb`], which no test may restart), a
/// streaming standby (`pg_basebackup -R`, a second postmaster, named `STANDBY_NAME`) whose
/// replay the test may pause, or `pg_stat_statements` loaded at start. Stopped and removed
/// when dropped.
pub struct OwnCluster {
    cluster: TempCluster,
}

impl OwnCluster {
    /// A primary with a standby, streaming by the time this returns.
    pub fn with_standby() -> OwnCluster {
        OwnCluster::start(ClusterOptions {
            standby: true,
            ..ClusterOptions::default()
        })
    }

    /// A server with these `postgresql.conf` settings (name, value as the file writes it).
    pub fn with_settings(settings: &[(&str, &str)]) -> OwnCluster {
        OwnCluster::start(ClusterOptions {
            settings: settings
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            ..ClusterOptions::default()
        })
    }

    /// A server whose WAL (`pg_wal`, segments of 1 MB) lives in `wal_dir`, an empty directory
    /// (on a small filesystem the test fills). Only the test and the commands it runs write WAL
    /// (autovacuum is off), and each commit flushes its own (the WAL writer sleeps its longest):
    /// the first commit after the current segment is used up is the one that finds the disk full.
    pub fn with_wal_in(wal_dir: &Path) -> OwnCluster {
        OwnCluster::start(ClusterOptions {
            wal_dir: Some(wal_dir.to_path_buf()),
            settings: vec![
                ("autovacuum".into(), "off".into()),
                ("synchronous_commit".into(), "on".into()),
                ("wal_writer_delay".into(), "'10s'".into()),
            ],
            ..ClusterOptions::default()
        })
    }

    /// A server that counts every statement's executions in `pg_stat_statements` (the
    /// extension is created in its `postgres` database).
    pub fn with_statement_stats() -> OwnCluster {
        let own = OwnCluster::start(ClusterOptions {
            settings: vec![(
                "shared_preload_libraries".into(),
                "'pg_stat_statements'".into(),
            )],
            ..ClusterOptions::default()
        });
        own.admin()
            .batch_execute("CREATE EXTENSION pg_stat_statements")
            .expect("create the pg_stat_statements extension");
        own
    }

    fn start(options: ClusterOptions) -> OwnCluster {
        let cluster = TempCluster::start_with(&binaries().xtask, &options)
            .unwrap_or_else(|error| panic!("cannot start a throwaway PostgreSQL: {error:#}"));
        OwnCluster { cluster }
    }

    /// A connection to the primary's `postgres` database.
    pub fn admin(&self) -> Client {
        connect(&self.cluster.url("postgres"))
    }

    /// A new database on the primary, migrated up to and including `target` (or empty).
    pub fn database(&self, target: Option<&str>) -> TestDb {
        let name = next_name("test");
        self.admin()
            .batch_execute(&format!("CREATE DATABASE {}", db::quote_ident(&name)))
            .unwrap_or_else(|e| panic!("cannot create the test database `{name}`: {e}"));
        let db = TestDb {
            url: self.cluster.url(&name),
            admin_url: self.cluster.url("postgres"),
            name,
        };
        if let Some(target) = target {
            db.deploy_to(target);
        }
        db
    }

    /// A connection to `database` on the standby (read only): the standby must have replayed
    /// its creation.
    pub fn standby(&self, database: &str) -> Client {
        let url = self
            .cluster
            .standby_url(database)
            .expect("this cluster runs no standby: use OwnCluster::with_standby");
        connect(&url)
    }

    /// The superuser URL of `database` on the standby (read only; it holds a password: hand it
    /// to processes only).
    pub fn standby_url(&self, database: &str) -> String {
        self.cluster
            .standby_url(database)
            .expect("this cluster runs no standby: use OwnCluster::with_standby")
    }

    /// The standby's name in `pg_stat_replication`.
    pub fn standby_name(&self) -> &'static str {
        STANDBY_NAME
    }

    /// A plain cluster, like the shared one.
    pub fn plain() -> OwnCluster {
        let cluster = TempCluster::start_watched_by(&binaries().xtask)
            .unwrap_or_else(|error| panic!("cannot start a throwaway PostgreSQL: {error:#}"));
        OwnCluster { cluster }
    }

    /// A new database on it with the repository's migrations deployed up to `target`; its URL.
    pub fn database_migrated_to(&self, target: &str) -> String {
        let name = next_name("own");
        let mut admin = connect(&self.cluster.url("postgres"));
        admin
            .batch_execute(&format!("CREATE DATABASE {}", db::quote_ident(&name)))
            .unwrap_or_else(|e| panic!("cannot create `{name}`: {e}"));
        let url = self.cluster.url(&name);
        let parsed = database_url(&url);
        let mut client = parsed.connect().expect("connect to the new database");
        let options = DeployOptions {
            to: Some(target.to_string()),
            ..DeployOptions::default()
        };
        migrate::deploy(&mut client, &parsed, &repo_migrations(), &options)
            .unwrap_or_else(|e| panic!("deploy to `{target}` failed: {e:#}"));
        url
    }

    /// Starts the server again after its postmaster gave up (a crash recovery that could not
    /// finish); it replays its WAL first.
    pub fn start_again(&self) {
        self.cluster
            .start_server()
            .unwrap_or_else(|e| panic!("cannot start the throwaway PostgreSQL again: {e:#}"));
    }

    /// The server's log, for a test that must show what a client cannot see.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.cluster.server_log()).unwrap_or_default()
    }

    /// Restarts the server as a crash would: every session cut, WAL replayed at start.
    pub fn restart(&self) {
        self.cluster
            .restart()
            .unwrap_or_else(|e| panic!("cannot restart the throwaway PostgreSQL: {e:#}"));
    }
}

/// The tests' own connections show as `datahub-tests` in `pg_stat_activity`, so a test can
/// tell them from the `cargo-xtask` connections of the commands it runs.
fn database_url(url: &str) -> DatabaseUrl {
    DatabaseUrl::parse(url, "datahub-tests").expect("test URLs parse")
}

fn connect(url: &str) -> Client {
    database_url(url)
        .connect()
        .unwrap_or_else(|e| panic!("cannot connect to the test server: {e:#}"))
}

/// The repository's migrations folder, read fresh.
pub fn repo_migrations() -> Vec<Migration> {
    migrations::read_dir(&migrations::default_dir()).expect("the repository's migrations read")
}

/// The name of the repository's last migration (the state after a release).
pub fn latest_migration() -> String {
    repo_migrations()
        .last()
        .expect("the repository has migrations")
        .name
        .clone()
}

/// Copies the repository's migrations into a temp folder a test may edit.
pub fn copy_of_migrations(dir: &Path) {
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
        if migration.declaration.is_some() {
            std::fs::copy(
                migration.path.join(migrations::DECLARATION_FILE),
                target.join(migrations::DECLARATION_FILE),
            )
            .expect("copy release.toml");
        }
    }
}

/// The binaries the tests spawn.
pub struct Binaries {
    pub xtask: PathBuf,
    pub app: PathBuf,
}

/// Builds `xtask` and `app` once per test binary, in the profile and target directory of the
/// tests themselves, so `cargo test -p datahub-tests` works on its own.
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binaries live in target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir
            .parent()
            .expect("target/<profile>")
            .to_path_buf();
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_string(),
            Some(other) => other.to_string(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "xtask",
                "-p",
                "app",
                "--profile",
                &profile,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(migrations::default_dir().parent().expect("repository root"))
            .status()
            .expect("run cargo build for the xtask and app binaries");
        assert!(status.success(), "cargo build -p xtask -p app failed");
        Binaries {
            xtask: profile_dir.join("xtask"),
            app: profile_dir.join("app"),
        }
    })
}

pub fn xtask_bin() -> &'static Path {
    &binaries().xtask
}

pub fn app_bin() -> &'static Path {
    &binaries().app
}

/// Runs the real `xtask` binary with `DATABASE_URL` set to `database_url` (or unset), and
/// never a `DIRECT_URL` of the environment (which would take precedence).
pub fn run_xtask(args: &[&str], database_url: Option<&str>) -> Output {
    let mut command = Command::new(xtask_bin());
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DIRECT_URL")
        .env(xtask::APP_BIN_ENV, app_bin());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    command.output().expect("run the xtask binary")
}

/// Filters that keep snapshots stable: timestamps, UUIDs, ports, database names. Durations are
/// redacted by the reports' renderer (`Style::SNAPSHOT`), not here.
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
        (r"127\.0\.0\.1:\d+", "[host:port]"),
        (r"datahub_test_\d+_\d+", "[database]"),
    ]
}

/// Text of a process's stdout and stderr.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A connection with the tests' application name, for URLs that are not a [`TestDb`]'s.
pub fn client_for(url: &str) -> Client {
    connect(url)
}

/// Runs the real `xtask` binary in the background with `DATABASE_URL` set, its stderr read
/// line by line as it comes, so a test can act when a step has been reached.
pub struct Running {
    child: std::process::Child,
    stderr: std::sync::Arc<Mutex<Vec<String>>>,
    stdout: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Running {
    pub fn start(args: &[&str], database_url: &str) -> Running {
        Running::start_with_env(args, database_url, &[])
    }

    /// [`Running::start`] with these environment variables set too.
    pub fn start_with_env(args: &[&str], database_url: &str, env: &[(&str, &str)]) -> Running {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(xtask_bin())
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("DIRECT_URL")
            .env("DATABASE_URL", database_url)
            .envs(env.iter().copied())
            .env(xtask::APP_BIN_ENV, app_bin())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the xtask binary");
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
            let sink = std::sync::Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
            lines
        };
        let stderr = collect(Box::new(child.stderr.take().expect("stderr")));
        let stdout = collect(Box::new(child.stdout.take().expect("stdout")));
        Running {
            child,
            stderr,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for the exit (at most `limit`; a process still running then is killed and the
    /// test fails) and returns the exit code with all of stdout and stderr.
    pub fn wait(mut self, limit: std::time::Duration) -> (Option<i32>, String, String) {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the xtask process did not exit within {limit:?}; its stderr:\n{}",
                    self.stderr().join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // The reader threads end at EOF, which the exit has just caused.
        let started = std::time::Instant::now();
        while (std::sync::Arc::strong_count(&self.stderr) > 1
            || std::sync::Arc::strong_count(&self.stdout) > 1)
            && started.elapsed() < std::time::Duration::from_secs(5)
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let join = |lines: &std::sync::Arc<Mutex<Vec<String>>>| {
            lines.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
        };
        (status.code(), join(&self.stdout), join(&self.stderr))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
