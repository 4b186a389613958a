//! `migrate new NAME`: a new, empty migration folder in Prisma's layout, pending until deployed.

use datahub_tests::harness::{
    copy_of_migrations, latest_migration, run_xtask, server_url, text, TestDb,
};
use xtask::tenancy::CONTRACT;

#[test]
fn creates_a_timestamped_folder_that_status_lists_as_pending() {
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    let dir = temp.path().to_str().unwrap();
    let output = run_xtask(
        &[
            "migrate",
            "new",
            "add_insight_read_at",
            "--migrations-dir",
            dir,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let created: Vec<String> = std::fs::read_dir(temp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with("_add_insight_read_at"))
        .collect();
    assert_eq!(created.len(), 1, "{created:?}");
    let name = &created[0];
    assert_eq!(name.len(), 14 + "_add_insight_read_at".len());
    assert!(name[..14].bytes().all(|b| b.is_ascii_digit()), "{name}");
    assert!(
        name.as_str() > CONTRACT,
        "new migrations sort after the existing ones"
    );
    let script = std::fs::read_to_string(temp.path().join(name).join("migration.sql")).unwrap();
    assert!(script.starts_with("-- add_insight_read_at"), "{script}");
    assert!(text(&output.stdout).contains(name.as_str()));

    let db = TestDb::migrated_to(&latest_migration());
    let status = run_xtask(
        &["migrate", "status", "--migrations-dir", dir],
        Some(db.url()),
    );
    assert_eq!(status.status.code(), Some(1));
    let stdout = text(&status.stdout);
    assert!(
        stdout.contains(&format!(" {name} ")) && stdout.contains("1 pending"),
        "{stdout}"
    );

    // It says how to lint the new migration, and that command works on it.
    let created_stdout = text(&output.stdout);
    let lint = format!("cargo xtask migrate lint --migrations-dir {dir} {name}");
    assert!(created_stdout.contains(&lint), "{created_stdout}");
    let shadow = server_url();
    let linted = run_xtask(
        &[
            "migrate",
            "lint",
            "--migrations-dir",
            dir,
            name,
            "--shadow-url",
            &shadow,
        ],
        None,
    );
    assert_eq!(linted.status.code(), Some(0), "{}", text(&linted.stderr));
    assert!(
        text(&linted.stdout).contains(&format!("✅ `{name}`: no statement yet")),
        "{}",
        text(&linted.stdout)
    );
}

#[test]
fn bad_names_and_missing_names_are_usage_errors() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().to_str().unwrap();
    for args in [
        &["migrate", "new", "--migrations-dir", dir][..],
        &["migrate", "new", "Bad Name", "--migrations-dir", dir],
        &["migrate", "new", "a", "b", "--migrations-dir", dir],
    ] {
        let output = run_xtask(args, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(text(&output.stderr).starts_with("error: "), "{args:?}");
    }
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);
}
