//! `status`: the Quick Status Check, one summary and one exit code.

use datahub_tests::harness::{app_bin, latest_migration, repo_migrations, run_xtask, text, TestDb};
use xtask::report::{Report, Style};
use xtask::runbook::status;
use xtask::tenancy::{EXPAND, INIT};
use xtask::AppBuild;

use crate::assert_stable_snapshot;
use crate::support::seed_small;

#[test]
fn status_of_a_released_database_is_ready() {
    let db = TestDb::migrated_to(&latest_migration());
    let report = status(
        &mut db.client(),
        &repo_migrations(),
        &AppBuild::Prebuilt(app_bin().to_path_buf()),
    )
    .unwrap();
    assert!(report.ok, "{}", report.render());
    assert_stable_snapshot!("status_ready", report.render_with(Style::SNAPSHOT));
    let out = run_xtask(&["status", "--json"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["steps"].as_array().unwrap().len(), 4);
}

#[test]
fn status_after_expand_is_not_ready_and_names_the_next_command() {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let report = status(
        &mut db.client(),
        &repo_migrations(),
        &AppBuild::Prebuilt(app_bin().to_path_buf()),
    )
    .unwrap();
    assert!(!report.ok);
    assert_stable_snapshot!("status_after_expand", report.render_with(Style::SNAPSHOT));
    let out = run_xtask(&["status"], Some(db.url()));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("cargo xtask release"));
}

#[test]
fn status_reports_a_missing_app_binary() {
    let db = TestDb::migrated_to(&latest_migration());
    let report = status(
        &mut db.client(),
        &repo_migrations(),
        &AppBuild::Prebuilt("/nonexistent/app".into()),
    )
    .unwrap();
    assert!(!report.ok);
    let build = report.steps.iter().find(|s| s.name == "build").unwrap();
    assert!(build.detail.contains("does not exist"), "{}", build.detail);
}
