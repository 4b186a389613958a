//! Real Prisma 6.19.3's `migrate deploy` waiting for the migration lock while our deploy builds
//! an index `CONCURRENTLY`. Prisma waits in `SELECT pg_advisory_lock(72707369)`, a statement
//! with a snapshot; the build's last phase ("waiting for old snapshots") waits for every
//! transaction whose snapshot is older than the build's reference snapshot, taken as that phase
//! begins. Our build is parked behind an app transaction (seen in
//! `pg_stat_progress_create_index`), Prisma is seen waiting for the lock in `pg_locks`, and the
//! app commits: when Prisma's snapshot is the older (the app had written), each waits for the
//! other and PostgreSQL fails one of the two with `deadlock detected`; which one is decided by
//! whose deadlock check runs first once the cycle exists. Whatever happens, the documented next
//! step converges: `migrate status` up to date for both tools, the index valid.

use std::path::Path;
use std::time::{Duration, Instant};

use datahub_tests::harness::{run_xtask, text, OwnCluster, Running, TestDb};
use datahub_tests::prisma::{prisma, PrismaOutput};
use xtask::db::Client;
use xtask::db::MIGRATION_LOCK_KEY;
use xtask::migrations;

const TABLE: &str = "20250101000000_t";
const INDEX: &str = "20250101000100_t_c_concurrently";

/// A migrations folder of a table and an index built `CONCURRENTLY` on it.
fn migrations_dir() -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    std::fs::copy(
        migrations::default_dir().join("migration_lock.toml"),
        temp.path().join("migration_lock.toml"),
    )
    .unwrap();
    for (name, script) in [
        (
            TABLE,
            "CREATE TABLE \"T\" (\"c\" INTEGER);\nINSERT INTO \"T\" (\"c\") SELECT g FROM generate_series(1, 1000) g;\n",
        ),
        (INDEX, "CREATE INDEX CONCURRENTLY \"T_c_idx\" ON \"T\"(\"c\");\n"),
    ] {
        std::fs::create_dir_all(temp.path().join(name)).unwrap();
        std::fs::write(temp.path().join(name).join("migration.sql"), script).unwrap();
    }
    temp
}

fn xtask(dir: &Path, args: &[&str], db: &TestDb) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--migrations-dir", dir.to_str().unwrap()]);
    run_xtask(&all, Some(db.url()))
}

/// Polls `sql` (one boolean) until it is true; a deadline turns a hang into a failure.
fn wait_until(client: &mut Client, sql: &str, what: &str) {
    crate::support::until_holds(what, || client.query_one(sql, &[]).unwrap().get(0));
}

/// Who was failed with `deadlock detected`.
#[derive(Debug, PartialEq, Eq)]
enum Failed {
    Prisma,
    OurBuild,
}

/// The app transaction our build waits for.
#[derive(Debug, Clone, Copy)]
enum App {
    /// One that wrote: the build waits for it before it builds ("waiting for writers before
    /// build"), and as it has a transaction id, every snapshot taken while it runs (Prisma's)
    /// is older than the build's reference snapshot, taken after it ends.
    Wrote,
    /// A REPEATABLE READ reader: the build waits for its snapshot in its last phase ("waiting
    /// for old snapshots"), among the transactions it listed as that phase began.
    OldSnapshot,
}

/// Our deploy of the index parked behind an app transaction; Prisma's deploy started and seen
/// waiting for the migration lock; then `before_commit` (given Prisma's pid); then the app
/// commits. Returns who was failed with `deadlock detected`, if any, with both outputs checked
/// against what each says.
fn race(
    db: &TestDb,
    dir: &Path,
    kind: App,
    before_commit: impl FnOnce(i32),
) -> (Option<Failed>, String, PrismaOutput) {
    let first = xtask(dir, &["migrate", "deploy", "--to", TABLE], db);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));

    let mut app = db.client();
    app.batch_execute(match kind {
        App::Wrote => r#"BEGIN; UPDATE "T" SET "c" = "c" WHERE "c" = 1"#,
        App::OldSnapshot => r#"BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM "T""#,
    })
    .unwrap();
    let app_pid: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let args = [
        "migrate",
        "deploy",
        "--migrations-dir",
        dir.to_str().unwrap(),
    ];
    let ours = Running::start(&args, db.url());
    let mut observer = db.client();
    wait_until(
        &mut observer,
        &format!(
            "SELECT EXISTS (SELECT FROM pg_stat_progress_create_index
               WHERE datname = current_database() AND current_locker_pid = {app_pid}
                 AND phase = '{}')",
            match kind {
                App::Wrote => "waiting for writers before build",
                App::OldSnapshot => "waiting for old snapshots",
            }
        ),
        "our build waiting for the app transaction",
    );
    let theirs = prisma().spawn_migrate(dir, db.url(), &["deploy"]);
    let waiting_prisma = format!(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
           AND objid = {MIGRATION_LOCK_KEY}
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    );
    wait_until(
        &mut observer,
        &format!("SELECT EXISTS ({waiting_prisma})"),
        "Prisma waiting for the migration lock",
    );
    let prisma_pid: i32 = observer.query_one(&waiting_prisma, &[]).unwrap().get(0);
    before_commit(prisma_pid);
    app.batch_execute("COMMIT").unwrap();

    let (code, stdout, stderr) = ours.wait(Duration::from_secs(120));
    let ours_said = format!("{stdout}\n{stderr}");
    let theirs = PrismaOutput::wait(
        theirs,
        Duration::from_secs(120),
        "Prisma's deploy did not end",
    );
    let failed = if theirs.all().contains("deadlock detected") {
        // Prisma applied nothing; our build went on once Prisma's statement ended.
        assert_eq!(theirs.code, Some(1), "{}", theirs.all());
        assert_eq!(code, Some(0), "{ours_said}");
        Some(Failed::Prisma)
    } else if ours_said.contains("deadlock detected") {
        assert_eq!(code, Some(1), "{ours_said}\n{}", theirs.all());
        assert!(
            stderr.contains("deadlock detected")
                && stderr.contains(&format!("migration `{INDEX}` failed"))
                && stderr.contains("an INVALID index `T_c_idx` is left behind"),
            "{ours_said}"
        );
        Some(Failed::OurBuild)
    } else {
        assert_eq!(code, Some(0), "{ours_said}");
        assert_eq!(theirs.code, Some(0), "{}", theirs.all());
        None
    };
    (failed, ours_said, theirs)
}

fn index_valid(db: &TestDb) -> Option<bool> {
    db.client()
        .query_opt(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('\"T_c_idx\"')",
            &[],
        )
        .unwrap()
        .map(|row| row.get(0))
}

/// Both tools call the database up to date, and the index is valid.
fn assert_converged(db: &TestDb, dir: &Path) {
    let ours = xtask(dir, &["migrate", "status"], db);
    assert_eq!(ours.status.code(), Some(0), "{}", text(&ours.stdout));
    let theirs = prisma().migrate(dir, db.url(), &["status"]);
    assert_eq!(theirs.code, Some(0), "{}", theirs.all());
    assert!(
        theirs.stdout.contains("Database schema is up to date!"),
        "{}",
        theirs.all()
    );
    assert_eq!(index_valid(db), Some(true));
}

/// The next step for whichever was failed: Prisma's deploy run again (it applied nothing and
/// finds nothing pending), or `cargo xtask recover` for our failed build.
fn next_step(db: &TestDb, dir: &Path, failed: Option<Failed>) {
    match failed {
        None => {}
        Some(Failed::Prisma) => {
            let again = prisma().migrate(dir, db.url(), &["deploy"]);
            assert_eq!(again.code, Some(0), "{}", again.all());
            assert!(
                again.all().contains("No pending migrations to apply."),
                "{}",
                again.all()
            );
        }
        Some(Failed::OurBuild) => {
            let recover = xtask(dir, &["recover"], db);
            assert_eq!(
                recover.status.code(),
                Some(0),
                "{}{}",
                text(&recover.stdout),
                text(&recover.stderr)
            );
        }
    }
}

/// The app commits as soon as Prisma is seen waiting: our build reaches its last phase within
/// Prisma's `deadlock_timeout` (1 s), so the check Prisma's backend runs then finds the cycle
/// and fails Prisma's statement (were the build slower, it would fail the build instead: both
/// converge).
#[test]
fn prisma_waiting_for_the_lock_as_our_build_ends_deadlocks_and_both_converge() {
    let dir = migrations_dir();
    let db = TestDb::new();
    let (failed, _, theirs) = race(&db, dir.path(), App::Wrote, |_| {});
    assert!(failed.is_some(), "{}", theirs.all());
    if failed == Some(Failed::Prisma) {
        assert!(
            theirs.stderr.contains("Error: ERROR: deadlock detected")
                && theirs.stderr.contains("advisory lock [")
                && !theirs.all().contains("P1002"),
            "{}",
            theirs.all()
        );
    }
    next_step(&db, dir.path(), failed);
    assert_converged(&db, dir.path());
}

/// The app commits only once Prisma's backend has run its deadlock check and found no cycle
/// (its "still waiting" line, `log_lock_waits`): the build's own check, a second after it starts
/// waiting for Prisma's snapshot, finds the cycle and fails the build. The attempt is recorded
/// as failed, Prisma (given the lock then) refuses to deploy past it (P3009), and
/// `cargo xtask recover` drops the INVALID index and builds it again.
#[test]
fn our_build_failed_by_the_deadlock_is_recovered_and_both_converge() {
    let cluster = OwnCluster::with_settings(&[("log_lock_waits", "on")]);
    let dir = migrations_dir();
    let db = cluster.database(None);
    let (failed, ours_said, theirs) = race(&db, dir.path(), App::Wrote, |prisma_pid| {
        let checked =
            format!("process {prisma_pid} still waiting for ExclusiveLock on advisory lock");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cluster.server_log().contains(&checked) {
            assert!(Instant::now() < deadline, "{}", cluster.server_log());
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    assert_eq!(failed, Some(Failed::OurBuild), "{}", theirs.all());
    assert!(
        ours_said.contains(
            "the failure is recorded in `_prisma_migrations` (the build deadlocked with another deploy waiting for the migration lock, such as Prisma's `migrate deploy`: run one deploy at a time): run `cargo xtask recover`"
        ),
        "{ours_said}"
    );
    assert_eq!(theirs.code, Some(1), "{}", theirs.all());
    assert!(
        theirs.stderr.contains("Error: P3009")
            && theirs
                .stderr
                .contains(&format!("The `{INDEX}` migration started at")),
        "{}",
        theirs.all()
    );
    assert_eq!(index_valid(&db), Some(false));
    next_step(&db, dir.path(), failed);
    assert_converged(&db, dir.path());
}

/// Prisma starts waiting only once the build waits in its last phase (for an app's old
/// snapshot): that phase waits only for snapshots older than the build's own, taken as the phase
/// began, and Prisma's is newer. No deadlock: once the app commits, our deploy finishes and
/// Prisma, given the lock within its 10 s, finds nothing to apply.
#[test]
fn prisma_waiting_for_the_lock_after_our_build_listed_old_snapshots_just_waits() {
    let dir = migrations_dir();
    let db = TestDb::new();
    let (failed, _, theirs) = race(&db, dir.path(), App::OldSnapshot, |_| {});
    assert_eq!(failed, None, "{}", theirs.all());
    assert!(
        theirs.all().contains("No pending migrations to apply."),
        "{}",
        theirs.all()
    );
    assert_converged(&db, dir.path());
}
