//! `migrate status`: every state, its snapshot and its exit code.

use datahub_tests::harness::{
    copy_of_migrations, latest_migration, repo_migrations, run_xtask, TestDb,
};
use xtask::migrate;
use xtask::migrations;
use xtask::report::Report;
use xtask::tenancy::{CONTRACT, EXPAND, INIT};

use crate::assert_stable_snapshot;

fn status_text(db: &TestDb, dir: &std::path::Path) -> String {
    let list = migrations::read_dir(dir).unwrap();
    let report = migrate::status(&mut db.client(), &list).unwrap();
    report.render()
}

fn status_exit(db: &TestDb, dir: &std::path::Path) -> i32 {
    let output = run_xtask(
        &[
            "migrate",
            "status",
            "--migrations-dir",
            dir.to_str().unwrap(),
        ],
        Some(db.url()),
    );
    output.status.code().unwrap()
}

#[test]
fn fresh_database_is_all_pending_and_status_creates_nothing() {
    let db = TestDb::new();
    let dir = migrations::default_dir();
    assert_stable_snapshot!("status_all_pending", status_text(&db, &dir));
    assert_eq!(status_exit(&db, &dir), 1);
    let exists: bool = db
        .client()
        .query_one("SELECT to_regclass('_prisma_migrations') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists, "status must not create _prisma_migrations");
}

#[test]
fn partly_applied_is_pending() {
    let db = TestDb::migrated_to(EXPAND);
    let dir = migrations::default_dir();
    assert_stable_snapshot!("status_contract_pending", status_text(&db, &dir));
    assert_eq!(status_exit(&db, &dir), 1);
}

#[test]
fn up_to_date_exits_zero() {
    let db = TestDb::migrated_to(&latest_migration());
    let dir = migrations::default_dir();
    assert_stable_snapshot!("status_up_to_date", status_text(&db, &dir));
    assert_eq!(status_exit(&db, &dir), 0);
    let json = run_xtask(&["migrate", "status", "--json"], Some(db.url()));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["up_to_date"], true);
    assert_eq!(
        doc["migrations"].as_array().unwrap().len(),
        repo_migrations().len()
    );
}

#[test]
fn edited_after_apply_is_reported_and_deploy_refuses() {
    let db = TestDb::migrated_to(EXPAND);
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    let expand_sql = temp.path().join(EXPAND).join("migration.sql");
    let mut sql = std::fs::read_to_string(&expand_sql).unwrap();
    sql.push_str("\n-- an edit after the fact\n");
    std::fs::write(&expand_sql, sql).unwrap();

    assert_stable_snapshot!("status_edited", status_text(&db, temp.path()));
    assert_eq!(status_exit(&db, temp.path()), 1);

    let deploy = run_xtask(
        &[
            "migrate",
            "deploy",
            "--migrations-dir",
            temp.path().to_str().unwrap(),
        ],
        Some(db.url()),
    );
    assert_eq!(deploy.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&deploy.stderr);
    assert!(
        stderr.contains(&format!(
            "migration `{EXPAND}` was edited after it was applied"
        )),
        "{stderr}"
    );
    // Nothing was deployed: the contract is still pending.
    let report = migrate::status(
        &mut db.client(),
        &migrations::read_dir(&migrations::default_dir()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        report.state_of(CONTRACT),
        Some(&migrate::state::State::Pending)
    );
}

#[test]
fn missing_locally_is_reported_and_deploy_refuses() {
    let db = TestDb::migrated_to(&latest_migration());
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    std::fs::remove_dir_all(temp.path().join(CONTRACT)).unwrap();

    assert_stable_snapshot!("status_missing_locally", status_text(&db, temp.path()));
    assert_eq!(status_exit(&db, temp.path()), 1);

    let deploy = run_xtask(
        &[
            "migrate",
            "deploy",
            "--migrations-dir",
            temp.path().to_str().unwrap(),
        ],
        Some(db.url()),
    );
    assert_eq!(deploy.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&deploy.stderr);
    assert!(
        stderr.contains("missing from the migrations folder"),
        "{stderr}"
    );
}

#[test]
fn init_only_lists_the_tenancy_release_as_pending() {
    let db = TestDb::migrated_to(INIT);
    let report = migrate::status(
        &mut db.client(),
        &migrations::read_dir(&migrations::default_dir()).unwrap(),
    )
    .unwrap();
    assert_eq!(report.pending().len(), repo_migrations().len() - 1);
    // Among them the contract, which existing rows would make fail: the advice is the
    // release, which backfills and checks first, not a plain deploy.
    assert!(
        report.advice()[0].contains("run `cargo xtask release`"),
        "{:?}",
        report.advice()
    );
}
