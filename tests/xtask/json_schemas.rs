//! `--json`: each report's document against its JSON Schema (`schemas/<report>.schema.json`),
//! in the states that give it different shapes: keys snake_case, a `schema` field naming the
//! shape and version, timestamps RFC 3339 with their zone, and null as null.

use std::path::Path;

use datahub_tests::harness::{run_xtask, text, TestDb};
use datahub_tests::json_schema::validate;
use serde_json::Value;
use xtask::tenancy::{EXPAND, INIT};

use crate::support::insert_pre_tenancy_user;

/// The reports that have a schema; every file in `schemas/` is one of them. `migrate_plan` is
/// checked in `migrate_lint.rs` (plan and lint share it), `smoke` in `smoke.rs`.
const REPORTS: [&str; 8] = [
    "migrate_status",
    "check",
    "verify",
    "migrate_plan",
    "smoke",
    "backfill",
    "runbook",
    "migrate_drift",
];

fn schema(report: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("xtask/schemas")
        .join(format!("{report}.schema.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read `{}`: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("`{}`: {e}", path.display()))
}

/// Runs `cargo xtask <args> --json` and checks its document against the report's schema.
fn conforming(db: &TestDb, report: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let output = run_xtask(&args, Some(db.url()));
    let document: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not one JSON document ({e}): {}{}",
            text(&output.stdout),
            text(&output.stderr)
        )
    });
    assert_conforms(report, &document);
    assert_eq!(document["schema"], format!("datahub.{report}.v1"));
    document
}

/// Fails the test, naming every breach, unless `document` conforms to the report's schema.
pub fn assert_conforms(report: &str, document: &Value) {
    let errors = validate(&schema(report), document);
    assert!(
        errors.is_empty(),
        "the document breaks {report}.schema.json:\n{}\n{document:#}",
        errors.join("\n")
    );
}

#[test]
fn every_schema_file_is_a_report_tested_here() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("xtask/schemas");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = REPORTS
        .iter()
        .map(|report| format!("{report}.schema.json"))
        .collect();
    expected.sort();
    assert_eq!(files, expected);
}

#[test]
fn migrate_status_before_and_after_a_failed_deploy() {
    let db = TestDb::migrated_to(INIT);
    let pending = conforming(&db, "migrate_status", &["migrate", "status"]);
    assert_eq!(pending["up_to_date"], false);
    assert_eq!(pending["migrations"][0]["state"], "applied");
    assert!(pending["migrations"][0]["at"]
        .as_str()
        .is_some_and(|at| at.ends_with('Z')));
    assert_eq!(pending["migrations"][1]["at"], Value::Null);

    // A row without workspaceId makes the contract fail, deployed as Prisma deploys it (no row
    // check before the contract): a failed entry with its logs.
    insert_pre_tenancy_user(&mut db.client(), "user_1");
    let deploy = run_xtask(&["migrate", "deploy", "--skip-row-check"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(1), "{}", text(&deploy.stderr));
    let failed = conforming(&db, "migrate_status", &["migrate", "status"]);
    let failed_entry = failed["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["state"] == "failed")
        .unwrap_or_else(|| panic!("no failed migration: {failed:#}"));
    assert!(failed_entry["logs"].is_string() && failed_entry["error"].is_string());
}

#[test]
fn check_without_columns_and_with_nulls() {
    let db = TestDb::migrated_to(INIT);
    let missing = conforming(&db, "check", &["check"]);
    let tenancy = &missing["releases"][0];
    assert_eq!(tenancy["release"], "workspace-tenancy");
    assert_eq!(tenancy["nulls"], serde_json::json!({}));
    assert_eq!(tenancy["columns_missing"].as_array().unwrap().len(), 4);

    insert_pre_tenancy_user(&mut db.client(), "user_1");
    db.deploy_to(EXPAND);
    let counted = conforming(&db, "check", &["check"]);
    let tenancy = &counted["releases"][0];
    assert_eq!(tenancy["columns_missing"], serde_json::json!([]));
    assert!(counted["total_nulls"].as_i64().unwrap() > 0);
    assert_eq!(
        tenancy["next"],
        "cargo xtask backfill --release workspace-tenancy"
    );
}

#[test]
fn verify_before_and_after_the_expand() {
    let db = TestDb::migrated_to(INIT);
    conforming(&db, "verify", &["verify"]);
    db.deploy_to(EXPAND);
    let expanded = conforming(&db, "verify", &["verify"]);
    // No default: JSON's null, not psql's text `NULL`.
    assert_eq!(
        expanded["columns"]["rows"][0]["column_default"],
        Value::Null
    );
    assert_eq!(
        expanded["foreign_keys"]["rows"].as_array().unwrap().len(),
        4
    );
}

#[test]
fn backfill_dry_run_and_run() {
    let db = TestDb::migrated_to(INIT);
    insert_pre_tenancy_user(&mut db.client(), "user_1");
    db.deploy_to(EXPAND);
    let dry = conforming(&db, "backfill", &["backfill", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["tables"][0]["rows"], 1);
    let run = conforming(&db, "backfill", &["backfill"]);
    assert_eq!(run["release"], "workspace-tenancy");
    assert_eq!(run["rows"], 1);
    assert_eq!(run["replica"], Value::Null);
}

#[test]
fn runbook_reports_of_status_recover_and_rollback() {
    let db = TestDb::migrated_to(INIT);
    insert_pre_tenancy_user(&mut db.client(), "user_1");
    db.deploy_to(EXPAND);
    // The incident, as Prisma deploys it: the contract fails on the NULL.
    let incident = run_xtask(&["migrate", "deploy", "--skip-row-check"], Some(db.url()));
    assert_eq!(incident.status.code(), Some(1));
    let status = conforming(&db, "runbook", &["status"]);
    assert_eq!(status["command"], "status");
    assert_eq!(status["ok"], false);
    let plan = conforming(&db, "runbook", &["recover", "--dry-run"]);
    assert!(plan["findings"].as_array().unwrap().len() > 1);
    assert!(plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["result"] == "planned"));
    let recovered = conforming(&db, "runbook", &["recover"]);
    assert_eq!(recovered["ok"], true, "{recovered}");
    let preview = conforming(&db, "runbook", &["rollback"]);
    assert_eq!(preview["command"], "rollback (preview)");
    assert_eq!(preview["steps"][0]["result"], "planned");
}

#[test]
fn migrate_drift_without_and_with_a_hand_change() {
    let db = TestDb::migrated_to(EXPAND);
    let shadow = datahub_tests::harness::server_url();
    let clean = conforming(
        &db,
        "migrate_drift",
        &["migrate", "drift", "--shadow-url", &shadow],
    );
    assert_eq!(clean["drift"], 0, "{clean}");
    db.client()
        .batch_execute(r#"ALTER TABLE "Insight" ADD COLUMN "byHand" TEXT"#)
        .unwrap();
    let drifted = conforming(
        &db,
        "migrate_drift",
        &["migrate", "drift", "--shadow-url", &shadow],
    );
    assert_eq!(drifted["drift"], 1, "{drifted}");
    assert_eq!(drifted["differences"][0]["kind"], "column");
    assert_eq!(drifted["differences"][0]["migrations"], Value::Null);
}
