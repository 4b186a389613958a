//! The fault matrix on the third release (`next_release/`: `MetricDaily.connectionId` filled
//! from `Connection`), run by the binary on a migrations folder that holds it beside the
//! repository's: `release` killed inside that release's backfill and inside its contract,
//! `recover` killed inside that contract after the incident (the contract deployed over the
//! NULLs), `rollback --yes` killed inside its DROP NOT NULL. After each fault, `recover` (or the
//! rollback again) converges: `migrate status` up to date, `check` green for both releases,
//! every metric row filed under the connection the rule names (the rows the previous app
//! writes all along without `connectionId` too, none of its writes failing), nothing recorded
//! failed, and real Prisma's `migrate status` agrees.
//!
//! Deterministic as `faults`: the command is parked by a lock another session holds and the
//! fault is injected once the database shows it waiting there, never after a sleep.

use std::time::{Duration, Instant};

use datahub_tests::harness::{client_for, run_xtask, text, Running, TestDb};
use datahub_tests::prisma::prisma;
use xtask::backfill::{backfill, BackfillOptions};
use xtask::db::Client;
use xtask::migrate::{self, DeployOptions};
use xtask::migrations::Migration;
use xtask::report::Report;
use xtask::tenancy::INIT;

use crate::faults::{signal, terminate_xtask_backends, wait_until, Blocker, OldApp};
use crate::next_release::{connection_column, failed_rows, folder, misfiled, CONTRACT, EXPAND};
use crate::support::{seed_small, tenancy, workspace_columns, ALL_BACKFILLED};

/// How far the database is taken before the command under test starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Tenancy and the key release done; the third release's expand deployed.
    Expanded,
    /// Its backfill done too; its contract pending.
    Backfilled,
    /// Its contract deployed.
    Contracted,
}

/// A test database and the migrations folder with the third release in it.
struct Third {
    dir: tempfile::TempDir,
    folder: Vec<Migration>,
    db: TestDb,
}

impl Third {
    /// Seeded pre-tenancy data (some users without a connection for a provider they have
    /// metrics for, so the rule's sweep creates connections), taken to `stage`.
    fn at(stage: Stage) -> Third {
        let (dir, folder) = folder(true);
        let db = TestDb::migrated_to(INIT);
        let mut client = db.client();
        seed_small(&mut client);
        client
            .batch_execute(r#"DELETE FROM "Connection" WHERE "id" IN (SELECT "id" FROM "Connection" ORDER BY "id" LIMIT 5)"#)
            .unwrap();
        let third = Third { dir, folder, db };
        third.deploy_to(&tenancy().expand);
        third.backfill("workspace-tenancy");
        third.deploy_to(EXPAND);
        if stage >= Stage::Backfilled {
            third.backfill("metric-connection");
        }
        if stage >= Stage::Contracted {
            third.deploy_to(CONTRACT);
        }
        third
    }

    fn client(&self) -> Client {
        client_for(self.db.url())
    }

    fn deploy_to(&self, target: &str) {
        let options = DeployOptions {
            to: Some(target.to_string()),
            ..DeployOptions::default()
        };
        migrate::deploy(
            &mut self.client(),
            &self.db.database_url(),
            &self.folder,
            &options,
        )
        .unwrap_or_else(|e| panic!("deploy to `{target}`: {e:#}"));
    }

    fn backfill(&self, release: &str) {
        let declared = xtask::releases::load(&self.folder).unwrap();
        let release = xtask::releases::find(&declared, release).unwrap();
        let options = BackfillOptions {
            progress: false,
            ..BackfillOptions::default()
        };
        backfill(
            &mut self.client(),
            &self.db.database_url(),
            release,
            &options,
        )
        .unwrap_or_else(|e| panic!("backfill `{}`: {e:#}", release.name));
    }

    /// `args` after `--migrations-dir` this folder.
    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let dir = self.dir.path().to_str().unwrap();
        [&["--migrations-dir", dir][..], args].concat()
    }

    fn start(&self, args: &[&str]) -> Running {
        Running::start(&self.args(args), self.db.url())
    }

    /// Runs the binary to its end; exit 0 expected.
    fn succeeds(&self, args: &[&str]) -> String {
        let output = run_xtask(&self.args(args), Some(self.db.url()));
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stdout}{stderr}");
        stdout
    }

    /// Real Prisma's `migrate status` on the same folder.
    fn prisma_status(&self) -> String {
        let status = prisma().migrate(self.dir.path(), self.db.url(), &["status"]);
        let all = status.all();
        assert!(
            !all.to_lowercase().contains("failed"),
            "Prisma sees a failed migration: {all}"
        );
        all
    }
}

/// The app deployed before the third release: it writes metric rows with their workspace and
/// without `connectionId`, which the expand's trigger fills.
fn insert_as_the_previous_app(
    client: &mut Client,
    id: &str,
    n: u64,
) -> Result<(), postgres::Error> {
    let day = n as i32;
    client.execute(
        r#"INSERT INTO "MetricDaily" ("id", "userId", "workspaceId", "provider", "date", "impressions", "clicks")
           SELECT $1, m."userId", m."workspaceId", m."provider", date '2030-01-01' + $2::int, 100, 10
           FROM "MetricDaily" m WHERE m."id" NOT LIKE 'prevapp\_%' ORDER BY m."id" LIMIT 1"#,
        &[&id, &day],
    )?;
    Ok(())
}

/// The previous app, started and seen to have written a row.
fn previous_app(third: &Third) -> OldApp {
    let app = OldApp::start_with(third.db.url(), "prevapp", insert_as_the_previous_app);
    let deadline = Instant::now() + Duration::from_secs(60);
    while app.written() == 0 {
        if Instant::now() >= deadline {
            let (_, failed) = app.stop_with_failures();
            panic!("the previous app never wrote a row: {:?}", failed.last());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    app
}

/// Every column but the two releases' of the rows that existed before the case (the
/// connections the sweep creates and the previous app's rows are not in it).
fn digest(client: &mut Client) -> String {
    client
        .query_one(
            r#"SELECT md5(string_agg(d, '|' ORDER BY d)) FROM (
                 SELECT 'C' || (to_jsonb(t) - 'workspaceId')::text AS d FROM "Connection" t WHERE t."id" NOT LIKE 'conn\_%'
                 UNION ALL SELECT 'M' || (to_jsonb(t) - 'workspaceId' - 'connectionId')::text FROM "MetricDaily" t WHERE t."id" NOT LIKE 'prevapp\_%'
                 UNION ALL SELECT 'I' || (to_jsonb(t) - 'workspaceId')::text FROM "Insight" t
                 UNION ALL SELECT 'H' || (to_jsonb(t) - 'workspaceId')::text FROM "ChatMessage" t
                 UNION ALL SELECT 'U' || to_jsonb(t)::text FROM "User" t
               ) rows"#,
            &[],
        )
        .unwrap()
        .get(0)
}

/// Whether a backend of xtask waits for an ACCESS EXCLUSIVE lock on `MetricDaily` while
/// running a statement that contains `statement`, as `pg_locks` and `pg_stat_activity` show.
fn waits_on_metric_daily_in(observer: &mut Client, statement: &str) -> bool {
    observer
        .query_one(
            r#"SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                              JOIN pg_stat_activity a ON a.pid = l.pid
                              WHERE NOT l.granted AND c.relname = 'MetricDaily'
                                AND l.mode = 'AccessExclusiveLock'
                                AND a.application_name = 'cargo-xtask'
                                AND a.datname = current_database()
                                AND strpos(a.query, $1) > 0)"#,
            &[&statement],
        )
        .unwrap()
        .get(0)
}

/// The state every case must end in: both releases done, as xtask, the catalog and Prisma see
/// it, the data as it was, and every row the previous app wrote kept (and filed by the rule).
fn assert_converged(third: &Third, before: &str, previous_app: OldApp) {
    let (written, failed) = previous_app.stop_with_failures();
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "the previous app's writes failed"
    );
    let mut client = third.client();
    let kept: i64 = client
        .query_one(
            r#"SELECT count(*) FROM "MetricDaily" WHERE "id" = ANY($1)"#,
            &[&written],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        kept,
        written.len() as i64,
        "rows the previous app wrote are gone"
    );
    let status = third.succeeds(&["migrate", "status"]);
    assert!(
        status.contains("Database schema is up to date!"),
        "{status}"
    );
    let check = third.succeeds(&["check"]);
    assert!(check.contains(ALL_BACKFILLED), "{check}");
    assert!(
        check.contains("`metric-connection` release are backfilled"),
        "{check}"
    );
    assert_eq!(connection_column(&mut client), Some(false), "NOT NULL");
    assert_eq!(misfiled(&mut client), 0, "a row under the wrong connection");
    let columns = workspace_columns(&mut client);
    assert!(columns.iter().all(|(_, n)| n == "NO"), "{columns:?}");
    assert_eq!(failed_rows(&mut client), Vec::<String>::new());
    assert_eq!(digest(&mut client), before, "the data changed");
    let leftovers: (i64, i64) = {
        let row = client
            .query_one(
                r#"SELECT (SELECT count(*) FROM pg_index WHERE NOT indisvalid),
                          (SELECT count(*) FROM "User" WHERE "id" LIKE 'datahub\_smoke\_%')"#,
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        leftovers,
        (0, 0),
        "(INVALID indexes, smoke users) left behind"
    );
    let prisma = third.prisma_status();
    assert!(
        prisma.contains("Database schema is up to date!"),
        "{prisma}"
    );
}

#[test]
fn release_sigkill_in_the_third_releases_backfill_then_recover() {
    release_stopped_in_the_backfill(
        |running, _| running.kill(),
        |code, stderr| {
            assert_eq!(code, None, "killed by a signal: {stderr}");
        },
    );
}

#[test]
fn release_terminated_in_the_third_releases_backfill_then_recover() {
    release_stopped_in_the_backfill(
        |_, observer| assert!(terminate_xtask_backends(observer) > 0),
        |code, stderr| {
            // The connection lost: a clear error, never a panic.
            assert!(matches!(code, Some(1) | Some(2)), "{code:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{stderr}");
        },
    );
}

/// `release` parked on a `MetricDaily` row another session holds FOR UPDATE, inside the third
/// release's backfill, stopped by `fault`; `outcome` judges its exit; then `recover`.
fn release_stopped_in_the_backfill(
    fault: impl FnOnce(&mut Running, &mut Client),
    outcome: impl FnOnce(Option<i32>, &str),
) {
    let third = Third::at(Stage::Expanded);
    let mut observer = third.client();
    let before = digest(&mut observer);
    let app = previous_app(&third);
    let mut blocker = Blocker::holding_in(
        third.client(),
        r#"SELECT 1 FROM "MetricDaily" WHERE "id" = (SELECT min("id") FROM "MetricDaily") FOR UPDATE"#,
    );
    let mut running = third.start(&["release", "--batch-size", "100"]);
    // Every row filled but the one held, and the backfill says it comes back for it.
    wait_until(&mut running, "the held MetricDaily row", |running| {
        let left: i64 = observer
            .query_one(
                r#"SELECT count(*) FROM "MetricDaily" WHERE "connectionId" IS NULL"#,
                &[],
            )
            .unwrap()
            .get(0);
        left == 1
            && running
                .stderr()
                .iter()
                .any(|l| l.contains("MetricDaily: 1 row(s) held by other transactions"))
    });
    fault(&mut running, &mut observer);
    let (code, _, stderr) = running.wait(Duration::from_secs(30));
    outcome(code, &stderr);
    blocker.release();

    third.succeeds(&["recover"]);
    assert_converged(&third, &before, app);
}

/// The incident on the third release: its contract deployed as Prisma deploys it, over the
/// NULLs, fails and is recorded failed. `recover` backfills and re-deploys it, and is killed
/// inside the contract's SET NOT NULL; `recover` again converges.
#[test]
fn recover_sigkill_in_the_third_releases_contract_then_recover_again() {
    let third = Third::at(Stage::Expanded);
    let mut observer = third.client();
    let before = digest(&mut observer);
    let deploy = run_xtask(
        &third.args(&["migrate", "deploy", "--skip-row-check"]),
        Some(third.db.url()),
    );
    assert_eq!(deploy.status.code(), Some(1), "{}", text(&deploy.stderr));
    assert_eq!(failed_rows(&mut observer), [CONTRACT]);
    let app = previous_app(&third);
    let mut blocker = Blocker::holding_in(third.client(), r#"SELECT count(*) FROM "MetricDaily""#);
    let mut running = third.start(&["recover"]);
    wait_until(&mut running, "the contract's SET NOT NULL", |_| {
        waits_on_metric_daily_in(&mut observer, "SET NOT NULL")
    });
    running.kill();
    let (code, _, stderr) = running.wait(Duration::from_secs(30));
    assert_eq!(code, None, "killed by a signal: {stderr}");
    blocker.release();

    third.succeeds(&["recover"]);
    assert_converged(&third, &before, app);
}

#[test]
fn release_sigterm_in_the_third_releases_contract_then_recover() {
    let third = Third::at(Stage::Backfilled);
    let mut observer = third.client();
    let before = digest(&mut observer);
    let app = previous_app(&third);
    // The app reads `MetricDaily` in an open transaction: the contract's SET NOT NULL waits.
    let mut blocker = Blocker::holding_in(third.client(), r#"SELECT count(*) FROM "MetricDaily""#);
    let mut running = third.start(&["release", "--batch-size", "100"]);
    wait_until(&mut running, "the contract's SET NOT NULL", |_| {
        waits_on_metric_daily_in(&mut observer, "SET NOT NULL")
    });
    signal(running.pid(), libc::SIGTERM);
    let (code, _, stderr) = running.wait(Duration::from_secs(90));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    // Cancelled on the server and the outcome recorded: nothing is left failed.
    assert_eq!(failed_rows(&mut observer), Vec::<String>::new(), "{stderr}");
    assert_eq!(connection_column(&mut observer), Some(true));
    blocker.release();

    third.succeeds(&["recover"]);
    assert_converged(&third, &before, app);
}

#[test]
fn rollback_sigkill_in_the_third_releases_drop_not_null_then_again() {
    let third = Third::at(Stage::Contracted);
    let mut observer = third.client();
    let before = digest(&mut observer);
    let app = previous_app(&third);
    assert_eq!(connection_column(&mut observer), Some(false));
    let mut blocker = Blocker::holding_in(third.client(), r#"SELECT count(*) FROM "MetricDaily""#);
    let mut running = third.start(&["rollback", "--yes"]);
    wait_until(&mut running, "the rollback's DROP NOT NULL", |_| {
        waits_on_metric_daily_in(&mut observer, "DROP NOT NULL")
    });
    running.kill();
    let (code, _, stderr) = running.wait(Duration::from_secs(30));
    assert_eq!(code, None, "killed by a signal: {stderr}");
    blocker.release();

    // Again: the third release is rolled back, and only it.
    let again = third.succeeds(&["rollback", "--yes"]);
    assert!(again.contains("Rolled back `metric-connection`"), "{again}");
    assert_eq!(connection_column(&mut observer), Some(true));
    let columns = workspace_columns(&mut observer);
    assert!(columns.iter().all(|(_, n)| n == "NO"), "{columns:?}");
    let status = migrate::status(&mut observer, &third.folder).unwrap();
    let pending: Vec<&str> = status.pending().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(pending, [CONTRACT], "{}", status.render());
    assert_eq!(failed_rows(&mut observer), Vec::<String>::new());
    // Prisma sees nothing failed (its `status` does not count a rolled-back row as pending).
    third.prisma_status();

    // `recover` brings the contract back.
    third.succeeds(&["recover"]);
    assert_converged(&third, &before, app);
}
