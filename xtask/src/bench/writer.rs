//! The app, simulated: a connection that keeps writing while a migration step runs, and records
//! how long each write took. What it measures is what users of the app would feel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::db::{Connect, DatabaseUrl};
use crate::tenancy;

/// Latencies seen by one writer, in milliseconds.
#[derive(Debug, Default, Clone)]
pub(crate) struct Latencies {
    pub inserts: Vec<f64>,
    /// Updates of a row the step under test had already dealt with (see `Writer::start`).
    pub updates: Vec<f64>,
    /// When the slowest write started, how long it took in ms, and what it was.
    pub slowest: Option<(Instant, f64, &'static str)>,
}

impl Latencies {
    pub(crate) fn insert_p99(&self) -> f64 {
        percentile(&self.inserts, 0.99)
    }

    pub(crate) fn longest_insert(&self) -> f64 {
        self.inserts.iter().copied().fold(0.0, f64::max)
    }

    pub(crate) fn longest_update(&self) -> f64 {
        self.updates.iter().copied().fold(0.0, f64::max)
    }

    fn record_slowest(&mut self, started: Instant, ms: f64, kind: &'static str) {
        if self.slowest.is_none_or(|(_, worst, _)| ms > worst) {
            self.slowest = Some((started, ms, kind));
        }
    }
}

pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

pub(crate) fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Latencies>>,
}

pub(crate) struct WriterPlan {
    /// Pause between iterations (0: as fast as it can, the probe).
    pub pause: Duration,
    /// Also update the row with this id each iteration, once `update_after` has passed.
    pub update_id: Option<String>,
    pub update_after: Duration,
    /// And only once the row's `workspaceId` is visibly set: the step under test has committed
    /// it. A watcher of its own reads it, so the app's loop never waits on that read (a read
    /// waits behind an ACCESS EXCLUSIVE lock too).
    pub update_once_filled: bool,
    /// Where the inserted rows' dates start (each insert uses the next day, so the unique
    /// (userId, provider, date) key never collides between writers).
    pub first_day: i32,
}

impl Writer {
    /// Starts writing now: each iteration inserts one MetricDaily row for the bench user, as the
    /// old app does (no workspaceId), and updates `update_id` as the app would.
    pub(crate) fn start(url: &DatabaseUrl, plan: WriterPlan) -> Result<Writer> {
        let mut client = url.connect()?;
        let stop = Arc::new(AtomicBool::new(false));
        let filled = Arc::new(AtomicBool::new(!plan.update_once_filled));
        if let (true, Some(id)) = (plan.update_once_filled, plan.update_id.clone()) {
            watch_until_filled(url, id, filled.clone(), stop.clone())?;
        }
        // Prepared before the step under test starts, so no write goes untimed: a prepare
        // waits behind an ACCESS EXCLUSIVE lock like any statement.
        let insert = client.prepare(
            r#"INSERT INTO "MetricDaily" ("id", "userId", "provider", "date", "impressions", "clicks", "spend", "conversions")
               VALUES ('bench_' || $1::int, 'bench_writer', 'google-ads', date '1900-01-01' + $1::int, 1, 1, 1, 1)"#,
        ).context("cannot prepare the writer's insert")?;
        let update = client
            .prepare(r#"UPDATE "MetricDaily" SET "clicks" = "clicks" + 1 WHERE "id" = $1"#)
            .context("cannot prepare the writer's update")?;
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || -> Result<Latencies> {
            let started = Instant::now();
            let mut latencies = Latencies::default();
            let mut day = plan.first_day;
            while !stopping.load(Ordering::SeqCst) {
                let t = Instant::now();
                client
                    .execute(&insert, &[&day])
                    .context("the simulated app's insert failed")?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                latencies.inserts.push(ms);
                latencies.record_slowest(t, ms, "an insert");
                day += 1;
                if let Some(id) = &plan.update_id {
                    if started.elapsed() >= plan.update_after && filled.load(Ordering::SeqCst) {
                        let t = Instant::now();
                        client
                            .execute(&update, &[id])
                            .context("the simulated app's update failed")?;
                        let ms = t.elapsed().as_secs_f64() * 1000.0;
                        latencies.updates.push(ms);
                        latencies.record_slowest(t, ms, "an update");
                    }
                }
                if !plan.pause.is_zero() {
                    std::thread::sleep(plan.pause);
                }
            }
            Ok(latencies)
        });
        Ok(Writer { stop, handle })
    }

    pub(crate) fn finish(self) -> Result<Latencies> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the bench writer panicked"))?
    }
}

/// Sets `filled` once the row `id` of `MetricDaily` has a `workspaceId` (read through
/// `to_jsonb`, so the query also runs before the column exists), polling from a connection of
/// its own until then or until `stop`.
fn watch_until_filled(
    url: &DatabaseUrl,
    id: String,
    filled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut client = url.connect()?;
    std::thread::spawn(move || {
        let probe = r#"SELECT coalesce((SELECT to_jsonb(t) ->> 'workspaceId' FROM "MetricDaily" t WHERE t."id" = $1), '') <> ''"#;
        while !stop.load(Ordering::SeqCst) {
            match client.query_one(probe, &[&id]) {
                Ok(row) if row.get::<_, bool>(0) => {
                    filled.store(true, Ordering::SeqCst);
                    return;
                }
                // Not filled yet, or the read failed (the writer reports its own failures).
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Ok(())
}

/// Watches `pg_locks` from its own connection, as fast as it can, for granted ACCESS EXCLUSIVE
/// locks on the Data Hub tables, and reports the longest span one table was seen locked: from
/// the start of the first poll that saw it to the end of the last one (an upper bound).
pub(crate) struct LockWatcher {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<(f64, f64)>>,
}

impl LockWatcher {
    pub(crate) fn start(url: &DatabaseUrl) -> Result<LockWatcher> {
        let mut client = url.connect()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let handle = std::thread::spawn(move || -> Result<(f64, f64)> {
            let poll = client.prepare(
                "SELECT c.relname::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                 WHERE l.mode = 'AccessExclusiveLock' AND l.granted
                   AND c.relname::text = ANY($1)",
            )?;
            let tables = tenancy::tables_param();
            let mut spans: std::collections::HashMap<String, (Instant, Instant)> =
                Default::default();
            let mut polls = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                let before = Instant::now();
                let rows = client
                    .query(&poll, &[&tables])
                    .context("the lock watcher's poll of pg_locks failed")?;
                let after = Instant::now();
                polls.push((after - before).as_secs_f64() * 1000.0);
                for row in rows {
                    let table: String = row.get(0);
                    spans
                        .entry(table)
                        .and_modify(|span| span.1 = after)
                        .or_insert((before, after));
                }
            }
            let longest = spans
                .values()
                .map(|(first, last)| (*last - *first).as_secs_f64() * 1000.0)
                .fold(0.0, f64::max);
            Ok((longest, median(&polls)))
        });
        Ok(LockWatcher { stop, handle })
    }

    /// The longest hold in ms, and the median poll time (the measurement's resolution).
    pub(crate) fn finish(self) -> Result<(f64, f64)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the lock watcher panicked"))?
    }
}
