//! `backfill`: the home-workspace rule, idempotence, resuming after SIGKILL, untouched data,
//! the old app's writes after the backfill, and bad input.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use xtask::report::Report;

use datahub_tests::harness::{run_xtask, text, xtask_bin, TestDb};
use xtask::backfill::{backfill, BackfillOptions};
use xtask::db::Client;
use xtask::seed::{seed_pre_tenancy, SeedSize};
use xtask::tenancy::{EXPAND, INIT};

use crate::support::{data_digest, rule_violations, seed_small, workspace_assignment};

fn quiet() -> BackfillOptions {
    BackfillOptions {
        progress: false,
        ..BackfillOptions::default()
    }
}

/// Users covering every branch of the rule, with one row of each table per user.
const RULE_DATASET: &str = r#"
INSERT INTO "User" ("id", "email", "name") VALUES
  ('u_owner2', 'owner2@x.io', 'Owns two'),      -- OWNER of ws_b (older) and ws_a (newer)
  ('u_member', 'member@x.io', 'Member only'),    -- MEMBER of ws_a, then ADMIN of ws_c
  ('u_none',   'none@x.io',   NULL),             -- no membership: personal workspace
  ('u_none2',  'none2@x.io',  'No team'),        -- no membership: personal workspace
  ('u_shared', 'shared@x.io', 'Shared'),         -- MEMBER of ws_a then OWNER of ws_c
  ('u_tie',    'tie@x.io',    'Tie');            -- two OWNER memberships at the same instant
INSERT INTO "Workspace" ("id", "name", "slug") VALUES
  ('ws_a', 'A', 'a'), ('ws_b', 'B', 'b'), ('ws_c', 'C', 'c'), ('ws_d', 'D', 'd');
INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role", "createdAt") VALUES
  ('m1', 'ws_a', 'u_owner2', 'OWNER',  '2025-03-01'),
  ('m2', 'ws_b', 'u_owner2', 'OWNER',  '2025-01-01'),
  ('m3', 'ws_a', 'u_member', 'MEMBER', '2025-01-01'),
  ('m4', 'ws_c', 'u_member', 'ADMIN',  '2025-02-01'),
  ('m5', 'ws_a', 'u_shared', 'MEMBER', '2025-01-01'),
  ('m6', 'ws_c', 'u_shared', 'OWNER',  '2025-05-01'),
  ('m8', 'ws_d', 'u_tie',    'OWNER',  '2025-01-01'),
  ('m7', 'ws_c', 'u_tie',    'OWNER',  '2025-01-01');
INSERT INTO "Connection" ("id", "userId", "provider") SELECT 'c_' || id, id, 'google-ads' FROM "User";
INSERT INTO "MetricDaily" ("id", "userId", "provider", "date") SELECT 'd_' || id, id, 'google-ads', date '2025-12-01' FROM "User";
INSERT INTO "Insight" ("id", "userId", "provider", "title", "body") SELECT 'i_' || id, id, 'google-ads', 't', 'b' FROM "User";
INSERT INTO "ChatMessage" ("id", "userId", "role", "content") SELECT 'h_' || id, id, 'user', 'hi' FROM "User";
"#;

fn rule_db() -> TestDb {
    let db = TestDb::migrated_to(INIT);
    db.client().batch_execute(RULE_DATASET).unwrap();
    db.deploy_to(EXPAND);
    db
}

fn home_of(client: &mut Client, table: &str, user: &str) -> String {
    client
        .query_one(
            &format!(
                r#"SELECT "workspaceId" FROM {} WHERE "userId" = $1"#,
                xtask::db::quote_ident(table)
            ),
            &[&user],
        )
        .unwrap()
        .get(0)
}

#[test]
fn every_row_follows_the_home_workspace_rule() {
    let db = rule_db();
    let mut client = db.client();
    let report = backfill(
        &mut client,
        &db.database_url(),
        &crate::support::tenancy(),
        &quiet(),
    )
    .unwrap();
    assert_eq!(report.total_rows(), 24);
    assert_eq!(report.prepared, 2);

    let expected = [
        ("u_owner2", "ws_b"),          // earliest OWNER membership
        ("u_member", "ws_a"),          // no OWNER: earliest membership of any role
        ("u_shared", "ws_c"),          // OWNER beats an earlier MEMBER membership
        ("u_tie", "ws_c"),             // same instant: smallest membership id (m7)
        ("u_none", "personal_u_none"), // no membership: personal workspace
        ("u_none2", "personal_u_none2"),
    ];
    for table in ["Connection", "MetricDaily", "Insight", "ChatMessage"] {
        for (user, workspace) in expected {
            assert_eq!(
                home_of(&mut client, table, user),
                workspace,
                "{table} row of {user}"
            );
        }
    }
    assert_eq!(rule_violations(&mut client), 0);

    let personal: Vec<(String, String, String, String)> = client
        .query(
            r#"SELECT w."id", w."slug", w."name", m."role"::text FROM "Workspace" w
               JOIN "WorkspaceMember" m ON m."workspaceId" = w."id"
               WHERE w."id" LIKE 'personal_%' ORDER BY w."id""#,
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        personal,
        vec![
            (
                "personal_u_none".into(),
                "personal-u_none".into(),
                "none@x.io's workspace".into(),
                "OWNER".into()
            ),
            (
                "personal_u_none2".into(),
                "personal-u_none2".into(),
                "No team's workspace".into(),
                "OWNER".into()
            ),
        ]
    );
}

#[test]
fn a_second_run_changes_nothing_and_says_so() {
    let db = rule_db();
    let mut client = db.client();
    backfill(
        &mut client,
        &db.database_url(),
        &crate::support::tenancy(),
        &quiet(),
    )
    .unwrap();
    let before = workspace_assignment(&mut client);
    let again = backfill(
        &mut client,
        &db.database_url(),
        &crate::support::tenancy(),
        &quiet(),
    )
    .unwrap();
    assert!(again.changed_nothing());
    assert!(
        again.render().contains("Nothing to backfill"),
        "{}",
        again.render()
    );
    assert_eq!(workspace_assignment(&mut client), before);
}

#[test]
fn dry_run_counts_and_changes_nothing() {
    let db = rule_db();
    let mut client = db.client();
    let before = workspace_assignment(&mut client);
    let workspaces_before: i64 = client
        .query_one(r#"SELECT count(*) FROM "Workspace""#, &[])
        .unwrap()
        .get(0);
    let output = run_xtask(&["backfill", "--dry-run"], Some(db.url()));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Dry run: nothing was changed."), "{stdout}");
    assert!(
        stdout.contains("Personal workspaces that would be created: 2"),
        "{stdout}"
    );
    assert!(stdout.contains(" MetricDaily | 6"), "{stdout}");
    assert_eq!(workspace_assignment(&mut client), before);
    let workspaces_after: i64 = client
        .query_one(r#"SELECT count(*) FROM "Workspace""#, &[])
        .unwrap()
        .get(0);
    assert_eq!(workspaces_before, workspaces_after);
}

#[test]
fn non_workspace_columns_are_unchanged() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_pre_tenancy(
        &mut client,
        SeedSize {
            users: 200,
            days: 10,
            providers_per_user: 3,
        },
    )
    .unwrap();
    db.deploy_to(EXPAND);
    let before = data_digest(&mut client);
    let report = backfill(
        &mut client,
        &db.database_url(),
        &crate::support::tenancy(),
        &BackfillOptions {
            batch_size: 500,
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(report.tables[1].rows, 200 * 10 * 3);
    assert!(
        report.tables[1].batches > 1,
        "bounded batches: {:?}",
        report.tables[1]
    );
    assert_eq!(data_digest(&mut client), before);
    assert_eq!(rule_violations(&mut client), 0);
}

/// Same seed on two databases: one backfill killed mid-way then re-run, one uninterrupted.
/// The kill is deterministic: another session holds a row lock on the last row of
/// `MetricDaily`, the backfill's batch waits for it (seen in `pg_stat_activity`), and only
/// then is the process killed, so earlier batches are committed and later tables untouched.
#[test]
fn a_killed_backfill_resumes_to_the_same_state() {
    let size = SeedSize {
        users: 1500,
        days: 30,
        providers_per_user: 2,
    };
    let prepare = || {
        let db = TestDb::migrated_to(INIT);
        seed_pre_tenancy(&mut db.client(), size).unwrap();
        db.deploy_to(EXPAND);
        db
    };
    let killed = prepare();
    let reference = prepare();
    let mut client = killed.client();

    let mut holder = killed.client();
    let mut lock = holder.transaction().unwrap();
    lock.execute(
        r#"SELECT 1 FROM "MetricDaily" WHERE ctid = (SELECT ctid FROM "MetricDaily" ORDER BY ctid DESC LIMIT 1) FOR UPDATE"#,
        &[],
    )
    .unwrap();
    let mut child = Command::new(xtask_bin())
        .args(["backfill", "--batch-size", "200"])
        .env_remove("DIRECT_URL")
        .env("DATABASE_URL", killed.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The backfill fills MetricDaily around the held row and keeps coming back for it: once
    // that row is the only NULL left in the table, it is parked there.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 = client
            .query_one(
                r#"SELECT count(*) FROM "MetricDaily" WHERE "workspaceId" IS NULL"#,
                &[],
            )
            .unwrap()
            .get(0);
        if left == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backfill never reached the locked row"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The killed process's connections go the way a dropped network would take them.
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'cargo-xtask'",
            &[],
        )
        .unwrap();
    lock.rollback().unwrap();
    let (metric_done, metric_left, insight_left): (i64, i64, i64) = {
        let row = client
            .query_one(
                r#"SELECT (SELECT count(*) FROM "MetricDaily" WHERE "workspaceId" IS NOT NULL),
                          (SELECT count(*) FROM "MetricDaily" WHERE "workspaceId" IS NULL),
                          (SELECT count(*) FROM "Insight" WHERE "workspaceId" IS NULL)"#,
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert!(
        metric_done > 0 && metric_left > 0 && insight_left > 0,
        "interrupted part way: {metric_done} MetricDaily rows done, {metric_left} left, {insight_left} Insight rows left"
    );

    let rerun = run_xtask(&["backfill"], Some(killed.url()));
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun.stderr));
    let full = run_xtask(&["backfill"], Some(reference.url()));
    assert_eq!(full.status.code(), Some(0), "{}", text(&full.stderr));

    assert_eq!(
        workspace_assignment(&mut client),
        workspace_assignment(&mut reference.client())
    );
    assert_eq!(
        data_digest(&mut client),
        data_digest(&mut reference.client())
    );
    let personal: (i64, i64) = {
        let row = client
            .query_one(
                r#"SELECT (SELECT count(*) FROM "Workspace" WHERE "id" LIKE 'personal_%'),
                          (SELECT count(*) FROM "User" u WHERE NOT EXISTS (
                              SELECT 1 FROM "WorkspaceMember" m WHERE m."userId" = u."id" AND m."id" NOT LIKE 'personal_%'))"#,
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        personal.0, personal.1,
        "one personal workspace per user without a team"
    );
    assert_eq!(
        run_xtask(&["check"], Some(killed.url())).status.code(),
        Some(0)
    );
}

#[test]
fn rows_the_old_app_writes_after_the_backfill_get_a_workspace() {
    let db = rule_db();
    let mut client = db.client();
    backfill(
        &mut client,
        &db.database_url(),
        &crate::support::tenancy(),
        &quiet(),
    )
    .unwrap();
    // The old app version knows nothing of workspaceId.
    client
        .batch_execute(
            r#"INSERT INTO "User" ("id", "email") VALUES ('u_late', 'late@x.io');
               INSERT INTO "MetricDaily" ("id", "userId", "provider", "date") VALUES
                   ('d_new1', 'u_owner2', 'meta-ads', date '2025-12-02'),
                   ('d_new2', 'u_late', 'meta-ads', date '2025-12-02');
               INSERT INTO "ChatMessage" ("id", "userId", "role", "content") VALUES ('h_new', 'u_member', 'user', 'hello');
               UPDATE "Connection" SET "status" = 'CONNECTED', "workspaceId" = NULL WHERE "userId" = 'u_shared';"#,
        )
        .unwrap();
    let rows: Vec<(String, String)> = client
        .query(
            r#"SELECT "id", "workspaceId" FROM "MetricDaily" WHERE "id" LIKE 'd_new%'
               UNION ALL SELECT "id", "workspaceId" FROM "ChatMessage" WHERE "id" = 'h_new'
               UNION ALL SELECT "id", "workspaceId" FROM "Connection" WHERE "userId" = 'u_shared'
               ORDER BY 1"#,
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("c_u_shared".into(), "ws_c".into()),
            ("d_new1".into(), "ws_b".into()),
            ("d_new2".into(), "personal_u_late".into()),
            ("h_new".into(), "ws_a".into()),
        ]
    );
    let check = run_xtask(&["check"], Some(db.url()));
    assert_eq!(check.status.code(), Some(0));
    assert_eq!(rule_violations(&mut client), 0);
}

#[test]
fn refuses_before_the_expand_migration() {
    let db = TestDb::migrated_to(INIT);
    let output = run_xtask(&["backfill"], Some(db.url()));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "the expand migration `{EXPAND}` of the `workspace-tenancy` release is not applied"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cargo xtask migrate deploy --to {EXPAND}")),
        "{stderr}"
    );
}

#[test]
fn bad_batch_sizes_and_unreachable_databases() {
    for bad in ["0", "ten", "-5"] {
        let output = run_xtask(
            &["backfill", "--batch-size", bad],
            Some("postgresql://u@127.0.0.1:1/db"),
        );
        assert_eq!(output.status.code(), Some(2), "--batch-size {bad}");
        assert!(
            text(&output.stderr).contains("--batch-size"),
            "{}",
            text(&output.stderr)
        );
    }
    let output = run_xtask(
        &["backfill"],
        Some("postgresql://u:pw-secret@127.0.0.1:1/warehouse"),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("127.0.0.1:1/warehouse"), "{stderr}");
    assert!(!stderr.contains("pw-secret"), "{stderr}");
}

#[test]
fn two_workers_in_small_batches_assign_exactly_as_one() {
    let size = SeedSize {
        users: 60,
        days: 20,
        providers_per_user: 3,
    };
    let mut digests = Vec::new();
    for workers in [1, 3] {
        let db = TestDb::migrated_to(INIT);
        let mut client = db.client();
        seed_pre_tenancy(&mut client, size).unwrap();
        db.deploy_to(EXPAND);
        let report = backfill(
            &mut client,
            &db.database_url(),
            &crate::support::tenancy(),
            &BackfillOptions {
                workers,
                batch_size: 50,
                ..quiet()
            },
        )
        .unwrap();
        assert!(report.tables.iter().any(|t| t.batches > 10), "{report:?}");
        assert_eq!(rule_violations(&mut client), 0);
        digests.push(workspace_assignment(&mut client));
    }
    assert_eq!(digests[0], digests[1]);
}

#[test]
fn bad_worker_counts_and_time_limits() {
    for (flag, bad) in [
        ("--workers", "0"),
        ("--workers", "17"),
        ("--workers", "two"),
        ("--time-limit", "-1"),
        ("--time-limit", "soon"),
        ("--max-replica-lag", "-1"),
        ("--max-replica-lag", "1s"),
        ("--max-replica-lag", "86400001"),
        ("--max-horizon-age", "-1"),
        ("--max-horizon-age", "5m"),
        ("--max-horizon-age", "31536001"),
    ] {
        let output = run_xtask(
            &["backfill", flag, bad],
            Some("postgresql://u@127.0.0.1:1/db"),
        );
        assert_eq!(output.status.code(), Some(2), "{flag} {bad}");
        assert!(
            text(&output.stderr).contains(flag),
            "{}",
            text(&output.stderr)
        );
    }
}

/// `backfill --json`: rows, batches and seconds per table, for CI.
#[test]
fn backfill_json_reports_rows_per_table() {
    let db = rule_db();
    let nulls: i64 = db
        .client()
        .query_one(
            r#"SELECT (SELECT count(*) FROM "Connection") + (SELECT count(*) FROM "MetricDaily")
                    + (SELECT count(*) FROM "Insight") + (SELECT count(*) FROM "ChatMessage")"#,
            &[],
        )
        .unwrap()
        .get(0);
    let output = run_xtask(&["backfill", "--json"], Some(db.url()));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["dry_run"], false);
    assert_eq!(doc["stopped_early"], false);
    // No standby streams from the tests' server: the backfill waits for none.
    assert_eq!(doc["replica"], serde_json::Value::Null);
    assert_eq!(doc["rows"], nulls);
    let tables: Vec<&str> = doc["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        tables,
        ["Connection", "MetricDaily", "Insight", "ChatMessage"]
    );
    assert!(doc["tables"][1]["batches"].as_u64().unwrap() >= 1);
    assert!(doc["seconds"].is_number());
}

/// A row the app holds (a transaction with `SELECT … FOR UPDATE` that stays open) does not
/// stall the backfill, and the backfill does not stall the app: each batch waits at most 50 ms
/// for a lock, fills its range around the held row and keeps no row locked while it comes back
/// for it. While it waits, an app update of another row of the same page range goes through
/// under a 100 ms lock_timeout; once the app commits, the held row is filled too.
#[test]
fn a_row_the_app_holds_is_filled_around_and_come_back_for() {
    let db = TestDb::migrated_to(INIT);
    seed_pre_tenancy(
        &mut db.client(),
        SeedSize {
            users: 100,
            days: 20,
            providers_per_user: 2,
        },
    )
    .unwrap();
    db.deploy_to(EXPAND);
    let mut holder = db.client();
    let held_id: String = holder
        .query_one(
            r#"SELECT "id" FROM "MetricDaily" ORDER BY ctid OFFSET 500 LIMIT 1"#,
            &[],
        )
        .unwrap()
        .get(0);
    holder.batch_execute("BEGIN").unwrap();
    holder
        .execute(
            r#"SELECT 1 FROM "MetricDaily" WHERE "id" = $1 FOR UPDATE"#,
            &[&held_id],
        )
        .unwrap();

    let url = db.database_url();
    let run = std::thread::spawn(move || {
        let mut client = xtask::db::Connect::connect(&url).unwrap();
        let options = BackfillOptions {
            batch_size: 200,
            ..quiet()
        };
        backfill(&mut client, &url, &crate::support::tenancy(), &options).unwrap()
    });
    let mut observer = db.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<String> = observer
            .query(
                r#"SELECT "id" FROM "MetricDaily" WHERE "workspaceId" IS NULL"#,
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        if left == [held_id.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backfill stalled: {} NULLs left",
            left.len()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The backfill comes back for the held row; meanwhile it holds no row of that range.
    let mut app = db.client();
    app.batch_execute("SET lock_timeout = '100ms'").unwrap();
    let neighbour: String = app
        .query_one(
            r#"SELECT "id" FROM "MetricDaily" WHERE "id" <> $1
               AND ctid > (SELECT ctid FROM "MetricDaily" WHERE "id" = $1) ORDER BY ctid LIMIT 1"#,
            &[&held_id],
        )
        .unwrap()
        .get(0);
    app.execute(
        r#"UPDATE "MetricDaily" SET "clicks" = "clicks" WHERE "id" = $1"#,
        &[&neighbour],
    )
    .expect("an app update next to the held row must not wait for the backfill");
    holder.batch_execute("COMMIT").unwrap();
    let report = run.join().unwrap();
    assert_eq!(report.held(), 0, "{}", report.render());
    assert!(report.ok());
    assert_eq!(rule_violations(&mut observer), 0);
    let nulls: i64 = observer
        .query_one(
            r#"SELECT count(*) FROM "MetricDaily" WHERE "workspaceId" IS NULL"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(nulls, 0);
}

/// Through the binary: rows still held when the lock budget runs out are left NULL and named,
/// the progress line says what is going on, and the exit code is 1 (not done); the next run
/// finishes them.
#[test]
fn rows_held_beyond_the_lock_budget_are_named_and_the_next_run_fills_them() {
    let db = TestDb::migrated_to(INIT);
    crate::support::seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let mut holder = db.client();
    holder
        .batch_execute(
            r#"BEGIN; SELECT 1 FROM "Insight" WHERE "id" = (SELECT min("id") FROM "Insight") FOR UPDATE"#,
        )
        .unwrap();
    let out = run_xtask(
        &["backfill", "--batch-size", "50", "--lock-timeout", "1"],
        Some(db.url()),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "Insight: 1 row(s) held by other transactions (row locks); coming back for them"
        ),
        "{stderr}"
    );
    assert!(
        stdout.contains("1 of `Insight` row(s) were held by other transactions"),
        "{stdout}"
    );
    let check = run_xtask(&["check"], Some(db.url()));
    assert_eq!(check.status.code(), Some(1));
    holder.batch_execute("COMMIT").unwrap();
    let again = run_xtask(&["backfill"], Some(db.url()));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let check = run_xtask(&["check"], Some(db.url()));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
}

/// The backfill ends with ANALYZE, so `check` and the contract's guard read the new index
/// instead of taking every row for NULL. After a large backfill an autovacuum holds SHARE
/// UPDATE EXCLUSIVE on the table for a while (a session holds it here, seen in `pg_locks`):
/// ANALYZE waits for it, as it blocks neither reads nor writes, instead of giving up after a
/// batch's 50 ms, and the statistics say no NULL is left.
#[test]
fn analyze_waits_for_an_autovacuum_and_leaves_statistics_without_nulls() {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let mut observer = db.client();
    observer.batch_execute(r#"ANALYZE "MetricDaily""#).unwrap();
    let null_frac = |client: &mut Client| -> f32 {
        client
            .query_one(
                "SELECT null_frac FROM pg_stats WHERE tablename = 'MetricDaily' AND attname = 'workspaceId'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(null_frac(&mut observer), 1.0);
    let mut holder = db.client();
    holder
        .batch_execute(r#"BEGIN; LOCK TABLE "MetricDaily" IN SHARE UPDATE EXCLUSIVE MODE"#)
        .unwrap();

    let url = db.database_url();
    let run = std::thread::spawn(move || {
        let mut client = xtask::db::Connect::connect(&url).unwrap();
        backfill(&mut client, &url, &crate::support::tenancy(), &quiet()).unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let analyze_waits: bool = observer
            .query_one(
                r#"SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                   WHERE l.relation = '"MetricDaily"'::regclass AND l.mode = 'ShareUpdateExclusiveLock'
                     AND NOT l.granted AND a.query ILIKE 'ANALYZE%')"#,
                &[],
            )
            .unwrap()
            .get(0);
        if analyze_waits {
            break;
        }
        assert!(
            !run.is_finished() && Instant::now() < deadline,
            "the backfill's ANALYZE never waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    holder.batch_execute("COMMIT").unwrap();
    let report = run.join().unwrap();
    assert!(report.ok(), "{}", report.render());
    assert_eq!(null_frac(&mut observer), 0.0);
}

/// Through the binary: while every row of a table is held by another transaction, the count
/// stands still and the progress line says "no progress for N s", never a rate and an ETA
/// ("0 rows/s, ETA 0 s"); once the holder commits, the backfill finishes.
#[test]
fn a_count_that_stands_still_reads_as_no_progress() {
    let db = TestDb::migrated_to(INIT);
    crate::support::seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let mut holder = db.client();
    holder
        .batch_execute(r#"BEGIN; SELECT 1 FROM "Insight" FOR UPDATE"#)
        .unwrap();
    let mut running = datahub_tests::harness::Running::start(&["backfill"], db.url());
    let line = loop {
        assert!(
            running.is_running(),
            "the backfill ended before its count stood still: {:?}",
            running.stderr()
        );
        let seen = running
            .stderr()
            .into_iter()
            .find(|l| l.starts_with("  Insight: 0 / ") && l.contains("no progress for"));
        if let Some(line) = seen {
            break line;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    holder.batch_execute("COMMIT").unwrap();
    let (code, _, stderr) = running.wait(std::time::Duration::from_secs(120));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!line.contains("rows/s") && !line.contains("ETA"), "{line}");
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains("Insight:") && l.contains(", 0 rows/s")),
        "a stalled count read as a rate: {stderr}"
    );
    let check = run_xtask(&["check"], Some(db.url()));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
}
