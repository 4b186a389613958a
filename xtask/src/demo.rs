//! `cargo xtask demo`: the incident and its recovery, on a throwaway PostgreSQL.
//!
//! Pre-tenancy data is seeded, then both tenancy migrations are deployed before any backfill,
//! exactly as in the incident: the contract fails on the NULLs. `recover` reads that state and
//! follows the recovery plan, `release` builds the app and runs the smoke test, and `verify`
//! prints the recovery plan's verification tables. Nothing outside the cluster is touched; it
//! is removed at the end unless `--keep`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pico_args::Arguments;

use crate::app_build::AppBuild;
use crate::cli::{self, Globals};
use crate::cluster::TempCluster;
use crate::db::Connect;
use crate::error::{self, Outcome};
use crate::migrate::{self, DeployOptions};
use crate::report::{thousands, Report, Table};
use crate::runbook::{self, RecoverOptions, ReleaseOptions};
use crate::seed::{self, SeedSize};
use crate::tenancy::INIT;
use crate::verify;

pub(crate) const SUMMARY: &str = "the incident and its recovery on a throwaway PostgreSQL";

pub(crate) const HELP: &str = "\
cargo xtask demo [--users N] [--keep]
The incident and its recovery on a throwaway PostgreSQL (initdb in a temp dir, a free port).
Seeds pre-tenancy data (default 2,000 users and 360,000 daily metric rows), deploys both
tenancy migrations before the backfill so the contract fails as it did in the incident, then
runs `recover`, `release` (build + smoke) and `verify`, with timings and figures for every
step. --keep leaves the cluster running and prints its URL and the demo login; otherwise it is
removed.
";

struct Timing {
    step: &'static str,
    duration: Duration,
    figures: String,
}

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let keep = args.contains("--keep");
    let users = cli::number(&mut args, "--users", 1..=1_000_000)?.unwrap_or(2_000) as i32;
    cli::finish(args, "demo")?;
    let migrations = globals.migrations()?;
    let mut timings: Vec<Timing> = Vec::new();
    let demo_started = Instant::now();

    let started = Instant::now();
    eprintln!("starting a throwaway PostgreSQL ...");
    let mut cluster = TempCluster::start()?;
    cluster
        .database_url("postgres")?
        .connect()?
        .batch_execute("CREATE DATABASE datahub_demo")
        .context("cannot create the demo database")?;
    let url = cluster.database_url("datahub_demo")?;
    let mut client = url.connect()?;
    timings.push(Timing {
        step: "start PostgreSQL",
        duration: started.elapsed(),
        figures: format!("port {}", cluster.port()),
    });

    let started = Instant::now();
    let init = DeployOptions {
        to: Some(INIT.to_string()),
        ..DeployOptions::default()
    };
    migrate::deploy(&mut client, &url, &migrations, &init)?;
    let size = SeedSize {
        users,
        days: 60,
        providers_per_user: 3,
    };
    eprintln!(
        "seeding {} users and {} daily metric rows as the old app wrote them ...",
        thousands(size.users.into()),
        thousands(size.metric_rows())
    );
    seed::seed_pre_tenancy(&mut client, size)?;
    seed::seed_demo_login(&mut client)?;
    let rows: i64 = client
        .query_one(
            r#"SELECT (SELECT count(*) FROM "Connection") + (SELECT count(*) FROM "MetricDaily")
                    + (SELECT count(*) FROM "Insight") + (SELECT count(*) FROM "ChatMessage")"#,
            &[],
        )
        .context("cannot count the seeded rows")?
        .get(0);
    timings.push(Timing {
        step: "seed pre-tenancy data",
        duration: started.elapsed(),
        figures: format!(
            "{} users, {} Data Hub rows",
            thousands(size.users.into()),
            thousands(rows)
        ),
    });

    println!("== the incident: every migration deployed before the backfill");
    let started = Instant::now();
    // As Prisma deploys: without counting the rows a migration would fail on first.
    let incident = migrate::deploy(
        &mut client,
        &url,
        &migrations,
        &DeployOptions {
            check_rows: false,
            ..DeployOptions::default()
        },
    );
    match &incident {
        Ok(_) => println!("(unexpected: the contract went through)"),
        Err(error) => println!("{}", error::describe(error)),
    }
    timings.push(Timing {
        step: "incident: migrate deploy",
        duration: started.elapsed(),
        figures: if incident.is_err() {
            "contract failed on the NULLs, as in the incident".into()
        } else {
            "contract applied".into()
        },
    });
    let status = migrate::status(&mut client, &migrations)?;
    println!("== migrate status\n{}", status.render());

    let dry_run = runbook::recover(
        &mut client,
        &url,
        &migrations,
        &RecoverOptions {
            dry_run: true,
            ..Default::default()
        },
    )?;
    println!("{}", dry_run.render());

    let started = Instant::now();
    let recovered = runbook::recover(&mut client, &url, &migrations, &RecoverOptions::default())?;
    println!("{}", recovered.render());
    let backfilled: i64 = recovered
        .report
        .steps
        .iter()
        .filter(|s| s.name == "backfill")
        .filter_map(|s| s.rows)
        .sum();
    timings.push(Timing {
        step: "recover",
        duration: started.elapsed(),
        figures: format!("{} rows backfilled", thousands(backfilled)),
    });

    let started = Instant::now();
    let released = runbook::release(
        &mut client,
        &url,
        &migrations,
        &ReleaseOptions {
            build: AppBuild::from_env(false),
            ..ReleaseOptions::default()
        },
    )?;
    println!("{}", released.render());
    timings.push(Timing {
        step: "release (build + smoke)",
        duration: started.elapsed(),
        figures: if released.ok {
            "smoke passed".into()
        } else {
            "failed".into()
        },
    });

    let started = Instant::now();
    let verification = verify::verify(&mut client)?;
    println!("== verify\n{}", verification.render());
    timings.push(Timing {
        step: "verify",
        duration: started.elapsed(),
        figures: if verification.is_ok() {
            "all ok".into()
        } else {
            "not ok".into()
        },
    });

    let mut table = Table::new(&["step", "seconds", "figures"]);
    for timing in &timings {
        table.push(vec![
            timing.step.to_string(),
            format!("{:.2}", timing.duration.as_secs_f64()),
            timing.figures.clone(),
        ]);
    }
    println!("== timings\n{}", table.render());

    let ok = incident.is_err() && recovered.report.ok && released.ok && verification.is_ok();
    if keep {
        let database_url = cluster.socket_url("datahub_demo");
        let stop = cluster.keep();
        println!("The cluster keeps running: DATABASE_URL={database_url}");
        println!("Look around: DATABASE_URL='{database_url}' cargo run -p app -- --listen 127.0.0.1:8080");
        println!(
            "then open http://127.0.0.1:8080/data and sign in as {} / {}",
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD
        );
        println!("Stop it with: {stop}");
    } else {
        drop(client);
        cluster.stop();
    }
    println!(
        "demo {} in {:.1} s",
        if ok { "finished" } else { "FAILED" },
        demo_started.elapsed().as_secs_f64()
    );
    Ok(Outcome::from_ready(ok))
}
