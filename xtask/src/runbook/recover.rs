//! `cargo xtask recover [--dry-run]`: the recovery plan, driven by what the database shows.
//!
//! It first takes the migration lock and waits for every backend still running a migration
//! script (a killed deploy's backend goes on, and may commit), so it never decides from a
//! state that is still changing. Then three phases. **Inspect** reads the failed rows of
//! `_prisma_migrations`, the columns each declared release fills (the plan's scenario A: expand applied,
//! contract failed; scenario B: expand failed too) and, for each failed migration, what its
//! script left behind (`proof`). **Plan** turns that into steps, pure: a failed migration is
//! resolved as applied when the catalog proves its script committed, or as rolled back when it
//! proves the script left nothing (an INVALID index is dropped first); then the release's
//! database steps follow, and `migrate status` must say up to date. **Execute** walks that
//! same plan; `--dry-run` prints it instead. A state it cannot prove stops it, with what it
//! found and what a person has to decide.

use std::time::Instant;

use crate::db::Client;
use anyhow::{Context, Result};
use pico_args::Arguments;

use super::database_steps;
use super::inspect::{self, Inspection};
use super::proof::{self, Judgement};
use super::step::{RunbookReport, Step, StepResult, Steps};
use crate::backfill::BackfillOptions;
use crate::check;
use crate::cli::{self, Globals};
use crate::db::quote_ident;
use crate::db::{self, Connect, DatabaseUrl};
use crate::error::Outcome;
use crate::migrate::state::State;
use crate::migrate::{self, concurrent, running, DeployOptions, Resolution};
use crate::migrations::Migration;
use crate::releases::Column;
use crate::report::{self, backticked, thousands, Report, Style};

pub(crate) const SUMMARY: &str = "the recovery plan after a failed migration (scenario A/B)";

pub(crate) const HELP: &str = "\
cargo xtask recover [--dry-run] [--app-deployed] [--json] [--lock-wait SECONDS] [--lock-timeout SECONDS]
The recovery plan after a failed or interrupted migration. Takes the migration lock, waits
for any backend still running a migration script (naming its pid), then reads the failed
rows of _prisma_migrations and what each migration left behind: a migration whose script
committed (a valid index defined as its file defines it; the contract or the expand complete)
is resolved as applied, one that left nothing (or only an INVALID index, which is dropped) as
rolled back. Then it deploys up to expand, backfills, checks, deploys the rest, and ends with
migrate status up to date. A state it cannot prove stops it, changing nothing.
--dry-run         prints the plan and changes nothing (without waiting for the lock)
--app-deployed    the app of the release is live: migrations the previous app cannot
                  survive (a release's `needs_new_app`) may run
--lock-wait S     how long to wait for the migration lock and for migrations still running
                  elsewhere (default 60)
--lock-timeout S  the lock budget of each migration it deploys (default 60)
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let dry_run = args.contains("--dry-run");
    let app_deployed = args.contains("--app-deployed");
    let mut options = RecoverOptions {
        dry_run,
        gates: database_steps::Gates { app_deployed },
        ..Default::default()
    };
    migrate::take_lock_options(&mut args, &mut options.deploy)?;
    cli::finish(args, "recover")?;
    let migrations = globals.migrations()?;
    let url = globals.url()?;
    let mut client = url.connect()?;
    report::emit(&recover(&mut client, &url, &migrations, &options)?, json)
}

#[derive(Debug, Clone, Default)]
pub struct RecoverOptions {
    pub dry_run: bool,
    pub deploy: DeployOptions,
    pub backfill: BackfillOptions,
    /// Migrations the previous app cannot survive may run (`--app-deployed`).
    pub gates: database_steps::Gates,
}

#[derive(Debug, Clone)]
pub struct RecoverReport {
    /// What the database shows, one line each.
    pub findings: Vec<String>,
    pub report: RunbookReport,
}

impl Report for RecoverReport {
    fn render_with(&self, style: Style) -> String {
        // A real run has printed its steps as it went: what it found comes first in the
        // report, named as the state before, and the conclusion (the state now) last.
        let mut out = String::from(if self.report.command == "recover" {
            "Found before recovering:\n"
        } else {
            "Found:\n"
        });
        for finding in &self.findings {
            out.push_str(&format!("- {finding}\n"));
        }
        out.push('\n');
        out.push_str(&self.report.render_with(style));
        out
    }

    fn to_json(&self) -> serde_json::Value {
        let mut doc = self.report.to_json();
        doc["findings"] = serde_json::json!(self.findings);
        doc
    }

    fn ok(&self) -> bool {
        self.report.ok
    }
}

/// Everything recover reads before it decides.
struct Findings {
    inspection: Inspection,
    failed: Vec<String>,
    judgements: Vec<Judgement>,
    /// Rows the backfill would fill: NULLs, or every row while the columns do not exist.
    backfill_rows: BackfillRows,
    /// Backends that were (or, in a dry run, are) running a migration script.
    running: Vec<String>,
}

enum BackfillRows {
    NotNeeded,
    Nulls(i64),
    AllRows(i64),
}

impl BackfillRows {
    /// Two releases' rows together: every row where any release's columns are missing.
    fn add(self, other: BackfillRows) -> BackfillRows {
        use BackfillRows::*;
        match (self, other) {
            (NotNeeded, x) | (x, NotNeeded) => x,
            (Nulls(a), Nulls(b)) => Nulls(a + b),
            (AllRows(a), Nulls(b)) | (Nulls(a), AllRows(b)) | (AllRows(a), AllRows(b)) => {
                AllRows(a + b)
            }
        }
    }
}

/// One step of the plan: what the dry run shows and the real run does.
struct PlannedStep {
    name: String,
    detail: String,
    action: Action,
}

enum Action {
    Resolve {
        name: String,
        resolution: Resolution,
        drop_index: Option<String>,
    },
    /// One of the release's database steps, which `database_steps` runs in sequence.
    DatabaseStep,
    Status,
}

enum Plan {
    NothingToRecover,
    Refuse {
        step: String,
        why: String,
        conclusion: String,
    },
    Steps(Vec<PlannedStep>),
}

pub fn recover(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    options: &RecoverOptions,
) -> Result<RecoverReport> {
    if options.dry_run {
        // Reads only: a migration still running is reported, not waited for.
        let running = running::running(client, migrations)?
            .iter()
            .map(|r| format!("{} (recover waits for it before it decides)", r.describe()))
            .collect();
        return recover_locked(client, url, migrations, options, running);
    }
    // Decided under the migration lock (the inner deploys and resolves take it again, which
    // PostgreSQL counts), after every backend still running a migration script has finished.
    db::with_migration_lock(client, options.deploy.lock_wait, migrations, |client| {
        let waited = running::wait_for_others(client, migrations, options.deploy.lock_wait)?
            .into_iter()
            .map(|line| format!("{line}; recover waited until it finished"))
            .collect();
        recover_locked(client, url, migrations, options, waited)
    })
}

fn recover_locked(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    options: &RecoverOptions,
    running: Vec<String>,
) -> Result<RecoverReport> {
    let found = inspect_all(client, migrations, running)?;
    let findings = describe(&found);
    let mut steps = Steps::new(if options.dry_run {
        "recover --dry-run"
    } else {
        "recover"
    });
    let report = match plan(&found) {
        Plan::NothingToRecover => steps.finish(
            true,
            "✅ Nothing to recover: Database schema is up to date and no migration failed.",
        ),
        Plan::Refuse {
            step,
            why,
            conclusion,
        } => {
            steps.push(Step::failed(&step, Instant::now(), why));
            steps.finish(false, conclusion)
        }
        Plan::Steps(plan) if options.dry_run => {
            for step in &plan {
                steps.planned(&step.name, step.detail.clone());
            }
            steps.finish(
                true,
                "Dry run: nothing was changed. Run `cargo xtask recover` to follow this plan.",
            )
        }
        Plan::Steps(plan) => execute(client, url, migrations, options, &plan, steps)?,
    };
    Ok(RecoverReport { findings, report })
}

fn inspect_all(
    client: &mut Client,
    migrations: &[Migration],
    running: Vec<String>,
) -> Result<Findings> {
    let inspection = inspect::inspect(client, migrations)?;
    let failed: Vec<String> = inspection
        .status
        .entries
        .iter()
        .filter(|e| e.state == State::Failed)
        .map(|e| e.name.clone())
        .collect();
    let mut judgements = Vec::new();
    for name in &failed {
        judgements.push(proof::judge(client, &inspection, migrations, name)?);
    }
    // The rows the declared backfills would fill: NULLs where the columns exist, every row of
    // the tables (that exist) where they do not yet.
    let mut backfill_rows = BackfillRows::NotNeeded;
    if inspection.status.not_managed.is_none() {
        for (release, columns) in &inspection.releases {
            if release.rule.is_none() || columns.all(Column::NotNull) {
                continue;
            }
            let rows = if columns.any(Column::Missing) {
                let mut tables: Vec<&str> =
                    release.fills.iter().map(|f| f.table.as_str()).collect();
                tables.dedup();
                let mut rows = 0i64;
                for table in tables {
                    let count: Option<i64> = client
                        .query_one(
                            "SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE 0 END::bigint",
                            &[&quote_ident(table)],
                        )
                        .context("cannot look up a table a release fills")?
                        .get(0);
                    if count.is_some() {
                        let count = format!("SELECT count(*) FROM {}", quote_ident(table));
                        rows += client
                            .long(&format!("the row count of `{table}`"), |client| {
                                client.query_one(count.as_str(), &[])
                            })
                            .with_context(|| format!("cannot count the rows of `{table}`"))?
                            .get::<_, i64>(0);
                    }
                }
                BackfillRows::AllRows(rows)
            } else {
                BackfillRows::Nulls(check::check_release(client, release)?.total_nulls())
            };
            backfill_rows = backfill_rows.add(rows);
        }
    }
    Ok(Findings {
        inspection,
        failed,
        judgements,
        backfill_rows,
        running,
    })
}

fn describe(found: &Findings) -> Vec<String> {
    let mut findings = found.running.clone();
    findings.extend([
        match found.failed.len() {
            0 => "no failed migration in `_prisma_migrations`".to_string(),
            _ => format!("failed: {}", backticked(&found.failed)),
        },
        format!("columns: {}", found.inspection.describe_columns()),
        found.inspection.status.summary(),
    ]);
    let failed = |name: &str| found.failed.iter().any(|f| f == name);
    for (release, columns) in &found.inspection.releases {
        if release.fills.is_empty() {
            continue;
        }
        if failed(&release.expand) && columns.all(Column::Missing) {
            findings.push(format!("scenario B of the recovery plan: the expand migration of `{}` failed, its columns do not exist", release.name));
        } else if release.contract.as_deref().is_some_and(failed) && columns.all(Column::Nullable) {
            findings.push(format!("scenario A of the recovery plan: the columns of `{}` exist and are nullable, its contract failed", release.name));
        }
    }
    findings
}

/// The steps recover takes from what it found, or why it will not.
fn plan(found: &Findings) -> Plan {
    let status = &found.inspection.status;
    if let Some(not_managed) = &status.not_managed {
        return Plan::Refuse {
            step: "inspect".into(),
            why: format!("{}\n{}", not_managed.summary(), status.advice().join("\n")),
            conclusion: "❌ recover stopped: the database is not managed by Prisma Migrate, so there is nothing of this release to recover; baseline it first (see above).".into(),
        };
    }
    if status.is_up_to_date() {
        return Plan::NothingToRecover;
    }
    // Edited or missing migrations are a disagreement between the folder and the database that
    // no command may settle by itself.
    if let Some(entry) = status
        .entries
        .iter()
        .find(|e| matches!(e.state, State::Edited | State::MissingLocally))
    {
        let mut why = format!("migration `{}` is {}", entry.name, entry.state.label());
        for line in status.advice() {
            why.push('\n');
            why.push_str(&line);
        }
        return Plan::Refuse {
            step: "inspect".into(),
            why,
            conclusion: format!(
                "❌ recover stopped: the migrations folder and the database disagree about `{}`; a person must decide which is right (see above), then run `cargo xtask recover` again.",
                entry.name
            ),
        };
    }
    if let Some(Judgement::Unprovable { name, why }) = found
        .judgements
        .iter()
        .find(|j| matches!(j, Judgement::Unprovable { .. }))
    {
        return Plan::Refuse {
            step: format!("resolve {name}"),
            why: why.clone(),
            conclusion: format!("❌ recover stopped: it cannot prove what `{name}` left behind, so it changed nothing. A person must decide (see above), then run `cargo xtask recover` again."),
        };
    }

    let mut steps = Vec::new();
    // The first declared expand (of a release that fills) not applied, or rolled back below.
    let pending_expand = |name: &str| status.state_of(name).is_none_or(State::is_pending);
    let mut expand_pending: Option<String> = found
        .inspection
        .releases
        .iter()
        .filter(|(r, _)| r.rule.is_some())
        .map(|(r, _)| r.expand.clone())
        .find(|e| pending_expand(e));
    for judgement in &found.judgements {
        let (name, resolution, detail, drop_index) = match judgement {
            Judgement::RolledBack {
                name,
                proof,
                drop_index,
            } => (
                name,
                Resolution::RolledBack,
                format!("mark rolled back: {proof}"),
                drop_index.clone(),
            ),
            Judgement::Applied { name, proof } => (
                name,
                Resolution::Applied,
                format!("mark applied: {proof}"),
                None,
            ),
            Judgement::Unprovable { .. } => unreachable!("refused above"),
        };
        steps.push(PlannedStep {
            name: format!("resolve {name}"),
            detail,
            action: Action::Resolve {
                name: name.clone(),
                resolution,
                drop_index,
            },
        });
        if expand_pending.is_none()
            && resolution == Resolution::RolledBack
            && found
                .inspection
                .releases
                .iter()
                .any(|(r, _)| r.expand == *name)
        {
            expand_pending = Some(name.clone());
        }
    }
    if let Some(expand) = expand_pending {
        steps.push(PlannedStep {
            name: "deploy expand".into(),
            detail: format!("apply up to `{expand}`"),
            action: Action::DatabaseStep,
        });
    }
    let backfill = match found.backfill_rows {
        BackfillRows::NotNeeded => {
            "nothing to do: every column the releases fill is NOT NULL or set".to_string()
        }
        BackfillRows::AllRows(rows) => format!(
            "every row of the tables the releases fill ({}), once the columns exist",
            thousands(rows)
        ),
        BackfillRows::Nulls(rows) => {
            format!("{} rows with a NULL the releases fill", thousands(rows))
        }
    };
    let last = status
        .entries
        .last()
        .map(|e| e.name.clone())
        .unwrap_or_default();
    for (name, detail) in [
        ("backfill", backfill),
        ("check", "must pass before the contract".to_string()),
        (
            "deploy",
            format!("apply the remaining migrations, up to `{last}`"),
        ),
    ] {
        steps.push(PlannedStep {
            name: name.into(),
            detail,
            action: Action::DatabaseStep,
        });
    }
    steps.push(PlannedStep {
        name: "migrate status".into(),
        detail: "must say: Database schema is up to date!".into(),
        action: Action::Status,
    });
    Plan::Steps(steps)
}

fn execute(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    options: &RecoverOptions,
    plan: &[PlannedStep],
    mut steps: Steps,
) -> Result<RunbookReport> {
    let mut database_steps_done = false;
    for planned in plan {
        match &planned.action {
            Action::Resolve {
                name,
                resolution,
                drop_index,
            } => {
                let started = Instant::now();
                match resolve(client, migrations, options, name, *resolution, drop_index) {
                    Ok(()) => steps.push(Step::done(
                        &planned.name,
                        started,
                        planned
                            .detail
                            .replacen("mark rolled back", "marked rolled back", 1)
                            .replacen("mark applied", "marked applied", 1),
                    )),
                    Err(error) => {
                        steps.push(Step::error(&planned.name, started, &error));
                        return Ok(steps.stopped(&planned.name, "fix the cause above, then run `cargo xtask recover` again (it reads the database first)"));
                    }
                }
            }
            // The release's database steps run as one sequence, each reading the database first.
            Action::DatabaseStep if database_steps_done => {}
            Action::DatabaseStep => {
                database_steps_done = true;
                if let Some(stop) = database_steps::run(
                    client,
                    url,
                    migrations,
                    &options.deploy,
                    &options.backfill,
                    &options.gates,
                    &mut steps,
                )? {
                    return Ok(steps.stopped(&stop.at, &stop.next));
                }
            }
            Action::Status => {
                let started = Instant::now();
                let status = migrate::status(client, migrations)?;
                let step = Step {
                    result: if status.is_up_to_date() {
                        StepResult::Done
                    } else {
                        StepResult::Failed
                    },
                    ..Step::done(&planned.name, started, status.summary())
                };
                steps.push(step);
                if !status.is_up_to_date() {
                    return Ok(steps.stopped(
                        "migrate status",
                        "run `cargo xtask migrate status` and follow its advice",
                    ));
                }
            }
        }
    }
    Ok(steps.finish(
        true,
        "✅ Recovered: Database schema is up to date, no NULLs. Next: `cargo xtask smoke` (or `cargo xtask release`, which builds and smokes).",
    ))
}

/// Drops the INVALID index a judgement found (if any), then resolves the migration.
fn resolve(
    client: &mut Client,
    migrations: &[Migration],
    options: &RecoverOptions,
    name: &str,
    resolution: Resolution,
    drop_index: &Option<String>,
) -> Result<()> {
    if let Some(index) = drop_index {
        concurrent::drop_invalid_index(
            client,
            index,
            options.deploy.lock_timeout,
            options.deploy.lock_budget,
        )?;
    }
    migrate::resolve(
        client,
        migrations,
        resolution,
        name,
        options.deploy.lock_wait,
    )?;
    Ok(())
}
