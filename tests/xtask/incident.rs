//! The incident, reproduced: both tenancy migrations deployed before any backfill. The contract
//! fails, nothing of it is applied, deploy refuses until resolved, and the runbook's recovery
//! (resolve, backfill, deploy) ends up to date.

use datahub_tests::harness::{run_xtask, text, TestDb};
use xtask::migrate::{self, state::State};
use xtask::migrations;
use xtask::report::{Report, Style};
use xtask::tenancy::{CONTRACT, EXPAND, INIT};

use crate::assert_stable_snapshot;
use crate::support::{bookkeeping, insert_pre_tenancy_user, workspace_columns};

#[test]
fn contract_before_backfill_fails_cleanly_and_recovers() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    insert_pre_tenancy_user(&mut client, "user_1");
    db.deploy_to(EXPAND);
    let nulls: i64 = client
        .query_one(
            r#"SELECT count(*) FROM "Connection" WHERE "workspaceId" IS NULL"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(nulls, 1, "expand must not backfill anything");

    // The contract fails on the NULL, exit 1, recorded as a failed row with SQLSTATE and message.
    let deploy = run_xtask(&["migrate", "deploy", "--skip-row-check"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(1), "{}", text(&deploy.stderr));
    let stderr = text(&deploy.stderr);
    assert!(stderr.contains("Cannot enforce NOT NULL: NULL values found (Connection: 1, MetricDaily: 0, Insight: 0, ChatMessage: 0)"), "{stderr}");
    assert!(
        stderr.contains("PostgreSQL rolled the whole script back, so nothing of it was applied"),
        "{stderr}"
    );
    assert!(stderr.contains("run `cargo xtask recover`"), "{stderr}");
    let rows = bookkeeping(&mut client);
    let failed = rows.iter().find(|r| r.name == CONTRACT).unwrap();
    assert!(
        !failed.finished && !failed.rolled_back,
        "failed row: finished_at and rolled_back_at NULL"
    );
    assert_eq!(failed.steps, 0);
    let logs = failed.logs.as_deref().unwrap();
    assert!(logs.contains("Database error code: P0001"), "{logs}");
    assert!(logs.contains("Cannot enforce NOT NULL"), "{logs}");

    // No partial schema change: all four columns are still nullable.
    let columns = workspace_columns(&mut client);
    assert_eq!(columns.len(), 4);
    assert!(
        columns.iter().all(|(_, nullable)| nullable == "YES"),
        "{columns:?}"
    );

    let report = migrate::status(
        &mut client,
        &migrations::read_dir(&migrations::default_dir()).unwrap(),
    )
    .unwrap();
    assert_stable_snapshot!("status_failed", report.render_with(Style::SNAPSHOT));
    assert_eq!(
        run_xtask(&["migrate", "status"], Some(db.url()))
            .status
            .code(),
        Some(1)
    );

    // Deploy again: refused, naming when it failed and the exact resolve command.
    let again = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_eq!(again.status.code(), Some(1));
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains(&format!("migration `{CONTRACT}` failed at ")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "cargo xtask migrate resolve --rolled-back {CONTRACT}"
        )),
        "{stderr}"
    );
    assert_eq!(
        bookkeeping(&mut client).len(),
        rows.len(),
        "a refused deploy writes nothing"
    );

    // Resolve as rolled back: the contract is pending again (Prisma would say up to date).
    let resolve = run_xtask(
        &["migrate", "resolve", "--rolled-back", CONTRACT],
        Some(db.url()),
    );
    assert_eq!(resolve.status.code(), Some(0), "{}", text(&resolve.stderr));
    let report = migrate::status(
        &mut client,
        &migrations::read_dir(&migrations::default_dir()).unwrap(),
    )
    .unwrap();
    assert_eq!(report.state_of(CONTRACT), Some(&State::RolledBack));
    assert_stable_snapshot!("status_rolled_back", report.render_with(Style::SNAPSHOT));
    assert_eq!(
        run_xtask(&["migrate", "status"], Some(db.url()))
            .status
            .code(),
        Some(1)
    );

    // Backfill by hand, as the runbook's first version did, then deploy: up to date.
    client
        .batch_execute(
            r#"INSERT INTO "Workspace" ("id", "name", "slug") VALUES ('ws_1', 'Team', 'team');
               INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role") VALUES ('wm_1', 'ws_1', 'user_1', 'OWNER');
               UPDATE "Connection" SET "workspaceId" = 'ws_1' WHERE "workspaceId" IS NULL;"#,
        )
        .unwrap();
    let deploy = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(0), "{}", text(&deploy.stderr));
    assert_eq!(
        run_xtask(&["migrate", "status"], Some(db.url()))
            .status
            .code(),
        Some(0)
    );
    let contract_rows: Vec<_> = bookkeeping(&mut client)
        .into_iter()
        .filter(|r| r.name == CONTRACT)
        .collect();
    assert_eq!(
        contract_rows.len(),
        2,
        "the redeploy inserts a new row: {contract_rows:?}"
    );
    assert!(
        contract_rows[0].rolled_back,
        "the first row stays rolled back"
    );
    assert!(
        contract_rows[1].finished && !contract_rows[1].rolled_back && contract_rows[1].steps == 1
    );
    assert!(workspace_columns(&mut client)
        .iter()
        .all(|(_, nullable)| nullable == "NO"));
}
