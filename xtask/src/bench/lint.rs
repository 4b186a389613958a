//! The lint figures of `cargo xtask bench`: `migrate lint` of a whole migrations folder, and of
//! a pull request's last two migrations (`--since`), each against a plain `migrate deploy` of
//! the same folder into an empty database on the same server, in the same run. The folder is
//! the repository's, or `--lint-migrations DIR` (a long history of another project).

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, Result};

use super::Figure;
use crate::cluster::TempCluster;
use crate::db::{quote_ident, Connect};
use crate::migrate::plan::{observe_all, PlanReport, PlanRequest};
use crate::migrate::shadow::Shadow;
use crate::migrate::{self, DeployOptions};
use crate::migrations::Migration;

/// Seconds a whole history of 160 migrations may take to lint, and a pull request's two.
const HISTORY_TARGET_SECONDS: f64 = 10.0;
const HISTORY_TARGET_MIGRATIONS: f64 = 160.0;
const PULL_REQUEST_TARGET_SECONDS: f64 = 2.0;

pub(super) fn figures(cluster: &TempCluster, migrations: &[Migration]) -> Result<Vec<Figure>> {
    let n = migrations.len();
    // The baseline: the folder deployed as it is, into an empty database.
    let mut admin = cluster.database_url("postgres")?.connect()?;
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {}",
            quote_ident("bench_lint_deploy")
        ))
        .context("cannot create the lint bench's database")?;
    let url = cluster.database_url("bench_lint_deploy")?;
    let mut client = url.connect()?;
    let started = Instant::now();
    migrate::deploy(&mut client, &url, migrations, &DeployOptions::default())?;
    let deploy = started.elapsed().as_secs_f64();
    drop(client);
    admin
        .batch_execute("DROP DATABASE bench_lint_deploy WITH (FORCE)")
        .context("cannot drop the lint bench's database")?;

    let mut shadow = Shadow::on_server(&cluster.url("postgres"))?;
    let lint = |shadow: &mut Shadow, targets: BTreeSet<String>, since: Option<String>| {
        let started = Instant::now();
        let observed = observe_all(
            shadow,
            &PlanRequest {
                migrations,
                targets,
                timezone: None,
                since,
                production: None,
            },
        )?;
        let seconds = started.elapsed().as_secs_f64();
        let report = PlanReport::new(String::new(), observed, true);
        anyhow::Ok((seconds, report))
    };
    let (whole, report) = lint(
        &mut shadow,
        migrations.iter().map(|m| m.name.clone()).collect(),
        None,
    )?;
    let failed = report.plans.iter().filter(|p| p.failure.is_some()).count();
    println!(
        "lint: {n} migrations in {whole:.2} s ({} observed, {failed} refused by PostgreSQL, {} blocking finding(s)) vs migrate deploy of the same folder in {deploy:.2} s",
        report.plans.len(),
        report.blocking().count()
    );
    let scaled = whole / n.max(1) as f64 * HISTORY_TARGET_MIGRATIONS;
    let mut figures = vec![Figure {
        name: "lint, every migration",
        ours: format!("{whole:.2} s ({n})"),
        baseline: format!("{deploy:.2} s"),
        ratio: whole / deploy,
        target: format!(
            "≤ {HISTORY_TARGET_SECONDS:.0} s per {HISTORY_TARGET_MIGRATIONS:.0} migrations"
        ),
        met: Some(scaled <= HISTORY_TARGET_SECONDS),
    }];
    if n >= 3 {
        let last_two: BTreeSet<String> =
            migrations[n - 2..].iter().map(|m| m.name.clone()).collect();
        let since = migrations[n - 3].name.clone();
        let (pull_request, _) = lint(&mut shadow, last_two, Some(since))?;
        println!("lint --since: the last 2 migrations in {pull_request:.2} s");
        figures.push(Figure {
            name: "lint, a pull request's 2 migrations",
            ours: format!("{pull_request:.2} s"),
            baseline: format!("{deploy:.2} s"),
            ratio: pull_request / deploy,
            target: format!("≤ {PULL_REQUEST_TARGET_SECONDS:.0} s"),
            met: Some(pull_request <= PULL_REQUEST_TARGET_SECONDS),
        });
    }
    Ok(figures)
}
