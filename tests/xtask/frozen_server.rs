//! A server that stays connected and stops answering: the harness stops the backend of the
//! command under test with SIGSTOP (found in `pg_stat_activity` by its application name and
//! the statement it runs), and the command still ends, saying the server stopped answering
//! and what to run next; the first SIGTERM ends it too, and ends a backfill's wait for a
//! standby whose replay is paused. Nothing was changed. The backend gets SIGCONT afterwards.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use datahub_tests::harness::{xtask_bin, OwnCluster, Running, TestDb};
use postgres::Client;
use xtask::seed::{seed_pre_tenancy, SeedSize};
use xtask::tenancy::{EXPAND, INIT};

/// Polls `condition` until it holds; panics naming `what` after a minute.
fn until<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = condition() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The backend of the command (`cargo-xtask`) whose last statement contains `query`.
fn backend_running(client: &mut Client, query: &str) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
               AND application_name = 'cargo-xtask' AND query LIKE '%' || $1 || '%' LIMIT 1",
            &[&query],
        )
        .unwrap()
        .map(|row| row.get(0))
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a pid this test found; no memory is shared.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// `_prisma_migrations` as (name, finished, rolled back).
fn book(client: &mut Client) -> Vec<(String, bool, bool)> {
    client
        .query(
            "SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL
             FROM _prisma_migrations ORDER BY started_at, migration_name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// A deploy waiting for the migration lock, which the test holds from an idle session, with
/// its backend stopped by SIGSTOP: returns the command, the stopped backend's pid and the
/// session holding the lock.
fn deploy_with_a_stopped_backend(db: &TestDb, env: &[(&str, &str)]) -> (Running, i32, Client) {
    let mut holder = db.client();
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&xtask::db::MIGRATION_LOCK_KEY],
        )
        .unwrap();
    let running = Running::start_with_env(&["migrate", "deploy"], db.url(), env);
    let mut observer = db.client();
    let pid = until("the deploy's first try for the migration lock", || {
        backend_running(&mut observer, "pg_try_advisory_lock")
    });
    signal(pid, libc::SIGSTOP);
    (running, pid, holder)
}

#[test]
fn a_stopped_backend_ends_the_command_with_the_servers_silence_named() {
    let db = TestDb::migrated_to(INIT);
    let before = book(&mut db.client());
    let (running, pid, _holder) =
        deploy_with_a_stopped_backend(&db, &[(xtask::db::STATEMENT_DEADLINE_ENV, "1")]);
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    signal(pid, libc::SIGCONT);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("stopped answering"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.starts_with("error: PostgreSQL at `127.0.0.1:")
            && line.contains("had no answer for 1 s, nor its cancel request for 1 s")
            && line.contains("then run `cargo xtask migrate status`"),
        "{line}"
    );
    assert_eq!(book(&mut db.client()), before, "nothing was recorded");
}

/// The first SIGTERM ends a deploy whose backend was stopped inside `CREATE INDEX
/// CONCURRENTLY` (parked first by an app transaction that wrote to the table, seen in
/// `pg_stat_activity`), which no cancel request can reach; `recover` then proves the outcome.
#[test]
fn the_first_sigterm_ends_a_command_whose_backend_is_stopped() {
    let db = TestDb::migrated_to(EXPAND);
    let mut app = db.client();
    app.batch_execute(r#"BEGIN; UPDATE "Connection" SET "status" = "status" WHERE false"#)
        .unwrap();
    let running = Running::start(&["migrate", "deploy"], db.url());
    let mut observer = db.client();
    let pid = until("the index build waiting for the app's transaction", || {
        observer
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                   AND application_name = 'cargo-xtask' AND wait_event_type = 'Lock'
                   AND query LIKE '%CREATE INDEX CONCURRENTLY%'",
                &[],
            )
            .unwrap()
            .map(|row| row.get::<_, i32>(0))
    });
    signal(pid, libc::SIGSTOP);
    signal(running.pid() as i32, libc::SIGTERM);
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    signal(pid, libc::SIGCONT);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("SIGTERM: the outcome could not be recorded within 10 s")
            && stderr.contains("`cargo xtask recover`, which proves what happened"),
        "{stderr}"
    );
    assert!(!stderr.contains("again: exiting now"), "{stderr}");
    // The backend, running again, sees the cancel request that was sent to it, and the app
    // commits; `recover` then proves what the stopped build left and finishes the release's
    // migrations as far as the deploy would have gone.
    app.batch_execute("COMMIT").unwrap();
    let recover = datahub_tests::harness::run_xtask(&["recover"], Some(db.url()));
    let recover_err = datahub_tests::harness::text(&recover.stderr);
    assert_eq!(recover.status.code(), Some(0), "{recover_err}");
    let status = datahub_tests::harness::run_xtask(&["migrate", "status"], Some(db.url()));
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        datahub_tests::harness::text(&status.stdout)
    );
}

#[test]
fn the_first_sigterm_ends_a_backfill_waiting_for_a_paused_standby() {
    let cluster = OwnCluster::with_standby();
    let db = cluster.database(Some(INIT));
    seed_pre_tenancy(
        &mut db.client(),
        SeedSize {
            users: 40,
            days: 10,
            providers_per_user: 2,
        },
    )
    .unwrap();
    db.deploy_to(EXPAND);
    let mut primary = db.client();
    until("the standby's catching up with the primary", || {
        let caught_up: bool = primary
            .query_one(
                "SELECT coalesce(bool_and(replay_lsn = pg_current_wal_lsn()), false) FROM pg_stat_replication",
                &[],
            )
            .unwrap()
            .get(0);
        caught_up.then_some(())
    });
    let mut standby = cluster.standby(&db.name);
    standby
        .execute("SELECT pg_wal_replay_pause()", &[])
        .unwrap();
    let mut child = Command::new(xtask_bin())
        .args(["backfill", "--max-replica-lag", "0", "--batch-size", "100"])
        .env_remove("DIRECT_URL")
        .env("DATABASE_URL", db.url())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Blocking reads: the backfill's own words are the signal.
    loop {
        let line = lines
            .next()
            .expect("the backfill ended without waiting for the paused standby")
            .unwrap();
        if line.contains("waiting for replica") {
            break;
        }
    }
    signal(child.id() as i32, libc::SIGTERM);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let rest = rest.join("\n");
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("interrupted by SIGTERM"), "{rest}");
    assert!(!rest.contains("could not be recorded"), "{rest}");
    standby
        .execute("SELECT pg_wal_replay_resume()", &[])
        .unwrap();
}
