//! `table-rewrite`: PostgreSQL rewrote an existing table (`rewriting table`, new storage):
//! every row is copied and every index rebuilt under ACCESS EXCLUSIVE.

use super::{blocking, finding, Rule, RuleDoc};
use crate::migrate::lint::Finding;
use crate::migrate::observe::{ScanKind, StatementPlan};

pub(super) const DOC: RuleDoc = RuleDoc {
    name: "table-rewrite",
    fires: "PostgreSQL rewrote the table (volatile default, SERIAL, most type changes)",
    safe: "a constant default or none, then fill in batches; a new column of the new type (expand/contract)",
    allowable: true,
    blocks: true,
};

pub(super) fn judge(statement: &StatementPlan, findings: &mut Vec<Finding>) {
    let sql = statement.statement.sql.to_ascii_uppercase();
    for scan in statement
        .scans
        .iter()
        .filter(|s| !s.new_table && s.kind == ScanKind::Rewrite)
    {
        let table = &scan.table;
        let fix = if sql.contains("ADD COLUMN") {
            "add the column with no default or a constant one (catalog only), fill it in batches outside the migration, then `SET DEFAULT` for new rows; use a sequence default set after the fill instead of SERIAL/IDENTITY on a filled table"
        } else if sql.contains(" TYPE ") {
            "expand/contract: add a column of the new type, fill it in batches, switch the app to it, drop the old column in a later migration"
        } else {
            "expand/contract: a new column or table filled in batches, instead of rewriting this one under ACCESS EXCLUSIVE"
        };
        findings.push(finding(
            statement,
            Rule::TableRewrite,
            table,
            blocking(statement, table),
            format!("PostgreSQL rewrites `{table}` (`rewriting table`, new storage): every row is copied and every index rebuilt while the lock is held"),
            fix.into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::cases::{lock, plan, scan};
    use super::*;
    use crate::migrate::observe::LockMode;

    fn judged(new_table: bool) -> Vec<Finding> {
        let mut plan = plan("ALTER TABLE \"T\" ALTER COLUMN \"n\" TYPE BIGINT;");
        let statement = &mut plan.statements[0];
        statement.locks = vec![lock("T", LockMode::AccessExclusive, 1, new_table)];
        statement.scans = vec![scan("T", ScanKind::Rewrite, new_table)];
        let mut findings = Vec::new();
        judge(&plan.statements[0], &mut findings);
        findings
    }

    #[test]
    fn a_rewrite_of_an_existing_table_fires_with_expand_contract() {
        let findings = judged(false);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].rule, Rule::TableRewrite);
        assert!(findings[0].fix.starts_with("expand/contract: add a column"));
        assert_eq!(
            findings[0].lock,
            Some((LockMode::AccessExclusive, "T".into(), 1))
        );
    }

    #[test]
    fn a_rewrite_of_a_new_table_passes() {
        assert!(judged(true).is_empty());
    }
}
