//! Behind a real PgBouncer in transaction mode (how managed poolers run): a pooled URL is
//! refused by every command with the advice to set `DIRECT_URL` (Prisma's `pgbouncer=true`
//! before connecting; without it, by the server session being older than the connection);
//! with `DIRECT_URL` given, deploy and backfill work and write into the URL's schema only;
//! the migration lock held by an idle session is named with the remedy that frees it.

use std::process::{Command, Output};
use std::time::Duration;

use datahub_tests::harness::{app_bin, text, xtask_bin, TestDb};
use datahub_tests::pgbouncer::PgBouncer;
use postgres::NoTls;
use xtask::db::Client;
use xtask::tenancy::{EXPAND, INIT};

use crate::support::{rule_violations, seed_small};

/// Runs xtask with exactly these database variables (no `--database-url`).
fn run_with(args: &[&str], database_url: &str, direct_url: Option<&str>) -> Output {
    let mut command = Command::new(xtask_bin());
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DIRECT_URL")
        .env("DATABASE_URL", database_url)
        .env(xtask::APP_BIN_ENV, app_bin());
    if let Some(direct) = direct_url {
        command.env("DIRECT_URL", direct);
    }
    command.output().expect("run the xtask binary")
}

fn null_workspace_rows(client: &mut Client, schema: &str) -> i64 {
    client
        .query_one(
            &format!(
                r#"SELECT (SELECT count(*) FROM {s}."Connection" WHERE "workspaceId" IS NULL)
                        + (SELECT count(*) FROM {s}."MetricDaily" WHERE "workspaceId" IS NULL)"#,
                s = xtask::db::quote_ident(schema)
            ),
            &[],
        )
        .unwrap()
        .get(0)
}

fn client_in_schema(db: &TestDb, schema: &str) -> Client {
    let mut client = db.client();
    client
        .execute(
            "SELECT set_config('search_path', $1, false)",
            &[&xtask::db::quote_ident(schema)],
        )
        .unwrap();
    client
}

#[test]
fn a_pgbouncer_url_is_refused_by_every_command_with_the_direct_url_advice() {
    let bouncer = PgBouncer::transaction_mode(&datahub_tests::harness::server_url());
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    let pooled = format!("{}?schema=public&pgbouncer=true", bouncer.url_for(db.url()));
    let before = null_workspace_rows(&mut db.client(), "public");
    assert!(before > 0);
    for args in [
        &["migrate", "deploy"][..],
        &["backfill"],
        &["release"],
        &["recover"],
        &["migrate", "status"],
    ] {
        let out = run_with(args, &pooled, None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("`DATABASE_URL` goes through a connection pooler (`pgbouncer=true`)")
                && stderr.contains("set `DIRECT_URL` to the PostgreSQL server's own address"),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
    // A DIRECT_URL that is pooled too is refused with its own advice.
    let out = run_with(&["backfill"], &pooled, Some(&pooled));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("point `DIRECT_URL` at the PostgreSQL server itself"),
        "{stderr}"
    );
    assert_eq!(null_workspace_rows(&mut db.client(), "public"), before);
}

#[test]
fn with_direct_url_deploy_and_backfill_write_into_the_urls_schema_only() {
    let bouncer = PgBouncer::transaction_mode(&datahub_tests::harness::server_url());
    let db = TestDb::new();
    // The same tables in `public`, with rows a pooled session's search_path would reach.
    let public = run_with(&["migrate", "deploy", "--to", INIT], db.url(), None);
    assert_eq!(public.status.code(), Some(0), "{}", text(&public.stderr));
    let pooled = format!("{}?schema=tenant&pgbouncer=true", bouncer.url_for(db.url()));
    let direct = format!("{}?schema=tenant", db.url());
    let init = run_with(&["migrate", "deploy", "--to", INIT], &pooled, Some(&direct));
    assert_eq!(init.status.code(), Some(0), "{}", text(&init.stderr));
    seed_small(&mut client_in_schema(&db, "tenant"));
    seed_small(&mut client_in_schema(&db, "public"));
    let public = run_with(&["migrate", "deploy", "--to", EXPAND], db.url(), None);
    assert_eq!(public.status.code(), Some(0), "{}", text(&public.stderr));
    let expand = run_with(
        &["migrate", "deploy", "--to", EXPAND],
        &pooled,
        Some(&direct),
    );
    assert_eq!(expand.status.code(), Some(0), "{}", text(&expand.stderr));
    let public_nulls = null_workspace_rows(&mut db.client(), "public");
    assert!(public_nulls > 0);
    let public_workspaces = || -> i64 {
        db.client()
            .query_one(r#"SELECT count(*) FROM public."Workspace""#, &[])
            .unwrap()
            .get(0)
    };
    let workspaces_before = public_workspaces();

    let backfill = run_with(&["backfill", "--workers", "2"], &pooled, Some(&direct));
    assert_eq!(
        backfill.status.code(),
        Some(0),
        "{}",
        text(&backfill.stderr)
    );
    assert_eq!(null_workspace_rows(&mut db.client(), "tenant"), 0);
    assert_eq!(rule_violations(&mut client_in_schema(&db, "tenant")), 0);
    assert_eq!(
        null_workspace_rows(&mut db.client(), "public"),
        public_nulls,
        "the backfill wrote into another schema"
    );
    assert_eq!(public_workspaces(), workspaces_before);

    // The schemas of the two variables must agree.
    let other = format!("{}?schema=other", db.url());
    let out = run_with(&["backfill"], &pooled, Some(&other));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "`DIRECT_URL` names the schema `other` and `DATABASE_URL` the schema `tenant`"
        ),
        "{stderr}"
    );
}

#[test]
fn a_pooled_url_without_the_flag_is_detected_by_its_older_server_session() {
    let bouncer = PgBouncer::transaction_mode(&datahub_tests::harness::server_url());
    let db = TestDb::migrated_to(INIT);
    db.deploy_to(EXPAND);
    let pooled = bouncer.url_for(db.url());
    // A client of the pool makes it open a server session, which then waits in the pool.
    let mut other_client = postgres::Client::connect(&pooled, NoTls)
        .map(Client::from)
        .expect("connect through PgBouncer");
    other_client.simple_query("SELECT 1").unwrap();
    drop(other_client);
    // Seen on the server: that session is older than the margin (and any start-up) by far.
    let mut direct = db.client();
    loop {
        let old: bool = direct
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database()
                   AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                   AND now() - backend_start > interval '3 s')",
                &[],
            )
            .unwrap()
            .get(0);
        if old {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for args in [&["backfill"][..], &["migrate", "status"]] {
        let out = run_with(args, &pooled, None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("`DATABASE_URL` reaches PostgreSQL at `127.0.0.1:")
                && stderr.contains("through a connection pooler")
                && stderr.contains("set `DIRECT_URL`"),
            "{args:?}: {stderr}"
        );
    }
    // The same database, directly: no pooler, no refusal.
    let out = run_with(&["migrate", "status"], db.url(), None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn an_idle_lock_holder_is_named_with_pg_terminate_backend() {
    let db = TestDb::migrated_to(INIT);
    let mut holder = db.client();
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&xtask::db::MIGRATION_LOCK_KEY],
        )
        .unwrap();
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let out = run_with(&["migrate", "deploy", "--lock-wait", "1"], db.url(), None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("backend pid {pid} ("))
            && stderr.contains(&format!("`SELECT pg_terminate_backend({pid})`"))
            && stderr.contains("that session is idle"),
        "{stderr}"
    );
    // The remedy works: the lock goes with the session, and the deploy then runs.
    db.client()
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let out = run_with(&["migrate", "deploy", "--lock-wait", "5"], db.url(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
