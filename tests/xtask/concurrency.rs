//! Two deploys at once, and a deploy that finds the lock held by someone else.

use std::process::{Command, Stdio};
use xtask::db::Connect;

use datahub_tests::harness::{repo_migrations, run_xtask, text, xtask_bin, TestDb};
use xtask::db::MIGRATION_LOCK_KEY;

#[test]
fn two_deploys_at_once_apply_each_migration_once() {
    let db = TestDb::new();
    let spawn = || {
        Command::new(xtask_bin())
            .args(["migrate", "deploy"])
            .env_remove("DIRECT_URL")
            .env("DATABASE_URL", db.url())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    let second = spawn();
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let counts: Vec<(String, i64)> = db
        .client()
        .query(
            r#"SELECT migration_name, count(*) FROM "_prisma_migrations" GROUP BY 1 ORDER BY 1"#,
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(counts.len(), repo_migrations().len(), "{counts:?}");
    assert!(counts.iter().all(|(_, n)| *n == 1), "{counts:?}");
}

#[test]
fn a_held_lock_makes_deploy_wait_then_fail_naming_the_holder() {
    let db = TestDb::new();
    let url = format!(
        "{}{}application_name=prisma-migrate-elsewhere",
        db.url(),
        if db.url().contains('?') { "&" } else { "?" }
    );
    let mut holding = xtask::db::parse_url(&url).unwrap().connect().unwrap();
    let pid: i32 = holding
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    holding
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .unwrap();

    let output = run_xtask(&["migrate", "deploy", "--lock-wait", "1"], Some(db.url()));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("backend pid {pid}")), "{stderr}");
    assert!(stderr.contains("prisma-migrate-elsewhere"), "{stderr}");
    assert!(stderr.contains("pg_advisory_lock(72707369)"), "{stderr}");
    let exists: bool = db
        .client()
        .query_one("SELECT to_regclass('_prisma_migrations') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists, "nothing happened while the lock was held");

    holding
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .unwrap();
    let output = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}
