//! `migrate drift`: a database compared with what its applied migrations make on a shadow
//! database. Each kind of hand change is found and printed with SQL that runs; a database
//! deployed by real Prisma, and one after `rollback`, have no drift.

use datahub_tests::harness::{repo_migrations, run_xtask, server_url, text, TestDb};
use datahub_tests::prisma::prisma;
use xtask::migrations;

fn drift(db: &TestDb) -> (Option<i32>, String) {
    let shadow = server_url();
    let out = run_xtask(
        &["migrate", "drift", "--shadow-url", &shadow],
        Some(db.url()),
    );
    let stdout = text(&out.stdout);
    assert!(!stdout.contains(&shadow), "the shadow URL holds a password");
    (out.status.code(), format!("{stdout}{}", text(&out.stderr)))
}

fn released_schema() -> TestDb {
    TestDb::migrated_to(&repo_migrations().last().unwrap().name)
}

#[test]
fn a_migrated_database_has_no_drift() {
    let db = released_schema();
    let (code, out) = drift(&db);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("✅ no drift"), "{out}");
}

#[test]
fn every_kind_of_hand_change_is_drift_with_sql_that_shows_it() {
    let db = released_schema();
    let mut client = db.client();
    // A repaired incident: one hand change of each kind.
    let fkey: String = client
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'Connection_workspaceId_fkey'",
            &[],
        )
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!(
            r#"
            CREATE TABLE "Scratch" ("id" INTEGER);
            ALTER TABLE "MetricDaily" ADD COLUMN "note" TEXT;
            ALTER TABLE "Insight" ALTER COLUMN "title" TYPE VARCHAR(200);
            ALTER TABLE "Workspace" ALTER COLUMN "slug" DROP NOT NULL;
            ALTER TABLE "Insight" ALTER COLUMN "severity" SET DEFAULT 'warning';
            ALTER TABLE "Connection" DROP CONSTRAINT "Connection_workspaceId_fkey";
            ALTER TABLE "Connection" ADD CONSTRAINT "Connection_workspaceId_fkey" {fkey} NOT VALID;
            DROP INDEX "MetricDaily_workspaceId_idx";
            ALTER TYPE "ChatRole" ADD VALUE 'system';
            ALTER TABLE "Insight" DISABLE TRIGGER "Insight_fill_workspaceId";
            "#
        ))
        .unwrap();
    let (code, out) = drift(&db);
    assert_eq!(code, Some(1), "{out}");
    for expected in [
        "❌ table `Scratch`: in the database, not made by any migration: table",
        "❌ column `MetricDaily`.`note`: in the database, not made by any migration: text",
        "❌ column `Insight`.`title`: the migrations make `text NOT NULL`, the database has `character varying(200) NOT NULL`",
        "❌ column `Workspace`.`slug`: the migrations make `text NOT NULL`, the database has `text`",
        "❌ column `Insight`.`severity`: the migrations make `text NOT NULL DEFAULT 'info'::text`, the database has `text NOT NULL DEFAULT 'warning'::text`",
        "❌ constraint `Connection`.`Connection_workspaceId_fkey`: ",
        "❌ index `MetricDaily`.`MetricDaily_workspaceId_idx`: made by the migrations, missing in the database: CREATE INDEX",
        "❌ enum `ChatRole`: the migrations make `'user', 'assistant'`, the database has `'user', 'assistant', 'system'`",
        "❌ trigger `Insight`.`Insight_fill_workspaceId`: ",
        "the database has drifted from its migrations",
    ] {
        assert!(out.contains(expected), "no `{expected}` in:\n{out}");
    }
    assert!(out.contains("NOT VALID`"), "{out}");
    assert!(out.contains("(DISABLED)`"), "{out}");
    // Every inspect line is SQL that runs on the database.
    let inspects: Vec<&str> = out
        .lines()
        .filter_map(|line| line.trim().strip_prefix("inspect: "))
        .collect();
    assert_eq!(inspects.len(), 10, "{out}");
    for sql in inspects {
        client
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("`{sql}` fails: {e}"));
    }
}

#[test]
fn a_database_deployed_by_real_prisma_has_no_drift() {
    let db = TestDb::new();
    let deploy = prisma().migrate(&migrations::default_dir(), db.url(), &["deploy"]);
    assert_eq!(deploy.code, Some(0), "{}", deploy.all());
    let (code, out) = drift(&db);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn after_a_rollback_the_database_is_what_its_applied_migrations_make() {
    let db = released_schema();
    let out = run_xtask(&["rollback", "--yes"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (code, out) = drift(&db);
    assert_eq!(code, Some(0), "{out}");
    // The rolled-back contract had validated the foreign keys the expand adds NOT VALID.
    assert!(
        out.contains("ℹ️ constraint `Connection`.`Connection_workspaceId_fkey`: validated in the database, NOT VALID as the migrations leave it"),
        "{out}"
    );
}

#[test]
fn without_a_database_url_drift_is_a_usage_error() {
    let out = run_xtask(&["migrate", "drift"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn a_failed_contract_is_named_and_after_recover_there_is_no_drift() {
    let db = TestDb::migrated_to(xtask::tenancy::INIT);
    let mut client = db.client();
    crate::support::seed_small(&mut client);
    // The incident: everything deployed before the backfill, as Prisma deploys it (no row check
    // before the contract); the contract fails.
    let incident = run_xtask(&["migrate", "deploy", "--skip-row-check"], Some(db.url()));
    assert_eq!(
        incident.status.code(),
        Some(1),
        "{}",
        text(&incident.stderr)
    );
    let (code, out) = drift(&db);
    assert!(
        out.contains(&format!(
            "note: `{}` is failed: whatever it left behind shows as drift; run `cargo xtask recover`",
            xtask::tenancy::CONTRACT
        )),
        "{out}"
    );
    // Its transaction rolled back: the schema is what the migrations before it make.
    assert_eq!(code, Some(0), "{out}");

    let recover = run_xtask(&["recover"], Some(db.url()));
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    let (code, out) = drift(&db);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("note:"), "{out}");
}
