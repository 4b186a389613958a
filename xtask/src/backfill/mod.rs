//! `cargo xtask backfill`: fills the columns a declared release fills, by its declared rule, on
//! every row where they are NULL (`releases/`). Assumes the release's expand migration is
//! applied: it provides the columns and whatever the rule reads.
//!
//! Column by column, in batches of physical (`ctid`) page ranges, so the heap is read in order;
//! each batch is its own transaction, so a killed run keeps what it did and a re-run continues.
//! A row whose `workspaceId` is set is never touched. Between batches the workers keep streaming
//! standbys within `--max-replica-lag` (replica.rs) and, with `--max-horizon-age`, pause while an
//! old transaction, prepared transaction or replication slot holds back the xmin horizon
//! (horizon.rs).

mod held;
mod horizon;
mod plan;
mod progress;
pub(crate) mod replica;
mod slots;
mod worker;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{bail, Context, Result};
use pico_args::Arguments;
use serde_json::json;

use crate::cli::{self, Globals};
use crate::db::{Connect, DatabaseUrl};
use crate::error::Outcome;
use crate::migrate::state::State;
use crate::releases::{self, rule, Column, Fill, Release, Rule};
use crate::report::{self, thousands, Report, Style, Table};
pub use horizon::HorizonSummary;
use plan::{TablePlan, WorkerState};
pub use replica::{ReplicaLagLimit, ReplicaSummary, DEFAULT_MAX_REPLICA_LAG};

pub(crate) const SUMMARY: &str = "fills a release's new columns by its declared rule";

pub(crate) const HELP: &str = "\
cargo xtask backfill [--release NAME] [--batch-size N] [--workers N] [--time-limit SECONDS]
                     [--lock-timeout SECONDS] [--max-replica-lag MS]
                     [--max-horizon-age SECONDS] [--dry-run] [--json]
Fills the columns a release declares (migrations/<expand>/release.toml) on every row where they
are NULL, by the release's rule: for workspace-tenancy, the user's home workspace (the earliest
OWNER membership, else the earliest membership, else a personal workspace created for the
user). Without --release: every release whose expand is applied and whose contract is not.
Batches are physical page ranges of about N rows (default 10000), each its own
transaction and shrunk when one takes over 0.5 s: safe to interrupt and run again.
--workers N     N connections on disjoint page ranges (default 2, at most 16)
--time-limit S  start no new batch after S seconds; the next run continues
--max-replica-lag MS
                before each batch, wait while a streaming standby's replay is MS or more
                behind (and has WAL left to replay), saying which and how far; default 1000
                when the server streams to a standby, none otherwise (0: every byte replayed);
                reading the lag needs `pg_monitor`
--max-horizon-age S
                before each batch, pause while a transaction, prepared transaction or
                replication slot has held back the xmin horizon for S seconds or more (the
                row versions the backfill replaces cannot be vacuumed until it ends), naming
                it and its remedy; each pause lasts at most --lock-timeout, then the backfill
                stops (exit 1, its batches kept); default: no pause, the holder is only named
--lock-timeout S  how long to keep coming back for rows other transactions hold (default 60):
                a batch waits at most 50 ms for a lock, fills its range around the held rows
                and comes back for them; rows still held then are left NULL (exit 1)
--dry-run       only counts
--release NAME  only this release
Needs the release's expand migration; ends with ANALYZE so `cargo xtask check` is fast.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let dry_run = args.contains("--dry-run");
    let release: Option<String> = args
        .opt_value_from_str("--release")
        .map_err(cli::parse_error)?;
    let batch_size = cli::number(&mut args, "--batch-size", 1..=1_000_000)?;
    let workers = cli::number(&mut args, "--workers", 1..=16)?;
    let time_limit = cli::number(&mut args, "--time-limit", 1..=31_536_000)?;
    let max_replica_lag = cli::number(&mut args, "--max-replica-lag", 0..=86_400_000)?;
    let max_horizon_age = cli::number(&mut args, "--max-horizon-age", 0..=31_536_000)?;
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
        max_horizon_age: max_horizon_age.map(Duration::from_secs),
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
    let migrations = globals.migrations()?;
    let declared = releases::load(&migrations)?;
    let mut client = url.connect()?;
    let chosen = to_backfill(&mut client, &migrations, &declared, release.as_deref())?;
    let mut outcome = Outcome::Ready;
    if chosen.is_empty() {
        println!("Nothing to backfill: no declared release is expanded and waiting for its contract; nothing was changed.");
    }
    for release in chosen {
        let report = backfill(&mut client, &url, release, &options)?;
        if report::emit(&report, json)? != Outcome::Ready {
            outcome = Outcome::NotReady;
        }
    }
    Ok(outcome)
}

/// The releases `backfill` fills: `--release NAME`, or every release with a rule whose expand
/// is applied and whose contract is not. With none of those, a release whose expand is still
/// pending is named (its backfill refuses with the command to run first).
pub(crate) fn to_backfill<'a>(
    client: &mut Client,
    migrations: &[crate::migrations::Migration],
    declared: &'a [Release],
    name: Option<&str>,
) -> Result<Vec<&'a Release>> {
    if let Some(name) = name {
        return Ok(vec![releases::find(declared, name)?]);
    }
    let status = crate::migrate::status(client, migrations)?;
    let mut chosen = Vec::new();
    let mut first_pending = None;
    for release in declared.iter().filter(|r| r.rule.is_some()) {
        let columns = release.columns(client)?;
        match release.phase(&status, &columns) {
            releases::Phase::Expanded if columns.any(Column::Nullable) => chosen.push(release),
            releases::Phase::Pending if first_pending.is_none() => first_pending = Some(release),
            _ => {}
        }
    }
    if chosen.is_empty() {
        if let Some(release) = first_pending {
            if status.state_of(&release.expand) != Some(&State::Applied) {
                chosen.push(release);
            }
        }
    }
    Ok(chosen)
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
    /// Pause between batches while something has held back the xmin horizon this long
    /// (`--max-horizon-age`); None: never pause, only name it.
    pub max_horizon_age: Option<Duration>,
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
            max_horizon_age: None,
            dry_run: false,
            progress: true,
            lock_budget: crate::db::LOCK_BUDGET,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TableResult {
    pub table: String,
    pub column: String,
    /// Rows updated (or, in a dry run, rows that would be).
    pub rows: i64,
    pub batches: u64,
    pub duration: Duration,
    /// NULL rows other transactions still held when the lock budget ran out.
    pub held: i64,
    /// NULL rows the rule gave no value (a row whose join finds nothing).
    pub unfilled: i64,
}

#[derive(Debug, Clone)]
pub struct BackfillReport {
    /// The release filled.
    pub release: String,
    pub dry_run: bool,
    /// The time limit stopped the run before every NULL was filled.
    pub stopped_early: bool,
    pub tables: Vec<TableResult>,
    /// What the rule's `prepare` created (or would create), and what it counts.
    pub prepared: i64,
    pub prepared_label: String,
    /// The standbys kept in step, when there were any (or a limit was given).
    pub replica: Option<ReplicaSummary>,
    /// The pauses for the xmin horizon, when `--max-horizon-age` was given.
    pub horizon: Option<HorizonSummary>,
    pub duration: Duration,
}

/// Backfills every column of `release`; `client` is the first worker, `url` opens the others.
pub fn backfill(
    client: &mut Client,
    url: &DatabaseUrl,
    release: &Release,
    options: &BackfillOptions,
) -> Result<BackfillReport> {
    let started = Instant::now();
    let Some(rule) = &release.rule else {
        bail!(
            "the release `{}` declares no backfill rule (`[backfill]` in `migrations/{}/release.toml`), so its columns are filled by whoever writes them; `cargo xtask check --release {}` counts what is left",
            release.name, release.expand, release.name
        );
    };
    let nulls = require_expand(client, release)?;
    let report = |tables: Vec<TableResult>, prepared: i64, dry_run: bool| BackfillReport {
        release: release.name.clone(),
        dry_run,
        stopped_early: false,
        tables,
        prepared,
        prepared_label: rule.prepared().to_string(),
        replica: None,
        horizon: None,
        duration: started.elapsed(),
    };
    let untouched = |nulls: Vec<(Fill, i64)>, keep_counts: bool| -> Vec<TableResult> {
        nulls
            .into_iter()
            .map(|(fill, rows)| TableResult {
                table: fill.table,
                column: fill.column,
                rows: if keep_counts { rows } else { 0 },
                batches: 0,
                duration: Duration::ZERO,
                held: 0,
                unfilled: 0,
            })
            .collect()
    };

    if options.dry_run {
        let prepared: i64 = match rule.prepare_dry_run() {
            Some(sql) => client
                .query_one(sql, &[])
                .with_context(|| {
                    format!(
                        "cannot count what the `{}` backfill would prepare",
                        release.name
                    )
                })?
                .get(0),
            None => 0,
        };
        return Ok(report(untouched(nulls, true), prepared, true));
    }
    if nulls.iter().all(|(_, n)| *n == 0) {
        // The count just made is the proof: nothing to fill, nothing to create.
        return Ok(report(untouched(nulls, false), 0, false));
    }
    let gate = replica::gate(client, options.max_replica_lag, options.progress)?;

    let prepared: i64 = match rule.prepare() {
        Some(sql) => client
            .long("the backfill's `prepare` step", |client| {
                client.query_one(sql, &[])
            })
            .with_context(|| {
                format!(
                    "cannot run the `{}` backfill's `prepare` step",
                    release.name
                )
            })?
            .get(0),
        None => 0,
    };
    let mut worker_connections = slots::connect_workers(url, options.workers as u64)?;
    let mut own_pids = Vec::new();
    for connection in std::iter::once(&mut *client).chain(worker_connections.iter_mut()) {
        own_pids.push(horizon::own_pid(connection)?);
        if let Some(sql) = rule.connection() {
            connection.batch_execute(sql).with_context(|| {
                format!(
                    "cannot run the `{}` backfill's `connection` step",
                    release.name
                )
            })?;
        }
        crate::db::set_lock_timeout(connection, BATCH_LOCK_TIMEOUT)?;
    }
    let horizon = horizon::Watch::start(url, own_pids.clone());
    own_pids.extend(horizon.pid());
    let horizon_gate = horizon::gate(
        options.max_horizon_age,
        options.lock_budget,
        options.progress,
        own_pids,
    );
    let gates = Gates {
        replica: gate.as_ref(),
        horizon: horizon_gate.as_ref(),
    };
    let result = backfill_tables(
        client,
        &mut worker_connections,
        rule,
        nulls,
        options,
        started,
        gates,
    );
    horizon.finish(
        result
            .as_ref()
            .map_or(0, |(t, _)| t.iter().map(|t| t.rows).sum()),
    );
    // The first connection goes on serving the caller (release, recover) after this.
    if !client.is_closed() {
        crate::db::set_lock_timeout(client, Duration::ZERO)?;
    }
    let (tables, stopped_early) = result?;
    if let Some(sql) = rule.cleanup() {
        client.batch_execute(sql).with_context(|| {
            format!(
                "cannot run the `{}` backfill's `cleanup` step",
                release.name
            )
        })?;
    }
    Ok(BackfillReport {
        stopped_early,
        replica: gate.as_ref().map(|g| g.summary()),
        horizon: horizon_gate.as_ref().map(|g| g.summary()),
        duration: started.elapsed(),
        ..report(tables, prepared, false)
    })
}

/// What the workers wait for between batches: standbys (`--max-replica-lag`) and the xmin
/// horizon (`--max-horizon-age`).
#[derive(Clone, Copy)]
struct Gates<'a> {
    replica: Option<&'a replica::ReplicaGate>,
    horizon: Option<&'a horizon::HorizonGate>,
}

fn backfill_tables(
    client: &mut Client,
    worker_connections: &mut [Client],
    rule: &Rule,
    nulls: Vec<(Fill, i64)>,
    options: &BackfillOptions,
    started: Instant,
    gates: Gates,
) -> Result<(Vec<TableResult>, bool)> {
    let deadline = options.time_limit.map(|limit| started + limit);
    let mut tables = Vec::new();
    let mut stopped_early = false;
    for (fill, total) in nulls {
        let (result, stopped) = backfill_table(
            client,
            worker_connections,
            rule,
            &fill,
            total,
            options,
            deadline,
            gates,
        )?;
        tables.push(result);
        if stopped {
            stopped_early = true;
            break;
        }
    }
    Ok((tables, stopped_early))
}

/// The expand migration provides what the backfill fills; without it there is nothing to fill.
/// Returns the NULL count per column.
fn require_expand(client: &mut Client, release: &Release) -> Result<Vec<(Fill, i64)>> {
    let columns = release.columns(client)?;
    let missing = columns.of(Column::Missing);
    if !missing.is_empty() {
        bail!(
            "the expand migration `{}` of the `{}` release is not applied (no {} column), so there is nothing to backfill: run `cargo xtask migrate deploy --to {}` first (or `cargo xtask release`)",
            release.expand,
            release.name,
            missing
                .iter()
                .map(|f| format!("`{}`.`{}`", f.table, f.column))
                .collect::<Vec<_>>()
                .join(", "),
            release.expand
        );
    }
    release.null_counts(client, &columns)
}

/// Backfills one column: the heap's pages are handed out in ranges to the workers, each range
/// one transaction, until every page was visited; then a sweep fills what the batches missed.
/// Returns the result and whether the time limit stopped it.
#[allow(clippy::too_many_arguments)]
fn backfill_table(
    client: &mut Client,
    worker_connections: &mut [Client],
    rule: &Rule,
    fill: &Fill,
    total: i64,
    options: &BackfillOptions,
    deadline: Option<Instant>,
    gates: Gates,
) -> Result<(TableResult, bool)> {
    let started = Instant::now();
    let table = fill.table.as_str();
    let column = fill.column.as_str();
    let mut result = TableResult {
        table: table.to_string(),
        column: column.to_string(),
        rows: 0,
        batches: 0,
        duration: Duration::ZERO,
        held: 0,
        unfilled: 0,
    };
    if total == 0 {
        if options.progress {
            eprintln!("  {table}.{column}: no NULLs, skipped");
        }
        return Ok((result, false));
    }
    let (pages, rows_per_page): (i64, f64) = {
        let row = client
            .query_one(rule::TABLE_PAGES_SQL, &[&crate::db::quote_ident(table)])
            .with_context(|| format!("cannot read the size of `{table}`"))?;
        (row.get(0), row.get(1))
    };
    let max_pages = ((options.batch_size as f64 / rows_per_page.max(1.0)).floor() as i64).max(1);
    let state = WorkerState::default();
    let plan = TablePlan {
        table,
        column,
        rule,
        pages,
        max_pages,
        batch_time: options.batch_time,
        deadline,
        replica: gates.replica,
        horizon: gates.horizon,
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
                    gates
                        .replica
                        .and_then(|r| r.waiting())
                        .or_else(|| gates.horizon.and_then(|h| h.waiting())),
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
    let sweep = rule.sweep_sql(table, column);
    loop {
        crate::interrupt::check()?;
        let swept = crate::interrupt::cancellable(client, |client| {
            client.long(&format!("the sweep of `{table}`"), |client| {
                client.query(sweep.as_str(), &[&sweep_limit])
            })
        });
        let (filled, left_null) = match swept {
            Ok(rows) => {
                let filled = rows.iter().filter(|r| r.get::<_, bool>(0)).count() as i64;
                (filled, rows.len() as i64 - filled)
            }
            // The table lock is taken (SKIP LOCKED covers rows): leave the rest to `check`.
            Err(error) if crate::db::is_lock_timeout(&error) => (0, 0),
            Err(error) => {
                let error = plan::batch_error(error, table, 0, 0);
                return Err(signalled(error, table, result.rows, total));
            }
        };
        result.rows += filled;
        if filled > 0 {
            result.batches += 1;
        }
        // A sweep that filled nothing has only rows the rule gives no value left in its pick.
        if filled == 0 {
            result.unfilled = left_null;
            break;
        }
    }
    let held = std::mem::take(&mut *state.held.lock().unwrap_or_else(|e| e.into_inner()));
    if !held.is_empty() {
        let came_back = held::come_back(
            client,
            &plan,
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
        client.long(&format!("`ANALYZE` of `{table}`"), |client| {
            client.batch_execute(&rule::analyze_sql(table))
        })
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
        self.total_rows() == 0 && self.prepared == 0
    }

    /// NULL rows the rule gave no value.
    pub fn unfilled(&self) -> i64 {
        self.tables.iter().map(|t| t.unfilled).sum()
    }

    /// "Personal workspaces", from the rule's `prepared`.
    fn prepared_title(&self) -> String {
        let mut chars = self.prepared_label.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => String::new(),
        }
    }

    /// Whether the run proves that no NULL is left: it ran to the end and no row stayed held by
    /// another transaction, so each table either had none when it was counted or was swept
    /// until its final scan found none. Together with the
    /// expand's `CHECK ("workspaceId" IS NOT NULL) NOT VALID`, which refuses new NULLs, that
    /// holds until the contract; the release's gate reads it instead of counting again.
    pub fn proves_no_nulls(&self) -> bool {
        !self.dry_run && !self.stopped_early && self.held() == 0 && self.unfilled() == 0
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
                "Dry run: nothing was changed.\n{}{} that would be created: {}\n",
                self.table(style).render(),
                self.prepared_title(),
                self.prepared
            );
        }
        if self.changed_nothing() && self.held() == 0 {
            return format!(
                "Nothing to backfill: every value the `{}` release fills is already set; nothing was changed.\n",
                self.release
            );
        }
        let seconds = self.duration.as_secs_f64();
        let held: Vec<String> = self
            .tables
            .iter()
            .filter(|t| t.held > 0)
            .map(|t| format!("{} of `{}`", thousands(t.held), t.table))
            .collect();
        let unfilled: Vec<String> = self
            .tables
            .iter()
            .filter(|t| t.unfilled > 0)
            .map(|t| format!("{} of `{}`.`{}`", thousands(t.unfilled), t.table, t.column))
            .collect();
        let next = if !unfilled.is_empty() {
            format!(
                "The rule of `{}` gives no value to {} row(s) and leaves them NULL (the contract would fail on them); fix those rows or the rule in `release.toml`, then run `cargo xtask backfill --release {}` again",
                self.release,
                unfilled.join(", "),
                self.release
            )
        } else if !held.is_empty() {
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
        let horizon = match &self.horizon {
            None => String::new(),
            Some(h) => format!(
                "xmin horizon age limit {} s: paused {} time(s), {} in all.\n",
                h.limit.as_secs(),
                h.pauses,
                style.seconds(h.paused)
            ),
        };
        format!(
            "{}{} created: {}\n{replica}{horizon}Backfilled {} rows in {} ({rate} rows/s). {next}\n",
            self.table(style).render(),
            self.prepared_title(),
            self.prepared,
            thousands(self.total_rows()),
            style.seconds(self.duration),
        )
    }

    fn to_json(&self) -> serde_json::Value {
        crate::report::document(
            "backfill",
            json!({
                "dry_run": self.dry_run,
                "stopped_early": self.stopped_early,
                "release": self.release,
                "prepared": self.prepared,
                "prepared_label": self.prepared_label,
                "replica": self.replica.as_ref().map(|r| json!({
                    "max_replica_lag_ms": r.limit.as_millis() as u64,
                    "standbys": r.standbys,
                    "pauses": r.waits,
                    "paused_seconds": r.waited.as_secs_f64(),
                })),
                "horizon": self.horizon.as_ref().map(|h| json!({
                    "max_horizon_age_seconds": h.limit.as_secs(),
                    "pauses": h.pauses,
                    "paused_seconds": h.paused.as_secs_f64(),
                })),
                "rows": self.total_rows(),
                "seconds": self.duration.as_secs_f64(),
                "tables": self.tables.iter().map(|t| json!({
                    "table": t.table,
                    "column": t.column,
                    "unfilled": t.unfilled,
                    "rows": t.rows,
                    "batches": t.batches,
                    "seconds": t.duration.as_secs_f64(),
                    "held": t.held,
                })).collect::<Vec<_>>(),
                "held": self.held(),
                "unfilled": self.unfilled(),
            }),
        )
    }

    /// A backfill that ran is done, even when the time limit stopped it early (it says so);
    /// rows left NULL because other transactions held them are not done (exit 1).
    fn ok(&self) -> bool {
        self.held() == 0 && self.unfilled() == 0
    }
}
