//! Helpers shared by the command tests.

use std::time::{Duration, Instant};

use datahub_tests::harness::snapshot_filters;
use xtask::db::Client;
use xtask::report::Report;

/// Asserts a snapshot with the harness's filters (timestamps, UUIDs, durations, ports).
#[macro_export]
macro_rules! assert_stable_snapshot {
    ($name:expr, $value:expr) => {
        insta::with_settings!({ filters => $crate::support::filters() }, {
            insta::assert_snapshot!($name, $value);
        })
    };
}

pub fn filters() -> Vec<(&'static str, &'static str)> {
    snapshot_filters()
}

/// One pre-tenancy user with a Google Ads connection, as the old app wrote them.
pub fn insert_pre_tenancy_user(client: &mut Client, user_id: &str) {
    client
        .execute(
            r#"INSERT INTO "User" ("id", "email", "name") VALUES ($1, $1 || '@example.com', 'Test user')"#,
            &[&user_id],
        )
        .expect("insert user");
    client
        .execute(
            r#"INSERT INTO "Connection" ("id", "userId", "provider", "status") VALUES ('conn_' || $1, $1, 'google-ads', 'CONNECTED')"#,
            &[&user_id],
        )
        .expect("insert connection");
}

/// `(table, is_nullable)` of the four `workspaceId` columns.
pub fn workspace_columns(client: &mut Client) -> Vec<(String, String)> {
    client
        .query(
            r#"SELECT table_name::text, is_nullable::text FROM information_schema.columns
               WHERE table_schema = current_schema() AND column_name = 'workspaceId'
                 AND table_name IN ('Connection', 'MetricDaily', 'Insight', 'ChatMessage')
               ORDER BY table_name"#,
            &[],
        )
        .expect("query columns")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// One `_prisma_migrations` row, as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookRow {
    pub name: String,
    pub finished: bool,
    pub rolled_back: bool,
    pub steps: i32,
    pub logs: Option<String>,
}

pub fn bookkeeping(client: &mut Client) -> Vec<BookRow> {
    client
        .query(
            r#"SELECT migration_name, finished_at IS NOT NULL, rolled_back_at IS NOT NULL,
                      applied_steps_count, logs
               FROM "_prisma_migrations" ORDER BY started_at, migration_name"#,
            &[],
        )
        .expect("read _prisma_migrations")
        .iter()
        .map(|row| BookRow {
            name: row.get(0),
            finished: row.get(1),
            rolled_back: row.get(2),
            steps: row.get(3),
            logs: row.get(4),
        })
        .collect()
}

/// A digest of every column but `workspaceId` of the four Data Hub tables, plus the users,
/// workspaces and memberships that existed before (personal workspaces excluded).
pub fn data_digest(client: &mut Client) -> String {
    client
        .query_one(
            r#"SELECT md5(string_agg(d, '|' ORDER BY d)) FROM (
                 SELECT 'C' || (to_jsonb(t) - 'workspaceId')::text AS d FROM "Connection" t
                 UNION ALL SELECT 'M' || (to_jsonb(t) - 'workspaceId')::text FROM "MetricDaily" t
                 UNION ALL SELECT 'I' || (to_jsonb(t) - 'workspaceId')::text FROM "Insight" t
                 UNION ALL SELECT 'H' || (to_jsonb(t) - 'workspaceId')::text FROM "ChatMessage" t
                 UNION ALL SELECT 'U' || to_jsonb(t)::text FROM "User" t
                 UNION ALL SELECT 'W' || to_jsonb(t)::text FROM "Workspace" t WHERE t."id" NOT LIKE 'personal_%'
                 UNION ALL SELECT 'R' || to_jsonb(t)::text FROM "WorkspaceMember" t WHERE t."id" NOT LIKE 'personal_%'
               ) rows"#,
            &[],
        )
        .expect("digest")
        .get(0)
}

/// `(table, id, workspaceId)` of every Data Hub row, as one digest.
pub fn workspace_assignment(client: &mut Client) -> String {
    client
        .query_one(
            r#"SELECT md5(string_agg(d, '|' ORDER BY d)) FROM (
                 SELECT 'C' || "id" || '=' || coalesce("workspaceId", '-') AS d FROM "Connection"
                 UNION ALL SELECT 'M' || "id" || '=' || coalesce("workspaceId", '-') FROM "MetricDaily"
                 UNION ALL SELECT 'I' || "id" || '=' || coalesce("workspaceId", '-') FROM "Insight"
                 UNION ALL SELECT 'H' || "id" || '=' || coalesce("workspaceId", '-') FROM "ChatMessage"
               ) rows"#,
            &[],
        )
        .expect("assignment digest")
        .get(0)
}

/// Rows whose `workspaceId` is not their user's home workspace, the rule written out again
/// independently of the migration's view: OWNER first, then earliest, then smallest id.
pub fn rule_violations(client: &mut Client) -> i64 {
    let mut total = 0;
    for table in ["Connection", "MetricDaily", "Insight", "ChatMessage"] {
        let n: i64 = client
            .query_one(
                &format!(
                    r#"SELECT count(*) FROM {} t WHERE t."workspaceId" IS DISTINCT FROM (
                         SELECT m."workspaceId" FROM "WorkspaceMember" m WHERE m."userId" = t."userId"
                         ORDER BY CASE m."role" WHEN 'OWNER' THEN 0 ELSE 1 END, m."createdAt", m."id"
                         LIMIT 1)"#,
                    xtask::db::quote_ident(table)
                ),
                &[],
            )
            .expect("rule check")
            .get(0);
        total += n;
    }
    total
}

/// Pre-tenancy data from the product's own seed, small enough for a test.
pub fn seed_small(client: &mut Client) {
    xtask::seed::seed_pre_tenancy(
        client,
        xtask::seed::SeedSize {
            users: 40,
            days: 10,
            providers_per_user: 2,
        },
    )
    .expect("seed");
}

/// Every `_prisma_migrations` row, ids and timestamps included, as one digest.
pub fn bookkeeping_digest(client: &mut Client) -> String {
    client
        .query_one(
            r#"SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t."id")), '') FROM "_prisma_migrations" t"#,
            &[],
        )
        .expect("bookkeeping digest")
        .get(0)
}

/// NULL `workspaceId` values across the four tables (-1 before the columns exist).
pub fn null_count(client: &mut Client) -> i64 {
    if workspace_columns(client).len() < 4 {
        return -1;
    }
    client
        .query_one(
            r#"SELECT (SELECT count(*) FROM "Connection" WHERE "workspaceId" IS NULL)
                    + (SELECT count(*) FROM "MetricDaily" WHERE "workspaceId" IS NULL)
                    + (SELECT count(*) FROM "Insight" WHERE "workspaceId" IS NULL)
                    + (SELECT count(*) FROM "ChatMessage" WHERE "workspaceId" IS NULL)"#,
            &[],
        )
        .expect("null count")
        .get(0)
}

/// Whether the database is released: status up to date, check green, four NOT NULL columns.
pub fn assert_released(client: &mut Client) {
    let status =
        xtask::migrate::status(client, &datahub_tests::harness::repo_migrations()).unwrap();
    assert!(status.is_up_to_date(), "{}", status.render());
    assert!(xtask::check::check(client, &migrations())
        .unwrap()
        .is_backfilled());
    let columns = workspace_columns(client);
    assert_eq!(columns.len(), 4);
    assert!(columns.iter().all(|(_, n)| n == "NO"), "{columns:?}");
}

/// The repository's migrations folder, read.
pub fn migrations() -> Vec<xtask::migrations::Migration> {
    xtask::migrations::read_dir(&xtask::migrations::default_dir()).expect("read migrations")
}

/// The workspace tenancy release, as declared in the migrations folder.
pub fn tenancy() -> xtask::releases::Release {
    xtask::tenancy::release(&migrations()).expect("the tenancy release is declared")
}

/// `check`'s line for the tenancy release when nothing is left to fill.
pub const ALL_BACKFILLED: &str = "✅ All Data Hub workspaceId values are backfilled (no NULLs).";

/// Polls `condition` (a state PostgreSQL or the command shows) until it yields a value; panics
/// naming `what` after a minute.
pub fn until<T>(what: &str, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = condition() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`until`] for a condition that only holds or not.
pub fn until_holds(what: &str, mut condition: impl FnMut() -> bool) {
    until(what, || condition().then_some(()))
}

/// The pid of a `cargo xtask` backend waiting for a lock on `table` (seen in `pg_locks`; the
/// application name shows even where `track_activities` is off).
pub fn xtask_waiting_for_table(client: &mut Client, table: &str) -> Option<i32> {
    client
        .query_opt(
            "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
             WHERE a.datname = current_database() AND a.application_name = 'cargo-xtask'
               AND NOT l.granted AND l.relation = $1::text::regclass
             LIMIT 1",
            &[&xtask::db::quote_ident(table)],
        )
        .unwrap()
        .map(|row| row.get(0))
}

/// The pid of a `cargo xtask` backend waiting for a lock inside a statement containing `query`.
pub fn xtask_waiting_in(client: &mut Client, query: &str) -> Option<i32> {
    client
        .query_opt(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
               AND application_name = 'cargo-xtask' AND wait_event_type = 'Lock'
               AND query LIKE '%' || $1 || '%'
             LIMIT 1",
            &[&query],
        )
        .unwrap()
        .map(|row| row.get(0))
}

/// Ends `holder`'s transaction and asserts that the command it held up then answers exactly as
/// it did `unhindered`: the same exit code and output, and no word of a silent server.
pub fn answers_as_unhindered(
    running: datahub_tests::harness::Running,
    holder: &mut Client,
    unhindered: &std::process::Output,
) {
    holder.batch_execute("COMMIT").unwrap();
    let (code, stdout, stderr) = running.wait(Duration::from_secs(120));
    assert!(!stderr.contains("stopped answering"), "{stderr}");
    assert_eq!(code, unhindered.status.code(), "{stderr}");
    assert_eq!(
        stdout.trim_end(),
        datahub_tests::harness::text(&unhindered.stdout).trim_end()
    );
}

/// Waits until `running` has printed `count` stderr lines that `matches` accepts.
pub fn until_lines(
    running: &datahub_tests::harness::Running,
    what: &str,
    count: usize,
    matches: impl Fn(&str) -> bool,
) {
    until_holds(what, || {
        running.stderr().iter().filter(|l| matches(l)).count() >= count
    })
}

/// A seeded database at the expand migration on a primary with a standby that has replayed
/// everything so far and then stopped replaying.
pub fn paused_standby() -> (
    datahub_tests::harness::OwnCluster,
    datahub_tests::harness::TestDb,
    Client,
) {
    let cluster = datahub_tests::harness::OwnCluster::with_standby();
    let db = cluster.database(Some(xtask::tenancy::INIT));
    xtask::seed::seed_pre_tenancy(
        &mut db.client(),
        xtask::seed::SeedSize {
            users: 40,
            days: 10,
            providers_per_user: 2,
        },
    )
    .unwrap();
    db.deploy_to(xtask::tenancy::EXPAND);
    let mut primary = db.client();
    until_holds("the standby's catching up with the primary", || {
        primary
            .query_one(
                "SELECT coalesce(bool_and(replay_lsn = pg_current_wal_lsn()), false) FROM pg_stat_replication",
                &[],
            )
            .unwrap()
            .get(0)
    });
    let mut standby = cluster.standby(&db.name);
    standby
        .execute("SELECT pg_wal_replay_pause()", &[])
        .unwrap();
    until_holds("the pause of the standby's replay", || {
        standby
            .query_one("SELECT pg_get_wal_replay_pause_state() = 'paused'", &[])
            .unwrap()
            .get(0)
    });
    (cluster, db, standby)
}

/// The documented way out after a fault: `recover` exits 0, then `migrate status` says up to
/// date (exit 0).
pub fn recover_converges(url: &str) {
    use datahub_tests::harness::{run_xtask, text};
    let recover = run_xtask(&["recover"], Some(url));
    assert_eq!(
        recover.status.code(),
        Some(0),
        "{}{}",
        text(&recover.stdout),
        text(&recover.stderr)
    );
    let status = run_xtask(&["migrate", "status"], Some(url));
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stdout));
}
