//! Pre-tenancy data as the old app wrote it: users, teams (workspaces with members), and per
//! user connections, daily metrics, insights and chat messages with a NULL-free `userId` and no
//! `workspaceId`. Deterministic (ids are hashes of counters, as random-looking as real ids), and
//! set-based so hundreds of thousands of rows take seconds. Assumes `init` is applied.

use crate::db::Client;
use anyhow::{bail, Context, Result};
use pico_args::Arguments;

use crate::cli::{self, Globals};
use crate::db::Connect;
use crate::error::Outcome;
use crate::report::thousands;
use crate::tenancy::INIT;

pub(crate) const SUMMARY: &str = "pre-tenancy demo data and the demo login";

pub(crate) const HELP: &str = "\
cargo xtask seed [--users N] [--days N]
Fills an empty database (at least the init migration applied) with users, teams, connections,
daily metrics, insights and chat messages as the old app wrote them (default 200 users, 60
days), and the demo login `demo@datahub.test` / `datahub-demo`.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let users = cli::number(&mut args, "--users", 1..=10_000_000)?.unwrap_or(200);
    let days = cli::number(&mut args, "--days", 1..=3_650)?.unwrap_or(60);
    cli::finish(args, "seed")?;
    let mut client = globals.url()?.connect()?;
    let size = SeedSize {
        users: users as i32,
        days: days as i32,
        providers_per_user: 3,
    };
    seed_pre_tenancy(&mut client, size)?;
    seed_demo_login(&mut client)?;
    println!(
        "Seeded {} users and {} daily metric rows. Demo login: {DEMO_EMAIL} / {DEMO_PASSWORD}",
        thousands(size.users.into()),
        thousands(size.metric_rows()),
    );
    Ok(Outcome::Ready)
}

#[derive(Debug, Clone, Copy)]
pub struct SeedSize {
    pub users: i32,
    /// Days of metrics per user and provider.
    pub days: i32,
    /// Providers with metrics per user (1..=6).
    pub providers_per_user: i32,
}

impl SeedSize {
    pub(crate) fn metric_rows(&self) -> i64 {
        i64::from(self.users) * i64::from(self.days) * i64::from(self.providers_per_user)
    }
}

/// Every fourth user starts a team and owns it; the next three join it as ADMIN, MEMBER,
/// MEMBER; every tenth user has no membership at all (the backfill creates a personal
/// workspace); every 25th team owner also owns a second, later workspace.
const SEED_SQL: &[&str] = &[
    r#"
INSERT INTO "User" ("id", "email", "name", "createdAt")
SELECT 'u' || substr(md5('user' || i), 1, 24), 'user' || i || '@example.com',
       CASE WHEN i % 7 = 0 THEN NULL ELSE 'User ' || i END,
       timestamp '2025-01-01' + i * interval '1 minute'
FROM generate_series(1, $1::int) i"#,
    r#"
INSERT INTO "Workspace" ("id", "name", "slug", "createdAt")
SELECT 'w' || substr(md5('team' || g), 1, 24), 'Team ' || g, 'team-' || g,
       timestamp '2025-01-01' + g * interval '4 minutes'
FROM generate_series(1, ($1::int + 3) / 4) g"#,
    r#"
INSERT INTO "Workspace" ("id", "name", "slug", "createdAt")
SELECT 'w' || substr(md5('side' || g), 1, 24), 'Side project ' || g, 'side-' || g,
       timestamp '2025-06-01' + g * interval '1 minute'
FROM generate_series(1, ($1::int + 3) / 4) g WHERE g % 25 = 0"#,
    r#"
INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role", "createdAt")
SELECT 'm' || substr(md5('member' || i), 1, 24),
       'w' || substr(md5('team' || ((i - 1) / 4 + 1)), 1, 24),
       'u' || substr(md5('user' || i), 1, 24),
       (CASE (i - 1) % 4 WHEN 0 THEN 'OWNER' WHEN 1 THEN 'ADMIN' ELSE 'MEMBER' END)::"WorkspaceRole",
       timestamp '2025-01-01' + i * interval '1 minute'
FROM generate_series(1, $1::int) i
WHERE i % 10 <> 0"#,
    r#"
INSERT INTO "WorkspaceMember" ("id", "workspaceId", "userId", "role", "createdAt")
SELECT 'm' || substr(md5('sideowner' || g), 1, 24),
       'w' || substr(md5('side' || g), 1, 24),
       'u' || substr(md5('user' || ((g - 1) * 4 + 1)), 1, 24),
       'OWNER', timestamp '2025-06-01' + g * interval '1 minute'
FROM generate_series(1, ($1::int + 3) / 4) g
WHERE g % 25 = 0 AND ((g - 1) * 4 + 1) % 10 <> 0"#,
];

/// Each statement takes the same four parameters: users, days, providers per user, slugs.
const DATA_SQL: &[&str] = &[
    r#"
WITH size AS (SELECT $1::int AS users, $2::int AS days, $3::int AS providers, $4::text[] AS slugs)
INSERT INTO "Connection" ("id", "userId", "provider", "status", "accountName", "connectedAt", "updatedAt")
SELECT 'c' || substr(md5('conn' || i || '-' || p), 1, 24), 'u' || substr(md5('user' || i), 1, 24),
       size.slugs[p],
       (CASE WHEN (i + p) % 3 = 0 THEN 'DISCONNECTED' ELSE 'CONNECTED' END)::"ConnectionStatus",
       'Account ' || i || '-' || p, timestamp '2025-02-01', timestamp '2025-02-01'
FROM size, generate_series(1, size.users) i, generate_series(1, size.providers) p"#,
    r#"
WITH size AS (SELECT $1::int AS users, $2::int AS days, $3::int AS providers, $4::text[] AS slugs)
INSERT INTO "MetricDaily" ("id", "userId", "provider", "date", "impressions", "clicks", "spend", "conversions")
SELECT 'd' || substr(md5('metric' || i || '-' || p || '-' || d), 1, 24),
       'u' || substr(md5('user' || i), 1, 24),
       size.slugs[p],
       date '2025-12-18' - d,
       (4000 + 2500 * sin(d / 3.0 + i) + 800 * sin(d * 0.9 + p) + (i * 37 + p * 101) % 1500)::int,
       (120 + 70 * sin(d / 4.0 + p) + 25 * cos(d * 1.3 + i) + (i * 7 + p * 11) % 60)::int,
       round((60 + 35 * sin(d / 5.0 + i + p) + 12 * cos(d * 0.7) + (i * 13 + p * 17) % 40)::numeric, 2),
       (6 + 5 * sin(d / 3.5 + p) + (i + p + d) % 4)::int
FROM size, generate_series(1, size.users) i, generate_series(1, size.providers) p, generate_series(0, size.days - 1) d"#,
    r#"
WITH size AS (SELECT $1::int AS users, $2::int AS days, $3::int AS providers, $4::text[] AS slugs)
INSERT INTO "Insight" ("id", "userId", "provider", "title", "body", "severity", "createdAt")
SELECT 'i' || substr(md5('insight' || i || '-' || p), 1, 24), 'u' || substr(md5('user' || i), 1, 24),
       size.slugs[p],
       (ARRAY['Spend is up week over week','Click-through rate dropped','Conversions at a 30-day high'])[1 + (i + p) % 3],
       'Compared with the previous 7 days.',
       -- The severity follows the title: a rise in spend and a drop in click-through are worth a
       -- look, a conversions high is good news.
       (ARRAY['warning','warning','info'])[1 + (i + p) % 3],
       timestamp '2025-12-01' + (i % 17) * interval '1 day'
FROM size, generate_series(1, size.users) i, generate_series(1, size.providers) p"#,
    r#"
WITH size AS (SELECT $1::int AS users, $2::int AS days, $3::int AS providers, $4::text[] AS slugs)
INSERT INTO "ChatMessage" ("id", "userId", "role", "content", "provider", "createdAt")
SELECT 'h' || substr(md5('chat' || i || '-' || r), 1, 24), 'u' || substr(md5('user' || i), 1, 24),
       (CASE r WHEN 1 THEN 'user' ELSE 'assistant' END)::"ChatRole",
       CASE r WHEN 1 THEN 'How did my campaigns do last week?' ELSE 'Spend rose 4% while conversions held steady.' END,
       NULL, timestamp '2025-12-10' + i * interval '1 second' + r * interval '1 millisecond'
FROM size, generate_series(1, size.users) i, generate_series(1, 2) r"#,
];

/// Seeds users, workspaces and memberships, then the four Data Hub tables, in one transaction.
/// Refuses, changing nothing, before the init migration or on a database already seeded.
pub fn seed_pre_tenancy(client: &mut Client, size: SeedSize) -> Result<()> {
    let initialised: bool = client
        .query_one(r#"SELECT to_regclass('"User"') IS NOT NULL"#, &[])
        .context("cannot look up the `User` table")?
        .get(0);
    if !initialised {
        bail!(
            "the `User` table does not exist, so there is nothing to seed into: run `cargo xtask migrate deploy --to {INIT}` first"
        );
    }
    let seeded: bool = client
        .query_one(
            r#"SELECT EXISTS (SELECT 1 FROM "User" WHERE "id" = 'u' || substr(md5('user1'), 1, 24))"#,
            &[],
        )
        .context("cannot look for earlier seed data")?
        .get(0);
    if seeded {
        bail!(
            "this database is already seeded (its first seed user exists), so nothing was added: seed an empty database, e.g. with `cargo xtask demo --keep`"
        );
    }
    let providers = size
        .providers_per_user
        .clamp(1, datahub_core::providers::PROVIDERS.len() as i32);
    let slugs = datahub_core::providers::slugs();
    // One transaction, which a signal cancels on the server: a stopped seed leaves nothing.
    let _cancellable = crate::interrupt::register(client.cancel_token());
    client.long("the seed", |client| {
        let mut transaction = client
            .transaction()
            .context("cannot start the seed's transaction")?;
        for sql in SEED_SQL {
            transaction
                .execute(*sql, &[&size.users.max(0)])
                .context("cannot seed users, workspaces and memberships")?;
        }
        for sql in DATA_SQL {
            transaction
                .execute(
                    *sql,
                    &[&size.users.max(0), &size.days.max(0), &providers, &slugs],
                )
                .context("cannot seed the Data Hub tables")?;
        }
        transaction
            .commit()
            .context("cannot commit the seed's transaction")
    })
}

/// The login a person uses to look around a seeded database.
pub(crate) const DEMO_EMAIL: &str = "demo@datahub.test";
pub(crate) const DEMO_PASSWORD: &str = "datahub-demo";

/// Gives the first seeded user (owner of `Team 1`) the demo login.
pub(crate) fn seed_demo_login(client: &mut Client) -> Result<()> {
    let hash = datahub_core::password::hash(DEMO_PASSWORD)
        .map_err(|e| anyhow::anyhow!("cannot hash the demo password: {e}"))?;
    client
        .execute(
            r#"UPDATE "User" SET "email" = $1, "name" = 'Demo user', "passwordHash" = $2
               WHERE "id" = 'u' || substr(md5('user1'), 1, 24)"#,
            &[&DEMO_EMAIL, &hash],
        )
        .context("cannot set the demo login")?;
    Ok(())
}
