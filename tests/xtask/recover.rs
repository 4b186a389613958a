//! `recover`: the recovery plan's scenarios A and B replayed on real failures, a dry run that
//! changes nothing, nothing to recover, and a state it refuses to touch.

use std::time::Duration;
use xtask::report::{Report, Style};

use datahub_tests::harness::{latest_migration, repo_migrations, run_xtask, text, TestDb};
use xtask::backfill::BackfillOptions;
use xtask::migrate::{self, state::State, DeployOptions};
use xtask::runbook::{recover, RecoverOptions, RecoverReport};
use xtask::tenancy::{CONNECTION_KEY, CONNECTION_KEY_INDEX, CONTRACT, EXPAND, INIT};

use crate::assert_stable_snapshot;
use crate::support::{
    assert_released, bookkeeping_digest, data_digest, null_count, seed_small, workspace_columns,
};

fn run(db: &TestDb, dry_run: bool) -> RecoverReport {
    recover(
        &mut db.client(),
        &db.database_url(),
        &repo_migrations(),
        &RecoverOptions {
            dry_run,
            backfill: BackfillOptions {
                progress: false,
                ..BackfillOptions::default()
            },
            ..RecoverOptions::default()
        },
    )
    .unwrap()
}

/// The dry run reports a plan and leaves bookkeeping and data exactly as they were.
fn assert_dry_run_changes_nothing(db: &TestDb, snapshot: &str) -> RecoverReport {
    let mut client = db.client();
    let (book, data, nulls) = (
        bookkeeping_digest(&mut client),
        data_digest(&mut client),
        null_count(&mut client),
    );
    let workspaces: i64 = client
        .query_one(r#"SELECT count(*) FROM "Workspace""#, &[])
        .unwrap()
        .get(0);
    let report = run(db, true);
    assert!(report.report.ok, "{}", report.render());
    assert_stable_snapshot!(snapshot, report.render_with(Style::SNAPSHOT));
    assert_eq!(bookkeeping_digest(&mut client), book);
    assert_eq!(data_digest(&mut client), data);
    assert_eq!(null_count(&mut client), nulls);
    let after: i64 = client
        .query_one(r#"SELECT count(*) FROM "Workspace""#, &[])
        .unwrap()
        .get(0);
    assert_eq!(after, workspaces);
    report
}

#[test]
fn scenario_a_contract_failed_after_expand() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    let before = data_digest(&mut client);
    // The incident: everything deployed before the backfill; the contract fails.
    let incident = migrate::deploy(
        &mut client,
        &db.database_url(),
        &repo_migrations(),
        &DeployOptions::default(),
    );
    assert!(incident.is_err());
    let status = migrate::status(&mut client, &repo_migrations()).unwrap();
    assert_eq!(status.state_of(CONTRACT), Some(&State::Failed));
    assert_eq!(status.state_of(EXPAND), Some(&State::Applied));

    let plan = assert_dry_run_changes_nothing(&db, "recover_dry_run_scenario_a");
    assert!(plan.findings.iter().any(|f| f.contains("scenario A")));

    let report = run(&db, false);
    assert!(report.report.ok, "{}", report.render());
    assert_released(&mut client);
    assert_eq!(data_digest(&mut client), before, "recover changed data");

    let again = run_xtask(&["recover"], Some(db.url()));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("Nothing to recover"));
}

#[test]
fn scenario_b_expand_failed_too() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    let before = data_digest(&mut client);
    // The app holds a lock on MetricDaily for longer than expand may wait: expand fails with a
    // lock timeout, after one retry, and nothing of it is applied.
    let mut app = db.client();
    app.batch_execute(r#"BEGIN; SELECT count(*) FROM "MetricDaily";"#)
        .unwrap();
    let failed = migrate::deploy(
        &mut client,
        &db.database_url(),
        &repo_migrations(),
        &DeployOptions {
            lock_timeout: Duration::from_millis(100),
            lock_retries: 1,
            ..DeployOptions::default()
        },
    );
    let message = format!("{:#}", failed.unwrap_err());
    assert!(message.contains("after 1 lock timeout(s)"), "{message}");
    assert!(message.contains("55P03"), "{message}");
    app.batch_execute("ROLLBACK").unwrap();
    let status = migrate::status(&mut client, &repo_migrations()).unwrap();
    assert_eq!(status.state_of(EXPAND), Some(&State::Failed));
    assert!(workspace_columns(&mut client).is_empty());

    let plan = assert_dry_run_changes_nothing(&db, "recover_dry_run_scenario_b");
    assert!(plan.findings.iter().any(|f| f.contains("scenario B")));

    let out = run_xtask(&["recover"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Recovered"),
        "{}",
        text(&out.stdout)
    );
    assert_released(&mut client);
    assert_eq!(data_digest(&mut client), before, "recover changed data");
}

#[test]
fn nothing_to_recover_on_a_released_database() {
    let db = TestDb::migrated_to(&latest_migration());
    let mut client = db.client();
    let book = bookkeeping_digest(&mut client);
    let out = run_xtask(&["recover"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Nothing to recover"));
    assert_eq!(bookkeeping_digest(&mut client), book);
}

#[test]
fn a_contract_applied_by_hand_is_not_resolved_away() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    assert!(migrate::deploy(
        &mut client,
        &db.database_url(),
        &repo_migrations(),
        &DeployOptions::default()
    )
    .is_err());
    // Someone fixed one table by hand: the failed row no longer tells the whole story.
    client
        .batch_execute(
            r#"UPDATE "Insight" SET "workspaceId" = "datahub_home_workspace_id"("userId");
               ALTER TABLE "Insight" ALTER COLUMN "workspaceId" SET NOT NULL;"#,
        )
        .unwrap();
    let (book, data) = (bookkeeping_digest(&mut client), data_digest(&mut client));
    let nulls = null_count(&mut client);
    let out = run_xtask(&["recover"], Some(db.url()));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("cannot prove"), "{stdout}");
    assert!(stdout.contains("Insight: NOT NULL"), "{stdout}");
    assert!(stdout.contains("A person must decide"), "{stdout}");
    assert_eq!(bookkeeping_digest(&mut client), book);
    assert_eq!(data_digest(&mut client), data);
    assert_eq!(null_count(&mut client), nulls);
}

#[test]
fn an_interrupted_concurrent_index_is_dropped_and_built_again() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    db.deploy_to(EXPAND);
    xtask::backfill::backfill(
        &mut client,
        &db.database_url(),
        &BackfillOptions {
            progress: false,
            ..BackfillOptions::default()
        },
    )
    .unwrap();
    // A CREATE INDEX CONCURRENTLY that failed part way leaves an INVALID index of its name,
    // and the failed row in `_prisma_migrations`.
    let migrations = repo_migrations();
    let index_migration = migrations
        .iter()
        .find(|m| m.concurrent_index().as_deref() == Some("MetricDaily_workspaceId_idx"))
        .unwrap();
    let failed = client.batch_execute(
        r#"CREATE UNIQUE INDEX CONCURRENTLY "MetricDaily_workspaceId_idx" ON "MetricDaily"("workspaceId")"#,
    );
    assert!(failed.is_err(), "duplicates make the unique build fail");
    let previous = &migrations[migrations
        .iter()
        .position(|m| m.name == index_migration.name)
        .unwrap()
        - 1]
    .name;
    db.deploy_to(previous);
    let id = migrate::history::insert_started(
        &mut client,
        &index_migration.name,
        &index_migration.checksum,
    )
    .unwrap();
    migrate::history::mark_failed(&mut client, &id, "Database error code: 23505").unwrap();

    let report = run(&db, false);
    assert!(report.report.ok, "{}", report.render());
    assert!(
        report
            .render()
            .contains("the index `MetricDaily_workspaceId_idx` is INVALID"),
        "{}",
        report.render()
    );
    assert_released(&mut client);
    let (valid, unique): (bool, bool) = {
        let row = client
            .query_one(
                "SELECT i.indisvalid, i.indisunique FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE c.relname = 'MetricDaily_workspaceId_idx'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(valid && !unique);
}

/// `recover --json` and the report a CI job reads: the findings, each step, the outcome.
#[test]
fn recover_json_reports_findings_and_steps() {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let deploy = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(1));

    let dry = run_xtask(&["recover", "--dry-run", "--json"], Some(db.url()));
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(doc["command"], "recover --dry-run");
    assert!(doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["result"] == "planned"));

    let output = run_xtask(&["recover", "--json"], Some(db.url()));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["command"], "recover");
    let findings: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        findings.iter().any(|f| f.starts_with("scenario A")),
        "{findings:?}"
    );
    let steps: Vec<(&str, &str)> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["result"].as_str().unwrap()))
        .collect();
    assert_eq!(steps[0], (format!("resolve {CONTRACT}").as_str(), "done"));
    assert!(steps.contains(&("backfill", "done")), "{steps:?}");
    assert_eq!(steps.last(), Some(&("migrate status", "done")));
    assert!(doc["steps"][1]["rows"].is_null() || doc["steps"][1]["rows"].is_number());
    assert_released(&mut db.client());
}

/// The row a failed deploy leaves: started, not finished, the error in `logs`.
fn record_failed(client: &mut postgres::Client, name: &str) {
    let checksum = repo_migrations()
        .into_iter()
        .find(|m| m.name == name)
        .unwrap()
        .checksum;
    client
        .execute(
            "INSERT INTO _prisma_migrations (id, checksum, migration_name, logs, started_at, applied_steps_count)
             VALUES (gen_random_uuid()::text, $1, $2, 'Database error code: 55P03', now(), 0)",
            &[&checksum, &name],
        )
        .unwrap();
}

#[test]
fn a_failed_connection_key_migration_is_proved_untouched_and_deployed() {
    // The migrations after the contract: the key migration failed (its script rolled back),
    // so the new key is not a constraint and the old key is still there.
    let db = TestDb::migrated_to(CONNECTION_KEY_INDEX);
    let mut client = db.client();
    record_failed(&mut client, CONNECTION_KEY);
    let dry = run(&db, true);
    let text = dry.render_with(Style::SNAPSHOT);
    assert!(
        text.contains(&format!("resolve {CONNECTION_KEY}"))
            && text.contains("`Connection_workspaceId_userId_provider_key` is not a constraint and the old key `Connection_userId_provider_key` still exists"),
        "{text}"
    );
    let report = run(&db, false);
    assert!(report.ok(), "{}", report.render());
    assert_released(&mut client);
    let keys: Vec<String> = client
        .query(
            r#"SELECT conname::text FROM pg_constraint WHERE conrelid = '"Connection"'::regclass AND contype = 'u' ORDER BY 1"#,
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys, ["Connection_workspaceId_userId_provider_key"]);
}

#[test]
fn a_connection_key_migration_recorded_failed_but_applied_is_not_resolved_away() {
    let db = TestDb::migrated_to(CONNECTION_KEY);
    let mut client = db.client();
    record_failed(&mut client, CONNECTION_KEY);
    let book = bookkeeping_digest(&mut client);
    let report = run(&db, false);
    assert!(!report.ok());
    let text = report.render();
    assert!(
        text.contains(&format!(
            "cargo xtask migrate resolve --applied {CONNECTION_KEY}"
        )),
        "{text}"
    );
    assert_eq!(bookkeeping_digest(&mut client), book);
}
