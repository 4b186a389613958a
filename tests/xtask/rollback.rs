//! `rollback`: without `--yes` a preview that changes nothing; with it, the columns are nullable
//! and the contract pending again, and `migrate deploy` restores them.

use datahub_tests::harness::{repo_migrations, run_xtask, text, TestDb};
use xtask::migrate::{self, state::State};
use xtask::tenancy::{CONNECTION_KEY, CONTRACT, INIT};

use crate::support::{
    assert_released, bookkeeping_digest, data_digest, seed_small, workspace_columns,
};

fn released() -> TestDb {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    let out = run_xtask(&["release"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    db
}

fn not_null_checks(client: &mut xtask::db::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%_workspaceId_not_null' AND NOT convalidated",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn rollback_without_yes_changes_nothing() {
    let db = released();
    let mut client = db.client();
    let (book, data) = (bookkeeping_digest(&mut client), data_digest(&mut client));
    let out = run_xtask(&["rollback"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("DROP NOT NULL"), "{stdout}");
    assert!(stdout.contains("cargo xtask rollback --yes"), "{stdout}");
    assert_eq!(bookkeeping_digest(&mut client), book);
    assert_eq!(data_digest(&mut client), data);
    assert_released(&mut client);
}

#[test]
fn rollback_with_yes_then_deploy_restores_not_null() {
    let db = released();
    let mut client = db.client();
    let data = data_digest(&mut client);
    let out = run_xtask(&["rollback", "--yes"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let columns = workspace_columns(&mut client);
    assert!(columns.iter().all(|(_, n)| n == "YES"), "{columns:?}");
    assert_eq!(
        not_null_checks(&mut client),
        4,
        "the expand state: NOT VALID checks back"
    );
    let status = migrate::status(&mut client, &repo_migrations()).unwrap();
    assert_eq!(status.state_of(CONTRACT), Some(&State::RolledBack));
    // The migrations after the contract stay applied; only the contract is pending again.
    let pending: Vec<&str> = status.pending().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(pending, [CONTRACT]);
    assert_eq!(status.state_of(CONNECTION_KEY), Some(&State::Applied));
    assert_eq!(data_digest(&mut client), data);

    let again = run_xtask(&["rollback", "--yes"], Some(db.url()));
    assert_eq!(again.status.code(), Some(0));
    assert!(text(&again.stdout).contains("Nothing to roll back"));

    let deploy = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(0), "{}", text(&deploy.stderr));
    assert_released(&mut client);
    assert_eq!(not_null_checks(&mut client), 0);
    assert_eq!(data_digest(&mut client), data);
}
