//! A release's backfill rule as the statements the backfill engine runs. The declaration gives
//! the value of a row `t` (optionally joined to `from` on `where`); each statement here wraps it
//! the same way for every release, with the lock it takes.

use crate::db::quote_ident;

use super::declaration::RuleText;

/// The backfill rule of one release.
#[derive(Debug, Clone)]
pub struct Rule {
    text: RuleText,
}

impl Rule {
    pub(crate) fn new(text: RuleText) -> Rule {
        Rule { text }
    }

    /// Once per backfill, before the first batch: returns one bigint, what it created.
    pub fn prepare(&self) -> Option<&str> {
        self.text.prepare.as_deref()
    }

    /// The same count as `prepare`, creating nothing (for `--dry-run`).
    pub fn prepare_dry_run(&self) -> Option<&str> {
        self.text.prepare_dry_run.as_deref()
    }

    /// What `prepare` counts, e.g. "personal workspaces".
    pub fn prepared(&self) -> &str {
        self.text.prepared.as_deref().unwrap_or("objects")
    }

    /// Run on each worker connection before its first batch (a temporary mapping, say).
    pub fn connection(&self) -> Option<&str> {
        self.text.connection.as_deref()
    }

    /// Run at the end, on the first connection.
    pub fn cleanup(&self) -> Option<&str> {
        self.text.cleanup.as_deref()
    }

    fn from(&self) -> String {
        self.text
            .from
            .as_deref()
            .map(|from| format!(" FROM {from}"))
            .unwrap_or_default()
    }

    fn condition(&self) -> String {
        self.text
            .condition
            .as_deref()
            .map(|c| format!(" AND ({c})"))
            .unwrap_or_default()
    }

    /// One batch: the NULL rows of pages `$1` to `$2` (exclusive), through a TID range scan so
    /// the heap is read in order. ROW EXCLUSIVE on the table (as any app UPDATE) and row locks
    /// on the rows it fills, held until the batch commits: a batch is one short transaction.
    pub fn batch_sql(&self, table: &str, column: &str) -> String {
        format!(
            r#"UPDATE {} AS t SET {} = {}{}
               WHERE t.ctid >= format('(%s,0)', $1::bigint)::tid AND t.ctid < format('(%s,0)', $2::bigint)::tid
                 AND t.{} IS NULL{}"#,
            quote_ident(table),
            quote_ident(column),
            self.text.value,
            self.from(),
            quote_ident(column),
            self.condition()
        )
    }

    /// The same batch for a page range where another transaction holds a row (the plain batch
    /// hit its `lock_timeout`): the rows are locked first with SKIP LOCKED, so the held ones are
    /// left for later instead of waited for.
    pub fn batch_skip_held_sql(&self, table: &str, column: &str) -> String {
        let (t, c) = (quote_ident(table), quote_ident(column));
        let from = match self.text.from.as_deref() {
            Some(from) => format!(", {from}"),
            None => String::new(),
        };
        format!(
            r#"UPDATE {t} AS t SET {c} = {}
               FROM (SELECT ctid AS row_id FROM {t}
                     WHERE ctid >= format('(%s,0)', $1::bigint)::tid AND ctid < format('(%s,0)', $2::bigint)::tid
                       AND {c} IS NULL
                     FOR UPDATE SKIP LOCKED) free{from}
               WHERE t.ctid = free.row_id{}"#,
            self.text.value,
            self.condition()
        )
    }

    /// Rows the batches did not fill (a row written before a trigger existed, a mapping that
    /// changed mid-run), at most `$1` at a time, by the declared sweep value (or the rule's
    /// own). Held rows are skipped (SKIP LOCKED). Returns whether each row got a value.
    pub fn sweep_sql(&self, table: &str, column: &str) -> String {
        let (t, c) = (quote_ident(table), quote_ident(column));
        let pick = format!(
            "t.ctid = ANY (ARRAY(SELECT ctid FROM {t} WHERE {c} IS NULL LIMIT $1 FOR UPDATE SKIP LOCKED))"
        );
        match self.text.sweep.as_deref() {
            Some(sweep) => {
                format!(
                    "UPDATE {t} AS t SET {c} = {sweep} WHERE {pick} RETURNING t.{c} IS NOT NULL"
                )
            }
            None => format!(
                "UPDATE {t} AS t SET {c} = {}{} WHERE {pick}{} RETURNING t.{c} IS NOT NULL",
                self.text.value,
                self.from(),
                self.condition()
            ),
        }
    }
}

/// The NULL rows left in pages `$1` to `$2` (exclusive): rows another transaction still holds.
/// A TID range scan of those pages, ACCESS SHARE.
pub fn nulls_in_pages_sql(table: &str, column: &str) -> String {
    format!(
        r#"SELECT count(*) FROM {} WHERE ctid >= format('(%s,0)', $1::bigint)::tid
             AND ctid < format('(%s,0)', $2::bigint)::tid AND {} IS NULL"#,
        quote_ident(table),
        quote_ident(column)
    )
}

/// The table's size in pages and its rows per page, to size batches (catalog reads).
pub const TABLE_PAGES_SQL: &str = r#"
    SELECT (pg_relation_size(c.oid) / current_setting('block_size')::bigint),
           (CASE WHEN c.relpages > 0 AND c.reltuples > 0 THEN c.reltuples::float8 / c.relpages ELSE 60 END)::float8
    FROM pg_class c WHERE c.oid = $1::text::regclass"#;

/// Fresh statistics after a backfill, so the next `check` uses an index instead of a scan.
/// SHARE UPDATE EXCLUSIVE: reads and writes go on.
pub fn analyze_sql(table: &str) -> String {
    format!("ANALYZE {}", quote_ident(table))
}

/// The emergency rollback's DROP NOT NULL: ACCESS EXCLUSIVE, catalog only (no scan), so it is
/// held for milliseconds; the rollback runs under `lock_timeout` with retries.
pub fn drop_not_null_sql(table: &str, column: &str) -> String {
    format!(
        "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL",
        quote_ident(table),
        quote_ident(column)
    )
}

/// Re-adds the `CHECK … NOT VALID` the contract dropped, so the state is exactly post-expand
/// and a re-deploy of the contract stays online-safe. ACCESS EXCLUSIVE, no scan (NOT VALID).
pub fn add_not_null_check_sql(table: &str, column: &str, check: &str) -> String {
    format!(
        "ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID",
        quote_ident(table),
        quote_ident(check),
        quote_ident(column)
    )
}

/// Whether the check constraint `$1` exists on table `$2` (quoted name): catalog read.
pub const CHECK_EXISTS_SQL: &str =
    "SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2)";
