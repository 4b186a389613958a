//! `scan-under-lock`: a statement read an existing table (a verification, a foreign key
//! validation, a query) while the migration held a lock that blocks writes or reads on an
//! existing table, taken by that statement or an earlier one of the same transaction.

use super::{blocking, finding, Rule, RuleDoc};
use crate::migrate::lint::Finding;
use crate::migrate::observe::{ScanKind, StatementPlan};

pub(super) const DOC: RuleDoc = RuleDoc {
    name: "scan-under-lock",
    fires: "a statement read a table while the migration held SHARE or stronger (blocks writes) or ACCESS EXCLUSIVE (blocks reads) on an existing table, taken by it or an earlier statement",
    safe: "NOT VALID now, VALIDATE CONSTRAINT in a later migration; for NOT NULL, a validated CHECK (col IS NOT NULL) first, so SET NOT NULL skips its scan",
    allowable: true,
    blocks: true,
};

pub(super) fn judge(statement: &StatementPlan, findings: &mut Vec<Finding>) {
    // A validating foreign key from a table this migration created reads the referenced table
    // only for the new table's rows, and a new table has none.
    let validates_new_table = statement
        .scans
        .iter()
        .any(|s| s.kind == ScanKind::ValidateForeignKey && s.new_table);
    for scan in statement
        .scans
        .iter()
        .filter(|s| !s.new_table && s.kind != ScanKind::Rewrite)
    {
        let table = &scan.table;
        let Some(lock) = blocking(statement, table) else {
            continue;
        };
        if (scan.kind == ScanKind::Read && validates_new_table)
            || (scan.kind == ScanKind::IndexBuild && lock.1 == *table)
        {
            continue;
        }
        let earlier = lock.2 < statement.statement.line;
        let adds_column = statement
            .statement
            .sql
            .to_ascii_uppercase()
            .contains("ADD COLUMN");
        let mut fix = match scan.kind {
            ScanKind::Verify if adds_column => {
                "add the column nullable or with a constant default (catalog only), fill it in batches outside the migration, then `CHECK (col IS NOT NULL) NOT VALID`, `VALIDATE CONSTRAINT` in a later migration and `SET NOT NULL`".to_string()
            }
            ScanKind::Verify if statement.validations.iter().any(|v| v.ends_with("NOT NULL")) => {
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
            Rule::ScanUnderLock,
            table,
            Some(lock),
            format!("it reads every row of `{table}` ({})", scan.kind.label()),
            fix,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::cases::{lock, plan, scan};
    use super::*;
    use crate::migrate::observe::LockMode;

    #[test]
    fn validate_under_an_earlier_lock_names_that_line() {
        let mut plan = plan("ALTER TABLE \"T\" ADD CONSTRAINT \"f\" FOREIGN KEY (\"p\") REFERENCES \"P\" NOT VALID;\nALTER TABLE \"T\" VALIDATE CONSTRAINT \"f\";");
        let statement = &mut plan.statements[1];
        let mut held = lock("T", LockMode::ShareRowExclusive, 1, false);
        held.taken_here = false;
        statement.locks = vec![held];
        statement.scans = vec![scan("T", ScanKind::ValidateForeignKey, false)];
        let mut findings = Vec::new();
        judge(&plan.statements[1], &mut findings);
        assert_eq!(findings.len(), 1);
        assert!(findings[0]
            .fix
            .starts_with("the lock from line 1 is still held here"));
    }

    #[test]
    fn a_read_under_share_update_exclusive_passes() {
        let mut plan = plan("ALTER TABLE \"T\" VALIDATE CONSTRAINT \"c\";");
        let statement = &mut plan.statements[0];
        statement.locks = vec![lock("T", LockMode::ShareUpdateExclusive, 1, false)];
        statement.scans = vec![scan("T", ScanKind::Verify, false)];
        let mut findings = Vec::new();
        judge(&plan.statements[0], &mut findings);
        assert!(findings.is_empty());
    }

    #[test]
    fn a_foreign_key_from_a_new_table_reads_nothing_worth_judging() {
        let mut plan = plan("CREATE TABLE \"N\" (\"p\" int REFERENCES \"T\");");
        let statement = &mut plan.statements[0];
        statement.locks = vec![
            lock("T", LockMode::ShareRowExclusive, 1, false),
            lock("N", LockMode::AccessExclusive, 1, true),
        ];
        statement.scans = vec![
            scan("N", ScanKind::ValidateForeignKey, true),
            scan("T", ScanKind::Read, false),
        ];
        let mut findings = Vec::new();
        judge(&plan.statements[0], &mut findings);
        assert!(findings.is_empty());
    }
}
