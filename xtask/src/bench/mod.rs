//! `cargo xtask bench [--quick]`: the performance targets, each measured against its baseline on
//! the same throwaway server in the same run, one line per figure with the ratio.
//!
//! The server streams to a standby of its own, as production servers do, and writes full-page
//! images, so replica lag and WAL are measured as they would be there. One database is seeded
//! before tenancy and copied by file (`CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY`, which
//! the standby replays as a file copy too): twin copies at the expand migration for the step
//! figures (the baseline statements on one, ours on the other), twin copies before tenancy for
//! the whole release against the naive runbook (release.rs), and a copy per further worker
//! count for the scaling curve (scaling.rs). A simulated app writes alongside each.

mod app;
mod lint;
mod release;
mod replica;
mod scaling;
mod writer;

use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{Context, Result};
use pico_args::Arguments;
use xshell::{cmd, Shell};

use crate::backfill::{self, BackfillOptions};
use crate::check;
use crate::cli::{self, Globals};
use crate::cluster::ClusterOptions;
use crate::cluster::TempCluster;
use crate::db::{quote_ident, Connect, DatabaseUrl};
use crate::error::Outcome;
use crate::migrate::{self, DeployOptions};
use crate::migrations::Migration;
use crate::report::{thousands, Table};
use crate::seed::{self, SeedSize};
use crate::tenancy::{CONTRACT, DATAHUB_TABLES, EXPAND, INIT};
use replica::LagSampler;
use writer::{median, LockWatcher, Writer, WriterPlan};

pub(crate) const SUMMARY: &str = "the performance targets, each against its baseline";

pub(crate) const HELP: &str = "\
cargo xtask bench [--quick] [--rows N] [--workers N[,N…]] [--lint-migrations DIR] [--app]
The performance targets on a throwaway PostgreSQL with a streaming standby, each against its
baseline measured in the same run:
  backfill rows/s vs one UPDATE … FROM over the same rows (twin databases),
  a concurrent writer's insert p99 and longest wait on an already-backfilled row, during each,
  the standby's replay lag and the WAL per row, during each,
  check latency after the backfill vs a table scan,
  the contract's longest ACCESS EXCLUSIVE hold (a probe's longest insert wait) vs plain SET NOT NULL,
  migrate status wall time vs one psql query process,
  the whole release (expand, backfill, check, indexes, contract) vs the naive runbook (expand
  with its indexes in one transaction, one UPDATE per table, check, plain SET NOT NULL): wall
  time, and the app's longest write wait and insert p99 during each,
  migrate lint of every migration, and of the last two with --since, vs migrate deploy of the
  same folder (--lint-migrations DIR: another project's history instead of migrations/).
Full size: 5,000,000 MetricDaily rows (several minutes); --quick: 500,000; --rows N to choose.
--workers N: backfill workers (default 2); --workers 2,1,4: the first count for the figures,
then the backfill once more per further count on a fresh copy: the scaling curve.
Exit 0 when every figure meets its target.
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

/// The figures as the table both benches print.
fn figure_table(figures: &[Figure]) -> Table {
    let mut table = Table::new(&["figure", "ours", "baseline", "ratio", "target", "met"]);
    for f in figures {
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
    table
}

/// `N of M targets`: the figures that met their target, of those that have one.
fn targets_met(figures: &[Figure]) -> String {
    format!(
        "{} of {} targets",
        figures.iter().filter(|f| f.met == Some(true)).count(),
        figures.iter().filter(|f| f.met.is_some()).count()
    )
}

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    // Its own cluster, loaded with millions of rows: a `VACUUM`, a `CHECKPOINT` or the naive
    // contract takes as long as the data, so statements are watched, not cut at a deadline.
    crate::db::deadline::treat_all_as_long("a benchmark's statement");
    let quick = args.contains("--quick");
    let web_app = args.contains("--app");
    let rows = cli::number(&mut args, "--rows", 1..=500_000_000)?;
    let counts: Vec<usize> = cli::number_list(&mut args, "--workers", 1..=16)?
        .unwrap_or_else(|| vec![2])
        .into_iter()
        .map(|n| n as usize)
        .collect();
    let workers = counts[0];
    let lint_dir: Option<std::path::PathBuf> =
        cli::text(&mut args, "--lint-migrations")?.map(Into::into);
    cli::finish(args, "bench")?;
    let rows = rows.unwrap_or(if quick { 500_000 } else { 5_000_000 });
    let users = rows.div_ceil((DAYS * PROVIDERS) as u64) as i32;
    let migrations = globals.migrations()?;
    if web_app {
        return app::run(quick, &migrations);
    }
    let started = Instant::now();

    eprintln!("starting a throwaway PostgreSQL with a streaming standby ...");
    let program = std::env::current_exe().context("cannot find the xtask executable")?;
    let mut cluster = TempCluster::start_with(
        &program,
        &ClusterOptions {
            standby: true,
            // WAL as a production server writes it: a full-page image of each page on its
            // first change after a checkpoint, and checkpoints spaced as PostgreSQL's own hint
            // asks under this write load (with the default 1 GB they come every 10 s).
            settings: vec![
                ("full_page_writes".into(), "on".into()),
                ("max_wal_size".into(), "'4GB'".into()),
            ],
            ..ClusterOptions::default()
        },
    )?;
    let result = bench(&cluster, &migrations, users, &counts).and_then(|(mut figures, version)| {
        let lint_migrations = match &lint_dir {
            Some(dir) => crate::migrations::read_dir(dir)?,
            None => migrations.clone(),
        };
        figures.extend(lint::figures(&cluster, &lint_migrations)?);
        Ok((figures, version))
    });
    cluster.stop();
    let (figures, version) = result?;

    println!("\n{}", figure_table(&figures).render());
    println!(
        "bench: {} met in {:.0} s ({} MetricDaily rows, {workers} backfill workers, PostgreSQL {})",
        targets_met(&figures),
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
    counts: &[usize],
) -> Result<(Vec<Figure>, String)> {
    let workers = counts[0];
    let mut figures = Vec::new();
    let mut admin = cluster.database_url("postgres")?.connect()?;
    let version: String = admin
        .query_one("SHOW server_version", &[])
        .context("cannot read the server version")?
        .get(0);
    admin
        .batch_execute("CREATE DATABASE bench_seed")
        .context("cannot create the bench database")?;
    let seed = cluster.database_url("bench_seed")?;
    let ours = cluster.database_url("bench_ours")?;
    let twin = cluster.database_url("bench_baseline")?;

    // Seed once, before tenancy: copies for the whole release; then at the expand migration:
    // copies for the step figures, and the seed itself stays as the scaling curve's template.
    let started = Instant::now();
    {
        let mut client = seed.connect()?;
        deploy_to(&mut client, &seed, migrations, INIT)?;
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
        vacuum_analyze(&mut client)?;
    }
    copy_database(&mut admin, "bench_release", "bench_seed")?;
    copy_database(&mut admin, "bench_naive", "bench_seed")?;
    {
        let mut client = seed.connect()?;
        deploy_to(&mut client, &seed, migrations, EXPAND)?;
        vacuum_analyze(&mut client)?;
    }
    copy_database(&mut admin, "bench_ours", "bench_seed")?;
    copy_database(&mut admin, "bench_baseline", "bench_seed")?;
    replica::settle(&mut admin)?;
    eprintln!(
        "seeded and copied in {:.0} s",
        started.elapsed().as_secs_f64()
    );

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
    replica::settle(&mut admin)?;
    eprintln!("baseline: one UPDATE … FROM per table, with the app writing alongside ...");
    let writer = Writer::start(&twin, app_plan(&mut base_client)?)?;
    let sampler = LagSampler::start(&twin)?;
    let wal = replica::wal_position(&mut base_client)?;
    let started = Instant::now();
    let base_rows = release::one_update_per_table(&mut base_client, false)?;
    let base_seconds = started.elapsed().as_secs_f64();
    let base_wal = replica::wal_since(&mut base_client, &wal)?;
    let base_lag = sampler.finish()?;
    let base_app = writer.finish()?;
    let base_rate = base_rows as f64 / base_seconds;

    let mut our_client = ours.connect()?;
    replica::settle(&mut admin)?;
    eprintln!("ours: cargo xtask backfill --workers {workers}, with the app writing alongside ...");
    // The app updates the first row once the backfill has committed it (the one UPDATE above
    // has locked it within its first second, and holds it to its commit).
    let writer = Writer::start(&ours, release_app_plan(&mut our_client)?)?;
    let sampler = LagSampler::start(&ours)?;
    let wal = replica::wal_position(&mut our_client)?;
    let report = backfill::backfill(
        &mut our_client,
        &ours,
        &crate::tenancy::release(migrations)?,
        &BackfillOptions {
            workers,
            ..BackfillOptions::default()
        },
    )?;
    let our_wal = replica::wal_since(&mut our_client, &wal)?;
    let our_lag = sampler.finish()?;
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
    let limit_ms = report
        .replica
        .as_ref()
        .map(|r| r.limit.as_secs_f64() * 1000.0)
        .context("the bench's standby was not streaming when the backfill started")?;
    let paused = report.replica.as_ref().map(|r| (r.waits, r.waited));
    println!(
        "replica lag during backfill: max {} ms (limit {} ms); during one UPDATE: max {} ms",
        thousands(our_lag.max_ms as i64),
        thousands(limit_ms as i64),
        thousands(base_lag.max_ms as i64),
    );
    if let Some((waits, waited)) = paused {
        println!(
            "  (most WAL left to replay: {} kB during the backfill, {} kB during one UPDATE; the backfill paused {waits} time(s), {:.1} s in all)",
            thousands(our_lag.max_bytes / 1024),
            thousands(base_lag.max_bytes / 1024),
            waited.as_secs_f64()
        );
    }
    figures.push(Figure {
        name: "replica lag during backfill",
        ours: format!("{} ms", thousands(our_lag.max_ms as i64)),
        baseline: format!("{} ms", thousands(base_lag.max_ms as i64)),
        ratio: our_lag.max_ms / base_lag.max_ms.max(1.0),
        target: format!("≤ {} ms (the limit)", thousands(limit_ms as i64)),
        met: Some(our_lag.max_ms <= limit_ms),
    });
    let (our_wal_row, base_wal_row) = (
        our_wal as f64 / our_rows.max(1.0),
        base_wal as f64 / (base_rows as f64).max(1.0),
    );
    println!(
        "WAL per row: backfill {} B, one UPDATE {} B",
        thousands(our_wal_row as i64),
        thousands(base_wal_row as i64)
    );
    figures.push(Figure {
        name: "WAL per row",
        ours: format!("{} B", thousands(our_wal_row as i64)),
        baseline: format!("{} B", thousands(base_wal_row as i64)),
        ratio: our_wal_row / base_wal_row,
        target: "none (what the standby replays)".into(),
        met: None,
    });
    let first_point = scaling::Point::new(workers, &report, ours_p99, our_lag, our_wal);

    // The index migrations (CONCURRENTLY) on ours, then check's latency vs a scan.
    let started = Instant::now();
    let before_contract = crate::tenancy::before_contract(migrations)
        .context("the migrations folder has no contract migration")?;
    deploy_to(&mut our_client, &ours, migrations, before_contract)?;
    eprintln!(
        "index migrations (CREATE INDEX CONCURRENTLY) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let tenancy = crate::tenancy::release(migrations)?;
    let mut check_ms = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let report = check::check_release(&mut our_client, &tenancy)?;
        check_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(report.is_backfilled(), "the backfill left NULLs");
    }
    our_client.batch_execute(
        "SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_indexonlyscan = off",
    ).context("cannot switch index scans off")?;
    let mut scan_ms = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        check::check_release(&mut our_client, &tenancy)?;
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
                update_once_filled: false,
                first_day,
            },
        )
    };
    let prober = probe(&ours, 1_000_000)?;
    let watcher = LockWatcher::start(&ours)?;
    std::thread::sleep(Duration::from_millis(200));
    // The contract alone: the migrations after it (the next release's) are not what is timed.
    migrate::deploy(
        &mut our_client,
        &ours,
        migrations,
        &DeployOptions {
            to: Some(CONTRACT.to_string()),
            ..DeployOptions::default()
        },
    )?;
    std::thread::sleep(Duration::from_millis(200));
    let (our_hold, resolution) = watcher.finish()?;
    let our_wait = prober.finish()?.longest_insert();
    // The rest, untimed, so `migrate status` below reads an up-to-date database.
    migrate::deploy(
        &mut our_client,
        &ours,
        migrations,
        &DeployOptions::default(),
    )?;
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
    drop(our_client);
    drop(base_client);
    for database in ["bench_ours", "bench_baseline"] {
        drop_database(&mut admin, database)?;
    }

    // The whole release against the naive runbook, each on its copy from before tenancy.
    let release_url = cluster.database_url("bench_release")?;
    let naive_url = cluster.database_url("bench_naive")?;
    replica::settle(&mut admin)?;
    eprintln!("the whole release: release's database steps, with the app writing alongside ...");
    let plan = release_app_plan(&mut release_url.connect()?)?;
    let our_release = release::ours(
        &release_url,
        migrations,
        &BackfillOptions {
            workers,
            ..BackfillOptions::default()
        },
        plan,
    )?;
    replica::settle(&mut admin)?;
    eprintln!("the naive runbook, with the app writing alongside ...");
    let plan = release_app_plan(&mut naive_url.connect()?)?;
    let naive_release = release::naive(&naive_url, migrations, plan)?;
    for database in ["bench_release", "bench_naive"] {
        drop_database(&mut admin, database)?;
    }
    let ratio = naive_release.seconds / our_release.seconds;
    println!(
        "release ratio vs naive runbook: {ratio:.2} (ours {:.0} s, naive {:.0} s)",
        our_release.seconds, naive_release.seconds
    );
    for (who, run) in [("ours", &our_release), ("naive", &naive_release)] {
        println!(
            "  {who}: the app's longest write wait {} ms ({}), insert p99 {:.1} ms; {}",
            thousands_ms(run.longest_write_wait()),
            run.slowest_write(),
            run.app.insert_p99(),
            run.describe_steps()
        );
    }
    figures.push(Figure {
        name: "whole release, wall time",
        ours: format!("{:.1} s", our_release.seconds),
        baseline: format!("{:.1} s", naive_release.seconds),
        ratio,
        target: "naive / ours ≥ 1.00".into(),
        met: Some(ratio >= 1.0),
    });
    let (our_wait, naive_wait) = (
        our_release.longest_write_wait(),
        naive_release.longest_write_wait(),
    );
    figures.push(Figure {
        name: "app write wait, release",
        ours: format!("{} ms", thousands_ms(our_wait)),
        baseline: format!("{} ms", thousands_ms(naive_wait)),
        ratio: our_wait / naive_wait,
        target: "≤ 100 ms".into(),
        met: Some(our_wait <= 100.0),
    });
    figures.push(Figure {
        name: "app insert p99, release",
        ours: format!("{:.1} ms", our_release.app.insert_p99()),
        baseline: format!("{:.1} ms", naive_release.app.insert_p99()),
        ratio: our_release.app.insert_p99() / naive_release.app.insert_p99(),
        target: "none (what the app feels)".into(),
        met: None,
    });

    // The scaling curve: one more backfill per further worker count.
    let mut points = vec![first_point];
    if counts.len() > 1 {
        let copy = cluster.database_url("bench_workers")?;
        points.extend(scaling::measure(
            &mut admin,
            &copy,
            "bench_workers",
            "bench_seed",
            &counts[1..],
            &crate::tenancy::release(migrations)?,
            app_plan,
        )?);
        println!(
            "\nbackfill scaling (one UPDATE … FROM: {} rows/s):\n{}",
            thousands(base_rate as i64),
            scaling::table(&points, base_rate).render()
        );
    }
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

/// `CREATE DATABASE name TEMPLATE template` by file copy: the standby replays it as a file copy
/// too, instead of replaying every page as WAL. Two checkpoints, no connection to the template.
fn copy_database(admin: &mut Client, name: &str, template: &str) -> Result<()> {
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY",
            quote_ident(name),
            quote_ident(template)
        ))
        .with_context(|| format!("cannot copy the bench database into `{name}`"))
}

fn drop_database(admin: &mut Client, name: &str) -> Result<()> {
    admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .with_context(|| format!("cannot drop the bench database `{name}`"))
}

/// VACUUM cannot run in a transaction block, so not in one batch with other statements.
fn vacuum_analyze(client: &mut Client) -> Result<()> {
    client
        .batch_execute("VACUUM ANALYZE")
        .context("cannot VACUUM ANALYZE the seeded bench data")?;
    client
        .batch_execute("CHECKPOINT")
        .context("cannot CHECKPOINT after seeding")
}

/// The simulated app: an insert every 5 ms, and from the first second on an update of the first
/// row in heap order, which the one UPDATE has locked by then and holds to its commit.
fn app_plan(client: &mut Client) -> Result<WriterPlan> {
    let first_row: String = client
        .query_one(
            r#"SELECT "id" FROM "MetricDaily" ORDER BY ctid LIMIT 1"#,
            &[],
        )
        .context("cannot find the first MetricDaily row")?
        .get(0);
    Ok(WriterPlan {
        pause: Duration::from_millis(5),
        update_id: Some(first_row),
        update_after: Duration::from_secs(1),
        update_once_filled: false,
        first_day: 0,
    })
}

/// The simulated app during a whole release: an insert every 5 ms and, from the moment the
/// release has committed the first row's `workspaceId`, an update of that row: what an app
/// writing to rows the release has dealt with feels, whatever the steps before took.
fn release_app_plan(client: &mut Client) -> Result<WriterPlan> {
    Ok(WriterPlan {
        update_after: Duration::ZERO,
        update_once_filled: true,
        ..app_plan(client)?
    })
}

/// Milliseconds with thousands separators and one decimal under 100.
fn thousands_ms(ms: f64) -> String {
    if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        thousands(ms as i64)
    }
}
