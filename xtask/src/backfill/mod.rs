//! `cargo xtask backfill`: sets `workspaceId` to the home workspace of `userId` on every Data
//! Hub row where it is NULL. Assumes the expand migration is applied: it provides the columns,
//! the rule as a view and the personal-workspace function.
//!
//! Table by table, in batches of physical (`ctid`) page ranges, so the heap is read in order;
//! each batch is its own transaction, so a killed run keeps what it did and a re-run continues.
//! A row whose `workspaceId` is set is never touched. Between batches the workers keep streaming
//! standbys within `--max-replica-lag` (replica.rs).

mod held;
mod progress;
pub(crate) mod replica;
mod worker;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pico_args::Arguments;
use postgres::Client;
use serde_json::json;

use crate::check::{self, CheckReport};
use crate::cli::{self, Globals};
use crate::db::{Connect, DatabaseUrl};
use crate::error::Outcome;
use crate::report::{self, thousands, Report, Style, Table};
use crate::tenancy::{self, EXPAND};
pub use replica::{ReplicaLagLimit, ReplicaSummary, DEFAULT_MAX_REPLICA_LAG};
use worker::{TablePlan, WorkerState};

pub(crate) const SUMMARY: &str = "fills NULL workspaceId values by the home-workspace rule";

pub(crate) const HELP: &str = "\
cargo xtask backfill [--batch-size N] [--workers N] [--time-limit SECONDS] [--lock-timeout SECONDS]
                     [--max-replica-lag MS] [--dry-run] [--json]
Sets workspaceId to the user's home workspace on every Data Hub row where it is NULL: the
earliest OWNER membership, else the earliest membership, else a personal workspace created for
the user. Batches are physical page ranges of about N rows (default 10000), each its own
transaction and shrunk when one takes over 0.5 s: safe to interrupt and run again.
--workers N     N connections on disjoint page ranges (default 2, at most 16)
--time-limit S  start no new batch after S seconds; the next run continues
--max-replica-lag MS
                before each batch, wait while a streaming standby's replay is MS or more
                behind (and has WAL left to replay), saying which and how far; default 1000
                when the server streams to a standby, none otherwise (0: every byte replayed);
                reading the lag needs `pg_monitor`
--lock-timeout S  how long to keep coming back for rows other transactions hold (default 60):
                a batch waits at most 50 ms for a lock, fills its range around the held rows
                and comes back for them; rows still held then are left NULL (exit 1)
--dry-run       only counts
Needs the expand migration; ends with ANALYZE so `cargo xtask check` is fast.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let dry_run = args.contains("--dry-run");
    let batch_size = cli::number(&mut args, "--batch-size", 1..=1_000_000)?;
    let workers = cli::number(&mut args, "--workers", 1..=16)?;
    let time_limit = cli::number(&mut args, "--time-limit", 1..=31_536_000)?;
    let max_replica_lag = cli::number(&mut args, "--max-replica-lag", 0..=86_400_000)?;
    let lock_budget = cli::number(
        &mut args,
        "--lock-timeout",
        crate::migrate::LOCK_TIMEOUT_SECONDS,
    )?;
    cli::finish(args, "backfill")?;
    let url = globals.url()?;
    let mut options = BackfillOptions {
        dry_run,
        time_limit: time_limit.map(Duration::from_secs),
        ..BackfillOptions::default()
    };
    if let Some(n) = batch_size {
        options.batch_size = n;
    }
    if let Some(n) = workers {
        options.workers = n as usize;
    }
    if let Some(ms) = max_replica_lag {
        options.max_replica_lag = ReplicaLagLimit::Max(Duration::from_millis(ms));
    }
    if let Some(seconds) = lock_budget {
        options.lock_budget = Duration::from_secs(seconds);
    }
    let mut client = url.connect()?;
    let report = backfill(&mut client, &url, &options)?;
    report::emit(&report, json)
}

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// The most rows one batch (one transaction) updates, roughly: batches are page ranges
    /// sized from the table's rows per page.
    pub batch_size: u64,
    /// The longest a batch should take: a slower batch halves the next one's page range (and
    /// a fast one grows it back, up to `batch_size` rows), so no batch holds its row locks long.
    pub batch_time: Duration,
    /// Connections updating disjoint page ranges at once. Two keep both cores of a small server
    /// busy: one UPDATE stream is bound by one core.
    pub workers: usize,
    /// Start no new batch after this long; a later run continues where this one stopped.
    pub time_limit: Option<Duration>,
    /// Pause between batches while a streaming standby lags by this much.
    pub max_replica_lag: ReplicaLagLimit,
    pub dry_run: bool,
    /// Print progress lines on stderr.
    pub progress: bool,
    /// How long to keep coming back for rows other transactions hold (`--lock-timeout`).
    pub lock_budget: Duration,
}

/// The longest a batch waits for a lock. A waiting batch keeps the row locks of every row it
/// has filled so far, so an app update of one of those waits as long: kept well under the
/// 100 ms an app write may wait. Most app transactions hold a row for a few milliseconds; a
/// batch that finds one held longer fills around it and comes back for it.
pub const BATCH_LOCK_TIMEOUT: Duration = Duration::from_millis(50);

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            batch_size: 10_000,
            batch_time: Duration::from_millis(500),
            workers: 2,
            time_limit: None,
            max_replica_lag: ReplicaLagLimit::Auto,
            dry_run: false,
            progress: true,
            lock_budget: crate::db::LOCK_BUDGET,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TableResult {
    pub table: String,
    /// Rows updated (or, in a dry run, rows that would be).
    pub rows: i64,
    pub batches: u64,
    pub duration: Duration,
    /// NULL rows other transactions still held when the lock budget ran out.
    pub held: i64,
}

#[derive(Debug, Clone)]
pub struct BackfillReport {
    pub dry_run: bool,
    /// The time limit stopped the run before every NULL was filled.
    pub stopped_early: bool,
    pub tables: Vec<TableResult>,
    pub personal_workspaces: i64,
    /// The standbys kept in step, when there were any (or a limit was given).
    pub replica: Option<ReplicaSummary>,
    pub duration: Duration,
}

/// Backfills every table; `client` is the first worker, `url` opens the others.
pub fn backfill(
    client: &mut Client,
    url: &DatabaseUrl,
    options: &BackfillOptions,
) -> Result<BackfillReport> {
    let started = Instant::now();
    let nulls = require_expand(client)?;

    if options.dry_run {
        let personal: i64 = client
            .query_one(&tenancy::count_personal_sql(), &[])
            .context("cannot count the personal workspaces a backfill would create")?
            .get(0);
        return Ok(BackfillReport {
            dry_run: true,
            stopped_early: false,
            tables: nulls
                .into_iter()
                .map(|(table, rows)| TableResult {
                    table,
                    rows,
                    batches: 0,
                    duration: Duration::ZERO,
                    held: 0,
                })
                .collect(),
            personal_workspaces: personal,
            replica: None,
            duration: started.elapsed(),
        });
    }
    if nulls.iter().all(|(_, n)| *n == 0) {
        // The count just made is the proof: nothing to fill, nothing to create.
        return Ok(BackfillReport {
            dry_run: false,
            stopped_early: false,
            tables: nulls
                .into_iter()
                .map(|(table, _)| TableResult {
                    table,
                    rows: 0,
                    batches: 0,
                    duration: Duration::ZERO,
                    held: 0,
                })
                .collect(),
            personal_workspaces: 0,
            replica: None,
            duration: started.elapsed(),
        });
    }
    let gate = replica::gate(client, options.max_replica_lag, options.progress)?;

    let personal_workspaces: i64 = client
        .query_one(&tenancy::create_personal_sql(), &[])
        .context("cannot create personal workspaces for users without a membership")?
        .get(0);
    let mut worker_connections = Vec::new();
    for _ in 1..options.workers.max(1) {
        worker_connections.push(url.connect()?);
    }
    for connection in std::iter::once(&mut *client).chain(worker_connections.iter_mut()) {
        connection
            .batch_execute(&tenancy::load_home_mapping_sql())
            .context("cannot load the home workspace of each user")?;
        crate::db::set_lock_timeout(connection, BATCH_LOCK_TIMEOUT)?;
    }
    let result = backfill_tables(
        client,
        &mut worker_connections,
        nulls,
        options,
        started,
        gate.as_ref(),
    );
    // The first connection goes on serving the caller (release, recover) after this.
    if !client.is_closed() {
        crate::db::set_lock_timeout(client, Duration::ZERO)?;
    }
    let (tables, stopped_early) = result?;
    client
        .batch_execute(tenancy::DROP_HOME_MAPPING_SQL)
        .context("cannot drop the temporary home workspace mapping")?;
    Ok(BackfillReport {
        dry_run: false,
        stopped_early,
        tables,
        personal_workspaces,
        replica: gate.as_ref().map(|g| g.summary()),
        duration: started.elapsed(),
    })
}

fn backfill_tables(
    client: &mut Client,
    worker_connections: &mut [Client],
    nulls: Vec<(String, i64)>,
    options: &BackfillOptions,
    started: Instant,
    gate: Option<&replica::ReplicaGate>,
) -> Result<(Vec<TableResult>, bool)> {
    let deadline = options.time_limit.map(|limit| started + limit);
    let mut tables = Vec::new();
    let mut stopped_early = false;
    for (table, total) in nulls {
        let (result, stopped) = backfill_table(
            client,
            worker_connections,
            &table,
            total,
            options,
            deadline,
            gate,
        )?;
        tables.push(result);
        if stopped {
            stopped_early = true;
            break;
        }
    }
    Ok((tables, stopped_early))
}

/// The expand migration provides what the backfill uses; without it there is nothing to fill.
/// Returns the NULL count per table, from the same `check` that proves the columns exist.
fn require_expand(client: &mut Client) -> Result<Vec<(String, i64)>> {
    let (missing_columns, nulls) = match check::check(client)? {
        CheckReport::MissingColumns { missing } => (missing, Vec::new()),
        CheckReport::Counts { nulls } => (Vec::new(), nulls),
    };
    let helpers_exist: bool = client
        .query_one(
            tenancy::HELPERS_EXIST_SQL,
            &[&tenancy::HOME_VIEW, &tenancy::ENSURE_PERSONAL_FUNCTION],
        )
        .context("cannot look up the expand migration's helpers")?
        .get(0);
    if !missing_columns.is_empty() || !helpers_exist {
        bail!(
            "the expand migration `{EXPAND}` is not applied (no `workspaceId` column on {}), so there is nothing to backfill: run `cargo xtask migrate deploy --to {EXPAND}` first",
            if missing_columns.is_empty() {
                "some tables".to_string()
            } else {
                missing_columns.join(", ")
            }
        );
    }
    Ok(nulls)
}

/// Backfills one table: the heap's pages are handed out in ranges to the workers, each range
/// one transaction, until every page was visited; then a sweep fills what the mapping missed.
/// Returns the result and whether the time limit stopped it.
fn backfill_table(
    client: &mut Client,
    worker_connections: &mut [Client],
    table: &str,
    total: i64,
    options: &BackfillOptions,
    deadline: Option<Instant>,
    replica: Option<&replica::ReplicaGate>,
) -> Result<(TableResult, bool)> {
    let started = Instant::now();
    let mut result = TableResult {
        table: table.to_string(),
        rows: 0,
        batches: 0,
        duration: Duration::ZERO,
        held: 0,
    };
    if total == 0 {
        if options.progress {
            eprintln!("  {table}: no NULLs, skipped");
        }
        return Ok((result, false));
    }
    let (pages, rows_per_page): (i64, f64) = {
        let row = client
            .query_one(tenancy::TABLE_PAGES_SQL, &[&crate::db::quote_ident(table)])
            .with_context(|| format!("cannot read the size of `{table}`"))?;
        (row.get(0), row.get(1))
    };
    let max_pages = ((options.batch_size as f64 / rows_per_page.max(1.0)).floor() as i64).max(1);
    let state = WorkerState::default();
    let plan = TablePlan {
        table,
        pages,
        max_pages,
        batch_time: options.batch_time,
        deadline,
        replica,
    };
    let errors: Vec<anyhow::Error> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for connection in std::iter::once(&mut *client).chain(worker_connections.iter_mut()) {
            let (plan, state) = (&plan, &state);
            handles.push(scope.spawn(move || {
                let outcome = worker::run(connection, plan, state);
                if outcome.is_err() {
                    state.stop.store(true, Ordering::SeqCst);
                }
                outcome
            }));
        }
        let mut last_report = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            if options.progress && last_report.elapsed() >= Duration::from_secs(1) {
                progress::print(
                    table,
                    state.rows.load(Ordering::SeqCst),
                    total,
                    started.elapsed(),
                    state.held_rows.load(Ordering::SeqCst),
                    replica.and_then(|r| r.waiting()),
                );
                last_report = Instant::now();
            }
        }
        handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(outcome) => outcome.err(),
                Err(_) => Some(anyhow::anyhow!("a backfill worker of `{table}` panicked")),
            })
            .collect()
    });
    if let Some(error) = errors.into_iter().next() {
        return Err(signalled(
            error,
            table,
            state.rows.load(Ordering::SeqCst),
            total,
        ));
    }
    result.rows = state.rows.load(Ordering::SeqCst);
    result.batches = state.batches.load(Ordering::SeqCst);
    if options.progress {
        progress::print(
            table,
            result.rows,
            total,
            started.elapsed(),
            state.held_rows.load(Ordering::SeqCst),
            None,
        );
    }
    if state.out_of_time.load(Ordering::SeqCst) {
        result.duration = started.elapsed();
        return Ok((result, true));
    }
    let sweep_limit = i64::try_from(options.batch_size).unwrap_or(i64::MAX);
    let sweep = tenancy::sweep_sql(table);
    loop {
        crate::interrupt::check()?;
        let updated = crate::interrupt::cancellable(client, |client| {
            client.execute(sweep.as_str(), &[&sweep_limit])
        });
        let updated = match updated {
            Ok(updated) => updated,
            // The table lock is taken (SKIP LOCKED covers rows): leave the rest to `check`.
            Err(error) if crate::db::is_lock_timeout(&error) => 0,
            Err(error) => {
                let error = worker::batch_error(error, table, 0, 0);
                return Err(signalled(error, table, result.rows, total));
            }
        };
        if updated == 0 {
            break;
        }
        result.rows += updated as i64;
        result.batches += 1;
    }
    let held = std::mem::take(&mut *state.held.lock().unwrap_or_else(|e| e.into_inner()));
    if !held.is_empty() {
        let came_back = held::come_back(
            client,
            table,
            held,
            options.lock_budget,
            deadline,
            options.progress,
        )
        .map_err(|error| signalled(error, table, result.rows, total))?;
        result.rows += came_back.filled;
        result.held = came_back.still_held;
    }
    analyze(client, table, options.lock_budget)?;
    result.duration = started.elapsed();
    Ok((result, false))
}

/// After SIGINT or SIGTERM, the error says what was done and what to run: the rows filled are
/// committed batch by batch, so they stay.
fn signalled(error: anyhow::Error, table: &str, rows: i64, total: i64) -> anyhow::Error {
    match crate::interrupt::requested() {
        Some(signal) => error.context(format!(
            "`{table}`: {} of {} rows backfilled before {} (kept); run `cargo xtask backfill` again to continue",
            crate::report::thousands(rows),
            crate::report::thousands(total),
            crate::interrupt::signal_name(signal)
        )),
        None => error,
    }
}

/// Fresh statistics, so `check` and the contract's guard read the index instead of scanning
/// (with the statistics from before the backfill, the planner takes every row for NULL).
/// ANALYZE's SHARE UPDATE EXCLUSIVE blocks neither reads nor writes, so it may wait longer than
/// a batch: for the autovacuum that 5 million updated rows start, which PostgreSQL cancels once
/// a conflicting lock request has waited `deadlock_timeout` (1 s by default). Skipped (said so)
/// only when the lock budget runs out.
fn analyze(client: &mut Client, table: &str, budget: Duration) -> Result<()> {
    crate::db::set_lock_timeout(client, budget)?;
    let outcome = crate::interrupt::cancellable(client, |client| {
        client.batch_execute(&tenancy::analyze_sql(table))
    });
    if !client.is_closed() {
        crate::db::set_lock_timeout(client, BATCH_LOCK_TIMEOUT)?;
    }
    match outcome {
        Ok(()) => Ok(()),
        Err(error) if crate::db::is_lock_timeout(&error) => {
            eprintln!("  {table}: ANALYZE skipped (another session holds a conflicting lock); `cargo xtask check` may scan the table");
            Ok(())
        }
        Err(error) => Err(error).with_context(|| format!("cannot ANALYZE `{table}`")),
    }
}

impl BackfillReport {
    pub fn total_rows(&self) -> i64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// NULL rows other transactions held beyond the lock budget.
    pub fn held(&self) -> i64 {
        self.tables.iter().map(|t| t.held).sum()
    }

    pub fn changed_nothing(&self) -> bool {
        self.total_rows() == 0 && self.personal_workspaces == 0
    }

    /// Whether the run proves that no NULL is left: it ran to the end and no row stayed held by
    /// another transaction, so each table either had none when it was counted or was swept
    /// until its final scan found none. Together with the
    /// expand's `CHECK ("workspaceId" IS NOT NULL) NOT VALID`, which refuses new NULLs, that
    /// holds until the contract; the release's gate reads it instead of counting again.
    pub fn proves_no_nulls(&self) -> bool {
        !self.dry_run && !self.stopped_early && self.held() == 0
    }

    fn table(&self, style: Style) -> Table {
        if self.dry_run {
            let mut table = Table::new(&["table", "rows to update"]);
            for t in &self.tables {
                table.push(vec![t.table.clone(), thousands(t.rows)]);
            }
            return table;
        }
        let mut table = Table::new(&["table", "rows updated", "batches", "seconds", "rows/s"]);
        for t in &self.tables {
            let seconds = t.duration.as_secs_f64();
            let rate = if seconds > 0.0 {
                (t.rows as f64 / seconds) as i64
            } else {
                0
            };
            let (seconds, rate) = if style.redact_durations {
                ("[duration]".to_string(), "[rate]".to_string())
            } else {
                (format!("{seconds:.2}"), thousands(rate))
            };
            table.push(vec![
                t.table.clone(),
                thousands(t.rows),
                t.batches.to_string(),
                seconds,
                rate,
            ]);
        }
        table
    }
}

impl Report for BackfillReport {
    fn render_with(&self, style: Style) -> String {
        if self.dry_run {
            return format!(
                "Dry run: nothing was changed.\n{}Personal workspaces that would be created: {}\n",
                self.table(style).render(),
                self.personal_workspaces
            );
        }
        if self.changed_nothing() && self.held() == 0 {
            return "Nothing to backfill: every Data Hub workspaceId is already set; nothing was changed.\n".into();
        }
        let seconds = self.duration.as_secs_f64();
        let held: Vec<String> = self
            .tables
            .iter()
            .filter(|t| t.held > 0)
            .map(|t| format!("{} of `{}`", thousands(t.held), t.table))
            .collect();
        let next = if !held.is_empty() {
            format!(
                "{} row(s) were held by other transactions (row locks) for longer than the lock budget (`--lock-timeout`) and are left NULL; everything else is filled. Next: `cargo xtask backfill` again once those transactions end (`pg_stat_activity` shows the long ones)",
                held.join(", ")
            )
        } else if self.stopped_early {
            "Stopped at the time limit with NULLs left. Next: `cargo xtask backfill` continues where this run stopped".to_string()
        } else {
            "Next: `cargo xtask check`".to_string()
        };
        let rate = if style.redact_durations {
            "[rate]".to_string()
        } else {
            thousands((self.total_rows() as f64 / seconds.max(0.001)) as i64)
        };
        let replica = match &self.replica {
            None => String::new(),
            Some(r) => format!(
                "Replica lag limit {} ms ({}): paused {} time(s), {} in all.\n",
                r.limit.as_millis(),
                match r.standbys.len() {
                    0 => "no standby at the start".to_string(),
                    _ => r.standbys.join(", "),
                },
                r.waits,
                style.seconds(r.waited)
            ),
        };
        format!(
            "{}Personal workspaces created: {}\n{replica}Backfilled {} rows in {} ({rate} rows/s). {next}\n",
            self.table(style).render(),
            self.personal_workspaces,
            thousands(self.total_rows()),
            style.seconds(self.duration),
        )
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "dryRun": self.dry_run,
            "stoppedEarly": self.stopped_early,
            "personalWorkspaces": self.personal_workspaces,
            "replica": self.replica.as_ref().map(|r| json!({
                "maxReplicaLagMs": r.limit.as_millis() as u64,
                "standbys": r.standbys,
                "pauses": r.waits,
                "pausedSeconds": r.waited.as_secs_f64(),
            })),
            "rows": self.total_rows(),
            "seconds": self.duration.as_secs_f64(),
            "tables": self.tables.iter().map(|t| json!({
                "table": t.table,
                "rows": t.rows,
                "batches": t.batches,
                "seconds": t.duration.as_secs_f64(),
                "held": t.held,
            })).collect::<Vec<_>>(),
            "held": self.held(),
        })
    }

    /// A backfill that ran is done, even when the time limit stopped it early (it says so);
    /// rows left NULL because other transactions held them are not done (exit 1).
    fn ok(&self) -> bool {
        self.held() == 0
    }
}
