//! Sample rows for a shadow database, so a migration meets rows as it would in production:
//! a data guard counts them, an UPDATE changes them, a scan reads them. Each table gets
//! `SAMPLE_ROWS` rows, parents before children: a column with a default gets its default, a
//! foreign key column references a sample row of its parent, any other NOT NULL column a
//! value made from the row number, and any other nullable column is NULL (as a column added
//! by an earlier migration is NULL on old rows). When a table refuses such rows (a CHECK), the
//! nullable columns are filled too; a table that refuses both stays empty and the report says so.

use std::collections::{BTreeMap, BTreeSet};

use crate::db::Client;
use anyhow::{Context, Result};

use crate::db::{self, quote_ident};

pub(crate) const SAMPLE_ROWS: i64 = 20;

/// Ordinary tables of the user schemas (not partitions), with their columns.
const COLUMNS_SQL: &str = "
    SELECT c.oid, n.nspname::text, c.relname::text, a.attname::text,
           format_type(a.atttypid, a.atttypmod), t.typcategory::text, t.typtype::text, t.typname::text,
           a.attnotnull, a.atthasdef, a.attidentity::text, a.attgenerated::text
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
      AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
    ORDER BY n.nspname, c.relname, a.attnum";

/// Each foreign key column: (table, column, parent table, parent column, constraint).
const FOREIGN_KEYS_SQL: &str = "
    SELECT k.conrelid, a.attname::text, k.confrelid, pa.attname::text, k.oid
    FROM pg_constraint k
    CROSS JOIN LATERAL unnest(k.conkey, k.confkey) AS u(col, pcol)
    JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.col
    JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = u.pcol
    WHERE k.contype = 'f'
    ORDER BY k.conrelid, k.oid, u.col";

struct Column {
    name: String,
    type_sql: String,
    category: String,
    typtype: String,
    typname: String,
    not_null: bool,
    has_default: bool,
    generated: bool,
}

struct Table {
    schema: String,
    name: String,
    columns: Vec<Column>,
    /// column → (parent oid, parent column)
    references: BTreeMap<String, (u32, String)>,
}

impl Table {
    fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Fills every table that has no rows yet (all but `filled`) with sample rows; returns a note
/// for each table left empty.
pub(crate) fn fill(client: &mut Client, filled: &BTreeSet<u32>) -> Result<Vec<String>> {
    let mut tables: BTreeMap<u32, Table> = BTreeMap::new();
    for row in client
        .query(COLUMNS_SQL, &[])
        .context("cannot read the shadow's tables")?
    {
        let oid: u32 = row.get(0);
        let table = tables.entry(oid).or_insert_with(|| Table {
            schema: row.get(1),
            name: row.get(2),
            columns: Vec::new(),
            references: BTreeMap::new(),
        });
        let identity: String = row.get(10);
        let generated: String = row.get(11);
        table.columns.push(Column {
            name: row.get(3),
            type_sql: row.get(4),
            category: row.get(5),
            typtype: row.get(6),
            typname: row.get(7),
            not_null: row.get(8),
            has_default: row.get(9),
            generated: identity == "a" || !generated.is_empty(),
        });
    }
    for row in client
        .query(FOREIGN_KEYS_SQL, &[])
        .context("cannot read the shadow's foreign keys")?
    {
        let table: u32 = row.get(0);
        let parent: u32 = row.get(2);
        if let Some(table) = tables.get_mut(&table) {
            table
                .references
                .entry(row.get(1))
                .or_insert((parent, row.get(3)));
        }
    }
    let mut notes = Vec::new();
    for oid in parents_first(&tables) {
        if filled.contains(&oid) {
            continue;
        }
        let table = &tables[&oid];
        let mut outcome = Ok(0);
        for fill_nullable in [false, true] {
            let sql = insert_sql(table, &tables, fill_nullable);
            outcome = client.execute(sql.as_str(), &[]);
            if outcome.is_ok() {
                break;
            }
        }
        if let Err(error) = outcome {
            notes.push(format!(
                "`{}` has no sample rows: {}",
                table.name,
                db::describe_driver_error(&error)
            ));
        }
    }
    Ok(notes)
}

/// Table oids, each after the tables it references (cycles broken by oid order).
fn parents_first(tables: &BTreeMap<u32, Table>) -> Vec<u32> {
    let mut done: BTreeSet<u32> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < tables.len() {
        let ready: Vec<u32> = tables
            .iter()
            .filter(|(oid, _)| !done.contains(oid))
            .filter(|(oid, table)| {
                table.references.values().all(|(parent, _)| {
                    parent == *oid || done.contains(parent) || !tables.contains_key(parent)
                })
            })
            .map(|(oid, _)| *oid)
            .collect();
        let next = match ready.as_slice() {
            [] => vec![*tables
                .keys()
                .find(|oid| !done.contains(oid))
                .expect("a table is left")],
            _ => ready,
        };
        for oid in next {
            done.insert(oid);
            order.push(oid);
        }
    }
    order
}

fn insert_sql(table: &Table, tables: &BTreeMap<u32, Table>, fill_nullable: bool) -> String {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for column in &table.columns {
        if column.generated {
            continue;
        }
        let value = if let Some((parent, parent_column)) = table.references.get(&column.name) {
            // The same offset for every column of one key, so a composite key names one row.
            match tables.get(parent).map(Table::qualified) {
                Some(parent) => format!(
                    "(SELECT p.{col} FROM {parent} p ORDER BY p.ctid OFFSET (g.i - 1) % greatest((SELECT count(*) FROM {parent}), 1) LIMIT 1)",
                    col = quote_ident(parent_column)
                ),
                None => "NULL".into(),
            }
        } else if column.has_default || !(column.not_null || fill_nullable) {
            continue;
        } else {
            value_of(column)
        };
        names.push(quote_ident(&column.name));
        values.push(value);
    }
    if names.is_empty() {
        return format!(
            "INSERT INTO {} SELECT FROM generate_series(1, {SAMPLE_ROWS}) AS g(i)",
            table.qualified()
        );
    }
    format!(
        "INSERT INTO {} ({}) SELECT {} FROM generate_series(1, {SAMPLE_ROWS}) AS g(i)",
        table.qualified(),
        names.join(", "),
        values.join(", ")
    )
}

/// A value for row `g.i` of the column's type: distinct per row, so unique keys hold.
fn value_of(column: &Column) -> String {
    let ty = &column.type_sql;
    if column.typtype == "e" {
        return format!("(enum_range(NULL::{ty}))[1]");
    }
    match (column.category.as_str(), column.typname.as_str()) {
        ("S", _) => format!("g.i::text::{ty}"),
        ("N", _) => format!("g.i::{ty}"),
        ("D", _) => format!("(timestamp '2025-01-01' + g.i * interval '1 day')::{ty}"),
        ("T", _) => "g.i * interval '1 minute'".into(),
        ("B", _) => "(g.i % 2 = 0)".into(),
        ("A", _) => format!("'{{}}'::{ty}"),
        ("U", "uuid") => "gen_random_uuid()".into(),
        ("U", "json" | "jsonb") => format!("json_build_object('n', g.i)::{ty}"),
        ("U", "bytea") => "int4send(g.i)".into(),
        _ => format!("g.i::text::{ty}"),
    }
}
