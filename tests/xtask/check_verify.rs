//! `check` in its three outcomes and `verify` at every stage of the release, as snapshots that
//! read like the recovery plan's expected output.

use crate::support::ALL_BACKFILLED;
use datahub_tests::harness::{run_xtask, text, TestDb};
use xtask::backfill::{backfill, BackfillOptions};
use xtask::check::check;
use xtask::db::Connect;
use xtask::report::{Report, Style};
use xtask::tenancy::{CONTRACT, EXPAND, INIT};
use xtask::verify::verify;

use crate::assert_stable_snapshot;
use crate::support::insert_pre_tenancy_user;

fn quiet() -> BackfillOptions {
    BackfillOptions {
        progress: false,
        ..BackfillOptions::default()
    }
}

#[test]
fn check_before_expand_names_the_deploy_command() {
    let db = TestDb::migrated_to(INIT);
    let report = check(&mut db.client(), &crate::support::migrations()).unwrap();
    assert_stable_snapshot!("check_columns_missing", report.render_with(Style::SNAPSHOT));
    let output = run_xtask(&["check"], Some(db.url()));
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains(&format!("cargo xtask migrate deploy --to {EXPAND}")));
}

#[test]
fn check_with_nulls_counts_per_table() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    insert_pre_tenancy_user(&mut client, "user_1");
    insert_pre_tenancy_user(&mut client, "user_2");
    client
        .batch_execute(
            r#"INSERT INTO "MetricDaily" ("id", "userId", "provider", "date")
               SELECT 'd' || g, 'user_1', 'google-ads', date '2025-01-01' + g FROM generate_series(1, 1234) g;"#,
        )
        .unwrap();
    db.deploy_to(EXPAND);
    let report = check(&mut client, &crate::support::migrations()).unwrap();
    assert_stable_snapshot!("check_nulls", report.render_with(Style::SNAPSHOT));
    let output = run_xtask(&["check"], Some(db.url()));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).ends_with("run `cargo xtask backfill --release workspace-tenancy`\n")
    );
    let json = run_xtask(&["check", "--json"], Some(db.url()));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let tenancy = &doc["releases"][0];
    assert_eq!(tenancy["nulls"]["MetricDaily.workspaceId"], 1234);
    assert_eq!(tenancy["nulls"]["Connection.workspaceId"], 2);
    assert_eq!(doc["backfilled"], false);
}

#[test]
fn check_after_backfill_prints_exactly_the_runbook_line() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    insert_pre_tenancy_user(&mut client, "user_1");
    db.deploy_to(EXPAND);
    backfill(
        &mut client,
        &db.database_url(),
        &crate::support::tenancy(),
        &quiet(),
    )
    .unwrap();
    let report = check(&mut client, &crate::support::migrations()).unwrap();
    assert_stable_snapshot!("check_backfilled", report.render_with(Style::SNAPSHOT));
    let output = run_xtask(&["check"], Some(db.url()));
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(text(&output.stdout), format!("{ALL_BACKFILLED}\n"));
}

#[test]
fn verify_at_every_stage() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    insert_pre_tenancy_user(&mut client, "user_1");
    let after_init = verify(&mut client).unwrap();
    assert!(!after_init.is_ok());
    assert_stable_snapshot!("verify_after_init", after_init.render_with(Style::SNAPSHOT));
    assert_eq!(
        run_xtask(&["verify"], Some(db.url())).status.code(),
        Some(1)
    );

    db.deploy_to(EXPAND);
    assert_stable_snapshot!(
        "verify_after_expand",
        verify(&mut client).unwrap().render_with(Style::SNAPSHOT)
    );

    backfill(
        &mut client,
        &db.database_url(),
        &crate::support::tenancy(),
        &quiet(),
    )
    .unwrap();
    assert_stable_snapshot!(
        "verify_after_backfill",
        verify(&mut client).unwrap().render()
    );

    db.deploy_to(CONTRACT);
    let after_contract = verify(&mut client).unwrap();
    assert!(after_contract.is_ok());
    assert_stable_snapshot!(
        "verify_after_contract",
        after_contract.render_with(Style::SNAPSHOT)
    );
    let output = run_xtask(&["verify", "--json"], Some(db.url()));
    assert_eq!(output.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["foreign_keys"]["rows"].as_array().unwrap().len(), 4);
    assert_eq!(doc["columns"]["rows"][0]["is_nullable"], "NO");
    assert_eq!(doc["ok"], true);
}

/// `url` as the same user, acting as `pg_read_all_data`: a role that can read every table and
/// owns none (`SET ROLE` at connection start-up, through libpq's `options`).
fn as_reader(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20role%3Dpg_read_all_data")
}

/// `verify` run by a role that can read but does not own the tables gives exactly the owner's
/// answer: the catalog is read from `pg_catalog`, whose constraints every reader sees (the
/// `information_schema` views show such a role none of them).
#[test]
fn verify_by_a_role_that_reads_but_does_not_own_the_tables() {
    let db = TestDb::migrated_to(CONTRACT);
    let reader = as_reader(db.url());
    let mut client = xtask::db::parse_url(&reader).unwrap().connect().unwrap();
    let (user, keys_seen): (String, i64) = {
        let row = client
            .query_one(
                "SELECT current_user::text, (SELECT count(*) FROM information_schema.table_constraints
                  WHERE constraint_type = 'FOREIGN KEY' AND constraint_name LIKE '%workspaceId_fkey')",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(user, "pg_read_all_data");
    assert_eq!(
        keys_seen, 0,
        "information_schema hides the constraints from this role"
    );

    let owner = run_xtask(&["verify"], Some(db.url()));
    let read_only = run_xtask(&["verify"], Some(&reader));
    assert_eq!(owner.status.code(), Some(0), "{}", text(&owner.stderr));
    assert_eq!(
        read_only.status.code(),
        Some(0),
        "{}",
        text(&read_only.stderr)
    );
    assert_eq!(text(&read_only.stdout), text(&owner.stdout));
    assert!(text(&read_only.stdout)
        .contains("✅ 4 foreign keys to Workspace(id) ON DELETE CASCADE: ok"));
    let check = run_xtask(&["check"], Some(&reader));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
}
