//! `backfill --max-replica-lag`: a real streaming standby (`pg_basebackup -R`, a second
//! postmaster) whose replay is paused holds the backfill back, and the backfill says which
//! standby and how far behind; resumed, it finishes; paused for good, `--time-limit` still ends
//! it cleanly. No timers: the test reads the backfill's own progress lines, and what the
//! primary shows.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use datahub_tests::harness::{run_xtask, text, xtask_bin, OwnCluster};
use xtask::db::Client;
use xtask::tenancy::{EXPAND, INIT};

use crate::support::{null_count, paused_standby};

/// Rows in all four tables with a `workspaceId`.
fn filled(client: &mut Client) -> i64 {
    client
        .query_one(
            r#"SELECT (SELECT count("workspaceId") FROM "Connection") + (SELECT count("workspaceId") FROM "MetricDaily")
                    + (SELECT count("workspaceId") FROM "Insight") + (SELECT count("workspaceId") FROM "ChatMessage")"#,
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_paused_standby_holds_the_backfill_which_says_why_then_finishes_once_resumed() {
    let (cluster, db, mut standby) = paused_standby();
    let mut primary = db.client();
    let total = null_count(&mut primary);
    let mut child = Command::new(xtask_bin())
        .args(["backfill", "--max-replica-lag", "0", "--batch-size", "100"])
        .env_remove("DIRECT_URL")
        .env("DATABASE_URL", db.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut next_line = || {
        lines
            .next()
            .expect("the backfill ended without waiting for the paused standby")
            .unwrap()
    };
    // Blocking reads: the backfill's own words are the signal.
    let waiting = loop {
        let line = next_line();
        if line.contains("waiting for replica") {
            break line;
        }
    };
    let named = format!("waiting for replica `{}`: replay ", cluster.standby_name());
    assert!(waiting.contains(&named), "{waiting}");
    assert!(
        waiting.contains("behind") && waiting.contains("of WAL"),
        "{waiting}"
    );
    assert!(waiting.contains("over --max-replica-lag 0 ms"), "{waiting}");
    let filled_when_waiting = filled(&mut primary);
    assert!(filled_when_waiting < total, "it waited before the end");
    // Two more progress lines: each still says why it waits, and nothing was written since.
    for _ in 0..2 {
        let line = loop {
            let line = next_line();
            if line.contains(" rows (") {
                break line;
            }
        };
        assert!(line.contains(&named), "{line}");
    }
    assert_eq!(filled(&mut primary), filled_when_waiting);

    standby
        .execute("SELECT pg_wal_replay_resume()", &[])
        .unwrap();
    let rest: Vec<String> = std::iter::from_fn(|| lines.next())
        .map(Result::unwrap)
        .collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("resuming")),
        "it says when it goes on: {rest:?}"
    );
    assert_eq!(null_count(&mut primary), 0);
    assert_eq!(filled(&mut primary), total);
}

#[test]
fn a_standby_that_stops_replaying_holds_the_backfill_until_the_time_limit_ends_it() {
    let (cluster, db, mut standby) = paused_standby();
    let mut primary = db.client();
    let total = null_count(&mut primary);
    let output = run_xtask(
        &[
            "backfill",
            "--max-replica-lag",
            "0",
            "--batch-size",
            "100",
            "--time-limit",
            "1",
            "--json",
        ],
        Some(db.url()),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["stopped_early"], true, "{doc}");
    assert_eq!(doc["replica"]["max_replica_lag_ms"], 0, "{doc}");
    assert_eq!(
        doc["replica"]["standbys"],
        serde_json::json!([cluster.standby_name()])
    );
    assert!(doc["replica"]["pauses"].as_u64().unwrap() >= 1, "{doc}");
    let left = null_count(&mut primary);
    assert!(left > 0 && left <= total, "{left} of {total} left");
    assert_eq!(
        run_xtask(&["check"], Some(db.url())).status.code(),
        Some(1),
        "NULLs are left"
    );

    // Replaying again, a run with the default limit (1000 ms, as a standby streams) finishes.
    standby
        .execute("SELECT pg_wal_replay_resume()", &[])
        .unwrap();
    let output = run_xtask(&["backfill", "--json"], Some(db.url()));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["stopped_early"], false, "{doc}");
    assert_eq!(doc["replica"]["max_replica_lag_ms"], 1000, "{doc}");
    assert_eq!(doc["rows"], left);
    assert_eq!(null_count(&mut primary), 0);
}

#[test]
fn an_explicit_limit_the_role_cannot_measure_is_refused_with_the_grant() {
    let cluster = OwnCluster::with_standby();
    let db = cluster.database(Some(INIT));
    db.client()
        .batch_execute(
            r#"INSERT INTO "User" ("id", "email") VALUES ('u1', 'u1@x.io');
               INSERT INTO "Connection" ("id", "userId", "provider") VALUES ('c1', 'u1', 'google-ads');"#,
        )
        .unwrap();
    db.deploy_to(EXPAND);
    db.client()
        .batch_execute(
            r#"CREATE ROLE "plain_reader" LOGIN PASSWORD 'plain-reader-pw';
               GRANT SELECT ON ALL TABLES IN SCHEMA public TO "plain_reader";"#,
        )
        .unwrap();
    let (_, server_and_database) = db.url().rsplit_once('@').unwrap();
    let url = format!("postgresql://plain_reader:plain-reader-pw@{server_and_database}");
    let output = run_xtask(&["backfill", "--max-replica-lag", "500"], Some(&url));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("GRANT pg_monitor TO plain_reader"),
        "{stderr}"
    );
    assert!(!stderr.contains("plain-reader-pw"), "{stderr}");
    assert_eq!(null_count(&mut db.client()), 1, "nothing was changed");
}
