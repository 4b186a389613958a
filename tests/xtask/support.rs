//! Helpers shared by the command tests.

use datahub_tests::harness::snapshot_filters;
use postgres::Client;

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

/// `(migration_name, finished?, rolled_back?, steps, logs)` of every `_prisma_migrations` row.
pub type BookRow = (String, bool, bool, i32, Option<String>);

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
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)))
        .collect()
}
