//! `cargo xtask bench [--quick]`: the performance targets, each measured against its baseline on
//! the same throwaway server in the same run, one line per figure with the ratio.
//!
//! Two twin databases are seeded once (the second is a file copy of the first, `CREATE DATABASE
//! … TEMPLATE`), both at the expand migration: the baseline statements run on one, ours on the
//! other, each with a simulated app writing alongside.

mod app;
mod writer;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pico_args::Arguments;
use postgres::Client;
use xshell::{cmd, Shell};

use crate::backfill::{self, BackfillOptions};
use crate::check;
use crate::cli::{self, Globals};
use crate::cluster::TempCluster;
use crate::db::{quote_ident, Connect, DatabaseUrl};
use crate::error::Outcome;
use crate::migrate::{self, DeployOptions};
use crate::migrations::Migration;
use crate::report::{thousands, Table};
use crate::seed::{self, SeedSize};
use crate::tenancy::{DATAHUB_TABLES, EXPAND, INIT};
use writer::{median, LockWatcher, Writer, WriterPlan};

pub(crate) const SUMMARY: &str = "the performance targets, each against its baseline";

pub(crate) const HELP: &str = "\
cargo xtask bench [--quick] [--rows N] [--workers N] [--app]
The performance targets on a throwaway PostgreSQL, each against its baseline measured in the
same run:
  backfill rows/s vs one UPDATE … FROM over the same rows (twin databases),
  a concurrent writer's insert p99 and longest wait on an already-backfilled row, during each,
  check latency after the backfill vs a table scan,
  the contract's longest ACCESS EXCLUSIVE hold (a probe's longest insert wait) vs plain SET NOT NULL,
  migrate status wall time vs one psql query process.
Full size: 5,000,000 MetricDaily rows (several minutes); --quick: 500,000; --rows N to choose.
--workers N: backfill workers (default 2). Exit 0 when every figure meets its target.
--app: the web app instead (release build, seeded database): /data requests/s and p99 at
concurrency 1/16/64, /data p99 during a login flood vs without (≤ 3×), peak RSS during the
flood (≤ 200 MB), /healthz with the database stopped (≤ 3 s).
";

/// Days of metrics per user and provider in the bench data.
const DAYS: i32 = 365;
const PROVIDERS: i32 = 3;

struct Figure {
    name: &'static str,
    ours: String,
    baseline: String,
    ratio: f64,
    target: String,
    /// None for a figure shown for information, without a target.
    met: Option<bool>,
}

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let quick = args.contains("--quick");
    let web_app = args.contains("--app");
    let rows = cli::number(&mut args, "--rows", 1..=500_000_000)?;
    let workers = cli::number(&mut args, "--workers", 1..=16)?.unwrap_or(2);
    cli::finish(args, "bench")?;
    let rows = rows.unwrap_or(if quick { 500_000 } else { 5_000_000 });
    let users = rows.div_ceil((DAYS * PROVIDERS) as u64) as i32;
    let migrations = globals.migrations()?;
    if web_app {
        return app::run(quick, &migrations);
    }
    let started = Instant::now();

    eprintln!("starting a throwaway PostgreSQL ...");
    let mut cluster = TempCluster::start()?;
    let result = bench(&cluster, &migrations, users, workers as usize);
    cluster.stop();
    let (figures, version) = result?;

    let mut table = Table::new(&["figure", "ours", "baseline", "ratio", "target", "met"]);
    for f in &figures {
        table.push(vec![
            f.name.to_string(),
            f.ours.clone(),
            f.baseline.clone(),
            format!("{:.2}", f.ratio),
            f.target.clone(),
            match f.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            }
            .to_string(),
        ]);
    }
    println!("\n{}", table.render());
    println!(
        "bench: {} of {} targets met in {:.0} s ({} MetricDaily rows, {workers} backfill workers, PostgreSQL {})",
        figures.iter().filter(|f| f.met == Some(true)).count(),
        figures.iter().filter(|f| f.met.is_some()).count(),
        started.elapsed().as_secs_f64(),
        thousands(i64::from(users) * i64::from(DAYS * PROVIDERS)),
        version,
    );
    Ok(Outcome::from_ready(
        figures.iter().all(|f| f.met != Some(false)),
    ))
}

fn bench(
    cluster: &TempCluster,
    migrations: &[Migration],
    users: i32,
    workers: usize,
) -> Result<(Vec<Figure>, String)> {
    let mut figures = Vec::new();
    let mut admin = cluster.database_url("postgres")?.connect()?;
    let version: String = admin
        .query_one("SHOW server_version", &[])
        .context("cannot read the server version")?
        .get(0);
    admin
        .batch_execute("CREATE DATABASE bench_ours")
        .context("cannot create the bench database")?;
    let ours = cluster.database_url("bench_ours")?;
    let twin = cluster.database_url("bench_baseline")?;

    // Seed once, at the expand migration, then copy.
    let started = Instant::now();
    {
        let mut client = ours.connect()?;
        deploy_to(&mut client, &ours, migrations, INIT)?;
        let size = SeedSize {
            users,
            days: DAYS,
            providers_per_user: PROVIDERS,
        };
        eprintln!(
            "seeding {} users and {} MetricDaily rows ...",
            thousands(users.into()),
            thousands(size.metric_rows())
        );
        seed::seed_pre_tenancy(&mut client, size)?;
        client.batch_execute(
            r#"INSERT INTO "User" ("id", "email", "name") VALUES ('bench_writer', 'writer@bench.invalid', 'Bench writer')"#,
        ).context("cannot create the bench writer's user")?;
        deploy_to(&mut client, &ours, migrations, EXPAND)?;
        client
            .batch_execute("VACUUM ANALYZE; CHECKPOINT")
            .context("cannot VACUUM ANALYZE the seeded bench data")?;
    }
    admin
        .batch_execute("CREATE DATABASE bench_baseline TEMPLATE bench_ours")
        .context("cannot copy the bench database")?;
    eprintln!(
        "seeded and copied in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // The first row in heap order: the first batch backfills it within its first fraction of
    // a second; from then on the app's updates of it must not wait (after 1 s, to be sure).
    let first_row = |client: &mut Client| -> Result<String> {
        Ok(client
            .query_one(
                r#"SELECT "id" FROM "MetricDaily" ORDER BY ctid LIMIT 1"#,
                &[],
            )
            .context("cannot find the first MetricDaily row")?
            .get(0))
    };
    let plan = |client: &mut Client, first_day: i32| -> Result<WriterPlan> {
        Ok(WriterPlan {
            pause: Duration::from_millis(5),
            update_id: Some(first_row(client)?),
            update_after: Duration::from_secs(1),
            first_day,
        })
    };

    // Backfill: one UPDATE … FROM per table on the twin, ours on the other.
    let mut base_client = twin.connect()?;
    // The one-statement baseline needs every user to have a home workspace already (ours
    // creates the personal ones inside its timed run).
    base_client
        .batch_execute(
            r#"SELECT "datahub_ensure_personal_workspace"(u."id") FROM "User" u
           WHERE NOT EXISTS (SELECT 1 FROM "WorkspaceMember" m WHERE m."userId" = u."id")"#,
        )
        .context("cannot create the baseline's personal workspaces")?;
    eprintln!("baseline: one UPDATE … FROM per table, with the app writing alongside ...");
    let writer = Writer::start(&twin, plan(&mut base_client, 0)?)?;
    let started = Instant::now();
    let mut base_rows = 0u64;
    for table in DATAHUB_TABLES {
        base_rows += base_client
            .execute(
                &format!(
                    r#"UPDATE {} t SET "workspaceId" = h."workspaceId"
                   FROM "datahub_home_workspace" h
                   WHERE h."userId" = t."userId" AND t."workspaceId" IS NULL"#,
                    quote_ident(table)
                ),
                &[],
            )
            .with_context(|| format!("the baseline UPDATE of `{table}` failed"))?;
    }
    let base_seconds = started.elapsed().as_secs_f64();
    let base_app = writer.finish()?;
    let base_rate = base_rows as f64 / base_seconds;

    let mut our_client = ours.connect()?;
    eprintln!("ours: cargo xtask backfill --workers {workers}, with the app writing alongside ...");
    let writer = Writer::start(&ours, plan(&mut our_client, 0)?)?;
    let report = backfill::backfill(
        &mut our_client,
        &ours,
        &BackfillOptions {
            workers,
            ..BackfillOptions::default()
        },
    )?;
    let our_app = writer.finish()?;
    let our_rows = report.total_rows() as f64;
    let our_rate = our_rows / report.duration.as_secs_f64();
    let ratio = our_rate / base_rate;
    println!(
        "backfill ratio vs one UPDATE: {ratio:.2} (ours {} rows/s, {workers} workers; one UPDATE … FROM {} rows/s; {} rows)",
        thousands(our_rate as i64),
        thousands(base_rate as i64),
        thousands(our_rows as i64)
    );
    figures.push(Figure {
        name: "backfill rows/s",
        ours: thousands(our_rate as i64),
        baseline: thousands(base_rate as i64),
        ratio,
        target: "ratio ≥ 1.00".into(),
        met: Some(ratio >= 1.0),
    });
    let (ours_p99, base_p99) = (our_app.insert_p99(), base_app.insert_p99());
    println!(
        "insert p99 during the backfill: {ours_p99:.1} ms vs {base_p99:.1} ms during one UPDATE (ratio {:.2}; {} and {} inserts)",
        ours_p99 / base_p99,
        our_app.inserts.len(),
        base_app.inserts.len()
    );
    figures.push(Figure {
        name: "insert p99 during backfill",
        ours: format!("{ours_p99:.1} ms"),
        baseline: format!("{base_p99:.1} ms"),
        ratio: ours_p99 / base_p99,
        target: "< 10 ms".into(),
        met: Some(ours_p99 < 10.0),
    });
    let (ours_wait, base_wait) = (our_app.longest_update(), base_app.longest_update());
    println!(
        "longest wait of an update to a backfilled row: {ours_wait:.1} ms vs {base_wait:.1} ms during one UPDATE (ratio {:.4})",
        ours_wait / base_wait
    );
    figures.push(Figure {
        name: "update wait, backfilled row",
        ours: format!("{ours_wait:.1} ms"),
        baseline: format!("{base_wait:.1} ms"),
        ratio: ours_wait / base_wait,
        target: "< 100 ms".into(),
        met: Some(ours_wait < 100.0 && !our_app.updates.is_empty()),
    });

    // The index migrations (CONCURRENTLY) on ours, then check's latency vs a scan.
    let started = Instant::now();
    let before_contract = crate::tenancy::before_contract(migrations)
        .context("the migrations folder has no contract migration")?;
    deploy_to(&mut our_client, &ours, migrations, before_contract)?;
    eprintln!(
        "index migrations (CREATE INDEX CONCURRENTLY) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut check_ms = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let report = check::check(&mut our_client)?;
        check_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(report.is_backfilled(), "the backfill left NULLs");
    }
    our_client.batch_execute(
        "SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off",
    ).context("cannot switch index scans off")?;
    let mut scan_ms = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        check::check(&mut our_client)?;
        scan_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    our_client
        .batch_execute("RESET ALL")
        .context("cannot reset the planner settings")?;
    let (check, scan) = (median(&check_ms), median(&scan_ms));
    println!(
        "check after backfill: {check:.1} ms vs {scan:.1} ms for the same counts by table scan (ratio {:.3})",
        check / scan
    );
    figures.push(Figure {
        name: "check after backfill",
        ours: format!("{check:.1} ms"),
        baseline: format!("{scan:.1} ms"),
        ratio: check / scan,
        target: "< 5 ms".into(),
        met: Some(check < 5.0),
    });

    // The contract: a watcher sees the ACCESS EXCLUSIVE locks in pg_locks, and a probe inserts
    // as fast as it can (what the app feels, replanning after the DDL included).
    let probe = |url: &DatabaseUrl, first_day: i32| {
        Writer::start(
            url,
            WriterPlan {
                pause: Duration::ZERO,
                update_id: None,
                update_after: Duration::ZERO,
                first_day,
            },
        )
    };
    let prober = probe(&ours, 1_000_000)?;
    let watcher = LockWatcher::start(&ours)?;
    std::thread::sleep(Duration::from_millis(200));
    migrate::deploy(
        &mut our_client,
        &ours,
        migrations,
        &DeployOptions::default(),
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let (our_hold, resolution) = watcher.finish()?;
    let our_wait = prober.finish()?.longest_insert();
    let prober = probe(&twin, 1_000_000)?;
    let watcher = LockWatcher::start(&twin)?;
    std::thread::sleep(Duration::from_millis(200));
    let mut sql = String::from("BEGIN;");
    for table in DATAHUB_TABLES {
        sql.push_str(&format!(
            r#"ALTER TABLE {} ALTER COLUMN "workspaceId" SET NOT NULL;"#,
            quote_ident(table)
        ));
    }
    sql.push_str("COMMIT;");
    base_client
        .batch_execute(&sql)
        .context("the baseline's plain SET NOT NULL failed")?;
    std::thread::sleep(Duration::from_millis(200));
    let (base_hold, _) = watcher.finish()?;
    let base_wait = prober.finish()?.longest_insert();
    println!(
        "contract ACCESS EXCLUSIVE hold (longest per table, seen in pg_locks every {resolution:.2} ms): {our_hold:.1} ms vs {base_hold:.1} ms for plain SET NOT NULL (ratio {:.3})",
        our_hold / base_hold
    );
    println!(
        "  (a probe inserting without pause waited at most {our_wait:.1} ms vs {base_wait:.1} ms)"
    );
    figures.push(Figure {
        name: "contract ACCESS EXCLUSIVE",
        ours: format!("{our_hold:.1} ms"),
        baseline: format!("{base_hold:.1} ms"),
        ratio: our_hold / base_hold,
        target: "< 10 ms".into(),
        met: Some(our_hold < 10.0),
    });
    figures.push(Figure {
        name: "probe's longest write wait",
        ours: format!("{our_wait:.1} ms"),
        baseline: format!("{base_wait:.1} ms"),
        ratio: our_wait / base_wait,
        target: "none (what the app feels)".into(),
        met: None,
    });

    // migrate status, the built binary, vs one psql query process.
    let xtask = std::env::current_exe().context("cannot find the xtask binary")?;
    let psql = cluster.bin_dir().join("psql");
    let sh = Shell::new()?;
    let time_both = |url: &str, runs: usize| -> Result<(f64, f64)> {
        let status = wall_times(runs, || {
            cmd!(sh, "{xtask} --database-url {url} migrate status")
                .quiet()
                .secret()
                .ignore_stdout()
                .run()
        })?;
        let psql = wall_times(runs, || {
            cmd!(sh, "{psql} {url} -Atc {STATUS_QUERY}")
                .quiet()
                .secret()
                .ignore_stdout()
                .run()
        })?;
        Ok((median(&status), median(&psql)))
    };
    // Over the Unix socket, as `psql` connects by default; the TCP + TLS cost is printed below.
    let (status, psql) = time_both(&cluster.socket_url("bench_ours"), 11)?;
    println!(
        "migrate status: {status:.1} ms vs {psql:.1} ms for one psql query (ratio {:.2})",
        status / psql
    );
    let (status_tcp, psql_tcp) = time_both(&cluster.url("bench_ours"), 5)?;
    println!(
        "  (over TCP with TLS and a SCRAM password: {status_tcp:.1} ms vs {psql_tcp:.1} ms for psql)"
    );
    figures.push(Figure {
        name: "migrate status wall time",
        ours: format!("{status:.1} ms"),
        baseline: format!("{psql:.1} ms"),
        ratio: status / psql,
        target: "ratio ≤ 1.50".into(),
        met: Some(status / psql <= 1.5),
    });
    Ok((figures, version))
}

fn deploy_to(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    to: &str,
) -> Result<()> {
    let options = DeployOptions {
        to: Some(to.to_string()),
        ..DeployOptions::default()
    };
    migrate::deploy(client, url, migrations, &options)?;
    Ok(())
}

/// What `migrate status` reads, as one psql query.
const STATUS_QUERY: &str =
    r#"SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations""#;

/// Wall time of `runs` runs of a process, in milliseconds; each must succeed.
fn wall_times(runs: usize, mut run: impl FnMut() -> xshell::Result<()>) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        run().context("a timed process failed")?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}
