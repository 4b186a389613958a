//! A backfill under an old snapshot: an idle REPEATABLE READ transaction, a prepared
//! transaction or a replication slot a standby's query holds, each opened before it. The
//! progress line names what holds back the xmin horizon (pid or name, application, state, age),
//! and the end of the backfill says how many dead tuples VACUUM cannot remove yet and what to
//! end; a logical slot's `catalog_xmin`, which holds back only the catalogs, is not named.
//! With `--max-horizon-age` the backfill pauses before its next batch while such a holder is
//! that old, and goes on once it ends; a signal or the lock budget ends the pause. The test
//! acts on what it sees: the backfill's own lines, `pg_replication_slots`, the rows filled.

use std::time::{Duration, Instant};

use datahub_tests::harness::{run_xtask, text, OwnCluster, Running, TestDb};
use serde_json::Value;
use xtask::db::Client;
use xtask::tenancy::{EXPAND, INIT};

use crate::json_schemas::assert_conforms;
use crate::support::{null_count, seed_small, until_holds};

/// The first stderr line of `running` holding every one of `parts`; fails if the process ends
/// first or a minute passes.
fn line_with(running: &mut Running, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = running.stderr();
        if let Some(line) = lines.iter().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.clone();
        }
        assert!(
            running.is_running() && Instant::now() < deadline,
            "no line with {parts:?}:\n{}",
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A seeded database at the expand migration, on the shared server.
fn expanded() -> TestDb {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    db
}

/// An idle REPEATABLE READ transaction holding its snapshot; its backend's pid.
fn old_snapshot(client: &mut Client) -> i32 {
    client
        .batch_execute(r#"BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM "User""#)
        .unwrap();
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

#[test]
fn the_session_holding_back_the_horizon_is_named_and_the_dead_tuples_counted() {
    let db = expanded();
    let nulls = null_count(&mut db.client());
    let mut old = db.client();
    let old_pid = old_snapshot(&mut old);
    // A row the backfill must come back for keeps it running until the test lets go.
    let mut app = db.client();
    app.batch_execute(
        r#"BEGIN; SELECT 1 FROM "MetricDaily" WHERE "workspaceId" IS NULL ORDER BY id LIMIT 1 FOR UPDATE"#,
    )
    .unwrap();
    let mut running = Running::start(&["backfill", "--batch-size", "100"], db.url());
    let named = format!("xmin horizon held back by session pid {old_pid} (`datahub-tests`, idle in transaction for ");
    let line = line_with(&mut running, &[&named, "MetricDaily: "]);
    assert!(line.contains(" / "), "{line}");
    app.batch_execute("COMMIT").unwrap();
    let (code, _, stderr) = running.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.contains("dead tuples VACUUM cannot remove yet"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        summary.contains(&format!(
            "backfill: the {} old row versions it replaced are dead tuples",
            datahub_core::format::thousands(nulls)
        )) && summary.contains(&format!(
            "`SELECT pg_terminate_backend({old_pid})` if it is idle"
        )),
        "{summary}"
    );
    assert_eq!(null_count(&mut db.client()), 0);
    old.batch_execute("COMMIT").unwrap();
}

#[test]
fn a_prepared_transaction_is_named_and_a_logical_slots_catalog_xmin_is_not() {
    let own =
        OwnCluster::with_settings(&[("max_prepared_transactions", "2"), ("wal_level", "logical")]);
    let db = own.database(Some(INIT));
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let nulls = null_count(&mut db.client());
    let mut admin = db.client();
    // The slot first: creating a logical slot waits for every running transaction to end.
    admin
        .query_one(
            "SELECT pg_create_logical_replication_slot('horizon_logical', 'test_decoding')",
            &[],
        )
        .unwrap();
    // A transaction id consumed between them, so the slot's horizon is strictly older.
    admin.query_one("SELECT txid_current()", &[]).unwrap();
    admin
        .batch_execute(
            r#"BEGIN; SELECT count(*) FROM "User"; PREPARE TRANSACTION 'horizon_prepared'"#,
        )
        .unwrap();
    // The slot's horizon is the older: a reader that counted it would name it first.
    let slot_older: bool = admin
        .query_one(
            "SELECT s.xmin IS NULL AND age(s.catalog_xmin) > age(p.transaction)
             FROM pg_replication_slots s, pg_prepared_xacts p
             WHERE s.slot_name = 'horizon_logical' AND p.gid = 'horizon_prepared'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(slot_older);

    let output = run_xtask(&["backfill", "--batch-size", "100"], Some(db.url()));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let named = "xmin horizon held back by prepared transaction 'horizon_prepared' (`";
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(named) && l.contains(", prepared for ") && l.contains(" / ")),
        "{stderr}"
    );
    let summary = stderr
        .lines()
        .find(|l| l.contains("dead tuples VACUUM cannot remove yet"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        summary.contains(&format!(
            "the {} old row versions it replaced",
            datahub_core::format::thousands(nulls)
        )) && summary.contains(
            "`COMMIT PREPARED 'horizon_prepared'` or `ROLLBACK PREPARED 'horizon_prepared'`"
        ) && !summary.contains(" more;"),
        "{summary}"
    );
    assert!(!stderr.contains("horizon_logical"), "{stderr}");
    assert_eq!(null_count(&mut db.client()), 0);
    admin
        .batch_execute("ROLLBACK PREPARED 'horizon_prepared'")
        .unwrap();
    admin
        .batch_execute("SELECT pg_drop_replication_slot('horizon_logical')")
        .unwrap();
}

#[test]
fn a_physical_slot_holding_the_horizon_for_a_standbys_query_is_named() {
    let own = OwnCluster::with_standby();
    let db = own.database(Some(INIT));
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let mut admin = own.admin();
    admin
        .query_one(
            "SELECT pg_create_physical_replication_slot('horizon_standby')",
            &[],
        )
        .unwrap();
    // The standby streams through the slot and reports its oldest snapshot to it.
    let mut standby = own.standby("postgres");
    standby
        .batch_execute("ALTER SYSTEM SET hot_standby_feedback = on")
        .unwrap();
    standby
        .batch_execute("ALTER SYSTEM SET primary_slot_name = 'horizon_standby'")
        .unwrap();
    standby.query_one("SELECT pg_reload_conf()", &[]).unwrap();
    let written: String = admin
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .unwrap()
        .get(0);
    until_holds(
        "the standby's streaming through the slot, caught up",
        || {
            admin
            .query_one(
                "SELECT coalesce(bool_and(s.active AND r.replay_lsn >= $1::text::pg_lsn), false)
                 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
                 WHERE s.slot_name = 'horizon_standby'",
                &[&written],
            )
            .unwrap()
            .get(0)
        },
    );
    let mut reader = own.standby(&db.name);
    reader
        .batch_execute(r#"BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM "User""#)
        .unwrap();
    let reader_xmin: i64 = reader
        .query_one("SELECT txid_snapshot_xmin(txid_current_snapshot())", &[])
        .unwrap()
        .get(0);
    until_holds("the slot's xmin at the standby's snapshot", || {
        admin
            .query_one(
                "SELECT coalesce(bool_and(xmin::text::bigint <= $1), false)
                 FROM pg_replication_slots WHERE slot_name = 'horizon_standby'",
                &[&reader_xmin],
            )
            .unwrap()
            .get(0)
    });

    let output = run_xtask(&["backfill", "--batch-size", "100"], Some(db.url()));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains(" / ")
            && l.contains(
                "xmin horizon held back by replication slot 'horizon_standby' (`physical`, active)"
            )),
        "{stderr}"
    );
    let summary = stderr
        .lines()
        .find(|l| l.contains("dead tuples VACUUM cannot remove yet"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        summary.contains("`SELECT pg_drop_replication_slot('horizon_standby')`"),
        "{summary}"
    );
    assert_eq!(null_count(&mut db.client()), 0);
    reader.batch_execute("COMMIT").unwrap();
}

#[test]
fn the_backfill_pauses_while_an_old_snapshot_is_over_the_limit_and_finishes_once_it_ends() {
    let db = expanded();
    let nulls = null_count(&mut db.client());
    let mut old = db.client();
    let old_pid = old_snapshot(&mut old);
    let mut running = Running::start(
        &[
            "backfill",
            "--batch-size",
            "100",
            "--max-horizon-age",
            "0",
            "--json",
        ],
        db.url(),
    );
    let holder = format!("paused: xmin horizon held back by session pid {old_pid} (`datahub-tests`, idle in transaction for ");
    let paused = line_with(&mut running, &[&holder]);
    assert!(
        paused.contains(
            "over --max-horizon-age 0 s; end that transaction (`SELECT pg_terminate_backend"
        ) && paused.contains(&format!("pg_terminate_backend({old_pid})")),
        "{paused}"
    );
    // The progress line says why it stands still.
    line_with(&mut running, &[" / ", "no progress for", &holder]);
    // Not one batch ran: the pause comes before each.
    assert_eq!(null_count(&mut db.client()), nulls);

    old.batch_execute("COMMIT").unwrap();
    let (code, stdout, stderr) = running.wait(Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("; resuming"), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_conforms("backfill", &report);
    assert_eq!(report["horizon"]["max_horizon_age_seconds"], 0, "{report}");
    assert!(
        report["horizon"]["pauses"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["horizon"]["paused_seconds"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_eq!(report["rows"], nulls, "{report}");
    assert_eq!(null_count(&mut db.client()), 0);
}

#[test]
fn sigterm_during_the_pause_ends_the_backfill_at_once() {
    let db = expanded();
    let nulls = null_count(&mut db.client());
    let mut old = db.client();
    let old_pid = old_snapshot(&mut old);
    let mut running = Running::start(&["backfill", "--max-horizon-age", "0"], db.url());
    line_with(
        &mut running,
        &[&format!(
            "paused: xmin horizon held back by session pid {old_pid}"
        )],
    );
    crate::faults::signal(running.pid(), libc::SIGTERM);
    let (code, _, stderr) = running.wait(Duration::from_secs(30));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("backfilled before SIGTERM (kept); run `cargo xtask backfill` again"),
        "{stderr}"
    );
    assert_eq!(null_count(&mut db.client()), nulls);
    old.batch_execute("COMMIT").unwrap();
}

#[test]
fn a_pause_longer_than_the_lock_budget_stops_the_backfill_naming_the_holder() {
    let db = expanded();
    let nulls = null_count(&mut db.client());
    let mut old = db.client();
    let old_pid = old_snapshot(&mut old);
    let output = run_xtask(
        &["backfill", "--max-horizon-age", "0", "--lock-timeout", "1"],
        Some(db.url()),
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        error.contains(&format!("paused 1 s (`--lock-timeout`) while the xmin horizon was held back by session pid {old_pid} (`datahub-tests`, idle in transaction for "))
            && error.contains("over `--max-horizon-age 0`")
            && error.contains(&format!("`SELECT pg_terminate_backend({old_pid})` if it is idle"))
            && error.ends_with("then run `cargo xtask backfill` again"),
        "{error}"
    );
    assert_eq!(null_count(&mut db.client()), nulls);
    old.batch_execute("COMMIT").unwrap();
}
