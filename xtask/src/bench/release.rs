//! The whole release against the naive runbook, on twin databases seeded before tenancy, with
//! the simulated app writing throughout.
//!
//! Ours: `release`'s database steps as `cargo xtask release` runs them (deploy `--to` expand,
//! backfill, check, deploy the index migrations and the contract), without the app build and
//! the smoke test. The naive runbook, as the seeds describe it: the expand with its indexes
//! built in the same transaction (plain `CREATE INDEX`, as Prisma generates them) and its
//! foreign keys validated there, one `UPDATE … FROM` per table as the npm backfill script did,
//! the check, and a guarded plain `SET NOT NULL`. The naive expand keeps the expand's trigger:
//! without it the app's writes leave NULLs behind and the guard fails, which is the incident,
//! not a time to compare.

use std::time::Instant;

use crate::db::Client;
use anyhow::{bail, Context, Result};

use super::writer::{Latencies, Writer, WriterPlan};
use crate::backfill::BackfillOptions;
use crate::check;
use crate::db::{quote_ident, Connect, DatabaseUrl};
use crate::migrate::DeployOptions;
use crate::migrations::Migration;
use crate::runbook::database_steps;
use crate::runbook::step::Steps;
use crate::tenancy::{self, CONTRACT, DATAHUB_TABLES, EXPAND};

/// One whole run: its wall time, what the app saw, and each step's time.
pub(crate) struct ReleaseRun {
    pub started: Instant,
    pub seconds: f64,
    pub app: Latencies,
    pub steps: Vec<(String, f64)>,
}

impl ReleaseRun {
    /// The longest any of the app's writes waited, inserts and updates alike, in ms.
    pub(crate) fn longest_write_wait(&self) -> f64 {
        self.app.longest_insert().max(self.app.longest_update())
    }

    /// `an insert during backfill`: the app's slowest write, and the step it started in (the
    /// steps ran back to back).
    pub(crate) fn slowest_write(&self) -> String {
        let Some((at, _, kind)) = self.app.slowest else {
            return "no write".into();
        };
        let at = at.saturating_duration_since(self.started).as_secs_f64();
        let mut end = 0.0;
        for (step, seconds) in &self.steps {
            end += seconds;
            if at < end {
                return format!("{kind} during {step}");
            }
        }
        format!("{kind} after the last step")
    }

    /// `deploy expand 0.1 s, backfill 70.2 s, …`
    pub(crate) fn describe_steps(&self) -> String {
        self.steps
            .iter()
            .map(|(step, seconds)| format!("{step} {seconds:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `release`'s database steps on `url`, with the app writing from start to end.
pub(crate) fn ours(
    url: &DatabaseUrl,
    migrations: &[Migration],
    backfill: &BackfillOptions,
    plan: WriterPlan,
) -> Result<ReleaseRun> {
    let mut client = url.connect()?;
    let writer = Writer::start(url, plan)?;
    let started = Instant::now();
    let mut steps = Steps::new("release");
    let stop = database_steps::run(
        &mut client,
        url,
        migrations,
        &DeployOptions::default(),
        backfill,
        &database_steps::Gates { app_deployed: true },
        &mut steps,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let app = writer.finish()?;
    if let Some(stop) = stop {
        bail!(
            "the release's database steps stopped at `{}` in the bench; next: {}",
            stop.at,
            stop.next
        );
    }
    let steps = steps
        .finish(true, "")
        .steps
        .into_iter()
        .map(|s| (s.name, s.duration.as_secs_f64()))
        .collect();
    Ok(ReleaseRun {
        started,
        seconds,
        app,
        steps,
    })
}

/// The naive runbook on `url`, with the app writing from start to end.
pub(crate) fn naive(
    url: &DatabaseUrl,
    migrations: &[Migration],
    plan: WriterPlan,
) -> Result<ReleaseRun> {
    let expand = naive_expand_sql(migrations)?;
    let tenancy = crate::tenancy::release(migrations)?;
    let mut client = url.connect()?;
    let writer = Writer::start(url, plan)?;
    let started = Instant::now();
    let mut steps = Vec::new();
    let mut timed = |name: &str, work: &mut dyn FnMut(&mut Client) -> Result<()>| {
        let t = Instant::now();
        work(&mut client)?;
        steps.push((name.to_string(), t.elapsed().as_secs_f64()));
        anyhow::Ok(())
    };
    timed("expand with its indexes", &mut |client| {
        client
            .batch_execute(&expand)
            .context("the naive expand failed")
    })?;
    timed("one UPDATE per table", &mut |client| {
        one_update_per_table(client, true).map(|_| ())
    })?;
    timed("check", &mut |client| {
        if !check::check_release(client, &tenancy)?.is_backfilled() {
            bail!("the naive runbook's UPDATEs left NULLs");
        }
        Ok(())
    })?;
    timed("guarded SET NOT NULL", &mut |client| {
        client
            .batch_execute(&naive_contract_sql())
            .context("the naive contract failed")
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let app = writer.finish()?;
    Ok(ReleaseRun {
        started,
        seconds,
        app,
        steps,
    })
}

/// The expand migration, then its index migrations as plain `CREATE INDEX`, then its foreign
/// keys validated, in one transaction: ACCESS EXCLUSIVE on the four tables from the first
/// `ALTER TABLE` until the last index is built, so the app's writes wait for all of it.
fn naive_expand_sql(migrations: &[Migration]) -> Result<String> {
    let position = |name: &str| {
        migrations
            .iter()
            .position(|m| m.name == name)
            .with_context(|| format!("the migration `{name}` is not in the migrations folder"))
    };
    let (expand, contract) = (position(EXPAND)?, position(CONTRACT)?);
    let mut sql = format!("BEGIN;\n{}\n", migrations[expand].script);
    for index in &migrations[expand + 1..contract] {
        if !index.script.contains("CREATE INDEX CONCURRENTLY") {
            bail!(
                "the migration `{}` between expand and contract is not a `CREATE INDEX CONCURRENTLY`",
                index.name
            );
        }
        sql.push_str(
            &index
                .script
                .replace("CREATE INDEX CONCURRENTLY", "CREATE INDEX"),
        );
        sql.push('\n');
    }
    for table in DATAHUB_TABLES {
        sql.push_str(&format!(
            "ALTER TABLE {} VALIDATE CONSTRAINT {};\n",
            quote_ident(table),
            quote_ident(&format!("{table}_workspaceId_fkey"))
        ));
    }
    sql.push_str("COMMIT;\n");
    Ok(sql)
}

/// The seed's guard (counts the NULLs, raises when there are any), then a plain `SET NOT NULL`
/// per table, in one transaction: each takes ACCESS EXCLUSIVE and scans its table under it.
fn naive_contract_sql() -> String {
    let counts = crate::tenancy::null_counts(" + ");
    let mut sql = format!(
        "BEGIN;\nDO $$ BEGIN IF {counts} > 0 THEN RAISE EXCEPTION 'Cannot enforce NOT NULL: NULL values found'; END IF; END $$;\n"
    );
    for table in DATAHUB_TABLES {
        sql.push_str(&format!(
            r#"ALTER TABLE {} ALTER COLUMN "workspaceId" SET NOT NULL;"#,
            quote_ident(table)
        ));
        sql.push('\n');
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// The npm backfill script: personal workspaces for users without a membership (when
/// `with_personal`), then one `UPDATE … FROM` the home-workspace view per table, each one
/// transaction holding the row locks of every row it fills until it commits. Returns the rows.
pub(crate) fn one_update_per_table(client: &mut Client, with_personal: bool) -> Result<u64> {
    if with_personal {
        client
            .batch_execute(&format!(
                r#"SELECT {}(u."id") FROM "User" u
                   WHERE NOT EXISTS (SELECT 1 FROM "WorkspaceMember" m WHERE m."userId" = u."id")"#,
                quote_ident(tenancy::ENSURE_PERSONAL_FUNCTION)
            ))
            .context("cannot create the personal workspaces")?;
    }
    let mut rows = 0;
    for table in DATAHUB_TABLES {
        rows += client
            .execute(
                &format!(
                    r#"UPDATE {} t SET "workspaceId" = h."workspaceId"
                       FROM {} h
                       WHERE h."userId" = t."userId" AND t."workspaceId" IS NULL"#,
                    quote_ident(table),
                    quote_ident(tenancy::HOME_VIEW)
                ),
                &[],
            )
            .with_context(|| format!("the one-statement UPDATE of `{table}` failed"))?;
    }
    Ok(rows)
}
