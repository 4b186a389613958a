//! Prisma-style database URLs: `?schema=`, `sslmode`, and Prisma-only parameters.

use datahub_tests::harness::{run_xtask, server_certificate, text, TestDb};
use xtask::db::Connect;
use xtask::tenancy::INIT;

fn with_params(db: &TestDb, params: &str) -> String {
    format!("{}?{params}", db.url())
}

#[test]
fn schema_parameter_keeps_everything_in_that_schema() {
    let db = TestDb::new();
    let url = with_params(&db, "schema=other&connection_limit=5&pool_timeout=10");
    let deploy = run_xtask(&["migrate", "deploy"], Some(&url));
    assert_eq!(deploy.status.code(), Some(0), "{}", text(&deploy.stderr));
    assert_eq!(
        run_xtask(&["migrate", "status"], Some(&url)).status.code(),
        Some(0)
    );
    assert_eq!(run_xtask(&["check"], Some(&url)).status.code(), Some(0));
    assert_eq!(run_xtask(&["verify"], Some(&url)).status.code(), Some(0));

    let mut client = db.client();
    let located: Vec<(String, bool)> = client
        .query(
            "SELECT name, to_regclass(name) IS NOT NULL FROM unnest(ARRAY[
                'other._prisma_migrations', 'other.\"MetricDaily\"', 'other.\"User\"',
                'public._prisma_migrations', 'public.\"MetricDaily\"', 'public.\"User\"']) AS name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (name, exists) in located {
        assert_eq!(exists, name.starts_with("other."), "{name}");
    }
    // The public schema's view of the same database: nothing deployed there.
    assert_eq!(
        run_xtask(&["migrate", "status"], Some(db.url()))
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn sslmode_require_connects_over_tls() {
    let db = TestDb::new();
    let url =
        xtask::db::parse_url(&with_params(&db, "sslmode=require&connection_limit=1")).unwrap();
    let mut client = url.connect().unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(ssl, "sslmode=require must encrypt the connection");

    let plain = xtask::db::parse_url(&with_params(&db, "sslmode=disable")).unwrap();
    let ssl: bool = plain
        .connect()
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!ssl);
}

#[test]
fn descriptions_never_contain_the_password() {
    let url = xtask::db::parse_url(
        "postgresql://alice:s3cret%21@db.example.com:6543/app?schema=x&pgbouncer=true",
    )
    .unwrap();
    assert_eq!(url.describe(), "db.example.com:6543/app as alice");
    assert_eq!(url.schema(), "x");
    assert!(!format!("{url:?}").contains("s3cret"));
    // A password with an unencoded `@` or `/` is refused, and no part of it is shown.
    for bad in [
        "postgresql://app:s3cr@t/Pa55word@127.0.0.1:1/db",
        "postgresql://app:Pa55/word@127.0.0.1:1/db",
        "postgresql://app:Pa55word@127.0.0.1:99999/db",
    ] {
        let output = run_xtask(&["migrate", "status"], Some(bad));
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let stderr = text(&output.stderr);
        assert!(
            !stderr.contains("Pa55") && !stderr.contains("s3cr"),
            "{stderr}"
        );
        assert!(stderr.contains("database URL"), "{stderr}");
    }
}

#[test]
fn unknown_sslmode_is_a_usage_error() {
    let output = run_xtask(
        &["check"],
        Some("postgresql://u:secret-pw@127.0.0.1:1/db?sslmode=sometimes"),
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("`sslmode` in the database URL must be"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-pw"), "{stderr}");
}

/// `?schema=Tenant` means the schema `"Tenant"` for xtask and for the app alike: release deploys
/// there, backfills, and its smoke test (the app started from the same URL) passes.
#[test]
fn a_mixed_case_schema_is_used_by_xtask_and_the_app_alike() {
    let db = TestDb::new();
    let url = with_params(&db, "schema=Tenant");
    let init = run_xtask(&["migrate", "deploy", "--to", INIT], Some(&url));
    assert_eq!(init.status.code(), Some(0), "{}", text(&init.stderr));
    let seed = run_xtask(&["seed", "--users", "12", "--days", "5"], Some(&url));
    assert_eq!(seed.status.code(), Some(0), "{}", text(&seed.stderr));
    let release = run_xtask(&["release"], Some(&url));
    assert_eq!(
        release.status.code(),
        Some(0),
        "{}{}",
        text(&release.stdout),
        text(&release.stderr)
    );
    assert!(text(&release.stdout).contains("✅ Released"));
    let mut client = db.client();
    let schemas: Vec<String> = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE lower(nspname) = 'tenant' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(schemas, ["Tenant"]);
    let released: i64 = client
        .query_one(
            r#"SELECT count(*) FROM "Tenant"."MetricDaily" WHERE "workspaceId" IS NOT NULL"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert!(released > 0);
    for command in [&["status"][..], &["verify"], &["check"], &["recover"]] {
        let output = run_xtask(command, Some(&url));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{command:?}: {}",
            text(&output.stdout)
        );
    }
}

/// `?schema=a%20b` (a name PostgreSQL only accepts quoted) works end to end: the incident in
/// that schema (the concurrent index builds included), recover, check, verify, status, and a
/// release whose smoke test starts the app from the same URL. Nothing lands in `public`.
#[test]
fn a_schema_name_with_a_space_works_end_to_end() {
    let db = TestDb::new();
    let url = with_params(&db, "schema=a%20b");
    let run = |args: &[&str], code: i32| {
        let output = run_xtask(args, Some(&url));
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        output
    };
    run(&["migrate", "deploy", "--to", INIT], 0);
    run(&["seed", "--users", "12", "--days", "5"], 0);
    let incident = run(&["migrate", "deploy", "--skip-row-check"], 1);
    assert!(text(&incident.stderr).contains("Cannot enforce NOT NULL"));
    run(&["recover"], 0);
    for command in [
        &["check"][..],
        &["verify"],
        &["status"],
        &["migrate", "status"],
    ] {
        run(command, 0);
    }
    let release = run(&["release"], 0);
    assert!(text(&release.stdout).contains("✅ Released"));

    let mut client = db.client();
    let valid_indexes: i64 = client
        .query_one(
            r#"SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'a b' AND c.relname LIKE '%workspaceId%idx' AND i.indisvalid"#,
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(valid_indexes, 8, "every concurrent index built in `a b`");
    let in_public: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(in_public, 0);
}

/// `sslmode=verify-full` checks the server's certificate in xtask and in the app: the test
/// server's self-signed one is refused by both, and accepted once it is the root
/// (`sslrootcert`) with `verify-ca`.
#[test]
fn verify_full_refuses_a_self_signed_certificate_in_xtask_and_the_app() {
    let db = TestDb::new();
    let url = with_params(&db, "sslmode=verify-full");
    let output = run_xtask(&["migrate", "status"], Some(&url));
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(
        !stderr.contains(
            db.url()
                .split(':')
                .nth(2)
                .unwrap()
                .split('@')
                .next()
                .unwrap()
        ),
        "{stderr}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = app::db::pool(&url).unwrap();
    let refused = runtime.block_on(pool.get());
    assert!(
        refused.is_err(),
        "the app accepted a certificate nobody vouches for"
    );

    let certificate = server_certificate().expect("the test cluster has a certificate");
    let trusted = with_params(
        &db,
        &format!("sslmode=verify-ca&sslrootcert={}", certificate.display()),
    );
    let output = run_xtask(&["migrate", "status"], Some(&trusted));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let pool = app::db::pool(&trusted).unwrap();
    let client = runtime.block_on(pool.get()).unwrap();
    let ssl: bool = runtime
        .block_on(client.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        ))
        .unwrap()
        .get(0);
    assert!(ssl);
}
