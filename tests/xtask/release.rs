//! `release`: the Normal Deployment from a pre-tenancy database, idempotent when run again, and
//! stopping at `check` when NULLs remain.

use std::time::Duration;
use xtask::report::{Report, Style};

use datahub_tests::harness::{app_bin, repo_migrations, run_xtask, text, OwnCluster, TestDb};
use xtask::backfill::BackfillOptions;
use xtask::runbook::{release, ReleaseOptions, StepResult};
use xtask::tenancy::{null_counts_sql, INIT};
use xtask::AppBuild;

use crate::assert_stable_snapshot;
use crate::support::{assert_released, data_digest, null_count, seed_small};

fn options() -> ReleaseOptions {
    ReleaseOptions {
        build: AppBuild::Prebuilt(app_bin().to_path_buf()),
        backfill: BackfillOptions {
            progress: false,
            ..BackfillOptions::default()
        },
        ..ReleaseOptions::default()
    }
}

fn results(report: &xtask::runbook::RunbookReport) -> Vec<(String, StepResult)> {
    report
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.result))
        .collect()
}

#[test]
fn release_from_pre_tenancy_then_again_skips_every_step() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    let before = data_digest(&mut client);

    let report = release(
        &mut client,
        &db.database_url(),
        &repo_migrations(),
        &options(),
    )
    .unwrap();
    assert!(report.ok, "{}", report.render());
    use StepResult::*;
    // The expand, its backfill before the index migrations, the gate before the contract,
    // the rest (the contract and the `Connection` key release, no app being connected).
    let expected = [
        ("deploy", Done),
        ("backfill workspace-tenancy", Done),
        ("deploy", Done),
        ("check workspace-tenancy", Done),
        ("deploy", Done),
        ("build", Skipped),
        ("smoke", Done),
    ];
    let expected: Vec<(String, StepResult)> =
        expected.iter().map(|(n, r)| (n.to_string(), *r)).collect();
    assert_eq!(results(&report), expected);
    assert_stable_snapshot!(
        "release_from_pre_tenancy",
        report.render_with(Style::SNAPSHOT)
    );
    assert_released(&mut client);
    assert_eq!(data_digest(&mut client), before, "release changed data");

    // Run again, as a user would: every database step and the build are skipped, the smoke
    // test runs again (it is the proof, and takes seconds), exit 0, one JSON document.
    let again = run_xtask(&["release", "--json"], Some(db.url()));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    let steps = doc["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{doc}");
    for step in steps {
        let expected = if step["step"] == "smoke" {
            "done"
        } else {
            "skipped"
        };
        assert_eq!(step["result"], expected, "{step}");
        assert!(step["seconds"].is_number());
    }
    assert!(
        doc["conclusion"]
            .as_str()
            .unwrap()
            .starts_with("✅ Released: every database step was already done"),
        "{doc}"
    );
    assert_eq!(data_digest(&mut client), before);
}

#[test]
fn release_stops_at_check_when_nulls_remain() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    // A backfill that is stopped after its first batch, as if it were interrupted.
    let mut interrupted = options();
    interrupted.backfill.batch_size = 20;
    interrupted.backfill.time_limit = Some(Duration::ZERO);
    let report = release(
        &mut client,
        &db.database_url(),
        &repo_migrations(),
        &interrupted,
    )
    .unwrap();
    assert!(!report.ok);
    let last = report.steps.last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.result),
        ("check workspace-tenancy", StepResult::Failed)
    );
    let remaining = null_count(&mut client);
    assert!(remaining > 0);
    assert_eq!(last.rows, Some(remaining));
    assert!(
        report
            .conclusion
            .contains("stopped at `check workspace-tenancy`")
            && report.conclusion.contains("cargo xtask backfill"),
        "{}",
        report.conclusion
    );
    let status = xtask::migrate::status(&mut client, &repo_migrations()).unwrap();
    assert_eq!(
        status.pending().len(),
        repo_migrations().len() - 2,
        "nothing after expand may be deployed"
    );

    // The command it names, then release again, finish the job.
    let out = run_xtask(&["backfill"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run_xtask(&["release"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_released(&mut client);
}

#[test]
fn release_refuses_a_failed_migration_and_names_recover() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    assert!(xtask::migrate::deploy(
        &mut client,
        &db.database_url(),
        &repo_migrations(),
        &xtask::migrate::DeployOptions {
            check_rows: false,
            ..Default::default()
        }
    )
    .is_err());
    let out = run_xtask(&["release"], Some(db.url()));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("cargo xtask recover"), "{stdout}");
    assert!(
        null_count(&mut client) > 0,
        "release must not have backfilled"
    );
}

/// Before the index migrations no index covers `workspaceId`, so every count of NULLs scans the
/// four tables. The release counts once (the backfill's count) and its gate reads what the
/// backfill proved. `pg_stat_statements`, on a server of the test's own, counts the executions
/// of the count query.
#[test]
fn the_release_counts_nulls_once() {
    let cluster = OwnCluster::with_statement_stats();
    let db = cluster.database(Some(INIT));
    let mut client = db.client();
    seed_small(&mut client);
    let mut admin = cluster.admin();
    let mut counts = || -> i64 {
        admin
            .query_one(
                "SELECT coalesce(sum(s.calls), 0)::bigint FROM pg_stat_statements s
                 JOIN pg_database d ON d.oid = s.dbid
                 WHERE d.datname = $1 AND s.query = $2",
                &[&db.name, &null_counts_sql()],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(counts(), 0);

    let report = release(
        &mut client,
        &db.database_url(),
        &repo_migrations(),
        &options(),
    )
    .unwrap();
    assert!(report.ok, "{}", report.render());
    assert_eq!(counts(), 1, "{}", report.render());
    let check = report
        .steps
        .iter()
        .find(|s| s.name == "check workspace-tenancy")
        .unwrap();
    assert_eq!(check.result, StepResult::Done);
    assert!(
        check
            .detail
            .contains("(no NULLs), as the backfill proved; not counted again"),
        "{}",
        check.detail
    );

    // `cargo xtask check` on the released database counts nothing: NOT NULL columns cannot
    // hold a NULL, which the catalog says without a scan.
    let out = run_xtask(&["check"], Some(db.url()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(counts(), 1);
    assert_released(&mut client);
}

/// Next steps that are true. With the migration lock held elsewhere, release waits, then says
/// nothing was changed and to run it again; with a role that may not create tables, it says so.
/// Neither sends anyone to `recover`, since nothing failed.
#[test]
fn release_names_a_true_next_step_when_nothing_failed() {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    let mut holder = db.client();
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&xtask::db::MIGRATION_LOCK_KEY],
        )
        .unwrap();
    let out = run_xtask(&["release", "--lock-wait", "1"], Some(db.url()));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("gave up after waiting 1 s, and nothing was changed"),
        "{all}"
    );
    assert!(all.contains("then run the command again"), "{all}");
    assert!(!all.contains("recover"), "{all}");
    holder
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&xtask::db::MIGRATION_LOCK_KEY],
        )
        .unwrap();

    let reader = format!(
        "{}{}options=-c%20role%3Dpg_read_all_data",
        db.url(),
        if db.url().contains('?') { '&' } else { '?' }
    );
    let out = run_xtask(&["release"], Some(&reader));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("permission denied"), "{stdout}");
    assert!(
        stdout.contains("the database role lacks a privilege (see above), and nothing failed; run `cargo xtask release` again as a role that owns the tables"),
        "{stdout}"
    );
    assert!(!stdout.contains("cargo xtask recover"), "{stdout}");
    let status = run_xtask(&["migrate", "status"], Some(db.url()));
    assert!(
        !text(&status.stdout).contains("failed"),
        "{}",
        text(&status.stdout)
    );
}
