//! `cargo xtask verify`: the recovery plan's three verification queries (the `workspaceId`
//! columns, their foreign keys to `Workspace(id)`, their indexes) as aligned tables, each with a
//! one-line verdict. Only catalog reads; deterministic order and columns.

use anyhow::{Context, Result};
use postgres::Client;
use serde_json::json;

use crate::migrations::{CONTRACT, EXPAND};
use crate::report::Table;
use crate::tables::{DATAHUB_TABLES, TABLE_ORDER_SQL};

fn columns_sql() -> String {
    format!(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text,
                coalesce(column_default::text, 'NULL')
         FROM information_schema.columns
         WHERE table_schema = current_schema()
           AND table_name::text = ANY($1)
           AND column_name = 'workspaceId'
         ORDER BY {TABLE_ORDER_SQL}, column_name"
    )
}

fn foreign_keys_sql() -> String {
    format!(
        "SELECT tc.table_name::text, kcu.column_name::text, ccu.table_name::text AS foreign_table_name,
                ccu.column_name::text AS foreign_column_name, tc.constraint_name::text, rc.delete_rule::text
         FROM information_schema.table_constraints AS tc
         JOIN information_schema.key_column_usage AS kcu
           ON tc.constraint_name = kcu.constraint_name AND tc.constraint_schema = kcu.constraint_schema
         JOIN information_schema.constraint_column_usage AS ccu
           ON ccu.constraint_name = tc.constraint_name AND ccu.constraint_schema = tc.constraint_schema
         JOIN information_schema.referential_constraints AS rc
           ON rc.constraint_name = tc.constraint_name AND rc.constraint_schema = tc.constraint_schema
         WHERE tc.constraint_type = 'FOREIGN KEY'
           AND tc.table_schema = current_schema()
           AND tc.table_name::text = ANY($1)
           AND kcu.column_name = 'workspaceId'
         ORDER BY {}, tc.constraint_name",
        TABLE_ORDER_SQL.replace("table_name", "tc.table_name")
    )
}

fn indexes_sql() -> String {
    format!(
        "SELECT tablename::text AS table_name, indexname::text, indexdef
         FROM pg_indexes
         WHERE schemaname = current_schema()
           AND tablename::text = ANY($1)
           AND indexdef LIKE '%workspaceId%'
         ORDER BY {}, indexname",
        TABLE_ORDER_SQL.replace("table_name", "tablename")
    )
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
    let tables: Vec<String> = DATAHUB_TABLES.iter().map(|t| t.to_string()).collect();
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

    pub fn render(&self) -> String {
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

    pub fn to_json(&self) -> serde_json::Value {
        let rows = |table: &Table| {
            table
                .rows
                .iter()
                .map(|row| {
                    table
                        .headers
                        .iter()
                        .cloned()
                        .zip(row.iter().map(|cell| json!(cell)))
                        .collect::<serde_json::Map<_, _>>()
                })
                .collect::<Vec<_>>()
        };
        let verdict = |v: &Verdict| json!({"ok": v.ok, "text": v.text});
        json!({
            "ok": self.is_ok(),
            "columns": { "rows": rows(&self.columns), "verdict": verdict(&self.verdicts[0]) },
            "foreignKeys": { "rows": rows(&self.foreign_keys), "verdict": verdict(&self.verdicts[1]) },
            "indexes": { "rows": rows(&self.indexes), "verdict": verdict(&self.verdicts[2]) },
        })
    }
}
