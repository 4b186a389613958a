//! `migrate plan` and `migrate lint`: every migration run on a shadow database and observed.
//!
//! The shadow is built from the migrations folder alone: a database gets every migration up to
//! the one to judge, applied as deploy applies them (each file as one script); a copy of it
//! (`CREATE DATABASE … TEMPLATE`, about 20 ms) is filled with sample rows and the migration is
//! observed there statement by statement (`observe`), then the copy is dropped. The user's
//! database is only read, for `_prisma_migrations` (which migrations are pending) and its
//! `TimeZone` setting; the shadow databases live on a throwaway cluster, or on `--shadow-url`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::db::Client;
use anyhow::{Context, Result};
use pico_args::Arguments;
use serde_json::{json, Value};

use super::lint::{self, Finding};
use super::observe::{self, LockMode, MigrationPlan, Mode, Observation};
use super::production::{Baseline, TableSize};
use super::shadow::{Notices, Shadow};
use crate::cli::{self, Globals};
use crate::db::Connect;
use crate::error::{usage, Outcome};
use crate::migrations::{self, Migration};
use crate::report::{self, Report, Style, Table};

pub(crate) const PLAN_HELP: &str = "\
cargo xtask migrate plan [NAME…] [--all] [--json | --format text|markdown|json|github] [--fail-on-findings] [--shadow-url URL]
Runs each migration on a shadow database (a copy of the schema just before it, with sample
rows) the way deploy runs it, and shows per statement the table locks held (taken by it, and
still held from earlier statements of the same transaction), rewrites, scans, validations and
rows changed. Default: the migrations pending on DATABASE_URL (only `_prisma_migrations` and the
TimeZone setting are read there, and its tables' sizes from the catalog: a table it lacks counts
as new); --all, or without a database URL: every migration.
--fail-on-findings: exit 1 when lint finds a blocking statement (the plan is printed first).
--format github: the text, then each finding as a GitHub Actions annotation on its line.
";

pub(crate) const LINT_HELP: &str = "\
cargo xtask migrate lint [NAME… | --since NAME] [--migrations-dir DIR] [--json | --format text|json|github] [--shadow-url URL]
cargo xtask migrate lint --rules
Observes each migration (default: all of them) as `migrate plan` does, on one shadow database
where they are applied in order (one that PostgreSQL refuses is reported and the run goes on
without it), and exits 1 when one
would block the app on a table that existed before it: a rewrite, an index built without
CONCURRENTLY, a table read while a lock that blocks writes (SHARE and stronger) or reads
(ACCESS EXCLUSIVE) is held, or an UPDATE/DELETE of every row in one transaction. Each finding
names file:line, the lock, the table, what read it and the online-safe rewrite. A reviewed
exception is a comment just above the statement:
    -- lint: allow <rule> because <reason>
rules: table-rewrite, index-build, scan-under-lock, full-table-dml, fails, fails-on-sample-rows,
unknown-allow, unused-allow (`--rules` prints what each fires on and the safe way).
    --since NAME           lint the migrations after NAME; tables they create count as new
                           (empty), as a pull request's migrations would see them
--format github: the text, then each blocking finding as a GitHub Actions annotation
(`::error file=…,line=…::…`), which GitHub shows on that line of the pull request's diff.
With a database URL (--database-url or DATABASE_URL; only its catalog is read), a table that
does not exist there counts as new and empty, and findings show each table's rows and bytes.
";

/// Where the shadow databases are made: `--shadow-url` (a server where the role may CREATE
/// DATABASE; only `datahub_shadow_*` databases are created and dropped there), else a
/// throwaway cluster.
pub(crate) const SHADOW_OPTION_HELP: &str = "\
    --shadow-url URL       make the shadow databases on this server (the role needs CREATEDB;
                           only datahub_shadow_* databases are created and dropped there)
                           instead of a throwaway cluster (needs the PostgreSQL server binaries)
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Json,
    /// The text, then GitHub Actions workflow commands that annotate each finding's line.
    Github,
}

/// Every observed migration and what lint finds in it.
#[derive(Debug, Clone)]
pub struct PlanReport {
    /// Where the shadow ran and which migrations were chosen, for the header.
    pub header: String,
    pub plans: Vec<MigrationPlan>,
    /// Migrations not observed that could not be applied on the shadow: (name, why).
    pub not_applied: Vec<(String, String)>,
    pub findings: Vec<Vec<Finding>>,
    /// Per migration, where a rule could not judge and why.
    pub blind: Vec<Vec<String>>,
    /// Whether the report is lint's (verdicts) or plan's (tables).
    pub lint: bool,
}

/// What to plan: the migrations folder, the ones to observe, and where.
pub struct PlanRequest<'a> {
    pub migrations: &'a [Migration],
    pub targets: BTreeSet<String>,
    /// The user's TimeZone setting, when known (type changes to timestamptz depend on it).
    pub timezone: Option<String>,
    /// Tables created by migrations after this one count as new (`--since`).
    pub since: Option<String>,
    /// Production's tables and sizes (a database URL): a table it lacks counts as new.
    pub production: Option<BTreeMap<String, TableSize>>,
}

/// Every target migration observed, and the others that could not be applied on the shadow.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub plans: Vec<MigrationPlan>,
    /// Migrations applied but not observed (before or between the targets) that PostgreSQL
    /// refused even on empty tables: (name, why). The ones after them run without them.
    pub not_applied: Vec<(String, String)>,
}

impl From<Vec<MigrationPlan>> for Observed {
    fn from(plans: Vec<MigrationPlan>) -> Observed {
        Observed {
            plans,
            not_applied: Vec::new(),
        }
    }
}

/// Observes each target migration on `shadow`, in order, on one database: each migration is
/// applied (committed) where it was observed, so the next one is observed on its schema and
/// rows. A migration PostgreSQL refuses is observed again on tables without sample rows; when
/// it fails there too it is left out, and the run goes on without it.
pub fn observe_all(shadow: &mut Shadow, request: &PlanRequest) -> Result<Observed> {
    let mut observed = Observed::default();
    let Some(last) = request
        .migrations
        .iter()
        .rposition(|m| request.targets.contains(&m.name))
    else {
        return Ok(observed);
    };
    let first = request
        .migrations
        .iter()
        .position(|m| request.targets.contains(&m.name))
        .unwrap_or(0);
    // The migrations after `--since` are the set whose new tables count as new.
    let set_begins = match &request.since {
        Some(since) => {
            let name = &migrations::find(request.migrations, since)?.name;
            request
                .migrations
                .iter()
                .position(|m| &m.name == name)
                .map(|i| i + 1)
        }
        None => None,
    };
    // The state just before the first migration to observe is kept on the shadow, so a second
    // plan with the same beginning (the tests' corpus) starts from a copy of it.
    let checksums: Vec<String> = request.migrations[..first]
        .iter()
        .map(|m| m.checksum.clone())
        .collect();
    let cached = shadow
        .prefix(&checksums)
        .map(str::to_string)
        .filter(|_| set_begins.is_none_or(|begins| begins >= first));
    let (base, start) = match cached {
        Some(prefix) => (shadow.create(Some(&prefix))?, first),
        None => (shadow.create(None)?, 0),
    };
    let notices: Notices = Default::default();
    let mut client = shadow.connect(&base, Some(notices.clone()))?;
    let mut queries = observe::Queries::prepare(&mut client)?;
    let mut baseline = Baseline {
        since: None,
        production: request.production.clone(),
    };
    let mut reported_notes: BTreeSet<String> = BTreeSet::new();
    for (index, migration) in request
        .migrations
        .iter()
        .enumerate()
        .take(last + 1)
        .skip(start)
    {
        if index == first && start == 0 && first > 0 && shadow.prefix(&checksums).is_none() {
            // A template may have no connection open.
            drop(client);
            shadow.keep_prefix(checksums.clone(), &base)?;
            client = shadow.connect(&base, Some(notices.clone()))?;
            queries = observe::Queries::prepare(&mut client)?;
        }
        if set_begins == Some(index) {
            baseline.since = Some(observe::table_oids(&mut client, &queries)?);
        }
        if !request.targets.contains(&migration.name) {
            if let Err(why) = apply(&mut client, &queries, migration)? {
                observed.not_applied.push((migration.name.clone(), why));
            }
            continue;
        }
        eprintln!("observing `{}` ...", migration.name);
        let how = Observation {
            shadow,
            database: &base,
            notices: &notices,
            timezone: request.timezone.as_deref(),
            sample_rows: true,
            baseline: &baseline,
            queries: &queries,
        };
        let started = std::time::Instant::now();
        let mut plan = observe::observe(&mut client, &how, migration, display_path(migration))
            .with_context(|| format!("cannot observe `{}` on the shadow", migration.name))?;
        let fresh_may_help = plan
            .failure
            .as_ref()
            .is_some_and(|failure| fresh_rows_may_help(failure, &migration.script));
        if let (Some(failure), true) = (plan.failure.clone(), fresh_may_help) {
            // The rows were made before earlier migrations (as production's old rows were):
            // rows made now get today's defaults and triggers.
            observe::empty_tables(&mut client, &queries)?;
            let fresh = observe::observe(&mut client, &how, migration, display_path(migration))
                .with_context(|| format!("cannot observe `{}` on the shadow", migration.name))?;
            if fresh.failure.is_none() {
                let mut fresh = fresh;
                fresh.notes.push(format!(
                    "line {}: fails on the sample rows made before earlier migrations ({}, SQLSTATE {}), as production's old rows may; observed on sample rows made just before it",
                    failure.line, failure.message, failure.code
                ));
                plan = fresh;
            }
        }
        if let Some(failure) = plan.failure.clone() {
            // Without the sample rows: does it fail on its own, or only because of them?
            observe::empty_tables(&mut client, &queries)?;
            let how = Observation {
                sample_rows: false,
                ..how
            };
            let mut again = observe::observe(&mut client, &how, migration, display_path(migration))
                .with_context(|| format!("cannot observe `{}` on the shadow", migration.name))?;
            match &again.failure {
                None => {
                    again.notes.splice(0..0, plan.notes.drain(..));
                    again.notes.push(format!(
                        "line {}: fails only because of the shadow's sample rows ({}, SQLSTATE {}); observed again on tables without rows, which is what the plan shows; production's rows decide whether it fails there",
                        failure.line, failure.message, failure.code
                    ));
                    again.sample_failure = Some(failure);
                    plan = again;
                }
                Some(empty) => {
                    let note = format!(
                        "it fails on tables without rows too (line {}: {}): it is not applied on the shadow, and the migrations after it are observed without it",
                        empty.line, empty.message
                    );
                    if empty.line > failure.line {
                        // The sample rows stopped it earlier: the run without them saw more.
                        again.notes.splice(0..0, plan.notes.drain(..));
                        again.sample_failure = Some(failure);
                        plan = again;
                    }
                    plan.notes.push(note);
                    plan.applied = false;
                }
            }
        }
        // Every attempt counts: the time is what the migration cost the run.
        plan.duration = started.elapsed();
        plan.notes.retain(|note| {
            reported_notes.insert(note.clone()) || !note.contains("has no sample rows")
        });
        observed.plans.push(plan);
    }
    drop(client);
    shadow.drop_database(&base)?;
    Ok(observed)
}

/// Whether rows made just before the migration could pass where the rows carried from earlier
/// migrations failed: a guard (`RAISE`), a CHECK, a foreign key, a unique index over foreign
/// key columns or a `SET NOT NULL` meets today's defaults, triggers and parent rows on them. A
/// cast of a sample value fails on fresh rows alike, and a column added NOT NULL has no value
/// on any row.
fn fresh_rows_may_help(failure: &observe::Failure, script: &str) -> bool {
    let statement = super::statements::split(script)
        .into_iter()
        .find(|s| s.line == failure.line)
        .map(|s| s.sql.to_ascii_uppercase())
        .unwrap_or_default();
    match failure.code.as_str() {
        "P0001" | "23514" | "23503" | "23505" => true,
        "23502" => !statement.contains("ADD COLUMN") && !statement.contains("ADD \""),
        _ => false,
    }
}

/// Applies a migration that is not observed, as deploy does (the whole file as one script);
/// when PostgreSQL refuses it, once more on empty tables. `Err(why)` when it cannot be applied.
fn apply(
    client: &mut Client,
    queries: &observe::Queries,
    migration: &Migration,
) -> Result<std::result::Result<(), String>> {
    // As deploy runs it: no session settings of ours matter to a plain apply.
    if client.batch_execute(&migration.script).is_ok() {
        return Ok(Ok(()));
    }
    let _ = client.batch_execute("ROLLBACK");
    observe::empty_tables(client, queries)?;
    Ok(client
        .batch_execute(&migration.script)
        .map_err(|error| crate::db::describe_driver_error(&error)))
}

/// `migrations/<name>/migration.sql` for the repository's own folder, else the full path.
fn display_path(migration: &Migration) -> String {
    let file = migration.path.join("migration.sql");
    let root = crate::project::root();
    match file.strip_prefix(&root) {
        Ok(relative) => relative.display().to_string(),
        Err(_) => file.display().to_string(),
    }
}

impl PlanReport {
    pub fn new(header: String, observed: impl Into<Observed>, lint: bool) -> PlanReport {
        let Observed { plans, not_applied } = observed.into();
        let (findings, blind) = plans
            .iter()
            .map(|plan| {
                let judgement = lint::judge(plan);
                (judgement.findings, judgement.blind)
            })
            .unzip();
        PlanReport {
            header,
            plans,
            not_applied,
            blind,
            findings,
            lint,
        }
    }

    /// How many migrations were observed, how many only on tables without sample rows, and
    /// how many PostgreSQL refused (with the reason), in a few lines.
    pub fn summary(&self) -> String {
        let on_empty: Vec<&MigrationPlan> = self
            .plans
            .iter()
            .filter(|p| p.sample_failure.is_some() && p.failure.is_none())
            .collect();
        let failed: Vec<&MigrationPlan> =
            self.plans.iter().filter(|p| p.failure.is_some()).collect();
        let mut out = format!(
            "\n{} migration(s) observed: {} ran whole ({} of them on tables without sample rows, which made them fail), {} refused by PostgreSQL even without rows",
            self.plans.len(),
            self.plans.len() - failed.len(),
            on_empty.len(),
            failed.len(),
        );
        if !self.not_applied.is_empty() {
            out.push_str(&format!(
                "; {} migration(s) not linted could not be applied",
                self.not_applied.len()
            ));
        }
        out.push('\n');
        for plan in failed {
            if let Some(failure) = &plan.failure {
                out.push_str(&format!(
                    "  refused: `{}` line {}: {} (SQLSTATE {}){}\n",
                    plan.name,
                    failure.line,
                    failure.message,
                    failure.code,
                    if plan.applied {
                        ""
                    } else {
                        "; not applied on the shadow"
                    }
                ));
            }
        }
        out
    }

    /// Findings that are not reviewed exceptions.
    pub fn blocking(&self) -> impl Iterator<Item = (&MigrationPlan, &Finding)> {
        self.plans
            .iter()
            .zip(&self.findings)
            .flat_map(|(plan, findings)| findings.iter().map(move |f| (plan, f)))
            .filter(|(_, f)| f.blocks())
    }

    /// The plan of one migration as a psql-style table.
    pub fn plan_table(plan: &MigrationPlan) -> Table {
        let mut table = Table::new(&[
            "line",
            "statement",
            "locks taken",
            "held from earlier (line)",
            "scans",
            "rewrites",
            "validates",
            "rows changed",
        ]);
        for statement in &plan.statements {
            let taken: Vec<String> = statement
                .locks
                .iter()
                .filter(|l| l.taken_here)
                .map(|l| lock_label(&l.table, l.mode, l.new_table))
                .collect();
            let held: Vec<String> = statement
                .locks
                .iter()
                .filter(|l| !l.taken_here && l.mode.blocks().is_some() && !l.new_table)
                .map(|l| format!("{} ({})", lock_label(&l.table, l.mode, false), l.since_line))
                .collect();
            let scans: Vec<String> = statement
                .scans
                .iter()
                .map(|s| {
                    let new = if s.new_table { " (new)" } else { "" };
                    format!("{}{new} {}", s.table, s.kind.label())
                })
                .collect();
            let rewrites: Vec<String> = statement
                .rewrites
                .iter()
                .map(|(t, said)| {
                    if *said {
                        t.clone()
                    } else {
                        format!("{t} (new storage)")
                    }
                })
                .collect();
            let changed: Vec<String> = statement
                .changed_rows
                .iter()
                .map(|(t, n)| {
                    format!(
                        "{t} {n} of {}",
                        plan.rows_before.get(t).copied().unwrap_or(0)
                    )
                })
                .collect();
            let validates = statement.validations.join(", ");
            let statement_cell = match &statement.note {
                Some(note) => format!("{} ({note})", statement.statement.summary(50)),
                None => statement.statement.summary(50),
            };
            table.push(vec![
                statement.statement.line.to_string(),
                statement_cell,
                taken.join(", "),
                held.join(", "),
                scans.join(", "),
                rewrites.join(", "),
                validates,
                changed.join(", "),
            ]);
        }
        table
    }

    fn heading(plan: &MigrationPlan) -> String {
        let how = match plan.mode {
            Mode::Transaction => format!(
                "{} statement(s) in one transaction: every lock is held until the last one commits",
                plan.statements.len()
            ),
            Mode::OnItsOwn => "one statement on its own, outside a transaction: locks as seen while it waited for an open write transaction".to_string(),
        };
        format!("`{}` ({}): {how}", plan.name, plan.file)
    }

    fn verdict(plan: &MigrationPlan, findings: &[Finding]) -> String {
        let blocking = findings.iter().filter(|f| f.blocks()).count();
        if blocking > 0 {
            return format!("❌ `{}`: {blocking} finding(s)", plan.name);
        }
        let existing_locks: BTreeSet<String> = plan
            .statements
            .iter()
            .flat_map(|s| &s.locks)
            .filter(|l| !l.new_table && l.mode.blocks().is_some())
            .map(|l| format!("{} on `{}`", l.mode.name(), l.table))
            .collect();
        let allowed = findings.iter().filter(|f| f.allowed.is_some()).count();
        let warnings = findings.iter().filter(|f| f.warns()).count();
        // Session settings alone (a new migration holds its `SET LOCAL lock_timeout` line) are
        // not yet a change.
        let settings_only = plan.statements.iter().all(|s| {
            let first = s.statement.sql.split_whitespace().next().unwrap_or("");
            first.eq_ignore_ascii_case("SET") || first.eq_ignore_ascii_case("RESET")
        });
        let mut text = if settings_only && plan.failure.is_none() {
            format!("✅ `{}`: no statement yet", plan.name)
        } else if plan
            .statements
            .iter()
            .all(|s| s.locks.iter().all(|l| l.new_table))
            && plan.mode == Mode::Transaction
        {
            format!("✅ `{}`: new tables only", plan.name)
        } else if existing_locks.is_empty() {
            format!("✅ `{}`: no lock that blocks the app", plan.name)
        } else {
            format!(
                "✅ `{}`: brief locks, no scan or rewrite under them: {}",
                plan.name,
                existing_locks.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        if allowed > 0 {
            text.push_str(&format!(" ({allowed} reviewed exception(s))"));
        }
        if warnings > 0 {
            text.push_str(&format!(" ({warnings} warning(s))"));
        }
        text
    }

    fn finding_text(plan: &MigrationPlan, finding: &Finding) -> String {
        let warning = if finding.warns() { "warning: " } else { "" };
        let mut out = format!(
            "{}:{}: {warning}{}: `{}`",
            plan.file, finding.line, finding.rule, finding.statement
        );
        let size = |table: &str| {
            plan.sizes
                .get(table)
                .map(|size| format!(" ({} in production)", size.describe()))
                .unwrap_or_default()
        };
        if let Some((mode, table, since)) = &finding.lock {
            let taken = if *since == finding.line {
                String::new()
            } else {
                format!(" (taken at line {since})")
            };
            out.push_str(&format!(
                " holds {} on `{table}`{}{taken}, which blocks {}",
                mode.name(),
                size(table),
                mode.blocks().unwrap_or("nothing")
            ));
            if !finding.table.is_empty() && finding.table != *table {
                out.push_str(&format!(
                    " and reads `{}`{}",
                    finding.table,
                    size(&finding.table)
                ));
            }
        } else if !finding.table.is_empty() {
            out.push_str(&format!(" on `{}`{}", finding.table, size(&finding.table)));
        }
        out.push_str(&format!("; {}\n    safe: {}\n", finding.what, finding.fix));
        if let Some(reason) = &finding.allowed {
            out.push_str(&format!("    allowed (reviewed): {reason}\n"));
        }
        if let Some(line) = finding.allow_without_reason {
            out.push_str(&format!(
                "    the `lint: allow {}` at line {line} gives no reason, so it is not accepted: write `-- lint: allow {} because …`\n",
                finding.rule, finding.rule
            ));
        }
        out
    }

    fn render_plan(&self, style: Style) -> String {
        let mut out = String::new();
        if !style.redact_durations {
            out.push_str(&self.header);
            out.push('\n');
        }
        for ((plan, findings), blind) in self.plans.iter().zip(&self.findings).zip(&self.blind) {
            out.push('\n');
            out.push_str(&Self::heading(plan));
            out.push('\n');
            out.push_str(&Self::plan_table(plan).render());
            out.push_str(&Self::notes(plan, blind));
            out.push_str(&Self::verdict(plan, findings));
            out.push('\n');
            for finding in findings {
                out.push_str(&Self::finding_text(plan, finding));
            }
        }
        if self.plans.is_empty() {
            out.push_str("No migration to plan.\n");
        } else {
            out.push_str(LEGEND);
        }
        out
    }

    fn notes(plan: &MigrationPlan, blind: &[String]) -> String {
        let mut out = String::new();
        if let Some(failure) = &plan.failure {
            out.push_str(&format!(
                "fails at line {}: {} (SQLSTATE {})\n",
                failure.line, failure.message, failure.code
            ));
        }
        for note in &plan.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        for note in blind {
            out.push_str(&format!("not judged: {note}\n"));
        }
        out
    }

    fn render_lint(&self, style: Style) -> String {
        let mut out = String::new();
        if !style.redact_durations {
            out.push_str(&self.header);
            out.push('\n');
        }
        for (not_applied, why) in &self.not_applied {
            out.push_str(&format!(
                "⚠️ `{not_applied}` (not linted) cannot be applied on the shadow: {why}; the migrations after it are observed without it\n"
            ));
        }
        for ((plan, findings), blind) in self.plans.iter().zip(&self.findings).zip(&self.blind) {
            out.push_str(&Self::verdict(plan, findings));
            out.push('\n');
            for note in Self::notes(plan, blind).lines() {
                out.push_str(&format!("  {note}\n"));
            }
            for finding in findings {
                out.push_str("  ");
                out.push_str(&Self::finding_text(plan, finding).replace("\n    ", "\n      "));
            }
        }
        let blocking = self.blocking().count();
        let allowed: usize = self
            .findings
            .iter()
            .flatten()
            .filter(|f| f.allowed.is_some())
            .count();
        out.push_str(&self.summary());
        out.push_str(&format!(
            "lint: {blocking} blocking finding(s), {allowed} reviewed exception(s), {} warning(s){}\n",
            self.findings.iter().flatten().filter(|f| f.warns()).count(),
            if style.redact_durations {
                String::new()
            } else {
                format!(" in {}", style.seconds(self.plans.iter().map(|p| p.duration).sum::<Duration>()))
            }
        ));
        if blocking > 0 {
            out.push_str("Fix each finding as its `safe:` line says (or, after review, add `-- lint: allow <rule> because <reason>` above the statement), then run `cargo xtask migrate lint` again.\n");
        }
        out
    }

    /// One GitHub Actions `::error` workflow command per blocking finding (a reviewed exception
    /// is a `::notice`), so the finding shows on the migration's line in the pull request.
    pub fn render_github(&self) -> String {
        let mut out = String::new();
        for (plan, findings) in self.plans.iter().zip(&self.findings) {
            for finding in findings {
                let level = if finding.blocks() { "error" } else { "notice" };
                let text = Self::finding_text(plan, finding);
                // finding_text starts with `file:line: rule: `, which the annotation's place
                // and title say.
                let prefix = format!("{}:{}: {}: ", plan.file, finding.line, finding.rule);
                let message = text.strip_prefix(&prefix).unwrap_or(&text).trim_end();
                out.push_str(&format!(
                    "::{level} file={},line={},title={}::{}\n",
                    annotation_property(&plan.file),
                    finding.line,
                    annotation_property(&format!("migrate lint: {}", finding.rule)),
                    annotation_data(&message.replace("\n    ", "; "))
                ));
            }
        }
        out
    }

    /// Markdown for `$GITHUB_STEP_SUMMARY`: a heading, the verdict and a table per migration.
    pub fn render_markdown(&self) -> String {
        let mut out = String::from("## Migration plan\n\n");
        if self.plans.is_empty() {
            out.push_str("No new migration.\n");
            return out;
        }
        for ((plan, findings), blind) in self.plans.iter().zip(&self.findings).zip(&self.blind) {
            out.push_str(&format!(
                "### `{}`\n\n{}\n\n",
                plan.name,
                md_escape(&Self::verdict(plan, findings))
            ));
            let table = Self::plan_table(plan);
            out.push_str(&format!("| {} |\n", table.headers.join(" | ")));
            out.push_str(&format!("|{}\n", "---|".repeat(table.headers.len())));
            for row in &table.rows {
                let cells: Vec<String> = row.iter().map(|c| md_escape(c)).collect();
                out.push_str(&format!("| {} |\n", cells.join(" | ")));
            }
            out.push('\n');
            for line in Self::notes(plan, blind).lines() {
                out.push_str(&format!("- {}\n", md_escape(line)));
            }
            for finding in findings {
                out.push_str(&format!(
                    "- **{}** {}\n",
                    finding.rule,
                    md_escape(&Self::finding_text(plan, finding).replace("\n    ", " — "))
                ));
            }
            out.push('\n');
        }
        out.push_str(&md_escape(LEGEND.trim()));
        out.push('\n');
        out
    }
}

const LEGEND: &str = "\nlocks: AS ACCESS SHARE, RS ROW SHARE, RX ROW EXCLUSIVE, SUX SHARE UPDATE EXCLUSIVE (none of these block the app), S SHARE, SRX SHARE ROW EXCLUSIVE, X EXCLUSIVE (block writes), AX ACCESS EXCLUSIVE (blocks reads and writes); (new) = created by this migration\n";

fn lock_label(table: &str, mode: LockMode, new_table: bool) -> String {
    let new = if new_table { " (new)" } else { "" };
    format!("{table}{new} {}", mode.short())
}

/// A workflow command's message, escaped as GitHub's toolkit escapes it.
fn annotation_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value (`file=`, `title=`): also `:` and `,` escaped.
fn annotation_property(text: &str) -> String {
    annotation_data(text)
        .replace(':', "%3A")
        .replace(',', "%2C")
}

fn md_escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

impl Report for PlanReport {
    fn render_with(&self, style: Style) -> String {
        if self.lint {
            self.render_lint(style)
        } else {
            self.render_plan(style)
        }
    }

    fn to_json(&self) -> Value {
        let migrations: Vec<Value> = self
            .plans
            .iter()
            .zip(&self.findings)
            .zip(&self.blind)
            .map(|((plan, findings), blind)| {
                json!({
                    "name": plan.name,
                    "applied": plan.applied,
                    "sample_rows_failure": plan.sample_failure.as_ref().map(|f| json!({"line": f.line, "sqlstate": f.code, "message": f.message})),
                    "not_judged": blind,
                    "file": plan.file,
                    "mode": match plan.mode { Mode::Transaction => "transaction", Mode::OnItsOwn => "on_its_own" },
                    "rows_before": plan.rows_before,
                    "seconds": plan.duration.as_secs_f64(),
                    "failure": plan.failure.as_ref().map(|f| json!({"line": f.line, "sqlstate": f.code, "message": f.message})),
                    "notes": plan.notes,
                    "statements": plan.statements.iter().map(|s| json!({
                        "line": s.statement.line,
                        "sql": s.statement.sql,
                        "note": s.note,
                        "locks": s.locks.iter().map(|l| json!({
                            "table": l.table, "mode": l.mode.name(), "new_table": l.new_table,
                            "taken_here": l.taken_here, "since_line": l.since_line,
                            "blocks": l.mode.blocks(),
                        })).collect::<Vec<_>>(),
                        "rewrites": s.rewrites.iter().map(|(t, said)| json!({"table": t, "rewriting_table": said})).collect::<Vec<_>>(),
                        "scans": s.scans.iter().map(|scan| json!({
                            "table": scan.table, "kind": scan.kind.label(), "new_table": scan.new_table,
                            "rows_read": scan.rows_read,
                        })).collect::<Vec<_>>(),
                        "validates": s.validations,
                        "rows_changed": s.changed_rows.iter().map(|(t, n)| json!({"table": t, "rows": n})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "findings": findings.iter().map(|f| json!({
                        "rule": f.rule.name(), "blocks": f.blocks(), "line": f.line, "statement": f.statement, "table": f.table,
                        "lock": f.lock.as_ref().map(|(mode, table, since)| json!({"mode": mode.name(), "table": table, "since_line": since})),
                        "what": f.what, "fix": f.fix, "allowed": f.allowed,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        report::document(
            if self.lint {
                "migrate_lint"
            } else {
                "migrate_plan"
            },
            json!({
                "shadow": self.header,
                "migrations": migrations,
                "not_applied": self.not_applied.iter().map(|(name, why)| json!({"name": name, "why": why})).collect::<Vec<_>>(),
                "blocking": self.blocking().count(),
            }),
        )
    }

    fn ok(&self) -> bool {
        if self.lint {
            self.blocking().next().is_none()
        } else {
            self.plans.iter().all(|p| p.failure.is_none())
        }
    }
}

/// The user's TimeZone and major version: settings, no table is read.
const SETTINGS_SQL: &str =
    "SELECT current_setting('TimeZone'), current_setting('server_version_num')::int / 10000";

/// `--format` / `--json`.
fn format(args: &mut Arguments) -> Result<Format> {
    let json = args.contains("--json");
    let format = cli::text(args, "--format")?;
    Ok(match (json, format.as_deref()) {
        (true, None | Some("json")) | (false, Some("json")) => Format::Json,
        (false, None | Some("text")) => Format::Text,
        (false, Some("markdown")) => Format::Markdown,
        (false, Some("github")) => Format::Github,
        (_, Some(other)) => {
            return Err(usage(format!(
                "`--format {other}` is not valid: use text, markdown, json or github"
            )))
        }
    })
}

fn names(args: &mut Arguments) -> Result<Vec<String>> {
    let mut names = Vec::new();
    while let Some(name) = args
        .opt_free_from_str::<String>()
        .map_err(cli::parse_error)?
    {
        names.push(name);
    }
    Ok(names)
}

fn shadow(url: Option<&str>) -> Result<Shadow> {
    match url {
        Some(url) => Shadow::on_server(url),
        None => Shadow::throwaway(),
    }
}

fn shadow_version(shadow: &Shadow) -> String {
    shadow.server_version().unwrap_or_else(|_| "?".into())
}

fn emit(report: &PlanReport, format: Format) -> Result<Outcome> {
    match format {
        Format::Markdown => {
            print!("{}", report.render_markdown());
            Ok(Outcome::from_ready(report.ok()))
        }
        Format::Json => report::emit(report, true),
        Format::Text => report::emit(report, false),
        Format::Github => {
            let outcome = report::emit(report, false)?;
            print!("{}", report.render_github());
            Ok(outcome)
        }
    }
}

pub(crate) fn run_plan(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    let all = args.contains("--all");
    let fail_on_findings = args.contains("--fail-on-findings");
    let format = format(&mut args)?;
    let shadow_url = cli::text(&mut args, "--shadow-url")?;
    let names = names(&mut args)?;
    cli::finish(args, "migrate plan")?;
    let migrations = globals.migrations()?;
    let mut timezone = None;
    let mut database_major = None;
    let mut production = None;
    let (targets, chosen): (BTreeSet<String>, String) = if !names.is_empty() {
        (
            checked_names(&migrations, &names)?,
            "the migrations named".into(),
        )
    } else if all {
        (all_names(&migrations), "every migration (--all)".into())
    } else {
        match globals.url() {
            Ok(url) => {
                let mut client = url.connect()?;
                let status = super::status(&mut client, &migrations)?;
                // Settings only: a rewrite can depend on TimeZone, lock levels on the version.
                let settings = client
                    .query_one(SETTINGS_SQL, &[])
                    .context("cannot read the database's TimeZone and server_version_num")?;
                timezone = Some(settings.get::<_, String>(0));
                database_major = Some(settings.get::<_, i32>(1));
                production = Some(super::production::read(&mut client)?);
                (
                    status
                        .pending()
                        .iter()
                        .map(|entry| entry.name.clone())
                        .collect(),
                    format!("the migrations pending on `{}`", url.describe()),
                )
            }
            Err(_) => (
                all_names(&migrations),
                "every migration (no DATABASE_URL to tell which are pending)".into(),
            ),
        }
    };
    let started = Instant::now();
    let mut shadow = shadow(shadow_url.as_deref())?;
    let plans = observe_all(
        &mut shadow,
        &PlanRequest {
            migrations: &migrations,
            targets,
            timezone,
            since: None,
            production,
        },
    )?;
    let mut header = format!(
        "plan of {chosen}, observed on {} (PostgreSQL {}) in {}",
        shadow.described,
        shadow_version(&shadow),
        Style::default().seconds(started.elapsed())
    );
    let shadow_major = shadow.major_version().ok();
    if let (Some(database), Some(shadow_major)) = (database_major, shadow_major) {
        if database != shadow_major {
            header.push_str(&format!(
                "\nnote: the database runs PostgreSQL {database}, the shadow {shadow_major}: lock levels and rewrites can differ between major versions; pass `--shadow-url` naming a PostgreSQL {database} server"
            ));
        }
    }
    let report = PlanReport::new(header, plans, false);
    let outcome = emit(&report, format)?;
    let n_blocking = report.blocking().count();
    if fail_on_findings && n_blocking > 0 {
        eprintln!(
            "migrate plan: {n_blocking} blocking finding(s) (--fail-on-findings); run `cargo xtask migrate lint` for each one's safe rewrite"
        );
        return Ok(Outcome::NotReady);
    }
    Ok(outcome)
}

pub(crate) fn run_lint(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if args.contains("--rules") {
        cli::finish(args, "migrate lint --rules")?;
        print!("{}", super::rules::describe());
        return Ok(Outcome::Ready);
    }
    let format = format(&mut args)?;
    let shadow_url = cli::text(&mut args, "--shadow-url")?;
    let since = cli::text(&mut args, "--since")?;
    let names = names(&mut args)?;
    cli::finish(args, "migrate lint")?;
    let migrations = globals.migrations()?;
    let targets = match (&since, names.is_empty()) {
        (Some(_), false) => {
            return Err(usage(
                "`--since NAME` lints the migrations after NAME: leave out the names, or leave out `--since`",
            ))
        }
        (Some(since), true) => {
            let since = migrations::find(&migrations, since)?;
            migrations
                .iter()
                .filter(|m| m.name > since.name)
                .map(|m| m.name.clone())
                .collect()
        }
        (None, true) => all_names(&migrations),
        (None, false) => checked_names(&migrations, &names)?,
    };
    let started = Instant::now();
    // With a database URL, production's catalog says which tables exist and how big they are.
    let (production, against) = match globals.url() {
        Ok(url) => {
            let mut client = url.connect()?;
            (
                Some(super::production::read(&mut client)?),
                format!(", tables and sizes from `{}`", url.describe()),
            )
        }
        Err(_) => (None, String::new()),
    };
    let mut shadow = shadow(shadow_url.as_deref())?;
    let observed = observe_all(
        &mut shadow,
        &PlanRequest {
            migrations: &migrations,
            targets,
            timezone: None,
            since,
            production,
        },
    )?;
    let header = format!(
        "lint: observed on {} (PostgreSQL {}){against} in {}",
        shadow.described,
        shadow_version(&shadow),
        Style::default().seconds(started.elapsed())
    );
    emit(&PlanReport::new(header, observed, true), format)
}

fn all_names(migrations: &[Migration]) -> BTreeSet<String> {
    migrations.iter().map(|m| m.name.clone()).collect()
}

fn checked_names(migrations: &[Migration], names: &[String]) -> Result<BTreeSet<String>> {
    names
        .iter()
        .map(|name| migrations::find(migrations, name).map(|m| m.name.clone()))
        .collect()
}
