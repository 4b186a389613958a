//! The fault matrix: `deploy`, `backfill`, `release`, `recover` and `rollback`, each stopped at a
//! step boundary or inside a long statement by SIGKILL, SIGTERM, the termination of its
//! backends or a restart of PostgreSQL, and two commands at once; an old app version inserts
//! rows without `workspaceId` all along. After every fault, `recover` (or running the command
//! again) must converge: `migrate status` up to date, `check` green, the data as it was (plus
//! every row the old app wrote, each in its home workspace), no INVALID index, nothing left
//! behind.
//!
//! Deterministic: a command is parked inside a statement by a lock another session holds, and
//! the fault is injected once `pg_locks` or `pg_stat_progress_create_index` shows it waiting
//! there (or once its progress line says a step is done); never after a sleep.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datahub_tests::harness::{
    client_for, repo_migrations, run_xtask, text, OwnCluster, Running, TestDb,
};
use xtask::backfill::{backfill, BackfillOptions};
use xtask::db::Client;
use xtask::db::Connect;
use xtask::tenancy::{CONTRACT, EXPAND, INIT};

use crate::support::{rule_violations, seed_small, workspace_columns};

/// The command under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Deploy,
    Backfill,
    Release,
    Recover,
    Rollback,
}

/// Where the fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Right after the command reports this step done (the next one has begun).
    AfterStep(&'static str),
    /// The expand waits for a lock: the app reads `MetricDaily` in an open transaction.
    InExpand,
    /// `CREATE INDEX CONCURRENTLY` waits: the app has written to `Connection` and not committed.
    InIndexBuild,
    /// The contract's SET NOT NULL waits: the app reads `Connection` in an open transaction.
    InContract,
    /// The backfill comes back for a `MetricDaily` row the app holds (FOR UPDATE).
    InHeldRows,
    /// The rollback's DROP NOT NULL waits: the app reads `MetricDaily` in an open transaction.
    InRollback,
    /// The smoke test runs against the app.
    InSmoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Sigkill,
    Sigterm,
    /// Ctrl-C.
    Sigint,
    /// `pg_terminate_backend` of every backend of the command.
    TerminateBackends,
    /// An immediate stop and a start of the server (its own cluster).
    RestartServer,
}

struct Case {
    command: Command,
    at: At,
    fault: Fault,
}

macro_rules! matrix {
    ($($name:ident: $command:ident, $at:expr, $fault:ident;)*) => {
        $(
            #[test]
            fn $name() {
                run(Case { command: Command::$command, at: $at, fault: Fault::$fault });
            }
        )*
    };
}

matrix! {
    deploy_sigkill_in_expand: Deploy, At::InExpand, Sigkill;
    deploy_sigterm_in_expand: Deploy, At::InExpand, Sigterm;
    deploy_terminated_in_expand: Deploy, At::InExpand, TerminateBackends;
    deploy_sigkill_in_index_build: Deploy, At::InIndexBuild, Sigkill;
    deploy_sigterm_in_index_build: Deploy, At::InIndexBuild, Sigterm;
    deploy_terminated_in_index_build: Deploy, At::InIndexBuild, TerminateBackends;
    deploy_restart_in_index_build: Deploy, At::InIndexBuild, RestartServer;
    deploy_sigkill_in_contract: Deploy, At::InContract, Sigkill;
    deploy_sigterm_in_contract: Deploy, At::InContract, Sigterm;
    deploy_sigint_in_contract: Deploy, At::InContract, Sigint;
    deploy_sigint_in_index_build: Deploy, At::InIndexBuild, Sigint;
    deploy_terminated_in_contract: Deploy, At::InContract, TerminateBackends;
    deploy_restart_in_contract: Deploy, At::InContract, RestartServer;
    backfill_sigkill_in_held_rows: Backfill, At::InHeldRows, Sigkill;
    backfill_sigterm_in_held_rows: Backfill, At::InHeldRows, Sigterm;
    backfill_terminated_in_held_rows: Backfill, At::InHeldRows, TerminateBackends;
    backfill_restart_in_held_rows: Backfill, At::InHeldRows, RestartServer;
    backfill_sigint_in_held_rows: Backfill, At::InHeldRows, Sigint;
    release_sigkill_after_deploy_expand: Release, At::AfterStep("deploy"), Sigkill;
    release_sigkill_after_backfill: Release, At::AfterStep("backfill"), Sigkill;
    release_sigterm_after_check: Release, At::AfterStep("check"), Sigterm;
    release_sigkill_in_index_build: Release, At::InIndexBuild, Sigkill;
    release_sigterm_in_index_build: Release, At::InIndexBuild, Sigterm;
    release_sigkill_in_contract: Release, At::InContract, Sigkill;
    release_sigterm_in_contract: Release, At::InContract, Sigterm;
    release_terminated_in_contract: Release, At::InContract, TerminateBackends;
    release_restart_in_index_build: Release, At::InIndexBuild, RestartServer;
    release_sigkill_in_smoke: Release, At::InSmoke, Sigkill;
    release_sigterm_in_smoke: Release, At::InSmoke, Sigterm;
    recover_sigkill_after_resolve: Recover, At::AfterStep("resolve"), Sigkill;
    recover_sigkill_in_held_rows: Recover, At::InHeldRows, Sigkill;
    recover_sigkill_in_contract: Recover, At::InContract, Sigkill;
    recover_sigterm_in_contract: Recover, At::InContract, Sigterm;
    recover_terminated_in_contract: Recover, At::InContract, TerminateBackends;
    recover_restart_in_contract: Recover, At::InContract, RestartServer;
    rollback_sigkill_in_drop_not_null: Rollback, At::InRollback, Sigkill;
    rollback_sigterm_in_drop_not_null: Rollback, At::InRollback, Sigterm;
    rollback_terminated_in_drop_not_null: Rollback, At::InRollback, TerminateBackends;
    rollback_restart_in_drop_not_null: Rollback, At::InRollback, RestartServer;
}

/// The database a case starts from, on the shared server or on a cluster of its own.
struct Database {
    url: String,
    _test_db: Option<TestDb>,
    own: Option<OwnCluster>,
}

impl Database {
    fn new(own_cluster: bool) -> Database {
        if own_cluster {
            let own = OwnCluster::plain();
            Database {
                url: own.database_migrated_to(INIT),
                _test_db: None,
                own: Some(own),
            }
        } else {
            let db = TestDb::migrated_to(INIT);
            Database {
                url: db.url().to_string(),
                _test_db: Some(db),
                own: None,
            }
        }
    }

    fn client(&self) -> Client {
        client_for(&self.url)
    }

    fn deploy_to(&self, target: &str) {
        let url = xtask::db::parse_url(&self.url).unwrap();
        let mut client = url.connect().unwrap();
        let options = xtask::migrate::DeployOptions {
            to: Some(target.to_string()),
            ..Default::default()
        };
        xtask::migrate::deploy(&mut client, &url, &repo_migrations(), &options)
            .unwrap_or_else(|e| panic!("deploy to `{target}`: {e:#}"));
    }

    fn backfill(&self) {
        let url = xtask::db::parse_url(&self.url).unwrap();
        let mut client = url.connect().unwrap();
        backfill(&mut client, &url, &crate::support::tenancy(), &quiet()).unwrap();
    }
}

fn quiet() -> BackfillOptions {
    BackfillOptions {
        progress: false,
        ..BackfillOptions::default()
    }
}

/// The migration just before the contract: the last index.
fn last_index() -> String {
    let migrations = repo_migrations();
    let contract = migrations.iter().position(|m| m.name == CONTRACT).unwrap();
    migrations[contract - 1].name.clone()
}

/// Builds the state the case starts from: seeded pre-tenancy data, then as far as the command
/// and the place of the fault need (the blocker must hold only what parks the command there).
fn prepare(case: &Case) -> Database {
    let db = Database::new(case.fault == Fault::RestartServer);
    seed_small(&mut db.client());
    match (case.command, case.at) {
        (Command::Deploy | Command::Release, At::InExpand | At::AfterStep(_) | At::InSmoke) => {}
        (Command::Deploy | Command::Release, At::InIndexBuild) => {
            db.deploy_to(EXPAND);
            db.backfill();
        }
        (Command::Deploy | Command::Release, _) => {
            db.deploy_to(EXPAND);
            db.backfill();
            db.deploy_to(&last_index());
        }
        (Command::Backfill, _) => db.deploy_to(EXPAND),
        (Command::Recover, _) => {
            // The incident: everything deployed before the backfill, as Prisma deploys (without
            // counting the rows first); the contract fails.
            let deploy = run_xtask(&["migrate", "deploy", "--skip-row-check"], Some(&db.url));
            assert_eq!(deploy.status.code(), Some(1), "{}", text(&deploy.stderr));
        }
        (Command::Rollback, _) => {
            db.deploy_to(EXPAND);
            db.backfill();
            db.deploy_to(CONTRACT);
        }
    }
    db
}

fn args(command: Command) -> Vec<&'static str> {
    match command {
        Command::Deploy => vec!["migrate", "deploy"],
        Command::Backfill => vec!["backfill", "--batch-size", "100"],
        Command::Release => vec!["release", "--batch-size", "100"],
        Command::Recover => vec!["recover"],
        Command::Rollback => vec!["rollback", "--yes"],
    }
}

/// A session of the app that holds a lock until it is dropped (or released).
pub(crate) struct Blocker {
    client: Option<Client>,
}

impl Blocker {
    fn none() -> Blocker {
        Blocker { client: None }
    }

    fn holding(db: &Database, sql: &str) -> Blocker {
        Blocker::holding_in(db.client(), sql)
    }

    /// `sql` run in a transaction of `client` that stays open.
    pub(crate) fn holding_in(mut client: Client, sql: &str) -> Blocker {
        client.batch_execute("BEGIN").unwrap();
        client.batch_execute(sql).unwrap();
        Blocker {
            client: Some(client),
        }
    }

    /// Commits, unless the server restart already ended the session.
    pub(crate) fn release(&mut self) {
        if let Some(mut client) = self.client.take() {
            let _ = client.batch_execute("COMMIT");
        }
    }
}

fn blocker_for(db: &Database, at: At) -> Blocker {
    match at {
        At::InExpand | At::InRollback => {
            Blocker::holding(db, r#"SELECT count(*) FROM "MetricDaily""#)
        }
        At::InIndexBuild => Blocker::holding(
            db,
            r#"UPDATE "Connection" SET "status" = "status" WHERE "id" = (SELECT min("id") FROM "Connection")"#,
        ),
        At::InContract => Blocker::holding(db, r#"SELECT count(*) FROM "Connection""#),
        At::InHeldRows => Blocker::holding(
            db,
            r#"SELECT 1 FROM "MetricDaily" WHERE "id" = (SELECT min("id") FROM "MetricDaily") FOR UPDATE"#,
        ),
        At::AfterStep(_) | At::InSmoke => Blocker::none(),
    }
}

/// Waits (at most a minute, then fails) until the command is where the case strikes.
fn wait_until_parked(observer: &mut Client, running: &mut Running, at: At) {
    wait_until(running, &format!("{at:?}"), |running| match at {
        At::InExpand | At::InRollback => waits_for_lock_on(observer, "MetricDaily"),
        At::InContract => waits_for_lock_on(observer, "Connection"),
        At::InIndexBuild => index_build_waits(observer),
        At::InHeldRows => {
            let left: i64 = observer
                .query_one(
                    r#"SELECT count(*) FROM "MetricDaily" WHERE "workspaceId" IS NULL"#,
                    &[],
                )
                .unwrap()
                .get(0);
            left == 1
                && running
                    .stderr()
                    .iter()
                    .any(|l| l.contains("held by other transactions"))
        }
        At::AfterStep(step) => running.stderr().iter().any(|line| {
            line.starts_with(&format!("✅ done {step}"))
                || line.starts_with(&format!("⏭️ skipped {step}"))
        }),
        At::InSmoke => running
            .stderr()
            .iter()
            .any(|line| line.starts_with("✅ sign in")),
    });
}

/// Waits (at most a minute, then fails) until `parked` sees the command where a fault strikes
/// (`place` names it in the failure); fails at once if the command ends before.
pub(crate) fn wait_until(
    running: &mut Running,
    place: &str,
    mut parked: impl FnMut(&Running) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !parked(running) {
        assert!(
            running.is_running(),
            "the command ended before the fault ({place}); its stderr:\n{}",
            running.stderr().join("\n")
        );
        assert!(
            Instant::now() < deadline,
            "the command never reached {place}; its stderr:\n{}",
            running.stderr().join("\n")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether a backend of xtask waits for a lock on `table`, as `pg_locks` shows it.
fn waits_for_lock_on(observer: &mut Client, table: &str) -> bool {
    observer
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                            JOIN pg_stat_activity a ON a.pid = l.pid
                            WHERE NOT l.granted AND c.relname = $1
                              AND a.application_name = 'cargo-xtask'
                              AND a.datname = current_database())",
            &[&table],
        )
        .unwrap()
        .get(0)
}

/// Whether an index build of xtask waits for other transactions.
fn index_build_waits(observer: &mut Client) -> bool {
    observer
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                            JOIN pg_stat_activity a ON a.pid = p.pid
                            WHERE a.application_name = 'cargo-xtask'
                              AND a.datname = current_database() AND p.phase LIKE 'waiting%')",
            &[],
        )
        .unwrap()
        .get(0)
}

pub(crate) fn terminate_xtask_backends(observer: &mut Client) -> i64 {
    observer
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'cargo-xtask'",
            &[],
        )
        .unwrap()
        .get(0)
}

pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a child process this test started and still owns.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill -{signal} {pid}");
}

/// The old app version, inserting rows without `workspaceId` every few milliseconds on its own
/// connection (reconnecting after a restart) until stopped.
pub(crate) struct OldApp {
    stop: Arc<AtomicBool>,
    inserted: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// One write of an old app: the row `id`, the `n`th it writes.
pub(crate) type OldAppWrite = fn(&mut Client, &str, u64) -> Result<(), postgres::Error>;

impl OldApp {
    fn start(url: &str) -> OldApp {
        OldApp::start_with(url, "oldapp", insert_as_the_old_app)
    }

    /// An old app that writes with `write`, its rows' ids `{prefix}_{n}`.
    pub(crate) fn start_with(url: &str, prefix: &'static str, write: OldAppWrite) -> OldApp {
        let stop = Arc::new(AtomicBool::new(false));
        let inserted = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicU64::new(0));
        let (url, thread_stop, thread_inserted, thread_failed) = (
            url.to_string(),
            Arc::clone(&stop),
            Arc::clone(&inserted),
            Arc::clone(&failed),
        );
        let handle = std::thread::spawn(move || {
            let mut client: Option<Client> = None;
            while !thread_stop.load(Ordering::SeqCst) {
                if client.as_ref().is_none_or(Client::is_closed) {
                    client = xtask::db::DatabaseUrl::parse(&url, "old-app")
                        .ok()
                        .and_then(|u| u.connect().ok())
                        .and_then(|mut c| {
                            c.batch_execute("SET synchronous_commit = on")
                                .ok()
                                .map(|()| c)
                        });
                }
                if let Some(client) = client.as_mut() {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let id = format!("{prefix}_{n}");
                    match write(client, &id, n) {
                        Ok(()) => thread_inserted.lock().unwrap().push(id),
                        Err(error) => thread_failed.lock().unwrap().push(format!("{error:?}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        OldApp {
            stop,
            inserted,
            failed,
            handle: Some(handle),
        }
    }

    /// How many rows it has seen committed so far.
    pub(crate) fn written(&self) -> usize {
        self.inserted.lock().unwrap().len()
    }

    /// Stops the writer; the ids of the rows it saw committed.
    fn stop(self) -> Vec<String> {
        self.stop_with_failures().0
    }

    /// Stops the writer; the ids of the rows it saw committed, and the errors of the writes
    /// that failed (a fault that ends its session or the server fails some).
    pub(crate) fn stop_with_failures(mut self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            handle.join().unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.inserted.lock().unwrap().clone(), failed)
    }
}

/// One row as the old app writes it, for the first and the last seeded user (the smoke test's
/// own users are not theirs to write for). Each commit is flushed (`synchronous_commit`), as a
/// real server does it, so a crash of the throwaway cluster keeps every acknowledged row.
fn insert_as_the_old_app(client: &mut Client, id: &str, n: u64) -> Result<(), postgres::Error> {
    let day = n as i32;
    if n.is_multiple_of(2) {
        client.execute(
            r#"INSERT INTO "MetricDaily" ("id", "userId", "provider", "date", "impressions", "clicks")
               SELECT $1, u."id", 'meta-ads', date '2030-01-01' + $2::int, 100, 10
               FROM "User" u WHERE u."id" LIKE 'u%' ORDER BY u."id" LIMIT 1"#,
            &[&id, &day],
        )?;
    } else {
        client.execute(
            r#"INSERT INTO "ChatMessage" ("id", "userId", "role", "content")
               SELECT $1, u."id", 'user', 'written by the old app'
               FROM "User" u WHERE u."id" LIKE 'u%' ORDER BY u."id" DESC LIMIT 1"#,
            &[&id],
        )?;
    }
    Ok(())
}

/// Every column but `workspaceId` of the rows that existed before the case (the old app's new
/// rows and the personal workspaces the backfill creates are not in it).
fn digest(client: &mut Client) -> String {
    client
        .query_one(
            r#"SELECT md5(string_agg(d, '|' ORDER BY d)) FROM (
                 SELECT 'C' || (to_jsonb(t) - 'workspaceId')::text AS d FROM "Connection" t
                 UNION ALL SELECT 'M' || (to_jsonb(t) - 'workspaceId')::text FROM "MetricDaily" t WHERE t."id" NOT LIKE 'oldapp\_%'
                 UNION ALL SELECT 'I' || (to_jsonb(t) - 'workspaceId')::text FROM "Insight" t
                 UNION ALL SELECT 'H' || (to_jsonb(t) - 'workspaceId')::text FROM "ChatMessage" t WHERE t."id" NOT LIKE 'oldapp\_%'
                 UNION ALL SELECT 'U' || to_jsonb(t)::text FROM "User" t
                 UNION ALL SELECT 'W' || to_jsonb(t)::text FROM "Workspace" t WHERE t."id" NOT LIKE 'personal_%'
                 UNION ALL SELECT 'R' || to_jsonb(t)::text FROM "WorkspaceMember" t WHERE t."id" NOT LIKE 'personal_%'
               ) rows"#,
            &[],
        )
        .unwrap()
        .get(0)
}

/// Injects the fault into the running command; returns its exit code, stdout and stderr.
fn inject(case: &Case, db: &Database, observer: &mut Client, mut running: Running) -> String {
    match case.fault {
        Fault::Sigkill => running.kill(),
        Fault::Sigterm => signal(running.pid(), libc::SIGTERM),
        Fault::Sigint => signal(running.pid(), libc::SIGINT),
        Fault::TerminateBackends => {
            assert!(terminate_xtask_backends(observer) > 0);
        }
        Fault::RestartServer => db.own.as_ref().unwrap().restart(),
    }
    let (code, _stdout, stderr) = running.wait(Duration::from_secs(90));
    match case.fault {
        Fault::Sigkill => assert_eq!(code, None, "killed by a signal: {stderr}"),
        // Cancelled on the server, the outcome recorded, then exit 1 (not done).
        Fault::Sigterm | Fault::Sigint => {
            let name = if case.fault == Fault::Sigint {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            assert_eq!(code, Some(1), "{stderr}");
            assert!(stderr.contains(&format!("{name} received")), "{stderr}");
            if case.command == Command::Backfill {
                // What was done and what to run, on the error's first line.
                let first = stderr
                    .lines()
                    .find(|l| l.starts_with("error: "))
                    .unwrap_or("");
                assert!(
                    first.contains(&format!(" rows backfilled before {name} (kept); run `cargo xtask backfill` again to continue")),
                    "{stderr}"
                );
            }
        }
        // The connection lost: a clear error, never a panic.
        Fault::TerminateBackends | Fault::RestartServer => {
            assert!(matches!(code, Some(1) | Some(2)), "{code:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    stderr
}

fn run(case: Case) {
    let db = prepare(&case);
    let before = digest(&mut db.client());
    let old_app = OldApp::start(&db.url);
    let mut blocker = blocker_for(&db, case.at);
    let mut observer = db.client();
    let mut running = Running::start(&args(case.command), &db.url);
    wait_until_parked(&mut observer, &mut running, case.at);
    let stderr = inject(&case, &db, &mut observer, running);
    if case.fault == Fault::RestartServer {
        observer = db.client();
    }
    if matches!(case.fault, Fault::Sigterm | Fault::Sigint) && case.command != Command::Backfill {
        // A signal it can catch lets the command record the true outcome: nothing is left
        // "failed".
        let failed: i64 = observer
            .query_one(
                r#"SELECT count(*) FROM "_prisma_migrations" WHERE finished_at IS NULL AND rolled_back_at IS NULL"#,
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(failed, 0, "a failed row after SIGTERM: {stderr}");
    }
    blocker.release();
    converge(&case, &db);
    let inserted = old_app.stop();
    assert_converged(&db, &before, &inserted);
}

/// What a person runs after the fault: the command again where that is the way on, then
/// `recover`, which must finish the release whatever the fault left; after a release, the
/// release again (its smoke test removes the fixtures of a smoke run that was killed).
fn converge(case: &Case, db: &Database) {
    let again = match case.command {
        Command::Backfill => Some(vec!["backfill"]),
        Command::Rollback => Some(vec!["rollback", "--yes"]),
        _ => None,
    };
    if let Some(again) = again {
        let output = run_xtask(&again, Some(&db.url));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{again:?} again: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }
    let recover = run_xtask(&["recover"], Some(&db.url));
    assert_eq!(
        recover.status.code(),
        Some(0),
        "recover: {}{}",
        text(&recover.stdout),
        text(&recover.stderr)
    );
    if case.command == Command::Release {
        let release = run_xtask(&["release"], Some(&db.url));
        assert_eq!(
            release.status.code(),
            Some(0),
            "release again: {}{}",
            text(&release.stdout),
            text(&release.stderr)
        );
    }
}

fn assert_converged(db: &Database, before: &str, inserted: &[String]) {
    let mut client = db.client();
    let status = run_xtask(&["migrate", "status"], Some(&db.url));
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
    assert!(text(&status.stdout).contains("Database schema is up to date!"));
    let check = run_xtask(&["check"], Some(&db.url));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    let columns = workspace_columns(&mut client);
    assert!(columns.iter().all(|(_, n)| n == "NO"), "{columns:?}");
    assert_eq!(digest(&mut client), before, "the data changed");
    assert_eq!(
        rule_violations(&mut client),
        0,
        "a row outside its home workspace"
    );
    let missing: Vec<String> = inserted
        .iter()
        .filter(|id| {
            client
                .query_opt(
                    r#"SELECT 1 FROM "MetricDaily" WHERE "id" = $1 UNION ALL SELECT 1 FROM "ChatMessage" WHERE "id" = $1"#,
                    &[id],
                )
                .unwrap()
                .is_none()
        })
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "rows the old app wrote are gone: {missing:?}"
    );
    let leftovers: (i64, i64) = {
        let row = client
            .query_one(
                r#"SELECT (SELECT count(*) FROM pg_index WHERE NOT indisvalid),
                          (SELECT count(*) FROM "User" WHERE "id" LIKE 'datahub\_smoke\_%')"#,
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        leftovers,
        (0, 0),
        "(INVALID indexes, smoke users) left behind"
    );
}

/// Two releases at once: one takes the migration lock and runs the database steps, the other
/// waits for it, then finds every step done; each smokes with a user of its own.
#[test]
fn two_releases_at_once_both_succeed() {
    let db = prepare(&Case {
        command: Command::Release,
        at: At::AfterStep("-"),
        fault: Fault::Sigkill,
    });
    let before = digest(&mut db.client());
    let old_app = OldApp::start(&db.url);
    let first = Running::start(&["release"], &db.url);
    let second = Running::start(&["release"], &db.url);
    for (code, stdout, stderr) in [
        first.wait(Duration::from_secs(120)),
        second.wait(Duration::from_secs(120)),
    ] {
        assert_eq!(code, Some(0), "{stdout}{stderr}");
        assert!(stdout.contains("Released"), "{stdout}");
    }
    let inserted = old_app.stop();
    assert_converged(&db, &before, &inserted);
}

/// `rollback --yes` while `recover` is inside the contract: the rollback waits for the
/// migration lock and decides after the contract has landed, so it rolls it back; it never
/// decides "nothing to roll back" from the state before.
#[test]
fn rollback_decides_under_the_lock_while_recover_runs() {
    let case = Case {
        command: Command::Recover,
        at: At::InContract,
        fault: Fault::Sigkill,
    };
    let db = prepare(&case);
    let before = digest(&mut db.client());
    let mut blocker = blocker_for(&db, case.at);
    let mut observer = db.client();
    let mut recover = Running::start(&["recover"], &db.url);
    wait_until_parked(&mut observer, &mut recover, case.at);
    let mut rollback = Running::start(&["rollback", "--yes"], &db.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rollback
        .stderr()
        .iter()
        .any(|l| l.starts_with("waiting for the migration lock"))
    {
        assert!(rollback.is_running(), "{}", rollback.stderr().join("\n"));
        assert!(
            Instant::now() < deadline,
            "the rollback never waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    blocker.release();
    let (code, stdout, stderr) = recover.wait(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let (code, stdout, stderr) = rollback.wait(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("Rolled back"), "{stdout}");
    let columns = workspace_columns(&mut observer);
    assert!(columns.iter().all(|(_, n)| n == "YES"), "{columns:?}");
    let recover = run_xtask(&["recover"], Some(&db.url));
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    assert_converged(&db, &before, &[]);
}

/// `recover` right after a deploy was killed inside an index build whose backend goes on: it
/// waits for that backend (naming its pid and migration) instead of judging the half-built
/// index, then proves the finished index VALID and records the migration as applied.
#[test]
fn recover_waits_for_a_killed_deploys_index_build_then_proves_it_applied() {
    let case = Case {
        command: Command::Deploy,
        at: At::InIndexBuild,
        fault: Fault::Sigkill,
    };
    let db = prepare(&case);
    let before = digest(&mut db.client());
    let mut blocker = blocker_for(&db, case.at);
    let mut observer = db.client();
    let mut deploy = Running::start(&["migrate", "deploy"], &db.url);
    wait_until_parked(&mut observer, &mut deploy, case.at);
    deploy.kill();
    deploy.wait(Duration::from_secs(30));
    // The killed deploy's backend still builds the index and holds the migration lock.
    assert!(index_build_waits(&mut observer));
    let mut recover = Running::start(&["recover"], &db.url);
    let deadline = Instant::now() + Duration::from_secs(60);
    let index_migration = repo_migrations()[2].name.clone();
    loop {
        let stderr = recover.stderr();
        if stderr.iter().any(|l| {
            l.starts_with("waiting for the migration lock")
                && l.contains(&format!("still running migration `{index_migration}`"))
        }) {
            break;
        }
        assert!(recover.is_running(), "{}", stderr.join("\n"));
        assert!(
            Instant::now() < deadline,
            "recover never waited: {}",
            stderr.join("\n")
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    blocker.release();
    let (code, stdout, stderr) = recover.wait(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("marked applied: the index `Connection_workspaceId_idx` is VALID and defined as the file defines it"),
        "{stdout}"
    );
    assert_converged(&db, &before, &[]);
}

/// Two backfills at once on the same tables: each batch is its own transaction and skips rows
/// the other holds, so both finish, and every row gets its home workspace exactly once.
#[test]
fn two_backfills_at_once_both_finish() {
    let case = Case {
        command: Command::Backfill,
        at: At::AfterStep("-"),
        fault: Fault::Sigkill,
    };
    let db = prepare(&case);
    let before = digest(&mut db.client());
    let old_app = OldApp::start(&db.url);
    let first = Running::start(&["backfill", "--batch-size", "20"], &db.url);
    let second = Running::start(&["backfill", "--batch-size", "20"], &db.url);
    for (code, stdout, stderr) in [
        first.wait(Duration::from_secs(120)),
        second.wait(Duration::from_secs(120)),
    ] {
        assert_eq!(code, Some(0), "{stdout}{stderr}");
    }
    let recover = run_xtask(&["recover"], Some(&db.url));
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    let inserted = old_app.stop();
    assert_converged(&db, &before, &inserted);
}
