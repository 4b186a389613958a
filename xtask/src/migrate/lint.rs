//! The rules `migrate lint` judges an observed migration by. A migration blocks the app when,
//! on a table that existed before it:
//!
//! - `table-rewrite`: PostgreSQL rewrote the table (`rewriting table`, new `relfilenode`): every
//!   row is copied under ACCESS EXCLUSIVE;
//! - `index-build`: an index was built on it while a lock that blocks writes (SHARE or
//!   stronger) was held: a `CREATE INDEX` without `CONCURRENTLY`, or a UNIQUE/PRIMARY KEY
//!   constraint that builds its index;
//! - `scan-under-lock`: a statement read the table (a verification, a foreign key validation,
//!   a query) while the migration held a lock that blocks writes or reads on an existing table,
//!   taken by that statement or by an earlier one of the same transaction;
//! - `full-table-dml`: UPDATE/DELETE statements in one transaction changed every row the table
//!   had: each row stays locked until the migration commits;
//! - `fails`: PostgreSQL refused the migration on the shadow (deploy would fail too).
//!
//! Brief catalog-only locks pass, and so does anything on a table the migration itself created.
//! `-- lint: allow <rule> because <reason>` just above a statement records a reviewed exception.

use std::collections::BTreeMap;

use super::observe::{LockMode, MigrationPlan, Mode, ScanKind, StatementPlan};

pub const RULES: [&str; 5] = [
    "table-rewrite",
    "index-build",
    "scan-under-lock",
    "full-table-dml",
    "fails",
];

/// One way the migration would block the app (or fail).
#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: &'static str,
    pub line: usize,
    /// The statement, shortened.
    pub statement: String,
    pub table: String,
    /// The blocking lock, the table it is on, and the line that took it.
    pub lock: Option<(LockMode, String, usize)>,
    /// What PostgreSQL did that makes the lock hurt.
    pub what: String,
    /// The online-safe way to write it.
    pub fix: String,
    /// The reason of a `-- lint: allow` for this rule above the statement.
    pub allowed: Option<String>,
    /// A `-- lint: allow` for this rule without a reason (not accepted).
    pub allow_without_reason: Option<usize>,
}

impl Finding {
    pub fn blocks(&self) -> bool {
        self.allowed.is_none()
    }
}

/// Every finding of an observed migration, in statement order.
pub fn judge(plan: &MigrationPlan) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut changed: BTreeMap<String, i64> = BTreeMap::new();
    for statement in &plan.statements {
        judge_statement(statement, &mut findings);
        if plan.mode == Mode::Transaction {
            for (table, rows) in &statement.changed_rows {
                let total = changed.entry(table.clone()).or_default();
                let before = *total;
                *total += rows;
                let had = plan.rows_before.get(table).copied().unwrap_or(0);
                if had > 0 && before < had && *total >= had {
                    findings.push(finding(
                        statement,
                        "full-table-dml",
                        table,
                        None,
                        format!(
                            "it has now updated or deleted {total} of the {had} rows `{table}` had, in one transaction: every changed row stays locked (an app UPDATE of it waits) until the migration commits, and the whole table is written at once"
                        ),
                        "change the rows in bounded batches outside the migration, each batch its own transaction; keep only the schema change in the migration".into(),
                    ));
                }
            }
        }
    }
    if let Some(failure) = &plan.failure {
        let statement = plan
            .statements
            .iter()
            .find(|s| s.statement.line == failure.line);
        let fix = match failure.code.as_str() {
            "25001" => "PostgreSQL runs it only outside a transaction, and a migration of several statements is one transaction: put it in a migration file of its own".to_string(),
            _ => format!(
                "fix the statement; if it is a data guard, the shadow's {} sample rows per table do not pass it, and production's rows decide",
                super::sample::SAMPLE_ROWS
            ),
        };
        findings.push(Finding {
            rule: "fails",
            line: failure.line,
            statement: statement
                .map(|s| s.statement.summary(60))
                .unwrap_or_default(),
            table: String::new(),
            lock: None,
            what: format!(
                "PostgreSQL refused it: {} (SQLSTATE {}), so deploy would fail and roll the migration back",
                failure.message, failure.code
            ),
            fix,
            allowed: None,
            allow_without_reason: None,
        });
    }
    for finding in &mut findings {
        let Some(statement) = plan
            .statements
            .iter()
            .find(|s| s.statement.line == finding.line)
        else {
            continue;
        };
        for allow in statement
            .statement
            .allows
            .iter()
            .filter(|a| a.rule == finding.rule)
        {
            if allow.reason.is_empty() {
                finding.allow_without_reason = Some(allow.line);
            } else {
                finding.allowed = Some(allow.reason.clone());
            }
        }
    }
    findings
}

fn finding(
    statement: &StatementPlan,
    rule: &'static str,
    table: &str,
    lock: Option<(LockMode, String, usize)>,
    what: String,
    fix: String,
) -> Finding {
    Finding {
        rule,
        line: statement.statement.line,
        statement: statement.statement.summary(60),
        table: table.to_string(),
        lock,
        what,
        fix,
        allowed: None,
        allow_without_reason: None,
    }
}

fn judge_statement(statement: &StatementPlan, findings: &mut Vec<Finding>) {
    let sql = statement.statement.sql.to_ascii_uppercase();
    // The strongest lock that blocks the app on an existing table, preferring `table`'s own.
    let blocking = |table: &str| -> Option<(LockMode, String, usize)> {
        let on_table = statement
            .locks
            .iter()
            .find(|l| l.table == table && !l.new_table && l.mode.blocks().is_some());
        let strongest = statement
            .locks
            .iter()
            .filter(|l| !l.new_table && l.mode.blocks().is_some())
            .max_by_key(|l| (l.mode, std::cmp::Reverse(l.since_line)));
        on_table
            .or(strongest)
            .map(|l| (l.mode, l.table.clone(), l.since_line))
    };
    // A validating foreign key from a table this migration created reads the referenced table
    // only for the new table's rows, and a new table has none.
    let validates_new_table = statement
        .scans
        .iter()
        .any(|s| s.kind == ScanKind::ValidateForeignKey && s.new_table);
    for scan in statement.scans.iter().filter(|s| !s.new_table) {
        let table = &scan.table;
        if scan.kind == ScanKind::Rewrite {
            let fix = if sql.contains("ADD COLUMN") {
                "add the column with no default or a constant one (catalog only), fill it in batches outside the migration, then `SET DEFAULT` for new rows; use a sequence default set after the fill instead of SERIAL/IDENTITY on a filled table"
            } else if sql.contains(" TYPE ") {
                "expand/contract: add a column of the new type, fill it in batches, switch the app to it, drop the old column in a later migration"
            } else {
                "expand/contract: a new column or table filled in batches, instead of rewriting this one under ACCESS EXCLUSIVE"
            };
            findings.push(finding(
                statement,
                "table-rewrite",
                table,
                blocking(table),
                format!("PostgreSQL rewrites `{table}` (`rewriting table`, new storage): every row is copied and every index rebuilt while the lock is held"),
                fix.into(),
            ));
        } else if let Some(lock) = blocking(table) {
            if scan.kind == ScanKind::Read && validates_new_table {
                continue;
            }
            if scan.kind == ScanKind::IndexBuild && lock.1 == *table {
                let fix = if sql.contains("CONSTRAINT") || sql.contains("PRIMARY KEY") {
                    "`CREATE UNIQUE INDEX CONCURRENTLY` in a migration file of its own, then `ALTER TABLE … ADD CONSTRAINT … UNIQUE USING INDEX …` (catalog only)"
                } else {
                    "`CREATE INDEX CONCURRENTLY` in a migration file of its own (SHARE UPDATE EXCLUSIVE: reads and writes go on while it builds)"
                };
                findings.push(finding(
                    statement,
                    "index-build",
                    table,
                    Some(lock),
                    format!("PostgreSQL builds an index on `{table}` (`building index`), reading every row while the lock is held"),
                    fix.into(),
                ));
                continue;
            }
            let earlier = lock.2 < statement.statement.line;
            let mut fix = match scan.kind {
                ScanKind::Verify
                    if statement.validations.iter().any(|v| v.ends_with("NOT NULL")) =>
                {
                    "add `CHECK (col IS NOT NULL) NOT VALID`, `VALIDATE CONSTRAINT` it in a later migration (SHARE UPDATE EXCLUSIVE), then `SET NOT NULL`, which PostgreSQL proves from the valid CHECK without a scan, and drop the CHECK".to_string()
                }
                ScanKind::Verify => "add the CHECK `NOT VALID` here and `VALIDATE CONSTRAINT` it in a later migration (SHARE UPDATE EXCLUSIVE: reads and writes go on)".to_string(),
                ScanKind::ValidateForeignKey => "add the foreign key `NOT VALID` here and `VALIDATE CONSTRAINT` it in a later migration (SHARE UPDATE EXCLUSIVE on the table, ROW SHARE on the referenced one)".to_string(),
                _ => "read the table before any statement that takes a blocking lock, or in a migration of its own".to_string(),
            };
            if earlier {
                fix = format!(
                    "the lock from line {} is still held here, because a migration is one transaction: move this statement to a migration of its own ({fix})",
                    lock.2
                );
            }
            findings.push(finding(
                statement,
                "scan-under-lock",
                table,
                Some(lock),
                format!("it reads every row of `{table}` ({})", scan.kind.label()),
                fix,
            ));
        }
    }
}
