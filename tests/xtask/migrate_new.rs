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
        &["migrate", "new", "___", "--migrations-dir", dir],
        &["migrate", "new", "Привет", "--migrations-dir", dir],
        &["migrate", "new", "a", "b", "--migrations-dir", dir],
    ] {
        let output = run_xtask(args, None);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(text(&output.stderr).starts_with("error: "), "{args:?}");
    }
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);
}

/// `migrate new` names the folder as `prisma migrate dev --name` would, and stamps it after the
/// newest migration even when that one is from the future (a clock behind).
#[test]
fn names_are_prisma_names_stamped_after_the_newest() {
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    std::fs::create_dir(temp.path().join("20991231235959_from_the_future")).unwrap();
    std::fs::write(
        temp.path()
            .join("20991231235959_from_the_future/migration.sql"),
        "SELECT 1;\n",
    )
    .unwrap();
    let dir = temp.path().to_str().unwrap();
    let output = run_xtask(
        &[
            "migrate",
            "new",
            "Add Users-table! v2",
            "--migrations-dir",
            dir,
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(temp
        .path()
        .join("21000101000000_add_users_table_v2/migration.sql")
        .exists());

    // A folder that sorts after any timestamp makes it refuse, naming that folder.
    std::fs::create_dir(temp.path().join("zz_manual")).unwrap();
    std::fs::write(temp.path().join("zz_manual/migration.sql"), "SELECT 1;\n").unwrap();
    let output = run_xtask(&["migrate", "new", "later", "--migrations-dir", dir], None);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("would sort before the existing folder `zz_manual`"));
}
