//! `cargo xtask backfill`: sets `workspaceId` to the home workspace of `userId` on every Data
//! Hub row where it is NULL (SPEC §4). Assumes the expand migration is applied: it provides the
//! columns, the `datahub_home_workspace` view (the rule) and `datahub_ensure_personal_workspace`.
//!
//! Table by table, in batches of physical (`ctid`) page ranges, so the heap is read in order;
//! each batch is its own transaction, so a killed run keeps what it did and a re-run continues.
//! A row whose `workspaceId` is set is never touched.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use postgres::Client;
use serde_json::json;

use crate::check::{self, CheckReport};
use crate::db::{quote_ident, DatabaseUrl};
use crate::migrations::EXPAND;
use crate::report::{thousands, Table};

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// The most rows one batch (one transaction) updates, roughly: batches are page ranges
    /// sized from the table's rows per page.
    pub batch_size: u64,
    /// The longest a batch should take: a slower batch halves the next one's page range (and
    /// a fast one grows it back, up to `batch_size` rows), so no batch holds its row locks long.
    pub batch_time: Duration,
    /// Connections updating disjoint page ranges at once (1 = the given connection only). Two
    /// keep both cores of a small server busy: one UPDATE stream is bound by one core.
    pub workers: usize,
    /// Where the extra workers connect; without it the backfill runs on one connection.
    pub url: Option<DatabaseUrl>,
    /// Start no new batch after this long; a later run continues where this one stopped.
    pub time_limit: Option<Duration>,
    pub dry_run: bool,
    /// Print progress lines on stderr.
    pub progress: bool,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            batch_size: 10_000,
            batch_time: Duration::from_millis(500),
            workers: 2,
            url: None,
            time_limit: None,
            dry_run: false,
            progress: true,
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
}

#[derive(Debug, Clone)]
pub struct BackfillReport {
    pub dry_run: bool,
    /// The time limit stopped the run before every NULL was filled.
    pub stopped_early: bool,
    pub tables: Vec<TableResult>,
    pub personal_workspaces: i64,
    pub duration: Duration,
}

/// Users who own rows with a NULL `workspaceId` and have no membership at all: they get a
/// personal workspace. Each EXISTS is an index probe on the table's `userId` index.
const NEEDS_PERSONAL_SQL: &str = r#"
    SELECT u."id" FROM "User" u
    WHERE NOT EXISTS (SELECT 1 FROM "WorkspaceMember" m WHERE m."userId" = u."id")
      AND (EXISTS (SELECT 1 FROM "Connection" t WHERE t."userId" = u."id" AND t."workspaceId" IS NULL)
        OR EXISTS (SELECT 1 FROM "MetricDaily" t WHERE t."userId" = u."id" AND t."workspaceId" IS NULL)
        OR EXISTS (SELECT 1 FROM "Insight" t WHERE t."userId" = u."id" AND t."workspaceId" IS NULL)
        OR EXISTS (SELECT 1 FROM "ChatMessage" t WHERE t."userId" = u."id" AND t."workspaceId" IS NULL))"#;

pub fn backfill(client: &mut Client, options: &BackfillOptions) -> Result<BackfillReport> {
    let started = Instant::now();
    let nulls = require_expand(client)?;

    if options.dry_run {
        let personal: i64 = client
            .query_one(
                &format!(
                    r#"SELECT count(*) FROM ({NEEDS_PERSONAL_SQL}) needy
                       WHERE NOT EXISTS (SELECT 1 FROM "Workspace" w WHERE w."id" = 'personal_' || needy."id")"#
                ),
                &[],
            )
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
                })
                .collect(),
            personal_workspaces: personal,
            duration: started.elapsed(),
        });
    }

    let personal_workspaces = create_personal_workspaces(client)?;
    let mut extra = Vec::new();
    if let Some(url) = &options.url {
        for _ in 1..options.workers.max(1) {
            extra.push(url.connect()?);
        }
    }
    load_home_mapping(client)?;
    for worker in &mut extra {
        load_home_mapping(worker)?;
    }
    let deadline = options.time_limit.map(|limit| started + limit);
    let mut tables = Vec::new();
    let mut stopped_early = false;
    for (table, total) in nulls {
        let (result, stopped) =
            backfill_table(client, &mut extra, &table, total, options, deadline)?;
        tables.push(result);
        if stopped {
            stopped_early = true;
            break;
        }
    }
    client.batch_execute("DROP TABLE IF EXISTS pg_temp.datahub_home")?;
    Ok(BackfillReport {
        dry_run: false,
        stopped_early,
        tables,
        personal_workspaces,
        duration: started.elapsed(),
    })
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
            r#"SELECT to_regclass('"datahub_home_workspace"') IS NOT NULL
                  AND to_regproc('"datahub_ensure_personal_workspace"') IS NOT NULL"#,
            &[],
        )
        .context("cannot look up the expand migration's helpers")?
        .get(0);
    if !missing_columns.is_empty() || !helpers_exist {
        bail!(
            "the expand migration `{EXPAND}` is not applied (no workspaceId column on {}), so there is nothing to backfill; run `cargo xtask migrate deploy --to {EXPAND}` first",
            if missing_columns.is_empty() {
                "some tables".to_string()
            } else {
                missing_columns.join(", ")
            }
        );
    }
    Ok(nulls)
}

/// Creates the personal workspaces, one transaction. The ids are derived from the user id and
/// inserted with ON CONFLICT DO NOTHING, so a killed and repeated run creates each only once.
fn create_personal_workspaces(client: &mut Client) -> Result<i64> {
    // The EXISTS sees the statement's snapshot, taken before the function inserts anything.
    let row = client
        .query_one(
            &format!(
                r#"SELECT count(*) FILTER (WHERE NOT existed) FROM (
                       SELECT EXISTS (SELECT 1 FROM "Workspace" w WHERE w."id" = 'personal_' || needy."id") AS existed,
                              "datahub_ensure_personal_workspace"(needy."id")
                       FROM ({NEEDS_PERSONAL_SQL}) needy
                   ) created"#
            ),
            &[],
        )
        .context("cannot create personal workspaces for users without a membership")?;
    Ok(row.get(0))
}

/// The rule, materialised once per run: `userId` → home `workspaceId`, with a primary key so
/// each batch joins by hash or index.
fn load_home_mapping(client: &mut Client) -> Result<()> {
    client
        .batch_execute(
            r#"DROP TABLE IF EXISTS pg_temp.datahub_home;
               CREATE TEMP TABLE datahub_home AS SELECT "userId", "workspaceId" FROM "datahub_home_workspace";
               ALTER TABLE pg_temp.datahub_home ADD PRIMARY KEY ("userId");
               ANALYZE pg_temp.datahub_home;"#,
        )
        .context("cannot load the home workspace of each user")
}

/// Backfills one table: the heap's pages are handed out in ranges to the workers, each range
/// one transaction, until every page was visited; then a sweep fills what the mapping missed.
/// Returns the result and whether the time limit stopped it.
fn backfill_table(
    client: &mut Client,
    extra: &mut [Client],
    table: &str,
    total: i64,
    options: &BackfillOptions,
    deadline: Option<Instant>,
) -> Result<(TableResult, bool)> {
    let started = Instant::now();
    let mut result = TableResult {
        table: table.to_string(),
        rows: 0,
        batches: 0,
        duration: Duration::ZERO,
    };
    if total == 0 {
        if options.progress {
            eprintln!("  {table}: no NULLs, skipped");
        }
        return Ok((result, false));
    }
    let quoted = quote_ident(table);
    // Pages now; rows that move to later pages while we run already have a workspaceId.
    let (pages, rows_per_page): (i64, f64) = {
        let row = client.query_one(
            "SELECT (pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint),
                    (CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples::float8 / c.relpages ELSE 60 END)::float8
             FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&quoted],
        )?;
        (row.get(0), row.get(1))
    };
    let max_pages = ((options.batch_size as f64 / rows_per_page.max(1.0)).floor() as i64).max(1);
    let shared = Shared {
        next_page: AtomicI64::new(0),
        rows: AtomicI64::new(0),
        batches: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        out_of_time: AtomicBool::new(false),
    };
    let job = Job {
        table,
        quoted: &quoted,
        pages,
        max_pages,
        batch_time: options.batch_time,
        deadline,
    };
    let main: &mut Client = client;
    let errors: Vec<anyhow::Error> = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for worker in std::iter::once(&mut *main).chain(extra.iter_mut()) {
            let (job, shared) = (&job, &shared);
            handles.push(scope.spawn(move || {
                let outcome = run_worker(worker, job, shared);
                if outcome.is_err() {
                    shared.stop.store(true, Ordering::SeqCst);
                }
                outcome
            }));
        }
        let mut last_report = Instant::now();
        while handles.iter().any(|h| !h.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
            if options.progress && last_report.elapsed() >= Duration::from_secs(1) {
                print_progress(
                    table,
                    shared.rows.load(Ordering::SeqCst),
                    total,
                    started.elapsed(),
                );
                last_report = Instant::now();
            }
        }
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("a backfill worker panicked").err())
            .collect()
    });
    if let Some(error) = errors.into_iter().next() {
        return Err(error);
    }
    result.rows = shared.rows.load(Ordering::SeqCst);
    result.batches = shared.batches.load(Ordering::SeqCst);
    if options.progress {
        print_progress(table, result.rows, total, started.elapsed());
    }
    if shared.out_of_time.load(Ordering::SeqCst) {
        result.duration = started.elapsed();
        return Ok((result, true));
    }
    // Rows the mapping did not cover (a user who joined a workspace mid-run, a row inserted
    // before the trigger existed): the per-row rule function fills them, in bounded batches.
    loop {
        let updated = client.execute(
            format!(
                r#"UPDATE {quoted} SET "workspaceId" = "datahub_home_workspace_id"("userId")
                   WHERE ctid = ANY (ARRAY(SELECT ctid FROM {quoted} WHERE "workspaceId" IS NULL LIMIT {}))"#,
                options.batch_size
            )
            .as_str(),
            &[],
        )?;
        if updated == 0 {
            break;
        }
        result.rows += updated as i64;
        result.batches += 1;
    }
    // Fresh statistics, so the next `check` uses the workspaceId index instead of a scan.
    client
        .batch_execute(&format!("ANALYZE {quoted}"))
        .with_context(|| format!("cannot ANALYZE `{table}`"))?;
    result.duration = started.elapsed();
    Ok((result, false))
}

/// What the workers of one table share: the next unclaimed page and the running totals.
struct Shared {
    next_page: AtomicI64,
    rows: AtomicI64,
    batches: AtomicU64,
    /// Another worker failed: stop claiming.
    stop: AtomicBool,
    out_of_time: AtomicBool,
}

struct Job<'a> {
    table: &'a str,
    quoted: &'a str,
    pages: i64,
    /// The page range that holds about `batch_size` rows: the largest a batch may claim.
    max_pages: i64,
    batch_time: Duration,
    deadline: Option<Instant>,
}

/// Claims page ranges until none are left, each range one UPDATE (one transaction) through a
/// TID range scan, so the heap is read in order. A batch slower than `batch_time` halves the
/// next range; a fast one doubles it again, up to `max_pages`.
fn run_worker(client: &mut Client, job: &Job, shared: &Shared) -> Result<()> {
    let mut pages_per_batch = job.max_pages;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if let Some(deadline) = job.deadline {
            if Instant::now() >= deadline && shared.batches.load(Ordering::SeqCst) > 0 {
                shared.out_of_time.store(true, Ordering::SeqCst);
                return Ok(());
            }
        }
        let first = shared
            .next_page
            .fetch_add(pages_per_batch, Ordering::SeqCst);
        if first >= job.pages {
            return Ok(());
        }
        let end = (first + pages_per_batch).min(job.pages);
        // The page bounds are integers we computed; ctid range quals make this a TID range scan.
        let sql = format!(
            r#"UPDATE {} AS t SET "workspaceId" = h."workspaceId"
               FROM pg_temp.datahub_home h
               WHERE t.ctid >= '({first},0)'::tid AND t.ctid < '({end},0)'::tid
                 AND t."workspaceId" IS NULL AND h."userId" = t."userId""#,
            job.quoted
        );
        let batch_started = Instant::now();
        let updated = client.execute(sql.as_str(), &[]).with_context(|| {
            format!(
                "backfill batch of `{}` (pages {first}..{end}) failed; run `cargo xtask backfill` again to continue",
                job.table
            )
        })?;
        shared.rows.fetch_add(updated as i64, Ordering::SeqCst);
        shared.batches.fetch_add(1, Ordering::SeqCst);
        let took = batch_started.elapsed();
        if took > job.batch_time {
            pages_per_batch = (pages_per_batch / 2).max(1);
        } else if took < job.batch_time / 2 {
            pages_per_batch = (pages_per_batch * 2).min(job.max_pages);
        }
    }
}

fn print_progress(table: &str, done: i64, total: i64, elapsed: Duration) {
    let seconds = elapsed.as_secs_f64().max(0.001);
    let rate = done as f64 / seconds;
    let remaining = (total - done).max(0) as f64;
    let eta = if rate > 0.0 { remaining / rate } else { 0.0 };
    let percent = if total > 0 { done * 100 / total } else { 100 };
    eprintln!(
        "  {table}: {} / {} rows ({percent}%), {} rows/s, ETA {eta:.0} s",
        thousands(done),
        thousands(total),
        thousands(rate as i64)
    );
    let _ = std::io::stderr().flush();
}

impl BackfillReport {
    pub fn total_rows(&self) -> i64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    pub fn changed_nothing(&self) -> bool {
        self.total_rows() == 0 && self.personal_workspaces == 0
    }

    pub fn table(&self) -> Table {
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
            table.push(vec![
                t.table.clone(),
                thousands(t.rows),
                t.batches.to_string(),
                format!("{seconds:.2}"),
                thousands(rate),
            ]);
        }
        table
    }

    pub fn render(&self) -> String {
        if self.dry_run {
            return format!(
                "Dry run: nothing was changed.\n{}Personal workspaces that would be created: {}\n",
                self.table().render(),
                self.personal_workspaces
            );
        }
        if self.changed_nothing() {
            return "Nothing to backfill: every Data Hub workspaceId is already set; nothing was changed.\n".into();
        }
        let seconds = self.duration.as_secs_f64();
        let next = if self.stopped_early {
            "Stopped at the time limit with NULLs left. Next: `cargo xtask backfill` continues where this run stopped"
        } else {
            "Next: `cargo xtask check`"
        };
        format!(
            "{}Personal workspaces created: {}\nBackfilled {} rows in {:.2} s ({} rows/s). {next}\n",
            self.table().render(),
            self.personal_workspaces,
            thousands(self.total_rows()),
            seconds,
            thousands((self.total_rows() as f64 / seconds.max(0.001)) as i64)
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "dryRun": self.dry_run,
            "stoppedEarly": self.stopped_early,
            "personalWorkspaces": self.personal_workspaces,
            "rows": self.total_rows(),
            "seconds": self.duration.as_secs_f64(),
            "tables": self.tables.iter().map(|t| json!({
                "table": t.table,
                "rows": t.rows,
                "batches": t.batches,
                "seconds": t.duration.as_secs_f64(),
            })).collect::<Vec<_>>(),
        })
    }
}
