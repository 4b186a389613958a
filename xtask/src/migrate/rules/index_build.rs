//! `index-build`: an index was built on an existing table while a lock that blocks writes
//! (SHARE or stronger) was held on it: `CREATE INDEX` without `CONCURRENTLY`, or a UNIQUE or
//! PRIMARY KEY constraint that builds its index.

use super::{blocking, finding, Rule, RuleDoc};
use crate::migrate::lint::Finding;
use crate::migrate::observe::{ScanKind, StatementPlan};

pub(super) const DOC: RuleDoc = RuleDoc {
    name: "index-build",
    fires:
        "an index was built while a lock that blocks writes was held (CREATE INDEX, ADD … UNIQUE)",
    safe:
        "CREATE [UNIQUE] INDEX CONCURRENTLY in a file of its own, then ADD CONSTRAINT … USING INDEX",
    allowable: true,
    blocks: true,
};

pub(super) fn judge(statement: &StatementPlan, findings: &mut Vec<Finding>) {
    let sql = statement.statement.sql.to_ascii_uppercase();
    for scan in statement
        .scans
        .iter()
        .filter(|s| !s.new_table && s.kind == ScanKind::IndexBuild)
    {
        let table = &scan.table;
        let Some(lock) = blocking(statement, table).filter(|lock| lock.1 == *table) else {
            continue;
        };
        let fix = if sql.contains("CONSTRAINT") || sql.contains("PRIMARY KEY") {
            "`CREATE UNIQUE INDEX CONCURRENTLY` in a migration file of its own, then `ALTER TABLE … ADD CONSTRAINT … UNIQUE USING INDEX …` (catalog only)"
        } else {
            "`CREATE INDEX CONCURRENTLY` in a migration file of its own (SHARE UPDATE EXCLUSIVE: reads and writes go on while it builds)"
        };
        findings.push(finding(
            statement,
            Rule::IndexBuild,
            table,
            Some(lock),
            format!("PostgreSQL builds an index on `{table}` (`building index`), reading every row while the lock is held"),
            fix.into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::cases::{lock, plan, scan};
    use super::*;
    use crate::migrate::observe::LockMode;

    fn judged(sql: &str, mode: LockMode) -> Vec<Finding> {
        let mut plan = plan(sql);
        let statement = &mut plan.statements[0];
        statement.locks = vec![lock("T", mode, 1, false)];
        statement.scans = vec![scan("T", ScanKind::IndexBuild, false)];
        let mut findings = Vec::new();
        judge(&plan.statements[0], &mut findings);
        findings
    }

    #[test]
    fn create_index_under_share_fires() {
        let findings = judged("CREATE INDEX \"i\" ON \"T\"(\"n\");", LockMode::Share);
        assert_eq!(findings.len(), 1);
        assert!(findings[0].fix.starts_with("`CREATE INDEX CONCURRENTLY`"));
    }

    #[test]
    fn a_unique_constraint_gets_the_using_index_recipe() {
        let findings = judged(
            "ALTER TABLE \"T\" ADD CONSTRAINT \"u\" UNIQUE (\"n\");",
            LockMode::AccessExclusive,
        );
        assert!(findings[0].fix.contains("USING INDEX"));
    }

    #[test]
    fn concurrently_under_share_update_exclusive_passes() {
        assert!(judged(
            "CREATE INDEX CONCURRENTLY \"i\" ON \"T\"(\"n\");",
            LockMode::ShareUpdateExclusive
        )
        .is_empty());
    }
}
