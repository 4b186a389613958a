//! `migrate drift`: compares a live database with what its applied migrations produce. The
//! migrations `_prisma_migrations` records as applied are replayed from the folder, in order,
//! on a shadow database (a throwaway cluster, or `--shadow-url`); then both schemas (the
//! database URL's schema) are read from the catalog as facts — tables, columns with their type,
//! nullability and default, constraints with their definition and validity, indexes with their
//! definition and validity, enum values in order, triggers with their definition — and every
//! fact that differs is printed with the SQL that shows it on the database. Exit 1 on drift.
//! Only the catalog of the live database is read; nothing is written there.

use std::collections::BTreeMap;

use crate::db::Client;
use anyhow::{Context, Result};
use pico_args::Arguments;
use serde_json::json;

use super::shadow::Shadow;
use super::state::State;
use crate::cli::{self, Globals};
use crate::db::{quote_ident, Connect};
use crate::error::Outcome;
use crate::migrations::Migration;
use crate::report::{self, Report, Style};

pub(crate) const HELP: &str = "\
cargo xtask migrate drift [--json] [--shadow-url URL]
Compares the database (DATABASE_URL or --database-url; only its catalog is read) with what its
applied migrations produce: the migrations `_prisma_migrations` records as applied are replayed
from the folder on a shadow database, and tables, columns (type, nullability, default),
constraints (definition, validity), indexes (definition, validity), enum values and triggers are
compared in the URL's schema. Each difference is printed with the SQL to inspect it on the
database. Exit 0: no drift; 1: drift; 2: no database URL or it cannot be read.
";

/// What kind of object a fact is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Table,
    Column,
    Constraint,
    Index,
    Enum,
    Trigger,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Table => "table",
            Kind::Column => "column",
            Kind::Constraint => "constraint",
            Kind::Index => "index",
            Kind::Enum => "enum",
            Kind::Trigger => "trigger",
        }
    }
}

/// One object of a schema: (kind, table or type, name within it) → its definition.
pub type Facts = BTreeMap<(Kind, String, String), String>;

/// Every fact below is read from the schema the connection's search path starts with (a
/// Prisma `?schema=`), except Prisma's own `_prisma_migrations`. Catalog reads only.
const TABLES_SQL: &str = "
    SELECT c.relname::text, c.relkind::text FROM pg_class c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
      AND c.relname <> '_prisma_migrations'
    ORDER BY 1";

const COLUMNS_SQL: &str = "
    SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
           a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
           a.attidentity::text, a.attgenerated::text
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
      AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> '_prisma_migrations'
    ORDER BY 1, 2";

const CONSTRAINTS_SQL: &str = "
    SELECT c.relname::text, k.conname::text, pg_get_constraintdef(k.oid), k.convalidated
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relname <> '_prisma_migrations'
    ORDER BY 1, 2";

const INDEXES_SQL: &str = "
    SELECT t.relname::text, i.relname::text, pg_get_indexdef(i.oid), x.indisvalid
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class t ON t.oid = x.indrelid
    WHERE t.relnamespace = current_schema()::regnamespace AND t.relname <> '_prisma_migrations'
    ORDER BY 1, 2";

const ENUMS_SQL: &str = "
    SELECT t.typname::text, string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
    FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
    WHERE t.typnamespace = current_schema()::regnamespace
    GROUP BY 1 ORDER BY 1";

const TRIGGERS_SQL: &str = "
    SELECT c.relname::text, g.tgname::text, pg_get_triggerdef(g.oid), g.tgenabled::text
    FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
    WHERE NOT g.tgisinternal AND c.relnamespace = current_schema()::regnamespace
    ORDER BY 1, 2";

/// The schema's facts, with the schema's name taken out of definitions so a database whose
/// tables live in another schema than the shadow's compares equal.
pub fn facts(client: &mut Client) -> Result<Facts> {
    let schema: String = client
        .query_one("SELECT current_schema()::text", &[])
        .context("cannot read the current schema")?
        .get(0);
    let unqualify = |text: String| {
        text.replace(&format!("{}.", quote_ident(&schema)), "")
            .replace(&format!("{schema}."), "")
    };
    let mut facts = Facts::new();
    let mut read = |sql: &str, what: &str| {
        client
            .query(sql, &[])
            .with_context(|| format!("cannot read the {what} from the catalog"))
    };
    for row in read(TABLES_SQL, "tables")? {
        let kind = match row.get::<_, String>(1).as_str() {
            "v" => "view",
            "m" => "materialized view",
            _ => "table",
        };
        facts.insert((Kind::Table, row.get(0), String::new()), kind.into());
    }
    for row in read(COLUMNS_SQL, "columns")? {
        let mut text = unqualify(row.get::<_, String>(2));
        if row.get::<_, bool>(3) {
            text.push_str(" NOT NULL");
        }
        let default: String = row.get(4);
        let identity: String = row.get(5);
        let generated: String = row.get(6);
        if !identity.is_empty() {
            text.push_str(" GENERATED AS IDENTITY");
        } else if !generated.is_empty() {
            text.push_str(&format!(" GENERATED ALWAYS AS ({})", unqualify(default)));
        } else if !default.is_empty() {
            text.push_str(&format!(" DEFAULT {}", unqualify(default)));
        }
        facts.insert((Kind::Column, row.get(0), row.get(1)), text);
    }
    for row in read(CONSTRAINTS_SQL, "constraints")? {
        // `pg_get_constraintdef` ends with NOT VALID for a constraint not validated yet.
        let mut text = unqualify(row.get::<_, String>(2));
        if !row.get::<_, bool>(3) && !text.ends_with("NOT VALID") {
            text.push_str(" NOT VALID");
        }
        facts.insert((Kind::Constraint, row.get(0), row.get(1)), text);
    }
    for row in read(INDEXES_SQL, "indexes")? {
        let mut text = unqualify(row.get::<_, String>(2));
        if !row.get::<_, bool>(3) {
            text.push_str(" (INVALID: a failed CREATE INDEX CONCURRENTLY)");
        }
        facts.insert((Kind::Index, row.get(0), row.get(1)), text);
    }
    for row in read(ENUMS_SQL, "enum types")? {
        facts.insert((Kind::Enum, row.get(0), String::new()), row.get(1));
    }
    for row in read(TRIGGERS_SQL, "triggers")? {
        let mut text = unqualify(row.get::<_, String>(2));
        if row.get::<_, String>(3) == "D" {
            text.push_str(" (DISABLED)");
        }
        facts.insert((Kind::Trigger, row.get(0), row.get(1)), text);
    }
    Ok(facts)
}

/// One object that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub kind: Kind,
    pub table: String,
    pub name: String,
    /// As the applied migrations make it (None: they do not have it).
    pub migrations: Option<String>,
    /// As the database has it (None: it does not have it).
    pub database: Option<String>,
    /// A constraint the migrations leave NOT VALID that the database has validated (by hand,
    /// or a contract rolled back after it validated): stricter, so not drift; shown.
    pub validated_since: bool,
}

impl Difference {
    /// `column `MetricDaily`.`note``.
    pub fn object(&self) -> String {
        match self.name.is_empty() {
            true => format!("{} `{}`", self.kind.label(), self.table),
            false => format!("{} `{}`.`{}`", self.kind.label(), self.table, self.name),
        }
    }

    /// The SQL that shows the object on the database.
    pub fn inspect_sql(&self) -> String {
        let table = literal(&self.table);
        let name = literal(&self.name);
        match self.kind {
            Kind::Table => format!("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = {table};"),
            Kind::Column => format!("SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = {table} AND column_name = {name};"),
            Kind::Constraint => format!("SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint WHERE conrelid = {}::regclass AND conname = {name};", literal(&quote_ident(&self.table))),
            Kind::Index => format!("SELECT i.relname, pg_get_indexdef(i.oid), x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = {}::regclass AND i.relname = {name};", literal(&quote_ident(&self.table))),
            Kind::Enum => format!("SELECT enumlabel FROM pg_enum WHERE enumtypid = {}::regtype ORDER BY enumsortorder;", literal(&quote_ident(&self.table))),
            Kind::Trigger => format!("SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger WHERE tgrelid = {}::regclass AND tgname = {name};", literal(&quote_ident(&self.table))),
        }
    }
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Every fact that differs between what the migrations make and what the database has.
pub fn compare(migrations: &Facts, database: &Facts) -> Vec<Difference> {
    let mut keys: Vec<&(Kind, String, String)> = migrations.keys().chain(database.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| migrations.get(*key) != database.get(*key))
        .map(|key| {
            let ours = migrations.get(key).cloned();
            let theirs = database.get(key).cloned();
            let validated_since = key.0 == Kind::Constraint
                && matches!((&ours, &theirs), (Some(ours), Some(theirs)) if ours.strip_suffix(" NOT VALID") == Some(theirs.as_str()));
            Difference {
                kind: key.0,
                table: key.1.clone(),
                name: key.2.clone(),
                migrations: ours,
                database: theirs,
                validated_since,
            }
        })
        .collect()
}

/// The drift of one database.
#[derive(Debug, Clone)]
pub struct DriftReport {
    pub database: String,
    pub replayed: usize,
    /// Applied migrations that could not be replayed as applied (failed, missing, edited).
    pub notes: Vec<String>,
    pub differences: Vec<Difference>,
}

impl Report for DriftReport {
    fn render_with(&self, _style: Style) -> String {
        let mut out = format!(
            "drift: `{}` against its {} applied migration(s), replayed on a shadow database\n",
            self.database, self.replayed
        );
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        for difference in &self.differences {
            let what = match (&difference.migrations, &difference.database) {
                (Some(ours), None) => {
                    format!("made by the migrations, missing in the database: {ours}")
                }
                (None, Some(theirs)) => {
                    format!("in the database, not made by any migration: {theirs}")
                }
                (Some(ours), Some(theirs)) => {
                    format!("the migrations make `{ours}`, the database has `{theirs}`")
                }
                (None, None) => String::new(),
            };
            if difference.validated_since {
                out.push_str(&format!(
                    "ℹ️ {}: validated in the database, NOT VALID as the migrations leave it: stricter, not drift\n    inspect: {}\n",
                    difference.object(),
                    difference.inspect_sql()
                ));
                continue;
            }
            out.push_str(&format!(
                "❌ {}: {what}\n    inspect: {}\n",
                difference.object(),
                difference.inspect_sql()
            ));
        }
        let drifted = self.drifted().count();
        if drifted == 0 {
            out.push_str("✅ no drift: tables, columns, constraints, indexes, enum values and triggers are as the applied migrations make them\n");
        } else {
            out.push_str(&format!(
                "{drifted} difference(s): the database has drifted from its migrations. Write a migration that makes each change (`cargo xtask migrate new NAME`), or undo the change by hand, then run `cargo xtask migrate drift` again.\n"
            ));
        }
        out
    }

    fn to_json(&self) -> serde_json::Value {
        crate::report::document(
            "migrate_drift",
            json!({
                "database": self.database,
                "replayed": self.replayed,
                "notes": self.notes,
                "drift": self.drifted().count(),
                "differences": self.differences.iter().map(|d| json!({
                    "kind": d.kind.label(), "table": d.table, "name": d.name,
                    "migrations": d.migrations, "database": d.database, "inspect": d.inspect_sql(),
                    "drift": !d.validated_since,
                })).collect::<Vec<_>>(),
            }),
        )
    }

    fn ok(&self) -> bool {
        self.drifted().next().is_none()
    }
}

impl DriftReport {
    /// The differences that are drift.
    pub fn drifted(&self) -> impl Iterator<Item = &Difference> {
        self.differences.iter().filter(|d| !d.validated_since)
    }
}

/// Replays the applied migrations on `shadow` and compares.
pub fn drift(
    client: &mut Client,
    migrations: &[Migration],
    shadow: &mut Shadow,
    database: String,
) -> Result<DriftReport> {
    let status = super::status(client, migrations)?;
    let mut notes = Vec::new();
    let mut replay = Vec::new();
    for entry in &status.entries {
        match entry.state {
            State::Applied => replay.push(entry.name.clone()),
            State::Edited => {
                notes.push(format!(
                    "`{}` was edited since it was applied: the folder's version is replayed",
                    entry.name
                ));
                replay.push(entry.name.clone());
            }
            State::Failed => notes.push(format!(
                "`{}` is failed: whatever it left behind shows as drift; run `cargo xtask recover`",
                entry.name
            )),
            State::MissingLocally => notes.push(format!(
                "`{}` is applied but missing from the folder: what it made shows as drift",
                entry.name
            )),
            _ => {}
        }
    }
    let base = shadow.create(None)?;
    let outcome = (|| -> Result<Facts> {
        let mut replica = shadow.connect(&base, None)?;
        for migration in migrations.iter().filter(|m| replay.contains(&m.name)) {
            replica.batch_execute(&migration.script).map_err(|error| {
                anyhow::anyhow!(
                    "migration `{}` fails on the shadow database: {}; run `cargo xtask migrate lint {}` to see the statement",
                    migration.name,
                    crate::db::describe_driver_error(&error),
                    migration.name
                )
            })?;
        }
        facts(&mut replica)
    })();
    shadow.drop_database(&base)?;
    let ours = outcome?;
    let theirs = facts(client)?;
    Ok(DriftReport {
        database,
        replayed: replay.len(),
        notes,
        differences: compare(&ours, &theirs),
    })
}

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    let json = args.contains("--json");
    let shadow_url = cli::text(&mut args, "--shadow-url")?;
    cli::finish(args, "migrate drift")?;
    let migrations = globals.migrations()?;
    let url = globals.url()?;
    let mut client = url.connect()?;
    let mut shadow = match shadow_url {
        Some(url) => Shadow::on_server(&url)?,
        None => Shadow::throwaway()?,
    };
    let report = drift(&mut client, &migrations, &mut shadow, url.describe())?;
    report::emit(&report, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difference_names_its_side_and_how_to_inspect_it() {
        let ours = Facts::from([
            (
                (Kind::Index, "T".into(), "T_a_idx".into()),
                "CREATE INDEX \"T_a_idx\" ON \"T\" USING btree (a)".into(),
            ),
            ((Kind::Column, "T".into(), "a".into()), "text".into()),
        ]);
        let mut theirs = ours.clone();
        theirs.remove(&(Kind::Index, "T".into(), "T_a_idx".into()));
        theirs.insert((Kind::Column, "T".into(), "b".into()), "integer".into());
        let differences = compare(&ours, &theirs);
        assert_eq!(differences.len(), 2);
        assert_eq!(differences[0].object(), "column `T`.`b`");
        assert_eq!(differences[0].migrations, None);
        assert_eq!(differences[1].database, None);
        assert!(differences[1]
            .inspect_sql()
            .contains("x.indrelid = '\"T\"'::regclass AND i.relname = 'T_a_idx'"));
    }
}
