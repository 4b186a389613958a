//! `fails`: PostgreSQL refused the migration on the shadow even on tables without sample rows,
//! so deploy would fail too. It is not applied on the shadow, the migrations after it are
//! observed without it, and the statements after the refused one are not judged (the report
//! says so). A migration refused only because of the shadow's sample rows is observed again on
//! empty tables and reported as `fails-on-sample-rows`, a warning: production's rows decide.

use super::{Judgement, Rule, RuleDoc};
use crate::migrate::lint::Finding;
use crate::migrate::observe::MigrationPlan;

/// SQLSTATE not_null_violation.
const NOT_NULL_VIOLATION: &str = "23502";

pub(super) const DOC: RuleDoc = RuleDoc {
    name: "fails",
    fires: "PostgreSQL refused the migration on the shadow even on empty tables, or refused a NOT NULL on the sample rows of a table that has rows in production (a database URL)",
    safe: "what the error says (CREATE INDEX CONCURRENTLY alone in its file, …)",
    allowable: true,
    blocks: true,
};

pub(super) const ON_SAMPLE_ROWS_DOC: RuleDoc = RuleDoc {
    name: "fails-on-sample-rows",
    fires: "PostgreSQL refused the migration on the shadow's sample rows but ran it on empty tables (a cast of text to an enum or timestamp, a data migration colliding with them, a NOT NULL column without default): its locks, scans and rewrites are judged on the run without rows",
    safe: "make sure production's rows pass it (a NOT NULL column on a filled table needs a default or a backfill first)",
    allowable: true,
    blocks: false,
};

pub(super) fn judge(plan: &MigrationPlan, judgement: &mut Judgement) {
    let summary = |line: usize| {
        plan.statements
            .iter()
            .find(|s| s.statement.line == line)
            .map(|s| s.statement.summary(60))
            .unwrap_or_default()
    };
    if let Some(failure) = &plan.sample_failure {
        // A NOT NULL that rows without a value refuse: production refuses it too when the
        // table has rows there.
        let production_rows = failure
            .table
            .as_ref()
            .filter(|_| failure.code == NOT_NULL_VIOLATION)
            .and_then(|table| Some((table, plan.sizes.get(table)?)))
            .filter(|(_, size)| size.rows > 0);
        if let Some((table, size)) = production_rows {
            judgement.findings.push(Finding {
                rule: Rule::Fails,
                line: failure.line,
                statement: summary(failure.line),
                table: table.clone(),
                lock: None,
                what: format!(
                    "PostgreSQL refused it on the shadow's sample rows: {} (SQLSTATE {}); `{table}` has {} in production, so deploy fails there too",
                    failure.message,
                    failure.code,
                    size.describe()
                ),
                fix: "add the column with a default (or nullable), fill it in batches, then `SET NOT NULL` after a validated CHECK".into(),
                allowed: None,
                allow_without_reason: None,
            });
        } else {
            judgement.findings.push(Finding {
            rule: Rule::FailsOnSampleRows,
            line: failure.line,
            statement: summary(failure.line),
            table: String::new(),
            lock: None,
            what: format!(
                "PostgreSQL refused it on the shadow's {} sample rows per table: {} (SQLSTATE {}); on tables without rows it runs",
                crate::migrate::sample::SAMPLE_ROWS,
                failure.message,
                failure.code
            ),
            fix: ON_SAMPLE_ROWS_DOC.safe.into(),
            allowed: None,
            allow_without_reason: None,
        });
        }
    }
    let Some(failure) = &plan.failure else {
        return;
    };
    let fix = match failure.code.as_str() {
        "25001" => "PostgreSQL runs it only outside a transaction, and a migration of several statements is one transaction: put it in a migration file of its own".to_string(),
        _ => "fix the statement: it fails on the migrations before it even without rows, so deploy fails too".to_string(),
    };
    let applied = if plan.applied {
        ""
    } else {
        "; it is left out on the shadow and the migrations after it are observed without it"
    };
    judgement.findings.push(Finding {
        rule: Rule::Fails,
        line: failure.line,
        statement: summary(failure.line),
        table: String::new(),
        lock: None,
        what: format!(
            "PostgreSQL refused it: {} (SQLSTATE {}), so deploy would fail and roll the migration back{applied}",
            failure.message, failure.code
        ),
        fix,
        allowed: None,
        allow_without_reason: None,
    });
    if let (Some(first), Some(last)) = (plan.unreached.first(), plan.unreached.last()) {
        judgement.blind.push(format!(
            "no rule judged lines {first}-{last}: they come after the statement PostgreSQL refused"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::cases::plan;
    use super::*;
    use crate::migrate::observe::Failure;

    #[test]
    fn a_failure_on_empty_tables_blocks_and_a_sample_row_failure_warns() {
        let mut failing = plan("CREATE INDEX CONCURRENTLY \"i\" ON \"T\"(\"n\");\nSELECT 1;");
        failing.failure = Some(Failure {
            line: 1,
            code: "25001".into(),
            message: "CREATE INDEX CONCURRENTLY cannot run inside a transaction block".into(),
            table: None,
        });
        failing.applied = false;
        let mut judgement = Judgement::default();
        judge(&failing, &mut judgement);
        assert_eq!(judgement.findings[0].rule, Rule::Fails);
        assert!(judgement.findings[0].blocks());
        assert!(judgement.findings[0].what.contains("observed without it"));

        let mut on_rows =
            plan("ALTER TABLE \"T\" ALTER COLUMN \"s\" TYPE \"E\" USING \"s\"::\"E\";");
        on_rows.sample_failure = Some(Failure {
            line: 1,
            code: "22P02".into(),
            message: "invalid input value for enum \"E\": \"1\"".into(),
            table: None,
        });
        let mut judgement = Judgement::default();
        judge(&on_rows, &mut judgement);
        assert_eq!(judgement.findings[0].rule, Rule::FailsOnSampleRows);
        assert!(!judgement.findings[0].blocks());
    }
}
