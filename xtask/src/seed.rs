//! Pre-tenancy data as the old app wrote it: users, teams (workspaces with members), and per
//! user connections, daily metrics, insights and chat messages with a NULL-free `userId` and no
//! `workspaceId`. Deterministic (ids are hashes of counters, as random-looking as real ids), and
//! set-based so hundreds of thousands of rows take seconds. Assumes `init` is applied.

use anyhow::{Context, Result};
use postgres::Client;

/// The providers the app knows, by URL slug.
pub const PROVIDERS: [&str; 6] = [
    "google-ads",
    "meta-ads",
    "linkedin-ads",
    "tiktok-ads",
    "microsoft-ads",
    "google-analytics",
];

#[derive(Debug, Clone, Copy)]
pub struct SeedSize {
    pub users: i32,
    /// Days of metrics per user and provider.
    pub days: i32,
    /// Providers with metrics per user (1..=6).
    pub providers_per_user: i32,
}

impl SeedSize {
    pub fn metric_rows(&self) -> i64 {
        i64::from(self.users) * i64::from(self.days) * i64::from(self.providers_per_user)
    }
}

/// Every fourth user starts a team and owns it; the next three join it as ADMIN, MEMBER,
/// MEMBER; every tenth user has no membership at all (the backfill creates a personal
/// workspace); every 25th team owner also owns a second, later workspace.
const SEED_SQL: &str = r#"
INSERT INTO "User" ("id", "email", "name", "createdAt")
SELECT 'u' || substr(md5('user' || i), 1, 24), 'user' || i || '@example.com',
       CASE WHEN i % 7 = 0 THEN NULL ELSE 'User ' || i END,
       timestamp '2025-01-01' + i * interval '1 minute'
FROM generate_series(1, $1::int) i;

INSERT INTO "Workspace" ("id", "name", "slug", "createdAt")
SELECT 'w' || substr(md5('team' || g), 1, 24), 'Team ' || g, 'team-' || g,
       timestamp '2025-01-01' + g * interval '4 minutes'
FROM generate_series(1, ($1::int + 3) / 4) g;

INSERT INTO "Workspace" ("id", "name", "slug", "createdAt")
SELECT 'w' || substr(md5('side' || g), 1, 24), 'Side project ' || g, 'side-' || g,
       timestamp '2025-06-01' + g * interval '1 minute'
FROM generate_series(1, ($1::int + 3) / 4) g WHERE g % 25 = 0;

INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role", "createdAt")
SELECT 'm' || substr(md5('member' || i), 1, 24),
       'w' || substr(md5('team' || ((i - 1) / 4 + 1)), 1, 24),
       'u' || substr(md5('user' || i), 1, 24),
       (CASE (i - 1) % 4 WHEN 0 THEN 'OWNER' WHEN 1 THEN 'ADMIN' ELSE 'MEMBER' END)::"WorkspaceRole",
       timestamp '2025-01-01' + i * interval '1 minute'
FROM generate_series(1, $1::int) i
WHERE i % 10 <> 0;

INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role", "createdAt")
SELECT 'm' || substr(md5('sideowner' || g), 1, 24),
       'w' || substr(md5('side' || g), 1, 24),
       'u' || substr(md5('user' || ((g - 1) * 4 + 1)), 1, 24),
       'OWNER', timestamp '2025-06-01' + g * interval '1 minute'
FROM generate_series(1, ($1::int + 3) / 4) g
WHERE g % 25 = 0 AND ((g - 1) * 4 + 1) % 10 <> 0;
"#;

const DATA_SQL: &str = r#"
INSERT INTO "Connection" ("id", "userId", "provider", "status", "accountName", "connectedAt", "updatedAt")
SELECT 'c' || substr(md5('conn' || i || '-' || p), 1, 24), 'u' || substr(md5('user' || i), 1, 24),
       (ARRAY['google-ads','meta-ads','linkedin-ads','tiktok-ads','microsoft-ads','google-analytics'])[p],
       (CASE WHEN (i + p) % 3 = 0 THEN 'DISCONNECTED' ELSE 'CONNECTED' END)::"ConnectionStatus",
       'Account ' || i || '-' || p, timestamp '2025-02-01', timestamp '2025-02-01'
FROM generate_series(1, $1::int) i, generate_series(1, $3::int) p;

INSERT INTO "MetricDaily" ("id", "userId", "provider", "date", "impressions", "clicks", "spend", "conversions")
SELECT 'd' || substr(md5('metric' || i || '-' || p || '-' || d), 1, 24),
       'u' || substr(md5('user' || i), 1, 24),
       (ARRAY['google-ads','meta-ads','linkedin-ads','tiktok-ads','microsoft-ads','google-analytics'])[p],
       date '2025-12-18' - d,
       (4000 + 2500 * sin(d / 3.0 + i) + 800 * sin(d * 0.9 + p) + (i * 37 + p * 101) % 1500)::int,
       (120 + 70 * sin(d / 4.0 + p) + 25 * cos(d * 1.3 + i) + (i * 7 + p * 11) % 60)::int,
       round((60 + 35 * sin(d / 5.0 + i + p) + 12 * cos(d * 0.7) + (i * 13 + p * 17) % 40)::numeric, 2),
       (6 + 5 * sin(d / 3.5 + p) + (i + p + d) % 4)::int
FROM generate_series(1, $1::int) i, generate_series(1, $3::int) p, generate_series(0, $2::int - 1) d;

INSERT INTO "Insight" ("id", "userId", "provider", "title", "body", "severity", "createdAt")
SELECT 'i' || substr(md5('insight' || i || '-' || p), 1, 24), 'u' || substr(md5('user' || i), 1, 24),
       (ARRAY['google-ads','meta-ads','linkedin-ads','tiktok-ads','microsoft-ads','google-analytics'])[p],
       (ARRAY['Spend is up week over week','Click-through rate dropped','Conversions at a 30-day high'])[1 + (i + p) % 3],
       'Compared with the previous 7 days.',
       (ARRAY['info','warning','critical'])[1 + (i * p) % 3],
       timestamp '2025-12-01' + (i % 17) * interval '1 day'
FROM generate_series(1, $1::int) i, generate_series(1, $3::int) p;

INSERT INTO "ChatMessage" ("id", "userId", "role", "content", "provider", "createdAt")
SELECT 'h' || substr(md5('chat' || i || '-' || r), 1, 24), 'u' || substr(md5('user' || i), 1, 24),
       (CASE r WHEN 1 THEN 'user' ELSE 'assistant' END)::"ChatRole",
       CASE r WHEN 1 THEN 'How did my campaigns do last week?' ELSE 'Spend rose 4% while conversions held steady.' END,
       NULL, timestamp '2025-12-10' + i * interval '1 second' + r * interval '1 millisecond'
FROM generate_series(1, $1::int) i, generate_series(1, 2) r;
"#;

/// Seeds users, workspaces and memberships, then the four Data Hub tables, in one transaction.
pub fn seed_pre_tenancy(client: &mut Client, size: SeedSize) -> Result<()> {
    let providers = size.providers_per_user.clamp(1, PROVIDERS.len() as i32);
    // The sizes are integers, spliced as literals: the statements run as one script.
    let fill = |sql: &str| {
        sql.replace("$1::int", &size.users.max(0).to_string())
            .replace("$2::int", &size.days.max(0).to_string())
            .replace("$3::int", &providers.to_string())
    };
    let script = format!("BEGIN;\n{}\n{}\nCOMMIT;", fill(SEED_SQL), fill(DATA_SQL));
    client
        .batch_execute(&script)
        .context("cannot seed the pre-tenancy data")?;
    Ok(())
}

/// The login a person uses to look around a seeded database.
pub const DEMO_EMAIL: &str = "demo@datahub.test";
pub const DEMO_PASSWORD: &str = "datahub-demo";

/// Gives the first seeded user (owner of `Team 1`) the demo login.
pub fn seed_demo_login(client: &mut Client) -> Result<()> {
    let hash = crate::password::hash(DEMO_PASSWORD)?;
    client
        .execute(
            r#"UPDATE "User" SET "email" = $1, "name" = 'Demo user', "passwordHash" = $2
               WHERE "id" = 'u' || substr(md5('user1'), 1, 24)"#,
            &[&DEMO_EMAIL, &hash],
        )
        .context("cannot set the demo login")?;
    Ok(())
}
