//! The next release, shipped by adding files only: `next_release/` holds a third release of the
//! tenancy release's shape (a nullable `MetricDaily.connectionId` with a `CHECK … NOT VALID`,
//! then a guarded VALIDATE + SET NOT NULL), filled from another table (`Connection`), and its
//! declaration. The tests put those folders beside a copy of the repository's migrations and
//! run the ordinary commands on them, with and without the declaration.

use std::path::Path;

use datahub_tests::harness::{app_bin, copy_of_migrations, run_xtask, text, TestDb};
use datahub_tests::prisma::prisma;
use xtask::backfill::BackfillOptions;
use xtask::db::Client;
use xtask::migrate::{self, DeployOptions};
use xtask::migrations::{self, Migration};
use xtask::report::Report;
use xtask::runbook::{recover, release, rollback, RecoverOptions, ReleaseOptions};
use xtask::tenancy::INIT;
use xtask::AppBuild;

use crate::support::{bookkeeping, seed_small, workspace_columns, ALL_BACKFILLED};

pub(crate) const EXPAND: &str = "20260301000000_metric_daily_connection";
pub(crate) const CONTRACT: &str = "20260301000100_metric_daily_connection_not_null";

/// The repository's migrations plus the next release's, in a temp folder; without
/// `release.toml` when `declared` is false.
pub(crate) fn folder(declared: bool) -> (tempfile::TempDir, Vec<Migration>) {
    let dir = tempfile::tempdir().unwrap();
    copy_of_migrations(dir.path());
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("xtask/next_release");
    for name in [EXPAND, CONTRACT] {
        let target = dir.path().join(name);
        std::fs::create_dir_all(&target).unwrap();
        for file in ["migration.sql", migrations::DECLARATION_FILE] {
            let from = source.join(name).join(file);
            if from.exists() && (declared || file == "migration.sql") {
                std::fs::copy(&from, target.join(file)).unwrap();
            }
        }
    }
    let read = migrations::read_dir(dir.path()).unwrap();
    (dir, read)
}

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

/// `cargo xtask --migrations-dir DIR ARGS…` against `database_url`.
fn xtask_in(dir: &Path, args: &[&str], database_url: Option<&str>) -> std::process::Output {
    let mut all = vec!["--migrations-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run_xtask(&all, database_url)
}

/// A seeded database with both releases released, then the third rolled back: its expand is
/// applied, its contract pending.
fn released_then_rolled_back(folder: &[Migration]) -> (TestDb, Client) {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    let released = release(&mut client, &db.database_url(), folder, &options()).unwrap();
    assert!(released.ok, "{}", released.render());
    let rolled = rollback(&mut client, folder, true, &DeployOptions::default()).unwrap();
    assert!(rolled.ok, "{}", rolled.render());
    (db, client)
}

/// `MetricDaily.connectionId`: (exists, nullable).
pub(crate) fn connection_column(client: &mut Client) -> Option<bool> {
    client
        .query_opt(
            r#"SELECT is_nullable::text = 'YES' FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'MetricDaily' AND column_name = 'connectionId'"#,
            &[],
        )
        .unwrap()
        .map(|row| row.get(0))
}

/// Metric rows whose connection is not the workspace's connection of the row's user and
/// provider (the rule broken), or that have none.
pub(crate) fn misfiled(client: &mut Client) -> i64 {
    client
        .query_one(
            r#"SELECT count(*) FROM "MetricDaily" t
               WHERE NOT EXISTS (SELECT 1 FROM "Connection" c WHERE c."id" = t."connectionId"
                   AND c."workspaceId" = t."workspaceId" AND c."userId" = t."userId" AND c."provider" = t."provider")"#,
            &[],
        )
        .unwrap()
        .get(0)
}

pub(crate) fn failed_rows(client: &mut Client) -> Vec<String> {
    bookkeeping(client)
        .into_iter()
        .filter(|r| !r.finished && !r.rolled_back)
        .map(|r| r.name)
        .collect()
}

#[test]
fn the_next_release_ships_by_adding_files() {
    let (dir, folder) = folder(true);
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    // Some users never connected a provider they have metrics for: the rule's sweep creates
    // those connections.
    client
        .batch_execute(r#"DELETE FROM "Connection" WHERE "id" IN (SELECT "id" FROM "Connection" ORDER BY "id" LIMIT 5)"#)
        .unwrap();

    let report = release(&mut client, &db.database_url(), &folder, &options()).unwrap();
    assert!(report.ok, "{}", report.render());
    let steps: Vec<String> = report.steps.iter().map(|s| s.name.clone()).collect();
    for step in [
        "backfill workspace-tenancy",
        "check workspace-tenancy",
        "backfill metric-connection",
        "check metric-connection",
    ] {
        assert!(
            steps.contains(&step.to_string()),
            "{steps:?}\n{}",
            report.render()
        );
    }
    assert_eq!(connection_column(&mut client), Some(false));
    assert_eq!(misfiled(&mut client), 0);
    assert!(failed_rows(&mut client).is_empty());
    // An app from before tenancy still writes metric rows: both triggers fill them.
    client
        .batch_execute(
            r#"INSERT INTO "MetricDaily" ("id", "userId", "provider", "date")
               SELECT 'old_app_metric', "id", 'tiktok-ads', date '2026-03-01' FROM "User" ORDER BY "id" LIMIT 1"#,
        )
        .unwrap();
    assert_eq!(misfiled(&mut client), 0);
    // Real Prisma reads the same folder, declarations and all, and agrees.
    let prisma = prisma().migrate(dir.path(), db.url(), &["status"]);
    assert_eq!(prisma.code, Some(0), "{}", prisma.all());
    assert!(
        prisma.all().contains("Database schema is up to date!"),
        "{}",
        prisma.all()
    );

    // `check` names both releases' lines; `status` shows each release contracted.
    let check = xtask_in(dir.path(), &["check"], Some(db.url()));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    let out = text(&check.stdout);
    assert!(out.contains(ALL_BACKFILLED), "{out}");
    assert!(
        out.contains("`metric-connection` release are backfilled"),
        "{out}"
    );

    // The emergency rollback undoes the release contracted last, and only it.
    let rolled = rollback(&mut client, &folder, true, &DeployOptions::default()).unwrap();
    assert!(rolled.ok, "{}", rolled.render());
    assert!(
        rolled.render().contains("metric-connection"),
        "{}",
        rolled.render()
    );
    assert_eq!(connection_column(&mut client), Some(true));
    let columns = workspace_columns(&mut client);
    assert!(columns.iter().all(|(_, n)| n == "NO"), "{columns:?}");
    let status = migrate::status(&mut client, &folder).unwrap();
    assert_eq!(status.pending().len(), 1, "{}", status.render());
    assert_eq!(status.pending()[0].name, CONTRACT);

    // `check` gates the pending contract; `release` brings it back.
    let check = xtask_in(
        dir.path(),
        &["check", "--release", "metric-connection"],
        Some(db.url()),
    );
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    let again = release(&mut client, &db.database_url(), &folder, &options()).unwrap();
    assert!(again.ok, "{}", again.render());
    assert_eq!(connection_column(&mut client), Some(false));
}

#[test]
fn a_null_written_by_hand_after_a_rollback_is_gated_and_filled() {
    // Rolled back, then a NULL written by hand: `check` fails with the count and names the
    // backfill, which fills it; `release` contracts again.
    let (dir, folder) = folder(true);
    let (db, mut client) = released_then_rolled_back(&folder);
    // A row the trigger and the NOT VALID check let through only because both are gone (as if
    // written by hand during an incident).
    client
        .batch_execute(
            r#"ALTER TABLE "MetricDaily" DROP CONSTRAINT "MetricDaily_connectionId_not_null";
               ALTER TABLE "MetricDaily" DISABLE TRIGGER "MetricDaily_fill_connectionId";
               UPDATE "MetricDaily" SET "connectionId" = NULL WHERE "id" IN (SELECT "id" FROM "MetricDaily" ORDER BY "id" LIMIT 7);
               ALTER TABLE "MetricDaily" ENABLE TRIGGER "MetricDaily_fill_connectionId";
               ALTER TABLE "MetricDaily" ADD CONSTRAINT "MetricDaily_connectionId_not_null" CHECK ("connectionId" IS NOT NULL) NOT VALID;"#,
        )
        .unwrap();
    let check = xtask_in(dir.path(), &["check"], Some(db.url()));
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stdout));
    let out = text(&check.stdout);
    assert!(out.contains("MetricDaily"), "{out}");
    assert!(
        out.contains("cargo xtask backfill --release metric-connection"),
        "{out}"
    );
    let backfill = xtask_in(dir.path(), &["backfill"], Some(db.url()));
    assert_eq!(
        backfill.status.code(),
        Some(0),
        "{}",
        text(&backfill.stderr)
    );
    assert!(
        text(&backfill.stdout).contains("Backfilled 7 rows"),
        "{}",
        text(&backfill.stdout)
    );
    let again = release(&mut client, &db.database_url(), &folder, &options()).unwrap();
    assert!(again.ok, "{}", again.render());
    assert_eq!(misfiled(&mut client), 0);
}

#[test]
fn without_its_declaration_no_command_deploys_the_contract_into_its_nulls() {
    let (dir, folder) = folder(false);
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);

    // `release` deploys the expand, then stops before the contract with the NULL count.
    let report = release(&mut client, &db.database_url(), &folder, &options()).unwrap();
    assert!(!report.ok, "{}", report.render());
    let rendered = report.render();
    assert!(
        rendered.contains(&format!("migration `{CONTRACT}` was not applied")),
        "{rendered}"
    );
    assert!(
        rendered.contains("`MetricDaily`.`connectionId` has"),
        "{rendered}"
    );
    assert!(
        rendered.contains("no release declares how to fill them"),
        "{rendered}"
    );
    assert!(failed_rows(&mut client).is_empty(), "{rendered}");
    assert_eq!(connection_column(&mut client), Some(true));
    let status = migrate::status(&mut client, &folder).unwrap();
    assert_eq!(status.pending().len(), 1);
    assert!(
        status
            .advice()
            .iter()
            .any(|a| a.contains("cargo xtask release")),
        "{:?}",
        status.advice()
    );

    // `migrate deploy` and `recover` stop there too, exit 1, recording nothing.
    let deploy = xtask_in(dir.path(), &["migrate", "deploy"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(1), "{}", text(&deploy.stderr));
    assert!(
        text(&deploy.stderr).contains("NULL value(s) and the migration sets it NOT NULL"),
        "{}",
        text(&deploy.stderr)
    );
    let recovered = recover(
        &mut client,
        &db.database_url(),
        &folder,
        &RecoverOptions {
            backfill: BackfillOptions {
                progress: false,
                ..BackfillOptions::default()
            },
            ..RecoverOptions::default()
        },
    )
    .unwrap();
    assert!(!recovered.report.ok, "{}", recovered.render());
    assert!(
        recovered.render().contains("was not applied"),
        "{}",
        recovered.render()
    );
    assert!(failed_rows(&mut client).is_empty());
    // Real Prisma sees the contract pending, nothing failed.
    let prisma = prisma().migrate(dir.path(), db.url(), &["status"]);
    assert!(prisma.all().contains(CONTRACT), "{}", prisma.all());
    assert!(!prisma.all().contains("failed"), "{}", prisma.all());
}

#[test]
fn real_prisma_deploys_a_folder_with_declarations() {
    let (dir, folder) = folder(true);
    let db = TestDb::new();
    let deploy = prisma().migrate(dir.path(), db.url(), &["deploy"]);
    assert_eq!(deploy.code, Some(0), "{}", deploy.all());
    let mut client = db.client();
    let status = migrate::status(&mut client, &folder).unwrap();
    assert!(status.is_up_to_date(), "{}", status.render());
    assert_eq!(connection_column(&mut client), Some(false));
}

#[test]
fn a_pre_tenancy_database_with_data_is_never_deployed_into_the_incident() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    let status = run_xtask(&["migrate", "status"], Some(db.url()));
    assert!(
        text(&status.stdout).contains("run `cargo xtask release`"),
        "{}",
        text(&status.stdout)
    );

    let deploy = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_eq!(deploy.status.code(), Some(1), "{}", text(&deploy.stderr));
    let stderr = text(&deploy.stderr);
    assert!(
        stderr.contains("`20251219171000_datahub_workspace_not_null` was not applied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the `workspace-tenancy` release fills them"),
        "{stderr}"
    );
    assert!(failed_rows(&mut client).is_empty(), "{stderr}");
    let columns = workspace_columns(&mut client);
    assert!(columns.iter().all(|(_, n)| n == "YES"), "{columns:?}");
}

/// The previous app's connect: its upsert names the pre-tenancy key ("userId", "provider").
const OLD_APP_CONNECT: &str = r#"
    INSERT INTO "Connection" ("id", "userId", "provider", "status", "updatedAt")
    VALUES ('old_app_' || $1, $1, 'google-ads', 'CONNECTED', now())
    ON CONFLICT ("userId", "provider") DO UPDATE SET "status" = 'CONNECTED', "updatedAt" = now()"#;

#[test]
fn the_key_swap_waits_until_the_previous_app_is_gone() {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    let user: String = client
        .query_one(r#"SELECT "id" FROM "User" ORDER BY "id" LIMIT 1"#, &[])
        .unwrap()
        .get(0);
    // The previous app, connected under the name apps had before they named their schema,
    // connects a provider over and over while the release runs.
    let separator = if db.url().contains('?') { '&' } else { '?' };
    let old_url = format!("{}{separator}application_name=datahub-app", db.url());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let old_app = {
        let (stop, user) = (stop.clone(), user.clone());
        let mut old = datahub_tests::harness::client_for(&old_url);
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && ok < 1_000_000 {
                match old.execute(OLD_APP_CONNECT, &[&user]) {
                    Ok(_) => ok += 1,
                    Err(error) => failed.push(error.to_string()),
                }
            }
            (ok, failed)
        })
    };

    let repo = datahub_tests::harness::repo_migrations();
    let first = release(&mut client, &db.database_url(), &repo, &options()).unwrap();
    assert!(!first.ok, "{}", first.render());
    let rendered = first.render();
    assert!(rendered.contains("new app"), "{rendered}");
    assert!(
        rendered.contains("20260112090100_connection_workspace_user_provider_key"),
        "{rendered}"
    );
    let status = migrate::status(&mut client, &repo).unwrap();
    assert_eq!(
        status
            .pending()
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>(),
        ["20260112090100_connection_workspace_user_provider_key"]
    );
    assert!(failed_rows(&mut client).is_empty());

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = old_app.join().unwrap();
    assert!(ok > 0);
    assert!(
        failed.is_empty(),
        "the previous app's connect failed: {failed:?}"
    );

    // The previous app is gone (the new one names this release's schema): the swap runs.
    let second = release(&mut client, &db.database_url(), &repo, &options()).unwrap();
    assert!(second.ok, "{}", second.render());
    assert!(migrate::status(&mut client, &repo).unwrap().is_up_to_date());
    // As the old key is gone, the previous app's connect would now fail: why it had to go first.
    let error = client.execute(OLD_APP_CONNECT, &[&user]).unwrap_err();
    assert!(
        error.to_string().contains("ON CONFLICT") || format!("{error:?}").contains("ON CONFLICT"),
        "{error:?}"
    );
}

#[test]
fn release_new_scaffolds_a_release_the_engine_reads() {
    let dir = tempfile::tempdir().unwrap();
    copy_of_migrations(dir.path());
    let output = xtask_in(
        dir.path(),
        &[
            "release",
            "new",
            "metric currency",
            "--table",
            "MetricDaily",
            "--column",
            "currency",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout).matches("created ").count(),
        3,
        "{}",
        text(&output.stdout)
    );
    let folder = migrations::read_dir(dir.path()).unwrap();
    let declared = xtask::releases::load(&folder).unwrap();
    let release = xtask::releases::find(&declared, "metric-currency").unwrap();
    assert_eq!(release.describe_fills(), "MetricDaily.currency");
    assert_eq!(
        release.fills[0].not_null_check.as_deref(),
        Some("MetricDaily_currency_not_null")
    );
    assert!(folder
        .last()
        .unwrap()
        .name
        .ends_with("_metric_currency_not_null"));

    // A misspelled key in a declaration is an error naming it (exit 2), for every command.
    let declaration = folder[folder.len() - 2].path.join("release.toml");
    let text_before = std::fs::read_to_string(&declaration).unwrap();
    std::fs::write(&declaration, text_before.replace("contract =", "contrat =")).unwrap();
    let output = xtask_in(
        dir.path(),
        &["check"],
        Some("postgresql://u@127.0.0.1:1/db"),
    );
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("unknown key `contrat`"),
        "{}",
        text(&output.stderr)
    );
}

/// The gate proves the release's columns hold no NULL; it proves nothing of the contract's other
/// rules. A foreign key its contract validates over a row that breaks it is still counted, and
/// the contract is not run into that failure.
#[test]
fn a_gated_contract_is_still_counted_for_what_its_gate_did_not_prove() {
    let (_dir, folder) = folder(true);
    let (db, mut client) = released_then_rolled_back(&folder);
    // A row pointing at no connection, under a foreign key that is NOT VALID again (as the
    // expand left it), so only the contract's VALIDATE would find it.
    client
        .batch_execute(
            r#"ALTER TABLE "MetricDaily" DROP CONSTRAINT "MetricDaily_connectionId_fkey";
               UPDATE "MetricDaily" SET "connectionId" = 'no_such_connection'
                 WHERE "id" = (SELECT min("id") FROM "MetricDaily");
               ALTER TABLE "MetricDaily" ADD CONSTRAINT "MetricDaily_connectionId_fkey" FOREIGN KEY ("connectionId")
                 REFERENCES "Connection"("id") ON DELETE CASCADE ON UPDATE CASCADE NOT VALID;"#,
        )
        .unwrap();
    let report = release(&mut client, &db.database_url(), &folder, &options()).unwrap();
    assert!(!report.ok, "{}", report.render());
    let rendered = report.render();
    assert!(rendered.contains("check metric-connection"), "{rendered}");
    assert!(
        rendered.contains(&format!("migration `{CONTRACT}` was not applied")),
        "{rendered}"
    );
    assert!(
        rendered.contains("`MetricDaily_connectionId_fkey`"),
        "{rendered}"
    );
    assert!(
        rendered.contains("a backfill cannot fix rows that break a constraint"),
        "{rendered}"
    );
    assert!(failed_rows(&mut client).is_empty(), "{rendered}");
}

/// Rollback undoes a contract's NOT NULL and the checks it dropped, nothing else: a contract
/// that also builds an index is refused, changing nothing, instead of being marked rolled back
/// with the index left for its next deploy to trip over.
#[test]
fn rollback_refuses_a_contract_that_does_more_than_its_not_null() {
    let (dir, _) = folder(true);
    let contract = dir.path().join(CONTRACT).join("migration.sql");
    let mut script = std::fs::read_to_string(&contract).unwrap();
    script.push_str(
        "\nCREATE INDEX \"MetricDaily_connectionId_idx\" ON \"MetricDaily\"(\"connectionId\");\n",
    );
    std::fs::write(&contract, script).unwrap();
    let folder = migrations::read_dir(dir.path()).unwrap();
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    let released = release(&mut client, &db.database_url(), &folder, &options()).unwrap();
    assert!(released.ok, "{}", released.render());
    let book = crate::support::bookkeeping_digest(&mut client);
    let rolled = rollback(&mut client, &folder, true, &DeployOptions::default()).unwrap();
    assert!(!rolled.ok, "{}", rolled.render());
    assert!(
        rolled
            .render()
            .contains("does more than set its columns NOT NULL")
            && rolled.render().contains("`MetricDaily_connectionId_idx`"),
        "{}",
        rolled.render()
    );
    assert_eq!(crate::support::bookkeeping_digest(&mut client), book);
    assert_eq!(connection_column(&mut client), Some(false));
}
