//! `recover`: the recovery plan's scenarios A and B replayed on real failures, a dry run that
//! changes nothing, nothing to recover, and a state it refuses to touch.

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
    // The incident: everything deployed before the backfill, as Prisma deploys (without
    // counting the rows first); the contract fails.
    let incident = migrate::deploy(
        &mut client,
        &db.database_url(),
        &repo_migrations(),
        &DeployOptions {
            check_rows: false,
            ..DeployOptions::default()
        },
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
    // The expand fails as a Prisma deploy of it fails: the file's own short lock_timeout runs
    // out while the app holds a lock on MetricDaily, PostgreSQL rolls the script back, and the
    // row is left failed with the error in its logs.
    let mut app = db.client();
    app.batch_execute(r#"BEGIN; SELECT count(*) FROM "MetricDaily";"#)
        .unwrap();
    let migrations = repo_migrations();
    let expand = migrations.iter().find(|m| m.name == EXPAND).unwrap();
    let id = migrate::history::insert_started(&mut client, EXPAND, &expand.checksum).unwrap();
    client.batch_execute("SET lock_timeout = '100ms'").unwrap();
    let error = client.batch_execute(&expand.script).unwrap_err();
    assert_eq!(error.code().map(|c| c.code()), Some("55P03"), "{error}");
    client.batch_execute("RESET lock_timeout").unwrap();
    migrate::history::mark_failed(
        &mut client,
        &id,
        &format!(
            "Database error code: 55P03\n\nDatabase error:\nERROR: {}",
            error.as_db_error().unwrap().message()
        ),
    )
    .unwrap();
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
        &DeployOptions {
            check_rows: false,
            ..DeployOptions::default()
        }
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
    assert!(stdout.contains("Insight.workspaceId: NOT NULL"), "{stdout}");
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
        &crate::support::tenancy(),
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
    let deploy = run_xtask(&["migrate", "deploy", "--skip-row-check"], Some(db.url()));
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
    assert!(
        steps.contains(&("backfill workspace-tenancy", "done")),
        "{steps:?}"
    );
    assert_eq!(steps.last(), Some(&("migrate status", "done")));
    assert!(doc["steps"][1]["rows"].is_null() || doc["steps"][1]["rows"].is_number());
    assert_released(&mut db.client());
}

/// A deploy was killed (SIGKILL) inside the contract, and its backend went on and committed:
/// the row says "failed" with no recorded outcome. Recover proves from the catalog that the
/// script committed and records it as applied, Prisma's way, instead of running it again.
#[test]
fn a_contract_committed_after_its_deploy_was_killed_is_resolved_as_applied() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    db.deploy_to(EXPAND);
    xtask::backfill::backfill(
        &mut client,
        &db.database_url(),
        &crate::support::tenancy(),
        &BackfillOptions {
            progress: false,
            ..BackfillOptions::default()
        },
    )
    .unwrap();
    let migrations = repo_migrations();
    let contract_at = migrations.iter().position(|m| m.name == CONTRACT).unwrap();
    db.deploy_to(&migrations[contract_at - 1].name);
    let before = data_digest(&mut client);
    // What the killed deploy left: its row, started and never finished, and the script's
    // effect, committed by the backend that outlived it.
    let contract = migrations.iter().find(|m| m.name == CONTRACT).unwrap();
    migrate::history::insert_started(&mut client, CONTRACT, &contract.checksum).unwrap();
    client.batch_execute(&contract.script).unwrap();

    let status = run_xtask(&["migrate", "status"], Some(db.url()));
    let advice = text(&status.stdout);
    assert!(advice.contains("has no recorded outcome"), "{advice}");
    assert!(
        advice.contains("may have gone on and applied the script"),
        "{advice}"
    );
    assert!(
        !advice.contains("PostgreSQL rolled its script back"),
        "{advice}"
    );

    let out = run_xtask(&["recover"], Some(db.url()));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("marked applied: Connection.workspaceId, MetricDaily.workspaceId, Insight.workspaceId, ChatMessage.workspaceId NOT NULL: its script committed"),
        "{stdout}"
    );
    assert_released(&mut client);
    assert_eq!(data_digest(&mut client), before);
    let rows: Vec<_> = crate::support::bookkeeping(&mut client)
        .into_iter()
        .filter(|r| r.name == CONTRACT)
        .collect();
    // Prisma's `resolve --applied`: the failed row rolled back, a new applied row, 0 steps.
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[0].rolled_back && !rows[0].finished);
    assert!(rows[1].finished && !rows[1].rolled_back && rows[1].steps == 0);
}

/// The same proof for the expand: every object it creates exists, so it committed.
#[test]
fn an_expand_committed_after_its_deploy_was_killed_is_resolved_as_applied() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    let migrations = repo_migrations();
    let expand = migrations.iter().find(|m| m.name == EXPAND).unwrap();
    migrate::history::insert_started(&mut client, EXPAND, &expand.checksum).unwrap();
    client.batch_execute(&expand.script).unwrap();
    let out = run_xtask(&["recover"], Some(db.url()));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("marked applied: Connection.workspaceId, MetricDaily.workspaceId, Insight.workspaceId, ChatMessage.workspaceId exist: its script committed"),
        "{stdout}"
    );
    assert_released(&mut client);
}

/// An index of the migration's name that is VALID but not what the file defines is not taken
/// for the migration: recover stops, shows the definition it found, changes nothing.
#[test]
fn a_valid_index_defined_otherwise_than_its_file_is_left_to_a_person() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    db.deploy_to(EXPAND);
    let migrations = repo_migrations();
    let index_migration = &migrations[2];
    assert_eq!(
        index_migration.concurrent_index().as_deref(),
        Some("Connection_workspaceId_idx")
    );
    migrate::history::insert_started(
        &mut client,
        &index_migration.name,
        &index_migration.checksum,
    )
    .unwrap();
    client
        .batch_execute(r#"CREATE INDEX "Connection_workspaceId_idx" ON "Connection"("userId")"#)
        .unwrap();
    let book = bookkeeping_digest(&mut client);
    let out = run_xtask(&["recover"], Some(db.url()));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("is VALID but defined otherwise than the file: the database has `CREATE INDEX \"Connection_workspaceId_idx\" ON public.\"Connection\" USING btree (\"userId\")`"),
        "{stdout}"
    );
    assert!(stdout.contains("changed nothing"), "{stdout}");
    assert_eq!(bookkeeping_digest(&mut client), book);
}

/// Recover decides under the migration lock: while another session holds it, recover waits,
/// then gives up saying nothing was changed, and does not send anyone to recover again for a
/// failure that does not exist.
#[test]
fn recover_waits_for_the_migration_lock_and_says_nothing_was_changed() {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    let deploy = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(1));
    let mut holder = db.client();
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&xtask::db::MIGRATION_LOCK_KEY],
        )
        .unwrap();
    let book = bookkeeping_digest(&mut db.client());
    let out = run_xtask(&["recover", "--lock-wait", "1"], Some(db.url()));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("waiting for the migration lock, held by backend pid"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gave up after waiting 1 s, and nothing was changed"),
        "{stderr}"
    );
    assert_eq!(bookkeeping_digest(&mut db.client()), book);
}

/// The row a failed deploy leaves: started, not finished, the error in `logs`.
fn record_failed(client: &mut xtask::db::Client, name: &str) {
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
            && text.contains("constraint `Connection_workspaceId_userId_provider_key` on `Connection` does not exist, `Connection_userId_provider_key` exists: its script (one transaction) left nothing"),
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

/// The key migration's only row says failed while the catalog shows its effect complete (the
/// new key adopted, the old one gone), as a deploy killed after its script committed leaves
/// it: the proof is the catalog, so it is resolved as applied.
#[test]
fn a_connection_key_migration_recorded_failed_but_applied_is_resolved_as_applied() {
    let db = TestDb::migrated_to(CONNECTION_KEY);
    let mut client = db.client();
    client
        .execute(
            "DELETE FROM _prisma_migrations WHERE migration_name = $1",
            &[&CONNECTION_KEY],
        )
        .unwrap();
    record_failed(&mut client, CONNECTION_KEY);
    let report = run(&db, false);
    let text = report.render();
    assert!(report.ok(), "{text}");
    assert!(
        text.contains("marked applied: constraint `Connection_workspaceId_userId_provider_key` on `Connection` exists, `Connection_userId_provider_key` does not exist: its script committed"),
        "{text}"
    );
    assert_released(&mut client);
}
