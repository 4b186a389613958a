//! `full-table-dml`: UPDATE/DELETE statements in one transaction changed every row an existing
//! table had: each row stays locked until the migration commits. Judged on the shadow's rows,
//! so a table without rows there cannot be judged, and the report says so.

use std::collections::BTreeMap;

use super::{finding, Judgement, Rule, RuleDoc};
use crate::migrate::observe::{LockMode, MigrationPlan, Mode};

pub(super) const DOC: RuleDoc = RuleDoc {
    name: "full-table-dml",
    fires:
        "UPDATE/DELETE changed every row a table had, in one transaction (also across statements)",
    safe: "bounded batches outside the migration, each its own transaction",
    allowable: true,
    blocks: true,
};

pub(super) fn judge(plan: &MigrationPlan, judgement: &mut Judgement) {
    if plan.mode != Mode::Transaction {
        // A statement that commits by itself: committed batches are the safe pattern.
        return;
    }
    let mut changed: BTreeMap<String, i64> = BTreeMap::new();
    for statement in &plan.statements {
        for (table, rows) in &statement.changed_rows {
            let total = changed.entry(table.clone()).or_default();
            let before = *total;
            *total += rows;
            let had = plan.rows_before.get(table).copied().unwrap_or(0);
            if had > 0 && before < had && *total >= had {
                judgement.findings.push(finding(
                    statement,
                    Rule::FullTableDml,
                    table,
                    None,
                    format!(
                        "it has now updated or deleted {total} of the {had} rows `{table}` had, in one transaction: every changed row stays locked (an app UPDATE of it waits) until the migration commits, and the whole table is written at once"
                    ),
                    "change the rows in bounded batches outside the migration, each batch its own transaction; keep only the schema change in the migration".into(),
                ));
            }
        }
        // A data change on a table the shadow had no rows in: nothing to count.
        if !matches!(
            statement.statement.keyword().as_str(),
            "UPDATE" | "DELETE" | "MERGE"
        ) {
            continue;
        }
        for lock in statement.locks.iter().filter(|l| {
            l.taken_here
                && !l.new_table
                && l.mode == LockMode::RowExclusive
                && plan.rows_before.get(&l.table) == Some(&0)
        }) {
            let why = if plan.sample_failure.is_some() {
                "the migration was observed on tables without sample rows (they made it fail)"
            } else {
                "no sample rows could be made for it (see the note)"
            };
            judgement.blind.push(format!(
                "full-table-dml could not judge line {} on `{}`: the table had no rows on the shadow, as {why}",
                statement.statement.line, lock.table
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::cases::{lock, plan};
    use super::*;

    #[test]
    fn batches_in_one_transaction_add_up() {
        let mut plan =
            plan("UPDATE \"T\" SET n = 1 WHERE id <= 10;\nUPDATE \"T\" SET n = 1 WHERE id > 10;");
        plan.statements[0].changed_rows = vec![("T".into(), 10)];
        plan.statements[1].changed_rows = vec![("T".into(), 10)];
        let mut judgement = Judgement::default();
        judge(&plan, &mut judgement);
        assert_eq!(judgement.findings.len(), 1);
        assert_eq!(judgement.findings[0].line, 2);
    }

    #[test]
    fn an_update_of_a_table_without_rows_says_it_could_not_judge() {
        let mut plan = plan("UPDATE \"T\" SET n = 1;");
        plan.rows_before.insert("T".into(), 0);
        plan.statements[0].locks = vec![lock("T", LockMode::RowExclusive, 1, false)];
        let mut judgement = Judgement::default();
        judge(&plan, &mut judgement);
        assert!(judgement.findings.is_empty());
        assert_eq!(judgement.blind.len(), 1, "{:?}", judgement.blind);
        assert!(judgement.blind[0].starts_with("full-table-dml could not judge line 1 on `T`"));
    }
}
