//! Bad input: a clear message, exit 2, and nothing written.

use datahub_tests::harness::{copy_of_migrations, run_xtask, text, TestDb};
use xtask::tenancy::EXPAND;

fn assert_usage(args: &[&str], url: Option<&str>, expected: &str) -> String {
    let output = run_xtask(args, url);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: expected `{expected}` in: {stderr}"
    );
    stderr
}

#[test]
fn unknown_commands_and_flags() {
    assert_usage(
        &["frobnicate"],
        None,
        "unknown command `frobnicate`; see `cargo xtask --help`",
    );
    assert_usage(&["verify", "--jsn"], None, "unexpected argument `--jsn`");
    assert_usage(
        &["migrate", "frobnicate"],
        None,
        "unknown subcommand `migrate frobnicate`",
    );
    assert_usage(&["migrate"], None, "needs a subcommand");
    assert_usage(
        &["migrate", "status", "--frob"],
        None,
        "unexpected argument `--frob`",
    );
    assert_usage(&["check", "extra"], None, "unexpected argument `extra`");
    assert_usage(
        &["migrate", "deploy", "--lock-wait", "soon"],
        None,
        "--lock-wait soon",
    );
    assert_usage(&[], None, "no command given");
    let help = run_xtask(&["--help"], None);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("USAGE"));
}

#[test]
fn missing_database_url() {
    assert_usage(
        &["migrate", "status"],
        None,
        "no database URL: set `DATABASE_URL`",
    );
    assert_usage(&["check"], None, "no database URL");
    assert_usage(
        &["migrate", "status"],
        Some("mysql://x@y/z"),
        "must start with `postgresql://`",
    );
}

#[test]
fn unreachable_host_names_host_port_and_database_but_not_the_password() {
    let stderr = assert_usage(
        &["migrate", "status"],
        Some("postgresql://alice:hunter2@127.0.0.1:1/datahub"),
        "cannot connect to PostgreSQL at `127.0.0.1:1/datahub as alice`",
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn wrong_password() {
    let db = TestDb::new();
    let url = db.url().to_string();
    let (scheme, rest) = url.split_once("://").unwrap();
    let host_part = rest.split_once('@').unwrap().1;
    let wrong = format!("{scheme}://postgres:wrong-password-123@{host_part}");
    let stderr = assert_usage(
        &["migrate", "status"],
        Some(&wrong),
        "password authentication failed",
    );
    assert!(!stderr.contains("wrong-password-123"), "{stderr}");
}

/// Any folder is a migration whatever its name (as in Prisma), but one without its
/// `migration.sql` stops every command before anything is written (Prisma would deploy the
/// migrations before it, then stop with P3015).
#[test]
fn folder_without_its_migration_sql() {
    let db = TestDb::new();
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    std::fs::create_dir(temp.path().join("add_things")).unwrap();
    let dir = temp.path().to_str().unwrap();
    for command in ["deploy", "status"] {
        assert_usage(
            &["migrate", command, "--migrations-dir", dir],
            Some(db.url()),
            "add_things` holds no readable `migration.sql`",
        );
    }
    let exists: bool = db
        .client()
        .query_one("SELECT to_regclass('_prisma_migrations') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists, "nothing is written when the folder is bad");

    std::fs::remove_dir(temp.path().join("add_things")).unwrap();
    std::fs::remove_file(temp.path().join(EXPAND).join("migration.sql")).unwrap();
    assert_usage(
        &["migrate", "status", "--migrations-dir", dir],
        Some(db.url()),
        "holds no readable `migration.sql`",
    );
}

#[test]
fn unreadable_migrations_folder() {
    assert_usage(
        &[
            "migrate",
            "status",
            "--migrations-dir",
            "/nonexistent/migrations",
        ],
        Some("postgresql://u@127.0.0.1:1/db"),
        "cannot read the migrations folder `/nonexistent/migrations`",
    );
}

#[test]
fn deploy_to_an_unknown_migration() {
    let db = TestDb::new();
    assert_usage(
        &["migrate", "deploy", "--to", "20990101000000_nope"],
        Some(db.url()),
        "there is no migration `20990101000000_nope`",
    );
    let exists: bool = db
        .client()
        .query_one("SELECT to_regclass('_prisma_migrations') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists);
}

#[test]
fn runbook_commands_refuse_bad_flags_and_missing_databases() {
    for args in [
        &["release", "--frob"][..],
        &["recover", "--yes"][..],
        &["rollback", "--force"][..],
        &["status", "extra"][..],
        &["demo", "--users", "0"][..],
        &["bench", "--workers", "0"][..],
        &["release", "--batch-size", "0"][..],
    ] {
        let output = run_xtask(args, None);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
    for command in ["release", "recover", "rollback", "status"] {
        assert_usage(&[command], None, "no database URL");
        assert_usage(
            &[command],
            Some("postgresql://u:pw-secret@127.0.0.1:1/warehouse"),
            "127.0.0.1:1/warehouse",
        );
    }
}
