//! `bench --workers 1,2,4`: the backfill's scaling curve. Each further worker count backfills a
//! fresh copy of the seeded database at the expand migration, with the app writing and the
//! standby replaying alongside, under the backfill's default replica lag limit.

use std::time::Duration;

use crate::db::Client;
use anyhow::{Context, Result};

use super::replica::{self, Lag, LagSampler};
use super::writer::{Writer, WriterPlan};
use crate::backfill::{self, BackfillOptions, BackfillReport};
use crate::db::{quote_ident, Connect, DatabaseUrl};
use crate::report::{thousands, Table};

/// One point of the curve.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    pub workers: usize,
    pub rows_per_second: f64,
    pub insert_p99: f64,
    pub lag: Lag,
    pub wal_per_row: f64,
    /// Time the backfill paused for the standby.
    pub paused: Duration,
}

impl Point {
    pub(crate) fn new(
        workers: usize,
        report: &BackfillReport,
        insert_p99: f64,
        lag: Lag,
        wal: i64,
    ) -> Point {
        let rows = report.total_rows().max(1) as f64;
        Point {
            workers,
            rows_per_second: rows / report.duration.as_secs_f64(),
            insert_p99,
            lag,
            wal_per_row: wal as f64 / rows,
            paused: report
                .replica
                .as_ref()
                .map(|r| r.waited)
                .unwrap_or_default(),
        }
    }
}

/// Backfills a copy of `template` (at the expand migration) once per worker count.
pub(crate) fn measure(
    admin: &mut Client,
    copy_url: &DatabaseUrl,
    copy_name: &str,
    template: &str,
    counts: &[usize],
    release: &crate::releases::Release,
    plan: impl Fn(&mut Client) -> Result<WriterPlan>,
) -> Result<Vec<Point>> {
    let mut points = Vec::new();
    for &workers in counts {
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY",
                quote_ident(copy_name),
                quote_ident(template)
            ))
            .context("cannot copy the bench database")?;
        let point = (|| -> Result<Point> {
            let mut client = copy_url.connect()?;
            replica::settle(admin)?;
            eprintln!("scaling: backfill --workers {workers}, with the app writing alongside ...");
            let writer = Writer::start(copy_url, plan(&mut client)?)?;
            let sampler = LagSampler::start(copy_url)?;
            let wal = replica::wal_position(&mut client)?;
            let report = backfill::backfill(
                &mut client,
                copy_url,
                release,
                &BackfillOptions {
                    workers,
                    ..BackfillOptions::default()
                },
            )?;
            let wal = replica::wal_since(&mut client, &wal)?;
            let lag = sampler.finish()?;
            let app = writer.finish()?;
            Ok(Point::new(workers, &report, app.insert_p99(), lag, wal))
        })();
        admin
            .batch_execute(&format!(
                "DROP DATABASE {} WITH (FORCE)",
                quote_ident(copy_name)
            ))
            .context("cannot drop the bench database copy")?;
        points.push(point?);
    }
    Ok(points)
}

/// The curve as a table, against one `UPDATE … FROM`'s rows/s.
pub(crate) fn table(points: &[Point], one_update: f64) -> Table {
    let mut table = Table::new(&[
        "workers",
        "rows/s",
        "vs one UPDATE",
        "app insert p99",
        "replica lag max",
        "paused for replica",
        "WAL per row",
    ]);
    let mut sorted = points.to_vec();
    sorted.sort_by_key(|p| p.workers);
    for p in sorted {
        table.push(vec![
            p.workers.to_string(),
            thousands(p.rows_per_second as i64),
            format!("{:.2}", p.rows_per_second / one_update),
            format!("{:.1} ms", p.insert_p99),
            format!("{} ms", thousands(p.lag.max_ms as i64)),
            format!("{:.1} s", p.paused.as_secs_f64()),
            format!("{} B", thousands(p.wal_per_row as i64)),
        ]);
    }
    table
}
