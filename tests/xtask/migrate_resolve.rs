//! `migrate resolve`: Prisma's row semantics, and refusals on migrations that are not failed.

use datahub_tests::harness::{run_xtask, text, TestDb};
use xtask::tenancy::{CONTRACT, EXPAND, INIT};

use crate::support::{bookkeeping, insert_pre_tenancy_user};

fn failed_contract() -> TestDb {
    let db = TestDb::migrated_to(INIT);
    insert_pre_tenancy_user(&mut db.client(), "user_1");
    db.deploy_to(EXPAND);
    let deploy = run_xtask(&["migrate", "deploy", "--skip-row-check"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(1));
    db
}

#[test]
fn applied_marks_the_failed_row_rolled_back_and_inserts_a_finished_row() {
    let db = failed_contract();
    let output = run_xtask(
        &["migrate", "resolve", "--applied", CONTRACT],
        Some(db.url()),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let rows: Vec<_> = bookkeeping(&mut db.client())
        .into_iter()
        .filter(|r| r.name == CONTRACT)
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(
        !rows[0].finished && rows[0].rolled_back,
        "failed row rolled back: {rows:?}"
    );
    assert!(
        rows[1].finished && !rows[1].rolled_back,
        "new row finished: {rows:?}"
    );
    assert_eq!(rows[1].steps, 0, "resolve --applied runs no steps");
    assert_eq!(
        rows[1].logs.as_deref(),
        Some(""),
        "Prisma writes an empty `logs`"
    );
    let same_instant: bool = db
        .client()
        .query_one(
            r#"SELECT started_at = finished_at FROM "_prisma_migrations"
               WHERE migration_name = $1 AND rolled_back_at IS NULL"#,
            &[&CONTRACT],
        )
        .unwrap()
        .get(0);
    assert!(same_instant);
    // The migrations after the contract are still pending; deployed, the database is up to date.
    let deploy = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(0), "{}", text(&deploy.stderr));
    assert_eq!(
        run_xtask(&["migrate", "status"], Some(db.url()))
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn rolled_back_on_an_applied_migration_is_refused() {
    let db = TestDb::migrated_to(EXPAND);
    let before = bookkeeping(&mut db.client());
    let output = run_xtask(
        &["migrate", "resolve", "--rolled-back", INIT],
        Some(db.url()),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "migration `{INIT}` cannot be marked as rolled back: it is `applied`"
        )),
        "{stderr}"
    );
    assert_eq!(
        bookkeeping(&mut db.client()),
        before,
        "a refused resolve writes nothing"
    );
}

#[test]
fn rolled_back_on_a_pending_migration_is_refused() {
    let db = TestDb::migrated_to(EXPAND);
    let output = run_xtask(
        &["migrate", "resolve", "--rolled-back", CONTRACT],
        Some(db.url()),
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("has no row of it, so it was never applied"));
}

#[test]
fn applied_on_an_applied_migration_is_refused() {
    let db = TestDb::migrated_to(EXPAND);
    let output = run_xtask(&["migrate", "resolve", "--applied", EXPAND], Some(db.url()));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr)
        .contains("cannot be marked as applied: it is already recorded as applied"));
}

#[test]
fn resolve_needs_exactly_one_flag() {
    let db = TestDb::new();
    let output = run_xtask(&["migrate", "resolve"], Some(db.url()));
    assert_eq!(output.status.code(), Some(2));
    let both = run_xtask(
        &[
            "migrate",
            "resolve",
            "--applied",
            INIT,
            "--rolled-back",
            INIT,
        ],
        Some(db.url()),
    );
    assert_eq!(both.status.code(), Some(2));
}
