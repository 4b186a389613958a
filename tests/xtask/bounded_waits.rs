//! Every wait is bounded and says what it waits for: a server that accepts connections and
//! never answers, an index build behind an open app transaction, a migration that cannot get
//! its table locks within the lock budget, and a `statement_timeout` set on the database for
//! the app, which must not cut the tool's own statements short.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use datahub_tests::harness::{repo_migrations, run_xtask, text, OwnCluster, Running, TestDb};
use xtask::backfill::{backfill, BackfillOptions};
use xtask::migrate::{self, state::State};
use xtask::seed::{seed_pre_tenancy, SeedSize};
use xtask::tenancy::{before_contract, EXPAND, INIT};

use crate::support::{assert_released, bookkeeping, seed_small};

/// A server that accepts TCP connections and never says a word: a hung server, a stuck pooler,
/// a half-open tunnel. Every command gives up within `connect_timeout` with a clear message and
/// exit 2, in plain TCP and when it first asks for TLS.
#[test]
fn a_server_that_accepts_but_never_answers_is_an_error_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            // Read what the client sends (startup packet, SSLRequest), answer nothing.
            let mut reader = stream.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1024];
                while matches!(reader.read(&mut buffer), Ok(n) if n > 0) {}
            });
            held.push(stream);
        }
    });
    for sslmode in ["disable", "prefer"] {
        let url = format!(
            "postgresql://app:Pa55word@127.0.0.1:{port}/datahub?connect_timeout=1&sslmode={sslmode}"
        );
        for args in [
            &["migrate", "status"][..],
            &["migrate", "deploy"][..],
            &["check"][..],
            &["backfill"][..],
            &["release"][..],
            &["recover"][..],
            &["rollback", "--yes"][..],
        ] {
            let running = Running::start(args, &url);
            let (code, stdout, stderr) = running.wait(Duration::from_secs(60));
            assert_eq!(code, Some(2), "{args:?} {sslmode}: {stdout}{stderr}");
            assert!(
                stderr.contains(&format!("PostgreSQL at `127.0.0.1:{port}/datahub as app` did not complete the connection start-up within 1 s")),
                "{args:?} {sslmode}: {stderr}"
            );
            assert!(!stderr.contains("Pa55"), "{stderr}");
        }
    }
}

/// `CREATE INDEX CONCURRENTLY` behind an open app transaction: it shows its phase, names the
/// backend it waits for, and gives up when its waits exceed `--lock-timeout`; the attempt's
/// row is taken out (nothing to resolve, pending for Prisma too) and the next deploy builds
/// the index.
#[test]
fn an_index_build_shows_what_it_waits_for_and_gives_up_within_the_budget() {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    db.deploy_to(EXPAND);
    xtask::backfill::backfill(
        &mut db.client(),
        &db.database_url(),
        &crate::support::tenancy(),
        &xtask::backfill::BackfillOptions {
            progress: false,
            ..Default::default()
        },
    )
    .unwrap();
    let mut app = db.client();
    let app_pid: i32 = app
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    app.batch_execute(
        r#"BEGIN; UPDATE "Connection" SET "status" = "status" WHERE "id" = (SELECT min("id") FROM "Connection")"#,
    )
    .unwrap();

    let deploy = run_xtask(
        &["migrate", "deploy", "--lock-timeout", "2"],
        Some(db.url()),
    );
    let stderr = text(&deploy.stderr);
    assert_eq!(deploy.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "`Connection_workspaceId_idx`: waiting for writers before build for backend pid {app_pid} (`datahub-tests`, idle in transaction"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("gave up: the build waited"), "{stderr}");
    assert!(
        stderr.contains("more than the 2 s lock budget (`--lock-timeout`)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("its attempt is taken out of `_prisma_migrations`, so it is pending again for this tool and for Prisma alike"),
        "{stderr}"
    );
    assert!(
        stderr.contains("INVALID index `Connection_workspaceId_idx`"),
        "{stderr}"
    );
    let index_migration = &repo_migrations()[2].name;
    assert!(
        bookkeeping(&mut db.client())
            .iter()
            .all(|r| &r.name != index_migration),
        "no row of the attempt is left"
    );

    app.batch_execute("COMMIT").unwrap();
    let again = run_xtask(&["migrate", "deploy"], Some(db.url()));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert_released(&mut db.client());
    let invalid: i64 = db
        .client()
        .query_one("SELECT count(*) FROM pg_index WHERE NOT indisvalid", &[])
        .unwrap()
        .get(0);
    assert_eq!(invalid, 0);
}

/// Giving up on table locks leaves nothing that blocks Prisma: `migrate deploy` exits 1, says
/// the migration was rolled back and why, takes its attempt's row out, and `migrate status`
/// calls it pending, not failed.
#[test]
fn deploy_gives_up_after_its_lock_budget_and_leaves_the_migration_pending() {
    let db = TestDb::migrated_to(INIT);
    seed_small(&mut db.client());
    let mut app = db.client();
    app.batch_execute(r#"BEGIN; SELECT count(*) FROM "MetricDaily""#)
        .unwrap();
    let deploy = run_xtask(
        &["migrate", "deploy", "--lock-timeout", "1"],
        Some(db.url()),
    );
    let stderr = text(&deploy.stderr);
    assert_eq!(deploy.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "migration `{EXPAND}` was not applied: it could not get its locks"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("tries of 500 ms within the 1 s lock budget"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing to resolve"), "{stderr}");
    assert!(!stderr.contains("cargo xtask recover"), "{stderr}");
    let mut client = db.client();
    let status = migrate::status(&mut client, &repo_migrations()).unwrap();
    assert_eq!(status.state_of(EXPAND), Some(&State::Pending));
    let rows = bookkeeping(&mut client);
    assert!(rows.iter().all(|r| r.finished), "{rows:?}");
    assert!(rows.iter().all(|r| r.name != EXPAND), "{rows:?}");
    assert!(
        stderr.contains("55P03") && stderr.contains("lock budget"),
        "{stderr}"
    );

    app.batch_execute("COMMIT").unwrap();
    let again = run_xtask(&["migrate", "deploy", "--to", EXPAND], Some(db.url()));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
}

/// A `statement_timeout` the database sets for the app (20 ms here, shorter than a backfill
/// batch or an index build) does not reach the tool: each session sets its own timeouts, so
/// release and recover run to the end and `_prisma_migrations` gets one row per migration.
#[test]
fn a_statement_timeout_on_the_database_does_not_cut_the_tools_statements() {
    let db = TestDb::migrated_to(INIT);
    xtask::seed::seed_pre_tenancy(
        &mut db.client(),
        xtask::seed::SeedSize {
            users: 200,
            days: 30,
            providers_per_user: 3,
        },
    )
    .unwrap();
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE {} SET statement_timeout = '20ms'",
            xtask::db::quote_ident(&db.name)
        ))
        .unwrap();
    // A session that does not set its own sees the database's setting.
    let url = db.database_url();
    let mut plain = postgres::Config::from(url.config().clone())
        .connect(postgres::NoTls)
        .unwrap();
    let seen: String = plain
        .query_one("SHOW statement_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, "20ms");
    let cut = plain.batch_execute("SELECT pg_sleep(0.1)").unwrap_err();
    assert_eq!(cut.code().map(|c| c.code()), Some("57014"), "{cut}");

    let release = run_xtask(&["release"], Some(db.url()));
    assert_eq!(
        release.status.code(),
        Some(0),
        "{}{}",
        text(&release.stdout),
        text(&release.stderr)
    );
    let recover = run_xtask(&["recover"], Some(db.url()));
    assert_eq!(recover.status.code(), Some(0), "{}", text(&recover.stderr));
    assert!(text(&recover.stdout).contains("Nothing to recover"));
    let mut client = db.client();
    assert_released(&mut client);
    let rows = bookkeeping(&mut client);
    assert_eq!(rows.len(), repo_migrations().len(), "{rows:?}");
}

/// After a backfill has updated every row, autovacuum holds SHARE UPDATE EXCLUSIVE on the
/// table, for minutes on a large one. PostgreSQL cancels an autovacuum that blocks a lock
/// request only once the request has waited `deadlock_timeout` (1 s): a 500 ms try never
/// does, so every try of the contract failed until the lock budget was spent. The contract's
/// VALIDATE statements, whose lock no app query conflicts with, wait longer; here an
/// autovacuum slowed to last far beyond the budget holds `MetricDaily` (seen in
/// `pg_stat_activity`), and the deploy still applies the contract within a 5 s budget.
#[test]
fn the_contract_outwaits_deadlock_timeout_so_a_blocking_autovacuum_is_cancelled() {
    let cluster = OwnCluster::with_settings(&[("autovacuum_naptime", "1")]);
    let db = cluster.database(Some(INIT));
    let mut client = db.client();
    seed_pre_tenancy(
        &mut client,
        SeedSize {
            users: 300,
            days: 20,
            providers_per_user: 2,
        },
    )
    .unwrap();
    db.deploy_to(EXPAND);
    let url = db.database_url();
    backfill(
        &mut client,
        &url,
        &crate::support::tenancy(),
        &BackfillOptions {
            progress: false,
            ..BackfillOptions::default()
        },
    )
    .unwrap();
    let migrations = repo_migrations();
    db.deploy_to(before_contract(&migrations).unwrap());

    // An autovacuum of MetricDaily that sleeps 100 ms after every page: half a minute or more.
    client
        .batch_execute(
            r#"ALTER TABLE "MetricDaily" SET (autovacuum_vacuum_threshold = 0,
                 autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_cost_delay = 100,
                 autovacuum_vacuum_cost_limit = 1);
               UPDATE "MetricDaily" SET "clicks" = "clicks""#,
        )
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let vacuuming: bool = client
            .query_one(
                r#"SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                   WHERE backend_type = 'autovacuum worker' AND query LIKE '%VACUUM%MetricDaily%')"#,
                &[],
            )
            .unwrap()
            .get(0);
        if vacuuming {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no autovacuum of MetricDaily started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = run_xtask(
        &["migrate", "deploy", "--lock-timeout", "5"],
        Some(db.url()),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_released(&mut client);
}
