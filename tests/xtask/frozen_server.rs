//! A server that stays connected and stops answering: the harness stops the backend of the
//! command under test with SIGSTOP (found in `pg_stat_activity` by its application name and
//! the statement it runs), and the command still ends, saying the server stopped answering
//! and what to run next; the first SIGTERM ends it too, and ends a backfill's wait for a
//! standby whose replay is paused. Nothing was changed. The backend gets SIGCONT afterwards.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    answers_as_unhindered, paused_standby, recover_converges, until, until_lines,
    xtask_waiting_for_table, xtask_waiting_in,
};
use datahub_tests::harness::{xtask_bin, OwnCluster, Running, TestDb};
use xtask::db::Client;
use xtask::tenancy::{EXPAND, INIT};

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
        xtask_waiting_in(&mut observer, "CREATE INDEX CONCURRENTLY")
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
    recover_converges(db.url());
}

#[test]
fn the_first_sigterm_ends_a_backfill_waiting_for_a_paused_standby() {
    let (_cluster, db, mut standby) = paused_standby();
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

/// `migrate status` parked in its read of `_prisma_migrations` by a lock the test holds (seen
/// in `pg_locks`): the statement's backend either answers the deadline's cancel request (a live
/// server: the read is cancelled and the message names the deadline) or does not (its backend
/// stopped: the command ends saying the server stopped answering). Either way nothing changed.
fn status_parked_by_a_lock(db: &TestDb) -> (Running, i32, Client) {
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; LOCK TABLE _prisma_migrations IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let running = Running::start_with_env(
        &["migrate", "status"],
        db.url(),
        &[(xtask::db::STATEMENT_DEADLINE_ENV, "1")],
    );
    let mut observer = db.client();
    let pid = until("`migrate status` waiting for the table lock", || {
        xtask_waiting_for_table(&mut observer, "_prisma_migrations")
    });
    (running, pid, holder)
}

#[test]
fn a_catalog_read_past_the_deadline_is_cancelled_and_the_deadline_named() {
    let db = TestDb::migrated_to(INIT);
    let before = book(&mut db.client());
    let (running, _pid, mut holder) = status_parked_by_a_lock(&db);
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("had no answer within the client-side deadline of 1 s and was cancelled")
            && stderr.contains("`DATAHUB_STATEMENT_DEADLINE=SECONDS` allows statements longer"),
        "{stderr}"
    );
    assert!(!stderr.contains("stopped answering"), "{stderr}");
    assert_eq!(book(&mut db.client()), before, "nothing was recorded");
}

#[test]
fn a_stopped_backend_in_a_catalog_read_ends_the_command() {
    let db = TestDb::migrated_to(INIT);
    let before = book(&mut db.client());
    let (running, pid, mut holder) = status_parked_by_a_lock(&db);
    signal(pid, libc::SIGSTOP);
    // The lock is free now: only the stopped backend holds the read up.
    holder.batch_execute("ROLLBACK").unwrap();
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    signal(pid, libc::SIGCONT);
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("stopped answering"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("had no answer for 1 s, nor its cancel request for 1 s")
            && line.contains("then run `cargo xtask migrate status`"),
        "{line}"
    );
    assert_eq!(book(&mut db.client()), before, "nothing was recorded");
}

/// `check` parked in its NULL count (a statement as long as the table, without a deadline) by
/// a lock the test holds. The probe asks the server whether the count still runs; `until` waits
/// for two probes, so the count has outlived the deadline twice over when the lock goes.
fn check_parked_in_its_count(url: &str, env: &[(&str, &str)]) -> (Running, Client) {
    let mut holder = datahub_tests::harness::client_for(url);
    holder
        .batch_execute(r#"BEGIN; LOCK TABLE "MetricDaily" IN ACCESS EXCLUSIVE MODE"#)
        .unwrap();
    let running = Running::start_with_env(&["check"], url, env);
    let mut observer = datahub_tests::harness::client_for(url);
    until("`check` counting, blocked by the table lock", || {
        xtask_waiting_for_table(&mut observer, "MetricDaily")
    });
    (running, holder)
}

#[test]
fn a_long_statement_outlives_the_deadline_watched_by_its_probe() {
    let db = TestDb::migrated_to(EXPAND);
    let unblocked = datahub_tests::harness::run_xtask(&["check"], Some(db.url()));
    let (running, mut holder) =
        check_parked_in_its_count(db.url(), &[(xtask::db::STATEMENT_DEADLINE_ENV, "1")]);
    until_lines(&running, "two probes of the count", 2, |l| {
        l.contains("the NULL count of the `workspace-tenancy` release: still running after")
    });
    answers_as_unhindered(running, &mut holder, &unblocked);
}

/// The pid of the postmaster: the parent of a backend of it.
fn postmaster_of(client: &mut Client) -> i32 {
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).unwrap();
    // pid (comm) state ppid ...: the fields after the command's closing parenthesis.
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_long_statement_whose_server_stops_answering_ends_the_command() {
    let cluster = OwnCluster::plain();
    let db = cluster.database(Some(EXPAND));
    let url = format!("{}?connect_timeout=2", db.url());
    let (running, mut holder) =
        check_parked_in_its_count(&url, &[(xtask::db::STATEMENT_DEADLINE_ENV, "1")]);
    // New connections are accepted by the kernel and never answered; the count's own backend
    // goes on waiting for the lock.
    let postmaster = postmaster_of(&mut holder);
    signal(postmaster, libc::SIGSTOP);
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    signal(postmaster, libc::SIGCONT);
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("stopped answering"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("the NULL count of the `workspace-tenancy` release has run for")
            && line.contains("did not complete its start-up"),
        "{line}"
    );
    let again = datahub_tests::harness::run_xtask(&["check"], Some(&url));
    assert!(
        again.status.code().is_some_and(|c| c < 2),
        "{}",
        datahub_tests::harness::text(&again.stderr)
    );
}

/// A `DATAHUB_STATEMENT_DEADLINE` that cannot be read is refused before anything runs, not
/// replaced by the default without a word (nor, far too large, overflowing the watchdog).
#[test]
fn an_unreadable_deadline_setting_is_refused() {
    for bad in ["5s", "0", "18446744073709551615"] {
        let out = Command::new(xtask_bin())
            .args(["migrate", "status"])
            .env_remove("DIRECT_URL")
            .env("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
            .env(xtask::db::STATEMENT_DEADLINE_ENV, bad)
            .output()
            .unwrap();
        let stderr = datahub_tests::harness::text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("`DATAHUB_STATEMENT_DEADLINE` is `{bad}`"))
                && stderr.contains("whole number of seconds from 1 to 86400"),
            "{stderr}"
        );
    }
}

/// `migrate deploy` whose index build finished while the write that records it is parked by a
/// lock on `_prisma_migrations` the test takes (seen in `pg_locks`): the deadline cancels the
/// bookkeeping on a live server; the message says what to run, and `recover` converges.
#[test]
fn deploy_whose_bookkeeping_is_cancelled_by_the_deadline_says_recover() {
    let db = TestDb::migrated_to(EXPAND);
    let mut app = db.client();
    app.batch_execute(r#"BEGIN; UPDATE "Connection" SET "status" = "status" WHERE false"#)
        .unwrap();
    let running = Running::start_with_env(
        &["migrate", "deploy"],
        db.url(),
        &[(xtask::db::STATEMENT_DEADLINE_ENV, "1")],
    );
    let mut observer = db.client();
    until("the index build waiting for the app's transaction", || {
        xtask_waiting_in(&mut observer, "CREATE INDEX CONCURRENTLY")
    });
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; LOCK TABLE _prisma_migrations IN EXCLUSIVE MODE")
        .unwrap();
    app.batch_execute("COMMIT").unwrap();
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    recover_converges(db.url());
}

/// `check` counting (parked by a table lock the test holds, seen in `pg_stat_activity`) on a
/// server whose every connection slot is then taken: the probe cannot connect, says so, and
/// the healthy count is not ended; once the lock goes, `check` reports as it does unhindered.
#[test]
fn a_probe_without_a_connection_slot_leaves_a_healthy_statement_alone() {
    let cluster = OwnCluster::with_settings(&[("max_connections", "8")]);
    let db = cluster.database(Some(EXPAND));
    let unblocked = datahub_tests::harness::run_xtask(&["check"], Some(db.url()));
    let (running, mut holder) =
        check_parked_in_its_count(db.url(), &[(xtask::db::STATEMENT_DEADLINE_ENV, "1")]);
    let mut held = Vec::new();
    while let Ok(client) = postgres::Client::connect(db.url(), postgres::NoTls) {
        held.push(client);
    }
    until_lines(&running, "a probe that found no connection slot", 1, |l| {
        l.contains("could not ask the server whether it still runs")
            && l.contains("too many clients")
    });
    drop(held);
    answers_as_unhindered(running, &mut holder, &unblocked);
}

/// `track_activities = off` for the database (a DBA's setting): `pg_stat_activity` shows the
/// command's backend as `disabled`, not `active`. A healthy count parked by a lock (seen in
/// `pg_locks`) outlives several probes all the same, and `check` then reports as unhindered.
#[test]
fn a_long_statement_is_not_ended_where_the_server_hides_its_activity() {
    let db = TestDb::migrated_to(EXPAND);
    let unblocked = datahub_tests::harness::run_xtask(&["check"], Some(db.url()));
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET track_activities = off",
            xtask::db::quote_ident(&db.name)
        ))
        .unwrap();
    let (running, mut holder) =
        check_parked_in_its_count(db.url(), &[(xtask::db::STATEMENT_DEADLINE_ENV, "1")]);
    until_lines(&running, "two probes of the count", 2, |l| {
        l.contains("the NULL count of the `workspace-tenancy` release: running for")
            && l.contains("PostgreSQL does not show whether its backend")
            && l.contains("`track_activities` is off for it")
    });
    answers_as_unhindered(running, &mut holder, &unblocked);
}
