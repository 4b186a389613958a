//! `cargo xtask recover [--dry-run]`: the recovery plan, driven by what the database shows.
//!
//! It reads the failed rows of `_prisma_migrations` and the `workspaceId` columns (the plan's
//! scenario A: expand applied, contract failed; scenario B: expand failed too), and resolves a
//! failed migration as rolled back only when the database proves the failure left nothing
//! behind. Then it finishes the release: deploy up to expand, backfill, check, deploy the rest,
//! and `migrate status` must say up to date. A state it cannot prove safe stops it, with what it
//! found and what a person has to decide.

use std::time::Instant;

use anyhow::Result;
use postgres::Client;

use super::inspect::{self, Column, Inspection};
use super::release::{database_steps, failed, stopped};
use super::step::{RunbookReport, Step, StepResult, Steps};
use crate::backfill::BackfillOptions;
use crate::check;
use crate::db::{quote_ident, DatabaseUrl};
use crate::migrate::state::State;
use crate::migrate::{self, DeployOptions, Resolution};
use crate::migrations::{Migration, CONTRACT, EXPAND};
use crate::report::thousands;
use crate::tables::DATAHUB_TABLES;

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

impl RecoverReport {
    pub fn render(&self) -> String {
        let mut out = String::from("Found:\n");
        for finding in &self.findings {
            out.push_str(&format!("- {finding}\n"));
        }
        out.push('\n');
        out.push_str(&self.report.render());
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = self.report.to_json();
        doc["findings"] = serde_json::json!(self.findings);
        doc
    }
}

/// A failed migration and how the database shows it left nothing behind.
enum Resolve {
    /// Resolve as rolled back; the string is the proof.
    Safe { name: String, proof: String },
    /// An interrupted CREATE INDEX CONCURRENTLY left an invalid (unused, empty) index: drop it,
    /// then resolve.
    DropInvalidIndex { name: String, index: String },
    /// Cannot prove it: what was found and what a person must decide.
    Unsafe { name: String, why: String },
}

pub fn recover(
    client: &mut Client,
    url: &DatabaseUrl,
    migrations: &[Migration],
    options: &RecoverOptions,
) -> Result<RecoverReport> {
    let state = inspect::inspect(client, migrations)?;
    let mut findings = Vec::new();
    let mut steps = Steps::new(if options.dry_run {
        "recover --dry-run"
    } else {
        "recover"
    });

    let failed_names: Vec<String> = state
        .status
        .entries
        .iter()
        .filter(|e| e.state == State::Failed)
        .map(|e| e.name.clone())
        .collect();
    findings.push(match failed_names.len() {
        0 => "no failed migration in `_prisma_migrations`".to_string(),
        _ => format!("failed: {}", quoted(&failed_names)),
    });
    findings.push(format!("workspaceId columns: {}", state.describe_columns()));
    findings.push(state.status.summary());
    if let Some(scenario) = scenario(&state, &failed_names) {
        findings.push(scenario.to_string());
    }

    if state.status.is_up_to_date() {
        let report = steps.finish(
            true,
            "✅ Nothing to recover: Database schema is up to date and no migration failed.",
        );
        return Ok(RecoverReport { findings, report });
    }

    // Edited or missing migrations are a disagreement between the folder and the database that
    // no command may settle by itself.
    if let Some(entry) = state
        .status
        .entries
        .iter()
        .find(|e| matches!(e.state, State::Edited | State::MissingLocally))
    {
        let advice = state.status.advice().join("\n");
        steps.push(Step {
            name: "inspect".into(),
            result: StepResult::Failed,
            detail: format!(
                "migration `{}` is {}\n{advice}",
                entry.name,
                entry.state.label()
            ),
            duration: Default::default(),
            rows: None,
        });
        let report = steps.finish(
            false,
            format!(
                "❌ recover stopped: the migrations folder and the database disagree about `{}`; a person must decide which is right (see above), then run `cargo xtask recover` again.",
                entry.name
            ),
        );
        return Ok(RecoverReport { findings, report });
    }

    let mut resolutions = Vec::new();
    for name in &failed_names {
        resolutions.push(judge(client, &state, migrations, name)?);
    }
    if let Some(Resolve::Unsafe { name, why }) = resolutions
        .iter()
        .find(|r| matches!(r, Resolve::Unsafe { .. }))
    {
        steps.push(Step {
            name: format!("resolve {name}"),
            result: StepResult::Failed,
            detail: why.clone(),
            duration: Default::default(),
            rows: None,
        });
        let report = steps.finish(
            false,
            format!("❌ recover stopped: it cannot prove that `{name}` left nothing behind, so it changed nothing. A person must decide (see above), then run `cargo xtask recover` again."),
        );
        return Ok(RecoverReport { findings, report });
    }

    if options.dry_run {
        plan_only(client, &state, &resolutions, &mut steps)?;
        let report = steps.finish(
            true,
            "Dry run: nothing was changed. Run `cargo xtask recover` to follow this plan.",
        );
        return Ok(RecoverReport { findings, report });
    }

    for resolution in &resolutions {
        let started = Instant::now();
        let (name, proof) = match resolution {
            Resolve::Safe { name, proof } => (name, proof.clone()),
            Resolve::DropInvalidIndex { name, index } => {
                let sql = format!("DROP INDEX CONCURRENTLY IF EXISTS {}", quote_ident(index));
                if let Err(error) = client.batch_execute(&sql) {
                    steps.push(failed(&format!("resolve {name}"), started, &error.into()));
                    let report = stopped(steps, &format!("resolve {name}"), &format!("drop the invalid index by hand (`{sql}`), then run `cargo xtask recover` again"));
                    return Ok(RecoverReport { findings, report });
                }
                (name, format!("dropped the invalid index `{index}` it left"))
            }
            Resolve::Unsafe { .. } => unreachable!("refused above"),
        };
        match migrate::resolve(
            client,
            migrations,
            Resolution::RolledBack,
            name,
            options.deploy.lock_wait,
        ) {
            Ok(_) => steps.push(Step {
                name: format!("resolve {name}"),
                result: StepResult::Done,
                detail: format!("marked rolled back: {proof}"),
                duration: started.elapsed(),
                rows: None,
            }),
            Err(error) => {
                steps.push(failed(&format!("resolve {name}"), started, &error));
                let report = stopped(
                    steps,
                    &format!("resolve {name}"),
                    "run `cargo xtask recover` again",
                );
                return Ok(RecoverReport { findings, report });
            }
        }
    }

    if let Some(stop) = database_steps(
        client,
        url,
        migrations,
        &options.deploy,
        &options.backfill,
        &mut steps,
    )? {
        let report = stopped(steps, &stop.at, &stop.next);
        return Ok(RecoverReport { findings, report });
    }

    let started = Instant::now();
    let status = migrate::status(client, migrations)?;
    let up_to_date = status.is_up_to_date();
    steps.push(Step {
        name: "migrate status".into(),
        result: if up_to_date {
            StepResult::Done
        } else {
            StepResult::Failed
        },
        detail: status.summary(),
        duration: started.elapsed(),
        rows: None,
    });
    let report = if up_to_date {
        steps.finish(
            true,
            "✅ Recovered: Database schema is up to date, no NULLs. Next: `cargo xtask smoke` (or `cargo xtask release`, which builds and smokes).",
        )
    } else {
        stopped(
            steps,
            "migrate status",
            "run `cargo xtask migrate status` and follow its advice",
        )
    };
    Ok(RecoverReport { findings, report })
}

/// The recovery plan's scenario, when the state is one of the two it describes.
fn scenario(state: &Inspection, failed: &[String]) -> Option<&'static str> {
    let failed = |name: &str| failed.iter().any(|f| f == name);
    if failed(EXPAND) && state.all_columns(Column::Missing) {
        Some("scenario B of the recovery plan: the expand migration failed, the columns do not exist")
    } else if failed(CONTRACT) && state.all_columns(Column::Nullable) {
        Some("scenario A of the recovery plan: the columns exist and are nullable, the contract failed")
    } else {
        None
    }
}

/// Whether the database proves that the failed migration `name` left nothing behind.
fn judge(
    client: &mut Client,
    state: &Inspection,
    migrations: &[Migration],
    name: &str,
) -> Result<Resolve> {
    let unsafe_because = |why: String| Resolve::Unsafe {
        name: name.to_string(),
        why,
    };
    if name == CONTRACT {
        if state.any_column(Column::NotNull) {
            return Ok(unsafe_because(format!(
                "its failure is recorded, but workspaceId is NOT NULL on some tables ({}): the contract was applied, fully or in part, another way. If all four are NOT NULL, record it with `cargo xtask migrate resolve --applied {CONTRACT}`; otherwise run `cargo xtask rollback --yes` first",
                state.describe_columns()
            )));
        }
        return Ok(Resolve::Safe {
            name: name.into(),
            proof: "no workspaceId column is NOT NULL, so its script left nothing".into(),
        });
    }
    if name == EXPAND {
        let leftovers: i64 = client
            .query_one(
                "SELECT (to_regclass('datahub_home_workspace') IS NOT NULL)::int
                      + (to_regprocedure('datahub_fill_workspace_id()') IS NOT NULL)::int
                      + (to_regprocedure('datahub_home_workspace_id(text)') IS NOT NULL)::int",
                &[],
            )?
            .get::<_, i32>(0)
            .into();
        if !state.all_columns(Column::Missing) || leftovers > 0 {
            return Ok(unsafe_because(format!(
                "its failure is recorded, but some of what it creates exists ({}; {leftovers} of its view and functions): it was applied, fully or in part, another way. Compare the database with `migrations/{EXPAND}/migration.sql`; if everything is there, run `cargo xtask migrate resolve --applied {EXPAND}`",
                state.describe_columns()
            )));
        }
        return Ok(Resolve::Safe {
            name: name.into(),
            proof: "none of its columns, view or functions exist".into(),
        });
    }
    let migration = migrations.iter().find(|m| m.name == name);
    if let Some(index) = migration.and_then(Migration::concurrent_index) {
        let valid: Option<bool> = client
            .query_opt(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace",
                &[&index],
            )?
            .map(|row| row.get(0));
        return Ok(match valid {
            None => Resolve::Safe {
                name: name.into(),
                proof: format!("the index `{index}` does not exist"),
            },
            Some(false) => Resolve::DropInvalidIndex {
                name: name.into(),
                index,
            },
            Some(true) => unsafe_because(format!(
                "its failure is recorded, but the index `{index}` exists and is valid: run `cargo xtask migrate resolve --applied {name}`"
            )),
        });
    }
    Ok(unsafe_because(format!(
        "`{name}` is not one of the steps of the workspace release, so recover cannot tell what its script changes. Read its logs (`cargo xtask migrate status`), undo or finish its changes by hand, then run `cargo xtask migrate resolve --rolled-back {name}` or `--applied {name}`"
    )))
}

/// The plan as `Planned` steps, from the current state, changing nothing.
fn plan_only(
    client: &mut Client,
    state: &Inspection,
    resolutions: &[Resolve],
    steps: &mut Steps,
) -> Result<()> {
    let mut expand_pending = state.status.state_of(EXPAND).is_none_or(|s| s.is_pending());
    for resolution in resolutions {
        match resolution {
            Resolve::Safe { name, proof } => {
                steps.planned(
                    &format!("resolve {name}"),
                    format!("mark rolled back: {proof}"),
                );
            }
            Resolve::DropInvalidIndex { name, index } => steps.planned(
                &format!("resolve {name}"),
                format!("drop the invalid index `{index}` it left, then mark rolled back"),
            ),
            Resolve::Unsafe { .. } => {}
        }
        if matches!(resolution, Resolve::Safe { name, .. } if name == EXPAND) {
            expand_pending = true;
        }
    }
    if expand_pending {
        steps.planned("deploy expand", format!("apply `{EXPAND}`"));
    }
    if state.all_columns(Column::NotNull) {
        steps.planned("backfill", "nothing to do: workspaceId is NOT NULL");
    } else if state.any_column(Column::Missing) {
        let mut rows = 0i64;
        for table in DATAHUB_TABLES {
            let sql = format!("SELECT count(*) FROM {}", quote_ident(table));
            rows += client.query_one(&sql, &[])?.get::<_, i64>(0);
        }
        steps.planned(
            "backfill",
            format!(
                "every row of the 4 tables ({}), once the columns exist",
                thousands(rows)
            ),
        );
    } else {
        let nulls = check::check(client)?.total_nulls();
        steps.planned(
            "backfill",
            format!("{} rows with a NULL workspaceId", thousands(nulls)),
        );
    }
    steps.planned("check", "must pass before the contract");
    steps.planned(
        "deploy",
        format!("apply the remaining migrations, up to `{CONTRACT}`"),
    );
    steps.planned("migrate status", "must say: Database schema is up to date!");
    Ok(())
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
