//! `cargo xtask verify`: the recovery plan's three verification queries (the `workspaceId`
//! columns, their foreign keys to `Workspace(id)`, their indexes) as aligned tables, each with a
//! one-line verdict. Catalog reads only, from `pg_catalog`, which (unlike `information_schema`'s
//! constraint views) shows every table the role can see, owned or not. Deterministic order.

use crate::db::Client;
use anyhow::{Context, Result};
use pico_args::Arguments;
use serde_json::json;

use crate::cli::{self, Globals};
use crate::db::Connect;
use crate::error::Outcome;
use crate::report::{self, Report, Style, Table};
use crate::tenancy::{self, CONTRACT, DATAHUB_TABLES, EXPAND};

pub(crate) const SUMMARY: &str =
    "the recovery plan's verification queries: columns, foreign keys, indexes";

pub(crate) const HELP: &str = "\
cargo xtask verify [--json]
The recovery plan's three verification queries (workspaceId columns, foreign keys to
Workspace(id), indexes on workspaceId) with a verdict each. Exit 0 when all three are ok.
";

pub(crate) fn run(mut args: Arguments, globals: &Globals) -> Result<Outcome> {
    if cli::wants_help(&mut args) {
        print!("{HELP}");
        return Ok(Outcome::Ready);
    }
    let json = args.contains("--json");
    cli::finish(args, "verify")?;
    let mut client = globals.url()?.connect()?;
    report::emit(&verify(&mut client)?, json)
}

/// The URL's schema, as an oid (a name compared as text, never re-parsed as an identifier).
const SCHEMA_OID: &str = "(SELECT n.oid FROM pg_namespace n WHERE n.nspname = current_schema())";

fn columns_sql() -> String {
    format!(
        "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, NULL),
                CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END,
                coalesce(pg_get_expr(d.adbin, d.adrelid), 'NULL')
         FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND NOT a.attisdropped
         LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE c.relnamespace = {SCHEMA_OID}
           AND c.relname::text = ANY($1)
           AND a.attname = 'workspaceId'
         ORDER BY array_position($1::text[], c.relname::text), a.attname"
    )
}

fn foreign_keys_sql() -> String {
    format!(
        "SELECT c.relname::text, a.attname::text, fc.relname::text, fa.attname::text, con.conname::text,
                CASE con.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'a' THEN 'NO ACTION'
                     WHEN 'r' THEN 'RESTRICT' WHEN 'n' THEN 'SET NULL' ELSE 'SET DEFAULT' END
         FROM pg_constraint con
         JOIN pg_class c ON c.oid = con.conrelid
         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
         JOIN pg_class fc ON fc.oid = con.confrelid
         JOIN pg_attribute fa ON fa.attrelid = con.confrelid AND fa.attnum = con.confkey[1]
         WHERE con.contype = 'f'
           AND c.relnamespace = {SCHEMA_OID}
           AND c.relname::text = ANY($1)
           AND a.attname = 'workspaceId'
         ORDER BY array_position($1::text[], c.relname::text), con.conname"
    )
}

fn indexes_sql() -> String {
    "SELECT tablename::text, indexname::text, indexdef
     FROM pg_indexes
     WHERE schemaname = current_schema()
       AND tablename::text = ANY($1)
       AND indexdef LIKE '%workspaceId%'
     ORDER BY array_position($1::text[], tablename::text), indexname"
        .to_string()
}

#[derive(Debug, Clone)]
pub struct Verdict {
    pub ok: bool,
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub columns: Table,
    pub foreign_keys: Table,
    pub indexes: Table,
    pub verdicts: [Verdict; 3],
}

pub fn verify(client: &mut Client) -> Result<VerifyReport> {
    let tables = tenancy::tables_param();
    let columns = query_table(
        client,
        &columns_sql(),
        &tables,
        &[
            "table_name",
            "column_name",
            "data_type",
            "is_nullable",
            "column_default",
        ],
    )
    .context("cannot run the `workspaceId` columns query")?;
    let foreign_keys = query_table(
        client,
        &foreign_keys_sql(),
        &tables,
        &[
            "table_name",
            "column_name",
            "foreign_table_name",
            "foreign_column_name",
            "constraint_name",
            "delete_rule",
        ],
    )
    .context("cannot run the foreign keys query")?;
    let indexes = query_table(
        client,
        &indexes_sql(),
        &tables,
        &["tablename", "indexname", "indexdef"],
    )
    .context("cannot run the indexes query")?;
    let verdicts = [
        columns_verdict(&columns),
        foreign_keys_verdict(&foreign_keys),
        indexes_verdict(&indexes),
    ];
    Ok(VerifyReport {
        columns,
        foreign_keys,
        indexes,
        verdicts,
    })
}

fn query_table(
    client: &mut Client,
    sql: &str,
    tables: &Vec<String>,
    headers: &[&str],
) -> Result<Table> {
    let mut table = Table::new(headers);
    for row in client.query(sql, &[tables])? {
        table.push(
            (0..headers.len())
                .map(|i| row.get::<_, String>(i))
                .collect(),
        );
    }
    Ok(table)
}

fn tables_missing_from(table: &Table) -> Vec<&'static str> {
    DATAHUB_TABLES
        .iter()
        .copied()
        .filter(|name| !table.rows.iter().any(|row| row[0] == *name))
        .collect()
}

fn columns_verdict(columns: &Table) -> Verdict {
    let missing = tables_missing_from(columns);
    if !missing.is_empty() {
        return Verdict {
            ok: false,
            text: format!(
                "workspaceId column missing on {}: the expand migration is not applied; run `cargo xtask migrate deploy --to {EXPAND}`",
                missing.join(", ")
            ),
        };
    }
    let nullable = columns.rows.iter().filter(|row| row[3] == "YES").count();
    let text = match nullable {
        4 => format!("4 workspaceId columns, text, nullable: ok (expand applied; `{CONTRACT}` makes them NOT NULL)"),
        0 => "4 workspaceId columns, text, NOT NULL: ok (contract applied)".to_string(),
        n => format!("4 workspaceId columns, {n} still nullable: ok (contract not applied on every table)"),
    };
    Verdict { ok: true, text }
}

fn foreign_keys_verdict(foreign_keys: &Table) -> Verdict {
    let missing = tables_missing_from(foreign_keys);
    let cascading = foreign_keys
        .rows
        .iter()
        .filter(|row| row[2] == "Workspace" && row[3] == "id" && row[5] == "CASCADE")
        .count();
    if missing.is_empty() && cascading == DATAHUB_TABLES.len() {
        Verdict {
            ok: true,
            text: "4 foreign keys to Workspace(id) ON DELETE CASCADE: ok".into(),
        }
    } else {
        Verdict {
            ok: false,
            text: format!(
                "{cascading} of 4 foreign keys to Workspace(id) ON DELETE CASCADE{}: run `cargo xtask migrate deploy --to {EXPAND}`",
                if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (missing on {})", missing.join(", "))
                }
            ),
        }
    }
}

fn indexes_verdict(indexes: &Table) -> Verdict {
    let missing = tables_missing_from(indexes);
    if missing.is_empty() {
        Verdict {
            ok: true,
            text: format!(
                "{} indexes on workspaceId, every table covered: ok",
                indexes.rows.len()
            ),
        }
    } else {
        Verdict {
            ok: false,
            text: format!(
                "no index on workspaceId for {}: the index migrations (built CONCURRENTLY after the backfill) are not applied yet; run `cargo xtask release`",
                missing.join(", ")
            ),
        }
    }
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok)
    }
}

impl Report for VerifyReport {
    fn render_with(&self, _style: Style) -> String {
        let sections = [
            ("workspaceId columns", &self.columns),
            ("Foreign keys on workspaceId", &self.foreign_keys),
            ("Indexes on workspaceId", &self.indexes),
        ];
        let mut out = String::new();
        for ((title, table), verdict) in sections.iter().zip(&self.verdicts) {
            out.push_str(&format!("{title}\n"));
            out.push_str(&table.render());
            out.push_str(&format!(
                "{} {}\n\n",
                if verdict.ok { "✅" } else { "❌" },
                verdict.text
            ));
        }
        out
    }

    fn to_json(&self) -> serde_json::Value {
        let rows = |table: &Table| {
            table
                .rows
                .iter()
                .map(|row| {
                    table
                        .headers
                        .iter()
                        .cloned()
                        // psql's `NULL` of the text tables is JSON's null.
                        .zip(row.iter().map(|cell| match cell.as_str() {
                            "NULL" => serde_json::Value::Null,
                            cell => json!(cell),
                        }))
                        .collect::<serde_json::Map<_, _>>()
                })
                .collect::<Vec<_>>()
        };
        let verdict = |v: &Verdict| json!({"ok": v.ok, "text": v.text});
        crate::report::document(
            "verify",
            json!({
                "ok": self.is_ok(),
                "columns": { "rows": rows(&self.columns), "verdict": verdict(&self.verdicts[0]) },
                "foreign_keys": { "rows": rows(&self.foreign_keys), "verdict": verdict(&self.verdicts[1]) },
                "indexes": { "rows": rows(&self.indexes), "verdict": verdict(&self.verdicts[2]) },
            }),
        )
    }

    fn ok(&self) -> bool {
        self.is_ok()
    }
}
