//! After our deploy gives up on a lock, real Prisma 6.19.3 and `cargo xtask` agree that the
//! migration is not applied: the attempt leaves no row in `_prisma_migrations` (Prisma's
//! `status` reads any row of a migration, rolled back or not, as applied), while our deploy
//! says why it gave up; once the blocker is gone, Prisma's own deploy applies it.

use datahub_tests::harness::{copy_of_migrations, run_xtask, text, TestDb};
use datahub_tests::prisma::prisma;
use xtask::migrations;
use xtask::tenancy::{EXPAND, INIT};

use crate::support::seed_small;

/// A copy of the repository's migrations up to and including the expand migration.
fn migrations_up_to_expand() -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    copy_of_migrations(temp.path());
    for migration in migrations::read_dir(temp.path()).unwrap() {
        if migration.name.as_str() > EXPAND {
            std::fs::remove_dir_all(&migration.path).unwrap();
        }
    }
    temp
}

#[test]
fn prisma_lists_the_migration_our_deploy_gave_up_on_as_not_applied() {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    let mut app = db.client();
    app.batch_execute(r#"BEGIN; SELECT count(*) FROM "MetricDaily""#)
        .unwrap();
    let deploy = run_xtask(
        &["migrate", "deploy", "--to", EXPAND, "--lock-timeout", "1"],
        Some(db.url()),
    );
    let stderr = text(&deploy.stderr);
    assert_eq!(deploy.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "migration `{EXPAND}` was not applied: it could not get its locks"
        )) && stderr.contains("pending again for this tool and for Prisma alike"),
        "{stderr}"
    );

    let folder = migrations_up_to_expand();
    let status = prisma().migrate(folder.path(), db.url(), &["status"]);
    assert_eq!(status.code, Some(1), "{}", status.all());
    assert!(
        status.stdout.contains("have not yet been applied:") && status.stdout.contains(EXPAND),
        "{}",
        status.all()
    );
    assert!(!status.all().contains("Database schema is up to date!"));
    let ours = run_xtask(&["migrate", "status"], Some(db.url()));
    assert_eq!(ours.status.code(), Some(1));
    assert!(
        text(&ours.stdout).contains(EXPAND),
        "{}",
        text(&ours.stdout)
    );

    app.batch_execute("COMMIT").unwrap();
    let applied = prisma().migrate(folder.path(), db.url(), &["deploy"]);
    assert_eq!(applied.code, Some(0), "{}", applied.all());
    assert!(applied.all().contains(EXPAND), "{}", applied.all());
}
