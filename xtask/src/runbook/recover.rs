//! `cargo xtask recover [--dry-run]`: the recovery plan, driven by what the database shows.
//!
//! Three phases. **Inspect** reads the failed rows of `_prisma_migrations`, the `workspaceId`
//! columns (the plan's scenario A: expand applied, contract failed; scenario B: expand failed
//! too) and, for each failed migration, what its script left behind. **Plan** turns that into
//! steps, pure: a failed migration is resolved as rolled back only with proof that it left
//! nothing behind, then the release's database steps follow, and `migrate status` must say up
//! to date. **Execute** walks that same plan; `--dry-run` prints it instead. A state it cannot
//! prove safe stops it, with what it found and what a person has to decide.

use std::time::Instant;

use anyhow::{Context, Result};
use pico_args::Arguments;
use postgres::Client;

use super::database_steps;
use super::inspect::{self, Inspection};
use super::step::{RunbookReport, Step, StepResult, Steps};
use crate::backfill::BackfillOptions;
use crate::check;
use crate::cli::{self, Globals};
use crate::db::{Connect, DatabaseUrl};
use crate::error::Outcome;
use crate::migrate::deploy::INDEX_VALID_SQL;
use crate::migrate::state::State;
use crate::migrate::{self, DeployOptions, Resolution};
use crate::migrations::Migration;
use crate::report::{self, backticked, thousands, Report, Style};
use crate::tenancy::{self, Column, CONTRACT, EXPAND, INIT};

pub(crate) const SUMMARY: &str = "the recovery plan after a failed migration (scenario A/B)";

pub(crate) const HELP: &str = "\
cargo xtask recover [--dry-run] [--json]
The recovery plan after a failed migration. Reads the failed rows of _prisma_migrations and
the workspaceId columns (scenario A: expand applied, contract failed; scenario B: expand
failed too), resolves a failed migration as rolled back only when the database proves it left
nothing behind, then deploys up to expand, backfills, checks, deploys the rest, and ends with
migrate status up to date.
--dry-run prints the plan and changes nothing.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    let dry_run = args.contains("--dry-run");
    cli::finish(args, "recover")?;
    let migrations = globals.migrations()?;
    let url = globals.url()?;
    let mut client = url.connect()?;
    let options = RecoverOptions {
        dry_run,
        ..Default::default()
    };
    report::emit(&recover(&mut client, &url, &migrations, &options)?, json)
}

#[derive(Debug, Clone, Default)]
pub struct RecoverOptions {
    pub dry_run: bool,
    pub deploy: DeployOptions,
    pub backfill: BackfillOptions,
}

#[derive(Debug, Clone)]
pub struct RecoverReport {
    /// What the database shows, one line each.
    pub findings: Vec<String>,
    pub report: RunbookReport,
}

impl Report for RecoverReport {
    fn render_with(&self, style: Style) -> String {
        let mut out = String::from("Found:\n");
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

/// What the database shows about one failed migration.
#[derive(Debug, Clone)]
enum Judgement {
    /// Its script left nothing that a re-run would trip over: resolve it as rolled back.
    LeftNothing { name: String, proof: String },
    /// What was found, and what a person must decide.
    Unprovable { name: String, why: String },
}

/// Everything recover reads before it decides.
struct Findings {
    inspection: Inspection,
    failed: Vec<String>,
    judgements: Vec<Judgement>,
    /// Rows the backfill would fill: NULLs, or every row while the columns do not exist.
    backfill_rows: BackfillRows,
}

enum BackfillRows {
    NotNeeded,
    Nulls(i64),
    AllRows(i64),
}

/// One step of the plan: what the dry run shows and the real run does.
struct PlannedStep {
    name: String,
    detail: String,
    action: Action,
}

enum Action {
    Resolve(String),
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
    let found = inspect_all(client, migrations)?;
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

fn inspect_all(client: &mut Client, migrations: &[Migration]) -> Result<Findings> {
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
        judgements.push(judge(client, &inspection, migrations, name)?);
    }
    let tables_exist = inspection.status.state_of(INIT) == Some(&State::Applied);
    let backfill_rows =
        if inspection.status.not_managed.is_some() || inspection.all_columns(Column::NotNull) {
            BackfillRows::NotNeeded
        } else if !tables_exist {
            // Not even the init migration is applied: no Data Hub table, no row yet.
            BackfillRows::AllRows(0)
        } else if inspection.any_column(Column::Missing) {
            let rows: i64 = client
                .query_one(&tenancy::row_count_sql(), &[])
                .context("cannot count the rows of the Data Hub tables")?
                .get(0);
            BackfillRows::AllRows(rows)
        } else {
            BackfillRows::Nulls(check::check(client)?.total_nulls())
        };
    Ok(Findings {
        inspection,
        failed,
        judgements,
        backfill_rows,
    })
}

fn describe(found: &Findings) -> Vec<String> {
    let mut findings = vec![
        match found.failed.len() {
            0 => "no failed migration in `_prisma_migrations`".to_string(),
            _ => format!("failed: {}", backticked(&found.failed)),
        },
        format!(
            "workspaceId columns: {}",
            found.inspection.describe_columns()
        ),
        found.inspection.status.summary(),
    ];
    let failed = |name: &str| found.failed.iter().any(|f| f == name);
    if failed(EXPAND) && found.inspection.all_columns(Column::Missing) {
        findings.push("scenario B of the recovery plan: the expand migration failed, the columns do not exist".into());
    } else if failed(CONTRACT) && found.inspection.all_columns(Column::Nullable) {
        findings.push("scenario A of the recovery plan: the columns exist and are nullable, the contract failed".into());
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
            conclusion: format!("❌ recover stopped: it cannot prove that `{name}` left nothing behind, so it changed nothing. A person must decide (see above), then run `cargo xtask recover` again."),
        };
    }

    let mut steps = Vec::new();
    let mut expand_pending = status.state_of(EXPAND).is_none_or(State::is_pending);
    for judgement in &found.judgements {
        if let Judgement::LeftNothing { name, proof } = judgement {
            steps.push(PlannedStep {
                name: format!("resolve {name}"),
                detail: format!("mark rolled back: {proof}"),
                action: Action::Resolve(name.clone()),
            });
            expand_pending |= name == EXPAND;
        }
    }
    if expand_pending {
        steps.push(PlannedStep {
            name: "deploy expand".into(),
            detail: format!("apply `{EXPAND}`"),
            action: Action::DatabaseStep,
        });
    }
    let backfill = match found.backfill_rows {
        BackfillRows::NotNeeded => "nothing to do: workspaceId is NOT NULL".to_string(),
        BackfillRows::AllRows(rows) => format!(
            "every row of the 4 tables ({}), once the columns exist",
            thousands(rows)
        ),
        BackfillRows::Nulls(rows) => format!("{} rows with a NULL workspaceId", thousands(rows)),
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
            Action::Resolve(name) => {
                let started = Instant::now();
                match migrate::resolve(
                    client,
                    migrations,
                    Resolution::RolledBack,
                    name,
                    options.deploy.lock_wait,
                ) {
                    Ok(_) => steps.push(Step::done(
                        &planned.name,
                        started,
                        planned
                            .detail
                            .replace("mark rolled back", "marked rolled back"),
                    )),
                    Err(error) => {
                        steps.push(Step::error(&planned.name, started, &error));
                        return Ok(steps.stopped(&planned.name, "run `cargo xtask recover` again"));
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

/// Whether the database proves that the failed migration `name` left nothing behind.
fn judge(
    client: &mut Client,
    inspection: &Inspection,
    migrations: &[Migration],
    name: &str,
) -> Result<Judgement> {
    let unprovable = |why: String| Judgement::Unprovable {
        name: name.to_string(),
        why,
    };
    let left_nothing = |proof: String| Judgement::LeftNothing {
        name: name.to_string(),
        proof,
    };
    if name == CONTRACT {
        if inspection.any_column(Column::NotNull) {
            return Ok(unprovable(format!(
                "its failure is recorded, but workspaceId is NOT NULL on some tables ({}): the contract was applied, fully or in part, another way. If all four are NOT NULL, record it with `cargo xtask migrate resolve --applied {CONTRACT}`; otherwise run `cargo xtask rollback --yes` first",
                inspection.describe_columns()
            )));
        }
        return Ok(left_nothing(
            "no workspaceId column is NOT NULL, so its script left nothing".into(),
        ));
    }
    if name == EXPAND {
        let leftovers: i32 = client
            .query_one(
                tenancy::EXPAND_LEFTOVERS_SQL,
                &[
                    &tenancy::HOME_VIEW,
                    &tenancy::FILL_TRIGGER_FUNCTION,
                    &tenancy::HOME_ID_FUNCTION,
                ],
            )
            .context("cannot look for the expand migration's view and functions")?
            .get(0);
        if !inspection.all_columns(Column::Missing) || leftovers > 0 {
            return Ok(unprovable(format!(
                "its failure is recorded, but some of what it creates exists ({}; {leftovers} of its view and functions): it was applied, fully or in part, another way. Compare the database with `migrations/{EXPAND}/migration.sql`; if everything is there, run `cargo xtask migrate resolve --applied {EXPAND}`",
                inspection.describe_columns()
            )));
        }
        return Ok(left_nothing(
            "none of its columns, view or functions exist".into(),
        ));
    }
    if name == tenancy::CONNECTION_KEY {
        let row = client
            .query_one(
                tenancy::CONNECTION_KEYS_SQL,
                &[&tenancy::CONNECTION_NEW_KEY, &tenancy::CONNECTION_OLD_KEY],
            )
            .context("cannot look up the keys of `Connection`")?;
        let (adopted, old_key): (bool, bool) = (row.get(0), row.get(1));
        let (new_key, old) = (tenancy::CONNECTION_NEW_KEY, tenancy::CONNECTION_OLD_KEY);
        return Ok(match (adopted, old_key) {
            (false, true) => left_nothing(format!(
                "`{new_key}` is not a constraint and the old key `{old}` still exists"
            )),
            (true, false) => unprovable(format!(
                "its failure is recorded, but `{new_key}` is the key and `{old}` is gone: it was applied; run `cargo xtask migrate resolve --applied {name}`"
            )),
            _ => unprovable(format!(
                "`{new_key}` is {}a constraint and the old key `{old}` {}: neither before nor after the migration; compare `Connection` with `migrations/{name}/migration.sql` and finish or undo it by hand",
                if adopted { "" } else { "not " },
                if old_key { "still exists" } else { "is gone" },
            )),
        });
    }
    let migration = migrations.iter().find(|m| m.name == name);
    if let Some(index) = migration.and_then(Migration::concurrent_index) {
        let valid: Option<bool> = client
            .query_opt(INDEX_VALID_SQL, &[&index])
            .with_context(|| format!("cannot look up the index `{index}`"))?
            .map(|row| row.get(0));
        return Ok(match valid {
            None => left_nothing(format!("the index `{index}` does not exist")),
            Some(false) => left_nothing(format!(
                "the index `{index}` is INVALID (an interrupted build holds no data); the deploy drops it before building it again"
            )),
            Some(true) => unprovable(format!(
                "its failure is recorded, but the index `{index}` exists and is valid: run `cargo xtask migrate resolve --applied {name}`"
            )),
        });
    }
    Ok(unprovable(format!(
        "`{name}` is not one of the steps of the workspace release, so recover cannot tell what its script changes. Read its logs (`cargo xtask migrate status`), undo or finish its changes by hand, then run `cargo xtask migrate resolve --rolled-back {name}` or `--applied {name}`"
    )))
}
