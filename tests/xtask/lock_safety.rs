//! Online safety of the migrations, tested by what PostgreSQL shows, not by timing: the
//! contract's lock sequence seen in `pg_locks` from a second connection while it waits, a lock
//! timeout retried and then reported, a contract failing at VALIDATE leaving nothing held and
//! re-running cleanly, and every migration file deployable the way Prisma sends it.

use std::time::{Duration, Instant};

use datahub_tests::harness::{repo_migrations, TestDb};
use xtask::backfill::{backfill, BackfillOptions};
use xtask::db::Client;
use xtask::db::Connect;
use xtask::migrate::{self, state::State, DeployOptions};
use xtask::tenancy::{CONTRACT, EXPAND, INIT};

use crate::support::{assert_released, bookkeeping, seed_small, workspace_columns};

fn quiet() -> BackfillOptions {
    BackfillOptions {
        progress: false,
        ..BackfillOptions::default()
    }
}

/// Seeded, expanded, indexed and backfilled: everything but the contract.
fn ready_for_contract() -> TestDb {
    let db = TestDb::migrated_to(INIT);
    let mut client = db.client();
    seed_small(&mut client);
    let migrations = repo_migrations();
    let before_contract = xtask::tenancy::before_contract(&migrations).unwrap();
    db.deploy_to(EXPAND);
    backfill(
        &mut client,
        &db.database_url(),
        &crate::support::tenancy(),
        &quiet(),
    )
    .unwrap();
    db.deploy_to(before_contract);
    db
}

/// The Data Hub table locks held (granted) or awaited by the backend running `VALIDATE` or
/// `ALTER`: `(table, mode, granted)`.
fn contract_locks(observer: &mut Client, pid: i32) -> Vec<(String, String, bool)> {
    observer
        .query(
            "SELECT c.relname::text, l.mode, l.granted FROM pg_locks l
             JOIN pg_class c ON c.oid = l.relation
             WHERE l.pid = $1 AND c.relname IN ('Connection', 'MetricDaily', 'Insight', 'ChatMessage')
             ORDER BY c.relname, l.mode",
            &[&pid],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Waits until a backend of this database other than `except` waits for a relation lock.
fn waiting_backend(observer: &mut Client, except: &[i32]) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = observer
            .query_opt(
                "SELECT l.pid FROM pg_locks l
                 WHERE NOT l.granted AND l.locktype = 'relation' AND l.database =
                       (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND NOT (l.pid = ANY($1))
                 LIMIT 1",
                &[&except],
            )
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            Instant::now() < deadline,
            "the contract never waited for a lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid(client: &mut Client) -> i32 {
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0)
}

fn deploy_contract_in_background(db: &TestDb) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let url = db.database_url();
    std::thread::spawn(move || {
        let mut client = url.connect()?;
        let options = DeployOptions {
            lock_timeout: Duration::from_secs(60),
            ..DeployOptions::default()
        };
        migrate::deploy(&mut client, &url, &repo_migrations(), &options).map(|_| ())
    })
}

#[test]
fn contract_scans_under_share_update_exclusive_and_takes_access_exclusive_only_at_the_end() {
    let db = ready_for_contract();
    let mut observer = db.client();
    let observer_pid = pid(&mut observer);

    // Pause 1: another session holds SHARE UPDATE EXCLUSIVE on ChatMessage, the last table the
    // contract validates. While it waits there, it may hold no ACCESS EXCLUSIVE lock anywhere.
    let mut holder = db.client();
    let holder_pid = pid(&mut holder);
    holder
        .batch_execute(r#"BEGIN; LOCK TABLE "ChatMessage" IN SHARE UPDATE EXCLUSIVE MODE;"#)
        .unwrap();
    let deploy = deploy_contract_in_background(&db);
    let contract_pid = waiting_backend(&mut observer, &[observer_pid, holder_pid]);
    let locks = contract_locks(&mut observer, contract_pid);
    assert!(
        locks.contains(&(
            "ChatMessage".into(),
            "ShareUpdateExclusiveLock".into(),
            false
        )),
        "{locks:?}"
    );
    for table in ["Connection", "MetricDaily", "Insight"] {
        assert!(
            locks.contains(&(table.into(), "ShareUpdateExclusiveLock".into(), true)),
            "{table} validated under SHARE UPDATE EXCLUSIVE: {locks:?}"
        );
    }
    assert!(
        !locks
            .iter()
            .any(|(_, mode, _)| mode == "AccessExclusiveLock"),
        "no ACCESS EXCLUSIVE while validating: {locks:?}"
    );
    // Meanwhile the app writes: an insert into a table already validated goes through.
    let mut app = db.client();
    app.batch_execute("SET lock_timeout = '2s'").unwrap();
    app.execute(
        r#"INSERT INTO "Insight" ("id", "userId", "provider", "title", "body", "severity")
           SELECT 'lock_test_insight', "id", 'google-ads', 't', 'b', 'info' FROM "User" LIMIT 1"#,
        &[],
    )
    .expect("an app insert during VALIDATE must not wait");
    holder.batch_execute("COMMIT").unwrap();
    deploy.join().unwrap().unwrap();
    assert_released(&mut db.client());
}

#[test]
fn set_not_null_waits_only_after_every_table_is_validated() {
    let db = ready_for_contract();
    let mut observer = db.client();
    let observer_pid = pid(&mut observer);
    // Pause 2: an open transaction of the app reads Connection (ACCESS SHARE). VALIDATE does
    // not conflict with it; the first ACCESS EXCLUSIVE request (SET NOT NULL) does.
    let mut reader = db.client();
    let reader_pid = pid(&mut reader);
    reader
        .batch_execute(r#"BEGIN; SELECT count(*) FROM "Connection";"#)
        .unwrap();
    let deploy = deploy_contract_in_background(&db);
    let contract_pid = waiting_backend(&mut observer, &[observer_pid, reader_pid]);
    let locks = contract_locks(&mut observer, contract_pid);
    assert!(
        locks.contains(&("Connection".into(), "AccessExclusiveLock".into(), false)),
        "{locks:?}"
    );
    for table in ["Connection", "MetricDaily", "Insight", "ChatMessage"] {
        assert!(
            locks.contains(&(table.into(), "ShareUpdateExclusiveLock".into(), true)),
            "every table is validated before the first ACCESS EXCLUSIVE request: {locks:?}"
        );
    }
    assert!(
        !locks
            .iter()
            .any(|(_, mode, granted)| mode == "AccessExclusiveLock" && *granted),
        "{locks:?}"
    );
    reader.batch_execute("COMMIT").unwrap();
    deploy.join().unwrap().unwrap();
    assert_released(&mut db.client());
}

/// Giving up on a lock leaves nothing that blocks Prisma: the attempt's row is taken out (the
/// reason in the error), so the migration is pending again and a plain deploy (ours or
/// Prisma's) applies it once the blocker is gone; nothing needs resolving.
#[test]
fn a_lock_timeout_is_retried_then_given_up_and_leaves_nothing_held() {
    let db = ready_for_contract();
    let mut reader = db.client();
    reader
        .batch_execute(r#"BEGIN; SELECT count(*) FROM "MetricDaily";"#)
        .unwrap();
    let url = db.database_url();
    let mut client = url.connect().unwrap();
    let options = DeployOptions {
        lock_timeout: Duration::from_millis(100),
        lock_budget: Duration::from_secs(1),
        ..DeployOptions::default()
    };
    let error = migrate::deploy(&mut client, &url, &repo_migrations(), &options).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("was not applied"), "{message}");
    assert!(message.contains("within the 1 s lock budget"), "{message}");
    assert!(
        message.contains("its attempt is taken out of `_prisma_migrations`"),
        "{message}"
    );
    assert!(
        message.contains("55P03") && message.contains("Not applied"),
        "{message}"
    );
    assert!(bookkeeping(&mut client).iter().all(|r| r.name != CONTRACT));
    let status = migrate::status(&mut client, &repo_migrations()).unwrap();
    assert_eq!(status.state_of(CONTRACT), Some(&State::Pending));
    assert_no_locks_left(&db, &mut client);
    reader.batch_execute("COMMIT").unwrap();

    migrate::deploy(
        &mut client,
        &url,
        &repo_migrations(),
        &DeployOptions::default(),
    )
    .unwrap();
    assert_released(&mut client);
}

#[test]
fn a_contract_failing_at_validate_holds_nothing_and_runs_again() {
    let db = ready_for_contract();
    let mut client = db.client();
    // A row the NOT VALID foreign key never checked: it points at no workspace.
    client
        .batch_execute(
            r#"ALTER TABLE "Insight" DROP CONSTRAINT "Insight_workspaceId_fkey";
               UPDATE "Insight" SET "workspaceId" = 'no_such_workspace'
                 WHERE "id" = (SELECT min("id") FROM "Insight");
               ALTER TABLE "Insight" ADD CONSTRAINT "Insight_workspaceId_fkey" FOREIGN KEY ("workspaceId")
                 REFERENCES "Workspace"("id") ON DELETE CASCADE ON UPDATE CASCADE NOT VALID;"#,
        )
        .unwrap();
    let url = db.database_url();
    // Counted first, the orphan stops the deploy before the contract, recording nothing.
    let refused = migrate::deploy(
        &mut client,
        &url,
        &repo_migrations(),
        &DeployOptions::default(),
    )
    .unwrap_err();
    let message = format!("{refused:#}");
    assert!(
        message.contains("was not applied, because it would fail"),
        "{message}"
    );
    assert!(message.contains("`Insight_workspaceId_fkey`"), "{message}");
    let status = migrate::status(&mut client, &repo_migrations()).unwrap();
    assert_eq!(status.state_of(CONTRACT), Some(&State::Pending));
    // Deployed as Prisma deploys it, without the count, it fails at VALIDATE and holds nothing.
    let error = migrate::deploy(
        &mut client,
        &url,
        &repo_migrations(),
        &DeployOptions {
            check_rows: false,
            ..DeployOptions::default()
        },
    )
    .unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("23503"), "{message}");
    assert!(message.contains("Insight_workspaceId_fkey"), "{message}");

    // Nothing of the contract remains: nullable columns, the NOT VALID checks still there, no
    // lock held, and the app writes without waiting.
    let columns = workspace_columns(&mut client);
    assert!(columns.iter().all(|(_, n)| n == "YES"), "{columns:?}");
    let checks: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%_workspaceId_not_null' AND NOT convalidated",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(checks, 4);
    assert_no_locks_left(&db, &mut client);

    // Fix the row, then run it again.
    client
        .batch_execute(
            r#"UPDATE "Insight" SET "workspaceId" = "datahub_home_workspace_id"("userId")
               WHERE "workspaceId" = 'no_such_workspace'"#,
        )
        .unwrap();
    let status = migrate::status(&mut client, &repo_migrations()).unwrap();
    assert_eq!(status.state_of(CONTRACT), Some(&State::Failed));
    migrate::resolve(
        &mut client,
        &repo_migrations(),
        migrate::Resolution::RolledBack,
        CONTRACT,
        Duration::from_secs(5),
    )
    .unwrap();
    migrate::deploy(
        &mut client,
        &url,
        &repo_migrations(),
        &DeployOptions::default(),
    )
    .unwrap();
    assert_released(&mut client);
}

/// No backend but `client` holds or awaits a lock on a Data Hub table, and an app write with
/// a short lock_timeout goes through.
fn assert_no_locks_left(db: &TestDb, client: &mut Client) {
    let me = pid(client);
    let held: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
             WHERE l.pid <> $1 AND l.mode = 'AccessExclusiveLock'
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND c.relname IN ('Connection', 'MetricDaily', 'Insight', 'ChatMessage')",
            &[&me],
        )
        .unwrap()
        .get(0);
    assert_eq!(held, 0);
    let mut app = db.client();
    app.batch_execute("SET lock_timeout = '1s'").unwrap();
    app.execute(
        r#"UPDATE "Connection" SET "status" = "status" WHERE "id" = (SELECT min("id") FROM "Connection")"#,
        &[],
    )
    .expect("an app write right after the failure must not wait");
}

#[test]
fn prisma_can_deploy_every_migration_file() {
    // Prisma sends each file as one simple-query string, with no transaction around it.
    let db = TestDb::new();
    let mut client = db.client();
    for migration in repo_migrations() {
        if migration.name == CONTRACT {
            backfill(
                &mut client,
                &db.database_url(),
                &crate::support::tenancy(),
                &quiet(),
            )
            .unwrap();
        }
        client
            .batch_execute(&migration.script)
            .unwrap_or_else(|e| panic!("`{}` as Prisma sends it: {e}", migration.name));
        if migration.name == INIT {
            seed_small(&mut client);
        }
    }
    let columns = workspace_columns(&mut client);
    assert!(columns.iter().all(|(_, n)| n == "NO"), "{columns:?}");
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE c.relname LIKE '%workspaceId%idx' AND i.indisvalid",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(indexes, 8);
}

/// A busy table does not stall the others. While the app reads `MetricDaily` in an open
/// transaction, each try of the expand holds ACCESS EXCLUSIVE on `Connection` (taken first)
/// while it waits for `MetricDaily`; a plain read of `Connection` queues behind it. That read
/// goes through as soon as the try gives up (its `lock_timeout`, 500 ms by default), while the
/// app's transaction on `MetricDaily` is still open: it is never held up for longer than one
/// try, however long the busy table stays busy.
#[test]
fn an_app_read_of_an_uncontended_table_waits_at_most_one_try() {
    assert!(DeployOptions::default().lock_timeout < Duration::from_secs(1));
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    let mut observer = db.client();
    let observer_pid = pid(&mut observer);
    let mut busy = db.client();
    let busy_pid = pid(&mut busy);
    busy.batch_execute(r#"BEGIN; SELECT count(*) FROM "MetricDaily";"#)
        .unwrap();
    let url = db.database_url();
    let deploy = std::thread::spawn(move || {
        let mut client = url.connect().unwrap();
        let options = DeployOptions {
            to: Some(EXPAND.to_string()),
            ..DeployOptions::default()
        };
        migrate::deploy(&mut client, &url, &repo_migrations(), &options)
    });

    // A try holds Connection and waits for MetricDaily; an app read of Connection is then
    // queued behind it (seen in pg_locks, blocked by the deploy's backend). A read that slips
    // in between two tries is simply made again.
    let mut seen_queued = false;
    for _ in 0..20 {
        let deploy_pid = waiting_backend(&mut observer, &[observer_pid, busy_pid]);
        let held = contract_locks(&mut observer, deploy_pid);
        if !held.contains(&("Connection".into(), "AccessExclusiveLock".into(), true)) {
            continue;
        }
        let reader_url = db.url().to_string();
        let reader = std::thread::spawn(move || {
            let mut reader = datahub_tests::harness::client_for(&reader_url);
            let reader_pid = pid(&mut reader);
            let count: i64 = reader
                .query_one(r#"SELECT count(*) FROM "Connection""#, &[])
                .unwrap()
                .get(0);
            (reader_pid, count)
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !reader.is_finished() {
            let queued: bool = observer
                .query_one(
                    r#"SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                       WHERE NOT l.granted AND c.relname = 'Connection' AND l.mode = 'AccessShareLock'
                         AND $1 = ANY (pg_blocking_pids(l.pid)))"#,
                    &[&deploy_pid],
                )
                .unwrap()
                .get(0);
            seen_queued |= queued;
            assert!(
                Instant::now() < deadline,
                "the read of Connection waited longer than a try"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let (_, count) = reader.join().unwrap();
        assert!(count > 0);
        if seen_queued {
            break;
        }
    }
    assert!(seen_queued, "the read was never queued behind a try");
    // All the while the busy table's transaction stayed open.
    let state: String = observer
        .query_one(
            "SELECT state FROM pg_stat_activity WHERE pid = $1",
            &[&busy_pid],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "idle in transaction");

    busy.batch_execute("COMMIT").unwrap();
    deploy.join().unwrap().unwrap();
    let status = migrate::status(&mut observer, &repo_migrations()).unwrap();
    assert_eq!(status.state_of(EXPAND), Some(&State::Applied));
}
